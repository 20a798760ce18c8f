//! The engine's contract with the operator, on worlds made with kubectl and GitLab's REST API
//! (never with archshift) and checked the same way: apply refuses what its own plan calls
//! unsafe, blocked changes are never written, a foreign edit beside archshift's fields is kept,
//! and rollback undoes exactly what the journal says archshift did.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

mod common;

use std::path::Path;
use std::process::Output;

use common::{Sandbox, text};
use serde_json::{Value, json};

fn apply(sb: &Sandbox, journal: &Path, extra: &[&str]) -> Output {
    let j = journal.to_str().unwrap();
    sb.command(&[&["apply", "--plan", "plans/sandbox.yaml", "--yes", "--journal", j], extra].concat()).output().unwrap()
}

fn rollback(sb: &Sandbox, journal: &Path, extra: &[&str]) -> Output {
    let j = journal.to_str().unwrap();
    sb.command(&[&["rollback", "--plan", "plans/sandbox.yaml", "--yes", "--journal", j], extra].concat())
        .output()
        .unwrap()
}

fn kubectl_json(sb: &Sandbox, args: &[&str]) -> Value {
    let out = sb.kubectl(&[args, &["-o", "json"]].concat());
    assert!(out.status.success(), "kubectl {args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn gl_json(sb: &Sandbox, path: &str) -> Value {
    let r = sb.gl("GET", path).send().unwrap();
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    r.json().unwrap()
}

fn gl_send(sb: &Sandbox, method: &str, path: &str, body: Value) -> Value {
    let r = sb.gl(method, path).json(&body).send().unwrap();
    assert!(r.status().is_success(), "{method} {path}: {}", r.status());
    r.json().unwrap()
}

/// What rollback must give back, read through kubectl and GitLab's API: the pool's spec, the
/// Releases and token Secrets, the pipeline project's variables, every runner's tags and the
/// pipeline's CI file. Pins kept on purpose (Argo, other projects, the baseline's job pods,
/// the group variable they use) are not in it.
fn world(sb: &Sandbox) -> Value {
    let pool = kubectl_json(sb, &["get", "nodepools.karpenter.sh", "spot-pool"]);
    let names = |v: Value| -> Vec<String> {
        v["items"].as_array().unwrap().iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_string()).collect()
    };
    let releases = names(kubectl_json(sb, &["get", "releases.helm.crossplane.io"]));
    let secrets = names(kubectl_json(sb, &["get", "secrets", "-n", "gitlab-runner"]));
    let variables: Vec<Value> = gl_json(sb, "/projects/platform%2Fkaniko-builder/variables")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| json!([v["key"], v["value"], v["protected"], v["masked"], v["raw"], v["environment_scope"]]))
        .collect();
    let runners: Vec<Value> = gl_json(sb, "/groups/platform/runners?per_page=100")
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let d = gl_json(sb, &format!("/runners/{}", r["id"]));
            json!([d["id"], d["description"], d["tag_list"], d["run_untagged"], d["paused"]])
        })
        .collect();
    json!({
        "pool": pool["spec"],
        "releases": releases,
        "secrets": secrets,
        "variables": variables,
        "runners": runners,
        "ci": sb.pipeline_ci(),
    })
}

