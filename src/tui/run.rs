//! The TUI's runtime: the terminal, the input thread, and the worker task that owns the
//! connections and runs the engine. The UI thread only draws and updates state; everything
//! that waits happens on the worker, which reports back through a channel.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use crossterm::event::{self, Event as TermEvent, KeyEventKind};

use super::app::{App, Command, Mode, Msg};
use super::update::update;
use super::view::{self, Palette};
use crate::engine::run::{Event, Outcome, Selection};
use crate::engine::session::{self, Prepared};
use crate::model::{Change, Plan};
use crate::vocab::Phase;

/// How to open the TUI.
pub struct TuiOptions {
    pub session: session::Options,
    pub read_only: bool,
    /// Where `s` saves plans.
    pub save_dir: PathBuf,
}

/// Opens the TUI on a plan (observed and planned first, with progress on stderr).
pub fn run(opts: TuiOptions) -> Result<()> {
    need_terminal()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    eprintln!("archshift: reading the cluster and GitLab…");
    // The read-only TUI takes no Lease and creates nothing: it only reads the history.
    let session_opts = session::Options { read_only: opts.read_only, ..opts.session.clone() };
    let prepared = runtime.block_on(session::prepare(&session_opts, &|_| {}))?;
    let mode = match (&opts.session.source, opts.read_only) {
        (_, true) => Mode::ReadOnly,
        (session::Source::Saved(_), false) => Mode::Replay,
        (session::Source::Spec(_), false) => Mode::Live,
    };
    session_loop(&runtime, prepared, mode, opts.save_dir)
}

/// `archshift demo`: the embedded sandbox in this process, and the TUI on its plan.
pub fn demo(sandbox_dir: Option<PathBuf>) -> Result<()> {
    need_terminal()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let dir = match sandbox_dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("archshift-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let sandbox = runtime.block_on(crate::sandbox::Sandbox::start(crate::sandbox::Options {
        dir: Some(dir.clone()),
        ..Default::default()
    }))?;
    let env = std::fs::read_to_string(dir.join("gitlab.env")).context("the sandbox wrote no gitlab.env")?;
    let var = |k: &str| env.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap_or_default().to_string();
    let plan_file = dir.join("sandbox.yaml");
    std::fs::write(&plan_file, include_str!("../../plans/sandbox.yaml"))?;
    let opts = session::Options {
        source: session::Source::Spec(plan_file),
        kubeconfig: Some(dir.join("kubeconfig")),
        context: None,
        // The demo keeps its history in the sandbox's cluster, as a real migration does.
        journal: None,
        phase: None,
        concurrency: 8,
        gitlab: Some((var("GITLAB_URL"), crate::live::secret::Token::new(var("GITLAB_TOKEN"), "the sandbox"))),
        timeout: Duration::from_secs(30),
        insecure_skip_tls_verify: false,
        read_only: false,
    };
    let prepared = runtime.block_on(session::prepare(&opts, &|_| {}))?;
    let result = session_loop(&runtime, prepared, Mode::Live, PathBuf::from("plans"));
    sandbox.stop();
    eprintln!("archshift: the sandbox's files are in {}", dir.display());
    result
}

fn need_terminal() -> Result<()> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!("the TUI needs a terminal; for scripts use `archshift audit`, `plan` and `apply --yes`");
    }
    Ok(())
}

fn session_loop(runtime: &tokio::runtime::Runtime, prepared: Prepared, mode: Mode, save_dir: PathBuf) -> Result<()> {
    let context = prepared.context.clone().unwrap_or_else(|| "current".into());
    let mut app = App::new(mode, &context, prepared.gitlab.reader().url(), prepared.plan.clone());
    app.insecure = prepared.kube.reader().insecure();
    let (msg_tx, msg_rx) = std::sync::mpsc::channel::<Msg>();
    let (cmd_tx, cmd_rx) = tokio::sync::mpsc::unbounded_channel::<Command>();
    let cancel = Arc::new(tokio::sync::Notify::new());
    let worker = runtime.spawn(worker(prepared, cmd_rx, msg_tx.clone(), cancel.clone(), mode, save_dir));
    let terminate_tx = msg_tx.clone();
    runtime.spawn(async move {
        #[cfg(unix)]
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            term.recv().await;
            let _ = terminate_tx.send(Msg::Terminate);
        }
    });
    std::thread::spawn(move || input(&msg_tx));

    let palette = Palette { color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) };
    // ratatui::init enters raw mode and the alternate screen, and restores them on panic.
    let mut terminal = ratatui::init();
    let result = ui_loop(&mut terminal, &mut app, &msg_rx, &cmd_tx, &cancel, palette);
    ratatui::restore();
    // The worker ends once it has no more commands, and gives up the migration's Lease on
    // its way out; a worker still waiting is stopped, and the Lease then expires by itself.
    drop(cmd_tx);
    cancel.notify_waiters();
    let _ = runtime.block_on(async { tokio::time::timeout(Duration::from_secs(3), worker).await });
    result
}

fn ui_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    msgs: &Receiver<Msg>,
    commands: &tokio::sync::mpsc::UnboundedSender<Command>,
    cancel: &tokio::sync::Notify,
    palette: Palette,
) -> Result<()> {
    let mut height = (0, 0);
    loop {
        let size = terminal.size()?;
        let area = ratatui::layout::Rect::new(0, 0, size.width, size.height);
        let h = view::detail_height(area);
        if (h, size.width) != height {
            height = (h, size.width);
            update(app, view::resized(area));
        }
        terminal.draw(|f| view::render(f, app, palette))?;
        let Ok(msg) = msgs.recv() else { return Ok(()) };
        for command in update(app, msg) {
            match command {
                Command::Quit => {}
                Command::Cancel => cancel.notify_waiters(),
                other => {
                    let _ = commands.send(other);
                }
            }
        }
        if app.quit {
            return Ok(());
        }
    }
}

