//! The TUI's state machine driven by keys, and its frames on ratatui's TestBackend.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::app::{App, Command, Confirm, Focus, Mark, Mode, Msg, Overlay};
use super::text::key_help;
use super::update::update;
use super::view::{self, Palette};
use crate::engine::run::{Event, Selection};
use crate::model::fixtures::{plan as spec, start};
use crate::model::{ChangeId, Plan};

fn plan() -> Plan {
    crate::phases::plan(&start(), &spec(), "plan text")
}

fn app(mode: Mode) -> App {
    App::new(mode, "archshift-sandbox", "http://127.0.0.1:8929", plan())
}

fn key(app: &mut App, code: KeyCode) -> Vec<Command> {
    update(app, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

fn chars(app: &mut App, s: &str) -> Vec<Command> {
    s.chars().flat_map(|c| key(app, KeyCode::Char(c))).collect()
}

fn frame(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| view::render(f, app, Palette { color: false })).unwrap();
    let buffer = terminal.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..buffer.area.height {
        let line: String = (0..buffer.area.width).map(|x| buffer[(x, y)].symbol().to_string()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn select(app: &mut App, id: &str) {
    while app.selected_step().map(|c| c.id.as_str()) != Some(id) {
        let before = app.selected;
        key(app, KeyCode::Down);
        assert_ne!(app.selected, before, "{id} not in the list");
    }
}

#[test]
fn keys_move_focus_scroll_and_filter() {
    let mut a = app(Mode::Live);
    assert_eq!(a.selected_step().unwrap().id.as_str(), "nodepool/spot-pool", "Phase 1 first");
    key(&mut a, KeyCode::Char('j'));
    assert_eq!(a.selected_step().unwrap().phase, crate::vocab::Phase::Runners);
    key(&mut a, KeyCode::Char('k'));
    key(&mut a, KeyCode::Up);
    assert_eq!(a.selected, 0, "stays at the top");
    key(&mut a, KeyCode::Enter);
    assert_eq!(a.focus, Focus::Detail);
    update(&mut a, Msg::Resize { detail_height: 5, overlay_width: 60, overlay_rows: 18 });
    key(&mut a, KeyCode::PageDown);
    assert_eq!(a.scroll, 5);
    key(&mut a, KeyCode::Char('G'));
    assert_eq!(a.scroll, a.detail().len() - 5);
    key(&mut a, KeyCode::Char('g'));
    assert_eq!(a.scroll, 0);
    key(&mut a, KeyCode::Tab);
    assert_eq!(a.focus, Focus::Steps);
    chars(&mut a, "/argo");
    key(&mut a, KeyCode::Enter);
    assert!(!a.filtering);
    assert_eq!(a.visible().len(), 3);
    assert!(a.selected_step().unwrap().id.as_str().starts_with("argo/"));
    key(&mut a, KeyCode::Char('/'));
    key(&mut a, KeyCode::Esc);
    assert_eq!(a.visible().len(), a.steps.len(), "Esc clears the filter");
}

#[test]
fn apply_asks_first_names_what_runs_and_where_then_starts_only_on_y() {
    let mut a = app(Mode::Live);
    select(&mut a, "nodepool/spot-pool");
    assert!(key(&mut a, KeyCode::Char('a')).is_empty(), "nothing before the answer");
    let Some(Overlay::Confirm(c)) = &a.overlay else { panic!("{:?}", a.overlay) };
    let text = c.lines.join("\n");
    assert!(text.contains("argo/WorkflowTemplate/ci/build-images"), "its pins run first: {text}");
    assert!(text.contains("cluster: ") && text.contains("GitLab:  http://127.0.0.1:8929"), "{text}");
    // Anything but y declines.
    assert!(key(&mut a, KeyCode::Char('n')).is_empty());
    assert!(a.overlay.is_none());
    key(&mut a, KeyCode::Char('a'));
    let commands = key(&mut a, KeyCode::Char('y'));
    assert_eq!(commands, [Command::Apply(Selection::Step(ChangeId::from("nodepool/spot-pool")), false)]);
    assert!(a.busy.is_some());
    // While it runs: no second write, and q asks first.
    assert!(key(&mut a, KeyCode::Char('a')).is_empty());
    assert!(key(&mut a, KeyCode::Char('q')).is_empty());
    assert_eq!(a.overlay, Some(Overlay::QuitWhileRunning));
    key(&mut a, KeyCode::Char('n'));
    assert!(!a.quit);
    // Engine events move the marks.
    update(&mut a, Msg::Engine(Event::Step { id: "nodepool/spot-pool".into(), summary: "s".into() }));
    assert_eq!(a.mark(&ChangeId::from("nodepool/spot-pool")), Mark::Running);
    update(&mut a, Msg::Engine(Event::Verified { id: "nodepool/spot-pool".into(), what: "read back".into() }));
    assert_eq!(a.mark(&ChangeId::from("nodepool/spot-pool")), Mark::Done);
    update(&mut a, Msg::Finished(Ok("done".into())));
    assert!(a.busy.is_none());
    assert_eq!(key(&mut a, KeyCode::Char('q')), [Command::Quit]);
    assert!(a.quit);
}

#[test]
fn read_only_mode_cannot_reach_a_write_whatever_is_pressed() {
    let mut a = app(Mode::ReadOnly);
    let mut all = Vec::new();
    let keys: Vec<KeyCode> = (' '..='~')
        .map(KeyCode::Char)
        .chain([KeyCode::Enter, KeyCode::Tab, KeyCode::Esc, KeyCode::Down, KeyCode::Up, KeyCode::PageDown])
        .collect();
    // Every key after every key, from every step: no command that writes.
    for first in &keys {
        for second in &keys {
            all.extend(key(&mut a, *first));
            all.extend(key(&mut a, *second));
            a.overlay = None;
            a.filtering = false;
            a.quit = false;
        }
        key(&mut a, KeyCode::Down);
    }
    // Even a rollback plan arriving offers nothing that writes.
    update(&mut a, Msg::RollbackPlan(plan()));
    all.extend(key(&mut a, KeyCode::Char('y')));
    let writes: Vec<&Command> = all.iter().filter(|c| c.writes()).collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert!(all.contains(&Command::Observe) && all.contains(&Command::Save), "reads still work");
    assert!(!frame(&app(Mode::ReadOnly), 160, 48).contains(" a apply"), "write keys are not shown");
}

fn snapshot_pair(name: &str, a: &mut App) {
    for (w, h) in [(80, 24), (160, 48)] {
        update(a, view::resized(ratatui::layout::Rect::new(0, 0, w, h)));
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), frame(a, w, h));
    }
}

#[test]
fn frames_at_80x24_and_160x48() {
    let mut a = app(Mode::Live);
    snapshot_pair("overview", &mut a);

    select(&mut a, "nodepool/spot-pool");
    key(&mut a, KeyCode::Enter);
    snapshot_pair("nodepool_diff", &mut a);

    key(&mut a, KeyCode::Tab);
    key(&mut a, KeyCode::Char('a'));
    snapshot_pair("confirm", &mut a);

    key(&mut a, KeyCode::Char('y'));
    let runner = "runner/sandbox-arm64";
    update(&mut a, Msg::Engine(Event::Step { id: runner.into(), summary: "create runner".into() }));
    update(
        &mut a,
        Msg::Engine(Event::Waiting {
            id: runner.into(),
            what: "runner sandbox-arm64 to come online on arm64 (runner #127 is never_contacted)".into(),
            elapsed_s: 12,
            timeout_s: 600,
        }),
    );
    snapshot_pair("verifying", &mut a);

    update(
        &mut a,
        Msg::Engine(Event::Failed {
            id: runner.into(),
            error: "timed out after 600s waiting for runner sandbox-arm64 to come online on arm64".into(),
        }),
    );
    select(&mut a, runner);
    update(&mut a, Msg::Finished(Err("step runner/sandbox-arm64 failed: timed out after 600s".into())));
    assert_eq!(a.mark(&ChangeId::from(runner)), Mark::Failed);
    snapshot_pair("failure", &mut a);
    // Closed, the failed step shows what happened to it.
    key(&mut a, KeyCode::Char('x'));
    assert!(a.detail().iter().any(|l| l.text.starts_with("FAILED: timed out")), "{:?}", a.detail());
    // The world once the plan is applied, and the journal that says so.
    let forward = plan();
    let mut migrated = start();
    let mut journal = crate::phases::rollback::Journal::new();
    for c in forward.order().unwrap() {
        crate::model::apply_change(&mut migrated, c).unwrap();
        journal.insert(
            c.id.clone(),
            crate::phases::rollback::Applied {
                before: c.before.clone(),
                after: c.after.clone(),
                action: Some(c.action),
                runner_id: None,
            },
        );
    }
    let mut rollback = plan();
    rollback.phases = vec![crate::phases::rollback::plan(&migrated, &spec(), &journal)];
    assert!(rollback.changes().count() > 5);
    update(&mut a, Msg::RollbackPlan(rollback));
    snapshot_pair("rollback", &mut a);

    key(&mut a, KeyCode::Char('n'));
    key(&mut a, KeyCode::Char('?'));
    snapshot_pair("help", &mut a);
}

#[test]
fn a_ten_thousand_line_diff_renders_only_its_window() {
    let mut p = plan();
    let big: String = (0..10_000).map(|i| format!("line {i}\n")).collect();
    for c in p.phases.iter_mut().flat_map(|ph| ph.changes.iter_mut()) {
        if c.id.as_str() == "cifile/platform/kaniko-builder/.gitlab-ci.yml" {
            c.before = Some(crate::model::Document::Text(String::new()));
            c.after = Some(crate::model::Document::Text(big.clone()));
        }
    }
    let mut a = App::new(Mode::Live, "c", "g", p);
    select(&mut a, "cifile/platform/kaniko-builder/.gitlab-ci.yml");
    assert!(a.detail().len() > 10_000);
    key(&mut a, KeyCode::Enter);
    update(&mut a, Msg::Resize { detail_height: 20, overlay_width: 60, overlay_rows: 18 });
    key(&mut a, KeyCode::Char('G'));
    let text = frame(&a, 80, 24);
    assert!(text.contains("+line 9999"), "{text}");
    assert!(!text.contains("+line 5000"));
}

#[test]
fn the_header_says_when_tls_is_not_verified() {
    let mut a = app(Mode::Live);
    assert!(!frame(&a, 120, 24).contains("TLS NOT VERIFIED"));
    a.insecure = true;
    let header = frame(&a, 120, 24).lines().next().unwrap().to_string();
    assert!(header.contains("LIVE  TLS NOT VERIFIED  context"), "{header}");
}

#[test]
fn a_dialog_longer_than_the_screen_scrolls_to_its_last_step_and_y_still_answers() {
    let mut a = app(Mode::Live);
    update(&mut a, view::resized(ratatui::layout::Rect::new(0, 0, 80, 12)));
    let steps: Vec<String> = (1..=30).map(|i| format!("  step-{i:02}")).collect();
    let on_yes = Command::Apply(Selection::Step(ChangeId::from("nodepool/spot-pool")), false);
    a.overlay = Some(Overlay::Confirm(Confirm {
        title: "Apply?".into(),
        lines: steps,
        on_yes: on_yes.clone(),
        override_risks: false,
    }));
    let shown = frame(&a, 80, 12);
    assert!(shown.contains("step-01") && !shown.contains("step-30"), "{shown}");
    assert!(shown.contains("1-8 of 32"), "where it stands: {shown}");
    assert!(key_help(&a).contains("scroll"));
    // Scrolling keeps the dialog open and never runs anything.
    assert!(key(&mut a, KeyCode::Down).is_empty());
    assert_eq!(a.overlay_scroll, 1);
    assert!(key(&mut a, KeyCode::PageDown).is_empty() && key(&mut a, KeyCode::End).is_empty());
    assert!(a.overlay.is_some());
    assert_eq!(a.overlay_scroll, 32 - 8, "the last page, no further");
    key(&mut a, KeyCode::Down);
    assert_eq!(a.overlay_scroll, 24);
    let shown = frame(&a, 80, 12);
    assert!(shown.contains("step-30") && shown.contains("any other key cancels"), "{shown}");
    assert_eq!(key(&mut a, KeyCode::Char('y')), [on_yes]);
    assert_eq!(a.overlay_scroll, 0, "the next dialog starts at its top");
}

#[test]
fn wrapping_keeps_short_lines_as_they_are_and_breaks_long_ones_within_the_width() {
    let lines = vec!["GitLab:  http://x".to_string(), "  one two three four".into(), "abcdefghij".into()];
    let rows = crate::tui::text::wrap(&lines, 8);
    assert_eq!(rows[0], "GitLab:", "{rows:?}");
    assert!(rows.iter().all(|r| r.chars().count() <= 8), "{rows:?}");
    assert!(rows.contains(&"  one".to_string()) && rows.contains(&"abcdefgh".to_string()), "{rows:?}");
    assert_eq!(crate::tui::text::wrap(&["a  b".into()], 8), ["a  b"], "a line that fits keeps its spacing");
}

#[test]
fn a_step_a_risk_bears_on_asks_for_the_override_key_and_y_does_nothing() {
    // A token reset of a runner with a manager online: a risk on that step.
    let mut s = start();
    s.runners.push(crate::model::fixtures::runner(8, &["sandbox-arm64"], "online"));
    let p = crate::phases::plan(&s, &spec(), "plan text");
    let mut a = App::new(Mode::Live, "archshift-sandbox", "http://127.0.0.1:8929", p);
    let reset = "runner-token/sandbox-arm64";
    assert_eq!(a.mark(&ChangeId::from(reset)), Mark::Risk);
    select(&mut a, reset);
    key(&mut a, KeyCode::Char('a'));
    let Some(Overlay::Confirm(c)) = &a.overlay else { panic!("{:?}", a.overlay) };
    assert!(c.override_risks);
    assert!(c.lines.iter().any(|l| l.contains("risk runner.token-reset")), "{:?}", c.lines);
    assert!(key_help(&a).starts_with("F: write through the risks"), "{}", key_help(&a));
    assert!(key(&mut a, KeyCode::Char('y')).is_empty(), "y is not the override");
    assert!(a.overlay.is_none() && a.busy.is_none());
    key(&mut a, KeyCode::Char('a'));
    let commands = key(&mut a, KeyCode::Char('F'));
    assert_eq!(commands, [Command::Apply(Selection::Step(ChangeId::from(reset)), true)]);
}

#[test]
fn blocked_steps_are_listed_marked_and_never_applied() {
    let mut s = start();
    s.node_pools.clear();
    let p = crate::phases::plan(&s, &spec(), "plan text");
    let mut a = App::new(Mode::Live, "archshift-sandbox", "http://127.0.0.1:8929", p);
    let pool = ChangeId::from("nodepool/spot-pool");
    assert_eq!(a.mark(&pool), Mark::Blocked);
    select(&mut a, "nodepool/spot-pool");
    a.refresh_detail();
    assert!(a.detail().iter().any(|l| l.text.starts_with("BLOCKED: NodePool spot-pool is not in the cluster")));
    assert!(key(&mut a, KeyCode::Char('a')).is_empty());
    let Some(Overlay::Message(m)) = &a.overlay else { panic!("{:?}", a.overlay) };
    assert!(m.contains("is blocked"), "{m}");
    let shown = frame(&a, 80, 24);
    assert!(shown.contains("⊘ nodepool/spot-pool"), "{shown}");
}
