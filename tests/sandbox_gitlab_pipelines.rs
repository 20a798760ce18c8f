//! Pipelines as GitLab runs them (stages, needs, rules, workflow rules, manual jobs played),
//! keyset pagination, the Files API's branch rule and GitLab's error shapes, through
//! python-gitlab where that is the client, over HTTP otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

mod common;

use std::process::Command;

use common::{Sandbox, text};
use serde_json::{Value, json};

fn python(sb: &Sandbox, script: &str) -> String {
    let has = Command::new("python3").args(["-c", "import gitlab"]).status().expect("python3");
    assert!(has.success(), "python-gitlab is not installed: run scripts/setup-test-tools first");
    let out = Command::new("python3")
        .args(["-c", script])
        .env("GITLAB_URL", &sb.gitlab_url)
        .env("GITLAB_TOKEN", &sb.gitlab_token)
        .output()
        .unwrap();
    assert!(out.status.success(), "python-gitlab script failed:\n{}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

const CI: &str = r#"stages: [build, test, deploy]
workflow:
  rules:
    - if: $CI_COMMIT_BRANCH
build:
  stage: build
  script: [make]
unit:
  stage: test
  needs: [build]
  script: [make test]
lint:
  stage: test
  script: [lint]
  rules:
    - if: $CI_COMMIT_BRANCH == "nope"
deploy:
  stage: deploy
  script: [./deploy]
  when: manual
"#;

#[test]
fn pipelines_follow_stages_needs_rules_and_manual_jobs() {
    let sb = Sandbox::start("gl-pipelines", &[]);
    let script = format!(
        r#"
import os, time, gitlab
gl = gitlab.Gitlab(os.environ["GITLAB_URL"], private_token=os.environ["GITLAB_TOKEN"])
p = gl.projects.get("platform/kaniko-builder")
f = p.files.get(file_path=".gitlab-ci.yml", ref="main")
f.content = {ci:?}
f.save(branch="main", commit_message="stages")
pl = p.pipelines.create({{"ref": "main"}})
jobs = {{j.name: j.status for j in pl.jobs.list(get_all=True)}}
# lint is left out by its rules; unit waits for build (needs), deploy for the test stage.
assert jobs.pop("build") in ("pending", "running"), jobs
assert jobs == {{"unit": "created", "deploy": "created"}}, jobs
def wait(pred, what):
    for _ in range(100):
        js = {{j.name: j for j in pl.jobs.list(get_all=True)}}
        if pred(js):
            return js
        time.sleep(0.1)
    raise SystemExit("timed out waiting for " + what + ": " + str({{n: j.status for n, j in js.items()}}))
js = wait(lambda js: js["deploy"].status == "manual", "deploy to be manual")
assert js["build"].status == "success" and js["unit"].status == "success", js
pl.refresh()
assert pl.status == "success", pl.status  # a manual job without rules does not block
p.jobs.get(js["deploy"].id, lazy=True).play()
wait(lambda js: js["deploy"].status == "success", "deploy to run once played")
# Rules that leave no job: GitLab refuses the pipeline.
f = p.files.get(file_path=".gitlab-ci.yml", ref="main")
f.content = "only_tags:\n  script: [x]\n  rules:\n    - if: $CI_COMMIT_TAG\n"
f.save(branch="main", commit_message="nothing for branches")
try:
    p.pipelines.create({{"ref": "main"}})
    raise SystemExit("expected a 400")
except gitlab.exceptions.GitlabCreateError as e:
    assert e.response_code == 400
    assert "The rules configuration prevented any jobs from being added to the pipeline" in str(e.error_message), e.error_message
print("ok")
"#,
        ci = CI
    );
    assert_eq!(python(&sb, &script).trim(), "ok");
}

#[test]
fn python_gitlab_follows_keyset_pages_and_unsupported_keyset_is_405() {
    let sb = Sandbox::start("gl-keyset", &["--fleet", "25"]);
    let out = python(
        &sb,
        r#"
import os, gitlab
gl = gitlab.Gitlab(os.environ["GITLAB_URL"], private_token=os.environ["GITLAB_TOKEN"])
ids = [p.id for p in gl.projects.list(pagination="keyset", order_by="id", sort="asc", per_page=7, iterator=True)]
assert ids == sorted(ids) and len(ids) == len(set(ids)) and len(ids) > 25, ids
print(len(ids))
"#,
    );
    let total: Value = sb.gl("GET", "/projects?per_page=100").send().unwrap().json().unwrap();
    assert_eq!(out.trim(), total.as_array().unwrap().len().to_string());
    let r = sb.gl("GET", "/projects?pagination=keyset&order_by=id&sort=asc&per_page=2").send().unwrap();
    assert!(r.headers().get("x-total").is_none(), "keyset pages carry no totals");
    assert!(r.headers()["link"].to_str().unwrap().contains("id_after="));
    let r = sb.gl("GET", "/projects/platform%2Fkaniko-builder/variables?pagination=keyset").send().unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let v: Value = r.json().unwrap();
    assert_eq!(v, json!({"error": "Keyset pagination is not yet available for this type of request"}));
}

#[test]
fn files_api_branch_rule_and_error_shapes_are_gitlabs() {
    let sb = Sandbox::start("gl-errors", &[]);
    let branch = json!({"branch": "archshift/x", "ref": "main"});
    assert_eq!(
        sb.gl("POST", "/projects/platform%2Fkaniko-builder/repository/branches")
            .json(&branch)
            .send()
            .unwrap()
            .status()
            .as_u16(),
        201
    );
    let update = json!({"branch": "archshift/x", "start_branch": "main", "content": "x: 1\n", "commit_message": "m"});
    let r = sb
        .gl("PUT", "/projects/platform%2Fkaniko-builder/repository/files/.gitlab-ci.yml")
        .json(&update)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().unwrap();
    assert_eq!(
        v["message"],
        "A branch called 'archshift/x' already exists. Switch to that branch in order to make changes"
    );

    for (path, want) in [
        ("/nothing/here", json!({"error": "404 Not Found"})),
        ("/projects/platform%2Fnope", json!({"message": "404 Project Not Found"})),
        ("/projects/platform%2Fkaniko-builder/pipelines/999999", json!({"message": "404 Not found"})),
        ("/projects/platform%2Fkaniko-builder/merge_requests/999", json!({"message": "404 Not found"})),
        ("/runners/999999", json!({"message": "404 Runner Not Found"})),
    ] {
        let r = sb.gl("GET", path).send().unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
        assert_eq!(r.json::<Value>().unwrap(), want, "{path}");
    }
}

#[test]
fn ci_lint_and_pipelines_resolve_gitlabs_own_templates() {
    let sb = Sandbox::start("gl-templates", &[]);
    let out = python(
        &sb,
        r#"
import os, gitlab
gl = gitlab.Gitlab(os.environ["GITLAB_URL"], private_token=os.environ["GITLAB_TOKEN"])
p = gl.projects.get("platform/kaniko-builder")
def lint(content):
    r = p.ci_lint.create({"content": content, "include_jobs": True})
    return r.valid, sorted(j["name"] for j in (r.jobs or [])), r.errors
for template, jobs in [
    ("Docker.gitlab-ci.yml", ["build", "build-master"]),
    ("Kaniko.gitlab-ci.yml", ["kaniko-build"]),
    ("Jobs/Build.gitlab-ci.yml", ["build"]),
    ("Jobs/Test.gitlab-ci.yml", ["test"]),
    ("Jobs/Code-Quality.gitlab-ci.yml", ["code_quality"]),
]:
    valid, names, errors = lint("include:\n  - template: " + template + "\n")
    assert valid and names == jobs, (template, valid, names, errors)
valid, names, errors = lint("include:\n  - template: Nope.gitlab-ci.yml\n")
assert not valid and errors == ["Included file `Nope.gitlab-ci.yml` is empty or does not exist!"], errors
# A pipeline from the Kaniko template: its rules find the Dockerfile.
f = p.files.get(file_path=".gitlab-ci.yml", ref="main")
f.content = "include:\n  - template: Kaniko.gitlab-ci.yml\n"
f.save(branch="main", commit_message="kaniko template")
pl = p.pipelines.create({"ref": "main"})
print(sorted(j.name for j in pl.jobs.list(get_all=True)))
"#,
    );
    assert_eq!(out.trim(), "['kaniko-build']");
}
