//! What a planner proposes: ordered changes with preconditions, and findings.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The four phases of the migration, in the order the migration plan runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    NodePool,
    Runners,
    Pipeline,
    Workloads,
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
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phase {} {}", self.number(), self.title())
    }
}

/// What a change writes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Target {
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
    /// A file in a GitLab repository.
    #[serde(rename_all = "camelCase")]
    CiFile { project: String, path: String, branch: String },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Kube { kind, namespace: Some(ns), name, .. } => write!(f, "{kind} {ns}/{name}"),
            Target::Kube { kind, namespace: None, name, .. } => write!(f, "{kind} {name}"),
            Target::GitLabRunner { tag, id: Some(id) } => write!(f, "GitLab runner #{id} ({tag})"),
            Target::GitLabRunner { tag, id: None } => write!(f, "GitLab runner ({tag})"),
            Target::RunnerToken { tag, id } => write!(f, "token of GitLab runner #{id} ({tag})"),
            Target::ProjectVariable { project, key } => write!(f, "variable {key} of project {project}"),
            Target::GroupVariable { group, key } => write!(f, "variable {key} of group {group}"),
            Target::CiFile { project, path, branch } => write!(f, "{project}:{path}@{branch}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        })
    }
}

/// The before or after side of a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum Document {
    /// An API object (Kubernetes object, runner, variable) as JSON.
    Object(serde_json::Value),
    /// A text file (a CI file), byte for byte.
    Text(String),
}

/// What must still be true when a change is applied; otherwise the plan is stale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Precondition {
    /// The target must not exist yet.
    Absent,
    /// A Kubernetes object must still be at this resourceVersion.
    #[serde(rename_all = "camelCase")]
    ResourceVersion { resource_version: String },
    /// A runner must still have exactly these tags.
    #[serde(rename_all = "camelCase")]
    RunnerTags { tag_list: Vec<String>, run_untagged: bool },
    /// A variable must still have this value (`None`: masked, only its existence is checked).
    #[serde(rename_all = "camelCase")]
    VariableValue { value: Option<String>, protected: bool },
    /// A file must still be at this last commit (GitLab's `last_commit_id`).
    #[serde(rename_all = "camelCase")]
    LastCommit { last_commit_id: String },
    /// The runner must exist (the token reset needs it).
    #[serde(rename_all = "camelCase")]
    Exists,
}

/// One write, with everything needed to show it, apply it and check it is still valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// Stable identifier, e.g. `nodepool/spot-pool` or `variable/CICD_TAG_ARM64`.
    pub id: String,
    pub phase: Phase,
    pub target: Target,
    pub action: Action,
    /// One line for lists and logs.
    pub summary: String,
    pub before: Option<Document>,
    pub after: Option<Document>,
    pub precondition: Precondition,
    /// JSON pointers into before/after whose values are secret and must be masked in output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensitive: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Already as wanted.
    Done,
    /// Will be done by a change of this plan, or is waiting on something (a runner coming online).
    Pending,
    /// Needs a person's attention: the tool will not or cannot fix it safely.
    Risk,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Done => "done",
            Severity::Pending => "pending",
            Severity::Risk => "risk",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub phase: Phase,
    pub severity: Severity,
    /// What the finding is about, e.g. `NodePool spot-pool`.
    pub subject: String,
    pub message: String,
}

/// A planner's answer for one phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhasePlan {
    pub phase: Phase,
    pub changes: Vec<Change>,
    pub findings: Vec<Finding>,
}

impl PhasePlan {
    pub fn new(phase: Phase) -> Self {
        Self { phase, changes: Vec::new(), findings: Vec::new() }
    }

    pub fn finding(&mut self, severity: Severity, subject: impl Into<String>, message: impl Into<String>) {
        self.findings.push(Finding { phase: self.phase, severity, subject: subject.into(), message: message.into() });
    }

    pub fn risks(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity == Severity::Risk)
    }
}
