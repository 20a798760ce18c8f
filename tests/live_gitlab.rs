//! The GitLab adapter against the sandbox over loopback: what it reads, how it pages and
//! retries, the errors a person sees, and that it never writes or prints the token.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

mod common;

use std::time::Duration;

use archshift::live::gitlab::{GitLabError, GitLabReader, Options};
use archshift::live::secret::Token;
use archshift::spec::{RunnerScope, ScopeKind};
use common::{Sandbox, runtime};
use serde_json::json;

fn fast() -> Options {
    Options { backoff: Duration::from_millis(20), ..Options::default() }
}

fn reader(sb: &Sandbox, opts: Options) -> GitLabReader {
    GitLabReader::new(&sb.gitlab_url, Token::new(sb.gitlab_token.clone(), "GITLAB_TOKEN"), opts).unwrap()
}

fn group_scope(path: &str) -> RunnerScope {
    RunnerScope { kind: ScopeKind::Group, path: Some(path.into()) }
}

#[test]
fn reads_runners_variables_files_and_pages_without_writing() {
    let sb = Sandbox::start("live-gitlab-read", &["--fleet", "130"]);
    // A masked variable, set the way an operator would.
    let created = sb
        .gl("POST", "/projects/platform%2Fkaniko-builder/variables")
        .json(&json!({"key": "REGISTRY_PASSWORD", "value": "s3cr3t-value-123", "masked": true}))
        .send()
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let before = sb.requests().len();

    let rt = runtime();
    let gl = reader(&sb, fast());
    rt.block_on(async {
        assert!(!gl.version().await.unwrap().is_empty());
        let project = gl.project("platform/kaniko-builder").await.unwrap();
        assert_eq!((project.path.as_str(), project.default_branch.as_str()), ("platform/kaniko-builder", "main"));

        let runners = gl.runners(&group_scope("platform")).await.unwrap();
        assert_eq!(runners.len(), 1, "{runners:?}");
        let baseline = &runners[0];
        assert_eq!(baseline.tag_list, ["sandbox"]);
        assert!(baseline.is_online() && baseline.run_untagged);
        assert_eq!(baseline.manager_architectures, ["amd64"]);

        let vars = gl.project_variables("platform/kaniko-builder").await.unwrap();
        let secret = vars.iter().find(|v| v.key == "REGISTRY_PASSWORD").unwrap();
        assert!(secret.masked && secret.value.is_none(), "a masked value never leaves the adapter");

        let file = gl.ci_file("platform/kaniko-builder", ".gitlab-ci.yml", "main").await.unwrap().unwrap();
        assert!(file.content.contains("build_arm64:"));
        assert_eq!((file.blob_id.len(), file.last_commit_id.len()), (40, 40));
        assert_eq!(gl.ci_file("platform/kaniko-builder", "nope.yml", "main").await.unwrap(), None);

        // 130 fleet projects (the subgroup platform/fleet): two pages of 100.
        let fleet = gl.group_projects("platform/fleet").await.unwrap();
        assert_eq!(fleet.len(), 130);

        let lint = gl.ci_lint("platform/kaniko-builder", &file.content).await.unwrap();
        assert_eq!(lint["valid"], true, "{lint}");
    });
    let log = sb.requests();
    let writes: Vec<_> = log[before..].iter().filter(|r| r["method"] != "GET").collect();
    assert_eq!(writes.len(), 1, "only CI lint is posted: {writes:?}");
    assert!(writes[0]["path"].as_str().unwrap().ends_with("/ci/lint"));
    let pages: Vec<_> = log[before..]
        .iter()
        .filter(|r| r["path"].as_str().unwrap().starts_with("/api/v4/groups/platform%2Ffleet/projects"))
        .collect();
    assert_eq!(pages.len(), 2, "page 1, then the rest X-Total-Pages announces");
}

#[test]
fn transient_failures_are_retried_and_rate_limits_honoured() {
    let sb = Sandbox::start(
        "live-gitlab-retry",
        &[
            "--fault",
            "gitlab:503:count=2,path=/api/v4/version",
            "--fault",
            "gitlab:429:count=1,path=/api/v4/projects/*",
        ],
    );
    let rt = runtime();
    let gl = reader(&sb, fast());
    rt.block_on(async {
        assert!(!gl.version().await.unwrap().is_empty(), "two 503s, then an answer");
        let started = std::time::Instant::now();
        gl.project("platform/kaniko-builder").await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was waited for");
    });
    let statuses: Vec<u64> = sb
        .requests()
        .iter()
        .filter(|r| r["path"] == "/api/v4/version")
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [503, 503, 200]);
}

