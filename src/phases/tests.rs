use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::diff::{DiffOptions, change_diff};
use crate::model::fixtures::{self, AMD64_ONLY, obj, plan, start};
use crate::model::{
    Action, ChangeId, Document, Finding, FindingCode, NodePoolView, ObjectRef, Requirement, Status, apply_change,
};

/// Applies every change of the plan in dependency order, as the real APIs would.
pub(super) fn converge(state: &mut ObservedState, spec: &MigrationPlan) {
    let plan = super::plan(state, spec, "");
    for change in plan.order().expect("an acyclic plan") {
        apply_change(state, change).unwrap_or_else(|e| panic!("{}: {e}", change.id));
    }
}

pub(super) fn render(p: &PhasePlan) -> String {
    let mut out = String::new();
    for c in &p.changes {
        out.push_str(&format!("{} {} [{}]: {}\n", c.action, c.target, c.id, c.summary));
    }
    for f in &p.findings {
        out.push_str(&format!("{} {}: {}\n", f.status, f.code, f.headline()));
    }
    out
}

/// Whether `p` has a finding with this code about the object displayed as `target`.
pub(super) fn has(p: &PhasePlan, code: FindingCode, target: &str) -> bool {
    p.findings.iter().any(|f| f.code == code && f.target.as_ref().map(|t| t.to_string()).as_deref() == Some(target))
}

pub(super) fn arch_requirements(obj: &serde_json::Value) -> Vec<Requirement> {
    NodePoolView::from_object(obj).unwrap().arch_requirements().map(|(_, r)| r.clone()).collect()
}

pub(super) fn after_object(c: &Change) -> &serde_json::Value {
    match &c.after {
        Some(Document::Object(v)) => v,
        other => panic!("{}: expected an object, got {other:?}", c.id),
    }
}

pub(super) fn after_text(c: &Change) -> &str {
    match &c.after {
        Some(Document::Text(t)) => t,
        other => panic!("{}: expected text, got {other:?}", c.id),
    }
}

// ---- Phase 1 ----

#[test]
fn nodepool_amd64_only_is_widened_in_place() {
    let p = plan_phase(Phase::NodePool, &start(), &plan());
    assert_eq!(p.changes.len(), 1);
    let c = &p.changes[0];
    assert_eq!(c.action, Action::Update);
    assert_eq!(c.precondition, Precondition::ResourceVersion { resource_version: "1001".into() });
    let reqs = arch_requirements(after_object(c));
    assert_eq!(
        reqs,
        vec![Requirement {
            key: "kubernetes.io/arch".into(),
            operator: "In".into(),
            values: vec!["amd64".into(), "arm64".into()],
            min_values: None
        }]
    );
    // The other requirements keep their place.
    let all = NodePoolView::from_object(after_object(c)).unwrap().requirements;
    assert_eq!(
        all.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        ["karpenter.sh/capacity-type", "kubernetes.io/arch", "kubernetes.io/os"]
    );
    assert_eq!(p.risks().count(), 0, "{}", render(&p));
    insta::assert_snapshot!(change_diff(c, DiffOptions::default()).to_string());
}

#[test]
fn nodepool_notin_arm64_is_replaced_by_an_explicit_in_and_reported() {
    let mut s = start();
    s.node_pools =
        vec![fixtures::spot_pool("      - key: kubernetes.io/arch\n        operator: NotIn\n        values: [arm64]")];
    let p = plan_phase(Phase::NodePool, &s, &plan());
    let reqs = arch_requirements(after_object(&p.changes[0]));
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        (reqs[0].operator.as_str(), reqs[0].values.clone()),
        ("In", vec!["amd64".to_string(), "arm64".to_string()])
    );
    let risk = p.risks().next().expect("a risk finding");
    assert_eq!(risk.code, FindingCode::NodePoolArchRewritten);
    assert_eq!(risk.change.as_ref().map(ChangeId::as_str), Some("nodepool/spot-pool"));
}

#[test]
fn nodepool_duplicate_arch_requirements_are_merged() {
    let mut s = start();
    let dup =
        format!("{AMD64_ONLY}\n      - key: kubernetes.io/arch\n        operator: In\n        values: [amd64, arm64]");
    s.node_pools = vec![fixtures::spot_pool(&dup)];
    let p = plan_phase(Phase::NodePool, &s, &plan());
    let reqs = arch_requirements(after_object(&p.changes[0]));
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].values, ["amd64", "arm64"]);
    assert!(p.risks().any(|f| f.code == FindingCode::NodePoolArchRewritten), "{}", render(&p));
}

