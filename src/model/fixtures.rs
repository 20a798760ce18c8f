//! The migration plan's starting point, as observed state, for planner tests.

use serde_json::Value;

use super::{CiFile, CiVariable, GitLabRunner, ObservedState, ProjectCi, SecretMeta};
use crate::spec::MigrationPlan;

pub fn plan() -> MigrationPlan {
    MigrationPlan::parse(include_str!("../../plans/sandbox.yaml"), "plans/sandbox.yaml").expect("sandbox plan parses")
}

pub fn obj(yaml: &str) -> Value {
    let v: yaml_serde::Value = yaml_serde::from_str(yaml).expect("fixture YAML");
    serde_json::to_value(v).expect("fixture JSON")
}

pub const KANIKO_CI: &str = include_str!("../../tests/fixtures/ci/kaniko-builder.gitlab-ci.yml");

pub fn spot_pool(arch_requirement: &str) -> Value {
    obj(&format!(
        r#"
apiVersion: karpenter.sh/v1
kind: NodePool
metadata:
  name: spot-pool
  resourceVersion: "1001"
  uid: 7d3c1f2e-0000-4000-8000-000000000001
  generation: 3
  creationTimestamp: "2025-06-01T10:00:00Z"
  managedFields:
  - manager: kubectl-client-side-apply
    operation: Update
spec:
  template:
    metadata:
      labels:
        lifecycle: Ec2Spot
    spec:
      nodeClassRef: {{group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}}
      requirements:
      - key: karpenter.sh/capacity-type
        operator: In
        values: [spot]
{arch_requirement}
      - key: kubernetes.io/os
        operator: In
        values: [linux]
  disruption:
    consolidationPolicy: WhenEmptyOrUnderutilized
    consolidateAfter: 1m
status:
  conditions:
  - type: Ready
    status: "True"
"#
    ))
}

pub fn system_pool(archs: &str) -> Value {
    obj(&format!(
        "apiVersion: karpenter.sh/v1\nkind: NodePool\nmetadata:\n  name: system-pool\n  resourceVersion: \"1002\"\nspec:\n  template:\n    metadata:\n      labels:\n        lifecycle: OnDemand\n    spec:\n      nodeClassRef: {{group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}}\n      requirements:\n      - {{key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}}\n      - {{key: kubernetes.io/arch, operator: In, values: {archs}}}\n"
    ))
}

pub const AMD64_ONLY: &str = "      - key: kubernetes.io/arch\n        operator: In\n        values: [amd64]";

pub fn node_class(archs: &[&str]) -> Value {
    let amis: Vec<String> = archs
        .iter()
        .map(|a| format!("  - id: ami-{a}\n    name: al2023-{a}\n    requirements:\n    - key: kubernetes.io/arch\n      operator: In\n      values: [{a}]"))
        .collect();
    obj(&format!(
        "apiVersion: karpenter.k8s.aws/v1\nkind: EC2NodeClass\nmetadata:\n  name: default\nspec:\n  amiSelectorTerms:\n  - alias: al2023@latest\nstatus:\n  amis:\n{}\n",
        amis.join("\n")
    ))
}

pub fn baseline_release() -> Value {
    obj(r#"
apiVersion: helm.crossplane.io/v1beta1
kind: Release
metadata:
  name: gitlab-runner
  resourceVersion: "2001"
  annotations:
    crossplane.io/external-name: gitlab-runner
  labels:
    team: platform
spec:
  providerConfigRef: {name: helm-provider}
  forProvider:
    chart:
      name: gitlab-runner
      repository: https://charts.gitlab.io/
      version: "0.77.2"
    namespace: gitlab-runner
    set:
    - name: runnerToken
      valueFrom:
        secretKeyRef: {name: gitlab-runner-secret, namespace: gitlab-runner, key: runner-token}
    - name: concurrent
      value: "20"
    values:
      gitlabUrl: https://gitlab.sandbox.test/
      rbac: {create: true}
      serviceAccount: {create: true}
      nodeSelector:
        lifecycle: OnDemand
        karpenter.sh/nodepool: system-pool
      runners:
        tags: sandbox
        config: |
          [[runners]]
            [runners.kubernetes]
              namespace = "{{.Release.Namespace}}"
              image = "ubuntu:22.04"
              privileged = false
              [runners.kubernetes.pod_annotations]
                "karpenter.sh/do-not-evict" = "true"
              [runners.kubernetes.node_selector]
                "karpenter.sh/nodepool" = "spot-pool"
                "lifecycle" = "Ec2Spot"
status:
  atProvider: {state: deployed, revision: 4}
  conditions:
  - {type: Ready, status: "True", reason: Available}
  - {type: Synced, status: "True", reason: ReconcileSuccess}
"#)
}

pub fn runner(id: u64, tags: &[&str], status: &str) -> GitLabRunner {
    GitLabRunner {
        id,
        description: tags.first().map_or("runner".into(), |t| t.to_string()),
        runner_type: "group_type".into(),
        status: status.into(),
        paused: false,
        tag_list: tags.iter().map(|t| t.to_string()).collect(),
        run_untagged: true,
        locked: false,
        access_level: Some("not_protected".into()),
        maximum_timeout: None,
        manager_architectures: vec!["amd64".into()],
    }
}

pub fn workflow_template(ns: &str, name: &str, node_selector: Option<&str>) -> Value {
    let sel = node_selector.map(|s| format!("  nodeSelector:\n    {s}\n")).unwrap_or_default();
    obj(&format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: WorkflowTemplate\nmetadata:\n  name: {name}\n  namespace: {ns}\n  resourceVersion: \"300\"\nspec:\n  entrypoint: main\n{sel}  templates:\n  - name: main\n    container:\n      image: alpine:3.20\n      command: [echo, hi]\n"
    ))
}

