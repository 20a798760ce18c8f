//! Names of things: what a change writes to or a finding is about, and change identifiers.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::vocab::{ApiKind, ArgoKind};

/// A reference to one object archshift reads or writes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ObjectRef {
    /// A Kubernetes object.
    #[serde(rename_all = "camelCase")]
    Kube { api_version: String, kind: String, namespace: Option<String>, name: String },
    /// A GitLab runner, known by the tag that identifies it for archshift.
    #[serde(rename_all = "camelCase")]
    GitLabRunner { tag: String, id: Option<u64> },
    /// The authentication token of an existing runner (reset to get a new one).
    #[serde(rename_all = "camelCase")]
    RunnerToken { tag: String, id: u64 },
    #[serde(rename_all = "camelCase")]
    ProjectVariable { project: String, key: String },
    #[serde(rename_all = "camelCase")]
    GroupVariable { group: String, key: String },
    /// A file in a GitLab repository, on the branch a change is committed to.
    #[serde(rename_all = "camelCase")]
    CiFile { project: String, path: String, branch: String },
    /// One job of a CI file (findings only; jobs are written through their file).
    #[serde(rename_all = "camelCase")]
    CiJob { project: String, path: String, job: String },
    /// A GitLab project (findings only).
    #[serde(rename_all = "camelCase")]
    Project { path: String },
}

impl ObjectRef {
    pub fn kube(api: ApiKind, namespace: Option<&str>, name: &str) -> Self {
        ObjectRef::Kube {
            api_version: api.api_version.into(),
            kind: api.kind.into(),
            namespace: namespace.map(str::to_string),
            name: name.into(),
        }
    }

    pub fn argo(kind: ArgoKind, namespace: Option<&str>, name: &str) -> Self {
        ObjectRef::Kube {
            api_version: crate::vocab::ARGO_API_VERSION.into(),
            kind: kind.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.into(),
        }
    }

    /// The Kubernetes kind, for references to Kubernetes objects.
    pub fn kube_kind(&self) -> Option<&str> {
        match self {
            ObjectRef::Kube { kind, .. } => Some(kind),
            _ => None,
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectRef::Kube { kind, namespace: Some(ns), name, .. } => write!(f, "{kind} {ns}/{name}"),
            ObjectRef::Kube { kind, namespace: None, name, .. } => write!(f, "{kind} {name}"),
            ObjectRef::GitLabRunner { tag, id: Some(id) } => write!(f, "GitLab runner #{id} ({tag})"),
            ObjectRef::GitLabRunner { tag, id: None } => write!(f, "GitLab runner {tag}"),
            ObjectRef::RunnerToken { tag, id } => write!(f, "token of GitLab runner #{id} ({tag})"),
            ObjectRef::ProjectVariable { project, key } => write!(f, "variable {key} of project {project}"),
            ObjectRef::GroupVariable { group, key } => write!(f, "variable {key} of group {group}"),
            ObjectRef::CiFile { project, path, branch } => write!(f, "{project}:{path}@{branch}"),
            ObjectRef::CiJob { project, path, job } => write!(f, "{project}:{path} job {job}"),
            ObjectRef::Project { path } => write!(f, "project {path}"),
        }
    }
}

/// Identifies a change. Derived from what the change writes to, so the same world planned
/// twice gives the same ids: saved plans, journals and dependencies refer to changes by it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChangeId(String);

impl ChangeId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn node_pool(name: &str) -> Self {
        Self(format!("nodepool/{name}"))
    }
    pub fn runner(tag: &str) -> Self {
        Self(format!("runner/{tag}"))
    }
    pub fn runner_token(tag: &str) -> Self {
        Self(format!("runner-token/{tag}"))
    }
    pub fn secret(namespace: &str, name: &str) -> Self {
        Self(format!("secret/{namespace}/{name}"))
    }
    pub fn release(name: &str) -> Self {
        Self(format!("release/{name}"))
    }
    pub fn project_variable(project: &str, key: &str) -> Self {
        Self(format!("variable/{project}/{key}"))
    }
    pub fn group_variable(group: &str, key: &str) -> Self {
        Self(format!("group-variable/{group}/{key}"))
    }
    pub fn ci_file(project: &str, path: &str) -> Self {
        Self(format!("cifile/{project}/{path}"))
    }
    /// The rollback step for what `forward` changed.
    pub fn rollback(forward: &ChangeId) -> Self {
        Self(format!("rollback/{}", forward.0))
    }
    /// A preparatory rollback step (`pause`) on what `forward` changed.
    pub fn rollback_step(step: &str, forward: &ChangeId) -> Self {
        Self(format!("rollback/{step}/{}", forward.0))
    }
    pub fn argo(kind: ArgoKind, namespace: Option<&str>, name: &str) -> Self {
        match namespace {
            Some(ns) => Self(format!("argo/{kind}/{ns}/{name}")),
            None => Self(format!("argo/{kind}/{name}")),
        }
    }
}

impl fmt::Display for ChangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<&str> for ChangeId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl From<&str> for ChangeId {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}
