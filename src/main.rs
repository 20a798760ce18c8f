//! The `archshift` command line: parse, pick a mode, map outcomes to exit codes.
//!
//! Exit codes (documented in the README): 0 success / nothing to do, 1 error,
//! 2 changes pending (audit, plan, ci-tags --check), 3 plan stale or a precondition failed.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};

use archshift::ciyaml::{self, CiYamlError, TagOptions};
use archshift::model::Arch;
use archshift::spec::MigrationPlan;

const EXIT_ERROR: u8 = 1;
const EXIT_PENDING: u8 = 2;

#[derive(Parser)]
#[command(
    name = "archshift",
    version,
    about = "Move GitLab CI runners on Kubernetes from amd64-only to amd64 + arm64, safely"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Operator-guided migration session in the terminal (default: ./archshift.yaml)
    Tui(TuiArgs),
    /// The whole migration against the embedded sandbox in the terminal UI, no cluster needed
    Demo {
        /// Where the sandbox writes kubeconfig, gitlab.env and requests.jsonl (so kubectl can
        /// watch the same world); default a temporary directory
        #[arg(long)]
        sandbox_dir: Option<PathBuf>,
    },
    /// Read-only report of what is done, pending and risky; changes nothing
    Audit(AuditArgs),
    /// Read the live cluster and GitLab (nothing written) and show the changes the plan would
    /// make, with diffs and findings; exit 2 when changes are pending or risks found
    Plan(PlanCmdArgs),
    /// Apply a saved plan exactly (or refuse it), or plan and apply a plan file in one go
    Apply(ApplyArgs),
    /// Go back to the amd64-only baseline runner, undoing what the journal says archshift wrote
    Rollback(RollbackArgs),
    /// The migration's history (its journal, in the cluster or a --journal file), read only
    #[command(subcommand)]
    Journal(JournalCmd),
    /// Run the simulated Kubernetes and GitLab APIs on loopback
    Sandbox(SandboxArgs),
    /// Check a plan file and print it with every default filled in
    Validate {
        /// The plan file (YAML, apiVersion archshift/v1)
        plan: PathBuf,
    },
    /// Tag the jobs of a .gitlab-ci.yml, changing nothing else
    CiTags(CiTagsArgs),
    /// Measure an audit of a fleet against the in-process sandbox, beside the sequential
    /// client and the network floor; and a CI rewrite and a TUI frame of 10,000 lines
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// GitLab projects in the fleet
    #[arg(long, default_value_t = 300)]
    projects: usize,
    /// Argo WorkflowTemplates in the fleet
    #[arg(long, default_value_t = 1200)]
    templates: usize,
    /// Milliseconds the sandbox adds to every answer
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// Requests in flight at most, per server
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// text or json
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
}

#[derive(Args)]
struct TuiArgs {
    /// The plan file
    #[arg(long, short = 'p', default_value = "archshift.yaml")]
    plan: PathBuf,
    /// Replay this saved plan instead of planning afresh
    #[arg(long)]
    saved: Option<PathBuf>,
    /// Look, never write: the write keys do nothing and are not shown
    #[arg(long)]
    read_only: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(clap::Subcommand)]
