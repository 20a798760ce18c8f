//! Phase 4: pin what relied on the amd64-only pool to amd64 explicitly — Argo
//! WorkflowTemplates, CronWorkflows and ClusterWorkflowTemplates (node selector) and untagged
//! jobs in the group's other projects (`$CICD_TAG_AMD64`) — and report the other workloads on
//! the pool. Every pin is one the NodePool widening waits for; what cannot be pinned blocks it.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::nodepool::allowed_archs;
use super::patch::guarded_patch;
use super::pipeline::{plan_tag_variable, runner_takes_jobs, tag_variable};
use super::{WideningGate, ci_file_change, ci_file_ref, flag_reconciler, join, plural};
use crate::ciyaml::{self, TagOptions};
use crate::model::{
    ARCH_LABEL, Action, Arch, ArgoWorkloadView, Change, ChangeId, Document, FindingCode, NodePoolView, ObjectRef,
    ObservedState, Phase, PhasePlan, Precondition, Status, WriteMethod, kube_id,
};
use crate::spec::MigrationPlan;
use crate::vocab::{BETA_ARCH_LABEL, FIELD_MANAGER, NODE_POOL, NODEPOOL_LABEL};

/// Argo template kinds that run a pod.
const POD_TEMPLATES: [&str; 4] = ["container", "script", "containerSet", "resource"];

pub fn plan(state: &ObservedState, spec: &MigrationPlan, gate: &mut WideningGate) -> PhasePlan {
    let mut out = PhasePlan::new(Phase::Workloads);
    let mut unpinned: Vec<String> = Vec::new();
    plan_argo(state, spec, &mut out, gate, &mut unpinned);
    plan_projects(state, spec, &mut out, gate, &mut unpinned);
    pool_workloads(state, &mut out, gate);
    ordering_hazard(state, spec, &unpinned, &mut out);
    out
}

fn selected(obj: &Value, view: &ArgoWorkloadView, spec: &MigrationPlan) -> bool {
    let argo = &spec.workloads.argo;
    let ns_ok = match &view.namespace {
        Some(ns) => argo.namespaces.is_empty() || argo.namespaces.contains(ns),
        None => true,
    };
    let key = match &view.namespace {
        Some(ns) => format!("{ns}/{}", view.name),
        None => view.name.clone(),
    };
    let labels_ok = argo.label_selector.iter().all(|(k, v)| obj["metadata"]["labels"][k].as_str() == Some(v));
    argo.kinds.contains(&view.kind) && ns_ok && labels_ok && !argo.exclude.contains(&key)
}

