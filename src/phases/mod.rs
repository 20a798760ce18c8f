//! One pure planner per phase: observed state + plan file -> ordered changes + findings.
//!
//! Planners are idempotent: planning against the state their changes produce yields no
//! changes (see `model::apply_change` and the tests).

pub mod nodepool;
pub mod pipeline;
pub mod runners;
pub mod workloads;

use crate::ciyaml::{Outcome, Retag};
use crate::model::{Action, Change, CiFile, Document, ObservedState, Phase, PhasePlan, Precondition, Severity, Target};
use crate::spec::{Delivery, DeliveryMode, MigrationPlan};

/// Plans every phase, in order.
pub fn plan_all(state: &ObservedState, spec: &MigrationPlan) -> Vec<PhasePlan> {
    Phase::ALL.iter().map(|p| plan_phase(*p, state, spec)).collect()
}

pub fn plan_phase(phase: Phase, state: &ObservedState, spec: &MigrationPlan) -> PhasePlan {
    match phase {
        Phase::NodePool => nodepool::plan(state, spec),
        Phase::Runners => runners::plan(state, spec),
        Phase::Pipeline => pipeline::plan(state, spec),
        Phase::Workloads => workloads::plan(state, spec),
    }
}

/// The branch a CI file change is committed to.
fn delivery_branch(delivery: &Delivery, base: &str) -> String {
    match delivery.mode {
        DeliveryMode::MergeRequest => delivery.branch.clone(),
        DeliveryMode::DirectCommit => base.to_string(),
    }
}

/// Turns a rewrite into a change (when it changed anything) and its per-job findings.
fn ci_file_change(out: &mut PhasePlan, file: &CiFile, retag: &Retag, delivery: &Delivery) {
    let subject = format!("{}:{}", file.project, file.path);
    for job in &retag.jobs {
        if let Outcome::LeftAlone { reason, needs_review: true } = &job.outcome {
            out.finding(Severity::Risk, format!("{subject} job {}", job.job), reason.clone());
        }
    }
    if !retag.changed {
        return;
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
    out.changes.push(Change {
        id: format!("cifile/{}/{}", file.project, file.path),
        phase: out.phase,
        target: Target::CiFile {
            project: file.project.clone(),
            path: file.path.clone(),
            branch: delivery_branch(delivery, &file.branch),
        },
        action: Action::Update,
        summary: format!("tag {} job(s) in {subject}{via_default}: {}", added.len(), added.join(", ")),
        before: Some(Document::Text(file.content.clone())),
        after: Some(Document::Text(retag.output.clone())),
        precondition: Precondition::LastCommit { last_commit_id: file.last_commit_id.clone() },
        sensitive: vec![],
    });
}

#[cfg(test)]
mod tests;
