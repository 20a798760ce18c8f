//! The Kubernetes adapter (kube-rs), read side: the objects the planners read, as plain JSON
//! or the model's types, listed in pages.
//!
//! [`KubeReader`] has no method that writes (its one POST is a SelfSubjectAccessReview). A kind the cluster does not serve (no Karpenter,
//! no Crossplane, no Argo) is `Ok(None)`, so the caller reports it as a finding instead of
//! failing; Secrets leave this module as names and key names only.

use std::path::Path;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::Value;

use super::root_cause;
use crate::model::{ClusterIdentity, SecretMeta};
pub use crate::vocab::plural;

/// How many objects a list page asks for.
const PAGE: u32 = 500;

/// Why reading the cluster failed, said so a person can act on it.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot load the Kubernetes configuration ({where_}): {cause}")]
    Config { where_: String, cause: String },
    #[error(
        "the kubeconfig's context {context} sets insecure-skip-tls-verify: archshift checks the cluster's certificate unless --insecure-skip-tls-verify is given (give the cluster's CA as certificate-authority-data instead)"
    )]
    Insecure { context: String },
    #[error(
        "cannot reach the Kubernetes API at {server} (context {context}): {cause}; is the cluster up, and is this the right --context?"
    )]
    Transport { server: String, context: String, cause: String },
    #[error(
        "the Kubernetes API at {server} rejected the credentials of the current context (401): log in again or pick another --context"
    )]
    Unauthorized { server: String },
    #[error("the current Kubernetes identity may not {verb} {resource} (403): {message}")]
    Forbidden { verb: String, resource: String, message: String },
    #[error("the Kubernetes API answered {code} to {verb} {resource}: {message}")]
    Api { verb: String, resource: String, code: u16, message: String },
    #[error("unexpected {resource} object from the Kubernetes API: {cause}")]
    Decode { resource: String, cause: String },
}

/// A kind to read: group, version, kind and plural.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
}

pub const NODE_POOL: Kind = Kind { group: "karpenter.sh", version: "v1", kind: "NodePool", plural: "nodepools" };
pub const EC2_NODE_CLASS: Kind =
    Kind { group: "karpenter.k8s.aws", version: "v1", kind: "EC2NodeClass", plural: "ec2nodeclasses" };
pub const RELEASE: Kind = Kind { group: "helm.crossplane.io", version: "v1beta1", kind: "Release", plural: "releases" };
pub const WORKFLOW_TEMPLATE: Kind =
    Kind { group: "argoproj.io", version: "v1alpha1", kind: "WorkflowTemplate", plural: "workflowtemplates" };
pub const CRON_WORKFLOW: Kind =
    Kind { group: "argoproj.io", version: "v1alpha1", kind: "CronWorkflow", plural: "cronworkflows" };
pub const CLUSTER_WORKFLOW_TEMPLATE: Kind = Kind {
    group: "argoproj.io",
    version: "v1alpha1",
    kind: "ClusterWorkflowTemplate",
    plural: "clusterworkflowtemplates",
};
pub const NODE: Kind = Kind { group: "", version: "v1", kind: "Node", plural: "nodes" };
const SECRET: Kind = Kind { group: "", version: "v1", kind: "Secret", plural: "secrets" };
pub const POD: Kind = Kind { group: "", version: "v1", kind: "Pod", plural: "pods" };
pub const REPLICA_SET: Kind = Kind { group: "apps", version: "v1", kind: "ReplicaSet", plural: "replicasets" };
pub const DEPLOYMENT: Kind = Kind { group: "apps", version: "v1", kind: "Deployment", plural: "deployments" };
pub const STATEFUL_SET: Kind = Kind { group: "apps", version: "v1", kind: "StatefulSet", plural: "statefulsets" };
pub const DAEMON_SET: Kind = Kind { group: "apps", version: "v1", kind: "DaemonSet", plural: "daemonsets" };
pub const JOB: Kind = Kind { group: "batch", version: "v1", kind: "Job", plural: "jobs" };
pub const CRON_JOB: Kind = Kind { group: "batch", version: "v1", kind: "CronJob", plural: "cronjobs" };

