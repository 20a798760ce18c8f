//! The TUI's state and how it changes: `update(state, message) -> commands`. No IO here: the
//! runtime ([`super::run`]) turns commands into engine work and feeds results back as messages.

use std::collections::BTreeMap;

use crossterm::event::KeyEvent;

use crate::diff::{DiffOptions, LineKind, change_diff};
use crate::engine::run::{Event, Selection};
use crate::model::{Change, ChangeId, Plan, Status};
use crate::vocab::Phase;

/// How the session was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Writes allowed, each after a confirmation.
    Live,
    /// Nothing can be written: the write keys do nothing and are not shown.
    ReadOnly,
    /// A saved plan, replayed exactly.
    Replay,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Live => "LIVE",
            Mode::ReadOnly => "READ-ONLY",
            Mode::Replay => "REPLAY",
        }
    }
}

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Pending,
    Risk,
    Running,
    Done,
    Failed,
    RolledBack,
    /// The plan will not make it: refused, or a change it needs was.
    Blocked,
}

impl Mark {
    pub fn symbol(self) -> &'static str {
        match self {
            Mark::Pending => "·",
            Mark::Risk => "!",
            Mark::Running => "▶",
            Mark::Done => "✓",
            Mark::Failed => "✗",
            Mark::RolledBack => "↺",
            Mark::Blocked => "⊘",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Steps,
    Detail,
}

/// Work the runtime carries out for the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Apply what the selection names; `true` writes through the risks that bear on it
    /// (the operator pressed the override key, as `--force`).
    Apply(Selection, bool),
    DryRun(ChangeId),
    Observe,
    Save,
    PlanRollback,
    Rollback,
    ShowJournal,
    /// Stop the wait in progress (the journal keeps what was written).
    Cancel,
    Quit,
}

impl Command {
    /// Whether it changes the cluster or GitLab (never issued in read-only mode).
    pub fn writes(&self) -> bool {
        matches!(self, Command::Apply(..) | Command::Rollback | Command::DryRun(_))
    }
}

/// What reaches `update`.
#[derive(Debug, Clone)]
pub enum Msg {
    Key(KeyEvent),
    Engine(Event),
    /// The running command ended: a summary, or the error.
    Finished(Result<String, String>),
    /// A fresh plan after `r`.
    Observed(Plan),
    RollbackPlan(Plan),
    Journal(Vec<String>),
    /// A spinner frame; the runtime sends one every ~100 ms.
    Tick,
    /// The detail pane's height and a dialog's inside, after a resize (for page scrolling).
    Resize {
        detail_height: usize,
        overlay_width: usize,
        overlay_rows: usize,
    },
    /// SIGTERM: stop what runs and quit now.
    Terminate,
}

/// A yes/no question before a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirm {
    pub title: String,
    pub lines: Vec<String>,
    pub on_yes: Command,
    /// Risks bear on it: only the override key `F` proceeds, never `y`.
    pub override_risks: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    Help,
    Confirm(Confirm),
    /// `q` while a step runs.
    QuitWhileRunning,
    Journal(Vec<String>),
    /// An error or a notice to acknowledge.
    Message(String),
}

/// Work in progress, for the spinner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    pub what: String,
    pub elapsed_s: u64,
    pub timeout_s: u64,
    /// In a verification wait: Esc may stop it.
    pub waiting: bool,
}

/// One line of the detail pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetailLine {
    pub kind: DetailKind,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetailKind {
    Title,
    Fact,
    Finding,
    Result,
    Failure,
    DiffHeader,
    Context,
    Added,
    Removed,
}

pub struct App {
    pub mode: Mode,
    /// TLS verification is off (`--insecure-skip-tls-verify`): the header says so throughout.
    pub insecure: bool,
    pub context: String,
    pub cluster: String,
    pub gitlab: String,
    pub plan: Plan,
    /// What the plan's risks and blocked changes stop (without the preflight, which the
    /// worker asks when it runs a command).
    pub gate: crate::engine::gate::Gate,
    /// Blocked changes by id, with why: listed as steps marked ⊘, never applied.
    pub blocked: BTreeMap<ChangeId, String>,
    /// The steps, in apply order; what the left pane lists.
    pub steps: Vec<Change>,
    pub marks: BTreeMap<ChangeId, Mark>,
    /// What happened to each step this session (verifications, dry runs, failures).
    pub results: BTreeMap<ChangeId, Vec<(DetailKind, String)>>,
    pub selected: usize,
    pub focus: Focus,
    pub scroll: usize,
    pub filter: String,
    pub filtering: bool,
    pub overlay: Option<Overlay>,
    pub busy: Option<Busy>,
    pub last_event: String,
    pub spinner: usize,
    pub quit: bool,
    pub detail_height: usize,
    /// A dialog's inside: the width its lines wrap at and the rows it shows.
    pub overlay_width: usize,
    pub overlay_rows: usize,
    /// The first row a dialog shows.
    pub overlay_scroll: usize,
    /// The selected step's detail, computed once per selection (a 10,000-line diff is
    /// rendered from this, a window at a time).
    detail: Vec<DetailLine>,
    detail_for: Option<(ChangeId, usize)>,
    /// Bumped when results change, so the detail cache refreshes.
    generation: usize,
}

