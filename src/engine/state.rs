//! A migration's state, kept in the cluster: its journal in Secrets and the run holding it
//! in a Lease, both in the runners' namespace, so that any machine and any directory given
//! any saved plan or plan file of the migration reads the same history, and two runs on
//! two machines cannot write at once.
//!
//! The journal is stored as Helm stores release state: compressed (gzip), base64 in a
//! Secret's `data`. One Secret holds at most 1 MiB of data (`MaxSecretSize`, checked by
//! `ValidateSecret` in kubernetes `pkg/apis/core/validation/validation.go`), so the journal
//! is split across numbered Secrets, each holding a contiguous run of its bytes, the start
//! of which it names (`archshift.io/offset`), so a lost or reordered piece is corruption,
//! never a silently shorter history. Each append adds one gzip member to the last Secret
//! (a multi-member gzip stream, RFC 1952 section 2.2), guarded by its resourceVersion, so an
//! append compresses only the new record.
//!
//! The Lease follows client-go's leader election (`tools/leaderelection/resourcelock`):
//! `holderIdentity`, `leaseDurationSeconds`, `acquireTime`, `renewTime`,
//! `leaseTransitions`, every write guarded by the resourceVersion it read; renewed while the
//! run lasts, taken over only once expired, released on the way out by clearing the holder.

use std::io::{Read as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest as _;

use super::ports::{FailKind, PortError, StateKind, StateObjects};

/// Compressed bytes per Secret at most: well under the 1 MiB a Secret may hold, and under
/// etcd's 1.5 MiB request limit once base64 and metadata are added.
pub const CHUNK_BYTES: usize = 512 * 1024;
/// Raw bytes of one record piece: what does not fit in the last Secret is split into pieces
/// this large at most, each compressing to less than [`CHUNK_BYTES`] even when incompressible.
const PIECE_BYTES: usize = 448 * 1024;
/// Raw bytes one Secret may expand to when read: a guard against a compression bomb.
const MAX_RAW_PER_CHUNK: u64 = 256 * 1024 * 1024;

const DATA_KEY: &str = "journal.jsonl.gz";
const SECRET_TYPE: &str = "archshift.io/journal.v1";
const LABEL_HISTORY: &str = "archshift.io/history";
const ANNOTATION_MIGRATION: &str = "archshift.io/migration";
const ANNOTATION_GITLAB: &str = "archshift.io/gitlab-url";
const ANNOTATION_OFFSET: &str = "archshift.io/offset";

/// How long a Lease holds without renewal, and how often it is renewed.
pub const LEASE_SECONDS: i64 = 30;
const RENEW_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("cannot use the migration history {at}: {cause}")]
    Api { at: String, cause: String },
    #[error("the migration history {at} is damaged: {cause}; nothing was written")]
    Corrupt { at: String, cause: String },
    /// Another run holds the migration's Lease; the message names it.
    #[error("{0}")]
    Held(String),
    #[error("this run no longer holds Lease {namespace}/{lease}: {why}; it stops before its next write")]
    Lost { namespace: String, lease: String, why: String },
}

/// Which migration's state: its name, its cluster (where the objects are) and its GitLab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRef {
    pub namespace: String,
    pub migration: String,
    pub gitlab_url: String,
    /// Hash of name and GitLab URL: the label value the history's Secrets carry.
    key: String,
    /// Object name prefix.
    base: String,
}

impl HistoryRef {
    pub fn new(namespace: &str, migration: &str, gitlab_url: &str) -> HistoryRef {
        let url = gitlab_url.trim_end_matches('/');
        let digest = sha2::Sha256::digest(format!("{migration}\n{url}").as_bytes());
        let key: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        // A name is a DNS subdomain (253 at most); leave room for the suffixes.
        let short: String = migration.chars().take(200).collect();
        let base = format!("archshift-{}-{}", short.trim_end_matches(['-', '.']), &key[..8]);
        HistoryRef { namespace: namespace.into(), migration: migration.into(), gitlab_url: url.into(), key, base }
    }

    fn chunk_name(&self, index: usize) -> String {
        format!("{}-journal-{index:04}", self.base)
    }

    pub fn lease_name(&self) -> String {
        self.base.clone()
    }

