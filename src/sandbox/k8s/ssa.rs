//! Field ownership as server-side apply tracks it: `metadata.managedFields` entries in
//! FieldsV1 form, apply with conflict detection, and ownership moves on updates.
//!
//! Lists are atomic (one field) except the associative lists of ObjectMeta and of status:
//! `metadata.finalizers` is a set (`v:"item"` members), `metadata.ownerReferences` a map keyed
//! by `uid` and `status.conditions` a map keyed by `type` (`k:{"type":"Ready"}` elements), so
//! two managers can each own their own entries. A path segment `v:…`/`k:…` names a member.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

pub type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

/// Metadata the server owns; never tracked as a field.
const SERVER_METADATA: [&str; 8] =
    ["name", "namespace", "resourceVersion", "uid", "managedFields", "creationTimestamp", "generation", "selfLink"];

#[derive(Debug, Clone)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub fields: FieldSet,
    /// `status` for writes to the status subresource.
    pub subresource: Option<String>,
}

/// How a list at a path merges.
enum ListType {
    Atomic,
    Set,
    Map(&'static [&'static str]),
}

fn list_type(path: &[String]) -> ListType {
    match path {
        [a, b] if a == "metadata" && b == "finalizers" => ListType::Set,
        [a, b] if a == "metadata" && b == "ownerReferences" => ListType::Map(&["uid"]),
        [a, b] if a == "status" && b == "conditions" => ListType::Map(&["type"]),
        _ => ListType::Atomic,
    }
}

/// The `k:{…}` segment of a map-list element.
fn key_segment(item: &Value, keys: &[&str]) -> Option<String> {
    let mut k = Map::new();
    for key in keys {
        k.insert((*key).to_string(), item.get(*key)?.clone());
    }
    Some(format!("k:{}", Value::Object(k)))
}

fn is_member(seg: &str) -> bool {
    seg.starts_with("v:") || seg.starts_with("k:")
}

/// The element of a list a member segment names.
fn find_member(list: &[Value], seg: &str) -> Option<usize> {
    if let Some(v) = seg.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).ok()?;
        return list.iter().position(|x| *x == want);
    }
    let keys: Map<String, Value> = serde_json::from_str(seg.strip_prefix("k:")?).ok()?;
    list.iter().position(|x| keys.iter().all(|(k, v)| x.get(k) == Some(v)))
}

#[derive(Debug, Clone)]
pub struct Conflict {
    /// As the server prints it: `"m"`, `"m" using v1` or `"m" using v1 at TIME`.
    pub manager: String,
    pub path: String,
}

pub fn render_path(p: &Path) -> String {
    p.iter()
        .map(|s| {
            if let Some(v) = s.strip_prefix("v:") {
                format!("[={v}]")
            } else if let Some(k) = s.strip_prefix("k:") {
                let keys: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let inner: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("[{}]", inner.join(","))
            } else {
                format!(".{s}")
            }
        })
        .collect()
}

/// Leaf paths of the status of an object (a `/status` write).
pub fn status_fields_of(obj: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    if let Some(status) = obj.get("status") {
        collect(status, &mut vec!["status".into()], &mut out);
    }
    out
}

/// Leaf paths of an object (maps recurse; lists and scalars are leaves).
pub fn fields_of(obj: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            match k.as_str() {
                "apiVersion" | "kind" | "status" => {}
                "metadata" => {
                    if let Some(meta) = v.as_object() {
                        for (mk, mv) in meta {
                            if !SERVER_METADATA.contains(&mk.as_str()) {
                                collect(mv, &mut vec!["metadata".into(), mk.clone()], &mut out);
                            }
                        }
                    }
                }
                _ => collect(v, &mut vec![k.clone()], &mut out),
            }
        }
    }
    out
}

fn collect(v: &Value, path: &mut Path, out: &mut FieldSet) {
    match (v, list_type(path)) {
        (Value::Object(m), _) if !m.is_empty() => {
            for (k, child) in m {
                path.push(k.clone());
                collect(child, path, out);
                path.pop();
            }
        }
        (Value::Array(items), ListType::Set) => {
            for item in items {
                path.push(format!("v:{item}"));
                out.insert(path.clone());
                path.pop();
            }
        }
        (Value::Array(items), ListType::Map(keys)) => {
            for item in items {
                let Some(seg) = key_segment(item, keys) else { continue };
                path.push(seg);
                out.insert(path.clone());
                if let Some(m) = item.as_object() {
                    for (k, child) in m {
                        path.push(k.clone());
                        collect(child, path, out);
                        path.pop();
                    }
                }
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

pub fn get<'a>(v: &'a Value, path: &Path) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| {
        if is_member(k) {
            let list = cur.as_array()?;
            list.get(find_member(list, k)?)
        } else {
            cur.as_object()?.get(k)
        }
    })
}

/// The node at `seg` under `cur`, created when missing (a member is created from its key).
fn child_mut<'a>(cur: &'a mut Value, seg: &str) -> Option<&'a mut Value> {
    if is_member(seg) {
        if !cur.is_array() {
            *cur = json!([]);
        }
        let list = cur.as_array_mut()?;
        let i = match find_member(list, seg) {
            Some(i) => i,
            None => {
                let fresh = match (seg.strip_prefix("v:"), seg.strip_prefix("k:")) {
                    (Some(v), _) => serde_json::from_str(v).ok()?,
                    (_, Some(k)) => serde_json::from_str(k).ok()?,
                    _ => return None,
                };
                list.push(fresh);
                list.len() - 1
            }
        };
        return list.get_mut(i);
    }
    if !cur.is_object() {
        *cur = json!({});
    }
    Some(cur.as_object_mut()?.entry(seg.to_string()).or_insert_with(|| json!({})))
}