impl App {
    pub fn new(mode: Mode, context: &str, gitlab: &str, plan: Plan) -> App {
        let cluster = plan.endpoints.cluster.as_ref().map_or_else(|| "?".to_string(), |c| c.server.clone());
        let mut app = App {
            mode,
            insecure: false,
            context: context.to_string(),
            cluster,
            gitlab: gitlab.to_string(),
            plan: Plan { phases: vec![], ..plan.clone() },
            gate: crate::engine::gate::Gate::new(&Plan { phases: vec![], ..plan.clone() }, &[], &[]),
            blocked: BTreeMap::new(),
            steps: Vec::new(),
            marks: BTreeMap::new(),
            results: BTreeMap::new(),
            selected: 0,
            focus: Focus::Steps,
            scroll: 0,
            filter: String::new(),
            filtering: false,
            overlay: None,
            busy: None,
            last_event: "ready: select a step to read its diff".into(),
            spinner: 0,
            quit: false,
            detail_height: 20,
            overlay_width: 60,
            overlay_rows: 18,
            overlay_scroll: 0,
            detail: Vec::new(),
            detail_for: None,
            generation: 0,
        };
        app.set_plan(plan);
        app
    }

    /// Takes a (new) plan: its steps in apply order, risky ones marked.
    pub(super) fn set_plan(&mut self, plan: Plan) {
        // Listed by phase, in apply order within each (the engine applies across phases in
        // dependency order; the confirmation dialog shows that order).
        let mut order: Vec<Change> = match plan.order() {
            Ok(o) => o.into_iter().cloned().collect(),
            Err(_) => plan.changes().cloned().collect(),
        };
        self.gate = crate::engine::gate::Gate::new(&plan, &[], &[]);
        let risky = self.gate.risky_steps(&plan);
        // Blocked changes are listed with the rest, marked, and never applied.
        self.blocked = plan.blocked().map(|b| (b.id.clone(), b.reason.clone())).collect();
        for phase in &plan.phases {
            for b in &phase.blocked {
                order.push(match &b.change {
                    Some(c) => (**c).clone(),
                    None => Change::new(
                        b.id.clone(),
                        phase.phase,
                        b.target.clone(),
                        crate::model::Action::Update,
                        b.summary.clone(),
                        crate::model::WriteMethod::KubeCreate,
                    ),
                });
            }
        }
        order.sort_by_key(|c| c.phase.number());
        for c in &order {
            let mark = self.marks.get(&c.id).copied();
            if self.blocked.contains_key(&c.id) {
                self.marks.insert(c.id.clone(), Mark::Blocked);
            } else if !matches!(mark, Some(Mark::Done | Mark::Failed | Mark::RolledBack)) {
                self.marks.insert(c.id.clone(), if risky.contains(&c.id) { Mark::Risk } else { Mark::Pending });
            }
        }
        // Steps no longer planned are in place now.
        for s in &self.steps {
            if !order.iter().any(|c| c.id == s.id) && self.marks.get(&s.id) != Some(&Mark::RolledBack) {
                self.marks.insert(s.id.clone(), Mark::Done);
            }
        }
        if self.steps.is_empty() {
            self.steps = order;
        } else {
            for c in order {
                match self.steps.iter_mut().find(|s| s.id == c.id) {
                    Some(s) => *s = c,
                    None => self.steps.push(c),
                }
            }
        }
        self.plan = plan;
        self.detail_for = None;
    }

    /// Indices into `steps` the left pane shows (the filter applied).
    pub fn visible(&self) -> Vec<usize> {
        let f = self.filter.to_lowercase();
        (0..self.steps.len())
            .filter(|&i| {
                f.is_empty()
                    || self.steps[i].id.as_str().to_lowercase().contains(&f)
                    || self.steps[i].summary.to_lowercase().contains(&f)
            })
            .collect()
    }

    pub fn selected_step(&self) -> Option<&Change> {
        self.visible().get(self.selected).map(|&i| &self.steps[i])
    }

    pub fn mark(&self, id: &ChangeId) -> Mark {
        self.marks.get(id).copied().unwrap_or(Mark::Pending)
    }

    pub fn detail(&self) -> &[DetailLine] {
        &self.detail
    }