#[test]
fn nodepool_without_arch_requirement_or_already_wide_needs_nothing() {
    let mut s = start();
    s.node_pools = vec![fixtures::spot_pool("      - key: kubernetes.io/hostname\n        operator: Exists")];
    let p = plan_phase(Phase::NodePool, &s, &plan());
    assert!(p.changes.is_empty());
    assert!(
        p.findings.iter().any(|f| f.status == Status::Done && f.code == FindingCode::NodePoolAllows),
        "{}",
        render(&p)
    );

    s.node_pools = vec![fixtures::spot_pool(
        "      - key: kubernetes.io/arch\n        operator: In\n        values: [arm64, amd64]",
    )];
    assert!(plan_phase(Phase::NodePool, &s, &plan()).changes.is_empty());
}

#[test]
fn nodepool_x86_64_is_not_amd64_to_karpenter() {
    let mut s = start();
    s.node_pools =
        vec![fixtures::spot_pool("      - key: kubernetes.io/arch\n        operator: In\n        values: [x86_64]")];
    let p = plan_phase(Phase::NodePool, &s, &plan());
    let reqs = arch_requirements(after_object(&p.changes[0]));
    assert_eq!(reqs[0].values, ["x86_64", "amd64", "arm64"]);
}

#[test]
fn nodepool_flags_a_node_class_without_arm64_amis_and_a_missing_pool() {
    let mut s = start();
    s.node_classes = vec![fixtures::node_class(&["amd64"])];
    let p = plan_phase(Phase::NodePool, &s, &plan());
    assert!(
        has(&p, FindingCode::NodeClassNoAmi, "EC2NodeClass default")
            && p.risks().any(|f| f.code == FindingCode::NodeClassNoAmi),
        "{}",
        render(&p)
    );

    s.node_pools.clear();
    let p = plan_phase(Phase::NodePool, &s, &plan());
    assert!(p.changes.is_empty());
    assert!(p.risks().any(|f| f.code == FindingCode::NodePoolNotFound), "{}", render(&p));
}

// ---- Phase 2 ----

#[test]
fn runners_from_amd64_only_create_runner_secret_and_release_per_arch() {
    let p = plan_phase(Phase::Runners, &start(), &plan());
    let ids: Vec<(&str, Action)> = p.changes.iter().map(|c| (c.id.as_str(), c.action)).collect();
    assert_eq!(
        ids,
        [
            ("release/gitlab-runner", Action::Update),
            ("runner/sandbox-amd64", Action::Create),
            ("secret/gitlab-runner/gitlab-runner-amd64-token", Action::Create),
            ("release/gitlab-runner-amd64", Action::Create),
            ("runner/sandbox-arm64", Action::Create),
            ("secret/gitlab-runner/gitlab-runner-arm64-token", Action::Create),
            ("release/gitlab-runner-arm64", Action::Create),
        ]
    );
    let runner = after_object(&p.changes[4]);
    assert_eq!(runner["tag_list"], json!(["sandbox-arm64"]));
    assert_eq!(runner["run_untagged"], json!(false));
    assert_eq!(runner["group_id"], json!(42), "POST /user/runners takes the group's integer id");

    let rel = after_object(&p.changes[6]);
    let values = &rel["spec"]["forProvider"]["values"];
    assert_eq!(values["nodeSelector"]["kubernetes.io/arch"], "arm64");
    assert_eq!(values["nodeSelector"]["karpenter.sh/nodepool"], "system-pool");
    assert_eq!(values["runners"]["secret"], "gitlab-runner-arm64-token");
    assert!(values["runners"].get("tags").is_none(), "tags live in GitLab with glrt- tokens");
    let config = values["runners"]["config"].as_str().unwrap();
    assert!(config.contains("\"kubernetes.io/arch\" = \"arm64\""), "{config}");
    assert!(config.contains("\"karpenter.sh/do-not-evict\" = \"true\""), "inherited config kept: {config}");
    assert!(config.contains("\"karpenter.sh/do-not-disrupt\" = \"true\""), "the v1 annotation is added: {config}");
    assert!(config.contains("\"karpenter.sh/nodepool\" = \"spot-pool\""), "job placement inherited: {config}");
    assert_eq!(rel["spec"]["forProvider"]["chart"]["version"], "0.78.1");
    assert_eq!(rel["spec"]["providerConfigRef"]["name"], "helm-provider");
    assert!(rel["metadata"].get("annotations").is_none(), "external-name must not be inherited");
    assert!(rel.get("status").is_none());
    let sets = rel["spec"]["forProvider"]["set"].as_array().unwrap();
    assert_eq!(sets.len(), 1, "runnerToken set entry is not inherited: {sets:?}");
    assert_eq!(sets[0]["name"], "concurrent");
    assert!(p.has(FindingCode::ReleaseNotInherited) && p.has(FindingCode::ReleaseDoNotDisrupt), "{}", render(&p));
    insta::assert_snapshot!(change_diff(&p.changes[6], DiffOptions::default()).to_string());
}

