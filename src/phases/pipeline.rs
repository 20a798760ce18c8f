//! Phase 3: the `CICD_TAG_*` variables and the build jobs of the pipeline project.

use std::collections::BTreeMap;

use super::{ci_file_change, ci_file_ref, ci_job};
use crate::ciyaml::{self, Outcome, TagOptions};
use crate::model::{
    Action, Arch, Change, ChangeId, CiVariable, Document, FindingCode, HttpMethod, ObjectRef, ObservedState, Phase,
    PhasePlan, Precondition, Status, Verification, WriteMethod,
};
use crate::spec::{MigrationPlan, VariableLevel};

pub fn plan(state: &ObservedState, spec: &MigrationPlan) -> PhasePlan {
    let mut out = PhasePlan::new(Phase::Pipeline);
    for &arch in spec.architectures() {
        let target = tag_variable(spec, arch);
        plan_tag_variable(&mut out, variables_of(state, &target), target, &spec.runners.tag(arch));
    }
    plan_ci_file(state, spec, &mut out);
    out
}

/// Makes sure `key` holds `tag`, unprotected and unmasked in scope `*`, so the tag expands on
/// every ref (a protected variable stays a literal `$KEY` on unprotected branches).
pub(super) fn plan_tag_variable(out: &mut PhasePlan, vars: &[CiVariable], target: ObjectRef, tag: &str) {
    let Some((id, collection, key)) = variable_api(&target) else { return };
    let key = key.clone();
    let wanted = CiVariable::tag_variable(&key, tag);
    let star = vars.iter().find(|v| v.key == key && v.environment_scope == "*");
    let scoped: Vec<&str> = vars
        .iter()
        .filter(|v| v.key == key && v.environment_scope != "*")
        .map(|v| v.environment_scope.as_str())
        .collect();
    if !scoped.is_empty() {
        out.finding(
            FindingCode::VariableScoped,
            Status::Risk,
            Some(target.clone()),
            format!(
                "also defined for environment scope(s) {}; jobs in those environments use that value",
                scoped.join(", ")
            ),
        );
    }
    let Some(have) = star else {
        out.changes.push(
            Change::new(
                id,
                out.phase,
                target,
                Action::Create,
                format!("create variable {key}={tag} (unprotected, unmasked, raw)"),
                WriteMethod::GitLab { method: HttpMethod::Post, path: collection },
            )
            .after(Document::Object(wanted.to_json())),
        );
        return;
    };
    let mut why = Vec::new();
    if have.value.as_deref() != Some(tag) {
        why.push(if have.value.is_none() { "masked, value unknown".to_string() } else { "wrong value".to_string() });
    }
    if have.protected {
        why.push("protected (stays a literal $KEY on unprotected branches, jobs get stuck)".to_string());
    }
    if have.masked {
        why.push("masked".to_string());
    }
    if have.variable_type != "env_var" {
        why.push(format!("type {}", have.variable_type));
    }
    if why.is_empty() {
        out.holds(id);
        out.finding(FindingCode::VariableSet, Status::Done, Some(target), format!("= {tag}"));
        return;
    }
    if have.hidden {
        out.refuse(
            id,
            target.clone(),
            format!("set variable {key}={tag}"),
            format!("the variable is hidden ({}) and GitLab will not change it", why.join(", ")),
        );
        out.finding(
            FindingCode::VariableHidden,
            Status::Risk,
            Some(target),
            format!("is hidden ({}); GitLab will not unhide it: delete it and re-run to recreate it", why.join(", ")),
        );
        return;
    }
    let summary = format!("set variable {key}={tag}: {}", why.join(", "));
    out.changes.push(variable_update(id, out.phase, target, summary, have, &wanted));
}

/// `PUT` of a variable in scope `*`, from what was observed to `wanted`; the observed value
/// is the precondition, and a masked one never reaches a diff.
pub(crate) fn variable_update(
    id: ChangeId,
    phase: Phase,
    target: ObjectRef,
    summary: String,
    have: &CiVariable,
    wanted: &CiVariable,
) -> Change {
    let path = variable_api(&target)
        .map(|(_, collection, key)| format!("{collection}/{key}?filter[environment_scope]=*"))
        .unwrap_or_default();
    Change::new(id, phase, target, Action::Update, summary, WriteMethod::GitLab { method: HttpMethod::Put, path })
        .before(Document::Object(have.to_json()))
        .after(Document::Object(wanted.to_json()))
        .precondition(Precondition::VariableValue { value: have.value.clone(), protected: have.protected })
        .sensitive(if have.masked { vec!["/value".to_string()] } else { vec![] })
}

