//! Phase 2: one GitLab runner and one Crossplane `Release` per architecture.
//!
//! Each architecture gets a runner in GitLab tagged `<prefix>-<arch>` (tags live in GitLab:
//! the chart ignores them with `glrt-` tokens), a Secret holding its token, and a Release
//! that inherits the baseline Release's values with the manager and job pods pinned to the
//! architecture. The baseline stays untouched as the rollback target.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::nodepool::join;
use crate::model::{
    ARCH_LABEL, Action, Arch, Change, Document, GitLabRunner, ObservedState, Phase, PhasePlan, Precondition,
    ReleaseView, Severity, Target, kube_id,
};
use crate::spec::{MigrationPlan, RegistrationStyle, RunnersSpec, ScopeKind};

pub const RELEASE_API: &str = "helm.crossplane.io/v1beta1";
/// Secret keys the chart projects into the runner pod; both must exist.
pub const TOKEN_KEY: &str = "runner-token";
pub const REGISTRATION_KEY: &str = "runner-registration-token";
/// Stands in the plan for the token GitLab returns when the runner is created.
pub const TOKEN_FROM_GITLAB: &str = "(token returned by GitLab at apply time)";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Values that, copied from the baseline, would make a new Release register as the baseline
/// runner or contradict the architecture pinning.
const NOT_INHERITED_SETS: [&str; 6] =
    ["runnerToken", "runnerRegistrationToken", "runners.secret", "runners.token", "runners.tags", "nodeSelector"];

