//! The words the plan file, the model and the planners share: CPU architectures, the four
//! phases, Argo kinds, and the API groups, versions and kinds archshift reads and writes.
//!
//! A leaf: it imports nothing from the crate, so `spec` and `model` both build on it without
//! importing each other.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The label every node carries with its CPU architecture.
pub const ARCH_LABEL: &str = "kubernetes.io/arch";
/// Its deprecated twin, still honoured by the scheduler and set by kubelets.
pub const BETA_ARCH_LABEL: &str = "beta.kubernetes.io/arch";
/// The label Karpenter puts on every node it launches, naming the NodePool.
pub const NODEPOOL_LABEL: &str = "karpenter.sh/nodepool";
/// `app.kubernetes.io/managed-by`, set on what archshift creates.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The field manager archshift uses for server-side apply, and its `managed-by` value.
pub const FIELD_MANAGER: &str = "archshift";

/// A Kubernetes API group/version and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiKind {
    pub api_version: &'static str,
    pub kind: &'static str,
}

pub const SECRET: ApiKind = ApiKind { api_version: "v1", kind: "Secret" };
pub const NODE_POOL: ApiKind = ApiKind { api_version: "karpenter.sh/v1", kind: "NodePool" };
pub const EC2_NODE_CLASS: ApiKind = ApiKind { api_version: "karpenter.k8s.aws/v1", kind: "EC2NodeClass" };
pub const RELEASE: ApiKind = ApiKind { api_version: "helm.crossplane.io/v1beta1", kind: "Release" };
pub const ARGO_API_VERSION: &str = "argoproj.io/v1alpha1";

/// A CPU architecture archshift builds runners for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// The value of the `kubernetes.io/arch` label and of tag suffixes.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// Reads the names builds use for an architecture (`x86_64`, `aarch64`, `linux/arm64`...).
    pub fn from_alias(s: &str) -> Option<Arch> {
        let s = s.trim().to_ascii_lowercase();
        let s = s.strip_prefix("linux/").unwrap_or(&s);
        match s {
            "amd64" | "x86_64" | "x86-64" | "x64" => Some(Arch::Amd64),
            "arm64" | "aarch64" | "arm64/v8" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The four phases of the migration, numbered as the operator knows them. The engine follows
/// the changes' dependencies, not this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    NodePool,
    Runners,
    Pipeline,
    Workloads,
    /// Back to the amd64-only runner; not one of the four phases of the migration.
    Rollback,
}

impl Phase {
    pub const ALL: [Phase; 4] = [Phase::NodePool, Phase::Runners, Phase::Pipeline, Phase::Workloads];

    pub fn number(self) -> u8 {
        self as u8 + 1
    }

    pub fn title(self) -> &'static str {
        match self {
            Phase::NodePool => "NodePool",
            Phase::Runners => "Runners",
            Phase::Pipeline => "Pipeline",
            Phase::Workloads => "Workloads",
            Phase::Rollback => "Rollback",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Rollback => f.write_str("Rollback"),
            _ => write!(f, "Phase {} {}", self.number(), self.title()),
        }
    }
}

/// Argo objects that carry a workflow spec and can be pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
pub enum ArgoKind {
    WorkflowTemplate,
    CronWorkflow,
    /// Cluster-scoped.
    ClusterWorkflowTemplate,
}

impl ArgoKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ArgoKind::WorkflowTemplate => "WorkflowTemplate",
            ArgoKind::CronWorkflow => "CronWorkflow",
            ArgoKind::ClusterWorkflowTemplate => "ClusterWorkflowTemplate",
        }
    }

    pub fn namespaced(self) -> bool {
        self != ArgoKind::ClusterWorkflowTemplate
    }

    pub fn from_kind(kind: &str) -> Option<ArgoKind> {
        match kind {
            "WorkflowTemplate" => Some(ArgoKind::WorkflowTemplate),
            "CronWorkflow" => Some(ArgoKind::CronWorkflow),
            "ClusterWorkflowTemplate" => Some(ArgoKind::ClusterWorkflowTemplate),
            _ => None,
        }
    }

    /// JSON pointer of the workflow spec inside the object.
    pub fn spec_pointer(self) -> &'static str {
        match self {
            ArgoKind::WorkflowTemplate | ArgoKind::ClusterWorkflowTemplate => "/spec",
            ArgoKind::CronWorkflow => "/spec/workflowSpec",
        }
    }
}

impl fmt::Display for ArgoKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The plural Kubernetes derives for a kind when its CRD does not say otherwise (every kind
/// archshift writes is regular): `NodePool` -> `nodepools`, `NetworkPolicy` ->
/// `networkpolicies`, `Ingress` -> `ingresses`.
pub fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if lower.ends_with('s') {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y').filter(|s| !s.ends_with(['a', 'e', 'i', 'o', 'u'])) {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    }
}
