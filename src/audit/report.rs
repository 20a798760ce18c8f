//! The audit report: per phase, its status, the changes still needed with their (masked)
//! diffs, and the findings; as versioned JSON, Markdown for a merge request, or text.

use std::fmt::Write as _;

use serde::Serialize;

use crate::diff::{DiffOptions, change_diff, render};
use crate::model::{Action, FindingCode, Plan, Status, WriteMethod};
use crate::vocab::{Phase, plural};

/// The JSON format's version; bump it on any change a consumer could notice.
pub const REPORT_VERSION: u32 = 2;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub version: u32,
    /// The plan file's digest (`sha256:…`).
    pub plan: String,
    pub endpoints: Endpoints,
    pub phases: Vec<PhaseReport>,
    /// Each Kubernetes write the plan needs, asked as `kubectl auth can-i` asks it.
    pub preflight: Vec<PreflightCheck>,
    /// The GitLab role each group or project the plan writes to needs, and the token's.
    pub gitlab_access: Vec<AccessCheck>,
    pub summary: Summary,
}

/// Where a GitLab role is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessScope {
    Group,
    Project,
    /// Instance runners: only an administrator creates them.
    Instance,
}

/// A role the plan's GitLab writes need on one group or project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessNeed {
    pub scope: AccessScope,
    /// Path or numeric id, as the plan names it (the API takes either); empty for `instance`.
    pub path: String,
    /// GitLab's access level: 30 Developer, 40 Maintainer, 50 Owner.
    pub level: u8,
    /// What needs it, e.g. `create group runners`.
    pub needed_for: Vec<String>,
}

/// What GitLab answered for one [`AccessNeed`]: the token's role there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessCheck {
    #[serde(flatten)]
    pub need: AccessNeed,
    /// `Owner`, `Maintainer`, ..., `administrator`, or `none` (not a member).
    pub have: String,
    pub allowed: bool,
}

/// GitLab's name for an access level (`Gitlab::Access`).
pub fn role_name(level: u8) -> &'static str {
    match level {
        0..=9 => "none",
        10..=14 => "Guest",
        15..=19 => "Planner",
        20..=29 => "Reporter",
        30..=39 => "Developer",
        40..=49 => "Maintainer",
        _ => "Owner",
    }
}

impl std::fmt::Display for AccessNeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.scope {
            AccessScope::Instance => write!(f, "administrator of the instance"),
            AccessScope::Group => write!(f, "{} on group {}", role_name(self.level), self.path),
            AccessScope::Project => write!(f, "{} on project {}", role_name(self.level), self.path),
        }
    }
}

/// The GitLab role every GitLab write of `plan` needs, once per group or project (the
/// highest wins), as GitLab's policies state them: group runners and group variables need
/// Owner, project runners and project variables Maintainer, pushing a branch Developer.
pub fn needed_gitlab_access(plan: &Plan) -> Vec<AccessNeed> {
    let mut needs: Vec<AccessNeed> = Vec::new();
    for need in plan.changes().filter_map(gitlab_access_for) {
        if let Some(n) = needs.iter_mut().find(|n| n.scope == need.scope && n.path == need.path) {
            n.level = n.level.max(need.level);
            for why in need.needed_for {
                if !n.needed_for.contains(&why) {
                    n.needed_for.push(why);
                }
            }
        } else {
            needs.push(need);
        }
    }
    needs.sort_by(|a, b| (a.scope, &a.path).cmp(&(b.scope, &b.path)));
    needs
}

