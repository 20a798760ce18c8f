//! The sandbox's APIs at the HTTP level: optimistic locking, server-side apply conflicts,
//! dry-run, pagination, authentication, faults and the request log.
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
fn put_with_a_stale_resource_version_conflicts() {
    let sb = Sandbox::start("locking", &[]);
    let (_, obj) = body(sb.k8s("GET", &format!("{NP}/spot-pool")).send().unwrap());
    let mut first = obj.clone();
    first["spec"]["weight"] = json!(5);
    let (code, updated) = body(sb.k8s("PUT", &format!("{NP}/spot-pool")).json(&first).send().unwrap());
    assert_eq!(code, 200);
    assert_ne!(updated["metadata"]["resourceVersion"], obj["metadata"]["resourceVersion"]);
    assert_eq!(updated["metadata"]["generation"].as_i64(), obj["metadata"]["generation"].as_i64().map(|g| g + 1));
    // The same stale object again.
    let (code, v) = body(sb.k8s("PUT", &format!("{NP}/spot-pool")).json(&first).send().unwrap());
    assert_eq!(code, 409);
    assert_eq!(v["reason"], "Conflict");
    assert_eq!(
        v["message"],
        "Operation cannot be fulfilled on nodepools.karpenter.sh \"spot-pool\": the object has been modified; please apply your changes to the latest version and try again"
    );
    assert_eq!(v["details"], json!({"name": "spot-pool", "group": "karpenter.sh", "kind": "nodepools"}));
    // A custom resource cannot be replaced without a resourceVersion.
    let mut no_rv = updated.clone();
    no_rv["metadata"].as_object_mut().unwrap().remove("resourceVersion");
    let (code, v) = body(sb.k8s("PUT", &format!("{NP}/spot-pool")).json(&no_rv).send().unwrap());
    assert_eq!(code, 422);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"),
        "{v}"
    );
    // A merge patch carrying a stale resourceVersion conflicts too.
    let (code, _) = body(
        sb.k8s("PATCH", &format!("{NP}/spot-pool"))
            .header("Content-Type", "application/merge-patch+json")
            .body(
                json!({"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "spec": {"weight": 7}})
                    .to_string(),
            )
            .send()
            .unwrap(),
    );
    assert_eq!(code, 409);
}

#[test]
fn json_patch_test_failure_is_a_generic_422() {
    let sb = Sandbox::start("jsonpatch", &[]);
    let ops = json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
                     {"op": "replace", "path": "/spec/template/spec/requirements/1/values", "value": ["amd64", "arm64"]}]);
    let (code, v) = body(
        sb.k8s("PATCH", &format!("{NP}/spot-pool"))
            .header("Content-Type", "application/json-patch+json")
            .body(ops.to_string())
            .send()
            .unwrap(),
    );
    assert_eq!(code, 422);
    assert_eq!(
        v,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "the server rejected our request due to an error in our request", "reason": "Invalid", "details": {}, "code": 422})
    );
    let (code, v) = body(
        sb.k8s("PATCH", &format!("{NP}/spot-pool"))
            .header("Content-Type", "application/strategic-merge-patch+json")
            .body("{}")
            .send()
            .unwrap(),
    );
    assert_eq!((code, v["reason"].as_str()), (415, Some("UnsupportedMediaType")));
}