enum JournalCmd {
    /// Print every record of the migration's history, oldest first (nothing is written)
    Show(JournalShowArgs),
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["saved", "plan"])))]
struct JournalShowArgs {
    /// A saved plan of the migration
    saved: Option<PathBuf>,
    /// A plan file of the migration
    #[arg(long, short = 'p')]
    plan: Option<PathBuf>,
    /// text, or json: the records as they are stored, one per line
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
struct LiveArgs {
    /// The plan file
    #[arg(long, short = 'p', default_value = "plans/sandbox.yaml")]
    plan: PathBuf,
    #[command(flatten)]
    conn: ConnArgs,
}

/// How to reach the cluster, and how hard to press both systems.
#[derive(Args)]
struct ConnArgs {
    /// Kubeconfig file (default: KUBECONFIG, ~/.kube/config, or in-cluster)
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the plan's target.kubeContext, else the current one)
    #[arg(long)]
    context: Option<String>,
    /// Requests in flight at most, per server
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds one request to the cluster or GitLab may take before it counts as failed (a
    /// read is tried again; a write is read back, never repeated)
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    timeout: u64,
    /// Do not verify the cluster's and GitLab's TLS certificates (anyone on the path can then
    /// read the tokens and change what archshift sends). Also needed when the kubeconfig sets
    /// insecure-skip-tls-verify, which is refused otherwise
    #[arg(long)]
    insecure_skip_tls_verify: bool,
}

impl ConnArgs {
    fn kube(&self) -> archshift::live::kube::Connect {
        archshift::live::kube::Connect {
            timeout: std::time::Duration::from_secs(self.timeout.max(1)),
            insecure_skip_tls_verify: self.insecure_skip_tls_verify,
        }
    }
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["saved", "plan"])))]
struct ApplyArgs {
    /// A saved plan (`archshift plan --out FILE`) to replay: refused (exit 3) when edited, made
    /// against another cluster or GitLab, or when what it changes has changed since
    saved: Option<PathBuf>,
    /// Plan this plan file against the live systems now, then apply it
    #[arg(long, short = 'p')]
    plan: Option<PathBuf>,
    /// Apply without asking (otherwise each phase asks on the terminal first)
    #[arg(long)]
    yes: bool,
    /// Only this phase (1 NodePool, 2 Runners, 3 Pipeline, 4 Workloads); refused while what
    /// it depends on in other phases is not in place
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=4))]
    phase: Option<u8>,
    /// Write through the risks, denied permissions and blocked changes the plan reports
    /// (they are printed first); blocked changes themselves are never written
    #[arg(long)]
    force: bool,
    /// text, or json: one event per line for CI pipelines
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Where apply and rollback connect and journal.
#[derive(Args)]
struct EngineArgs {
    /// Keep the journal in this local file instead of the migration's history in the
    /// cluster (Secrets in the runners' namespace, shared by every machine and directory)
    #[arg(long)]
    journal: Option<PathBuf>,
    #[command(flatten)]
    conn: ConnArgs,
}

impl EngineArgs {
    fn options(
        &self,
        saved: Option<&PathBuf>,
        plan: Option<&PathBuf>,
        phase: Option<archshift::vocab::Phase>,
    ) -> Result<archshift::engine::session::Options> {
        use archshift::engine::session::{Options, Source};
        let source = match (saved, plan) {
            (Some(saved), _) => Source::Saved(saved.clone()),
            (None, Some(plan)) => Source::Spec(plan.clone()),
            (None, None) => bail!("give a saved plan, or --plan FILE"),
        };
        Ok(Options {
            source,
            kubeconfig: self.conn.kubeconfig.clone(),
            context: self.conn.context.clone(),
            journal: self.journal.clone(),
            phase,
            concurrency: self.conn.concurrency,
            gitlab: None,
            timeout: std::time::Duration::from_secs(self.conn.timeout.max(1)),
            insecure_skip_tls_verify: self.conn.insecure_skip_tls_verify,
            read_only: false,
        })
    }
}

