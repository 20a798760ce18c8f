//! Proof that a rewrite means what it should: checked on every result before it leaves
//! the module, so a bug in the edit shows up as an error, never as a wrong file.

use std::collections::HashMap;

use yaml_serde::Value;

use super::analyze::{Analysis, analyze_with};
use super::edit::Insertion;
use super::{CiYamlError, JobReport, Outcome};

pub(super) fn check(
    input: &str,
    output: &str,
    insertions: &[Insertion],
    before: &Analysis,
    reports: &[JobReport],
    includes: &[String],
) -> Result<(), CiYamlError> {
    let fail = |m: String| Err(CiYamlError::Verification(m));

    // 1. Nothing of the input is lost or changed: the output is the input with the recorded
    //    insertions at their offsets, and each inserted text is a `tags` entry. One pass.
    insertion_only(input, output, insertions).map_err(CiYamlError::Verification)?;
    for ins in insertions {
        let t = ins.text.trim_start_matches([',', ' ', '\r', '\n']);
        if !(t.starts_with("tags: [") || t.starts_with("default:")) || !ins.text.contains("tags: [") {
            return fail(format!("the edit inserted text that is not a tags entry: {:?}", ins.text));
        }
    }

    let after = analyze_with(output, includes)
        .map_err(|e| CiYamlError::Verification(format!("the rewritten file does not parse: {e}")))?;

    let tags_of = |a: &Analysis| -> HashMap<String, Option<Vec<String>>> {
        a.jobs.iter().map(|j| (j.name.clone(), j.tags.clone())).collect()
    };
    let now_tags = tags_of(&after);

    // 2. The data, as GitLab reads it, is the same once the added `tags` keys are taken out.
    let mut stripped = after.data;
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
    if stripped != before.data {
        return fail("the rewritten file means something else besides the added tags".into());
    }

    // 3. Each job has exactly the tags it was meant to have.
    let was_tags = tags_of(before);
    for r in reports {
        let was = was_tags.get(&r.job).cloned().flatten();
        let now = now_tags.get(&r.job).cloned().flatten();
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

/// `output` is `input` with each insertion's text at its offset, and nothing else.
pub(super) fn insertion_only(input: &str, output: &str, insertions: &[Insertion]) -> Result<(), String> {
    let (inp, out) = (input.as_bytes(), output.as_bytes());
    let (mut i, mut o) = (0usize, 0usize);
    let expect = |piece: &[u8], o: &mut usize, what: &str| -> Result<(), String> {
        match out.get(*o..*o + piece.len()) {
            Some(got) if got == piece => {
                *o += piece.len();
                Ok(())
            }
            _ => Err(format!("the output differs from the input plus its insertions at byte {} ({what})", *o)),
        }
    };
    for ins in insertions {
        if ins.at < i || ins.at > inp.len() {
            return Err(format!("insertion offset {} out of order or past the input", ins.at));
        }
        expect(&inp[i..ins.at], &mut o, "input text")?;
        expect(ins.text.as_bytes(), &mut o, "inserted text")?;
        i = ins.at;
    }
    expect(&inp[i..], &mut o, "input text")?;
    if o != out.len() {
        return Err(format!("the output has {} bytes more than the input plus its insertions", out.len() - o));
    }
    Ok(())
}