/// The label Karpenter puts on the nodes it launches for a NodePool.
const NODEPOOL_LABEL: &str = "karpenter.sh/nodepool";

/// Requests in flight to the API server when nothing else is asked (kubectl's client-side
/// rate limiter allows bursts of 10 by default).
const DEFAULT_LIMIT: usize = 8;

impl Kind {
    fn resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(self.group, self.version, self.kind), self.plural)
    }

    /// `nodepools.karpenter.sh`, as kubectl names it.
    pub fn display(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }
}

/// What a SelfSubjectAccessReview answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub allowed: bool,
    /// The authorizer's reason, when it gives one.
    pub reason: String,
}

/// The read-only Kubernetes handle: what an audit holds. It cannot write.
#[derive(Clone)]
pub struct KubeReader {
    client: Client,
    server: String,
    /// The kubeconfig context in use, for messages.
    context: String,
    /// Requests in flight at most (`--concurrency`), shared by every clone.
    limit: std::sync::Arc<tokio::sync::Semaphore>,
    /// TLS verification is off (`--insecure-skip-tls-verify`).
    insecure: bool,
}

/// How to connect, beyond what the kubeconfig says.
#[derive(Debug, Clone, Copy)]
pub struct Connect {
    /// How long one answer may take (`--timeout`); a read that times out is tried again.
    pub timeout: Duration,
    /// Accept a certificate that does not verify (`--insecure-skip-tls-verify`). Without it, a
    /// kubeconfig that turns verification off is refused.
    pub insecure_skip_tls_verify: bool,
}

impl Default for Connect {
    fn default() -> Self {
        Connect { timeout: Duration::from_secs(30), insecure_skip_tls_verify: false }
    }
}

/// How many times a read that failed in transport (a timeout, a reset connection) is tried
/// again; 429 and 503 are retried below, by kube's own retry layer.
const READ_RETRIES: u32 = 2;

impl KubeReader {
    /// Configured as kubectl is: `kubeconfig` (else `KUBECONFIG`, else `~/.kube/config`, else
    /// in-cluster) and `context` (else the current one), with [`Connect::default`].
    pub async fn connect(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<KubeReader, KubeError> {
        KubeReader::connect_with(kubeconfig, context, Connect::default()).await
    }

    /// [`Self::connect`] with a timeout and the TLS choice.
    pub async fn connect_with(
        kubeconfig: Option<&Path>,
        context: Option<&str>,
        how: Connect,
    ) -> Result<KubeReader, KubeError> {
        let opts = KubeConfigOptions { context: context.map(str::to_string), ..KubeConfigOptions::default() };
        let mut context_name = context.map(str::to_string);
        let config = match (kubeconfig, context) {
            (Some(path), _) => {
                let kc = Kubeconfig::read_from(path)
                    .map_err(|e| KubeError::Config { where_: path.display().to_string(), cause: e.to_string() })?;
                if context_name.is_none() {
                    context_name.clone_from(&kc.current_context);
                }
                Config::from_custom_kubeconfig(kc, &opts).await.map_err(|e| KubeError::Config {
                    where_: format!("{}, context {}", path.display(), context.unwrap_or("(current)")),
                    cause: e.to_string(),
                })?
            }
            (None, Some(ctx)) => Config::from_kubeconfig(&opts)
                .await
                .map_err(|e| KubeError::Config { where_: format!("context {ctx}"), cause: e.to_string() })?,
            (None, None) => Config::infer().await.map_err(|e| KubeError::Config {
                where_: "KUBECONFIG, ~/.kube/config or in-cluster".into(),
                cause: e.to_string(),
            })?,
        };
        let mut config = config;
        let server = config.cluster_url.to_string().trim_end_matches('/').to_string();
        let context = context_name.unwrap_or_else(|| "current or in-cluster".into());
        if config.accept_invalid_certs && !how.insecure_skip_tls_verify {
            return Err(KubeError::Insecure { context });
        }
        let insecure = how.insecure_skip_tls_verify;
        if insecure {
            config.accept_invalid_certs = true;
        }
        // Without a read timeout, an API server that stops answering hangs the run for good.
        config.read_timeout = Some(how.timeout);
        config.reset_reader_on_write = true;
        config.connect_timeout = Some(how.timeout);
        let client = Client::try_from(config).map_err(|e| KubeError::Transport {
            server: server.clone(),
            context: context.clone(),
            cause: root_cause(&e),
        })?;
        Ok(KubeReader {
            client,
            server,
            context,
            insecure,
            limit: std::sync::Arc::new(tokio::sync::Semaphore::new(DEFAULT_LIMIT)),
        })
    }

    /// Whether certificate verification is off (`--insecure-skip-tls-verify`): the caller warns.
    pub fn insecure(&self) -> bool {
        self.insecure
    }

    /// At most `n` requests in flight to the API server from this reader and its clones.
    pub fn with_concurrency(mut self, n: usize) -> KubeReader {
        self.limit = std::sync::Arc::new(tokio::sync::Semaphore::new(n.max(1)));
        self
    }

    async fn permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.limit.acquire().await.ok()
    }

