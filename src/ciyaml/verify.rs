//! Proof that a rewrite means what it should: checked on every result before it leaves
//! the module, so a bug in the edit shows up as an error, never as a wrong file.

use similar::{ChangeTag, TextDiff};
use yaml_serde::Value;

use super::analyze::{Analysis, analyze};
use super::{CiYamlError, JobReport, Outcome};

pub(super) fn check(input: &str, output: &str, before: &Analysis, reports: &[JobReport]) -> Result<(), CiYamlError> {
    let fail = |m: String| Err(CiYamlError::Verification(m));
    let after =
        analyze(output).map_err(|e| CiYamlError::Verification(format!("the rewritten file does not parse: {e}")))?;

    // 1. Nothing of the input is lost or changed: the edit only inserts text.
    let diff = TextDiff::from_chars(input, output);
    let mut inserted = String::new();
    for change in diff.iter_all_changes() {
        match change.tag() {
            ChangeTag::Equal => {}
            ChangeTag::Insert => inserted.push_str(change.value()),
            ChangeTag::Delete => return fail(format!("the edit removed input text {:?}", change.value())),
        }
    }
    if !inserted.contains("tags") {
        return fail(format!("the edit inserted text that adds no tags: {inserted:?}"));
    }

    // 2. The data is the same once the added `tags` keys are taken out again.
    let mut stripped = after.raw.clone();
    let top = stripped
        .as_mapping_mut()
        .ok_or_else(|| CiYamlError::Verification("top level is no longer a mapping".into()))?;
    for r in reports {
        if let Outcome::Added { through_default: false, .. } = r.outcome
            && let Some(job) = top.get_mut(r.job.as_str()).and_then(Value::as_mapping_mut)
        {
            job.remove("tags");
        }
    }
    if let Some(default) = top.get_mut("default").and_then(Value::as_mapping_mut)
        && before.default_tags.is_none()
    {
        default.remove("tags");
        if default.is_empty() && !before.has_default_section {
            top.remove("default");
        }
    }
    if stripped != before.raw {
        return fail("the rewritten file means something else besides the added tags".into());
    }

    // 3. Each job has exactly the tags it was meant to have.
    for r in reports {
        let was = before.jobs.iter().find(|j| j.name == r.job).and_then(|j| j.tags.clone());
        let now = after.jobs.iter().find(|j| j.name == r.job).and_then(|j| j.tags.clone());
        let expected = match &r.outcome {
            Outcome::Added { tag, .. } => Some(vec![tag.clone()]),
            Outcome::Kept { .. } | Outcome::LeftAlone { .. } => was,
        };
        if now != expected {
            return fail(format!("job {} would end with tags {now:?} instead of {expected:?}", r.job));
        }
    }
    Ok(())
}