/// The GitLab role one change's write needs, if it writes to GitLab.
pub fn gitlab_access_for(c: &crate::model::Change) -> Option<AccessNeed> {
    use crate::model::ObjectRef;
    let need = |scope: AccessScope, path: String, level: u8, why: &str| {
        Some(AccessNeed { scope, path, level, needed_for: vec![why.to_string()] })
    };
    match &c.target {
        ObjectRef::GitLabRunner { .. } => {
            let doc = [&c.after, &c.before].into_iter().flatten().find_map(|d| d.as_object())?;
            let id = |field: &str| doc[field].as_u64().map(|i| i.to_string());
            match doc["runner_type"].as_str() {
                Some("group_type") => need(AccessScope::Group, id("group_id")?, 50, "create and edit group runners"),
                Some("project_type") => {
                    need(AccessScope::Project, id("project_id")?, 40, "create and edit project runners")
                }
                Some("instance_type") => need(AccessScope::Instance, String::new(), 60, "create instance runners"),
                _ => None,
            }
        }
        ObjectRef::ProjectVariable { project, .. } => {
            need(AccessScope::Project, project.clone(), 40, "set project CI/CD variables")
        }
        ObjectRef::GroupVariable { group, .. } => {
            need(AccessScope::Group, group.clone(), 50, "set group CI/CD variables")
        }
        ObjectRef::CiFile { project, .. } => {
            need(AccessScope::Project, project.clone(), 30, "push the CI change and open its merge request")
        }
        _ => None,
    }
}

/// A write the plan needs: verb, API group, resource (plural) and namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Permission {
    pub verb: &'static str,
    pub group: String,
    pub resource: String,
    pub namespace: Option<String>,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let resource =
            if self.group.is_empty() { self.resource.clone() } else { format!("{}.{}", self.resource, self.group) };
        write!(f, "{} {resource}", self.verb)?;
        if let Some(ns) = &self.namespace {
            write!(f, " -n {ns}")?;
        }
        Ok(())
    }
}

/// What the API server answered for one [`Permission`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreflightCheck {
    #[serde(flatten)]
    pub need: Permission,
    pub allowed: bool,
    pub reason: String,
}

/// Every Kubernetes write of `plan`, once each, in a stable order.
pub fn needed_permissions(plan: &Plan) -> Vec<Permission> {
    let mut out: Vec<Permission> = plan.changes().filter_map(permission_for).collect();
    out.sort();
    out.dedup();
    out
}

/// What keeping the migration's state needs in the runners' namespace: its history's
/// Secrets read, listed, created and updated, its Lease read, created and updated.
pub fn state_permissions(namespace: &str) -> Vec<Permission> {
    let need = |verb, group: &str, resource: &str| Permission {
        verb,
        group: group.into(),
        resource: resource.into(),
        namespace: Some(namespace.into()),
    };
    let mut out = Vec::new();
    for verb in ["get", "list", "create", "update"] {
        out.push(need(verb, "", "secrets"));
    }
    for verb in ["get", "create", "update"] {
        out.push(need(verb, "coordination.k8s.io", "leases"));
    }
    out
}

/// The Kubernetes permission one change's write needs, if it writes to Kubernetes.
pub fn permission_for(c: &crate::model::Change) -> Option<Permission> {
    let crate::model::ObjectRef::Kube { api_version, kind, namespace, .. } = &c.target else { return None };
    let verb = match &c.method {
        WriteMethod::KubeCreate => "create",
        WriteMethod::KubeApply { .. } | WriteMethod::KubeJsonPatch { .. } => "patch",
        WriteMethod::KubeDelete => "delete",
        WriteMethod::GitLab { .. } | WriteMethod::GitLabCommit { .. } => return None,
    };
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g).to_string();
    Some(Permission { verb, group, resource: plural(kind), namespace: namespace.clone() })
}

