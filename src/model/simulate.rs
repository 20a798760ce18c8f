//! What the world looks like once a change has been applied, computed without IO.
//!
//! The engine uses it to know what to verify; tests use it to prove planners idempotent
//! (planning against the state a plan produces yields no changes).

use serde_json::Value;

use super::{Action, Change, CiVariable, Document, GitLabRunner, ObjectRef, ObservedState, SecretMeta, kube_id};

/// Applies `change` to `state` as the real API would, or says why it cannot.
pub fn apply_change(state: &mut ObservedState, change: &Change) -> Result<(), String> {
    let after = match &change.after {
        Some(Document::Object(v)) => Some(v),
        Some(Document::Text(_)) | None => None,
    };
    match &change.target {
        ObjectRef::Kube { kind, namespace, name, .. } => {
            if kind == "Secret" {
                state.secrets.retain(|s| !(s.name == *name && Some(&s.namespace) == namespace.as_ref()));
                if let Some(obj) = after {
                    let mut keys: Vec<String> = ["data", "stringData"]
                        .iter()
                        .filter_map(|f| obj[f].as_object())
                        .flat_map(|m| m.keys().cloned())
                        .collect();
                    keys.sort();
                    keys.dedup();
                    state.secrets.push(SecretMeta {
                        namespace: namespace.clone().unwrap_or_default(),
                        name: name.clone(),
                        keys,
                        resource_version: "simulated".into(),
                    });
                }
                return Ok(());
            }
            let list = match kind.as_str() {
                "NodePool" => &mut state.node_pools,
                "Release" => &mut state.releases,
                "WorkflowTemplate" | "CronWorkflow" => &mut state.argo,
                other => return Err(format!("cannot simulate a change to a {other}")),
            };
            let pos = list.iter().position(|o| {
                let (k, ns, n) = kube_id(o);
                k == kind && n == name && ns == namespace.as_deref()
            });
            match (change.action, pos, after) {
                (Action::Delete, Some(i), _) => {
                    list.remove(i);
                }
                (Action::Create, None, Some(obj)) => list.push(bump(obj.clone(), "")),
                (Action::Update, Some(i), Some(obj)) => {
                    let old = list[i]["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string();
                    list[i] = bump(obj.clone(), &old);
                }
                _ => return Err(format!("{} {}: target state does not allow it", change.action, change.target)),
            }
        }
        ObjectRef::GitLabRunner { tag, id: runner_id } => {
            let tags = |obj: &Value| -> Option<Vec<String>> {
                obj["tag_list"].as_array().map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
            };
            match change.action {
                Action::Create => {
                    let obj = after.ok_or("runner create without a body")?;
                    let id = state.runners.iter().map(|r| r.id).max().unwrap_or(0) + 1;
                    state.runners.push(GitLabRunner {
                        id,
                        description: obj["description"].as_str().unwrap_or(tag).to_string(),
                        runner_type: obj["runner_type"].as_str().unwrap_or("").to_string(),
                        status: "never_contacted".into(),
                        paused: obj["paused"].as_bool().unwrap_or(false),
                        tag_list: tags(obj).unwrap_or_default(),
                        // POST /user/runners defaults run_untagged to true.
                        run_untagged: obj["run_untagged"].as_bool().unwrap_or(true),
                        locked: obj["locked"].as_bool().unwrap_or(false),
                        manager_architectures: vec![],
                        access_level: obj["access_level"].as_str().map(str::to_string),
                        maximum_timeout: obj["maximum_timeout"].as_u64(),
                    });
                }
                // PUT /runners/:id changes the fields it is sent.
                Action::Update => {
                    let obj = after.ok_or("runner update without a body")?;
                    let id = (*runner_id).ok_or("runner update without an id")?;
                    let r = state.runners.iter_mut().find(|r| r.id == id).ok_or("runner to update is gone")?;
                    if let Some(t) = tags(obj) {
                        r.tag_list = t;
                    }
                    if let Some(u) = obj["run_untagged"].as_bool() {
                        r.run_untagged = u;
                    }
                    if let Some(p) = obj["paused"].as_bool() {
                        r.paused = p;
                    }
                    if let Some(a) = obj["access_level"].as_str() {
                        r.access_level = Some(a.to_string());
                    }
                    if let Some(t) = obj["maximum_timeout"].as_u64() {
                        r.maximum_timeout = Some(t);
                    }
                }
                Action::Delete => {
                    let id = (*runner_id).ok_or("runner delete without an id")?;
                    state.runners.retain(|r| r.id != id);
                }
            }
        }
        ObjectRef::RunnerToken { .. } => {}
        ObjectRef::ProjectVariable { key, .. } | ObjectRef::GroupVariable { key, .. } => {
            let list = match &change.target {
                ObjectRef::GroupVariable { group, .. } => state.group_variables.entry(group.clone()).or_default(),
                _ => &mut state.project_variables,
            };
            let new = after.and_then(CiVariable::from_json);
            let scope = new.as_ref().map_or("*".to_string(), |v| v.environment_scope.clone());
            list.retain(|v| !(v.key == *key && v.environment_scope == scope));
            if change.action != Action::Delete {
                list.push(new.ok_or("variable change without a valid after document")?);
            }
        }
        ObjectRef::CiFile { project, path, .. } => {
            let Some(Document::Text(text)) = &change.after else {
                return Err("CI file change without text".into());
            };
            let file = match &mut state.ci_file {
                Some(f) if f.project == *project && f.path == *path => Some(f),
                _ => state
                    .other_projects
                    .iter_mut()
                    .filter(|p| p.path == *project)
                    .find_map(|p| p.file.as_mut().filter(|f| f.path == *path)),
            };
            let file = file.ok_or_else(|| format!("{project}:{path} is not in the observed state"))?;
            // Merged (or committed) onto the branch it was read from.
            file.content = text.clone();
            file.last_commit_id = format!("{}+", file.last_commit_id);
        }
        ObjectRef::CiJob { .. } | ObjectRef::Project { .. } => {
            return Err(format!("{} is not written by changes", change.target));
        }
    }
    Ok(())
}

fn bump(mut obj: Value, old: &str) -> Value {
    obj["metadata"]["resourceVersion"] = Value::String(format!("{old}+"));
    obj
}