    /// Recomputes the detail pane's lines when the selection or results changed.
    pub fn refresh_detail(&mut self) {
        let Some(c) = self.selected_step().cloned() else {
            self.detail.clear();
            self.detail_for = None;
            return;
        };
        if self.detail_for.as_ref() == Some(&(c.id.clone(), self.generation)) {
            return;
        }
        let results = self.results.get(&c.id).map(Vec::as_slice).unwrap_or(&[]);
        self.detail = match self.blocked.get(&c.id) {
            Some(why) => blocked_lines(&c, why, &self.plan),
            None => detail_lines(&c, &self.plan, results),
        };
        self.detail_for = Some((c.id.clone(), self.generation));
    }

    pub(super) fn note(&mut self, id: &ChangeId, kind: DetailKind, text: String) {
        self.results.entry(id.clone()).or_default().push((kind, text));
        self.generation += 1;
    }

    pub(super) fn max_scroll(&self) -> usize {
        self.detail.len().saturating_sub(self.detail_height.max(1))
    }

    pub(super) fn select(&mut self, index: usize) {
        let n = self.visible().len();
        self.selected = if n == 0 { 0 } else { index.min(n - 1) };
        self.scroll = 0;
        self.refresh_detail();
    }

    pub(super) fn may_write(&self) -> bool {
        self.mode != Mode::ReadOnly && self.busy.is_none()
    }

    pub(super) fn where_to(&self) -> Vec<String> {
        vec![format!("cluster: {} (context {})", self.cluster, self.context), format!("GitLab:  {}", self.gitlab)]
    }
}

/// The detail pane of a blocked step: why, and (when it was planned that far) its diff.
pub fn blocked_lines(c: &Change, why: &str, plan: &Plan) -> Vec<DetailLine> {
    let line = |kind, text: String| DetailLine { kind, text };
    let mut out = vec![
        line(DetailKind::Title, format!("[{}] {}", c.id, c.summary)),
        line(DetailKind::Failure, format!("BLOCKED: {why}")),
        line(DetailKind::Fact, format!("{:<8} {}", "target:", c.target)),
        line(DetailKind::Fact, "nothing of it is written until what blocks it is fixed and the plan made again".into()),
    ];
    for f in plan.findings().filter(|f| f.status == Status::Risk) {
        if f.target.as_ref().is_some_and(|t| crate::engine::gate::keys_meet(t, &c.target)) {
            out.push(line(DetailKind::Finding, format!("{} {}: {}", f.status, f.code, f.message)));
        }
    }
    if c.after.is_some() {
        out.extend(detail_lines(c, plan, &[]).into_iter().skip(1));
    }
    out
}

/// The detail pane of a step: what it is, how it is written, undone and verified, its findings,
/// what happened to it this session, then its diff (secrets masked).
pub fn detail_lines(c: &Change, plan: &Plan, results: &[(DetailKind, String)]) -> Vec<DetailLine> {
    let line = |kind, text: String| DetailLine { kind, text };
    let mut out = vec![line(DetailKind::Title, format!("[{}] {}", c.id, c.summary))];
    for (label, text) in crate::audit::render::facts(c) {
        out.push(line(DetailKind::Fact, format!("{:<8} {text}", format!("{label}:"))));
    }
    for f in plan.findings().filter(|f| f.change.as_ref() == Some(&c.id)) {
        out.push(line(DetailKind::Finding, format!("{} {}: {}", f.status, f.code, f.message)));
    }
    for (kind, text) in results {
        out.push(line(*kind, text.clone()));
    }
    let diff = change_diff(c, DiffOptions::default());
    out.push(line(DetailKind::DiffHeader, format!("--- {}", diff.old)));
    out.push(line(DetailKind::DiffHeader, format!("+++ {}", diff.new)));
    for h in &diff.hunks {
        out.push(line(DetailKind::DiffHeader, h.header.clone()));
        for l in &h.lines {
            let (kind, sign) = match l.kind {
                LineKind::Added => (DetailKind::Added, '+'),
                LineKind::Removed => (DetailKind::Removed, '-'),
                LineKind::Context => (DetailKind::Context, ' '),
            };
            out.push(line(kind, format!("{sign}{}", l.text)));
        }
    }
    out
}

/// Steps grouped by phase, in the order they first appear: what the left pane draws.
pub fn grouped(app: &App) -> Vec<(Phase, Vec<usize>)> {
    let mut out: Vec<(Phase, Vec<usize>)> = Vec::new();
    for (pos, &i) in app.visible().iter().enumerate() {
        let phase = app.steps[i].phase;
        match out.iter_mut().find(|(p, _)| *p == phase) {
            Some((_, v)) => v.push(pos),
            None => out.push((phase, vec![pos])),
        }
    }
    out.sort_by_key(|(p, _)| p.number());
    out
}
