//! The semantics that keep a real cluster safe (issue 8): the widening waits for every pin
//! and is refused while something would float; the baseline stays amd64-only; Argo pins by
//! Argo's own rule; jobs are retagged only onto runners that take them; inherited values
//! cannot undo a pin.

use serde_json::{Value, json};

use super::tests::{after_object, has, render};
use super::*;
use crate::model::fixtures::{self, obj, plan, start};
use crate::model::{Arch, FindingCode, NodePoolView, Status, apply_change};

fn change<'a>(p: &'a PhasePlan, id: &str) -> &'a Change {
    p.changes.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no change {id}:\n{}", render(p)))
}

fn phase(s: &ObservedState, spec: &MigrationPlan, phase: Phase) -> PhasePlan {
    plan_phase(phase, s, spec)
}

fn pool_allows_arm64(s: &ObservedState) -> bool {
    s.node_pools
        .iter()
        .filter(|o| crate::model::kube_id(o).2 == "spot-pool")
        .filter_map(|o| NodePoolView::from_object(o).ok())
        .any(|v| nodepool::allowed_archs(&v.requirements).contains(&Arch::Arm64))
}

/// `serde_json::Value` nulls in `after` where `before` had none: documents must not send
/// `field: null` that the user never wrote.
fn new_nulls(before: &Value, after: &Value, path: &str, found: &mut Vec<String>) {
    match after {
        Value::Null if !before.is_null() => found.push(path.to_string()),
        Value::Object(m) => {
            for (k, v) in m {
                new_nulls(before.get(k).unwrap_or(&Value::Bool(false)), v, &format!("{path}/{k}"), found);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                new_nulls(before.get(i).unwrap_or(&Value::Bool(false)), v, &format!("{path}/{i}"), found);
            }
        }
        _ => {}
    }
}

// ---- The safe order ----

#[test]
fn applied_in_dependency_order_the_pool_never_allows_arm64_while_something_floats() {
    let spec = plan();
    let mut s = start();
    let order: Vec<Change> = super::plan(&s, &spec, "").order().unwrap().into_iter().cloned().collect();
    let mut widened_at = None;
    for (step, c) in order.iter().enumerate() {
        apply_change(&mut s, c).unwrap();
        if !pool_allows_arm64(&s) {
            continue;
        }
        widened_at.get_or_insert(step);
        // Re-planned now, nothing may be left to pin, and the baseline's job pods are pinned.
        let now = plan_all(&s, &spec);
        let workloads = now.iter().find(|p| p.phase == Phase::Workloads).unwrap();
        let floating: Vec<&str> = workloads
            .changes
            .iter()
            .map(|c| c.id.as_str())
            .filter(|id| id.starts_with("argo/") || id.starts_with("cifile/"))
            .collect();
        assert!(floating.is_empty(), "after step {step} ({}) the pool allows arm64 but {floating:?} float", c.id);
        let runners = now.iter().find(|p| p.phase == Phase::Runners).unwrap();
        assert!(runners.has(FindingCode::BaselinePinned), "after step {step} the baseline's job pods are unpinned");
    }
    assert!(widened_at.is_some(), "the plan widens the pool");
}

#[test]
fn the_baseline_job_pods_are_pinned_by_one_toml_edit_before_the_widening() {
    let p = super::plan(&start(), &plan(), "");
    let order: Vec<&str> = p.order().unwrap().iter().map(|c| c.id.as_str()).collect();
    let pin = order.iter().position(|id| *id == "release/gitlab-runner").expect("baseline pin planned");
    assert!(pin < order.iter().position(|id| *id == "nodepool/spot-pool").unwrap());
    let c = p.change(&ChangeId::release("gitlab-runner")).unwrap();
    let WriteMethod::KubeJsonPatch { patch } = &c.method else { panic!("{:?}", c.method) };
    // One guarded replace of the config string, nothing else of the baseline touched.
    let ops: Vec<(&str, &str)> =
        patch.iter().map(|op| (op["op"].as_str().unwrap(), op["path"].as_str().unwrap())).collect();
    assert_eq!(
        ops,
        [("test", "/spec/forProvider/values/runners/config"), ("replace", "/spec/forProvider/values/runners/config")]
    );
    let config = after_object(c).pointer("/spec/forProvider/values/runners/config").unwrap().as_str().unwrap();
    assert!(config.contains("\"kubernetes.io/arch\" = \"amd64\""), "{config}");
    assert_eq!(c.verify, vec![crate::model::Verification::ReleaseReady]);
}

