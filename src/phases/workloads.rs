//! Phase 4: pin what relied on the amd64-only pool to amd64 explicitly — Argo
//! WorkflowTemplates/CronWorkflows (node selector) and untagged jobs in the group's other
//! projects (`$CICD_TAG_AMD64`) — and flag the ordering hazard with Phase 1.

use serde_json::{Value, json};

use super::nodepool::allowed_archs;
use super::patch::guarded_patch;
use super::pipeline::plan_tag_variable;
use super::{ci_file_change, ci_file_ref, join};
use crate::ciyaml::{self, TagOptions};
use crate::model::{
    ARCH_LABEL, Action, Arch, ArgoWorkloadView, Change, ChangeId, Document, FindingCode, NodePoolView, ObjectRef,
    ObservedState, Phase, PhasePlan, Precondition, Status, WriteMethod, kube_id,
};
use crate::spec::MigrationPlan;
use crate::vocab::{BETA_ARCH_LABEL, FIELD_MANAGER, NODE_POOL};

/// Argo template kinds that run a pod.
const POD_TEMPLATES: [&str; 4] = ["container", "script", "containerSet", "resource"];

/// The Workloads phase, and which of its changes pin something the NodePool widening must wait for.
pub struct WorkloadsPlan {
    pub phase: PhasePlan,
    pins: Vec<ChangeId>,
}

impl WorkloadsPlan {
    pub fn pins(&self) -> Vec<ChangeId> {
        self.pins.clone()
    }
}

pub fn plan(state: &ObservedState, spec: &MigrationPlan) -> WorkloadsPlan {
    let mut out = PhasePlan::new(Phase::Workloads);
    let mut pins: Vec<ChangeId> = Vec::new();
    let mut unpinned: Vec<String> = Vec::new();
    plan_argo(state, spec, &mut out, &mut pins, &mut unpinned);
    plan_projects(state, spec, &mut out, &mut pins, &mut unpinned);
    ordering_hazard(state, spec, &unpinned, &mut out);
    WorkloadsPlan { phase: out, pins }
}