/// Where `arch`'s tag variable lives: the pipeline project, or its group
/// (`pipeline.variables.level`).
pub(crate) fn tag_variable(spec: &MigrationPlan, arch: Arch) -> ObjectRef {
    let p = &spec.pipeline;
    let key = p.variables.name(arch).to_string();
    match p.variables.level {
        VariableLevel::Project => ObjectRef::ProjectVariable { project: p.project.clone(), key },
        VariableLevel::Group => {
            let group = p.project.rsplit_once('/').map_or(p.project.as_str(), |(g, _)| g).to_string();
            ObjectRef::GroupVariable { group, key }
        }
    }
}

/// The variables observed where `target` lives.
pub(crate) fn variables_of<'a>(state: &'a ObservedState, target: &ObjectRef) -> &'a [CiVariable] {
    match target {
        ObjectRef::GroupVariable { group, .. } => state.group_variables(group),
        _ => &state.project_variables,
    }
}

/// The change id, the REST collection and the key of a variable.
pub(crate) fn variable_api(target: &ObjectRef) -> Option<(ChangeId, String, String)> {
    match target {
        ObjectRef::ProjectVariable { project, key } => Some((
            ChangeId::project_variable(project, key),
            format!("/projects/{}/variables", encode_path(project)),
            key.clone(),
        )),
        ObjectRef::GroupVariable { group, key } => Some((
            ChangeId::group_variable(group, key),
            format!("/groups/{}/variables", encode_path(group)),
            key.clone(),
        )),
        _ => None,
    }
}

/// Whether the `arch` runner will take jobs retagged onto it: not when it is paused, or
/// offline although its Release has reported Ready for longer than `waits.runnerOnline` (its
/// manager cannot reach GitLab). A runner this plan creates is waited for by the changes
/// that depend on it; one that exists already and whose Release became Ready within that
/// time is still starting (a run stopped right after creating it, say): `Ok(Some(wait))`, the
/// wait the changes retagging jobs onto it must pass before they write.
pub(super) fn runner_takes_jobs(
    state: &ObservedState,
    spec: &MigrationPlan,
    arch: Arch,
) -> Result<Option<Verification>, String> {
    let tag = spec.runners.tag(arch);
    let Some(runner) = state.runners.iter().find(|r| r.tag_list.contains(&tag)) else { return Ok(None) };
    if runner.paused {
        return Err(format!("runner #{} ({tag}) is paused and would leave them pending", runner.id));
    }
    let release = spec.runners.release_name(arch);
    let release_obj = state.releases.iter().find(|o| crate::model::kube_id(o).2 == release);
    let ready = release_obj.is_some_and(|o| crate::model::ReleaseView::from_object(o).ready.is_some_and(|(ok, _)| ok));
    if runner.is_online() || !ready {
        return Ok(None);
    }
    let ready_for = release_obj.and_then(|o| ready_since(o, state.observed_at.as_deref()?));
    if ready_for.is_some_and(|secs| secs < spec.waits.runner_online as i64) {
        return Ok(Some(Verification::RunnerOnline { tag_list: vec![tag], architecture: arch }));
    }
    Err(format!(
        "runner #{} ({tag}) is {} although Release {release} is Ready{}: its manager does not reach GitLab",
        runner.id,
        runner.status,
        ready_for.map(|s| format!(" (for {s} s, longer than waits.runnerOnline)")).unwrap_or_default()
    ))
}

/// Seconds from the Release's Ready condition's `lastTransitionTime` to `now` (both RFC 3339).
fn ready_since(release: &serde_json::Value, now: &str) -> Option<i64> {
    let conditions = release["status"]["conditions"].as_array()?;
    let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
    let since = chrono::DateTime::parse_from_rfc3339(ready["lastTransitionTime"].as_str()?).ok()?;
    let now = chrono::DateTime::parse_from_rfc3339(now).ok()?;
    Some((now - since).num_seconds())
}

