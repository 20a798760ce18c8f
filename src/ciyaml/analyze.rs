//! GitLab's meaning of a CI file, offline: which top-level keys are jobs, what tags each job
//! ends up with and where they come from, and which architecture a job builds for.

use std::borrow::Cow;
use std::collections::BTreeSet;

use yaml_serde::{Mapping, Value};

use super::CiYamlError;
use crate::vocab::Arch;

/// Top-level keys that are not jobs (GitLab's global keywords).
pub const GLOBAL_KEYWORDS: [&str; 10] = [
    "default",
    "include",
    "stages",
    "variables",
    "workflow",
    "image",
    "services",
    "cache",
    "before_script",
    "after_script",
];

/// Variables whose value names the architecture a job builds for.
pub const ARCH_VARIABLES: [&str; 3] = ["ARCH", "TARGETARCH", "PLATFORM"];

/// GitLab stops resolving `extends` deeper than this (it reports an error).
const MAX_EXTENDS_DEPTH: usize = 11;

/// Where a job's effective tags come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagSource {
    /// Written in the job itself.
    Own,
    /// From a YAML merge key (`<<: *anchor`).
    MergeKey,
    /// From `extends:` (the template that supplied them).
    Extends(String),
    /// From `default: tags`.
    Default,
}

impl std::fmt::Display for TagSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TagSource::Own => f.write_str("own"),
            TagSource::MergeKey => f.write_str("inherited through a YAML anchor"),
            TagSource::Extends(t) => write!(f, "inherited through extends: {t}"),
            TagSource::Default => f.write_str("inherited from default:"),
        }
    }
}

/// How the architecture of a job was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchHint {
    pub arch: Arch,
    pub why: String,
}

/// What the analysis knows about one job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobInfo {
    pub name: String,
    /// Effective tags (`None`: untagged). A `!reference` shows as `!reference [a, b]`.
    pub tags: Option<Vec<String>>,
    pub source: Option<TagSource>,
    /// The job writes `tags:` itself but leaves it empty or null.
    pub empty_own_tags: bool,
    pub arch: Option<ArchHint>,
    /// Architectures a `parallel: matrix` spreads over (then the job is not guessed).
    pub matrix_archs: BTreeSet<Arch>,
    pub trigger: bool,
    /// `inherit: default:` excludes `tags`.
    pub opts_out_of_default: bool,
    /// Some `extends:` target is not in this file (it comes from an `include:`).
    pub unresolved: Option<String>,
    /// The job's value is not a mapping (then it cannot be edited).
    pub not_a_mapping: bool,
}

/// The parsed CI configuration (the last document: a `spec:` header document comes first).
#[derive(Debug, Clone)]
pub struct Analysis {
    pub jobs: Vec<JobInfo>,
    /// `default: tags`, if set.
    pub default_tags: Option<Vec<String>>,
    pub has_default_section: bool,
    pub has_include: bool,
    /// The data as GitLab reads it (Psych's merge keys and repeated keys applied).
    pub data: Value,
    /// Some mapping repeats a key (GitLab keeps the last value).
    pub repeated_keys: bool,
    /// Jobs the given `include:` files define that this file does not: no per-job edit
    /// reaches them (only `default: tags` does).
    pub included_jobs: Vec<String>,
}

/// Parses `text` as GitLab does and analyses every job.
pub fn analyze(text: &str) -> Result<Analysis, CiYamlError> {
    analyze_with(text, &[])
}

/// [`analyze`], with the contents of the file's `include:` files (in order) known: their
/// hidden templates resolve `extends:`, and their `default:` applies, as GitLab merges them
/// (this file's keys win). Only this file's jobs are analysed; the included files' own jobs
/// are listed in `included_jobs`.
pub fn analyze_with(text: &str, includes: &[String]) -> Result<Analysis, CiYamlError> {
    let (merged, own_tags, repeated_keys) = load_config(text)?;
    let top = merged
        .as_mapping()
        .ok_or_else(|| CiYamlError::at(1, 1, "the top level must be a mapping of jobs and keywords"))?;
    let mut lookup = Mapping::new();
    for inc in includes {
        let (data, _, _) = load_config(inc).map_err(|e| CiYamlError::at(1, 1, &format!("an included file: {e}")))?;
        if let Value::Mapping(m) = data {
            for (k, v) in m {
                match (lookup.get_mut(&k), &v) {
                    (Some(old @ Value::Mapping(_)), Value::Mapping(_)) => deep_merge(old, &v),
                    _ => {
                        lookup.insert(k, v);
                    }
                }
            }
        }
    }
    let included_jobs: Vec<String> = lookup
        .keys()
        .filter_map(Value::as_str)
        .filter(|k| is_job_name(k) && !top.contains_key(*k))
        .map(str::to_string)
        .collect();
    // Everything that borrows the document ends here, so the document itself moves into the
    // analysis instead of being copied (a deep copy of a 10,000-line file is not free).
    let (jobs, default_tags, has_default_section, has_include) = {
        let top: Cow<'_, Mapping> = if includes.is_empty() {
            Cow::Borrowed(top)
        } else {
            for (k, v) in top {
                match (lookup.get_mut(k), v) {
                    (Some(old @ Value::Mapping(_)), Value::Mapping(_)) if k.as_str() == Some("default") => {
                        deep_merge(old, v)
                    }
                    _ => {
                        lookup.insert(k.clone(), v.clone());
                    }
                }
            }
            Cow::Owned(lookup)
        };
        let main = merged.as_mapping().unwrap_or(&top);
        let default_tags = top.get("default").and_then(|d| d.get("tags")).and_then(tag_strings);
        let mut jobs = Vec::new();
        for (key, value) in main {
            let Some(name) = key.as_str() else { continue };
            if !is_job_name(name) {
                continue;
            }
            jobs.push(job_info(name, value, own_tags.contains(name), &top, default_tags.as_ref()));
        }
        (jobs, default_tags, main.contains_key("default"), main.contains_key("include"))
    };
    Ok(Analysis { jobs, default_tags, has_default_section, has_include, data: merged, repeated_keys, included_jobs })
}

