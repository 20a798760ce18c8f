//! The engine's ports on the live adapters: [`KubeWriter`] and [`GitLabWriter`].

use serde_json::Value;

use super::ports::{BoxFuture, Cluster, FailKind, Forge, KubeRef, PortError, PortResult, StateKind, StateObjects};
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

fn state_target<'a>(kind: StateKind, namespace: &'a str, name: &'a str) -> Target<'a> {
    let (api_version, kind) = match kind {
        StateKind::Secret => ("v1", "Secret"),
        StateKind::Lease => ("coordination.k8s.io/v1", "Lease"),
    };
    Target { api_version, kind, namespace: Some(namespace), name }
}

/// A state write's failure: a 409 (someone wrote since), or on a replace a 404 (someone
/// deleted it), is a conflict; a 422 is an object the server refuses, not someone else's
/// write; a lost answer is ambiguous, as for every write.
fn state_err(e: KubeError, replace: bool) -> PortError {
    let kind = match &e {
        KubeError::Api { code: 409, .. } => FailKind::Conflict,
        KubeError::Api { code: 404, .. } if replace => FailKind::Conflict,
        KubeError::Transport { .. } | KubeError::Api { code: 500..=599, .. } => FailKind::Ambiguous,
        _ => FailKind::Other,
    };
    PortError { kind, message: e.to_string() }
}

impl StateObjects for KubeWriter {
    fn get<'a>(
        &'a self,
        kind: StateKind,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, PortResult<Option<Value>>> {
        Box::pin(async move { self.own_get(&state_target(kind, namespace, name)).await.map_err(kube_err) })
    }
    fn list<'a>(
        &'a self,
        kind: StateKind,
        namespace: &'a str,
        selector: &'a str,
    ) -> BoxFuture<'a, PortResult<Vec<Value>>> {
        Box::pin(async move { self.own_list(&state_target(kind, namespace, ""), selector).await.map_err(kube_err) })
    }
    fn create<'a>(&'a self, kind: StateKind, namespace: &'a str, body: &'a Value) -> BoxFuture<'a, PortResult<Value>> {
        Box::pin(async move {
            let name = body["metadata"]["name"].as_str().unwrap_or_default();
            KubeWriter::create(self, &state_target(kind, namespace, name), body, false)
                .await
                .map_err(|e| state_err(e, false))
        })
    }
    fn replace<'a>(&'a self, kind: StateKind, namespace: &'a str, body: &'a Value) -> BoxFuture<'a, PortResult<Value>> {
        Box::pin(async move {
            let name = body["metadata"]["name"].as_str().unwrap_or_default();
            self.own_replace(&state_target(kind, namespace, name), body).await.map_err(|e| state_err(e, true))
        })
    }
}