#[test]
fn server_side_apply_tracks_owners_and_reports_conflicts() {
    let sb = Sandbox::start("ssa", &[]);
    let apply = |manager: &str, force: bool, values: &[&str]| {
        let doc = json!({"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "spot-pool"},
                         "spec": {"template": {"spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
                                                        "requirements": [{"key": "kubernetes.io/arch", "operator": "In", "values": values}]}}}});
        let mut path = format!("{NP}/spot-pool?fieldManager={manager}");
        if force {
            path.push_str("&force=true");
        }
        body(
            sb.k8s("PATCH", &path)
                .header("Content-Type", "application/apply-patch+yaml")
                .body(doc.to_string())
                .send()
                .unwrap(),
        )
    };
    let (code, v) = apply("archshift", false, &["amd64", "arm64"]);
    assert_eq!(code, 409);
    assert_eq!(v["reason"], "Conflict");
    assert_eq!(v["details"]["causes"][0]["reason"], "FieldManagerConflict");
    assert_eq!(v["details"]["causes"][0]["field"], ".spec.template.spec.requirements");
    assert!(v["details"].get("name").is_none(), "apply conflicts carry only causes");
    let (code, v) = apply("archshift", true, &["amd64", "arm64"]);
    assert_eq!(code, 200, "{v}");
    let owners: Vec<&str> =
        v["metadata"]["managedFields"].as_array().unwrap().iter().filter_map(|m| m["manager"].as_str()).collect();
    assert!(owners.contains(&"archshift"), "{owners:?}");
    // Now archshift owns the list: another manager conflicts with archshift.
    let (code, v) = apply("someone-else", false, &["amd64"]);
    assert_eq!(code, 409);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("Apply failed with 1 conflict: conflict with \"archshift\": .spec.template.spec.requirements"),
        "{v}"
    );
    // Re-applying the same value is not a conflict.
    let (code, _) = apply("someone-else", false, &["amd64", "arm64"]);
    assert_eq!(code, 200);
    // Apply without a field manager is refused like the real server refuses it.
    let (code, v) = body(
        sb.k8s("PATCH", &format!("{NP}/spot-pool"))
            .header("Content-Type", "application/apply-patch+yaml")
            .body("{}")
            .send()
            .unwrap(),
    );
    assert_eq!(code, 422);
    assert_eq!(
        v["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    // Apply creates a missing object: 201.
    let doc = json!({"apiVersion": "helm.crossplane.io/v1beta1", "kind": "Release", "metadata": {"name": "gitlab-runner-arm64"},
                     "spec": {"forProvider": {"chart": {"name": "gitlab-runner", "repository": "https://charts.gitlab.io/", "version": "0.78.1"}, "namespace": "gitlab-runner"}}});
    let (code, _) = body(
        sb.k8s("PATCH", "/apis/helm.crossplane.io/v1beta1/releases/gitlab-runner-arm64?fieldManager=archshift")
            .header("Content-Type", "application/apply-patch+yaml")
            .body(doc.to_string())
            .send()
            .unwrap(),
    );
    assert_eq!(code, 201);
}

#[test]
fn dry_run_leaves_no_trace() {
    let sb = Sandbox::start("dryrun", &[]);
    let rel = json!({"apiVersion": "helm.crossplane.io/v1beta1", "kind": "Release", "metadata": {"name": "dry"},
                     "spec": {"forProvider": {"chart": {"name": "gitlab-runner", "version": "0.78.1"}, "namespace": "gitlab-runner"}}});
    let (code, v) =
        body(sb.k8s("POST", "/apis/helm.crossplane.io/v1beta1/releases?dryRun=All").json(&rel).send().unwrap());
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["metadata"]["name"], "dry");
    let (code, _) = body(sb.k8s("GET", "/apis/helm.crossplane.io/v1beta1/releases/dry").send().unwrap());
    assert_eq!(code, 404);
    let (_, before) = body(sb.k8s("GET", &format!("{NP}/spot-pool")).send().unwrap());
    let (code, v) = body(
        sb.k8s("PATCH", &format!("{NP}/spot-pool?dryRun=All"))
            .header("Content-Type", "application/merge-patch+json")
            .body(r#"{"spec":{"weight":3}}"#)
            .send()
            .unwrap(),
    );
    assert_eq!((code, v["spec"]["weight"].as_i64()), (200, Some(3)));
    let (_, after) = body(sb.k8s("GET", &format!("{NP}/spot-pool")).send().unwrap());
    assert_eq!(before, after, "dry-run patch changed the stored object");
    let (code, _) = body(sb.k8s("DELETE", &format!("{NP}/spot-pool?dryRun=All")).send().unwrap());
    assert_eq!(code, 200);
    assert_eq!(body(sb.k8s("GET", &format!("{NP}/spot-pool")).send().unwrap()).0, 200);
    // An invalid object is rejected in dry-run exactly as for real.
    let mut bad = rel.clone();
    bad["spec"]["forProvider"].as_object_mut().unwrap().remove("namespace");
    let (code, v) =
        body(sb.k8s("POST", "/apis/helm.crossplane.io/v1beta1/releases?dryRun=All").json(&bad).send().unwrap());
    assert_eq!(code, 422);
    assert_eq!(
        v["details"]["causes"][0],
        json!({"reason": "FieldValueRequired", "message": "Required value", "field": "spec.forProvider.namespace"})
    );
    assert_eq!(v["details"]["kind"], "Release");
}

#[test]
fn kubernetes_lists_page_with_limit_and_continue() {
    let sb = Sandbox::start("k8s-paging", &["--fleet", "3"]);
    let mut names = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    let mut list_rv = None;
    loop {
        let path = format!(
            "/apis/argoproj.io/v1alpha1/workflowtemplates?limit=5{}",
            if token.is_empty() { String::new() } else { format!("&continue={token}") }
        );
        let (code, v) = body(sb.k8s("GET", &path).send().unwrap());
        assert_eq!(code, 200);
        pages += 1;
        list_rv.get_or_insert_with(|| v["metadata"]["resourceVersion"].clone());
        names
            .extend(v["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_string()));
        match v["metadata"]["continue"].as_str() {
            Some(t) if !t.is_empty() => {
                assert!(v["metadata"]["remainingItemCount"].as_u64().unwrap() > 0);
                token = t.to_string();
            }
            _ => break,
        }
    }
    assert_eq!(names.len(), 4 + 12, "seed templates plus 4 per fleet project");
    assert_eq!(pages, 4);
    let mut dedup = names.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), names.len(), "no item twice");
    let (code, v) =
        body(sb.k8s("GET", "/apis/argoproj.io/v1alpha1/workflowtemplates?limit=5&continue=garbage").send().unwrap());
    assert_eq!((code, v["reason"].as_str()), (400, Some("BadRequest")));
    let (_, sel) = body(
        sb.k8s("GET", "/api/v1/nodes?labelSelector=karpenter.sh%2Fnodepool%3Dspot-pool%2Ckubernetes.io%2Farch%3Damd64")
            .send()
            .unwrap(),
    );
    assert_eq!(sel["items"].as_array().unwrap().len(), 1);
}

#[test]
fn gitlab_lists_page_like_gitlab() {
    let sb = Sandbox::start("gl-paging", &["--fleet", "45"]);
    let r = sb.gl("GET", "/groups/fleet/projects?per_page=20").send().unwrap();
    let h = |k: &str| r.headers().get(k).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    assert_eq!(
        (h("x-page"), h("x-per-page"), h("x-next-page"), h("x-prev-page"), h("x-total"), h("x-total-pages")),
        ("1".into(), "20".into(), "2".into(), "".into(), "45".into(), "3".into())
    );
    assert!(h("link").contains("rel=\"next\"") && h("link").contains("page=2"), "{}", h("link"));
    // Follow the pages until x-next-page is empty.
    let mut seen = 0;
    let mut page = "1".to_string();
    while !page.is_empty() {
        let r = sb.gl("GET", &format!("/groups/fleet/projects?per_page=20&page={page}")).send().unwrap();
        page = r.headers()["x-next-page"].to_str().unwrap().to_string();
        seen += r.json::<Vec<Value>>().unwrap().len();
    }
    assert_eq!(seen, 45);
    let r = sb.gl("GET", "/groups/fleet/projects?per_page=500").send().unwrap();
    assert_eq!(r.headers()["x-per-page"], "100", "per_page is capped at 100");
}

#[test]
fn gitlab_file_updates_use_last_commit_id_for_optimistic_locking() {
    let sb = Sandbox::start("gl-files", &[]);
    let (code, f) = body(
        sb.gl("GET", "/projects/platform%2Fkaniko-builder/repository/files/.gitlab-ci.yml?ref=main").send().unwrap(),
    );
    assert_eq!(code, 200);
    let last = f["last_commit_id"].as_str().unwrap().to_string();
    let update =
        |content: &str, last: &str| {
            body(sb.gl("PUT", "/projects/platform%2Fkaniko-builder/repository/files/.gitlab-ci.yml")
            .json(&json!({"branch": "main", "content": content, "commit_message": "edit", "last_commit_id": last}))
            .send()
            .unwrap())
        };
    let (code, v) = update("a: 1\n", &last);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v, json!({"file_path": ".gitlab-ci.yml", "branch": "main"}));
    let (code, v) = update("a: 2\n", &last);
    assert_eq!(code, 400);
    assert_eq!(v["message"], "You are attempting to update a file that has changed since you started editing it.");
    let (code, v) =
        body(sb.gl("GET", "/projects/platform%2Fkaniko-builder/repository/files/nope.yml?ref=main").send().unwrap());
    assert_eq!((code, v["message"].as_str()), (404, Some("404 File Not Found")));
    // Commits API: branch created from main, then the same request again is refused.
    let commit = json!({"branch": "archshift/x", "start_branch": "main", "commit_message": "c",
                        "actions": [{"action": "update", "file_path": ".gitlab-ci.yml", "content": "b: 1\n"}]});
    let (code, _) =
        body(sb.gl("POST", "/projects/platform%2Fkaniko-builder/repository/commits").json(&commit).send().unwrap());
    assert_eq!(code, 201);
    let (code, v) =
        body(sb.gl("POST", "/projects/platform%2Fkaniko-builder/repository/commits").json(&commit).send().unwrap());
    assert_eq!(code, 400);
    assert_eq!(
        v["message"],
        "A branch called 'archshift/x' already exists. Switch to that branch in order to make changes"
    );
}