    fn selector(&self) -> String {
        format!("{LABEL_HISTORY}={}", self.key)
    }

    /// How messages name it.
    pub fn describe(&self) -> String {
        format!(
            "Secrets {}/{}-journal-* (migration {}, GitLab {})",
            self.namespace, self.base, self.migration, self.gitlab_url
        )
    }

    fn api(&self, e: &PortError) -> StateError {
        StateError::Api { at: self.describe(), cause: e.message.clone() }
    }

    fn corrupt(&self, cause: String) -> StateError {
        StateError::Corrupt { at: self.describe(), cause }
    }
}

/// One Secret of the journal: its name, the resourceVersion it was read or written at, and
/// its compressed and raw bytes.
#[derive(Debug, Clone)]
struct Chunk {
    name: String,
    resource_version: String,
    compressed: Vec<u8>,
    raw_len: usize,
}

/// The journal's bytes in the cluster.
pub struct ClusterStore {
    objects: Arc<dyn StateObjects>,
    at: HistoryRef,
    chunks: Vec<Chunk>,
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(MAX_RAW_PER_CHUNK + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("not gzip data: {e}"))?;
    if out.len() as u64 > MAX_RAW_PER_CHUNK {
        return Err(format!("expands to more than {MAX_RAW_PER_CHUNK} bytes"));
    }
    Ok(out)
}

