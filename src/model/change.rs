//! One planned write, with everything the engine needs to apply it, verify it and undo it,
//! decided by the planner: nothing here is guessed at apply time.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ChangeId, ObjectRef};
use crate::vocab::{Arch, Phase};

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
    Object(Value),
    /// A text file (a CI file), byte for byte.
    Text(String),
}

impl Document {
    pub fn as_object(&self) -> Option<&Value> {
        match self {
            Document::Object(v) => Some(v),
            Document::Text(_) => None,
        }
    }
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
    /// The target must exist (a token reset needs its runner).
    Exists,
}

/// A value one change produces at apply time and another consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Output {
    /// The `glrt-` authentication token GitLab returns when a runner is created or its token
    /// reset. Shown once; archshift binds it straight into a Secret and never keeps it.
    RunnerToken,
}

/// "Fill `pointer` of this change's body with output `output` of change `from`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    /// JSON pointer into `after`, and into the apply configuration of a server-side apply
    /// (which is a subset of `after` with the same pointers).
    pub pointer: String,
    pub from: ChangeId,
    pub output: Output,
    /// Where the value comes from, for diffs: "token of runner sandbox-arm64, from GitLab at
    /// apply time". Never the value.
    pub source: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Post,
    Put,
    Delete,
}

impl fmt::Display for HttpMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Delete => "DELETE",
        })
    }
}

/// The merge request a CI change is delivered through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MergeRequest {
    pub target_branch: String,
    pub title: String,
    /// archshift merges it (the plan says so); otherwise a person does and verify waits.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub merge: bool,
}

/// How the engine writes a change; never a PUT of a GET'd object with its status and
/// managedFields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum WriteMethod {
    /// POST `after`; the server refuses it if the object exists.
    KubeCreate,
    /// Server-side apply of `patch`, an apply configuration holding only the fields archshift
    /// owns, under `fieldManager`; a conflict with another manager stops the step.
    #[serde(rename_all = "camelCase")]
    KubeApply { field_manager: String, patch: Value },
    /// A JSON patch whose `test` operations check every value it replaces and the container
    /// of every value it adds, so a concurrent edit of those fields fails it.
    KubeJsonPatch { patch: Vec<Value> },
    /// DELETE with the object's uid and resourceVersion as preconditions.
    KubeDelete,
    /// One GitLab REST call; the body is `after`.
    GitLab { method: HttpMethod, path: String },
    /// A commit of `after` to `branch` (created from `startBranch` when missing), with the
    /// file's `last_commit_id` as the lock, then a merge request when one is named.
    #[serde(rename_all = "camelCase")]
    GitLabCommit { branch: String, start_branch: Option<String>, merge_request: Option<MergeRequest> },
}

/// How rollback undoes a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Reversal {
    /// It created the target: delete it.
    Delete,
    /// It changed the target: write the before-image of the changed fields back.
    RestoreBefore,
    /// It cannot be undone; `reason` says why and what rollback does instead.
    Irreversible { reason: String },
}

impl fmt::Display for Reversal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reversal::Delete => f.write_str("rollback deletes it"),
            Reversal::RestoreBefore => f.write_str("rollback restores the before-image"),
            Reversal::Irreversible { reason } => write!(f, "irreversible: {reason}"),
        }
    }
}

/// What must be observed after the write for the step to count as done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Verification {
    /// Reading the target back gives the after-state.
    ReadBack,
    /// The Release reports Ready and Synced for its new generation.
    ReleaseReady,
    /// The runner is online in GitLab with exactly these tags, and its managers report this
    /// architecture.
    #[serde(rename_all = "camelCase")]
    RunnerOnline { tag_list: Vec<String>, architecture: Arch },
    /// The file has the after content on this branch (after its merge request is merged).
    CiFileOnBranch { branch: String },
    /// A pipeline ran each of these jobs on a runner whose manager reports that architecture.
    PipelineProof { jobs: BTreeMap<String, Arch> },
    /// The jobs the revert moved ran, in the pipeline GitLab ran for the branch's head, on a
    /// runner carrying `tag` (rollback: the baseline runner takes the work again). Other jobs'
    /// failures are reported, not waited for. No `jobs`: every job that ran is checked.
    #[serde(rename_all = "camelCase")]
    BaselineTakesWork {
        branch: String,
        tag: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        jobs: Vec<String>,
    },
    /// No pod runs on a node of this architecture launched by the pool (narrowing the pool
    /// drifts such nodes, evicting what runs there).
    #[serde(rename_all = "camelCase")]
    ArchDrained { node_pool: String, architecture: Arch },
}

/// How long a verification may take, so the engine can pick a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WaitClass {
    /// One read, right away.
    Immediate,
    /// A controller reconciles (Helm install): minutes.
    Reconcile,
    /// A pod starts and a runner contacts GitLab: minutes.
    RunnerOnline,
    /// A person merges, or a pipeline runs: up to an hour.
    Pipeline,
}