#[test]
fn without_the_baseline_pin_the_widening_is_refused() {
    let mut spec = plan();
    spec.runners.pin_baseline = false;
    let p = phase(&start(), &spec, Phase::NodePool);
    assert!(p.changes.is_empty(), "{}", render(&p));
    assert!(p.risks().any(|f| f.code == FindingCode::NodePoolWidenBlocked), "{}", render(&p));

    // A baseline whose config comes from a `set` entry cannot be pinned in values.
    let mut s = start();
    s.releases[0]["spec"]["forProvider"]["set"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "runners.config", "value": "[[runners]]"}));
    let all = plan_all(&s, &plan());
    assert!(all[1].has(FindingCode::BaselinePinOverridden), "{}", render(&all[1]));
    assert!(all[0].has(FindingCode::NodePoolWidenBlocked) && all[0].changes.is_empty(), "{}", render(&all[0]));
}

#[test]
fn unpinnable_workloads_on_the_pool_block_the_widening_daemonsets_are_reported() {
    let mut s = start();
    s.pool_workloads = vec![
        obj(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: web}\nspec:\n  template:\n    spec:\n      containers: [{name: a, image: x}]\n",
        ),
        obj(
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: backup, namespace: ops}\nspec:\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          nodeSelector: {kubernetes.io/arch: amd64}\n          containers: [{name: a, image: x}]\n",
        ),
        obj(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: fluentbit, namespace: logging}\nspec:\n  template:\n    spec:\n      containers: [{name: a, image: x}]\n",
        ),
    ];
    let all = plan_all(&s, &plan());
    let w = &all[3];
    assert!(has(w, FindingCode::ControllerUnpinned, "Deployment web/api"), "{}", render(w));
    assert!(!has(w, FindingCode::ControllerUnpinned, "CronJob ops/backup"), "pinned CronJob: {}", render(w));
    assert!(has(w, FindingCode::DaemonSetOnArm64, "DaemonSet logging/fluentbit"), "{}", render(w));
    assert!(all[0].has(FindingCode::NodePoolWidenBlocked), "{}", render(&all[0]));
    let blocked = all[0].findings.iter().find(|f| f.code == FindingCode::NodePoolWidenBlocked).unwrap();
    assert!(blocked.message.contains("Deployment web/api") && !blocked.message.contains("DaemonSet"));
    assert!(all[0].changes.is_empty());
}

// ---- Argo: pinned means every pod is pinned ----

fn template(yaml_spec: &str) -> Value {
    obj(&format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: WorkflowTemplate\nmetadata: {{name: t, namespace: ci, resourceVersion: '5'}}\nspec:\n{yaml_spec}"
    ))
}

fn argo_only(s: &mut ObservedState, objs: Vec<Value>) {
    s.argo = objs;
    s.other_projects.clear();
}

#[test]
fn a_template_selector_overrides_the_workflow_pin_so_it_is_pinned_there() {
    let mut s = start();
    argo_only(
        &mut s,
        vec![template(
            "  nodeSelector: {kubernetes.io/arch: amd64}\n  templates:\n  - name: a\n    nodeSelector: {team: data}\n    container: {image: x}\n  - name: b\n    container: {image: y}\n",
        )],
    );
    let p = phase(&s, &plan(), Phase::Workloads);
    assert!(p.has(FindingCode::WorkloadUnpinned), "workflow-level pin is not enough: {}", render(&p));
    let c = change(&p, "argo/WorkflowTemplate/ci/t");
    assert!(matches!(c.method, WriteMethod::KubeJsonPatch { .. }), "templates are edited with a guarded patch");
    assert_eq!(
        after_object(c)["spec"]["templates"][0]["nodeSelector"],
        json!({"team": "data", "kubernetes.io/arch": "amd64"})
    );
    assert!(after_object(c)["spec"]["templates"][1].get("nodeSelector").is_none(), "b inherits the workflow pin");
}

#[test]
fn an_affinity_allowing_both_architectures_is_not_a_pin() {
    let mut s = start();
    argo_only(
        &mut s,
        vec![template(
            "  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions:\n          - {key: kubernetes.io/arch, operator: In, values: [amd64, arm64]}\n  templates:\n  - name: a\n    container: {image: x}\n",
        )],
    );
    let p = phase(&s, &plan(), Phase::Workloads);
    let c = change(&p, "argo/WorkflowTemplate/ci/t");
    assert!(matches!(c.method, WriteMethod::KubeApply { .. }), "only the workflow-level selector: server-side apply");
    assert_eq!(after_object(c)["spec"]["nodeSelector"]["kubernetes.io/arch"], "amd64");
}

