//! Phase 4: pin what relied on the amd64-only pool to amd64 explicitly — Argo
//! WorkflowTemplates/CronWorkflows (node selector) and untagged jobs in the group's other
//! projects (`$CICD_TAG_AMD64`) — and flag the ordering hazard with Phase 1.

use serde_json::{Value, json};

use super::nodepool::allowed_archs;
use super::pipeline::plan_tag_variable;
use super::{ci_file_change, nodepool::join};
use crate::ciyaml::{self, TagOptions};
use crate::model::{
    ARCH_LABEL, Action, Arch, ArgoWorkloadView, Change, Document, NodePoolView, ObservedState, Phase, PhasePlan,
    Precondition, Severity, Target, kube_id,
};
use crate::spec::MigrationPlan;

const BETA_ARCH_LABEL: &str = "beta.kubernetes.io/arch";
/// Argo template kinds that run a pod.
const POD_TEMPLATES: [&str; 4] = ["container", "script", "containerSet", "resource"];

pub fn plan(state: &ObservedState, spec: &MigrationPlan) -> PhasePlan {
    let mut out = PhasePlan::new(Phase::Workloads);
    let mut unpinned: Vec<String> = Vec::new();
    plan_argo(state, spec, &mut out, &mut unpinned);
    plan_projects(state, spec, &mut out, &mut unpinned);
    ordering_hazard(state, spec, &unpinned, &mut out);
    out
}

fn plan_argo(state: &ObservedState, spec: &MigrationPlan, out: &mut PhasePlan, unpinned: &mut Vec<String>) {
    let argo = &spec.workloads.argo;
    for obj in &state.argo {
        let Some(view) = ArgoWorkloadView::from_object(obj) else { continue };
        if !argo.kinds.contains(&view.kind)
            || !(argo.namespaces.is_empty() || argo.namespaces.contains(&view.namespace))
        {
            continue;
        }
        let subject = format!("{} {}/{}", view.kind, view.namespace, view.name);
        let wf = obj.pointer(view.spec_pointer).cloned().unwrap_or(Value::Null);
        if let Some(archs) = pinned_archs(&wf) {
            out.finding(Severity::Done, subject, format!("pinned to {}", archs.join(", ")));
            continue;
        }
        let mut after = obj.clone();
        let Some(wf_after) = after.pointer_mut(view.spec_pointer) else {
            out.finding(Severity::Risk, subject, format!("has no {} to pin", view.spec_pointer));
            continue;
        };
        pin_workflow_spec(wf_after);
        unpinned.push(subject.clone());
        out.changes.push(Change {
            id: format!("argo/{}/{}/{}", view.kind, view.namespace, view.name),
            phase: Phase::Workloads,
            target: Target::Kube {
                api_version: "argoproj.io/v1alpha1".into(),
                kind: view.kind.to_string(),
                namespace: Some(view.namespace.clone()),
                name: view.name.clone(),
            },
            action: Action::Update,
            summary: format!("pin {subject} to amd64 (nodeSelector {ARCH_LABEL}: amd64)"),
            before: Some(Document::Object(obj.clone())),
            after: Some(Document::Object(after)),
            precondition: Precondition::ResourceVersion { resource_version: view.resource_version.clone() },
            sensitive: vec![],
        });
    }
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
/// nodeSelector (which may replace the workflow's).
fn pin_workflow_spec(wf: &mut Value) {
    if !wf["nodeSelector"].is_object() {
        wf["nodeSelector"] = json!({});
    }
    wf["nodeSelector"][ARCH_LABEL] = json!(Arch::Amd64.as_str());
    if let Some(templates) = wf["templates"].as_array_mut() {
        for t in templates {
            if let Some(sel) = t["nodeSelector"].as_object_mut()
                && !sel.is_empty()
                && !sel.contains_key(ARCH_LABEL)
            {
                sel.insert(ARCH_LABEL.into(), json!(Arch::Amd64.as_str()));
            }
        }
    }
}

fn plan_projects(state: &ObservedState, spec: &MigrationPlan, out: &mut PhasePlan, unpinned: &mut Vec<String>) {
    let Some(gl) = &spec.workloads.gitlab else { return };
    let var = spec.pipeline.variables.name(Arch::Amd64);
    let reference = spec.pipeline.variables.reference(Arch::Amd64);
    let opts = TagOptions {
        default_tag: Some(reference.clone()),
        arch_tags: [(Arch::Amd64, reference.clone())].into(),
        job_tags: Default::default(),
    };
    let mut uses_variable = false;
    for project in &state.other_projects {
        if project.path == spec.pipeline.project || gl.exclude_projects.contains(&project.path) {
            continue;
        }
        let Some(file) = &project.file else {
            out.finding(Severity::Done, format!("project {}", project.path), "has no CI file");
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
                        Severity::Done,
                        format!("project {}", project.path),
                        "every job is tagged or left alone for review",
                    );
                }
                ci_file_change(out, file, &retag, &gl.delivery);
            }
            Err(e) => out.finding(
                Severity::Risk,
                format!("{}:{}", project.path, file.path),
                format!("cannot be rewritten: {e}"),
            ),
        }
    }
    if uses_variable {
        // A project variable of the pipeline project is invisible here: the group needs it.
        let target = Target::GroupVariable { group: gl.group.clone(), key: var.to_string() };
        plan_tag_variable(
            out,
            &state.group_variables,
            target,
            var,
            &spec.runners.tag(Arch::Amd64),
            &format!("group-variable/{var}"),
        );
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
            "{} workload(s) rely on NodePool {pool} being amd64-only ({list}): pin them (Phase 4) before widening the pool (Phase 1) goes live, or they may land on arm64 nodes",
            unpinned.len()
        )
    };
    out.finding(Severity::Risk, format!("NodePool {pool}"), msg);
}