pub fn plan(state: &ObservedState, spec: &MigrationPlan) -> PhasePlan {
    let mut out = PhasePlan::new(Phase::Runners);
    let r = &spec.runners;
    let baseline = find_release(state, &r.baseline_release);
    match baseline {
        Some(obj) => {
            out.finding(
                Severity::Done,
                format!("Release {}", r.baseline_release),
                format!("baseline present and left unchanged: it is the rollback target{}", ready_note(obj)),
            );
            let config = obj
                .pointer("/spec/forProvider/values/runners/config")
                .and_then(Value::as_str)
                .unwrap_or(DEFAULT_CONFIG);
            if !job_pods_pinned(config) {
                out.finding(
                    Severity::Risk,
                    format!("Release {}", r.baseline_release),
                    "its job pods have no kubernetes.io/arch node selector: once the NodePool allows arm64, jobs it runs (untagged ones included) can land on arm64 nodes; Phase 3 and 4 move them to the amd64 runner",
                );
            }
        }
        None => out.finding(
            Severity::Risk,
            format!("Release {}", r.baseline_release),
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

    // 1. The runner in GitLab.
    let carriers: Vec<&GitLabRunner> =
        state.runners.iter().filter(|g| owner_arch(g, r, spec.architectures()) == Some(arch)).collect();
    let runner_subject = format!("GitLab runner {tag}");
    let mut new_token_needed = false;
    match carriers.as_slice() {
        [] => {
            new_token_needed = r.registration.style == RegistrationStyle::AuthenticationToken;
            if new_token_needed {
                out.changes.push(create_runner(r, arch));
            } else {
                out.finding(
                    Severity::Pending,
                    &runner_subject,
                    "registers itself with the legacy registration token once its Release runs",
                );
            }
        }
        [runner] => check_runner(runner, r, arch, out),
        many => out.finding(
            Severity::Risk,
            &runner_subject,
            format!(
                "{} runners carry this tag ({}): jobs may go to any of them; keep one and remove the tag from the others",
                many.len(),
                join(many.iter().map(|g| format!("#{}", g.id)))
            ),
        ),
    }

    // 2. The Secret with the token.
    let secret = state.secrets.iter().find(|s| s.name == secret_name && s.namespace == r.namespace);
    let secret_target = Target::Kube {
        api_version: "v1".into(),
        kind: "Secret".into(),
        namespace: Some(r.namespace.clone()),
        name: secret_name.clone(),
    };
    if let ([runner], None, RegistrationStyle::AuthenticationToken) =
        (carriers.as_slice(), secret, r.registration.style)
    {
        out.finding(
            Severity::Risk,
            &runner_subject,
            format!(
                "runner #{} exists but Secret {}/{secret_name} does not; GitLab shows a token only once, so its token is reset (a manager still using the old one stops)",
                runner.id, r.namespace
            ),
        );
        out.changes.push(Change {
            id: format!("runner-token/{tag}"),
            phase: Phase::Runners,
            target: Target::RunnerToken { tag: tag.clone(), id: runner.id },
            action: Action::Update,
            summary: format!("reset the authentication token of runner #{} ({tag})", runner.id),
            before: None,
            after: None,
            precondition: Precondition::Exists,
            sensitive: vec![],
        });
        new_token_needed = true;
    }
    match secret {
        None if new_token_needed || r.registration.style == RegistrationStyle::RegistrationToken => {
            out.changes.push(secret_change(r, arch, &secret_target, None));
        }
        Some(s) if new_token_needed => {
            out.changes.push(secret_change(r, arch, &secret_target, Some(&s.resource_version)))
        }
        Some(s) => {
            let missing: Vec<&str> =
                [TOKEN_KEY, REGISTRATION_KEY].into_iter().filter(|k| !s.keys.iter().any(|x| x == k)).collect();
            if !missing.is_empty() {
                out.finding(
                    Severity::Risk,
                    format!("Secret {}/{secret_name}", r.namespace),
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
            Severity::Risk,
            format!("Release {release_name}"),
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
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })
        .or_else(|| state.gitlab_url.clone());
    let subject = format!("Release {release_name}");
    let Some(gitlab_url) = gitlab_url else {
        out.finding(Severity::Risk, &subject, "no gitlabUrl: set runners.gitlabUrl in the plan");
        return;
    };
    let start = match existing {
        Some(obj) => obj.clone(),
        None => release_template(&release_name, baseline, out),
    };
    let desired = match pin_release(start, r, arch, &gitlab_url) {
        Ok(v) => v,
        Err(e) => {
            out.finding(Severity::Risk, &subject, e);
            return;
        }
    };
    match existing {
        None => out.changes.push(Change {
            id: format!("release/{release_name}"),
            phase: Phase::Runners,
            target: release_target(&release_name),
            action: Action::Create,
            summary: format!("create Release {release_name} (gitlab-runner {}, {arch} only)", r.chart.version),
            before: None,
            after: Some(Document::Object(desired)),
            precondition: Precondition::Absent,
            sensitive: vec![],
        }),
        Some(obj) if obj["spec"] != desired["spec"] => out.changes.push(Change {
            id: format!("release/{release_name}"),
            phase: Phase::Runners,
            target: release_target(&release_name),
            action: Action::Update,
            summary: format!("pin Release {release_name} to {arch} with tag {tag}"),
            before: Some(Document::Object(obj.clone())),
            after: Some(Document::Object(desired)),
            precondition: Precondition::ResourceVersion {
                resource_version: ReleaseView::from_object(obj).resource_version,
            },
            sensitive: vec![],
        }),
        Some(obj) => match ReleaseView::from_object(obj).ready {
            Some((false, msg)) => out.finding(Severity::Risk, &subject, format!("Ready=False: {msg}")),
            Some((true, _)) => out.finding(Severity::Done, &subject, format!("deployed, {arch} only")),
            None => {
                out.finding(Severity::Pending, &subject, "no Ready condition yet: the provider has not reconciled it")
            }
        },
    }
}

/// Which architecture's runner an existing GitLab runner is: by description, else by its one
/// architecture tag, else by where its managers run; a runner carrying both tags goes to the
/// first architecture of the plan and loses the other tag.
fn owner_arch(runner: &GitLabRunner, r: &RunnersSpec, archs: &[Arch]) -> Option<Arch> {
    if let Some(a) = archs.iter().find(|a| runner.description == r.tag(**a)) {
        return Some(*a);
    }
    let tagged: Vec<Arch> = archs.iter().copied().filter(|a| runner.tag_list.contains(&r.tag(*a))).collect();
    match tagged.as_slice() {
        [] => None,
        [one] => Some(*one),
        several => {
            let managers: Vec<Arch> = runner.manager_architectures.iter().filter_map(|m| Arch::from_alias(m)).collect();
            match managers.as_slice() {
                [m, rest @ ..] if rest.iter().all(|x| x == m) && several.contains(m) => Some(*m),
                _ => several.first().copied(),
            }
        }
    }
}

fn check_runner(runner: &GitLabRunner, r: &RunnersSpec, arch: Arch, out: &mut PhasePlan) {
    let tag = r.tag(arch);
    let subject = format!("GitLab runner #{} ({tag})", runner.id);
    let foreign: Vec<String> = Arch::ALL.iter().filter(|a| **a != arch).map(|a| r.tag(*a)).collect();
    let mut tags: Vec<String> = runner.tag_list.iter().filter(|t| !foreign.contains(t)).cloned().collect();
    if !tags.contains(&tag) {
        tags.push(tag.clone());
    }
    if tags != runner.tag_list || runner.run_untagged {
        let mut why = Vec::new();
        if !runner.tag_list.contains(&tag) {
            why.push(format!("lacks tag {tag}"));
        }
        if runner.tag_list.iter().any(|t| foreign.contains(t)) {
            why.push("carries another architecture's tag".to_string());
        }
        if runner.run_untagged {
            why.push("runs untagged jobs (they could land on the wrong architecture)".to_string());
        }
        out.changes.push(Change {
            id: format!("runner/{tag}"),
            phase: Phase::Runners,
            target: Target::GitLabRunner { tag: tag.clone(), id: Some(runner.id) },
            action: Action::Update,
            summary: format!("retag runner #{}: {}", runner.id, why.join("; ")),
            before: Some(Document::Object(runner_doc(runner.id, &runner.tag_list, runner.run_untagged))),
            after: Some(Document::Object(runner_doc(runner.id, &tags, false))),
            precondition: Precondition::RunnerTags {
                tag_list: runner.tag_list.clone(),
                run_untagged: runner.run_untagged,
            },
            sensitive: vec![],
        });
    }
    if runner.is_online() {
        let wrong: Vec<&String> =
            runner.manager_architectures.iter().filter(|a| Arch::from_alias(a) != Some(arch)).collect();
        if wrong.is_empty() {
            out.finding(Severity::Done, subject, format!("online{}", arch_note(&runner.manager_architectures)));
        } else {
            out.finding(
                Severity::Risk,
                subject,
                format!("online, but a manager reports architecture {}: check its nodeSelector", join(wrong.iter())),
            );
        }
    } else if runner.paused {
        out.finding(Severity::Risk, subject, "paused: it takes no jobs");
    } else {
        out.finding(
            Severity::Pending,
            subject,
            format!("{}: its manager pod has not connected to GitLab yet", runner.status),
        );
    }
}

fn arch_note(archs: &[String]) -> String {
    if archs.is_empty() { String::new() } else { format!(" on {}", archs.join(", ")) }
}

fn runner_doc(id: u64, tags: &[String], run_untagged: bool) -> Value {
    json!({"id": id, "tag_list": tags, "run_untagged": run_untagged})
}

fn create_runner(r: &RunnersSpec, arch: Arch) -> Change {
    let tag = r.tag(arch);
    let mut body = json!({
        "runner_type": r.scope.kind.runner_type(),
        "description": tag,
        "tag_list": [tag],
        "run_untagged": false,
        "locked": false,
    });
    match (r.scope.kind, &r.scope.path) {
        (ScopeKind::Group, Some(p)) => body["group"] = json!(p),
        (ScopeKind::Project, Some(p)) => body["project"] = json!(p),
        _ => {}
    }
    Change {
        id: format!("runner/{tag}"),
        phase: Phase::Runners,
        target: Target::GitLabRunner { tag: tag.clone(), id: None },
        action: Action::Create,
        summary: format!(
            "create {} runner {tag} in GitLab (tagged {tag}, no untagged jobs)",
            r.scope.kind.runner_type()
        ),
        before: None,
        after: Some(Document::Object(body)),
        precondition: Precondition::Absent,
        sensitive: vec![],
    }
}

fn secret_change(r: &RunnersSpec, arch: Arch, target: &Target, existing_rv: Option<&String>) -> Change {
    let name = r.token_secret_name(arch);
    let (token, registration) = match r.registration.style {
        RegistrationStyle::AuthenticationToken => (TOKEN_FROM_GITLAB.to_string(), String::new()),
        RegistrationStyle::RegistrationToken => {
            (String::new(), format!("(from ${})", r.registration.registration_token_env.as_deref().unwrap_or("")))
        }
    };
    let obj = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": r.namespace, "labels": {MANAGED_BY: "archshift", "archshift.io/arch": arch.as_str()}},
        "type": "Opaque",
        "stringData": {TOKEN_KEY: token, REGISTRATION_KEY: registration},
    });
    let (action, precondition) = match existing_rv {
        None => (Action::Create, Precondition::Absent),
        Some(rv) => (Action::Update, Precondition::ResourceVersion { resource_version: rv.clone() }),
    };
    Change {
        id: format!("secret/{name}"),
        phase: Phase::Runners,
        target: target.clone(),
        action,
        summary: format!("{action} Secret {}/{name} with the {arch} runner's token", r.namespace),
        before: None,
        after: Some(Document::Object(obj)),
        precondition,
        sensitive: vec![format!("/stringData/{TOKEN_KEY}"), format!("/stringData/{REGISTRATION_KEY}")],
    }
}

fn release_target(name: &str) -> Target {
    Target::Kube { api_version: RELEASE_API.into(), kind: "Release".into(), namespace: None, name: name.into() }
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

/// A new Release that inherits the baseline's configuration, but not its identity: no
/// external-name annotation (it would adopt the baseline's Helm release), no token, no status.
fn release_template(name: &str, baseline: Option<&Value>, out: &mut PhasePlan) -> Value {
    let subject = format!("Release {name}");
    let mut obj = match baseline {
        Some(b) => json!({"apiVersion": RELEASE_API, "kind": "Release", "metadata": {}, "spec": b["spec"].clone()}),
        None => {
            json!({"apiVersion": RELEASE_API, "kind": "Release", "metadata": {}, "spec": {"forProvider": {"values": {}}}})
        }
    };
    let mut labels = baseline.and_then(|b| b["metadata"]["labels"].as_object().cloned()).unwrap_or_default();
    labels.insert(MANAGED_BY.into(), json!("archshift"));
    obj["metadata"] = json!({"name": name, "labels": labels});
    let fp = &mut obj["spec"]["forProvider"];
    if let Some(sets) = fp["set"].as_array_mut() {
        let before: Vec<String> = sets.iter().filter_map(|s| s["name"].as_str().map(str::to_string)).collect();
        sets.retain(|s| {
            let n = s["name"].as_str().unwrap_or("");
            !NOT_INHERITED_SETS.iter().any(|p| n == *p || n.starts_with(&format!("{p}.")))
        });
        let dropped: Vec<&String> = before.iter().filter(|n| !sets.iter().any(|s| s["name"] == ***n)).collect();
        if !dropped.is_empty() {
            out.finding(
                Severity::Pending,
                &subject,
                format!("baseline `set` entries not inherited: {}", join(dropped.iter())),
            );
        }
    }
    if let Some(from) = fp["valuesFrom"].as_array().filter(|a| !a.is_empty()) {
        out.finding(
            Severity::Risk,
            &subject,
            format!(
                "inherits {} valuesFrom source(s) from the baseline; if one sets runnerToken, this Release registers as the baseline runner",
                from.len()
            ),
        );
    }
    obj
}

/// Sets what archshift owns on a Release and keeps everything else as it is.
pub fn pin_release(mut obj: Value, r: &RunnersSpec, arch: Arch, gitlab_url: &str) -> Result<Value, String> {
    let fp = &mut obj["spec"]["forProvider"];
    fp["chart"]["name"] = json!(r.chart.name);
    fp["chart"]["repository"] = json!(r.chart.repository);
    fp["chart"]["version"] = json!(r.chart.version);
    fp["namespace"] = json!(r.namespace);
    if !fp["values"].is_object() {
        fp["values"] = json!({});
    }
    let values = &mut fp["values"];
    values["gitlabUrl"] = json!(gitlab_url);
    let mut selector: BTreeMap<String, String> = values["nodeSelector"]
        .as_object()
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))).collect())
        .unwrap_or_default();
    selector.extend(r.manager_node_selector.clone());
    selector.insert(ARCH_LABEL.into(), arch.to_string());
    values["nodeSelector"] = json!(selector);
    if !values["runners"].is_object() {
        values["runners"] = json!({});
    }
    let mut job_selector = r.job_node_selector.clone();
    job_selector.insert(ARCH_LABEL.into(), arch.to_string());
    let config = values["runners"]["config"].as_str().unwrap_or(DEFAULT_CONFIG);
    values["runners"]["config"] = json!(pin_job_node_selector(config, &job_selector)?);
    values["runners"]["secret"] = json!(r.token_secret_name(arch));
    if let Some(v) = values.as_object_mut() {
        v.remove("runnerToken");
        v.remove("runnerRegistrationToken");
    }
    let runners = values["runners"].as_object_mut().ok_or("values.runners is not a mapping")?;
    runners.remove("token");
    match r.registration.style {
        RegistrationStyle::AuthenticationToken => {
            // Ignored by the chart with glrt- tokens: tags live in GitLab. Leaving them would mislead.
            for k in ["tags", "runUntagged", "locked", "protected"] {
                runners.remove(k);
            }
        }
        RegistrationStyle::RegistrationToken => {
            runners.insert("tags".into(), json!(r.tag(arch)));
            runners.insert("runUntagged".into(), json!(false));
        }
    }
    Ok(obj)
}