#[test]
fn templates_on_another_pool_are_left_alone_and_affinity_pins_are_not_contradicted() {
    let mut s = start();
    let other_pool = template(
        "  nodeSelector: {karpenter.sh/nodepool: graviton-pool}\n  templates:\n  - name: a\n    container: {image: x}\n",
    );
    let mixed = obj(
        "apiVersion: argoproj.io/v1alpha1\nkind: WorkflowTemplate\nmetadata: {name: mixed, namespace: ci}\nspec:\n  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions:\n          - {key: kubernetes.io/arch, operator: In, values: [arm64]}\n  templates:\n  - name: arm\n    container: {image: x}\n  - name: floating\n    affinity: {}\n    container: {image: y}\n",
    );
    argo_only(&mut s, vec![other_pool, mixed]);
    let p = phase(&s, &plan(), Phase::Workloads);
    assert!(has(&p, FindingCode::WorkloadOtherPool, "WorkflowTemplate ci/t"), "{}", render(&p));
    let c = change(&p, "argo/WorkflowTemplate/ci/mixed");
    let after = after_object(c);
    // A workflow-level amd64 selector would make the arm64-affined template unschedulable.
    assert!(after["spec"].get("nodeSelector").is_none(), "{after}");
    assert!(after["spec"]["templates"][0].get("nodeSelector").is_none(), "{after}");
    assert_eq!(after["spec"]["templates"][1]["nodeSelector"]["kubernetes.io/arch"], "amd64");
}

#[test]
fn cluster_workflow_templates_are_pinned_too() {
    let mut s = start();
    argo_only(
        &mut s,
        vec![obj(
            "apiVersion: argoproj.io/v1alpha1\nkind: ClusterWorkflowTemplate\nmetadata: {name: shared, resourceVersion: '3'}\nspec:\n  templates:\n  - name: a\n    container: {image: x}\n",
        )],
    );
    let p = phase(&s, &plan(), Phase::Workloads);
    let c = change(&p, "argo/ClusterWorkflowTemplate/shared");
    let WriteMethod::KubeApply { patch, .. } = &c.method else { panic!("{:?}", c.method) };
    assert!(patch["metadata"].get("namespace").is_none(), "cluster-scoped: {patch}");
    assert_eq!(c.target.to_string(), "ClusterWorkflowTemplate shared");
}

#[test]
fn argo_label_selector_and_exclusions_are_honoured() {
    let mut spec = plan();
    spec.workloads.argo.exclude = vec!["data/etl".into()];
    spec.workloads.gitlab = None;
    let ids: Vec<String> = phase(&start(), &spec, Phase::Workloads).changes.iter().map(|c| c.id.to_string()).collect();
    assert_eq!(ids, ["argo/WorkflowTemplate/ci/build-images", "argo/CronWorkflow/data/nightly-report"]);
    spec.workloads.argo.label_selector = [("team".to_string(), "none".to_string())].into();
    assert!(phase(&start(), &spec, Phase::Workloads).changes.is_empty());
}

// ---- Retag only onto a runner that will take the job ----

#[test]
fn a_paused_amd64_runner_stops_the_retag_of_other_projects() {
    let mut s = start();
    let mut r = fixtures::runner(5, &["sandbox-amd64"], "paused");
    r.paused = true;
    r.run_untagged = false;
    s.runners.push(r);
    let p = phase(&s, &plan(), Phase::Workloads);
    assert!(!p.changes.iter().any(|c| c.id.as_str().starts_with("cifile/")), "{}", render(&p));
    assert!(p.risks().any(|f| f.code == FindingCode::RunnerPaused), "{}", render(&p));
    let pipeline = phase(&s, &plan(), Phase::Pipeline);
    assert!(!pipeline.changes.iter().any(|c| c.id.as_str().starts_with("cifile/")), "{}", render(&pipeline));
}

#[test]
fn the_group_variable_precedes_every_ci_change_that_uses_it() {
    let p = super::plan(&start(), &plan(), "");
    let order: Vec<&str> = p.order().unwrap().iter().map(|c| c.id.as_str()).collect();
    let var = order.iter().position(|id| *id == "group-variable/platform/CICD_TAG_AMD64").unwrap();
    for (i, id) in order.iter().enumerate().filter(|(_, id)| id.starts_with("cifile/platform/")) {
        if !id.contains("kaniko-builder") {
            assert!(var < i, "{id} before the group variable");
        }
    }
}