/// The baseline's `runners.config` as a values file that uses Helm template logic inside it
/// (the chart renders `runners.config` through `tpl`, so values files in the wild carry
/// `{{- if }}` blocks; shape from the gitlab-runner chart's values.yaml comments).
fn template_the_baseline(sb: &Sandbox) {
    let config = "[[runners]]\n  [runners.kubernetes]\n  {{- if .Values.runners.privileged }}\n    privileged = true\n  {{- end }}\n    namespace = \"{{.Release.Namespace}}\"\n    image = \"alpine\"\n";
    let patch = json!([{"op": "replace", "path": "/spec/forProvider/values/runners/config", "value": config}]);
    let out = sb.kubectl(&[
        "patch",
        "releases.helm.crossplane.io",
        "gitlab-runner",
        "--type",
        "json",
        "-p",
        &patch.to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_denied_permission_stops_apply_before_its_first_write() {
    let sb = Sandbox::start("contract-denied", &["--deny", "patch:nodepools.karpenter.sh"]);
    let journal = common::scratch("contract-denied").join("journal.jsonl");
    let from = sb.requests().len();
    let out = apply(&sb, &journal, &[]);
    assert_eq!(out.status.code(), Some(3), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("STOP denied: patch nodepools.karpenter.sh"), "{stdout}");
    assert!(text(&out.stderr).contains("nothing was written"), "{}", text(&out.stderr));
    assert_eq!(sb.writes_since(from), Vec::<Value>::new(), "zero writes in the request log");
    assert_eq!(sb.runner_descriptions(), ["sandbox"], "no runner was created");
    // --phase 2 writes nothing the denial bears on: the runners' phase may run.
    let out = apply(&sb, &journal, &["--phase", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(sb.runner_descriptions(), ["sandbox", "sandbox-amd64", "sandbox-arm64"]);
    assert_eq!(sb.pool_archs(), r#"["amd64"]"#);
}

#[test]
fn a_refused_baseline_blocks_what_depends_on_it_and_force_writes_only_what_is_in_place() {
    let sb = Sandbox::start("contract-refused", &[]);
    template_the_baseline(&sb);
    // The audit says which changes are blocked and why.
    let out = sb.command(&["audit", "--plan", "plans/sandbox.yaml", "--format", "json", "--quiet"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let phase = |id: &str| report["phases"].as_array().unwrap().iter().find(|p| p["id"] == id).unwrap().clone();
    assert_eq!(phase("runners")["status"], "blocked");
    let blocked: Vec<String> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["blocked"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap().to_string()))
        .collect();
    for id in ["release/gitlab-runner-arm64", "cifile/platform/kaniko-builder/.gitlab-ci.yml", "nodepool/spot-pool"] {
        assert!(blocked.contains(&id.to_string()), "{id} not blocked: {blocked:?}");
    }
    let ci = phase("pipeline")["blocked"].as_array().unwrap()[0]["reason"].as_str().unwrap().to_string();
    assert!(ci.starts_with("needs ") && ci.contains("which was refused"), "the reason names the prerequisite: {ci}");

    let journal = common::scratch("contract-refused").join("journal.jsonl");
    let ci_before = sb.pipeline_ci();
    let from = sb.requests().len();
    let out = apply(&sb, &journal, &[]);
    assert_eq!(out.status.code(), Some(3), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("STOP blocked cifile/platform/kaniko-builder/.gitlab-ci.yml"));
    assert_eq!(sb.writes_since(from), Vec::<Value>::new(), "zero writes in the request log");

    // Forced: what needs nothing refused is written; nothing blocked is.
    let out = apply(&sb, &journal, &["--force"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("FORCED"), "the risks are printed first: {}", text(&out.stdout));
    let releases = kubectl_json(&sb, &["get", "releases.helm.crossplane.io"]);
    let names: Vec<&str> =
        releases["items"].as_array().unwrap().iter().map(|r| r["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["gitlab-runner"], "no Release was created");
    assert_eq!(sb.pipeline_ci(), ci_before, "no job was retagged onto a runner with no process behind it");
    assert_eq!(sb.pool_archs(), r#"["amd64"]"#, "the pool was not widened");
    let writes = sb.writes_since(from);
    assert!(
        !writes.iter().any(|w| w["path"].as_str().is_some_and(|p| p.contains("/repository/commits"))),
        "no CI file was committed anywhere: {writes:#?}"
    );
}

#[test]
fn a_foreign_edit_to_an_untouched_field_is_kept_and_apply_finishes() {
    let sb = Sandbox::start("contract-foreign", &[]);
    let dir = common::scratch("contract-foreign");
    let saved = dir.join("saved.json");
    let out = sb.command(&["plan", "--plan", "plans/sandbox.yaml", "--out", saved.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // After the plan, someone caps the pool's CPU (a field the widening does not touch).
    let out = sb.kubectl(&[
        "patch",
        "nodepools.karpenter.sh",
        "spot-pool",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"limits":{"cpu":"1000"}}}"#,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let journal = dir.join("journal.jsonl");
    let j = journal.to_str().unwrap();
    let out = sb.command(&["apply", saved.to_str().unwrap(), "--yes", "--journal", j]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let pool = kubectl_json(&sb, &["get", "nodepools.karpenter.sh", "spot-pool"]);
    assert_eq!(pool["spec"]["limits"]["cpu"], "1000", "the other writer's field is kept");
    assert_eq!(sb.pool_archs(), r#"["amd64","arm64"]"#);
    // And the same command again continues (here: finds everything in place).
    let out = sb.command(&["apply", saved.to_str().unwrap(), "--yes", "--journal", j]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
}

#[test]
fn rollback_leaves_a_pool_archshift_did_not_widen_byte_identical() {
    let sb = Sandbox::start("contract-pool", &[]);
    // A common public shape: a pool with no kubernetes.io/arch requirement at all (Karpenter's
    // examples/v1 general-purpose NodePool requires only capacity type, category and generation).
    let patch = r#"[{"op":"remove","path":"/spec/template/spec/requirements/1"}]"#;
    let out = sb.kubectl(&["patch", "nodepools.karpenter.sh", "spot-pool", "--type", "json", "-p", patch]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reqs = || {
        let out = sb.kubectl(&[
            "get",
            "nodepools.karpenter.sh",
            "spot-pool",
            "-o",
            "jsonpath={.spec.template.spec.requirements}",
        ]);
        text(&out.stdout)
    };
    let before = reqs();
    assert!(!before.contains("kubernetes.io/arch"), "{before}");
    let journal = common::scratch("contract-pool").join("journal.jsonl");
    // The pool already lets unpinned workloads onto arm64: the plan says so, and apply stops.
    let out = apply(&sb, &journal, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("ordering.hazard"), "{}", text(&out.stdout));
    let out = apply(&sb, &journal, &["--force"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(reqs(), before, "apply had nothing to widen");
    let out = rollback(&sb, &journal, &[]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(reqs(), before, "rollback added no arch requirement archshift never removed");
    assert!(text(&out.stdout).contains("proof:"), "no success line without its proof: {}", text(&out.stdout));
}

#[test]
fn rollback_gives_back_pre_existing_variables_and_never_deletes_a_hand_made_runner() {
    let sb = Sandbox::start("contract-preexisting", &[]);
    // Made by hand before archshift: a protected CICD_TAG_AMD64 with another value, and an
    // arm64 runner registered in the group (GitLab's POST /user/runners, as `glab` does).
    gl_send(
        &sb,
        "POST",
        "/projects/platform%2Fkaniko-builder/variables",
        json!({"key": "CICD_TAG_AMD64", "value": "legacy-amd64", "protected": true}),
    );
    let group = gl_json(&sb, "/groups/platform")["id"].as_u64().unwrap();
    let made = gl_send(
        &sb,
        "POST",
        "/user/runners",
        json!({"runner_type": "group_type", "group_id": group, "description": "arm64 by hand", "tag_list": ["sandbox-arm64"], "run_untagged": true}),
    );
    let hand_made = made["id"].as_u64().unwrap();
    let start = world(&sb);

    let journal = common::scratch("contract-preexisting").join("journal.jsonl");
    let out = apply(&sb, &journal, &[]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let var = gl_json(&sb, "/projects/platform%2Fkaniko-builder/variables/CICD_TAG_AMD64");
    assert_eq!((var["value"].as_str(), var["protected"].as_bool()), (Some("sandbox-amd64"), Some(false)));
    assert_ne!(world(&sb), start);

    let out = rollback(&sb, &journal, &[]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("proof:"), "{stdout}");
    let runner = gl_json(&sb, &format!("/runners/{hand_made}"));
    assert_eq!(runner["id"], hand_made, "the hand-made runner is still there");
    assert_eq!(world(&sb), start, "the world is back, except the documented pins");
}

#[test]
fn rollback_is_not_held_back_by_a_job_it_did_not_move_and_a_resumed_one_gives_the_same_proof() {
    let sb = Sandbox::start("contract-proof", &[]);
    // Someone's lint job, bound to a runner of another team that is not there: it stays
    // pending in every pipeline, before archshift and after its revert.
    let ci = sb.pipeline_ci() + "\nlint:\n  stage: build\n  tags: [other-team]\n  script: [make lint]\n";
    gl_send(
        &sb,
        "PUT",
        "/projects/platform%2Fkaniko-builder/repository/files/.gitlab-ci.yml",
        json!({"branch": "main", "content": ci, "commit_message": "lint on the other team's runner"}),
    );
    let dir = common::scratch("contract-proof");
    // A pipeline waited for whole would time out in 20 s: the proof must not wait for lint.
    let plan = std::fs::read_to_string("plans/sandbox.yaml").unwrap() + "waits:\n  pipeline: 20\n";
    let plan_file = common::write(&dir, "plan.yaml", &plan);
    let (p, journal) = (plan_file.to_str().unwrap(), dir.join("journal.jsonl"));
    let j = journal.to_str().unwrap();
    let out = sb.command(&["apply", "--plan", p, "--yes", "--journal", j]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));

    // Killed once the revert is written, before its proof.
    let mut child = sb
        .command(&["rollback", "--plan", p, "--yes", "--format", "json", "--journal", j])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let revert = "rollback/cifile/platform/kaniko-builder/.gitlab-ci.yml";
    let mut seen = false;
    for line in std::io::BufRead::lines(stdout) {
        let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if event["event"] == "written" && event["id"] == revert {
            seen = true;
            break;
        }
    }
    assert!(seen, "the rollback ended before writing its revert");
    child.kill().unwrap();
    child.wait().unwrap();

    let out = sb.command(&["rollback", "--plan", p, "--yes", "--journal", j]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("the baseline runner takes the work"), "{stdout}");
    let proofs: Vec<&str> = stdout.lines().filter(|l| l.trim_start().starts_with("proof:")).collect();
    assert!(proofs.iter().any(|l| l.contains("on the baseline runner")), "{stdout}");
    assert!(!proofs.iter().any(|l| l.contains("lint")), "lint was not moved by the revert: {stdout}");
    assert_eq!(sb.runner_descriptions(), ["sandbox"], "the rollback finished: {stdout}");
    assert_eq!(sb.pool_archs(), r#"["amd64"]"#);
}
