//! The fifth planner: back to the amd64-only baseline runner, in the order that strands
//! nothing.
//!
//! 1. Route amd64 work back to the baseline first: the amd64 tag variables take a tag the
//!    baseline carries. Instant, no CI revert needed, and safe because the baseline's job
//!    pods are pinned to amd64 (reported when they are not).
//! 2. Pause the arm64 runner; revert the pipeline project's CI change from its before-image in
//!    the journal (or report that arm64-tagged jobs will stay pending). Running jobs get their
//!    grace period: nothing is deleted before the revert.
//! 3. Delete both new Releases, then both GitLab runners (with `glrt-` tokens the chart's
//!    unregister removes only the manager), then the token Secrets, then the project tag
//!    variables the reverted CI file no longer uses.
//! 4. Narrow the NodePool last, once no arm64 pod remains (narrowing drifts arm64 nodes).
//! 5. Keep the Argo, other projects' and baseline pins: harmless, and they protect a later
//!    re-widening.
//!
//! What archshift wrote comes from the journal (`Applied`): a before-image is needed to
//! restore a file or a requirement list exactly. Without one, rollback works from what it
//! observes and says what it cannot restore.

use std::collections::BTreeMap;

use serde_json::json;

use super::patch::patch_change;
use super::pipeline::{tag_variable, variable_api, variable_update, variables_of};
use super::runners;
use crate::model::{
    Action, Arch, Change, ChangeId, CiVariable, Document, FindingCode, GitLabRunner, HttpMethod, NodePoolView,
    ObjectRef, ObservedState, Phase, PhasePlan, Precondition, Reversal, Status, Verification, WriteMethod, kube_id,
};
use crate::spec::MigrationPlan;
use crate::vocab::{NODE_POOL, RELEASE, SECRET};

/// What an applied change left in the journal: enough to restore its target.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub before: Option<Document>,
    pub after: Option<Document>,
    /// What the write did (`None` in journals from before it was recorded: then a change
    /// without a before-image created its target).
    pub action: Option<Action>,
    /// The GitLab runner it created, by id.
    pub runner_id: Option<u64>,
}

impl Applied {
    /// Whether archshift created the target (and so may delete it).
    pub fn created(&self) -> bool {
        self.action.map_or(self.before.is_none(), |a| a == Action::Create)
    }
}

/// The journal's view: every change archshift applied, by id.
pub type Journal = BTreeMap<ChangeId, Applied>;

