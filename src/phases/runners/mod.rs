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

use std::collections::BTreeMap;

use serde_json::Value;

pub use release::pin_release;
pub use secret::{REGISTRATION_KEY, TOKEN_KEY};
pub use toml::{DEFAULT_CONFIG, job_pods_pinned, job_selectors, pin_job_node_selector};

use super::patch::patch_change;
use super::{WideningGate, flag_reconciler};
use crate::model::{
    Action, Change, ChangeId, Document, FindingCode, GitLabRunner, ObjectRef, ObservedState, Phase, PhasePlan,
    ReleaseView, Status, Verification, WriteMethod, kube_id,
};
use crate::phases::join;
use crate::spec::{MigrationPlan, RegistrationStyle, TokenSecrets};
use crate::vocab::{ARCH_LABEL, Arch, RELEASE};

pub fn plan(state: &ObservedState, spec: &MigrationPlan, gate: &mut WideningGate) -> PhasePlan {
    let mut out = PhasePlan::new(Phase::Runners);
    let r = &spec.runners;
    let baseline = find_release(state, &r.baseline_release);
    let baseline_ref = ObjectRef::kube(RELEASE, None, &r.baseline_release);
    match baseline {
        Some(obj) => {
            out.finding(
                FindingCode::BaselinePresent,
                Status::Done,
                Some(baseline_ref.clone()),
                format!("baseline present: it is the rollback target{}", ready_note(obj)),
            );
            pin_baseline(obj, spec, &baseline_ref, gate, &mut out);
        }
        None => out.finding(
            FindingCode::BaselineNotFound,
            Status::Risk,
            Some(baseline_ref),
            "baseline Release not found: there is no amd64-only runner to roll back to; check runners.baselineRelease",
        ),
    }
    let namespace = namespace(state, spec);
    if let (Some(ns), Some(base_ns)) = (&r.namespace, baseline_namespace(baseline))
        && *ns != base_ns
    {
        out.finding(
            FindingCode::ReleaseNamespaceDiffers,
            Status::Risk,
            Some(ObjectRef::kube(RELEASE, None, &r.baseline_release)),
            format!(
                "runners.namespace is {ns} but the baseline deploys to {base_ns}: the new runners run apart from it"
            ),
        );
    }
    for &arch in spec.architectures() {
        plan_arch(state, spec, arch, baseline, &namespace, &mut out);
    }
    out
}

/// The namespace the runners are deployed to: the plan's, else the baseline's, else `gitlab-runner`.
pub fn namespace(state: &ObservedState, spec: &MigrationPlan) -> String {
    namespace_for(spec, find_release(state, &spec.runners.baseline_release))
}

/// [`namespace`], given the baseline Release as read (or `None`).
pub fn namespace_for(spec: &MigrationPlan, baseline: Option<&Value>) -> String {
    spec.runners.namespace.clone().or_else(|| baseline_namespace(baseline)).unwrap_or_else(|| "gitlab-runner".into())
}

fn baseline_namespace(baseline: Option<&Value>) -> Option<String> {
    baseline.and_then(|b| b.pointer("/spec/forProvider/namespace")).and_then(Value::as_str).map(str::to_string)
}

