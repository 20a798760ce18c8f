//! Faults during apply, injected by the sandbox: each run ends in the intended end state or
//! stops in a state the journal describes, and running apply again finishes the job. Checked
//! through the sandbox's API.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

mod common;

use common::{Sandbox, text};
use serde_json::Value;

/// `archshift apply --plan PLAN --yes --journal JOURNAL` against the sandbox.
fn apply(sb: &Sandbox, plan: &str, journal: &std::path::Path) -> std::process::Output {
    sb.command(&["apply", "--plan", plan, "--yes", "--journal", journal.to_str().unwrap()]).output().unwrap()
}

/// The whole migration applied (`apply --plan --yes`), for a rollback to start from; its journal.
fn applied(sb: &Sandbox, name: &str) -> std::path::PathBuf {
    let journal = common::scratch(name).join("journal.jsonl");
    let out = apply(sb, "plans/sandbox.yaml", &journal);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    journal
}

/// `MODE --plan --yes --timeout 1` (apply or rollback), which must finish (exit 0) after
/// reading back a write whose answer it lost; its stdout.
fn reading_back(sb: &Sandbox, mode: &str, journal: &std::path::Path) -> String {
    let j = journal.to_str().unwrap();
    let out = sb
        .command(&[mode, "--plan", "plans/sandbox.yaml", "--yes", "--timeout", "1", "--journal", j])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("reading back shows it happened"), "{stdout}");
    stdout
}

fn journal_events(path: &std::path::Path, change: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["change"] == change)
        .map(|r| r["event"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_gitlab_5xx_burst_on_runner_creation_stops_the_run_then_apply_again_finishes_with_one_runner_each() {
    // A 503 on POST /user/runners: a POST is not repeated on a 5xx (it may have happened), so
    // the run stops there, after reading back that no runner was created.
    let sb = Sandbox::start("faults-5xx", &["--fault", "gitlab:503:count=1,method=POST,path=/api/v4/user/runners"]);
    let journal = common::scratch("faults-5xx").join("journal.jsonl");
    let apply = || apply(&sb, "plans/sandbox.yaml", &journal);
    let out = apply();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("503"), "{}", text(&out.stderr));
    assert_eq!(sb.runner_descriptions(), ["sandbox"], "nothing half-created");
    assert_eq!(journal_events(&journal, "runner/sandbox-amd64"), ["intent", "failed"]);
    // The pool is widened last: the failure left it as it was.
    assert_eq!(sb.pool_archs(), r#"["amd64"]"#);

    let out = apply();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        sb.runner_descriptions(),
        ["sandbox", "sandbox-amd64", "sandbox-arm64"],
        "one runner per architecture, none twice"
    );
}

#[test]
fn a_dropped_connection_on_a_variable_write_is_read_back_not_repeated() {
    let sb = Sandbox::start(
        "faults-drop",
        &["--fault", "gitlab:drop:count=1,method=POST,path=/api/v4/projects/*/variables"],
    );
    let journal = common::scratch("faults-drop").join("journal.jsonl");
    let apply = || apply(&sb, "plans/sandbox.yaml", &journal);
    let out = apply();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        journal_events(&journal, "variable/platform/kaniko-builder/CICD_TAG_AMD64").contains(&"failed".to_string())
    );
    let out = apply();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let var: Value =
        sb.gl("GET", "/projects/platform%2Fkaniko-builder/variables/CICD_TAG_AMD64").send().unwrap().json().unwrap();
    assert_eq!(var["value"], "sandbox-amd64");
}

#[test]
fn a_runner_that_never_comes_online_fails_its_step_and_later_phases_do_not_start() {
    let sb = Sandbox::start("faults-offline", &[]);
    // No pool can host an arm64 manager any more: the arm64 runner never comes online.
    let patch = r#"[{"op":"replace","path":"/spec/template/spec/requirements/1/values","value":["amd64"]}]"#;
    let out = sb.kubectl(&["patch", "nodepools.karpenter.sh", "system-pool", "--type", "json", "-p", patch]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = common::scratch("faults-offline");
    let plan = std::fs::read_to_string("plans/sandbox.yaml").unwrap() + "waits:\n  runnerOnline: 3\n";
    let plan_file = common::write(&dir, "plan.yaml", &plan);
    let journal = dir.join("journal.jsonl");
    // The plan says so: the risk gate refuses, writing nothing, and names the risk.
    let from = sb.requests().len();
    let out = apply(&sb, plan_file.to_str().unwrap(), &journal);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("STOP risk release.manager-unschedulable"), "{}", text(&out.stdout));
    assert_eq!(sb.writes_since(from), Vec::<Value>::new(), "nothing written before the gate");
    // Forced through, the step fails when the runner does not come online.
    let j = journal.to_str().unwrap();
    let args = ["apply", "--plan", plan_file.to_str().unwrap(), "--yes", "--force", "--journal", j];
    let out = sb.command(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("timed out after 3s waiting for runner sandbox-arm64 to come online on arm64"), "{err}");
    assert!(err.contains("archshift rollback"), "rollback is offered: {err}");
    assert_eq!(journal_events(&journal, "release/gitlab-runner-arm64"), ["intent", "written", "failed"]);
    // Nothing after the failed step ran: no variables, the pool untouched.
    assert!(journal_events(&journal, "nodepool/spot-pool").is_empty());
    let var = sb.gl("GET", "/projects/platform%2Fkaniko-builder/variables/CICD_TAG_ARM64").send().unwrap();
    assert_eq!(var.status(), 404);
}

