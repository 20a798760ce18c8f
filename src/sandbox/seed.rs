//! The world the sandbox starts in: the migration plan's starting point (amd64-only
//! `spot-pool`, a baseline runner online with the existing tag, kaniko jobs untagged, Argo
//! templates some pinned some not, other projects with untagged jobs), and an optional fleet.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Value, json};

use super::World;
use super::gitlab::{GitLabState, Manager, Runner, Variable, now};

/// The pipeline project's CI file: the same data file the planners' fixtures read (data is
/// shared; code is not), so the demo and the planner tests start from one file.
pub const KANIKO_CI: &str = include_str!("../../tests/fixtures/ci/kaniko-builder.gitlab-ci.yml");

const BASELINE_CONFIG: &str = r#"[[runners]]
  [runners.kubernetes]
    namespace = "{{.Release.Namespace}}"
    image = "ubuntu:22.04"
    privileged = false
    [runners.kubernetes.pod_annotations]
      "karpenter.sh/do-not-evict" = "true"
      "eks.amazonaws.com/compute-type" = "ec2"
    [runners.kubernetes.node_selector]
      "karpenter.sh/nodepool" = "spot-pool"
      "lifecycle" = "Ec2Spot"
"#;

#[allow(clippy::expect_used, reason = "seed YAML is a constant of this file; every sandbox test parses it")]
fn obj(yaml: &str) -> Value {
    let y: yaml_serde::Value = yaml_serde::from_str(yaml).expect("seed YAML parses");
    serde_json::to_value(y).expect("seed YAML is JSON")
}

fn put(w: &mut World, v: Value) {
    if let Err(e) = w.kube.put(v, "archshift-sandbox-seed") {
        panic!("seed object rejected: {e}");
    }
}

fn files(list: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    list.iter().map(|(p, c)| (p.to_string(), c.as_bytes().to_vec())).collect()
}

pub fn default_world(w: &mut World, gitlab_url: &str) {
    for ns in ["default", "kube-system", "gitlab-runner", "ci", "data", "karpenter", "crossplane-system"] {
        put(
            w,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        );
    }
    put(
        w,
        obj(r#"
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: default}
spec:
  role: KarpenterNodeRole-sandbox
  amiSelectorTerms: [{alias: al2023@latest}]
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: sandbox}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: sandbox}}]
status:
  amis:
  - id: ami-0a1b2c3d4e5f60001
    name: amazon-eks-node-al2023-x86_64-standard-1.32-v20250601
    requirements:
    - {key: kubernetes.io/arch, operator: In, values: [amd64]}
  - id: ami-0a1b2c3d4e5f60002
    name: amazon-eks-node-al2023-arm64-standard-1.32-v20250601
    requirements:
    - {key: kubernetes.io/arch, operator: In, values: [arm64]}
  conditions:
  - {type: Ready, status: "True", reason: Ready, lastTransitionTime: "2025-06-01T10:00:00Z", message: ""}
"#),
    );
    put(
        w,
        obj(r#"
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: spot-pool}
spec:
  template:
    metadata:
      labels: {lifecycle: Ec2Spot}
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
      - {key: karpenter.sh/capacity-type, operator: In, values: [spot]}
      - {key: kubernetes.io/arch, operator: In, values: [amd64]}
      - {key: kubernetes.io/os, operator: In, values: [linux]}
      - {key: karpenter.k8s.aws/instance-category, operator: In, values: [c, m, r]}
  limits: {cpu: "200"}
  disruption:
    consolidationPolicy: WhenEmptyOrUnderutilized
    consolidateAfter: 1m
"#),
    );
    put(
        w,
        obj(r#"
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: system-pool}
spec:
  template:
    metadata:
      labels: {lifecycle: OnDemand}
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
      - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}
      - {key: kubernetes.io/arch, operator: In, values: [amd64, arm64]}
      - {key: kubernetes.io/os, operator: In, values: [linux]}
  disruption:
    consolidationPolicy: WhenEmpty
    consolidateAfter: 5m
