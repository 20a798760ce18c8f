use serde_json::json;

use super::schema::check;
use super::ssa::{self, Conflict};
use super::*;

fn nodepool_schema() -> Value {
    KubeState::new().registry.by_kind("NodePool").unwrap().schema.clone().unwrap()
}

#[test]
fn schema_defaults_prunes_and_explains() {
    let schema = nodepool_schema();
    let mut obj = json!({"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "p"},
        "spec": {"bogus": 1, "template": {"spec": {"nodeClassRef": {"group": "g", "kind": "k", "name": "n"},
                 "requirements": [{"key": "kubernetes.io/arch", "operator": "Sometimes", "values": ["amd64"]}]}}}});
    let out = check(&schema, &mut obj);
    assert_eq!(out.unknown, ["spec.bogus"]);
    assert!(obj["spec"].get("bogus").is_none(), "unknown fields are pruned");
    assert_eq!(obj["spec"]["template"]["spec"]["expireAfter"], "720h", "defaults applied");
    assert_eq!(out.causes.len(), 1);
    assert_eq!(out.causes[0].reason, "FieldValueNotSupported");
    assert_eq!(out.causes[0].field, "spec.template.spec.requirements[0].operator");
    assert!(
        out.causes[0]
            .detail
            .starts_with("Unsupported value: \"Sometimes\": supported values: \"Gte\", \"Lte\", \"In\""),
        "{}",
        out.causes[0].detail
    );

    let mut missing =
        json!({"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "p"}, "spec": {}});
    let out = check(&schema, &mut missing);
    assert_eq!(out.causes[0].message(), "spec.template: Required value");
}

#[test]
fn apply_conflict_messages_match_the_api_server() {
    let one =
        [Conflict { manager: "\"kubectl-client-side-apply\" using karpenter.sh/v1".into(), path: ".spec.x".into() }];
    assert_eq!(
        ssa::conflict_message(&one),
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using karpenter.sh/v1: .spec.x"
    );
    let two = [
        Conflict { manager: "\"b\"".into(), path: ".spec.y".into() },
        Conflict { manager: "\"a\"".into(), path: ".spec.x".into() },
        Conflict { manager: "\"b\"".into(), path: ".spec.z".into() },
    ];
    assert_eq!(
        ssa::conflict_message(&two),
        "Apply failed with 3 conflicts: conflicts with \"a\":\n- .spec.x\nconflicts with \"b\":\n- .spec.y\n- .spec.z"
    );
}

#[test]
fn fields_v1_round_trips() {
    let obj = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "n", "labels": {"a": "b"}}, "spec": {"list": [1, 2], "m": {"k": "v"}}, "status": {"s": 1}});
    let fields = ssa::fields_of(&obj);
    let paths: Vec<String> = fields.iter().map(ssa::render_path).collect();
    assert_eq!(paths, [".metadata.labels.a", ".spec.list", ".spec.m.k"]);
    assert_eq!(
        ssa::to_fields_v1(&fields),
        json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {"f:list": {}, "f:m": {"f:k": {}}}})
    );
    let mut stored = obj.clone();
    ssa::record_update(None, &mut stored, "m1", "v1", "t", None);
    assert_eq!(ssa::entries(&stored)[0].fields, fields);
}

#[test]
fn label_selectors() {
    let labels = json!({"app": "runner", "tier": "ci"});
    for (sel, want) in [
        ("app=runner", true),
        ("app!=runner", false),
        ("app in (runner,x)", true),
        ("tier notin (ci)", false),
        ("app,tier", true),
        ("!app", false),
        ("app=runner,tier=prod", false),
    ] {
        assert_eq!(LabelSelector::parse(sel).unwrap().matches(&labels), want, "{sel}");
    }
    // `(` is no valid label value: the API server answers 400, as here.
    assert!(LabelSelector::parse("a=(").is_err());
}

