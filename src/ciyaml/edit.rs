//! Text edits on yaml-edit's lossless tree: insert `tags` and nothing else.

use std::collections::{BTreeMap, BTreeSet};

use yaml_edit::{Document, Mapping, Sequence, YamlFile};

use super::CiYamlError;
use super::analyze::is_job_name;

fn config_document(file: &YamlFile) -> Option<Document> {
    // With a `spec:` header the configuration is the last document.
    file.documents().last()
}

/// `[tag]`: one line in the form the migration plan writes, with no block-sequence
/// indentation to get wrong in a file that has its own.
fn tag_sequence(tag: &str) -> Sequence {
    let seq = Sequence::new_flow();
    seq.push(tag);
    seq
}

/// Adds `tags: [tag]` to each named job, and to `default:` (created if needed) when asked.
pub(super) fn insert_tags(
    text: &str,
    jobs: &[(String, String)],
    default_tag: Option<&str>,
) -> Result<String, CiYamlError> {
    if jobs.is_empty() && default_tag.is_none() {
        return Ok(text.to_string());
    }
    let parsed = YamlFile::parse(text);
    if let Some(e) = parsed.errors().first() {
        return Err(CiYamlError::Verification(format!("the lossless parser disagrees with the YAML parser: {e}")));
    }
    let file = parsed.tree();
    let top = config_document(&file)
        .and_then(|d| d.as_mapping())
        .ok_or_else(|| CiYamlError::Verification("no top-level mapping to edit".into()))?;
    for (job, tag) in jobs {
        let m = top
            .get_mapping(job.as_str())
            .ok_or_else(|| CiYamlError::Verification(format!("job {job} is not an editable mapping")))?;
        m.set("tags", tag_sequence(tag));
    }
    let existing_default = default_tag.and_then(|tag| top.get_mapping("default").map(|d| (d, tag)));
    if let Some((d, tag)) = &existing_default {
        d.set("tags", tag_sequence(tag));
    }
    let edited = file.to_string();
    match default_tag {
        Some(tag) if existing_default.is_none() => insert_default_section(&edited, tag),
        _ => Ok(edited),
    }
}

/// Writes a new `default:` section as text in the file's own style (indentation, sequence
/// indentation, line endings), just above the first job or template and the comments that
/// introduce it, where a reader looks for it.
fn insert_default_section(text: &str, tag: &str) -> Result<String, CiYamlError> {
    let parsed = YamlFile::parse(text);
    let top = config_document(&parsed.tree())
        .and_then(|d| d.as_mapping())
        .ok_or_else(|| CiYamlError::Verification("no top-level mapping to edit".into()))?;
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
    let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let indent = indentation(text);
    let block = format!("default:{eol}{indent}tags: {}{eol}{eol}", tag_sequence(tag));
    let mut out = String::with_capacity(text.len() + block.len());
    out.push_str(&text[..at]);
    out.push_str(&block);
    out.push_str(&text[at..]);
    Ok(out)
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

pub(super) fn uneditable_jobs(text: &str) -> BTreeMap<String, Uneditable> {
    let parsed = YamlFile::parse(text);
    let Some(top) = config_document(&parsed.tree()).and_then(|d| d.as_mapping()) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for entry in top.entries() {
        let (Some(key), Some(value)) = (entry.key_node(), entry.value_node()) else { continue };
        let Some(name) = key.as_scalar().map(|s| s.as_string()) else { continue };
        if value.is_alias() {
            out.insert(name, Uneditable::Alias);
            continue;
        }
        let between = &text[key.byte_range().end as usize..value.byte_range().start as usize];
        let Some(anchor) = between.split_whitespace().find_map(|w| w.strip_prefix('&')) else { continue };
        let used = text
            .match_indices(&format!("*{anchor}"))
            .any(|(i, m)| !text[i + m.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_' || c == '-'));
        if used {
            out.insert(name, Uneditable::SharedAnchor);
        }
    }
    out
}

/// Line and column of the first key that repeats a key of the same mapping.
pub(super) fn find_duplicate_key(text: &str) -> Option<(usize, usize)> {
    let parsed = YamlFile::parse(text);
    let file = parsed.tree();
    let mut stack: Vec<Mapping> = file.documents().filter_map(|d| d.as_mapping()).collect();
    while let Some(m) = stack.pop() {
        let mut seen = BTreeSet::new();
        for entry in m.entries() {
            if let Some(k) = entry.key_node() {
                let name = k.to_string().trim().to_string();
                if !seen.insert(name) {
                    let lc = yaml_edit::byte_offset_to_line_column(text, k.byte_range().start as usize);
                    return Some((lc.line, lc.column));
                }
            }
            if let Some(child) = entry.value_node().and_then(|v| v.as_mapping().cloned()) {
                stack.push(child);
            }
        }
    }
    None
}
