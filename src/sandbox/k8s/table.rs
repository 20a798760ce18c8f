//! Server-side printing: `Table` answers for `kubectl get`, with CRD printer columns.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::resources::{PrinterColumn, Resource};

/// Does the client ask for a Table (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`)?
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|first| first.contains("as=Table"))
}

fn columns(res: &Resource) -> Vec<PrinterColumn> {
    let col = |name: &str, kind: &str, path: &str| PrinterColumn {
        name: name.into(),
        kind: kind.into(),
        json_path: path.into(),
        priority: 0,
        description: String::new(),
    };
    match (res.custom, res.kind.as_str()) {
        (true, _) if res.printer_columns.is_empty() => vec![col("Age", "date", ".metadata.creationTimestamp")],
        (true, _) => res.printer_columns.clone(),
        (false, "Secret") => vec![
            col("Type", "string", ".type"),
            col("Data", "integer", ".data"),
            col("Age", "date", ".metadata.creationTimestamp"),
        ],
        (false, "Node") => vec![
            col("Status", "node-ready", ".status.conditions[?(@.type==\"Ready\")].status"),
            col("Roles", "node-roles", ".metadata.labels"),
            col("Age", "date", ".metadata.creationTimestamp"),
            col("Version", "string", ".status.nodeInfo.kubeletVersion"),
        ],
        (false, "Namespace") => {
            vec![col("Status", "string", ".status.phase"), col("Age", "date", ".metadata.creationTimestamp")]
        }
        _ => vec![col("Age", "date", ".metadata.creationTimestamp")],
    }
}

pub fn table(res: &Resource, objects: &[&Value], list_rv: &str, include_object: bool, now: DateTime<Utc>) -> Value {
    let cols = columns(res);
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    defs.extend(cols.iter().map(
        |c| json!({"name": c.name, "type": c.kind, "format": "", "description": c.description, "priority": c.priority}),
    ));
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![o["metadata"]["name"].clone()];
            for c in &cols {
                cells.push(cell(o, c, now));
            }
            let object = if include_object {
                (*o).clone()
            } else {
                let mut meta = o["metadata"].clone();
                if let Some(m) = meta.as_object_mut() {
                    m.remove("managedFields");
                }
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": list_rv},
           "columnDefinitions": defs, "rows": rows})
}

fn cell(obj: &Value, col: &PrinterColumn, now: DateTime<Utc>) -> Value {
    let found = eval(obj, &col.json_path);
    if col.kind == "integer" && col.json_path == ".data" {
        return json!(obj["data"].as_object().map_or(0, |m| m.len()));
    }
    if col.kind == "node-roles" {
        return json!("<none>");
    }
    let Some(first) = found.first() else { return Value::Null };
    match col.kind.as_str() {
        "node-ready" => json!(if first == "True" { "Ready" } else { "NotReady" }),
        "date" => first
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map_or(Value::Null, |t| json!(age(now, t.with_timezone(&Utc)))),
        "integer" | "number" | "boolean" => first.clone(),
        _ => {
            let texts: Vec<String> =
                found.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).collect();
            json!(texts.join(","))
        }
    }
}

/// kubectl's short durations: 45s, 12m, 5h, 3d, 2y.
pub fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let s = (now - then).num_seconds().max(0);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ if s < 365 * 86_400 * 2 => format!("{}d", s / 86_400),
        _ => format!("{}y", s / (365 * 86_400)),
    }
}

/// The JSONPath subset printer columns use: `.a.b`, `.a[0]`, `.a[*].b`, `.a[?(@.k=="v")].b`.
pub fn eval(root: &Value, path: &str) -> Vec<Value> {
    let mut current = vec![root.clone()];
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            current = current.iter().filter_map(|v| v.get(key).cloned()).collect();
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { return vec![] };
            let sel = &r[..end];
            rest = &r[end + 1..];
            let items: Vec<Value> = current.iter().filter_map(|v| v.as_array().cloned()).flatten().collect();
            current = if sel == "*" {
                items
            } else if let Ok(i) = sel.parse::<usize>() {
                current.iter().filter_map(|v| v.get(i).cloned()).collect()
            } else if let Some(filter) = sel.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (field, want) = filter.split_once("==").unwrap_or((filter, ""));
                let want = want.trim().trim_matches('"').trim_matches('\'');
                items.into_iter().filter(|it| it.get(field.trim()).and_then(Value::as_str) == Some(want)).collect()
            } else {
                return vec![];
            };
        } else {
            return vec![];
        }
    }
    current
}