pub fn plan(state: &ObservedState, spec: &MigrationPlan, journal: &Journal) -> PhasePlan {
    let mut out = PhasePlan::new(Phase::Rollback);
    let r = &spec.runners;
    let mut reroutes: Vec<ChangeId> = Vec::new();

    // 1. Route amd64 work back to the baseline: a tag variable archshift created takes the
    //    baseline's tag (it is deleted once nothing uses it); one it changed gets its
    //    before-image back. One archshift never wrote is not touched.
    let tag = reroute_tag(state, spec);
    let amd64_targets = {
        let own = tag_variable(spec, Arch::Amd64);
        let mut t = vec![own.clone()];
        if let Some(gl) = &spec.workloads.gitlab {
            let group = ObjectRef::GroupVariable {
                group: gl.group.clone(),
                key: spec.pipeline.variables.name(Arch::Amd64).into(),
            };
            if group != own {
                t.push(group);
            }
        }
        t
    };
    let needs_reroute = amd64_targets
        .iter()
        .filter_map(variable_api)
        .any(|(forward, ..)| journal.get(&forward).is_some_and(Applied::created));
    match &tag {
        Some(tag) => {
            baseline_safety(state, spec, &mut out);
            for target in &amd64_targets {
                let Some((forward, ..)) = variable_api(target) else { continue };
                match journal.get(&forward) {
                    Some(a) if a.created() => {
                        reroute(&mut out, variables_of(state, target), target.clone(), tag, &mut reroutes)
                    }
                    Some(a) => restore_variable(&mut out, state, target, &forward, a, &mut reroutes),
                    None => {}
                }
            }
        }
        None if needs_reroute => out.finding(
            FindingCode::RollbackNoRerouteTag,
            Status::Risk,
            None,
            "no tag of the baseline runner is known: set rollback.rerouteTag; until then jobs tagged for the amd64 runner stay pending once it is removed",
        ),
        None => {
            for target in &amd64_targets {
                let Some((forward, ..)) = variable_api(target) else { continue };
                if let Some(a) = journal.get(&forward).filter(|a| !a.created()) {
                    restore_variable(&mut out, state, target, &forward, a, &mut reroutes);
                }
            }
        }
    }
    let arm_target = tag_variable(spec, Arch::Arm64);
    if let Some((forward, ..)) = variable_api(&arm_target)
        && let Some(a) = journal.get(&forward).filter(|a| !a.created())
    {
        restore_variable(&mut out, state, &arm_target, &forward, a, &mut reroutes);
    }

    // 2. Pause the arm64 runner archshift created; revert the pipeline's CI change.
    let mut quiesced: Vec<ChangeId> = reroutes.clone();
    if let Some(runner) = created_runner(state, spec, journal, Arch::Arm64)
        && !runner.paused
    {
        let id = ChangeId::rollback_step("pause", &ChangeId::runner(&r.tag(Arch::Arm64)));
        out.changes.push(
            Change::new(
                id.clone(),
                Phase::Rollback,
                ObjectRef::GitLabRunner { tag: r.tag(Arch::Arm64), id: Some(runner.id) },
                Action::Update,
                format!("pause runner #{} ({}): it takes no new jobs", runner.id, r.tag(Arch::Arm64)),
                WriteMethod::GitLab { method: HttpMethod::Put, path: format!("/runners/{}", runner.id) },
            )
            .before(Document::Object(json!({"paused": false})))
            .after(Document::Object(json!({"paused": true})))
            .precondition(Precondition::Exists),
        );
        quiesced.push(id);
    }
    let reverted = revert_ci(state, spec, journal, &reroutes, tag.as_deref(), &mut out);
    quiesced.extend(reverted.iter().cloned());

    // 3. What archshift created goes (Releases, then runners, then Secrets); what it changed
    //    gets its before-image back; what it did neither to is left alone.
    let namespace = runners::namespace(state, spec);
    let mut removed: Vec<ChangeId> = Vec::new();
    for &arch in spec.architectures() {
        let release = r.release_name(arch);
        let mut after_release = quiesced.clone();
        let forward = ChangeId::release(&release);
        if let (Some(obj), Some(applied)) =
            (state.releases.iter().find(|o| kube_id(o).2 == release), journal.get(&forward))
        {
            let id = ChangeId::rollback(&forward);
            let target = ObjectRef::kube(RELEASE, None, &release);
            if applied.created() {
                out.changes.push(delete_kube(
                    id.clone(),
                    target,
                    obj,
                    format!("delete Release {release} (Helm uninstalls the {arch} runner)"),
                    &quiesced,
                ));
                after_release.push(id.clone());
                removed.push(id);
            } else if restore_kube(
                &mut out,
                id.clone(),
                target,
                obj,
                applied,
                format!("restore Release {release} as it was before archshift"),
                &quiesced,
            ) {
                after_release.push(id.clone());
                removed.push(id);
            }
        }
        let forward = ChangeId::runner(&r.tag(arch));
        if let Some(runner) = created_runner(state, spec, journal, arch) {
            let id = ChangeId::rollback(&forward);
            out.changes.push(
                Change::new(
                    id.clone(),
                    Phase::Rollback,
                    ObjectRef::GitLabRunner { tag: r.tag(arch), id: Some(runner.id) },
                    Action::Delete,
                    format!("delete GitLab runner #{} ({})", runner.id, r.tag(arch)),
                    WriteMethod::GitLab { method: HttpMethod::Delete, path: format!("/runners/{}", runner.id) },
                )
                .precondition(Precondition::RunnerTags {
                    tag_list: runner.tag_list.clone(),
                    run_untagged: runner.run_untagged,
                })
                .reversal(Reversal::Irreversible {
                    reason: "a deleted runner and its token cannot be restored; apply creates new ones".into(),
                })
                .depends_on(after_release.clone()),
            );
            removed.push(id);
        } else if let Some(runner) = adopted_runner(state, spec, journal, arch) {
            restore_runner(&mut out, spec, journal, arch, runner, &after_release, &mut removed);
        }
        let secret = r.token_secret_name(arch);
        let forward = ChangeId::secret(&namespace, &secret);
        if let (Some(s), Some(applied)) =
            (state.secrets.iter().find(|s| s.name == secret && s.namespace == namespace), journal.get(&forward))
        {
            if applied.created() {
                let id = ChangeId::rollback(&forward);
                let obj = json!({"metadata": {"resourceVersion": s.resource_version}});
                out.changes.push(
                    delete_kube(
                        id.clone(),
                        ObjectRef::kube(SECRET, Some(&namespace), &secret),
                        &obj,
                        format!("delete Secret {namespace}/{secret} (the {arch} runner's token)"),
                        &after_release,
                    )
                    .reversal(Reversal::Irreversible { reason: "its token is not kept anywhere, by design".into() }),
                );
                removed.push(id);
            } else {
                out.finding(
                    FindingCode::RollbackLeftAlone,
                    Status::Done,
                    Some(ObjectRef::kube(SECRET, Some(&namespace), &secret)),
                    "existed before archshift, which put a reset token in it; kept (the old token was invalidated by the reset and is not kept anywhere)",
                );
            }
        }
    }
    // The pipeline file is (or is about to be) back at its before-image: a resumed rollback
    // finds it reverted already, and still owes the variables' removal.
    let ci_back = !reverted.is_empty()
        || state.ci_file.as_ref().is_some_and(|f| {
            spec.architectures().iter().all(|&a| !f.content.contains(&spec.pipeline.variables.reference(a)))
        });
    let mut kept_variables: Vec<String> = Vec::new();
    for &arch in spec.architectures() {
        let mut targets = vec![tag_variable(spec, arch)];
        if arch == Arch::Amd64 {
            targets = amd64_targets.clone();
        }
        for target in targets {
            let Some((forward, collection, key)) = variable_api(&target) else { continue };
            if !journal.get(&forward).is_some_and(Applied::created) {
                continue;
            }
            let Some(v) = variables_of(state, &target).iter().find(|v| v.key == key && v.environment_scope == "*")
            else {
                continue;
            };
            if !ci_back || used_elsewhere(state, spec, &target, &key) {
                if ci_back {
                    kept_variables.push(format!("{target} (the pinned CI files still use it)"));
                }
                continue;
            }
            // What the delete will find: the re-routed value, when step 1 changes it.
            let mut v = v.clone();
            if arch == Arch::Amd64
                && let Some(t) = &tag
                && v.value.is_some()
            {
                v.value = Some(t.clone());
            }
            let id = ChangeId::rollback(&forward);
            out.changes.push(
                Change::new(
                    id.clone(),
                    Phase::Rollback,
                    target.clone(),
                    Action::Delete,
                    format!("delete variable {key}: archshift created it and nothing uses it any more"),
                    WriteMethod::GitLab {
                        method: HttpMethod::Delete,
                        path: format!("{collection}/{key}?filter[environment_scope]=*"),
                    },
                )
                .before(Document::Object(v.to_json()))
                .precondition(Precondition::VariableValue { value: v.value.clone(), protected: v.protected })
                .depends_on(reverted.iter().chain(reroutes.iter()).cloned())
                .verify(vec![Verification::ReadBack]),
            );
            removed.push(id);
        }
    }

    // 4. Narrow the pool last, and only when archshift widened it.
    narrow_pool(state, spec, journal, &removed, &mut out);

    // 5. Pins stay.
    let mut kept: Vec<String> = journal.keys().filter(|id| is_pin(id, spec)).map(ToString::to_string).collect();
    kept.extend(kept_variables);
    if !kept.is_empty() {
        out.finding(
            FindingCode::RollbackPinsKept,
            Status::Done,
            None,
            format!("kept on purpose (harmless, and they protect a later re-widening): {}", kept.join(", ")),
        );
    }
    if out.changes.is_empty() && !out.has(FindingCode::RollbackNoRerouteTag) {
        out.finding(FindingCode::RollbackNothing, Status::Done, None, "nothing of archshift's is left to roll back");
    }
    out
}