impl Verification {
    pub fn wait_class(&self) -> WaitClass {
        match self {
            Verification::ReadBack => WaitClass::Immediate,
            Verification::ReleaseReady => WaitClass::Reconcile,
            Verification::RunnerOnline { .. } => WaitClass::RunnerOnline,
            Verification::CiFileOnBranch { .. }
            | Verification::PipelineProof { .. }
            | Verification::BaselineTakesWork { .. } => WaitClass::Pipeline,
            Verification::ArchDrained { .. } => WaitClass::Reconcile,
        }
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verification::ReadBack => f.write_str("read back"),
            Verification::ReleaseReady => f.write_str("Release Ready and Synced"),
            Verification::RunnerOnline { tag_list, architecture } => {
                write!(f, "runner online with tags [{}] on {architecture}", tag_list.join(", "))
            }
            Verification::CiFileOnBranch { branch } => write!(f, "content on branch {branch}"),
            Verification::PipelineProof { jobs } => {
                let jobs: Vec<String> = jobs.iter().map(|(j, a)| format!("{j} on {a}")).collect();
                write!(f, "a pipeline runs {}", jobs.join(", "))
            }
            Verification::BaselineTakesWork { branch, tag, jobs } if jobs.is_empty() => {
                write!(f, "the jobs of a pipeline on {branch} run on the runner tagged {tag}")
            }
            Verification::BaselineTakesWork { branch, tag, jobs } => {
                write!(f, "{} run on the runner tagged {tag} in a pipeline on {branch}", jobs.join(", "))
            }
            Verification::ArchDrained { node_pool, architecture } => {
                write!(f, "no pod left on {architecture} nodes of NodePool {node_pool}")
            }
        }
    }
}

/// One write, with everything needed to show it, apply it, verify it and roll it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub id: ChangeId,
    pub phase: Phase,
    pub target: ObjectRef,
    pub action: Action,
    /// One line for lists and logs.
    pub summary: String,
    pub before: Option<Document>,
    pub after: Option<Document>,
    pub precondition: Precondition,
    /// JSON pointers into before/after whose values are secret and must be masked in output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensitive: Vec<String>,
    /// Changes that must be applied and verified first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<ChangeId>,
    /// Values filled in at apply time from other changes' outputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<Binding>,
    pub method: WriteMethod,
    pub reversal: Reversal,
    /// Checked in order after the write.
    pub verify: Vec<Verification>,
    /// Observed before the write; the step waits for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waits_for: Vec<Verification>,
}

impl Change {
    /// A change with no dependencies or bindings, verified by reading it back.
    pub fn new(
        id: ChangeId,
        phase: Phase,
        target: ObjectRef,
        action: Action,
        summary: impl Into<String>,
        method: WriteMethod,
    ) -> Self {
        let reversal = match action {
            Action::Create => Reversal::Delete,
            Action::Update | Action::Delete => Reversal::RestoreBefore,
        };
        Self {
            id,
            phase,
            target,
            action,
            summary: summary.into(),
            before: None,
            after: None,
            precondition: if action == Action::Create { Precondition::Absent } else { Precondition::Exists },
            sensitive: Vec::new(),
            depends_on: Vec::new(),
            bindings: Vec::new(),
            method,
            reversal,
            verify: vec![Verification::ReadBack],
            waits_for: Vec::new(),
        }
    }

    pub fn before(mut self, doc: Document) -> Self {
        self.before = Some(doc);
        self
    }
    pub fn after(mut self, doc: Document) -> Self {
        self.after = Some(doc);
        self
    }
    pub fn precondition(mut self, p: Precondition) -> Self {
        self.precondition = p;
        self
    }
    pub fn sensitive(mut self, pointers: impl IntoIterator<Item = String>) -> Self {
        self.sensitive.extend(pointers);
        self
    }
    pub fn depends_on(mut self, ids: impl IntoIterator<Item = ChangeId>) -> Self {
        for id in ids {
            if !self.depends_on.contains(&id) {
                self.depends_on.push(id);
            }
        }
        self
    }
    /// Binds `pointer` to `output` of `from`, which also becomes a dependency.
    pub fn bind(mut self, pointer: &str, from: ChangeId, output: Output, source: impl Into<String>) -> Self {
        self = self.depends_on([from.clone()]);
        self.bindings.push(Binding { pointer: pointer.into(), from, output, source: source.into() });
        self
    }
    pub fn reversal(mut self, r: Reversal) -> Self {
        self.reversal = r;
        self
    }
    pub fn verify(mut self, v: Vec<Verification>) -> Self {
        self.verify = v;
        self
    }
    pub fn waits_for(mut self, v: Vec<Verification>) -> Self {
        self.waits_for = v;
        self
    }

    /// What this change produces for others to bind.
    pub fn outputs(&self) -> &'static [Output] {
        match (&self.target, self.action) {
            (ObjectRef::GitLabRunner { .. }, Action::Create) | (ObjectRef::RunnerToken { .. }, _) => {
                &[Output::RunnerToken]
            }
            _ => &[],
        }
    }

    pub fn after_object(&self) -> Option<&Value> {
        self.after.as_ref().and_then(Document::as_object)
    }
}
