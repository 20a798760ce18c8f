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
pub mod rollback;
pub mod runners;
pub mod workloads;

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::ciyaml::{Outcome, Retag};
use crate::model::{
    Action, Blocked, Change, ChangeId, CiFile, Document, FindingCode, MergeRequest, ObjectRef, ObservedState,
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

/// What the NodePool widening must wait for, or cannot go ahead without. Once arm64 is
/// allowed, Karpenter may launch arm64 nodes for any pod without an architecture constraint.
#[derive(Debug, Default)]
pub struct WideningGate {
    /// Changes that pin something to amd64; the widening depends on each.
    pub pins: Vec<ChangeId>,
    /// What would float to arm64 and no change of this plan pins: the widening is refused.
    pub blockers: Vec<String>,
}

/// Plans every phase, in phase order.
pub fn plan_all(state: &ObservedState, spec: &MigrationPlan) -> Vec<PhasePlan> {
    let mut gate = WideningGate::default();
    let runners = runners::plan(state, spec, &mut gate);
    let workloads = workloads::plan(state, spec, &mut gate);
    let mut phases = vec![nodepool::plan(state, spec, &gate), runners, pipeline::plan(state, spec), workloads];
    resolve_dependencies(&mut phases);
    phases
}

/// Follows every dependency to where it stands. One on a change of the plan is kept; one on a
/// change a planner found in place (`PhasePlan::done`) is satisfied and dropped; one on a
/// change that was refused or blocked, or that no planner accounts for, blocks its dependent,
/// which leaves the changes for `blocked` with a reason naming the prerequisite. Repeated
/// until nothing more is blocked, so a refusal reaches everything downstream of it.
pub fn resolve_dependencies(phases: &mut [PhasePlan]) {
    let done: BTreeSet<ChangeId> = phases.iter().flat_map(|p| p.done.iter().cloned()).collect();
    // For each blocked change, the refused change at the root of it and the refusal's reason.
    let mut root: BTreeMap<ChangeId, (ChangeId, String)> = phases
        .iter()
        .flat_map(|p| p.blocked.iter().map(|b| (b.id.clone(), (b.id.clone(), b.reason.clone()))))
        .collect();
    loop {
        let present: BTreeSet<ChangeId> = phases.iter().flat_map(|p| p.changes.iter().map(|c| c.id.clone())).collect();
        let mut newly: BTreeMap<ChangeId, (String, (ChangeId, String))> = BTreeMap::new();
        for change in phases.iter().flat_map(|p| p.changes.iter()) {
            let Some(dep) = change.depends_on.iter().find(|d| !present.contains(*d) && !done.contains(*d)) else {
                continue;
            };
            let (reason, why) = match root.get(dep) {
                Some((r, why)) if r == dep => {
                    (format!("needs {dep}, which was refused: {why}"), (r.clone(), why.clone()))
                }
                Some((r, why)) => (format!("needs {dep}, blocked by {r}: {why}"), (r.clone(), why.clone())),
                None => {
                    let why = format!("needs {dep}, which this plan neither makes nor finds in place");
                    (why.clone(), (dep.clone(), why))
                }
            };
            newly.insert(change.id.clone(), (reason, why));
        }
        if newly.is_empty() {
            break;
        }
        for phase in phases.iter_mut() {
            let (stopped, kept): (Vec<Change>, Vec<Change>) =
                std::mem::take(&mut phase.changes).into_iter().partition(|c| newly.contains_key(&c.id));
            phase.changes = kept;
            for change in stopped {
                let Some((reason, why)) = newly.remove(&change.id) else { continue };
                root.insert(change.id.clone(), why);
                phase.blocked.push(Blocked {
                    id: change.id.clone(),
                    target: change.target.clone(),
                    summary: change.summary.clone(),
                    reason,
                    change: Some(Box::new(change)),
                });
            }
        }
    }
    let present: BTreeSet<ChangeId> = phases.iter().flat_map(|p| p.changes.iter().map(|c| c.id.clone())).collect();
    for change in phases.iter_mut().flat_map(|p| p.changes.iter_mut()) {
        change.depends_on.retain(|d| present.contains(d));
    }
}

/// One phase alone, as `plan_all` plans it.
pub fn plan_phase(phase: Phase, state: &ObservedState, spec: &MigrationPlan) -> PhasePlan {
    plan_all(state, spec).into_iter().find(|p| p.phase == phase).unwrap_or_else(|| PhasePlan::new(phase))
}

/// Where a CI change is committed, and how it reaches the base branch.
pub(crate) fn delivery_method(delivery: &Delivery, base: &str, title: &str) -> WriteMethod {
    match delivery.mode {
        DeliveryMode::MergeRequest => WriteMethod::GitLabCommit {
            branch: delivery.branch.clone(),
            start_branch: Some(base.to_string()),
            merge_request: Some(MergeRequest {
                target_branch: base.to_string(),
                title: title.to_string(),
                merge: delivery.merge,
            }),
        },
        DeliveryMode::DirectCommit => {
            WriteMethod::GitLabCommit { branch: base.to_string(), start_branch: None, merge_request: None }
        }
    }
}

/// Turns a rewrite into a change (when it changed anything) and its per-file and per-job
/// findings.
fn ci_file_change(out: &mut PhasePlan, file: &CiFile, retag: &Retag, delivery: &Delivery) -> Option<ChangeId> {
    // GitLab accepts a repeated key and silently drops the earlier value: usually a mistake.
    for warning in &retag.warnings {
        out.finding(FindingCode::CiFileRepeatedKey, Status::Risk, Some(ci_file_ref(file)), warning.clone());
    }
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

/// Who else reconciles a Kubernetes object, if anyone: a direct change to it lasts only until
/// their next sync, so the change belongs in their source (git, the composition) instead.
pub(crate) fn reconciler(obj: &serde_json::Value) -> Option<String> {
    let meta = &obj["metadata"];
    let label = |k: &str| meta["labels"][k].as_str();
    let annotation = |k: &str| meta["annotations"][k].as_str();
    if let Some(app) = label("argocd.argoproj.io/instance") {
        return Some(format!("Argo CD application {app}"));
    }
    if let Some(id) = annotation("argocd.argoproj.io/tracking-id") {
        return Some(format!("Argo CD ({id})"));
    }
    for (key, what) in
        [("kustomize.toolkit.fluxcd.io", "Flux Kustomization"), ("helm.toolkit.fluxcd.io", "Flux HelmRelease")]
    {
        if let Some(name) = label(&format!("{key}/name")) {
            let ns = label(&format!("{key}/namespace")).map(|n| format!("{n}/")).unwrap_or_default();
            return Some(format!("{what} {ns}{name}"));
        }
    }
    // Argo CD's label tracking (its default before 3.0); Helm sets the same label with managed-by Helm.
    if let Some(app) = label("app.kubernetes.io/instance")
        && label(crate::vocab::MANAGED_BY) != Some("Helm")
    {
        return Some(format!("Argo CD application {app} (label tracking)"));
    }
    if let Some(owner) =
        meta["ownerReferences"].as_array().and_then(|refs| refs.iter().find(|r| r["controller"] == true))
    {
        return Some(format!(
            "its controller {} {}",
            owner["kind"].as_str().unwrap_or("?"),
            owner["name"].as_str().unwrap_or("?")
        ));
    }
    let appliers: Vec<&str> = meta["managedFields"]
        .as_array()
        .map(|mf| {
            mf.iter()
                .filter(|m| m["operation"] == "Apply")
                .filter_map(|m| m["manager"].as_str())
                .filter(|m| *m != crate::vocab::FIELD_MANAGER && !m.starts_with("kubectl"))
                .collect()
        })
        .unwrap_or_default();
    appliers.first().map(|m| format!("field manager {m} (server-side apply)"))
}

/// Reports a reconciler that would revert `change`.
fn flag_reconciler(out: &mut PhasePlan, obj: &serde_json::Value, target: &ObjectRef, change: &ChangeId) {
    if let Some(who) = reconciler(obj) {
        out.finding_for(
            FindingCode::Reconciled,
            Status::Risk,
            Some(target.clone()),
            change,
            format!("managed by {who}: its next sync reverts this change; make it in that source instead (or stop the sync first)"),
        );
    }
}

pub(crate) fn join<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}

#[cfg(test)]
mod rollback_tests;
#[cfg(test)]
mod safety_tests;
#[cfg(test)]
mod tests;
