//! One pure planner per phase: observed state + plan file -> ordered changes + findings.
//!
//! Planners are idempotent: planning against the state their changes produce yields no
//! changes (see `model::apply_change` and the tests). Each change names the changes it depends
//! on; the phases keep the numbers the operator knows, but the engine follows the
//! dependencies. The one that crosses phases: the NodePool is widened only after every pin
//! the Workloads phase plans, so nothing that relied on the amd64-only pool floats to arm64.

pub mod nodepool;
pub mod patch;
pub mod pipeline;
pub mod runners;
pub mod workloads;

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use crate::ciyaml::{Outcome, Retag};
use crate::model::{
    Action, Change, ChangeId, CiFile, Document, FindingCode, MergeRequest, ObjectRef, ObservedState,
    PLAN_FORMAT_VERSION, Phase, PhasePlan, Plan, Precondition, Status, Verification, WriteMethod,
};
use crate::spec::{Delivery, DeliveryMode, MigrationPlan};

/// The whole plan: every phase, with dependencies that name only changes it contains.
/// `spec_text` is the plan file as read, for its digest.
pub fn plan(state: &ObservedState, spec: &MigrationPlan, spec_text: &str) -> Plan {
    Plan {
        format_version: PLAN_FORMAT_VERSION,
        spec_digest: digest(spec_text),
        observed_at: state.observed_at.clone(),
        endpoints: state.endpoints.clone(),
        phases: plan_all(state, spec),
    }
}

/// `sha256:<hex>` of a text.
pub fn digest(text: &str) -> String {
    let hash = Sha256::digest(text.as_bytes());
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Plans every phase, in phase order.
pub fn plan_all(state: &ObservedState, spec: &MigrationPlan) -> Vec<PhasePlan> {
    let workloads = workloads::plan(state, spec);
    let mut phases = vec![
        nodepool::plan(state, spec, &workloads.pins()),
        runners::plan(state, spec),
        pipeline::plan(state, spec),
        workloads.phase,
    ];
    // A dependency on a change this world does not need is already satisfied.
    let ids: BTreeSet<ChangeId> = phases.iter().flat_map(|p| p.changes.iter().map(|c| c.id.clone())).collect();
    for change in phases.iter_mut().flat_map(|p| p.changes.iter_mut()) {
        change.depends_on.retain(|d| ids.contains(d));
    }
    phases
}

/// One phase alone, as `plan_all` plans it.
pub fn plan_phase(phase: Phase, state: &ObservedState, spec: &MigrationPlan) -> PhasePlan {
    plan_all(state, spec).into_iter().find(|p| p.phase == phase).unwrap_or_else(|| PhasePlan::new(phase))
}

/// Where a CI change is committed, and how it reaches the base branch.
fn delivery_method(delivery: &Delivery, base: &str, title: &str) -> WriteMethod {
    match delivery.mode {
        DeliveryMode::MergeRequest => WriteMethod::GitLabCommit {
            branch: delivery.branch.clone(),
            start_branch: Some(base.to_string()),
            merge_request: Some(MergeRequest { target_branch: base.to_string(), title: title.to_string() }),
        },
        DeliveryMode::DirectCommit => {
            WriteMethod::GitLabCommit { branch: base.to_string(), start_branch: None, merge_request: None }
        }
    }
}

/// Turns a rewrite into a change (when it changed anything) and its per-job findings.
fn ci_file_change(out: &mut PhasePlan, file: &CiFile, retag: &Retag, delivery: &Delivery) -> Option<ChangeId> {
    for job in &retag.jobs {
        if let Outcome::LeftAlone { reason, needs_review: true } = &job.outcome {
            out.finding(FindingCode::CiJobNeedsReview, Status::Risk, Some(ci_job(file, &job.job)), reason.clone());
        }
    }
    if !retag.changed {
        return None;
    }
    let added: Vec<String> = retag
        .jobs
        .iter()
        .filter_map(|j| match &j.outcome {
            Outcome::Added { tag, .. } => Some(format!("{} -> {tag}", j.job)),
            _ => None,
        })
        .collect();
    let via_default = retag.default_tags_added.as_ref().map(|t| format!(" (default: tags [{t}])")).unwrap_or_default();
    let id = ChangeId::ci_file(&file.project, &file.path);
    let title = format!("ci: run jobs on per-architecture runners ({})", file.path);
    let method = delivery_method(delivery, &file.branch, &title);
    let branch = match &method {
        WriteMethod::GitLabCommit { branch, .. } => branch.clone(),
        _ => file.branch.clone(),
    };
    out.changes.push(
        Change::new(
            id.clone(),
            out.phase,
            ObjectRef::CiFile { project: file.project.clone(), path: file.path.clone(), branch },
            Action::Update,
            format!("tag {} job(s) in {}:{}{via_default}: {}", added.len(), file.project, file.path, added.join(", ")),
            method,
        )
        .before(Document::Text(file.content.clone()))
        .after(Document::Text(retag.output.clone()))
        .precondition(Precondition::LastCommit { last_commit_id: file.last_commit_id.clone() })
        .verify(vec![Verification::CiFileOnBranch { branch: file.branch.clone() }]),
    );
    Some(id)
}

fn ci_job(file: &CiFile, job: &str) -> ObjectRef {
    ObjectRef::CiJob { project: file.project.clone(), path: file.path.clone(), job: job.to_string() }
}

fn ci_file_ref(file: &CiFile) -> ObjectRef {
    ObjectRef::CiFile { project: file.project.clone(), path: file.path.clone(), branch: file.branch.clone() }
}

pub(crate) fn join<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}

#[cfg(test)]
mod tests;
