//! Simulated controllers, so the world moves as the real one does: provider-helm reconciles
//! Releases, a runner manager registers when its pod can be scheduled (Karpenter launches a
//! node when a NodePool allows it), and runners pick up pending jobs whose tags they cover.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::Utc;
use serde_json::{Value, json};

use super::faults::{Fault, Kind};
use super::gitlab::{Manager, now};
use super::{Shared, World};

/// Chart versions the simulated chart repository serves.
pub const CHART_VERSIONS: [&str; 12] = [
    "0.75.0", "0.75.1", "0.76.0", "0.76.1", "0.76.2", "0.77.0", "0.77.1", "0.77.2", "0.78.0", "0.78.1", "0.78.2",
    "0.79.0",
];
const ARCH: &str = "kubernetes.io/arch";

/// provider-helm's finalizer on every Release it manages (crossplane-runtime's managed reconciler).
pub const RELEASE_FINALIZER: &str = "finalizer.managedresource.crossplane.io";
const EXTERNAL_NAME: &str = "crossplane.io/external-name";

/// What the controllers remember between ticks.
#[derive(Default)]
pub struct Memory {
    /// When each Release first became Ready (its manager registers a little later).
    ready_since: HashMap<String, Instant>,
    deployed_generation: HashMap<String, i64>,
    node_seq: u32,
    /// The NodePool generation a node last registered at (NodeRegistrationHealthy).
    registered_generation: HashMap<String, i64>,
}

pub async fn run(shared: Arc<Shared>, tick: Duration) {
    loop {
        tokio::time::sleep(tick).await;
        // `stuck` faults keep matching deletions from finishing.
        let stuck: Vec<Fault> = shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|f| f.kind == Kind::Stuck)
            .cloned()
            .collect();
        let mut w = shared.world();
        reconcile(&mut w, tick, &stuck);
    }
}

pub fn reconcile(w: &mut World, tick: Duration, stuck: &[Fault]) {
    reconcile_releases(w, tick, stuck);
    run_jobs(w, tick);
    reconcile_node_pools(w);
}

