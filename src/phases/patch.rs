//! The write a planner decides for an update of a Kubernetes object it does not own: a JSON
//! patch from the observed object to the wanted one, guarded by `test` operations, so that a
//! concurrent edit of the fields it touches fails the patch instead of being overwritten,
//! while edits elsewhere in the object do not get in the way.

use serde_json::{Value, json};

use crate::model::{Action, Change, ChangeId, Document, ObjectRef, Phase, Precondition, WriteMethod};

/// A JSON patch (RFC 6902) from `before` to `after`. Every `replace` or `remove` is preceded
/// by a `test` of the value it replaces, every `add` by a `test` of the container it adds to.
pub fn guarded_patch(before: &Value, after: &Value) -> Vec<Value> {
    let ops = match serde_json::to_value(json_patch::diff(before, after)) {
        Ok(Value::Array(ops)) => ops,
        _ => return Vec::new(),
    };
    let mut tests: Vec<Value> = Vec::new();
    let mut guard = |path: &str| {
        if let Some(old) = before.pointer(path)
            && !tests.iter().any(|t| t["path"] == path)
        {
            tests.push(json!({"op": "test", "path": path, "value": old}));
        }
    };
    for op in &ops {
        let path = op["path"].as_str().unwrap_or("");
        match op["op"].as_str() {
            Some("add") => guard(parent(path)),
            Some("replace" | "remove") => guard(path),
            Some("move" | "copy") => {
                guard(op["from"].as_str().unwrap_or(""));
                guard(parent(path));
            }
            _ => {}
        }
    }
    tests.into_iter().chain(ops).collect()
}

fn parent(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

/// An update of a Kubernetes object from `before` to `after`, written as a guarded JSON patch,
/// with the resourceVersion it was planned at as its precondition.
pub fn patch_change(
    id: ChangeId,
    phase: Phase,
    target: ObjectRef,
    summary: String,
    before: &Value,
    after: Value,
) -> Change {
    let resource_version = before["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string();
    Change::new(
        id,
        phase,
        target,
        Action::Update,
        summary,
        WriteMethod::KubeJsonPatch { patch: guarded_patch(before, &after) },
    )
    .before(Document::Object(before.clone()))
    .after(Document::Object(after))
    .precondition(Precondition::ResourceVersion { resource_version })
}

/// Applies a patch the way the API server does, for simulation and tests.
pub fn apply_patch(doc: &Value, patch: &[Value]) -> Result<Value, String> {
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(patch.to_vec())).map_err(|e| e.to_string())?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &patch).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Whether a file holds the edits that made `after` from `before`: it is `after`, or merging
/// those edits onto it (a three-way merge with `before` as the ancestor) changes nothing, so
/// a commit of someone else's since then does not count against them.
pub fn edits_hold(before: &str, after: &str, current: &str) -> bool {
    current == after || (before != after && diffy::merge(before, after, current).is_ok_and(|m| m == current))
}

/// Whether every field a JSON patch writes reads as the patch left it. A path into an array
/// is judged by the whole array (an index names a place, not an element, once others edit the
/// list), the deepest one that holds the value; `before` and `after` tell which are arrays.
pub fn patch_holds(patch: &[Value], before: &Value, after: &Value, live: &Value) -> bool {
    patch.iter().filter(|op| op["op"] != "test").all(|op| {
        let path = op["path"].as_str().unwrap_or("");
        let field = array_owner(path, after).or_else(|| array_owner(path, before));
        match field {
            Some(array) => live.pointer(array) == after.pointer(array),
            None => match op["op"].as_str() {
                Some("remove") => live.pointer(path).is_none(),
                _ => live.pointer(path) == after.pointer(path),
            },
        }
    })
}

/// The deepest array `path` reaches into in `doc` (a strict prefix of it), if any.
pub(crate) fn array_owner<'a>(path: &'a str, doc: &Value) -> Option<&'a str> {
    path.char_indices()
        .skip(1)
        .filter(|(_, c)| *c == '/')
        .map(|(i, _)| &path[..i])
        .filter(|prefix| doc.pointer(prefix).is_some_and(Value::is_array))
        .last()
}

