//! A simulated Kubernetes API server: discovery, CRUD, patch (merge, JSON, server-side
//! apply), dry-run, resourceVersion/generation bookkeeping, CRD schema validation and
//! server-side Tables, answering with the same paths, codes and `Status` bodies.

mod meta;
pub mod openapi;
pub mod path;
mod read;
mod write;

use meta::{
    check_type, decode_lease, keep_deletion_state, normalize_secret, strip_server_fields, unchanged, validate_builtin,
    validate_metadata,
};
use read::selectors;
use write::decode_body;
pub mod proto;
pub mod resources;
pub mod review;
pub mod schema;
pub mod select;
pub mod ssa;
pub mod status;
pub mod table;

use std::collections::{BTreeMap, VecDeque};

use base64::Engine;
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

pub use super::exchange::Request;
use super::exchange::percent_decode as exchange_decode;
use path::ResourcePath;
use resources::{Registry, Resource};
use select::{FieldSelector, LabelSelector, label_value_errors, qualified_name_errors};
use status::{Reply, failure};

type Key = (String, String, String);

/// The stored objects and the counters a real server keeps.
pub struct KubeState {
    pub registry: Registry,
    objects: BTreeMap<Key, Value>,
    rv: u64,
    uid: u64,
    pub server_address: String,
    /// `Warning` headers for the reply being built (unknown fields without fieldValidation=Strict).
    warnings: Vec<String>,
    /// Every stored change, oldest first, for watches (bounded, like etcd's history).
    events: VecDeque<Event>,
    /// The resourceVersion of the newest event; watches wait on it.
    pub changes: tokio::sync::watch::Sender<u64>,
    /// Who the token authenticates as, and what it may not do.
    pub identity: review::Identity,
}

/// One change to a stored object, as a watch reports it.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    key: Key,
    pub kind: &'static str,
    pub object: Value,
}

/// How many events watches can resume from; older resourceVersions get 410 Expired. A real
/// API server's watch cache keeps a window of recent events, not the whole history.
const EVENT_HISTORY: usize = 1_000;

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Default for KubeState {
    fn default() -> Self {
        Self::new()
    }
}

