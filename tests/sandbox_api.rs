//! The sandbox's APIs at the HTTP level: what only a process and a socket show
//! (authentication, faults, latency, the request log, discovery and watches on the wire).
//! Protocol rules without a transport (locking, apply conflicts, dry-run, pagination, GitLab's
//! validation) are tested in-process: `src/sandbox/k8s/tests.rs`, `src/sandbox/gitlab/tests.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

mod common;

use common::Sandbox;
use serde_json::{Value, json};

const NP: &str = "/apis/karpenter.sh/v1/nodepools";

fn body(r: reqwest::blocking::Response) -> (u16, Value) {
    let code = r.status().as_u16();
    (code, r.json().unwrap_or(Value::Null))
}

#[test]
fn kubernetes_requires_the_bearer_token() {
    let sb = Sandbox::start("auth-k8s", &[]);
    let (code, v) = body(sb.kube().get(format!("{}{NP}", sb.kube_url)).send().unwrap());
    assert_eq!(code, 401);
    assert_eq!(
        v,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
    );
    let (code, _) = body(sb.kube().get(format!("{}{NP}", sb.kube_url)).bearer_auth("wrong").send().unwrap());
    assert_eq!(code, 401);
}

#[test]
fn gitlab_requires_a_token() {
    let sb = Sandbox::start("auth-gl", &[]);
    let r = reqwest::blocking::get(format!("{}/api/v4/runners/all", sb.gitlab_url)).unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.json::<Value>().unwrap(), json!({"message": "401 Unauthorized"}));
    let (code, v) = body(sb.gl("GET", "/user").send().unwrap());
    assert_eq!((code, v["username"].as_str()), (200, Some("root")));
    let bearer = reqwest::blocking::Client::new()
        .get(format!("{}/api/v4/user", sb.gitlab_url))
        .bearer_auth(&sb.gitlab_token)
        .send()
        .unwrap();
    assert_eq!(bearer.status().as_u16(), 200);
}

#[test]
fn each_fault_kind_is_injected() {
    let sb = Sandbox::start(
        "faults",
        &[
            "--fault",
            "gitlab:429:count=1,path=/api/v4/user",
            "--fault",
            "k8s:503:count=1,path=/api/v1/nodes",
            "--fault",
            "gitlab:drop:count=1,path=/api/v4/version",
            "--fault",
            "gitlab:slow:ms=300,count=1,path=/api/v4/groups",
            "--fault",
            "k8s:conflict:count=1,method=PUT",
            "--fault",
            "gitlab:500:count=1,method=DELETE",
        ],
    );
    let r = sb.gl("GET", "/user").send().unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(sb.gl("GET", "/user").send().unwrap().status().as_u16(), 200, "count=1: only the first");

    let (code, v) = body(sb.k8s("GET", "/api/v1/nodes").send().unwrap());
    assert_eq!((code, v["reason"].as_str()), (503, Some("ServiceUnavailable")));
    assert_eq!(sb.k8s("GET", "/api/v1/nodes").send().unwrap().status().as_u16(), 200);

    assert!(sb.gl("GET", "/version").send().is_err(), "dropped connection");
    assert_eq!(sb.gl("GET", "/version").send().unwrap().status().as_u16(), 200);

    let start = std::time::Instant::now();
    assert_eq!(sb.gl("GET", "/groups").send().unwrap().status().as_u16(), 200);
    assert!(start.elapsed() >= std::time::Duration::from_millis(300), "slow fault answered early");

    // A concurrent writer gets there first: a PUT with the fresh resourceVersion conflicts.
    let (_, obj) = body(sb.k8s("GET", &format!("{NP}/spot-pool")).send().unwrap());
    let (code, _) = body(sb.k8s("PUT", &format!("{NP}/spot-pool")).json(&obj).send().unwrap());
    assert_eq!(code, 409);
    let (_, fresh) = body(sb.k8s("GET", &format!("{NP}/spot-pool")).send().unwrap());
    assert_eq!(fresh["metadata"]["annotations"]["sandbox.archshift.io/concurrent-writes"], "1");
    assert_eq!(body(sb.k8s("PUT", &format!("{NP}/spot-pool")).json(&fresh).send().unwrap()).0, 200);

    let (code, v) = body(sb.gl("DELETE", "/runners/999").send().unwrap());
    assert_eq!((code, v["message"].as_str()), (500, Some("500 Internal Server Error")));

    let faults: Vec<String> = sb.requests().iter().filter_map(|r| r["fault"].as_str().map(str::to_string)).collect();
    assert_eq!(faults, ["status", "status", "drop", "slow", "conflict", "status"]);
}

