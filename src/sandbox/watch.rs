//! Watches: `GET …?watch=true` streams `WatchEvent`s (one JSON object a line) from a
//! resourceVersion, starting with the current objects when none is given, until
//! `timeoutSeconds`; a resourceVersion older than the kept history gets an ERROR event
//! carrying a 410 Expired Status, as from a real API server after compaction.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Channel;
use hyper::body::Bytes;
use serde_json::json;

use super::faults::Server;
use super::http::{Answer, HttpRequest};
use super::{Shared, kube_answer, kube_request};

/// Starts a watch and returns the body that streams it.
pub fn start(shared: &Arc<Shared>, req: &HttpRequest) -> Result<Channel<Bytes>, Answer> {
    if !shared.authorized(Server::K8s, req) {
        return Err(kube_answer(super::k8s::status::unauthorized()));
    }
    let kreq = kube_request(req);
    let (spec, initial, start, mut changes) = {
        let world = shared.world();
        let spec = world.kube.watch_spec(&kreq).map_err(kube_answer)?;
        let (initial, start) = match req.query.get("resourceVersion").map(String::as_str) {
            None | Some("") | Some("0") => world.kube.current(&spec),
            // A streaming list starts with the current objects, whatever the version asked.
            Some(_) if spec.send_initial_events => world.kube.current(&spec),
            Some(rv) => match rv.parse::<u64>() {
                Ok(n) => (vec![], n),
                Err(_) => {
                    return Err(kube_answer(super::k8s::status::bad_request(&format!(
                        "invalid resource version {rv:?}"
                    ))));
                }
            },
        };
        let mut initial: Vec<String> =
            initial.iter().map(|o| world.kube.event_json(&spec, "ADDED", o).to_string()).collect();
        if spec.send_initial_events {
            initial.push(world.kube.initial_events_end(&spec, start).to_string());
        }
        (spec, initial, start, world.kube.changes.subscribe())
    };
    let timeout = req.query.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).unwrap_or(1800);
    let (mut tx, body) = Channel::<Bytes>::new(64);
    let shared = shared.clone();
    tokio::spawn(async move {
        for line in initial {
            if tx.send_data(Bytes::from(line + "\n")).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let mut last = start;
        loop {
            let batch = {
                let world = shared.world();
                world.kube.events_after(&spec, last).map(|events| {
                    events
                        .iter()
                        .map(|e| (e.rv, world.kube.event_json(&spec, e.kind, &e.object).to_string()))
                        .collect::<Vec<_>>()
                })
            };
            match batch {
                Ok(lines) => {
                    for (rv, line) in lines {
                        last = rv;
                        if tx.send_data(Bytes::from(line + "\n")).await.is_err() {
                            return;
                        }
                    }
                }
                Err(oldest) => {
                    let status = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": format!("too old resource version: {last} ({oldest})"), "reason": "Expired", "code": 410}});
                    let _ = tx.send_data(Bytes::from(status.to_string() + "\n")).await;
                    return;
                }
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    });
    Ok(body)
}
