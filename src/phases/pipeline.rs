//! Phase 3: the `CICD_TAG_*` variables and the build jobs of the pipeline project.

use std::collections::BTreeMap;

use super::ci_file_change;
use crate::ciyaml::{self, Outcome, TagOptions};
use crate::model::{
    Action, Arch, Change, CiVariable, Document, ObservedState, Phase, PhasePlan, Precondition, Severity, Target,
};
use crate::spec::MigrationPlan;

pub fn plan(state: &ObservedState, spec: &MigrationPlan) -> PhasePlan {
    let mut out = PhasePlan::new(Phase::Pipeline);
    let project = &spec.pipeline.project;
    for &arch in spec.architectures() {
        let key = spec.pipeline.variables.name(arch);
        let tag = spec.runners.tag(arch);
        let target = Target::ProjectVariable { project: project.clone(), key: key.to_string() };
        plan_tag_variable(&mut out, &state.project_variables, target, key, &tag, &format!("variable/{key}"));
    }
    plan_ci_file(state, spec, &mut out);
    out
}

/// Makes sure `key` holds `tag`, unprotected and unmasked in scope `*`, so the tag expands on
/// every ref (a protected variable stays a literal `$KEY` on unprotected branches).
pub(super) fn plan_tag_variable(
    out: &mut PhasePlan,
    vars: &[CiVariable],
    target: Target,
    key: &str,
    tag: &str,
    id: &str,
) {
    let subject = target.to_string();
    let wanted = CiVariable::tag_variable(key, tag);
    let star = vars.iter().find(|v| v.key == key && v.environment_scope == "*");
    let scoped: Vec<&str> = vars
        .iter()
        .filter(|v| v.key == key && v.environment_scope != "*")
        .map(|v| v.environment_scope.as_str())
        .collect();
    if !scoped.is_empty() {
        out.finding(
            Severity::Risk,
            &subject,
            format!(
                "also defined for environment scope(s) {}; jobs in those environments use that value",
                scoped.join(", ")
            ),
        );
    }
    let Some(have) = star else {
        out.changes.push(Change {
            id: id.into(),
            phase: out.phase,
            target,
            action: Action::Create,
            summary: format!("create variable {key}={tag} (unprotected, unmasked, raw)"),
            before: None,
            after: Some(Document::Object(wanted.to_json())),
            precondition: Precondition::Absent,
            sensitive: vec![],
        });
        return;
    };
    let mut why = Vec::new();
    if have.value.as_deref() != Some(tag) {
        why.push(if have.value.is_none() { "masked, value unknown".to_string() } else { "wrong value".to_string() });
    }
    if have.protected {
        why.push("protected (stays a literal $KEY on unprotected branches, jobs get stuck)".to_string());
    }
    if have.masked {
        why.push("masked".to_string());
    }
    if have.variable_type != "env_var" {
        why.push(format!("type {}", have.variable_type));
    }
    if why.is_empty() {
        out.finding(Severity::Done, &subject, format!("= {tag}"));
        return;
    }
    if have.hidden {
        out.finding(
            Severity::Risk,
            &subject,
            format!("is hidden ({}); GitLab will not unhide it: delete it and re-run to recreate it", why.join(", ")),
        );
        return;
    }
    out.changes.push(Change {
        id: id.into(),
        phase: out.phase,
        target,
        action: Action::Update,
        summary: format!("set variable {key}={tag}: {}", why.join(", ")),
        before: Some(Document::Object(have.to_json())),
        after: Some(Document::Object(wanted.to_json())),
        precondition: Precondition::VariableValue { value: have.value.clone(), protected: have.protected },
        sensitive: if have.masked { vec!["/value".into()] } else { vec![] },
    });
}

fn plan_ci_file(state: &ObservedState, spec: &MigrationPlan, out: &mut PhasePlan) {
    let p = &spec.pipeline;
    let subject = format!("{}:{}", p.project, p.ci_file);
    let Some(file) = &state.ci_file else {
        out.finding(Severity::Risk, subject, format!("not found on branch {}", p.branch));
        return;
    };
    let vars = &p.variables;
    let mut opts = TagOptions::default();
    if p.jobs.detect {
        opts.arch_tags = spec.architectures().iter().map(|a| (*a, vars.reference(*a))).collect();
    }
    opts.job_tags = p.jobs.explicit.iter().map(|(job, arch)| (job.clone(), vars.reference(*arch))).collect();
    // Untagged jobs run on amd64 today (the baseline runner); they stay there.
    if spec.architectures().contains(&Arch::Amd64) {
        opts.default_tag = Some(vars.reference(Arch::Amd64));
    }
    let analysis = match ciyaml::analyze(&file.content) {
        Ok(a) => a,
        Err(e) => {
            out.finding(Severity::Risk, subject, format!("cannot be read: {e}"));
            return;
        }
    };
    for name in p.jobs.explicit.keys() {
        if !analysis.jobs.iter().any(|j| &j.name == name) {
            out.finding(
                Severity::Risk,
                &subject,
                format!("pipeline.jobs.explicit names job {name}, which is not in the file"),
            );
        }
    }
    let retag = match ciyaml::retag(&file.content, &opts) {
        Ok(r) => r,
        Err(e) => {
            out.finding(Severity::Risk, subject, format!("cannot be rewritten: {e}"));
            return;
        }
    };
    // Which architecture each job builds for, by name or detection.
    let mut arch_of: BTreeMap<String, Arch> = p.jobs.explicit.clone();
    if p.jobs.detect {
        for j in &analysis.jobs {
            if let Some(h) = &j.arch {
                arch_of.entry(j.name.clone()).or_insert(h.arch);
            }
        }
    }
    for &arch in spec.architectures() {
        if !arch_of.values().any(|a| *a == arch) {
            out.finding(
                Severity::Risk,
                &subject,
                format!("no job builds for {arch}: name it in pipeline.jobs.explicit"),
            );
        }
    }
    // A build job that already has tags keeps them; say so when they route to the wrong runner.
    for job in &retag.jobs {
        let Some(arch) = arch_of.get(&job.job) else { continue };
        if let Outcome::Kept { tags, source } = &job.outcome {
            let ok = [vars.reference(*arch), format!("${{{}}}", vars.name(*arch)), spec.runners.tag(*arch)];
            if tags.iter().any(|t| ok.contains(t)) {
                out.finding(
                    Severity::Done,
                    format!("{subject} job {}", job.job),
                    format!("runs on {arch} ([{}])", tags.join(", ")),
                );
            } else {
                out.finding(
                    Severity::Risk,
                    format!("{subject} job {}", job.job),
                    format!("builds {arch} but keeps its {source} tags [{}], which do not select the {arch} runner: change them by hand", tags.join(", ")),
                );
            }
        }
    }
    ci_file_change(out, file, &retag, &p.delivery);
}
