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

// Protocol rules through the handler, with the seeded world (the in-process tier).

const NP: &str = "/apis/karpenter.sh/v1/nodepools";

#[test]
fn put_with_a_stale_resource_version_conflicts() {
    let mut sb = crate::sandbox::inproc::InProc::new(0);
    let obj = sb.k8s("GET", &format!("{NP}/spot-pool"), "", "").json;
    let mut first = obj.clone();
    first["spec"]["weight"] = json!(5);
    let updated = sb.k8s_json("PUT", &format!("{NP}/spot-pool"), &first);
    assert_eq!(updated.code, 200);
    let updated = updated.json;
    assert_ne!(updated["metadata"]["resourceVersion"], obj["metadata"]["resourceVersion"]);
    assert_eq!(updated["metadata"]["generation"].as_i64(), obj["metadata"]["generation"].as_i64().map(|g| g + 1));
    // The same stale object again.
    let a = sb.k8s_json("PUT", &format!("{NP}/spot-pool"), &first);
    assert_eq!(a.code, 409);
    assert_eq!(a.json["reason"], "Conflict");
    assert_eq!(
        a.json["message"],
        "Operation cannot be fulfilled on nodepools.karpenter.sh \"spot-pool\": the object has been modified; please apply your changes to the latest version and try again"
    );
    assert_eq!(a.json["details"], json!({"name": "spot-pool", "group": "karpenter.sh", "kind": "nodepools"}));
    // A custom resource cannot be replaced without a resourceVersion.
    let mut no_rv = updated.clone();
    no_rv["metadata"].as_object_mut().unwrap().remove("resourceVersion");
    let a = sb.k8s_json("PUT", &format!("{NP}/spot-pool"), &no_rv);
    assert_eq!(a.code, 422);
    assert!(
        a.json["message"]
            .as_str()
            .unwrap()
            .contains("metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"),
        "{}",
        a.json
    );
    // A merge patch carrying a stale resourceVersion conflicts too.
    let patch = json!({"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "spec": {"weight": 7}});
    let a = sb.k8s("PATCH", &format!("{NP}/spot-pool"), "application/merge-patch+json", &patch.to_string());
    assert_eq!(a.code, 409);
}

#[test]
fn json_patch_test_failure_is_a_generic_422() {
    let mut sb = crate::sandbox::inproc::InProc::new(0);
    let ops = json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
                     {"op": "replace", "path": "/spec/template/spec/requirements/1/values", "value": ["amd64", "arm64"]}]);
    let a = sb.k8s("PATCH", &format!("{NP}/spot-pool"), "application/json-patch+json", &ops.to_string());
    assert_eq!(a.code, 422);
    assert_eq!(
        a.json,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "the server rejected our request due to an error in our request", "reason": "Invalid", "details": {}, "code": 422})
    );
    let a = sb.k8s("PATCH", &format!("{NP}/spot-pool"), "application/strategic-merge-patch+json", "{}");
    assert_eq!((a.code, a.json["reason"].as_str()), (415, Some("UnsupportedMediaType")));
}