fn plan_argo(
    state: &ObservedState,
    spec: &MigrationPlan,
    out: &mut PhasePlan,
    pins: &mut Vec<ChangeId>,
    unpinned: &mut Vec<String>,
) {
    let argo = &spec.workloads.argo;
    for obj in &state.argo {
        let Some(view) = ArgoWorkloadView::from_object(obj) else { continue };
        if !argo.kinds.contains(&view.kind)
            || !(argo.namespaces.is_empty() || argo.namespaces.contains(&view.namespace))
        {
            continue;
        }
        let target = ObjectRef::argo(view.kind, &view.namespace, &view.name);
        let wf = obj.pointer(view.spec_pointer).cloned().unwrap_or(Value::Null);
        if let Some(archs) = pinned_archs(&wf) {
            out.finding(
                FindingCode::WorkloadPinned,
                Status::Done,
                Some(target),
                format!("pinned to {}", archs.join(", ")),
            );
            continue;
        }
        let mut after = obj.clone();
        let Some(wf_after) = after.pointer_mut(view.spec_pointer).filter(|v| v.is_object()) else {
            out.finding(
                FindingCode::WorkloadNoSpec,
                Status::Risk,
                Some(target),
                format!("has no {} to pin", view.spec_pointer),
            );
            continue;
        };
        let templates_touched = pin_workflow_spec(wf_after);
        let method = if templates_touched {
            // Templates are an atomic list to server-side apply: patch them with guards instead.
            WriteMethod::KubeJsonPatch { patch: guarded_patch(obj, &after) }
        } else {
            WriteMethod::KubeApply { field_manager: FIELD_MANAGER.into(), patch: apply_config(obj, &view) }
        };
        let id = ChangeId::argo(view.kind, &view.namespace, &view.name);
        unpinned.push(target.to_string());
        pins.push(id.clone());
        out.finding_for(
            FindingCode::WorkloadUnpinned,
            Status::Pending,
            Some(target.clone()),
            &id,
            "no architecture constraint: pods can land on any node the pool launches",
        );
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
}

/// The apply configuration that sets only the workflow-level arch selector.
fn apply_config(obj: &Value, view: &ArgoWorkloadView) -> Value {
    let selector = json!({"nodeSelector": {ARCH_LABEL: Arch::Amd64.as_str()}});
    let spec = match view.spec_pointer {
        "/spec/workflowSpec" => json!({"workflowSpec": selector}),
        _ => selector,
    };
    json!({
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": {"name": view.name, "namespace": view.namespace},
        "spec": spec,
    })
}

/// The architectures a workflow spec is pinned to, or `None` when some pod could land anywhere.
fn pinned_archs(wf: &Value) -> Option<Vec<String>> {
    if let Some(a) = selector_arch(&wf["nodeSelector"]).or_else(|| affinity_archs(&wf["affinity"])) {
        return Some(a);
    }
    // Otherwise every pod-running template must pin itself.
    let templates = wf["templates"].as_array()?;
    let pods: Vec<&Value> = templates.iter().filter(|t| POD_TEMPLATES.iter().any(|k| t.get(k).is_some())).collect();
    if pods.is_empty() {
        return None;
    }
    let mut all = Vec::new();
    for t in pods {
        all.extend(selector_arch(&t["nodeSelector"]).or_else(|| affinity_archs(&t["affinity"]))?);
    }
    all.sort();
    all.dedup();
    Some(all)
}

fn selector_arch(sel: &Value) -> Option<Vec<String>> {
    [ARCH_LABEL, BETA_ARCH_LABEL].iter().find_map(|k| sel[k].as_str().map(|v| vec![v.to_string()]))
}

/// Required node affinity: pinned when every term constrains the architecture with `In`.
fn affinity_archs(aff: &Value) -> Option<Vec<String>> {
    let terms =
        aff.pointer("/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")?.as_array()?;
    let mut archs = Vec::new();
    for term in terms {
        let exprs = term["matchExpressions"].as_array()?;
        let e =
            exprs.iter().find(|e| (e["key"] == ARCH_LABEL || e["key"] == BETA_ARCH_LABEL) && e["operator"] == "In")?;
        archs.extend(e["values"].as_array()?.iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    if archs.is_empty() { None } else { Some(archs) }
}

/// Adds `kubernetes.io/arch: amd64` at workflow level, and to templates that bring their own
/// nodeSelector (which may replace the workflow's). Says whether a template was touched.
fn pin_workflow_spec(wf: &mut Value) -> bool {
    let Some(spec) = wf.as_object_mut() else { return false };
    let selector = spec.entry("nodeSelector").or_insert_with(|| json!({}));
    if !selector.is_object() {
        *selector = json!({});
    }
    if let Some(sel) = selector.as_object_mut() {
        sel.insert(ARCH_LABEL.into(), json!(Arch::Amd64.as_str()));
    }
    let mut touched = false;
    if let Some(templates) = spec.get_mut("templates").and_then(Value::as_array_mut) {
        for t in templates {
            if let Some(sel) = t.get_mut("nodeSelector").and_then(Value::as_object_mut)
                && !sel.is_empty()
                && !sel.contains_key(ARCH_LABEL)
            {
                sel.insert(ARCH_LABEL.into(), json!(Arch::Amd64.as_str()));
                touched = true;
            }
        }
    }
    touched
}

fn plan_projects(
    state: &ObservedState,
    spec: &MigrationPlan,
    out: &mut PhasePlan,
    pins: &mut Vec<ChangeId>,
    unpinned: &mut Vec<String>,
) {
    let Some(gl) = &spec.workloads.gitlab else { return };
    let var = spec.pipeline.variables.name(Arch::Amd64);
    let reference = spec.pipeline.variables.reference(Arch::Amd64);
    let opts = TagOptions {
        default_tag: Some(reference.clone()),
        arch_tags: [(Arch::Amd64, reference.clone())].into(),
        job_tags: Default::default(),
    };
    // Jobs retagged to the amd64 runner need the variable and a runner that takes them.
    let needs = [
        ChangeId::group_variable(&gl.group, var),
        ChangeId::runner(&spec.runners.tag(Arch::Amd64)),
        ChangeId::release(&spec.runners.release_name(Arch::Amd64)),
    ];
    let mut uses_variable = false;
    for project in &state.other_projects {
        if project.path == spec.pipeline.project || gl.exclude_projects.contains(&project.path) {
            continue;
        }
        let project_ref = ObjectRef::Project { path: project.path.clone() };
        let Some(file) = &project.file else {
            out.finding(FindingCode::ProjectNoCiFile, Status::Done, Some(project_ref), "has no CI file");
            continue;
        };
        uses_variable |= file.content.contains(&reference);
        match ciyaml::retag(&file.content, &opts) {
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
                if let Some(id) = ci_file_change(out, file, &retag, &gl.delivery) {
                    if let Some(change) = out.changes.iter_mut().find(|c| c.id == id) {
                        *change = change.clone().depends_on(needs.clone());
                    }
                    pins.push(id);
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
    if uses_variable {
        // A project variable of the pipeline project is invisible here: the group needs it.
        let target = ObjectRef::GroupVariable { group: gl.group.clone(), key: var.to_string() };
        plan_tag_variable(out, &state.group_variables, target, &spec.runners.tag(Arch::Amd64));
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
    let msg = if allowed_archs(&view.requirements).contains(&Arch::Arm64) {
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
    let status = if allowed_archs(&view.requirements).contains(&Arch::Arm64) { Status::Risk } else { Status::Pending };
    out.finding(FindingCode::OrderingHazard, status, Some(ObjectRef::kube(NODE_POOL, None, pool)), msg);
}