#[test]
fn a_manager_no_pool_can_host_is_a_risk() {
    let p = plan_phase(Phase::Runners, &start(), &plan());
    assert!(!p.has(FindingCode::ReleaseManagerUnschedulable), "{}", render(&p));
    let mut s = start();
    s.node_pools[1] = fixtures::system_pool("[amd64]");
    let p = plan_phase(Phase::Runners, &s, &plan());
    let risks: Vec<String> = p
        .risks()
        .filter(|f| f.code == FindingCode::ReleaseManagerUnschedulable)
        .filter_map(|f| f.target.as_ref().map(|t| t.to_string()))
        .collect();
    assert_eq!(risks, ["Release gitlab-runner-arm64"], "{}", render(&p));
}

#[test]
fn runner_token_secret_is_masked_in_diffs() {
    let p = plan_phase(Phase::Runners, &start(), &plan());
    let secret = p.changes.iter().find(|c| c.id == "secret/gitlab-runner/gitlab-runner-amd64-token").unwrap();
    let d = change_diff(secret, DiffOptions::default()).to_string();
    assert!(d.contains("runner-registration-token: (sensitive)"), "{d}");
    assert!(d.contains("runner-token: (token of runner sandbox-amd64, from GitLab at apply time)"), "{d}");
}

#[test]
fn arm64_runner_with_the_wrong_tag_is_retagged() {
    let mut s = start();
    let mut r = fixtures::runner(7, &["sandbox-amd64"], "online");
    r.description = "sandbox-arm64".into();
    r.manager_architectures = vec!["arm64".into()];
    s.runners.push(r);
    s.secrets.push(crate::model::SecretMeta {
        namespace: "gitlab-runner".into(),
        name: "gitlab-runner-arm64-token".into(),
        keys: vec!["runner-registration-token".into(), "runner-token".into()],
        resource_version: "11".into(),
    });
    let p = plan_phase(Phase::Runners, &s, &plan());
    // sandbox-amd64 is carried by runner 7 too: the amd64 side sees it as its runner as well.
    let arm = p.changes.iter().find(|c| c.id == "runner/sandbox-arm64").expect("arm64 runner update");
    assert_eq!(arm.action, Action::Update);
    assert_eq!(after_object(arm)["tag_list"], json!(["sandbox-arm64"]));
    assert_eq!(after_object(arm)["run_untagged"], json!(false));
    assert_eq!(
        arm.precondition,
        Precondition::RunnerTags { tag_list: vec!["sandbox-amd64".into()], run_untagged: true }
    );
    assert!(!p.changes.iter().any(|c| c.id == "runner/sandbox-arm64" && c.action == Action::Create));
}

#[test]
fn existing_runner_without_its_token_secret_gets_a_token_reset() {
    let mut s = start();
    s.runners.push(fixtures::runner(8, &["sandbox-arm64"], "never_contacted"));
    let p = plan_phase(Phase::Runners, &s, &plan());
    let reset = p.changes.iter().find(|c| c.id == "runner-token/sandbox-arm64").expect("token reset");
    assert_eq!(reset.target, ObjectRef::RunnerToken { tag: "sandbox-arm64".into(), id: 8 });
    assert!(
        p.changes
            .iter()
            .any(|c| c.id == "secret/gitlab-runner/gitlab-runner-arm64-token" && c.action == Action::Create)
    );
    // It never contacted GitLab: no manager uses the old token, so the reset stops nothing.
    assert!(
        p.findings.iter().any(|f| f.code == FindingCode::RunnerTokenReset && f.status == Status::Pending),
        "{}",
        render(&p)
    );
    // One that is online has a manager the reset stops: a risk.
    let mut online = s.clone();
    online.runners.last_mut().unwrap().status = "online".into();
    let p = plan_phase(Phase::Runners, &online, &plan());
    assert!(p.risks().any(|f| f.code == FindingCode::RunnerTokenReset), "{}", render(&p));
}

