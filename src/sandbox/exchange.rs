//! The one request and reply both simulators speak, whatever carries them: the HTTP layer
//! builds a `Request` from the wire and writes a `Reply` back; tests call the simulators with
//! them directly. A watch is a `Reply` whose body streams.

use std::collections::HashMap;

use percent_encoding::percent_decode_str;
use serde_json::Value;

/// A request as the simulated APIs see it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// As sent, still encoded: GitLab paths carry `%2F` inside one segment.
    pub path: String,
    /// Decoded query parameters; a repeated key keeps its last value.
    pub query: HashMap<String, String>,
    /// Every decoded query pair in order (`scope[]=a&scope[]=b`).
    pub query_all: Vec<(String, String)>,
    /// Header names lowercased.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    /// A request from its method, its path and query as sent (`/x?a=1`), headers and body.
    pub fn new(method: &str, path_and_query: &str, headers: HashMap<String, String>, body: Vec<u8>) -> Request {
        let (path, raw_query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        let query_all: Vec<(String, String)> = form_urlencoded::parse(raw_query.as_bytes()).into_owned().collect();
        Request {
            method: method.to_string(),
            path: if path.is_empty() { "/".into() } else { path.to_string() },
            query: query_all.iter().cloned().collect(),
            query_all,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(&name.to_ascii_lowercase()).map_or("", String::as_str)
    }

    pub fn accept(&self) -> &str {
        self.header("accept")
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type")
    }

    pub fn user_agent(&self) -> &str {
        self.header("user-agent")
    }
}

/// What a simulated API answers.
pub struct Reply {
    pub code: u16,
    pub body: Body,
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = match &self.body {
            Body::Json(v) => v.to_string(),
            Body::Raw(b, ct) => format!("{} bytes of {ct}", b.len()),
            Body::Empty => "empty".into(),
            Body::Stream(_) => "a stream".into(),
        };
        write!(f, "{} {body}", self.code)
    }
}

pub enum Body {
    Json(Value),
    Raw(Vec<u8>, &'static str),
    Empty,
    /// Chunks written as they come (a watch: one JSON event a line).
    Stream(tokio::sync::mpsc::Receiver<Vec<u8>>),
}

impl Reply {
    pub fn json(code: u16, v: Value) -> Reply {
        Reply { code, body: Body::Json(v), headers: vec![] }
    }

    /// The Kubernetes simulator's name for a JSON reply.
    pub fn ok(code: u16, v: Value) -> Reply {
        Reply::json(code, v)
    }

    pub fn empty(code: u16) -> Reply {
        Reply { code, body: Body::Empty, headers: vec![] }
    }
}

/// Decodes `%XX` escapes (a path segment, a key in a URL).
pub fn percent_decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}