    /// One read under the concurrency limit, tried again when it failed in transport (it
    /// changes nothing, so repeating it is safe); the API's own answers are returned as they are.
    async fn read<T, F, Fut>(&self, mut call: F) -> Result<T, kube::Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        let mut attempt = 0;
        loop {
            let permit = self.permit().await;
            let result = call().await;
            drop(permit);
            // A read changes nothing, so any transient failure is worth another try: a dropped
            // connection, or the API server's own 429 (its max-in-flight filter), 500 (an
            // internal error such as an etcd hiccup), 502, 503 and 504 (a timed-out request),
            // as k8s.io/apiserver's filters and client-go's `IsRetryableError` treat them.
            let transient = |e: &kube::Error| match e {
                kube::Error::Api(s) => matches!(s.code, 429 | 500 | 502 | 503 | 504),
                other => !super::tls_refused(other),
            };
            match result {
                Err(e) if attempt < READ_RETRIES && transient(&e) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// The API server URL and the `kube-system` namespace's uid (unique per cluster).
    pub async fn identity(&self) -> Result<ClusterIdentity, KubeError> {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        let ns = self.read(|| api.get("kube-system")).await.map_err(|e| self.error(e, "get", "namespaces"))?;
        Ok(ClusterIdentity { server: self.server.clone(), kube_system_uid: ns.metadata.uid.unwrap_or_default() })
    }

    /// Every object of `kind` (in `namespace`, or all namespaces), page by page, as JSON.
    /// `None` when the cluster does not serve the kind.
    pub async fn list(&self, kind: Kind, namespace: Option<&str>) -> Result<Option<Vec<Value>>, KubeError> {
        self.list_where(kind, namespace, None, None).await
    }

    /// [`Self::list`] with a label and a field selector, as the API server filters.
    pub async fn list_where(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        labels: Option<&str>,
        fields: Option<&str>,
    ) -> Result<Option<Vec<Value>>, KubeError> {
        let ar = kind.resource();
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut lp = ListParams::default().limit(PAGE);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            if let Some(l) = labels {
                lp = lp.labels(l);
            }
            if let Some(f) = fields {
                lp = lp.fields(f);
            }
            let listed = self.read(|| api.list(&lp)).await;
            let page = match listed {
                Ok(p) => p,
                Err(kube::Error::Api(s)) if s.code == 404 && token.is_none() => return Ok(None),
                Err(e) => return Err(self.error(e, "list", &kind.display())),
            };
            for item in page.items {
                out.push(to_json(&item, kind, &ar)?);
            }
            match page.metadata.continue_ {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(Some(out)),
            }
        }
    }

    /// One object, `None` when it does not exist (or its kind is not served).
    pub async fn get(&self, kind: Kind, namespace: Option<&str>, name: &str) -> Result<Option<Value>, KubeError> {
        let ar = kind.resource();
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        };
        let got = self.read(|| api.get(name)).await;
        match got {
            Ok(obj) => Ok(Some(to_json(&obj, kind, &ar)?)),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(self.error(e, "get", &kind.display())),
        }
    }

