//! `archshift plan` through the real binary against the sandbox: it reads both systems,
//! prints the plan, exits 2 with work pending, writes nothing and never prints a token.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

mod common;

use std::process::Command;

use common::{Sandbox, text};

fn plan(sb: &Sandbox, token: &str, extra: &[&str]) -> std::process::Output {
    sb.archshift("plan", token, extra)
}

#[test]
fn plan_reads_the_sandbox_and_shows_every_phase_pending() {
    let sb = Sandbox::start("cli-plan", &[]);
    let before = sb.requests().len();
    let out = plan(&sb, &sb.gitlab_token, &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "changes pending\n{stdout}\n{stderr}");
    for id in [
        "nodepool/spot-pool",
        "release/gitlab-runner-arm64",
        "cifile/platform/kaniko-builder/.gitlab-ci.yml",
        "argo/WorkflowTemplate/ci/build-images",
    ] {
        assert!(stdout.contains(id), "{id} missing from:\n{stdout}");
    }
    assert!(stdout.contains("note: the cluster does not serve clusterworkflowtemplates.argoproj.io"), "{stdout}");
    for output in [&stdout, &stderr] {
        assert!(!output.contains(&sb.gitlab_token) && !output.contains(&sb.kube_token), "a token was printed");
    }
    let writes = sb.writes_since(before);
    assert!(writes.is_empty(), "plan wrote: {writes:?}");
}

