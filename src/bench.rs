//! `archshift bench`: how fast archshift is against a fleet, measured in one run side by side
//! with the same client held to one request at a time, and with the network floor.
//!
//! The sandbox runs in this process with the fleet and the latency asked for; each audit is the
//! real binary (`archshift audit`) in a child process, so its wall time and its peak resident
//! memory are the audit's own. The floor is `max(ceil(requests / C), chain) x L`: `requests` as
//! the sandbox counted them, `chain` the longest run of requests that had to wait for each
//! other, measured as the audit's time with no concurrency limit divided by the latency.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use crate::ciyaml::{TagOptions, retag};
use crate::sandbox::faults::Server;
use crate::vocab::Arch;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub projects: usize,
    pub templates: usize,
    pub latency_ms: u64,
    pub concurrency: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub projects: usize,
    pub templates: usize,
    pub latency_ms: u64,
    pub concurrency: usize,
    /// Requests the audit made (both servers), as the sandbox counted them.
    pub requests: usize,
    pub audit_ms: f64,
    pub sequential_ms: f64,
    pub floor_ms: f64,
    /// The longest chain of requests that waited for each other.
    pub chain: u64,
    pub peak_rss_mb: f64,
    /// Most requests in flight at once during the audit: GitLab, Kubernetes.
    pub peak_in_flight: [usize; 2],
    pub ci_rewrite_ms: f64,
    pub frame_ms: f64,
}

