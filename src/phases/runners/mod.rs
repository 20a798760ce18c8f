//! Phase 2: one GitLab runner and one Crossplane `Release` per architecture.
//!
//! Each architecture gets a runner in GitLab tagged `<prefix>-<arch>` (tags live in GitLab:
//! the chart ignores them with `glrt-` tokens), a Secret holding its token, and a Release
//! that inherits the baseline Release's values with the manager and job pods pinned to the
//! architecture. The baseline stays untouched as the rollback target.
//!
//! Order: the runner (its token is an output), then the Secret that binds the token, then the
//! Release that mounts the Secret.

mod release;
mod runner;
mod secret;
mod toml;

use serde_json::Value;

pub use release::pin_release;
pub use secret::{REGISTRATION_KEY, TOKEN_KEY};
pub use toml::{DEFAULT_CONFIG, pin_job_node_selector};

use super::patch::guarded_patch;
use crate::model::{
    Action, Change, ChangeId, Document, FindingCode, GitLabRunner, ObjectRef, ObservedState, Phase, PhasePlan,
    Precondition, ReleaseView, Status, Verification, WriteMethod, kube_id,
};
use crate::phases::join;
use crate::spec::{MigrationPlan, RegistrationStyle};
use crate::vocab::{ARCH_LABEL, Arch, RELEASE};

pub fn plan(state: &ObservedState, spec: &MigrationPlan) -> PhasePlan {
    let mut out = PhasePlan::new(Phase::Runners);
    let r = &spec.runners;
    let baseline = find_release(state, &r.baseline_release);
    let baseline_ref = Some(ObjectRef::kube(RELEASE, None, &r.baseline_release));
    match baseline {
        Some(obj) => {
            out.finding(
                FindingCode::BaselinePresent,
                Status::Done,
                baseline_ref.clone(),
                format!("baseline present and left unchanged: it is the rollback target{}", ready_note(obj)),
            );
            let config = obj
                .pointer("/spec/forProvider/values/runners/config")
                .and_then(Value::as_str)
                .unwrap_or(DEFAULT_CONFIG);
            if !toml::job_pods_pinned(config) {
                out.finding(
                    FindingCode::BaselineJobsUnpinned,
                    Status::Risk,
                    baseline_ref,
                    "its job pods have no kubernetes.io/arch node selector: once the NodePool allows arm64, jobs it runs (untagged ones included) can land on arm64 nodes; Phase 3 and 4 move them to the amd64 runner",
                );
            }
        }
        None => out.finding(
            FindingCode::BaselineNotFound,
            Status::Risk,
            baseline_ref,
            "baseline Release not found: there is no amd64-only runner to roll back to; check runners.baselineRelease",
        ),
    }
    for &arch in spec.architectures() {
        plan_arch(state, spec, arch, baseline, &mut out);
    }
    out
}