/// The runner of `arch` archshift created, as observed now (by the id the journal recorded).
fn created_runner<'a>(
    state: &'a ObservedState,
    spec: &MigrationPlan,
    journal: &Journal,
    arch: Arch,
) -> Option<&'a GitLabRunner> {
    let tag = spec.runners.tag(arch);
    let applied = journal.get(&ChangeId::runner(&tag)).filter(|a| a.created())?;
    match applied.runner_id {
        Some(id) => state.runners.iter().find(|g| g.id == id),
        None => state.runners.iter().find(|g| g.tag_list.contains(&tag)),
    }
}

/// A runner of `arch` archshift did not create but retagged or reset the token of.
fn adopted_runner<'a>(
    state: &'a ObservedState,
    spec: &MigrationPlan,
    journal: &Journal,
    arch: Arch,
) -> Option<&'a GitLabRunner> {
    let tag = spec.runners.tag(arch);
    let touched = journal.get(&ChangeId::runner(&tag)).is_some_and(|a| !a.created())
        || journal.contains_key(&ChangeId::runner_token(&tag));
    if !touched {
        return None;
    }
    state.runners.iter().find(|g| g.tag_list.contains(&tag) || g.description == tag)
}

/// An adopted runner is never deleted: its tags get their before-image back when archshift
/// changed them, and its token reset is reported (the old token is gone for good).
fn restore_runner(
    out: &mut PhasePlan,
    spec: &MigrationPlan,
    journal: &Journal,
    arch: Arch,
    runner: &GitLabRunner,
    after: &[ChangeId],
    removed: &mut Vec<ChangeId>,
) {
    let tag = spec.runners.tag(arch);
    let target = ObjectRef::GitLabRunner { tag: tag.clone(), id: Some(runner.id) };
    let forward = ChangeId::runner(&tag);
    if let Some(before) = journal.get(&forward).and_then(|a| a.before.as_ref()).and_then(Document::as_object) {
        let id = ChangeId::rollback(&forward);
        let mut now = serde_json::Map::new();
        for key in before.as_object().into_iter().flat_map(|m| m.keys()) {
            now.insert(
                key.clone(),
                match key.as_str() {
                    "tag_list" => json!(runner.tag_list),
                    "run_untagged" => json!(runner.run_untagged),
                    "access_level" => json!(runner.access_level),
                    "maximum_timeout" => json!(runner.maximum_timeout),
                    _ => serde_json::Value::Null,
                },
            );
        }
        out.changes.push(
            Change::new(
                id.clone(),
                Phase::Rollback,
                target.clone(),
                Action::Update,
                format!(
                    "give runner #{} its tags from before archshift back (it existed before; it is kept)",
                    runner.id
                ),
                WriteMethod::GitLab { method: HttpMethod::Put, path: format!("/runners/{}", runner.id) },
            )
            .before(Document::Object(now.into()))
            .after(Document::Object(before.clone()))
            .precondition(Precondition::Exists)
            .depends_on(after.iter().cloned()),
        );
        removed.push(id);
    }
    let reset = if journal.contains_key(&ChangeId::runner_token(&tag)) {
        "; archshift reset its authentication token, and the old one cannot come back"
    } else {
        ""
    };
    out.finding(
        FindingCode::RollbackLeftAlone,
        Status::Done,
        Some(target),
        format!("runner #{} existed before archshift: kept, not deleted{reset}", runner.id),
    );
}

