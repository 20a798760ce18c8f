//! The embedded sandbox: a simulated Kubernetes API server and GitLab API on loopback,
//! written from the API reference, not from archshift's client code, so that a
//! misunderstanding in the client is caught by the server instead of mirrored.
//!
//! `archshift sandbox --dir DIR` runs it; tests, the demo and benchmarks start it in-process
//! with [`Sandbox::start`].

pub(crate) mod controllers;
pub(crate) mod exchange;
pub mod faults;
pub(crate) mod gitlab;
pub(crate) mod http;
#[cfg(test)]
pub(crate) mod inproc;
pub(crate) mod k8s;
pub(crate) mod seed;
pub(crate) mod tls;
pub(crate) mod watch;

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use exchange::{Reply, Request};
use faults::{Fault, Server};
pub use k8s::review::Denial;

/// How to start the sandbox.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Where kubeconfig, gitlab.env and requests.jsonl go.
    pub dir: Option<PathBuf>,
    pub latency_ms: u64,
    /// Extra GitLab projects (and 4x Argo templates) for benchmarks.
    pub fleet: usize,
    /// Argo templates of the fleet (default 4 per fleet project).
    pub templates: Option<usize>,
    pub faults: Vec<Fault>,
    /// How often the simulated controllers run.
    pub tick_ms: Option<u64>,
    /// What the Kubernetes identity may not do (a restricted user, for denied preflights).
    pub deny: Vec<Denial>,
    /// The GitLab token's access level on every group and project (30 Developer, 40
    /// Maintainer, 50 Owner); `None` makes it root, an administrator.
    pub gitlab_access: Option<u8>,
    /// Serve GitLab over HTTPS too, with the API server's certificate (its CA in `ca.pem`).
    pub gitlab_tls: bool,
}

/// Both simulated systems, behind one lock (handlers never await while holding it).
pub(crate) struct World {
    pub kube: k8s::KubeState,
    pub gitlab: gitlab::GitLabState,
    pub sim: controllers::Memory,
}

impl World {
    /// The seeded world (plus `fleet` extra projects), as the controllers leave it after one
    /// pass: it has been running before anyone looks.
    pub(crate) fn seeded(gitlab_url: &str, fleet: usize, templates: Option<usize>, tick: Duration) -> World {
        let mut world = World {
            kube: k8s::KubeState::new(),
            gitlab: gitlab::GitLabState::new(gitlab_url),
            sim: controllers::Memory::default(),
        };
        seed::default_world(&mut world, gitlab_url);
        if fleet > 0 || templates.is_some_and(|t| t > 0) {
            seed::fleet_of(&mut world, fleet, templates.unwrap_or(4 * fleet));
        }
        controllers::reconcile(&mut world, tick, &[]);
        world
    }
}

pub(crate) struct Shared {
    world: Mutex<World>,
    pub faults: Mutex<Vec<Fault>>,
    pub latency: Duration,
    log: Mutex<Option<File>>,
    kube_token: String,
    gitlab_token: String,
    /// Requests being answered now, and the most there ever were, per server (Kubernetes,
    /// GitLab): what a client's concurrency limit is checked against.
    pub in_flight: [std::sync::atomic::AtomicUsize; 2],
    pub peak: [std::sync::atomic::AtomicUsize; 2],
    /// Requests answered, per server.
    pub served: [std::sync::atomic::AtomicUsize; 2],
}

