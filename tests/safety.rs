//! Guarantees across modes, checked from the outside: no token in any output or file of any
//! mode, and an apply that writes only what its saved plan lists (the sandbox's request log
//! compared with the plan).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

mod common;

use std::process::Output;

use common::{Sandbox, text};
use serde_json::Value;

fn run(sb: &Sandbox, args: &[&str]) -> Output {
    sb.command(args).output().unwrap()
}

#[test]
fn no_mode_prints_or_stores_a_token() {
    let sb = Sandbox::start("safety-secrets", &[]);
    let dir = common::scratch("safety-secrets");
    let saved = dir.join("plan.json");
    let md = dir.join("audit.md");
    let (s, m) = (saved.to_str().unwrap(), md.to_str().unwrap());
    let plan = ["--plan", "plans/sandbox.yaml"];
    let runs: Vec<Vec<&str>> = vec![
        [&["plan"][..], &plan].concat(),
        [&["plan", "--format", "json", "--out", s][..], &plan].concat(),
        [&["audit", "--format", "json"][..], &plan].concat(),
        [&["audit", "--format", "markdown", "--out", m][..], &plan].concat(),
        vec!["apply", s, "--yes", "--format", "json"],
        vec!["rollback", s, "--dry-run"],
        vec!["rollback", s, "--yes", "--format", "json"],
        [&["audit"][..], &plan].concat(),
    ];
    let mut outputs = Vec::new();
    for args in &runs {
        let out = run(&sb, args);
        assert!(matches!(out.status.code(), Some(0 | 2)), "{args:?}: {}", text(&out.stderr));
        outputs.push((format!("{args:?}"), text(&out.stdout) + &text(&out.stderr)));
    }
    for file in [saved.clone(), md] {
        outputs.push((file.display().to_string(), std::fs::read_to_string(&file).unwrap()));
    }
    let (pieces, history) = sb.history();
    assert!(!pieces.is_empty() && history.contains("\"event\":\"reverted\""), "the history holds both runs");
    outputs.push(("the history in the cluster".into(), history));
    // The runner tokens GitLab issued: every glrt- token the sandbox holds.
    for (what, content) in &outputs {
        for secret in [sb.gitlab_token.as_str(), sb.kube_token.as_str(), "glrt-", "s3cr3t-registry-pass"] {
            assert!(!content.contains(secret), "{what} shows a secret ({}…)", &secret[..4]);
        }
    }
}

#[test]
fn apply_writes_only_what_the_saved_plan_lists() {
    let sb = Sandbox::start("safety-writes", &[]);
    let saved = common::scratch("safety-writes").join("plan.json");
    let out = run(&sb, &["plan", "--plan", "plans/sandbox.yaml", "--out", saved.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let changes: Vec<&Value> =
        doc["plan"]["phases"].as_array().unwrap().iter().flat_map(|p| p["changes"].as_array().unwrap()).collect();
    let before = sb.requests().len();
    let out = run(&sb, &["apply", saved.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let enc = |s: &str| s.replace('/', "%2F");
    let listed = |w: &Value| -> bool {
        let (method, path) = (w["method"].as_str().unwrap(), w["path"].as_str().unwrap());
        changes.iter().any(|c| {
            let t = &c["target"];
            match t["type"].as_str().unwrap() {
                "kube" => {
                    let plural = archshift::vocab::plural(t["kind"].as_str().unwrap());
                    let name = t["name"].as_str().unwrap();
                    path.ends_with(&format!("/{plural}/{name}"))
                        || (method == "POST" && path.ends_with(&format!("/{plural}")))
                }
                "gitLabRunner" => path == "/api/v4/user/runners",
                "projectVariable" => {
                    path.starts_with(&format!("/api/v4/projects/{}/variables", enc(t["project"].as_str().unwrap())))
                }
                "groupVariable" => {
                    path.starts_with(&format!("/api/v4/groups/{}/variables", enc(t["group"].as_str().unwrap())))
                }
                "ciFile" => {
                    let project = format!("/api/v4/projects/{}/", enc(t["project"].as_str().unwrap()));
                    path.starts_with(&project)
                        && (path.ends_with("/repository/commits")
                            || path.contains("/merge_requests")
                            || path.ends_with("/ci/lint"))
                }
                _ => false,
            }
        })
    };
    let writes: Vec<Value> = sb.requests()[before..]
        .iter()
        .filter(|r| r["method"] != "GET")
        .filter(|r| r["path"] != "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
        .cloned()
        .collect();
    assert!(writes.len() >= changes.len(), "{} writes for {} changes", writes.len(), changes.len());
    // Beside the plan's writes, only the migration's own state: its Lease, its history.
    let own_state = |w: &Value| {
        let path = w["path"].as_str().unwrap();
        path.starts_with("/apis/coordination.k8s.io/v1/namespaces/gitlab-runner/leases")
            || (path.starts_with("/api/v1/namespaces/gitlab-runner/secrets/archshift-sandbox-")
                && path.contains("-journal-"))
            || (path == "/api/v1/namespaces/gitlab-runner/secrets" && w["method"] == "POST")
    };
    let unlisted: Vec<&Value> = writes.iter().filter(|w| !listed(w) && !own_state(w)).collect();
    assert!(unlisted.is_empty(), "writes the saved plan does not list: {unlisted:#?}");
    let runners = writes.iter().filter(|w| w["path"] == "/api/v4/user/runners").count();
    let planned = changes.iter().filter(|c| c["target"]["type"] == "gitLabRunner").count();
    assert_eq!(runners, planned, "one runner per planned runner, none twice");
}
