//! Reading a change's target as it is now: the object, the file on its branch, the runner.

use super::events::EngineError;
use super::run::{Engine, decode_file, file_path, kube_ref, other};
use serde_json::Value;

use super::check::Current;
use super::ports::{Cluster, Forge, PortError};
use crate::model::{Change, ObjectRef, WriteMethod};
use crate::phases::pipeline::encode_path;
use crate::spec::ScopeKind;

impl<C: Cluster, F: Forge> Engine<'_, C, F> {
    /// The change's target now, and for a CI file the file on the branch it starts from.
    pub(super) async fn current(&self, change: &Change) -> Result<(Current, Option<Current>), EngineError> {
        let id = &change.id;
        match &change.target {
            ObjectRef::Kube { .. } => {
                let t = kube_ref(&change.target).ok_or_else(|| other(id, "not a Kubernetes object"))?;
                let obj = self.cluster.get(t).await.map_err(|e| other(id, e))?;
                Ok((obj.map_or(Current::Absent, Current::Object), None))
            }
            ObjectRef::GitLabRunner { tag, id: runner_id } => {
                let found = self.find_runner(tag, *runner_id).await.map_err(|e| other(id, e))?;
                Ok((found.map_or(Current::Absent, Current::Object), None))
            }
            ObjectRef::RunnerToken { .. } => Ok((Current::Unknown, None)),
            ObjectRef::ProjectVariable { project, key } => {
                let path = format!("/projects/{}/variables/{}", encode_path(project), encode_path(key));
                let v = self.forge.get(&path).await.map_err(|e| other(id, e))?;
                Ok((v.map_or(Current::Absent, Current::Object), None))
            }
            ObjectRef::GroupVariable { group, key } => {
                let path = format!("/groups/{}/variables/{}", encode_path(group), encode_path(key));
                let v = self.forge.get(&path).await.map_err(|e| other(id, e))?;
                Ok((v.map_or(Current::Absent, Current::Object), None))
            }
            ObjectRef::CiFile { project, path, branch } => {
                let cur = self.file(project, path, branch).await.map_err(|e| other(id, e))?;
                let base_branch = match &change.method {
                    WriteMethod::GitLabCommit { merge_request: Some(mr), .. } => Some(mr.target_branch.clone()),
                    WriteMethod::GitLabCommit { start_branch: Some(b), .. } => Some(b.clone()),
                    _ => None,
                };
                let base = match base_branch {
                    Some(b) if &b != branch => Some(self.file(project, path, &b).await.map_err(|e| other(id, e))?),
                    _ => None,
                };
                Ok((cur, base))
            }
            ObjectRef::CiJob { .. } | ObjectRef::Project { .. } => Ok((Current::Unknown, None)),
        }
    }

    pub(super) async fn file(&self, project: &str, path: &str, branch: &str) -> Result<Current, PortError> {
        let api = format!("{}?ref={}", file_path(project, path), encode_path(branch));
        match self.forge.get(&api).await? {
            None => Ok(Current::Absent),
            Some(v) => decode_file(&v).map_err(PortError::other),
        }
    }

    /// The runner archshift knows by `tag` in the plan's scope, with its detail.
    pub(super) async fn find_runner(&self, tag: &str, id: Option<u64>) -> Result<Option<Value>, PortError> {
        if let Some(id) = id {
            return self.forge.get(&format!("/runners/{id}")).await;
        }
        let scope = &self.spec.runners.scope;
        let list = match (scope.kind, scope.path.as_deref()) {
            (ScopeKind::Group, Some(p)) => format!("/groups/{}/runners?type=group_type", encode_path(p)),
            (ScopeKind::Project, Some(p)) => format!("/projects/{}/runners?type=project_type", encode_path(p)),
            _ => "/runners/all?type=instance_type".to_string(),
        };
        let items = self.forge.get_all(&format!("{list}&tag_list={}", encode_path(tag))).await?;
        let mut found = None;
        for item in items {
            let Some(rid) = item["id"].as_u64() else { continue };
            let Some(detail) = self.forge.get(&format!("/runners/{rid}")).await? else { continue };
            let has_tag = detail["tag_list"].as_array().is_some_and(|t| t.iter().any(|x| x == tag));
            if detail["description"] == tag {
                return Ok(Some(detail));
            }
            if has_tag && found.is_none() {
                found = Some(detail);
            }
        }
        Ok(found)
    }
}