#[test]
fn not_plain_toml_runner_config_is_a_risk_not_a_guess() {
    let mut s = start();
    s.releases[0]["spec"]["forProvider"]["values"]["runners"]["config"] =
        json!("{{- if .Values.x }}\n[[runners]]\n{{- end }}\n");
    let p = plan_phase(Phase::Runners, &s, &plan());
    assert!(!p.changes.iter().any(|c| c.id.as_str().starts_with("release/")), "{}", render(&p));
    assert!(p.risks().any(|f| f.code == FindingCode::ReleaseValuesUnusable), "{}", render(&p));
}

#[test]
fn missing_baseline_is_a_risk_but_releases_are_still_planned_from_defaults() {
    let mut s = start();
    s.releases.clear();
    let p = plan_phase(Phase::Runners, &s, &plan());
    assert!(p.risks().any(|f| f.code == FindingCode::BaselineNotFound), "{}", render(&p));
    let rel = p.changes.iter().find(|c| c.id == "release/gitlab-runner-arm64").unwrap();
    let v = &after_object(rel)["spec"]["forProvider"]["values"];
    assert_eq!(v["gitlabUrl"], "https://gitlab.sandbox.test");
    assert!(v["runners"]["config"].as_str().unwrap().contains("[runners.kubernetes.node_selector]"));
}

#[test]
fn job_node_selector_edit_keeps_comments_and_is_idempotent() {
    let cfg = "# managed by platform\n[[runners]]\n  [runners.kubernetes]\n    image = \"alpine\" # default image\n";
    let sel = [("kubernetes.io/arch".to_string(), "arm64".to_string())].into();
    let once = runners::pin_job_node_selector(cfg, &sel, &Default::default()).unwrap();
    assert!(once.starts_with("# managed by platform\n"), "{once}");
    assert!(once.contains("image = \"alpine\" # default image"), "{once}");
    assert!(once.contains("\"kubernetes.io/arch\" = \"arm64\""), "{once}");
    assert_eq!(runners::pin_job_node_selector(&once, &sel, &Default::default()).unwrap(), once);
}

// ---- Phase 3 ----

#[test]
fn pipeline_creates_variables_and_tags_build_jobs() {
    let p = pipeline::plan(&start(), &plan());
    let vars: Vec<&Change> = p.changes.iter().filter(|c| c.id.as_str().starts_with("variable/")).collect();
    assert_eq!(vars.len(), 2);
    let arm = after_object(vars[1]);
    assert_eq!((arm["key"].as_str(), arm["value"].as_str()), (Some("CICD_TAG_ARM64"), Some("sandbox-arm64")));
    assert_eq!(
        (arm["protected"].as_bool(), arm["masked"].as_bool(), arm["raw"].as_bool()),
        (Some(false), Some(false), Some(true))
    );

    let file = p.changes.iter().find(|c| c.id.as_str().starts_with("cifile/")).unwrap();
    assert_eq!(
        file.target,
        ObjectRef::CiFile {
            project: "platform/kaniko-builder".into(),
            path: ".gitlab-ci.yml".into(),
            branch: "archshift/multiarch-runners".into()
        }
    );
    assert_eq!(file.precondition, Precondition::LastCommit { last_commit_id: "c0ffee".into() });
    insta::assert_snapshot!(change_diff(file, DiffOptions::default()).to_string());
}

#[test]
fn protected_variable_is_fixed_and_explained() {
    let mut s = start();
    let mut v = fixtures::variable("CICD_TAG_ARM64", "sandbox-arm64");
    v.protected = true;
    s.project_variables = vec![fixtures::variable("CICD_TAG_AMD64", "sandbox-amd64"), v];
    let p = pipeline::plan(&s, &plan());
    let c = p.changes.iter().find(|c| c.id == "variable/platform/kaniko-builder/CICD_TAG_ARM64").unwrap();
    assert_eq!(c.action, Action::Update);
    assert!(c.summary.contains("protected"), "{}", c.summary);
    assert!(!p.changes.iter().any(|c| c.id == "variable/platform/kaniko-builder/CICD_TAG_AMD64"));
}

