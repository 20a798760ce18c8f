use std::collections::BTreeMap;

use proptest::prelude::*;
use yaml_serde::Value;

use super::*;
use crate::diff::text_diff;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../tests/fixtures/ci/", $name))
    };
}

fn multiarch() -> TagOptions {
    TagOptions {
        default_tag: Some("$CICD_TAG_AMD64".into()),
        arch_tags: BTreeMap::from([(Arch::Amd64, "$CICD_TAG_AMD64".into()), (Arch::Arm64, "$CICD_TAG_ARM64".into())]),
        job_tags: BTreeMap::new(),
        prefer_default: false,
    }
}

fn data(text: &str) -> Value {
    analyze::parse_config(text).unwrap()
}

/// The invariants every rewrite must keep, checked independently of `verify`.
fn check(input: &str, opts: &TagOptions) -> Retag {
    let r = retag(input, opts).unwrap_or_else(|e| panic!("{e}\n{input}"));
    // Every input line survives unchanged and in order, unless a flow mapping was extended
    // in place; then every input character survives in order.
    let flow_edit = r.jobs.iter().any(|j| matches!(j.outcome, Outcome::Added { through_default: false, .. }))
        && input.lines().any(|l| l.contains(": {"));
    let diff = similar::TextDiff::from_lines(input, &r.output);
    if !flow_edit {
        for op in diff.ops() {
            assert!(
                !matches!(op.tag(), similar::DiffTag::Delete | similar::DiffTag::Replace),
                "a line changed:\n{}",
                r.output
            );
        }
    } else {
        let chars = similar::TextDiff::from_chars(input, &r.output);
        assert!(chars.iter_all_changes().all(|c| c.tag() != similar::ChangeTag::Delete), "text removed:\n{}", r.output);
    }
    // Same data but for the added tags.
    let mut after = data(&r.output);
    let top = after.as_mapping_mut().unwrap();
    for j in &r.jobs {
        if let Outcome::Added { through_default: false, tag, .. } = &j.outcome {
            let job = top.get_mut(j.job.as_str()).unwrap().as_mapping_mut().unwrap();
            let tags = job.remove("tags").expect("added tags");
            assert_eq!(tags, Value::Sequence(vec![Value::String(tag.clone())]), "job {}", j.job);
        }
    }
    if let Some(tag) = &r.default_tags_added {
        let had_default = data(input).get("default").is_some();
        let d = top.get_mut("default").unwrap().as_mapping_mut().unwrap();
        assert_eq!(d.remove("tags"), Some(Value::Sequence(vec![Value::String(tag.clone())])));
        if !had_default {
            top.remove("default");
        }
    }
    assert_eq!(after, data(input), "data changed beyond tags:\n{}", r.output);
    // Every job that needs a tag has one.
    let a = analyze(&r.output).unwrap();
    for j in &r.jobs {
        let tagged = a.jobs.iter().find(|x| x.name == j.job).unwrap().tags.is_some();
        match &j.outcome {
            Outcome::Added { .. } | Outcome::Kept { .. } => assert!(tagged, "{} untagged:\n{}", j.job, r.output),
            Outcome::LeftAlone { .. } => {}
        }
    }
    // Idempotence.
    let again = retag(&r.output, opts).unwrap();
    assert!(!again.changed, "second run changed the file:\n{}", again.output);
    r
}

fn report(input: &str, r: &Retag) -> String {
    let mut s = text_diff(input, &r.output, "before".into(), "after".into(), 2).to_string();
    s.push_str("--\n");
    if let Some(t) = &r.default_tags_added {
        s.push_str(&format!("default: tags [{t}] added\n"));
    }
    for j in &r.jobs {
        s.push_str(&format!("{j}\n"));
    }
    s
}

