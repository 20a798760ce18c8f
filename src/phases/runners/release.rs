//! The per-architecture Crossplane `Release`: the baseline's configuration, not its identity,
//! with the manager and job pods pinned to the architecture.
//!
//! Inheritance is by allow-list: a field copied from the baseline must be safe to share
//! between three Releases. What is left behind is reported.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::toml::{
    DEFAULT_CONFIG, add_pod_annotation, arch_specific_settings, pin_job_node_selector, set_job_tolerations,
};
use crate::model::{FindingCode, ObjectRef, PhasePlan, Status};
use crate::phases::join;
use crate::spec::{RegistrationStyle, RunnersSpec};
use crate::vocab::{ARCH_LABEL, Arch, FIELD_MANAGER, MANAGED_BY, NODEPOOL_LABEL, RELEASE};

/// `spec` fields a new Release inherits.
const INHERITED_SPEC: [&str; 5] =
    ["forProvider", "providerConfigRef", "managementPolicies", "deletionPolicy", "rollbackLimit"];
/// `spec.forProvider.chart` fields it inherits (`url` and `digest` would override the version).
const INHERITED_CHART: [&str; 4] = ["name", "repository", "version", "pullSecretRef"];
/// Labels that tie an object to a GitOps application: Argo CD would prune a copy it did not create.
const TRACKING_LABELS: [&str; 3] =
    ["app.kubernetes.io/instance", "argocd.argoproj.io/instance", "kustomize.toolkit.fluxcd.io/name"];

/// `set` entries (by name or prefix) that would make a new Release register as the baseline
/// runner, or override what archshift pins: provider-helm applies `set` after `values`.
pub const OVERRIDING_SETS: [&str; 10] = [
    "runnerToken",
    "runnerRegistrationToken",
    "runners.secret",
    "runners.token",
    "runners.tags",
    "runners.config",
    "runners.name",
    "nodeSelector",
    "gitlabUrl",
    "certsSecretName",
];

/// Whether a `set` entry name overrides something archshift pins.
pub fn overrides_pin(name: &str) -> bool {
    OVERRIDING_SETS
        .iter()
        .any(|p| name == *p || name.starts_with(&format!("{p}.")) || name.starts_with(&format!("{p}[")))
}

/// A new Release that inherits the baseline's configuration, but not its identity.
pub fn release_template(name: &str, baseline: Option<&Value>, out: &mut PhasePlan) -> Value {
    let target = Some(ObjectRef::kube(RELEASE, None, name));
    let mut dropped: Vec<String> = Vec::new();
    let mut spec = Map::new();
    if let Some(b) = baseline.and_then(|b| b["spec"].as_object()) {
        for (k, v) in b {
            if INHERITED_SPEC.contains(&k.as_str()) {
                spec.insert(k.clone(), v.clone());
            } else {
                dropped.push(format!("spec.{k}"));
            }
        }
    }
    let fp = spec.entry("forProvider").or_insert_with(|| json!({"values": {}}));
    if let Some(chart) = fp.get_mut("chart").and_then(Value::as_object_mut) {
        chart.retain(|k, _| {
            let keep = INHERITED_CHART.contains(&k.as_str());
            if !keep {
                dropped.push(format!("chart.{k}"));
            }
            keep
        });
    }
    if let Some(sets) = fp.get_mut("set").and_then(Value::as_array_mut) {
        sets.retain(|s| {
            let n = s["name"].as_str().unwrap_or("");
            let keep = !overrides_pin(n);
            if !keep {
                dropped.push(format!("set {n}"));
            }
            keep
        });
    }
    if let Some(values) = fp.get_mut("values").and_then(Value::as_object_mut) {
        drop_shared_names(values, &mut dropped);
    }
    let mut labels = baseline.and_then(|b| b["metadata"]["labels"].as_object().cloned()).unwrap_or_default();
    labels.retain(|k, _| {
        let keep = !TRACKING_LABELS.contains(&k.as_str());
        if !keep {
            dropped.push(format!("label {k}"));
        }
        keep
    });
    labels.insert(MANAGED_BY.into(), json!(FIELD_MANAGER));
    // Annotations name the baseline's Helm release (crossplane.io/external-name) or its sync.
    if let Some(ann) = baseline.and_then(|b| b["metadata"]["annotations"].as_object()) {
        dropped.extend(ann.keys().map(|k| format!("annotation {k}")));
    }
    if let Some(from) = fp.get("valuesFrom").and_then(Value::as_array).filter(|a| !a.is_empty()) {
        out.finding(
            FindingCode::ReleaseValuesFrom,
            Status::Risk,
            target.clone(),
            format!(
                "inherits {} valuesFrom source(s) from the baseline; if one sets runnerToken, runners.config or nodeSelector, it overrides what archshift pins (provider-helm merges valuesFrom over values): check them",
                from.len()
            ),
        );
    }
    if !dropped.is_empty() {
        out.finding(
            FindingCode::ReleaseNotInherited,
            Status::Pending,
            target,
            format!(
                "not inherited from the baseline (tied to its identity, or overriding the pin): {}",
                dropped.join(", ")
            ),
        );
    }
    json!({
        "apiVersion": RELEASE.api_version,
        "kind": RELEASE.kind,
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    })
}

