//! The simulated controllers: Releases reconcile, runner managers come online where a node
//! can host them, arm64 nodes appear only when a pool allows arm64 and something needs one,
//! and runners pick up only jobs whose expanded tags they cover.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

mod common;

use common::Sandbox;
use serde_json::{Value, json};

fn get(sb: &Sandbox, path: &str) -> Value {
    sb.k8s("GET", path).send().unwrap().json().unwrap()
}

fn create_runner(sb: &Sandbox, tag: &str) -> (u64, String) {
    // POST /user/runners takes the group's integer id, as GitLab's API does.
    let group: Value = sb.gl("GET", "/groups/platform").send().unwrap().json().unwrap();
    let v: Value = sb
        .gl("POST", "/user/runners")
        .json(&json!({"runner_type": "group_type", "group_id": group["id"], "description": tag, "tag_list": [tag], "run_untagged": false}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    (v["id"].as_u64().unwrap(), v["token"].as_str().unwrap().to_string())
}

fn create_secret(sb: &Sandbox, name: &str, token: &str) {
    let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "gitlab-runner"},
                   "stringData": {"runner-token": token, "runner-registration-token": ""}});
    assert_eq!(
        sb.k8s("POST", "/api/v1/namespaces/gitlab-runner/secrets").json(&s).send().unwrap().status().as_u16(),
        201
    );
}

fn release(name: &str, version: &str, secret: &str, manager_selector: Value, arch: &str) -> Value {
    json!({"apiVersion": "helm.crossplane.io/v1beta1", "kind": "Release", "metadata": {"name": name},
           "spec": {"forProvider": {"chart": {"name": "gitlab-runner", "repository": "https://charts.gitlab.io/", "version": version},
                                    "namespace": "gitlab-runner",
                                    "values": {"gitlabUrl": "http://gitlab", "nodeSelector": manager_selector,
                                               "runners": {"secret": secret, "config": format!("[[runners]]\n  [runners.kubernetes]\n    image = \"alpine\"\n    [runners.kubernetes.node_selector]\n      \"karpenter.sh/nodepool\" = \"spot-pool\"\n      \"kubernetes.io/arch\" = \"{arch}\"\n")}}}}})
}

/// A runner in GitLab, its token Secret and a Release using it; returns the runner's id.
fn deploy_runner(
    sb: &Sandbox,
    tag: &str,
    release_name: &str,
    secret: &str,
    manager_selector: Value,
    arch: &str,
) -> u64 {
    let (id, token) = create_runner(sb, tag);
    create_secret(sb, secret, &token);
    let rel = release(release_name, "0.78.1", secret, manager_selector, arch);
    assert_eq!(
        sb.k8s("POST", "/apis/helm.crossplane.io/v1beta1/releases").json(&rel).send().unwrap().status().as_u16(),
        201
    );
    id
}