#[test]
fn masked_variable_value_never_reaches_the_diff() {
    let mut s = start();
    let mut v = fixtures::variable("CICD_TAG_ARM64", "unused");
    v.masked = true;
    v.value = None; // the adapter drops masked values
    s.project_variables = vec![v];
    let p = pipeline::plan(&s, &plan());
    let c = p.changes.iter().find(|c| c.id == "variable/platform/kaniko-builder/CICD_TAG_ARM64").unwrap();
    assert_eq!(c.precondition, Precondition::VariableValue { value: None, protected: false });
    let d = change_diff(c, DiffOptions::default()).to_string();
    assert!(d.contains("masked: true"), "{d}");
}

#[test]
fn a_repeated_key_in_the_ci_file_is_a_risk_and_the_last_definition_is_tagged() {
    let mut s = start();
    let ci = "build_arm64:\n  script: [old]\nbuild_amd64:\n  script: [b]\nbuild_arm64:\n  script: [new]\n";
    s.ci_file = Some(fixtures::ci_file("platform/kaniko-builder", ci));
    let p = pipeline::plan(&s, &plan());
    let repeated: Vec<&Finding> = p.findings.iter().filter(|f| f.code == FindingCode::CiFileRepeatedKey).collect();
    assert_eq!(repeated.len(), 1, "{}", render(&p));
    assert_eq!(repeated[0].status, Status::Risk);
    assert!(repeated[0].message.starts_with("line 5, column 1: key build_arm64 repeats"), "{}", repeated[0].message);
    let change = p.changes.iter().find(|c| c.id.as_str().starts_with("cifile/")).expect("the file is rewritten");
    let Some(Document::Text(after)) = &change.after else { panic!("{:?}", change.after) };
    assert!(after.ends_with("build_arm64:\n  script: [new]\n  tags: [$CICD_TAG_ARM64]\n"), "{after}");
}

#[test]
fn jobs_that_inherit_the_right_tags_through_extends_are_done() {
    let mut s = start();
    let ci = ".arm:\n  tags: [$CICD_TAG_ARM64]\n.amd:\n  tags: [$CICD_TAG_AMD64]\n.base:\n  extends: .arm\nbuild_arm64:\n  extends: .base\n  script: [b]\nbuild_amd64:\n  extends: [.base, .amd]\n  script: [b]\n";
    s.ci_file = Some(fixtures::ci_file("platform/kaniko-builder", ci));
    let p = pipeline::plan(&s, &plan());
    assert!(!p.changes.iter().any(|c| c.id.as_str().starts_with("cifile/")), "{}", render(&p));
    let done: Vec<&str> =
        p.findings.iter().filter(|f| f.code == FindingCode::CiJobTagged).map(|f| f.message.as_str()).collect();
    assert_eq!(done, ["runs on arm64 ([$CICD_TAG_ARM64])", "runs on amd64 ([$CICD_TAG_AMD64])"]);
}

#[test]
fn an_arm64_build_tagged_for_the_old_runner_is_a_risk() {
    let mut s = start();
    s.ci_file = Some(fixtures::ci_file(
        "platform/kaniko-builder",
        "build_arm64:\n  tags: [sandbox]\n  script: [b]\nbuild_amd64:\n  script: [b]\n",
    ));
    let p = pipeline::plan(&s, &plan());
    assert!(
        p.risks().any(|f| f.code == FindingCode::CiJobWrongTags
            && f.target.as_ref().is_some_and(|t| t.to_string().ends_with("job build_arm64"))),
        "{}",
        render(&p)
    );
    let file = p.changes.iter().find(|c| c.id.as_str().starts_with("cifile/")).unwrap();
    assert!(after_text(file).starts_with("build_arm64:\n  tags: [sandbox]\n"), "kept exactly");
}

// ---- Phase 4 ----