/// A fixed ServiceAccount name that the chart also creates would be rendered by three
/// Releases: a Helm ownership conflict. An existing one (`create: false`) can be shared.
fn drop_shared_names(values: &mut Map<String, Value>, dropped: &mut Vec<String>) {
    for (section, create, name) in [("serviceAccount", "create", "name"), ("rbac", "create", "serviceAccountName")] {
        if let Some(s) = values.get_mut(section).and_then(Value::as_object_mut)
            && s.get(create) == Some(&Value::Bool(true))
            && s.get(name).and_then(Value::as_str).is_some_and(|n| !n.is_empty())
        {
            s.remove(name);
            dropped.push(format!("values.{section}.{name}"));
        }
    }
}

/// Sets what archshift owns on a Release and keeps everything else as it is. `node_pool` is
/// the default `karpenter.sh/nodepool` of job pods when the inherited config names none.
pub fn pin_release(
    mut obj: Value,
    r: &RunnersSpec,
    arch: Arch,
    gitlab_url: &str,
    node_pool: &str,
    namespace: &str,
) -> Result<Value, String> {
    let root = obj.as_object_mut().ok_or("the Release is not a mapping")?;
    let spec = child(root, "spec")?;
    let fp = child(spec, "forProvider")?;
    let chart = child(fp, "chart")?;
    chart.insert("name".into(), json!(r.chart.name));
    chart.insert("repository".into(), json!(r.chart.repository));
    chart.insert("version".into(), json!(r.chart.version));
    fp.insert("namespace".into(), json!(namespace));
    let values = child(fp, "values")?;
    values.insert("gitlabUrl".into(), json!(gitlab_url));
    let mut selector: BTreeMap<String, String> = values
        .get("nodeSelector")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))).collect())
        .unwrap_or_default();
    selector.extend(r.manager_node_selector.clone());
    match r.manager_arch.for_runner(arch) {
        Some(a) => selector.insert(ARCH_LABEL.into(), a.to_string()),
        None => selector.remove(ARCH_LABEL),
    };
    values.insert("nodeSelector".into(), json!(selector));
    values.remove("runnerToken");
    values.remove("runnerRegistrationToken");
    let runners = child(values, "runners")?;
    let overrides = r.per_arch.get(&arch);
    let mut job_selector = r.job_node_selector.clone();
    if let Some(o) = overrides {
        job_selector.extend(o.job_node_selector.clone());
    }
    job_selector.insert(ARCH_LABEL.into(), arch.to_string());
    let defaults = BTreeMap::from([(NODEPOOL_LABEL.to_string(), node_pool.to_string())]);
    let config = runners.get("config").and_then(Value::as_str).unwrap_or(DEFAULT_CONFIG);
    let mut config = pin_job_node_selector(config, &job_selector, &defaults)?;
    if let Some(o) = overrides.filter(|o| !o.job_tolerations.is_empty()) {
        config = set_job_tolerations(&config, &o.job_tolerations)?;
    }
    // Karpenter v1 honours only do-not-disrupt; an inherited do-not-evict protects nothing.
    if config.contains("\"karpenter.sh/do-not-evict\" = \"true\"") {
        config = add_pod_annotation(&config, "karpenter.sh/do-not-disrupt", "true")?;
    }
    runners.insert("config".into(), json!(config));
    runners.insert("secret".into(), json!(r.token_secret_name(arch)));
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
    if let Some(extra) = overrides.and_then(|o| o.values.as_ref()) {
        let extra = serde_json::to_value(extra).map_err(|e| format!("runners.perArch.{arch}.values: {e}"))?;
        let values = obj.pointer_mut("/spec/forProvider/values").ok_or("the Release has no values")?;
        deep_merge(values, &extra);
    }
    Ok(obj)
}

/// Merges `extra` into `base`: mappings key by key, anything else replaced.
fn deep_merge(base: &mut Value, extra: &Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                match b.get_mut(k) {
                    Some(slot) => deep_merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// Findings on a pinned Release's runner config: annotations added, settings for another
/// architecture inherited.
pub fn check_config(desired: &Value, before: Option<&Value>, arch: Arch, target: &ObjectRef, out: &mut PhasePlan) {
    let config = desired.pointer("/spec/forProvider/values/runners/config").and_then(Value::as_str).unwrap_or("");
    let had =
        before.and_then(|b| b.pointer("/spec/forProvider/values/runners/config")).and_then(Value::as_str).unwrap_or("");
    if config.contains("karpenter.sh/do-not-disrupt") && !had.contains("karpenter.sh/do-not-disrupt") {
        out.finding(
            FindingCode::ReleaseDoNotDisrupt,
            Status::Pending,
            Some(target.clone()),
            "inherited pod annotation karpenter.sh/do-not-evict is ignored by Karpenter v1: karpenter.sh/do-not-disrupt is added so job pods are not consolidated away mid-job",
        );
    }
    let foreign = arch_specific_settings(config, arch);
    if !foreign.is_empty() {
        out.finding(
            FindingCode::ReleaseArchSpecificConfig,
            Status::Risk,
            Some(target.clone()),
            format!(
                "inherited runner config is specific to another architecture: {}; fix it for {arch}",
                join(foreign.iter())
            ),
        );
    }
}

/// The mapping at `key`, created when absent or null; an error when something else is there.
/// (`serde_json`'s `IndexMut` would write `null`s into the document that is sent.)
fn child<'a>(map: &'a mut Map<String, Value>, key: &str) -> Result<&'a mut Map<String, Value>, String> {
    let slot = map.entry(key.to_string()).or_insert_with(|| json!({}));
    if slot.is_null() {
        *slot = json!({});
    }
    slot.as_object_mut().ok_or_else(|| format!("`{key}` is not a mapping"))
}
