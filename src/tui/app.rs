//! The TUI's state and how it changes: `update(state, message) -> commands`. No IO here: the
//! runtime ([`super::run`]) turns commands into engine work and feeds results back as messages.

use std::collections::BTreeMap;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::diff::{DiffOptions, LineKind, change_diff};
use crate::engine::run::{Event, Selection, reverted_forward};
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
    fn set_plan(&mut self, plan: Plan) {
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

    fn note(&mut self, id: &ChangeId, kind: DetailKind, text: String) {
        self.results.entry(id.clone()).or_default().push((kind, text));
        self.generation += 1;
    }

    fn max_scroll(&self) -> usize {
        self.detail.len().saturating_sub(self.detail_height.max(1))
    }

    fn select(&mut self, index: usize) {
        let n = self.visible().len();
        self.selected = if n == 0 { 0 } else { index.min(n - 1) };
        self.scroll = 0;
        self.refresh_detail();
    }

    fn may_write(&self) -> bool {
        self.mode != Mode::ReadOnly && self.busy.is_none()
    }

    fn where_to(&self) -> Vec<String> {
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

/// A dialog's title and lines, before wrapping.
pub fn overlay_text(app: &App, overlay: &Overlay) -> (String, Vec<String>) {
    match overlay {
        Overlay::Help => (" Keys ".into(), help_lines(app.mode).into_iter().map(str::to_string).collect()),
        Overlay::Confirm(c) => {
            let mut lines = c.lines.clone();
            lines.push(String::new());
            lines.push(if c.override_risks {
                "Press F to write through these risks (as --force); any other key cancels (↑↓ scroll).".into()
            } else {
                "Press y to go ahead; any other key cancels (↑↓ scroll).".into()
            });
            (format!(" {} ", c.title), lines)
        }
        Overlay::QuitWhileRunning => (
            " Quit? ".into(),
            vec![
                "A step is running.".into(),
                "y: stop waiting and quit (what was written stays, and is in the journal)".into(),
                "any other key: stay".into(),
            ],
        ),
        Overlay::Journal(lines) => (" Journal ".into(), lines.clone()),
        Overlay::Message(m) => (" Message ".into(), m.lines().map(str::to_string).collect()),
    }
}

/// A dialog's rows at its width: each line wrapped at spaces (a word longer than the width
/// is cut), so scrolling and drawing count the same rows.
pub fn overlay_rows(app: &App, overlay: &Overlay) -> Vec<String> {
    wrap(&overlay_text(app, overlay).1, app.overlay_width)
}

pub fn wrap(lines: &[String], width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut out = Vec::new();
    for line in lines {
        if line.chars().count() <= width {
            out.push(line.clone());
            continue;
        }
        let indent: String = line.chars().take_while(|c| *c == ' ').collect();
        let mut row = String::new();
        let mut row_len = 0;
        for word in line.split(' ').filter(|w| !w.is_empty()) {
            let mut word: Vec<char> = word.chars().collect();
            let gap = usize::from(row_len > 0);
            if row_len > 0 && row_len + gap + word.len() > width {
                out.push(std::mem::take(&mut row));
                row_len = 0;
            }
            if row_len == 0 && !indent.is_empty() && indent.len() * 2 < width {
                row.push_str(&indent);
                row_len = indent.chars().count();
            } else if row_len > 0 {
                row.push(' ');
                row_len += 1;
            }
            while row_len + word.len() > width {
                let take = width - row_len;
                row.extend(word.drain(..take));
                out.push(std::mem::take(&mut row));
                row_len = 0;
            }
            row_len += word.len();
            row.extend(word);
        }
        out.push(row);
    }
    out
}

/// The keys that work now, for the bottom bar.
pub fn key_help(app: &App) -> &'static str {
    match (&app.overlay, app.mode, app.focus) {
        (Some(Overlay::QuitWhileRunning), _, _) => "y: stop the wait and quit   any other key: stay",
        (Some(o), _, _) => {
            let scrolls = overlay_rows(app, o).len() > app.overlay_rows;
            match (o, scrolls) {
                (Overlay::Confirm(c), false) if c.override_risks => "F: write through the risks   any other key: no",
                (Overlay::Confirm(c), true) if c.override_risks => {
                    "F: write through the risks  ↑↓ PgUp/PgDn scroll  any other key: no"
                }
                (Overlay::Confirm(_), false) => "y: yes, go ahead   any other key: no",
                (Overlay::Confirm(_), true) => "y: yes, go ahead  ↑↓ PgUp/PgDn scroll  any other key: no",
                (_, false) => "any key: close",
                (_, true) => "↑↓ PgUp/PgDn scroll  any other key: close",
            }
        }
        _ if app.filtering => "type to filter   Enter: keep   Esc: clear",
        (None, Mode::ReadOnly, _) => {
            "↑↓/jk move  Enter diff  PgUp/PgDn g/G scroll  / filter  r re-observe  s save  l journal  ? help  q quit"
        }
        (None, _, Focus::Steps) => {
            "↑↓/jk move  Enter diff  / filter  d dry-run  a apply  A phase  r re-observe  s save  R rollback  l journal  ? help  q quit"
        }
        (None, _, Focus::Detail) => {
            "↑↓/jk PgUp/PgDn g/G scroll  Tab steps  d dry-run  a apply  A phase  ? help  q quit"
        }
    }
}

/// The help overlay's text.
pub fn help_lines(mode: Mode) -> Vec<&'static str> {
    let mut lines = vec![
        "↑↓ j k      move (scroll the diff when it has focus)",
        "Enter Tab   focus the diff / the steps",
        "PgUp PgDn   scroll the diff a page;  g G  top, bottom",
        "/           filter the steps by id or summary",
        "r           observe again and re-plan",
        "s           save the plan under plans/ (apply FILE)",
        "l           the journal: what was written, verified",
        "?           this help;  q  quit (asks while running)",
    ];
    if mode == Mode::ReadOnly {
        lines.push("read-only: nothing here writes to the cluster or GitLab");
    } else {
        lines.splice(
            4..4,
            [
                "d           server-side dry run of the step",
                "a           apply the step and what it waits for (y)",
                "A           apply the step's whole phase (y)",
                "R           roll back to the amd64-only runner (y)",
                "Esc         stop a verification wait (journal kept)",
            ],
        );
    }
    lines
}

