//! Starts the real `archshift sandbox` binary on loopback and talks to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Sandbox {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
    first_line: String,
    pub dir: PathBuf,
    pub kube_url: String,
    pub kube_token: String,
    pub ca_pem: String,
    pub gitlab_url: String,
    pub gitlab_token: String,
}

pub fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("archshift-test-{}-{name}-{}", std::process::id(), fastrand::u32(..)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Sandbox {
    pub fn start(name: &str, extra: &[&str]) -> Sandbox {
        install_crypto();
        let dir = scratch(name);
        let mut child = Command::new(env!("CARGO_BIN_EXE_archshift"))
            .arg("sandbox")
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start archshift sandbox");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "sandbox did not print ready");
        let kubeconfig: yaml_serde::Value =
            yaml_serde::from_str(&std::fs::read_to_string(dir.join("kubeconfig")).unwrap()).unwrap();
        let cluster = &kubeconfig["clusters"][0]["cluster"];
        let ca_b64 = cluster["certificate-authority-data"].as_str().unwrap();
        let ca_pem =
            String::from_utf8(base64::Engine::decode(&base64::engine::general_purpose::STANDARD, ca_b64).unwrap())
                .unwrap();
        let env = std::fs::read_to_string(dir.join("gitlab.env")).unwrap();
        let var = |k: &str| env.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap().to_string();
        Sandbox {
            child,
            stdout,
            first_line: line,
            kube_url: cluster["server"].as_str().unwrap().to_string(),
            kube_token: kubeconfig["users"][0]["user"]["token"].as_str().unwrap().to_string(),
            ca_pem,
            gitlab_url: var("GITLAB_URL"),
            gitlab_token: var("GITLAB_TOKEN"),
            dir,
        }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// Runs the machine's kubectl against the sandbox. A missing kubectl fails the test.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .output()
            .unwrap_or_else(|e| panic!("kubectl is required for this test (the machine image ships kubectl 1.32): {e}"))
    }

    /// `archshift MODE --plan plans/sandbox.yaml` against this sandbox, with `token` as
    /// GITLAB_TOKEN and no KUBECONFIG from the environment.
    pub fn archshift(&self, mode: &str, token: &str, extra: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_archshift"))
            .args([mode, "--plan", "plans/sandbox.yaml", "--kubeconfig", self.kubeconfig().to_str().unwrap()])
            .args(extra)
            .env("GITLAB_URL", &self.gitlab_url)
            .env("GITLAB_TOKEN", token)
            .env_remove("KUBECONFIG")
            .output()
            .unwrap()
    }

    /// `archshift ARGS...` against this sandbox (GITLAB_URL, GITLAB_TOKEN and --kubeconfig
    /// set), as a command to run or spawn.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_archshift"));
        c.args(args)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .env("GITLAB_URL", &self.gitlab_url)
            .env("GITLAB_TOKEN", &self.gitlab_token)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null());
        c
    }

    /// Requests the sandbox logged from index `from` on that may have stored something:
    /// everything but reads, SelfSubjectAccessReviews, CI lint and the migration's Lease
    /// (taken and given up by every run that may write; `tests/state.rs` checks it).
    pub fn writes_since(&self, from: usize) -> Vec<Value> {
        self.requests()[from..]
            .iter()
            .filter(|r| r["method"] != "GET")
            .filter(|r| !r["path"].as_str().is_some_and(|p| p.starts_with("/apis/coordination.k8s.io/v1/")))
            .filter(|r| r["path"] != "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
            .filter(|r| !r["path"].as_str().is_some_and(|p| p.ends_with("/ci/lint")))
            .cloned()
            .collect()
    }

    /// The migration's history in the cluster, read with kubectl: the names of its Secrets
    /// (in order) and the journal they hold, decompressed and joined.
    pub fn history(&self) -> (Vec<String>, String) {
        use std::io::Read as _;
        let out = self.kubectl(&[
            "get",
            "secrets",
            "-n",
            "gitlab-runner",
            "-l",
            "app.kubernetes.io/managed-by=archshift",
            "-o",
            "json",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut pieces: Vec<&Value> =
            list["items"].as_array().unwrap().iter().filter(|s| s["type"] == "archshift.io/journal.v1").collect();
        pieces.sort_by_key(|s| s["metadata"]["name"].as_str().unwrap().to_string());
        let mut journal = String::new();
        for s in &pieces {
            let b64 = s["data"]["journal.jsonl.gz"].as_str().unwrap();
            let gz = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap();
            flate2::read::MultiGzDecoder::new(&gz[..]).read_to_string(&mut journal).unwrap();
        }
        (pieces.iter().map(|s| s["metadata"]["name"].as_str().unwrap().to_string()).collect(), journal)
    }

    /// spot-pool's architecture values, read with kubectl, as kubectl prints them:
    /// `["amd64"]` or `["amd64","arm64"]`.
    pub fn pool_archs(&self) -> String {
        let out = self.kubectl(&[
            "get",
            "nodepools.karpenter.sh",
            "spot-pool",
            "-o",
            "jsonpath={.spec.template.spec.requirements[1].values}",
        ]);
        assert!(out.status.success(), "kubectl: {}", text(&out.stderr));
        text(&out.stdout)
    }

    /// The pipeline project's `.gitlab-ci.yml` on main, read through GitLab's API.
    pub fn pipeline_ci(&self) -> String {
        self.gl("GET", "/projects/platform%2Fkaniko-builder/repository/files/.gitlab-ci.yml/raw?ref=main")
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    /// The descriptions of platform's runners, read through GitLab's API, sorted.
    pub fn runner_descriptions(&self) -> Vec<String> {
        let list: Value = self.gl("GET", "/groups/platform/runners?per_page=100").send().unwrap().json().unwrap();
        let mut out: Vec<String> =
            list.as_array().unwrap().iter().map(|r| r["description"].as_str().unwrap().to_string()).collect();
        out.sort();
        out
    }

    pub fn kube(&self) -> reqwest::blocking::Client {
        let cert = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap();
        reqwest::blocking::Client::builder().tls_certs_only([cert]).timeout(Duration::from_secs(20)).build().unwrap()
    }

    pub fn k8s(&self, method: &str, path: &str) -> reqwest::blocking::RequestBuilder {
        self.kube().request(method.parse().unwrap(), format!("{}{path}", self.kube_url)).bearer_auth(&self.kube_token)
    }

    pub fn gl(&self, method: &str, path: &str) -> reqwest::blocking::RequestBuilder {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
            .request(method.parse().unwrap(), format!("{}/api/v4{path}", self.gitlab_url))
            .header("PRIVATE-TOKEN", &self.gitlab_token)
    }

    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("requests.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Polls until `f` returns Some, or fails after `secs`.
    pub fn wait_for<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the sandbox and returns what it printed.
    pub fn stop(mut self) -> String {
        use std::io::Read;
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the sandbox did not stop cleanly on SIGTERM: {status}");
        let mut out = self.first_line.clone();
        self.stdout.read_to_string(&mut out).unwrap();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut out).unwrap();
        }
        out
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

/// A runtime for the async adapters, with ring installed as rustls' provider (as `main` does).
pub fn runtime() -> tokio::runtime::Runtime {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime")
}