"#),
    );
    for (name, pool, lifecycle, capacity) in [
        ("ip-10-0-1-10.ec2.internal", "system-pool", "OnDemand", "on-demand"),
        ("ip-10-0-2-20.ec2.internal", "spot-pool", "Ec2Spot", "spot"),
    ] {
        put(
            w,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {
            "karpenter.sh/nodepool": pool, "lifecycle": lifecycle, "karpenter.sh/capacity-type": capacity,
            "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux", "node.kubernetes.io/instance-type": "m7i.large",
            "topology.kubernetes.io/zone": "eu-west-1a"}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                       "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "v1.32.4-eks"}}}),
        );
    }
    put(
        w,
        obj(
            "apiVersion: helm.crossplane.io/v1beta1\nkind: ProviderConfig\nmetadata: {name: helm-provider}\nspec:\n  credentials: {source: InjectedIdentity}\n",
        ),
    );

    // GitLab: the platform group, its projects and the baseline runner.
    let g = &mut w.gitlab;
    let platform = g.add_group("platform", None);
    g.add_project(
        platform,
        "kaniko-builder",
        files(&[(".gitlab-ci.yml", KANIKO_CI), ("Dockerfile", "FROM alpine:3.20\nRUN apk add --no-cache curl\n")]),
    );
    g.add_project(platform, "docs", files(&[(".gitlab-ci.yml", "# Publish the handbook.\npages:\n  stage: deploy\n  image: python:3.12\n  script:\n    - pip install mkdocs\n    - mkdocs build -d public\n  artifacts:\n    paths: [public]\n")]));
    g.add_project(platform, "api", files(&[(".gitlab-ci.yml", "stages: [test, build, deploy]\n\nvariables:\n  GO_VERSION: \"1.23\"\n\n.go: &go\n  image: golang:$GO_VERSION\n\n# unit tests\ntest:\n  <<: *go\n  stage: test\n  script: [go test ./...]\n\nbuild:\n  <<: *go\n  stage: build\n  script: [go build ./...]\n\ndeploy:\n  stage: deploy\n  trigger:\n    project: platform/deployments\n")]));
    g.add_project(platform, "terraform", files(&[
        (".gitlab-ci.yml", "include:\n  - local: ci/templates.yml\n\nplan:\n  extends: .tf\n  script: [terraform plan]\n\napply:\n  extends: .tf\n  script: [terraform apply -auto-approve]\n  when: manual\n"),
        ("ci/templates.yml", ".tf:\n  image: hashicorp/terraform:1.9\n  before_script: [terraform init]\n"),
    ]));
    g.add_project(platform, "deployments", files(&[("README.md", "Deployment manifests.\n")]));
    g.group_vars.entry(platform).or_default().push(Variable {
        key: "REGISTRY_PASSWORD".into(),
        value: "s3cr3t-registry-pass".into(),
        variable_type: "env_var".into(),
        protected: true,
        masked: true,
        hidden: false,
        raw: false,
        environment_scope: "*".into(),
        description: Some("registry credentials".into()),
    });
    let token = GitLabState::new_runner_token();
    let id = g.next_id();
    let mid = g.next_id();
    g.runners.push(Runner {
        id,
        description: "sandbox".into(),
        runner_type: "group_type".into(),
        group_id: Some(platform),
        project_ids: vec![],
        tag_list: vec!["sandbox".into()],
        run_untagged: true,
        locked: false,
        paused: false,
        access_level: "not_protected".into(),
        maximum_timeout: None,
        maintenance_note: None,
        token: token.clone(),
        created_at: "2025-01-15T09:00:00.000Z".into(),
        managers: vec![Manager {
            id: mid,
            system_id: super::controllers::system_id_for("gitlab-runner"),
            version: "18.1.1".into(),
            platform: "linux".into(),
            architecture: "amd64".into(),
            created_at: now(),
            contacted_at: chrono::Utc::now(),
        }],
        job_node_selector: None,
    });
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    put(
        w,
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                  "metadata": {"name": "gitlab-runner-secret", "namespace": "gitlab-runner"},
                  "data": {"runner-token": b64(&token), "runner-registration-token": ""}}),
    );
    let mut baseline = obj(r#"
apiVersion: helm.crossplane.io/v1beta1
kind: Release
metadata:
  name: gitlab-runner
  labels: {team: platform}
spec:
  providerConfigRef: {name: helm-provider}
  forProvider:
    chart:
      name: gitlab-runner
      repository: https://charts.gitlab.io/
      version: "0.77.2"
    namespace: gitlab-runner
    values:
      rbac: {create: true}
      serviceAccount: {create: true}
      concurrent: 10
      nodeSelector:
        lifecycle: OnDemand
        karpenter.sh/nodepool: system-pool
      runners:
        secret: gitlab-runner-secret
"#);
    baseline["spec"]["forProvider"]["values"]["gitlabUrl"] = json!(format!("{gitlab_url}/"));
    baseline["spec"]["forProvider"]["values"]["runners"]["config"] = json!(BASELINE_CONFIG);
    put(w, baseline);
    w.kube.put_status("Release", "", "gitlab-runner", json!({
        "atProvider": {"state": "deployed", "revision": 4, "releaseDescription": "Upgrade complete", "version": "0.77.2"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "Available", "lastTransitionTime": "2025-06-01T10:00:00Z"},
                       {"type": "Synced", "status": "True", "reason": "ReconcileSuccess", "lastTransitionTime": "2025-06-01T10:00:00Z"}]}));

    // Argo: some pinned, some not.
    put(w, workflow_template("ci", "build-images", ""));
    put(w, workflow_template("ci", "lint", "  nodeSelector:\n    kubernetes.io/arch: amd64\n"));
    put(w, workflow_template("data", "etl", "  nodeSelector:\n    team: data\n"));
    put(
        w,
        workflow_template(
            "ci",
            "arm-experiments",
            "  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions:\n          - {key: kubernetes.io/arch, operator: In, values: [arm64]}\n",
        ),
    );
    put(
        w,
        obj(
            "apiVersion: argoproj.io/v1alpha1\nkind: CronWorkflow\nmetadata: {name: nightly-report, namespace: data}\nspec:\n  schedules: [\"0 3 * * *\"]\n  workflowSpec:\n    entrypoint: main\n    templates:\n    - name: main\n      script:\n        image: python:3.12\n        command: [python]\n        source: print('report')\n",
        ),
    );
}