/// Applies one message to the state; returns the work to start.
pub fn update(app: &mut App, msg: Msg) -> Vec<Command> {
    let commands = match msg {
        Msg::Key(key) => on_key(app, key),
        Msg::Engine(event) => {
            on_event(app, event);
            vec![]
        }
        Msg::Finished(result) => {
            app.busy = None;
            match result {
                Ok(summary) => app.last_event = summary,
                Err(e) => {
                    app.last_event = format!("failed: {}", e.lines().next().unwrap_or(""));
                    app.overlay = Some(Overlay::Message(e));
                }
            }
            vec![]
        }
        Msg::Observed(plan) => {
            app.busy = None;
            let n = plan.changes().count();
            app.set_plan(plan);
            app.last_event = format!("re-observed: {n} change(s) pending");
            vec![]
        }
        Msg::RollbackPlan(plan) => {
            app.busy = None;
            let changes: Vec<String> = plan.changes().map(|c| format!("{} {}", c.id, c.summary)).collect();
            if changes.is_empty() {
                app.overlay = Some(Overlay::Message("nothing of archshift's is left to roll back".into()));
            } else {
                let mut lines = vec!["These steps will run, in this order:".to_string()];
                if let Ok(order) = plan.order() {
                    lines.extend(order.iter().map(|c| format!("  {}", c.id)));
                }
                for f in plan.findings().filter(|f| f.status == Status::Risk) {
                    lines.push(format!("risk {}: {}", f.code, f.message));
                }
                lines.extend(app.where_to());
                app.overlay = Some(Overlay::Confirm(Confirm {
                    title: format!("Roll back {} change(s) to the amd64-only runner?", changes.len()),
                    lines,
                    on_yes: Command::Rollback,
                    override_risks: false,
                }));
            }
            vec![]
        }
        Msg::Journal(lines) => {
            app.busy = None;
            app.overlay = Some(Overlay::Journal(lines));
            vec![]
        }
        Msg::Tick => {
            app.spinner = app.spinner.wrapping_add(1);
            vec![]
        }
        Msg::Resize { detail_height, overlay_width, overlay_rows } => {
            app.detail_height = detail_height.max(1);
            app.overlay_width = overlay_width.max(10);
            app.overlay_rows = overlay_rows.max(1);
            vec![]
        }
        Msg::Terminate => {
            app.quit = true;
            vec![Command::Cancel, Command::Quit]
        }
    };
    app.refresh_detail();
    // Read-only by construction of the state machine: no write leaves it.
    if app.mode == Mode::ReadOnly {
        return commands.into_iter().filter(|c| !c.writes()).collect();
    }
    commands
}