/// The update that writes back what a journaled patch changed: the reverse of `before` ->
/// `after`, applied to the object as it is now, so that what others changed since elsewhere
/// in it stays. `Err` when the fields archshift wrote changed since (restoring would
/// overwrite someone else's edit) or cannot be reached.
pub fn restore(current: &Value, before: &Value, after: &Value) -> Result<Value, String> {
    let back_ops = guarded_patch(after, before);
    if patch_holds(&back_ops, after, before, current) {
        return Ok(current.clone());
    }
    let forward = guarded_patch(before, after);
    if !patch_holds(&forward, before, after, current) {
        return Err("the fields archshift wrote changed since; restore them by hand".into());
    }
    let back: Vec<Value> = guarded_patch(after, before).into_iter().filter(|op| op["op"] != "test").collect();
    // Paths into arrays are written whole, as `patch_holds` judges them.
    let mut out = current.clone();
    for op in &back {
        let path = op["path"].as_str().unwrap_or("");
        let field = array_owner(path, before).or_else(|| array_owner(path, after)).unwrap_or(path);
        match before.pointer(field) {
            Some(v) => set_pointer(&mut out, field, v.clone())?,
            None => remove_pointer(&mut out, field),
        }
    }
    Ok(out)
}

fn set_pointer(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if let Some(slot) = doc.pointer_mut(path) {
        *slot = value;
        return Ok(());
    }
    let (parent, key) = path.rsplit_once('/').ok_or_else(|| format!("cannot write {path}"))?;
    let key = key.replace("~1", "/").replace("~0", "~");
    match doc.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.insert(key, value);
            Ok(())
        }
        _ => Err(format!("cannot write {path}: its parent is gone")),
    }
}

fn remove_pointer(doc: &mut Value, path: &str) {
    if let Some((parent, key)) = path.rsplit_once('/') {
        let key = key.replace("~1", "/").replace("~0", "~");
        if let Some(Value::Object(m)) = doc.pointer_mut(parent) {
            m.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn patch_reaches_after_and_fails_when_a_touched_field_moved() {
        let before = json!({"metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"r": [{"k": "arch", "v": ["amd64"]}], "x": 1}});
        let mut after = before.clone();
        after["spec"]["r"][0]["v"] = json!(["amd64", "arm64"]);
        let patch = guarded_patch(&before, &after);
        assert_eq!(patch[0], json!({"op": "test", "path": "/spec/r/0/v", "value": ["amd64"]}));
        assert_eq!(apply_patch(&before, &patch).unwrap(), after);

        // Someone else edited another field: the patch still applies and keeps their edit.
        let mut other = before.clone();
        other["spec"]["x"] = json!(2);
        let applied = apply_patch(&other, &patch).unwrap();
        assert_eq!(
            (applied["spec"]["x"].clone(), applied["spec"]["r"][0]["v"].clone()),
            (json!(2), json!(["amd64", "arm64"]))
        );

        // Someone else edited the same list: the test fails, nothing is written.
        let mut clash = before.clone();
        clash["spec"]["r"][0]["v"] = json!(["arm64"]);
        assert!(apply_patch(&clash, &patch).is_err());
    }

    #[test]
    fn adding_a_key_tests_its_container() {
        let before = json!({"spec": {"templates": []}});
        let after = json!({"spec": {"templates": [], "nodeSelector": {"kubernetes.io/arch": "amd64"}}});
        let patch = guarded_patch(&before, &after);
        assert_eq!(patch[0]["op"], "test");
        assert_eq!(patch[0]["path"], "/spec");
        assert_eq!(apply_patch(&before, &patch).unwrap(), after);
        assert!(guarded_patch(&before, &before).is_empty());
    }
}
