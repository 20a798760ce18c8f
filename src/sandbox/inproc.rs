//! The in-process test tier: the seeded world, called through the simulators' handlers with
//! no socket, TLS or token. Protocol rules (status codes, bodies, headers) are tested here;
//! `tests/sandbox_*.rs` keep what only a process and a real client can show (authentication,
//! faults, the request log, watches on the wire, kubectl, python-gitlab, kube-rs).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use super::World;
use super::exchange::{Body, Reply, Request};

pub(crate) const GITLAB_URL: &str = "http://127.0.0.1:1";

pub(crate) struct InProc {
    pub world: World,
}

/// A reply as a test reads it.
pub(crate) struct Answer {
    pub code: u16,
    pub json: Value,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub fn header(&self, name: &str) -> String {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).unwrap_or_default()
    }
}

fn answer(r: Reply) -> Answer {
    let json = match r.body {
        Body::Json(v) => v,
        Body::Raw(b, _) => serde_json::from_slice(&b).unwrap_or(Value::Null),
        Body::Empty | Body::Stream(_) => Value::Null,
    };
    Answer { code: r.code, json, headers: r.headers }
}

fn request(method: &str, path: &str, content_type: &str, body: &str) -> Request {
    let mut headers = HashMap::new();
    headers.insert("accept".to_string(), "application/json".to_string());
    if !content_type.is_empty() {
        headers.insert("content-type".to_string(), content_type.to_string());
    }
    Request::new(method, path, headers, body.as_bytes().to_vec())
}

impl InProc {
    pub fn new(fleet: usize) -> InProc {
        InProc { world: World::seeded(GITLAB_URL, fleet, None, Duration::from_millis(200)) }
    }

    /// A Kubernetes request; `content_type` may be empty for reads.
    pub fn k8s(&mut self, method: &str, path: &str, content_type: &str, body: &str) -> Answer {
        answer(self.world.kube.handle(&request(method, path, content_type, body)))
    }

    /// A Kubernetes request with a JSON body.
    pub fn k8s_json(&mut self, method: &str, path: &str, body: &Value) -> Answer {
        self.k8s(method, path, "application/json", &body.to_string())
    }

    /// A GitLab request under `/api/v4`; `body` is sent as JSON unless it is null.
    pub fn gl(&mut self, method: &str, path: &str, body: &Value) -> Answer {
        let (ct, text) = if body.is_null() { ("", String::new()) } else { ("application/json", body.to_string()) };
        answer(self.world.gitlab.handle(&request(method, &format!("/api/v4{path}"), ct, &text)))
    }
}
