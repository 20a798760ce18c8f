//! The Kubernetes adapter (kube-rs), read side: the objects the planners read, as plain JSON
//! or the model's types, listed in pages.
//!
//! [`KubeReader`] has no method that writes (its one POST is a SelfSubjectAccessReview). A kind the cluster does not serve (no Karpenter,
//! no Crossplane, no Argo) is `Ok(None)`, so the caller reports it as a finding instead of
//! failing; Secrets leave this module as names and key names only.

use std::path::Path;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::Value;

use crate::model::{ClusterIdentity, SecretMeta};

/// How many objects a list page asks for.
const PAGE: u32 = 500;

/// Why reading the cluster failed, said so a person can act on it.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot load the Kubernetes configuration ({where_}): {cause}")]
    Config { where_: String, cause: String },
    #[error("cannot reach the Kubernetes API at {server}: {cause}")]
    Transport { server: String, cause: String },
    #[error(
        "the Kubernetes API at {server} rejected the credentials of the current context (401): log in again or pick another --context"
    )]
    Unauthorized { server: String },
    #[error("the current Kubernetes identity may not {verb} {resource} (403): {message}")]
    Forbidden { verb: String, resource: String, message: String },
    #[error("the Kubernetes API answered {code} to {verb} {resource}: {message}")]
    Api { verb: String, resource: String, code: u16, message: String },
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
}

impl KubeReader {
    /// Configured as kubectl is: `kubeconfig` (else `KUBECONFIG`, else `~/.kube/config`, else
    /// in-cluster) and `context` (else the current one).
    pub async fn connect(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<KubeReader, KubeError> {
        let opts = KubeConfigOptions { context: context.map(str::to_string), ..KubeConfigOptions::default() };
        let config = match (kubeconfig, context) {
            (Some(path), _) => {
                let kc = Kubeconfig::read_from(path)
                    .map_err(|e| KubeError::Config { where_: path.display().to_string(), cause: e.to_string() })?;
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
        let server = config.cluster_url.to_string().trim_end_matches('/').to_string();
        let client = Client::try_from(config)
            .map_err(|e| KubeError::Transport { server: server.clone(), cause: e.to_string() })?;
        Ok(KubeReader { client, server })
    }

    /// The API server URL and the `kube-system` namespace's uid (unique per cluster).
    pub async fn identity(&self) -> Result<ClusterIdentity, KubeError> {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        let ns = api.get("kube-system").await.map_err(|e| self.error(e, "get", "namespaces"))?;
        Ok(ClusterIdentity { server: self.server.clone(), kube_system_uid: ns.metadata.uid.unwrap_or_default() })
    }

    /// Every object of `kind` (in `namespace`, or all namespaces), page by page, as JSON.
    /// `None` when the cluster does not serve the kind.
    pub async fn list(&self, kind: Kind, namespace: Option<&str>) -> Result<Option<Vec<Value>>, KubeError> {
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
            let page = match api.list(&lp).await {
                Ok(p) => p,
                Err(kube::Error::Api(s)) if s.code == 404 && token.is_none() => return Ok(None),
                Err(e) => return Err(self.error(e, "list", &kind.display())),
            };
            for item in page.items {
                let mut v = serde_json::to_value(&item).map_err(|e| KubeError::Api {
                    verb: "list".into(),
                    resource: kind.display(),
                    code: 0,
                    message: e.to_string(),
                })?;
                // Lists leave apiVersion/kind off the items; the planners read them.
                if let Some(o) = v.as_object_mut() {
                    o.insert("apiVersion".into(), Value::String(ar.api_version.clone()));
                    o.insert("kind".into(), Value::String(kind.kind.into()));
                }
                out.push(v);
            }
            match page.metadata.continue_ {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(Some(out)),
            }
        }
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
        use k8s_openapi::api::authorization::v1::{
            ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
        };
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.to_string()),
                    group: Some(kind.group.to_string()),
                    resource: Some(kind.plural.to_string()),
                    namespace: namespace.map(str::to_string),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let api: Api<SelfSubjectAccessReview> = Api::all(self.client.clone());
        let answer = api
            .create(&kube::api::PostParams::default(), &review)
            .await
            .map_err(|e| self.error(e, "create", "selfsubjectaccessreviews.authorization.k8s.io"))?;
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
            other => KubeError::Transport { server: self.server.clone(), cause: other.to_string() },
        }
    }
}
