//! `archshift plan --out` and `archshift apply` against the sandbox, checked through the
//! sandbox's own APIs (kubectl and GitLab's REST API), never through archshift's report: the
//! whole migration, a second apply that writes nothing, stale and foreign saved plans refused
//! with nothing written, kill -9 mid-apply then resume, and `--phase` refusing what its
//! dependencies do not allow yet.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Output, Stdio};

use common::{Sandbox, text};
use serde_json::Value;

fn run(sb: &Sandbox, args: &[&str]) -> Output {
    sb.command(args).output().unwrap()
}

/// `plan --out` into a scratch dir; returns the saved plan's path.
fn save(sb: &Sandbox, name: &str) -> PathBuf {
    let saved = common::scratch(name).join("plan.json");
    let out = run(sb, &["plan", "--plan", "plans/sandbox.yaml", "--out", saved.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    saved
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

/// The group's runners with their detail, by description.
fn runners(sb: &Sandbox) -> Vec<Value> {
    gl_json(sb, "/groups/platform/runners?per_page=100")
        .as_array()
        .unwrap()
        .iter()
        .map(|r| gl_json(sb, &format!("/runners/{}", r["id"])))
        .collect()
}

fn assert_migrated(sb: &Sandbox) {
    let pool = kubectl_json(sb, &["get", "nodepools.karpenter.sh", "spot-pool"]);
    let reqs = pool["spec"]["template"]["spec"]["requirements"].as_array().unwrap();
    let arch = reqs.iter().find(|r| r["key"] == "kubernetes.io/arch").unwrap();
    assert_eq!(arch["values"], serde_json::json!(["amd64", "arm64"]));
    for name in ["gitlab-runner-amd64", "gitlab-runner-arm64"] {
        let rel = kubectl_json(sb, &["get", "releases.helm.crossplane.io", name]);
        let ready = rel["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        assert!(ready, "{name} Ready: {}", rel["status"]);
    }
    let all = runners(sb);
    assert_eq!(all.len(), 3, "the baseline and one runner per architecture, no duplicate: {all:?}");
    for arch in ["amd64", "arm64"] {
        let tag = format!("sandbox-{arch}");
        let r = all.iter().find(|r| r["description"] == tag.as_str()).unwrap();
        assert_eq!((r["status"].as_str(), &r["tag_list"]), (Some("online"), &serde_json::json!([tag])), "{r}");
        let managers = gl_json(sb, &format!("/runners/{}/managers", r["id"]));
        assert_eq!(managers[0]["architecture"], arch);
    }
    assert_eq!(gl_json(sb, "/projects/platform%2Fkaniko-builder/variables/CICD_TAG_ARM64")["value"], "sandbox-arm64");
    let ci = sb.pipeline_ci();
    assert!(ci.contains("$CICD_TAG_ARM64") && ci.contains("$CICD_TAG_AMD64"), "{ci}");
    let merged = gl_json(sb, "/projects/platform%2Fkaniko-builder/merge_requests?state=merged");
    assert_eq!(merged.as_array().unwrap().len(), 1, "the change went through a merge request");
    let tpl = kubectl_json(sb, &["get", "workflowtemplates.argoproj.io", "build-images", "-n", "ci"]);
    assert_eq!(tpl["spec"]["nodeSelector"]["kubernetes.io/arch"], "amd64");
    // The proof: a pipeline on main whose arm64 build ran on an arm64 runner.
    let pipelines = gl_json(sb, "/projects/platform%2Fkaniko-builder/pipelines?ref=main");
    let latest = &pipelines[0];
    let jobs = gl_json(sb, &format!("/projects/platform%2Fkaniko-builder/pipelines/{}/jobs", latest["id"]));
    let job = jobs.as_array().unwrap().iter().find(|j| j["name"] == "build_arm64").unwrap();
    assert_eq!(
        (job["status"].as_str(), job["runner_manager"]["architecture"].as_str()),
        (Some("success"), Some("arm64"))
    );
}

fn no_secret_in(sb: &Sandbox, what: &str, content: &str) {
    for secret in [sb.gitlab_token.as_str(), sb.kube_token.as_str(), "glrt-"] {
        assert!(!content.contains(secret), "{what} contains a secret ({})", &secret[..5.min(secret.len())]);
    }
}

#[test]
fn plan_apply_audit_the_whole_migration_then_a_second_apply_writes_nothing() {
    let sb = Sandbox::start("cli-apply", &[]);
    let saved = save(&sb, "cli-apply");
    let journal = saved.with_file_name("journal.jsonl");
    let out = run(&sb, &["apply", saved.to_str().unwrap(), "--yes", "--journal", journal.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("proof: build_arm64 on arm64: "), "{stdout}");
    assert_migrated(&sb);

    let audit = sb.archshift("audit", &sb.gitlab_token, &["--quiet"]);
    assert_eq!(audit.status.code(), Some(0), "{}", text(&audit.stdout));

    let before = sb.requests().len();
    let again = run(&sb, &["apply", saved.to_str().unwrap(), "--yes", "--journal", journal.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert!(text(&again.stdout).contains("Nothing to do"), "{}", text(&again.stdout));
    let writes = sb.writes_since(before);
    assert!(writes.is_empty(), "a finished plan applied again wrote: {writes:?}");

    for (what, content) in [
        ("stdout", stdout),
        ("stderr", stderr),
        ("the journal", std::fs::read_to_string(&journal).unwrap()),
        ("the saved plan", std::fs::read_to_string(&saved).unwrap()),
    ] {
        no_secret_in(&sb, what, &content);
    }
    #[cfg(unix)]
    for file in [&saved, &journal] {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(file).unwrap().permissions().mode() & 0o777, 0o600, "{}", file.display());
    }
}

/// A forger can edit a saved plan and seal it again, with any key but the one kept in the
/// cluster; nor can they drop the endpoints to skip the check that it is replayed where it
/// was made. Each is refused before anything is written.
#[test]
fn a_forged_or_endpointless_saved_plan_is_refused_with_nothing_written() {
    use archshift::engine::saved::{SavedPlan, SealKey};
    let sb = Sandbox::start("cli-apply-forged", &[]);
    let saved = save(&sb, "cli-apply-forged");
    let journal = saved.with_file_name("journal.jsonl");
    let apply =
        |file: &PathBuf| run(&sb, &["apply", file.to_str().unwrap(), "--yes", "--journal", journal.to_str().unwrap()]);

    // The key is in the cluster, labelled as archshift's, and not in the file.
    let secret = kubectl_json(&sb, &["get", "secret", "archshift-sandbox-seal", "-n", "gitlab-runner"]);
    assert_eq!(secret["metadata"]["labels"]["app.kubernetes.io/managed-by"], "archshift");
    let key_b64 = secret["data"]["hmac-sha256-key"].as_str().unwrap();
    let file = std::fs::read_to_string(&saved).unwrap();
    assert!(!file.contains(key_b64), "the seal key never reaches the saved plan");
    assert!(file.contains("\"seal\": \"hmac-sha256:"), "{file}");

    // Edited, then re-sealed with a key of the forger's own.
    let original = SavedPlan::read("f", &file).unwrap();
    let edited = SavedPlan::read("f", &file.replacen("sandbox-arm64", "sandbox-arm65", 1)).unwrap();
    assert_ne!(edited, original);
    let forged = SavedPlan::seal(
        &edited.spec_file,
        &edited.spec,
        edited.plan,
        edited.seal_key,
        &SealKey::new(vec![9; 32]).unwrap(),
    );
    let forged_file = saved.with_file_name("forged.json");
    std::fs::write(&forged_file, forged.to_json()).unwrap();
    let before = sb.requests().len();
    let out = apply(&forged_file);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("the seal does not match"), "{}", text(&out.stderr));
    assert!(sb.writes_since(before).is_empty(), "wrote after the refusal: {:?}", sb.writes_since(before));

    // Endpoints removed: refused as read, never a skipped check.
    let mut value: Value = serde_json::from_str(&file).unwrap();
    value["plan"]["endpoints"] = serde_json::json!({});
    let bare = saved.with_file_name("bare.json");
    std::fs::write(&bare, value.to_string()).unwrap();
    let out = apply(&bare);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("names no cluster"), "{}", text(&out.stderr));

    // The key deleted: nothing can be checked, so nothing is replayed.
    let out = sb.kubectl(&["delete", "secret", "archshift-sandbox-seal", "-n", "gitlab-runner"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = sb.requests().len();
    let out = apply(&saved);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("seal key (Secret gitlab-runner/archshift-sandbox-seal) is not in this cluster"),
        "{}",
        text(&out.stderr)
    );
    assert!(sb.writes_since(before).is_empty());
}

#[test]
fn stale_edited_and_foreign_saved_plans_are_refused_with_nothing_written() {
    let sb = Sandbox::start("cli-apply-stale", &[]);
    let saved = save(&sb, "cli-apply-stale");
    let journal = saved.with_file_name("journal.jsonl");
    let apply = |sb: &Sandbox, file: &PathBuf| {
        run(sb, &["apply", file.to_str().unwrap(), "--yes", "--journal", journal.to_str().unwrap()])
    };

    // Someone else edits the very values the plan replaces.
    let patch = r#"[{"op":"replace","path":"/spec/template/spec/requirements/1/values","value":["amd64","ppc64le"]}]"#;
    let out = sb.kubectl(&["patch", "nodepools.karpenter.sh", "spot-pool", "--type", "json", "-p", patch]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = sb.requests().len();
    let out = apply(&sb, &saved);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("stale") && err.contains("nodepool/spot-pool") && err.contains("no longer holds"), "{err}");
    assert!(sb.writes_since(before).is_empty(), "wrote after the refusal: {:?}", sb.writes_since(before));

    // A byte changed by hand.
    let edited = saved.with_file_name("edited.json");
    std::fs::write(&edited, std::fs::read_to_string(&saved).unwrap().replacen("sandbox-arm64", "sandbox-arm65", 1))
        .unwrap();
    let out = apply(&sb, &edited);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("the seal does not match"), "{}", text(&out.stderr));

    // Replayed against another cluster and GitLab.
    let other = Sandbox::start("cli-apply-other", &[]);
    let before = other.requests().len();
    let out = apply(&other, &saved);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("the saved plan was made against cluster"), "{}", text(&out.stderr));
    assert!(other.writes_since(before).is_empty());

    // Without --yes and without a terminal to ask on: refused before anything.
    let out = run(&sb, &["apply", saved.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("refusing to apply without --yes"), "{}", text(&out.stderr));
}

#[test]
fn kill_9_right_after_a_runner_is_created_then_apply_again_reaches_the_same_end_state() {
    let sb = Sandbox::start("cli-apply-kill", &[]);
    let saved = save(&sb, "cli-apply-kill");
    let journal = saved.with_file_name("journal.jsonl");
    let args = ["apply", saved.to_str().unwrap(), "--yes", "--format", "json", "--journal", journal.to_str().unwrap()];
    let mut child = sb.command(&args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines() {
        let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
        // The runner exists in GitLab, its token only in the dying process: the worst moment.
        if event["event"] == "written" && event["id"] == "runner/sandbox-arm64" {
            child.kill().unwrap();
            break;
        }
    }
    child.wait().unwrap();
    assert!(
        sb.kubectl(&["get", "secret", "gitlab-runner-arm64-token", "-n", "gitlab-runner"]).status.code() != Some(0)
    );

    let out = sb.command(&args).output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("reset the token of runner"), "the lost token is replaced: {stdout}");
    assert_migrated(&sb);
    no_secret_in(&sb, "the journal", &std::fs::read_to_string(&journal).unwrap());
}

#[test]
fn phase_1_alone_is_refused_until_the_pins_it_waits_for_are_in_place() {
    let sb = Sandbox::start("cli-apply-phase", &[]);
    let journal = common::scratch("cli-apply-phase").join("journal.jsonl");
    let phase = |n: &str| {
        run(
            &sb,
            &["apply", "--plan", "plans/sandbox.yaml", "--yes", "--phase", n, "--journal", journal.to_str().unwrap()],
        )
    };
    let before = sb.requests().len();
    let out = phase("1");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("nodepool/spot-pool needs argo/WorkflowTemplate/ci/build-images"), "{err}");
    assert!(sb.writes_since(before).is_empty(), "{:?}", sb.writes_since(before));

    for n in ["2", "4"] {
        let out = phase(n);
        assert_eq!(out.status.code(), Some(0), "phase {n}: {}\n{}", text(&out.stdout), text(&out.stderr));
    }
    assert_eq!(sb.pool_archs(), r#"["amd64"]"#, "phases 2 and 4 leave the pool alone");
    let out = phase("1");
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(sb.pool_archs(), r#"["amd64","arm64"]"#);
}

#[test]
fn rollback_after_a_full_apply_returns_to_the_amd64_only_world() {
    let sb = Sandbox::start("cli-rollback", &[]);
    let pool_before = kubectl_json(&sb, &["get", "nodepools.karpenter.sh", "spot-pool"])["spec"].clone();
    let ci_before = sb.pipeline_ci();
    let journal = common::scratch("cli-rollback").join("journal.jsonl");
    let j = journal.to_str().unwrap();
    let out = run(&sb, &["apply", "--plan", "plans/sandbox.yaml", "--yes", "--journal", j]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // --dry-run shows the way back and writes nothing.
    let before = sb.requests().len();
    let out = run(&sb, &["rollback", "--plan", "plans/sandbox.yaml", "--dry-run", "--journal", j]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("rollback/nodepool/spot-pool"), "{}", text(&out.stdout));
    assert!(sb.writes_since(before).is_empty());

    let out = run(&sb, &["rollback", "--plan", "plans/sandbox.yaml", "--yes", "--journal", j]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("on the baseline runner: "), "the baseline's pipeline is the proof: {stdout}");

    assert_eq!(kubectl_json(&sb, &["get", "nodepools.karpenter.sh", "spot-pool"])["spec"], pool_before);
    let releases = kubectl_json(&sb, &["get", "releases.helm.crossplane.io"]);
    let names: Vec<&str> =
        releases["items"].as_array().unwrap().iter().map(|r| r["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["gitlab-runner"]);
    assert_eq!(sb.runner_descriptions(), ["sandbox"]);
    assert_eq!(sb.pipeline_ci(), ci_before, "byte-equal to before");
    // The newest pipeline on main ran after the revert, and every job ran on the baseline.
    let latest = &gl_json(&sb, "/projects/platform%2Fkaniko-builder/pipelines?ref=main")[0];
    assert_eq!(latest["status"], "success");
    let jobs = gl_json(&sb, &format!("/projects/platform%2Fkaniko-builder/pipelines/{}/jobs", latest["id"]));
    assert!(jobs.as_array().unwrap().iter().all(|j| j["runner"]["description"] == "sandbox"), "{jobs}");

    let out = run(&sb, &["rollback", "--plan", "plans/sandbox.yaml", "--yes", "--journal", j]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("Nothing to roll back"), "{}", text(&out.stdout));
}