/// A variable archshift changed, back to its before-image (value, protection, masking, raw,
/// type); a before-image whose value was masked cannot be written back and is reported.
fn restore_variable(
    out: &mut PhasePlan,
    state: &ObservedState,
    target: &ObjectRef,
    forward: &ChangeId,
    applied: &Applied,
    ids: &mut Vec<ChangeId>,
) {
    let Some((_, _, key)) = variable_api(target) else { return };
    let Some(before) = applied.before.as_ref().and_then(Document::as_object).and_then(CiVariable::from_json) else {
        return;
    };
    let Some(have) = variables_of(state, target).iter().find(|v| v.key == key && v.environment_scope == "*") else {
        return;
    };
    if *have == before
        || (have.value == before.value
            && have.protected == before.protected
            && have.masked == before.masked
            && have.raw == before.raw
            && have.variable_type == before.variable_type)
    {
        return;
    }
    if before.masked || before.value.is_none() {
        out.finding(
            FindingCode::RollbackCannotRestore,
            Status::Risk,
            Some(target.clone()),
            format!("{key} was masked before archshift changed it: its old value was never kept; set it back by hand"),
        );
        return;
    }
    let id = ChangeId::rollback(forward);
    let summary = format!("restore variable {key} as it was before archshift");
    out.changes.push(variable_update(id.clone(), Phase::Rollback, target.clone(), summary, have, &before));
    ids.push(id);
}