impl ClusterStore {
    /// Reads every Secret of the history: its bytes in order, and the store to append to.
    pub async fn load(objects: Arc<dyn StateObjects>, at: HistoryRef) -> Result<(ClusterStore, Vec<u8>), StateError> {
        let listed = objects.list(StateKind::Secret, &at.namespace, &at.selector()).await.map_err(|e| at.api(&e))?;
        let mut found: Vec<(usize, &Value)> = Vec::new();
        for obj in &listed {
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            let annotations = &obj["metadata"]["annotations"];
            if annotations[ANNOTATION_MIGRATION] != at.migration.as_str()
                || annotations[ANNOTATION_GITLAB] != at.gitlab_url.as_str()
            {
                return Err(at.corrupt(format!("Secret {name} carries this history's label but another migration's")));
            }
            let index = name
                .strip_prefix(&format!("{}-journal-", at.base))
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|i| at.chunk_name(*i) == name)
                .ok_or_else(|| at.corrupt(format!("Secret {name} is not named as a piece of it")))?;
            found.push((index, obj));
        }
        found.sort_by_key(|(i, _)| *i);
        let mut chunks = Vec::new();
        let mut bytes = Vec::new();
        for (expected, (index, obj)) in found.into_iter().enumerate() {
            if index != expected {
                return Err(at.corrupt(format!("piece {} is missing", at.chunk_name(expected))));
            }
            let name = at.chunk_name(index);
            let offset: Option<usize> =
                obj["metadata"]["annotations"][ANNOTATION_OFFSET].as_str().and_then(|o| o.parse().ok());
            if offset != Some(bytes.len()) {
                return Err(at.corrupt(format!(
                    "{name} starts at byte {}, but the pieces before it end at {}",
                    offset.map_or("?".into(), |o| o.to_string()),
                    bytes.len()
                )));
            }
            let encoded = obj["data"][DATA_KEY].as_str().unwrap_or_default();
            let compressed = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| at.corrupt(format!("{name}: {e}")))?;
            let raw = if compressed.is_empty() {
                Vec::new()
            } else {
                gunzip(&compressed).map_err(|e| at.corrupt(format!("{name}: {e}")))?
            };
            chunks.push(Chunk {
                name,
                resource_version: obj["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string(),
                compressed,
                raw_len: raw.len(),
            });
            bytes.extend_from_slice(&raw);
        }
        Ok((ClusterStore { objects, at, chunks }, bytes))
    }

    pub fn at(&self) -> &HistoryRef {
        &self.at
    }

    fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.raw_len).sum()
    }

    fn body(&self, chunk: &Chunk, offset: usize) -> Value {
        let at = &self.at;
        let mut meta = json!({
            "name": chunk.name,
            "namespace": at.namespace,
            "labels": {LABEL_HISTORY: at.key, "app.kubernetes.io/managed-by": "archshift"},
            "annotations": {
                ANNOTATION_MIGRATION: at.migration,
                ANNOTATION_GITLAB: at.gitlab_url,
                ANNOTATION_OFFSET: offset.to_string(),
            },
        });
        if !chunk.resource_version.is_empty() {
            meta["resourceVersion"] = json!(chunk.resource_version);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta,
            "type": SECRET_TYPE,
            "data": {DATA_KEY: base64::engine::general_purpose::STANDARD.encode(&chunk.compressed)},
        })
    }

    /// Writes `chunk` (index `i`): a replace guarded by its resourceVersion, or a create for
    /// a new one. A lost answer is read back: written when the Secret holds exactly it.
    async fn put(&mut self, i: usize, chunk: Chunk) -> Result<(), StateError> {
        let offset: usize = self.chunks[..i.min(self.chunks.len())].iter().map(|c| c.raw_len).sum();
        let body = self.body(&chunk, offset);
        let result = if chunk.resource_version.is_empty() {
            self.objects.create(StateKind::Secret, &self.at.namespace, &body).await
        } else {
            self.objects.replace(StateKind::Secret, &self.at.namespace, &body).await
        };
        let written = match result {
            Ok(v) => v,
            Err(e) if e.kind == FailKind::Ambiguous => {
                let now = self.objects.get(StateKind::Secret, &self.at.namespace, &chunk.name).await;
                match now {
                    Ok(Some(v)) if v["data"][DATA_KEY] == body["data"][DATA_KEY] => v,
                    _ => return Err(self.at.api(&e)),
                }
            }
            Err(e) if e.kind == FailKind::Conflict => {
                return Err(self.at.corrupt(format!(
                    "{} was written by someone else since this run read it ({}); run again to read it afresh",
                    chunk.name, e.message
                )));
            }
            Err(e) => return Err(self.at.api(&e)),
        };
        let resource_version = written["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string();
        let chunk = Chunk { resource_version, ..chunk };
        if i < self.chunks.len() {
            self.chunks[i] = chunk;
        } else {
            self.chunks.push(chunk);
        }
        Ok(())
    }

    /// Appends `bytes` (whole records): onto the last Secret while it has room, then into new
    /// ones.
    pub async fn append(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let member = gzip(rest);
            if let Some(last) = self.chunks.last()
                && last.compressed.len() + member.len() <= CHUNK_BYTES
            {
                let i = self.chunks.len() - 1;
                let mut compressed = last.compressed.clone();
                compressed.extend_from_slice(&member);
                let chunk = Chunk { compressed, raw_len: last.raw_len + rest.len(), ..last.clone() };
                return self.put(i, chunk).await;
            }
            let n = rest.len().min(PIECE_BYTES);
            let piece = if n == rest.len() { member } else { gzip(&rest[..n]) };
            let i = self.chunks.len();
            let chunk =
                Chunk { name: self.at.chunk_name(i), resource_version: String::new(), compressed: piece, raw_len: n };
            self.put(i, chunk).await?;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Cuts the bytes after `keep` (a torn last record): the piece holding the cut is
    /// rewritten, the ones after it emptied.
    pub async fn truncate(&mut self, keep: usize, all: &[u8]) -> Result<(), StateError> {
        if keep >= self.len() {
            return Ok(());
        }
        let mut start = 0;
        for i in 0..self.chunks.len() {
            let end = start + self.chunks[i].raw_len;
            if end > keep {
                let kept = if start < keep { &all[start..keep] } else { &[][..] };
                let compressed = if kept.is_empty() { Vec::new() } else { gzip(kept) };
                let chunk = Chunk { compressed, raw_len: kept.len(), ..self.chunks[i].clone() };
                self.put(i, chunk).await?;
            }
            start = end;
        }
        Ok(())
    }
}

/// Who holds a Lease: `host/pid/nonce`, so that a holder on this host whose process is gone
/// (kill -9, a crash) is known to be gone without waiting for the Lease to expire.
fn holder_identity() -> String {
    let host = hostname::get().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "unknown-host".into());
    format!("{host}/{}/{:08x}", std::process::id(), fastrand::u32(..))
}

fn describe_holder(holder: &str) -> String {
    let mut parts = holder.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(host), Some(pid), Some(_)) => format!("archshift process {pid} on {host}"),
        _ => format!("{holder:?}"),
    }
}