/// Whether every `[[runners]]` entry of a runner config pins job pods to an architecture.
fn job_pods_pinned(config: &str) -> bool {
    let Ok(doc) = config.parse::<toml_edit::DocumentMut>() else { return false };
    let Some(entries) = doc.get("runners").and_then(|r| r.as_array_of_tables()) else { return false };
    !entries.is_empty()
        && entries
            .iter()
            .all(|e| e.get("kubernetes").and_then(|k| k.get("node_selector")).and_then(|n| n.get(ARCH_LABEL)).is_some())
}

/// The chart's default `runners.config`.
pub const DEFAULT_CONFIG: &str =
    "[[runners]]\n  [runners.kubernetes]\n    namespace = \"{{.Release.Namespace}}\"\n    image = \"alpine\"\n";

/// Pins job pods with `[runners.kubernetes.node_selector]` in every `[[runners]]` entry,
/// editing the TOML in place so comments and layout survive.
pub fn pin_job_node_selector(config: &str, selector: &BTreeMap<String, String>) -> Result<String, String> {
    let mut doc: toml_edit::DocumentMut = config.parse().map_err(|e: toml_edit::TomlError| {
        format!("values.runners.config is not plain TOML, so its job node selector cannot be edited safely (a Helm template construct?): {}", e.message())
    })?;
    let runners = doc.entry("runners").or_insert_with(|| {
        let mut aot = toml_edit::ArrayOfTables::new();
        aot.push(toml_edit::Table::new());
        toml_edit::Item::ArrayOfTables(aot)
    });
    let aot = runners.as_array_of_tables_mut().ok_or("values.runners.config: `runners` must be [[runners]] entries")?;
    for entry in aot.iter_mut() {
        let kube = entry.entry("kubernetes").or_insert_with(toml_edit::table);
        let kube = kube.as_table_like_mut().ok_or("values.runners.config: runners.kubernetes is not a table")?;
        let ns = kube.entry("node_selector").or_insert(toml_edit::table());
        let ns =
            ns.as_table_like_mut().ok_or("values.runners.config: runners.kubernetes.node_selector is not a table")?;
        // New keys take the indentation of the keys already there.
        let indent: Option<String> = ns.iter().next().and_then(|(k, _)| {
            ns.get_key_value(k)
                .and_then(|(key, _)| key.leaf_decor().prefix().and_then(|p| p.as_str()).map(str::to_string))
        });
        for (k, v) in selector {
            match ns.get_mut(k) {
                Some(item) if item.as_str() == Some(v.as_str()) => {}
                Some(item) if item.is_value() => {
                    // Keep the key's decoration and any trailing comment; replace the value only.
                    let decor = item.as_value().map(|x| x.decor().clone());
                    *item = toml_edit::value(v.as_str());
                    if let (Some(d), Some(val)) = (decor, item.as_value_mut()) {
                        *val.decor_mut() = d;
                    }
                }
                _ => {
                    ns.insert(k, toml_edit::value(v.as_str()));
                    if let (Some(prefix), Some(mut key)) = (&indent, ns.key_mut(k)) {
                        key.leaf_decor_mut().set_prefix(prefix.as_str());
                    }
                }
            }
        }
    }
    Ok(doc.to_string())
}
