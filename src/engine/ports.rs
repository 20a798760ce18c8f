//! The two small traits the engine writes through. `live` implements them against a real
//! cluster and GitLab (see [`super::live`]); tests can implement them in memory.

use std::future::Future;

use serde_json::Value;

/// A Kubernetes object, named as a plan's `ObjectRef::Kube` names it.
#[derive(Debug, Clone, Copy)]
pub struct KubeRef<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
}

/// How a call failed, as far as the engine cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    /// A guard refused the write: a failed JSON-patch `test`, a field another manager owns,
    /// an existing object, a file changed since it was read. Someone else wrote first.
    Conflict,
    /// A write whose outcome is unknown (timeout, 5xx): read back before doing anything else.
    Ambiguous,
    /// Anything else (permission, transport, bad request).
    Other,
}

/// A failed call: its kind and the adapter's one-line message (never a token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PortError {
    pub kind: FailKind,
    pub message: String,
}

impl PortError {
    pub fn other(message: impl Into<String>) -> PortError {
        PortError { kind: FailKind::Other, message: message.into() }
    }
}

pub type PortResult<T> = Result<T, PortError>;

/// The Kubernetes API, as the engine uses it. Every write can be a server-side dry run.
pub trait Cluster: Sync {
    /// The object, `None` when absent. A Secret comes back with its values blanked.
    fn get(&self, t: KubeRef<'_>) -> impl Future<Output = PortResult<Option<Value>>> + Send;
    fn create(&self, t: KubeRef<'_>, body: &Value, dry_run: bool) -> impl Future<Output = PortResult<Value>> + Send;
    /// Server-side apply as `manager`, never forced.
    fn apply(
        &self,
        t: KubeRef<'_>,
        patch: &Value,
        manager: &str,
        dry_run: bool,
    ) -> impl Future<Output = PortResult<Value>> + Send;
    fn json_patch(
        &self,
        t: KubeRef<'_>,
        ops: &[Value],
        dry_run: bool,
    ) -> impl Future<Output = PortResult<Value>> + Send;
    /// Delete with uid and resourceVersion preconditions; absent already is success.
    fn delete(
        &self,
        t: KubeRef<'_>,
        uid: Option<&str>,
        resource_version: Option<&str>,
        dry_run: bool,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// Pods still running on `pool`'s nodes of `arch`.
    fn pods_on(&self, pool: &str, arch: &str) -> impl Future<Output = PortResult<usize>> + Send;
}

/// The GitLab REST API (paths below `/api/v4`), as the engine uses it.
pub trait Forge: Sync {
    /// `GET`, `None` on 404.
    fn get(&self, path: &str) -> impl Future<Output = PortResult<Option<Value>>> + Send;
    /// Every page of a list.
    fn get_all(&self, path: &str) -> impl Future<Output = PortResult<Vec<Value>>> + Send;
    /// `POST`, `PUT` or `DELETE` with a JSON body.
    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> impl Future<Output = PortResult<Value>> + Send;
}

/// A boxed future, so that [`StateObjects`] can be shared as a trait object (the Lease's
/// renewal runs on its own task).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The two kinds of object a migration's state is kept in, in the runners' namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    /// `v1` Secrets: the journal, compressed, split across objects.
    Secret,
    /// `coordination.k8s.io/v1` Leases: which run holds the migration.
    Lease,
}

impl StateKind {
    /// As RBAC and error messages name the resource.
    pub fn resource(self) -> &'static str {
        match self {
            StateKind::Secret => "secrets",
            StateKind::Lease => "leases.coordination.k8s.io",
        }
    }
}

/// The objects a migration's state lives in, raw as the API server serves them (a Secret's
/// `data` base64, not blanked: these are archshift's own), each write guarded by
/// `metadata.resourceVersion`.
pub trait StateObjects: Send + Sync {
    fn get<'a>(
        &'a self,
        kind: StateKind,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, PortResult<Option<Value>>>;
    /// Every object of `kind` in `namespace` matching the label selector.
    fn list<'a>(
        &'a self,
        kind: StateKind,
        namespace: &'a str,
        selector: &'a str,
    ) -> BoxFuture<'a, PortResult<Vec<Value>>>;
    /// Creates; `Conflict` when it exists already.
    fn create<'a>(&'a self, kind: StateKind, namespace: &'a str, body: &'a Value) -> BoxFuture<'a, PortResult<Value>>;
    /// Replaces (PUT) the object named in `body`, guarded by its `metadata.resourceVersion`;
    /// `Conflict` when someone wrote it since (or deleted it).
    fn replace<'a>(&'a self, kind: StateKind, namespace: &'a str, body: &'a Value) -> BoxFuture<'a, PortResult<Value>>;
}
