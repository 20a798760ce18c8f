//! The crash loop, bounded: `kill -9` after N ms for growing N across a whole apply and a
//! whole rollback, each killed run resumed by the next on the same journal, for a saved plan
//! and for `--plan`. Wherever the kills land (before a write, between a write and its
//! record, in a verification wait), every resumed run must reach the intended end state,
//! checked through kubectl and GitLab's API, never through archshift's own report.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

mod common;

use std::time::{Duration, Instant};

use common::{Sandbox, text};
use serde_json::Value;

/// Kill points: 100 ms after the start (mostly reads), then 35 ms later each time, so that
/// every run gets a little further than the one before and the kills walk across the whole
/// run: reads, dry runs, writes, the gaps between a write and its record, the waits.
const KILLS_MS: [u64; 40] = {
    let mut k = [0; 40];
    let mut i = 0;
    while i < 40 {
        k[i] = 100 + 35 * i as u64;
        i += 1;
    }
    k
};

/// Runs `args` once per kill point, killing it after that long unless it ends by itself
/// first; then once more to the end, which must succeed. How many runs were killed.
fn crash_loop(sb: &Sandbox, args: &[&str]) -> usize {
    let mut killed = 0;
    for ms in KILLS_MS {
        let log = common::scratch("crash-loop-out").join("stdout");
        let mut child = sb
            .command(args)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let ended = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() >= Duration::from_millis(ms) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        match ended {
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                killed += 1;
            }
            Some(status) => {
                let mut err = String::new();
                std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
                let out = std::fs::read_to_string(&log).unwrap_or_default();
                assert_eq!(status.code(), Some(0), "a resumed {args:?} failed after {ms} ms: {out}\n{err}");
                return killed;
            }
        }
    }
    let out = sb.command(args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "the last {args:?}: {}\n{}", text(&out.stdout), text(&out.stderr));
    killed
}

fn gl_json(sb: &Sandbox, path: &str) -> Value {
    let r = sb.gl("GET", path).send().unwrap();
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    r.json().unwrap()
}

fn assert_migrated(sb: &Sandbox) {
    assert_eq!(sb.pool_archs(), r#"["amd64","arm64"]"#);
    assert_eq!(sb.runner_descriptions(), ["sandbox", "sandbox-amd64", "sandbox-arm64"], "one runner per architecture");
    let runners = gl_json(sb, "/groups/platform/runners?per_page=100");
    for r in runners.as_array().unwrap() {
        let detail = gl_json(sb, &format!("/runners/{}", r["id"]));
        assert_eq!(detail["status"], "online", "{detail}");
    }
    for arch in ["amd64", "arm64"] {
        let secret = sb.kubectl(&["get", "secret", &format!("gitlab-runner-{arch}-token"), "-n", "gitlab-runner"]);
        assert!(secret.status.success(), "{arch} token Secret: {}", text(&secret.stderr));
    }
    let var = gl_json(sb, "/projects/platform%2Fkaniko-builder/variables/CICD_TAG_ARM64");
    assert_eq!(var["value"], "sandbox-arm64");
    let ci = sb.pipeline_ci();
    assert!(ci.contains("$CICD_TAG_ARM64") && ci.contains("$CICD_TAG_AMD64"), "{ci}");
    let tpl = sb.kubectl(&["get", "workflowtemplates.argoproj.io", "build-images", "-n", "ci", "-o", "json"]);
    let tpl: Value = serde_json::from_slice(&tpl.stdout).unwrap();
    assert_eq!(tpl["spec"]["nodeSelector"]["kubernetes.io/arch"], "amd64");
    let audit = sb.command(&["audit", "--plan", "plans/sandbox.yaml"]).output().unwrap();
    assert_eq!(audit.status.code(), Some(0), "nothing left to do: {}", text(&audit.stdout));
}

fn assert_rolled_back(sb: &Sandbox, ci_before: &str) {
    assert_eq!(sb.pool_archs(), r#"["amd64"]"#);
    assert_eq!(sb.runner_descriptions(), ["sandbox"]);
    for name in ["gitlab-runner-amd64", "gitlab-runner-arm64"] {
        let rel = sb.kubectl(&["get", "releases.helm.crossplane.io", name]);
        assert!(!rel.status.success(), "{name} is gone");
    }
    assert_eq!(sb.pipeline_ci(), ci_before, "the CI file is back, byte for byte");
    let vars = sb.gl("GET", "/projects/platform%2Fkaniko-builder/variables").send().unwrap().text().unwrap();
    assert!(!vars.contains("CICD_TAG_ARM64"), "{vars}");
}

#[test]
fn a_saved_plan_applied_and_rolled_back_through_kill_9_after_n_ms_reaches_each_end_state() {
    let sb = Sandbox::start("crash-loop-saved", &[]);
    let ci_before = sb.pipeline_ci();
    let dir = common::scratch("crash-loop-saved");
    let saved = dir.join("plan.json");
    let out = sb.command(&["plan", "--plan", "plans/sandbox.yaml", "--out", saved.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let journal = dir.join("journal.jsonl");
    let (s, j) = (saved.to_str().unwrap(), journal.to_str().unwrap());
    let killed = crash_loop(&sb, &["apply", s, "--yes", "--journal", j]);
    eprintln!("apply: {killed} runs killed");
    assert!(killed >= 3, "the kills landed inside the run ({killed})");
    assert_migrated(&sb);
    let killed = crash_loop(&sb, &["rollback", s, "--yes", "--journal", j]);
    eprintln!("rollback: {killed} runs killed");
    assert!(killed >= 2, "the kills landed inside the rollback ({killed})");
    assert_rolled_back(&sb, &ci_before);
}

#[test]
fn a_plan_file_applied_and_rolled_back_through_kill_9_after_n_ms_reaches_each_end_state() {
    let sb = Sandbox::start("crash-loop-plan", &[]);
    let ci_before = sb.pipeline_ci();
    let journal = common::scratch("crash-loop-plan").join("journal.jsonl");
    let j = journal.to_str().unwrap();
    let killed = crash_loop(&sb, &["apply", "--plan", "plans/sandbox.yaml", "--yes", "--journal", j]);
    assert!(killed >= 3, "the kills landed inside the run ({killed})");
    assert_migrated(&sb);
    let killed = crash_loop(&sb, &["rollback", "--plan", "plans/sandbox.yaml", "--yes", "--journal", j]);
    assert!(killed >= 2, "the kills landed inside the rollback ({killed})");
    assert_rolled_back(&sb, &ci_before);
}
