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

/// A Lease's times are `metav1.MicroTime`, decoded with exactly the layout RFC3339Micro
/// (`2006-01-02T15:04:05.000000Z07:00`, apimachinery `pkg/apis/meta/v1/micro_time.go`;
/// Go's `time.Parse` wants exactly as many fractional digits as the layout has): anything
/// else fails to decode, a 400 before validation.
pub(super) fn decode_lease(obj: &Value) -> Result<(), String> {
    #[allow(clippy::expect_used, reason = "a constant pattern")]
    static MICRO: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$").expect("valid")
    });
    for field in ["acquireTime", "renewTime"] {
        match &obj["spec"][field] {
            Value::Null => {}
            Value::String(t) if MICRO.is_match(t) => {}
            other => {
                return Err(format!(
                    "Lease in version \"v1\" cannot be handled as a Lease: parsing time {other} as \"2006-01-02T15:04:05.000000Z07:00\": cannot parse"
                ));
            }
        }
    }
    Ok(())
}

/// What the API server's own validation refuses in the built-in kinds archshift writes:
/// a Secret's data over 1 MiB in total (`ValidateSecret`, kubernetes
/// `pkg/apis/core/validation/validation.go`, `MaxSecretSize`); a Lease's duration that is
/// not positive, or negative transitions (`ValidateLeaseSpec`,
/// `pkg/apis/coordination/validation/validation.go`).
pub(super) fn validate_builtin(kind: &str, obj: &Value) -> Vec<schema::Cause> {
    let mut causes = Vec::new();
    match kind {
        "Secret" => {
            const MAX_SECRET_SIZE: usize = 1024 * 1024;
            let engine = base64::engine::general_purpose::STANDARD;
            let total: usize = obj["data"]
                .as_object()
                .map(|d| {
                    d.iter()
                        .map(|(k, v)| k.len() + engine.decode(v.as_str().unwrap_or("")).map_or(0, |b| b.len()))
                        .sum()
                })
                .unwrap_or(0);
            if total > MAX_SECRET_SIZE {
                causes.push(schema::Cause {
                    reason: "FieldValueTooLong",
                    field: "data".into(),
                    detail: format!("Too long: may not be more than {MAX_SECRET_SIZE} bytes"),
                });
            }
        }
        "Lease" => {
            let spec = &obj["spec"];
            if let Some(d) = spec["leaseDurationSeconds"].as_i64()
                && d <= 0
            {
                causes.push(schema::Cause {
                    reason: "FieldValueInvalid",
                    field: "spec.leaseDurationSeconds".into(),
                    detail: format!("Invalid value: {d}: must be greater than 0"),
                });
            }
            if let Some(t) = spec["leaseTransitions"].as_i64()
                && t < 0
            {
                causes.push(schema::Cause {
                    reason: "FieldValueInvalid",
                    field: "spec.leaseTransitions".into(),
                    detail: format!("Invalid value: {t}: must be greater than or equal to 0"),
                });
            }
        }
        _ => {}
    }
    causes
}
