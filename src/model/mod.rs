//! Observed state and planned changes as plain data. No IO: adapters fill these types in,
//! planners read them, the engine and the views consume what planners produce.
//!
//! Kubernetes objects are kept as the JSON the API server returned (`serde_json::Value`),
//! with typed read-only views (`NodePoolView`, ...) over them, so that a change's `after`
//! document is the exact object that will be sent and nothing the tool does not understand
//! is dropped on the way.

mod change;
mod gitlab;
mod kube;
mod simulate;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use change::{Action, Change, Document, Finding, Phase, PhasePlan, Precondition, Severity, Target};
pub use gitlab::{CiFile, CiVariable, GitLabRunner, ProjectCi};
pub use kube::{ArgoWorkloadView, NodeClassView, NodePoolView, ReleaseView, Requirement, SecretMeta, kube_id};
pub use simulate::apply_change;

/// The label every node carries with its CPU architecture.
pub const ARCH_LABEL: &str = "kubernetes.io/arch";

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

/// Everything the planners look at, read from the cluster and GitLab by the adapters.
///
/// Secret values never enter this type: Secrets are known by name and key names, and masked
/// or hidden CI/CD variables carry no value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ObservedState {
    /// The GitLab base URL the tool talks to (used as the runners' `gitlabUrl` fallback).
    pub gitlab_url: Option<String>,
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
    /// CI/CD variables of the workloads group.
    pub group_variables: Vec<CiVariable>,
    /// The pipeline project's CI file, if it exists.
    pub ci_file: Option<CiFile>,
    /// Argo WorkflowTemplates and CronWorkflows, raw.
    pub argo: Vec<serde_json::Value>,
    /// Other projects of the workloads group and their CI files.
    pub other_projects: Vec<ProjectCi>,
}

#[cfg(test)]
pub(crate) mod fixtures;
