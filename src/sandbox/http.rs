//! The HTTP side of both servers: one hyper service per listener, with latency, faults,
//! authentication and the request log in front of the simulated APIs.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Channel, Either, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::Shared;
use super::faults::{Kind, Server};

/// What a simulated API answers.
pub struct Answer {
    pub code: u16,
    pub body: AnswerBody,
    pub headers: Vec<(String, String)>,
}

pub enum AnswerBody {
    Json(Value),
    Raw(Vec<u8>, &'static str),
    Empty,
}

impl Answer {
    pub fn json(code: u16, v: Value) -> Answer {
        Answer { code, body: AnswerBody::Json(v), headers: vec![] }
    }
}

/// A request as the simulated APIs see it.
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub raw_query: String,
    pub query: HashMap<String, String>,
    /// Repeated keys (`scope[]=a&scope[]=b`).
    pub query_all: Vec<(String, String)>,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

pub async fn serve(listener: TcpListener, server: Server, shared: Arc<Shared>, tls: Option<tokio_rustls::TlsAcceptor>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, server, shared.clone()));
            let builder = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                }
            }
        });
    }
}

type Body = Either<Full<Bytes>, Channel<Bytes>>;

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for Dropped {}

async fn handle(req: Request<Incoming>, server: Server, shared: Arc<Shared>) -> Result<Response<Body>, Dropped> {
    let method = req.method().as_str().to_string();
    // Kept encoded: GitLab paths carry `%2F` inside one segment.
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = req.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    let query_all: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(&k.replace('+', " ")), percent_decode(&v.replace('+', " ")))
        })
        .collect();
    let query: HashMap<String, String> = query_all.iter().cloned().collect();
    let incoming =
        HttpRequest { method: method.clone(), path: req_path(&path), raw_query, query, query_all, headers, body };

    if !shared.latency.is_zero() {
        tokio::time::sleep(shared.latency).await;
    }
    let fault = {
        let mut faults = shared.faults.lock().unwrap_or_else(|e| e.into_inner());
        faults.iter_mut().find_map(|f| f.strikes(server, &method, &incoming.path).then(|| f.kind.clone()))
    };
    let answer = match fault {
        Some(Kind::Drop) => {
            shared.log(server, &method, &incoming.path, 0, Some("drop"));
            return Err(Dropped);
        }
        Some(Kind::Status(code)) => Some(fault_answer(server, code)),
        Some(Kind::Slow(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            None
        }
        Some(Kind::Conflict) => {
            shared.concurrent_write(server, &incoming);
            None
        }
        // `strikes` never picks a stuck fault: the controllers read those.
        Some(Kind::Stuck) | None => None,
    };
    let fault_name = fault.as_ref().map(|k| match k {
        Kind::Status(_) => "status",
        Kind::Drop => "drop",
        Kind::Slow(_) => "slow",
        Kind::Conflict => "conflict",
        Kind::Stuck => "stuck",
    });
    let is_watch = server == Server::K8s
        && incoming.method == "GET"
        && matches!(incoming.query.get("watch").map(String::as_str), Some("true" | "1"));
    if answer.is_none() && is_watch {
        match super::watch::start(&shared, &incoming) {
            Ok(body) => {
                shared.log(server, &method, &incoming.path, 200, fault_name);
                let response = Response::builder()
                    .status(200)
                    .header("Content-Type", "application/json")
                    .body(Either::Right(body));
                return Ok(response.unwrap_or_else(|_| Response::new(Either::Left(Full::new(Bytes::new())))));
            }
            Err(a) => {
                shared.log(server, &method, &incoming.path, a.code, fault_name);
                return Ok(to_response(a));
            }
        }
    }
    let answer = match answer {
        Some(a) => a,
        None => shared.dispatch(server, &incoming),
    };
    shared.log(server, &method, &incoming.path, answer.code, fault_name);
    Ok(to_response(answer))
}

fn req_path(p: &str) -> String {
    if p.is_empty() { "/".into() } else { p.to_string() }
}

fn fault_answer(server: Server, code: u16) -> Answer {
    let reason = StatusCode::from_u16(code).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
    let mut a = match server {
        Server::K8s => {
            let (r, msg) = match code {
                429 => ("TooManyRequests", "Too many requests, please try again later.".to_string()),
                503 => ("ServiceUnavailable", "the server is currently unable to handle the request".to_string()),
                500 => ("InternalError", "Internal error occurred: injected fault".to_string()),
                _ => ("InternalError", format!("{code} {reason}")),
            };
            let mut body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": msg, "reason": r, "code": code});
            if code == 429 {
                body["details"] = json!({"retryAfterSeconds": 1});
            }
            Answer::json(code, body)
        }
        Server::GitLab => match code {
            429 => Answer { code, body: AnswerBody::Raw(b"Retry later\n".to_vec(), "text/plain"), headers: vec![] },
            _ => Answer::json(code, json!({"message": format!("{code} {reason}")})),
        },
    };
    if code == 429 {
        a.headers.push(("Retry-After".into(), "1".into()));
        if server == Server::GitLab {
            let reset = chrono::Utc::now().timestamp() + 1;
            a.headers.extend([
                ("RateLimit-Name".into(), "throttle_authenticated_api".into()),
                ("RateLimit-Limit".into(), "60".into()),
                ("RateLimit-Observed".into(), "61".into()),
                ("RateLimit-Remaining".into(), "0".into()),
                ("RateLimit-Reset".into(), reset.to_string()),
            ]);
        }
    }
    a
}

fn to_response(a: Answer) -> Response<Body> {
    let (bytes, ct) = match a.body {
        AnswerBody::Json(v) => (serde_json::to_vec(&v).unwrap_or_default(), Some("application/json")),
        AnswerBody::Raw(b, ct) => (b, Some(ct)),
        AnswerBody::Empty => (Vec::new(), None),
    };
    let mut builder = Response::builder().status(a.code);
    let own_type = a.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    if let Some(ct) = ct.filter(|_| !own_type) {
        builder = builder.header("Content-Type", ct);
    }
    for (k, v) in a.headers {
        builder = builder.header(k, v);
    }
    builder
        .body(Either::Left(Full::new(Bytes::from(bytes))))
        .unwrap_or_else(|_| Response::new(Either::Left(Full::new(Bytes::new()))))
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Appends one line to the request log.
pub fn log_line(file: &mut std::fs::File, server: Server, method: &str, path: &str, status: u16, fault: Option<&str>) {
    let mut line = json!({"server": server.to_string(), "method": method, "path": path, "status": status});
    if let Some(f) = fault {
        line["fault"] = json!(f);
    }
    let _ = writeln!(file, "{line}");
}

pub async fn bind() -> std::io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(("127.0.0.1", 0)).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}