impl KubeState {
    pub fn new() -> Self {
        KubeState {
            registry: Registry::load(),
            objects: BTreeMap::new(),
            rv: 1000,
            uid: 0,
            server_address: String::new(),
            warnings: vec![],
            events: VecDeque::new(),
            changes: tokio::sync::watch::channel(1000).0,
            identity: review::Identity::default(),
        }
    }

    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    fn next_uid(&mut self) -> String {
        self.uid += 1;
        let r = fastrand::u64(..);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (r >> 32) as u32,
            (r >> 16) as u16,
            self.uid & 0xfff,
            (r & 0xfff),
            self.uid
        )
    }

    /// Stores an object and records the change for watches.
    fn store(&mut self, key: Key, obj: Value) {
        let kind = if self.objects.contains_key(&key) { "MODIFIED" } else { "ADDED" };
        let rv = obj["metadata"]["resourceVersion"].as_str().and_then(|r| r.parse().ok()).unwrap_or(self.rv);
        self.objects.insert(key.clone(), obj.clone());
        self.record(Event { rv, key, kind, object: obj });
    }

    /// Removes an object; a deletion is a write and gets its own resourceVersion.
    fn unstore(&mut self, key: &Key) {
        if let Some(mut obj) = self.objects.remove(key) {
            let rv = self.next_rv();
            obj["metadata"]["resourceVersion"] = json!(rv);
            self.record(Event { rv: self.rv, key: key.clone(), kind: "DELETED", object: obj });
        }
    }

    fn record(&mut self, event: Event) {
        let rv = event.rv;
        self.events.push_back(event);
        while self.events.len() > EVENT_HISTORY {
            self.events.pop_front();
        }
        self.changes.send_replace(rv);
    }

    fn key(res: &Resource, ns: &str, name: &str) -> Key {
        (res.qualified(), if res.namespaced { ns.to_string() } else { String::new() }, name.to_string())
    }

    pub fn get(&self, kind: &str, ns: &str, name: &str) -> Option<&Value> {
        let res = self.registry.by_kind(kind)?;
        self.objects.get(&Self::key(res, ns, name))
    }

    /// Objects of one kind (all namespaces), in name order.
    pub fn list(&self, kind: &str) -> Vec<&Value> {
        let Some(res) = self.registry.by_kind(kind) else { return vec![] };
        let q = res.qualified();
        self.objects.iter().filter(|((r, _, _), _)| *r == q).map(|(_, v)| v).collect()
    }

    /// Stores an object as a controller or the seed does: server fields filled in, a new
    /// resourceVersion, generation bumped when anything but metadata and status changed.
    pub fn put(&mut self, mut obj: Value, manager: &str) -> Result<Value, String> {
        let kind = obj["kind"].as_str().ok_or("object without kind")?.to_string();
        let res = self.registry.by_kind(&kind).ok_or_else(|| format!("kind {kind} is not served"))?.clone();
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("").to_string();
        let name = obj["metadata"]["name"].as_str().ok_or("object without name")?.to_string();
        let key = Self::key(&res, &ns, &name);
        let old = self.objects.get(&key).cloned();
        if res.kind == "Secret" {
            normalize_secret(&mut obj)?;
        }
        obj["apiVersion"] = json!(res.api_version());
        if let Some(schema) = &res.schema {
            // Keep what the server would keep: status is written separately.
            let status = obj.as_object_mut().and_then(|m| m.remove("status"));
            let outcome = schema::check(schema, &mut obj);
            if let Some(c) = outcome.causes.first() {
                return Err(format!("{} {name:?} is invalid: {}", res.qualified_kind(), c.message()));
            }
            if !outcome.unknown.is_empty() {
                return Err(format!("{} {name:?}: unknown fields {:?}", res.qualified_kind(), outcome.unknown));
            }
            match (status, old.as_ref().and_then(|o| o.get("status"))) {
                (Some(s), _) if !res.status_subresource => obj["status"] = s,
                (_, Some(s)) => obj["status"] = s.clone(),
                (Some(s), None) => obj["status"] = s,
                _ => {}
            }
        }
        keep_deletion_state(old.as_ref(), &mut obj);
        self.fill_server_fields(&res, old.as_ref(), &mut obj, Some(Writer { manager, subresource: None }));
        if let Some(o) = &old
            && unchanged(o, &obj)
        {
            return Ok(o.clone());
        }
        obj["metadata"]["resourceVersion"] = json!(self.next_rv());
        self.settle(key, obj.clone());
        Ok(obj)
    }

    /// Stores a written object; one being deleted whose last finalizer went is removed.
    fn settle(&mut self, key: Key, obj: Value) {
        let deleting = obj["metadata"]["deletionTimestamp"].is_string();
        let finalizers = obj["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        self.store(key.clone(), obj);
        if deleting && !finalizers {
            self.unstore(&key);
        }
    }

    /// Changes only `status` (as a controller writing the status subresource).
    pub fn put_status(&mut self, kind: &str, ns: &str, name: &str, status: Value) -> Option<()> {
        let res = self.registry.by_kind(kind)?.clone();
        let key = Self::key(&res, ns, name);
        let mut obj = self.objects.get(&key)?.clone();
        obj["status"] = status;
        obj["metadata"]["resourceVersion"] = json!(self.next_rv());
        self.store(key, obj);
        Some(())
    }

    /// Server-maintained fields but the resourceVersion; `manager` records an Update (None: an
    /// apply already recorded it).
    fn fill_server_fields(&mut self, res: &Resource, old: Option<&Value>, obj: &mut Value, writer: Option<Writer>) {
        match old {
            Some(o) => {
                let generation = o["metadata"]["generation"].as_i64().unwrap_or(1);
                let changed = spec_of(o) != spec_of(obj);
                let meta = &mut obj["metadata"];
                meta["uid"] = o["metadata"]["uid"].clone();
                meta["creationTimestamp"] = o["metadata"]["creationTimestamp"].clone();
                meta["generation"] = json!(if changed { generation + 1 } else { generation });
            }
            None => {
                let uid = self.next_uid();
                let meta = &mut obj["metadata"];
                meta["uid"] = json!(uid);
                meta["creationTimestamp"] = json!(now());
                meta["generation"] = json!(1);
            }
        }
        if !res.custom && matches!(res.kind.as_str(), "Secret" | "ConfigMap" | "Namespace" | "Node") {
            // Built-ins without a spec carry no generation.
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("generation");
            }
        }
        if let Some(w) = writer {
            ssa::record_update(old, obj, w.manager, &res.api_version(), &now(), w.subresource);
        }
    }

    /// Serves one request.
    pub fn handle(&mut self, req: &Request) -> Reply {
        self.warnings.clear();
        let mut reply = self.route(req);
        reply.headers.extend(self.warnings.drain(..).map(|w| ("Warning".to_string(), w)));
        reply
    }

    fn route(&mut self, req: &Request) -> Reply {
        let segments: Vec<&str> = req.path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
        match segments.as_slice() {
            ["version"] => Reply::ok(200, version()),
            ["openapi", "v3"] => Reply::ok(200, openapi::root(&self.registry)),
            ["openapi", "v3", gv @ ..] => openapi::document(&self.registry, &gv.join("/"))
                .map_or_else(|| status::path_not_found(&req.path), |d| Reply::ok(200, d)),
            ["api"] | ["apis"] if resources::wants_aggregated(req.accept()) => {
                let mut r = Reply::ok(200, self.registry.aggregated(req.path.trim_matches('/') == "api"));
                r.headers.push(("Content-Type".into(), resources::AGGREGATED_CONTENT_TYPE.into()));
                r
            }
            ["api"] => Reply::ok(200, self.registry.api_versions(&self.server_address)),
            ["apis"] => Reply::ok(200, self.registry.group_list()),
            ["apis", group] => {
                self.registry.group(group).map_or_else(|| status::path_not_found(&req.path), |g| Reply::ok(200, g))
            }
            ["api", "v1"] => self
                .registry
                .resource_list("", "v1")
                .map_or_else(|| status::path_not_found(&req.path), |l| Reply::ok(200, l)),
            ["apis", group, version] => self
                .registry
                .resource_list(group, version)
                .map_or_else(|| status::path_not_found(&req.path), |l| Reply::ok(200, l)),
            ["api", "v1", ..] | ["apis", _, _, ..] => match ResourcePath::parse(&req.path) {
                Some(rp) => self.resource_request(req, &rp),
                None => status::path_not_found(&req.path),
            },
            _ => status::path_not_found(&req.path),
        }
    }

    fn resource_request(&mut self, req: &Request, rp: &ResourcePath) -> Reply {
        let Some(res) = self.registry.find(&rp.group, &rp.version, &rp.plural).cloned() else {
            return status::path_not_found(&req.path);
        };
        if !res.namespaced && rp.namespace.is_some() {
            return status::path_not_found(&req.path);
        }
        if let Some(s) = &rp.subresource
            && !(s == "status" && res.status_subresource)
        {
            return status::path_not_found(&req.path);
        }
        let (ns, name, sub) = (rp.namespace.clone(), rp.name.as_deref(), rp.subresource.as_deref());
        let ns = ns.unwrap_or_default();
        if matches!(res.kind.as_str(), "SelfSubjectAccessReview" | "SelfSubjectRulesReview" | "SelfSubjectReview") {
            if req.method != "POST" {
                return status::method_not_allowed();
            }
            // kubectl sends these as protobuf.
            let body = match decode_body(req) {
                Ok(b) => b,
                Err(e) => return status::bad_request(&e),
            };
            return match res.kind.as_str() {
                "SelfSubjectAccessReview" => self.identity.access_review(body),
                "SelfSubjectRulesReview" => self.identity.rules_review(body, &self.registry),
                _ => self.identity.self_review(body),
            };
        }
        if res.kind == "CustomResourceDefinition" {
            return self.crd_request(req, &res, name);
        }
        let dry_run = match req.query.get("dryRun").map(String::as_str) {
            None => false,
            Some("All") => true,
            Some(other) => {
                return status::invalid_options(
                    "CreateOptions",
                    "dryRun",
                    &format!("Unsupported value: {other:?}: supported values: \"All\""),
                    "FieldValueNotSupported",
                );
            }
        };
        // What discovery advertises is what works, and nothing else.
        let verb = match (req.method.as_str(), name) {
            ("GET", None) => "list",
            ("GET", Some(_)) => "get",
            ("POST", None) => "create",
            ("PUT", Some(_)) => "update",
            ("PATCH", Some(_)) => "patch",
            ("DELETE", Some(_)) => "delete",
            ("DELETE", None) => "deletecollection",
            _ => "",
        };
        if !res.verbs.contains(&verb) && sub.is_none() {
            return status::method_not_allowed();
        }
        if !self.identity.allowed(verb, &res.plural, &res.group) {
            return self.identity.forbidden(verb, &res, &ns, name);
        }
        match (req.method.as_str(), name) {
            ("GET", None) => self.list_objects(req, &res, &ns),
            ("GET", Some(n)) => match self.objects.get(&Self::key(&res, &ns, n)) {
                Some(o) if table::wants_table(req.accept()) => {
                    Reply::ok(200, table::table(&res, &[o], &self.rv.to_string(), false, Utc::now()))
                }
                Some(o) => Reply::ok(200, o.clone()),
                None => status::not_found(&res, n),
            },
            ("POST", None) => self.create(req, &res, &ns, dry_run),
            ("PUT", Some(n)) => self.update(req, &res, &ns, n, sub.is_some(), dry_run),
            ("PATCH", Some(n)) => self.patch(req, &res, &ns, n, sub.is_some(), dry_run),
            ("DELETE", Some(n)) => self.delete(req, &res, &ns, n, dry_run),
            ("DELETE", None) => self.delete_collection(req, &res, &ns, dry_run),
            _ => status::method_not_allowed(),
        }
    }

    fn crd_request(&mut self, req: &Request, res: &Resource, name: Option<&str>) -> Reply {
        if req.method == "DELETE"
            && let Some(n) = name
        {
            return self.delete_crd(res, n);
        }
        if req.method != "GET" {
            return status::method_not_allowed();
        }
        match name {
            None => Reply::ok(
                200,
                json!({"kind": "CustomResourceDefinitionList", "apiVersion": res.api_version(),
                       "metadata": {"resourceVersion": self.rv.to_string()}, "items": self.registry.crd_objects}),
            ),
            Some(n) => self
                .registry
                .crd_objects
                .iter()
                .find(|c| c["metadata"]["name"] == n)
                .map_or_else(|| status::not_found(res, n), |c| Reply::ok(200, c.clone())),
        }
    }
}

