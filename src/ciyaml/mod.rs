//! Format-preserving `.gitlab-ci.yml` rewriting: give every job the runner tag it needs and
//! change nothing else.
//!
//! The meaning of the file is GitLab's: YAML loaded as Ruby's Psych loads it ([`psych`]: repeated
//! keys, repeated `<<` merge keys), then GitLab's rules for jobs, `extends` and `default:`
//! ([`analyze`]). The edit is a list of text insertions placed with `yaml-edit`'s lossless
//! syntax tree, so comments, anchors, quoting, key order, indentation, CRLF and a BOM survive.
//! Every result is proved before it is returned ([`verify`]): the output is the input plus
//! exactly those insertions, each a `tags` entry, and each job now has the tags it should.

mod analyze;
mod edit;
mod psych;
mod verify;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub use analyze::{Analysis, ArchHint, JobInfo, TagSource, analyze, analyze_with, is_job_name, local_includes};

use crate::vocab::Arch;

/// What tags to give which jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagOptions {
    /// For every untagged job not covered by the other options.
    pub default_tag: Option<String>,
    /// For jobs that build for one architecture.
    pub arch_tags: BTreeMap<Arch, String>,
    /// Named jobs; wins over architecture detection.
    pub job_tags: BTreeMap<String, String>,
    /// Put the default tag under `default:` even for a single job (when nothing else would
    /// pick it up): it also reaches jobs that `include:` files define.
    pub prefer_default: bool,
    /// [`Self::prefer_default`] when the file has an `include:` (read from the same parse).
    pub prefer_default_with_include: bool,
    /// The contents of the file's local `include:` files, when known: templates they define
    /// resolve `extends:`.
    pub includes: Vec<String>,
}

/// What happened to one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It had tags and keeps them exactly.
    Kept { tags: Vec<String>, source: TagSource },
    /// It gets a tag, on the job itself or through `default:`.
    Added { tag: String, reason: String, through_default: bool },
    /// Not touched, and why.
    LeftAlone { reason: String, needs_review: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobReport {
    pub job: String,
    pub outcome: Outcome,
}

impl fmt::Display for JobReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Kept { tags, source } => write!(f, "{}: keeps [{}] ({source})", self.job, tags.join(", ")),
            Outcome::Added { tag, reason, through_default: false } => {
                write!(f, "{}: tags [{tag}] added ({reason})", self.job)
            }
            Outcome::Added { tag, reason, through_default: true } => {
                write!(f, "{}: gets [{tag}] from default: ({reason})", self.job)
            }
            Outcome::LeftAlone { reason, .. } => write!(f, "{}: left alone: {reason}", self.job),
        }
    }
}

/// The rewritten file and what was done to each job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retag {
    pub output: String,
    pub jobs: Vec<JobReport>,
    /// `tags` was added under `default:` (created if it was missing).
    pub default_tags_added: Option<String>,
    pub changed: bool,
    /// What GitLab accepts but a reader should know (a repeated key: the last value counts).
    pub warnings: Vec<String>,
    /// Jobs the known `include:` files define (no per-job edit reaches them).
    pub included_jobs: Vec<String>,
    /// The file has an `include:`.
    pub has_include: bool,
}

/// A CI file that cannot be rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CiYamlError {
    #[error("line {line}, column {column}: {message}")]
    Invalid { line: usize, column: usize, message: String },
    /// The edit did not prove to mean what it should; nothing may be written.
    #[error(
        "archshift could not prove its edit of this file correct, so nothing was written ({0}); tag these jobs by hand and report the file as an archshift bug"
    )]
    Verification(String),
}

impl CiYamlError {
    pub(crate) fn at(line: usize, column: usize, message: &str) -> Self {
        CiYamlError::Invalid { line, column, message: message.to_string() }
    }

    pub(crate) fn syntax(e: &yaml_serde::Error) -> Self {
        let msg = e.to_string();
        let msg = msg.find(" at line ").map_or(msg.as_str(), |i| &msg[..i]).to_string();
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        let message =
            if msg.starts_with("unknown anchor") { "alias used before its anchor is defined".to_string() } else { msg };
        CiYamlError::Invalid { line, column, message }
    }
}