fn reconcile_releases(w: &mut World, tick: Duration, stuck: &[Fault]) {
    let releases: Vec<Value> = w.kube.list("Release").into_iter().cloned().collect();
    for rel in releases {
        let name = rel["metadata"]["name"].as_str().unwrap_or("").to_string();
        let generation = rel["metadata"]["generation"].as_i64().unwrap_or(1);
        if rel["metadata"]["deletionTimestamp"].is_string() {
            let path = format!("/apis/helm.crossplane.io/v1beta1/releases/{name}");
            uninstall(w, &rel, &name, generation, stuck.iter().any(|f| f.keeps_stuck(&path)));
            continue;
        }
        // The managed reconciler adds its finalizer and the external name first.
        let finalized =
            rel["metadata"]["finalizers"].as_array().is_some_and(|f| f.iter().any(|x| x == RELEASE_FINALIZER));
        if !finalized || rel["metadata"]["annotations"][EXTERNAL_NAME].is_null() {
            let mut obj = rel.clone();
            let meta = &mut obj["metadata"];
            if !finalized {
                let mut list = meta["finalizers"].as_array().cloned().unwrap_or_default();
                list.push(json!(RELEASE_FINALIZER));
                meta["finalizers"] = json!(list);
            }
            if meta["annotations"][EXTERNAL_NAME].is_null() {
                if !meta["annotations"].is_object() {
                    meta["annotations"] = json!({});
                }
                meta["annotations"][EXTERNAL_NAME] = json!(name);
            }
            let _ = w.kube.put(obj, "crossplane-helm-provider");
        }
        let fp = &rel["spec"]["forProvider"];
        let ns = fp["namespace"].as_str().unwrap_or("default").to_string();
        let chart = &fp["chart"];
        let values = &fp["values"];
        let problem =
            if chart["name"] != "gitlab-runner" || !CHART_VERSIONS.contains(&chart["version"].as_str().unwrap_or("")) {
                Some(format!(
                    "cannot install release: cannot pull chart: chart {} version {} not found in {} repository",
                    chart["name"],
                    chart["version"],
                    chart["repository"].as_str().unwrap_or("")
                ))
            } else {
                token_of(w, values, &ns).err()
            };
        let status = match &problem {
            Some(msg) => json!({
                "atProvider": {"state": "failed", "revision": rel["status"]["atProvider"]["revision"].as_i64().unwrap_or(0), "releaseDescription": msg},
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "Unavailable", "lastTransitionTime": stamp(&rel, "Ready", "False"), "observedGeneration": generation},
                    {"type": "Synced", "status": "False", "reason": "ReconcileError", "message": msg, "lastTransitionTime": stamp(&rel, "Synced", "False"), "observedGeneration": generation}
                ],
                "observedGeneration": generation
            }),
            None => {
                // A new spec generation is a Helm upgrade: one more revision.
                let revision =
                    match (rel["status"]["atProvider"]["revision"].as_i64(), w.sim.deployed_generation.get(&name)) {
                        (Some(r), Some(g)) if *g == generation => r,
                        (Some(r), None) => r,
                        (Some(r), Some(_)) => r + 1,
                        (None, _) => 1,
                    };
                w.sim.deployed_generation.insert(name.clone(), generation);
                json!({
                    "atProvider": {"state": "deployed", "revision": revision, "releaseDescription": if revision == 1 { "Install complete" } else { "Upgrade complete" }, "version": chart["version"]},
                    "conditions": [
                        {"type": "Ready", "status": "True", "reason": "Available", "lastTransitionTime": stamp(&rel, "Ready", "True"), "observedGeneration": generation},
                        {"type": "Synced", "status": "True", "reason": "ReconcileSuccess", "lastTransitionTime": stamp(&rel, "Synced", "True"), "observedGeneration": generation}
                    ],
                    "observedGeneration": generation
                })
            }
        };
        if rel["status"] != status {
            w.kube.put_status("Release", "", &name, status);
        }
        if problem.is_some() {
            w.sim.ready_since.remove(&name);
            continue;
        }
        let since = *w.sim.ready_since.entry(name.clone()).or_insert_with(Instant::now);
        if since.elapsed() < tick * 2 {
            continue;
        }
        // The runner manager pod: it runs only where some node (existing or launched) fits.
        let selector = string_map(&values["nodeSelector"]);
        let Some(arch) = place_pod(w, &selector) else { continue };
        let Ok(Some(token)) = token_of(w, values, &ns) else { continue };
        let job_selector = job_node_selector(values["runners"]["config"].as_str().unwrap_or(""));
        let system_id = format!(
            "r_{:012x}",
            name.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
                & 0xffff_ffff_ffff
        );
        let next = w.gitlab.next_id();
        if let Some(runner) = w.gitlab.runners.iter_mut().find(|r| r.token == token) {
            match runner.managers.iter_mut().find(|m| m.system_id == system_id) {
                Some(m) => {
                    m.contacted_at = Utc::now();
                    m.architecture = arch.clone();
                }
                None => runner.managers.push(Manager {
                    id: next,
                    system_id,
                    version: "18.1.1".into(),
                    platform: "linux".into(),
                    architecture: arch,
                    created_at: now(),
                    contacted_at: Utc::now(),
                }),
            }
            runner.job_node_selector = Some(job_selector);
        }
    }
}