fn on_event(app: &mut App, event: Event) {
    let id = |s: &str| ChangeId::from(s);
    match &event {
        Event::Phase { phase } => app.last_event = format!("Phase {} {}", phase.number(), phase.title()),
        Event::Step { id: s, summary } => {
            app.marks.insert(id(s), Mark::Running);
            app.last_event = format!("running {s}: {summary}");
        }
        Event::Holds { id: s } => {
            app.marks.insert(id(s), Mark::Done);
            app.note(&id(s), DetailKind::Result, "already in place: nothing written".into());
        }
        Event::DryRun { id: s, result } => app.note(&id(s), DetailKind::Result, format!("dry run: {result}")),
        Event::Written { id: s } => app.note(&id(s), DetailKind::Result, "written".into()),
        Event::Waiting { id: _, what, elapsed_s, timeout_s } => {
            app.busy = Some(Busy { what: what.clone(), elapsed_s: *elapsed_s, timeout_s: *timeout_s, waiting: true });
        }
        Event::Verified { id: s, what } => {
            let cid = id(s);
            if let Some(forward) = reverted_forward(&cid) {
                app.marks.insert(forward, Mark::RolledBack);
            }
            app.marks.insert(cid.clone(), Mark::Done);
            app.note(&cid, DetailKind::Result, format!("verified: {what}"));
            if let Some(b) = &mut app.busy {
                b.waiting = false;
            }
        }
        Event::Failed { id: s, error } => {
            app.marks.insert(id(s), Mark::Failed);
            app.note(&id(s), DetailKind::Failure, format!("FAILED: {error}"));
        }
        Event::Notice { message } => app.last_event = message.clone(),
        Event::Risk { message, .. } => app.last_event = message.clone(),
    }
    if !matches!(
        event,
        Event::Waiting { .. } | Event::Notice { .. } | Event::Risk { .. } | Event::Phase { .. } | Event::Step { .. }
    ) {
        app.last_event = event.to_string().trim().to_string();
    }
}

