//! Reads: lists (selectors, paging with continue tokens, Tables) and what watches need
//! (their spec, the events after a resourceVersion, the streaming-list bookmark).

#[allow(clippy::wildcard_imports)]
use super::*;

impl KubeState {
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

    pub(super) fn list_objects(&self, req: &Request, res: &Resource, ns: &str) -> Reply {
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
}

pub(super) fn encode_continue(rv: &str, last: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"v": "meta.k8s.io/v1", "rv": rv, "start": last}).to_string())
}

pub(super) fn decode_continue(token: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    Some((v["rv"].as_str()?.to_string(), v["start"].as_str()?.to_string()))
}

/// `ValidateListOptions` for a watch: `sendInitialEvents` needs `resourceVersionMatch=NotOlderThan`
/// and `allowWatchBookmarks=true`, and `resourceVersionMatch` needs `sendInitialEvents`.
pub(super) fn watch_list_options(req: &Request) -> Result<bool, Reply> {
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
pub(super) fn selectors(
    req: &Request,
    res: &Resource,
) -> Result<(Option<LabelSelector>, Option<FieldSelector>), Reply> {
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
        // pkg/registry/core/pod/strategy.go: PodToSelectableFields.
        (false, "Pod") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        (false, "ReplicaSet") => &["status.replicas"],
        (false, "Job") => &["status.successful"],
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
