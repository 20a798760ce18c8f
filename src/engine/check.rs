//! Pure checks the engine makes against what it reads: does a change's after-state already
//! hold (skip it), and does its precondition still hold (else the plan is stale).

use serde_json::Value;

use crate::model::{Change, Document, ObjectRef, Precondition, WriteMethod};
pub use crate::phases::patch::edits_hold;
use crate::phases::patch::patch_holds;

/// A target as read just now.
#[derive(Debug, Clone, PartialEq)]
pub enum Current {
    Absent,
    Object(Value),
    /// A repository file on a branch.
    File {
        content: String,
        last_commit_id: String,
    },
    /// Cannot be read (a runner's token): the journal decides.
    Unknown,
}

/// Whether the after-state of a change holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holds {
    Yes,
    No,
    /// Part of it: e.g. committed to the branch, merge request not merged yet.
    Partly(String),
}

/// `a` is contained in `b`: every key of an object, the same length and elementwise for
/// arrays, equality for the rest.
pub fn subset(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => a.iter().all(|(k, v)| b.get(k).is_some_and(|w| subset(v, w))),
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| subset(x, y)),
        _ => a == b,
    }
}

/// What of a Kubernetes after-image is archshift's to compare: spec, data keys and type,
/// labels and annotations; never status, resourceVersion or managed fields, and never a
/// value bound at apply time or a Secret value (only its key).
fn kube_expected(change: &Change, doc: &Value) -> Value {
    let mut v = doc.clone();
    for b in &change.bindings {
        if let Some(slot) = v.pointer_mut(&b.pointer) {
            *slot = Value::Null;
        }
    }
    kube_actual(&v)
}

/// The parts of a live object the comparison looks at.
fn kube_actual(live: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for key in ["spec", "type"] {
        if let Some(x) = live.get(key) {
            out.insert(key.into(), x.clone());
        }
    }
    for key in ["labels", "annotations"] {
        if let Some(x) = live["metadata"].get(key) {
            out.insert(format!("metadata.{key}"), x.clone());
        }
    }
    out.into()
}

/// Secret keys: every key `after` sets in data or stringData is present live.
fn secret_keys_hold(after: &Value, live: &Value) -> bool {
    let live_keys: Vec<&String> =
        ["data", "stringData"].iter().filter_map(|f| live[f].as_object()).flat_map(|m| m.keys()).collect();
    ["data", "stringData"]
        .iter()
        .filter_map(|f| after[f].as_object())
        .flat_map(|m| m.keys())
        .all(|k| live_keys.contains(&k))
}

/// Strips null leaves (bound values) so `subset` does not demand them.
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            m.iter().filter(|(_, x)| !x.is_null()).map(|(k, x)| (k.clone(), without_nulls(x))).collect()
        }
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

fn same_tags(a: &Value, b: &Value) -> bool {
    let set = |v: &Value| {
        let mut t: Vec<String> =
            v.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(str::to_string)).collect();
        t.sort();
        t
    };
    set(a) == set(b)
}

