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
        assert!(!e.to_string().contains(&sb.kube_token));
    });
}
