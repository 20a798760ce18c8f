//! Writes: admission (schema, metadata rules, deletion state, no-op detection), create,
//! update, the three patch types and server-side apply, delete with preconditions and
//! finalizers, deletecollection.

#[allow(clippy::wildcard_imports)]
use super::*;

impl KubeState {
    pub(super) fn manager(req: &Request, default_for_apply: bool) -> String {
        match req.query.get("fieldManager") {
            Some(m) => m.clone(),
            None if default_for_apply => String::new(),
            // The server names an unnamed manager after the client's user agent.
            None => req.user_agent().split('/').next().filter(|s| !s.is_empty()).unwrap_or("unknown").to_string(),
        }
    }

    /// Checks the new object like the real server does and stores it unless dry-run.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn admit(
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
        if !res.custom
            && res.kind == "Lease"
            && let Err(e) = decode_lease(&obj)
        {
            return Err(status::bad_request(&e));
        }
        keep_deletion_state(old, &mut obj);
        let mut causes = validate_metadata(&obj).err().unwrap_or_default();
        if !res.custom {
            causes.extend(validate_builtin(&res.kind, &obj));
        }
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

    pub(super) fn create(&mut self, req: &Request, res: &Resource, ns: &str, dry_run: bool) -> Reply {
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

    pub(super) fn update(
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

    pub(super) fn patch(
        &mut self,
        req: &Request,
        res: &Resource,
        ns: &str,
        name: &str,
        status_sub: bool,
        dry_run: bool,
    ) -> Reply {
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
    pub(super) fn delete_collection(&mut self, req: &Request, res: &Resource, ns: &str, dry_run: bool) -> Reply {
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

    pub(super) fn delete(&mut self, req: &Request, res: &Resource, ns: &str, name: &str, dry_run: bool) -> Reply {
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

/// With a status subresource, the main resource ignores status and `/status` ignores the rest.
pub(super) fn merge_subresource(res: &Resource, old: &Value, mut new: Value, status_sub: bool) -> Value {
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

/// A create or update body: protobuf (built-ins from kubectl), JSON or YAML.
pub(super) fn decode_body(req: &Request) -> Result<Value, String> {
    if req.content_type().starts_with("application/vnd.kubernetes.protobuf") {
        return proto::decode(&req.body);
    }
    parse_body(&req.body)
}

/// Bodies come as JSON or YAML (apply patches, kubectl's create).
pub(super) fn parse_body(body: &[u8]) -> Result<Value, String> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(v);
    }
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
    let y: yaml_serde::Value = yaml_serde::from_str(text).map_err(|e| format!("error decoding YAML: {e}"))?;
    serde_json::to_value(y).map_err(|e| e.to_string())
}
