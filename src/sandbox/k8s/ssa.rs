//! Field ownership as server-side apply tracks it: `metadata.managedFields` entries in
//! FieldsV1 form, apply with conflict detection, and ownership moves on updates.
//!
//! Lists are treated as atomic (one field), which is what the served CRDs declare for the
//! lists archshift edits (`x-kubernetes-list-type: atomic` on NodePool requirements).

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
}

#[derive(Debug, Clone)]
pub struct Conflict {
    /// As the server prints it: `"m"`, `"m" using v1` or `"m" using v1 at TIME`.
    pub manager: String,
    pub path: String,
}

pub fn render_path(p: &Path) -> String {
    p.iter().map(|s| format!(".{s}")).collect()
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
    match v.as_object() {
        Some(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(k.clone());
                collect(child, path, out);
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

pub fn get<'a>(v: &'a Value, path: &Path) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.as_object()?.get(k))
}

fn set(v: &mut Value, path: &Path, value: Value) {
    let mut cur = v;
    for k in &path[..path.len() - 1] {
        if !cur.is_object() {
            *cur = json!({});
        }
        let Some(map) = cur.as_object_mut() else { return };
        cur = map.entry(k.clone()).or_insert_with(|| json!({}));
    }
    if !cur.is_object() {
        *cur = json!({});
    }
    if let (Some(map), Some(last)) = (cur.as_object_mut(), path.last()) {
        map.insert(last.clone(), value);
    }
}

fn remove(v: &mut Value, path: &Path) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut cur = v;
    for k in parents {
        match cur.as_object_mut().and_then(|m| m.get_mut(k)) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// FieldsV1 JSON of a field set: `{"f:spec":{"f:replicas":{}}}`.
#[allow(clippy::expect_used, reason = "every node this function inserts is an object")]
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for k in path {
            let e = cur.entry(format!("f:{k}")).or_insert_with(|| json!({}));
            cur = e.as_object_mut().expect("fields are objects");
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
        if let Some(name) = k.strip_prefix("f:") {
            prefix.push(name.to_string());
            from_fields_v1(child, prefix, out);
            prefix.pop();
        }
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
            }
        })
        .collect()
}

pub fn store_entries(obj: &mut Value, list: &[Entry]) {
    let json: Vec<Value> = list
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            json!({"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version, "time": e.time,
                   "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.fields)})
        })
        .collect();
    obj["metadata"]["managedFields"] = Value::Array(json);
}

/// Server-side apply of `applied` by `manager` onto `current` (None: create).
pub fn apply(
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let applied_fields = fields_of(applied);
    let mut list = current.map(entries).unwrap_or_default();
    if let Some(cur) = current {
        let mut conflicts = Vec::new();
        for f in &applied_fields {
            if get(cur, f) == get(applied, f) {
                continue;
            }
            for e in list.iter().filter(|e| !(e.manager == manager && e.operation == "Apply")) {
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
    let previously: FieldSet = list
        .iter()
        .filter(|e| e.manager == manager && e.operation == "Apply")
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    for f in previously.difference(&applied_fields) {
        let kept_by_other = list
            .iter()
            .any(|e| !(e.manager == manager && e.operation == "Apply") && e.fields.iter().any(|o| overlaps(o, f)));
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
        for e in list.iter_mut().filter(|e| !(e.manager == manager && e.operation == "Apply")) {
            e.fields.retain(|o| !applied_fields.iter().any(|f| overlaps(o, f)));
        }
    }
    list.retain(|e| !(e.manager == manager && e.operation == "Apply"));
    list.push(Entry {
        manager: manager.into(),
        operation: "Apply".into(),
        api_version: api_version.into(),
        time: now.into(),
        fields: applied_fields,
    });
    store_entries(&mut result, &list);
    Ok(result)
}

/// An update (create, PUT, merge or JSON patch) by `manager`: it takes the fields it changed.
pub fn record_update(old: Option<&Value>, new: &mut Value, manager: &str, api_version: &str, now: &str) {
    let new_fields = fields_of(new);
    let changed: FieldSet = new_fields.iter().filter(|f| old.and_then(|o| get(o, f)) != get(new, f)).cloned().collect();
    let mut list = old.map(entries).unwrap_or_default();
    for e in list.iter_mut() {
        // Others lose what was changed, and nobody keeps a field that is gone.
        if e.manager != manager || e.operation != "Update" {
            e.fields.retain(|o| !changed.iter().any(|c| overlaps(o, c)));
        }
        e.fields.retain(|o| new_fields.iter().any(|f| overlaps(o, f)));
    }
    if !changed.is_empty() {
        match list.iter_mut().find(|e| e.manager == manager && e.operation == "Update") {
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
