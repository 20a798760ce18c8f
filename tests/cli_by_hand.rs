//! A world migrated by hand, not by archshift: the operator copies the bodies from
//! `archshift plan --format json` and makes every write with kubectl and python-gitlab
//! (`tests/by_hand/migrate.py`). The audit must then say exactly what is left: all of it on
//! a fresh world, the other three phases after the Runners phase alone, nothing (exit 0) at
//! the end. It reads only, and prints no token.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{Sandbox, text};
use serde_json::Value;

/// Change ids per phase, from a plan (`phases[].changes[].id`) or an audit report
/// (`phases[].changes[].id` too: the two agree on ids).
fn ids(doc: &Value, phase: &str) -> BTreeSet<String> {
    let key = if doc.get("formatVersion").is_some() { "phase" } else { "id" };
    doc["phases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p[key] == phase)
        .flat_map(|p| p["changes"].as_array().unwrap())
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

fn by_hand(sb: &Sandbox, plan: &Path, phases: &[&str]) {
    let has = Command::new("python3").args(["-c", "import gitlab"]).status().expect("python3");
    assert!(has.success(), "python-gitlab is not installed: run scripts/setup-test-tools first");
    let out = Command::new("python3")
        .arg("tests/by_hand/migrate.py")
        .arg(sb.kubeconfig())
        .arg(plan)
        .args(phases)
        .env("GITLAB_URL", &sb.gitlab_url)
        .env("GITLAB_TOKEN", &sb.gitlab_token)
        .output()
        .unwrap();
    assert!(out.status.success(), "by-hand migration failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
}

fn audit(sb: &Sandbox) -> (Option<i32>, Value) {
    let out = sb.archshift("audit", &sb.gitlab_token, &["--format", "json", "--quiet"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!stdout.contains(&sb.gitlab_token) && !stderr.contains(&sb.gitlab_token), "the token was printed");
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("audit JSON: {e}\n{stdout}\n{stderr}"));
    (out.status.code(), report)
}

fn statuses(report: &Value) -> Vec<(String, String)> {
    report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap().to_string(), p["status"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn a_world_migrated_by_hand_audits_as_exactly_what_is_left_then_done() {
    let sb = Sandbox::start("cli-by-hand", &[]);
    let out = sb.archshift("plan", &sb.gitlab_token, &["--format", "json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains(&sb.gitlab_token), "plan --format json printed the token");
    let fresh: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(fresh["formatVersion"], 1);
    let dir = common::scratch("cli-by-hand-plan");
    let plan_file = common::write(&dir, "plan.json", &stdout);

    // The Runners phase alone, by hand: the audit reports exactly the other phases' changes.
    by_hand(&sb, &plan_file, &["runners"]);
    let (code, report) = sb.wait_for("the hand-made runners to come online", 30, || {
        let (code, report) = audit(&sb);
        (report["phases"][1]["status"] == "done").then_some((code, report))
    });
    assert_eq!(code, Some(2), "work is left");
    assert!(ids(&report, "runners").is_empty(), "{report:#}");
    for phase in ["nodepool", "pipeline", "workloads"] {
        assert_eq!(ids(&report, phase), ids(&fresh, phase), "{phase}: what is left");
        assert!(!ids(&report, phase).is_empty());
    }
    assert_eq!(
        report["summary"]["pending_changes"].as_u64().unwrap() as usize,
        ["nodepool", "pipeline", "workloads"].iter().map(|p| ids(&fresh, p).len()).sum::<usize>()
    );

    // The rest, by hand.
    by_hand(&sb, &plan_file, &["pipeline", "workloads", "nodepool"]);
    let before = sb.requests().len();
    let (code, report) = sb.wait_for("the hand-migrated world to audit clean", 30, || {
        let (code, report) = audit(&sb);
        (code == Some(0)).then_some((code, report))
    });
    assert_eq!(code, Some(0));
    assert_eq!(
        statuses(&report),
        ["nodepool", "runners", "pipeline", "workloads"].map(|p| (p.to_string(), "done".to_string())).to_vec()
    );
    assert_eq!(report["summary"]["pending_changes"], 0);
    assert_eq!(report["summary"]["risks"], 0);
    let writes = sb.writes_since(before);
    assert!(writes.is_empty(), "audit wrote: {writes:?}");
}
