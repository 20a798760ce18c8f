//! Diffs of a change's before and after, as data: `kubectl diff` content (server noise
//! dropped, status only on request), secrets masked through `redact`, bindings shown as where
//! their value comes from. Renderers for a terminal, plain text and Markdown sit at the edge;
//! the TUI draws `Diff` lines itself.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use similar::{ChangeTag, TextDiff};

use crate::model::{Change, Document};
use crate::redact;

pub use crate::redact::SENSITIVE;

/// Metadata the server writes; it changes on every write and says nothing about intent.
const NOISY_METADATA: [&str; 7] = [
    "managedFields",
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "selfLink",
    "deletionGracePeriodSeconds",
];
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[derive(Debug, Clone, Copy)]
pub struct DiffOptions {
    pub include_status: bool,
    pub context: usize,
}

impl Default for DiffOptions {
    fn default() -> Self {
        Self { include_status: false, context: 3 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineKind {
    Context,
    Added,
    Removed,
}

/// One line of a hunk, without its line ending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub kind: LineKind,
    pub text: String,
    /// The line is the last of its side and has no newline.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_newline: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hunk {
    /// `@@ -1,3 +1,4 @@`
    pub header: String,
    pub lines: Vec<Line>,
}

/// A unified diff as data; no hunks when the two sides are equal.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Diff {
    /// `a/<target>` or `/dev/null`.
    pub old: String,
    /// `b/<target>` or `/dev/null`.
    pub new: String,
    pub hunks: Vec<Hunk>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.hunks.is_empty()
    }

    pub fn lines(&self) -> impl Iterator<Item = &Line> {
        self.hunks.iter().flat_map(|h| h.lines.iter())
    }

    /// (added, removed) line counts.
    pub fn stat(&self) -> (usize, usize) {
        self.lines().fold((0, 0), |(a, r), l| match l.kind {
            LineKind::Added => (a + 1, r),
            LineKind::Removed => (a, r + 1),
            LineKind::Context => (a, r),
        })
    }
}

/// Plain unified text, as `diff -u` prints it.
impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&render::plain(self))
    }
}

/// The diff of one change, headed with its target.
pub fn change_diff(change: &Change, opts: DiffOptions) -> Diff {
    let render = |d: &Option<Document>, bound: bool| match d {
        None => String::new(),
        Some(Document::Text(t)) => redact::scrub_text(t),
        Some(Document::Object(v)) => {
            let mut shown = redact::mask(&strip_noise(v, opts.include_status), &change.sensitive);
            if bound {
                for b in &change.bindings {
                    if let Some(slot) = shown.pointer_mut(&b.pointer) {
                        *slot = Value::String(format!("({})", b.source));
                    }
                }
            }
            to_yaml(&shown)
        }
    };
    let name = change.target.to_string();
    let old = if change.before.is_some() { format!("a/{name}") } else { "/dev/null".into() };
    let new = if change.after.is_some() { format!("b/{name}") } else { "/dev/null".into() };
    text_diff(&render(&change.before, false), &render(&change.after, true), old, new, opts.context)
}

/// The diff of two texts.
pub fn text_diff(before: &str, after: &str, old: String, new: String, context: usize) -> Diff {
    let mut diff = Diff { old, new, hunks: Vec::new() };
    if before == after {
        return diff;
    }
    let td = TextDiff::from_lines(before, after);
    let mut unified = td.unified_diff();
    unified.context_radius(context);
    for hunk in unified.iter_hunks() {
        let lines = hunk
            .iter_changes()
            .map(|c| {
                let value = c.value();
                Line {
                    kind: match c.tag() {
                        ChangeTag::Equal => LineKind::Context,
                        ChangeTag::Insert => LineKind::Added,
                        ChangeTag::Delete => LineKind::Removed,
                    },
                    text: value.strip_suffix('\n').unwrap_or(value).to_string(),
                    no_newline: c.missing_newline(),
                }
            })
            .collect();
        diff.hunks.push(Hunk { header: hunk.header().to_string(), lines });
    }
    diff
}

/// An object as YAML for review.
fn to_yaml(v: &Value) -> String {
    yaml_serde::to_string(v).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

/// Drops what the server maintains and what no reviewer needs.
pub fn strip_noise(obj: &Value, include_status: bool) -> Value {
    let mut v = obj.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in NOISY_METADATA {
            meta.remove(k);
        }
        if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            ann.remove(LAST_APPLIED);
            if ann.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    if !include_status && let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    v
}

/// Renderers: the same `Diff` as plain unified text, with ANSI colours, or as Markdown.
pub mod render {
    use super::{Diff, LineKind};

    fn marker(kind: LineKind) -> char {
        match kind {
            LineKind::Context => ' ',
            LineKind::Added => '+',
            LineKind::Removed => '-',
        }
    }

    /// `diff -u` text; empty for an empty diff.
    pub fn plain(d: &Diff) -> String {
        styled(d, |_, s| s)
    }

    /// For a terminal: additions green, removals red, hunk headers cyan, file headers bold.
    pub fn ansi(d: &Diff) -> String {
        styled(d, |style, s| match style {
            Style::File => format!("\x1b[1m{s}\x1b[0m"),
            Style::Hunk => format!("\x1b[36m{s}\x1b[0m"),
            Style::Line(LineKind::Added) => format!("\x1b[32m{s}\x1b[0m"),
            Style::Line(LineKind::Removed) => format!("\x1b[31m{s}\x1b[0m"),
            Style::Line(LineKind::Context) => s,
        })
    }

    /// A fenced `diff` block that pastes into a merge request.
    pub fn markdown(d: &Diff) -> String {
        if d.is_empty() {
            return String::new();
        }
        let body = plain(d);
        // A fence longer than any backtick run inside keeps the block closed.
        let longest = body.split(|c| c != '`').map(str::len).max().unwrap_or(0);
        let fence = "`".repeat(longest.max(2) + 1);
        format!("{fence}diff\n{body}{fence}\n")
    }

    pub enum Style {
        File,
        Hunk,
        Line(LineKind),
    }

    fn styled(d: &Diff, paint: impl Fn(Style, String) -> String) -> String {
        if d.is_empty() {
            return String::new();
        }
        let mut out = String::new();
        out.push_str(&paint(Style::File, format!("--- {}", d.old)));
        out.push('\n');
        out.push_str(&paint(Style::File, format!("+++ {}", d.new)));
        out.push('\n');
        for h in &d.hunks {
            out.push_str(&paint(Style::Hunk, h.header.clone()));
            out.push('\n');
            for l in &h.lines {
                out.push_str(&paint(Style::Line(l.kind), format!("{}{}", marker(l.kind), l.text)));
                out.push('\n');
                if l.no_newline {
                    out.push_str("\\ No newline at end of file\n");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
