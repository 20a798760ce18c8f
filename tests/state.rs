//! The migration's state in the cluster: a history any directory and machine reads, one run
//! at a time through a Lease, and dry runs that leave nothing behind. Each world is checked
//! through kubectl and GitLab's API, never through archshift's own report.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{Sandbox, text};
use serde_json::Value;

/// The repository's sandbox plan, by absolute path: the runs below start elsewhere.
fn plan_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/sandbox.yaml")
}

fn kubectl_json(sb: &Sandbox, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = sb.kubectl(&all);
    assert!(out.status.success(), "kubectl {args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs archshift in `dir`, as an operator in another checkout would.
fn run_in(sb: &Sandbox, dir: &Path, args: &[&str]) -> std::process::Output {
    sb.command(args).current_dir(dir).output().unwrap()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walk(dir) {
        out.push(e.strip_prefix(dir).unwrap().display().to_string());
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// Plan and apply from one directory with a saved plan, then plan again and apply a
/// second saved plan; roll back from another directory with the plan file: one history
/// holds both applies, the rollback reads it and restores the world, the CI file byte for
/// byte. Nothing is left in either directory but what the operator saved.
#[test]
fn a_migration_applied_in_one_directory_is_rolled_back_from_another_through_its_history_in_the_cluster() {
    let sb = Sandbox::start("state-dirs", &[]);
    let ci_before = sb.pipeline_ci();
    let pool_before = kubectl_json(&sb, &["get", "nodepools.karpenter.sh", "spot-pool"])["spec"].clone();
    let (here, there) = (common::scratch("state-here"), common::scratch("state-there"));
    let plan = plan_file();
    let p = plan.to_str().unwrap();

    // First the runners alone, from a saved plan; then the rest from a second one.
    let out = run_in(&sb, &here, &["plan", "--plan", p, "--out", "first.json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = run_in(&sb, &here, &["apply", "first.json", "--yes", "--phase", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let out = run_in(&sb, &here, &["plan", "--plan", p, "--out", "second.json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = run_in(&sb, &here, &["apply", "second.json", "--yes"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("history: Secrets gitlab-runner/archshift-sandbox-"), "names its history: {stdout}");
    assert_eq!(sb.pool_archs(), r#"["amd64","arm64"]"#);
    assert_eq!(files_in(&here), ["first.json", "second.json"], "no journal in the working directory");

    let (pieces, journal) = sb.history();
    assert!(!pieces.is_empty());
    let records: Vec<Value> = journal.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let written = |id: &str| records.iter().any(|r| r["event"] == "written" && r["change"] == id);
    assert!(
        written("runner/sandbox-arm64") && written("nodepool/spot-pool"),
        "both applies' records are in one history"
    );
    for secret in [&sb.gitlab_token, "glrt-"] {
        assert!(!journal.contains(secret), "no token in the history");
    }
    let lease = kubectl_json(&sb, &["get", "leases.coordination.k8s.io", "-n", "gitlab-runner"]);
    let lease = &lease["items"][0]["spec"];
    assert!(lease["holderIdentity"].is_null(), "given up when the run ended: {lease}");

    // Read from another directory, offline inspection: the same records, nothing written.
    let before = sb.requests().len();
    let out = run_in(&sb, &there, &["journal", "show", "--plan", p, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(shown, records);
    let out = run_in(&sb, &there, &["journal", "show", "--plan", p]);
    assert!(text(&out.stdout).contains("written   nodepool/spot-pool"), "{}", text(&out.stdout));
    assert!(sb.requests()[before..].iter().all(|r| r["method"] == "GET"), "journal show only reads");

    // Another directory, the plan file instead of the saved plan.
    let out = run_in(&sb, &there, &["rollback", "--plan", p, "--yes"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("history: Secrets gitlab-runner/{}", &pieces[0][..pieces[0].len() - 14]))
            && stdout.contains(&format!("({} record(s))", records.len())),
        "says which history it read and how much: {stdout}"
    );
    assert_eq!(sb.pipeline_ci(), ci_before, "the CI file is byte for byte what it was");
    assert_eq!(kubectl_json(&sb, &["get", "nodepools.karpenter.sh", "spot-pool"])["spec"], pool_before);
    assert_eq!(sb.runner_descriptions(), ["sandbox"]);
    assert!(files_in(&there).is_empty(), "{:?}", files_in(&there));
}

/// `rollback --dry-run` in an empty directory: no write to either server (not even a
/// Lease) and no file.
#[test]
fn a_rollback_dry_run_sends_no_write_and_creates_no_file() {
    let sb = Sandbox::start("state-dry", &[]);
    let p = plan_file();
    let dir = common::scratch("state-dry-run");
    let out = run_in(&sb, &dir, &["apply", "--plan", p.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let before = sb.requests().len();
    let out = run_in(&sb, &dir, &["rollback", "--plan", p.to_str().unwrap(), "--dry-run"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("history: Secrets gitlab-runner/"), "{}", text(&out.stderr));
    let writes: Vec<Value> = sb.requests()[before..]
        .iter()
        .filter(|r| r["method"] != "GET")
        .filter(|r| r["path"] != "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
        .filter(|r| !r["path"].as_str().unwrap().ends_with("/ci/lint"))
        .cloned()
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
    // Also with a journal file named that does not exist: it is not created.
    let named = dir.join("j.jsonl");
    let out = run_in(
        &sb,
        &dir,
        &["rollback", "--plan", p.to_str().unwrap(), "--dry-run", "--journal", named.to_str().unwrap()],
    );
    assert_ne!(out.status.code(), Some(0), "an empty history with the migration in place is an error");
    assert!(!named.exists());
}

/// A run spawned with JSON events, read until one matches.
struct Running {
    child: std::process::Child,
    events: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Running {
    fn start(sb: &Sandbox, dir: &Path, args: &[&str]) -> Running {
        let mut child = sb.command(args).current_dir(dir).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let events = BufReader::new(child.stdout.take().unwrap()).lines();
        Running { child, events }
    }

    fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) {
        for line in self.events.by_ref() {
            let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
            if pred(&event) {
                return;
            }
        }
        panic!("the run ended before {what}");
    }
}

/// While one apply runs (held in a slow runner creation), a second one from another
/// directory, keeping its journal in a file of its own, is refused before its first write
/// and names the first. Killed with kill -9, the first is resumed from a third directory
/// through the history in the cluster, and finishes with one runner per architecture.
#[test]
fn one_run_at_a_time_across_directories_and_journals_and_a_killed_apply_resumes_from_anywhere() {
    let sb = Sandbox::start(
        "state-lease",
        &["--fault", "gitlab:slow:ms=6000,count=1,method=POST,path=/api/v4/user/runners"],
    );
    let p = plan_file();
    let p = p.to_str().unwrap();
    let (a, b, c) = (common::scratch("state-a"), common::scratch("state-b"), common::scratch("state-c"));
    let mut first = Running::start(&sb, &a, &["apply", "--plan", p, "--yes", "--format", "json"]);
    // Inside the slow runner creation (6 s): the first run writes nothing meanwhile.
    first.until("the first runner's step", |e| {
        e["event"] == "step" && e["id"].as_str().unwrap_or("").starts_with("runner/")
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let holder = first.child.id();

    let before = sb.requests().len();
    let out = run_in(&sb, &b, &["apply", "--plan", p, "--yes", "--journal", b.join("own.jsonl").to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("is being run by archshift process {holder} on ")), "names the holder: {err}");
    assert!(err.contains("nothing was written"), "{err}");
    // The first run is held in its runner creation meanwhile: every write here is the second's.
    let writes: Vec<Value> = sb.writes_since(before);
    assert!(writes.is_empty(), "the refused run wrote: {writes:?}");

    // kill -9 once the first runner exists, its token only in the dying process.
    first.until("a runner's creation", |e| {
        e["event"] == "written" && e["id"].as_str().unwrap_or("").starts_with("runner/")
    });
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    let out = run_in(&sb, &c, &["apply", "--plan", p, "--yes"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("reset the authentication token of runner"),
        "continues the killed run, whose token was lost: {stdout}"
    );
    let mut runners = sb.runner_descriptions();
    runners.sort();
    assert_eq!(runners.len(), 3, "one runner per architecture besides the baseline: {runners:?}");
    assert_eq!(sb.pool_archs(), r#"["amd64","arm64"]"#);
    for dir in [&a, &c] {
        assert!(files_in(dir).is_empty(), "{:?}", files_in(dir));
    }
}

/// Applied with its journal in a local file, the migration has no history in the cluster:
/// a rollback without that file refuses, and says where to look, instead of planning from
/// what it sees.
#[test]
fn an_empty_history_for_a_migration_in_place_is_an_error_that_says_where_to_look() {
    let sb = Sandbox::start("state-elsewhere", &[]);
    let p = plan_file();
    let dir = common::scratch("state-elsewhere");
    let journal = dir.join("kept-here.jsonl");
    let out =
        run_in(&sb, &dir, &["apply", "--plan", p.to_str().unwrap(), "--yes", "--journal", journal.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(sb.history().0.is_empty(), "a --journal run keeps its records only in its file");
    let before = sb.requests().len();
    let out = run_in(&sb, &dir, &["rollback", "--plan", p.to_str().unwrap(), "--yes", "--force"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("holds no records") && err.contains("--journal FILE"), "{err}");
    assert!(err.contains("runner #") && err.contains("sandbox-arm64"), "says what is in place: {err}");
    assert!(sb.writes_since(before).is_empty());
    // With the file it was applied with, the rollback goes through.
    let out = run_in(
        &sb,
        &dir,
        &["rollback", "--plan", p.to_str().unwrap(), "--yes", "--journal", journal.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(sb.runner_descriptions(), ["sandbox"]);
}