#[derive(Debug, Clone, Serialize)]
pub struct Endpoints {
    pub cluster: Option<String>,
    pub gitlab: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// `nodepool`, `runners`, `pipeline`, `workloads`.
    pub id: &'static str,
    pub name: &'static str,
    pub status: PhaseStatus,
    pub changes: Vec<ChangeReport>,
    /// Changes the plan will not make: refused by their planner, or needing one that was.
    pub blocked: Vec<BlockedReport>,
    pub findings: Vec<FindingReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BlockedReport {
    pub id: String,
    pub target: String,
    pub summary: String,
    pub reason: String,
}

/// Where a phase stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PhaseStatus {
    /// Nothing left to do, nothing risky.
    Done,
    /// Changes (or waits) remain and nothing stops them.
    Pending,
    /// A risk needs a person before this phase can finish.
    Blocked,
    /// What the phase needs could not be read (a kind the cluster does not serve).
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeReport {
    pub id: String,
    pub target: String,
    pub action: &'static str,
    /// Unified diff, secrets masked.
    pub diff: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FindingReport {
    pub code: &'static str,
    pub status: Status,
    pub target: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub pending_changes: usize,
    pub blocked_changes: usize,
    pub risks: usize,
}

fn phase_id(p: Phase) -> &'static str {
    match p {
        Phase::NodePool => "nodepool",
        Phase::Runners => "runners",
        Phase::Pipeline => "pipeline",
        Phase::Workloads => "workloads",
        Phase::Rollback => "rollback",
    }
}

/// Which phase cannot be judged without a kind: Karpenter's for the NodePool phase,
/// Crossplane's Release for the runners. (Argo missing only means nothing to pin.)
fn phase_needing(kind: &str) -> Option<Phase> {
    if kind.ends_with(".karpenter.sh") || kind.ends_with(".karpenter.k8s.aws") {
        Some(Phase::NodePool)
    } else if kind == "releases.helm.crossplane.io" {
        Some(Phase::Runners)
    } else {
        None
    }
}

impl Report {
    /// The report of `plan`; `not_served` lists the kinds the cluster did not serve;
    /// `preflight` what the API server answered for [`needed_permissions`].
    ///
    /// `unreadable` is what GitLab refused to show, per phase (read as empty, so a risk).
    pub fn new(
        plan: &Plan,
        not_served: &[String],
        unreadable: &[(Phase, String)],
        preflight: Vec<PreflightCheck>,
        gitlab_access: Vec<AccessCheck>,
    ) -> Report {
        let phases: Vec<PhaseReport> = plan
            .phases
            .iter()
            .map(|p| {
                // A fleet's phase holds hundreds of diffs, each independent of the others.
                let changes: Vec<ChangeReport> = crate::par::map(&p.changes, |c| ChangeReport {
                    id: c.id.to_string(),
                    target: c.target.to_string(),
                    action: match c.action {
                        Action::Create => "create",
                        Action::Update => "update",
                        Action::Delete => "delete",
                    },
                    diff: render::plain(&change_diff(c, DiffOptions::default())),
                });
                let mut findings: Vec<FindingReport> = p
                    .findings
                    .iter()
                    .map(|f| FindingReport {
                        code: f.code.as_str(),
                        status: f.status,
                        target: f.target.as_ref().map(|t| t.to_string()),
                        message: f.message.clone(),
                    })
                    .collect();
                let missing: Vec<&String> = not_served.iter().filter(|k| phase_needing(k) == Some(p.phase)).collect();
                for kind in &missing {
                    findings.push(FindingReport {
                        code: FindingCode::KindNotServed.as_str(),
                        status: Status::Risk,
                        target: None,
                        message: format!("the cluster does not serve {kind}: is its controller installed?"),
                    });
                }
                for (_, what) in unreadable.iter().filter(|(phase, _)| *phase == p.phase) {
                    findings.push(FindingReport {
                        code: FindingCode::GitLabUnreadable.as_str(),
                        status: Status::Risk,
                        target: None,
                        message: what.clone(),
                    });
                }
                let blocked: Vec<BlockedReport> = p
                    .blocked
                    .iter()
                    .map(|b| BlockedReport {
                        id: b.id.to_string(),
                        target: b.target.to_string(),
                        summary: b.summary.clone(),
                        reason: b.reason.clone(),
                    })
                    .collect();
                let status = if !missing.is_empty() {
                    PhaseStatus::Error
                } else if !blocked.is_empty() || findings.iter().any(|f| f.status == Status::Risk) {
                    PhaseStatus::Blocked
                } else if !changes.is_empty() || findings.iter().any(|f| f.status == Status::Pending) {
                    PhaseStatus::Pending
                } else {
                    PhaseStatus::Done
                };
                PhaseReport { id: phase_id(p.phase), name: p.phase.title(), status, changes, blocked, findings }
            })
            .collect();
        // A write the identity may not make stops the apply as surely as a risk does.
        let denied =
            preflight.iter().filter(|c| !c.allowed).count() + gitlab_access.iter().filter(|c| !c.allowed).count();
        let summary = Summary {
            pending_changes: phases.iter().map(|p| p.changes.len()).sum(),
            blocked_changes: phases.iter().map(|p| p.blocked.len()).sum(),
            risks: phases.iter().flat_map(|p| &p.findings).filter(|f| f.status == Status::Risk).count() + denied,
        };
        Report {
            version: REPORT_VERSION,
            plan: plan.spec_digest.clone(),
            endpoints: Endpoints {
                cluster: plan.endpoints.cluster.as_ref().map(|c| c.server.clone()),
                gitlab: plan.endpoints.gitlab.as_ref().map(|g| g.url.clone()),
            },
            phases,
            preflight,
            gitlab_access,
            summary,
        }
    }