/// Decides each job's tags and rewrites `text` accordingly.
pub fn retag(text: &str, opts: &TagOptions) -> Result<Retag, CiYamlError> {
    // Two independent parses of the same text: the meaning (yaml_serde) on a second thread,
    // while this one makes the lossless tree that places the edit, finds what must not be
    // edited and what repeats (rowan's tree cannot leave its thread; the analysis can).
    let (analysis, (lossless, uneditable)) = crate::par::join(
        || analyze_with(text, &opts.includes),
        || {
            let lossless = yaml_edit::YamlFile::parse(text);
            let uneditable = edit::uneditable_jobs(text, &lossless);
            (lossless, uneditable)
        },
    );
    let analysis = analysis?;
    let mut reports = Vec::new();
    // Jobs to tag directly, and jobs the default tag should cover.
    let mut direct: Vec<(String, String)> = Vec::new();
    let mut want_default: BTreeSet<String> = BTreeSet::new();
    // Jobs that would silently pick up a tag added under `default:`.
    let mut would_be_swept = false;

    for job in &analysis.jobs {
        let outcome = decide(job, opts, &analysis, uneditable.get(&job.name).copied());
        match &outcome {
            Outcome::Added { tag, .. } if want_default_for(job, opts, tag) => {
                want_default.insert(job.name.clone());
            }
            Outcome::Added { tag, .. } => direct.push((job.name.clone(), tag.clone())),
            Outcome::LeftAlone { .. } if job.tags.is_none() && !job.trigger && !job.opts_out_of_default => {
                would_be_swept = true;
            }
            _ => {}
        }
        reports.push(JobReport { job: job.name.clone(), outcome });
    }

    // One `tags` under `default:` beats editing many jobs, if nothing else picks it up.
    let mut default_tags_added = None;
    if let Some(tag) = &opts.default_tag
        && !want_default.is_empty()
    {
        let prefer = opts.prefer_default || (opts.prefer_default_with_include && analysis.has_include);
        let enough = if prefer { 1 } else { 2 };
        if !would_be_swept && analysis.default_tags.is_none() && want_default.len() >= enough {
            default_tags_added = Some(tag.clone());
            for r in reports.iter_mut().filter(|r| want_default.contains(&r.job)) {
                if let Outcome::Added { through_default, .. } = &mut r.outcome {
                    *through_default = true;
                }
            }
        } else {
            direct.extend(want_default.iter().map(|j| (j.clone(), tag.clone())));
        }
    }

    let insertions = edit::tag_insertions(text, &lossless, &direct, default_tags_added.as_deref())?;
    let output = edit::apply(text, &insertions);
    let changed = !insertions.is_empty();
    if changed {
        verify::check(text, &output, &insertions, &analysis, &reports, &opts.includes)?;
    }

    // Placing them needs a walk of the lossless tree; most files have none.
    let repeated = if analysis.repeated_keys { edit::repeated_keys(text, &lossless) } else { Vec::new() };
    let warnings = repeated
        .into_iter()
        .map(|(line, column, key)| {
            format!(
                "line {line}, column {column}: key {key} repeats a key of the same mapping; GitLab keeps the last value"
            )
        })
        .collect();
    Ok(Retag {
        output,
        jobs: reports,
        default_tags_added,
        changed,
        warnings,
        included_jobs: analysis.included_jobs,
        has_include: analysis.has_include,
    })
}

fn want_default_for(job: &JobInfo, opts: &TagOptions, tag: &str) -> bool {
    opts.default_tag.as_deref() == Some(tag)
        && !job.opts_out_of_default
        && !opts.job_tags.contains_key(&job.name)
        && job.arch.as_ref().is_none_or(|h| !opts.arch_tags.contains_key(&h.arch))
}

fn decide(job: &JobInfo, opts: &TagOptions, analysis: &Analysis, uneditable: Option<edit::Uneditable>) -> Outcome {
    let left = |reason: String, needs_review: bool| Outcome::LeftAlone { reason, needs_review };
    if job.not_a_mapping {
        return left("not a mapping (an alias or a scalar); edit by hand".into(), true);
    }
    if job.trigger {
        return left("trigger job: GitLab rejects tags on bridge jobs".into(), false);
    }
    if let (Some(tags), Some(source)) = (&job.tags, &job.source) {
        if let Some(asked) = opts.job_tags.get(&job.name).filter(|t| !tags.contains(t)) {
            return Outcome::LeftAlone {
                reason: format!(
                    "keeps its {source} tags [{}]; --job-tag asked for {asked}: edit by hand",
                    tags.join(", ")
                ),
                needs_review: true,
            };
        }
        return Outcome::Kept { tags: tags.clone(), source: source.clone() };
    }
    if job.empty_own_tags {
        return left("has an empty `tags:`; review by hand".into(), true);
    }
    if let Some(missing) = &job.unresolved {
        let from = if analysis.has_include { " (defined by an include:)" } else { "" };
        return left(format!("unresolved: extends {missing}, not in this file{from}; needs review"), true);
    }
    if !job.matrix_archs.is_empty() && !opts.job_tags.contains_key(&job.name) {
        let archs: Vec<String> = job.matrix_archs.iter().map(|a| a.to_string()).collect();
        return left(format!("parallel: matrix over {}: tag the matrix by hand (not guessed)", archs.join(", ")), true);
    }
    match uneditable {
        Some(edit::Uneditable::SharedAnchor) => {
            return left(
                "its mapping is an anchor that other nodes reuse; a tag here would spread to them: edit by hand".into(),
                true,
            );
        }
        Some(edit::Uneditable::Alias) => {
            return left("its value is an alias of another node: edit by hand".into(), true);
        }
        None => {}
    }
    if let Some(tag) = opts.job_tags.get(&job.name) {
        return Outcome::Added { tag: tag.clone(), reason: "named by --job-tag".into(), through_default: false };
    }
    if let Some(hint) = &job.arch {
        if let Some(tag) = opts.arch_tags.get(&hint.arch) {
            return Outcome::Added {
                tag: tag.clone(),
                reason: format!("builds {} ({})", hint.arch, hint.why),
                through_default: false,
            };
        }
        if let Some(tag) = &opts.default_tag {
            return Outcome::Added {
                tag: tag.clone(),
                reason: format!("untagged; builds {} ({}) but no tag was given for it, review", hint.arch, hint.why),
                through_default: false,
            };
        }
        return left(format!("builds {} ({}) but no tag was given for {}", hint.arch, hint.why, hint.arch), false);
    }
    match &opts.default_tag {
        Some(tag) => Outcome::Added { tag: tag.clone(), reason: "untagged".into(), through_default: false },
        None => left("untagged, and no default tag was given".into(), false),
    }
}

#[cfg(test)]
mod tests;
