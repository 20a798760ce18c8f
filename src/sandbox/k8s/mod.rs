//! A simulated Kubernetes API server: discovery, CRUD, patch (merge, JSON, server-side
//! apply), dry-run, resourceVersion/generation bookkeeping, CRD schema validation and
//! server-side Tables, answering with the same paths, codes and `Status` bodies.

pub mod openapi;
pub mod path;
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

    /// Events of one resource after `after`, or `Err` when that point is no longer in history.
    pub fn events_after(&self, watch: &WatchSpec, after: u64) -> Result<Vec<Event>, u64> {
        if let Some(oldest) = self.events.front()
            && after + 1 < oldest.rv
            && self.events.len() >= EVENT_HISTORY
        {
            return Err(oldest.rv);
        }
        Ok(self.events.iter().filter(|e| e.rv > after && watch.matches(&e.key, &e.object)).cloned().collect())
    }

    /// The objects a watch without a resourceVersion starts with, and the version they are at.
    pub fn current(&self, watch: &WatchSpec) -> (Vec<Value>, u64) {
        let items = self.objects.iter().filter(|(k, o)| watch.matches(k, o)).map(|(_, o)| o.clone()).collect();
        (items, self.rv)
    }

    /// Parses a watch request (`GET` on a collection with `watch=true`).
    pub fn watch_spec(&self, req: &Request) -> Result<WatchSpec, Reply> {
        let rp = ResourcePath::parse(&req.path).ok_or_else(|| status::path_not_found(&req.path))?;
        if rp.name.is_some() {
            return Err(status::method_not_allowed());
        }
        let ns = rp.namespace.clone().unwrap_or_default();
        let res = self
            .registry
            .find(&rp.group, &rp.version, &rp.plural)
            .ok_or_else(|| status::path_not_found(&req.path))?
            .clone();
        if !self.identity.allowed("watch", &res.plural, &res.group) {
            return Err(self.identity.forbidden("watch", &res, &ns, None));
        }
        let (selector, fields) = selectors(req, &res)?;
        let send_initial_events = watch_list_options(req)?;
        Ok(WatchSpec {
            send_initial_events,
            qualified: res.qualified(),
            ns,
            selector,
            fields,
            table: table::wants_table(req.accept()),
            resource: res,
        })
    }

    /// The BOOKMARK that ends the initial events of a streaming list (`sendInitialEvents`).
    pub fn initial_events_end(&self, watch: &WatchSpec, rv: u64) -> Value {
        json!({"type": "BOOKMARK", "object": {
            "kind": watch.resource.kind, "apiVersion": watch.resource.api_version(),
            "metadata": {"resourceVersion": rv.to_string(), "creationTimestamp": null,
                         "annotations": {"k8s.io/initial-events-end": "true"}}}})
    }

    pub fn event_json(&self, watch: &WatchSpec, kind: &str, obj: &Value) -> Value {
        let object = if watch.table {
            table::table(&watch.resource, &[obj], &self.rv.to_string(), false, Utc::now())
        } else {
            obj.clone()
        };
        json!({"type": kind, "object": object})
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

    fn crd_request(&self, req: &Request, res: &Resource, name: Option<&str>) -> Reply {
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

    fn list_objects(&self, req: &Request, res: &Resource, ns: &str) -> Reply {
        let q = res.qualified();
        let (selector, fields) = match selectors(req, res) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let mut items: Vec<(&Key, &Value)> = self
            .objects
            .iter()
            .filter(|((r, n, _), _)| *r == q && (ns.is_empty() || n == ns))
            .filter(|(_, o)| selector.as_ref().is_none_or(|s| s.matches(&o["metadata"]["labels"])))
            .filter(|(_, o)| fields.as_ref().is_none_or(|f| f.matches(o)))
            .collect();
        let list_rv = self.rv.to_string();
        // Paging: the continue token carries the list's resourceVersion and the last key served.
        if let Some(token) = req.query.get("continue").filter(|t| !t.is_empty()) {
            let Some((_, after)) = decode_continue(token) else {
                return status::bad_request(
                    "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
                );
            };
            items.retain(|(k, _)| format!("{}/{}", k.1, k.2) > after);
        }
        let limit = req.query.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
        let mut meta = json!({"resourceVersion": list_rv});
        if let Some(limit) = limit
            && items.len() > limit
        {
            let remaining = items.len() - limit;
            items.truncate(limit);
            let last = items.last().map(|(k, _)| format!("{}/{}", k.1, k.2)).unwrap_or_default();
            meta["continue"] = json!(encode_continue(&list_rv, &last));
            meta["remainingItemCount"] = json!(remaining);
        }
        let objects: Vec<&Value> = items.iter().map(|(_, v)| *v).collect();
        if table::wants_table(req.accept()) {
            let include = req.query.get("includeObject").is_some_and(|v| v == "Object");
            let mut t = table::table(res, &objects, &list_rv, include, Utc::now());
            t["metadata"] = meta;
            return Reply::ok(200, t);
        }
        let items: Vec<Value> = objects
            .into_iter()
            .map(|o| {
                let mut o = o.clone();
                if !res.custom
                    && let Some(m) = o.as_object_mut()
                {
                    // The core API leaves kind and apiVersion out of list items.
                    m.remove("kind");
                    m.remove("apiVersion");
                }
                o
            })
            .collect();
        Reply::ok(
            200,
            json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(), "metadata": meta, "items": items}),
        )
    }

    fn manager(req: &Request, default_for_apply: bool) -> String {
        match req.query.get("fieldManager") {
            Some(m) => m.clone(),
            None if default_for_apply => String::new(),
            // The server names an unnamed manager after the client's user agent.
            None => req.user_agent().split('/').next().filter(|s| !s.is_empty()).unwrap_or("unknown").to_string(),
        }
    }

    /// Checks the new object like the real server does and stores it unless dry-run.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &mut self,
        req: &Request,
        res: &Resource,
        old: Option<&Value>,
        mut obj: Value,
        writer: Option<Writer>,
        dry_run: bool,
        is_patch: bool,
    ) -> Result<Value, Reply> {
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let mut warnings = Vec::new();
        if let Some(schema) = &res.schema {
            let outcome = schema::check(schema, &mut obj);
            if !outcome.causes.is_empty() {
                return Err(status::invalid(res, &name, &outcome.causes));
            }
            if !outcome.unknown.is_empty() {
                match req.query.get("fieldValidation").map(String::as_str) {
                    Some("Strict") if is_patch => {
                        let causes: Vec<schema::Cause> = outcome
                            .unknown
                            .iter()
                            .map(|f| schema::Cause {
                                reason: "FieldValueInvalid",
                                field: "patch".into(),
                                detail: format!("Invalid value: \"\": strict decoding error: unknown field {f:?}"),
                            })
                            .collect();
                        return Err(status::invalid(res, &name, &causes));
                    }
                    Some("Strict") => {
                        let list: Vec<String> =
                            outcome.unknown.iter().map(|f| format!("unknown field {f:?}")).collect();
                        return Err(status::bad_request(&format!(
                            "{} in body is invalid: strict decoding error: {}",
                            res.qualified_kind(),
                            list.join(", ")
                        )));
                    }
                    Some("Ignore") => {}
                    _ => warnings.extend(outcome.unknown.iter().map(|f| format!("299 - \"unknown field {f:?}\""))),
                }
            }
        }
        if res.kind == "Secret"
            && let Err(e) = normalize_secret(&mut obj)
        {
            return Err(status::bad_request(&e));
        }
        keep_deletion_state(old, &mut obj);
        let mut causes = validate_metadata(&obj).err().unwrap_or_default();
        if let Some(o) = old.filter(|o| o["metadata"]["deletionTimestamp"].is_string()) {
            let had: Vec<&Value> =
                o["metadata"]["finalizers"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
            let new: Vec<String> = obj["metadata"]["finalizers"]
                .as_array()
                .map(|a| a.iter().filter(|f| !had.contains(f)).filter_map(|f| f.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            if !new.is_empty() {
                causes.push(schema::Cause {
                    reason: "FieldValueForbidden",
                    field: "metadata.finalizers".into(),
                    detail: format!(
                        "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                        new.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(", ")
                    ),
                });
            }
        }
        if !causes.is_empty() {
            return Err(status::invalid(res, &name, &causes));
        }
        if dry_run {
            let mut preview = obj;
            let meta = &mut preview["metadata"];
            if meta["uid"].is_null() {
                meta["uid"] = json!(self.next_uid());
                meta["creationTimestamp"] = json!(now());
            }
            return Ok(preview);
        }
        self.fill_server_fields(res, old, &mut obj, writer);
        self.warnings = warnings;
        // A write that changes nothing is not stored: same resourceVersion, no watch event,
        // managedFields timestamps kept.
        if let Some(o) = old
            && unchanged(o, &obj)
        {
            return Ok(o.clone());
        }
        obj["metadata"]["resourceVersion"] = json!(self.next_rv());
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("").to_string();
        self.settle(Self::key(res, &ns, &name), obj.clone());
        Ok(obj)
    }

    fn create(&mut self, req: &Request, res: &Resource, ns: &str, dry_run: bool) -> Reply {
        let mut obj = match decode_body(req) {
            Ok(v) if v.is_object() => v,
            Ok(_) => return status::bad_request("the body of the request was not an object"),
            Err(e) => return status::bad_request(&e),
        };
        if let Err(r) = check_type(res, &obj) {
            return r;
        }
        if res.namespaced {
            match obj["metadata"]["namespace"].as_str() {
                Some(n) if n != ns => {
                    return status::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    );
                }
                _ => obj["metadata"]["namespace"] = json!(ns),
            }
            if !self.objects.contains_key(&("namespaces".into(), String::new(), ns.to_string())) {
                return status::namespace_not_found(ns);
            }
        }
        if obj["metadata"]["name"].as_str().is_none_or(str::is_empty) {
            match obj["metadata"]["generateName"].as_str() {
                Some(prefix) => obj["metadata"]["name"] = json!(format!("{prefix}{}", fastrand::u32(..) % 100_000)),
                None => {
                    return status::invalid(
                        res,
                        "",
                        &[schema::Cause {
                            reason: "FieldValueRequired",
                            field: "metadata.name".into(),
                            detail: "Required value: name or generateName is required".into(),
                        }],
                    );
                }
            }
        }
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        if self.objects.contains_key(&Self::key(res, ns, &name)) {
            return status::already_exists(res, &name);
        }
        // etcd3's store refuses it with a plain error, which the handler answers as a 500.
        if obj["metadata"]["resourceVersion"].as_str().is_some_and(|rv| !rv.is_empty()) {
            return status::internal_plain("resourceVersion should not be set on objects to be created");
        }
        strip_server_fields(&mut obj);
        if res.status_subresource
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        let manager = Self::manager(req, false);
        match self.admit(req, res, None, obj, Some(Writer { manager: &manager, subresource: None }), dry_run, false) {
            Ok(o) => Reply::ok(201, o),
            Err(r) => r,
        }
    }

    fn update(
        &mut self,
        req: &Request,
        res: &Resource,
        ns: &str,
        name: &str,
        status_sub: bool,
        dry_run: bool,
    ) -> Reply {
        let mut obj = match parse_body(&req.body) {
            Ok(v) if v.is_object() => v,
            Ok(_) => return status::bad_request("the body of the request was not an object"),
            Err(e) => return status::bad_request(&e),
        };
        if let Err(r) = check_type(res, &obj) {
            return r;
        }
        let Some(old) = self.objects.get(&Self::key(res, ns, name)).cloned() else {
            return status::not_found(res, name);
        };
        if obj["metadata"]["name"].as_str().is_some_and(|n| n != name) {
            return status::bad_request(&format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                obj["metadata"]["name"].as_str().unwrap_or("")
            ));
        }
        match obj["metadata"]["resourceVersion"].as_str() {
            None | Some("") if res.custom => {
                return status::invalid(
                    res,
                    name,
                    &[schema::Cause {
                        reason: "FieldValueInvalid",
                        field: "metadata.resourceVersion".into(),
                        detail: "Invalid value: 0x0: must be specified for an update".into(),
                    }],
                );
            }
            Some(rv) if rv != old["metadata"]["resourceVersion"].as_str().unwrap_or("") => {
                return status::conflict(res, name);
            }
            _ => {}
        }
        // A uid in the body is a storage precondition (rest.DefaultUpdatedObjectInfo).
        if let Some(uid) = obj["metadata"]["uid"].as_str().filter(|u| !u.is_empty())
            && Some(uid) != old["metadata"]["uid"].as_str()
        {
            return status::precondition_failed(
                res,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    old["metadata"]["uid"].as_str().unwrap_or("")
                ),
            );
        }
        obj["metadata"]["name"] = json!(name);
        if res.namespaced {
            obj["metadata"]["namespace"] = json!(ns);
        }
        obj["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
        let obj = merge_subresource(res, &old, obj, status_sub);
        let manager = Self::manager(req, false);
        let writer = Writer { manager: &manager, subresource: status_sub.then_some("status") };
        match self.admit(req, res, Some(&old), obj, Some(writer), dry_run, false) {
            Ok(o) => Reply::ok(200, o),
            Err(r) => r,
        }
    }

    fn patch(&mut self, req: &Request, res: &Resource, ns: &str, name: &str, status_sub: bool, dry_run: bool) -> Reply {
        let ct = req.content_type().split(';').next().unwrap_or("").trim();
        let is_apply = ct == "application/apply-patch+yaml";
        if req.query.contains_key("force") && !is_apply {
            return status::invalid_options(
                "PatchOptions",
                "force",
                "Forbidden: may not be specified for non-apply patch",
                "FieldValueForbidden",
            );
        }
        let old = self.objects.get(&Self::key(res, ns, name)).cloned();
        let new = match ct {
            "application/apply-patch+yaml" => {
                let manager = Self::manager(req, true);
                if manager.is_empty() {
                    return status::invalid_options(
                        "PatchOptions",
                        "fieldManager",
                        "Required value: is required for apply patch",
                        "FieldValueRequired",
                    );
                }
                let applied = match parse_body(&req.body) {
                    Ok(v) if v.is_object() => v,
                    Ok(_) => return status::bad_request("the body of the request was not an object"),
                    Err(e) => return status::bad_request(&e),
                };
                if let Err(r) = check_type(res, &applied) {
                    return r;
                }
                if applied["metadata"]["name"].as_str().is_some_and(|n| n != name) {
                    return status::bad_request(&format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        applied["metadata"]["name"].as_str().unwrap_or("")
                    ));
                }
                if let (Some(rv), Some(o)) = (applied["metadata"]["resourceVersion"].as_str(), &old)
                    && rv != o["metadata"]["resourceVersion"].as_str().unwrap_or("")
                {
                    return status::conflict(res, name);
                }
                if res.namespaced
                    && old.is_none()
                    && !self.objects.contains_key(&("namespaces".into(), String::new(), ns.to_string()))
                {
                    return status::namespace_not_found(ns);
                }
                let force = req.query.get("force").is_some_and(|f| f == "true");
                let subresource = status_sub.then_some("status");
                match ssa::apply(old.as_ref(), &applied, &manager, force, &res.api_version(), &now(), subresource) {
                    Ok(mut merged) => {
                        merged["metadata"]["name"] = json!(name);
                        if res.namespaced {
                            merged["metadata"]["namespace"] = json!(ns);
                        }
                        merged["apiVersion"] = json!(res.api_version());
                        merged["kind"] = json!(res.kind);
                        let merged = match &old {
                            Some(o) => merge_subresource(res, o, merged, status_sub),
                            None => merged,
                        };
                        // Ownership was computed by apply: admit records no Update on top.
                        let created = old.is_none();
                        return match self.admit(req, res, old.as_ref(), merged, None, dry_run, true) {
                            Ok(o) => Reply::ok(if created { 201 } else { 200 }, o),
                            Err(r) => r,
                        };
                    }
                    Err(conflicts) => {
                        let causes: Vec<Value> = conflicts
                            .iter()
                            .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", c.manager), "field": c.path}))
                            .collect();
                        return failure(
                            409,
                            "Conflict",
                            &ssa::conflict_message(&conflicts),
                            Some(json!({"causes": causes})),
                        );
                    }
                }
            }
            "application/json-patch+json"
            | "application/merge-patch+json"
            | "application/strategic-merge-patch+json" => {
                let Some(old) = old.clone() else { return status::not_found(res, name) };
                if ct == "application/strategic-merge-patch+json" && res.custom {
                    return status::unsupported_patch(true);
                }
                let mut doc = old.clone();
                if ct == "application/json-patch+json" {
                    let ops: json_patch::Patch = match serde_json::from_slice(&req.body) {
                        Ok(p) => p,
                        Err(e) => return status::bad_request(&format!("error decoding patch: {e}")),
                    };
                    if ops.0.len() > 10_000 {
                        return failure(
                            413,
                            "RequestEntityTooLarge",
                            &format!(
                                "Request entity too large: The allowed maximum operations in a JSON patch is 10000, got {}",
                                ops.0.len()
                            ),
                            None,
                        );
                    }
                    if json_patch::patch(&mut doc, &ops).is_err() {
                        return failure(
                            422,
                            "Invalid",
                            "the server rejected our request due to an error in our request",
                            Some(json!({})),
                        );
                    }
                } else {
                    // Strategic merge on built-ins is served as a merge patch (no patch directives).
                    let p: Value = match serde_json::from_slice(&req.body) {
                        Ok(p) => p,
                        Err(e) => return status::bad_request(&format!("error decoding patch: {e}")),
                    };
                    json_patch::merge(&mut doc, &p);
                }
                if doc["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"] {
                    return status::conflict(res, name);
                }
                if doc["metadata"]["name"] != old["metadata"]["name"] {
                    return status::bad_request(
                        "metadata.name: Invalid value: the name of a patched object cannot change",
                    );
                }
                merge_subresource(res, &old, doc, status_sub)
            }
            _ => return status::unsupported_patch(res.custom),
        };
        let manager = Self::manager(req, false);
        let writer = Writer { manager: &manager, subresource: status_sub.then_some("status") };
        match self.admit(req, res, old.as_ref(), new, Some(writer), dry_run, true) {
            Ok(o) => Reply::ok(200, o),
            Err(r) => r,
        }
    }

    /// `deletecollection`: every object the selectors match goes (or is marked, with
    /// finalizers); the answer lists them.
    fn delete_collection(&mut self, req: &Request, res: &Resource, ns: &str, dry_run: bool) -> Reply {
        let (labels, fields) = match selectors(req, res) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let q = res.qualified();
        let keys: Vec<Key> = self
            .objects
            .iter()
            .filter(|((r, n, _), _)| *r == q && (ns.is_empty() || n == ns))
            .filter(|(_, o)| labels.as_ref().is_none_or(|s| s.matches(&o["metadata"]["labels"])))
            .filter(|(_, o)| fields.as_ref().is_none_or(|f| f.matches(o)))
            .map(|(k, _)| k.clone())
            .collect();
        let mut items = Vec::new();
        for key in keys {
            let before = self.objects.get(&key).cloned();
            let reply = self.delete(&Request::default(), res, &key.1, &key.2, dry_run);
            // Marked (finalizers) objects as they are now, deleted ones as they were.
            if let (200, Some(obj)) = (reply.code, self.objects.get(&key).cloned().or(before)) {
                items.push(obj);
            }
        }
        Reply::ok(
            200,
            json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(),
                   "metadata": {"resourceVersion": self.rv.to_string()}, "items": items}),
        )
    }

    fn delete(&mut self, req: &Request, res: &Resource, ns: &str, name: &str, dry_run: bool) -> Reply {
        let key = Self::key(res, ns, name);
        let Some(obj) = self.objects.get(&key).cloned() else { return status::not_found(res, name) };
        // DeleteOptions.preconditions are checked against the stored object.
        let options = if req.body.is_empty() { Value::Null } else { parse_body(&req.body).unwrap_or(Value::Null) };
        let pre = &options["preconditions"];
        for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
            if let Some(want) = pre[field].as_str()
                && Some(want) != obj["metadata"][field].as_str()
            {
                return status::precondition_failed(
                    res,
                    name,
                    &format!(
                        "Precondition failed: {label} in precondition: {want}, {label} in object meta: {}",
                        obj["metadata"][field].as_str().unwrap_or("")
                    ),
                );
            }
        }
        // With finalizers, deletion only marks the object; it goes once they are removed.
        if obj["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty()) {
            if obj["metadata"]["deletionTimestamp"].is_string() || dry_run {
                return Reply::ok(200, obj);
            }
            let mut marked = obj.clone();
            marked["metadata"]["deletionTimestamp"] = json!(now());
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            marked["metadata"]["resourceVersion"] = json!(self.next_rv());
            self.store(key, marked.clone());
            return Reply::ok(200, marked);
        }
        if !dry_run {
            self.unstore(&key);
            if res.kind == "Namespace" {
                let inside: Vec<Key> = self.objects.keys().filter(|(_, n, _)| n == name).cloned().collect();
                for k in inside {
                    self.unstore(&k);
                }
            }
        }
        if res.custom {
            return Reply::ok(200, obj);
        }
        let mut d = json!({"name": name, "kind": res.plural, "uid": obj["metadata"]["uid"]});
        if !res.group.is_empty() {
            d["group"] = json!(res.group);
        }
        Reply::ok(200, json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": d}))
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

/// Clients cannot set or clear a deletion mark: it stays as the server set it.
fn keep_deletion_state(old: Option<&Value>, obj: &mut Value) {
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
fn unchanged(old: &Value, new: &Value) -> bool {
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

/// Everything but metadata and status: what `generation` counts changes of.
fn spec_of(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

/// With a status subresource, the main resource ignores status and `/status` ignores the rest.
fn merge_subresource(res: &Resource, old: &Value, mut new: Value, status_sub: bool) -> Value {
    if !res.status_subresource {
        return new;
    }
    if status_sub {
        let mut kept = old.clone();
        kept["status"] = new["status"].take();
        kept["metadata"]["resourceVersion"] = new["metadata"]["resourceVersion"].take();
        // An apply to /status recorded its ownership (subresource: status) in the new object.
        if !new["metadata"]["managedFields"].is_null() {
            kept["metadata"]["managedFields"] = new["metadata"]["managedFields"].take();
        }
        kept
    } else {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        new
    }
}

fn check_type(res: &Resource, obj: &Value) -> Result<(), Reply> {
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

fn strip_server_fields(obj: &mut Value) {
    if let Some(m) = obj["metadata"].as_object_mut() {
        for k in ["uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink"] {
            m.remove(k);
        }
    }
}

fn validate_metadata(obj: &Value) -> Result<(), Vec<schema::Cause>> {
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
fn normalize_secret(obj: &mut Value) -> Result<(), String> {
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

/// A create or update body: protobuf (built-ins from kubectl), JSON or YAML.
fn decode_body(req: &Request) -> Result<Value, String> {
    if req.content_type().starts_with("application/vnd.kubernetes.protobuf") {
        return proto::decode(&req.body);
    }
    parse_body(&req.body)
}

/// Bodies come as JSON or YAML (apply patches, kubectl's create).
fn parse_body(body: &[u8]) -> Result<Value, String> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(v);
    }
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
    let y: yaml_serde::Value = yaml_serde::from_str(text).map_err(|e| format!("error decoding YAML: {e}"))?;
    serde_json::to_value(y).map_err(|e| e.to_string())
}

fn encode_continue(rv: &str, last: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"v": "meta.k8s.io/v1", "rv": rv, "start": last}).to_string())
}

fn decode_continue(token: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    Some((v["rv"].as_str()?.to_string(), v["start"].as_str()?.to_string()))
}

/// `ValidateListOptions` for a watch: `sendInitialEvents` needs `resourceVersionMatch=NotOlderThan`
/// and `allowWatchBookmarks=true`, and `resourceVersionMatch` needs `sendInitialEvents`.
fn watch_list_options(req: &Request) -> Result<bool, Reply> {
    let send = req.query.get("sendInitialEvents").map(|v| v == "true");
    let matching = req.query.get("resourceVersionMatch").filter(|m| !m.is_empty());
    let bookmarks = req.query.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let mut errs: Vec<String> = Vec::new();
    if send.is_some() && matching.map(String::as_str) != Some("NotOlderThan") {
        errs.push(
            "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
                .into(),
        );
    }
    if let Some(m) = matching {
        if send.is_none() {
            errs.push("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided".into());
        }
        if m != "NotOlderThan" {
            errs.push(format!("resourceVersionMatch: Unsupported value: {m:?}: supported values: \"NotOlderThan\""));
        }
        if !bookmarks {
            errs.push("allowWatchBookmarks: Forbidden: allowWatchBookmarks needs to be set to true".into());
        }
    }
    if errs.is_empty() {
        return Ok(send == Some(true));
    }
    let joined = if errs.len() == 1 { errs[0].clone() } else { format!("[{}]", errs.join(", ")) };
    Err(failure(
        422,
        "Invalid",
        &format!("ListOptions.meta.k8s.io \"\" is invalid: {joined}"),
        Some(json!({"group": "meta.k8s.io", "kind": "ListOptions"})),
    ))
}

/// The label and field selectors of a list or watch; a malformed one is a 400.
fn selectors(req: &Request, res: &Resource) -> Result<(Option<LabelSelector>, Option<FieldSelector>), Reply> {
    let labels = match req.query.get("labelSelector").filter(|s| !s.is_empty()) {
        Some(s) => Some(
            LabelSelector::parse(s).map_err(|e| status::bad_request(&format!("unable to parse requirement: {e}")))?,
        ),
        None => None,
    };
    // Field labels the built-in kinds add to metadata.name and metadata.namespace.
    let supported: &[&str] = match (res.custom, res.kind.as_str()) {
        (false, "Secret") => &["type"],
        (false, "Node") => &["spec.unschedulable"],
        (false, "Namespace") => &["status.phase"],
        _ => &[],
    };
    let fields = match req.query.get("fieldSelector").filter(|s| !s.is_empty()) {
        Some(s) => Some(FieldSelector::parse(s, supported).map_err(|e| status::bad_request(&e))?),
        None => None,
    };
    Ok((labels, fields))
}

/// What one watch follows.
pub struct WatchSpec {
    qualified: String,
    ns: String,
    selector: Option<LabelSelector>,
    fields: Option<FieldSelector>,
    /// A streaming list: current objects, then a bookmark, then changes.
    pub send_initial_events: bool,
    table: bool,
    resource: Resource,
}

impl WatchSpec {
    fn matches(&self, key: &Key, obj: &Value) -> bool {
        key.0 == self.qualified
            && (self.ns.is_empty() || key.1 == self.ns)
            && self.fields.as_ref().is_none_or(|f| f.matches(obj))
            && self.selector.as_ref().is_none_or(|s| s.matches(&obj["metadata"]["labels"]))
    }
}

#[cfg(test)]
mod tests;