#[test]
fn server_side_apply_tracks_owners_and_reports_conflicts() {
    let mut sb = crate::sandbox::inproc::InProc::new(0);
    let mut apply = |manager: &str, force: bool, values: &[&str]| {
        let doc = json!({"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "spot-pool"},
                         "spec": {"template": {"spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
                                                        "requirements": [{"key": "kubernetes.io/arch", "operator": "In", "values": values}]}}}});
        let mut path = format!("{NP}/spot-pool?fieldManager={manager}");
        if force {
            path.push_str("&force=true");
        }
        sb.k8s("PATCH", &path, "application/apply-patch+yaml", &doc.to_string())
    };
    let a = apply("archshift", false, &["amd64", "arm64"]);
    assert_eq!(a.code, 409);
    assert_eq!(a.json["reason"], "Conflict");
    assert_eq!(a.json["details"]["causes"][0]["reason"], "FieldManagerConflict");
    assert_eq!(a.json["details"]["causes"][0]["field"], ".spec.template.spec.requirements");
    assert!(a.json["details"].get("name").is_none(), "apply conflicts carry only causes");
    let a = apply("archshift", true, &["amd64", "arm64"]);
    assert_eq!(a.code, 200, "{}", a.json);
    let owners: Vec<&str> =
        a.json["metadata"]["managedFields"].as_array().unwrap().iter().filter_map(|m| m["manager"].as_str()).collect();
    assert!(owners.contains(&"archshift"), "{owners:?}");
    // Now archshift owns the list: another manager conflicts with archshift.
    let a = apply("someone-else", false, &["amd64"]);
    assert_eq!(a.code, 409);
    assert!(
        a.json["message"]
            .as_str()
            .unwrap()
            .starts_with("Apply failed with 1 conflict: conflict with \"archshift\": .spec.template.spec.requirements"),
        "{}",
        a.json
    );
    // Re-applying the same value is not a conflict.
    assert_eq!(apply("someone-else", false, &["amd64", "arm64"]).code, 200);
    // Apply without a field manager is refused like the real server refuses it.
    let a = sb.k8s("PATCH", &format!("{NP}/spot-pool"), "application/apply-patch+yaml", "{}");
    assert_eq!(a.code, 422);
    assert_eq!(
        a.json["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    // Apply creates a missing object: 201.
    let doc = json!({"apiVersion": "helm.crossplane.io/v1beta1", "kind": "Release", "metadata": {"name": "gitlab-runner-arm64"},
                     "spec": {"forProvider": {"chart": {"name": "gitlab-runner", "repository": "https://charts.gitlab.io/", "version": "0.78.1"}, "namespace": "gitlab-runner"}}});
    let a = sb.k8s(
        "PATCH",
        "/apis/helm.crossplane.io/v1beta1/releases/gitlab-runner-arm64?fieldManager=archshift",
        "application/apply-patch+yaml",
        &doc.to_string(),
    );
    assert_eq!(a.code, 201);
}

#[test]
fn dry_run_leaves_no_trace() {
    let mut sb = crate::sandbox::inproc::InProc::new(0);
    let rel = json!({"apiVersion": "helm.crossplane.io/v1beta1", "kind": "Release", "metadata": {"name": "dry"},
                     "spec": {"forProvider": {"chart": {"name": "gitlab-runner", "version": "0.78.1"}, "namespace": "gitlab-runner"}}});
    let a = sb.k8s_json("POST", "/apis/helm.crossplane.io/v1beta1/releases?dryRun=All", &rel);
    assert_eq!(a.code, 201, "{}", a.json);
    assert_eq!(a.json["metadata"]["name"], "dry");
    assert_eq!(sb.k8s("GET", "/apis/helm.crossplane.io/v1beta1/releases/dry", "", "").code, 404);
    let before = sb.k8s("GET", &format!("{NP}/spot-pool"), "", "").json;
    let a = sb.k8s(
        "PATCH",
        &format!("{NP}/spot-pool?dryRun=All"),
        "application/merge-patch+json",
        r#"{"spec":{"weight":3}}"#,
    );
    assert_eq!((a.code, a.json["spec"]["weight"].as_i64()), (200, Some(3)));
    let after = sb.k8s("GET", &format!("{NP}/spot-pool"), "", "").json;
    assert_eq!(before, after, "dry-run patch changed the stored object");
    assert_eq!(sb.k8s("DELETE", &format!("{NP}/spot-pool?dryRun=All"), "", "").code, 200);
    assert_eq!(sb.k8s("GET", &format!("{NP}/spot-pool"), "", "").code, 200);
    // An invalid object is rejected in dry-run exactly as for real.
    let mut bad = rel.clone();
    bad["spec"]["forProvider"].as_object_mut().unwrap().remove("namespace");
    let a = sb.k8s_json("POST", "/apis/helm.crossplane.io/v1beta1/releases?dryRun=All", &bad);
    assert_eq!(a.code, 422);
    assert_eq!(
        a.json["details"]["causes"][0],
        json!({"reason": "FieldValueRequired", "message": "Required value", "field": "spec.forProvider.namespace"})
    );
    assert_eq!(a.json["details"]["kind"], "Release");
}

#[test]
fn lists_page_with_limit_and_continue() {
    let mut sb = crate::sandbox::inproc::InProc::new(3);
    let mut names = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let path = format!(
            "/apis/argoproj.io/v1alpha1/workflowtemplates?limit=5{}",
            if token.is_empty() { String::new() } else { format!("&continue={token}") }
        );
        let a = sb.k8s("GET", &path, "", "");
        assert_eq!(a.code, 200);
        pages += 1;
        names.extend(
            a.json["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        match a.json["metadata"]["continue"].as_str() {
            Some(t) if !t.is_empty() => {
                assert!(a.json["metadata"]["remainingItemCount"].as_u64().unwrap() > 0);
                token = t.to_string();
            }
            _ => break,
        }
    }
    assert_eq!(names.len(), 4 + 12, "seed templates plus 4 per fleet project");
    assert_eq!(pages, 4);
    let mut dedup = names.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), names.len(), "no item twice");
    let a = sb.k8s("GET", "/apis/argoproj.io/v1alpha1/workflowtemplates?limit=5&continue=garbage", "", "");
    assert_eq!((a.code, a.json["reason"].as_str()), (400, Some("BadRequest")));
    let a = sb.k8s(
        "GET",
        "/api/v1/nodes?labelSelector=karpenter.sh%2Fnodepool%3Dspot-pool%2Ckubernetes.io%2Farch%3Damd64",
        "",
        "",
    );
    assert_eq!(a.json["items"].as_array().unwrap().len(), 1);
}
