//! Access reviews the way kubectl sends them (`auth can-i` as protobuf, `can-i --list`,
//! `auth whoami`), a restricted identity whose writes are forbidden, and every verb
//! discovery advertises.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

mod common;

use common::{Sandbox, text};
use serde_json::{Value, json};

#[test]
fn kubectl_auth_reviews_work_for_a_full_and_a_restricted_identity() {
    let sb = Sandbox::start("access", &[]);
    let out = sb.kubectl(&["auth", "can-i", "patch", "nodepools.karpenter.sh"]);
    assert_eq!((out.status.code(), text(&out.stdout).trim()), (Some(0), "yes"), "{}", text(&out.stderr));
    let out = sb.kubectl(&["auth", "can-i", "--list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("*.*"), "{}", text(&out.stdout));
    let out = sb.kubectl(&["auth", "whoami", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let who: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "archshift-sandbox-admin");

    let restricted = Sandbox::start("restricted", &["--deny", "patch:nodepools.karpenter.sh", "--deny", "*:secrets"]);
    let out = restricted.kubectl(&["auth", "can-i", "patch", "nodepools.karpenter.sh"]);
    assert_eq!((out.status.code(), text(&out.stdout).trim()), (Some(1), "no"));
    let out = restricted.kubectl(&["auth", "can-i", "get", "nodepools.karpenter.sh"]);
    assert_eq!(text(&out.stdout).trim(), "yes");
    let out = restricted.kubectl(&["auth", "can-i", "--list"]);
    let rules = text(&out.stdout);
    assert!(rules.contains("nodepools.karpenter.sh") && !rules.contains("*.*"), "{rules}");
    let np_line = rules.lines().find(|l| l.starts_with("nodepools.karpenter.sh")).unwrap();
    assert!(!np_line.contains("patch") && np_line.contains("get"), "{np_line}");
    // The write itself is forbidden, worded as RBAC words it.
    let out = restricted.kubectl(&["patch", "nodepool", "spot-pool", "--type=merge", "-p", r#"{"spec":{"weight":2}}"#]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(
            "nodepools.karpenter.sh \"spot-pool\" is forbidden: User \"archshift-sandbox-restricted\" cannot patch resource \"nodepools\" in API group \"karpenter.sh\" at the cluster scope"
        ),
        "{}",
        text(&out.stderr)
    );
    let out = restricted.kubectl(&["get", "secrets", "-n", "gitlab-runner"]);
    assert!(
        text(&out.stderr)
            .contains("cannot list resource \"secrets\" in API group \"\" in the namespace \"gitlab-runner\"")
    );
}

#[test]
fn every_verb_discovery_advertises_works_and_no_other() {
    let sb = Sandbox::start("verbs", &[]);
    let resources: Value = sb.k8s("GET", "/api/v1").send().unwrap().json().unwrap();
    let secrets = resources["resources"].as_array().unwrap().iter().find(|r| r["name"] == "secrets").unwrap();
    assert!(secrets["verbs"].as_array().unwrap().contains(&json!("deletecollection")));
    for name in ["a", "b"] {
        let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "gitlab-runner", "labels": {"batch": "x"}}});
        assert_eq!(
            sb.k8s("POST", "/api/v1/namespaces/gitlab-runner/secrets").json(&s).send().unwrap().status().as_u16(),
            201
        );
    }
    let out = sb.kubectl(&["delete", "secrets", "-n", "gitlab-runner", "-l", "batch=x"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let gone: Value = sb
        .k8s("GET", "/api/v1/namespaces/gitlab-runner/secrets?labelSelector=batch%3Dx")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(gone["items"], json!([]));
    let deleted: Value = sb
        .k8s("DELETE", "/apis/karpenter.sh/v1/nodepools?fieldSelector=metadata.name%3Dsystem-pool")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(deleted["kind"], "NodePoolList");
    assert_eq!(deleted["items"][0]["metadata"]["name"], "system-pool");
    // Namespaces advertise no deletecollection: the server refuses it.
    assert_eq!(sb.k8s("DELETE", "/api/v1/namespaces").send().unwrap().status().as_u16(), 405);
}