    /// The workloads whose pods run on the NodePool's nodes: the Deployments, StatefulSets,
    /// DaemonSets, Jobs and CronJobs that control them (a ReplicaSet stands for its
    /// Deployment, a Job for its CronJob when it has one), each once. They are what would land
    /// on arm64 nodes once the pool widens unless they constrain their architecture. Pods no
    /// such controller owns (bare pods, Argo workflow pods) are not included.
    pub async fn pool_workloads(&self, pool: &str) -> Result<Vec<Value>, KubeError> {
        let selector = format!("{NODEPOOL_LABEL}={pool}");
        let nodes = self.list_where(NODE, None, Some(&selector), None).await?.unwrap_or_default();
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for node in &nodes {
            let Some(node_name) = node["metadata"]["name"].as_str() else { continue };
            let on_node = format!("spec.nodeName={node_name}");
            let pods = self.list_where(POD, None, None, Some(&on_node)).await?.unwrap_or_default();
            for pod in &pods {
                let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
                let Some(owner) = controller_of(pod) else { continue };
                let Some((kind, name)) = self.workload_of(ns, owner).await? else { continue };
                if seen.insert((kind.kind, ns.to_string(), name.clone()))
                    && let Some(obj) = self.get(kind, Some(ns), &name).await?
                {
                    out.push(obj);
                }
            }
        }
        Ok(out)
    }

    /// The workload a pod's controller stands for: a ReplicaSet's Deployment, a Job's CronJob
    /// (or the Job itself), or the StatefulSet or DaemonSet. `None` for other controllers.
    async fn workload_of(&self, ns: &str, (kind, name): (String, String)) -> Result<Option<(Kind, String)>, KubeError> {
        Ok(match kind.as_str() {
            "StatefulSet" => Some((STATEFUL_SET, name)),
            "DaemonSet" => Some((DAEMON_SET, name)),
            "ReplicaSet" => {
                let rs = self.get(REPLICA_SET, Some(ns), &name).await?;
                match rs.as_ref().and_then(controller_of) {
                    Some((k, d)) if k == "Deployment" => Some((DEPLOYMENT, d)),
                    // A ReplicaSet no Deployment controls is itself what re-creates the pods;
                    // the planners do not pin ReplicaSets, so it is left to them to report.
                    _ => None,
                }
            }
            "Job" => {
                let job = self.get(JOB, Some(ns), &name).await?;
                match job.as_ref().and_then(controller_of) {
                    Some((k, c)) if k == "CronJob" => Some((CRON_JOB, c)),
                    _ => Some((JOB, name)),
                }
            }
            _ => None,
        })
    }

