//! python-gitlab, a real GitLab client, against the sandbox. `scripts/setup-test-tools`
//! installs it (`.ci/run` runs that script); the test fails with that hint when it is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

mod common;

use std::process::Command;

use common::{Sandbox, text};

/// The project's set-up (`scripts/setup-test-tools`, run by `.ci/run`) installs python-gitlab;
/// `cargo test` installs nothing.
fn require_python_gitlab() {
    let has =
        Command::new("python3").args(["-c", "import gitlab"]).status().expect("python3 is required for this test");
    assert!(has.success(), "python-gitlab is not installed: run scripts/setup-test-tools (as .ci/run does) first");
}

const SCRIPT: &str = r#"
import os, sys, gitlab
gl = gitlab.Gitlab(os.environ["GITLAB_URL"], private_token=os.environ["GITLAB_TOKEN"])
gl.auth()
assert gl.user.username == "root"
runners = gl.runners_all.list(get_all=True)
assert [r.description for r in runners] == ["sandbox"], runners
detail = gl.runners.get(runners[0].id)
assert detail.tag_list == ["sandbox"] and detail.run_untagged is True and detail.status == "online"
import time; time.sleep(0.6)  # a few controller ticks: the manager keeps reporting under one system_id
managers = gl.http_get(f"/runners/{detail.id}/managers")
assert [(m["architecture"], m["status"]) for m in managers] == [("amd64", "online")], managers
p = gl.projects.get("platform/kaniko-builder")
p.variables.create({"key": "CICD_TAG_AMD64", "value": "sandbox-amd64", "raw": True})
v = p.variables.get("CICD_TAG_AMD64")
assert (v.value, v.protected, v.masked, v.raw, v.environment_scope) == ("sandbox-amd64", False, False, True, "*")
assert [x.key for x in p.variables.list(get_all=True)] == ["CICD_TAG_AMD64"]
f = p.files.get(file_path=".gitlab-ci.yml", ref="main")
text = f.decode().decode()
assert "build_arm64:" in text and len(f.blob_id) == 40 and len(f.last_commit_id) == 40
# Many pages: python-gitlab follows x-next-page / Link itself.
g = gl.groups.get("platform/fleet")
assert len(g.projects.list(get_all=True, per_page=7)) == 30
# Runner creation as python-gitlab sends it: GitLab's Grape validation errors come back as
# GitlabCreateError with GitLab's {"error": ...} text; a valid request returns the glrt- token.
group = gl.groups.get("platform")
try:
    gl.user.runners.create({"runner_type": "group_type", "group_id": "platform", "tag_list": ["x"]})
    sys.exit("expected a 400")
except gitlab.exceptions.GitlabCreateError as e:
    assert e.response_code == 400 and e.error_message == "group_id is invalid", (e.response_code, e.error_message)
r = gl.user.runners.create({"runner_type": "group_type", "group_id": group.id, "description": "sandbox-arm64",
                            "tag_list": ["sandbox-arm64"], "run_untagged": False})
assert r.token.startswith("glrt-"), r
created = gl.runners.get(r.id)
assert (created.status, created.online, created.tag_list) == ("never_contacted", None, ["sandbox-arm64"])
try:
    p.variables.get("NOPE")
    sys.exit("expected a 404")
except gitlab.exceptions.GitlabGetError as e:
    assert e.response_code == 404
print("ok")
"#;

#[test]
fn python_gitlab_lists_runners_reads_variables_and_files() {
    require_python_gitlab();
    let sb = Sandbox::start("python-gitlab", &["--fleet", "30"]);
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .env("GITLAB_URL", &sb.gitlab_url)
        .env("GITLAB_TOKEN", &sb.gitlab_token)
        .output()
        .expect("run python3");
    assert!(out.status.success(), "python-gitlab script failed:\n{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "ok");
}
