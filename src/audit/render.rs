//! A plan as text for a terminal or a review: every change with how it is written, what it
//! waits for, how it is undone and verified, its diff, then the findings and the apply order.

use std::fmt::Write as _;

use crate::diff::{DiffOptions, change_diff, render};
use crate::model::{Action, Change, Plan, WriteMethod};

/// Plain text (no colours); `color` adds ANSI colours to the diffs.
pub fn plan_text(plan: &Plan, color: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "archshift plan (format {}), plan file {}", plan.format_version, plan.spec_digest);
    let cluster = plan
        .endpoints
        .cluster
        .as_ref()
        .map_or("(not observed)".to_string(), |c| format!("{} (kube-system {})", c.server, c.kube_system_uid));
    let gitlab = plan.endpoints.gitlab.as_ref().map_or("(not observed)", |g| g.url.as_str());
    let _ = writeln!(out, "cluster: {cluster}\ngitlab:  {gitlab}");
    if let Some(at) = &plan.observed_at {
        let _ = writeln!(out, "observed at {at}");
    }
    for phase in &plan.phases {
        let _ = writeln!(out, "\n{}: {} change(s)", phase.phase, phase.changes.len());
        for c in &phase.changes {
            change_text(&mut out, c, color);
        }
        if !phase.blocked.is_empty() {
            let _ = writeln!(out, "  blocked (not applied):");
            for b in &phase.blocked {
                let _ = writeln!(out, "  ! [{}] {}", b.id, b.summary);
                let _ = writeln!(out, "      {:<8} {}", "why:", b.reason);
            }
        }
        if !phase.findings.is_empty() {
            let _ = writeln!(out, "  findings:");
            for f in &phase.findings {
                let _ = writeln!(out, "    {:<7} {:<30} {}", f.status, f.code, f.headline());
            }
        }
    }
    match plan.order() {
        Ok(order) if !order.is_empty() => {
            let _ = writeln!(out, "\napply order:");
            for (i, c) in order.iter().enumerate() {
                let _ = writeln!(out, "  {:>3}. {} ({})", i + 1, c.id, c.phase.title());
            }
        }
        Ok(_) => {
            let _ = writeln!(out, "\nnothing to change");
        }
        Err(e) => {
            let _ = writeln!(out, "\nthe plan cannot be applied: {e}");
        }
    }
    out
}

fn change_text(out: &mut String, c: &Change, color: bool) {
    let sign = match c.action {
        Action::Create => '+',
        Action::Update => '~',
        Action::Delete => '-',
    };
    let _ = writeln!(out, "  {sign} [{}] {}", c.id, c.summary);
    for (label, text) in facts(c) {
        let _ = writeln!(out, "      {:<8} {text}", format!("{label}:"));
    }
    let diff = change_diff(c, DiffOptions::default());
    let text = if color { render::ansi(&diff) } else { render::plain(&diff) };
    for line in text.lines() {
        let _ = writeln!(out, "      {line}");
    }
}

/// What a reviewer reads about a change before its diff: target, write method, what it waits
/// for, its bindings (never a value), how it is undone and verified. The text plan and the
/// TUI both show these.
pub fn facts(c: &Change) -> Vec<(&'static str, String)> {
    let mut out = vec![("target", c.target.to_string()), ("write", method_text(&c.method))];
    if !c.depends_on.is_empty() {
        let ids: Vec<&str> = c.depends_on.iter().map(|d| d.as_str()).collect();
        out.push(("after", ids.join(", ")));
    }
    for b in &c.bindings {
        out.push(("binds", format!("{} <- {} ({})", b.pointer, b.from, b.source)));
    }
    if !c.waits_for.is_empty() {
        let w: Vec<String> = c.waits_for.iter().map(|v| v.to_string()).collect();
        out.push(("waits", w.join("; ")));
    }
    out.push(("undo", c.reversal.to_string()));
    if !c.verify.is_empty() {
        let v: Vec<String> = c.verify.iter().map(|v| v.to_string()).collect();
        out.push(("verify", v.join("; then ")));
    }
    out
}

fn method_text(m: &WriteMethod) -> String {
    match m {
        WriteMethod::KubeCreate => "create (POST; refused if it exists)".into(),
        WriteMethod::KubeApply { field_manager, .. } => format!("server-side apply as field manager {field_manager}"),
        WriteMethod::KubeJsonPatch { patch } => {
            let tests = patch.iter().filter(|op| op["op"] == "test").count();
            format!("JSON patch, {} test(s) then {} operation(s)", tests, patch.len() - tests)
        }
        WriteMethod::KubeDelete => "delete with uid and resourceVersion preconditions".into(),
        WriteMethod::GitLab { method, path } => format!("{method} {path}"),
        WriteMethod::GitLabCommit { branch, start_branch, merge_request } => match (start_branch, merge_request) {
            (Some(from), Some(mr)) => {
                format!(
                    "commit to branch {branch} (from {from}), merge request into {} ({})",
                    mr.target_branch,
                    if mr.merge { "archshift merges it" } else { "a person merges it" }
                )
            }
            _ => format!("commit to {branch}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use crate::model::fixtures::{plan, start};

    #[test]
    fn the_whole_sandbox_plan_renders_for_review() {
        let plan = crate::phases::plan(&start(), &plan(), include_str!("../../plans/sandbox.yaml"));
        let text = super::plan_text(&plan, false);
        for leaked in ["glrt-", "glpat-"] {
            assert!(!text.contains(leaked), "{leaked} in the rendered plan");
        }
        assert!(!text.contains('\x1b'), "no colour unless asked");
        assert!(super::plan_text(&plan, true).contains("\x1b[32m+"), "colour when asked");
        insta::assert_snapshot!(text);
    }
}