#[test]
fn a_concurrent_writer_is_kept_beside_our_fields_and_stops_the_run_when_it_touches_them() {
    // Someone annotates spot-pool just before our patch: our fields are untouched, the patch's
    // tests pass, and their annotation stays.
    let sb = Sandbox::start(
        "faults-conflict",
        &[
            "--fault",
            "k8s:conflict:count=1,method=PATCH,path=/apis/karpenter.sh/v1/nodepools/spot-pool",
            "--fault",
            "gitlab:conflict:count=1,method=POST,path=/api/v4/projects/platform%2Fkaniko-builder/repository/commits",
        ],
    );
    let dir = common::scratch("faults-conflict");
    // The pipeline's CI change committed straight to main, where the other writer edits too.
    let plan = std::fs::read_to_string("plans/sandbox.yaml").unwrap().replacen(
        "    mode: mergeRequest\n    branch: archshift/multiarch-runners\n",
        "    mode: directCommit\n",
        1,
    );
    assert!(plan.contains("mode: directCommit"));
    let plan_file = common::write(&dir, "plan.yaml", &plan);
    let journal = dir.join("journal.jsonl");
    let out = apply(&sb, plan_file.to_str().unwrap(), &journal);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{}\n{err}", text(&out.stdout));
    assert!(err.contains("cifile/platform/kaniko-builder/.gitlab-ci.yml") && err.contains("another writer"), "{err}");

    let pool: Value =
        serde_json::from_slice(&sb.kubectl(&["get", "nodepools.karpenter.sh", "spot-pool", "-o", "json"]).stdout)
            .unwrap();
    assert_eq!(pool["spec"]["template"]["spec"]["requirements"][1]["values"], serde_json::json!(["amd64", "arm64"]));
    assert_eq!(pool["metadata"]["annotations"]["sandbox.archshift.io/concurrent-writes"], "1", "their change is kept");
    let ci = sb.pipeline_ci();
    assert!(
        ci.ends_with("# concurrent edit\n") && !ci.contains("$CICD_TAG_ARM64"),
        "their edit stands, ours is not forced over it"
    );
    assert_eq!(journal_events(&journal, "cifile/platform/kaniko-builder/.gitlab-ci.yml"), ["intent", "failed"]);
}

#[test]
fn rate_limits_with_retry_after_are_waited_out_and_the_apply_completes() {
    let sb = Sandbox::start("faults-429", &["--fault", "gitlab:429:count=3"]);
    let journal = common::scratch("faults-429").join("journal.jsonl");
    let out = apply(&sb, "plans/sandbox.yaml", &journal);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let limited: Vec<Value> = sb.requests().into_iter().filter(|r| r["status"] == 429).collect();
    assert_eq!(limited.len(), 3, "{limited:?}");
    assert_eq!(sb.runner_descriptions(), ["sandbox", "sandbox-amd64", "sandbox-arm64"]);
}