#[test]
fn errors_say_what_to_do_and_never_show_the_token() {
    let sb = Sandbox::start("live-gitlab-errors", &["--fault", "gitlab:502:path=/api/v4/groups/*"]);
    let rt = runtime();
    rt.block_on(async {
        let wrong =
            GitLabReader::new(&sb.gitlab_url, Token::new("glpat-wrong-token-value", "GITLAB_TOKEN"), fast()).unwrap();
        let e = wrong.version().await.unwrap_err();
        assert!(matches!(e, GitLabError::Unauthorized { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("401") && msg.contains("set GITLAB_TOKEN"), "{msg}");
        assert!(!msg.contains("glpat-wrong-token-value"));

        let gl = reader(&sb, Options { retries: 2, ..fast() });
        let e = gl.project("platform/no-such-project").await.unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("/projects/platform%2Fno-such-project was not found") && msg.contains("404 Project Not Found"),
            "{msg}"
        );

        let e = gl.group("platform").await.unwrap_err();
        assert_eq!(e.to_string(), "GitLab kept answering 502 to GET /groups/platform (3 attempts); try again later");

        let e = gl.ci_file("platform/no-such-project", ".gitlab-ci.yml", "main").await.unwrap_err();
        assert!(matches!(e, GitLabError::NotFound { .. }), "a missing project is not a missing file: {e:?}");
        for e in [
            format!("{e}"),
            format!("{e:?}"),
            format!("{gl_debug:?}", gl_debug = Token::new(sb.gitlab_token.clone(), "GITLAB_TOKEN")),
        ] {
            assert!(!e.contains(&sb.gitlab_token), "{e}");
        }
    });
    let unreachable =
        GitLabReader::new("http://127.0.0.1:9", Token::new("x", "GITLAB_TOKEN"), Options { retries: 0, ..fast() })
            .unwrap();
    let e = rt.block_on(unreachable.version()).unwrap_err();
    assert!(e.to_string().starts_with("cannot reach GitLab at http://127.0.0.1:9: "), "{e}");
}

/// One HTTP exchange on `listener` (bounded: 5 s), answered with `reply`; the request's head.
fn serve_once(listener: std::net::TcpListener, reply: String) -> std::thread::JoinHandle<Option<String>> {
    use std::io::{Read, Write};
    listener.set_nonblocking(false).unwrap();
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        listener.set_nonblocking(true).unwrap();
        let (mut conn, _) = loop {
            match listener.accept() {
                Ok(c) => break c,
                Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => return None,
            }
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        let n = conn.read(&mut buf).unwrap_or(0);
        let _ = conn.write_all(reply.as_bytes());
        Some(String::from_utf8_lossy(&buf[..n]).to_string())
    })
}

#[test]
fn a_redirect_to_another_origin_never_carries_the_token() {
    common::install_crypto();
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let elsewhere = format!("http://127.0.0.1:{}/api/v4/user", b.local_addr().unwrap().port());
    let url = format!("http://127.0.0.1:{}", a.local_addr().unwrap().port());
    let moved =
        format!("HTTP/1.1 302 Found\r\nLocation: {elsewhere}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let ok = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    let (first, second) = (serve_once(a, moved), serve_once(b, ok.to_string()));
    let gl = GitLabReader::new(&url, Token::new("glpat-secret-value", "GITLAB_TOKEN"), fast()).unwrap();
    let answer = runtime().block_on(gl.current_user());
    assert!(answer.is_err(), "a redirect elsewhere is not followed: {answer:?}");
    let asked = first.join().unwrap().expect("the configured origin was asked");
    assert!(asked.to_lowercase().contains("private-token: glpat-secret-value"), "{asked}");
    match second.join().unwrap() {
        None => {}
        Some(head) => assert!(!head.contains("glpat-secret-value"), "the token went elsewhere: {head}"),
    }
}