fn workflow_template(ns: &str, name: &str, extra_spec: &str) -> Value {
    obj(&format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: WorkflowTemplate\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  entrypoint: main\n{extra_spec}  templates:\n  - name: main\n    container:\n      image: alpine:3.20\n      command: [sh, -c, \"echo {name}\"]\n"
    ))
}

/// `--fleet N`: N more projects with realistic CI files and 4N Argo templates.
/// `projects` more GitLab projects in the subgroup `platform/fleet` (so the sandbox plan's
/// workloads group reaches them) and `templates` more Argo WorkflowTemplates.
pub fn fleet_of(w: &mut World, projects: usize, templates: usize) {
    let platform = w.gitlab.groups.iter().find(|g| g.full_path == "platform").map(|g| g.id);
    let group = w.gitlab.add_group("fleet", platform);
    let n = projects;
    const STYLES: [&str; 4] = [
        "stages: [test, build]\n\ntest:\n  stage: test\n  script: [make test]\n\nbuild:\n  stage: build\n  script: [make build]\n",
        ".base: &base\n  image: node:22\n  before_script: [npm ci]\n\nlint:\n  <<: *base\n  script: [npm run lint]\n\nunit:\n  <<: *base\n  script: [npm test]\n",
        "default:\n  image: python:3.12\n\ncheck:\n  script: [ruff check .]\n\npublish:\n  tags: [docker]\n  script: [python -m build]\n",
        "include:\n  - local: ci/common.yml\n\nbuild_amd64:\n  extends: .build\n  variables: {ARCH: amd64}\n\nbuild_arm64:\n  extends: .build\n  variables: {ARCH: arm64}\n",
    ];
    for i in 0..n {
        let style = STYLES[i % STYLES.len()];
        let mut f = vec![(".gitlab-ci.yml", style)];
        if i % STYLES.len() == 3 {
            f.push((
                "ci/common.yml",
                ".build:\n  image: docker:27\n  script: [docker build --platform linux/$ARCH .]\n",
            ));
        }
        w.gitlab.add_project(group, &format!("service-{i:04}"), files(&f));
    }
    for ns in 0..10 {
        let name = format!("fleet-{ns}");
        let _ = w.kube.put(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}, "status": {"phase": "Active"}}),
            "seed",
        );
    }
    for i in 0..templates {
        let ns = format!("fleet-{}", i % 10);
        let pinned = if i % 3 == 0 { "  nodeSelector:\n    kubernetes.io/arch: amd64\n" } else { "" };
        let _ = w.kube.put(workflow_template(&ns, &format!("wf-{i:05}"), pinned), "seed");
    }
}
