//! Bounded fuzzing (proptest) of every reader of outside input: the plan file parser, the
//! saved-plan reader, the journal reader and the CI rewrite. The guarantee: no panic, whatever
//! the bytes, and an error that says where when the input is refused. Cases are capped so the
//! suite stays fast in CI.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

use archshift::ciyaml::{TagOptions, retag};
use archshift::engine::journal;
use archshift::engine::saved::SavedPlan;
use archshift::spec::MigrationPlan;
use proptest::prelude::*;

const SANDBOX_PLAN: &str = include_str!("../plans/sandbox.yaml");
const KANIKO: &str = include_str!("fixtures/ci/kaniko-builder.gitlab-ci.yml");

/// A valid document with a span replaced by arbitrary text: near-misses reach deeper than
/// random bytes.
fn mutated(base: &'static str) -> impl Strategy<Value = String> {
    (0..base.len(), 0..40usize, ".{0,24}").prop_map(move |(at, len, insert)| {
        let at = (0..=at).rev().find(|i| base.is_char_boundary(*i)).unwrap_or(0);
        let end = (at + len).min(base.len());
        let end = (end..=base.len()).find(|i| base.is_char_boundary(*i)).unwrap_or(base.len());
        format!("{}{}{}", &base[..at], insert, &base[end..])
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn the_plan_parser_never_panics_and_locates_its_errors(text in prop_oneof![mutated(SANDBOX_PLAN), ".{0,200}"]) {
        if let Err(e) = MigrationPlan::parse(&text, "fuzz.yaml") {
            let msg = e.to_string();
            prop_assert!(msg.starts_with("fuzz.yaml:"), "{msg}");
        }
    }

    #[test]
    fn the_saved_plan_reader_never_panics(text in prop_oneof![".{0,300}", mutated(r#"{"format": "archshift.io/saved-plan", "version": 2, "specFile": "p", "spec": "s", "plan": {}, "sealKey": {"namespace": "a", "secret": "b"}, "seal": "hmac-sha256:00"}"#)]) {
        let _ = SavedPlan::read("fuzz.json", &text);
    }

    #[test]
    fn the_journal_reader_never_panics_and_only_the_last_line_is_torn(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Ok((_, torn, good)) = journal::parse(&bytes) {
            prop_assert!(good <= bytes.len());
            if torn.is_some() {
                prop_assert!(!bytes[good..].contains(&b'\n'), "a torn line is the last one");
            }
        }
    }

    #[test]
    fn the_ci_rewrite_never_panics(text in prop_oneof![mutated(KANIKO), ".{0,200}"]) {
        let opts = TagOptions { default_tag: Some("$CICD_TAG_AMD64".into()), ..TagOptions::default() };
        let _ = retag(&text, &opts);
    }
}

#[test]
fn non_utf8_truncated_and_foreign_plan_files_are_refused_with_where_and_what() {
    let dir = std::env::temp_dir().join(format!("archshift-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_archshift"))
            .args(["validate", path.to_str().unwrap()])
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (code, err) = run("latin1.yaml", b"apiVersion: archshift/v1\nkind: MigrationPlan\nmetadata: {name: caf\xe9}\n");
    assert_eq!(code, Some(1));
    assert!(err.contains("latin1.yaml") && err.contains("UTF-8"), "{err}");
    let (code, err) = run("truncated.yaml", &SANDBOX_PLAN.as_bytes()[..SANDBOX_PLAN.len() / 2]);
    assert_eq!(code, Some(1));
    assert!(err.contains("truncated.yaml:"), "{err}");
    let (code, err) = run("v2.yaml", SANDBOX_PLAN.replace("archshift/v1", "archshift/v2").as_bytes());
    assert_eq!(code, Some(1));
    assert!(err.contains("v2.yaml:") && err.contains("archshift/v2"), "{err}");
}
