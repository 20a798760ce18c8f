//! The TUI's text: overlay bodies, word wrap, key hints and help. Pure functions of the
//! state; no IO.

use super::app::{App, Focus, Mode, Overlay};

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