fn plan_argo(
    state: &ObservedState,
    spec: &MigrationPlan,
    out: &mut PhasePlan,
    gate: &mut WideningGate,
    unpinned: &mut Vec<String>,
) {
    let pool = &spec.node_pool.name;
    let mut planned = 0;
    for obj in &state.argo {
        let Some(view) = ArgoWorkloadView::from_object(obj) else { continue };
        if !selected(obj, &view, spec) {
            continue;
        }
        let target = ObjectRef::argo(view.kind, view.namespace.as_deref(), &view.name);
        let Some(wf) = obj.pointer(view.spec_pointer).filter(|v| v.is_object()) else {
            out.finding(
                FindingCode::WorkloadNoSpec,
                Status::Risk,
                Some(target.clone()),
                format!("has no {} to pin: pin it by hand", view.spec_pointer),
            );
            gate.blockers.push(target.to_string());
            continue;
        };
        let pods = pod_constraints(wf, pool);
        if !pods.is_empty() && pods.iter().all(|p| p.other_pool) {
            out.finding(
                FindingCode::WorkloadOtherPool,
                Status::Done,
                Some(target),
                "its pods are placed on another NodePool: not affected by the widening",
            );
            continue;
        }
        let floating: Vec<&PodConstraint> = pods.iter().filter(|p| !p.other_pool && p.archs.is_none()).collect();
        if !pods.is_empty() && floating.is_empty() {
            let archs: BTreeSet<&str> =
                pods.iter().filter_map(|p| p.archs.as_ref()).flatten().map(String::as_str).collect();
            out.finding(
                FindingCode::WorkloadPinned,
                Status::Done,
                Some(target),
                format!("every pod is pinned ({})", join(archs.iter())),
            );
            continue;
        }
        let mut after = obj.clone();
        let Some(wf_after) = after.pointer_mut(view.spec_pointer) else { continue };
        let templates_touched = pin_workflow_spec(wf_after, pool);
        let method = if templates_touched {
            // Templates are an atomic list to server-side apply: patch them, guarded, instead.
            WriteMethod::KubeJsonPatch { patch: guarded_patch(obj, &after) }
        } else {
            WriteMethod::KubeApply { field_manager: FIELD_MANAGER.into(), patch: apply_config(obj, &view) }
        };
        let id = ChangeId::argo(view.kind, view.namespace.as_deref(), &view.name);
        unpinned.push(target.to_string());
        gate.pins.push(id.clone());
        planned += 1;
        let which = if pods.is_empty() {
            "no pod template of its own (it calls others): the workflow-level selector is set".to_string()
        } else {
            format!("{} can land on any node the pool launches", plural(floating.len(), "pod template"))
        };
        out.finding_for(FindingCode::WorkloadUnpinned, Status::Pending, Some(target.clone()), &id, which);
        flag_reconciler(out, obj, &target, &id);
        out.changes.push(
            Change::new(
                id,
                Phase::Workloads,
                target.clone(),
                Action::Update,
                format!("pin {target} to amd64 (nodeSelector {ARCH_LABEL}: amd64)"),
                method,
            )
            .before(Document::Object(obj.clone()))
            .after(Document::Object(after))
            .precondition(Precondition::ResourceVersion { resource_version: view.resource_version.clone() }),
        );
    }
    if planned > 0 {
        out.finding(
            FindingCode::WorkflowDefaults,
            Status::Pending,
            None,
            "workflows submitted without a template are not covered: the workflow-controller ConfigMap's workflowDefaults (spec.nodeSelector kubernetes.io/arch: amd64) pins every workflow cluster-wide",
        );
    }
}

/// What constrains one pod template of a workflow, by Argo's rule: a template's own
/// non-empty `nodeSelector` (or `affinity`) replaces the workflow's.
#[derive(Debug, PartialEq)]
struct PodConstraint {
    /// The architectures it is pinned to, when it is pinned to exactly one.
    archs: Option<Vec<String>>,
    /// Its effective selector names another NodePool: the widening does not reach it.
    other_pool: bool,
    /// It is pinned by affinity alone (a workflow-level nodeSelector would also apply to it).
    by_affinity_only: bool,
}

fn is_pod_template(t: &Value) -> bool {
    POD_TEMPLATES.iter().any(|k| t.get(k).is_some())
}

fn pod_constraints(wf: &Value, pool: &str) -> Vec<PodConstraint> {
    let templates = wf["templates"].as_array().map(Vec::as_slice).unwrap_or_default();
    templates.iter().filter(|t| is_pod_template(t)).map(|t| constraint(t, wf, pool)).collect()
}

/// The effective constraint of template `t` of workflow spec `wf`.
fn constraint(t: &Value, wf: &Value, pool: &str) -> PodConstraint {
    let own_sel = t["nodeSelector"].as_object().is_some_and(|m| !m.is_empty());
    let selector = if own_sel { &t["nodeSelector"] } else { &wf["nodeSelector"] };
    let affinity = if t.get("affinity").is_some_and(|a| !a.is_null()) { &t["affinity"] } else { &wf["affinity"] };
    let by_selector = selector_arch(selector);
    let by_affinity = affinity_archs(affinity);
    PodConstraint {
        by_affinity_only: by_selector.is_none() && by_affinity.is_some() && !own_sel,
        archs: by_selector.or(by_affinity),
        other_pool: selector[NODEPOOL_LABEL].as_str().is_some_and(|p| p != pool),
    }
}