    /// 0 when every phase is done and nothing is risky, else 2.
    pub fn exit_code(&self) -> u8 {
        if self.summary.pending_changes == 0
            && self.summary.blocked_changes == 0
            && self.summary.risks == 0
            && self.phases.iter().all(|p| p.status == PhaseStatus::Done)
        {
            0
        } else {
            2
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// For a merge request: a table of phases, then each phase's findings and diffs.
    pub fn markdown(&self) -> String {
        let mut out = String::from("## archshift audit\n\n");
        let _ = writeln!(
            out,
            "Cluster `{}`, GitLab `{}`; plan `{}`.\n",
            self.endpoints.cluster.as_deref().unwrap_or("-"),
            self.endpoints.gitlab.as_deref().unwrap_or("-"),
            self.plan
        );
        out.push_str("| phase | status | changes | blocked | risks |\n|---|---|---|---|---|\n");
        for p in &self.phases {
            let risks = p.findings.iter().filter(|f| f.status == Status::Risk).count();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                p.name,
                status_word(p.status),
                p.changes.len(),
                p.blocked.len(),
                risks
            );
        }
        if !self.preflight.is_empty() {
            out.push_str("\n### Preflight (`kubectl auth can-i`)\n\n");
            for c in &self.preflight {
                let _ = writeln!(out, "- {} `{}`", if c.allowed { "yes" } else { "**no**" }, c.need);
            }
        }
        if !self.gitlab_access.is_empty() {
            out.push_str("\n### GitLab access\n\n");
            for c in &self.gitlab_access {
                let _ = writeln!(
                    out,
                    "- {} {} (the token has {}): {}",
                    if c.allowed { "yes" } else { "**no**" },
                    cell(&c.need.to_string()),
                    c.have,
                    cell(&c.need.needed_for.join(", "))
                );
            }
        }
        for p in &self.phases {
            let _ = writeln!(out, "\n### {}: {}\n", p.name, status_word(p.status));
            for f in &p.findings {
                let target = f.target.as_deref().map(|t| format!(" {}:", cell(t))).unwrap_or_default();
                let _ = writeln!(out, "- **{}** `{}`{} {}", f.status, f.code, target, cell(&f.message));
            }
            for b in &p.blocked {
                let _ = writeln!(out, "- **blocked** `{}` ({}): {}", b.id, cell(&b.target), cell(&b.reason));
            }
            for c in &p.changes {
                let fence = "`".repeat(c.diff.split('\n').map(backtick_run).max().unwrap_or(0).max(2) + 1);
                let _ =
                    writeln!(out, "\n{} `{}` ({})\n\n{fence}diff\n{}{fence}", c.action, c.id, cell(&c.target), c.diff);
            }
        }
        out
    }

    /// For a terminal: one line a phase, then the findings that are not done.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "archshift audit: cluster {}, gitlab {}",
            self.endpoints.cluster.as_deref().unwrap_or("-"),
            self.endpoints.gitlab.as_deref().unwrap_or("-")
        );
        for c in &self.preflight {
            let _ = writeln!(
                out,
                "can-i {:<3} {}{}",
                if c.allowed { "yes" } else { "no" },
                c.need,
                if c.reason.is_empty() { String::new() } else { format!(" ({})", c.reason) }
            );
        }
        for c in &self.gitlab_access {
            let _ = writeln!(
                out,
                "gitlab {:<3} {} (token has {}): {}",
                if c.allowed { "yes" } else { "no" },
                c.need,
                c.have,
                c.need.needed_for.join(", ")
            );
        }
        for p in &self.phases {
            let _ = writeln!(out, "{:<10} {:<8} {} change(s)", p.name, status_word(p.status), p.changes.len());
            for f in p.findings.iter().filter(|f| f.status != Status::Done) {
                let _ = writeln!(out, "  {:<7} {:<30} {}", f.status, f.code, f.message);
            }
            for b in &p.blocked {
                let _ = writeln!(out, "  blocked {:<30} {}", b.id, b.reason);
            }
        }
        let _ = writeln!(
            out,
            "{} change(s) pending, {} blocked, {} risk(s)",
            self.summary.pending_changes, self.summary.blocked_changes, self.summary.risks
        );
        out
    }
}