/// Whether `change`'s after-state holds, given its target as read now (`cur`) and, for a CI
/// file delivered by merge request, the file on the merge request's target branch (`base`).
pub fn holds(change: &Change, cur: &Current, base: Option<&Current>) -> Holds {
    let yes = |b: bool| if b { Holds::Yes } else { Holds::No };
    match (&change.method, &change.target) {
        // Asked to go: what remains is the finalizers' work, which verification waits for.
        (WriteMethod::KubeDelete, _) => yes(match cur {
            Current::Absent => true,
            Current::Object(v) => !v["metadata"]["deletionTimestamp"].is_null(),
            _ => false,
        }),
        // The fields the patch writes, and nothing else: a concurrent writer's edit elsewhere
        // in the object is theirs, and does not make archshift's write undone.
        (WriteMethod::KubeJsonPatch { patch }, ObjectRef::Kube { .. }) => {
            let (Current::Object(live), Some(after)) = (cur, change.after_object()) else { return Holds::No };
            let before = change.before.as_ref().and_then(Document::as_object).unwrap_or(&Value::Null);
            yes(patch_holds(patch, before, after, live))
        }
        (WriteMethod::KubeCreate, ObjectRef::Kube { kind, .. }) => {
            let (Current::Object(live), Some(after)) = (cur, change.after_object()) else { return Holds::No };
            if kind == "Secret" {
                let mut meta_only = after.clone();
                meta_only.as_object_mut().map(|m| m.remove("stringData"));
                meta_only.as_object_mut().map(|m| m.remove("data"));
                return yes(secret_keys_hold(after, live)
                    && subset(&without_nulls(&kube_expected(change, &meta_only)), &kube_actual(live)));
            }
            yes(subset(&without_nulls(&kube_expected(change, after)), &kube_actual(live)))
        }
        (WriteMethod::KubeApply { patch, .. }, _) => {
            let Current::Object(live) = cur else { return Holds::No };
            yes(subset(&without_nulls(&kube_expected(change, patch)), &kube_actual(live)))
        }
        (WriteMethod::GitLab { method, .. }, target) => {
            let after = change.after_object();
            match (method.to_string().as_str(), target, cur, after) {
                ("DELETE", _, cur, _) => yes(*cur == Current::Absent),
                (_, ObjectRef::RunnerToken { .. }, _, _) => Holds::No,
                (_, ObjectRef::GitLabRunner { .. }, Current::Object(live), Some(after)) => {
                    yes(after.get("tag_list").is_none_or(|t| same_tags(t, &live["tag_list"]))
                        && ["run_untagged", "paused", "locked", "access_level"]
                            .iter()
                            .all(|k| after.get(*k).is_none_or(|v| live.get(*k) == Some(v))))
                }
                (
                    _,
                    ObjectRef::ProjectVariable { .. } | ObjectRef::GroupVariable { .. },
                    Current::Object(live),
                    Some(after),
                ) => yes(["value", "protected", "masked", "raw", "variable_type"]
                    .iter()
                    .all(|k| after.get(*k).is_none_or(|v| live.get(*k) == Some(v)))),
                _ => Holds::No,
            }
        }
        (WriteMethod::GitLabCommit { merge_request, .. }, _) => {
            let Some(Document::Text(after)) = &change.after else { return Holds::No };
            let before = match &change.before {
                Some(Document::Text(b)) => b.as_str(),
                _ => after.as_str(),
            };
            let on = |c: Option<&Current>| matches!(c, Some(Current::File { content, .. }) if edits_hold(before, after, content));
            match merge_request {
                None => yes(on(Some(cur))),
                Some(_) if on(base) => Holds::Yes,
                Some(mr) if on(Some(cur)) => Holds::Partly(format!(
                    "committed to its branch; the merge request into {} is not merged yet",
                    mr.target_branch
                )),
                Some(_) => Holds::No,
            }
        }
        (WriteMethod::KubeCreate | WriteMethod::KubeJsonPatch { .. }, _) => Holds::No,
    }
}

/// Whether the precondition of a change that does not hold yet is still true: `Ok`, or why
/// not. `base` is the file on the branch a commit starts from.
pub fn precondition(change: &Change, cur: &Current, base: Option<&Current>) -> Result<(), String> {
    match &change.precondition {
        Precondition::Absent => match cur {
            Current::Absent | Current::Unknown => Ok(()),
            _ => Err("exists now, but the plan creates it".into()),
        },
        Precondition::Exists => match cur {
            Current::Absent => Err("is gone, but the plan changes it".into()),
            _ => Ok(()),
        },
        Precondition::ResourceVersion { resource_version } => {
            let Current::Object(live) = cur else { return Err("is gone, but the plan changes it".into()) };
            if live["metadata"]["resourceVersion"].as_str() == Some(resource_version) {
                return Ok(());
            }
            // Changed since planned (a controller's status update, a label): still safe when
            // every value the write replaces or adds to is as planned.
            // A status update (a controller reporting) moves resourceVersion but not generation.
            let planned_generation =
                change.before.as_ref().and_then(Document::as_object).and_then(|b| b["metadata"]["generation"].as_i64());
            if planned_generation.is_some() && planned_generation == live["metadata"]["generation"].as_i64() {
                return Ok(());
            }
            match &change.method {
                WriteMethod::KubeJsonPatch { patch } => tests_pass(patch, live).map_err(|op| {
                    format!("changed since planned: {op} no longer holds (another writer touched the fields this change replaces)")
                }),
                WriteMethod::KubeApply { .. } => Ok(()),
                _ => Err(format!(
                    "changed since planned (resourceVersion {} now, {resource_version} planned)",
                    live["metadata"]["resourceVersion"].as_str().unwrap_or("?")
                )),
            }
        }
        Precondition::RunnerTags { tag_list, run_untagged } => {
            let Current::Object(live) = cur else { return Err("is gone, but the plan changes it".into()) };
            let planned = Value::from(tag_list.clone());
            if same_tags(&planned, &live["tag_list"]) && live["run_untagged"] == Value::Bool(*run_untagged) {
                Ok(())
            } else {
                Err(format!(
                    "its tags changed since planned (now {}, run_untagged {})",
                    live["tag_list"], live["run_untagged"]
                ))
            }
        }
        Precondition::VariableValue { value, protected } => {
            let Current::Object(live) = cur else { return Err("is gone, but the plan changes it".into()) };
            let value_ok = value.as_ref().is_none_or(|v| live["value"].as_str() == Some(v));
            if value_ok && live["protected"] == Value::Bool(*protected) {
                Ok(())
            } else {
                Err("its value or protection changed since planned".into())
            }
        }
        Precondition::LastCommit { last_commit_id } => match base.unwrap_or(cur) {
            Current::File { last_commit_id: now, .. } if now == last_commit_id => Ok(()),
            Current::File { last_commit_id: now, .. } => {
                Err(format!("changed since planned (last commit {now}, planned {last_commit_id})"))
            }
            _ => Err("is gone, but the plan changes it".into()),
        },
    }
}