/// A Release being deleted: `Ready=False` reason `Deleting` first; on a later tick the Helm
/// uninstall is done (its runner manager pod is gone) and the finalizer is removed, which
/// deletes the object, unless a `stuck` fault keeps it.
fn uninstall(w: &mut World, rel: &Value, name: &str, generation: i64, stuck: bool) {
    let deleting = rel["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["reason"] == "Deleting"));
    if !deleting {
        let mut status = rel["status"].clone();
        status["conditions"] = json!([
            {"type": "Ready", "status": "False", "reason": "Deleting", "lastTransitionTime": stamp(rel, "Ready", "False"), "observedGeneration": generation},
            {"type": "Synced", "status": "True", "reason": "ReconcileSuccess", "lastTransitionTime": stamp(rel, "Synced", "True"), "observedGeneration": generation}
        ]);
        w.kube.put_status("Release", "", name, status);
        return;
    }
    if stuck {
        return;
    }
    let system_id = system_id_for(name);
    for runner in w.gitlab.runners.iter_mut() {
        runner.managers.retain(|m| m.system_id != system_id);
    }
    w.sim.ready_since.remove(name);
    w.sim.deployed_generation.remove(name);
    let mut obj = rel.clone();
    if let Some(list) = obj["metadata"]["finalizers"].as_array_mut() {
        list.retain(|f| f != RELEASE_FINALIZER);
    }
    let _ = w.kube.put(obj, "crossplane-helm-provider");
}

/// Karpenter's NodePool status: its conditions (each with the generation it was computed
/// for), the nodes it launched and their resources. NodeRegistrationHealthy goes Unknown
/// when the spec changes, until a node of the new generation registers.
fn reconcile_node_pools(w: &mut World) {
    let pools: Vec<Value> = w.kube.list("NodePool").into_iter().cloned().collect();
    for pool in pools {
        let name = pool["metadata"]["name"].as_str().unwrap_or("").to_string();
        let generation = pool["metadata"]["generation"].as_i64().unwrap_or(1);
        let nodes: Vec<Value> = w
            .kube
            .list("Node")
            .into_iter()
            .filter(|n| n["metadata"]["labels"]["karpenter.sh/nodepool"] == name.as_str())
            .cloned()
            .collect();
        // First sight of a pool that already has nodes: they registered at this generation.
        if !nodes.is_empty() && !w.sim.registered_generation.contains_key(&name) {
            w.sim.registered_generation.insert(name.clone(), generation);
        }
        let class = pool["spec"]["template"]["spec"]["nodeClassRef"]["name"].as_str().unwrap_or("");
        let class_ready = w.kube.get("EC2NodeClass", "", class).is_some();
        let registered = w.sim.registered_generation.get(&name) == Some(&generation);
        let cond = |ty: &str, status: &str, reason: &str, message: &str| {
            json!({"type": ty, "status": status, "reason": reason, "message": message,
                   "lastTransitionTime": stamp(&pool, ty, status), "observedGeneration": generation})
        };
        let node_class = if class_ready {
            cond("NodeClassReady", "True", "NodeClassReady", "")
        } else {
            cond("NodeClassReady", "False", "NodeClassNotFound", &format!("EC2NodeClass {class:?} not found"))
        };
        let registration = if registered {
            cond("NodeRegistrationHealthy", "True", "NodeRegistrationHealthy", "")
        } else {
            cond("NodeRegistrationHealthy", "Unknown", "AwaitingReconciliation", "object is awaiting reconciliation")
        };
        let ready = if class_ready {
            cond("Ready", "True", "Ready", "")
        } else {
            cond("Ready", "False", "NodeClassReadyNotTrue", "NodeClassReady=False")
        };
        let mut resources = BTreeMap::new();
        for (key, per_node) in [("cpu", 2i64), ("memory", 8), ("pods", 29)] {
            let total = per_node * nodes.len() as i64;
            resources.insert(key, if key == "memory" { format!("{total}Gi") } else { total.to_string() });
        }
        resources.insert("nodes", nodes.len().to_string());
        let status = json!({
            "conditions": [cond("ValidationSucceeded", "True", "ValidationSucceeded", ""), node_class, registration, ready],
            "nodes": nodes.len(),
            "resources": resources,
        });
        if pool["status"] != status {
            w.kube.put_status("NodePool", "", &name, status);
        }
    }
}

/// The `system_id` of the runner manager a Release runs (one pod, one stable id).
pub fn system_id_for(release: &str) -> String {
    format!(
        "r_{:012x}",
        release.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
            & 0xffff_ffff_ffff
    )
}

/// `Ok(Some(token))` when the Release can read a runner token; `Err` says why not.
fn token_of(w: &World, values: &Value, ns: &str) -> Result<Option<String>, String> {
    if let Some(t) = values["runnerToken"].as_str() {
        return Ok(Some(t.to_string()));
    }
    let Some(secret_name) = values["runners"]["secret"].as_str() else {
        return Err("cannot install release: values: runnerToken or runners.secret is required (no runner authentication token)".into());
    };
    let Some(secret) = w.kube.get("Secret", ns, secret_name) else {
        return Err(format!("gitlab-runner pod cannot start: secret {secret_name:?} not found in namespace {ns:?}"));
    };
    for key in ["runner-token", "runner-registration-token"] {
        if secret["data"].get(key).is_none() {
            return Err(format!(
                "gitlab-runner pod cannot start: couldn't find key {key} in Secret {ns}/{secret_name}"
            ));
        }
    }
    let decoded = secret["data"]["runner-token"]
        .as_str()
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .map(|b| String::from_utf8_lossy(&b).trim().to_string());
    Ok(decoded.filter(|t| !t.is_empty()))
}

fn stamp(rel: &Value, ty: &str, status: &str) -> Value {
    rel["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty && c["status"] == status))
        .map(|c| c["lastTransitionTime"].clone())
        .unwrap_or_else(|| json!(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
        .unwrap_or_default()
}

/// `[runners.kubernetes.node_selector]` of the first `[[runners]]` entry.
fn job_node_selector(config: &str) -> BTreeMap<String, String> {
    let Ok(doc) = config.parse::<toml_edit::DocumentMut>() else { return BTreeMap::new() };
    doc.get("runners")
        .and_then(|r| r.as_array_of_tables())
        .and_then(|a| a.iter().next())
        .and_then(|t| t.get("kubernetes"))
        .and_then(|k| k.get("node_selector"))
        .and_then(|n| n.as_table_like())
        .map(|t| t.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.to_string(), s.to_string()))).collect())
        .unwrap_or_default()
}

/// Finds a node for a pod with this node selector, launching one from a NodePool that allows
/// it if none fits. Returns the node's architecture.
pub fn place_pod(w: &mut World, selector: &BTreeMap<String, String>) -> Option<String> {
    for node in w.kube.list("Node") {
        let labels = &node["metadata"]["labels"];
        if selector.iter().all(|(k, v)| labels[k] == v.as_str()) {
            return labels[ARCH].as_str().map(str::to_string);
        }
    }
    let pools: Vec<Value> = w.kube.list("NodePool").into_iter().cloned().collect();
    for pool in pools {
        if let Some(labels) = launchable(w, &pool, selector) {
            let arch = labels.get(ARCH).cloned().unwrap_or_else(|| "amd64".into());
            w.sim.node_seq += 1;
            let name = format!("ip-10-0-{}-{}.ec2.internal", 10 + w.sim.node_seq / 250, w.sim.node_seq % 250);
            let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
                              "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                                         "nodeInfo": {"architecture": arch, "operatingSystem": "linux", "kubeletVersion": "v1.32.4-eks"}}});
            let _ = w.kube.put(node, "karpenter");
            let generation = pool["metadata"]["generation"].as_i64().unwrap_or(1);
            if let Some(name) = pool["metadata"]["name"].as_str() {
                w.sim.registered_generation.insert(name.to_string(), generation);
            }
            return Some(arch);
        }
    }
    None
}

/// The labels of a node `pool` could launch for `selector`, if it can.
fn launchable(w: &World, pool: &Value, selector: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    let pool_name = pool["metadata"]["name"].as_str()?;
    let mut labels = string_map(&pool["spec"]["template"]["metadata"]["labels"]);
    labels.insert("karpenter.sh/nodepool".into(), pool_name.into());
    let reqs = pool["spec"]["template"]["spec"]["requirements"].as_array().cloned().unwrap_or_default();
    let allows = |key: &str, value: &str| -> bool {
        reqs.iter().filter(|r| r["key"] == key).all(|r| {
            let vals: Vec<&str> =
                r["values"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            match r["operator"].as_str().unwrap_or("") {
                "In" => vals.contains(&value),
                "NotIn" => !vals.contains(&value),
                "Exists" => true,
                _ => false,
            }
        })
    };
    let first_allowed =
        |key: &str, candidates: &[&str]| candidates.iter().find(|c| allows(key, c)).map(|c| c.to_string());
    let well_known: [(&str, Vec<&str>); 3] = [
        (ARCH, vec!["amd64", "arm64"]),
        ("kubernetes.io/os", vec!["linux"]),
        ("karpenter.sh/capacity-type", vec!["spot", "on-demand"]),
    ];
    for (key, candidates) in &well_known {
        let value = match selector.get(*key) {
            Some(v) if candidates.contains(&v.as_str()) && allows(key, v) => v.clone(),
            Some(_) => return None,
            None => first_allowed(key, candidates)?,
        };
        labels.insert(key.to_string(), value);
    }
    for (k, v) in selector {
        match labels.get(k) {
            Some(have) if have == v => {}
            _ => return None,
        }
    }
    // The node class must resolve an image for the architecture.
    let class = pool["spec"]["template"]["spec"]["nodeClassRef"]["name"].as_str()?;
    let nc = w.kube.get("EC2NodeClass", "", class)?;
    let arch = labels.get(ARCH)?.clone();
    let has_ami =
        nc["status"]["amis"].as_array().into_iter().flatten().any(|ami| {
            ami["requirements"].as_array().into_iter().flatten().any(|r| {
                r["key"] == ARCH && r["values"].as_array().is_some_and(|v| v.iter().any(|x| *x == arch.as_str()))
            })
        });
    if !has_ami {
        return None;
    }
    labels.insert(
        "node.kubernetes.io/instance-type".into(),
        if arch == "arm64" { "m7g.large" } else { "m7i.large" }.into(),
    );
    labels.insert("topology.kubernetes.io/zone".into(), "eu-west-1a".into());
    Some(labels)
}

fn run_jobs(w: &mut World, tick: Duration) {
    // Pending jobs go to the first online runner that may take them.
    let pending: Vec<usize> = (0..w.gitlab.jobs.len()).filter(|i| w.gitlab.jobs[*i].status == "pending").collect();
    for i in pending {
        let job = w.gitlab.jobs[i].clone();
        let pick = w.gitlab.runners.iter().find(|r| {
            r.status() == "online"
                && w.gitlab.runner_serves(r, job.project_id)
                && (r.access_level != "ref_protected" || job.protected_ref)
                && if job.tag_list.is_empty() {
                    r.run_untagged
                } else {
                    job.tag_list.iter().all(|t| r.tag_list.contains(t))
                }
        });
        if let Some(r) = pick {
            let (rid, mid) = (r.id, r.managers.iter().max_by_key(|m| m.contacted_at).map(|m| m.id));
            let j = &mut w.gitlab.jobs[i];
            j.status = "running".into();
            j.runner_id = Some(rid);
            j.manager_id = mid;
            j.started_at = Some(Utc::now());
        }
    }
    // Running jobs finish once their pod has had time to run.
    let running: Vec<usize> = (0..w.gitlab.jobs.len()).filter(|i| w.gitlab.jobs[*i].status == "running").collect();
    for i in running {
        let started = w.gitlab.jobs[i].started_at.unwrap_or_else(Utc::now);
        if Utc::now() - started < chrono::Duration::from_std(tick * 2).unwrap_or_default() {
            continue;
        }
        let selector = w.gitlab.jobs[i]
            .runner_id
            .and_then(|id| w.gitlab.runners.iter().find(|r| r.id == id))
            .and_then(|r| r.job_node_selector.clone())
            .unwrap_or_default();
        let placed = place_pod(w, &selector).is_some();
        let j = &mut w.gitlab.jobs[i];
        j.finished_at = Some(now());
        if placed {
            j.status = "success".into();
        } else {
            j.status = "failed".into();
            j.failure_reason = Some("runner_system_failure".into());
        }
    }
    // Waiting jobs move on; pipelines follow their jobs.
    w.gitlab.advance_pipelines();
}
