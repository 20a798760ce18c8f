//! What a planner reports besides changes: coded findings. Codes are stable (scripts, the
//! audit JSON and tests match on them); messages are for people and may change.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ChangeId, ObjectRef};

/// Where something stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Already as wanted.
    Done,
    /// Will be done by a change of this plan, or is waiting on something (a runner coming online).
    Pending,
    /// Needs a person's attention: the tool will not or cannot fix it safely.
    Risk,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Status::Done => "done",
            Status::Pending => "pending",
            Status::Risk => "risk",
        })
    }
}

macro_rules! finding_codes {
    ($($variant:ident = $code:literal: $doc:literal,)*) => {
        /// The kind of a finding. The README lists every code (a test keeps it complete).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum FindingCode {
            $(#[doc = $doc] $variant,)*
        }

        impl FindingCode {
            pub const ALL: &'static [FindingCode] = &[$(FindingCode::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(FindingCode::$variant => $code,)* }
            }

            /// One line on what the code means.
            pub fn describe(self) -> &'static str {
                match self { $(FindingCode::$variant => $doc,)* }
            }

            pub fn from_code(code: &str) -> Option<Self> {
                match code { $($code => Some(FindingCode::$variant),)* _ => None }
            }
        }
    };
}

finding_codes! {
    KindNotServed = "cluster.kind-not-served": "the cluster does not serve a kind the phase needs (its controller is not installed)",
    GitLabUnreadable = "gitlab.unreadable": "GitLab refused to show something the phase needs (403: the token's role is too low)",
    NodePoolNotFound = "nodepool.not-found": "the plan's NodePool is not in the cluster",
    NodePoolInvalid = "nodepool.invalid": "the NodePool's requirements cannot be read",
    NodePoolAllows = "nodepool.allows": "the NodePool already allows every wanted architecture",
    NodePoolWidenNeeded = "nodepool.widen-needed": "the NodePool must be widened to the wanted architectures",
    NodePoolArchRewritten = "nodepool.arch-rewritten": "arch requirements other than one `In` are replaced by one explicit `In`",
    NodePoolWaitsForPins = "nodepool.waits-for-pins": "the widening is ordered after the pins it needs",
    NodePoolWidenBlocked = "nodepool.widen-blocked": "the widening is refused while something would float to arm64 unpinned",
    NodePoolArm64Impossible = "nodepool.arm64-impossible": "other requirements of the pool exclude every arm64 instance type",
    NodePoolMinValuesMerged = "nodepool.min-values-merged": "minValues of merged arch requirements was carried over",
    Reconciled = "gitops.reconciled": "a reconciler owns the object: the next sync reverts a direct change",
    NodePoolNoNodeClass = "nodepool.no-node-class": "the NodePool names no nodeClassRef",
    NodeClassNotFound = "nodeclass.not-found": "the EC2NodeClass the NodePool names is missing",
    NodeClassAmisUnknown = "nodeclass.amis-unknown": "the EC2NodeClass has not reported its AMIs yet",
    NodeClassAmis = "nodeclass.amis": "the EC2NodeClass resolves an AMI for every wanted architecture",
    NodeClassNoAmi = "nodeclass.no-ami": "the EC2NodeClass resolves no AMI for a wanted architecture",
    BaselinePresent = "baseline.present": "the baseline Release exists and is kept as the rollback target",
    BaselineNotFound = "baseline.not-found": "no baseline Release: nothing amd64-only to roll back to",
    BaselineJobsUnpinned = "baseline.jobs-unpinned": "the baseline runner's job pods have no arch node selector",
    BaselinePinned = "baseline.pinned": "the baseline runner's job pods are pinned to amd64",
    BaselinePinOverridden = "baseline.pin-overridden": "a baseline `set` or valuesFrom may override its runner config",
    RunnerSelfRegisters = "runner.self-registers": "the runner registers itself with the legacy registration token",
    RunnerTagShared = "runner.tag-shared": "several runners carry one architecture tag",
    RunnerTokenReset = "runner.token-reset": "a runner exists without its token Secret; its token is reset",
    RunnerOnline = "runner.online": "the runner is online on the right architecture",
    RunnerWrongArch = "runner.wrong-arch": "a runner manager reports another architecture",
    RunnerPaused = "runner.paused": "the runner is paused and takes no jobs",
    RunnerOffline = "runner.offline": "the runner has not connected to GitLab yet",
    RunnerScopeIdUnknown = "runner.scope-id-unknown": "the numeric id of the runner scope's group or project is unknown",
    RunnerExternalMissing = "runner.external-missing": "with external token Secrets, the runner must be created by hand",
    SecretExternalMissing = "secret.external-missing": "an externally managed token Secret does not exist yet",
    SecretKeysMissing = "secret.keys-missing": "a token Secret lacks a key the chart mounts",
    ReleaseManagerUnschedulable = "release.manager-unschedulable": "no NodePool can host the runner manager pod",
    ReleaseNoGitLabUrl = "release.no-gitlab-url": "no gitlabUrl is known for the new Release",
    ReleaseValuesUnusable = "release.values-unusable": "the Release values cannot be edited safely",
    ReleaseValuesFrom = "release.values-from": "inherited valuesFrom may override what archshift sets",
    ReleaseNotInherited = "release.not-inherited": "baseline settings tied to its identity are not inherited",
    ReleaseDoNotDisrupt = "release.do-not-disrupt": "the Karpenter v1 do-not-disrupt annotation is added next to do-not-evict",
    ReleaseArchSpecificConfig = "release.arch-specific-config": "inherited runner config names another architecture",
    ReleaseNamespaceDiffers = "release.namespace-differs": "runners.namespace differs from the baseline's namespace",
    ReleaseJobsUnschedulable = "release.jobs-unschedulable": "no NodePool can host the runner's job pods, even widened",
    ReleaseVersionMismatch = "release.version-mismatch": "the deployed chart version is not the wanted one",
    ReleaseReady = "release.ready": "the Release is deployed and Ready",
    ReleaseNotReady = "release.not-ready": "the Release reports Ready=False",
    ReleaseNotReconciled = "release.not-reconciled": "the provider has not reported a Ready condition yet",
    VariableSet = "variable.set": "the tag variable holds the tag, unprotected and unmasked",
    VariableScoped = "variable.scoped": "the variable is also defined for other environment scopes",
    VariableHidden = "variable.hidden": "the variable is hidden and GitLab will not change it",
    CiFileNotFound = "cifile.not-found": "the pipeline project's CI file is missing",
    CiFileUnreadable = "cifile.unreadable": "the CI file cannot be parsed or rewritten",
    CiFileUnknownJob = "cifile.unknown-job": "the plan names a job that is not in the CI file",
    CiFileNoBuildJob = "cifile.no-build-job": "no job builds for a wanted architecture",
    CiFileIncludesUncovered = "cifile.includes-uncovered": "jobs from `include:` files get no tag from a per-job rewrite",
    CiFileRepeatedKey = "cifile.repeated-key": "a key repeats in one mapping of the CI file; GitLab keeps the last value",
    CiJobTagged = "cijob.tagged": "a build job already runs on its architecture's runner",
    CiJobWrongTags = "cijob.wrong-tags": "a build job keeps tags that do not select its runner",
    CiJobNeedsReview = "cijob.needs-review": "a job was left alone and needs a person's review",
    ProjectNoCiFile = "project.no-ci-file": "a group project has no CI file",
    ProjectPinned = "project.pinned": "every job of a group project is tagged",
    WorkloadPinned = "workloads.pinned": "an Argo template is pinned to an architecture",
    WorkloadUnpinned = "workloads.unpinned": "a workload has no architecture constraint and is pinned to amd64",
    WorkloadNoSpec = "workloads.no-spec": "an Argo object has no workflow spec to pin",
    WorkloadOtherPool = "workloads.other-pool": "a workload targets another NodePool and is left alone",
    WorkflowDefaults = "workloads.workflow-defaults": "the workflow-controller's workflowDefaults can pin every workflow",
    ControllerUnpinned = "workloads.controller-unpinned": "a Deployment, StatefulSet, Job or CronJob on the pool has no arch constraint",
    DaemonSetOnArm64 = "workloads.daemonset-arm64": "a DaemonSet will also start on the pool's arm64 nodes",
    OrderingHazard = "ordering.hazard": "workloads rely on the pool being amd64-only",
    RollbackNoRerouteTag = "rollback.no-reroute-tag": "no tag of the baseline runner is known to route amd64 jobs back to",
    RollbackArm64JobsPending = "rollback.arm64-jobs-pending": "jobs tagged for arm64 stay pending once the arm64 runner is gone",
    RollbackWaitsForArm64Pods = "rollback.waits-for-arm64-pods": "the pool is narrowed only once no arm64 pod remains",
    RollbackPinsKept = "rollback.pins-kept": "workload and baseline pins stay on purpose",
    RollbackNothing = "rollback.nothing": "nothing of archshift's is left to roll back",
    RollbackLeftAlone = "rollback.left-alone": "something archshift did not create or change is left as it is",
    RollbackCannotRestore = "rollback.cannot-restore": "a before-image cannot be written back (masked, or changed since)",
}

impl fmt::Display for FindingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl Serialize for FindingCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FindingCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        FindingCode::from_code(&code).ok_or_else(|| serde::de::Error::custom(format!("unknown finding code `{code}`")))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub code: FindingCode,
    pub status: Status,
    /// What the finding is about.
    pub target: Option<ObjectRef>,
    /// The change that resolves it, when this plan has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<ChangeId>,
    pub message: String,
}

impl Finding {
    /// `target: message`, or the message alone.
    pub fn headline(&self) -> String {
        match &self.target {
            Some(t) => format!("{t}: {}", self.message),
            None => self.message.clone(),
        }
    }
}