fn ready(sb: &Sandbox, name: &str) -> Option<(String, String)> {
    let r = get(sb, &format!("/apis/helm.crossplane.io/v1beta1/releases/{name}"));
    let c = r["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?.clone();
    let synced = r["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Synced")?.clone();
    Some((c["status"].as_str()?.to_string(), synced["message"].as_str().unwrap_or("").to_string()))
}

fn arm64_nodes(sb: &Sandbox) -> usize {
    get(sb, "/api/v1/nodes?labelSelector=kubernetes.io%2Farch%3Darm64")["items"].as_array().unwrap().len()
}

#[test]
fn an_arm64_runner_comes_online_and_runs_arm64_jobs() {
    let sb = Sandbox::start("world-arm64", &[]);
    assert_eq!(arm64_nodes(&sb), 0, "no arm64 node before anything needs one");
    let manager = json!({"karpenter.sh/nodepool": "system-pool", "kubernetes.io/arch": "arm64"});
    let id = deploy_runner(&sb, "sandbox-arm64", "gitlab-runner-arm64", "gitlab-runner-arm64-token", manager, "arm64");
    sb.wait_for("Release Ready", 15, || ready(&sb, "gitlab-runner-arm64").filter(|(s, _)| s == "True"));
    let runner: Value = sb.wait_for("runner online", 15, || {
        let r: Value = sb.gl("GET", &format!("/runners/{id}")).send().unwrap().json().unwrap();
        (r["status"] == "online").then_some(r)
    });
    assert_eq!(runner["architecture"], "arm64");
    let managers: Value = sb.gl("GET", &format!("/runners/{id}/managers")).send().unwrap().json().unwrap();
    assert_eq!(managers[0]["architecture"], "arm64");
    assert_eq!(arm64_nodes(&sb), 1, "Karpenter launched one arm64 node from system-pool for the manager");

    // Jobs: the arm64 tag expands from a project variable; an undefined one stays literal.
    sb.gl("POST", "/projects/platform%2Fkaniko-builder/variables")
        .json(&json!({"key": "CICD_TAG_ARM64", "value": "sandbox-arm64"}))
        .send()
        .unwrap();
    let ci =
        "build_arm64:\n  tags: [$CICD_TAG_ARM64]\n  script: [make]\nlost:\n  tags: [$NOT_DEFINED]\n  script: [make]\n";
    let commit = json!({"branch": "main", "commit_message": "ci", "actions": [{"action": "update", "file_path": ".gitlab-ci.yml", "content": ci}]});
    assert_eq!(
        sb.gl("POST", "/projects/platform%2Fkaniko-builder/repository/commits")
            .json(&commit)
            .send()
            .unwrap()
            .status()
            .as_u16(),
        201
    );
    let pipeline: Value = sb
        .gl("POST", "/projects/platform%2Fkaniko-builder/pipeline")
        .json(&json!({"ref": "main"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let pid = pipeline["id"].as_u64().unwrap();
    // The job pod needs spot-pool to allow arm64: until then the job cannot run there.
    let jobs: Vec<Value> = sb.wait_for("arm64 job finished", 15, || {
        let jobs: Vec<Value> = sb
            .gl("GET", &format!("/projects/platform%2Fkaniko-builder/pipelines/{pid}/jobs"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        jobs.iter()
            .any(|j| j["name"] == "build_arm64" && (j["status"] == "success" || j["status"] == "failed"))
            .then_some(jobs)
    });
    let arm = jobs.iter().find(|j| j["name"] == "build_arm64").unwrap();
    assert_eq!(arm["status"], "failed", "spot-pool is still amd64-only: {arm}");
    assert_eq!(arm["failure_reason"], "runner_system_failure");
    let lost = jobs.iter().find(|j| j["name"] == "lost").unwrap();
    assert_eq!(
        (lost["status"].as_str(), lost["tag_list"].clone(), lost["runner"].clone()),
        (Some("pending"), json!(["$NOT_DEFINED"]), Value::Null)
    );
    assert!(lost.get("failure_reason").is_none());

    // Phase 1: widen spot-pool, then the same job runs on an arm64 spot node.
    let patch = json!({"spec": {"template": {"spec": {"requirements": [
        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]},
        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]},
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}}}});
    let r = sb
        .k8s("PATCH", "/apis/karpenter.sh/v1/nodepools/spot-pool")
        .header("Content-Type", "application/merge-patch+json")
        .body(patch.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let pipeline: Value = sb
        .gl("POST", "/projects/platform%2Fkaniko-builder/pipeline")
        .json(&json!({"ref": "main"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let pid = pipeline["id"].as_u64().unwrap();
    let job = sb.wait_for("arm64 job success", 15, || {
        let jobs: Vec<Value> = sb
            .gl("GET", &format!("/projects/platform%2Fkaniko-builder/pipelines/{pid}/jobs"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        jobs.into_iter().find(|j| j["name"] == "build_arm64" && j["status"] == "success")
    });
    assert_eq!(job["tag_list"], json!(["sandbox-arm64"]));
    assert_eq!(job["runner"]["id"].as_u64(), Some(id));
    assert_eq!(job["runner_manager"]["architecture"], "arm64");
    let spot_arm =
        get(&sb, "/api/v1/nodes?labelSelector=karpenter.sh%2Fnodepool%3Dspot-pool%2Ckubernetes.io%2Farch%3Darm64");
    assert_eq!(spot_arm["items"].as_array().unwrap().len(), 1);
}

#[test]
fn broken_releases_report_why() {
    let sb = Sandbox::start("world-broken", &[]);
    let bad_version = release(
        "bad-version",
        "9.9.9",
        "gitlab-runner-secret",
        json!({"karpenter.sh/nodepool": "system-pool"}),
        "amd64",
    );
    sb.k8s("POST", "/apis/helm.crossplane.io/v1beta1/releases").json(&bad_version).send().unwrap();
    let no_secret =
        release("no-secret", "0.78.1", "missing-secret", json!({"karpenter.sh/nodepool": "system-pool"}), "amd64");
    sb.k8s("POST", "/apis/helm.crossplane.io/v1beta1/releases").json(&no_secret).send().unwrap();
    let (s, msg) = sb.wait_for("bad version reconciled", 15, || ready(&sb, "bad-version"));
    assert_eq!(s, "False");
    assert!(msg.contains("chart \"gitlab-runner\" version \"9.9.9\" not found"), "{msg}");
    let (s, msg) = sb.wait_for("missing secret reconciled", 15, || ready(&sb, "no-secret"));
    assert_eq!(s, "False");
    assert!(msg.contains("secret \"missing-secret\" not found"), "{msg}");
}

#[test]
fn an_unschedulable_manager_leaves_the_release_ready_and_the_runner_offline() {
    let sb = Sandbox::start("world-unschedulable", &[]);
    // spot-pool is amd64-only: nothing can host an arm64 manager there.
    let manager = json!({"karpenter.sh/nodepool": "spot-pool", "kubernetes.io/arch": "arm64"});
    let id = deploy_runner(&sb, "sandbox-arm64", "arm-on-spot", "arm-token", manager, "arm64");
    sb.wait_for("Release Ready", 15, || ready(&sb, "arm-on-spot").filter(|(s, _)| s == "True"));
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let r: Value = sb.gl("GET", &format!("/runners/{id}")).send().unwrap().json().unwrap();
    assert_eq!(r["status"], "never_contacted");
    assert_eq!(arm64_nodes(&sb), 0);
}
