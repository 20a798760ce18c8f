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
use super::pipeline::{encode_path, tag_variable, variable_api, variable_update, variables_of};
use super::{join, runners};
use crate::model::{
    ARCH_LABEL, Action, Arch, Change, ChangeId, CiVariable, Document, FindingCode, HttpMethod, NodePoolView, ObjectRef,
    ObservedState, Phase, PhasePlan, Precondition, Requirement, Reversal, Status, Verification, WriteMethod, kube_id,
};
use crate::spec::MigrationPlan;
use crate::vocab::{NODE_POOL, RELEASE, SECRET};

/// What an applied change left in the journal: enough to restore its target.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub before: Option<Document>,
    pub after: Option<Document>,
}

/// The journal's view: every change archshift applied, by id.
pub type Journal = BTreeMap<ChangeId, Applied>;

pub fn plan(state: &ObservedState, spec: &MigrationPlan, journal: &Journal) -> PhasePlan {
    let mut out = PhasePlan::new(Phase::Rollback);
    let r = &spec.runners;
    let mut reroutes: Vec<ChangeId> = Vec::new();

    // 1. Route amd64 work back to the baseline.
    let tag = reroute_tag(state, spec);
    match &tag {
        Some(tag) => {
            baseline_safety(state, spec, &mut out);
            let var = spec.pipeline.variables.name(Arch::Amd64);
            let own = tag_variable(spec, Arch::Amd64);
            reroute(&mut out, variables_of(state, &own), own.clone(), tag, &mut reroutes);
            if let Some(gl) = &spec.workloads.gitlab {
                let group = ObjectRef::GroupVariable { group: gl.group.clone(), key: var.into() };
                if group != own {
                    reroute(&mut out, state.group_variables(&gl.group), group, tag, &mut reroutes);
                }
            }
        }
        None => out.finding(
            FindingCode::RollbackNoRerouteTag,
            Status::Risk,
            None,
            "no tag of the baseline runner is known: set rollback.rerouteTag; until then jobs tagged for the amd64 runner stay pending once it is removed",
        ),
    }

    // 2. Pause the arm64 runner, revert the pipeline's CI change.
    let mut quiesced: Vec<ChangeId> = reroutes.clone();
    if let Some(runner) = state.runners.iter().find(|g| g.tag_list.contains(&r.tag(Arch::Arm64)))
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

    // 3. Releases, then runners, then Secrets, then unused project variables.
    let namespace = runners::namespace(state, spec);
    let mut removed: Vec<ChangeId> = Vec::new();
    for &arch in spec.architectures() {
        let release = r.release_name(arch);
        let mut after_release = quiesced.clone();
        if let Some(obj) = state.releases.iter().find(|o| kube_id(o).2 == release) {
            let id = ChangeId::rollback(&ChangeId::release(&release));
            out.changes.push(delete_kube(
                id.clone(),
                ObjectRef::kube(RELEASE, None, &release),
                obj,
                format!("delete Release {release} (Helm uninstalls the {arch} runner)"),
                &quiesced,
            ));
            after_release.push(id.clone());
            removed.push(id);
        }
        if let Some(runner) = state.runners.iter().find(|g| g.tag_list.contains(&r.tag(arch))) {
            let id = ChangeId::rollback(&ChangeId::runner(&r.tag(arch)));
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
        }
        let secret = r.token_secret_name(arch);
        if let Some(s) = state.secrets.iter().find(|s| s.name == secret && s.namespace == namespace) {
            let id = ChangeId::rollback(&ChangeId::secret(&namespace, &secret));
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
        }
    }
    // The pipeline file is (or is about to be) back at its before-image: a resumed rollback
    // finds it reverted already, and still owes the variables' removal.
    let ci_back = !reverted.is_empty()
        || state.ci_file.as_ref().is_some_and(|f| {
            spec.architectures().iter().all(|&a| !f.content.contains(&spec.pipeline.variables.reference(a)))
        });
    if ci_back {
        for &arch in spec.architectures() {
            let key = spec.pipeline.variables.name(arch);
            let forward = ChangeId::project_variable(&spec.pipeline.project, key);
            let created = journal.get(&forward).is_some_and(|a| a.before.is_none());
            if let Some(v) = state.project_variables.iter().find(|v| v.key == key && v.environment_scope == "*")
                && created
            {
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
                        ObjectRef::ProjectVariable { project: spec.pipeline.project.clone(), key: key.into() },
                        Action::Delete,
                        format!(
                            "delete variable {key}: archshift created it and the reverted CI file no longer uses it"
                        ),
                        WriteMethod::GitLab {
                            method: HttpMethod::Delete,
                            path: format!(
                                "/projects/{}/variables/{key}?filter[environment_scope]=*",
                                encode_path(&spec.pipeline.project)
                            ),
                        },
                    )
                    .before(Document::Object(v.to_json()))
                    .precondition(Precondition::VariableValue { value: v.value.clone(), protected: v.protected })
                    .depends_on(reverted.clone())
                    .verify(vec![Verification::ReadBack]),
                );
                removed.push(id);
            }
        }
    }

    // 4. Narrow the pool last.
    narrow_pool(state, spec, journal, &removed, &mut out);

    // 5. Pins stay.
    let kept: Vec<&ChangeId> = journal.keys().filter(|id| is_pin(id, spec)).collect();
    if !kept.is_empty() {
        out.finding(
            FindingCode::RollbackPinsKept,
            Status::Done,
            None,
            format!("kept on purpose (harmless, and they protect a later re-widening): {}", join(kept.iter())),
        );
    }
    if out.changes.is_empty() && !out.has(FindingCode::RollbackNoRerouteTag) {
        out.finding(FindingCode::RollbackNothing, Status::Done, None, "nothing of archshift's is left to roll back");
    }
    out
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
    if file.content == before {
        return Vec::new();
    }
    if file.content != wrote {
        out.finding(
            FindingCode::RollbackArm64JobsPending,
            Status::Risk,
            Some(target),
            "changed since archshift wrote it: not reverted automatically (a revert would drop those changes); jobs tagged for arm64 stay pending until it is reverted by hand",
        );
        return Vec::new();
    }
    let id = ChangeId::rollback(&forward);
    let title = format!("ci: revert per-architecture runner tags ({})", file.path);
    out.changes.push(
        Change::new(
            id.clone(),
            Phase::Rollback,
            target,
            Action::Update,
            format!("revert {}:{} to its content before archshift", file.project, file.path),
            // Its own branch: the forward change's may still exist (a person merged it and
            // kept the branch), and the revert must not land on top of it.
            super::delivery_method(
                &crate::spec::Delivery { branch: format!("{}-rollback", p.delivery.branch), ..p.delivery.clone() },
                &file.branch,
                &title,
            ),
        )
        .before(Document::Text(file.content.clone()))
        .after(Document::Text(before))
        .precondition(Precondition::LastCommit { last_commit_id: file.last_commit_id.clone() })
        .depends_on(after.iter().cloned())
        .verify(
            std::iter::once(Verification::CiFileOnBranch { branch: file.branch.clone() })
                .chain(
                    baseline_tag.map(|tag| Verification::BaselineTakesWork {
                        branch: file.branch.clone(),
                        tag: tag.to_string(),
                    }),
                )
                .collect(),
        ),
    );
    vec![id]
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