#[test]
fn plan_validation_keeps_retagged_projects_inside_the_runner_scope() {
    let base = include_str!("../../plans/sandbox.yaml");
    let outside = base.replace("  gitlab:\n    group: platform\n", "  gitlab:\n    group: data\n");
    let e = crate::spec::MigrationPlan::parse(&outside, "p.yaml").unwrap_err();
    assert!(e.message.contains("outside runners.scope"), "{e}");
    assert_eq!(e.line, outside.lines().position(|l| l == "    group: data").unwrap() + 1);
    let project_scope =
        base.replace("    type: group\n    path: platform\n", "    type: project\n    path: platform/kaniko-builder\n");
    let e = crate::spec::MigrationPlan::parse(&project_scope, "p.yaml").unwrap_err();
    assert!(e.message.contains("workloads.gitlab.group"), "{e}");
}

// ---- Inherited values cannot undo the pin ----

#[test]
fn inherited_sets_that_override_the_pin_are_dropped_and_value_sources_flagged() {
    let mut s = start();
    let fp = &mut s.releases[0]["spec"]["forProvider"];
    fp["set"].as_array_mut().unwrap().extend([
        json!({"name": "runners.config", "value": "[[runners]]"}),
        json!({"name": "nodeSelector.kubernetes\\.io/arch", "value": "amd64"}),
        json!({"name": "gitlabUrl", "value": "https://elsewhere"}),
    ]);
    fp["valuesFrom"] = json!([{"configMapKeyRef": {"name": "runner-values", "key": "values.yaml"}}]);
    let p = phase(&s, &plan(), Phase::Runners);
    let rel = after_object(change(&p, "release/gitlab-runner-arm64"));
    let names: Vec<&str> =
        rel["spec"]["forProvider"]["set"].as_array().unwrap().iter().filter_map(|x| x["name"].as_str()).collect();
    assert_eq!(names, ["concurrent"]);
    assert!(p.risks().any(|f| f.code == FindingCode::ReleaseValuesFrom), "{}", render(&p));
}

#[test]
fn identity_and_ownership_are_not_inherited() {
    let mut s = start();
    let b = &mut s.releases[0];
    b["spec"]["writeConnectionSecretToRef"] = json!({"name": "conn", "namespace": "crossplane-system"});
    b["spec"]["forProvider"]["chart"]["url"] = json!("https://charts.example/gitlab-runner-0.77.2.tgz");
    b["spec"]["forProvider"]["values"]["serviceAccount"] = json!({"create": true, "name": "gitlab-runner"});
    b["spec"]["forProvider"]["values"]["rbac"] = json!({"create": true, "serviceAccountName": "gitlab-runner"});
    b["metadata"]["labels"]["app.kubernetes.io/instance"] = json!("ci-runners");
    let p = phase(&s, &plan(), Phase::Runners);
    let rel = after_object(change(&p, "release/gitlab-runner-amd64"));
    assert!(rel["spec"].get("writeConnectionSecretToRef").is_none());
    assert!(rel["spec"]["forProvider"]["chart"].get("url").is_none());
    assert!(rel["spec"]["forProvider"]["values"]["serviceAccount"].get("name").is_none());
    assert!(rel["spec"]["forProvider"]["values"]["rbac"].get("serviceAccountName").is_none());
    assert!(rel["metadata"]["labels"].get("app.kubernetes.io/instance").is_none());
    assert_eq!(rel["metadata"]["labels"]["team"], "platform", "other labels are kept");
    // An existing ServiceAccount (create: false) can be shared.
    s.releases[0]["spec"]["forProvider"]["values"]["serviceAccount"] = json!({"create": false, "name": "shared"});
    let p = phase(&s, &plan(), Phase::Runners);
    let rel = after_object(change(&p, "release/gitlab-runner-amd64"));
    assert_eq!(rel["spec"]["forProvider"]["values"]["serviceAccount"]["name"], "shared");
}

#[test]
fn manager_placement_is_checked_on_the_merged_selector_and_can_be_amd64() {
    let mut s = start();
    s.node_pools[1] = fixtures::system_pool("[amd64]");
    let p = phase(&s, &plan(), Phase::Runners);
    assert!(has(&p, FindingCode::ReleaseManagerUnschedulable, "Release gitlab-runner-arm64"), "{}", render(&p));
    let mut spec = plan();
    spec.runners.manager_arch = crate::spec::ManagerArch::Amd64;
    let p = phase(&s, &spec, Phase::Runners);
    assert!(!p.has(FindingCode::ReleaseManagerUnschedulable), "{}", render(&p));
    let rel = after_object(change(&p, "release/gitlab-runner-arm64"));
    assert_eq!(rel["spec"]["forProvider"]["values"]["nodeSelector"]["kubernetes.io/arch"], "amd64");
    let config = rel.pointer("/spec/forProvider/values/runners/config").unwrap().as_str().unwrap();
    assert!(config.contains("\"kubernetes.io/arch\" = \"arm64\""), "jobs still arm64: {config}");
}

