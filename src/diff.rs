//! Unified diffs of a change's before and after, as `kubectl diff` shows them: server noise
//! dropped (managedFields, resourceVersion, status unless asked), secrets shown as
//! `(sensitive)` whatever asked for them.

use serde_json::Value;
use similar::TextDiff;

use crate::model::{Change, Document};

/// Replaces every secret value in output.
pub const SENSITIVE: &str = "(sensitive)";

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
/// Keys whose values are credentials wherever they appear (chart values, runner config).
const SECRET_KEYS: [&str; 5] = ["runnerToken", "runnerRegistrationToken", "token", "password", "registration-token"];
/// Prefixes of GitLab tokens: personal/project/group access, runner authentication, legacy registration.
const TOKEN_PREFIXES: [&str; 5] = ["glpat-", "glrt-", "gldt-", "glptt-", "GR1348941"];

#[derive(Debug, Clone, Copy)]
pub struct DiffOptions {
    pub include_status: bool,
    pub color: bool,
    pub context: usize,
}

impl Default for DiffOptions {
    fn default() -> Self {
        Self { include_status: false, color: false, context: 3 }
    }
}

/// The unified diff of one change, with a `---`/`+++` header naming its target.
pub fn change_diff(change: &Change, opts: DiffOptions) -> String {
    let render = |d: &Option<Document>| match d {
        None => String::new(),
        Some(Document::Text(t)) => scrub_text(t),
        Some(Document::Object(v)) => object_yaml(v, &change.sensitive, opts.include_status),
    };
    let name = change.target.to_string();
    let before = render(&change.before);
    let after = render(&change.after);
    let (old, new) = match (&change.before, &change.after) {
        (None, _) => ("/dev/null".to_string(), format!("b/{name}")),
        (_, None) => (format!("a/{name}"), "/dev/null".to_string()),
        _ => (format!("a/{name}"), format!("b/{name}")),
    };
    let diff = unified(&before, &after, &old, &new, opts.context);
    if opts.color { colorize(&diff) } else { diff }
}

/// A unified diff of two texts; empty when they are equal.
pub fn unified(before: &str, after: &str, old: &str, new: &str, context: usize) -> String {
    if before == after {
        return String::new();
    }
    TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(context)
        .header(old, new)
        .missing_newline_hint(true)
        .to_string()
}

/// An object as YAML for review: noise dropped, secrets masked.
pub fn object_yaml(obj: &Value, sensitive: &[String], include_status: bool) -> String {
    let clean = mask(&strip_noise(obj, include_status), sensitive);
    yaml_serde::to_string(&clean).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
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

/// Masks the listed JSON pointers, Secret data, credential-named keys and token-looking strings.
pub fn mask(obj: &Value, pointers: &[String]) -> Value {
    let mut v = obj.clone();
    for p in pointers {
        if let Some(slot) = v.pointer_mut(p)
            && !slot.is_null()
        {
            *slot = Value::String(SENSITIVE.into());
        }
    }
    let is_secret = v["kind"] == "Secret";
    if is_secret {
        for field in ["data", "stringData"] {
            if let Some(m) = v.get_mut(field).and_then(Value::as_object_mut) {
                for val in m.values_mut() {
                    *val = Value::String(SENSITIVE.into());
                }
            }
        }
    }
    if v["masked"] == true && v.get("value").is_some_and(|x| !x.is_null()) {
        v["value"] = Value::String(SENSITIVE.into());
    }
    mask_walk(&mut v);
    v
}

fn mask_walk(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if SECRET_KEYS.contains(&k.as_str()) && (val.is_string() || val.is_number()) {
                    *val = Value::String(SENSITIVE.into());
                } else {
                    mask_walk(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask_walk),
        Value::String(s) => {
            let scrubbed = scrub_text(s);
            if scrubbed != *s {
                *s = scrubbed;
            }
        }
        _ => {}
    }
}

/// Replaces token-looking words in free text (a runner `config.toml`, a CI file), and the
/// value of `token = "…"` lines.
pub fn scrub_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("token")
            && rest.trim_start().starts_with('=')
        {
            let indent = &line[..line.len() - trimmed.len()];
            let eol = if line.ends_with("\r\n") {
                "\r\n"
            } else if line.ends_with('\n') {
                "\n"
            } else {
                ""
            };
            out.push_str(&format!("{indent}token = \"{SENSITIVE}\"{eol}"));
            continue;
        }
        out.push_str(&scrub_words(line));
    }
    out
}

fn scrub_words(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some((pos, prefix)) =
        TOKEN_PREFIXES.iter().filter_map(|p| rest.find(p).map(|i| (i, *p))).min_by_key(|(i, _)| *i)
    {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos + prefix.len()..];
        let len =
            tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')).unwrap_or(tail.len());
        if len >= 8 {
            out.push_str(SENSITIVE);
        } else {
            out.push_str(&rest[pos..pos + prefix.len() + len]);
        }
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

/// ANSI colours for a terminal: additions green, removals red, hunk headers cyan.
pub fn colorize(diff: &str) -> String {
    diff.lines()
        .map(|l| {
            if l.starts_with("+++") || l.starts_with("---") {
                format!("\x1b[1m{l}\x1b[0m\n")
            } else if l.starts_with('+') {
                format!("\x1b[32m{l}\x1b[0m\n")
            } else if l.starts_with('-') {
                format!("\x1b[31m{l}\x1b[0m\n")
            } else if l.starts_with("@@") {
                format!("\x1b[36m{l}\x1b[0m\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
