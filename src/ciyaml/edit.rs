//! Text edits on yaml-edit's lossless tree: insert `tags` and nothing else.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use yaml_edit::{Document, Mapping, Parse, Sequence, YamlFile};

use super::CiYamlError;
use super::analyze::is_job_name;

fn config_document(file: &YamlFile) -> Option<Document> {
    // With a `spec:` header the configuration is the last document.
    file.documents().last()
}

/// `[tag]`: one line in the form the migration plan writes, with no block-sequence
/// indentation to get wrong in a file that has its own.
fn tag_sequence(tag: &str) -> String {
    let seq = Sequence::new_flow();
    seq.push(tag);
    seq.to_string()
}

/// Text the edit puts in at a byte offset of the input. The edit is nothing but these, so it
/// can be proved insertion-only in one pass ([`super::verify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Insertion {
    pub at: usize,
    pub text: String,
}

/// The input with the insertions made (they are sorted by offset, ties in the given order).
pub(super) fn apply(text: &str, insertions: &[Insertion]) -> String {
    let mut out = String::with_capacity(text.len() + insertions.iter().map(|i| i.text.len()).sum::<usize>());
    let mut from = 0;
    for ins in insertions {
        out.push_str(&text[from..ins.at]);
        out.push_str(&ins.text);
        from = ins.at;
    }
    out.push_str(&text[from..]);
    out
}

/// Where `tags: [tag]` goes in each named job, and in `default:` (created if needed) when
/// asked: after a block mapping's last entry, on a line of its own at the mapping's
/// indentation; after a flow mapping's last entry, as `, tags: [tag]`.
pub(super) fn tag_insertions(
    text: &str,
    parsed: &Parse<YamlFile>,
    jobs: &[(String, String)],
    default_tag: Option<&str>,
) -> Result<Vec<Insertion>, CiYamlError> {
    if jobs.is_empty() && default_tag.is_none() {
        return Ok(Vec::new());
    }
    if let Some(e) = parsed.errors().first() {
        return Err(CiYamlError::Verification(format!("the lossless parser disagrees with the YAML parser: {e}")));
    }
    let file = parsed.tree();
    let top = config_document(&file)
        .and_then(|d| d.as_mapping())
        .ok_or_else(|| CiYamlError::Verification("no top-level mapping to edit".into()))?;
    let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
    // With a repeated key GitLab reads the last one, so later entries replace earlier ones.
    let mut mappings: HashMap<Cow<'_, str>, Option<Mapping>> = HashMap::new();
    for entry in top.entries() {
        if let Some(name) = entry.key_node().and_then(|k| key_name(text, &k)) {
            mappings.insert(name, entry.value_node().and_then(|v| v.as_mapping().cloned()));
        }
    }
    let mapping = |name: &str| mappings.get(name).cloned().flatten();
    // One rendering a tag, not one syntax tree a job.
    let mut rendered: HashMap<&str, String> = HashMap::new();
    let mut out = Vec::with_capacity(jobs.len() + 1);
    for (job, tag) in jobs {
        let m =
            mapping(job).ok_or_else(|| CiYamlError::Verification(format!("job {job} is not an editable mapping")))?;
        let seq = rendered.entry(tag.as_str()).or_insert_with(|| tag_sequence(tag));
        out.push(entry_insertion(text, &m, "tags", seq, eol)?);
    }
    if let Some(tag) = default_tag {
        match mapping("default") {
            Some(d) => out.push(entry_insertion(text, &d, "tags", &tag_sequence(tag), eol)?),
            None => out.push(default_section(text, &top, tag, eol)?),
        }
    }
    out.sort_by_key(|i| i.at);
    Ok(out)
}

/// A mapping key as GitLab reads it: the text as written unless it is quoted.
fn key_name<'t>(text: &'t str, key: &yaml_edit::YamlNode) -> Option<Cow<'t, str>> {
    let scalar = key.as_scalar()?;
    let range = key.byte_range();
    let raw = text.get(range.start as usize..range.end as usize)?.trim();
    if raw.is_empty() || raw.starts_with(['"', '\'', '!', '&', '?']) || raw.contains(['#', '\n']) {
        return Some(Cow::Owned(scalar.as_string()));
    }
    Some(Cow::Borrowed(raw))
}

/// `key: value` as a new last entry of `m`.
fn entry_insertion(text: &str, m: &Mapping, key: &str, value: &str, eol: &str) -> Result<Insertion, CiYamlError> {
    let range = m.byte_range();
    let entries: Vec<_> = m.entries().collect();
    let last_end = entries.last().map(|e| {
        let r = e.value_node().map(|v| v.byte_range()).or_else(|| e.key_node().map(|k| k.byte_range()));
        r.map_or(e.byte_range().end, |r| r.end) as usize
    });
    if m.is_flow_style() {
        return Ok(match last_end {
            Some(at) => Insertion { at, text: format!(", {key}: {value}") },
            None => {
                let start = range.start as usize;
                let brace = text[start..]
                    .find('{')
                    .ok_or_else(|| CiYamlError::Verification("an empty flow mapping without its brace".into()))?;
                Insertion { at: start + brace + 1, text: format!("{key}: {value}") }
            }
        });
    }
    let (Some(first), Some(last_end)) = (entries.first(), last_end) else {
        return Err(CiYamlError::Verification("an empty block mapping to add a key to".into()));
    };
    let key_start =
        first.key_node().map(|k| k.byte_range().start as usize).unwrap_or(first.byte_range().start as usize);
    let line_start = text[..key_start].rfind('\n').map_or(0, |i| i + 1);
    let indent = &text[line_start..key_start];
    if !indent.chars().all(|c| c == ' ') {
        return Err(CiYamlError::Verification(format!("a block mapping whose keys do not start a line ({indent:?})")));
    }
    // The end of the line the last value ends on (past a comment there).
    if text[..last_end].ends_with('\n') {
        return Ok(Insertion { at: last_end, text: format!("{indent}{key}: {value}{eol}") });
    }
    Ok(match text[last_end..].find('\n') {
        Some(i) => Insertion { at: last_end + i + 1, text: format!("{indent}{key}: {value}{eol}") },
        None => Insertion { at: text.len(), text: format!("{eol}{indent}{key}: {value}") },
    })
}