/// Whether a CI file rollback keeps (another project's pinned file) still uses `$KEY` of a
/// group variable.
fn used_elsewhere(state: &ObservedState, spec: &MigrationPlan, target: &ObjectRef, key: &str) -> bool {
    let ObjectRef::GroupVariable { group, .. } = target else { return false };
    let refs = [format!("${key}"), format!("${{{key}}}")];
    let uses = |content: &str| refs.iter().any(|r| content.contains(r.as_str()));
    state
        .other_projects
        .iter()
        .filter(|p| p.path.starts_with(&format!("{group}/")) && p.path != spec.pipeline.project)
        .filter_map(|p| p.file.as_ref())
        .any(|f| uses(&f.content))
}

/// An update archshift made to a Kubernetes object, written back from the journal's images.
/// `false` (and a finding) when it cannot be.
fn restore_kube(
    out: &mut PhasePlan,
    id: ChangeId,
    target: ObjectRef,
    obj: &serde_json::Value,
    applied: &Applied,
    summary: String,
    after: &[ChangeId],
) -> bool {
    let (Some(before), Some(wrote)) =
        (applied.before.as_ref().and_then(Document::as_object), applied.after.as_ref().and_then(Document::as_object))
    else {
        out.finding(
            FindingCode::RollbackCannotRestore,
            Status::Risk,
            Some(target),
            "the journal has no before-image of it",
        );
        return false;
    };
    match super::patch::restore(obj, before, wrote) {
        Ok(restored) if restored == *obj => false,
        Ok(restored) => {
            out.changes.push(
                patch_change(id, Phase::Rollback, target, summary, obj, restored).depends_on(after.iter().cloned()),
            );
            true
        }
        Err(why) => {
            out.finding(FindingCode::RollbackCannotRestore, Status::Risk, Some(target), why);
            false
        }
    }
}

/// The pins rollback keeps: Argo, other projects' CI files, the baseline's job pods.
fn is_pin(id: &ChangeId, spec: &MigrationPlan) -> bool {
    let s = id.as_str();
    s.starts_with("argo/")
        || (s.starts_with("cifile/") && *id != ChangeId::ci_file(&spec.pipeline.project, &spec.pipeline.ci_file))
        || *id == ChangeId::release(&spec.runners.baseline_release)
}

/// The tag amd64 jobs go back to: the plan's, else the first tag of the one other runner in
/// scope that is online and takes jobs.
fn reroute_tag(state: &ObservedState, spec: &MigrationPlan) -> Option<String> {
    if let Some(t) = &spec.rollback.reroute_tag {
        return Some(t.clone());
    }
    let ours: Vec<String> = Arch::ALL.iter().map(|a| spec.runners.tag(*a)).collect();
    let others: Vec<_> = state
        .runners
        .iter()
        .filter(|g| !g.tag_list.iter().any(|t| ours.contains(t)) && g.is_online() && !g.paused)
        .collect();
    match others.as_slice() {
        [one] => one.tag_list.first().cloned(),
        _ => None,
    }
}

/// Re-routing is safe only while the baseline's job pods stay on amd64 or the pool is amd64-only.
fn baseline_safety(state: &ObservedState, spec: &MigrationPlan, out: &mut PhasePlan) {
    let Some(baseline) = state.releases.iter().find(|o| kube_id(o).2 == spec.runners.baseline_release) else {
        return;
    };
    let config = baseline
        .pointer("/spec/forProvider/values/runners/config")
        .and_then(serde_json::Value::as_str)
        .unwrap_or(runners::DEFAULT_CONFIG);
    let widened = state
        .node_pools
        .iter()
        .find(|o| kube_id(o).2 == spec.node_pool.name)
        .and_then(|o| NodePoolView::from_object(o).ok())
        .is_some_and(|p| super::nodepool::allowed_archs(&p.requirements).contains(&Arch::Arm64));
    if widened && !runners::job_pods_pinned(config) {
        out.finding(
            FindingCode::BaselineJobsUnpinned,
            Status::Risk,
            Some(ObjectRef::kube(RELEASE, None, &spec.runners.baseline_release)),
            "jobs routed back to the baseline can land on arm64 nodes: its job pods are not pinned to amd64 and the pool allows arm64",
        );
    }
}