/// A holder on this host whose process no longer runs. Elsewhere (or where processes cannot
/// be seen) the holder counts as alive until its Lease expires.
fn holder_gone(holder: &str) -> bool {
    let mut parts = holder.splitn(3, '/');
    let (Some(host), Some(pid)) = (parts.next(), parts.next().and_then(|p| p.parse::<u32>().ok())) else {
        return false;
    };
    let here = hostname::get().ok().and_then(|h| h.into_string().ok());
    if here.as_deref() != Some(host) || pid == std::process::id() {
        return false;
    }
    cfg!(target_os = "linux") && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn micro_time(t: chrono::DateTime<chrono::Utc>) -> String {
    // metav1.MicroTime's wire format, RFC3339Micro (apimachinery pkg/apis/meta/v1/micro_time.go).
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

struct Held {
    lease: Value,
    renewed: Instant,
    lost: Option<String>,
}

/// A Lease this run holds, renewed on its own task until released or dropped.
pub struct Lease {
    objects: Arc<dyn StateObjects>,
    namespace: String,
    name: String,
    holder: String,
    held: Arc<Mutex<Held>>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Takes the migration's Lease: made when there is none, taken when free, expired or
    /// left by a process of this host that is gone; refused while another run holds it.
    pub async fn take(objects: Arc<dyn StateObjects>, at: &HistoryRef) -> Result<Lease, StateError> {
        let name = at.lease_name();
        let ns = at.namespace.clone();
        let holder = holder_identity();
        let api = |e: &PortError| StateError::Api {
            at: format!("Lease {ns}/{name}"),
            cause: format!("{} ({} needs get, create and update on it)", e.message, StateKind::Lease.resource()),
        };
        let now = chrono::Utc::now();
        let spec = |transitions: i64| {
            json!({
                "holderIdentity": holder,
                "leaseDurationSeconds": LEASE_SECONDS,
                "acquireTime": micro_time(now),
                "renewTime": micro_time(now),
                "leaseTransitions": transitions,
            })
        };
        let lease = match objects.get(StateKind::Lease, &ns, &name).await.map_err(|e| api(&e))? {
            None => {
                let body = json!({
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": name,
                        "namespace": ns,
                        "labels": {LABEL_HISTORY: at.key, "app.kubernetes.io/managed-by": "archshift"},
                        "annotations": {ANNOTATION_MIGRATION: at.migration, ANNOTATION_GITLAB: at.gitlab_url},
                    },
                    "spec": spec(0),
                });
                match objects.create(StateKind::Lease, &ns, &body).await {
                    Ok(v) => v,
                    // Another run made it between the read and the create.
                    Err(e) if e.kind == FailKind::Conflict => {
                        let v = objects.get(StateKind::Lease, &ns, &name).await.map_err(|e| api(&e))?;
                        return Err(held_by(at, &name, v.as_ref().unwrap_or(&Value::Null)));
                    }
                    Err(e) => return Err(api(&e)),
                }
            }
            Some(current) => {
                let s = &current["spec"];
                let other = s["holderIdentity"].as_str().unwrap_or_default();
                let renewed = s["renewTime"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&chrono::Utc));
                let duration = s["leaseDurationSeconds"].as_i64().unwrap_or(LEASE_SECONDS);
                let expired = renewed.is_none_or(|r| r + chrono::Duration::seconds(duration) < now);
                if !(other.is_empty() || expired || holder_gone(other)) {
                    return Err(held_by(at, &name, &current));
                }
                let transitions = s["leaseTransitions"].as_i64().unwrap_or(0) + i64::from(!other.is_empty());
                let mut body = current.clone();
                body["spec"] = spec(transitions);
                match objects.replace(StateKind::Lease, &ns, &body).await {
                    Ok(v) => v,
                    Err(e) if e.kind == FailKind::Conflict => {
                        let v = objects.get(StateKind::Lease, &ns, &name).await.map_err(|e| api(&e))?;
                        return Err(held_by(at, &name, v.as_ref().unwrap_or(&Value::Null)));
                    }
                    Err(e) => return Err(api(&e)),
                }
            }
        };
        let held = Arc::new(Mutex::new(Held { lease, renewed: Instant::now(), lost: None }));
        let renewer = tokio::spawn(renew(objects.clone(), ns.clone(), holder.clone(), held.clone()));
        Ok(Lease { objects, namespace: ns, name, holder, held, renewer })
    }

    /// Ok while this run holds the Lease: renewed within its duration, not taken over.
    pub fn check(&self) -> Result<(), StateError> {
        let held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let lost = |why: String| StateError::Lost { namespace: self.namespace.clone(), lease: self.name.clone(), why };
        if let Some(why) = &held.lost {
            return Err(lost(why.clone()));
        }
        // A margin for the clocks: stop before others may think it expired.
        if held.renewed.elapsed() > Duration::from_secs((LEASE_SECONDS - 5) as u64) {
            return Err(lost(format!("not renewed for {} s", held.renewed.elapsed().as_secs())));
        }
        Ok(())
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Gives the Lease up (holder cleared, as client-go's `ReleaseOnCancel` does), so the
    /// next run need not wait for it to expire. Best effort: it expires anyway.
    pub async fn release(self) {
        self.renewer.abort();
        let mut body = {
            let held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if held.lost.is_some() {
                return;
            }
            held.lease.clone()
        };
        let now = micro_time(chrono::Utc::now());
        if let Some(spec) = body["spec"].as_object_mut() {
            spec.remove("holderIdentity");
            spec.insert("leaseDurationSeconds".into(), json!(1));
            spec.insert("renewTime".into(), json!(now));
        }
        let _ = self.objects.replace(StateKind::Lease, &self.namespace, &body).await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

fn held_by(at: &HistoryRef, name: &str, lease: &Value) -> StateError {
    let s = &lease["spec"];
    let renewed = s["renewTime"].as_str().unwrap_or("never").to_string();
    let duration = s["leaseDurationSeconds"].as_i64().unwrap_or(LEASE_SECONDS);
    let free_in = chrono::DateTime::parse_from_rfc3339(&renewed)
        .map(|r| {
            (r.with_timezone(&chrono::Utc) + chrono::Duration::seconds(duration) - chrono::Utc::now()).num_seconds()
        })
        .unwrap_or(duration)
        .max(0);
    StateError::Held(format!(
        "migration {} is being run by {} (Lease {}/{name}, renewed {renewed}, free in {free_in} s unless renewed); nothing was written. Let it finish, or stop it: the Lease frees itself {LEASE_SECONDS} s after its holder stops",
        at.migration,
        describe_holder(s["holderIdentity"].as_str().unwrap_or("another run")),
        at.namespace,
    ))
}

/// Renews the Lease every [`RENEW_EVERY`] until aborted; a Lease someone else took (or
/// deleted) is marked lost, and the journal refuses the next record.
async fn renew(objects: Arc<dyn StateObjects>, ns: String, holder: String, held: Arc<Mutex<Held>>) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let mut body = held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).lease.clone();
        body["spec"]["renewTime"] = json!(micro_time(chrono::Utc::now()));
        let result = objects.replace(StateKind::Lease, &ns, &body).await;
        let mut h = held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok(v) => {
                h.lease = v;
                h.renewed = Instant::now();
            }
            Err(e) if e.kind == FailKind::Conflict => {
                drop(h);
                let name = body["metadata"]["name"].as_str().unwrap_or_default().to_string();
                let now = objects.get(StateKind::Lease, &ns, &name).await;
                let mut h = held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match now {
                    Ok(Some(v)) if v["spec"]["holderIdentity"] == holder.as_str() => h.lease = v,
                    Ok(Some(v)) => {
                        h.lost = Some(format!(
                            "taken over by {}",
                            describe_holder(v["spec"]["holderIdentity"].as_str().unwrap_or("nobody"))
                        ));
                        return;
                    }
                    Ok(None) => {
                        h.lost = Some("the Lease was deleted".into());
                        return;
                    }
                    Err(_) => {}
                }
            }
            // A failed renewal is tried again; `check` stops the run once it is too old.
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ports::{BoxFuture, PortResult};
    use std::collections::BTreeMap;

    /// Secrets and Leases in memory, with resourceVersions as the API server keeps them.
    #[derive(Default)]
    struct Memory {
        objects: Mutex<BTreeMap<(String, String), Value>>,
        rv: Mutex<u64>,
    }

    fn key(kind: StateKind, name: &str) -> (String, String) {
        (format!("{kind:?}"), name.to_string())
    }

    impl StateObjects for Memory {
        fn get<'a>(&'a self, kind: StateKind, _: &'a str, name: &'a str) -> BoxFuture<'a, PortResult<Option<Value>>> {
            Box::pin(async move { Ok(self.objects.lock().unwrap().get(&key(kind, name)).cloned()) })
        }
        fn list<'a>(&'a self, kind: StateKind, _: &'a str, selector: &'a str) -> BoxFuture<'a, PortResult<Vec<Value>>> {
            Box::pin(async move {
                let (k, v) = selector.split_once('=').unwrap();
                Ok(self
                    .objects
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|((kk, _), o)| *kk == format!("{kind:?}") && o["metadata"]["labels"][k] == v)
                    .map(|(_, o)| o.clone())
                    .collect())
            })
        }
        fn create<'a>(&'a self, kind: StateKind, _: &'a str, body: &'a Value) -> BoxFuture<'a, PortResult<Value>> {
            Box::pin(async move {
                let name = body["metadata"]["name"].as_str().unwrap().to_string();
                let mut objects = self.objects.lock().unwrap();
                if objects.contains_key(&key(kind, &name)) {
                    return Err(PortError { kind: FailKind::Conflict, message: "exists".into() });
                }
                let mut rv = self.rv.lock().unwrap();
                *rv += 1;
                let mut v = body.clone();
                v["metadata"]["resourceVersion"] = json!(rv.to_string());
                objects.insert(key(kind, &name), v.clone());
                Ok(v)
            })
        }
        fn replace<'a>(&'a self, kind: StateKind, _: &'a str, body: &'a Value) -> BoxFuture<'a, PortResult<Value>> {
            Box::pin(async move {
                let name = body["metadata"]["name"].as_str().unwrap().to_string();
                let mut objects = self.objects.lock().unwrap();
                let Some(old) = objects.get(&key(kind, &name)) else {
                    return Err(PortError { kind: FailKind::Conflict, message: "gone".into() });
                };
                if old["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"] {
                    return Err(PortError { kind: FailKind::Conflict, message: "modified".into() });
                }
                let mut rv = self.rv.lock().unwrap();
                *rv += 1;
                let mut v = body.clone();
                v["metadata"]["resourceVersion"] = json!(rv.to_string());
                objects.insert(key(kind, &name), v.clone());
                Ok(v)
            })
        }
    }

    fn at() -> HistoryRef {
        HistoryRef::new("gitlab-runner", "sandbox", "https://gitlab.example/")
    }

    #[tokio::test]
    async fn appended_bytes_read_back_in_order_across_many_secrets_each_under_the_limit() {
        let mem = Arc::new(Memory::default());
        let (mut store, bytes) = ClusterStore::load(mem.clone(), at()).await.unwrap();
        assert!(bytes.is_empty());
        // Incompressible records, as random CI content would be: more than one Secret holds.
        let mut all = Vec::new();
        for i in 0..40 {
            let mut line: Vec<u8> = (0..40_000).map(|_| fastrand::alphanumeric() as u8).collect();
            line.extend_from_slice(format!(" {i}\n").as_bytes());
            store.append(&line).await.unwrap();
            all.extend_from_slice(&line);
        }
        // One record larger than a Secret holds is split across several.
        let big: Vec<u8> = (0..1_500_000).map(|_| fastrand::alphanumeric() as u8).chain([b'\n']).collect();
        store.append(&big).await.unwrap();
        all.extend_from_slice(&big);
        let secrets = mem.objects.lock().unwrap().clone();
        assert!(secrets.len() >= 5, "{} Secrets", secrets.len());
        for ((_, name), s) in &secrets {
            let data = base64::engine::general_purpose::STANDARD.decode(s["data"][DATA_KEY].as_str().unwrap()).unwrap();
            assert!(data.len() <= CHUNK_BYTES, "{name}: {} bytes", data.len());
        }
        let (_, again) = ClusterStore::load(mem.clone(), at()).await.unwrap();
        assert_eq!(again, all);
        // Another migration, or the same on another GitLab, reads nothing of it.
        let other = HistoryRef::new("gitlab-runner", "sandbox", "https://other.example");
        assert!(ClusterStore::load(mem.clone(), other).await.unwrap().1.is_empty());
    }

    #[tokio::test]
    async fn a_missing_piece_or_a_foreign_write_is_corruption_not_a_shorter_history() {
        let mem = Arc::new(Memory::default());
        let (mut store, _) = ClusterStore::load(mem.clone(), at()).await.unwrap();
        let big: Vec<u8> = (0..1_200_000).map(|_| fastrand::alphanumeric() as u8).chain([b'\n']).collect();
        store.append(&big).await.unwrap();
        let (mut second, _) = ClusterStore::load(mem.clone(), at()).await.unwrap();
        // A write by another reader of the same history since this one read it is refused.
        store.append(b"{\"a\":1}\n").await.unwrap();
        let e = second.append(b"{\"b\":2}\n").await.unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }) && e.to_string().contains("written by someone else"), "{e}");
        let name = at().chunk_name(1);
        mem.objects.lock().unwrap().remove(&key(StateKind::Secret, &name));
        let e = ClusterStore::load(mem.clone(), at()).await.err().unwrap();
        assert!(e.to_string().contains("is missing") || e.to_string().contains("starts at byte"), "{e}");
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_across_pieces() {
        let mem = Arc::new(Memory::default());
        let (mut store, _) = ClusterStore::load(mem.clone(), at()).await.unwrap();
        store.append(b"{\"a\":1}\n").await.unwrap();
        let torn: Vec<u8> = (0..1_000_000).map(|_| fastrand::alphanumeric() as u8).collect();
        store.append(&torn).await.unwrap();
        let (mut store, bytes) = ClusterStore::load(mem.clone(), at()).await.unwrap();
        store.truncate(8, &bytes).await.unwrap();
        store.append(b"{\"b\":2}\n").await.unwrap();
        let (_, bytes) = ClusterStore::load(mem.clone(), at()).await.unwrap();
        assert_eq!(bytes, b"{\"a\":1}\n{\"b\":2}\n");
    }

    #[tokio::test]
    async fn a_lease_is_refused_while_held_taken_once_released_and_a_taken_over_one_is_lost() {
        let mem: Arc<Memory> = Arc::new(Memory::default());
        let first = Lease::take(mem.clone(), &at()).await.unwrap();
        first.check().unwrap();
        let e = Lease::take(mem.clone(), &at()).await.err().unwrap();
        assert!(matches!(&e, StateError::Held(_)), "{e}");
        assert!(
            e.to_string().contains(&format!("archshift process {} on", std::process::id())),
            "names the holder: {e}"
        );
        first.release().await;
        let second = Lease::take(mem.clone(), &at()).await.unwrap();
        let lease = mem.objects.lock().unwrap()[&key(StateKind::Lease, &at().lease_name())].clone();
        assert_eq!(lease["spec"]["leaseTransitions"], 0, "a released Lease has no holder to take it from");
        assert_eq!(lease["spec"]["holderIdentity"], second.holder());
        // An expired Lease is taken over, and its old holder finds out at its next renewal.
        {
            let mut objects = mem.objects.lock().unwrap();
            let l = objects.get_mut(&key(StateKind::Lease, &at().lease_name())).unwrap();
            l["spec"]["renewTime"] = json!("2020-01-01T00:00:00.000000Z");
        }
        let third = Lease::take(mem.clone(), &at()).await.unwrap();
        let lease = mem.objects.lock().unwrap()[&key(StateKind::Lease, &at().lease_name())].clone();
        assert_eq!(lease["spec"]["leaseTransitions"], 1);
        assert_eq!(lease["spec"]["holderIdentity"], third.holder());
        drop(second);
    }

    #[test]
    fn a_holder_on_this_host_whose_process_is_gone_is_known_gone() {
        let host = hostname::get().unwrap().into_string().unwrap();
        assert!(!holder_gone(&format!("{host}/{}/0", std::process::id())), "this process");
        assert!(!holder_gone("elsewhere.example/1/0"), "another host's holder is alive until it expires");
        if cfg!(target_os = "linux") {
            assert!(holder_gone(&format!("{host}/{}/0", u32::MAX - 1)), "no such process here");
        }
    }
}