#[test]
fn workloads_pin_unpinned_argo_templates_and_untagged_jobs() {
    let p = plan_phase(Phase::Workloads, &start(), &plan());
    let ids: Vec<&str> = p.changes.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "argo/WorkflowTemplate/ci/build-images",
            "argo/WorkflowTemplate/data/etl",
            "argo/CronWorkflow/data/nightly-report",
            "cifile/platform/docs/.gitlab-ci.yml",
            "cifile/platform/api/.gitlab-ci.yml",
            "cifile/platform/terraform/.gitlab-ci.yml",
            "group-variable/platform/CICD_TAG_AMD64",
        ]
    );
    let etl = after_object(&p.changes[1]);
    assert_eq!(etl["spec"]["nodeSelector"], json!({"team": "data", "kubernetes.io/arch": "amd64"}));
    let cron = after_object(&p.changes[2]);
    assert_eq!(cron["spec"]["workflowSpec"]["nodeSelector"]["kubernetes.io/arch"], "amd64");
    let api = after_text(&p.changes[4]);
    assert!(api.contains("default:\n  tags: [$CICD_TAG_AMD64]\n"), "{api}");
    assert!(
        api.ends_with("deploy:\n  stage: deploy\n  trigger:\n    project: platform/deployments\n"),
        "the trigger job is left as it was (GitLab takes no tags on bridge jobs): {api}"
    );
    assert!(has(&p, FindingCode::WorkloadPinned, "WorkflowTemplate ci/lint"), "{}", render(&p));
    insta::assert_snapshot!(render(&p));
}

#[test]
fn workloads_flag_the_ordering_hazard_both_ways() {
    let p = plan_phase(Phase::Workloads, &start(), &plan());
    // Not widened yet: the plan orders the pins first, so it is pending, not a risk.
    assert!(
        p.findings.iter().any(|f| f.code == FindingCode::OrderingHazard && f.status == Status::Pending),
        "{}",
        render(&p)
    );

    let mut s = start();
    s.node_pools = vec![fixtures::spot_pool(
        "      - key: kubernetes.io/arch\n        operator: In\n        values: [amd64, arm64]",
    )];
    let p = plan_phase(Phase::Workloads, &s, &plan());
    assert!(p.risks().any(|f| f.code == FindingCode::OrderingHazard), "{}", render(&p));
}

#[test]
fn argo_templates_pinned_by_affinity_or_per_template_are_done() {
    let mut s = start();
    let by_affinity = obj(
        "apiVersion: argoproj.io/v1alpha1\nkind: WorkflowTemplate\nmetadata: {name: a, namespace: ci}\nspec:\n  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions:\n          - {key: kubernetes.io/arch, operator: In, values: [arm64]}\n  templates:\n  - name: m\n    container: {image: x}\n",
    );
    let per_template = obj(
        "apiVersion: argoproj.io/v1alpha1\nkind: WorkflowTemplate\nmetadata: {name: b, namespace: ci}\nspec:\n  templates:\n  - name: steps\n    steps: [[{name: s, template: m}]]\n  - name: m\n    nodeSelector: {kubernetes.io/arch: amd64}\n    container: {image: x}\n",
    );
    s.argo = vec![by_affinity, per_template];
    s.other_projects.clear();
    let p = plan_phase(Phase::Workloads, &s, &plan());
    assert!(p.changes.is_empty(), "{}", render(&p));
    assert_eq!(p.findings.iter().filter(|f| f.status == Status::Done).count(), 2);
}

#[test]
fn argo_namespace_filter_is_honoured() {
    let mut spec = plan();
    spec.workloads.argo.namespaces = vec!["ci".into()];
    spec.workloads.gitlab = None;
    let p = plan_phase(Phase::Workloads, &start(), &spec);
    assert_eq!(p.changes.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["argo/WorkflowTemplate/ci/build-images"]);
}

// ---- All phases ----

#[test]
fn planners_are_idempotent_from_the_amd64_only_start() {
    let spec = plan();
    let mut s = start();
    let first: usize = plan_all(&s, &spec).iter().map(|p| p.changes.len()).sum();
    assert!(first > 10, "the start state needs work");
    converge(&mut s, &spec);
    for p in plan_all(&s, &spec) {
        assert!(p.changes.is_empty(), "{} after applying its own plan:\n{}", p.phase, render(&p));
    }
}

