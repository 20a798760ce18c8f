//! Observed state and planned changes as plain data. No IO: adapters fill these types in,
//! planners read them, the engine and the views consume what planners produce.
//!
//! Kubernetes objects are kept as the JSON the API server returned (`serde_json::Value`),
//! with typed read-only views (`NodePoolView`, ...) over them, so that a change's `after`
//! document is the exact object that will be sent and nothing the tool does not understand
//! is dropped on the way.

mod change;
mod finding;
mod gitlab;
mod kubernetes;
mod plan;
mod refs;
mod simulate;

use serde::{Deserialize, Serialize};

pub use crate::vocab::{ARCH_LABEL, Arch, ArgoKind, Phase};
pub use change::{
    Action, Binding, Change, Document, HttpMethod, MergeRequest, Output, Precondition, Reversal, Verification,
    WaitClass, WriteMethod,
};
pub use finding::{Finding, FindingCode, Status};
pub use gitlab::{CiFile, CiVariable, GitLabRunner, ProjectCi};
pub use kubernetes::{ArgoWorkloadView, NodeClassView, NodePoolView, ReleaseView, Requirement, SecretMeta, kube_id};
pub use plan::{
    Blocked, ClusterIdentity, EndpointIdentity, GitLabIdentity, GraphError, PLAN_FORMAT_VERSION, PhasePlan, Plan,
};
pub use refs::{ChangeId, ObjectRef};
pub use simulate::apply_change;

/// Everything the planners look at, read from the cluster and GitLab by the adapters.
///
/// Secret values never enter this type: Secrets are known by name and key names, and masked
/// or hidden CI/CD variables carry no value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ObservedState {
    /// Which cluster and GitLab this was read from.
    pub endpoints: EndpointIdentity,
    /// When it was read (RFC 3339).
    pub observed_at: Option<String>,
    /// Karpenter NodePools (`karpenter.sh/v1`), raw.
    pub node_pools: Vec<serde_json::Value>,
    /// EC2NodeClasses (`karpenter.k8s.aws/v1`), raw.
    pub node_classes: Vec<serde_json::Value>,
    /// Crossplane `Release` objects (`helm.crossplane.io/v1beta1`), raw.
    pub releases: Vec<serde_json::Value>,
    /// Secrets in the runner namespace, without their data.
    pub secrets: Vec<SecretMeta>,
    /// GitLab runners visible in the runner scope, with tags (from `GET /runners/:id`).
    pub runners: Vec<GitLabRunner>,
    /// CI/CD variables of the pipeline project.
    pub project_variables: Vec<CiVariable>,
    /// CI/CD variables of the groups the plan names (the workloads group, the pipeline
    /// project's group for group-level tag variables), by group path.
    pub group_variables: std::collections::BTreeMap<String, Vec<CiVariable>>,
    /// The pipeline project's CI file, if it exists.
    pub ci_file: Option<CiFile>,
    /// Argo WorkflowTemplates, CronWorkflows and ClusterWorkflowTemplates, raw.
    pub argo: Vec<serde_json::Value>,
    /// Deployments, StatefulSets, Jobs, CronJobs and DaemonSets with pods on the plan's
    /// NodePool, raw (what would float to arm64 nodes once it widens).
    #[serde(default)]
    pub pool_workloads: Vec<serde_json::Value>,
    /// Other projects of the workloads group and their CI files.
    pub other_projects: Vec<ProjectCi>,
}

impl ObservedState {
    /// The GitLab base URL the tool talks to (the runners' `gitlabUrl` fallback).
    pub fn gitlab_url(&self) -> Option<&str> {
        self.endpoints.gitlab.as_ref().map(|g| g.url.as_str())
    }

    /// The variables of a group (none when it was not read).
    pub fn group_variables(&self, group: &str) -> &[CiVariable] {
        self.group_variables.get(group).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
pub(crate) mod fixtures;