#[test]
fn job_pods_no_pool_can_host_even_widened_are_a_risk() {
    let mut spec = plan();
    spec.runners.job_node_selector = [("karpenter.sh/nodepool".to_string(), "gpu-pool".to_string())].into();
    let p = phase(&start(), &spec, Phase::Runners);
    assert!(has(&p, FindingCode::ReleaseJobsUnschedulable, "Release gitlab-runner-arm64"), "{}", render(&p));
    assert!(!phase(&start(), &plan(), Phase::Runners).has(FindingCode::ReleaseJobsUnschedulable));
}

#[test]
fn config_for_another_architecture_is_flagged_for_the_arm64_release() {
    let mut s = start();
    let config = s.releases[0]["spec"]["forProvider"]["values"]["runners"]["config"].as_str().unwrap().replace(
        "privileged = false",
        "privileged = false\n    helper_image = \"registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v17.11.0\"",
    );
    s.releases[0]["spec"]["forProvider"]["values"]["runners"]["config"] = json!(config);
    let p = phase(&s, &plan(), Phase::Runners);
    assert!(has(&p, FindingCode::ReleaseArchSpecificConfig, "Release gitlab-runner-arm64"), "{}", render(&p));
    assert!(!has(&p, FindingCode::ReleaseArchSpecificConfig, "Release gitlab-runner-amd64"), "{}", render(&p));
}

#[test]
fn the_runner_namespace_defaults_to_the_baselines_and_a_difference_is_reported() {
    let mut s = start();
    s.releases[0]["spec"]["forProvider"]["namespace"] = json!("runners");
    let mut spec = plan();
    spec.runners.namespace = None;
    let p = phase(&s, &spec, Phase::Runners);
    assert!(p.changes.iter().any(|c| c.id == "secret/runners/gitlab-runner-arm64-token"), "{}", render(&p));
    spec.runners.namespace = Some("ci".into());
    assert!(phase(&s, &spec, Phase::Runners).has(FindingCode::ReleaseNamespaceDiffers));
}

#[test]
fn documents_sent_carry_no_nulls_the_user_never_wrote() {
    let mut s = start();
    s.releases[0]["spec"]["forProvider"].as_object_mut().unwrap().remove("set");
    for p in plan_all(&s, &plan()) {
        for c in &p.changes {
            let Some(after) = c.after_object() else { continue };
            let before = c.before.as_ref().and_then(|d| d.as_object()).cloned().unwrap_or(Value::Null);
            let mut nulls = Vec::new();
            new_nulls(&before, after, "", &mut nulls);
            assert!(nulls.is_empty(), "{} sends nulls at {nulls:?}", c.id);
        }
    }
}

#[test]
fn a_runner_scope_without_a_known_id_is_a_risk_not_a_path_in_the_body() {
    let mut s = start();
    s.endpoints.gitlab.as_mut().unwrap().ids.clear();
    let p = phase(&s, &plan(), Phase::Runners);
    assert!(!p.changes.iter().any(|c| c.id == "runner/sandbox-arm64"), "{}", render(&p));
    assert!(p.risks().any(|f| f.code == FindingCode::RunnerScopeIdUnknown), "{}", render(&p));
}

// ---- Phases 1 and 4, scope ----

#[test]
fn requirements_that_exclude_graviton_are_flagged() {
    for (req, impossible) in [
        ("      - {key: karpenter.k8s.aws/instance-cpu-manufacturer, operator: In, values: [intel, amd]}", true),
        ("      - {key: karpenter.k8s.aws/instance-family, operator: In, values: [m5, c5, r6i]}", true),
        ("      - {key: node.kubernetes.io/instance-type, operator: In, values: [m5.large, c5.xlarge]}", true),
        ("      - {key: karpenter.k8s.aws/instance-family, operator: In, values: [m5, m7g, c6gn]}", false),
        ("      - {key: karpenter.k8s.aws/instance-category, operator: In, values: [c, m, r]}", false),
    ] {
        let mut s = start();
        s.node_pools[0] = fixtures::spot_pool(&format!("{}\n{req}", fixtures::AMD64_ONLY));
        let p = phase(&s, &plan(), Phase::NodePool);
        assert_eq!(p.has(FindingCode::NodePoolArm64Impossible), impossible, "{req}:\n{}", render(&p));
    }
}

