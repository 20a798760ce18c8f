//! How the TUI's state changes: `update(state, message) -> commands`, keys and engine
//! events included. No IO: the runtime ([`super::run`]) turns commands into engine work.

use crate::engine::run::{Event, Selection, reverted_forward};
use crate::model::{Change, ChangeId, Status};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::app::{App, Busy, Command, Confirm, DetailKind, Focus, Mark, Mode, Msg, Overlay};
use super::text::overlay_rows;

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