    /// The Secrets of a namespace as names and key names: values are dropped here.
    pub async fn secrets(&self, namespace: &str) -> Result<Vec<SecretMeta>, KubeError> {
        let items = self.list(SECRET, Some(namespace)).await?.unwrap_or_default();
        Ok(items
            .iter()
            .map(|s| {
                let mut keys: Vec<String> = ["data", "stringData"]
                    .iter()
                    .filter_map(|f| s[*f].as_object())
                    .flat_map(|o| o.keys().cloned())
                    .collect();
                keys.sort();
                keys.dedup();
                SecretMeta {
                    namespace: namespace.to_string(),
                    name: s["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                    keys,
                    resource_version: s["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string(),
                }
            })
            .collect())
    }

    /// `kubectl auth can-i VERB RESOURCE [-n NAMESPACE]`: a SelfSubjectAccessReview, the one
    /// POST this reader sends (the API server evaluates it and stores nothing).
    pub async fn can_i(&self, verb: &str, kind: Kind, namespace: Option<&str>) -> Result<Access, KubeError> {
        self.can_i_on(verb, kind.group, kind.plural, namespace).await
    }

    /// [`Self::can_i`] for any group and resource (plural).
    pub async fn can_i_on(
        &self,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<Access, KubeError> {
        use k8s_openapi::api::authorization::v1::{
            ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
        };
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.to_string()),
                    group: Some(group.to_string()),
                    resource: Some(resource.to_string()),
                    namespace: namespace.map(str::to_string),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let api: Api<SelfSubjectAccessReview> = Api::all(self.client.clone());
        let permit = self.permit().await;
        let answer = api
            .create(&kube::api::PostParams::default(), &review)
            .await
            .map_err(|e| self.error(e, "create", "selfsubjectaccessreviews.authorization.k8s.io"))?;
        drop(permit);
        let status = answer.status.unwrap_or_default();
        Ok(Access { allowed: status.allowed, reason: status.reason.unwrap_or_default() })
    }

    fn error(&self, e: kube::Error, verb: &str, resource: &str) -> KubeError {
        match e {
            kube::Error::Api(s) if s.code == 401 => KubeError::Unauthorized { server: self.server.clone() },
            kube::Error::Api(s) if s.code == 403 => {
                KubeError::Forbidden { verb: verb.into(), resource: resource.into(), message: s.message.clone() }
            }
            kube::Error::Api(s) => KubeError::Api {
                verb: verb.into(),
                resource: resource.into(),
                code: s.code,
                message: s.message.clone(),
            },
            other if super::tls_refused(&other) => KubeError::Transport {
                server: self.server.clone(),
                context: self.context.clone(),
                cause: format!(
                    "{}: the server's certificate is not signed by the kubeconfig's certificate-authority-data",
                    root_cause(&other)
                ),
            },
            other => KubeError::Transport {
                server: self.server.clone(),
                context: self.context.clone(),
                cause: root_cause(&other),
            },
        }
    }
}

/// An object as JSON, with the apiVersion and kind that list items leave off.
fn to_json(obj: &DynamicObject, kind: Kind, ar: &ApiResource) -> Result<Value, KubeError> {
    let mut v =
        serde_json::to_value(obj).map_err(|e| KubeError::Decode { resource: kind.display(), cause: e.to_string() })?;
    if let Some(o) = v.as_object_mut() {
        o.insert("apiVersion".into(), Value::String(ar.api_version.clone()));
        o.insert("kind".into(), Value::String(kind.kind.into()));
    }
    Ok(v)
}

/// The kind and name of an object's controlling owner (`ownerReferences[].controller`).
fn controller_of(obj: &Value) -> Option<(String, String)> {
    let owners = obj["metadata"]["ownerReferences"].as_array()?;
    let c = owners.iter().find(|o| o["controller"] == true)?;
    Some((c["kind"].as_str()?.to_string(), c["name"].as_str()?.to_string()))
}

/// The Kubernetes handle that may write: what `apply` and `rollback` hold, never `audit`.
/// Every write can be a server-side dry run (`dryRun=All`), and each carries its guard: a
/// create fails on an existing object, a JSON patch on a failed `test`, a server-side apply on
/// another field manager's field, a delete on a changed uid or resourceVersion.
#[derive(Clone)]
pub struct KubeWriter {
    reader: KubeReader,
}

/// A Kubernetes object to write, named as a plan names it.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
}

impl Target<'_> {
    fn resource(&self) -> ApiResource {
        let (group, version) = self.api_version.rsplit_once('/').unwrap_or(("", self.api_version));
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, self.kind), &plural(self.kind))
    }

    fn display(&self) -> String {
        let (group, _) = self.api_version.rsplit_once('/').unwrap_or(("", ""));
        let p = plural(self.kind);
        if group.is_empty() { p } else { format!("{p}.{group}") }
    }
}

impl KubeWriter {
    /// Connected as [`KubeReader::connect_with`] is.
    pub async fn connect_with(
        kubeconfig: Option<&Path>,
        context: Option<&str>,
        how: Connect,
    ) -> Result<KubeWriter, KubeError> {
        Ok(KubeWriter { reader: KubeReader::connect_with(kubeconfig, context, how).await? })
    }

    /// The read side of the same connection.
    pub fn reader(&self) -> &KubeReader {
        &self.reader
    }