#[test]
fn gitlab_file_conflict_fault_makes_a_concurrent_commit() {
    let sb = Sandbox::start(
        "fault-conflict",
        &["--fault", "gitlab:conflict:count=1,method=PUT,path=/api/v4/projects/*/repository/files/*"],
    );
    let (_, f) = body(
        sb.gl("GET", "/projects/platform%2Fkaniko-builder/repository/files/.gitlab-ci.yml?ref=main").send().unwrap(),
    );
    let (code, v) = body(
        sb.gl("PUT", "/projects/platform%2Fkaniko-builder/repository/files/.gitlab-ci.yml")
            .json(&json!({"branch": "main", "content": "a: 1\n", "commit_message": "x", "last_commit_id": f["last_commit_id"]}))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 400);
    assert_eq!(v["message"], "You are attempting to update a file that has changed since you started editing it.");
}

#[test]
fn every_request_is_logged_and_no_token_is_written_anywhere_but_the_env_files() {
    let sb = Sandbox::start("log", &[]);
    sb.k8s("GET", &format!("{NP}/spot-pool")).send().unwrap();
    sb.gl("GET", "/runners/all").send().unwrap();
    let (_, r) = body(
        sb.gl("POST", "/user/runners")
            .json(&json!({"runner_type": "instance_type", "tag_list": ["x"]}))
            .send()
            .unwrap(),
    );
    let runner_token = r["token"].as_str().unwrap().to_string();
    reqwest::blocking::get(format!("{}/api/v4/version?private_token={}", sb.gitlab_url, sb.gitlab_token)).unwrap();
    let log = sb.requests();
    assert_eq!(log.len(), 4);
    assert_eq!(
        log[0],
        json!({"server": "k8s", "method": "GET", "path": "/apis/karpenter.sh/v1/nodepools/spot-pool", "status": 200, "in_flight": 1})
    );
    assert_eq!(
        log[1],
        json!({"server": "gitlab", "method": "GET", "path": "/api/v4/runners/all", "status": 200, "in_flight": 1})
    );
    assert_eq!(log[3]["path"], "/api/v4/version", "the query string, which may carry a token, is not logged");
    let raw_log = std::fs::read_to_string(sb.dir.join("requests.jsonl")).unwrap();
    let (kube_token, gitlab_token) = (sb.kube_token.clone(), sb.gitlab_token.clone());
    let output = sb.stop();
    for secret in [&kube_token, &gitlab_token, &runner_token] {
        assert!(!raw_log.contains(secret.as_str()), "a token in the request log");
        assert!(!output.contains(secret.as_str()), "a token in the sandbox output");
    }
    assert_eq!(output.trim(), "ready");
}

#[test]
fn discovery_is_served_aggregated_or_legacy_as_asked() {
    let sb = Sandbox::start("discovery", &[]);
    let accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
    let r = sb.k8s("GET", "/apis").header("Accept", accept).send().unwrap();
    assert_eq!(r.headers()["content-type"], "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList");
    let v: Value = r.json().unwrap();
    assert_eq!(v["kind"], "APIGroupDiscoveryList");
    let karpenter = v["items"].as_array().unwrap().iter().find(|g| g["metadata"]["name"] == "karpenter.sh").unwrap();
    let np = &karpenter["versions"][0]["resources"][0];
    assert_eq!((np["resource"].as_str(), np["scope"].as_str()), (Some("nodepools"), Some("Cluster")));
    assert_eq!(np["responseKind"], json!({"group": "karpenter.sh", "version": "v1", "kind": "NodePool"}));
    assert_eq!(np["subresources"][0]["subresource"], "status");
    let core: Value = sb.k8s("GET", "/api").header("Accept", accept).send().unwrap().json().unwrap();
    assert!(core["items"][0]["metadata"].get("name").is_none(), "the core group has no name");

    let r = sb.k8s("GET", "/apis").header("Accept", "application/json").send().unwrap();
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().unwrap();
    assert_eq!(v["kind"], "APIGroupList");
    let (code, list) = body(sb.k8s("GET", "/apis/karpenter.sh/v1").send().unwrap());
    assert_eq!(
        (code, list["kind"].as_str(), list["groupVersion"].as_str()),
        (200, Some("APIResourceList"), Some("karpenter.sh/v1"))
    );
    assert_eq!(
        body(sb.k8s("GET", "/apis/karpenter.sh/v1beta1").send().unwrap()).0,
        404,
        "only the storage version is served"
    );
}