#[test]
fn gitlab_runner_creation_and_variables_follow_gitlabs_rules() {
    let sb = Sandbox::start("gl-runners", &[]);
    // Grape validates the parameter types first: group_id is an integer, never a path.
    let (code, v) = body(
        sb.gl("POST", "/user/runners")
            .json(&json!({"runner_type": "group_type", "group_id": "platform", "run_untagged": "sometimes", "access_level": "everyone"}))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 400);
    assert_eq!(
        v,
        json!({"error": "group_id is invalid, access_level does not have a valid value, run_untagged is invalid"})
    );
    let (code, v) = body(
        sb.gl("POST", "/user/runners")
            .json(&json!({"runner_type": "group_type", "run_untagged": false}))
            .send()
            .unwrap(),
    );
    assert_eq!((code, v), (400, json!({"error": "group_id is missing"})));
    let (code, v) = body(
        sb.gl("POST", "/user/runners")
            .json(&json!({"runner_type": "group_type", "group_id": 101, "run_untagged": false}))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 400);
    assert_eq!(
        v["message"],
        "400 Bad request - Tags list can not be empty when runner is not allowed to pick untagged jobs"
    );
    let (code, v) = body(sb.gl("POST", "/user/runners").json(&json!({"runner_type": "group_type", "group_id": 101, "description": "sandbox-arm64", "tag_list": ["sandbox-arm64"], "run_untagged": false})).send().unwrap());
    assert_eq!(code, 201, "{v}");
    assert!(v["token"].as_str().unwrap().starts_with("glrt-"));
    let id = v["id"].as_u64().unwrap();
    let (_, detail) = body(sb.gl("GET", &format!("/runners/{id}")).send().unwrap());
    assert_eq!(
        (detail["status"].as_str(), detail["online"].clone(), detail["tag_list"].clone()),
        (Some("never_contacted"), Value::Null, json!(["sandbox-arm64"]))
    );
    assert_eq!(detail["run_untagged"], false);
    let (_, list) = body(sb.gl("GET", "/runners/all").send().unwrap());
    assert!(list.as_array().unwrap().iter().all(|r| r.get("tag_list").is_none()), "list items carry no tags");
    let (_, tagged) = body(sb.gl("GET", "/runners/all?tag_list=sandbox-arm64").send().unwrap());
    assert_eq!(tagged.as_array().unwrap().len(), 1);

    let vars = "/projects/platform%2Fkaniko-builder/variables";
    let (code, _) = body(
        sb.gl("POST", vars)
            .json(&json!({"key": "CICD_TAG_ARM64", "value": "sandbox-arm64", "raw": true}))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 201);
    let (code, v) = body(sb.gl("POST", vars).json(&json!({"key": "CICD_TAG_ARM64", "value": "x"})).send().unwrap());
    assert_eq!((code, v), (400, json!({"message": {"key": ["(CICD_TAG_ARM64) has already been taken"]}})));
    let (code, _) = body(
        sb.gl("POST", vars)
            .json(&json!({"key": "CICD_TAG_ARM64", "value": "prod", "environment_scope": "production"}))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 201);
    let (code, v) = body(sb.gl("GET", &format!("{vars}/CICD_TAG_ARM64")).send().unwrap());
    assert_eq!(
        (code, v["message"].as_str()),
        (409, Some("There are multiple variables with provided parameters. Please use 'filter[environment_scope]'"))
    );
    let (code, v) =
        body(sb.gl("GET", &format!("{vars}/CICD_TAG_ARM64?filter%5Benvironment_scope%5D=*")).send().unwrap());
    assert_eq!((code, v["value"].as_str()), (200, Some("sandbox-arm64")));
    let (code, v) = body(sb.gl("GET", &format!("{vars}/NOPE")).send().unwrap());
    assert_eq!((code, v["message"].as_str()), (404, Some("404 Variable Not Found")));
}