#[test]
fn planners_are_idempotent_from_partial_states() {
    let spec = plan();
    let mut partials = Vec::new();
    let mut s = start();
    s.node_pools =
        vec![fixtures::spot_pool("      - key: kubernetes.io/arch\n        operator: NotIn\n        values: [arm64]")];
    partials.push(s);
    let mut s = start();
    s.runners.push(fixtures::runner(9, &["sandbox-arm64", "sandbox-amd64"], "online"));
    partials.push(s);
    let mut s = start();
    s.project_variables = vec![fixtures::variable("CICD_TAG_AMD64", "wrong")];
    s.ci_file = Some(fixtures::ci_file(
        "platform/kaniko-builder",
        ".t: {tags: [$CICD_TAG_ARM64]}\nbuild_arm64: {extends: .t, script: [x]}\nbuild_amd64: {script: [x]}\n",
    ));
    partials.push(s);
    for (i, mut s) in partials.into_iter().enumerate() {
        converge(&mut s, &spec);
        for p in plan_all(&s, &spec) {
            assert!(p.changes.is_empty(), "partial state {i}, {}:\n{}", p.phase, render(&p));
        }
    }
}

#[test]
fn plans_never_carry_a_token() {
    let spec = plan();
    let text = serde_json::to_string(&plan_all(&start(), &spec)).unwrap();
    for needle in ["glrt-", "glpat-", "GR1348941"] {
        assert!(!text.contains(needle), "{needle} in a plan");
    }
}

// ---- The whole plan ----

#[test]
fn the_sandbox_plan_is_an_acyclic_graph_whose_bindings_name_real_outputs() {
    let plan = super::plan(&start(), &plan(), include_str!("../../plans/sandbox.yaml"));
    plan.check_graph().expect("a followable graph");
    let order: Vec<&str> = plan.order().unwrap().iter().map(|c| c.id.as_str()).collect();
    let pos = |id: &str| order.iter().position(|x| *x == id).unwrap_or_else(|| panic!("{id} not planned"));
    for c in plan.changes() {
        for d in &c.depends_on {
            assert!(pos(d.as_str()) < pos(c.id.as_str()), "{} runs before its dependency {d}", c.id);
        }
        for b in &c.bindings {
            let from = plan.change(&b.from).expect("binding names a change of the plan");
            assert!(from.outputs().contains(&b.output), "{} does not produce {:?}", b.from, b.output);
            let after = after_object(c);
            assert!(after.pointer(&b.pointer).is_some(), "{}: bound pointer {} not in after", c.id, b.pointer);
        }
    }
    // The safety property: every pin is live before the pool may launch arm64 nodes.
    let widen = pos("nodepool/spot-pool");
    for pin in plan.phase(Phase::Workloads).unwrap().changes.iter().filter(|c| !c.id.as_str().starts_with("group-")) {
        assert!(pos(pin.id.as_str()) < widen, "{} is applied after the widening", pin.id);
    }
    // Jobs move to the new runners only once those exist, on a pool that can run them.
    let ci = pos("cifile/platform/kaniko-builder/.gitlab-ci.yml");
    for needed in
        ["nodepool/spot-pool", "release/gitlab-runner-arm64", "variable/platform/kaniko-builder/CICD_TAG_ARM64"]
    {
        assert!(pos(needed) < ci, "{needed} must precede the pipeline's CI change");
    }
    assert!(pos("secret/gitlab-runner/gitlab-runner-arm64-token") < pos("release/gitlab-runner-arm64"));
    assert!(pos("runner/sandbox-arm64") < pos("secret/gitlab-runner/gitlab-runner-arm64-token"));
}

#[test]
fn a_plan_with_a_cycle_or_a_dangling_binding_is_refused() {
    let spec = plan();
    let mut plan = super::plan(&start(), &spec, "");
    let first = plan.phases[0].changes[0].id.clone();
    let last = plan.phases[3].changes.last().unwrap().id.clone();
    plan.phases[3].changes.last_mut().unwrap().depends_on.push(first.clone());
    plan.phases[0].changes[0].depends_on.push(last);
    assert!(matches!(plan.check_graph(), Err(crate::model::GraphError::Cycle(_))));

    let mut plan = super::plan(&start(), &spec, "");
    let secret = plan.phases[1].changes.iter_mut().find(|c| !c.bindings.is_empty()).unwrap();
    secret.bindings[0].from = ChangeId::release("gitlab-runner-amd64");
    assert!(matches!(plan.check_graph(), Err(crate::model::GraphError::BadBinding { .. })));
}

