//! Watches: `GET …?watch=true` is a reply whose body streams `WatchEvent`s (one JSON object a
//! line) from a resourceVersion, starting with the current objects when none is given (or,
//! for `sendInitialEvents`, with them and a bookmark), until `timeoutSeconds`; a
//! resourceVersion older than the kept history gets an ERROR event carrying a 410 Expired
//! Status, as from a real API server after compaction.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::Shared;
use super::exchange::{Body, Reply, Request};

/// Starts a watch: its reply, whose body the spawned task feeds.
pub fn start(shared: &Arc<Shared>, req: &Request) -> Reply {
    let (spec, initial, start, mut changes) = {
        let world = shared.world();
        let spec = match world.kube.watch_spec(req) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let (initial, start) = match req.query.get("resourceVersion").map(String::as_str) {
            None | Some("") | Some("0") => world.kube.current(&spec),
            // A streaming list starts with the current objects, whatever the version asked.
            Some(_) if spec.send_initial_events => world.kube.current(&spec),
            Some(rv) => match rv.parse::<u64>() {
                Ok(n) => (vec![], n),
                Err(_) => return super::k8s::status::bad_request(&format!("invalid resource version {rv:?}")),
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
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let shared = shared.clone();
    tokio::spawn(async move {
        for line in initial {
            if tx.send((line + "\n").into_bytes()).await.is_err() {
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
                        if tx.send((line + "\n").into_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
                Err(oldest) => {
                    let status = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": format!("too old resource version: {last} ({oldest})"), "reason": "Expired", "code": 410}});
                    let _ = tx.send((status.to_string() + "\n").into_bytes()).await;
                    return;
                }
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    });
    Reply { code: 200, body: Body::Stream(rx), headers: vec![] }
}
