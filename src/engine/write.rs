//! Writing one change: its bindings filled in, its server-side dry run, the guarded write,
//! the read-back of a write whose answer was lost, and a CI file's merge request.

use super::events::{EngineError, Event};
use super::run::{Engine, kube_ref, other};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::check::{self, Current, Holds};
use super::ports::{Cluster, FailKind, Forge, KubeRef, PortError};
use crate::live::secret::Token;
use crate::model::{Change, ChangeId, Document, ObjectRef, Output, WriteMethod};
use crate::phases::pipeline::encode_path;

impl<C: Cluster, F: Forge> Engine<'_, C, F> {
    /// The change's body with its bindings filled in.
    pub(super) async fn bound(&mut self, change: &Change, doc: &Value) -> Result<Value, EngineError> {
        let mut body = doc.clone();
        for b in &change.bindings {
            let Output::RunnerToken = b.output;
            let token = match self.tokens.get(&b.from) {
                Some(t) => t.clone(),
                // Resumed after the runner was created, or its creation's answer was lost: the
                // token never reached this run, so it is reset (the runner has no manager yet
                // that could use the old one).
                None => self.reset_token(change, &b.from).await?,
            };
            if let Some(slot) = body.pointer_mut(&b.pointer) {
                *slot = Value::String(token.expose().to_string());
            }
        }
        // The legacy flow: the registration token comes from the variable the plan names.
        let reg = &self.spec.runners.registration;
        if reg.style == crate::spec::RegistrationStyle::RegistrationToken
            && let Some(slot) = body.pointer_mut("/stringData/runner-registration-token")
        {
            let var = reg.registration_token_env.as_deref().unwrap_or("");
            let token = Token::from_env(var).ok_or_else(|| {
                other(
                    &change.id,
                    format!("set {var} to the runner registration token (the plan's runners.registration)"),
                )
            })?;
            *slot = Value::String(token.expose().to_string());
        }
        Ok(body)
    }

    pub(super) async fn reset_token(&mut self, change: &Change, from: &ChangeId) -> Result<Token, EngineError> {
        let tag = self
            .journal
            .records()
            .iter()
            .rev()
            .find(|r| &r.change == from)
            .and_then(|r| r.runner_id)
            .map(|id| (String::new(), Some(id)));
        let (tag, id) = match tag {
            Some(t) => t,
            // A token reset whose token was lost (killed before its Secret, or the Secret's
            // write failed) is done again the same way: the last token never reached a Secret.
            None => match from.as_str().strip_prefix("runner/").or_else(|| from.as_str().strip_prefix("runner-token/"))
            {
                Some(tag) => (tag.to_string(), None),
                None => return Err(other(&change.id, format!("no token from {from} in this run"))),
            },
        };
        let runner = self
            .find_runner(&tag, id)
            .await
            .map_err(|e| other(&change.id, e))?
            .ok_or_else(|| other(&change.id, format!("the runner {from} created is gone")))?;
        let rid = runner["id"].as_u64().unwrap_or_default();
        let v = self
            .forge
            .send("POST", &format!("/runners/{rid}/reset_authentication_token"), None)
            .await
            .map_err(|e| other(&change.id, e))?;
        let token = Token::new(v["token"].as_str().unwrap_or_default(), format!("runner #{rid}"));
        (self.emit)(&Event::Notice {
            message: format!("reset the token of runner #{rid}: the one issued at creation never reached this run"),
        });
        self.tokens.insert(from.clone(), token.clone());
        Ok(token)
    }

    /// DELETE guarded by the uid and the resourceVersion read just before: a controller's
    /// status update since the check moves resourceVersion, and the same uid and generation
    /// mean nobody changed what was checked. A 409 (the resourceVersion moved again between
    /// that read and the delete, as provider-helm's status updates do) is read again,
    /// checked again and retried, a few times, before it counts as a conflict.
    pub(super) async fn delete_fresh(&self, t: KubeRef<'_>, cur: &Current, dry_run: bool) -> Result<(), PortError> {
        const ATTEMPTS: u64 = 4;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(fresh) = self.cluster.get(t).await? else { return Ok(()) };
            let checked = match cur {
                Current::Object(v) => v,
                _ => &fresh,
            };
            let meta = |v: &Value, k: &str| v["metadata"][k].clone();
            if meta(&fresh, "uid") != meta(checked, "uid") || meta(&fresh, "generation") != meta(checked, "generation")
            {
                return Err(PortError {
                    kind: FailKind::Conflict,
                    message: "it was replaced or its spec changed since it was checked".into(),
                });
            }
            let (uid, rv) = (fresh["metadata"]["uid"].as_str(), fresh["metadata"]["resourceVersion"].as_str());
            match self.cluster.delete(t, uid, rv, dry_run).await {
                Err(e) if e.kind == FailKind::Conflict && attempt < ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                result => return result,
            }
        }
    }

    pub(super) async fn dry_run(&mut self, change: &Change, cur: &Current) -> Result<(), EngineError> {
        let id = &change.id;
        let result = match (&change.method, kube_ref(&change.target)) {
            (WriteMethod::KubeCreate, Some(t)) => {
                let mut body = change.after_object().cloned().unwrap_or(Value::Null);
                for b in &change.bindings {
                    if let Some(slot) = body.pointer_mut(&b.pointer) {
                        *slot = Value::String("dry-run".into());
                    }
                }
                self.cluster.create(t, &body, true).await.map(|_| "the API server accepts the object".to_string())
            }
            (WriteMethod::KubeApply { field_manager, patch }, Some(t)) => self
                .cluster
                .apply(t, patch, field_manager, true)
                .await
                .map(|_| "server-side apply accepted, no conflict".to_string()),
            (WriteMethod::KubeJsonPatch { patch }, Some(t)) => self
                .cluster
                .json_patch(t, patch, true)
                .await
                .map(|_| "the patch applies and its tests pass".to_string()),
            (WriteMethod::KubeDelete, Some(t)) => {
                self.delete_fresh(t, cur, true).await.map(|()| "the delete is allowed".to_string())
            }
            (WriteMethod::GitLabCommit { .. }, _) => {
                let ObjectRef::CiFile { project, .. } = &change.target else {
                    return Err(other(id, "a commit without a file"));
                };
                let Some(Document::Text(content)) = &change.after else { return Err(other(id, "no content")) };
                let lint = self
                    .forge
                    .send(
                        "POST",
                        &format!("/projects/{}/ci/lint", encode_path(project)),
                        Some(&json!({"content": content, "dry_run": true})),
                    )
                    .await
                    .map_err(|e| other(id, e))?;
                if lint["valid"] != true {
                    let errors: Vec<String> = lint["errors"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|e| e.as_str().map(str::to_string))
                        .collect();
                    return Err(other(id, format!("GitLab's CI lint rejects the new file: {}", errors.join("; "))));
                }
                Ok("GitLab's CI lint accepts the new file".to_string())
            }
            (WriteMethod::GitLab { .. }, _) => {
                Ok("GitLab has no dry run for this call; its precondition was checked just now".to_string())
            }
            _ => Err(PortError::other("a Kubernetes write for a target that is not a Kubernetes object")),
        };
        match result {
            Ok(result) => {
                (self.emit)(&Event::DryRun { id: id.to_string(), result });
                Ok(())
            }
            Err(e) if e.kind == FailKind::Conflict => Err(EngineError::Stale {
                drifted: vec![(id.to_string(), format!("{}: the server refused the dry run: {e}", change.target))],
            }),
            Err(e) => Err(other(id, format!("dry run: {e}"))),
        }
    }

    /// The write itself; returns the id of a runner it created.
    pub(super) async fn write(
        &mut self,
        change: &Change,
        cur: &Current,
        base: Option<&Current>,
        holds: &Holds,
    ) -> Result<Option<u64>, EngineError> {
        let id = &change.id;
        let conflict = |e: PortError| -> EngineError {
            if e.kind == FailKind::Conflict {
                EngineError::Stale {
                    drifted: vec![(
                        id.to_string(),
                        format!("{}: another writer changed it between the check and the write: {e}", change.target),
                    )],
                }
            } else {
                other(id, e)
            }
        };
        match (&change.method, kube_ref(&change.target)) {
            (WriteMethod::KubeCreate, Some(t)) => {
                let body = self.bound(change, change.after_object().unwrap_or(&Value::Null)).await?;
                match self.cluster.create(t, &body, false).await {
                    Ok(_) => Ok(None),
                    Err(e) if e.kind == FailKind::Ambiguous => self.read_back(change, e).await,
                    Err(e) => Err(conflict(e)),
                }
            }
            (WriteMethod::KubeApply { field_manager, patch }, Some(t)) => {
                let patch = self.bound(change, patch).await?;
                match self.cluster.apply(t, &patch, field_manager, false).await {
                    Ok(_) => Ok(None),
                    Err(e) if e.kind == FailKind::Ambiguous => self.read_back(change, e).await,
                    Err(e) => Err(conflict(e)),
                }
            }
            (WriteMethod::KubeJsonPatch { patch }, Some(t)) => match self.cluster.json_patch(t, patch, false).await {
                Ok(_) => Ok(None),
                Err(e) if e.kind == FailKind::Ambiguous => self.read_back(change, e).await,
                Err(e) => Err(conflict(e)),
            },
            (WriteMethod::KubeDelete, Some(t)) => match self.delete_fresh(t, cur, false).await {
                Ok(()) => Ok(None),
                Err(e) if e.kind == FailKind::Ambiguous => self.read_back(change, e).await,
                Err(e) => Err(conflict(e)),
            },
            (WriteMethod::GitLab { method, path }, _) => {
                let method = method.to_string();
                let body = match change.after_object() {
                    Some(doc) if method != "DELETE" => Some(self.bound(change, doc).await?),
                    _ => None,
                };
                let answer = match self.forge.send(&method, path, body.as_ref()).await {
                    Ok(v) => v,
                    // Unknown whether it happened: a second runner would be worse than a read.
                    Err(e) if e.kind == FailKind::Ambiguous => return self.read_back(change, e).await,
                    Err(e) => return Err(conflict(e)),
                };
                if change.outputs().contains(&Output::RunnerToken) {
                    let token = answer["token"].as_str().unwrap_or_default();
                    if token.is_empty() {
                        return Err(other(id, "GitLab returned no runner token"));
                    }
                    let rid = answer["id"].as_u64();
                    self.tokens.insert(change.id.clone(), Token::new(token, format!("runner {}", change.id)));
                    return Ok(rid);
                }
                Ok(None)
            }
            (WriteMethod::GitLabCommit { branch, start_branch, merge_request }, _) => {
                let ObjectRef::CiFile { project, path, .. } = &change.target else {
                    return Err(other(id, "a commit without a file"));
                };
                let Some(Document::Text(content)) = &change.after else { return Err(other(id, "no content")) };
                let project_api = format!("/projects/{}", encode_path(project));
                if !matches!(holds, Holds::Partly(_)) {
                    let branch_exists = self
                        .forge
                        .get(&format!("{project_api}/repository/branches/{}", encode_path(branch)))
                        .await
                        .map_err(|e| other(id, e))?
                        .is_some();
                    let (from, lock) = if branch_exists {
                        match cur {
                            Current::File { last_commit_id, .. }
                                if start_branch.is_none() || merge_request.is_none() =>
                            {
                                (None, Some(last_commit_id.clone()))
                            }
                            _ => {
                                return Err(EngineError::Refused(format!(
                                    "branch {branch} of {project} exists already with other content; delete it or choose another delivery.branch"
                                )));
                            }
                        }
                    } else {
                        let lock = match base.unwrap_or(cur) {
                            Current::File { last_commit_id, .. } => Some(last_commit_id.clone()),
                            _ => None,
                        };
                        (start_branch.clone(), lock)
                    };
                    let action = if lock.is_some() { "update" } else { "create" };
                    let mut act = json!({"action": action, "file_path": path, "content": content});
                    if let Some(lock) = lock {
                        act["last_commit_id"] = json!(lock);
                    }
                    let message = match merge_request {
                        Some(mr) => mr.title.clone(),
                        None => format!("archshift: {}", change.summary),
                    };
                    let mut body = json!({"branch": branch, "commit_message": message, "actions": [act]});
                    if let Some(from) = from {
                        body["start_branch"] = json!(from);
                    }
                    self.forge
                        .send("POST", &format!("{project_api}/repository/commits"), Some(&body))
                        .await
                        .map_err(conflict)?;
                }
                if let Some(mr) = merge_request {
                    self.merge_request(change, &project_api, branch, mr).await?;
                }
                Ok(None)
            }
            _ => Err(other(id, "a Kubernetes write for a target that is not a Kubernetes object")),
        }
    }

    /// A write whose answer was lost (a timeout, a dropped connection, a 5xx): it may or may
    /// not have happened, so it is read back instead of sent again. Done when the step now
    /// holds (a deletion: the object is gone or on its way out); the created runner's id is
    /// returned for the journal. Otherwise the step fails and the journal says it was intended.
    pub(super) async fn read_back(&self, change: &Change, e: PortError) -> Result<Option<u64>, EngineError> {
        let started = Instant::now();
        loop {
            let (now, base) = self.current(change).await?;
            if check::holds(change, &now, base.as_ref()) == Holds::Yes {
                (self.emit)(&Event::Notice {
                    message: format!("the write's answer was lost ({e}); reading back shows it happened"),
                });
                return Ok(match now {
                    Current::Object(v) if matches!(change.target, ObjectRef::GitLabRunner { .. }) => v["id"].as_u64(),
                    _ => None,
                });
            }
            // The server may still be working on it after the client gave up: look again.
            if started.elapsed() >= self.settings.lost_write {
                break;
            }
            tokio::time::sleep(self.settings.poll).await;
        }
        Err(other(
            &change.id,
            format!(
                "the write's answer was lost and reading back for {}s does not show it: {e}; if the server is still carrying it out, the same apply run again later finds it: it reads back first and never writes it twice",
                self.settings.lost_write.as_secs()
            ),
        ))
    }

    /// Opens (or finds) the merge request, and merges it when the plan says archshift may.
    pub(super) async fn merge_request(
        &mut self,
        change: &Change,
        project_api: &str,
        branch: &str,
        mr: &crate::model::MergeRequest,
    ) -> Result<(), EngineError> {
        let id = &change.id;
        let open = self
            .forge
            .get_all(&format!(
                "{project_api}/merge_requests?state=opened&source_branch={}&target_branch={}",
                encode_path(branch),
                encode_path(&mr.target_branch)
            ))
            .await
            .map_err(|e| other(id, e))?;
        let found = match open.into_iter().next() {
            Some(m) => m,
            None => self
                .forge
                .send(
                    "POST",
                    &format!("{project_api}/merge_requests"),
                    Some(&json!({"source_branch": branch, "target_branch": mr.target_branch, "title": mr.title,
                                 "remove_source_branch": true})),
                )
                .await
                .map_err(|e| other(id, e))?,
        };
        let iid = found["iid"].as_u64().unwrap_or_default();
        let url = found["web_url"].as_str().unwrap_or_default().to_string();
        (self.emit)(&Event::Notice { message: format!("merge request !{iid}: {url}") });
        if !mr.merge {
            (self.emit)(&Event::Notice { message: format!("waiting for a person to merge {url}") });
            return Ok(());
        }
        // GitLab computes mergeability asynchronously after creation.
        let started = Instant::now();
        loop {
            let m = self
                .forge
                .get(&format!("{project_api}/merge_requests/{iid}"))
                .await
                .map_err(|e| other(id, e))?
                .unwrap_or(Value::Null);
            let status = m["detailed_merge_status"].as_str().or(m["merge_status"].as_str()).unwrap_or("");
            if m["state"] == "merged" {
                return Ok(());
            }
            if matches!(status, "mergeable" | "can_be_merged") {
                break;
            }
            if started.elapsed() > Duration::from_secs(120) || matches!(status, "cannot_be_merged" | "conflict") {
                return Err(other(id, format!("merge request {url} cannot be merged ({status})")));
            }
            tokio::time::sleep(self.settings.poll).await;
        }
        self.forge
            .send(
                "PUT",
                &format!("{project_api}/merge_requests/{iid}/merge"),
                Some(&json!({"should_remove_source_branch": true})),
            )
            .await
            .map_err(|e| other(id, format!("merging {url}: {e}")))?;
        (self.emit)(&Event::Notice { message: format!("merged {url}") });
        Ok(())
    }
}
