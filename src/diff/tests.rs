use serde_json::json;

use super::*;
use crate::model::{Action, ChangeId, ObjectRef, Output, Phase, WriteMethod};
use crate::redact::scrub_text;

fn change(before: Option<Value>, after: Option<Value>, sensitive: &[&str]) -> Change {
    let mut c = Change::new(
        ChangeId::from("x"),
        Phase::NodePool,
        ObjectRef::Kube {
            api_version: "v1".into(),
            kind: "Thing".into(),
            namespace: Some("ns".into()),
            name: "t".into(),
        },
        Action::Update,
        "",
        WriteMethod::KubeCreate,
    )
    .sensitive(sensitive.iter().map(|s| s.to_string()));
    c.before = before.map(Document::Object);
    c.after = after.map(Document::Object);
    c
}

fn text(c: &Change, opts: DiffOptions) -> String {
    render::plain(&change_diff(c, opts))
}

#[test]
fn server_noise_is_dropped_and_status_only_on_request() {
    let before = json!({
        "kind": "NodePool",
        "metadata": {"name": "p", "resourceVersion": "1", "uid": "u", "generation": 2, "creationTimestamp": "t",
                     "managedFields": [{"manager": "kubectl"}],
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"}},
        "spec": {"a": 1},
        "status": {"nodes": 3}
    });
    let mut after = before.clone();
    after["metadata"]["resourceVersion"] = json!("2");
    after["metadata"]["generation"] = json!(3);
    after["status"]["nodes"] = json!(4);
    // Only noise and status differ: nothing to review.
    assert_eq!(text(&change(Some(before.clone()), Some(after.clone()), &[]), DiffOptions::default()), "");
    let with_status =
        text(&change(Some(before), Some(after), &[]), DiffOptions { include_status: true, ..Default::default() });
    assert!(with_status.contains("-  nodes: 3\n+  nodes: 4\n"), "{with_status}");
    assert!(!with_status.contains("managedFields") && !with_status.contains("resourceVersion"), "{with_status}");
    assert!(!with_status.contains("last-applied"), "{with_status}");
}

#[test]
fn diff_is_unified_with_headers() {
    let d = text(
        &change(Some(json!({"spec": {"v": ["amd64"]}})), Some(json!({"spec": {"v": ["amd64", "arm64"]}})), &[]),
        DiffOptions::default(),
    );
    insta::assert_snapshot!(d, @r"
    --- a/Thing ns/t
    +++ b/Thing ns/t
    @@ -1,3 +1,4 @@
     spec:
       v:
       - amd64
    +  - arm64
    ");
}

#[test]
fn created_objects_diff_against_dev_null() {
    let d = text(&change(None, Some(json!({"a": 1})), &[]), DiffOptions::default());
    assert!(d.starts_with("--- /dev/null\n+++ b/Thing ns/t\n"), "{d}");
}

#[test]
fn secrets_are_masked_wherever_they_hide() {
    let secret = json!({"kind": "Secret", "data": {"runner-token": "Z2xydC1zZWNyZXQ="}, "stringData": {"x": "plain"}});
    let d = text(&change(None, Some(secret), &[]), DiffOptions::default());
    assert!(d.contains("runner-token: (sensitive)") && d.contains("x: (sensitive)"), "{d}");
    assert!(!d.contains("Z2xydC") && !d.contains("plain"), "{d}");

    let values = json!({"spec": {"values": {"runnerToken": "abc", "runners": {"token": "def", "config": "[[runners]]\n  token = \"glrt-abcdefghijkl\"\n  url = \"x\"\n"}}},
                        "note": "use glpat-0123456789abcdef here", "custom": "hidden-value"});
    let d = text(&change(None, Some(values), &["/custom"]), DiffOptions::default());
    for leaked in ["abc", "def", "glrt-abcdefghijkl", "glpat-0123456789abcdef", "hidden-value"] {
        assert!(!d.contains(leaked), "{leaked} leaked:\n{d}");
    }
    assert!(d.contains("token = \\\"(sensitive)\\\"") || d.contains("token = \"(sensitive)\""), "{d}");
    assert!(d.contains("use (sensitive) here"), "{d}");
}

#[test]
fn masked_variables_show_no_value() {
    let v = json!({"key": "K", "value": "s3cr3t-value", "masked": true});
    let d = text(&change(None, Some(v), &[]), DiffOptions::default());
    assert!(d.contains("value: (sensitive)") && !d.contains("s3cr3t"), "{d}");
}

#[test]
fn text_documents_keep_their_bytes_and_scrub_tokens() {
    let mut c = change(None, None, &[]);
    c.before = Some(Document::Text("a: 1\r\n".into()));
    c.after = Some(Document::Text("a: 1\r\ntoken = \"glrt-zzzzzzzzzzzz\"\r\n".into()));
    let d = text(&c, DiffOptions::default());
    assert!(d.contains("+token = \"(sensitive)\"\r\n"), "{d:?}");
}

#[test]
fn short_words_that_merely_start_like_tokens_are_kept() {
    assert_eq!(scrub_text("see glrt-x docs"), "see glrt-x docs");
}

#[test]
fn colour_marks_additions_and_removals() {
    let d = text_diff("same\nold\n", "same\nnew\n", "a/x".into(), "b/x".into(), 3);
    let c = render::ansi(&d);
    assert!(
        c.contains("\x1b[31m-old\x1b[0m") && c.contains("\x1b[32m+new\x1b[0m") && c.contains("\x1b[36m@@"),
        "{c:?}"
    );
    assert_eq!(d.stat(), (1, 1));
}

#[test]
fn markdown_fences_the_plain_diff() {
    let d = text_diff("a\n", "a ```\n", "a/x".into(), "b/x".into(), 3);
    let md = render::markdown(&d);
    assert!(md.starts_with("````diff\n--- a/x\n+++ b/x\n"), "{md}");
    assert!(md.ends_with("+a ```\n````\n"), "{md}");
    assert_eq!(render::markdown(&Diff::default()), "");
}

#[test]
fn a_missing_final_newline_is_marked() {
    let d = text_diff("a\n", "a\nb", "a/x".into(), "b/x".into(), 3);
    assert!(render::plain(&d).ends_with("+b\n\\ No newline at end of file\n"), "{}", render::plain(&d));
}

#[test]
fn bindings_show_where_the_value_comes_from_never_a_value() {
    let secret = json!({"kind": "Secret", "stringData": {"runner-token": "", "other": "x"}});
    let c = change(None, Some(secret), &["/stringData/runner-token"]).bind(
        "/stringData/runner-token",
        ChangeId::from("runner/a"),
        Output::RunnerToken,
        "token of runner a, from GitLab at apply time",
    );
    let d = text(&c, DiffOptions::default());
    assert!(d.contains("+  runner-token: (token of runner a, from GitLab at apply time)"), "{d}");
    assert!(d.contains("+  other: (sensitive)"), "{d}");
}