fn reroute(out: &mut PhasePlan, vars: &[CiVariable], target: ObjectRef, tag: &str, ids: &mut Vec<ChangeId>) {
    let Some((forward, _, key)) = variable_api(&target) else { return };
    let Some(have) = vars.iter().find(|v| v.key == key && v.environment_scope == "*") else { return };
    if have.value.as_deref() == Some(tag) {
        return;
    }
    let mut wanted = have.clone();
    wanted.value = Some(tag.to_string());
    let id = ChangeId::rollback_step("reroute", &forward);
    let summary = format!("route {key} to the baseline runner's tag {tag}");
    out.changes.push(variable_update(id.clone(), Phase::Rollback, target, summary, have, &wanted));
    ids.push(id);
}

/// The pipeline project's CI file back to its before-image, when it still holds what
/// archshift wrote.
fn revert_ci(
    state: &ObservedState,
    spec: &MigrationPlan,
    journal: &Journal,
    after: &[ChangeId],
    baseline_tag: Option<&str>,
    out: &mut PhasePlan,
) -> Vec<ChangeId> {
    let p = &spec.pipeline;
    let forward = ChangeId::ci_file(&p.project, &p.ci_file);
    let Some(file) = &state.ci_file else { return Vec::new() };
    let target =
        ObjectRef::CiFile { project: file.project.clone(), path: file.path.clone(), branch: file.branch.clone() };
    let applied = journal.get(&forward);
    let (Some(Document::Text(before)), Some(Document::Text(wrote))) =
        (applied.and_then(|a| a.before.clone()), applied.and_then(|a| a.after.clone()))
    else {
        if file.content.contains(&p.variables.reference(Arch::Arm64)) {
            out.finding(
                FindingCode::RollbackArm64JobsPending,
                Status::Risk,
                Some(target),
                "the journal has no before-image of this file: jobs tagged for arm64 stay pending once the arm64 runner is gone; revert the tags by hand",
            );
        }
        return Vec::new();
    };
    // Back at its before-image while the journal still counts the forward change as applied:
    // a rollback stopped after the revert was written and before it was proven. It is planned
    // again (it holds, so nothing is written) so this run gives the same proof.
    let revert_to = if file.content == before || file.content == wrote {
        before.clone()
    } else {
        // Others committed since: archshift's edits are taken out of the file as it is now, when
        // they are still there and nothing of theirs touches them.
        match diffy::merge(&wrote, &before, &file.content) {
            Ok(merged) if crate::phases::patch::edits_hold(&before, &wrote, &file.content) => merged,
            _ => {
                out.finding(
                    FindingCode::RollbackArm64JobsPending,
                    Status::Risk,
                    Some(target),
                    "changed since archshift wrote it, where archshift's edits are: not reverted automatically (a revert would drop those changes); jobs tagged for arm64 stay pending until it is reverted by hand",
                );
                return Vec::new();
            }
        }
    };
    let moved = moved_jobs(&before, &wrote);
    let id = ChangeId::rollback(&forward);
    let title = format!("ci: revert per-architecture runner tags ({})", file.path);
    // Its own branch: the forward change's may still exist (a person merged it and kept the
    // branch), and the revert must not land on top of it.
    let method = super::delivery_method(
        &crate::spec::Delivery { branch: format!("{}-rollback", p.delivery.branch), ..p.delivery.clone() },
        &file.branch,
        &title,
    );
    // The target names the branch the commit goes to, as the forward change's does: the engine
    // then reads the merge request's target branch beside it, and a revert already merged
    // (a rollback stopped before its proof) holds instead of looking half done.
    let target = match &method {
        WriteMethod::GitLabCommit { branch, .. } => {
            ObjectRef::CiFile { project: file.project.clone(), path: file.path.clone(), branch: branch.clone() }
        }
        _ => target,
    };
    out.changes.push(
        Change::new(
            id.clone(),
            Phase::Rollback,
            target,
            Action::Update,
            format!("revert {}:{} to its content before archshift", file.project, file.path),
            method,
        )
        .before(Document::Text(file.content.clone()))
        .after(Document::Text(revert_to))
        .precondition(Precondition::LastCommit { last_commit_id: file.last_commit_id.clone() })
        .depends_on(after.iter().cloned())
        .verify(
            std::iter::once(Verification::CiFileOnBranch { branch: file.branch.clone() })
                .chain(baseline_tag.map(|tag| Verification::BaselineTakesWork {
                    branch: file.branch.clone(),
                    tag: tag.to_string(),
                    jobs: moved.clone(),
                }))
                .collect(),
        ),
    );
    vec![id]
}

