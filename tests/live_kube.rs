//! The Kubernetes adapter against the sandbox over loopback: what it reads, how it pages,
//! what a missing kind looks like, and the errors a person sees.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

mod common;

use archshift::live::kube::{self as live_kube, KubeError, KubeReader};
use common::{Sandbox, runtime, write};

#[test]
fn reads_kinds_in_pages_secrets_as_key_names_and_missing_kinds_as_none() {
    let sb = Sandbox::start("live-kube-read", &["--fleet", "130"]);
    let before = sb.requests().len();
    let rt = runtime();
    rt.block_on(async {
        let k = KubeReader::connect(Some(&sb.kubeconfig()), None).await.unwrap();
        let id = k.identity().await.unwrap();
        assert_eq!(id.server, sb.kube_url);
        assert!(!id.kube_system_uid.is_empty());

        let pools = k.list(live_kube::NODE_POOL, None).await.unwrap().unwrap();
        let spot = pools.iter().find(|p| p["metadata"]["name"] == "spot-pool").unwrap();
        assert_eq!(spot["apiVersion"], "karpenter.sh/v1");
        assert_eq!(spot["kind"], "NodePool");

        // 4 seeded + 4 per fleet project: more than one page of 500.
        let templates = k.list(live_kube::WORKFLOW_TEMPLATE, None).await.unwrap().unwrap();
        assert_eq!(templates.len(), 4 + 4 * 130);

        assert_eq!(k.list(live_kube::CLUSTER_WORKFLOW_TEMPLATE, None).await.unwrap(), None, "not served here");

        let secrets = k.secrets("gitlab-runner").await.unwrap();
        let s = secrets.iter().find(|s| s.name == "gitlab-runner-secret").unwrap();
        assert_eq!(s.keys, ["runner-registration-token", "runner-token"]);
    });
    let log = sb.requests();
    let new = &log[before..];
    assert!(new.iter().all(|r| r["method"] == "GET"), "reads only: {new:?}");
    let pages = new
        .iter()
        .filter(|r| r["server"] == "k8s" && r["path"] == "/apis/argoproj.io/v1alpha1/workflowtemplates")
        .count();
    assert_eq!(pages, 2, "limit/continue followed");
}

const POOL_WORKLOADS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx}]}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web-5d4f
  namespace: default
  ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: web, uid: u-web, controller: true}]
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx}]}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: report, namespace: data}
spec:
  schedule: "0 3 * * *"
  jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: r, image: alpine}]}}}}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: report-29000
  namespace: data
  ownerReferences: [{apiVersion: batch/v1, kind: CronJob, name: report, uid: u-report, controller: true}]
spec: {template: {spec: {restartPolicy: Never, containers: [{name: r, image: alpine}]}}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: kube-system}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: a, image: agent}]}
"#;

fn pod(name: &str, ns: &str, node: &str, owner: Option<(&str, &str, &str)>) -> String {
    let owners = owner.map_or(String::new(), |(api, kind, owner)| {
        format!("  ownerReferences: [{{apiVersion: {api}, kind: {kind}, name: {owner}, uid: u-{owner}, controller: true}}]\n")
    });
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n{owners}spec:\n  nodeName: {node}\n  containers: [{{name: c, image: x}}]\n"
    )
}

#[test]
fn the_workloads_on_a_pool_are_found_through_their_pods_owners() {
    let sb = Sandbox::start("live-kube-pool", &[]);
    let rt = runtime();
    let k = rt.block_on(KubeReader::connect(Some(&sb.kubeconfig()), None)).unwrap();
    let nodes = rt
        .block_on(k.list_where(live_kube::NODE, None, Some("karpenter.sh/nodepool=spot-pool"), None))
        .unwrap()
        .unwrap();
    let node = nodes[0]["metadata"]["name"].as_str().unwrap().to_string();
    let mut manifest = POOL_WORKLOADS.to_string();
    manifest.push_str(&pod("web-5d4f-a", "default", &node, Some(("apps/v1", "ReplicaSet", "web-5d4f"))));
    manifest.push_str(&pod("web-5d4f-b", "default", &node, Some(("apps/v1", "ReplicaSet", "web-5d4f"))));
    manifest.push_str(&pod("report-29000-x", "data", &node, Some(("batch/v1", "Job", "report-29000"))));
    manifest.push_str(&pod("agent-q", "kube-system", &node, Some(("apps/v1", "DaemonSet", "agent"))));
    manifest.push_str(&pod("debug", "default", &node, None));
    manifest.push_str(&pod("elsewhere", "default", "some-other-node", Some(("apps/v1", "ReplicaSet", "web-5d4f"))));
    let file = write(&sb.dir, "pool-workloads.yaml", &manifest);
    let out = sb.kubectl(&["apply", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));

    let found = rt.block_on(k.pool_workloads("spot-pool")).unwrap();
    let mut names: Vec<String> = found
        .iter()
        .map(|w| {
            format!(
                "{}/{}/{}",
                w["kind"].as_str().unwrap(),
                w["metadata"]["namespace"].as_str().unwrap(),
                w["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    names.sort();
    assert_eq!(names, ["CronJob/data/report", "DaemonSet/kube-system/agent", "Deployment/default/web"]);
    let web = found.iter().find(|w| w["kind"] == "Deployment").unwrap();
    assert_eq!(
        web["spec"]["template"]["spec"]["containers"][0]["image"], "nginx",
        "the whole object, for the pin check"
    );
    assert!(rt.block_on(k.pool_workloads("no-such-pool")).unwrap().is_empty());
}

#[test]
fn errors_say_which_context_or_credential() {
    let sb = Sandbox::start("live-kube-errors", &["--deny", "list:nodepools.karpenter.sh"]);
    let rt = runtime();
    rt.block_on(async {
        let e = KubeReader::connect(Some(&sb.kubeconfig()), Some("no-such-context")).await.err().unwrap();
        assert!(matches!(e, KubeError::Config { .. }), "{e:?}");
        assert!(e.to_string().contains("context no-such-context"), "{e}");

        let k = KubeReader::connect(Some(&sb.kubeconfig()), None).await.unwrap();
        // The preflight sees the denial before anything is tried, as `kubectl auth can-i` does.
        assert!(!k.can_i("list", live_kube::NODE_POOL, None).await.unwrap().allowed);
        assert!(k.can_i("patch", live_kube::NODE_POOL, None).await.unwrap().allowed);
        assert!(k.can_i("list", live_kube::RELEASE, Some("gitlab-runner")).await.unwrap().allowed);
        let e = k.list(live_kube::NODE_POOL, None).await.unwrap_err();
        assert!(
            e.to_string().starts_with("the current Kubernetes identity may not list nodepools.karpenter.sh (403)"),
            "{e}"
        );

        let text = std::fs::read_to_string(sb.kubeconfig()).unwrap().replace(&sb.kube_token, "expired-token");
        let stale = write(&sb.dir, "stale-kubeconfig", &text);
        let k = KubeReader::connect(Some(&stale), None).await.unwrap();
        let e = k.identity().await.unwrap_err();
        assert!(matches!(e, KubeError::Unauthorized { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("rejected the credentials") && msg.contains("--context"), "{msg}");
        assert!(!msg.contains("expired-token") && !format!("{e:?}").contains("expired-token"), "{e:?}");
    });
}
