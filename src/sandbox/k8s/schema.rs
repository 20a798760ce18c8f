//! Structural-schema validation, defaulting and pruning of custom resources, with the
//! messages and cause reasons the real API server uses.
//!
//! Not evaluated: CEL rules (`x-kubernetes-validations`) and `format`. Patterns the `regex`
//! crate cannot compile (look-arounds) are skipped.

use std::collections::HashMap;
use std::sync::Mutex;

use regex::Regex;
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    pub reason: &'static str,
    pub field: String,
    /// The part after `field: `.
    pub detail: String,
}

impl Cause {
    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.detail)
    }
}

#[derive(Default)]
pub struct Outcome {
    pub causes: Vec<Cause>,
    /// Paths of fields the schema does not know (pruned).
    pub unknown: Vec<String>,
}

/// Defaults, validates and prunes `obj` in place against `schema` (an `openAPIV3Schema`).
pub fn check(schema: &Value, obj: &mut Value) -> Outcome {
    let mut out = Outcome::default();
    apply_defaults(schema, obj);
    let Some(map) = obj.as_object_mut() else {
        out.causes.push(Cause {
            reason: "FieldValueTypeInvalid",
            field: "<root>".into(),
            detail: "must be an object".into(),
        });
        return out;
    };
    let props = &schema["properties"];
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        match key.as_str() {
            "apiVersion" | "kind" | "metadata" => {}
            _ => match props.get(&key) {
                Some(sub) => {
                    if map[&key].is_null() && sub["nullable"] != true {
                        map.remove(&key);
                        continue;
                    }
                    if let Some(v) = map.get_mut(&key) {
                        walk(sub, v, &key, &mut out);
                    }
                }
                None if schema["x-kubernetes-preserve-unknown-fields"] == true => {}
                None => {
                    out.unknown.push(key.clone());
                    map.remove(&key);
                }
            },
        }
    }
    for req in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        if req != "metadata" && !map.contains_key(req) {
            out.causes.push(Cause { reason: "FieldValueRequired", field: req.into(), detail: "Required value".into() });
        }
    }
    out
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn quoted(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn walk(schema: &Value, value: &mut Value, path: &str, out: &mut Outcome) {
    if schema["x-kubernetes-int-or-string"] == true {
        if !(value.is_string() || json_type(value) == "integer") {
            out.causes.push(Cause {
                reason: "FieldValueTypeInvalid",
                field: path.into(),
                detail: format!(
                    "Invalid value: \"{}\": {path} in body must be of type integer,string: \"{}\"",
                    json_type(value),
                    json_type(value)
                ),
            });
        }
        return;
    }
    if let Some(want) = schema["type"].as_str() {
        let have = json_type(value);
        let ok = have == want || (want == "number" && have == "integer");
        if !ok {
            out.causes.push(Cause {
                reason: "FieldValueTypeInvalid",
                field: path.into(),
                detail: format!("Invalid value: \"{have}\": {path} in body must be of type {want}: \"{have}\""),
            });
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(quoted).collect();
        out.causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: path.into(),
            detail: format!("Unsupported value: {}: supported values: {}", quoted(value), list.join(", ")),
        });
    }
    match value {
        Value::Object(map) => walk_object(schema, map, path, out),
        Value::Array(items) => {
            if let Some(max) = schema["maxItems"].as_u64()
                && items.len() as u64 > max
            {
                out.causes.push(Cause {
                    reason: "FieldValueTooMany",
                    field: path.into(),
                    detail: format!("Too many: {}: must have at most {max} items", items.len()),
                });
            }
            if let Some(min) = schema["minItems"].as_u64()
                && (items.len() as u64) < min
            {
                out.causes.push(Cause {
                    reason: "FieldValueInvalid",
                    field: path.into(),
                    detail: format!("Invalid value: {}: {path} in body should have at least {min} items", items.len()),
                });
            }
            if schema["items"].is_object() {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(&schema["items"], item, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(max) = schema["maxLength"].as_u64()
                && len > max
            {
                out.causes.push(Cause {
                    reason: "FieldValueTooLong",
                    field: path.into(),
                    detail: format!("Too long: may not be more than {max} bytes"),
                });
            }
            if let Some(min) = schema["minLength"].as_u64()
                && len < min
            {
                out.causes.push(Cause {
                    reason: "FieldValueInvalid",
                    field: path.into(),
                    detail: format!("Invalid value: {s:?}: {path} in body should be at least {min} chars long"),
                });
            }
            if let Some(p) = schema["pattern"].as_str()
                && let Some(re) = compiled(p)
                && !re.is_match(s)
            {
                out.causes.push(Cause {
                    reason: "FieldValueInvalid",
                    field: path.into(),
                    detail: format!("Invalid value: {s:?}: {path} in body should match '{p}'"),
                });
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = schema["minimum"].as_f64()
                && x < min
            {
                out.causes.push(Cause {
                    reason: "FieldValueInvalid",
                    field: path.into(),
                    detail: format!(
                        "Invalid value: {n}: {path} in body should be greater than or equal to {}",
                        schema["minimum"]
                    ),
                });
            }
            if let Some(max) = schema["maximum"].as_f64()
                && x > max
            {
                out.causes.push(Cause {
                    reason: "FieldValueInvalid",
                    field: path.into(),
                    detail: format!(
                        "Invalid value: {n}: {path} in body should be less than or equal to {}",
                        schema["maximum"]
                    ),
                });
            }
        }
        _ => {}
    }
}

fn walk_object(schema: &Value, map: &mut Map<String, Value>, path: &str, out: &mut Outcome) {
    let props = schema["properties"].as_object();
    let additional = &schema["additionalProperties"];
    let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
    let embedded = schema["x-kubernetes-embedded-resource"] == true;
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        let child_path = format!("{path}.{key}");
        let sub = props.and_then(|p| p.get(&key)).or(if additional.is_object() { Some(additional) } else { None });
        match sub {
            Some(sub) => {
                if map[&key].is_null() && sub["nullable"] != true {
                    map.remove(&key);
                    continue;
                }
                if let Some(v) = map.get_mut(&key) {
                    walk(sub, v, &child_path, out);
                }
            }
            None if preserve || *additional == Value::Bool(true) => {}
            None if embedded && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") => {}
            None => {
                out.unknown.push(child_path);
                map.remove(&key);
            }
        }
    }
    for req in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        if !map.contains_key(req) {
            out.causes.push(Cause {
                reason: "FieldValueRequired",
                field: format!("{path}.{req}"),
                detail: "Required value".into(),
            });
        }
    }
}

/// Fills in schema `default`s for missing properties, recursively, as the server does before
/// validation.
pub fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema["properties"].as_object() {
                for (k, sub) in props {
                    if !map.contains_key(k)
                        && let Some(d) = sub.get("default")
                    {
                        map.insert(k.clone(), d.clone());
                    }
                    if let Some(v) = map.get_mut(k) {
                        apply_defaults(sub, v);
                    }
                }
            } else if schema["additionalProperties"].is_object() {
                for v in map.values_mut() {
                    apply_defaults(&schema["additionalProperties"], v);
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for item in items {
                apply_defaults(&schema["items"], item);
            }
        }
        _ => {}
    }
}

fn compiled(pattern: &str) -> Option<Regex> {
    static CACHE: Mutex<Option<HashMap<String, Option<Regex>>>> = Mutex::new(None);
    let mut guard = CACHE.lock().ok()?;
    let cache = guard.get_or_insert_with(HashMap::new);
    cache.entry(pattern.to_string()).or_insert_with(|| Regex::new(pattern).ok()).clone()
}
