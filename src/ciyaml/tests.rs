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
        prefer_default_with_include: false,
        includes: vec![],
    }
}

#[test]
fn templates_from_local_includes_resolve_extends() {
    let input = "include:\n  - local: ci/templates.yml\n\nplan:\n  extends: .tf\n  script: [terraform plan]\n";
    let unknown = check(input, &multiarch());
    assert!(!unknown.changed, "without the include, .tf is unknown: left for review");
    let templates = ".tf:\n  image: hashicorp/terraform:1.9\n".to_string();
    let known = check(input, &TagOptions { includes: vec![templates.clone()], ..multiarch() });
    assert!(
        known.output.contains("plan:\n  extends: .tf\n  script: [terraform plan]\n  tags: [$CICD_TAG_AMD64]\n"),
        "{}",
        known.output
    );
    assert!(known.included_jobs.is_empty());
    // A template that tags, and a job the include defines.
    let tagged = ".tf:\n  tags: [tf-runner]\nlint:\n  script: [tflint]\n".to_string();
    let r = check(input, &TagOptions { includes: vec![tagged], ..multiarch() });
    assert!(!r.changed, "plan keeps the tags its template gives");
    assert_eq!(r.included_jobs, ["lint"]);
    assert_eq!(
        crate::ciyaml::local_includes("include:\n  - local: /ci/a.yml\n  - ci/b.yml\nx:\n  script: [y]\n"),
        Some(vec!["ci/a.yml".to_string(), "ci/b.yml".to_string()])
    );
    for other in [
        "include:\n  - project: g/p\n    file: a.yml\n",
        "include: 'https://x/a.yml'\n",
        "include:\n  - local: 'ci/*.yml'\n",
    ] {
        assert_eq!(crate::ciyaml::local_includes(other), None, "{other}");
    }
}

fn data(text: &str) -> Value {
    analyze::parse_config(text).unwrap()
}

