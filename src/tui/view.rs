//! Drawing the app: a pure function of its state. Nothing here reads the network, the disk or
//! the clock; only the visible window of a long diff is turned into widgets.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use super::app::{App, DetailKind, Focus, Mark, Mode, Overlay, grouped};
use super::text::{key_help, overlay_text, wrap};

const SPINNER: [&str; 8] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧"];

/// Colours, or none (`NO_COLOR`, or a test that wants plain frames).
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    pub color: bool,
}

impl Palette {
    fn fg(self, c: Color) -> Style {
        if self.color { Style::default().fg(c) } else { Style::default() }
    }
    fn mark(self, m: Mark) -> Style {
        match m {
            Mark::Done => self.fg(Color::Green),
            Mark::Risk => self.fg(Color::Yellow),
            Mark::Failed => self.fg(Color::Red).add_modifier(Modifier::BOLD),
            Mark::Running => self.fg(Color::Cyan),
            Mark::RolledBack => self.fg(Color::Magenta),
            Mark::Pending => Style::default(),
            Mark::Blocked => self.fg(Color::Red),
        }
    }
    fn detail(self, k: DetailKind) -> Style {
        match k {
            DetailKind::Title => Style::default().add_modifier(Modifier::BOLD),
            DetailKind::Fact | DetailKind::Context => Style::default(),
            DetailKind::Finding => self.fg(Color::Yellow),
            DetailKind::Result => self.fg(Color::Cyan),
            DetailKind::Failure => self.fg(Color::Red).add_modifier(Modifier::BOLD),
            DetailKind::DiffHeader => self.fg(Color::Blue),
            DetailKind::Added => self.fg(Color::Green),
            DetailKind::Removed => self.fg(Color::Red),
        }
    }
}

/// The detail pane's inner height for a terminal of `area` (the runtime tells the app).
pub fn detail_height(area: Rect) -> usize {
    area.height.saturating_sub(4) as usize
}

pub fn render(frame: &mut Frame, app: &App, pal: Palette) {
    let area = frame.area();
    let [header, body, footer] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(3), Constraint::Length(1)]).areas(area);
    render_header(frame, header, app, pal);
    let left_width = (area.width * 2 / 5).clamp(24, 60);
    let [left, right] = Layout::horizontal([Constraint::Length(left_width), Constraint::Min(20)]).areas(body);
    render_steps(frame, left, app, pal);
    render_detail(frame, right, app, pal);
    render_footer(frame, footer, app, pal);
    if let Some(overlay) = &app.overlay {
        render_overlay(frame, area, app, overlay, pal);
    }
}

fn render_header(frame: &mut Frame, area: Rect, app: &App, pal: Palette) {
    let mode_style = match app.mode {
        Mode::Live => pal.fg(Color::Red).add_modifier(Modifier::BOLD),
        Mode::ReadOnly => pal.fg(Color::Green).add_modifier(Modifier::BOLD),
        Mode::Replay => pal.fg(Color::Yellow).add_modifier(Modifier::BOLD),
    };
    let mut spans = vec![
        Span::styled(" archshift ", Style::default().add_modifier(Modifier::REVERSED)),
        Span::raw(" "),
        Span::styled(app.mode.label(), mode_style),
    ];
    if app.insecure {
        spans.push(Span::styled("  TLS NOT VERIFIED", pal.fg(Color::Red).add_modifier(Modifier::BOLD)));
    }
    spans.push(Span::raw(format!("  context {}  cluster {}  GitLab {}", app.context, app.cluster, app.gitlab)));
    let line = Line::from(spans);
    frame.render_widget(Paragraph::new(line), area);
}

/// A bordered pane, its border marked when it has focus; returns the inside.
fn pane(frame: &mut Frame, area: Rect, title: String, focused: bool, pal: Palette) -> Rect {
    let style = if focused { pal.fg(Color::Cyan) } else { Style::default() };
    let block = Block::default().borders(Borders::ALL).title(title).border_style(style);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    inner
}