#[test]
fn kaniko_builder_gets_arch_tags_and_keeps_its_anchors() {
    let input = fixture!("kaniko-builder.gitlab-ci.yml");
    let r = check(input, &multiarch());
    assert!(r.output.contains("<<: *build_template"), "{}", r.output);
    insta::assert_snapshot!(report(input, &r));
}

#[test]
fn extends_chains_and_includes() {
    let input = fixture!("extends-reference.gitlab-ci.yml");
    let r = check(input, &multiarch());
    let outcome = |job: &str| r.jobs.iter().find(|j| j.job == job).unwrap().outcome.clone();
    assert!(matches!(outcome("compile-arm"), Outcome::Added { ref tag, .. } if tag == "$CICD_TAG_ARM64"));
    assert!(matches!(outcome("compile-x86"), Outcome::Added { ref tag, .. } if tag == "$CICD_TAG_AMD64"));
    assert!(
        matches!(outcome("deploy"), Outcome::LeftAlone { needs_review: true, ref reason } if reason.contains("unresolved"))
    );
    assert!(matches!(outcome("docs"), Outcome::Kept { .. }));
    // `deploy` could pick up a tag under default:, so the tag goes on jobs instead.
    assert_eq!(r.default_tags_added, None);
    insta::assert_snapshot!(report(input, &r));
}

#[test]
fn default_tags_and_inherit_opt_outs() {
    let input = fixture!("default-inherit.gitlab-ci.yml");
    let r = check(input, &multiarch());
    insta::assert_snapshot!(report(input, &r));
    let kept = r.jobs.iter().find(|j| j.job == "lint").unwrap();
    assert_eq!(kept.outcome, Outcome::Kept { tags: vec!["shared".into()], source: TagSource::Default });
    let publish = r.jobs.iter().find(|j| j.job == "publish").unwrap();
    assert!(matches!(&publish.outcome, Outcome::LeftAlone { reason, .. } if reason.contains("trigger")));
}

#[test]
fn many_untagged_jobs_get_one_default_section() {
    let input = "stages: [a]\n\n# first job\njob1:\n  script: [x]\n\njob2:\n  script: [y]\n";
    let r = check(input, &TagOptions { default_tag: Some("amd".into()), ..Default::default() });
    assert_eq!(
        r.output,
        "stages: [a]\n\ndefault:\n  tags: [amd]\n\n# first job\njob1:\n  script: [x]\n\njob2:\n  script: [y]\n"
    );
}

#[test]
fn an_existing_default_section_gets_the_tags() {
    let input = "default:\n  image: alpine # small\n\na:\n  script: [x]\nb:\n  script: [y]\n";
    let r = check(input, &TagOptions { default_tag: Some("amd".into()), ..Default::default() });
    assert!(r.output.starts_with("default:\n  image: alpine # small\n  tags: [amd]\n"), "{}", r.output);
}

#[test]
fn flow_style_mappings_stay_flow_style() {
    let input = fixture!("flow-style.gitlab-ci.yml");
    let r = check(input, &TagOptions { default_tag: None, ..multiarch() });
    assert!(
        r.output
            .contains("build_arm64: {stage: build, script: [make], variables: {ARCH: arm64}, tags: [$CICD_TAG_ARM64]}"),
        "{}",
        r.output
    );
    insta::assert_snapshot!(report(input, &r));
}

#[test]
fn matrix_over_architectures_is_reported_not_guessed() {
    let input = fixture!("matrix.gitlab-ci.yml");
    let r = check(input, &multiarch());
    let build = r.jobs.iter().find(|j| j.job == "build").unwrap();
    assert!(
        matches!(&build.outcome, Outcome::LeftAlone { reason, needs_review: true } if reason.contains("matrix over amd64, arm64"))
    );
    insta::assert_snapshot!(report(input, &r));
}

#[test]
fn spec_header_documents_are_skipped() {
    let input = fixture!("spec-header.gitlab-ci.yml");
    let r = check(input, &multiarch());
    assert!(r.output.starts_with("spec:\n  inputs:\n"), "{}", r.output);
    insta::assert_snapshot!(report(input, &r));
}