    fn api(&self, t: &Target<'_>) -> Api<DynamicObject> {
        let ar = t.resource();
        match t.namespace {
            Some(ns) => Api::namespaced_with(self.reader.client.clone(), ns, &ar),
            None => Api::all_with(self.reader.client.clone(), &ar),
        }
    }

    fn json(t: &Target<'_>, obj: &DynamicObject) -> Result<Value, KubeError> {
        let mut v =
            serde_json::to_value(obj).map_err(|e| KubeError::Decode { resource: t.display(), cause: e.to_string() })?;
        if let Some(o) = v.as_object_mut() {
            o.insert("apiVersion".into(), Value::String(t.api_version.to_string()));
            o.insert("kind".into(), Value::String(t.kind.to_string()));
        }
        Ok(v)
    }

    /// The object as it is now, `None` when it does not exist. A Secret's values are blanked
    /// here, before anything else sees them: only its key names leave the adapter.
    pub async fn get(&self, t: &Target<'_>) -> Result<Option<Value>, KubeError> {
        let api = self.api(t);
        match self.reader.read(|| api.get(t.name)).await {
            Ok(obj) => {
                let mut v = Self::json(t, &obj)?;
                if t.kind == "Secret" {
                    for field in ["data", "stringData"] {
                        if let Some(map) = v[field].as_object_mut() {
                            map.values_mut().for_each(|x| *x = Value::String(String::new()));
                        }
                    }
                }
                Ok(Some(v))
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(self.reader.error(e, "get", &t.display())),
        }
    }

    /// POST `body`; 409 when it exists.
    pub async fn create(&self, t: &Target<'_>, body: &Value, dry_run: bool) -> Result<Value, KubeError> {
        let obj: DynamicObject = serde_json::from_value(body.clone())
            .map_err(|e| KubeError::Decode { resource: t.display(), cause: e.to_string() })?;
        let params = kube::api::PostParams { dry_run, field_manager: Some(FIELD_MANAGER.into()) };
        let created =
            self.api(t).create(&params, &obj).await.map_err(|e| self.reader.error(e, "create", &t.display()))?;
        Self::json(t, &created)
    }

    /// Server-side apply of `patch` as `manager`, without `force`: a field another manager
    /// owns is a 409 conflict, never taken over silently.
    pub async fn apply(&self, t: &Target<'_>, patch: &Value, manager: &str, dry_run: bool) -> Result<Value, KubeError> {
        let mut params = kube::api::PatchParams::apply(manager);
        params.dry_run = dry_run;
        let out = self
            .api(t)
            .patch(t.name, &params, &kube::api::Patch::Apply(patch))
            .await
            .map_err(|e| self.reader.error(e, "patch", &t.display()))?;
        Self::json(t, &out)
    }

    /// A JSON patch (RFC 6902) whose `test` operations guard it.
    pub async fn json_patch(&self, t: &Target<'_>, ops: &[Value], dry_run: bool) -> Result<Value, KubeError> {
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops.to_vec()))
            .map_err(|e| KubeError::Decode { resource: t.display(), cause: format!("not a JSON patch: {e}") })?;
        let params =
            kube::api::PatchParams { dry_run, field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        let out = self
            .api(t)
            .patch(t.name, &params, &kube::api::Patch::<Value>::Json(patch))
            .await
            .map_err(|e| self.reader.error(e, "patch", &t.display()))?;
        Self::json(t, &out)
    }

    /// DELETE with the uid and resourceVersion it was planned against as preconditions.
    pub async fn delete(
        &self,
        t: &Target<'_>,
        uid: Option<&str>,
        resource_version: Option<&str>,
        dry_run: bool,
    ) -> Result<(), KubeError> {
        let params = kube::api::DeleteParams {
            dry_run,
            preconditions: Some(kube::api::Preconditions {
                uid: uid.map(str::to_string),
                resource_version: resource_version.map(str::to_string),
            }),
            ..Default::default()
        };
        match self.api(t).delete(t.name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(self.reader.error(e, "delete", &t.display())),
        }
    }