/// The jobs whose tags archshift's edit changed: the ones its revert moves back.
fn moved_jobs(before: &str, wrote: &str) -> Vec<String> {
    let (Ok(b), Ok(w)) = (crate::ciyaml::analyze(before), crate::ciyaml::analyze(wrote)) else { return Vec::new() };
    w.jobs
        .iter()
        .filter(|j| !j.trigger)
        .filter(|j| b.jobs.iter().find(|x| x.name == j.name).is_none_or(|x| x.tags != j.tags))
        .map(|j| j.name.clone())
        .collect()
}

fn delete_kube(
    id: ChangeId,
    target: ObjectRef,
    obj: &serde_json::Value,
    summary: String,
    after: &[ChangeId],
) -> Change {
    Change::new(id, Phase::Rollback, target, Action::Delete, summary, WriteMethod::KubeDelete)
        .before(Document::Object(obj.clone()))
        .precondition(Precondition::ResourceVersion {
            resource_version: obj["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string(),
        })
        .reversal(Reversal::Irreversible { reason: "apply creates it again".into() })
        .depends_on(after.iter().cloned())
        // Gone, not just marked: a Release goes once provider-helm has uninstalled it.
        .verify(vec![Verification::ReadBack])
}

/// The pool back to what it allowed before, from the journal's before-image of archshift's
/// widening; a pool archshift did not widen is left alone, byte for byte.
fn narrow_pool(
    state: &ObservedState,
    spec: &MigrationPlan,
    journal: &Journal,
    after: &[ChangeId],
    out: &mut PhasePlan,
) {
    let name = &spec.node_pool.name;
    let Some(obj) = state.node_pools.iter().find(|o| kube_id(o).2 == name) else { return };
    let target = ObjectRef::Kube {
        api_version: obj["apiVersion"].as_str().unwrap_or(NODE_POOL.api_version).to_string(),
        kind: NODE_POOL.kind.into(),
        namespace: None,
        name: name.clone(),
    };
    let forward = ChangeId::node_pool(name);
    let Some(applied) = journal.get(&forward) else {
        let widened = NodePoolView::from_object(obj)
            .is_ok_and(|v| super::nodepool::allowed_archs(&v.requirements).contains(&Arch::Arm64));
        if widened {
            out.finding(
                FindingCode::RollbackLeftAlone,
                Status::Done,
                Some(target),
                "allows arm64, but archshift did not widen it: left as it is",
            );
        }
        return;
    };
    let id = ChangeId::rollback(&forward);
    let drained = Verification::ArchDrained { node_pool: name.clone(), architecture: Arch::Arm64 };
    let before = out.changes.len();
    let summary = format!("narrow NodePool {name} back to what it allowed before archshift");
    if !restore_kube(out, id.clone(), target.clone(), obj, applied, summary, after) {
        return;
    }
    if let Some(change) = out.changes.get_mut(before) {
        change.waits_for = vec![drained];
    }
    out.finding_for(
        FindingCode::RollbackWaitsForArm64Pods,
        Status::Pending,
        Some(target),
        &id,
        "narrowed last, once no pod runs on its arm64 nodes: narrowing drifts them, evicting what runs there",
    );
}

/// What of `spec`'s migration is in place now, whoever made it: the arm64 runner in GitLab,
/// its Release, the arm64 tag variable. A rollback with no history of its own while any of
/// these is there would plan from observation alone: the history is elsewhere.
pub fn traces(state: &ObservedState, spec: &MigrationPlan) -> Vec<String> {
    let tag = spec.runners.tag(Arch::Arm64);
    let release = spec.runners.release_name(Arch::Arm64);
    let variable = spec.pipeline.variables.name(Arch::Arm64);
    let mut out = Vec::new();
    if let Some(r) = state.runners.iter().find(|r| r.tag_list.contains(&tag)) {
        out.push(format!("runner #{} tagged {tag}", r.id));
    }
    if state.releases.iter().any(|r| r["metadata"]["name"] == release.as_str()) {
        out.push(format!("Release {release}"));
    }
    if state.project_variables.iter().any(|v| v.key == variable) {
        out.push(format!("variable {variable}"));
    }
    out
}