#[test]
fn min_values_survive_a_merge_and_the_pools_own_api_version_is_targeted() {
    let mut s = start();
    s.node_pools[0] = fixtures::spot_pool(
        "      - {key: kubernetes.io/arch, operator: In, values: [amd64], minValues: 1}\n      - {key: kubernetes.io/arch, operator: NotIn, values: [arm64]}",
    );
    s.node_pools[0]["apiVersion"] = json!("karpenter.sh/v1beta1");
    let p = phase(&s, &plan(), Phase::NodePool);
    let c = change(&p, "nodepool/spot-pool");
    let reqs = super::tests::arch_requirements(after_object(c));
    assert_eq!(reqs[0].min_values, Some(1));
    assert!(p.has(FindingCode::NodePoolMinValuesMerged));
    assert!(
        matches!(&c.target, crate::model::ObjectRef::Kube { api_version, .. } if api_version == "karpenter.sh/v1beta1")
    );
}

#[test]
fn ci_files_with_includes_get_default_tags_that_reach_included_jobs() {
    let mut s = start();
    s.other_projects[0].file = Some(fixtures::ci_file(
        "platform/docs",
        "include:\n  - project: platform/templates\n    file: /build.yml\n\npages:\n  script: [make html]\n",
    ));
    let p = phase(&s, &plan(), Phase::Workloads);
    let text = super::tests::after_text(change(&p, "cifile/platform/docs/.gitlab-ci.yml"));
    assert!(text.contains("default:\n  tags: [$CICD_TAG_AMD64]\n"), "{text}");
    let uncovered = |target: &str| super::tests::has(&p, FindingCode::CiFileIncludesUncovered, target);
    assert!(!uncovered("platform/docs:.gitlab-ci.yml@main"), "{}", render(&p));
    // terraform's jobs extend a template of its local include, which was read: they are
    // tagged, and the include defines no job to cover.
    assert!(!uncovered("platform/terraform:.gitlab-ci.yml@main"), "{}", render(&p));
    let text = super::tests::after_text(change(&p, "cifile/platform/terraform/.gitlab-ci.yml"));
    assert!(text.contains("plan:\n  extends: .tf\n  script: [terraform plan]\n"), "{text}");
    assert!(text.contains("default:\n  tags: [$CICD_TAG_AMD64]\n"), "{text}");
    // Without the included file's content, nothing can be proved there: reported.
    s.other_projects[2].includes = None;
    let p = phase(&s, &plan(), Phase::Workloads);
    assert!(super::tests::has(&p, FindingCode::CiFileIncludesUncovered, "platform/terraform:.gitlab-ci.yml@main"));
    assert!(p.changes.iter().all(|c| c.id.as_str() != "cifile/platform/terraform/.gitlab-ci.yml"));
}

#[test]
fn objects_a_reconciler_owns_are_reported_on_their_change() {
    let mut s = start();
    s.node_pools[0]["metadata"]["labels"] = json!({"argocd.argoproj.io/instance": "karpenter-pools"});
    s.argo[0]["metadata"]["managedFields"] =
        json!([{"manager": "kustomize-controller", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {}}]);
    let all = plan_all(&s, &plan());
    let f = all[0].findings.iter().find(|f| f.code == FindingCode::Reconciled).expect("NodePool reconciled");
    assert_eq!((f.status, f.change.as_ref().map(|c| c.as_str())), (Status::Risk, Some("nodepool/spot-pool")));
    assert!(f.message.contains("Argo CD application karpenter-pools"), "{}", f.message);
    let argo = all[3].findings.iter().find(|f| f.code == FindingCode::Reconciled).expect("template reconciled");
    assert!(argo.message.contains("kustomize-controller"), "{}", argo.message);
}

// ---- Plan format additions ----