fn render_steps(frame: &mut Frame, area: Rect, app: &App, pal: Palette) {
    let focused = app.focus == Focus::Steps && app.overlay.is_none();
    let title = if app.filter.is_empty() && !app.filtering {
        " Phases ".to_string()
    } else {
        format!(" Phases /{}{} ", app.filter, if app.filtering { "▏" } else { "" })
    };
    let inner = pane(frame, area, title, focused, pal);
    let visible = app.visible();
    // Rows: a header per phase, then its steps; the selected one kept in view.
    let mut rows: Vec<(Option<usize>, Line)> = Vec::new();
    for (phase, positions) in grouped(app) {
        let done = positions.iter().filter(|&&p| app.mark(&app.steps[visible[p]].id) == Mark::Done).count();
        rows.push((
            None,
            Line::styled(
                format!("Phase {} {} ({done}/{})", phase.number(), phase.title(), positions.len()),
                Style::default().add_modifier(Modifier::BOLD),
            ),
        ));
        for p in positions {
            let step = &app.steps[visible[p]];
            let mark = app.mark(&step.id);
            let cursor = if p == app.selected { "›" } else { " " };
            let mut line = Line::from(vec![
                Span::raw(cursor),
                Span::styled(mark.symbol(), pal.mark(mark)),
                Span::raw(" "),
                Span::raw(step.id.as_str().to_string()),
            ]);
            if p == app.selected {
                line = line.style(Style::default().add_modifier(Modifier::REVERSED));
            }
            rows.push((Some(p), line));
        }
    }
    if rows.is_empty() {
        rows.push((None, Line::raw(if app.filter.is_empty() { "nothing to change" } else { "no step matches" })));
    }
    let height = inner.height as usize;
    let at = rows.iter().position(|(p, _)| *p == Some(app.selected)).unwrap_or(0);
    let offset = at.saturating_sub(height.saturating_sub(2).max(1));
    let lines: Vec<Line> = rows.into_iter().skip(offset).take(height).map(|(_, l)| l).collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn render_detail(frame: &mut Frame, area: Rect, app: &App, pal: Palette) {
    let focused = app.focus == Focus::Detail && app.overlay.is_none();
    let total = app.detail().len();
    let title = match app.selected_step() {
        Some(c) => format!(" {} [{}/{}] ", c.id, (app.scroll + 1).min(total.max(1)), total),
        None => " Step ".to_string(),
    };
    let inner = pane(frame, area, title, focused, pal);
    // Only the visible window becomes widgets: a 10,000-line diff costs a screenful.
    let lines: Vec<Line> = app
        .detail()
        .iter()
        .skip(app.scroll)
        .take(inner.height as usize)
        .map(|l| Line::styled(l.text.clone(), pal.detail(l.kind)))
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn render_footer(frame: &mut Frame, area: Rect, app: &App, pal: Palette) {
    let line = match &app.busy {
        Some(b) => {
            let clock = if b.timeout_s > 0 { format!(": {}s / {}s", b.elapsed_s, b.timeout_s) } else { String::new() };
            let esc = if b.waiting { "  (Esc stops waiting)" } else { "" };
            Line::from(vec![
                Span::styled(SPINNER[app.spinner % SPINNER.len()], pal.fg(Color::Cyan)),
                Span::raw(format!(" {}{clock}{esc}", b.what)),
            ])
        }
        None => Line::from(vec![
            Span::styled(key_help(app), Style::default().add_modifier(Modifier::DIM)),
            Span::raw("  │ "),
            Span::raw(app.last_event.clone()),
        ]),
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width.saturating_sub(2)).max(10);
    let h = height.min(area.height.saturating_sub(2)).max(3);
    Rect {
        x: area.x + (area.width.saturating_sub(w)) / 2,
        y: area.y + (area.height.saturating_sub(h)) / 2,
        width: w,
        height: h,
    }
}

fn render_overlay(frame: &mut Frame, area: Rect, app: &App, overlay: &Overlay, pal: Palette) {
    let style = match overlay {
        Overlay::Help | Overlay::Journal(_) => Style::default(),
        Overlay::Confirm(_) | Overlay::QuitWhileRunning => pal.fg(Color::Yellow),
        Overlay::Message(_) => pal.fg(Color::Red),
    };
    let (title, lines) = overlay_text(app, overlay);
    let (width, max_rows) = overlay_inner(area);
    let rows = wrap(&lines, width);
    let shown = rows.len().min(max_rows);
    let rect = centered(area, width as u16 + 2, shown as u16 + 2);
    frame.render_widget(Clear, rect);
    let mut block = Block::default().borders(Borders::ALL).title(title).border_style(style);
    let first = app.overlay_scroll.min(rows.len().saturating_sub(shown));
    let mut bottom = Vec::new();
    if rows.len() > shown {
        bottom.push(format!("{}-{} of {} ↑↓", first + 1, first + shown, rows.len()));
    }
    if matches!(overlay, Overlay::Confirm(_) | Overlay::QuitWhileRunning) {
        bottom.push("y: go ahead · any other key: cancel".into());
    }
    if !bottom.is_empty() {
        block = block.title_bottom(format!(" {} ", bottom.join(" · ")));
    }
    let text: Vec<Line> = rows.into_iter().skip(first).take(shown).map(Line::raw).collect();
    frame.render_widget(Paragraph::new(text).block(block), rect);
}

/// What the app needs to know of a screen of `area` (pane and dialog sizes).
pub fn resized(area: Rect) -> super::app::Msg {
    let (overlay_width, overlay_rows) = overlay_inner(area);
    super::app::Msg::Resize { detail_height: detail_height(area), overlay_width, overlay_rows }
}

/// A dialog's inside on a screen of `area`: the width its lines wrap at and the most rows it
/// shows.
pub fn overlay_inner(area: Rect) -> (usize, usize) {
    let width = (area.width * 4 / 5).max(40).min(area.width.saturating_sub(2)).max(10);
    (usize::from(width.saturating_sub(2)), usize::from(area.height.saturating_sub(4)).max(1))
}