impl Shared {
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn log(&self, server: Server, method: &str, path: &str, status: u16, fault: Option<&str>, in_flight: usize) {
        self.served[server.index()].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(f) = self.log.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            http::log_line(f, server, method, path, status, fault, in_flight);
        }
    }

    pub fn authorized(&self, server: Server, req: &Request) -> bool {
        let bearer = req.headers.get("authorization").and_then(|a| a.strip_prefix("Bearer ")).map(str::trim);
        match server {
            Server::K8s => bearer == Some(self.kube_token.as_str()),
            Server::GitLab => {
                let token = req
                    .headers
                    .get("private-token")
                    .map(String::as_str)
                    .or(bearer)
                    .or(req.query.get("private_token").map(String::as_str));
                token == Some(self.gitlab_token.as_str())
            }
        }
    }

    /// Hands an authenticated request to its simulator; a Kubernetes watch streams.
    pub fn dispatch(self: &Arc<Self>, server: Server, req: &Request) -> Reply {
        match server {
            Server::K8s
                if req.method == "GET" && matches!(req.query.get("watch").map(String::as_str), Some("true" | "1")) =>
            {
                watch::start(self, req)
            }
            Server::K8s => self.world().kube.handle(req),
            Server::GitLab => self.world().gitlab.handle(req),
        }
    }

    /// A `conflict` fault: someone else writes the target first.
    pub fn concurrent_write(&self, server: Server, req: &Request) {
        let mut world = self.world();
        match server {
            Server::K8s if matches!(req.method.as_str(), "PUT" | "PATCH" | "DELETE") => {
                let Some(rp) = k8s::path::ResourcePath::parse(&req.path) else { return };
                let Some(name) = rp.name.as_deref() else { return };
                let ns = rp.namespace.as_deref().unwrap_or("");
                let kind = world.kube.registry.find(&rp.group, &rp.version, &rp.plural).map(|r| r.kind.clone());
                if let Some(kind) = kind
                    && let Some(mut obj) = world.kube.get(&kind, ns, name).cloned()
                {
                    let n = obj["metadata"]["annotations"]["sandbox.archshift.io/concurrent-writes"]
                        .as_str()
                        .and_then(|x| x.parse::<u64>().ok())
                        .unwrap_or(0)
                        + 1;
                    obj["metadata"]["annotations"]["sandbox.archshift.io/concurrent-writes"] =
                        serde_json::json!(n.to_string());
                    let _ = world.kube.put(obj, "concurrent-writer");
                }
            }
            Server::GitLab if matches!(req.method.as_str(), "PUT" | "POST") => {
                let seg: Vec<&str> = req.path.trim_matches('/').split('/').collect();
                if let ["api", "v4", "projects", id, "repository", "files", file] = seg.as_slice() {
                    let branch = gitlab_param(req, "branch").unwrap_or_else(|| "main".into());
                    world.gitlab.concurrent_edit(id, &exchange::percent_decode(file), &branch);
                } else if let ["api", "v4", "projects", id, "repository", "commits"] = seg.as_slice() {
                    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
                    let branch = body["branch"].as_str().unwrap_or("main").to_string();
                    for a in body["actions"].as_array().into_iter().flatten() {
                        if let Some(p) = a["file_path"].as_str() {
                            world.gitlab.concurrent_edit(id, p, &branch);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

fn gitlab_param(req: &Request, key: &str) -> Option<String> {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&req.body)
        && let Some(s) = v[key].as_str()
    {
        return Some(s.to_string());
    }
    req.query.get(key).cloned()
}

/// A running sandbox. Dropping it stops nothing; call [`Sandbox::stop`] or end the runtime.
pub struct Sandbox {
    pub k8s_url: String,
    pub gitlab_url: String,
    pub(crate) shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    kube_token: String,
    gitlab_token: String,
    /// The CA that signed the API server's certificate.
    pub ca_pem: String,
}

impl Sandbox {
    pub async fn start(opts: Options) -> io::Result<Sandbox> {
        let (k8s_listener, k8s_addr) = http::bind().await?;
        let (gl_listener, gl_addr) = http::bind().await?;
        let tls = tls::generate().map_err(io::Error::other)?;
        let k8s_url = format!("https://{k8s_addr}");
        let gitlab_url = format!("{}://{gl_addr}", if opts.gitlab_tls { "https" } else { "http" });
        let kube_token = random_token("sandbox-");
        let gitlab_token = random_token("glpat-");
        let tick = Duration::from_millis(opts.tick_ms.unwrap_or(200));
        let mut world = World::seeded(&gitlab_url, opts.fleet, opts.templates, tick);
        world.kube.server_address = k8s_addr.to_string();
        world.kube.identity.denied = opts.deny.clone();
        world.gitlab.access = opts.gitlab_access;
        let log = match &opts.dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                Some(OpenOptions::new().create(true).append(true).open(d.join("requests.jsonl"))?)
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            world: Mutex::new(world),
            faults: Mutex::new(opts.faults.clone()),
            latency: Duration::from_millis(opts.latency_ms),
            log: Mutex::new(log),
            kube_token: kube_token.clone(),
            gitlab_token: gitlab_token.clone(),
            in_flight: Default::default(),
            peak: Default::default(),
            served: Default::default(),
        });
        let tasks = vec![
            tokio::spawn(http::serve(
                gl_listener,
                Server::GitLab,
                shared.clone(),
                opts.gitlab_tls.then(|| tls.acceptor.clone()),
            )),
            tokio::spawn(http::serve(k8s_listener, Server::K8s, shared.clone(), Some(tls.acceptor))),
            tokio::spawn(controllers::run(shared.clone(), tick)),
        ];
        let sandbox = Sandbox { k8s_url, gitlab_url, shared, tasks, kube_token, gitlab_token, ca_pem: tls.ca_pem };
        if let Some(d) = &opts.dir {
            sandbox.write_files(d)?;
        }
        Ok(sandbox)
    }

    /// Writes `kubeconfig` and `gitlab.env` (mode 0600: they hold the tokens), and `ca.pem`,
    /// the CA that signed both servers' certificate.
    pub fn write_files(&self, dir: &Path) -> io::Result<()> {
        std::fs::write(dir.join("ca.pem"), &self.ca_pem)?;
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: archshift-sandbox\n  cluster:\n    server: {}\n    certificate-authority-data: {}\ncontexts:\n- name: archshift-sandbox\n  context:\n    cluster: archshift-sandbox\n    user: archshift-sandbox\n    namespace: default\ncurrent-context: archshift-sandbox\nusers:\n- name: archshift-sandbox\n  user:\n    token: {}\n",
            self.k8s_url,
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &self.ca_pem),
            self.kube_token
        );
        write_private(&dir.join("kubeconfig"), &kubeconfig)?;
        write_private(
            &dir.join("gitlab.env"),
            &format!("GITLAB_URL={}\nGITLAB_TOKEN={}\n", self.gitlab_url, self.gitlab_token),
        )
    }

    /// The most requests `server` was answering at once since the last reset.
    pub fn peak_in_flight(&self, server: Server) -> usize {
        self.shared.peak[server.index()].load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Requests `server` answered since the last reset.
    pub fn requests_served(&self, server: Server) -> usize {
        self.shared.served[server.index()].load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts counting afresh (peak and requests), for a measurement.
    pub fn reset_counters(&self) {
        for i in 0..2 {
            self.shared.peak[i].store(0, std::sync::atomic::Ordering::Relaxed);
            self.shared.served[i].store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub fn add_fault(&self, fault: Fault) {
        self.shared.faults.lock().unwrap_or_else(|e| e.into_inner()).push(fault);
    }

    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

fn write_private(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = OpenOptions::new();
    o.create(true).write(true).truncate(true);
    #[cfg(unix)]
    o.mode(0o600);
    o.open(path)?.write_all(text.as_bytes())
}

fn random_token(prefix: &str) -> String {
    let s: String = std::iter::repeat_with(fastrand::alphanumeric).take(24).collect();
    format!("{prefix}{s}")
}

/// `archshift sandbox`: start, write the files, print `ready`, run until SIGINT/SIGTERM.
pub async fn run_until_signal(opts: Options) -> io::Result<()> {
    let sandbox = Sandbox::start(opts).await?;
    {
        use std::io::Write;
        let mut out = io::stdout().lock();
        writeln!(out, "ready")?;
        out.flush()?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    sandbox.stop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn starts_in_process_and_serves_both_apis() {
        // reqwest is built without a default provider (see Cargo.toml): install ring's.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = std::env::temp_dir().join(format!("archshift-inproc-{}", std::process::id()));
        let sb =
            Sandbox::start(Options { dir: Some(dir.clone()), tick_ms: Some(50), ..Default::default() }).await.unwrap();
        assert!(sb.k8s_url.starts_with("https://127.0.0.1:"));
        let text = std::fs::read_to_string(dir.join("gitlab.env")).unwrap();
        assert!(text.starts_with(&format!("GITLAB_URL={}\nGITLAB_TOKEN=glpat-", sb.gitlab_url)));
        let gl = reqwest::Client::new()
            .get(format!("{}/api/v4/version", sb.gitlab_url))
            .header("PRIVATE-TOKEN", sb.gitlab_token.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(gl.status().as_u16(), 200);
        // Faults can also be set on a running sandbox.
        sb.add_fault("gitlab:503:count=1,path=/api/v4/version".parse().unwrap());
        let version = |sb: &Sandbox| {
            reqwest::Client::new()
                .get(format!("{}/api/v4/version", sb.gitlab_url))
                .header("PRIVATE-TOKEN", sb.gitlab_token.clone())
                .send()
        };
        assert_eq!(version(&sb).await.unwrap().status().as_u16(), 503);
        assert_eq!(version(&sb).await.unwrap().status().as_u16(), 200);
        // The world is shared: a controller tick has run and the baseline runner is online.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let online = sb.shared.world().gitlab.runners.iter().any(|r| r.status() == "online");
        assert!(online);
        sb.stop();
        let _ = std::fs::remove_dir_all(dir);
    }
}