fn plan_arch(state: &ObservedState, spec: &MigrationPlan, arch: Arch, baseline: Option<&Value>, out: &mut PhasePlan) {
    let r = &spec.runners;
    let tag = r.tag(arch);
    let release_name = r.release_name(arch);
    let secret_name = r.token_secret_name(arch);
    let release_ref = ObjectRef::kube(RELEASE, None, &release_name);

    // 1. The runner in GitLab, and where its token comes from.
    let carriers: Vec<&GitLabRunner> =
        state.runners.iter().filter(|g| runner::owner_arch(g, r, spec.architectures()) == Some(arch)).collect();
    let runner_ref = ObjectRef::GitLabRunner { tag: tag.clone(), id: None };
    let mut token_from: Option<ChangeId> = None;
    match carriers.as_slice() {
        [] if r.registration.style == RegistrationStyle::AuthenticationToken => {
            let create = runner::create_runner(r, arch);
            token_from = Some(create.id.clone());
            out.changes.push(create);
        }
        [] => out.finding(
            FindingCode::RunnerSelfRegisters,
            Status::Pending,
            Some(runner_ref),
            "registers itself with the legacy registration token once its Release runs",
        ),
        [runner] => runner::check_runner(runner, r, arch, out),
        many => out.finding(
            FindingCode::RunnerTagShared,
            Status::Risk,
            Some(runner_ref),
            format!(
                "{} runners carry this tag ({}): jobs may go to any of them; keep one and remove the tag from the others",
                many.len(),
                join(many.iter().map(|g| format!("#{}", g.id)))
            ),
        ),
    }

    // 2. The Secret with the token.
    let secret = state.secrets.iter().find(|s| s.name == secret_name && s.namespace == r.namespace);
    let secret_ref = ObjectRef::kube(crate::vocab::SECRET, Some(&r.namespace), &secret_name);
    if let ([runner], None, RegistrationStyle::AuthenticationToken) =
        (carriers.as_slice(), secret, r.registration.style)
    {
        let reset = runner::reset_token(runner, &tag);
        out.finding_for(
            FindingCode::RunnerTokenReset,
            Status::Risk,
            Some(reset.target.clone()),
            &reset.id,
            format!(
                "runner #{} exists but Secret {}/{secret_name} does not; GitLab shows a token only once, so its token is reset (a manager still using the old one stops)",
                runner.id, r.namespace
            ),
        );
        token_from = Some(reset.id.clone());
        out.changes.push(reset);
    }
    match secret {
        None if token_from.is_some() || r.registration.style == RegistrationStyle::RegistrationToken => {
            out.changes.push(secret::secret_change(r, arch, None, token_from.clone()));
        }
        Some(s) if token_from.is_some() => {
            out.changes.push(secret::secret_change(r, arch, Some(&s.resource_version), token_from.clone()))
        }
        Some(s) => {
            let missing: Vec<&str> =
                [TOKEN_KEY, REGISTRATION_KEY].into_iter().filter(|k| !s.keys.iter().any(|x| x == k)).collect();
            if !missing.is_empty() {
                out.finding(
                    FindingCode::SecretKeysMissing,
                    Status::Risk,
                    Some(secret_ref),
                    format!("lacks key {}: the chart mounts both {TOKEN_KEY} and {REGISTRATION_KEY} (the latter may be empty) and the runner pod will not start", missing.join(", ")),
                );
            }
        }
        None => {}
    }

    // The manager pod must find a node, or the runner never comes online.
    let mut manager_selector = r.manager_node_selector.clone();
    manager_selector.insert(ARCH_LABEL.into(), arch.to_string());
    if !state.node_pools.is_empty()
        && !state.node_pools.iter().any(|p| super::nodepool::pool_can_host(p, &manager_selector))
    {
        out.finding(
            FindingCode::ReleaseManagerUnschedulable,
            Status::Risk,
            Some(release_ref.clone()),
            format!(
                "no NodePool can launch a node for its runner manager ({}): the runner will never come online; allow {arch} in the pool named by runners.managerNodeSelector, or change that selector",
                manager_selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
            ),
        );
    }

    // 3. The Release.
    let existing = find_release(state, &release_name);
    let gitlab_url = r
        .gitlab_url
        .clone()
        .or_else(|| {
            baseline
                .and_then(|b| b.pointer("/spec/forProvider/values/gitlabUrl"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .or_else(|| state.gitlab_url().map(str::to_string));
    let Some(gitlab_url) = gitlab_url else {
        out.finding(
            FindingCode::ReleaseNoGitLabUrl,
            Status::Risk,
            Some(release_ref),
            "no gitlabUrl: set runners.gitlabUrl in the plan",
        );
        return;
    };
    let start = match existing {
        Some(obj) => obj.clone(),
        None => release::release_template(&release_name, baseline, out),
    };
    let desired = match release::pin_release(start, r, arch, &gitlab_url) {
        Ok(v) => v,
        Err(e) => {
            out.finding(FindingCode::ReleaseValuesUnusable, Status::Risk, Some(release_ref), e);
            return;
        }
    };
    // The Release runs the runner: it is done when the runner is online with its tag.
    let verify = vec![
        Verification::ReleaseReady,
        Verification::RunnerOnline { tag_list: vec![tag.clone()], architecture: arch },
    ];
    let needs = [ChangeId::runner(&tag), ChangeId::secret(&r.namespace, &secret_name)];
    let id = ChangeId::release(&release_name);
    match existing {
        None => out.changes.push(
            Change::new(
                id,
                Phase::Runners,
                release_ref,
                Action::Create,
                format!("create Release {release_name} (gitlab-runner {}, {arch} only)", r.chart.version),
                WriteMethod::KubeCreate,
            )
            .after(Document::Object(desired))
            .depends_on(needs)
            .verify(verify),
        ),
        Some(obj) if obj["spec"] != desired["spec"] => out.changes.push(
            Change::new(
                id,
                Phase::Runners,
                release_ref,
                Action::Update,
                format!("pin Release {release_name} to {arch} with tag {tag}"),
                WriteMethod::KubeJsonPatch { patch: guarded_patch(obj, &desired) },
            )
            .before(Document::Object(obj.clone()))
            .after(Document::Object(desired))
            .precondition(Precondition::ResourceVersion {
                resource_version: ReleaseView::from_object(obj).resource_version,
            })
            .depends_on(needs)
            .verify(verify),
        ),
        Some(obj) => match ReleaseView::from_object(obj).ready {
            Some((false, msg)) => out.finding(
                FindingCode::ReleaseNotReady,
                Status::Risk,
                Some(release_ref),
                format!("Ready=False: {msg}"),
            ),
            Some((true, _)) => out.finding(
                FindingCode::ReleaseReady,
                Status::Done,
                Some(release_ref),
                format!("deployed, {arch} only"),
            ),
            None => out.finding(
                FindingCode::ReleaseNotReconciled,
                Status::Pending,
                Some(release_ref),
                "no Ready condition yet: the provider has not reconciled it",
            ),
        },
    }
}

fn find_release<'a>(state: &'a ObservedState, name: &str) -> Option<&'a Value> {
    state.releases.iter().find(|o| kube_id(o).2 == name)
}

fn ready_note(obj: &Value) -> String {
    match ReleaseView::from_object(obj).ready {
        Some((true, _)) => " (Ready)".into(),
        Some((false, msg)) => format!(" (Ready=False: {msg})"),
        None => String::new(),
    }
}