/// The pool back to what it allowed before: the journal's requirement list, else amd64 only.
fn narrow_pool(
    state: &ObservedState,
    spec: &MigrationPlan,
    journal: &Journal,
    after: &[ChangeId],
    out: &mut PhasePlan,
) {
    let name = &spec.node_pool.name;
    let Some(obj) = state.node_pools.iter().find(|o| kube_id(o).2 == name) else { return };
    let Ok(view) = NodePoolView::from_object(obj) else { return };
    if !super::nodepool::allowed_archs(&view.requirements).contains(&Arch::Arm64) {
        return;
    }
    let forward = ChangeId::node_pool(name);
    let before_reqs = journal
        .get(&forward)
        .and_then(|a| a.before.as_ref())
        .and_then(Document::as_object)
        .and_then(|b| b.pointer(NodePoolView::REQUIREMENTS).cloned());
    let reqs = match before_reqs {
        Some(r) => r,
        None => {
            // Not widened by archshift (or no journal): take arm64 out of the arch requirements.
            let mut reqs = view.requirements.clone();
            reqs.retain(|r| r.key != ARCH_LABEL);
            reqs.push(Requirement {
                key: ARCH_LABEL.into(),
                operator: "In".into(),
                values: vec![Arch::Amd64.to_string()],
                min_values: None,
            });
            serde_json::to_value(reqs).unwrap_or_default()
        }
    };
    let mut narrowed = obj.clone();
    if let Some(slot) = narrowed.pointer_mut(NodePoolView::REQUIREMENTS) {
        *slot = reqs;
    }
    let id = ChangeId::rollback(&forward);
    let target = ObjectRef::Kube {
        api_version: obj["apiVersion"].as_str().unwrap_or(NODE_POOL.api_version).to_string(),
        kind: NODE_POOL.kind.into(),
        namespace: None,
        name: name.clone(),
    };
    let drained = Verification::ArchDrained { node_pool: name.clone(), architecture: Arch::Arm64 };
    out.finding_for(
        FindingCode::RollbackWaitsForArm64Pods,
        Status::Pending,
        Some(target.clone()),
        &id,
        "narrowed last, once no pod runs on its arm64 nodes: narrowing drifts them, evicting what runs there",
    );
    out.changes.push(
        patch_change(id, Phase::Rollback, target, format!("narrow NodePool {name} back to amd64"), obj, narrowed)
            .depends_on(after.iter().cloned())
            .waits_for(vec![drained]),
    );
}
