//! The HTTP side of both servers: one hyper service per listener. Each request goes through
//! one pipeline, in order: latency, fault, authentication, dispatch to the simulator (a watch
//! is a reply whose body streams), and one line in the request log.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Channel, Either, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use super::Shared;
use super::exchange::{Body, Reply, Request};
use super::faults::{Kind, Server};

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

type HttpBody = Either<Full<Bytes>, Channel<Bytes>>;

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for Dropped {}

async fn handle(
    req: hyper::Request<Incoming>,
    server: Server,
    shared: Arc<Shared>,
) -> Result<Response<HttpBody>, Dropped> {
    let method = req.method().as_str().to_string();
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = req.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    let request = Request::new(&method, &path_and_query, headers, body);
    // A real server finishes a request whose client gave up (a timeout): the work runs on its
    // own task, so dropping the connection does not cancel it half-way.
    let answered = tokio::spawn(async move { pipeline(&shared, server, &request).await }).await;
    match answered {
        Ok(Some(reply)) => Ok(to_response(reply)),
        Ok(None) | Err(_) => Err(Dropped),
    }
}

/// latency -> fault -> auth -> dispatch -> log, once for every request; `None`: the
/// connection is dropped unanswered (a `drop` fault).
async fn pipeline(shared: &Arc<Shared>, server: Server, req: &Request) -> Option<Reply> {
    use std::sync::atomic::Ordering;
    /// Counts the request out however the pipeline ends (a dropped connection included).
    struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);
    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let counter = &shared.in_flight[server.index()];
    let in_flight = counter.fetch_add(1, Ordering::Relaxed) + 1;
    let _guard = InFlight(counter);
    shared.peak[server.index()].fetch_max(in_flight, Ordering::Relaxed);
    if !shared.latency.is_zero() {
        tokio::time::sleep(shared.latency).await;
    }
    let fault = {
        let mut faults = shared.faults.lock().unwrap_or_else(|e| e.into_inner());
        faults.iter_mut().find_map(|f| f.strikes(server, &req.method, &req.path).then(|| f.kind.clone()))
    };
    let fault_name = fault.as_ref().map(|k| match k {
        Kind::Status(_) => "status",
        Kind::Drop => "drop",
        Kind::Slow(_) => "slow",
        Kind::Late(_) => "late",
        Kind::Conflict => "conflict",
        Kind::Stuck => "stuck",
    });
    let early = match fault {
        Some(Kind::Drop) => {
            shared.log(server, &req.method, &req.path, 0, fault_name, in_flight);
            return None;
        }
        Some(Kind::Status(code)) => Some(fault_reply(server, code)),
        Some(Kind::Slow(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            None
        }
        Some(Kind::Conflict) => {
            shared.concurrent_write(server, req);
            None
        }
        // `strikes` never picks a stuck fault: the controllers read those.
        Some(Kind::Stuck | Kind::Late(_)) | None => None,
    };
    let reply = match early {
        Some(r) => r,
        None if !shared.authorized(server, req) => unauthorized(server),
        None => shared.dispatch(server, req),
    };
    shared.log(server, &req.method, &req.path, reply.code, fault_name, in_flight);
    if let Some(Kind::Late(ms)) = fault {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Some(reply)
}

fn unauthorized(server: Server) -> Reply {
    match server {
        Server::K8s => super::k8s::status::unauthorized(),
        Server::GitLab => Reply::json(401, json!({"message": "401 Unauthorized"})),
    }
}

fn fault_reply(server: Server, code: u16) -> Reply {
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
            Reply::json(code, body)
        }
        Server::GitLab => match code {
            429 => Reply { code, body: Body::Raw(b"Retry later\n".to_vec(), "text/plain"), headers: vec![] },
            _ => Reply::json(code, json!({"message": format!("{code} {reason}")})),
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

fn to_response(a: Reply) -> Response<HttpBody> {
    let mut builder = Response::builder().status(a.code);
    let own_type = a.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    let content_type = match &a.body {
        Body::Json(_) | Body::Stream(_) => Some("application/json"),
        Body::Raw(_, ct) => Some(*ct),
        Body::Empty => None,
    };
    if let Some(ct) = content_type.filter(|_| !own_type) {
        builder = builder.header("Content-Type", ct);
    }
    for (k, v) in a.headers {
        builder = builder.header(k, v);
    }
    let body = match a.body {
        Body::Json(v) => Either::Left(Full::new(Bytes::from(serde_json::to_vec(&v).unwrap_or_default()))),
        Body::Raw(b, _) => Either::Left(Full::new(Bytes::from(b))),
        Body::Empty => Either::Left(Full::new(Bytes::new())),
        Body::Stream(mut chunks) => {
            let (mut tx, body) = Channel::<Bytes>::new(64);
            tokio::spawn(async move {
                while let Some(chunk) = chunks.recv().await {
                    if tx.send_data(Bytes::from(chunk)).await.is_err() {
                        return;
                    }
                }
            });
            Either::Right(body)
        }
    };
    builder.body(body).unwrap_or_else(|_| Response::new(Either::Left(Full::new(Bytes::new()))))
}

/// Appends one line to the request log.
pub fn log_line(
    file: &mut std::fs::File,
    server: Server,
    method: &str,
    path: &str,
    status: u16,
    fault: Option<&str>,
    in_flight: usize,
) {
    // `in_flight`: requests this server was answering when this one arrived (itself included).
    let mut line =
        json!({"server": server.to_string(), "method": method, "path": path, "status": status, "in_flight": in_flight});
    if let Some(f) = fault {
        line["fault"] = json!(f);
    }
    // One write per line: `writeln!` on a File writes each formatted piece separately, and a
    // reader of the log (a test, `tail -f`) could see half a line.
    let _ = file.write_all(format!("{line}\n").as_bytes());
}

pub async fn bind() -> std::io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(("127.0.0.1", 0)).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}
