//! The rules every stored object follows, whoever writes it: metadata validation (names,
//! label keys and values, annotation keys), Secret data, the deletion mark clients cannot
//! change, and what counts as no change at all.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Clients cannot set or clear a deletion mark: it stays as the server set it.
pub(super) fn keep_deletion_state(old: Option<&Value>, obj: &mut Value) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    for k in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
        match old.and_then(|o| o["metadata"].get(k)) {
            Some(v) => {
                meta.insert(k.into(), v.clone());
            }
            None => {
                meta.remove(k);
            }
        }
    }
}

/// Whether a written object equals the stored one but for its resourceVersion and the
/// timestamps of managedFields entries (the server's no-op check ignores those).
pub(super) fn unchanged(old: &Value, new: &Value) -> bool {
    let normal = |v: &Value| {
        let mut v = v.clone();
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
            if let Some(mf) = meta.get_mut("managedFields").and_then(Value::as_array_mut) {
                for e in mf.iter_mut().filter_map(Value::as_object_mut) {
                    e.remove("time");
                }
            }
        }
        v
    };
    normal(old) == normal(new)
}

pub(super) fn check_type(res: &Resource, obj: &Value) -> Result<(), Reply> {
    let kind = obj["kind"].as_str().unwrap_or("");
    let api_version = obj["apiVersion"].as_str().unwrap_or("");
    if kind.is_empty() {
        return Err(status::bad_request("Object 'Kind' is missing in request body"));
    }
    if kind != res.kind || api_version != res.api_version() {
        return Err(status::bad_request(&format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            res.api_version()
        )));
    }
    Ok(())
}

pub(super) fn strip_server_fields(obj: &mut Value) {
    if let Some(m) = obj["metadata"].as_object_mut() {
        for k in ["uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink"] {
            m.remove(k);
        }
    }
}

pub(super) fn validate_metadata(obj: &Value) -> Result<(), Vec<schema::Cause>> {
    let mut causes = Vec::new();
    let invalid = |field: &str, value: &str, detail: &str| schema::Cause {
        reason: "FieldValueInvalid",
        field: field.into(),
        detail: format!("Invalid value: {value:?}: {detail}"),
    };
    if let Some(labels) = obj["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            causes.extend(qualified_name_errors(k).iter().map(|e| invalid("metadata.labels", k, e)));
            let v = v.as_str().unwrap_or("");
            causes.extend(label_value_errors(v).iter().map(|e| invalid("metadata.labels", v, e)));
        }
    }
    if let Some(annotations) = obj["metadata"]["annotations"].as_object() {
        for k in annotations.keys() {
            causes.extend(
                qualified_name_errors(&k.to_ascii_lowercase()).iter().map(|e| invalid("metadata.annotations", k, e)),
            );
        }
    }
    if !causes.is_empty() {
        return Err(causes);
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        return Ok(());
    }
    Err(vec![schema::Cause {
        reason: "FieldValueInvalid",
        field: "metadata.name".into(),
        detail: format!(
            "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        ),
    }])
}

/// Secrets store `data` base64-encoded; `stringData` is folded into it on write.
pub(super) fn normalize_secret(obj: &mut Value) -> Result<(), String> {
    let engine = base64::engine::general_purpose::STANDARD;
    if let Some(data) = obj["data"].as_object() {
        for (k, v) in data {
            let s = v.as_str().unwrap_or("");
            engine.decode(s).map_err(|e| {
                format!("Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data in data.{k}: {e}")
            })?;
        }
    }
    if let Some(string_data) = obj.get("stringData").and_then(Value::as_object).cloned() {
        if !obj["data"].is_object() {
            obj["data"] = json!({});
        }
        for (k, v) in string_data {
            obj["data"][k] = json!(engine.encode(v.as_str().unwrap_or("").as_bytes()));
        }
        if let Some(m) = obj.as_object_mut() {
            m.remove("stringData");
        }
    }
    if obj["type"].is_null() {
        obj["type"] = json!("Opaque");
    }
    Ok(())
}