#[test]
fn table_jsonpath_subset() {
    let obj = json!({"status": {"conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]}, "spec": {"a": [{"b": 1}, {"b": 2}]}});
    assert_eq!(table::eval(&obj, ".status.conditions[?(@.type==\"Ready\")].status"), vec![json!("True")]);
    assert_eq!(table::eval(&obj, ".spec.a[*].b"), vec![json!(1), json!(2)]);
    assert_eq!(table::eval(&obj, ".spec.a[1].b"), vec![json!(2)]);
    assert!(table::eval(&obj, ".spec.missing").is_empty());
}

#[test]
fn watches_resume_within_the_kept_window_and_expire_beyond_it() {
    let mut k = KubeState::new();
    k.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}}), "seed").unwrap();
    let write = |k: &mut KubeState, i: usize| {
        k.put(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ns"}, "data": {"i": i.to_string()}}),
            "test",
        )
        .unwrap()
    };
    let first = write(&mut k, 0);
    let from: u64 = first["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    let req = Request { method: "GET".into(), path: "/api/v1/namespaces/ns/configmaps".into(), ..Default::default() };
    let spec = k.watch_spec(&req).unwrap();
    for i in 1..10 {
        write(&mut k, i);
    }
    assert_eq!(k.events_after(&spec, from).unwrap().len(), 9, "recent history is kept");
    for i in 10..(EVENT_HISTORY + 10) {
        write(&mut k, i);
    }
    assert!(k.events_after(&spec, from).is_err(), "older than the window: 410 Expired");
}

#[test]
fn finalizers_are_a_set_and_owner_references_a_map_to_server_side_apply() {
    let now = "2026-01-01T00:00:00Z";
    let base = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ns"}});
    let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": ["a.example/x"],
        "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "one", "uid": "u1"}]}});
    let b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": ["b.example/y"],
        "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "two", "uid": "u2"}]}});
    let after_a = ssa::apply(Some(&base), &a, "mgr-a", false, "v1", now, None).unwrap();
    // Each manager owns its own members: no conflict, both kept.
    let both = ssa::apply(Some(&after_a), &b, "mgr-b", false, "v1", now, None).unwrap();
    assert_eq!(both["metadata"]["finalizers"], json!(["a.example/x", "b.example/y"]));
    let uids: Vec<&str> =
        both["metadata"]["ownerReferences"].as_array().unwrap().iter().map(|o| o["uid"].as_str().unwrap()).collect();
    assert_eq!(uids, ["u1", "u2"]);
    let mf = &both["metadata"]["managedFields"];
    let b_fields = &mf.as_array().unwrap().iter().find(|e| e["manager"] == "mgr-b").unwrap()["fieldsV1"];
    assert_eq!(b_fields["f:metadata"]["f:finalizers"], json!({"v:\"b.example/y\"": {}}));
    assert!(b_fields["f:metadata"]["f:ownerReferences"]["k:{\"uid\":\"u2\"}"]["."].is_object(), "{b_fields}");
    // A dropping its finalizer removes only its own.
    let a2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    let dropped = ssa::apply(Some(&both), &a2, "mgr-a", false, "v1", now, None).unwrap();
    assert_eq!(dropped["metadata"]["finalizers"], json!(["b.example/y"]));
    assert_eq!(dropped["metadata"]["ownerReferences"].as_array().unwrap().len(), 1);
}

#[test]
fn apply_to_status_sets_status_and_records_a_status_entry() {
    let now = "2026-01-01T00:00:00Z";
    let obj = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "x"}, "spec": {"a": 1}});
    let status = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "x"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let out = ssa::apply(Some(&obj), &status, "ctl", false, "v1", now, Some("status")).unwrap();
    assert_eq!(out["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(out["spec"], json!({"a": 1}), "the main resource is untouched");
    let e = &out["metadata"]["managedFields"][0];
    assert_eq!((e["manager"].as_str(), e["subresource"].as_str()), (Some("ctl"), Some("status")));
    assert!(e["fieldsV1"]["f:status"]["f:conditions"]["k:{\"type\":\"Ready\"}"].is_object(), "{e}");
}