    /// The bytes under `key` of Secret `namespace/name`, `None` when the Secret or the key is
    /// missing. The one read of a Secret's value archshift makes: the saved plans' seal key,
    /// which never leaves the process.
    pub async fn secret_bytes(&self, namespace: &str, name: &str, key: &str) -> Result<Option<Vec<u8>>, KubeError> {
        let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(self.reader.client.clone(), namespace);
        match self.reader.read(|| api.get(name)).await {
            Ok(secret) => Ok(secret.data.and_then(|mut d| d.remove(key)).map(|b| b.0)),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(self.reader.error(e, "get", "secrets")),
        }
    }

    /// Creates Secret `namespace/name` holding `bytes` under `key`, labelled as archshift's;
    /// `false` when it exists already (a 409: another run made it first), never overwritten.
    pub async fn create_secret_bytes(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        bytes: &[u8],
    ) -> Result<bool, KubeError> {
        let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(self.reader.client.clone(), namespace);
        let secret = k8s_openapi::api::core::v1::Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: Some([("app.kubernetes.io/managed-by".to_string(), "archshift".to_string())].into()),
                ..Default::default()
            },
            data: Some([(key.to_string(), k8s_openapi::ByteString(bytes.to_vec()))].into()),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        let params = kube::api::PostParams { dry_run: false, field_manager: Some(FIELD_MANAGER.into()) };
        match api.create(&params, &secret).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.reader.error(e, "create", "secrets")),
        }
    }

    /// An object of archshift's own state (its journal's Secrets, its Lease), raw: a Secret's
    /// `data` stays as served, since these hold nothing but archshift's records.
    pub async fn own_get(&self, t: &Target<'_>) -> Result<Option<Value>, KubeError> {
        let api = self.api(t);
        match self.reader.read(|| api.get(t.name)).await {
            Ok(obj) => Ok(Some(Self::json(t, &obj)?)),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(self.reader.error(e, "get", &t.display())),
        }
    }

    /// archshift's own state objects of `t`'s kind in `t`'s namespace matching `labels`, raw.
    pub async fn own_list(&self, t: &Target<'_>, labels: &str) -> Result<Vec<Value>, KubeError> {
        let api = self.api(t);
        let lp = ListParams::default().labels(labels);
        let page = self.reader.read(|| api.list(&lp)).await.map_err(|e| self.reader.error(e, "list", &t.display()))?;
        page.items.iter().map(|o| Self::json(t, o)).collect()
    }

    /// PUT `body` over the object it names, guarded by its `metadata.resourceVersion` (a 409
    /// when someone wrote it since).
    pub async fn own_replace(&self, t: &Target<'_>, body: &Value) -> Result<Value, KubeError> {
        let obj: DynamicObject = serde_json::from_value(body.clone())
            .map_err(|e| KubeError::Decode { resource: t.display(), cause: e.to_string() })?;
        let params = kube::api::PostParams { dry_run: false, field_manager: Some(FIELD_MANAGER.into()) };
        let out = self
            .api(t)
            .replace(t.name, &params, &obj)
            .await
            .map_err(|e| self.reader.error(e, "update", &t.display()))?;
        Self::json(t, &out)
    }

    /// Pods running on nodes of `pool` labelled with `arch` (what narrowing the pool evicts).
    pub async fn pods_on(&self, pool: &str, arch: &str) -> Result<usize, KubeError> {
        let selector = format!("{NODEPOOL_LABEL}={pool},kubernetes.io/arch={arch}");
        let nodes = self.reader.list_where(NODE, None, Some(&selector), None).await?.unwrap_or_default();
        let mut count = 0;
        for node in nodes {
            let Some(name) = node["metadata"]["name"].as_str() else { continue };
            let field = format!("spec.nodeName={name}");
            let pods = self.reader.list_where(POD, None, None, Some(&field)).await?.unwrap_or_default();
            count +=
                pods.iter().filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))).count();
        }
        Ok(count)
    }
}

/// The field manager of every archshift write.
pub const FIELD_MANAGER: &str = "archshift";