/// One `archshift audit` in a child process: wall time and peak RSS (VmHWM, kB).
fn audit_child(exe: &Path, dir: &Path, env: &[(String, String)], concurrency: usize) -> Result<(f64, u64)> {
    let started = Instant::now();
    let mut child = Command::new(exe)
        .args(["audit", "--quiet", "--format", "json", "--concurrency", &concurrency.to_string()])
        .arg("--plan")
        .arg(dir.join("sandbox.yaml"))
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .arg("--out")
        .arg(dir.join(format!("audit-{concurrency}.json")))
        .envs(env.iter().cloned())
        .env_remove("KUBECONFIG")
        .spawn()
        .context("cannot start archshift audit")?;
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0;
    let status = loop {
        if let Ok(s) = std::fs::read_to_string(&status_file)
            && let Some(kb) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kb = peak_kb.max(kb);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if !matches!(status.code(), Some(0 | 2)) {
        bail!("archshift audit failed ({status}) at concurrency {concurrency}");
    }
    Ok((ms, peak_kb))
}

/// A pipeline of about `lines` lines: a template merged into every job, per-arch variables.
pub fn big_pipeline(lines: usize) -> String {
    let mut s = String::from("stages: [build]\n.tmpl: &tmpl\n  stage: build\n  image: docker:27\n\n");
    for i in 0..lines / 9 {
        let arch = if i % 2 == 0 { "amd64" } else { "arm64" };
        s.push_str(&format!(
            "build_{i}:\n  <<: *tmpl\n  variables:\n    ARCH: {arch}\n  script:\n    - make image # {arch}\n    - make push\n  when: on_success\n\n"
        ));
    }
    s
}

fn best_of<F: FnMut()>(runs: usize, mut f: F) -> f64 {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .fold(f64::INFINITY, f64::min)
}

/// The rewrite and proof of one 10,000-line CI file.
fn ci_rewrite_ms() -> f64 {
    let text = big_pipeline(10_000);
    let opts = TagOptions {
        default_tag: Some("$CICD_TAG_AMD64".into()),
        arch_tags: BTreeMap::from([(Arch::Amd64, "$CICD_TAG_AMD64".into()), (Arch::Arm64, "$CICD_TAG_ARM64".into())]),
        ..TagOptions::default()
    };
    best_of(5, || {
        let _ = retag(&text, &opts);
    })
}

/// One TUI frame (160x48, TestBackend) showing a 10,000-line diff, scrolled to its middle.
fn frame_ms() -> f64 {
    use crate::tui::app::{App, Mode, Msg};
    use crate::tui::update::update;
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    let spec_text = include_str!("../plans/sandbox.yaml");
    let Ok(spec) = crate::spec::MigrationPlan::parse(spec_text, "plans/sandbox.yaml") else { return f64::NAN };
    let mut plan = crate::phases::plan(&crate::model::ObservedState::default(), &spec, spec_text);
    let big = big_pipeline(10_000);
    let change = crate::model::Change::new(
        crate::model::ChangeId::from("cifile/bench/.gitlab-ci.yml"),
        crate::vocab::Phase::Pipeline,
        crate::model::ObjectRef::CiFile {
            project: "bench".into(),
            path: ".gitlab-ci.yml".into(),
            branch: "main".into(),
        },
        crate::model::Action::Update,
        "a 10,000-line file",
        crate::model::WriteMethod::GitLabCommit { branch: "main".into(), start_branch: None, merge_request: None },
    )
    .before(crate::model::Document::Text(String::new()))
    .after(crate::model::Document::Text(big));
    plan.phases = vec![crate::model::PhasePlan {
        changes: vec![change],
        ..crate::model::PhasePlan::new(crate::vocab::Phase::Pipeline)
    }];
    let mut app = App::new(Mode::ReadOnly, "bench", "bench", plan);
    update(&mut app, crate::tui::view::resized(ratatui::layout::Rect::new(0, 0, 160, 48)));
    let key = |c| Msg::Key(KeyEvent::new(c, KeyModifiers::NONE));
    update(&mut app, key(KeyCode::Enter));
    for _ in 0..5_000 {
        update(&mut app, key(KeyCode::Down));
    }
    let Ok(mut terminal) = ratatui::Terminal::new(ratatui::backend::TestBackend::new(160, 48));
    best_of(20, || {
        let _ = terminal.draw(|f| crate::tui::view::render(f, &app, crate::tui::view::Palette { color: true }));
    })
}

/// Runs the benchmark. `exe` is archshift itself (each audit runs as a child).
pub fn run(opts: &BenchOptions, exe: &Path) -> Result<BenchResult> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let dir = std::env::temp_dir().join(format!("archshift-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sandbox = runtime.block_on(crate::sandbox::Sandbox::start(crate::sandbox::Options {
        dir: Some(dir.clone()),
        latency_ms: opts.latency_ms,
        fleet: opts.projects,
        templates: Some(opts.templates),
        ..Default::default()
    }))?;
    std::fs::write(dir.join("sandbox.yaml"), include_str!("../plans/sandbox.yaml"))?;
    let gitlab_env = std::fs::read_to_string(dir.join("gitlab.env"))?;
    let env: Vec<(String, String)> =
        gitlab_env.lines().filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect();
    let c = opts.concurrency.max(1);

    sandbox.reset_counters();
    let (audit_ms, peak_kb) = audit_child(exe, &dir, &env, c)?;
    let requests = sandbox.requests_served(Server::GitLab) + sandbox.requests_served(Server::K8s);
    let peak_in_flight = [sandbox.peak_in_flight(Server::GitLab), sandbox.peak_in_flight(Server::K8s)];
    let (sequential_ms, _) = audit_child(exe, &dir, &env, 1)?;
    let (unbounded_ms, _) = audit_child(exe, &dir, &env, 100_000)?;
    sandbox.stop();
    let _ = std::fs::remove_dir_all(&dir);

    let latency = opts.latency_ms.max(1) as f64;
    let chain = (unbounded_ms / latency).floor() as u64;
    let floor_ms = (requests.div_ceil(c) as u64).max(chain) as f64 * latency;
    Ok(BenchResult {
        projects: opts.projects,
        templates: opts.templates,
        latency_ms: opts.latency_ms,
        concurrency: c,
        requests,
        audit_ms,
        sequential_ms,
        floor_ms,
        chain,
        peak_rss_mb: peak_kb as f64 / 1024.0,
        peak_in_flight,
        ci_rewrite_ms: ci_rewrite_ms(),
        frame_ms: frame_ms(),
    })
}

impl BenchResult {
    pub fn text(&self) -> String {
        format!(
            "archshift bench: {} projects, {} templates, {} ms latency, concurrency {}\n\
             requests      {}\n\
             audit         {:.0} ms ({:.2}x the floor of {:.0} ms = max(ceil({}/{}), chain {}) x {} ms)\n\
             sequential    {:.0} ms ({:.1}x the audit)\n\
             peak RSS      {:.1} MB\n\
             in flight     {} GitLab, {} Kubernetes at most\n\
             CI rewrite    {:.1} ms (one 10,000-line file, rewritten and proved)\n\
             TUI frame     {:.2} ms (a 10,000-line diff, 160x48)\n",
            self.projects,
            self.templates,
            self.latency_ms,
            self.concurrency,
            self.requests,
            self.audit_ms,
            self.audit_ms / self.floor_ms.max(1.0),
            self.floor_ms,
            self.requests,
            self.concurrency,
            self.chain,
            self.latency_ms,
            self.sequential_ms,
            self.sequential_ms / self.audit_ms.max(1.0),
            self.peak_rss_mb,
            self.peak_in_flight[0],
            self.peak_in_flight[1],
            self.ci_rewrite_ms,
            self.frame_ms,
        )
    }
}