#[test]
fn a_job_whose_anchor_is_reused_is_not_edited() {
    let input = fixture!("shared-anchor.gitlab-ci.yml");
    let r = check(input, &TagOptions { default_tag: Some("t".into()), ..Default::default() });
    let build = r.jobs.iter().find(|j| j.job == "build").unwrap();
    assert!(matches!(&build.outcome, Outcome::LeftAlone { reason, .. } if reason.contains("anchor")), "{build:?}");
}

#[test]
fn crlf_and_bom_survive() {
    let input = format!("\u{feff}{}", fixture!("kaniko-builder.gitlab-ci.yml").replace('\n', "\r\n"));
    let r = check(&input, &multiarch());
    assert!(r.output.starts_with('\u{feff}'));
    assert!(!r.output.replace("\r\n", "").contains('\n'), "a bare LF was inserted");
    assert!(r.output.contains("    ARCH: \"arm64\"\r\n  tags: [$CICD_TAG_ARM64]\r\n"), "{:?}", r.output);
}

#[test]
fn job_tag_wins_over_detection_and_does_not_override_existing_tags() {
    let input = "build_arm64:\n  script: [x]\nold:\n  tags: [legacy]\n  script: [y]\n";
    let opts = TagOptions {
        job_tags: BTreeMap::from([("build_arm64".into(), "special".into()), ("old".into(), "new".into())]),
        ..multiarch()
    };
    let r = check(input, &opts);
    assert!(r.output.contains("build_arm64:\n  script: [x]\n  tags: [special]\n"), "{}", r.output);
    let old = r.jobs.iter().find(|j| j.job == "old").unwrap();
    assert!(
        matches!(&old.outcome, Outcome::LeftAlone { reason, needs_review: true } if reason.contains("--job-tag asked for new"))
    );
}

#[test]
fn nothing_to_do_returns_the_input_untouched() {
    let input = "a:\n  tags: [x]\n  script: [y]\n";
    let r = retag(input, &multiarch()).unwrap();
    assert!(!r.changed);
    assert_eq!(r.output, input);
}

#[test]
fn tags_that_need_quoting_are_quoted() {
    let input = "a:\n  script: [y]\n";
    let r = check(input, &TagOptions { default_tag: Some("odd: tag #1".into()), ..Default::default() });
    assert_eq!(analyze(&r.output).unwrap().jobs[0].tags, Some(vec!["odd: tag #1".to_string()]));
}