fn selector_arch(sel: &Value) -> Option<Vec<String>> {
    [ARCH_LABEL, BETA_ARCH_LABEL].iter().find_map(|k| sel[k].as_str().map(|v| vec![v.to_string()]))
}

/// Required node affinity pins a pod when every term constrains the architecture with `In`
/// to one architecture (`In [amd64, arm64]` is not a pin).
fn affinity_archs(aff: &Value) -> Option<Vec<String>> {
    let terms =
        aff.pointer("/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")?.as_array()?;
    let mut archs = BTreeSet::new();
    for term in terms {
        let exprs = term["matchExpressions"].as_array()?;
        let e =
            exprs.iter().find(|e| (e["key"] == ARCH_LABEL || e["key"] == BETA_ARCH_LABEL) && e["operator"] == "In")?;
        archs.extend(e["values"].as_array()?.iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    (archs.len() == 1).then(|| archs.into_iter().collect())
}

/// Pins every pod template of the workflow that can land on `pool` to amd64, by the rule
/// `constraint` reads. Says whether a template (not only the workflow level) was edited.
fn pin_workflow_spec(wf: &mut Value, pool: &str) -> bool {
    let pods = pod_constraints(wf, pool);
    // A workflow-level arch selector also reaches pods pinned by affinity alone: when one is
    // pinned elsewhere than amd64, the floating templates are pinned one by one instead.
    let conflict = pods.iter().any(|p| p.by_affinity_only && p.archs.as_deref() != Some(&["amd64".to_string()]));
    let before = wf.clone();
    let own_selector = |t: &Value| t["nodeSelector"].as_object().is_some_and(|m| !m.is_empty());
    let templates = before["templates"].as_array().map(Vec::as_slice).unwrap_or_default();
    // The workflow level is needed by floating pods without a selector of their own, and by a
    // workflow whose pods come from templates it calls.
    let needs_workflow_level = pods.is_empty()
        || templates
            .iter()
            .filter(|t| is_pod_template(t) && !own_selector(t))
            .any(|t| constraint(t, &before, pool).archs.is_none());
    let workflow_selector = before["nodeSelector"].as_object().cloned().unwrap_or_default();
    let mut touched = false;
    if let Some(templates) = wf.get_mut("templates").and_then(Value::as_array_mut) {
        for t in templates.iter_mut().filter(|t| is_pod_template(t)) {
            let c = constraint(t, &before, pool);
            if c.other_pool || c.archs.is_some() {
                continue;
            }
            let own = t["nodeSelector"].as_object().filter(|m| !m.is_empty()).cloned();
            // Its own selector replaces the workflow's, so the pin goes there.
            let sel = match (own, conflict) {
                (Some(own), _) => own,
                (None, true) => workflow_selector.clone(),
                (None, false) => continue,
            };
            if let Some(obj) = t.as_object_mut() {
                let mut sel = sel;
                sel.insert(ARCH_LABEL.into(), json!(Arch::Amd64.as_str()));
                obj.insert("nodeSelector".into(), Value::Object(sel));
                touched = true;
            }
        }
    }
    if needs_workflow_level
        && !conflict
        && let Some(spec) = wf.as_object_mut()
    {
        let selector = spec.entry("nodeSelector").or_insert_with(|| json!({}));
        if !selector.is_object() {
            *selector = json!({});
        }
        if let Some(sel) = selector.as_object_mut() {
            sel.insert(ARCH_LABEL.into(), json!(Arch::Amd64.as_str()));
        }
    }
    touched
}

/// The apply configuration that sets only the workflow-level arch selector.
fn apply_config(obj: &Value, view: &ArgoWorkloadView) -> Value {
    let selector = json!({"nodeSelector": {ARCH_LABEL: Arch::Amd64.as_str()}});
    let spec = match view.spec_pointer {
        "/spec/workflowSpec" => json!({"workflowSpec": selector}),
        _ => selector,
    };
    let mut metadata = json!({"name": view.name});
    if let (Some(ns), Some(m)) = (&view.namespace, metadata.as_object_mut()) {
        m.insert("namespace".into(), json!(ns));
    }
    json!({"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": metadata, "spec": spec})
}

fn plan_projects(
    state: &ObservedState,
    spec: &MigrationPlan,
    out: &mut PhasePlan,
    gate: &mut WideningGate,
    unpinned: &mut Vec<String>,
) {
    let Some(gl) = &spec.workloads.gitlab else { return };
    let var = spec.pipeline.variables.name(Arch::Amd64);
    let reference = spec.pipeline.variables.reference(Arch::Amd64);
    // Retag only onto a runner that will take the jobs.
    let starting = match runner_takes_jobs(state, spec, Arch::Amd64) {
        Ok(wait) => wait,
        Err(why) => {
            out.finding(
                FindingCode::RunnerPaused,
                Status::Risk,
                Some(ObjectRef::GitLabRunner { tag: spec.runners.tag(Arch::Amd64), id: None }),
                format!("the group's projects are not retagged: {why}"),
            );
            return;
        }
    };
    // Jobs retagged to the amd64 runner need the variable and a runner that takes them.
    let needs = [
        ChangeId::group_variable(&gl.group, var),
        ChangeId::runner(&spec.runners.tag(Arch::Amd64)),
        ChangeId::release(&spec.runners.release_name(Arch::Amd64)),
    ];
    let skipped =
        |p: &crate::model::ProjectCi| p.path == spec.pipeline.project || gl.exclude_projects.contains(&p.path);
    // Every file's rewrite first, over the machine's cores: they are independent, and in a
    // fleet they are most of the planning time.
    let retags = crate::par::map(&state.other_projects, |project| {
        let file = project.file.as_ref().filter(|_| !skipped(project))?;
        let opts = TagOptions {
            default_tag: Some(reference.clone()),
            arch_tags: [(Arch::Amd64, reference.clone())].into(),
            job_tags: Default::default(),
            prefer_default: false,
            // `default: tags` also reaches the jobs its includes define.
            prefer_default_with_include: true,
            includes: project.includes.iter().flatten().map(|f| f.content.clone()).collect(),
        };
        Some(ciyaml::retag(&file.content, &opts))
    });
    let mut uses_variable = false;
    for (project, retag) in state.other_projects.iter().zip(retags) {
        if skipped(project) {
            continue;
        }
        let project_ref = ObjectRef::Project { path: project.path.clone() };
        let (Some(file), Some(retag)) = (&project.file, retag) else {
            out.finding(FindingCode::ProjectNoCiFile, Status::Done, Some(project_ref), "has no CI file");
            continue;
        };
        uses_variable |= file.content.contains(&reference);
        match retag {
            Ok(retag) => {
                if retag.changed {
                    unpinned.push(format!("{}:{}", project.path, file.path));
                    uses_variable = true;
                } else {
                    out.finding(
                        FindingCode::ProjectPinned,
                        Status::Done,
                        Some(project_ref),
                        "every job is tagged or left alone for review",
                    );
                }
                // Jobs the includes define are out of a per-job rewrite's reach; when every
                // include was read and defines none, there is nothing to cover.
                let includes_define_jobs = project.includes.is_none() || !retag.included_jobs.is_empty();
                if retag.has_include
                    && includes_define_jobs
                    && retag.default_tags_added.is_none()
                    && !file.content.contains("\ndefault:")
                {
                    out.finding(
                        FindingCode::CiFileIncludesUncovered,
                        Status::Risk,
                        Some(ci_file_ref(file)),
                        "jobs defined by its include: files are not covered by a per-job rewrite: add `default: tags` or tag them in the included files",
                    );
                }
                if let Some(id) = ci_file_change(out, file, &retag, &gl.delivery) {
                    if let Some(change) = out.changes.iter_mut().find(|c| c.id == id) {
                        *change = change.clone().depends_on(needs.clone());
                        change.waits_for.extend(starting.clone());
                    }
                    gate.pins.push(id);
                }
            }
            Err(e) => out.finding(
                FindingCode::CiFileUnreadable,
                Status::Risk,
                Some(ci_file_ref(file)),
                format!("cannot be rewritten: {e}"),
            ),
        }
    }
    // A project variable of the pipeline project is invisible here: the group needs it,
    // unless the pipeline's own variables already live in this group.
    let target = ObjectRef::GroupVariable { group: gl.group.clone(), key: var.to_string() };
    if uses_variable && tag_variable(spec, Arch::Amd64) != target {
        plan_tag_variable(out, state.group_variables(&gl.group), target, &spec.runners.tag(Arch::Amd64));
    }
}

/// Deployments, StatefulSets, Jobs and CronJobs on the pool without an arch constraint float
/// to arm64 once it widens: reported, and the widening waits until they are pinned. DaemonSets
/// start on every node, arm64 ones included.
fn pool_workloads(state: &ObservedState, out: &mut PhasePlan, gate: &mut WideningGate) {
    for obj in &state.pool_workloads {
        let (kind, ns, name) = kube_id(obj);
        let api_version = obj["apiVersion"].as_str().unwrap_or("apps/v1");
        let target = ObjectRef::Kube {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: ns.map(str::to_string),
            name: name.into(),
        };
        let pod = match kind {
            "CronJob" => obj.pointer("/spec/jobTemplate/spec/template/spec"),
            _ => obj.pointer("/spec/template/spec"),
        };
        let pinned = pod.and_then(|p| selector_arch(&p["nodeSelector"]).or_else(|| affinity_archs(&p["affinity"])));
        match (kind, pinned) {
            ("DaemonSet", None) => out.finding(
                FindingCode::DaemonSetOnArm64,
                Status::Risk,
                Some(target),
                "will also start a pod on every arm64 node: check that its images are multi-arch",
            ),
            ("DaemonSet", Some(archs)) => out.finding(
                FindingCode::DaemonSetOnArm64,
                Status::Risk,
                Some(target),
                format!("is pinned to {}: arm64 nodes will run without it (a node agent?)", archs.join(", ")),
            ),
            (_, None) => {
                out.finding(
                    FindingCode::ControllerUnpinned,
                    Status::Risk,
                    Some(target.clone()),
                    "runs pods on the pool without an architecture constraint: add nodeSelector kubernetes.io/arch: amd64 (in its source) before the pool widens",
                );
                gate.blockers.push(target.to_string());
            }
            (_, Some(_)) => {}
        }
    }
}

fn ordering_hazard(state: &ObservedState, spec: &MigrationPlan, unpinned: &[String], out: &mut PhasePlan) {
    if unpinned.is_empty() {
        return;
    }
    let pool = &spec.node_pool.name;
    let Some(view) =
        state.node_pools.iter().find(|o| kube_id(o).2 == pool).and_then(|o| NodePoolView::from_object(o).ok())
    else {
        return;
    };
    let list = if unpinned.len() > 5 {
        format!("{} and {} more", join(unpinned[..5].iter()), unpinned.len() - 5)
    } else {
        join(unpinned.iter())
    };
    let widened = allowed_archs(&view.requirements).contains(&Arch::Arm64);
    let msg = if widened {
        format!(
            "NodePool {pool} already allows arm64 and {} workload(s) have no architecture constraint ({list}): they can land on arm64 nodes now; apply Phase 4 first",
            unpinned.len()
        )
    } else {
        format!(
            "{} workload(s) rely on NodePool {pool} being amd64-only ({list}): the widening (Phase 1) is ordered after their pins (Phase 4); do not widen the pool by other means first",
            unpinned.len()
        )
    };
    // Not widened yet, the plan orders the pins first; widened already, it is too late for that.
    let status = if widened { Status::Risk } else { Status::Pending };
    out.finding(FindingCode::OrderingHazard, status, Some(ObjectRef::kube(NODE_POOL, None, pool)), msg);
}
