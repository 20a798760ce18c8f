//! The per-architecture Crossplane `Release`: the baseline's configuration, not its identity,
//! with the manager and job pods pinned to the architecture.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::toml::{DEFAULT_CONFIG, pin_job_node_selector};
use crate::model::{FindingCode, ObjectRef, PhasePlan, Status};
use crate::phases::join;
use crate::spec::{RegistrationStyle, RunnersSpec};
use crate::vocab::{ARCH_LABEL, Arch, MANAGED_BY, RELEASE};

/// Values that, copied from the baseline, would make a new Release register as the baseline
/// runner or contradict the architecture pinning.
const NOT_INHERITED_SETS: [&str; 6] =
    ["runnerToken", "runnerRegistrationToken", "runners.secret", "runners.token", "runners.tags", "nodeSelector"];

/// A new Release that inherits the baseline's configuration, but not its identity: no
/// external-name annotation (it would adopt the baseline's Helm release), no token, no status.
pub fn release_template(name: &str, baseline: Option<&Value>, out: &mut PhasePlan) -> Value {
    let target = Some(ObjectRef::kube(RELEASE, None, name));
    let spec = baseline.map_or_else(|| json!({"forProvider": {"values": {}}}), |b| b["spec"].clone());
    let mut labels = baseline.and_then(|b| b["metadata"]["labels"].as_object().cloned()).unwrap_or_default();
    labels.insert(MANAGED_BY.into(), json!(crate::vocab::FIELD_MANAGER));
    let mut obj = json!({
        "apiVersion": RELEASE.api_version,
        "kind": RELEASE.kind,
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    });
    if let Some(sets) = obj.pointer_mut("/spec/forProvider/set").and_then(Value::as_array_mut) {
        let before: Vec<String> = sets.iter().filter_map(|s| s["name"].as_str().map(str::to_string)).collect();
        sets.retain(|s| {
            let n = s["name"].as_str().unwrap_or("");
            !NOT_INHERITED_SETS.iter().any(|p| n == *p || n.starts_with(&format!("{p}.")))
        });
        let dropped: Vec<&String> = before.iter().filter(|n| !sets.iter().any(|s| s["name"] == ***n)).collect();
        if !dropped.is_empty() {
            out.finding(
                FindingCode::ReleaseSetsDropped,
                Status::Pending,
                target.clone(),
                format!("baseline `set` entries not inherited: {}", join(dropped.iter())),
            );
        }
    }
    if let Some(from) = obj.pointer("/spec/forProvider/valuesFrom").and_then(Value::as_array).filter(|a| !a.is_empty())
    {
        out.finding(
            FindingCode::ReleaseValuesFrom,
            Status::Risk,
            target,
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
    let root = obj.as_object_mut().ok_or("the Release is not a mapping")?;
    let spec = child(root, "spec")?;
    let fp = child(spec, "forProvider")?;
    let chart = child(fp, "chart")?;
    chart.insert("name".into(), json!(r.chart.name));
    chart.insert("repository".into(), json!(r.chart.repository));
    chart.insert("version".into(), json!(r.chart.version));
    fp.insert("namespace".into(), json!(r.namespace));
    let values = child(fp, "values")?;
    values.insert("gitlabUrl".into(), json!(gitlab_url));
    let mut selector: BTreeMap<String, String> = values
        .get("nodeSelector")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))).collect())
        .unwrap_or_default();
    selector.extend(r.manager_node_selector.clone());
    selector.insert(ARCH_LABEL.into(), arch.to_string());
    values.insert("nodeSelector".into(), json!(selector));
    values.remove("runnerToken");
    values.remove("runnerRegistrationToken");
    let runners = child(values, "runners")?;
    let mut job_selector = r.job_node_selector.clone();
    job_selector.insert(ARCH_LABEL.into(), arch.to_string());
    let config = runners.get("config").and_then(Value::as_str).unwrap_or(DEFAULT_CONFIG);
    let config = pin_job_node_selector(config, &job_selector)?;
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
    Ok(obj)
}

/// The mapping at `key`, created when absent or null; an error when something else is there.
/// (`serde_json`'s `IndexMut` would write `null`s into the document that is sent.)
fn child<'a>(
    map: &'a mut serde_json::Map<String, Value>,
    key: &str,
) -> Result<&'a mut serde_json::Map<String, Value>, String> {
    let slot = map.entry(key.to_string()).or_insert_with(|| json!({}));
    if slot.is_null() {
        *slot = json!({});
    }
    slot.as_object_mut().ok_or_else(|| format!("`{key}` is not a mapping"))
}
