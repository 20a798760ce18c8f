//! `Status` error bodies exactly as the API server shapes them.

use serde_json::{Value, json};

pub use crate::sandbox::exchange::Reply;

use super::resources::Resource;
use super::schema::Cause;

pub fn failure(code: u16, reason: &str, message: &str, details: Option<Value>) -> Reply {
    let mut body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                          "message": message, "reason": reason, "code": code});
    if let Some(d) = details {
        body["details"] = d;
    }
    Reply::ok(code, body)
}

fn details(res: &Resource, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": res.plural});
    if !res.group.is_empty() {
        d["group"] = json!(res.group);
    }
    d
}

pub fn not_found(res: &Resource, name: &str) -> Reply {
    failure(404, "NotFound", &format!("{} {name:?} not found", res.qualified()), Some(details(res, name)))
}

pub fn namespace_not_found(ns: &str) -> Reply {
    failure(404, "NotFound", &format!("namespaces {ns:?} not found"), Some(json!({"name": ns, "kind": "namespaces"})))
}

pub fn already_exists(res: &Resource, name: &str) -> Reply {
    failure(409, "AlreadyExists", &format!("{} {name:?} already exists", res.qualified()), Some(details(res, name)))
}

pub fn conflict(res: &Resource, name: &str) -> Reply {
    failure(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
            res.qualified()
        ),
        Some(details(res, name)),
    )
}

pub fn invalid(res: &Resource, name: &str, causes: &[Cause]) -> Reply {
    let messages: Vec<String> = causes.iter().map(Cause::message).collect();
    let joined = if messages.len() == 1 { messages[0].clone() } else { format!("[{}]", messages.join(", ")) };
    let mut d = json!({"name": name, "kind": res.kind,
                       "causes": causes.iter().map(|c| json!({"reason": c.reason, "message": c.detail, "field": c.field})).collect::<Vec<_>>()});
    if !res.group.is_empty() {
        d["group"] = json!(res.group);
    }
    failure(422, "Invalid", &format!("{} {name:?} is invalid: {joined}", res.qualified_kind()), Some(d))
}

/// A bad request option, e.g. apply without fieldManager.
pub fn invalid_options(kind: &str, field: &str, detail: &str, reason: &str) -> Reply {
    failure(
        422,
        "Invalid",
        &format!("{kind}.meta.k8s.io \"\" is invalid: {field}: {detail}"),
        Some(
            json!({"group": "meta.k8s.io", "kind": kind, "causes": [{"reason": reason, "message": detail, "field": field}]}),
        ),
    )
}

pub fn bad_request(message: &str) -> Reply {
    failure(400, "BadRequest", message, None)
}

pub fn unsupported_patch(custom: bool) -> Reply {
    let types = if custom {
        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    } else {
        "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml"
    };
    failure(
        415,
        "UnsupportedMediaType",
        &format!("the body of the request was in an unknown format - accepted media types include: {types}"),
        None,
    )
}

pub fn method_not_allowed() -> Reply {
    failure(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", None)
}

pub fn unauthorized() -> Reply {
    failure(401, "Unauthorized", "Unauthorized", None)
}

pub fn path_not_found(path: &str) -> Reply {
    failure(404, "NotFound", &format!("the server could not find the requested resource (get {path})"), Some(json!({})))
}

/// A storage precondition (uid, resourceVersion) that no longer holds: the registry turns
/// the storage layer's invalid-object error into a Conflict.
pub fn precondition_failed(res: &Resource, name: &str, detail: &str) -> Reply {
    failure(
        409,
        "Conflict",
        &format!("Operation cannot be fulfilled on {} {name:?}: {detail}", res.qualified()),
        Some(details(res, name)),
    )
}

/// An error the storage layer returns as a plain Go error: the handler answers 500 with no
/// reason (`StatusReasonUnknown` is the empty string, omitted).
pub fn internal_plain(message: &str) -> Reply {
    Reply::ok(
        500,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "code": 500}),
    )
}