fn on_key(app: &mut App, key: KeyEvent) -> Vec<Command> {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return on_key(app, KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE));
    }
    if let Some(overlay) = app.overlay.take() {
        // A dialog longer than the screen scrolls; every other key answers it.
        let rows = overlay_rows(app, &overlay).len();
        let page = app.overlay_rows.max(1);
        let last = rows.saturating_sub(page);
        let scrolled = match key.code {
            KeyCode::Down | KeyCode::Char('j') => Some(app.overlay_scroll + 1),
            KeyCode::Up | KeyCode::Char('k') => Some(app.overlay_scroll.saturating_sub(1)),
            KeyCode::PageDown => Some(app.overlay_scroll + page),
            KeyCode::PageUp => Some(app.overlay_scroll.saturating_sub(page)),
            KeyCode::End | KeyCode::Char('G') => Some(last),
            KeyCode::Home | KeyCode::Char('g') => Some(0),
            _ => None,
        };
        if let Some(to) = scrolled.filter(|_| !matches!(overlay, Overlay::QuitWhileRunning)) {
            app.overlay_scroll = to.min(last);
            app.overlay = Some(overlay);
            return vec![];
        }
        app.overlay_scroll = 0;
        return match overlay {
            Overlay::Confirm(c) if key.code == KeyCode::Char(if c.override_risks { 'F' } else { 'y' }) => {
                app.busy = Some(Busy { what: c.title.clone(), elapsed_s: 0, timeout_s: 0, waiting: false });
                app.last_event = format!("started: {}", c.title);
                vec![c.on_yes]
            }
            Overlay::Confirm(c) => {
                app.last_event = format!("not done: {}", c.title);
                vec![]
            }
            Overlay::QuitWhileRunning if key.code == KeyCode::Char('y') => {
                app.quit = true;
                vec![Command::Cancel, Command::Quit]
            }
            _ => vec![],
        };
    }
    if app.filtering {
        match key.code {
            KeyCode::Esc => {
                app.filter.clear();
                app.filtering = false;
            }
            KeyCode::Enter => app.filtering = false,
            KeyCode::Backspace => {
                app.filter.pop();
            }
            KeyCode::Char(ch) => app.filter.push(ch),
            _ => {}
        }
        app.select(0);
        return vec![];
    }
    let page = app.detail_height.max(1);
    match (key.code, app.focus) {
        (KeyCode::Char('q'), _) => {
            if app.busy.is_some() {
                app.overlay = Some(Overlay::QuitWhileRunning);
                vec![]
            } else {
                app.quit = true;
                vec![Command::Quit]
            }
        }
        (KeyCode::Char('?'), _) => {
            app.overlay = Some(Overlay::Help);
            vec![]
        }
        (KeyCode::Esc, _) => {
            if app.busy.as_ref().is_some_and(|b| b.waiting) {
                app.last_event = "stopping the wait; the journal keeps what was written".into();
                vec![Command::Cancel]
            } else {
                app.focus = Focus::Steps;
                vec![]
            }
        }
        (KeyCode::Enter | KeyCode::Tab, Focus::Steps) => {
            app.focus = Focus::Detail;
            vec![]
        }
        (KeyCode::Enter | KeyCode::Tab, Focus::Detail) => {
            app.focus = Focus::Steps;
            vec![]
        }
        (KeyCode::Down | KeyCode::Char('j'), Focus::Steps) => {
            app.select(app.selected + 1);
            vec![]
        }
        (KeyCode::Up | KeyCode::Char('k'), Focus::Steps) => {
            app.select(app.selected.saturating_sub(1));
            vec![]
        }
        (KeyCode::Char('g'), Focus::Steps) | (KeyCode::Home, Focus::Steps) => {
            app.select(0);
            vec![]
        }
        (KeyCode::Char('G'), Focus::Steps) | (KeyCode::End, Focus::Steps) => {
            app.select(usize::MAX);
            vec![]
        }
        (KeyCode::Down | KeyCode::Char('j'), Focus::Detail) => {
            app.scroll = (app.scroll + 1).min(app.max_scroll());
            vec![]
        }
        (KeyCode::Up | KeyCode::Char('k'), Focus::Detail) => {
            app.scroll = app.scroll.saturating_sub(1);
            vec![]
        }
        (KeyCode::PageDown, _) => {
            app.scroll = (app.scroll + page).min(app.max_scroll());
            vec![]
        }
        (KeyCode::PageUp, _) => {
            app.scroll = app.scroll.saturating_sub(page);
            vec![]
        }
        (KeyCode::Char('g') | KeyCode::Home, Focus::Detail) => {
            app.scroll = 0;
            vec![]
        }
        (KeyCode::Char('G') | KeyCode::End, Focus::Detail) => {
            app.scroll = app.max_scroll();
            vec![]
        }
        (KeyCode::Char('/'), _) => {
            app.filtering = true;
            vec![]
        }
        (KeyCode::Char('r'), _) if app.busy.is_none() => {
            app.busy = Some(Busy {
                what: "observing the cluster and GitLab".into(),
                elapsed_s: 0,
                timeout_s: 0,
                waiting: false,
            });
            vec![Command::Observe]
        }
        (KeyCode::Char('s'), _) => vec![Command::Save],
        (KeyCode::Char('l'), _) => vec![Command::ShowJournal],
        (KeyCode::Char('d'), _) if app.may_write() => match app.selected_step() {
            Some(c) => {
                let id = c.id.clone();
                app.busy = Some(Busy { what: format!("dry run of {id}"), elapsed_s: 0, timeout_s: 0, waiting: false });
                vec![Command::DryRun(id)]
            }
            None => vec![],
        },
        (KeyCode::Char('a'), _) if app.may_write() => {
            let Some(c) = app.selected_step().cloned() else { return vec![] };
            if let Some(why) = app.blocked.get(&c.id) {
                app.overlay =
                    Some(Overlay::Message(format!("{} is blocked, so nothing of it is applied:\n{why}", c.id)));
                return vec![];
            }
            let deps = crate::engine::run::with_dependencies(&app.plan, &c.id);
            let mut lines: Vec<String> = apply_order(app)
                .into_iter()
                .filter(|s| deps.contains(&s.id) && app.mark(&s.id) != Mark::Done)
                .map(|s| format!("  {}", s.id))
                .collect();
            if lines.is_empty() {
                app.last_event = format!("{} is already in place", c.id);
                return vec![];
            }
            lines.insert(0, format!("target: {}", c.target));
            lines.insert(1, "These steps will run, in this order (what it waits for first):".into());
            lines.extend(app.where_to());
            app.overlay = Some(gated(app, format!("Apply {}?", c.id), lines, Selection::Step(c.id.clone())));
            vec![]
        }
        (KeyCode::Char('A'), _) if app.may_write() => {
            let Some(phase) = app.selected_step().map(|c| c.phase) else { return vec![] };
            let mut lines: Vec<String> = apply_order(app)
                .into_iter()
                .filter(|s| s.phase == phase && !matches!(app.mark(&s.id), Mark::Done | Mark::Blocked))
                .map(|s| format!("  {}", s.id))
                .collect();
            if lines.is_empty() {
                app.last_event = format!("Phase {} is in place", phase.number());
                return vec![];
            }
            lines.insert(0, format!("Phase {} {}: these steps run, in order:", phase.number(), phase.title()));
            lines.extend(app.where_to());
            app.overlay = Some(gated(
                app,
                format!("Apply Phase {} {}?", phase.number(), phase.title()),
                lines,
                Selection::Phase(phase),
            ));
            vec![]
        }
        (KeyCode::Char('R'), _) if app.may_write() => {
            app.busy = Some(Busy { what: "planning the rollback".into(), elapsed_s: 0, timeout_s: 0, waiting: false });
            vec![Command::PlanRollback]
        }
        _ => vec![],
    }
}

/// The confirmation of an apply: a plain yes/no, or, when risks bear on what it writes, the
/// risks listed and the override key asked for instead of `y`.
fn gated(app: &App, title: String, mut lines: Vec<String>, selection: Selection) -> Overlay {
    let stops = app.gate.stops(&app.plan, &selection);
    let override_risks = !stops.is_empty();
    if override_risks {
        lines.push(String::new());
        lines.push(format!("{} risk(s) or blocked change(s) bear on these steps:", stops.len()));
        lines.extend(stops.into_iter().map(|l| format!("  {l}")));
    }
    Overlay::Confirm(Confirm { title, lines, on_yes: Command::Apply(selection, override_risks), override_risks })
}

/// The steps in the order the engine applies them.
fn apply_order(app: &App) -> Vec<&Change> {
    app.plan.order().unwrap_or_else(|_| app.steps.iter().collect())
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
