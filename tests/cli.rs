//! The real binary: subcommands, exit codes, `validate` and `ci-tags` end to end.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn archshift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_archshift")).args(args).output().expect("run archshift")
}

fn with_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_archshift"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn archshift");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("archshift-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const KANIKO: &str = include_str!("fixtures/ci/kaniko-builder.gitlab-ci.yml");
const ARCH_TAGS: [&str; 4] = ["--arch-tag", "arm64=$CICD_TAG_ARM64", "--arch-tag", "amd64=$CICD_TAG_AMD64"];

#[test]
fn help_lists_every_mode() {
    let out = archshift(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for cmd in ["tui", "demo", "audit", "plan", "apply", "rollback", "sandbox", "ci-tags", "bench", "validate"] {
        assert!(help.lines().any(|l| l.trim_start().starts_with(cmd)), "{cmd} missing from:\n{help}");
    }
}

#[test]
fn the_tui_and_the_demo_refuse_without_a_terminal() {
    for args in [&["demo"][..], &["tui", "--plan", "plans/sandbox.yaml"][..]] {
        let out = archshift(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(text(&out.stderr).contains("needs a terminal"), "{args:?}: {}", text(&out.stderr));
    }
}

#[test]
fn validate_accepts_the_shipped_plans_and_locates_errors() {
    for plan in ["plans/sandbox.yaml", "plans/example.yaml"] {
        let out = archshift(&["validate", plan]);
        assert!(out.status.success(), "{plan}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("apiVersion: archshift/v1"));
    }
    let dir = scratch("validate");
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "apiVersion: archshift/v1\nkind: MigrationPlan\nrunners:\n  tagPrefix: x\n  scope: {type: group, path: g}\n  colour: blue\npipeline:\n  project: g/p\n").unwrap();
    let out = archshift(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{}:6:3: runners: unknown field `colour`", bad.display())), "{err}");
}

#[test]
fn ci_tags_prints_the_rewrite_and_explains_each_job() {
    let out = with_stdin(&["ci-tags", "-", ARCH_TAGS[0], ARCH_TAGS[1], ARCH_TAGS[2], ARCH_TAGS[3]], KANIKO);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("    ARCH: \"arm64\"\n  tags: [$CICD_TAG_ARM64]\n"), "{stdout}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("build_arm64: tags [$CICD_TAG_ARM64] added (builds arm64 (variable ARCH=arm64))"),
        "{stderr}"
    );
    assert!(stderr.contains("manifest: left alone: untagged, and no default tag was given"), "{stderr}");
}

#[test]
fn ci_tags_check_then_in_place_then_check_again() {
    let dir = scratch("inplace");
    let file = dir.join(".gitlab-ci.yml");
    std::fs::write(&file, KANIKO).unwrap();
    let f = file.to_str().unwrap();
    let mut args = vec!["ci-tags", f, "--check", "--default-tag", "$CICD_TAG_AMD64"];
    args.extend(ARCH_TAGS);
    assert_eq!(archshift(&args).status.code(), Some(2), "would change");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), KANIKO, "--check writes nothing");

    args[2] = "--in-place";
    let out = archshift(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(&file).unwrap();
    assert_ne!(written, KANIKO);
    assert!(written.contains("  tags: [$CICD_TAG_AMD64]\n"), "{written}");

    args[2] = "--check";
    let out = archshift(&args);
    assert_eq!(out.status.code(), Some(0), "idempotent: {}", text(&out.stderr));
}

#[test]
fn ci_tags_rejects_bad_yaml_with_position_and_writes_nothing() {
    let dir = scratch("bad");
    let file = dir.join("ci.yml");
    let bad = "build:\n  script: [x]\ntest:\n  script: [y\n";
    std::fs::write(&file, bad).unwrap();
    let out = archshift(&["ci-tags", file.to_str().unwrap(), "--in-place", "--default-tag", "t"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{}:5:1: ", file.display())), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), bad);
}

#[test]
fn ci_tags_accepts_what_gitlab_accepts_and_warns_of_repeated_keys() {
    // Two `<<` keys in one job and a repeated job name: GitLab's loader (Psych) runs both.
    let ci = ".a: &a {image: x}\n.b: &b {stage: test}\nbuild:\n  <<: *a\n  <<: *b\n  script: [x]\nbuild:\n  <<: *a\n  <<: *b\n  script: [y]\n";
    let out = with_stdin(&["ci-tags", "-", "--default-tag", "t"], ci);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).ends_with("  script: [y]\n  tags: [t]\n"), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("<stdin>: warning: line 7, column 1: key build repeats a key of the same mapping; GitLab keeps the last value"),
        "{err}"
    );
    assert!(!err.contains("key <<"), "repeating << is how Psych files merge: {err}");
}

#[test]
fn ci_tags_validates_its_options() {
    let out = archshift(&["ci-tags", "-", "--arch-tag", "sparc=x"]);
    assert_eq!(out.status.code(), Some(1), "usage errors are 1: 2 means changes pending");
    assert!(text(&out.stderr).contains("unknown architecture `sparc`"), "{}", text(&out.stderr));
    let out = archshift(&["ci-tags", "-", "--in-place"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--in-place needs a file"), "{}", text(&out.stderr));
}