fn set(v: &mut Value, path: &Path, value: Value) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut cur = v;
    for k in parents {
        match child_mut(cur, k) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if is_member(last) {
        // A member is there once it is in the list; its fields are set by their own paths.
        let _ = child_mut(cur, last);
    } else {
        if !cur.is_object() {
            *cur = json!({});
        }
        if let Some(map) = cur.as_object_mut() {
            map.insert(last.clone(), value);
        }
    }
}

fn remove(v: &mut Value, path: &Path) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut cur = v;
    for k in parents {
        let next = if is_member(k) {
            cur.as_array_mut().and_then(|l| find_member(l, k).and_then(|i| l.get_mut(i)))
        } else {
            cur.as_object_mut().and_then(|m| m.get_mut(k))
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if is_member(last) {
        if let Some(list) = cur.as_array_mut()
            && let Some(i) = find_member(list, last)
        {
            list.remove(i);
        }
    } else if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn fields_v1_key(seg: &str) -> String {
    if is_member(seg) { seg.to_string() } else { format!("f:{seg}") }
}

/// FieldsV1 JSON of a field set: `{"f:spec":{"f:replicas":{}}}`; a node owned itself and
/// through children (a map-list element) carries `".": {}`.
#[allow(clippy::expect_used, reason = "every node this function inserts is an object")]
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for k in path {
            let e = cur.entry(fields_v1_key(k)).or_insert_with(|| json!({}));
            cur = e.as_object_mut().expect("fields are objects");
        }
    }
    for path in set {
        let mut cur = &mut root;
        for k in path {
            cur = cur.get_mut(&fields_v1_key(k)).and_then(Value::as_object_mut).expect("inserted above");
        }
        if !cur.is_empty() && !cur.contains_key(".") {
            cur.insert(".".into(), json!({}));
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value, prefix: &mut Path, out: &mut FieldSet) {
    let Some(m) = v.as_object() else { return };
    if (m.is_empty() || m.contains_key(".")) && !prefix.is_empty() {
        out.insert(prefix.clone());
    }
    for (k, child) in m {
        let seg = if let Some(name) = k.strip_prefix("f:") {
            name.to_string()
        } else if is_member(k) {
            k.clone()
        } else {
            continue;
        };
        prefix.push(seg);
        from_fields_v1(child, prefix, out);
        prefix.pop();
    }
}

pub fn entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let mut fields = FieldSet::new();
            from_fields_v1(&e["fieldsV1"], &mut Vec::new(), &mut fields);
            Entry {
                manager: e["manager"].as_str().unwrap_or("").into(),
                operation: e["operation"].as_str().unwrap_or("Update").into(),
                api_version: e["apiVersion"].as_str().unwrap_or("").into(),
                time: e["time"].as_str().unwrap_or("").into(),
                fields,
                subresource: e["subresource"].as_str().map(str::to_string),
            }
        })
        .collect()
}

pub fn store_entries(obj: &mut Value, list: &[Entry]) {
    let json: Vec<Value> = list
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut j = json!({"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version, "time": e.time,
                               "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.fields)});
            if let Some(s) = &e.subresource {
                j["subresource"] = json!(s);
            }
            j
        })
        .collect();
    obj["metadata"]["managedFields"] = Value::Array(json);
}

/// The fields a write to `subresource` (None: the main resource) carries.
fn written_fields(obj: &Value, subresource: Option<&str>) -> FieldSet {
    match subresource {
        Some("status") => status_fields_of(obj),
        _ => fields_of(obj),
    }
}