#[test]
fn the_plan_round_trips_through_json_with_its_format_version() {
    let plan = super::plan(&start(), &plan(), "x");
    assert_eq!(plan.format_version, crate::model::PLAN_FORMAT_VERSION);
    assert_eq!(plan.spec_digest, "sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881");
    let json = serde_json::to_string(&plan).unwrap();
    let back: crate::model::Plan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, plan);
    assert!(json.contains("\"code\":\"nodepool.widen-needed\""), "codes serialise as their strings");
}

// ---- Blocked propagation ----

/// The baseline's runner config as a values file with a Helm template construct in it.
fn templated_baseline(state: &mut ObservedState) {
    let baseline = state
        .releases
        .iter_mut()
        .find(|r| r["metadata"]["name"] == "gitlab-runner")
        .expect("the fixture has a baseline");
    baseline["spec"]["forProvider"]["values"]["runners"]["config"] = json!(
        "[[runners]]\n  [runners.kubernetes]\n{{- if .Values.pinned }}\n    namespace = \"{{.Release.Namespace}}\"\n{{- end }}\n"
    );
}

#[test]
fn a_refused_release_blocks_everything_downstream_and_names_it() {
    let mut s = start();
    templated_baseline(&mut s);
    let p = super::plan(&s, &plan(), "");
    let blocked: BTreeMap<&str, &str> = p.blocked().map(|b| (b.id.as_str(), b.reason.as_str())).collect();
    // Refused by their planner: both new Releases and the baseline's pin.
    for id in ["release/gitlab-runner-arm64", "release/gitlab-runner-amd64", "release/gitlab-runner"] {
        assert!(blocked.contains_key(id), "{id} not blocked: {blocked:#?}");
    }
    // Downstream: the retag of the pipeline, the other projects' retags, and the widening.
    let ci = "cifile/platform/kaniko-builder/.gitlab-ci.yml";
    assert!(blocked[ci].contains("which was refused"), "{}", blocked[ci]);
    assert!(blocked["cifile/platform/docs/.gitlab-ci.yml"].contains("release/gitlab-runner-amd64"));
    assert!(blocked["nodepool/spot-pool"].contains("not widened"), "{}", blocked["nodepool/spot-pool"]);
    // None of it is left for the engine; the graph it gets is whole.
    for id in blocked.keys() {
        assert!(p.change(&ChangeId::from(*id)).is_none(), "{id} is still planned");
    }
    p.check_graph().expect("no dependency names a blocked change");
    // What needs nothing refused is still planned (the risk gate decides whether it runs).
    assert!(p.change(&ChangeId::from("runner/sandbox-arm64")).is_some());
    // The blocked retag keeps its diff for review.
    let retag = p.blocked().find(|b| b.id == ci).and_then(|b| b.change.as_ref()).expect("planned that far");
    assert_eq!(retag.id, ci);
}

#[test]
fn a_dependency_no_planner_accounts_for_blocks_and_one_in_place_is_satisfied() {
    let c = |id: &str, deps: &[&str]| {
        Change::new(
            ChangeId::from(id),
            Phase::Pipeline,
            ObjectRef::Project { path: id.into() },
            Action::Update,
            id,
            WriteMethod::KubeCreate,
        )
        .depends_on(deps.iter().map(|d| ChangeId::from(*d)))
    };
    let mut phase = PhasePlan::new(Phase::Pipeline);
    phase.changes = vec![c("a", &["done-already"]), c("b", &["nobody"]), c("c", &["b"]), c("d", &["a"])];
    phase.holds(ChangeId::from("done-already"));
    let mut phases = vec![phase];
    resolve_dependencies(&mut phases);
    let kept: Vec<&str> = phases[0].changes.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(kept, ["a", "d"]);
    assert!(phases[0].changes[0].depends_on.is_empty(), "a satisfied dependency is dropped");
    assert_eq!(phases[0].changes[1].depends_on, [ChangeId::from("a")]);
    let why: BTreeMap<&str, &str> = phases[0].blocked.iter().map(|b| (b.id.as_str(), b.reason.as_str())).collect();
    assert_eq!(why["b"], "needs nobody, which this plan neither makes nor finds in place");
    assert!(why["c"].starts_with("needs b, blocked by nobody"), "{}", why["c"]);
}