/// A project or group path as one URL path segment (`platform/ci` -> `platform%2Fci`).
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 8);
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn plan_ci_file(state: &ObservedState, spec: &MigrationPlan, out: &mut PhasePlan) {
    let p = &spec.pipeline;
    let Some(file) = &state.ci_file else {
        out.finding(
            FindingCode::CiFileNotFound,
            Status::Risk,
            Some(ObjectRef::CiFile {
                project: p.project.clone(),
                path: p.ci_file.clone(),
                branch: p.branch.clone().unwrap_or_default(),
            }),
            format!("not found on branch {}", p.branch.as_deref().unwrap_or("(the project's default branch)")),
        );
        return;
    };
    let file_ref = Some(ci_file_ref(file));
    let vars = &p.variables;
    let mut opts = TagOptions::default();
    if p.jobs.detect {
        opts.arch_tags = spec.architectures().iter().map(|a| (*a, vars.reference(*a))).collect();
    }
    opts.job_tags = p.jobs.explicit.iter().map(|(job, arch)| (job.clone(), vars.reference(*arch))).collect();
    // Untagged jobs run on amd64 today (the baseline runner); they stay there.
    if spec.architectures().contains(&Arch::Amd64) {
        opts.default_tag = Some(vars.reference(Arch::Amd64));
    }
    let analysis = match ciyaml::analyze(&file.content) {
        Ok(a) => a,
        Err(e) => {
            out.finding(FindingCode::CiFileUnreadable, Status::Risk, file_ref, format!("cannot be read: {e}"));
            return;
        }
    };
    for name in p.jobs.explicit.keys() {
        if !analysis.jobs.iter().any(|j| &j.name == name) {
            out.finding(
                FindingCode::CiFileUnknownJob,
                Status::Risk,
                file_ref.clone(),
                format!("pipeline.jobs.explicit names job {name}, which is not in the file"),
            );
        }
    }
    let retag = match ciyaml::retag(&file.content, &opts) {
        Ok(r) => r,
        Err(e) => {
            out.finding(FindingCode::CiFileUnreadable, Status::Risk, file_ref, format!("cannot be rewritten: {e}"));
            return;
        }
    };
    // Which architecture each job builds for, by name or detection.
    let mut arch_of: BTreeMap<String, Arch> = p.jobs.explicit.clone();
    if p.jobs.detect {
        for j in &analysis.jobs {
            if let Some(h) = &j.arch {
                arch_of.entry(j.name.clone()).or_insert(h.arch);
            }
        }
    }
    for &arch in spec.architectures() {
        if !arch_of.values().any(|a| *a == arch) {
            out.finding(
                FindingCode::CiFileNoBuildJob,
                Status::Risk,
                file_ref.clone(),
                format!("no job builds for {arch}: name it in pipeline.jobs.explicit"),
            );
        }
    }
    // A build job that already has tags keeps them; say so when they route to the wrong runner.
    for job in &retag.jobs {
        let Some(arch) = arch_of.get(&job.job) else { continue };
        if let Outcome::Kept { tags, source } = &job.outcome {
            let ok = [vars.reference(*arch), format!("${{{}}}", vars.name(*arch)), spec.runners.tag(*arch)];
            if tags.iter().any(|t| ok.contains(t)) {
                out.finding(
                    FindingCode::CiJobTagged,
                    Status::Done,
                    Some(ci_job(file, &job.job)),
                    format!("runs on {arch} ([{}])", tags.join(", ")),
                );
            } else {
                out.finding(
                    FindingCode::CiJobWrongTags,
                    Status::Risk,
                    Some(ci_job(file, &job.job)),
                    format!("builds {arch} but keeps its {source} tags [{}], which do not select the {arch} runner: change them by hand", tags.join(", ")),
                );
            }
        }
    }
    let mut starting: Vec<Verification> = Vec::new();
    for &arch in spec.architectures() {
        match runner_takes_jobs(state, spec, arch) {
            Ok(wait) => starting.extend(wait),
            Err(why) => {
                out.finding(
                    FindingCode::RunnerPaused,
                    Status::Risk,
                    Some(ObjectRef::GitLabRunner { tag: spec.runners.tag(arch), id: None }),
                    format!("the build jobs are not retagged: {why}"),
                );
                return;
            }
        }
    }
    let Some(id) = ci_file_change(out, file, &retag, &p.delivery) else { return };
    // Jobs move to the new runners only once those take jobs, on a pool that can run them.
    let mut needs = vec![ChangeId::node_pool(&spec.node_pool.name)];
    for &arch in spec.architectures() {
        if let Some((id, ..)) = variable_api(&tag_variable(spec, arch)) {
            needs.push(id);
        }
        needs.push(ChangeId::release(&spec.runners.release_name(arch)));
        needs.push(ChangeId::runner(&spec.runners.tag(arch)));
    }
    let builds: BTreeMap<String, Arch> =
        arch_of.into_iter().filter(|(job, _)| retag.jobs.iter().any(|j| &j.job == job)).collect();
    if let Some(change) = out.changes.iter_mut().find(|c| c.id == id) {
        *change = change.clone().depends_on(needs);
        change.verify.push(Verification::PipelineProof { jobs: builds });
        change.waits_for.extend(starting);
    }
}
