//! What apply, verify and rollback lean on, as the real servers behave: deletion with
//! finalizers, generations the conditions were computed for, Karpenter's NodePool status,
//! writes that change nothing, and preconditions. Checked through kubectl and over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

mod common;

use std::io::{BufRead, BufReader};

use common::{Sandbox, text};
use serde_json::{Value, json};

const RELEASES: &str = "/apis/helm.crossplane.io/v1beta1/releases";
const NP: &str = "/apis/karpenter.sh/v1/nodepools";
const SECRETS: &str = "/api/v1/namespaces/gitlab-runner/secrets";

fn body(r: reqwest::blocking::Response) -> (u16, Value) {
    let code = r.status().as_u16();
    (code, r.json().unwrap_or(Value::Null))
}

fn ready(obj: &Value) -> (String, String, i64) {
    let c = obj["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
    (
        c["status"].as_str().unwrap().to_string(),
        c["reason"].as_str().unwrap().to_string(),
        c["observedGeneration"].as_i64().unwrap_or(-1),
    )
}

#[test]
fn a_release_is_finalized_and_its_deletion_waits_for_the_uninstall() {
    let sb = Sandbox::start("finalizers", &["--fault", "k8s:stuck:path=/apis/helm.crossplane.io/*/releases/stuck-*"]);
    // provider-helm took the baseline over: its finalizer and the external name.
    let (_, base) = body(sb.k8s("GET", &format!("{RELEASES}/gitlab-runner")).send().unwrap());
    assert_eq!(base["metadata"]["finalizers"], json!(["finalizer.managedresource.crossplane.io"]));
    assert_eq!(base["metadata"]["annotations"]["crossplane.io/external-name"], "gitlab-runner");

    // kubectl delete --wait=false marks it; the Release reports Deleting, then goes.
    let out = sb.kubectl(&["delete", "release.helm.crossplane.io", "gitlab-runner", "--wait=false"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (code, marked) = body(sb.k8s("GET", &format!("{RELEASES}/gitlab-runner")).send().unwrap());
    assert_eq!(code, 200, "still there while its finalizer stands");
    assert!(marked["metadata"]["deletionTimestamp"].is_string(), "{marked}");
    sb.wait_for("Ready=False reason Deleting or gone", 10, || {
        let (code, o) = body(sb.k8s("GET", &format!("{RELEASES}/gitlab-runner")).send().unwrap());
        (code == 404 || ready(&o).1 == "Deleting").then_some(())
    });
    sb.wait_for("the Release to be gone", 10, || {
        (sb.k8s("GET", &format!("{RELEASES}/gitlab-runner")).send().unwrap().status().as_u16() == 404).then_some(())
    });

    // A stuck uninstall keeps it: Deleting, forever.
    let mut stuck = base.clone();
    for k in ["resourceVersion", "uid", "creationTimestamp", "managedFields", "finalizers", "annotations", "generation"]
    {
        stuck["metadata"].as_object_mut().unwrap().remove(k);
    }
    stuck["metadata"]["name"] = json!("stuck-runner");
    stuck.as_object_mut().unwrap().remove("status");
    assert_eq!(sb.k8s("POST", RELEASES).json(&stuck).send().unwrap().status().as_u16(), 201);
    sb.wait_for("the finalizer", 10, || {
        let (_, o) = body(sb.k8s("GET", &format!("{RELEASES}/stuck-runner")).send().unwrap());
        o["metadata"]["finalizers"].is_array().then_some(())
    });
    assert_eq!(sb.k8s("DELETE", &format!("{RELEASES}/stuck-runner")).send().unwrap().status().as_u16(), 200);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (code, o) = body(sb.k8s("GET", &format!("{RELEASES}/stuck-runner")).send().unwrap());
    assert_eq!((code, ready(&o).1.as_str()), (200, "Deleting"));

    // No new finalizer on an object being deleted.
    let (code, err) = body(
        sb.k8s("PATCH", &format!("{RELEASES}/stuck-runner"))
            .header("Content-Type", "application/merge-patch+json")
            .body(r#"{"metadata":{"finalizers":["finalizer.managedresource.crossplane.io","x.example/late"]}}"#)
            .send()
            .unwrap(),
    );
    assert_eq!(code, 422, "{err}");
    assert!(err["message"].as_str().unwrap().contains("no new finalizers can be added if the object is being deleted"));
    // Removing the finalizer by hand finishes the deletion.
    let (code, _) = body(
        sb.k8s("PATCH", &format!("{RELEASES}/stuck-runner"))
            .header("Content-Type", "application/merge-patch+json")
            .body(r#"{"metadata":{"finalizers":null}}"#)
            .send()
            .unwrap(),
    );
    assert_eq!(code, 200);
    assert_eq!(sb.k8s("GET", &format!("{RELEASES}/stuck-runner")).send().unwrap().status().as_u16(), 404);
}

#[test]
fn conditions_carry_the_generation_they_were_computed_for_and_kubectl_wait_waits_for_it() {
    let sb = Sandbox::start("generation", &[]);
    let (_, before) = body(sb.k8s("GET", &format!("{RELEASES}/gitlab-runner")).send().unwrap());
    let generation = before["metadata"]["generation"].as_i64().unwrap();
    assert_eq!(ready(&before), ("True".into(), "Available".into(), generation));
    assert_eq!(before["status"]["observedGeneration"], json!(generation));
    // The write's answer still carries the conditions of the old generation.
    let (_, patched) = body(
        sb.k8s("PATCH", &format!("{RELEASES}/gitlab-runner"))
            .header("Content-Type", "application/merge-patch+json")
            .body(r#"{"spec":{"forProvider":{"values":{"concurrent":12}}}}"#)
            .send()
            .unwrap(),
    );
    assert_eq!(patched["metadata"]["generation"], json!(generation + 1));
    assert_eq!(ready(&patched).2, generation, "not reconciled yet");
    let out =
        sb.kubectl(&["wait", "--for=condition=Ready", "release.helm.crossplane.io/gitlab-runner", "--timeout=10s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (_, after) = body(sb.k8s("GET", &format!("{RELEASES}/gitlab-runner")).send().unwrap());
    assert_eq!(ready(&after).2, generation + 1);
}

#[test]
fn nodepools_report_karpenters_conditions_nodes_and_resources() {
    let sb = Sandbox::start("nodepool-status", &[]);
    let (_, pool) = body(sb.k8s("GET", &format!("{NP}/spot-pool")).send().unwrap());
    let generation = pool["metadata"]["generation"].as_i64().unwrap();
    let conds: Vec<(String, String, i64)> = pool["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap().into(),
                c["status"].as_str().unwrap().into(),
                c["observedGeneration"].as_i64().unwrap(),
            )
        })
        .collect();
    let types: Vec<&str> = conds.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(types, ["ValidationSucceeded", "NodeClassReady", "NodeRegistrationHealthy", "Ready"]);
    assert!(conds.iter().all(|c| c.1 == "True" && c.2 == generation), "{conds:?}");
    let nodes = pool["status"]["nodes"].as_i64().unwrap();
    assert_eq!(pool["status"]["resources"]["nodes"], json!(nodes.to_string()));
    // kubectl reads the Ready printer column from these conditions.
    let out = sb.kubectl(&["get", "nodepool", "spot-pool"]);
    assert!(text(&out.stdout).contains("True"), "{}", text(&out.stdout));

    // A spec change: registration health is unknown until a node of the new spec registers.
    let out = sb.kubectl(&["patch", "nodepool", "spot-pool", "--type=merge", "-p", r#"{"spec":{"weight":7}}"#]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    sb.wait_for("NodeRegistrationHealthy=Unknown at the new generation", 10, || {
        let (_, p) = body(sb.k8s("GET", &format!("{NP}/spot-pool")).send().unwrap());
        p["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| {
                c["type"] == "NodeRegistrationHealthy"
                    && c["status"] == "Unknown"
                    && c["observedGeneration"] == generation + 1
            })
            .then_some(())
    });
}

#[test]
fn writes_that_change_nothing_are_not_stored() {
    let sb = Sandbox::start("noop", &[]);
    let manifest = sb.dir.join("cm.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: noop, namespace: gitlab-runner}\ndata: {a: b}\n",
    )
    .unwrap();
    let apply = || sb.kubectl(&["apply", "--server-side", "-f", manifest.to_str().unwrap(), "-o", "json"]);
    let first: Value = serde_json::from_slice(&apply().stdout).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second: Value = serde_json::from_slice(&apply().stdout).unwrap();
    assert_eq!(first["metadata"]["resourceVersion"], second["metadata"]["resourceVersion"]);
    assert_eq!(first["metadata"]["managedFields"], second["metadata"]["managedFields"], "timestamps kept");

    // A merge patch that sets what is there: same resourceVersion, and no watch event.
    let (_, secret) = body(sb.k8s("GET", &format!("{SECRETS}/gitlab-runner-secret")).send().unwrap());
    let rv = secret["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let (code, same) = body(
        sb.k8s("PATCH", &format!("{SECRETS}/gitlab-runner-secret"))
            .header("Content-Type", "application/merge-patch+json")
            .body(json!({"data": secret["data"]}).to_string())
            .send()
            .unwrap(),
    );
    assert_eq!((code, same["metadata"]["resourceVersion"].as_str()), (200, Some(rv.as_str())));
    let events: Vec<String> = BufReader::new(
        sb.k8s("GET", &format!("{SECRETS}?watch=true&resourceVersion={rv}&timeoutSeconds=1")).send().unwrap(),
    )
    .lines()
    .map(Result::unwrap)
    .collect();
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn preconditions_are_refused_as_the_api_server_refuses_them() {
    let sb = Sandbox::start("preconditions", &[]);
    let (_, pool) = body(sb.k8s("GET", &format!("{NP}/spot-pool")).send().unwrap());
    // A create carrying a resourceVersion.
    let mut copy = pool.clone();
    copy["metadata"] = json!({"name": "copy-pool", "resourceVersion": "5"});
    copy.as_object_mut().unwrap().remove("status");
    let (code, err) = body(sb.k8s("POST", NP).json(&copy).send().unwrap());
    assert_eq!(code, 500, "{err}");
    assert_eq!(err["message"], "resourceVersion should not be set on objects to be created");
    assert!(err.get("reason").is_none(), "StatusReasonUnknown is omitted: {err}");

    // A PUT with another object's uid.
    let mut stale = pool.clone();
    stale["metadata"]["uid"] = json!("00000000-0000-4000-8000-000000000000");
    let (code, err) = body(sb.k8s("PUT", &format!("{NP}/spot-pool")).json(&stale).send().unwrap());
    assert_eq!(code, 409, "{err}");
    assert!(err["message"].as_str().unwrap().contains("Precondition failed: UID in precondition: 00000000"), "{err}");

    // A DELETE with stale preconditions changes nothing.
    for pre in [json!({"uid": "00000000-0000-4000-8000-000000000000"}), json!({"resourceVersion": "1"})] {
        let options = json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": pre});
        let (code, err) = body(sb.k8s("DELETE", &format!("{NP}/spot-pool")).json(&options).send().unwrap());
        assert_eq!(code, 409, "{err}");
        assert!(err["message"].as_str().unwrap().contains("Precondition failed"), "{err}");
    }
    let (code, still) = body(sb.k8s("GET", &format!("{NP}/spot-pool")).send().unwrap());
    assert_eq!((code, &still["metadata"]["uid"]), (200, &pool["metadata"]["uid"]));
    // Matching preconditions delete it.
    let options = json!({"preconditions": {"uid": pool["metadata"]["uid"], "resourceVersion": still["metadata"]["resourceVersion"]}});
    assert_eq!(sb.k8s("DELETE", &format!("{NP}/spot-pool")).json(&options).send().unwrap().status().as_u16(), 200);
}

#[test]
fn selectors_and_metadata_are_validated_as_kubectl_sees_it() {
    let sb = Sandbox::start("selectors", &[]);
    let out = sb.kubectl(&["get", "nodepools", "--field-selector", "metadata.name!=spot-pool", "-o", "name"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "nodepool.karpenter.sh/system-pool");
    let out = sb.kubectl(&["get", "nodepools", "--field-selector", "spec.weight=1"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("field label not supported: spec.weight"), "{}", text(&out.stderr));
    let out = sb.kubectl(&["get", "secrets", "-n", "gitlab-runner", "--field-selector", "type=Opaque", "-o", "name"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A malformed label selector is a 400 from the server.
    let (code, err) = body(sb.k8s("GET", &format!("{NP}?labelSelector=a%3Db%3Dc")).send().unwrap());
    assert_eq!(code, 400, "{err}");
    assert!(err["message"].as_str().unwrap().starts_with("unable to parse requirement: values[0][a]"), "{err}");
    // Invalid label keys and values, and annotation keys, are refused on write.
    let out = sb.kubectl(&["label", "nodepool", "spot-pool", "bad key=x"]);
    assert!(!out.status.success());
    let (code, err) = body(
        sb.k8s("PATCH", &format!("{NP}/spot-pool"))
            .header("Content-Type", "application/merge-patch+json")
            .body(r#"{"metadata":{"labels":{"team":"data platform"},"annotations":{"-bad/":"x"}}}"#)
            .send()
            .unwrap(),
    );
    assert_eq!(code, 422, "{err}");
    let fields: Vec<&str> =
        err["details"]["causes"].as_array().unwrap().iter().map(|c| c["field"].as_str().unwrap()).collect();
    assert!(fields.contains(&"metadata.labels") && fields.contains(&"metadata.annotations"), "{err}");
}

#[test]
fn two_managers_each_own_their_finalizers_and_status_applies_to_the_subresource() {
    let sb = Sandbox::start("ssa-lists", &[]);
    let apply = |manager: &str, finalizer: &str| {
        let file = sb.dir.join(format!("{manager}.yaml"));
        std::fs::write(
            &file,
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\n  namespace: gitlab-runner\n  finalizers: [{finalizer}]\n"),
        )
        .unwrap();
        let out = sb.kubectl(&["apply", "--server-side", "--field-manager", manager, "-f", file.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    apply("team-a", "a.example/x");
    apply("team-b", "b.example/y");
    let (_, cm) = body(sb.k8s("GET", "/api/v1/namespaces/gitlab-runner/configmaps/shared").send().unwrap());
    assert_eq!(cm["metadata"]["finalizers"], json!(["a.example/x", "b.example/y"]), "no conflict, both kept");

    // Apply to /status: status set, and ownership recorded for the subresource.
    let status = json!({"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "spot-pool"},
                        "status": {"nodes": 9}});
    let (code, pool) = body(
        sb.k8s("PATCH", &format!("{NP}/spot-pool/status?fieldManager=fake-karpenter&force=true"))
            .header("Content-Type", "application/apply-patch+yaml")
            .body(status.to_string())
            .send()
            .unwrap(),
    );
    assert_eq!(code, 200, "{pool}");
    assert_eq!(pool["status"]["nodes"], json!(9));
    let entry = pool["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "fake-karpenter")
        .unwrap()
        .clone();
    assert_eq!((entry["operation"].as_str(), entry["subresource"].as_str()), (Some("Apply"), Some("status")));
}