#[test]
fn kill_9_during_a_rollback_then_rollback_again_reaches_the_amd64_only_world() {
    let sb = Sandbox::start("faults-kill-rollback", &[]);
    let journal = applied(&sb, "faults-kill-rollback");
    let j = journal.to_str().unwrap();
    let args = ["rollback", "--plan", "plans/sandbox.yaml", "--yes", "--format", "json", "--journal", j];
    let mut child =
        sb.command(&args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    for line in std::io::BufRead::lines(stdout) {
        let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
        // Mid-way: the arm64 runner paused, the CI file not yet reverted.
        if event["event"] == "written" && event["id"] == "rollback/pause/runner/sandbox-arm64" {
            child.kill().unwrap();
            break;
        }
    }
    child.wait().unwrap();
    let out = sb
        .command(&args[..args.len() - 4].iter().copied().chain(["--journal", j]).collect::<Vec<_>>())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(sb.runner_descriptions(), ["sandbox"]);
    assert_eq!(sb.pool_archs(), r#"["amd64"]"#);
    let ci = sb.pipeline_ci();
    assert!(!ci.contains("$CICD_TAG_ARM64"), "the CI change is reverted");
}

#[test]
fn bad_tokens_missing_projects_missing_crds_and_broken_ci_files_are_refused_with_nothing_written() {
    let sb = Sandbox::start("faults-bad-input", &[]);
    let dir = common::scratch("faults-bad-input");
    let saved = dir.join("plan.json");
    let out = sb.command(&["plan", "--plan", "plans/sandbox.yaml", "--out", saved.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let before = sb.requests().len();

    // An expired token: one line naming the variable, exit 1.
    let out =
        sb.command(&["apply", saved.to_str().unwrap(), "--yes"]).env("GITLAB_TOKEN", "glpat-expired").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("GITLAB_TOKEN") && text(&out.stderr).contains("401"), "{}", text(&out.stderr));
    // A pipeline project that does not exist: the path, exit 1.
    let plan =
        std::fs::read_to_string("plans/sandbox.yaml").unwrap().replace("platform/kaniko-builder", "platform/nope");
    let missing = common::write(&dir, "missing.yaml", &plan);
    let out = sb.command(&["apply", "--plan", missing.to_str().unwrap(), "--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    // Reads run concurrently: whichever of the project's paths answers 404 first is named.
    let err = text(&out.stderr);
    assert!(err.contains("/projects/platform%2Fnope") && err.contains("was not found"), "{err}");
    assert!(sb.writes_since(before).is_empty(), "{:?}", sb.writes_since(before));

    // A saved plan replayed after Karpenter's CRDs are gone: stale, nothing written.
    let del = sb.kubectl(&["delete", "crd", "nodepools.karpenter.sh"]);
    assert!(del.status.success());
    let before = sb.requests().len();
    let out = sb.command(&["apply", saved.to_str().unwrap(), "--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("nodepool/spot-pool"), "{}", text(&out.stderr));
    assert!(sb.writes_since(before).is_empty());

    // Another project's CI file that is not YAML: a risk on that file, not a crash.
    let r = sb
        .gl("PUT", "/projects/platform%2Fdocs/repository/files/.gitlab-ci.yml")
        .json(&serde_json::json!({"branch": "main", "content": "pages: [unclosed\n", "commit_message": "break it"}))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let out = sb.archshift("audit", &sb.gitlab_token, &["--format", "json", "--quiet"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings: Vec<&Value> =
        report["phases"].as_array().unwrap().iter().flat_map(|p| p["findings"].as_array().unwrap()).collect();
    assert!(
        findings
            .iter()
            .any(|f| f["code"] == "cifile.unreadable" && f["target"].as_str().unwrap().starts_with("platform/docs")),
        "{findings:?}"
    );
}

#[test]
fn runner_creations_slower_than_the_timeout_are_looked_for_then_finished_without_a_second_runner() {
    // GitLab finishes the amd64 runner 2.5 s after the request and the arm64 one 16 s after;
    // the client gives up on each after 1 s. The first is found by reading back while GitLab
    // works; the second is still missing after the read-back's 10 s, so the run stops there.
    let sb = Sandbox::start(
        "faults-slow",
        &[
            "--fault",
            "gitlab:slow:ms=2500,count=1,method=POST,path=/api/v4/user/runners",
            "--fault",
            "gitlab:slow:ms=16000,count=1,method=POST,path=/api/v4/user/runners",
        ],
    );
    let journal = common::scratch("faults-slow").join("journal.jsonl");
    let j = journal.to_str().unwrap();
    let args = ["apply", "--plan", "plans/sandbox.yaml", "--yes", "--timeout", "1", "--journal", j];
    let out = sb.command(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("reading back shows it happened"), "{}", text(&out.stdout));
    assert_eq!(journal_events(&journal, "runner/sandbox-amd64"), ["intent", "written", "verified"]);
    assert_eq!(journal_events(&journal, "runner/sandbox-arm64"), ["intent", "failed"]);
    // Meanwhile GitLab finished it: the next run finds it, resets its unknown token, goes on.
    sb.wait_for("the slow runner to exist", 30, || {
        sb.runner_descriptions().contains(&"sandbox-arm64".to_string()).then_some(())
    });
    let out = sb.command(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    // Planned afresh, the runner without its Secret gets a token reset step.
    assert!(text(&out.stdout).contains("reset the authentication token of runner"), "{}", text(&out.stdout));
    assert_eq!(
        sb.runner_descriptions(),
        ["sandbox", "sandbox-amd64", "sandbox-arm64"],
        "the slow POSTs were not repeated"
    );
}

/// `archshift apply … --format json` running in the background, its events read line by line.
struct Running {
    child: std::process::Child,
    events: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Running {
    fn start(sb: &Sandbox, args: &[&str]) -> Running {
        let mut child =
            sb.command(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        Running { child, events: std::io::BufRead::lines(stdout) }
    }

    /// Reads events until one matches; panics if the run ends first.
    fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) {
        for line in self.events.by_ref() {
            let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
            if pred(&event) {
                return;
            }
        }
        panic!("the run ended before {what}");
    }

    /// `kill -9`, as a crash or an operator's lost terminal would.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// `archshift plan --out DIR/saved.json` of the sandbox plan.
fn save(sb: &Sandbox, dir: &std::path::Path) -> std::path::PathBuf {
    let saved = dir.join("saved.json");
    let out = sb.command(&["plan", "--plan", "plans/sandbox.yaml", "--out", saved.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "changes to make: {}", text(&out.stderr));
    saved
}

fn patches_of_spot_pool(requests: &[Value]) -> usize {
    requests
        .iter()
        .filter(|r| r["method"] == "PATCH" && r["path"] == "/apis/karpenter.sh/v1/nodepools/spot-pool")
        .count()
}

#[test]
fn kill_9_before_a_write_and_between_a_write_and_its_journal_record_then_apply_again_neither_repeats_nor_loses_it() {
    // Both servers carry the write out at once and hold its answer back a minute: the runner
    // exists in GitLab (its token only in the answer), the pool is widened, and the journal
    // says only that each was intended when the process dies.
    let sb = Sandbox::start(
        "faults-kill-unjournaled",
        &[
            "--fault",
            "gitlab:late:ms=60000,count=1,method=POST,path=/api/v4/user/runners",
            // The amd64 Release's dry run hangs: a process killed there has not written it.
            "--fault",
            "k8s:slow:ms=60000,count=1,method=POST,path=/apis/helm.crossplane.io/v1beta1/releases",
            // The first PATCH is the server-side dry run; the second is the write.
            "--fault",
            "k8s:late:ms=60000,skip=1,count=1,method=PATCH,path=/apis/karpenter.sh/v1/nodepools/spot-pool",
        ],
    );
    // A saved plan is replayed exactly: every step is re-checked, none re-planned away.
    let dir = common::scratch("faults-kill-unjournaled");
    let saved = save(&sb, &dir);
    let journal = dir.join("journal.jsonl");
    let j = journal.to_str().unwrap();
    let args = ["apply", saved.to_str().unwrap(), "--yes", "--format", "json", "--journal", j];

    let run = Running::start(&sb, &args);
    sb.wait_for("the amd64 runner to exist", 120, || {
        sb.runner_descriptions().contains(&"sandbox-amd64".to_string()).then_some(())
    });
    // Meanwhile a second run on the same journal is refused before it writes anything.
    let from = sb.requests().len();
    let second = sb.command(&args).output().unwrap();
    assert_eq!(second.status.code(), Some(1), "{}", text(&second.stdout));
    assert!(text(&second.stderr).contains("in use by another archshift run"), "{}", text(&second.stderr));
    assert!(sb.writes_since(from).is_empty(), "{:?}", sb.writes_since(from));
    run.kill();
    assert_eq!(journal_events(&journal, "runner/sandbox-amd64"), ["intent"], "died before the written record");

    // The second run finds the runner, resets the token nobody kept, and dies before the
    // Release's write, in its dry run.
    let mut run = Running::start(&sb, &args);
    run.until("the amd64 Release's step", |e| e["event"] == "step" && e["id"] == "release/gitlab-runner-amd64");
    std::thread::sleep(std::time::Duration::from_millis(500));
    run.kill();
    assert!(journal_events(&journal, "release/gitlab-runner-amd64").is_empty(), "not even intended");
    let release = sb.kubectl(&["get", "releases.helm.crossplane.io", "gitlab-runner-amd64"]);
    assert!(!release.status.success(), "not created");

    // The third run goes on to the pool.
    let mut run = Running::start(&sb, &args);
    run.until("the pool's step", |e| e["event"] == "step" && e["id"] == "nodepool/spot-pool");
    sb.wait_for("spot-pool to be widened", 120, || (sb.pool_archs() == r#"["amd64","arm64"]"#).then_some(()));
    run.kill();
    assert_eq!(journal_events(&journal, "nodepool/spot-pool"), ["intent"]);
    assert_eq!(sb.runner_descriptions(), ["sandbox", "sandbox-amd64", "sandbox-arm64"], "no second amd64 runner");

    let from = sb.requests().len();
    let out = sb.command(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(patches_of_spot_pool(&sb.requests()[from..]), 0, "the widened pool is not patched again");
    assert_eq!(journal_events(&journal, "nodepool/spot-pool"), ["intent", "verified"]);
    assert_eq!(sb.runner_descriptions(), ["sandbox", "sandbox-amd64", "sandbox-arm64"]);
    let secret = sb.kubectl(&["get", "secret", "gitlab-runner-amd64-token", "-n", "gitlab-runner"]);
    assert!(secret.status.success(), "the reset token reached its Secret: {}", text(&secret.stderr));
    let audit = sb.command(&["audit", "--plan", "plans/sandbox.yaml"]).output().unwrap();
    assert_eq!(audit.status.code(), Some(0), "nothing left to do: {}", text(&audit.stdout));
}

#[test]
fn kill_9_during_a_verification_wait_then_apply_again_verifies_and_goes_on() {
    // No pool can host an arm64 manager: the arm64 runner's Release waits for it to come online.
    let sb = Sandbox::start("faults-kill-verify", &[]);
    let system_pool = |archs: &str| {
        let patch =
            format!(r#"[{{"op":"replace","path":"/spec/template/spec/requirements/1/values","value":{archs}}}]"#);
        let out = sb.kubectl(&["patch", "nodepools.karpenter.sh", "system-pool", "--type", "json", "-p", &patch]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    let before = sb.kubectl(&[
        "get",
        "nodepools.karpenter.sh",
        "system-pool",
        "-o",
        "jsonpath={.spec.template.spec.requirements[1].values}",
    ]);
    let before = text(&before.stdout);
    system_pool(r#"["amd64"]"#);
    let dir = common::scratch("faults-kill-verify");
    let saved = save(&sb, &dir);
    let journal = dir.join("journal.jsonl");
    let j = journal.to_str().unwrap();
    // The saved plan reports the unschedulable manager; the operator forces it, as reviewed.
    let args = ["apply", saved.to_str().unwrap(), "--yes", "--force", "--format", "json", "--journal", j];
    let mut run = Running::start(&sb, &args);
    run.until("the wait for the arm64 runner", |e| e["event"] == "waiting" && e["id"] == "release/gitlab-runner-arm64");
    run.kill();
    assert_eq!(journal_events(&journal, "release/gitlab-runner-arm64"), ["intent", "written"]);
    assert_eq!(sb.pool_archs(), r#"["amd64"]"#, "nothing after the unverified step ran");

    system_pool(&before);
    let from = sb.requests().len();
    let out = sb.command(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(journal_events(&journal, "release/gitlab-runner-arm64"), ["intent", "written", "verified"]);
    let rewritten = sb.writes_since(from).iter().any(|r| {
        r["path"].as_str().is_some_and(|p| p.ends_with("/releases/gitlab-runner-arm64")) && r["method"] != "GET"
    });
    assert!(!rewritten, "the written Release is only verified, not written again");
    assert_eq!(sb.pool_archs(), r#"["amd64","arm64"]"#);
}

#[test]
fn slow_kubernetes_answers_are_bounded_by_the_timeout_reads_tried_again_and_a_lost_patch_read_back() {
    // spot-pool's first two reads answer after 2.5 s, and its patch is carried out but answered
    // after 2.5 s; the client gives up on each after 1 s.
    let sb = Sandbox::start(
        "faults-slow-kube",
        &[
            "--fault",
            "k8s:slow:ms=2500,count=2,method=GET,path=/apis/karpenter.sh/v1/nodepools/spot-pool",
            "--fault",
            "k8s:late:ms=2500,skip=1,count=1,method=PATCH,path=/apis/karpenter.sh/v1/nodepools/spot-pool",
        ],
    );
    let journal = common::scratch("faults-slow-kube").join("journal.jsonl");
    reading_back(&sb, "apply", &journal);
    assert_eq!(patches_of_spot_pool(&sb.requests()), 2, "one dry run, one write: the lost answer was not retried");
    assert_eq!(sb.pool_archs(), r#"["amd64","arm64"]"#);
    assert_eq!(journal_events(&journal, "nodepool/spot-pool"), ["intent", "written", "verified"]);
}

#[test]
fn slow_answers_during_a_rollback_are_read_back_and_the_rollback_completes() {
    // Only the rollback deletes the arm64 Release, pauses a runner and deletes runners: each is
    // carried out and answered after 3 s, and the client gives up after 1 s. The Release's
    // DELETE is read back; the PUT, which means the same thing sent twice, is sent again; so is
    // the runner's DELETE, whose 404 then says it is done.
    let sb = Sandbox::start(
        "faults-slow-rollback",
        &[
            "--fault",
            "k8s:late:ms=3000,skip=1,count=1,method=DELETE,path=/apis/helm.crossplane.io/v1beta1/releases/gitlab-runner-arm64",
            "--fault",
            "gitlab:late:ms=3000,count=1,method=PUT,path=/api/v4/runners/*",
            "--fault",
            "gitlab:late:ms=3000,count=1,method=DELETE,path=/api/v4/runners/*",
        ],
    );
    let journal = applied(&sb, "faults-slow-rollback");
    reading_back(&sb, "rollback", &journal);
    let requests = sb.requests();
    assert_eq!(requests.iter().filter(|r| r["fault"] == "late").count(), 3, "every fault struck");
    let deletes = requests
        .iter()
        .filter(|r| {
            r["method"] == "DELETE" && r["path"] == "/apis/helm.crossplane.io/v1beta1/releases/gitlab-runner-arm64"
        })
        .count();
    assert_eq!(deletes, 2, "one dry run, one delete: the lost answer was not sent again");
    let pauses = requests
        .iter()
        .filter(|r| r["method"] == "PUT" && r["path"].as_str().unwrap().starts_with("/api/v4/runners/"))
        .count();
    assert_eq!(pauses, 2, "the timed-out pause (an idempotent PUT) was sent once more");
    // The runner deletion was carried out, timed out, and sent again: its 404 means done.
    let runner_deletes: Vec<u64> = requests
        .iter()
        .filter(|r| r["method"] == "DELETE" && r["path"].as_str().unwrap().starts_with("/api/v4/runners/"))
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(runner_deletes[..2], [204, 404], "{runner_deletes:?}");
    assert_eq!(sb.runner_descriptions(), ["sandbox"]);
    assert_eq!(sb.pool_archs(), r#"["amd64"]"#);
}

#[test]
fn a_rollback_waits_out_rate_limits_and_5xx_and_survives_kill_9_between_a_delete_and_its_record() {
    // Only a rollback deletes runners, Secrets and Releases: each fault strikes the rollback.
    let sb = Sandbox::start(
        "faults-rollback",
        &[
            "--fault",
            "gitlab:429:count=2,method=DELETE,path=/api/v4/runners/*",
            "--fault",
            "k8s:503:count=2,method=DELETE,path=/api/v1/namespaces/*/secrets/*",
            // The first DELETE is the dry run; the second is carried out and answered a minute late.
            "--fault",
            "k8s:late:ms=60000,skip=1,count=1,method=DELETE,path=/apis/helm.crossplane.io/v1beta1/releases/gitlab-runner-amd64",
        ],
    );
    let journal = applied(&sb, "faults-rollback");
    let j = journal.to_str().unwrap();

    let args = ["rollback", "--plan", "plans/sandbox.yaml", "--yes", "--format", "json", "--journal", j];
    let mut run = Running::start(&sb, &args);
    run.until("the amd64 Release's step", |e| {
        e["event"] == "step" && e["id"] == "rollback/release/gitlab-runner-amd64"
    });
    sb.wait_for("the amd64 Release to be deleted", 120, || {
        let out = sb.kubectl(&[
            "get",
            "releases.helm.crossplane.io",
            "gitlab-runner-amd64",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ]);
        let gone = !out.status.success() && text(&out.stderr).contains("NotFound");
        (gone || (out.status.success() && !text(&out.stdout).is_empty())).then_some(())
    });
    run.kill();
    assert_eq!(journal_events(&journal, "rollback/release/gitlab-runner-amd64"), ["intent"]);

    let out = sb
        .command(&args[..args.len() - 4].iter().copied().chain(["--journal", j]).collect::<Vec<_>>())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let requests = sb.requests();
    let struck = |status: u64| requests.iter().filter(|r| r["status"] == status && r["fault"] == "status").count();
    assert_eq!((struck(429), struck(503)), (2, 2), "the rate limits and the 5xx burst struck and were waited out");
    let release_deletes: Vec<&Value> = requests
        .iter()
        .filter(|r| {
            r["method"] == "DELETE" && r["path"] == "/apis/helm.crossplane.io/v1beta1/releases/gitlab-runner-amd64"
        })
        .collect();
    assert_eq!(
        release_deletes.len(),
        2,
        "one dry run and one delete: the second rollback found it going: {release_deletes:?}\n{}",
        text(&out.stdout)
    );
    // The second rollback plans afresh: it verifies the Release going, or finds it gone already
    // and has nothing to do for it. Either way it never writes it again.
    let events = journal_events(&journal, "rollback/release/gitlab-runner-amd64");
    assert!(events == ["intent"] || events == ["intent", "verified"], "{events:?}");
    assert_eq!(sb.runner_descriptions(), ["sandbox"]);
    assert_eq!(sb.pool_archs(), r#"["amd64"]"#);
    let secrets = sb.kubectl(&["get", "secrets", "-n", "gitlab-runner", "-o", "name"]);
    assert!(!text(&secrets.stdout).contains("-token"), "the token Secrets are gone: {}", text(&secrets.stdout));
}

#[test]
fn a_runner_creation_whose_answer_is_lost_is_read_back_and_its_token_reset_in_the_same_run() {
    // GitLab registers the runner at once but answers after 3 s; the client gives up after 1 s,
    // so the token in that answer is never seen.
    let sb = Sandbox::start(
        "faults-late-runner",
        &["--fault", "gitlab:late:ms=3000,count=1,method=POST,path=/api/v4/user/runners"],
    );
    let journal = common::scratch("faults-late-runner").join("journal.jsonl");
    let stdout = reading_back(&sb, "apply", &journal);
    assert!(stdout.contains("reset the token of runner"), "the lost token is replaced: {stdout}");
    assert_eq!(sb.runner_descriptions(), ["sandbox", "sandbox-amd64", "sandbox-arm64"], "no second runner");
    assert_eq!(journal_events(&journal, "runner/sandbox-amd64"), ["intent", "written", "verified"]);
}

/// Each write killed after it was carried out and before its `written` record: the journal
/// holds only its intent, with both images. Rollback counts it as possibly written, finds it
/// done and undoes it; a resumed apply finds it done and still gives its proof.
#[test]
fn a_write_whose_written_record_was_lost_is_undone_by_rollback_and_proven_by_a_resumed_apply() {
    // The pool: widened, its answer held back; then rollback instead of apply.
    let sb = Sandbox::start(
        "faults-intent-pool",
        &["--fault", "k8s:late:ms=60000,skip=1,count=1,method=PATCH,path=/apis/karpenter.sh/v1/nodepools/spot-pool"],
    );
    let dir = common::scratch("faults-intent-pool");
    let journal = dir.join("journal.jsonl");
    let j = journal.to_str().unwrap();
    let run =
        Running::start(&sb, &["apply", "--plan", "plans/sandbox.yaml", "--yes", "--format", "json", "--journal", j]);
    sb.wait_for("spot-pool to be widened", 120, || (sb.pool_archs() == r#"["amd64","arm64"]"#).then_some(()));
    run.kill();
    assert_eq!(journal_events(&journal, "nodepool/spot-pool"), ["intent"]);
    let out = sb.command(&["rollback", "--plan", "plans/sandbox.yaml", "--yes", "--journal", j]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(sb.pool_archs(), r#"["amd64"]"#, "the widening only intended is narrowed back");
    assert_eq!(sb.runner_descriptions(), ["sandbox"]);

    // The pipeline's merge: carried out, its answer held back.
    let merge = "gitlab:late:ms=60000,count=1,method=PUT,path=/api/v4/projects/platform%2Fkaniko-builder/merge_requests/*/merge";
    for then in ["rollback", "apply"] {
        let name = format!("faults-intent-ci-{then}");
        let sb = Sandbox::start(&name, &["--fault", merge]);
        let before = sb.pipeline_ci();
        let journal = common::scratch(&name).join("journal.jsonl");
        let j = journal.to_str().unwrap();
        let run = Running::start(
            &sb,
            &["apply", "--plan", "plans/sandbox.yaml", "--yes", "--format", "json", "--journal", j],
        );
        sb.wait_for("the CI change to be merged", 120, || sb.pipeline_ci().contains("$CICD_TAG_ARM64").then_some(()));
        run.kill();
        assert_eq!(journal_events(&journal, "cifile/platform/kaniko-builder/.gitlab-ci.yml"), ["intent"]);
        let out = sb.command(&[then, "--plan", "plans/sandbox.yaml", "--yes", "--journal", j]).output().unwrap();
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{then}: {stdout}\n{}", text(&out.stderr));
        if then == "rollback" {
            assert_eq!(sb.pipeline_ci(), before, "reverted from the intent's images");
            assert_eq!(sb.runner_descriptions(), ["sandbox"]);
            let vars = sb.gl("GET", "/projects/platform%2Fkaniko-builder/variables").send().unwrap().text().unwrap();
            assert!(!vars.contains("CICD_TAG_ARM64"), "the variable goes once the file is back: {vars}");
        } else {
            assert!(stdout.contains("proof: build_arm64 on arm64: "), "the resumed run still proves it: {stdout}");
        }
    }
}

/// Killed right after the amd64 runner is created (its token only in the lost answer), then
/// again right after the next run journals the token reset it planned, before the token
/// reached its Secret: the third run makes a fresh token instead of wedging, and finishes.
#[test]
fn two_kills_in_a_row_at_the_runner_and_token_boundary_then_apply_finishes() {
    let sb = Sandbox::start(
        "faults-two-kills",
        &[
            "--fault",
            "gitlab:late:ms=60000,count=1,method=POST,path=/api/v4/user/runners",
            // The first Secret write (the token Secret's dry run) hangs.
            "--fault",
            "k8s:slow:ms=60000,count=1,method=POST,path=/api/v1/namespaces/gitlab-runner/secrets",
        ],
    );
    let journal = common::scratch("faults-two-kills").join("journal.jsonl");
    let j = journal.to_str().unwrap();
    let args = ["apply", "--plan", "plans/sandbox.yaml", "--yes", "--format", "json", "--journal", j];
    let run = Running::start(&sb, &args);
    sb.wait_for("the amd64 runner to exist", 120, || {
        sb.runner_descriptions().contains(&"sandbox-amd64".to_string()).then_some(())
    });
    run.kill();
    assert_eq!(journal_events(&journal, "runner/sandbox-amd64"), ["intent"]);

    let run = Running::start(&sb, &args);
    sb.wait_for("the token reset to be journaled", 120, || {
        let events = journal_events(&journal, "runner-token/sandbox-amd64");
        events.iter().any(|e| e == "written" || e == "verified").then_some(())
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    run.kill();
    let secret = sb.kubectl(&["get", "secret", "gitlab-runner-amd64-token", "-n", "gitlab-runner"]);
    assert!(!secret.status.success(), "the token never reached its Secret");

    let out = sb
        .command(&args[..args.len() - 4].iter().copied().chain(["--journal", j]).collect::<Vec<_>>())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(sb.runner_descriptions(), ["sandbox", "sandbox-amd64", "sandbox-arm64"], "one runner each");
    let runners: Value = sb.gl("GET", "/groups/platform/runners?per_page=100").send().unwrap().json().unwrap();
    let amd64 = runners.as_array().unwrap().iter().find(|r| r["description"] == "sandbox-amd64").unwrap();
    let detail: Value = sb.gl("GET", &format!("/runners/{}", amd64["id"])).send().unwrap().json().unwrap();
    assert_eq!(detail["status"], "online", "its manager registered with the fresh token: {detail}");
}

/// Reads change nothing, so a Kubernetes 500 or 503 on a read and a GitLab connection dropped
/// before its answer are tried again: the audit reads the same world as without them. A 409
/// on a delete (a controller's write moved the resourceVersion between the read and the
/// delete) is read again, checked again and retried.
#[test]
fn transient_read_failures_are_tried_again_and_a_409_on_a_delete_is_rechecked_and_retried() {
    let clean = Sandbox::start("faults-reads-clean", &[]);
    let audit =
        |sb: &Sandbox| sb.command(&["audit", "--plan", "plans/sandbox.yaml", "--format", "json"]).output().unwrap();
    let expected = audit(&clean);
    let sb = Sandbox::start(
        "faults-reads",
        &[
            "--fault",
            "k8s:500:count=2,method=GET,path=/apis/karpenter.sh/v1/nodepools*",
            "--fault",
            "k8s:503:count=1,method=GET,path=/apis/helm.crossplane.io/v1beta1/releases*",
            "--fault",
            "gitlab:drop:count=2,method=GET,path=/api/v4/groups/*",
            "--fault",
            "k8s:conflict:count=2,method=DELETE,path=/apis/helm.crossplane.io/v1beta1/releases/gitlab-runner-arm64",
        ],
    );
    let out = audit(&sb);
    assert_eq!(out.status.code(), expected.status.code(), "{}", text(&out.stderr));
    let summary = |o: &std::process::Output| serde_json::from_slice::<Value>(&o.stdout).unwrap()["summary"].clone();
    assert_eq!(summary(&out), summary(&expected));
    let struck = sb.requests().iter().filter(|r| !r["fault"].is_null()).count();
    assert_eq!(struck, 5, "every read fault struck and was survived");

    let journal = applied(&sb, "faults-reads");
    let out = sb
        .command(&["rollback", "--plan", "plans/sandbox.yaml", "--yes", "--journal", journal.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let release = sb.kubectl(&["get", "releases.helm.crossplane.io", "gitlab-runner-arm64"]);
    assert!(!release.status.success(), "deleted after the 409s");
    let conflicts = sb.requests().iter().filter(|r| r["fault"] == "conflict").count();
    assert_eq!(conflicts, 2);
}

/// A CI file far larger than GitLab takes as CI configuration, in another project of the
/// group: not read (memory stays bounded), reported as a risk naming the file, and the rest
/// of the audit goes on.
#[test]
fn an_oversized_ci_file_in_the_group_is_reported_not_read() {
    let sb = Sandbox::start("faults-huge-ci", &[]);
    let huge = format!(
        "pages:\n  script:\n{}",
        "    - echo 0123456789012345678901234567890123456789012345678901234567\n".repeat(80_000)
    );
    assert!(huge.len() > 5_000_000);
    let r = sb
        .gl("PUT", "/projects/platform%2Fdocs/repository/files/.gitlab-ci.yml")
        .json(&serde_json::json!({"branch": "main", "content": huge, "commit_message": "generated"}))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let out = sb.archshift("audit", &sb.gitlab_token, &["--format", "json", "--quiet"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
    let findings: Vec<&Value> =
        report["phases"].as_array().unwrap().iter().flat_map(|p| p["findings"].as_array().unwrap()).collect();
    let huge_file =
        findings.iter().find(|f| f["message"].as_str().unwrap_or("").contains("platform/docs:.gitlab-ci.yml"));
    let f = huge_file.unwrap_or_else(|| panic!("{findings:?}"));
    assert_eq!((f["code"].as_str(), f["status"].as_str()), (Some("gitlab.unreadable"), Some("risk")), "{f}");
    assert!(f["message"].as_str().unwrap().contains("larger than archshift reads"), "{f}");
    assert!(report["phases"].as_array().unwrap().len() >= 4, "the rest of the audit ran");
}

/// Killed in the middle of its CI revert (the revert branch pushed and its merge request
/// opened, the merge not yet carried out): the next rollback finds its own branch holding
/// exactly the revert, merges it and ends in the amd64-only world, instead of refusing the
/// branch as someone else's.
#[test]
fn a_rollback_killed_during_its_ci_revert_resumes_from_its_own_branch() {
    // The first merge (apply's) goes through; the second (rollback's) hangs before it is done.
    let merge = "gitlab:slow:ms=60000,skip=1,count=1,method=PUT,path=/api/v4/projects/platform%2Fkaniko-builder/merge_requests/*/merge";
    let sb = Sandbox::start("faults-revert-kill", &["--fault", merge]);
    let before = sb.pipeline_ci();
    let journal = common::scratch("faults-revert-kill").join("journal.jsonl");
    let j = journal.to_str().unwrap();
    let out = apply(&sb, "plans/sandbox.yaml", &journal);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert_ne!(sb.pipeline_ci(), before);

    let run =
        Running::start(&sb, &["rollback", "--plan", "plans/sandbox.yaml", "--yes", "--format", "json", "--journal", j]);
    let open_revert = || {
        let mrs: Value = sb
            .gl("GET", "/projects/platform%2Fkaniko-builder/merge_requests?state=opened")
            .send()
            .unwrap()
            .json()
            .unwrap();
        mrs.as_array().unwrap().iter().find(|m| m["source_branch"].as_str().unwrap_or("").contains("rollback")).cloned()
    };
    let mr = sb.wait_for("the revert's merge request", 120, open_revert);
    // The merge is asked for right after; it hangs in the sandbox (logged only once answered).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    run.kill();
    assert_ne!(sb.pipeline_ci(), before, "the merge was not carried out before the kill");
    assert!(open_revert().is_some(), "the revert's merge request is still open: {mr}");

    let out = sb.command(&["rollback", "--plan", "plans/sandbox.yaml", "--yes", "--journal", j]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(sb.pipeline_ci(), before, "the CI file is byte for byte what it was");
    assert!(open_revert().is_none(), "no revert merge request left open");
    assert_eq!(sb.runner_descriptions(), ["sandbox"]);
    assert_eq!(sb.pool_archs(), r#"["amd64"]"#);
}