pub fn cron_workflow(ns: &str, name: &str) -> Value {
    obj(&format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: CronWorkflow\nmetadata:\n  name: {name}\n  namespace: {ns}\n  resourceVersion: \"301\"\nspec:\n  schedule: \"0 3 * * *\"\n  workflowSpec:\n    entrypoint: main\n    templates:\n    - name: main\n      script:\n        image: python:3.12\n        source: print(1)\n"
    ))
}

// The other projects of the platform group, as the sandbox seeds them (a test in
// `live::observe` keeps the two equal).
pub const DOCS_CI: &str = "# Publish the handbook.\npages:\n  stage: deploy\n  image: python:3.12\n  script:\n    - pip install mkdocs\n    - mkdocs build -d public\n  artifacts:\n    paths: [public]\n";
pub const API_CI: &str = "stages: [test, build, deploy]\n\nvariables:\n  GO_VERSION: \"1.23\"\n\n.go: &go\n  image: golang:$GO_VERSION\n\n# unit tests\ntest:\n  <<: *go\n  stage: test\n  script: [go test ./...]\n\nbuild:\n  <<: *go\n  stage: build\n  script: [go build ./...]\n\ndeploy:\n  stage: deploy\n  trigger:\n    project: platform/deployments\n";
/// What platform/terraform's CI file includes (`ci/templates.yml`).
pub const TERRAFORM_TEMPLATES: &str = ".tf:\n  image: hashicorp/terraform:1.9\n  before_script: [terraform init]\n";
pub const TERRAFORM_CI: &str = "include:\n  - local: ci/templates.yml\n\nplan:\n  extends: .tf\n  script: [terraform plan]\n\napply:\n  extends: .tf\n  script: [terraform apply -auto-approve]\n  when: manual\n";

/// The platform group's masked registry password, as the adapter reports it: no value.
pub fn registry_password() -> CiVariable {
    CiVariable {
        key: "REGISTRY_PASSWORD".into(),
        value: None,
        variable_type: "env_var".into(),
        protected: true,
        masked: true,
        hidden: false,
        raw: false,
        environment_scope: "*".into(),
    }
}

/// A template pinned to arm64 on purpose, by node affinity.
pub fn arm_experiments() -> Value {
    obj(
        "apiVersion: argoproj.io/v1alpha1\nkind: WorkflowTemplate\nmetadata:\n  name: arm-experiments\n  namespace: ci\n  resourceVersion: \"302\"\nspec:\n  entrypoint: main\n  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions:\n          - {key: kubernetes.io/arch, operator: In, values: [arm64]}\n  templates:\n  - name: main\n    container:\n      image: alpine:3.20\n      command: [echo, hi]\n",
    )
}

pub fn ci_file(project: &str, content: &str) -> CiFile {
    CiFile {
        project: project.into(),
        path: ".gitlab-ci.yml".into(),
        branch: "main".into(),
        content: content.into(),
        blob_id: "b0b0".into(),
        last_commit_id: "c0ffee".into(),
    }
}

/// spot-pool amd64-only, a baseline runner online with the existing tag, kaniko jobs
/// untagged, Argo templates some pinned some not, other projects with untagged jobs.
pub fn start() -> ObservedState {
    ObservedState {
        endpoints: super::EndpointIdentity {
            cluster: None,
            gitlab: Some(super::GitLabIdentity {
                url: "https://gitlab.sandbox.test".into(),
                ids: [("platform".to_string(), 42), ("platform/kaniko-builder".to_string(), 7)].into(),
            }),
        },
        observed_at: None,
        node_pools: vec![spot_pool(AMD64_ONLY), system_pool("[amd64, arm64]")],
        node_classes: vec![node_class(&["amd64", "arm64"])],
        releases: vec![baseline_release()],
        secrets: vec![SecretMeta {
            namespace: "gitlab-runner".into(),
            name: "gitlab-runner-secret".into(),
            keys: vec!["runner-registration-token".into(), "runner-token".into()],
            resource_version: "10".into(),
        }],
        runners: vec![runner(1, &["sandbox"], "online")],
        project_variables: vec![],
        group_variables: [("platform".to_string(), vec![registry_password()])].into(),
        ci_file: Some(ci_file("platform/kaniko-builder", KANIKO_CI)),
        argo: vec![
            workflow_template("ci", "build-images", None),
            workflow_template("ci", "lint", Some("kubernetes.io/arch: amd64")),
            workflow_template("data", "etl", Some("team: data")),
            arm_experiments(),
            cron_workflow("data", "nightly-report"),
        ],
        pool_workloads: vec![],
        other_projects: vec![
            ProjectCi {
                path: "platform/docs".into(),
                default_branch: "main".into(),
                file: Some(ci_file("platform/docs", DOCS_CI)),
                includes: None,
            },
            ProjectCi {
                path: "platform/api".into(),
                default_branch: "main".into(),
                file: Some(ci_file("platform/api", API_CI)),
                includes: None,
            },
            ProjectCi {
                path: "platform/terraform".into(),
                default_branch: "main".into(),
                file: Some(ci_file("platform/terraform", TERRAFORM_CI)),
                includes: Some(vec![CiFile {
                    path: "ci/templates.yml".into(),
                    ..ci_file("platform/terraform", TERRAFORM_TEMPLATES)
                }]),
            },
            ProjectCi {
                path: "platform/deployments".into(),
                default_branch: "main".into(),
                file: None,
                includes: None,
            },
        ],
    }
}

/// A variable as the adapter reports it.
pub fn variable(key: &str, value: &str) -> CiVariable {
    CiVariable::tag_variable(key, value)
}