impl KubeState {
    /// `DELETE .../customresourcedefinitions/NAME`: as the apiextensions server does once its
    /// `customresourcecleanup` finalizer has run (instantly here): every instance goes, then
    /// the resource stops being served and leaves discovery. The answer is the CRD marked
    /// for deletion (`Terminating`), as the real server's is.
    fn delete_crd(&mut self, res: &Resource, name: &str) -> Reply {
        let Some(at) = self.registry.crd_objects.iter().position(|c| c["metadata"]["name"] == name) else {
            return status::not_found(res, name);
        };
        let mut crd = self.registry.crd_objects.remove(at);
        let (group, plural) = (
            crd["spec"]["group"].as_str().unwrap_or_default().to_string(),
            crd["spec"]["names"]["plural"].as_str().unwrap_or_default().to_string(),
        );
        let gone: Vec<Resource> =
            self.registry.resources.iter().filter(|r| r.group == group && r.plural == plural).cloned().collect();
        for r in &gone {
            let keys: Vec<Key> = self.objects.keys().filter(|k| k.0 == r.qualified()).cloned().collect();
            for k in keys {
                self.unstore(&k);
            }
        }
        self.registry.resources.retain(|r| !(r.group == group && r.plural == plural));
        crd["metadata"]["deletionTimestamp"] = json!(now());
        crd["metadata"]["finalizers"] = json!(["customresourcecleanup.apiextensions.k8s.io"]);
        crd["status"]["conditions"] = json!([{"type": "Terminating", "status": "True",
            "reason": "InstanceDeletionInProgress", "message": "CustomResource deletion is in progress"}]);
        Reply::ok(200, crd)
    }
}

fn version() -> Value {
    json!({"major": "1", "minor": "32", "gitVersion": "v1.32.4-archshift-sandbox", "gitCommit": "0000000000000000000000000000000000000000",
           "gitTreeState": "clean", "buildDate": "2025-06-01T00:00:00Z", "goVersion": "go1.23.8", "compiler": "gc", "platform": "linux/amd64"})
}

/// Who writes, and to which part: the main resource or `/status`.
#[derive(Clone, Copy)]
struct Writer<'a> {
    manager: &'a str,
    subresource: Option<&'a str>,
}

/// Everything but metadata and status: what `generation` counts changes of.
fn spec_of(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

#[cfg(test)]
mod tests;