/// The invariants every rewrite must keep, checked independently of `verify`.
fn check(input: &str, opts: &TagOptions) -> Retag {
    let r = retag(input, opts).unwrap_or_else(|e| panic!("{e}\n{input}"));
    // Every input line survives unchanged and in order, unless a flow mapping was extended
    // in place; then every input character survives in order. (A greedy subsequence walk:
    // exact, linear, and independent of the insertion points the edit recorded.)
    let flow_edit = r.jobs.iter().any(|j| matches!(j.outcome, Outcome::Added { through_default: false, .. }))
        && input.lines().any(|l| l.contains(": {"));
    if !flow_edit {
        assert!(
            is_subsequence(input.split_inclusive('\n'), r.output.split_inclusive('\n')),
            "a line changed:\n{}",
            r.output
        );
    } else {
        assert!(is_subsequence(input.chars(), r.output.chars()), "text removed:\n{}", r.output);
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
    let a = crate::ciyaml::analyze_with(&r.output, &opts.includes).unwrap();
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

fn is_subsequence<T: PartialEq>(needle: impl Iterator<Item = T>, hay: impl Iterator<Item = T>) -> bool {
    let mut hay = hay;
    needle.into_iter().all(|n| hay.by_ref().any(|h| h == n))
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
    let cases: [(&str, usize, usize, &str); 4] = [
        ("a:\n  script: [x\n", 3, 1, ""),
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

#[test]
fn a_repeated_key_is_read_as_gitlab_reads_it_and_warned_about() {
    // GitLab (Psych) keeps the last `a`; the tag goes there, and the first `a` is untouched.
    let input = "a:\n  script: [x]\nb:\n  script: [z]\n  tags: [keep]\na:\n  script: [y]\n";
    let r = check(input, &TagOptions { default_tag: Some("amd".into()), ..Default::default() });
    assert_eq!(r.output, "a:\n  script: [x]\nb:\n  script: [z]\n  tags: [keep]\na:\n  script: [y]\n  tags: [amd]\n");
    assert_eq!(r.warnings, ["line 6, column 1: key a repeats a key of the same mapping; GitLab keeps the last value"]);
}

#[test]
fn repeated_merge_keys_follow_psych_and_the_tag_goes_after_them() {
    let input = fixture!("repeated-merge-keys.gitlab-ci.yml");
    let r = check(input, &multiarch());
    assert!(r.warnings.is_empty(), "repeating `<<` is not a repeated key: {:?}", r.warnings);
    let a = analyze(input).unwrap();
    // `<<: *build` then `<<: *upload_arm64`: the later template wins where both set a key.
    let job = a.data["publish_arm64"].as_mapping().unwrap();
    assert_eq!(job["stage"], Value::String("publish".into()));
    assert_eq!(job["image"], Value::String("docker:27".into()), "kept from the first merge");
    assert_eq!(job["variables"]["ARCH"], Value::String("arm64".into()));
    // The job written before its merge keeps the template's script, as Psych's merge! does.
    assert_eq!(a.data["legacy"]["script"][0], Value::String("make legacy-template".into()));
    let publish = r.jobs.iter().find(|j| j.job == "publish_arm64").unwrap();
    assert!(matches!(&publish.outcome, Outcome::Added { tag, .. } if tag == "$CICD_TAG_ARM64"), "{publish:?}");
    insta::assert_snapshot!(report(input, &r));
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
    /// `<<: *m1`, `<<: *m2`, `<<: *m3` (tags), each 0: absent, 1: first, 2: last in the job.
    merges: [u8; 3],
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
        0u16..1000,
        prop::option::of(prop::collection::vec(prop::sample::select(vec!["a", "$T", "docker"]), 1..3)),
        prop::option::of(any::<bool>()),
        prop::option::of(prop::sample::select(vec!["amd64", "arm64", "x86_64", "mips"])),
        (any::<bool>(), any::<bool>(), 0u8..10, 0u8..12),
        (0u8..3, 0u8..3, prop::sample::select(vec![0u8, 0, 0, 0, 1, 2])),
    )
        .prop_map(|(base, n, tags, extends_tagged, arch_var, (comment, flow, opt, trig), (m1, m2, m3))| GenJob {
            name: format!("{base}{n}"),
            tags: tags.map(|t| t.into_iter().map(str::to_string).collect()),
            extends_tagged,
            arch_var,
            comment,
            flow,
            opt_out: opt == 0,
            trigger: trig == 0,
            merges: [m1, m2, m3],
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
    s.push_str(
        ".m1: &m1\n  image: alpine\n  stage: build\n.m2: &m2 {stage: test, retry: 1}\n.m3: &m3\n  tags: [merged]\n\n",
    );
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
        let merges = |s: &mut String, at: u8| {
            for (i, m) in j.merges.iter().enumerate() {
                if *m == at {
                    s.push_str(&format!("  <<: *m{}\n", i + 1));
                }
            }
        };
        s.push_str(&format!("{}:\n", j.name));
        merges(&mut s, 1);
        s.push_str(&format!("  script:\n  {ind}- echo {}  # run\n", j.name));
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
        merges(&mut s, 2);
        s.push('\n');
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn generated_ci_files_keep_the_invariants(
        jobs in prop::collection::vec(gen_job(), 1..60),
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

// ---- large files ----

#[derive(Clone, Copy, Debug)]
enum Style {
    /// The shape that used to fail: a template merged into every job with `<<: *tmpl`, an
    /// `ARCH` variable per job, a comment on a script line.
    MergedTemplate,
    /// One flow mapping a job, merging the template inside the braces.
    Flow,
    /// `extends:`, indented block sequences, two `<<` keys a job, CRLF line ends.
    ExtendsCrlf,
    /// Untagged jobs with no architecture: one `default:` section covers them all.
    Default,
}

fn large_file(style: Style, jobs: usize) -> String {
    let arch = |i: usize| if i.is_multiple_of(2) { "amd64" } else { "arm64" };
    let mut s = String::from("# generated pipeline\nstages: [build, test]\n\n");
    match style {
        Style::MergedTemplate => {
            s.push_str(".tmpl: &tmpl\n  stage: build\n  image: docker:27\n  retry: 1\n\n");
            for i in 0..jobs {
                s.push_str(&format!(
                    "build_{i}:\n  <<: *tmpl\n  variables:\n    ARCH: {}\n  script:\n    - make image # arch {}\n    - make push\n  when: on_success\n\n",
                    arch(i),
                    arch(i)
                ));
            }
        }
        Style::Flow => {
            s.push_str(".tmpl: &tmpl {stage: build, image: docker:27}\n");
            for i in 0..jobs {
                s.push_str(&format!(
                    "build_{i}: {{<<: *tmpl, script: [make], variables: {{ARCH: {}}}}} # job {i}\n",
                    arch(i)
                ));
            }
        }
        Style::ExtendsCrlf => {
            s.push_str(".base:\n  stage: build\n.m1: &m1\n  image: docker:27\n.m2: &m2\n  retry: 2\n\n");
            for i in 0..jobs {
                s.push_str(&format!(
                    "job_{i}_{}:\n  extends: .base\n  <<: *m1\n  <<: *m2\n  script:\n    - 'echo \"{i}\"'\n    - make\n\n",
                    arch(i)
                ));
            }
            s = s.replace('\n', "\r\n");
        }
        Style::Default => {
            for i in 0..jobs {
                s.push_str(&format!("test_{i}:\n  stage: test\n  script:\n  - make test-{i}\n\n"));
            }
        }
    }
    s
}

#[test]
fn large_files_in_several_styles_are_rewritten_and_proved() {
    for jobs in [1_000, 5_000] {
        for style in [Style::MergedTemplate, Style::Flow, Style::ExtendsCrlf, Style::Default] {
            let input = large_file(style, jobs);
            let r = check(&input, &multiarch());
            let added = r.jobs.iter().filter(|j| matches!(j.outcome, Outcome::Added { .. })).count();
            assert_eq!(added, jobs, "{style:?} {jobs}: every job gets a tag");
            match style {
                Style::Default => assert_eq!(r.default_tags_added.as_deref(), Some("$CICD_TAG_AMD64")),
                _ => assert_eq!(
                    r.output.matches("[$CICD_TAG_ARM64]").count(),
                    jobs / 2,
                    "{style:?} {jobs}: the arm64 half is tagged arm64"
                ),
            }
        }
    }
}