#[test]
fn extra_tags_access_level_and_timeout_reach_new_and_existing_runners() {
    let mut spec = plan();
    spec.runners.extra_tags = vec!["docker".into()];
    spec.runners.access_level = Some(crate::spec::AccessLevel::RefProtected);
    spec.runners.maximum_timeout = Some(3600);
    let p = phase(&start(), &spec, Phase::Runners);
    let body = after_object(change(&p, "runner/sandbox-arm64"));
    assert_eq!(body["tag_list"], json!(["sandbox-arm64", "docker"]));
    assert_eq!((body["access_level"].clone(), body["maximum_timeout"].clone()), (json!("ref_protected"), json!(3600)));

    let mut s = start();
    let mut r = fixtures::runner(9, &["sandbox-arm64"], "online");
    r.run_untagged = false;
    r.manager_architectures = vec!["arm64".into()];
    s.runners.push(r);
    let p = phase(&s, &spec, Phase::Runners);
    let update = after_object(change(&p, "runner/sandbox-arm64"));
    assert_eq!(update["tag_list"], json!(["sandbox-arm64", "docker"]));
    assert_eq!(update["access_level"], json!("ref_protected"));
    let mut s2 = s.clone();
    apply_change(&mut s2, change(&p, "runner/sandbox-arm64")).unwrap();
    assert!(!phase(&s2, &spec, Phase::Runners).changes.iter().any(|c| c.id == "runner/sandbox-arm64"), "idempotent");
}

#[test]
fn externally_managed_token_secrets_are_checked_never_written() {
    let mut spec = plan();
    spec.runners.token_secrets = crate::spec::TokenSecrets::External;
    let p = phase(&start(), &spec, Phase::Runners);
    assert!(
        !p.changes.iter().any(|c| c.id.as_str().starts_with("runner/") || c.id.as_str().starts_with("secret/")),
        "{}",
        render(&p)
    );
    assert!(p.has(FindingCode::RunnerExternalMissing) && p.has(FindingCode::SecretExternalMissing), "{}", render(&p));
    // The Releases mount a Secret the store has not provided, for a runner nobody created:
    // blocked, naming what they wait for, never planned as if it were there.
    assert!(!p.changes.iter().any(|c| c.id.as_str().starts_with("release/gitlab-runner-")), "{}", render(&p));
    let blocked = p.blocked.iter().find(|b| b.id == "release/gitlab-runner-arm64").expect("blocked");
    assert!(blocked.reason.contains("needs runner/sandbox-arm64, which was refused"), "{}", blocked.reason);
    assert!(blocked.change.is_some(), "the blocked Release keeps its planned diff for review");
}

#[test]
fn per_architecture_selector_tolerations_and_values_reach_one_release() {
    let text = include_str!("../../plans/sandbox.yaml").replace(
        "  releasePrefix: gitlab-runner\n",
        "  releasePrefix: gitlab-runner\n  perArch:\n    arm64:\n      jobNodeSelector: {node.kubernetes.io/lifecycle: spot}\n      jobTolerations: {\"kubernetes.io/arch=arm64\": NoSchedule}\n      values:\n        resources: {limits: {memory: 256Mi}}\n",
    );
    let spec = crate::spec::MigrationPlan::parse(&text, "p.yaml").unwrap();
    let p = phase(&start(), &spec, Phase::Runners);
    let arm = after_object(change(&p, "release/gitlab-runner-arm64"));
    let amd = after_object(change(&p, "release/gitlab-runner-amd64"));
    let config = arm.pointer("/spec/forProvider/values/runners/config").unwrap().as_str().unwrap();
    assert!(config.contains("[runners.kubernetes.node_tolerations]"), "{config}");
    assert!(config.contains("\"kubernetes.io/arch=arm64\" = \"NoSchedule\""), "{config}");
    assert!(config.contains("\"node.kubernetes.io/lifecycle\" = \"spot\""), "{config}");
    assert_eq!(arm.pointer("/spec/forProvider/values/resources/limits/memory"), Some(&json!("256Mi")));
    assert_eq!(arm.pointer("/spec/forProvider/values/rbac/create"), Some(&json!(true)), "deep merge keeps the rest");
    let amd_config = amd.pointer("/spec/forProvider/values/runners/config").unwrap().as_str().unwrap();
    assert!(!amd_config.contains("node_tolerations") && amd.pointer("/spec/forProvider/values/resources").is_none());
}

#[test]
fn group_level_tag_variables_live_in_the_pipeline_projects_group_once() {
    let mut spec = plan();
    spec.pipeline.variables.level = crate::spec::VariableLevel::Group;
    let p = super::plan(&start(), &spec, "");
    p.check_graph().expect("no duplicate group variable change");
    let ids: Vec<&str> = p.changes().map(|c| c.id.as_str()).filter(|id| id.contains("CICD_TAG")).collect();
    assert_eq!(ids, ["group-variable/platform/CICD_TAG_AMD64", "group-variable/platform/CICD_TAG_ARM64"]);
    let ci = p.change(&ChangeId::ci_file("platform/kaniko-builder", ".gitlab-ci.yml")).unwrap();
    assert!(ci.depends_on.contains(&ChangeId::group_variable("platform", "CICD_TAG_ARM64")));
}

