use std::collections::BTreeMap;

use super::ci::expand_existing;
use super::repo::{Repo, blob_id};

#[test]
fn variables_expand_once_and_unknown_ones_stay_literal() {
    let vars: BTreeMap<String, String> =
        [("TAG", "sandbox-arm64"), ("INDIRECT", "$TAG")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(expand_existing("$TAG", &vars), "sandbox-arm64");
    assert_eq!(expand_existing("${TAG}-x", &vars), "sandbox-arm64-x");
    assert_eq!(expand_existing("$MISSING", &vars), "$MISSING");
    assert_eq!(expand_existing("$INDIRECT", &vars), "$TAG", "values are not expanded again");
    assert_eq!(expand_existing("cost $5 and $", &vars), "cost $5 and $");
}

#[test]
fn blob_ids_are_gits() {
    // `printf 'hello\n' | git hash-object --stdin`
    assert_eq!(blob_id(b"hello\n"), "ce013625030ba8dba906f756967f9e9ca394464a");
}

#[test]
fn last_commit_id_is_the_last_commit_that_touched_the_file() {
    let files = |a: &str, b: &str| -> BTreeMap<String, Vec<u8>> {
        [("a".to_string(), a.as_bytes().to_vec()), ("b".to_string(), b.as_bytes().to_vec())].into()
    };
    let mut r = Repo::init("main", files("1", "1"), "t0");
    let c1 = r.head("main").unwrap().id.clone();
    let c2 = r.commit("main", None, files("2", "1"), "a changes", ("x", "x@y"), "t1").unwrap().id;
    let c3 = r.commit("main", None, files("2", "2"), "b changes", ("x", "x@y"), "t2").unwrap().id;
    assert_eq!(r.last_commit_for(&c3, "a").as_deref(), Some(c2.as_str()));
    assert_eq!(r.last_commit_for(&c3, "b").as_deref(), Some(c3.as_str()));
    assert_eq!(r.last_commit_for(&c2, "b").as_deref(), Some(c1.as_str()));
}

// Protocol rules through the handler, with the seeded world (the in-process tier).

use serde_json::{Value, json};

use crate::sandbox::inproc::InProc;

#[test]
fn lists_page_like_gitlab() {
    let mut sb = InProc::new(45);
    let a = sb.gl("GET", "/groups/platform%2Ffleet/projects?per_page=20", &Value::Null);
    let h = |k: &str| a.header(k);
    assert_eq!(
        (h("x-page"), h("x-per-page"), h("x-next-page"), h("x-prev-page"), h("x-total"), h("x-total-pages")),
        ("1".into(), "20".into(), "2".into(), "".into(), "45".into(), "3".into())
    );
    assert!(h("link").contains("rel=\"next\"") && h("link").contains("page=2"), "{}", h("link"));
    // Follow the pages until x-next-page is empty.
    let mut seen = 0;
    let mut page = "1".to_string();
    while !page.is_empty() {
        let a = sb.gl("GET", &format!("/groups/platform%2Ffleet/projects?per_page=20&page={page}"), &Value::Null);
        page = a.header("x-next-page");
        seen += a.json.as_array().unwrap().len();
    }
    assert_eq!(seen, 45);
    let a = sb.gl("GET", "/groups/platform%2Ffleet/projects?per_page=500", &Value::Null);
    assert_eq!(a.header("x-per-page"), "100", "per_page is capped at 100");
}

#[test]
fn file_updates_use_last_commit_id_for_optimistic_locking() {
    let mut sb = InProc::new(0);
    let f = sb.gl("GET", "/projects/platform%2Fkaniko-builder/repository/files/.gitlab-ci.yml?ref=main", &Value::Null);
    assert_eq!(f.code, 200);
    let last = f.json["last_commit_id"].as_str().unwrap().to_string();
    let mut update = |content: &str, last: &str| {
        sb.gl(
            "PUT",
            "/projects/platform%2Fkaniko-builder/repository/files/.gitlab-ci.yml",
            &json!({"branch": "main", "content": content, "commit_message": "edit", "last_commit_id": last}),
        )
    };
    let a = update("a: 1\n", &last);
    assert_eq!(a.code, 200, "{}", a.json);
    assert_eq!(a.json, json!({"file_path": ".gitlab-ci.yml", "branch": "main"}));
    let a = update("a: 2\n", &last);
    assert_eq!(a.code, 400);
    assert_eq!(a.json["message"], "You are attempting to update a file that has changed since you started editing it.");
    let a = sb.gl("GET", "/projects/platform%2Fkaniko-builder/repository/files/nope.yml?ref=main", &Value::Null);
    assert_eq!((a.code, a.json["message"].as_str()), (404, Some("404 File Not Found")));
    // Commits API: branch created from main, then the same request again is refused.
    let commit = json!({"branch": "archshift/x", "start_branch": "main", "commit_message": "c",
                        "actions": [{"action": "update", "file_path": ".gitlab-ci.yml", "content": "b: 1\n"}]});
    assert_eq!(sb.gl("POST", "/projects/platform%2Fkaniko-builder/repository/commits", &commit).code, 201);
    let a = sb.gl("POST", "/projects/platform%2Fkaniko-builder/repository/commits", &commit);
    assert_eq!(a.code, 400);
    assert_eq!(
        a.json["message"],
        "A branch called 'archshift/x' already exists. Switch to that branch in order to make changes"
    );
}

#[test]
fn runner_creation_and_variables_follow_gitlabs_rules() {
    let mut sb = InProc::new(0);
    // Grape validates the parameter types first: group_id is an integer, never a path.
    let a = sb.gl(
        "POST",
        "/user/runners",
        &json!({"runner_type": "group_type", "group_id": "platform", "run_untagged": "sometimes", "access_level": "everyone"}),
    );
    assert_eq!(a.code, 400);
    assert_eq!(
        a.json,
        json!({"error": "group_id is invalid, access_level does not have a valid value, run_untagged is invalid"})
    );
    let a = sb.gl("POST", "/user/runners", &json!({"runner_type": "group_type", "run_untagged": false}));
    assert_eq!((a.code, a.json), (400, json!({"error": "group_id is missing"})));
    let a =
        sb.gl("POST", "/user/runners", &json!({"runner_type": "group_type", "group_id": 101, "run_untagged": false}));
    assert_eq!(a.code, 400);
    assert_eq!(
        a.json["message"],
        "400 Bad request - Tags list can not be empty when runner is not allowed to pick untagged jobs"
    );
    let a = sb.gl(
        "POST",
        "/user/runners",
        &json!({"runner_type": "group_type", "group_id": 101, "description": "sandbox-arm64", "tag_list": ["sandbox-arm64"], "run_untagged": false}),
    );
    assert_eq!(a.code, 201, "{}", a.json);
    assert!(a.json["token"].as_str().unwrap().starts_with("glrt-"));
    let id = a.json["id"].as_u64().unwrap();
    let detail = sb.gl("GET", &format!("/runners/{id}"), &Value::Null).json;
    assert_eq!(
        (detail["status"].as_str(), detail["online"].clone(), detail["tag_list"].clone()),
        (Some("never_contacted"), Value::Null, json!(["sandbox-arm64"]))
    );
    assert_eq!(detail["run_untagged"], false);
    let list = sb.gl("GET", "/runners/all", &Value::Null).json;
    assert!(list.as_array().unwrap().iter().all(|r| r.get("tag_list").is_none()), "list items carry no tags");
    let tagged = sb.gl("GET", "/runners/all?tag_list=sandbox-arm64", &Value::Null).json;
    assert_eq!(tagged.as_array().unwrap().len(), 1);

    let vars = "/projects/platform%2Fkaniko-builder/variables";
    let a = sb.gl("POST", vars, &json!({"key": "CICD_TAG_ARM64", "value": "sandbox-arm64", "raw": true}));
    assert_eq!(a.code, 201);
    let a = sb.gl("POST", vars, &json!({"key": "CICD_TAG_ARM64", "value": "x"}));
    assert_eq!((a.code, a.json), (400, json!({"message": {"key": ["(CICD_TAG_ARM64) has already been taken"]}})));
    let a = sb.gl("POST", vars, &json!({"key": "CICD_TAG_ARM64", "value": "prod", "environment_scope": "production"}));
    assert_eq!(a.code, 201);
    let a = sb.gl("GET", &format!("{vars}/CICD_TAG_ARM64"), &Value::Null);
    assert_eq!(
        (a.code, a.json["message"].as_str()),
        (409, Some("There are multiple variables with provided parameters. Please use 'filter[environment_scope]'"))
    );
    let a = sb.gl("GET", &format!("{vars}/CICD_TAG_ARM64?filter%5Benvironment_scope%5D=*"), &Value::Null);
    assert_eq!((a.code, a.json["value"].as_str()), (200, Some("sandbox-arm64")));
    let a = sb.gl("GET", &format!("{vars}/NOPE"), &Value::Null);
    assert_eq!((a.code, a.json["message"].as_str()), (404, Some("404 Variable Not Found")));
}

#[test]
fn ci_lint_parses_and_expands_tags_only_on_dry_run() {
    let mut sb = InProc::new(0);
    sb.gl(
        "POST",
        "/projects/platform%2Fkaniko-builder/variables",
        &json!({"key": "CICD_TAG_ARM64", "value": "sandbox-arm64"}),
    );
    let mut lint = |content: &str, dry: bool| {
        sb.gl(
            "POST",
            "/projects/platform%2Fkaniko-builder/ci/lint",
            &json!({"content": content, "dry_run": dry, "include_jobs": true}),
        )
        .json
    };
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