/// The files a CI file's `include:` names, when every one is a local file of the same
/// project (`- path`, `- local: path`, or one of those alone): paths without the leading
/// `/`. `None` when some include is remote, of another project, a template, a component, or
/// a wildcard: then what it defines cannot be read here.
pub fn local_includes(text: &str) -> Option<Vec<String>> {
    let (data, _, _) = load_config(text).ok()?;
    let include = data.get("include")?;
    let items: Vec<&Value> = match include {
        Value::Sequence(seq) => seq.iter().collect(),
        other => vec![other],
    };
    let mut out = Vec::new();
    for item in items {
        let path = match item {
            Value::String(s) if !s.contains("://") => s.as_str(),
            // `rules:` (conditional) and `inputs:` (parameterised) depend on the pipeline.
            Value::Mapping(m) if m.len() == 1 => m.get("local")?.as_str()?,
            _ => return None,
        };
        if path.contains('*') || path.contains('$') {
            return None;
        }
        out.push(path.trim_start_matches('/').to_string());
    }
    Some(out)
}

/// Reads the configuration document as GitLab does ([`super::psych`]), rejecting what GitLab
/// rejects.
#[cfg(test)]
pub(super) fn parse_config(text: &str) -> Result<Value, CiYamlError> {
    load_config(text).map(|(v, _, _)| v)
}

/// The configuration document, and the top-level keys whose mapping writes `tags` itself.
fn load_config(text: &str) -> Result<(Value, BTreeSet<String>, bool), CiYamlError> {
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    let super::psych::Loaded { mut docs, own_tags, repeated_keys } =
        super::psych::documents(body).map_err(|e| CiYamlError::syntax(&e))?;
    let config = match docs.len() {
        0 => Value::Null,
        1 => docs.pop().unwrap_or(Value::Null),
        2 if docs[0].get("spec").is_some() => docs.pop().unwrap_or(Value::Null),
        n => {
            return Err(CiYamlError::at(
                1,
                1,
                &format!("{n} YAML documents; GitLab reads one, after an optional `spec:` header"),
            ));
        }
    };
    match config {
        Value::Mapping(_) => Ok((config, own_tags, repeated_keys)),
        Value::Null => Err(CiYamlError::at(1, 1, "the file is empty: a CI configuration is a mapping of jobs")),
        _ => Err(CiYamlError::at(1, 1, "the top level must be a mapping of jobs and keywords")),
    }
}

pub fn is_job_name(name: &str) -> bool {
    !name.starts_with('.') && !GLOBAL_KEYWORDS.contains(&name)
}

fn job_info(
    name: &str,
    value: &Value,
    writes_tags: bool,
    top: &Mapping,
    default_tags: Option<&Vec<String>>,
) -> JobInfo {
    let mut info = JobInfo {
        name: name.to_string(),
        tags: None,
        source: None,
        empty_own_tags: false,
        arch: None,
        matrix_archs: BTreeSet::new(),
        trigger: false,
        opts_out_of_default: false,
        unresolved: None,
        not_a_mapping: !value.is_mapping(),
    };
    if info.not_a_mapping {
        return info;
    }
    let mut chain = Vec::new();
    let effective = match resolve(value, top, &mut chain) {
        Ok(v) => v,
        Err(missing) => {
            info.unresolved = Some(missing);
            Cow::Borrowed(value)
        }
    };
    info.trigger = effective.get("trigger").is_some();
    info.opts_out_of_default = match effective.get("inherit").and_then(|i| i.get("default")) {
        Some(Value::Bool(b)) => !b,
        Some(Value::Sequence(keys)) => !keys.iter().any(|k| k.as_str() == Some("tags")),
        _ => false,
    };
    match effective.get("tags") {
        Some(t) => match tag_strings(t) {
            Some(tags) if !tags.is_empty() => {
                info.source = Some(if writes_tags {
                    TagSource::Own
                } else if value.get("tags").is_some() {
                    TagSource::MergeKey
                } else {
                    TagSource::Extends(tag_origin(value, top).unwrap_or_default())
                });
                info.tags = Some(tags);
            }
            _ => info.empty_own_tags = true,
        },
        None if info.unresolved.is_none() && !info.opts_out_of_default && !info.trigger => {
            if let Some(d) = default_tags.filter(|d| !d.is_empty()) {
                info.tags = Some(d.clone());
                info.source = Some(TagSource::Default);
            }
        }
        None => {}
    }
    info.arch = arch_of(name, &effective);
    info.matrix_archs = matrix_archs(&effective);
    info
}