#[test]
fn wait_limits_have_defaults_and_can_be_set() {
    let spec = plan();
    assert_eq!((spec.waits.release_ready, spec.waits.runner_online, spec.waits.pipeline), (600, 600, 3600));
    let text = format!("{}waits:\n  runnerOnline: 900\n", include_str!("../../plans/sandbox.yaml"));
    let spec = crate::spec::MigrationPlan::parse(&text, "p.yaml").unwrap();
    assert_eq!((spec.waits.runner_online, spec.waits.pipeline), (900, 3600));
}

#[test]
fn a_ready_release_on_another_chart_version_is_reported() {
    let spec = plan();
    let mut s = start();
    for c in super::plan(&s.clone(), &spec, "").order().unwrap() {
        apply_change(&mut s, c).unwrap();
    }
    let deployed = |s: &mut ObservedState, version: &str| {
        for r in s.releases.iter_mut() {
            r["status"] =
                json!({"atProvider": {"version": version}, "conditions": [{"type": "Ready", "status": "True"}]});
        }
    };
    deployed(&mut s, "0.77.2");
    let p = phase(&s, &spec, Phase::Runners);
    assert!(p.has(FindingCode::ReleaseVersionMismatch) && !p.has(FindingCode::ReleaseReady), "{}", render(&p));
    deployed(&mut s, "0.78.1");
    let p = phase(&s, &spec, Phase::Runners);
    assert!(p.has(FindingCode::ReleaseReady) && !p.has(FindingCode::ReleaseVersionMismatch), "{}", render(&p));
}

#[test]
fn an_offline_runner_behind_a_ready_release_stops_the_retag() {
    let spec = plan();
    let mut s = start();
    for c in super::plan(&s.clone(), &spec, "").order().unwrap() {
        if c.phase == Phase::Runners {
            apply_change(&mut s, c).unwrap();
        }
    }
    for r in s.releases.iter_mut() {
        r["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}]});
    }
    // The new runners exist but never contacted GitLab.
    let p = phase(&s, &spec, Phase::Pipeline);
    assert!(!p.changes.iter().any(|c| c.id.as_str().starts_with("cifile/")), "{}", render(&p));
    assert!(p.risks().any(|f| f.code == FindingCode::RunnerPaused && f.message.contains("does not reach GitLab")));
    for r in s.runners.iter_mut() {
        r.status = "online".into();
    }
    assert!(phase(&s, &spec, Phase::Pipeline).changes.iter().any(|c| c.id.as_str().starts_with("cifile/")));
}

#[test]
fn a_runner_whose_release_became_ready_moments_ago_is_starting_and_waited_for_not_a_risk() {
    let spec = plan();
    let mut s = start();
    for c in super::plan(&s.clone(), &spec, "").order().unwrap() {
        if c.phase == Phase::Runners {
            apply_change(&mut s, c).unwrap();
        }
    }
    s.observed_at = Some("2026-12-05T12:10:00Z".into());
    let ready_at = |s: &mut crate::model::ObservedState, at: &str| {
        for r in s.releases.iter_mut() {
            r["status"] = json!({"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": at}]});
        }
    };
    // Ready 30 s ago, within waits.runnerOnline (600 s): a run stopped right after creating it.
    ready_at(&mut s, "2026-12-05T12:09:30Z");
    let p = phase(&s, &spec, Phase::Pipeline);
    assert!(!p.risks().any(|f| f.code == FindingCode::RunnerPaused), "{}", render(&p));
    let ci = p.changes.iter().find(|c| c.id.as_str().starts_with("cifile/")).expect("the retag is planned");
    assert!(
        ci.waits_for.iter().any(|w| matches!(w, Verification::RunnerOnline { architecture: Arch::Arm64, .. })),
        "and waits for the runner before it writes: {:?}",
        ci.waits_for
    );
    // Ready for an hour and still never contacted: its manager does not reach GitLab.
    ready_at(&mut s, "2026-12-05T11:10:00Z");
    let p = phase(&s, &spec, Phase::Pipeline);
    assert!(
        p.risks().any(|f| f.code == FindingCode::RunnerPaused && f.message.contains("for 3600 s")),
        "{}",
        render(&p)
    );
}