/// Asks on the terminal before a phase's first write, naming where it writes; only `y` goes.
fn terminal_confirm(
    yes: bool,
    verb: &'static str,
    cluster: String,
    context: String,
    gitlab: String,
) -> impl FnMut(archshift::vocab::Phase, &[&archshift::model::Change]) -> bool + Send + Sync {
    move |phase, changes| {
        if yes {
            return true;
        }
        eprintln!(
            "\n{verb} Phase {} {}: {} change(s) to cluster {cluster} (context {context}) and GitLab {gitlab}:",
            phase.number(),
            phase.title(),
            changes.len()
        );
        for c in changes {
            eprintln!("  - [{}] {} ({})", c.id, c.summary, c.target);
        }
        eprint!("{verb}? Only 'y' proceeds: ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).is_ok() && answer.trim() == "y"
    }
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["saved", "plan"])))]
struct RollbackArgs {
    /// The saved plan that was applied (any saved plan or plan file of the migration reads
    /// the same history)
    saved: Option<PathBuf>,
    /// The plan file that was applied with `apply --plan`
    #[arg(long, short = 'p')]
    plan: Option<PathBuf>,
    /// Roll back without asking
    #[arg(long)]
    yes: bool,
    /// Show what would be undone, write nothing (exit 2 when something would be)
    #[arg(long)]
    dry_run: bool,
    /// Go ahead although something changed since archshift wrote it (a risk is reported)
    #[arg(long)]
    force: bool,
    /// text, or json: one event per line
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
struct PlanCmdArgs {
    #[command(flatten)]
    live: LiveArgs,
    /// Also save the plan here (0600), for `archshift apply FILE` to replay exactly
    #[arg(long, value_name = "SAVED")]
    out: Option<PathBuf>,
    /// text (diffs for a person) or json (the Plan as data: every change with its write
    /// method, preconditions, bindings, reversal and verification)
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
}

#[derive(Args)]
struct AuditArgs {
    #[command(flatten)]
    live: LiveArgs,
    /// text, json (versioned, see README) or markdown (for a merge request)
    #[arg(long, default_value = "text", value_parser = ["text", "json", "markdown"])]
    format: String,
    /// Write the report here instead of standard output
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress lines on stderr
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(Args)]
struct SandboxArgs {
    /// Where to write kubeconfig, gitlab.env and requests.jsonl
    #[arg(long)]
    dir: PathBuf,
    /// Milliseconds added to every answer
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Seed N more GitLab projects and 4N Argo templates
    #[arg(long, default_value_t = 0)]
    fleet: usize,
    /// SERVER:KIND[:OPTS], e.g. gitlab:429:rate=0.2 or k8s:conflict:count=1,path=/apis/karpenter.sh/*
    #[arg(long, value_name = "SPEC", value_parser = parse_fault)]
    fault: Vec<archshift::sandbox::faults::Fault>,
    /// VERB:RESOURCE the Kubernetes identity may not use, e.g. patch:nodepools.karpenter.sh or *:secrets
    #[arg(long, value_name = "VERB:RESOURCE", value_parser = parse_denial)]
    deny: Vec<archshift::sandbox::Denial>,
    /// The GitLab token's access level instead of administrator: 10 Guest, 20 Reporter,
    /// 30 Developer, 40 Maintainer, 50 Owner (on every group and project)
    #[arg(long, value_name = "LEVEL", value_parser = parse_access_level)]
    gitlab_access: Option<u8>,
    /// Serve GitLab over HTTPS as well, with a certificate from the sandbox's own CA (DIR/ca.pem)
    #[arg(long)]
    gitlab_tls: bool,
}

fn parse_access_level(s: &str) -> Result<u8, String> {
    match s.parse::<u8>() {
        Ok(level @ (10 | 20 | 30 | 40 | 50)) => Ok(level),
        _ => Err("one of 10, 20, 30, 40, 50".into()),
    }
}

fn parse_denial(s: &str) -> Result<archshift::sandbox::Denial, String> {
    s.parse()
}

fn parse_fault(s: &str) -> Result<archshift::sandbox::faults::Fault, String> {
    s.parse()
}

#[derive(Args)]
struct CiTagsArgs {
    /// The CI file, or - for standard input
    file: String,
    /// Tag for every untagged job that no other option covers
    #[arg(long, value_name = "TAG")]
    default_tag: Option<String>,
    /// Tag for jobs that build one architecture, e.g. arm64='$CICD_TAG_ARM64'
    #[arg(long, value_name = "ARCH=TAG", value_parser = parse_arch_tag)]
    arch_tag: Vec<(Arch, String)>,
    /// Tag for a named job; wins over architecture detection
    #[arg(long, value_name = "JOB=TAG", value_parser = parse_job_tag)]
    job_tag: Vec<(String, String)>,
    /// A file the CI file includes locally (`include: local:`), in include order: the
    /// templates it defines resolve `extends:`
    #[arg(long, value_name = "FILE")]
    include: Vec<PathBuf>,
    /// Write the result back to FILE instead of printing it
    #[arg(long, conflicts_with = "check")]
    in_place: bool,
    /// Write nothing; exit 2 if the file would change, 0 if not
    #[arg(long)]
    check: bool,
}

fn parse_arch_tag(s: &str) -> Result<(Arch, String), String> {
    let (arch, tag) = s.split_once('=').ok_or_else(|| format!("expected ARCH=TAG, got `{s}`"))?;
    let arch = Arch::from_alias(arch).ok_or_else(|| format!("unknown architecture `{arch}`: use amd64 or arm64"))?;
    non_empty_tag(tag).map(|t| (arch, t))
}

fn parse_job_tag(s: &str) -> Result<(String, String), String> {
    let (job, tag) = s.split_once('=').ok_or_else(|| format!("expected JOB=TAG, got `{s}`"))?;
    if job.is_empty() {
        return Err(format!("no job name in `{s}`"));
    }
    non_empty_tag(tag).map(|t| (job.to_string(), t))
}

fn non_empty_tag(tag: &str) -> Result<String, String> {
    if tag.trim().is_empty() { Err("the tag is empty".into()) } else { Ok(tag.to_string()) }
}

fn main() -> ExitCode {
    // kube is built on ring and reqwest without a provider: install ring's before any TLS
    // connection, or rustls panics at the first one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // clap exits 2 on usage errors; 2 means "changes pending" here, so usage errors are 1.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_ERROR } else { 0 });
        }
    };
    // No subcommand: the TUI on ./archshift.yaml when there is one, else the help.
    let command = match cli.command {
        Some(c) => c,
        // Parsed like `archshift tui`, so its defaults are the subcommand's.
        None if Path::new("archshift.yaml").is_file() => match Cli::try_parse_from(["archshift", "tui"]) {
            Ok(Cli { command: Some(tui) }) => tui,
            _ => return ExitCode::from(EXIT_ERROR),
        },
        None => {
            let _ = <Cli as clap::CommandFactory>::command().print_help();
            return ExitCode::SUCCESS;
        }
    };
    match run(command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("archshift: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run(command: Command) -> Result<u8> {
    match command {
        Command::Validate { plan } => validate(&plan),
        Command::CiTags(args) => ci_tags(args),
        Command::Tui(args) => tui(args),
        Command::Demo { sandbox_dir } => archshift::tui::demo(sandbox_dir).map(|()| 0),
        Command::Audit(args) => audit(args),
        Command::Plan(args) => plan(args),
        Command::Apply(args) => apply(args),
        Command::Rollback(args) => rollback(args),
        Command::Journal(JournalCmd::Show(args)) => journal_show(args),
        Command::Sandbox(args) => sandbox(args),
        Command::Bench(args) => bench(args),
    }
}

fn tui(args: TuiArgs) -> Result<u8> {
    let plan = if args.saved.is_some() { None } else { Some(&args.plan) };
    archshift::tui::run(archshift::tui::TuiOptions {
        session: args.engine.options(args.saved.as_ref(), plan, None)?,
        read_only: args.read_only,
        save_dir: PathBuf::from("plans"),
    })?;
    Ok(0)
}

fn bench(args: BenchArgs) -> Result<u8> {
    let opts = archshift::bench::BenchOptions {
        projects: args.projects,
        templates: args.templates,
        latency_ms: args.latency_ms,
        concurrency: args.concurrency,
    };
    let exe = std::env::current_exe().context("cannot find the archshift binary")?;
    let result = archshift::bench::run(&opts, &exe)?;
    if args.format == "json" {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", result.text());
    }
    Ok(0)
}

/// Reads the plan file and observes both systems through the read-only adapters.
struct Live {
    spec: MigrationPlan,
    text: String,
    kube: archshift::live::kube::KubeReader,
    gitlab: archshift::live::gitlab::GitLabReader,
    context: Option<String>,
    runtime: tokio::runtime::Runtime,
}

/// TLS verification is on unless `--insecure-skip-tls-verify` turns it off; then every run
/// says so.
fn warn_insecure(kube: &archshift::live::kube::KubeReader, gitlab_url: &str) {
    if kube.insecure() {
        eprintln!(
            "archshift: WARNING: --insecure-skip-tls-verify: neither the cluster's nor GitLab's certificate is checked; anyone on the path can read the tokens and change what archshift sends"
        );
    }
    if let Some(host) = plain_http_host(gitlab_url) {
        eprintln!(
            "archshift: WARNING: GitLab at {gitlab_url} is plain http: the token goes to {host} in clear text; use https"
        );
    }
}

/// The host of a plain `http://` URL that leaves this machine (loopback is not warned about:
/// the token does not cross a network).
fn plain_http_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or("").to_string(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h).to_string(),
    };
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    (!loopback).then_some(host)
}

