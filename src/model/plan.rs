//! The Plan: every phase's changes and findings, with what they were planned against. The
//! audit, `plan --out`, `apply` and the TUI all share it; saved plans freeze it on disk.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Change, ChangeId, Finding, FindingCode, ObjectRef, Status};
use crate::vocab::Phase;

/// Version of the saved-plan format. Bumped whenever `Plan` changes shape incompatibly; a
/// reader refuses other versions.
pub const PLAN_FORMAT_VERSION: u32 = 1;

/// A change the plan will not make: its planner refused it, or a change it needs was
/// refused, blocked or is missing. The engine never sees it; the audit, `plan` and the TUI
/// show it with its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Blocked {
    pub id: ChangeId,
    pub target: ObjectRef,
    /// One line for lists, as a change's summary.
    pub summary: String,
    /// Why, naming the prerequisite that stops it when it is not refused itself.
    pub reason: String,
    /// The change as planned, when the planner got that far (a dependent of a refused
    /// change); `None` for a change the planner refused outright.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Box<Change>>,
}

/// A planner's answer for one phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhasePlan {
    pub phase: Phase,
    pub changes: Vec<Change>,
    pub findings: Vec<Finding>,
    /// Changes this phase will not make, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<Blocked>,
    /// Changes this phase found already in place: a dependency on one is satisfied. Any
    /// other dependency missing from the plan blocks its dependent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub done: Vec<ChangeId>,
}

impl PhasePlan {
    pub fn new(phase: Phase) -> Self {
        Self { phase, changes: Vec::new(), findings: Vec::new(), blocked: Vec::new(), done: Vec::new() }
    }

    /// The planner will not make change `id` (its risk finding says why for a person).
    pub fn refuse(&mut self, id: ChangeId, target: ObjectRef, summary: impl Into<String>, reason: impl Into<String>) {
        self.blocked.push(Blocked { id, target, summary: summary.into(), reason: reason.into(), change: None });
    }

    /// Change `id` is not needed: its target already holds what it would write.
    pub fn holds(&mut self, id: ChangeId) {
        if !self.done.contains(&id) {
            self.done.push(id);
        }
    }

    pub fn finding(
        &mut self,
        code: FindingCode,
        status: Status,
        target: Option<ObjectRef>,
        message: impl Into<String>,
    ) {
        self.findings.push(Finding { code, status, target, change: None, message: message.into() });
    }

    /// A finding resolved by `change`.
    pub fn finding_for(
        &mut self,
        code: FindingCode,
        status: Status,
        target: Option<ObjectRef>,
        change: &ChangeId,
        message: impl Into<String>,
    ) {
        self.findings.push(Finding { code, status, target, change: Some(change.clone()), message: message.into() });
    }

    pub fn risks(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.status == Status::Risk)
    }

    pub fn has(&self, code: FindingCode) -> bool {
        self.findings.iter().any(|f| f.code == code)
    }
}

/// Which cluster and GitLab a plan was made against; a saved plan is refused elsewhere.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointIdentity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitlab: Option<GitLabIdentity>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterIdentity {
    /// The API server URL.
    pub server: String,
    /// The uid of the `kube-system` namespace: unique per cluster, unlike its URL.
    pub kube_system_uid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitLabIdentity {
    pub url: String,
    /// Numeric ids of the projects and groups the plan names, by path: a path can be
    /// re-created, an id cannot.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ids: BTreeMap<String, u64>,
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub format_version: u32,
    /// `sha256:<hex>` of the plan file it was made from.
    pub spec_digest: String,
    /// When the state was observed (RFC 3339), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<String>,
    pub endpoints: EndpointIdentity,
    pub phases: Vec<PhasePlan>,
}

/// A dependency graph that cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("two changes have id {0}")]
    DuplicateId(ChangeId),
    #[error("{change} depends on {missing}, which is not in the plan")]
    MissingDependency { change: ChangeId, missing: ChangeId },
    #[error("{change} binds {pointer} to {from}, which does not produce {output:?}")]
    BadBinding { change: ChangeId, pointer: String, from: ChangeId, output: super::Output },
    #[error("dependency cycle through {0}")]
    Cycle(ChangeId),
}

impl Plan {
    pub fn changes(&self) -> impl Iterator<Item = &Change> {
        self.phases.iter().flat_map(|p| p.changes.iter())
    }

    pub fn findings(&self) -> impl Iterator<Item = &Finding> {
        self.phases.iter().flat_map(|p| p.findings.iter())
    }

    /// Every change the plan will not make, with why.
    pub fn blocked(&self) -> impl Iterator<Item = &Blocked> {
        self.phases.iter().flat_map(|p| p.blocked.iter())
    }

    pub fn change(&self, id: &ChangeId) -> Option<&Change> {
        self.changes().find(|c| &c.id == id)
    }

    pub fn phase(&self, phase: Phase) -> Option<&PhasePlan> {
        self.phases.iter().find(|p| p.phase == phase)
    }

    pub fn is_empty(&self) -> bool {
        self.changes().next().is_none()
    }

    /// Checks ids are unique, every dependency and binding names a change of the plan that
    /// produces what is bound, and there is no cycle.
    pub fn check_graph(&self) -> Result<(), GraphError> {
        self.order().map(|_| ())
    }

    /// The changes in the order the engine applies them: every change after its
    /// dependencies, otherwise in phase order and the order planners gave.
    pub fn order(&self) -> Result<Vec<&Change>, GraphError> {
        let all: Vec<&Change> = self.changes().collect();
        let mut index: BTreeMap<&ChangeId, usize> = BTreeMap::new();
        for (i, c) in all.iter().enumerate() {
            if index.insert(&c.id, i).is_some() {
                return Err(GraphError::DuplicateId(c.id.clone()));
            }
        }
        for c in &all {
            for d in &c.depends_on {
                if !index.contains_key(d) {
                    return Err(GraphError::MissingDependency { change: c.id.clone(), missing: d.clone() });
                }
            }
            for b in &c.bindings {
                let produces = index.get(&b.from).is_some_and(|i| all[*i].outputs().contains(&b.output));
                if !produces || !c.depends_on.contains(&b.from) {
                    return Err(GraphError::BadBinding {
                        change: c.id.clone(),
                        pointer: b.pointer.clone(),
                        from: b.from.clone(),
                        output: b.output,
                    });
                }
            }
        }
        // Kahn's algorithm, always taking the earliest ready change: stable and readable.
        let mut placed: BTreeSet<usize> = BTreeSet::new();
        let mut out = Vec::with_capacity(all.len());
        while out.len() < all.len() {
            let next = (0..all.len())
                .find(|i| !placed.contains(i) && all[*i].depends_on.iter().all(|d| placed.contains(&index[d])));
            match next {
                Some(i) => {
                    placed.insert(i);
                    out.push(all[i]);
                }
                None => {
                    let stuck = (0..all.len())
                        .find(|i| !placed.contains(i))
                        .map_or_else(|| ChangeId::from("?"), |i| all[i].id.clone());
                    return Err(GraphError::Cycle(stuck));
                }
            }
        }
        Ok(out)
    }
}