/// Keys and resizes from the terminal, and a tick for the spinner when nothing happens.
fn input(tx: &Sender<Msg>) {
    loop {
        let msg = match event::poll(Duration::from_millis(100)) {
            Ok(true) => match event::read() {
                Ok(TermEvent::Key(k)) if k.kind == KeyEventKind::Press => Msg::Key(k),
                Ok(_) => continue,
                Err(_) => return,
            },
            Ok(false) => Msg::Tick,
            Err(_) => return,
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}

fn summary(o: &Outcome) -> String {
    let mut s = format!("done: {} written, {} already in place", o.written.len(), o.already.len());
    if let Some(p) = o.proofs.first() {
        s.push_str(&format!("; proof: {p}"));
    }
    s
}

/// Owns the connections and the journal; runs one command at a time.
async fn worker(
    mut p: Prepared,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<Command>,
    tx: Sender<Msg>,
    cancel: Arc<tokio::sync::Notify>,
    mode: Mode,
    save_dir: PathBuf,
) {
    let read_only = mode == Mode::ReadOnly;
    let mut rollback: Option<Plan> = None;
    while let Some(command) = commands.recv().await {
        let emit_tx = tx.clone();
        let emit = move |e: &Event| {
            let _ = emit_tx.send(Msg::Engine(e.clone()));
        };
        let mut yes = |_: Phase, _: &[&Change]| true;
        // Defence in depth: the read-only state machine never asks for these.
        if read_only && command.writes() {
            let _ = tx.send(Msg::Finished(Err("read-only: nothing is written".into())));
            continue;
        }
        let msg = match command {
            Command::Apply(selection, force) => {
                let run = session::apply_selection(&mut p, &selection, force, &emit, &mut yes);
                tokio::select! {
                    r = run => Msg::Finished(r.map(|o| summary(&o)).map_err(|e| e.to_string())),
                    () = cancel.notified() => Msg::Finished(Err(stopped(&selection))),
                }
            }
            Command::Rollback => match rollback.take() {
                Some(plan) => {
                    let run = session::apply_plan(&mut p, &plan, &emit, &mut yes);
                    tokio::select! {
                        r = run => Msg::Finished(r.map(|o| format!("rolled back: {}", summary(&o))).map_err(|e| e.to_string())),
                        () = cancel.notified() => Msg::Finished(Err("stopped waiting during the rollback; run it again to finish".into())),
                    }
                }
                None => Msg::Finished(Err("no rollback plan: press R first".into())),
            },
            Command::DryRun(id) => match session::dry_run(&mut p, &id, &emit).await {
                Ok(Some(s)) => Msg::Finished(Ok(s)),
                Ok(None) => Msg::Finished(Ok(format!("{id} is already in place"))),
                Err(e) => Msg::Finished(Err(e.to_string())),
            },
            Command::Observe => match session::replan(&p).await {
                Ok(plan) => {
                    // A saved plan is replayed as saved; a live session applies the fresh one.
                    if mode != Mode::Replay {
                        p.plan = plan.clone();
                    }
                    Msg::Observed(plan)
                }
                Err(e) => Msg::Finished(Err(e.to_string())),
            },
            Command::PlanRollback => match session::rollback_plan(&p).await {
                Ok(plan) => {
                    rollback = Some(plan.clone());
                    Msg::RollbackPlan(plan)
                }
                Err(e) => Msg::Finished(Err(e.to_string())),
            },
            Command::Save => Msg::Finished(save(&p, &save_dir, !read_only).await.map_err(|e| format!("{e:#}"))),
            Command::ShowJournal => Msg::Journal(journal_lines(&p)),
            Command::Cancel | Command::Quit => continue,
        };
        if tx.send(msg).is_err() {
            break;
        }
    }
    session::finish(&mut p).await;
}

fn stopped(selection: &Selection) -> String {
    let what = match selection {
        Selection::All => "the whole plan".to_string(),
        Selection::Phase(p) => format!("Phase {} {}", p.number(), p.title()),
        Selection::Step(id) => id.to_string(),
    };
    format!(
        "stopped waiting ({what}): what was written stays and is in the journal; apply again to verify and continue"
    )
}

/// Saves the plan sealed; a read-only session seals only with a key that exists already.
async fn save(p: &Prepared, dir: &Path, may_make_key: bool) -> Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let path = dir.join(format!("{}-{stamp}.saved.json", p.spec.metadata.name));
    let saved = session::seal(p, may_make_key).await?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    use std::io::Write as _;
    let mut f = opts.open(&path).with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(saved.to_json().as_bytes())?;
    Ok(format!("saved to {} (replay it with `archshift apply {}`)", path.display(), path.display()))
}

fn journal_lines(p: &Prepared) -> Vec<String> {
    let records = p.journal.records();
    if records.is_empty() {
        return vec![format!("{}: nothing written yet", p.journal.location())];
    }
    let mut lines = vec![format!("{} ({} records, newest last)", p.journal.location(), records.len())];
    lines.extend(records.iter().rev().take(200).rev().map(|r| {
        let event = serde_json::to_value(r.event).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        format!(
            "{} {:<9} {}{}",
            r.time,
            event,
            r.change,
            r.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
        )
    }));
    lines
}