/// The baseline is the rollback target and takes untagged jobs: its job pods must stay on
/// amd64 once the pool widens. One TOML edit pins them, ordered before the widening; when it
/// cannot be made (or the plan forbids it), the widening is blocked.
fn pin_baseline(obj: &Value, spec: &MigrationPlan, target: &ObjectRef, gate: &mut WideningGate, out: &mut PhasePlan) {
    let r = &spec.runners;
    let config =
        obj.pointer("/spec/forProvider/values/runners/config").and_then(Value::as_str).unwrap_or(DEFAULT_CONFIG);
    let blocker = format!("the job pods of baseline Release {}", r.baseline_release);
    if job_pods_pinned(config) {
        let archs: Vec<String> = job_selectors(config).iter().filter_map(|s| s.get(ARCH_LABEL).cloned()).collect();
        out.finding(
            FindingCode::BaselinePinned,
            Status::Done,
            Some(target.clone()),
            format!("its job pods are pinned to {}", join(archs.iter())),
        );
        return;
    }
    if !r.pin_baseline {
        out.finding(
            FindingCode::BaselineJobsUnpinned,
            Status::Risk,
            Some(target.clone()),
            "its job pods have no kubernetes.io/arch node selector and runners.pinBaseline is false: the pool is not widened, since its jobs (untagged ones included) would land on arm64 nodes",
        );
        gate.blockers.push(blocker);
        return;
    }
    let sets: Vec<String> = obj
        .pointer("/spec/forProvider/set")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s["name"].as_str())
                .filter(|n| n.starts_with("runners.config"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let values_from =
        obj.pointer("/spec/forProvider/valuesFrom").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    if !sets.is_empty() || values_from {
        let by = if sets.is_empty() { "valuesFrom".to_string() } else { format!("set {}", sets.join(", ")) };
        out.finding(
            FindingCode::BaselinePinOverridden,
            Status::Risk,
            Some(target.clone()),
            format!("its runner config may come from {by}, applied over values: pin its job pods to amd64 there; the pool is not widened until they are"),
        );
        gate.blockers.push(blocker);
        return;
    }
    let amd64 = BTreeMap::from([(ARCH_LABEL.to_string(), Arch::Amd64.to_string())]);
    let pinned = match pin_job_node_selector(config, &amd64, &BTreeMap::new()) {
        Ok(c) => c,
        Err(e) => {
            out.refuse(
                ChangeId::release(&r.baseline_release),
                target.clone(),
                format!("pin the job pods of baseline Release {} to amd64", r.baseline_release),
                format!("its values cannot be edited safely: {e}"),
            );
            out.finding(FindingCode::ReleaseValuesUnusable, Status::Risk, Some(target.clone()), e);
            gate.blockers.push(blocker);
            return;
        }
    };
    let mut after = obj.clone();
    if let Some(slot) = after.pointer_mut("/spec/forProvider/values/runners/config") {
        *slot = Value::String(pinned);
    } else if let Some(values) = after.pointer_mut("/spec/forProvider/values").and_then(Value::as_object_mut) {
        let runners = values.entry("runners").or_insert_with(|| serde_json::json!({}));
        if let Some(runners) = runners.as_object_mut() {
            runners.insert("config".into(), Value::String(pinned));
        }
    }
    let id = ChangeId::release(&r.baseline_release);
    out.finding_for(
        FindingCode::BaselineJobsUnpinned,
        Status::Pending,
        Some(target.clone()),
        &id,
        "its job pods have no kubernetes.io/arch node selector: they are pinned to amd64 before the pool widens, so the rollback target and its untagged jobs stay on amd64",
    );
    flag_reconciler(out, obj, target, &id);
    gate.pins.push(id.clone());
    let summary = format!("pin the job pods of baseline Release {} to amd64", r.baseline_release);
    out.changes.push(
        patch_change(id, Phase::Runners, target.clone(), summary, obj, after).verify(vec![Verification::ReleaseReady]),
    );
}

fn plan_arch(
    state: &ObservedState,
    spec: &MigrationPlan,
    arch: Arch,
    baseline: Option<&Value>,
    namespace: &str,
    out: &mut PhasePlan,
) {
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
    let external = r.token_secrets == TokenSecrets::External;
    match carriers.as_slice() {
        [] if external => {
            let why = format!(
                "no runner carries tag {tag}: with runners.tokenSecrets external, create it (tag {tag}, no untagged jobs) and put its token in your secret store as Secret {namespace}/{secret_name}"
            );
            out.refuse(ChangeId::runner(&tag), runner_ref.clone(), format!("create runner {tag}"), why.clone());
            out.finding(FindingCode::RunnerExternalMissing, Status::Risk, Some(runner_ref), why);
        }
        [] if r.registration.style == RegistrationStyle::AuthenticationToken => {
            match runner::create_runner(state, r, arch) {
                Ok(create) => {
                    token_from = Some(create.id.clone());
                    out.changes.push(create);
                }
                Err(why) => {
                    out.refuse(ChangeId::runner(&tag), runner_ref.clone(), format!("create runner {tag}"), why.clone());
                    out.finding(FindingCode::RunnerScopeIdUnknown, Status::Risk, Some(runner_ref), why);
                }
            }
        }
        [] => {
            // Nothing to write: the Release's runner registers itself.
            out.holds(ChangeId::runner(&tag));
            out.finding(
                FindingCode::RunnerSelfRegisters,
                Status::Pending,
                Some(runner_ref),
                "registers itself with the legacy registration token once its Release runs",
            );
        }
        [runner] => runner::check_runner(runner, r, arch, out),
        many => {
            let why = format!(
                "{} runners carry this tag ({}): jobs may go to any of them; keep one and remove the tag from the others",
                many.len(),
                join(many.iter().map(|g| format!("#{}", g.id)))
            );
            out.refuse(
                ChangeId::runner(&tag),
                runner_ref.clone(),
                format!("bring runner {tag} to its tag"),
                why.clone(),
            );
            out.finding(FindingCode::RunnerTagShared, Status::Risk, Some(runner_ref), why);
        }
    }

    // 2. The Secret with the token.
    let secret = state.secrets.iter().find(|s| s.name == secret_name && s.namespace == namespace);
    let secret_ref = ObjectRef::kube(crate::vocab::SECRET, Some(namespace), &secret_name);
    if let (true, None) = (external, secret) {
        out.refuse(
            ChangeId::secret(namespace, &secret_name),
            secret_ref.clone(),
            format!("Secret {namespace}/{secret_name} from your secret store"),
            "an externally managed token Secret does not exist yet",
        );
        out.finding(
            FindingCode::SecretExternalMissing,
            Status::Risk,
            Some(secret_ref.clone()),
            "expected from your secret store (runners.tokenSecrets is external): the Release cannot start its runner until it exists",
        );
    } else if let ([runner], None, RegistrationStyle::AuthenticationToken) =
        (carriers.as_slice(), secret, r.registration.style)
    {
        let reset = runner::reset_token(runner, &tag);
        // A runner that never contacted GitLab has no manager using its token: resetting it
        // stops nothing (the usual case after a creation whose token was lost).
        let (status, effect) = if runner.status == "never_contacted" {
            (Status::Pending, "it never contacted GitLab, so no manager uses the old one")
        } else {
            (Status::Risk, "a manager still using the old one stops")
        };
        out.finding_for(
            FindingCode::RunnerTokenReset,
            status,
            Some(reset.target.clone()),
            &reset.id,
            format!(
                "runner #{} exists but Secret {namespace}/{secret_name} does not; GitLab shows a token only once, so its token is reset ({effect})",
                runner.id
            ),
        );
        token_from = Some(reset.id.clone());
        out.changes.push(reset);
    }
    match secret {
        None if !external && (token_from.is_some() || r.registration.style == RegistrationStyle::RegistrationToken) => {
            out.changes.push(secret::secret_change(r, arch, namespace, None, token_from.clone()));
        }
        Some(s) if !external && token_from.is_some() => {
            out.changes.push(secret::secret_change(r, arch, namespace, Some(&s.resource_version), token_from.clone()))
        }
        Some(s) => {
            out.holds(ChangeId::secret(namespace, &secret_name));
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
        out.refuse(
            ChangeId::release(&release_name),
            release_ref.clone(),
            format!("Release {release_name} ({arch} only)"),
            "no gitlabUrl is known for it: set runners.gitlabUrl in the plan",
        );
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
    let desired = match release::pin_release(start, r, arch, &gitlab_url, &spec.node_pool.name, namespace) {
        Ok(v) => v,
        Err(e) => {
            out.refuse(
                ChangeId::release(&release_name),
                release_ref.clone(),
                format!("Release {release_name} ({arch} only)"),
                format!("its values cannot be edited safely: {e}"),
            );
            out.finding(FindingCode::ReleaseValuesUnusable, Status::Risk, Some(release_ref), e);
            return;
        }
    };
    check_placement(state, spec, arch, &desired, &release_ref, out);
    release::check_config(&desired, existing, arch, &release_ref, out);
    // The Release runs the runner: it is done when the runner is online with its tag.
    let verify = vec![
        Verification::ReleaseReady,
        Verification::RunnerOnline { tag_list: vec![tag.clone()], architecture: arch },
    ];
    let needs = [ChangeId::runner(&tag), ChangeId::secret(namespace, &secret_name)];
    let id = ChangeId::release(&release_name);
    if existing.is_some_and(|obj| obj["spec"] == desired["spec"]) {
        out.holds(id.clone());
    }
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
            patch_change(
                id,
                Phase::Runners,
                release_ref,
                format!("pin Release {release_name} to {arch} with tag {tag}"),
                obj,
                desired,
            )
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
            Some((true, _)) => match obj.pointer("/status/atProvider/version").and_then(Value::as_str) {
                Some(v) if v != r.chart.version => out.finding(
                    FindingCode::ReleaseVersionMismatch,
                    Status::Pending,
                    Some(release_ref),
                    format!(
                        "Ready, but chart {v} is deployed while {} is wanted: the provider is upgrading it",
                        r.chart.version
                    ),
                ),
                _ => out.finding(
                    FindingCode::ReleaseReady,
                    Status::Done,
                    Some(release_ref),
                    format!("deployed, {arch} only"),
                ),
            },
            None => out.finding(
                FindingCode::ReleaseNotReconciled,
                Status::Pending,
                Some(release_ref),
                "no Ready condition yet: the provider has not reconciled it",
            ),
        },
    }
}

/// The manager and the job pods must each find a node, checked on the exact selectors the
/// Release deploys: otherwise it shows Ready while its runner never comes online, or its
/// jobs stay pending.
fn check_placement(
    state: &ObservedState,
    spec: &MigrationPlan,
    arch: Arch,
    desired: &Value,
    target: &ObjectRef,
    out: &mut PhasePlan,
) {
    if state.node_pools.is_empty() {
        return;
    }
    let selector = |v: Option<&Value>| -> BTreeMap<String, String> {
        v.and_then(Value::as_object)
            .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))).collect())
            .unwrap_or_default()
    };
    let manager = selector(desired.pointer("/spec/forProvider/values/nodeSelector"));
    // The manager's pool is not the one this plan widens: it is checked as it is.
    if !state.node_pools.iter().any(|p| super::nodepool::pool_can_host(p, &manager, None)) {
        out.finding(
            FindingCode::ReleaseManagerUnschedulable,
            Status::Risk,
            Some(target.clone()),
            format!(
                "no NodePool can launch a node for its runner manager ({}): the runner will never come online; allow that architecture in the manager's pool, set runners.managerArch (amd64 or any), or change runners.managerNodeSelector",
                manager.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
            ),
        );
    }
    let config = desired.pointer("/spec/forProvider/values/runners/config").and_then(Value::as_str).unwrap_or("");
    let widened = (spec.node_pool.name.as_str(), spec.architectures());
    for jobs in job_selectors(config) {
        if !state.node_pools.iter().any(|p| super::nodepool::pool_can_host(p, &jobs, Some(widened))) {
            out.finding(
                FindingCode::ReleaseJobsUnschedulable,
                Status::Risk,
                Some(target.clone()),
                format!(
                    "no NodePool can launch a node for its {arch} job pods ({}), even with {} widened: its jobs would stay pending; fix runners.jobNodeSelector",
                    jobs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "),
                    spec.node_pool.name
                ),
            );
        }
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