/// The `test` operations of a JSON patch against `live`: `Err` names the first that fails.
pub fn tests_pass(patch: &[Value], live: &Value) -> Result<(), String> {
    for op in patch.iter().filter(|op| op["op"] == "test") {
        let path = op["path"].as_str().unwrap_or("");
        if live.pointer(path) != Some(&op["value"]) {
            return Err(format!("test {path} = {}", op["value"]));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::fixtures::{plan, start};

    fn change(id: &str) -> Change {
        let p = crate::phases::plan(&start(), &plan(), "x");
        p.changes().find(|c| c.id.as_str() == id).cloned().unwrap_or_else(|| panic!("{id}"))
    }

    #[test]
    fn a_widened_pool_holds_and_a_narrow_one_does_not() {
        let c = change("nodepool/spot-pool");
        let mut live = c.before.as_ref().and_then(Document::as_object).unwrap().clone();
        live["metadata"]["resourceVersion"] = json!("999");
        live["status"] = json!({"conditions": []});
        assert_eq!(holds(&c, &Current::Object(live.clone()), None), Holds::No);
        let mut widened = c.after_object().unwrap().clone();
        widened["metadata"]["resourceVersion"] = json!("1000");
        widened["metadata"]["managedFields"] = json!([{"manager": "archshift"}]);
        assert_eq!(holds(&c, &Current::Object(widened), None), Holds::Yes);
    }

    #[test]
    fn a_changed_resource_version_is_stale_only_when_the_guarded_fields_changed() {
        let c = change("nodepool/spot-pool");
        let mut live = c.before.as_ref().and_then(Document::as_object).unwrap().clone();
        live["metadata"]["resourceVersion"] = json!("not-the-planned-one");
        live["metadata"]["labels"] = json!({"team": "platform"});
        assert_eq!(precondition(&c, &Current::Object(live.clone()), None), Ok(()), "a label elsewhere is fine");
        // A spec change moves generation (the API server bumps it); the test ops then decide.
        live["metadata"]["generation"] = json!(live["metadata"]["generation"].as_i64().unwrap_or(1) + 1);
        assert_eq!(precondition(&c, &Current::Object(live.clone()), None), Ok(()), "only generation moved");
        live["spec"]["template"]["spec"]["requirements"][1]["values"] = json!(["amd64", "arm64", "s390x"]);
        let err = precondition(&c, &Current::Object(live), None).unwrap_err();
        assert!(err.contains("no longer holds"), "{err}");
        assert!(precondition(&c, &Current::Absent, None).is_err());
    }

    #[test]
    fn a_created_secret_holds_by_its_keys_never_by_its_bound_token() {
        let c = change("secret/gitlab-runner/gitlab-runner-arm64-token");
        let after = c.after_object().unwrap().clone();
        let mut live = after.clone();
        live["stringData"] = Value::Null;
        live["data"] = json!({"runner-token": "", "runner-registration-token": ""});
        assert_eq!(holds(&c, &Current::Object(live.clone()), None), Holds::Yes);
        live["data"] = json!({"other": ""});
        assert_eq!(holds(&c, &Current::Object(live), None), Holds::No);
        assert_eq!(precondition(&c, &Current::Absent, None), Ok(()));
        assert!(precondition(&c, &Current::Object(after), None).is_err(), "exists already: stale");
    }

    #[test]
    fn a_ci_change_holds_once_merged_and_partly_on_its_branch() {
        let c = change("cifile/platform/kaniko-builder/.gitlab-ci.yml");
        let Some(Document::Text(after)) = c.after.clone() else { panic!() };
        let file = |content: &str| Current::File { content: content.into(), last_commit_id: "abc".into() };
        assert_eq!(holds(&c, &file(&after), Some(&file(&after))), Holds::Yes);
        assert!(matches!(holds(&c, &file(&after), Some(&file("old"))), Holds::Partly(_)));
        assert_eq!(holds(&c, &Current::Absent, Some(&file("old"))), Holds::No);
        let Precondition::LastCommit { last_commit_id } = &c.precondition else { panic!("{:?}", c.precondition) };
        let base = Current::File { content: "old".into(), last_commit_id: last_commit_id.clone() };
        assert_eq!(precondition(&c, &Current::Absent, Some(&base)), Ok(()));
        assert!(precondition(&c, &Current::Absent, Some(&file("old"))).unwrap_err().contains("changed since planned"));
    }

    #[test]
    fn a_deletion_holds_once_the_object_is_gone_or_marked_for_deletion() {
        let mut c = change("release/gitlab-runner-arm64");
        c.method = WriteMethod::KubeDelete;
        let obj = json!({"metadata": {"name": "gitlab-runner-arm64", "finalizers": ["finalizer.managedresource.crossplane.io"]}});
        assert_eq!(holds(&c, &Current::Object(obj.clone()), None), Holds::No);
        let mut going = obj;
        going["metadata"]["deletionTimestamp"] = json!("2026-11-28T09:00:00Z");
        assert_eq!(holds(&c, &Current::Object(going), None), Holds::Yes, "the finalizers' work is verification's");
        assert_eq!(holds(&c, &Current::Absent, None), Holds::Yes);
    }

    #[test]
    fn a_foreign_edit_beside_the_patched_fields_does_not_undo_the_widening() {
        let c = change("nodepool/spot-pool");
        let mut widened = c.after_object().unwrap().clone();
        // Someone set a CPU limit and a label after archshift widened the pool.
        widened["spec"]["limits"] = json!({"cpu": "1000"});
        widened["metadata"]["labels"] = json!({"team": "platform"});
        widened["metadata"]["generation"] = json!(7);
        assert_eq!(holds(&c, &Current::Object(widened.clone()), None), Holds::Yes);
        // The fields the patch wrote changed since: not held.
        widened["spec"]["template"]["spec"]["requirements"][1]["values"] = json!(["amd64"]);
        assert_eq!(holds(&c, &Current::Object(widened), None), Holds::No);
    }

    #[test]
    fn a_ci_file_holds_archshifts_edits_after_someone_elses_commit() {
        let before = "build:\n  script: make\n\ntest:\n  script: make test\n";
        let after = "build:\n  tags: [$CICD_TAG_AMD64]\n  script: make\n\ntest:\n  script: make test\n";
        let later = "build:\n  tags: [$CICD_TAG_AMD64]\n  script: make\n\ntest:\n  script: make test -j4\n";
        assert!(edits_hold(before, after, after));
        assert!(edits_hold(before, after, later), "another commit elsewhere keeps archshift's edit");
        assert!(!edits_hold(before, after, before), "not applied");
        let reverted = "build:\n  script: make\n\ntest:\n  script: make test -j4\n";
        assert!(!edits_hold(before, after, reverted), "someone took archshift's edit out again");
    }

    #[test]
    fn subset_ignores_what_is_not_asked_and_compares_arrays_whole() {
        assert!(subset(&json!({"a": [1, {"b": 2}]}), &json!({"a": [1, {"b": 2, "c": 3}], "d": 4})));
        assert!(!subset(&json!({"a": [1]}), &json!({"a": [1, 2]})));
        assert!(!subset(&json!({"a": 1}), &json!({})));
    }
}