/// A new `default:` section in the file's own style (indentation, line endings), just above
/// the first job or template and the comments that introduce it, where a reader looks for it.
fn default_section(text: &str, top: &Mapping, tag: &str, eol: &str) -> Result<Insertion, CiYamlError> {
    let first = top
        .keys()
        .find(|k| k.as_scalar().map(|s| s.as_string()).is_some_and(|n| is_job_name(&n) || n.starts_with('.')))
        .ok_or_else(|| CiYamlError::Verification("no job to put default: before".into()))?;
    let key_start = first.byte_range().start as usize;
    let mut at = text[..key_start].rfind('\n').map_or(0, |i| i + 1);
    // Step over the comment lines directly above the key: they belong to it.
    while at > 0 {
        let prev_start = text[..at - 1].rfind('\n').map_or(0, |i| i + 1);
        if !text[prev_start..at].trim_start().starts_with('#') {
            break;
        }
        at = prev_start;
    }
    if at == 0 && text.starts_with('\u{feff}') {
        at = '\u{feff}'.len_utf8();
    }
    let indent = indentation(text);
    Ok(Insertion { at, text: format!("default:{eol}{indent}tags: {}{eol}{eol}", tag_sequence(tag)) })
}

/// The file's mapping indentation (two spaces when it shows none).
fn indentation(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.windows(2) {
        let (parent, child) = (pair[0], pair[1]);
        let p_trim = parent.trim_start();
        let c_trim = child.trim_start();
        if p_trim.is_empty()
            || p_trim.starts_with(['#', '-'])
            || !parent.trim_end().ends_with(':')
            || c_trim.is_empty()
            || c_trim.starts_with(['#', '-'])
        {
            continue;
        }
        let (p_ind, c_ind) = (parent.len() - p_trim.len(), child.len() - c_trim.len());
        if c_ind > p_ind {
            return " ".repeat(c_ind - p_ind);
        }
    }
    "  ".into()
}

/// Why a job's node cannot take a `tags` key without changing other jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Uneditable {
    /// Its mapping carries an anchor that is aliased elsewhere: the tag would spread.
    SharedAnchor,
    /// Its value is an alias of another node.
    Alias,
}

pub(super) fn uneditable_jobs(text: &str, parsed: &Parse<YamlFile>) -> BTreeMap<String, Uneditable> {
    let Some(top) = config_document(&parsed.tree()).and_then(|d| d.as_mapping()) else {
        return BTreeMap::new();
    };
    // Every `*name` in the text, read once (an over-approximation: a `*` in a string counts).
    let is_name = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    let aliased: BTreeSet<&str> = text
        .match_indices('*')
        .map(|(i, _)| {
            let rest = &text[i + 1..];
            &rest[..rest.find(|c: char| !is_name(c)).unwrap_or(rest.len())]
        })
        .filter(|n| !n.is_empty())
        .collect();
    let mut out = BTreeMap::new();
    for entry in top.entries() {
        let (Some(key), Some(value)) = (entry.key_node(), entry.value_node()) else { continue };
        let Some(name) = key_name(text, &key).map(Cow::into_owned) else { continue };
        // A repeated job name: only the last one counts, as GitLab reads it.
        out.remove(&name);
        if value.is_alias() {
            out.insert(name, Uneditable::Alias);
            continue;
        }
        let between = &text[key.byte_range().end as usize..value.byte_range().start as usize];
        let Some(anchor) = between.split_whitespace().find_map(|w| w.strip_prefix('&')) else { continue };
        if aliased.contains(anchor) {
            out.insert(name, Uneditable::SharedAnchor);
        }
    }
    out
}

/// Every key that repeats a key of the same mapping (merge keys aside: repeating `<<` is how
/// Psych files merge several templates), as line, column and the key as written.
pub(super) fn repeated_keys(text: &str, parsed: &Parse<YamlFile>) -> Vec<(usize, usize, String)> {
    let file = parsed.tree();
    let mut stack: Vec<Mapping> = file.documents().filter_map(|d| d.as_mapping()).collect();
    let mut out = Vec::new();
    while let Some(m) = stack.pop() {
        let mut seen = BTreeSet::new();
        for entry in m.entries() {
            if let Some(k) = entry.key_node() {
                let r = k.byte_range();
                let name = text.get(r.start as usize..r.end as usize).unwrap_or_default().trim();
                if name != "<<" && !seen.insert(name) {
                    let lc = yaml_edit::byte_offset_to_line_column(text, r.start as usize);
                    out.push((lc.line, lc.column, name.to_string()));
                }
            }
            if let Some(child) = entry.value_node().and_then(|v| v.as_mapping().cloned()) {
                stack.push(child);
            }
        }
    }
    out.sort();
    out
}