#[test]
fn plan_errors_are_one_line_a_person_can_act_on() {
    let sb = Sandbox::start("cli-plan-errors", &[]);
    let out = plan(&sb, "glpat-expired-token", &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("rejected the token from GITLAB_TOKEN (401 Unauthorized)"), "{err}");
    assert!(!err.contains("glpat-expired-token"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let out = plan(&sb, &sb.gitlab_token, &["--context", "prod-eu"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("context prod-eu"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_archshift"))
        .args(["plan", "--plan", "plans/sandbox.yaml"])
        .env_remove("GITLAB_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("set GITLAB_URL to the GitLab URL"), "{}", text(&out.stderr));
}

fn audit(sb: &Sandbox, extra: &[&str]) -> std::process::Output {
    sb.archshift("audit", &sb.gitlab_token, extra)
}

#[test]
fn audit_reports_the_fresh_world_as_pending_in_every_format_and_writes_nothing() {
    let sb = Sandbox::start("cli-audit", &[]);
    let before = sb.requests().len();
    let out = audit(&sb, &["--format", "json", "--quiet"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).is_empty(), "--quiet: {}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["version"], 2);
    assert_eq!(report["endpoints"]["gitlab"], sb.gitlab_url.as_str());
    let phases = report["phases"].as_array().unwrap();
    let ids: Vec<&str> = phases.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["nodepool", "runners", "pipeline", "workloads"]);
    for p in phases {
        assert!(["pending", "blocked"].contains(&p["status"].as_str().unwrap()), "{}", p["id"]);
        assert!(!p["changes"].as_array().unwrap().is_empty(), "{} has changes", p["id"]);
    }
    let codes: Vec<&str> =
        phases.iter().flat_map(|p| p["findings"].as_array().unwrap()).map(|f| f["code"].as_str().unwrap()).collect();
    for code in [
        "nodepool.widen-needed",
        "nodepool.waits-for-pins",
        "baseline.jobs-unpinned",
        "workloads.unpinned",
        "ordering.hazard",
    ] {
        assert!(codes.contains(&code), "{code} not in {codes:?}");
    }
    assert!(report["summary"]["pending_changes"].as_u64().unwrap() > 0);

    let dir = common::scratch("cli-audit-md");
    let md = dir.join("audit.md");
    let out = audit(&sb, &["--format", "markdown", "--out", md.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nothing is written"), "progress line: {}", text(&out.stderr));
    let written = std::fs::read_to_string(&md).unwrap();
    assert!(written.starts_with("## archshift audit\n") && written.contains("```diff\n"), "{written}");
    for output in [written, text(&out.stderr)] {
        assert!(!output.contains(&sb.gitlab_token) && !output.contains(&sb.kube_token), "a token was printed");
    }
    // Reads, and the preflight's SelfSubjectAccessReviews: nothing that stores anything.
    let writes = sb.writes_since(before);
    assert!(writes.is_empty(), "audit wrote: {writes:?}");
    let log = sb.requests();
    assert!(log[before..].iter().any(|r| r["path"] == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"));
}

#[test]
fn audit_preflight_reports_a_write_the_identity_may_not_make() {
    let sb = Sandbox::start("cli-audit-deny", &["--deny", "patch:nodepools.karpenter.sh"]);
    let out = audit(&sb, &["--format", "json", "--quiet"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = report["preflight"].as_array().unwrap();
    let verdict = |verb: &str, resource: &str| {
        checks.iter().find(|c| c["verb"] == verb && c["resource"] == resource).map(|c| c["allowed"].clone())
    };
    assert_eq!(verdict("patch", "nodepools"), Some(serde_json::json!(false)), "{checks:?}");
    assert_eq!(verdict("create", "releases"), Some(serde_json::json!(true)), "{checks:?}");
    let text_out = audit(&sb, &["--quiet"]);
    assert!(text(&text_out.stdout).contains("can-i no  patch nodepools.karpenter.sh"), "{}", text(&text_out.stdout));
}

#[test]
fn audit_reports_the_gitlab_role_each_write_needs_and_what_a_weaker_token_could_not_read() {
    let sb = Sandbox::start("cli-audit-role", &["--gitlab-access", "40"]);
    let before = sb.requests().len();
    let out = audit(&sb, &["--format", "json", "--quiet"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let access = report["gitlab_access"].as_array().unwrap();
    let check = |scope: &str, path: &str| {
        access.iter().find(|c| c["scope"] == scope && c["path"] == path).unwrap_or_else(|| panic!("{path}: {access:?}"))
    };
    let kaniko = check("project", "platform/kaniko-builder");
    assert_eq!(
        (kaniko["level"].as_u64(), kaniko["have"].as_str(), kaniko["allowed"].as_bool()),
        (Some(40), Some("Maintainer"), Some(true))
    );
    let group = check("group", "platform");
    assert_eq!((group["level"].as_u64(), group["allowed"].as_bool()), (Some(50), Some(false)), "{group}");
    assert_eq!(check("project", "platform/docs")["allowed"], true, "Maintainer may push a branch");
    let unreadable: Vec<&str> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["findings"].as_array().unwrap())
        .filter(|f| f["code"] == "gitlab.unreadable")
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    assert_eq!(unreadable.len(), 1, "the group's variables: {unreadable:?}");
    assert!(unreadable[0].contains("variables of group platform (403: reading them needs Owner)"), "{unreadable:?}");
    let writes = sb.writes_since(before);
    assert!(writes.is_empty(), "audit wrote: {writes:?}");

    // A Developer may not even list the group's runners: the plan cannot be made.
    let sb = Sandbox::start("cli-audit-developer", &["--gitlab-access", "30"]);
    let out = audit(&sb, &["--quiet"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("GITLAB_TOKEN may not GET /groups/platform/runners (403 Forbidden)") && err.contains("Maintainer"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // Root, an administrator, may do everything.
    let sb = Sandbox::start("cli-audit-admin", &[]);
    let report: serde_json::Value =
        serde_json::from_slice(&audit(&sb, &["--format", "json", "--quiet"]).stdout).unwrap();
    let access = report["gitlab_access"].as_array().unwrap();
    assert!(
        !access.is_empty() && access.iter().all(|c| c["allowed"] == true && c["have"] == "administrator"),
        "{access:?}"
    );
}

#[test]
fn a_gitlab_5xx_storm_an_unreachable_cluster_and_missing_crds_are_one_line_errors_or_findings() {
    let sb = Sandbox::start("cli-audit-storm", &["--fault", "gitlab:503"]);
    let out = plan(&sb, &sb.gitlab_token, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("GitLab kept answering 503") && err.contains("try again later"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!err.contains("panicked") && !err.contains(&sb.gitlab_token), "{err}");

    // A kubeconfig whose server nothing listens on.
    let sb = Sandbox::start("cli-audit-unreachable", &[]);
    let dir = common::scratch("cli-unreachable");
    let kubeconfig = std::fs::read_to_string(sb.kubeconfig()).unwrap().replace(&sb.kube_url, "https://127.0.0.1:9");
    let kubeconfig = common::write(&dir, "kubeconfig", &kubeconfig);
    let out = Command::new(env!("CARGO_BIN_EXE_archshift"))
        .args(["audit", "--plan", "plans/sandbox.yaml", "--quiet", "--kubeconfig", kubeconfig.to_str().unwrap()])
        .env("GITLAB_URL", &sb.gitlab_url)
        .env("GITLAB_TOKEN", &sb.gitlab_token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("127.0.0.1:9") && err.contains("archshift-sandbox"), "names the server and context: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // Karpenter's CRDs removed: the NodePool phase is an error finding, not a crash.
    let del = sb.kubectl(&["delete", "crd", "nodepools.karpenter.sh", "ec2nodeclasses.karpenter.k8s.aws"]);
    assert!(del.status.success(), "{}", text(&del.stderr));
    let report = sb.wait_for("the CRDs to go", 20, || {
        let out = audit(&sb, &["--format", "json", "--quiet"]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (report["phases"][0]["status"] == "error").then_some((out.status.code(), report))
    });
    assert_eq!(report.0, Some(2));
    let messages: Vec<&str> =
        report.1["phases"][0]["findings"].as_array().unwrap().iter().map(|f| f["message"].as_str().unwrap()).collect();
    assert!(messages.iter().any(|m| m.contains("does not serve nodepools.karpenter.sh")), "{messages:?}");
}

#[test]
fn a_projects_ci_config_path_is_the_file_read_and_one_kept_elsewhere_is_reported() {
    let sb = Sandbox::start("cli-ci-config-path", &[]);
    for (project, path) in
        [("platform%2Fdocs", "ci/pages.yml"), ("platform%2Fapi", ".gitlab-ci.yml@platform/ci-templates")]
    {
        let r = sb
            .gl("PUT", &format!("/projects/{project}"))
            .json(&serde_json::json!({"ci_config_path": path}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // docs now configures a file that does not exist; api's configuration lives elsewhere.
    let out = plan(&sb, &sb.gitlab_token, &["--format", "json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = plan["phases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["changes"].as_array().unwrap())
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(
        !ids.iter().any(|id| id.starts_with("cifile/platform/docs/") || id.starts_with("cifile/platform/api/")),
        "{ids:?}"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("project platform/api takes its CI configuration from .gitlab-ci.yml@platform/ci-templates"),
        "{err}"
    );
    let log = sb.requests();
    assert!(
        log.iter().any(|r| r["path"] == "/api/v4/projects/platform%2Fdocs/repository/files/ci%2Fpages.yml"),
        "docs' configured file was read"
    );
}

#[test]
fn certificates_are_verified_and_skipping_that_takes_an_explicit_flag_and_prints_a_warning() {
    // GitLab over HTTPS too, both certificates from the sandbox's own CA, which no system trusts.
    let sb = Sandbox::start("cli-tls", &["--gitlab-tls"]);
    assert!(sb.gitlab_url.starts_with("https://"), "{}", sb.gitlab_url);
    let ca = sb.dir.join("ca.pem");
    let kubeconfig = std::fs::read_to_string(sb.kubeconfig()).unwrap();
    let ca_line = kubeconfig.lines().find(|l| l.contains("certificate-authority-data:")).unwrap().to_string();
    let variant =
        |name: &str, replacement: &str| common::write(&sb.dir, name, &kubeconfig.replace(&ca_line, replacement));
    let insecure_kubeconfig = variant("insecure.kubeconfig", "    insecure-skip-tls-verify: true");
    let no_ca_kubeconfig = variant("no-ca.kubeconfig", "");
    let plan = |kubeconfig: &std::path::Path, trust_ca: bool, extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_archshift"));
        c.args(["plan", "--plan", "plans/sandbox.yaml", "--kubeconfig", kubeconfig.to_str().unwrap()])
            .args(extra)
            .env("GITLAB_URL", &sb.gitlab_url)
            .env("GITLAB_TOKEN", &sb.gitlab_token)
            .env_remove("KUBECONFIG")
            .env_remove("SSL_CERT_DIR");
        if trust_ca {
            c.env("SSL_CERT_FILE", &ca);
        } else {
            c.env_remove("SSL_CERT_FILE");
        }
        let out = c.output().unwrap();
        assert!(!text(&out.stdout).contains(&sb.gitlab_token) && !text(&out.stderr).contains(&sb.gitlab_token));
        (out.status.code(), text(&out.stderr))
    };
    let warning = "WARNING: --insecure-skip-tls-verify";

    // GitLab's certificate is checked: an unknown CA fails, one the system trusts works.
    let (code, err) = plan(&sb.kubeconfig(), false, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&sb.gitlab_url) && err.to_lowercase().contains("certificate"), "{err}");
    let (code, err) = plan(&sb.kubeconfig(), true, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(!err.contains(warning), "{err}");

    // The cluster's certificate is checked too: without the kubeconfig's CA only a CA the
    // system trusts will do.
    let (code, err) = plan(&no_ca_kubeconfig, true, &[]);
    assert_eq!(code, Some(2), "{err}");
    let plain = Sandbox::start("cli-tls-plain", &[]);
    let no_ca = common::write(
        &plain.dir,
        "no-ca.kubeconfig",
        &std::fs::read_to_string(plain.kubeconfig())
            .unwrap()
            .lines()
            .filter(|l| !l.contains("certificate-authority-data:"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_archshift"))
        .args(["plan", "--plan", "plans/sandbox.yaml", "--kubeconfig", no_ca.to_str().unwrap()])
        .env("GITLAB_URL", &plain.gitlab_url)
        .env("GITLAB_TOKEN", &plain.gitlab_token)
        .env_remove("KUBECONFIG")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Kubernetes API") && err.to_lowercase().contains("certificate"), "{err}");

    // A kubeconfig that turns verification off is refused unless the flag says so.
    let (code, err) = plan(&insecure_kubeconfig, true, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("sets insecure-skip-tls-verify") && err.contains("--insecure-skip-tls-verify"), "{err}");

    // The flag turns it off for both systems, and says so.
    for kubeconfig in [&insecure_kubeconfig, &no_ca_kubeconfig] {
        let (code, err) = plan(kubeconfig, false, &["--insecure-skip-tls-verify"]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(warning), "{err}");
    }
}