/// Server-side apply of `applied` by `manager` onto `current` (None: create), to the main
/// resource or (`subresource: Some("status")`) to `/status`.
pub fn apply(
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
    now: &str,
    subresource: Option<&str>,
) -> Result<Value, Vec<Conflict>> {
    let applied_fields = written_fields(applied, subresource);
    let mut list = current.map(entries).unwrap_or_default();
    let mine = |e: &Entry| e.manager == manager && e.operation == "Apply" && e.subresource.as_deref() == subresource;
    let same_sub = |e: &Entry| e.subresource.as_deref() == subresource;
    if let Some(cur) = current {
        let mut conflicts = Vec::new();
        for f in &applied_fields {
            if get(cur, f) == get(applied, f) {
                continue;
            }
            for e in list.iter().filter(|e| same_sub(e) && !mine(e)) {
                if let Some(owned) = e.fields.iter().find(|o| overlaps(o, f)) {
                    let who = if e.operation == "Update" {
                        if e.time.is_empty() {
                            format!("{:?} using {}", e.manager, e.api_version)
                        } else {
                            format!("{:?} using {} at {}", e.manager, e.api_version, e.time)
                        }
                    } else {
                        format!("{:?}", e.manager)
                    };
                    conflicts.push(Conflict { manager: who, path: render_path(owned) });
                }
            }
        }
        if !conflicts.is_empty() && !force {
            conflicts.dedup_by(|a, b| a.manager == b.manager && a.path == b.path);
            return Err(conflicts);
        }
    }
    let mut result = match current {
        Some(c) => c.clone(),
        None => json!({"apiVersion": applied["apiVersion"], "kind": applied["kind"], "metadata": {}}),
    };
    let previously: FieldSet = list.iter().filter(|e| mine(e)).flat_map(|e| e.fields.iter().cloned()).collect();
    for f in previously.difference(&applied_fields) {
        let kept_by_other = list.iter().any(|e| !mine(e) && e.fields.iter().any(|o| overlaps(o, f)));
        if !kept_by_other {
            remove(&mut result, f);
        }
    }
    for f in &applied_fields {
        if let Some(v) = get(applied, f) {
            set(&mut result, f, v.clone());
        }
    }
    if force {
        for e in list.iter_mut().filter(|e| same_sub(e) && !mine(e)) {
            e.fields.retain(|o| !applied_fields.iter().any(|f| overlaps(o, f)));
        }
    }
    list.retain(|e| !mine(e));
    list.push(Entry {
        manager: manager.into(),
        operation: "Apply".into(),
        api_version: api_version.into(),
        time: now.into(),
        fields: applied_fields,
        subresource: subresource.map(str::to_string),
    });
    store_entries(&mut result, &list);
    Ok(result)
}

/// An update (create, PUT, merge or JSON patch) by `manager`, to the main resource or to
/// `/status`: it takes the fields it changed.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    now: &str,
    subresource: Option<&str>,
) {
    let new_fields = written_fields(new, subresource);
    let changed: FieldSet = new_fields.iter().filter(|f| old.and_then(|o| get(o, f)) != get(new, f)).cloned().collect();
    let mut list = old.map(entries).unwrap_or_default();
    for e in list.iter_mut().filter(|e| e.subresource.as_deref() == subresource) {
        // Others lose what was changed, and nobody keeps a field that is gone.
        if e.manager != manager || e.operation != "Update" {
            e.fields.retain(|o| !changed.iter().any(|c| overlaps(o, c)));
        }
        e.fields.retain(|o| new_fields.iter().any(|f| overlaps(o, f)));
    }
    if !changed.is_empty() {
        match list
            .iter_mut()
            .find(|e| e.manager == manager && e.operation == "Update" && e.subresource.as_deref() == subresource)
        {
            Some(e) => {
                e.fields.extend(changed);
                e.time = now.into();
                e.api_version = api_version.into();
            }
            None => list.push(Entry {
                manager: manager.into(),
                operation: "Update".into(),
                api_version: api_version.into(),
                time: now.into(),
                fields: changed,
                subresource: subresource.map(str::to_string),
            }),
        }
    }
    store_entries(new, &list);
}

/// The Status message for a failed apply.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    let n = conflicts.len();
    let body = if n == 1 {
        format!("conflict with {}: {}", conflicts[0].manager, conflicts[0].path)
    } else {
        let mut by_manager: Vec<(String, Vec<String>)> = Vec::new();
        for c in conflicts {
            match by_manager.iter_mut().find(|(m, _)| *m == c.manager) {
                Some((_, paths)) => paths.push(c.path.clone()),
                None => by_manager.push((c.manager.clone(), vec![c.path.clone()])),
            }
        }
        let mut msgs: Vec<String> = by_manager
            .into_iter()
            .map(|(m, paths)| {
                format!("conflicts with {m}:{}", paths.iter().map(|p| format!("\n- {p}")).collect::<String>())
            })
            .collect();
        msgs.sort();
        msgs.join("\n")
    };
    format!("Apply failed with {n} conflict{}: {body}", if n == 1 { "" } else { "s" })
}