/// The job with `extends:` applied as GitLab does: templates merged left to right, deep for
/// mappings, the job's own keys last. `Err` names a template this file does not define.
fn resolve<'v>(value: &'v Value, top: &Mapping, chain: &mut Vec<String>) -> Result<Cow<'v, Value>, String> {
    let parents: Vec<String> = match value.get("extends") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Sequence(seq)) => seq.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        // Nothing to merge: the job as it is (most jobs; no copy).
        _ => return Ok(Cow::Borrowed(value)),
    };
    let mut base = Value::Mapping(Mapping::new());
    for parent in parents {
        if chain.contains(&parent) || chain.len() >= MAX_EXTENDS_DEPTH {
            return Err(format!("{parent} (circular or deeper than {MAX_EXTENDS_DEPTH} levels)"));
        }
        let Some(pv) = top.get(parent.as_str()) else { return Err(parent) };
        chain.push(parent.clone());
        let resolved = resolve(pv, top, chain)?;
        chain.pop();
        deep_merge(&mut base, &resolved);
    }
    let mut own = value.clone();
    if let Some(m) = own.as_mapping_mut() {
        m.remove("extends");
    }
    deep_merge(&mut base, &own);
    Ok(Cow::Owned(base))
}

/// Which `extends:` template a job's tags come from (the last one that has them wins).
fn tag_origin(value: &Value, top: &Mapping) -> Option<String> {
    let parents: Vec<&str> = match value.get("extends")? {
        Value::String(s) => vec![s.as_str()],
        Value::Sequence(seq) => seq.iter().filter_map(Value::as_str).collect(),
        _ => return None,
    };
    parents.into_iter().rev().find_map(|p| {
        let pv = top.get(p)?;
        if pv.get("tags").is_some() { Some(p.to_string()) } else { tag_origin(pv, top) }
    })
}

fn deep_merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) if existing.is_mapping() && v.is_mapping() => deep_merge(existing, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// Tags as text: `["a", "$B"]`; a `!reference` reads as its source text. `None` for null.
fn tag_strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Sequence(items) => Some(items.iter().flat_map(|i| tag_strings(i).unwrap_or_default()).collect()),
        Value::String(s) => Some(vec![s.clone()]),
        Value::Number(n) => Some(vec![n.to_string()]),
        Value::Bool(b) => Some(vec![b.to_string()]),
        Value::Tagged(t) => {
            let inner: Vec<String> = t
                .value
                .as_sequence()
                .map(|s| s.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            Some(vec![format!("{} [{}]", t.tag, inner.join(", "))])
        }
        Value::Null | Value::Mapping(_) => None,
    }
}

/// The one architecture a job builds for, from its variables or its name.
fn arch_of(name: &str, job: &Value) -> Option<ArchHint> {
    if let Some(vars) = job.get("variables").and_then(Value::as_mapping) {
        for var in ARCH_VARIABLES {
            let Some(v) = vars.get(var) else { continue };
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Mapping(m) => m.get("value").and_then(Value::as_str).unwrap_or("").to_string(),
                _ => continue,
            };
            if let Some(arch) = Arch::from_alias(&value) {
                return Some(ArchHint { arch, why: format!("variable {var}={value}") });
            }
        }
    }
    let lower = name.to_ascii_lowercase();
    for (suffix, arch) in
        [("amd64", Arch::Amd64), ("x86_64", Arch::Amd64), ("arm64", Arch::Arm64), ("aarch64", Arch::Arm64)]
    {
        if let Some(head) = lower.strip_suffix(suffix)
            && (head.is_empty() || head.ends_with(['_', '-', ':', ' ', '/', '.']))
        {
            return Some(ArchHint { arch, why: format!("name ends in {suffix}") });
        }
    }
    None
}

fn matrix_archs(job: &Value) -> BTreeSet<Arch> {
    let Some(matrix) = job.get("parallel").and_then(|p| p.get("matrix")).and_then(Value::as_sequence) else {
        return BTreeSet::new();
    };
    let mut out = BTreeSet::new();
    for entry in matrix {
        for var in ARCH_VARIABLES {
            match entry.get(var) {
                Some(Value::String(s)) => out.extend(Arch::from_alias(s)),
                Some(Value::Sequence(vals)) => {
                    out.extend(vals.iter().filter_map(Value::as_str).filter_map(Arch::from_alias))
                }
                _ => {}
            }
        }
    }
    out
}