/// Reads the plan file and connects the read-only adapters (`--concurrency` bounds both).
fn connect_live(args: &LiveArgs) -> Result<Live> {
    use archshift::live::{gitlab, kube::KubeReader};
    let text = std::fs::read_to_string(&args.plan)
        .with_context(|| format!("cannot read plan file {}", args.plan.display()))?;
    let spec = MigrationPlan::parse(&text, &args.plan.display().to_string())?;
    let (url, token) = archshift::engine::session::gitlab_endpoint(&spec)?;
    let conn = &args.conn;
    let context = conn.context.clone().or_else(|| spec.target.kube_context.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (kube, gitlab) = runtime.block_on(async {
        let kube = KubeReader::connect_with(conn.kubeconfig.as_deref(), context.as_deref(), conn.kube())
            .await?
            .with_concurrency(conn.concurrency);
        let gl = gitlab::GitLabReader::new(
            &url,
            token,
            gitlab::Options {
                concurrency: conn.concurrency.max(1),
                timeout: std::time::Duration::from_secs(conn.timeout.max(1)),
                insecure_skip_tls_verify: conn.insecure_skip_tls_verify,
                ..gitlab::Options::default()
            },
        )?;
        anyhow::Ok((kube, gl))
    })?;
    warn_insecure(&kube, gitlab.url());
    Ok(Live { spec, text, kube, gitlab, context, runtime })
}

/// Progress of a read on stderr: a bar on a terminal, one plain line per step otherwise.
struct Reporter {
    bar: Option<indicatif::ProgressBar>,
}

impl Reporter {
    fn new() -> Reporter {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template("{spinner} reading {msg} [{bar:30}] {pos}/{len} CI files")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Reporter { bar }
    }

    fn report(&self, p: archshift::live::observe::Progress) {
        use archshift::live::observe::Progress;
        match (&self.bar, p) {
            (Some(bar), Progress::Reading(what)) => bar.set_message(what),
            (Some(bar), Progress::Files { done, total }) => {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
            (None, Progress::Reading(what)) => eprintln!("archshift: reading {what}"),
            (None, Progress::Files { done, total }) if done == 0 || done == total => {
                eprintln!("archshift: {done}/{total} CI files of the group's other projects read");
            }
            (None, Progress::Files { .. }) => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `archshift plan`: observe through the read-only adapters, plan, print. Writes nothing.
fn plan(args: PlanCmdArgs) -> Result<u8> {
    let Live { spec, text, kube, gitlab, runtime, .. } = connect_live(&args.live)?;
    let observation = runtime.block_on(archshift::live::observe::observe(&spec, &kube, &gitlab, &|_| {}))?;
    let plan = archshift::phases::plan(&observation.state, &spec, &text);
    if let Some(out) = &args.out {
        if let Some((_, what)) = observation.unreadable.first() {
            bail!("not saving a plan built on an incomplete read: {what}");
        }
        // The seal's key lives in the cluster beside the runners, made here the first time:
        // the one write `plan` makes, so that only someone who can read it can seal a plan.
        let at = archshift::engine::saved::SealRef::for_migration(
            &archshift::phases::runners::namespace(&observation.state, &spec),
            &spec.metadata.name,
        );
        let conn = &args.live.conn;
        let context = conn.context.clone().or_else(|| spec.target.kube_context.clone());
        let key = runtime
            .block_on(async {
                let writer = archshift::live::kube::KubeWriter::connect_with(
                    conn.kubeconfig.as_deref(),
                    context.as_deref(),
                    conn.kube(),
                )
                .await?;
                archshift::engine::session::seal_key(&writer, &at, true).await
            })
            .with_context(|| {
                format!(
                    "cannot seal the saved plan: its key is kept in Secret {}/{} (plan --out needs get and create on secrets there)",
                    at.namespace, at.secret
                )
            })?
            .context("no seal key")?;
        let saved = archshift::engine::saved::SavedPlan::seal(
            &args.live.plan.display().to_string(),
            &text,
            plan.clone(),
            at,
            &key,
        );
        write_private(out, saved.to_json().as_bytes())?;
        eprintln!("archshift: saved the plan to {} (apply it with `archshift apply {}`)", out.display(), out.display());
    }
    let mut out = std::io::stdout().lock();
    if args.format == "json" {
        // The same data a saved plan holds; notes go to stderr so stdout stays one document.
        serde_json::to_writer_pretty(&mut out, &plan)?;
        writeln!(out)?;
        for kind in &observation.not_served {
            eprintln!("note: the cluster does not serve {kind}; nothing of that kind was read");
        }
        for (_, what) in &observation.unreadable {
            eprintln!("warning: {what}");
        }
    } else {
        out.write_all(archshift::audit::render::plan_text(&plan, std::io::stdout().is_terminal()).as_bytes())?;
        for kind in &observation.not_served {
            writeln!(out, "note: the cluster does not serve {kind}; nothing of that kind was read")?;
        }
        for (_, what) in &observation.unreadable {
            writeln!(out, "warning: {what}")?;
        }
    }
    let pending = plan.changes().next().is_some() || plan.blocked().next().is_some();
    let risky =
        plan.findings().any(|f| f.status == archshift::model::Status::Risk) || !observation.unreadable.is_empty();
    Ok(if pending || risky { EXIT_PENDING } else { 0 })
}

/// `archshift audit`: the same read, reported per phase as text, JSON or Markdown.
fn audit(args: AuditArgs) -> Result<u8> {
    let Live { spec, text, kube, gitlab, context, runtime } = connect_live(&args.live)?;
    let reporter = (!args.quiet).then(|| {
        eprintln!(
            "archshift: reading the cluster (context {}) and GitLab {}; nothing is written",
            context.as_deref().unwrap_or("current"),
            gitlab.url()
        );
        Reporter::new()
    });
    let report = runtime.block_on(archshift::audit::live::run(&spec, &text, &kube, &gitlab, &|p| {
        if let Some(r) = &reporter {
            r.report(p);
        }
    }));
    if let Some(r) = &reporter {
        r.finish();
    }
    let report = report?;
    let rendered = match args.format.as_str() {
        "json" => report.json(),
        "markdown" => report.markdown(),
        _ => report.text(),
    };
    match &args.out {
        Some(path) => write_atomically(path, rendered.as_bytes())?,
        None => std::io::stdout().lock().write_all(rendered.as_bytes())?,
    }
    Ok(report.exit_code())
}

/// `archshift apply`: replay a saved plan, or plan and apply; each phase confirmed unless
/// `--yes`. Exit 0 applied (or nothing to do), 3 refused as stale, 1 error.
fn apply(args: ApplyArgs) -> Result<u8> {
    use archshift::engine::session;
    if !args.yes && !std::io::stdin().is_terminal() {
        bail!("refusing to apply without --yes: standard input is not a terminal to confirm on");
    }
    let phase = args.phase.and_then(|n| archshift::vocab::Phase::ALL.into_iter().find(|p| p.number() == n));
    let opts = args.engine.options(args.saved.as_ref(), args.plan.as_ref(), phase)?;
    let json = args.format == "json";
    let emit = event_printer(json);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = runtime.block_on(async {
        let mut prepared = session::prepare(&opts, &|_| {}).await?;
        warn_insecure(prepared.kube.reader(), prepared.gitlab.reader().url());
        let (cluster, gitlab) = (
            prepared.plan.endpoints.cluster.as_ref().map_or("?".to_string(), |c| c.server.clone()),
            prepared.gitlab.reader().url().to_string(),
        );
        let context = prepared.context.clone().unwrap_or_else(|| "current".into());
        let mut confirm = terminal_confirm(args.yes, "Apply", cluster, context, gitlab);
        let outcome = session::apply(&mut prepared, opts.phase, args.force, &emit, &mut confirm).await;
        session::finish(&mut prepared).await;
        outcome
    });
    match result {
        Ok(outcome) => {
            if !json {
                if outcome.written.is_empty() {
                    println!("Nothing to do: every change is already in place ({}).", outcome.already.len());
                } else {
                    println!(
                        "Applied: {} change(s) written, {} already in place.",
                        outcome.written.len(),
                        outcome.already.len()
                    );
                }
                for proof in &outcome.proofs {
                    println!("  proof: {proof}");
                }
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("archshift: {e}");
            if matches!(e, session::SessionError::Engine(archshift::engine::run::EngineError::Failed { .. })) {
                eprintln!(
                    "archshift: what was written is in the journal; fix the cause and run the same apply again to continue, or `archshift rollback` (same plan and journal) to go back to the amd64-only runner"
                );
            }
            Ok(e.exit_code())
        }
    }
}

/// Prints engine events as text lines or JSON lines.
fn event_printer(json: bool) -> impl Fn(&archshift::engine::run::Event) + Sync {
    move |e| {
        if json {
            println!("{}", serde_json::to_string(e).unwrap_or_default());
        } else {
            println!("{e}");
        }
    }
}

/// `archshift rollback`: observe, plan the way back from the journal, confirm, undo.
/// Exit 0 done (or nothing to undo), 2 `--dry-run` with work to do, 3 refused, 1 error.
fn rollback(args: RollbackArgs) -> Result<u8> {
    use archshift::engine::session;
    if !args.yes && !args.dry_run && !std::io::stdin().is_terminal() {
        bail!("refusing to roll back without --yes: standard input is not a terminal to confirm on");
    }
    let opts = archshift::engine::session::Options {
        read_only: args.dry_run,
        ..args.engine.options(args.saved.as_ref(), args.plan.as_ref(), None)?
    };
    let emit = event_printer(args.format == "json");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result: Result<u8, archshift::engine::session::SessionError> = runtime.block_on(async {
        let mut prepared = session::prepare_rollback(&opts, &|_| {}).await?;
        warn_insecure(prepared.kube.reader(), prepared.gitlab.reader().url());
        let result = rollback_prepared(&args, &mut prepared, &emit).await;
        session::finish(&mut prepared).await;
        result
    });
    match result {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("archshift: {e}");
            Ok(e.exit_code())
        }
    }
}

/// The rollback once prepared: shown (`--dry-run`), refused on a risk, or confirmed and run.
async fn rollback_prepared(
    args: &RollbackArgs,
    prepared: &mut archshift::engine::session::Prepared,
    emit: &(dyn Fn(&archshift::engine::run::Event) + Sync),
) -> Result<u8, archshift::engine::session::SessionError> {
    use archshift::engine::session;
    use archshift::model::Status;
    let plan = prepared.plan.clone();
    if args.dry_run {
        eprintln!("archshift: {}", session::history_line(prepared));
        print!("{}", archshift::audit::render::plan_text(&plan, std::io::stdout().is_terminal()));
        return Ok(if plan.changes().next().is_some() { EXIT_PENDING } else { 0 });
    }
    let risks: Vec<String> =
        plan.findings().filter(|f| f.status == Status::Risk).map(|f| format!("  {}: {}", f.code, f.message)).collect();
    if !risks.is_empty() && !args.force {
        eprintln!(
            "archshift: refusing to roll back (nothing was written); these need a person, or --force:\n{}",
            risks.join("\n")
        );
        return Ok(3);
    }
    if plan.changes().next().is_none() {
        println!("Nothing to roll back: nothing of archshift's is left.");
        return Ok(0);
    }
    let cluster = plan.endpoints.cluster.as_ref().map_or("?".to_string(), |c| c.server.clone());
    let gitlab = prepared.gitlab.reader().url().to_string();
    let context = prepared.context.clone().unwrap_or_else(|| "current".into());
    let mut confirm = terminal_confirm(args.yes, "Roll back", cluster, context, gitlab);
    let outcome = session::apply(prepared, None, args.force, emit, &mut confirm).await?;
    // No success line without its proof: this run's, or the one a stopped run proved and
    // journaled before it stopped.
    let mut proofs = outcome.proofs.clone();
    if proofs.is_empty() {
        proofs = journaled_rollback_proof(prepared);
    }
    if args.format != "json" {
        if proofs.is_empty() {
            println!(
                "Rolled back: {} change(s) written; archshift did not change the pipeline's CI file, so there was no revert to prove.",
                outcome.written.len()
            );
        } else {
            println!("Rolled back: {} change(s) written; the baseline runner takes the work.", outcome.written.len());
        }
        for proof in &proofs {
            println!("  proof: {proof}");
        }
        for note in &outcome.notes {
            println!("  finding: {note}");
        }
    }
    Ok(0)
}

/// `archshift journal show`: the history's records, read only (no Lease, nothing created).
fn journal_show(args: JournalShowArgs) -> Result<u8> {
    use archshift::engine::session;
    let opts =
        session::Options { read_only: true, ..args.engine.options(args.saved.as_ref(), args.plan.as_ref(), None)? };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let journal = match runtime.block_on(session::history(&opts)) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("archshift: {e}");
            return Ok(e.exit_code());
        }
    };
    let mut out = std::io::stdout().lock();
    if args.format == "json" {
        for r in journal.records() {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
        return Ok(0);
    }
    writeln!(out, "{} ({} record(s), oldest first)", journal.location(), journal.records().len())?;
    for r in journal.records() {
        let event = serde_json::to_value(r.event)?;
        let message = r.message.as_deref().map(|m| format!(": {}", m.lines().next().unwrap_or(""))).unwrap_or_default();
        writeln!(out, "{:>5} {} {:<9} {}{message}", r.seq, r.time, event.as_str().unwrap_or("?"), r.change)?;
    }
    if let Some(torn) = &journal.torn {
        writeln!(out, "torn last record (a crash mid-write; cut off by the next run that writes): {torn}")?;
    }
    Ok(0)
}

/// The proof the journal keeps of the last verified revert of a CI file, line by line.
fn journaled_rollback_proof(p: &archshift::engine::session::Prepared) -> Vec<String> {
    use archshift::engine::journal::Event;
    p.journal
        .records()
        .iter()
        .rev()
        .find(|r| {
            r.event == Event::Verified && r.change.as_str().starts_with("rollback/cifile/") && r.message.is_some()
        })
        .and_then(|r| r.message.as_deref())
        .map(|m| m.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

fn sandbox(args: SandboxArgs) -> Result<u8> {
    let opts = archshift::sandbox::Options {
        dir: Some(args.dir),
        latency_ms: args.latency_ms,
        fleet: args.fleet,
        templates: None,
        faults: args.fault,
        tick_ms: None,
        deny: args.deny,
        gitlab_access: args.gitlab_access,
        gitlab_tls: args.gitlab_tls,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(archshift::sandbox::run_until_signal(opts)).context("sandbox failed")?;
    Ok(0)
}

fn validate(path: &Path) -> Result<u8> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read plan file {}", path.display()))?;
    let plan = MigrationPlan::parse(&text, &path.display().to_string())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "# {}: valid; every default filled in", path.display())?;
    out.write_all(yaml_serde::to_string(&plan)?.as_bytes())?;
    Ok(0)
}

fn ci_tags(args: CiTagsArgs) -> Result<u8> {
    let from_stdin = args.file == "-";
    if from_stdin && args.in_place {
        bail!("--in-place needs a file, not standard input");
    }
    let name = if from_stdin { "<stdin>".to_string() } else { args.file.clone() };
    let bytes = if from_stdin {
        let mut b = Vec::new();
        std::io::stdin().read_to_end(&mut b).context("cannot read standard input")?;
        b
    } else {
        std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file))?
    };
    let text = String::from_utf8(bytes)
        .map_err(|e| anyhow!("{name}: not UTF-8 text (byte {})", e.utf8_error().valid_up_to()))?;
    let opts = TagOptions {
        default_tag: args.default_tag,
        arch_tags: args.arch_tag.into_iter().collect(),
        job_tags: args.job_tag.into_iter().collect(),
        prefer_default: false,
        prefer_default_with_include: false,
        includes: args
            .include
            .iter()
            .map(|p| std::fs::read_to_string(p).with_context(|| format!("cannot read the include {}", p.display())))
            .collect::<Result<_>>()?,
    };
    let retag = ciyaml::retag(&text, &opts).map_err(|e| match e {
        CiYamlError::Invalid { line, column, message } => anyhow!("{name}:{line}:{column}: {message}"),
        other => anyhow!("{name}: {other}"),
    })?;
    let mut err = std::io::stderr().lock();
    for warning in &retag.warnings {
        writeln!(err, "{name}: warning: {warning}")?;
    }
    if let Some(tag) = &retag.default_tags_added {
        writeln!(err, "default: tags [{tag}] added")?;
    }
    for job in &retag.jobs {
        writeln!(err, "{job}")?;
    }
    if args.check {
        writeln!(err, "{name}: {}", if retag.changed { "would change" } else { "up to date" })?;
        return Ok(if retag.changed { EXIT_PENDING } else { 0 });
    }
    if args.in_place {
        if retag.changed {
            write_atomically(Path::new(&args.file), retag.output.as_bytes())?;
        }
        writeln!(err, "{name}: {}", if retag.changed { "rewritten" } else { "unchanged" })?;
        return Ok(0);
    }
    std::io::stdout().lock().write_all(retag.output.as_bytes())?;
    Ok(0)
}

/// Writes a file only its owner can read (0600), atomically: saved plans hold no secret, but
/// they describe the cluster and GitLab closely. An existing file of another mode ends 0600.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    #[cfg(unix)]
    let mode = Some(std::os::unix::fs::PermissionsExt::from_mode(0o600));
    #[cfg(not(unix))]
    let mode = None;
    replace_file(path, bytes, mode)
}

/// Writes through a temporary file in the same directory, so a crash leaves the old file whole;
/// the file keeps its mode (a new one is 0600).
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mode = std::fs::metadata(path).ok().map(|m| m.permissions());
    replace_file(path, bytes, mode)
}

fn replace_file(path: &Path, bytes: &[u8], mode: Option<std::fs::Permissions>) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))?;
    tmp.as_file().sync_all().ok();
    if let Some(mode) = mode {
        tmp.as_file().set_permissions(mode).with_context(|| format!("cannot set the mode of {}", path.display()))?;
    }
    tmp.persist(path).map_err(|e| anyhow!("cannot replace {}: {}", path.display(), e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn plain_http_is_warned_about_unless_it_stays_on_this_machine() {
        assert_eq!(super::plain_http_host("http://gitlab.example.com/"), Some("gitlab.example.com".into()));
        assert_eq!(super::plain_http_host("http://10.0.0.5:8080"), Some("10.0.0.5".into()));
        assert_eq!(super::plain_http_host("http://127.0.0.1:8929"), None);
        assert_eq!(super::plain_http_host("http://[::1]:80"), None);
        assert_eq!(super::plain_http_host("http://localhost"), None);
        assert_eq!(super::plain_http_host("https://gitlab.example.com"), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_saved_plan_written_over_a_file_readable_by_others_ends_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("archshift-main-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plan.json");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        super::write_private(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).ok();
    }
}