#[test]
fn latency_delays_every_answer_and_rate_bounds_faults() {
    let sb = Sandbox::start(
        "latency",
        &[
            "--latency-ms",
            "150",
            "--fault",
            "gitlab:503:rate=0",
            "--fault",
            "k8s:500:rate=1,count=2,method=GET,path=/api/v1/namespaces",
        ],
    );
    for _ in 0..5 {
        let start = std::time::Instant::now();
        assert_eq!(sb.gl("GET", "/version").send().unwrap().status().as_u16(), 200, "rate=0 never strikes");
        assert!(start.elapsed() >= std::time::Duration::from_millis(150), "answer came before the added latency");
    }
    let codes: Vec<u16> =
        (0..3).map(|_| sb.k8s("GET", "/api/v1/namespaces").send().unwrap().status().as_u16()).collect();
    assert_eq!(codes, [500, 500, 200], "rate=1 strikes every matching request, count=2 of them");
    assert_eq!(sb.k8s("GET", "/api/v1/nodes").send().unwrap().status().as_u16(), 200, "path filter");
}

#[test]
fn watches_stream_changes_from_a_resource_version() {
    use std::io::{BufRead, BufReader};
    let sb = Sandbox::start("watch", &[]);
    // List, then watch from the list's resourceVersion, as kube-rs watchers do.
    let (_, list) = body(sb.k8s("GET", NP).send().unwrap());
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let stream = sb.k8s("GET", &format!("{NP}?watch=true&resourceVersion={rv}&timeoutSeconds=5")).send().unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    let patch = |w: i64| {
        sb.k8s("PATCH", &format!("{NP}/spot-pool"))
            .header("Content-Type", "application/merge-patch+json")
            .body(json!({"spec": {"weight": w}}).to_string())
            .send()
            .unwrap()
    };
    assert_eq!(patch(3).status().as_u16(), 200);
    assert_eq!(sb.k8s("DELETE", &format!("{NP}/system-pool")).send().unwrap().status().as_u16(), 200);
    // Karpenter's status updates interleave (the spec changed): the writes come in order.
    let events: Vec<Value> = BufReader::new(stream)
        .lines()
        .map(|l| serde_json::from_str::<Value>(&l.unwrap()).unwrap())
        .scan(false, |done, e| {
            if *done {
                return None;
            }
            *done = e["type"] == "DELETED";
            Some(e)
        })
        .collect();
    let first = &events[0];
    assert_eq!((first["type"].as_str(), first["object"]["spec"]["weight"].as_i64()), (Some("MODIFIED"), Some(3)));
    let second = events.last().unwrap();
    assert_eq!(
        (second["type"].as_str(), second["object"]["metadata"]["name"].as_str()),
        (Some("DELETED"), Some("system-pool"))
    );
    assert!(
        second["object"]["metadata"]["resourceVersion"].as_str().unwrap().parse::<u64>().unwrap()
            > rv.parse::<u64>().unwrap()
    );

    // Without a resourceVersion a watch starts with the current objects; the filter applies.
    let stream = sb
        .k8s("GET", &format!("{NP}?watch=1&fieldSelector=metadata.name%3Dspot-pool&timeoutSeconds=1"))
        .send()
        .unwrap();
    let events: Vec<Value> = BufReader::new(stream)
        .lines()
        .map(|l| serde_json::from_str::<Value>(&l.unwrap()).unwrap())
        .filter(|e| e["type"] == "ADDED")
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0]["type"].as_str(), events[0]["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("spot-pool"))
    );
    let unauthorized = sb.kube().get(format!("{}{NP}?watch=true", sb.kube_url)).send().unwrap();
    assert_eq!(unauthorized.status().as_u16(), 401);
}
