//! The engine's ports on the live adapters: [`KubeWriter`] and [`GitLabWriter`].

use serde_json::Value;

use super::ports::{Cluster, FailKind, Forge, KubeRef, PortError, PortResult};
use crate::live::gitlab::{GitLabError, GitLabWriter};
use crate::live::kube::{KubeError, KubeWriter, Target};

fn target(t: KubeRef<'_>) -> Target<'_> {
    Target { api_version: t.api_version, kind: t.kind, namespace: t.namespace, name: t.name }
}

fn kube_err(e: KubeError) -> PortError {
    let kind = match &e {
        // 409: exists, or a field another manager owns; 422: a failed JSON-patch test (or an
        // invalid object, which the dry run catches first).
        KubeError::Api { code: 409 | 422, .. } => FailKind::Conflict,
        KubeError::Transport { .. } => FailKind::Ambiguous,
        _ => FailKind::Other,
    };
    PortError { kind, message: e.to_string() }
}

fn gitlab_err(e: GitLabError) -> PortError {
    let kind = match &e {
        GitLabError::Status { status: 400 | 409, message, .. }
            if message.contains("has already been taken")
                || message.contains("changed since")
                || message.contains("already exists") =>
        {
            FailKind::Conflict
        }
        GitLabError::Unavailable { .. } | GitLabError::Transport { .. } => FailKind::Ambiguous,
        _ => FailKind::Other,
    };
    PortError { kind, message: e.to_string() }
}

impl Cluster for KubeWriter {
    async fn get(&self, t: KubeRef<'_>) -> PortResult<Option<Value>> {
        KubeWriter::get(self, &target(t)).await.map_err(kube_err)
    }
    async fn create(&self, t: KubeRef<'_>, body: &Value, dry_run: bool) -> PortResult<Value> {
        KubeWriter::create(self, &target(t), body, dry_run).await.map_err(kube_err)
    }
    async fn apply(&self, t: KubeRef<'_>, patch: &Value, manager: &str, dry_run: bool) -> PortResult<Value> {
        KubeWriter::apply(self, &target(t), patch, manager, dry_run).await.map_err(kube_err)
    }
    async fn json_patch(&self, t: KubeRef<'_>, ops: &[Value], dry_run: bool) -> PortResult<Value> {
        KubeWriter::json_patch(self, &target(t), ops, dry_run).await.map_err(kube_err)
    }
    async fn delete(
        &self,
        t: KubeRef<'_>,
        uid: Option<&str>,
        resource_version: Option<&str>,
        dry_run: bool,
    ) -> PortResult<()> {
        KubeWriter::delete(self, &target(t), uid, resource_version, dry_run).await.map_err(kube_err)
    }
    async fn pods_on(&self, pool: &str, arch: &str) -> PortResult<usize> {
        KubeWriter::pods_on(self, pool, arch).await.map_err(kube_err)
    }
}

impl Forge for GitLabWriter {
    async fn get(&self, path: &str) -> PortResult<Option<Value>> {
        GitLabWriter::get(self, path).await.map_err(gitlab_err)
    }
    async fn get_all(&self, path: &str) -> PortResult<Vec<Value>> {
        GitLabWriter::get_all(self, path).await.map_err(gitlab_err)
    }
    async fn send(&self, method: &str, path: &str, body: Option<&Value>) -> PortResult<Value> {
        GitLabWriter::send(self, method, path, body).await.map_err(gitlab_err)
    }
}