#[test]
fn invalid_files_are_rejected_with_line_and_column() {
    let cases: [(&str, usize, usize, &str); 5] = [
        ("a:\n  script: [x\n", 3, 1, ""),
        ("a:\n  script: [x]\nb: 1\na:\n  script: [y]\n", 4, 1, "duplicate key \"a\""),
        ("- a\n- b\n", 1, 1, "top level must be a mapping"),
        ("a:\n  <<: *t\n.t: &t {script: [x]}\n", 2, 7, "alias used before its anchor is defined"),
        ("", 1, 1, "empty"),
    ];
    for (text, line, column, needle) in cases {
        match retag(text, &multiarch()) {
            Err(CiYamlError::Invalid { line: l, column: c, message }) => {
                assert_eq!((l, c), (line, column), "{text:?}: {message}");
                assert!(message.contains(needle), "{text:?}: {message}");
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }
}

// ---- property test ----

#[derive(Debug, Clone)]
struct GenJob {
    name: String,
    tags: Option<Vec<String>>,
    extends_tagged: Option<bool>,
    arch_var: Option<&'static str>,
    comment: bool,
    flow: bool,
    opt_out: bool,
    trigger: bool,
}

fn gen_job() -> impl Strategy<Value = GenJob> {
    (
        prop::sample::select(vec![
            "build",
            "test",
            "lint",
            "pack",
            "build_arm64",
            "build-amd64",
            "x_aarch64",
            "deploy",
        ]),
        0u8..100,
        prop::option::of(prop::collection::vec(prop::sample::select(vec!["a", "$T", "docker"]), 1..3)),
        prop::option::of(any::<bool>()),
        prop::option::of(prop::sample::select(vec!["amd64", "arm64", "x86_64", "mips"])),
        (any::<bool>(), any::<bool>(), 0u8..10, 0u8..12),
    )
        .prop_map(|(base, n, tags, extends_tagged, arch_var, (comment, flow, opt, trig))| GenJob {
            name: format!("{base}{n}"),
            tags: tags.map(|t| t.into_iter().map(str::to_string).collect()),
            extends_tagged,
            arch_var,
            comment,
            flow,
            opt_out: opt == 0,
            trigger: trig == 0,
        })
}

fn render_file(jobs: &[GenJob], default: Option<Option<&str>>, seq_indent: bool) -> String {
    let ind = if seq_indent { "  " } else { "" };
    let mut s = String::from("# generated\nstages:\n");
    s.push_str(&format!("{ind}- build\n\n"));
    match default {
        Some(Some(tag)) => s.push_str(&format!("default:\n  tags:\n  {ind}- {tag}\n\n")),
        Some(None) => s.push_str("default:\n  image: alpine\n\n"),
        None => {}
    }
    s.push_str(".tagged:\n  tags: [tmpl]\n.plain:\n  variables:\n    X: \"1\"\n\n");
    let mut seen = std::collections::BTreeSet::new();
    for j in jobs {
        if !seen.insert(j.name.clone()) {
            continue;
        }
        if j.comment {
            s.push_str(&format!("# about {}\n", j.name));
        }
        if j.trigger {
            s.push_str(&format!("{}:\n  trigger:\n    project: g/p\n\n", j.name));
            continue;
        }
        if j.flow && j.tags.is_none() && j.extends_tagged.is_none() && j.arch_var.is_none() && !j.opt_out {
            s.push_str(&format!("{}: {{script: [echo], stage: build}}\n", j.name));
            continue;
        }
        s.push_str(&format!("{}:\n  script:\n  {ind}- echo {}  # run\n", j.name, j.name));
        if let Some(t) = j.extends_tagged {
            s.push_str(&format!("  extends: {}\n", if t { ".tagged" } else { ".plain" }));
        }
        if let Some(a) = j.arch_var {
            s.push_str(&format!("  variables:\n    ARCH: \"{a}\"\n"));
        }
        if j.opt_out {
            s.push_str("  inherit:\n    default: false\n");
        }
        if let Some(tags) = &j.tags {
            s.push_str(&format!("  tags: [{}]\n", tags.join(", ")));
        }
        s.push('\n');
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn generated_ci_files_keep_the_invariants(
        jobs in prop::collection::vec(gen_job(), 1..8),
        default in prop::option::of(prop::option::of(prop::sample::select(vec!["shared", "$DEF"]))),
        seq_indent in any::<bool>(),
        crlf in any::<bool>(),
        with_default_tag in any::<bool>(),
    ) {
        let mut text = render_file(&jobs, default, seq_indent);
        if crlf {
            text = text.replace('\n', "\r\n");
        }
        let opts = TagOptions { default_tag: with_default_tag.then(|| "$CICD_TAG_AMD64".to_string()), ..multiarch() };
        let r = check(&text, &opts);
        if with_default_tag {
            // With a default tag, only jobs with a stated reason stay untagged.
            let a = analyze(&r.output).unwrap();
            for j in &a.jobs {
                let left = r.jobs.iter().any(|x| x.job == j.name && matches!(x.outcome, Outcome::LeftAlone { .. }));
                prop_assert!(j.tags.is_some() || left, "{} untagged:\n{}", j.name, r.output);
            }
        }
    }
}
