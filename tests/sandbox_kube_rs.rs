//! kube-rs, the client archshift's Kubernetes adapter is built on, against the sandbox:
//! aggregated discovery, dynamic and typed APIs, server-side apply with conflicts and
//! dry-run, and a watcher following changes.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

mod common;

use std::time::Duration;

use common::Sandbox;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::Discovery;
use kube::runtime::watcher;
use kube::{Client, Config};
use serde_json::json;

async fn client(sb: &Sandbox) -> Client {
    let kc = Kubeconfig::read_from(sb.kubeconfig()).unwrap();
    let opts = KubeConfigOptions { context: Some("archshift-sandbox".into()), ..Default::default() };
    Client::try_from(Config::from_custom_kubeconfig(kc, &opts).await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_discovers_reads_applies_and_watches() {
    // kube's rustls and the tests' reqwest need one process-wide provider: ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sb = Sandbox::start("kube-rs", &[]);
    let client = client(&sb).await;

    let discovery = Discovery::new(client.clone()).run_aggregated().await.expect("aggregated discovery");
    let (ar, caps) =
        discovery.get("karpenter.sh").and_then(|g| g.recommended_kind("NodePool")).expect("NodePool discovered");
    assert_eq!(ar.plural, "nodepools");
    assert_eq!(caps.scope, kube::discovery::Scope::Cluster);
    let legacy = Discovery::new(client.clone()).run().await.expect("legacy discovery");
    assert!(legacy.has_group("helm.crossplane.io"));

    let pools: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let spot = pools.get("spot-pool").await.unwrap();
    assert_eq!(spot.data["spec"]["template"]["spec"]["requirements"][1]["values"], json!(["amd64"]));
    let names: Vec<String> = pools
        .list(&ListParams::default().limit(1))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    assert_eq!(names.len(), 1);

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "gitlab-runner");
    let s = secrets.get("gitlab-runner-secret").await.unwrap();
    assert!(s.data.unwrap().contains_key("runner-token"));

    let doc = json!({"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "spot-pool"},
        "spec": {"template": {"spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
                 "requirements": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]}]}}}});
    match pools.patch("spot-pool", &PatchParams::apply("archshift"), &Patch::Apply(&doc)).await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (409, "Conflict")),
        other => panic!("expected an apply conflict, got {other:?}"),
    }
    let dry = pools
        .patch("spot-pool", &PatchParams::apply("archshift").force().dry_run(), &Patch::Apply(&doc))
        .await
        .unwrap();
    assert_eq!(dry.data["spec"]["template"]["spec"]["requirements"][0]["values"], json!(["amd64", "arm64"]));
    assert_eq!(
        pools.get("spot-pool").await.unwrap().metadata.resource_version,
        spot.metadata.resource_version,
        "dry run stored nothing"
    );

    // A watcher sees the forced apply.
    let api = pools.clone();
    let seen = tokio::spawn(async move {
        use futures::StreamExt;
        let mut stream = watcher(api, watcher::Config::default().fields("metadata.name=spot-pool")).boxed();
        while let Some(event) = stream.next().await {
            if let Ok(watcher::Event::Apply(obj)) = event
                && obj.data["spec"]["template"]["spec"]["requirements"][0]["values"] == json!(["amd64", "arm64"])
            {
                return true;
            }
        }
        false
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    pools.patch("spot-pool", &PatchParams::apply("archshift").force(), &Patch::Apply(&doc)).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(10), seen).await.expect("watcher saw the change in time").unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_streaming_lists_get_initial_events_then_changes() {
    use futures::StreamExt;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sb = Sandbox::start("kube-rs-streaming", &[]);
    let client = client(&sb).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "gitlab-runner");
    // sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true
    let mut stream = watcher(secrets.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut initial = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("events in time") {
            Some(Ok(watcher::Event::Init)) => {}
            Some(Ok(watcher::Event::InitApply(s))) => initial.push(s.metadata.name.unwrap()),
            Some(Ok(watcher::Event::InitDone)) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(initial.contains(&"gitlab-runner-secret".to_string()), "{initial:?}");
    // Then changes follow.
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "streamed", "namespace": "gitlab-runner"},
                                                   "stringData": {"k": "v"}}))
    .unwrap();
    secrets.create(&kube::api::PostParams::default(), &s).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("the change in time") {
            Some(Ok(watcher::Event::Apply(s))) if s.metadata.name.as_deref() == Some("streamed") => break,
            Some(Ok(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // Without bookmarks the options are invalid, as on a real server.
    let (code, body) = tokio::task::block_in_place(|| {
        let bad = sb
            .k8s("GET", "/api/v1/namespaces/gitlab-runner/secrets?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan")
            .send()
            .unwrap();
        (bad.status().as_u16(), bad.json::<serde_json::Value>().unwrap())
    });
    assert_eq!(code, 422);
    assert!(body["message"].as_str().unwrap().contains("allowWatchBookmarks needs to be set to true"), "{body}");
}