#[test]
fn ci_lint_parses_and_expands_tags_only_on_dry_run() {
    let sb = Sandbox::start("gl-lint", &[]);
    let lint = |content: &str, dry: bool| {
        body(
            sb.gl("POST", "/projects/platform%2Fkaniko-builder/ci/lint")
                .json(&json!({"content": content, "dry_run": dry, "include_jobs": true}))
                .send()
                .unwrap(),
        )
        .1
    };
    sb.gl("POST", "/projects/platform%2Fkaniko-builder/variables")
        .json(&json!({"key": "CICD_TAG_ARM64", "value": "sandbox-arm64"}))
        .send()
        .unwrap();
    let ci = "build_arm64:\n  tags: [$CICD_TAG_ARM64]\n  script: [make]\nother:\n  tags: [$UNDEFINED_TAG]\n  script: [make]\n";
    let v = lint(ci, true);
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["jobs"][0]["tag_list"], json!(["sandbox-arm64"]));
    assert_eq!(v["jobs"][1]["tag_list"], json!(["$UNDEFINED_TAG"]), "an undefined variable stays literal");
    let v = lint(ci, false);
    assert_eq!(v["jobs"][0]["tag_list"], json!(["$CICD_TAG_ARM64"]), "static lint shows the raw value");
    let v = lint("build:\n  script: [make\n", false);
    assert_eq!(v["valid"], false);
    assert!(v["errors"][0].as_str().unwrap().starts_with("(<unknown>): "), "{v}");
    let v = lint("build:\n  stage: build\n", false);
    assert_eq!(v["errors"], json!(["jobs:build config should implement the script:, run:, or trigger: keyword"]));
    let v = lint("build:\n  extends: .missing\n  script: [x]\n", false);
    assert_eq!(v["errors"], json!(["build: unknown keys in `extends` (.missing)"]));
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
        json!({"server": "k8s", "method": "GET", "path": "/apis/karpenter.sh/v1/nodepools/spot-pool", "status": 200})
    );
    assert_eq!(log[1], json!({"server": "gitlab", "method": "GET", "path": "/api/v4/runners/all", "status": 200}));
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