fn status_word(s: PhaseStatus) -> &'static str {
    match s {
        PhaseStatus::Done => "done",
        PhaseStatus::Pending => "pending",
        PhaseStatus::Blocked => "blocked",
        PhaseStatus::Error => "error",
    }
}

fn backtick_run(line: &str) -> usize {
    line.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// Text in a Markdown line: pipes and newlines would break it.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_follow_kubernetes() {
        assert_eq!(plural("NodePool"), "nodepools");
        assert_eq!(plural("Ingress"), "ingresses");
        assert_eq!(plural("NetworkPolicy"), "networkpolicies");
        assert_eq!(plural("Gateway"), "gateways");
    }
    use crate::model::fixtures::{plan, start};

    fn report(not_served: &[String]) -> Report {
        let p = crate::phases::plan(&start(), &plan(), "plan text");
        let preflight = needed_permissions(&p)
            .into_iter()
            .map(|need| PreflightCheck { allowed: need.verb != "delete", need, reason: String::new() })
            .collect();
        let access = needed_gitlab_access(&p)
            .into_iter()
            .map(|need| AccessCheck { have: "Owner".into(), allowed: need.level <= 50, need })
            .collect();
        Report::new(&p, not_served, &[], preflight, access)
    }

    #[test]
    fn gitlab_writes_need_the_roles_gitlab_policies_require() {
        let p = crate::phases::plan(&start(), &plan(), "plan text");
        let needs: Vec<String> = needed_gitlab_access(&p).iter().map(ToString::to_string).collect();
        // Group runners (by the group's id) and the group variable need Owner; the pipeline
        // project's variables Maintainer; the other projects' CI files Developer.
        assert!(
            needs.iter().any(|n| n.strip_prefix("Owner on group ").is_some_and(|g| g.parse::<u64>().is_ok())),
            "{needs:?}"
        );
        assert!(needs.contains(&"Owner on group platform".to_string()), "{needs:?}");
        assert!(needs.contains(&"Maintainer on project platform/kaniko-builder".to_string()), "{needs:?}");
        assert!(needs.contains(&"Developer on project platform/docs".to_string()), "{needs:?}");
        let kaniko = needed_gitlab_access(&p).into_iter().find(|n| n.path == "platform/kaniko-builder").unwrap();
        assert_eq!(kaniko.level, 40, "the highest need wins");
        assert_eq!(kaniko.needed_for.len(), 2, "{:?}", kaniko.needed_for);
        // A denied role is a risk: the apply would stop there.
        let clean = report(&[]).summary.risks;
        let denied = AccessCheck { need: kaniko, have: "Developer".into(), allowed: false };
        let r = Report::new(&p, &[], &[], vec![], vec![denied]);
        assert_eq!(r.summary.risks, clean + 1 - report(&[]).preflight.iter().filter(|c| !c.allowed).count());
        assert!(r.text().contains("gitlab no  Maintainer on project platform/kaniko-builder (token has Developer)"));
        assert_eq!(r.exit_code(), 2);
    }

    #[test]
    fn the_json_has_the_documented_shape_and_counts() {
        let r = report(&[]);
        let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(v["version"], 2);
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["version", "plan", "endpoints", "phases", "preflight", "gitlab_access", "summary"]);
        assert_eq!(v["gitlab_access"][0]["scope"], "group");
        for k in ["path", "level", "needed_for", "have", "allowed"] {
            assert!(v["gitlab_access"][0].get(k).is_some(), "gitlab_access lacks {k}");
        }
        let checks: Vec<String> = r.preflight.iter().map(|c| c.need.to_string()).collect();
        assert!(checks.contains(&"patch nodepools.karpenter.sh".to_string()), "{checks:?}");
        assert!(checks.contains(&"create releases.helm.crossplane.io".to_string()), "{checks:?}");
        assert!(checks.contains(&"create secrets -n gitlab-runner".to_string()), "{checks:?}");
        assert_eq!(v["preflight"][0]["allowed"], true);
        let ids: Vec<&str> = v["phases"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["nodepool", "runners", "pipeline", "workloads"]);
        let change = &v["phases"][0]["changes"][0];
        assert_eq!(change["id"], "nodepool/spot-pool");
        assert!(change["diff"].as_str().unwrap().contains("+") && change["action"] == "update", "{change}");
        let finding = &v["phases"][0]["findings"][0];
        for k in ["code", "status", "target", "message"] {
            assert!(finding.get(k).is_some(), "{finding}");
        }
        let pending: usize = r.phases.iter().map(|p| p.changes.len()).sum();
        assert_eq!(v["summary"]["pending_changes"], pending);
        assert_eq!(r.exit_code(), 2);
        // The runner token is bound at apply time: the report shows where it will come from,
        // never a value.
        let json = r.json();
        assert!(json.contains("runner-token: (token of runner sandbox-arm64, from GitLab at apply time)"), "{json}");
    }

    #[test]
    fn a_missing_controller_makes_its_phase_an_error_and_argo_missing_does_not() {
        let r = report(&["nodepools.karpenter.sh".into(), "clusterworkflowtemplates.argoproj.io".into()]);
        assert_eq!(r.phases[0].status, PhaseStatus::Error);
        assert!(r.phases[0].findings.iter().any(|f| f.code == "cluster.kind-not-served"));
        assert_ne!(r.phases[3].status, PhaseStatus::Error);
    }

    #[test]
    fn markdown_and_text_name_every_phase_with_its_status() {
        let r = report(&[]);
        let md = r.markdown();
        assert!(md.starts_with("## archshift audit\n"));
        assert!(md.contains("| NodePool | pending |") || md.contains("| NodePool | blocked |"), "{md}");
        assert!(md.contains("```diff\n"), "{md}");
        let text = r.text();
        assert_eq!(
            text.lines().filter(|l| l.starts_with("NodePool ") || l.starts_with("Workloads ")).count(),
            2,
            "{text}"
        );
    }
}
