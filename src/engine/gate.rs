//! The risk gate: what the plan calls a risk, apply does not write through without `--force`.
//!
//! A risk stops a run when it bears on a change the run would write, or on one of that
//! change's prerequisites. A finding bears on the change that resolves it, else on the
//! changes whose target it names, else (a finding about the phase as a whole) on every change
//! of its phase. A denied permission bears on the changes that need it; a blocked change on
//! the run that would have written it. The whole plan is stopped by any of them: an apply of
//! everything that leaves out a refused part leaves the migration half-made (runners with no
//! process behind them, jobs retagged onto them).

use std::collections::{BTreeMap, BTreeSet};

use super::run::{Selection, with_dependencies};
use crate::audit::report::{AccessCheck, AccessScope, PreflightCheck, gitlab_access_for, permission_for};
use crate::model::{ChangeId, ObjectRef, Phase, Plan, Status};

/// The keys under which the gate files a reference: Kubernetes objects by kind, namespace
/// and name (whatever version is served), runners and their tokens by tag, CI files and their
/// jobs by project and path (a change's branch is its delivery branch), and a file under its
/// project too, so a finding about a project reaches its file's change.
fn keys(r: &ObjectRef) -> Vec<String> {
    match r {
        ObjectRef::Kube { kind, namespace, name, .. } => {
            vec![format!("kube\0{kind}\0{}\0{name}", namespace.as_deref().unwrap_or(""))]
        }
        ObjectRef::GitLabRunner { tag, .. } | ObjectRef::RunnerToken { tag, .. } => vec![format!("runner\0{tag}")],
        ObjectRef::ProjectVariable { project, key } => vec![format!("pvar\0{project}\0{key}")],
        ObjectRef::GroupVariable { group, key } => vec![format!("gvar\0{group}\0{key}")],
        ObjectRef::CiFile { project, path, .. } | ObjectRef::CiJob { project, path, .. } => {
            vec![format!("file\0{project}\0{path}"), format!("project\0{project}")]
        }
        ObjectRef::Project { path } => vec![format!("project\0{path}")],
    }
}

/// Whether two references name the same object as the gate files them.
pub fn keys_meet(a: &ObjectRef, b: &ObjectRef) -> bool {
    let kb = keys(b);
    keys(a).iter().any(|k| kb.contains(k))
}

/// What each risk and denial bears on, computed once for the plan.
pub struct Gate {
    /// `(line, changes it bears on)`.
    items: Vec<(String, BTreeSet<ChangeId>)>,
    /// Blocked changes by phase: `(phase, line)`.
    blocked: Vec<(Phase, String)>,
}

impl Gate {
    pub fn new(plan: &Plan, preflight: &[PreflightCheck], access: &[AccessCheck]) -> Gate {
        let mut by_key: BTreeMap<String, Vec<ChangeId>> = BTreeMap::new();
        let mut by_phase: BTreeMap<Phase, Vec<ChangeId>> = BTreeMap::new();
        for phase in &plan.phases {
            let all = phase
                .changes
                .iter()
                .map(|c| (&c.id, &c.target))
                .chain(phase.blocked.iter().map(|b| (&b.id, &b.target)));
            for (id, target) in all {
                for k in keys(target) {
                    by_key.entry(k).or_default().push(id.clone());
                }
                by_phase.entry(phase.phase).or_default().push(id.clone());
            }
        }
        let mut items = Vec::new();
        for phase in &plan.phases {
            for f in phase.findings.iter().filter(|f| f.status == Status::Risk) {
                let anchors: BTreeSet<ChangeId> = match (&f.change, &f.target) {
                    (Some(id), _) => BTreeSet::from([id.clone()]),
                    (None, target) => {
                        let named: BTreeSet<ChangeId> =
                            target.iter().flat_map(keys).filter_map(|k| by_key.get(&k)).flatten().cloned().collect();
                        if named.is_empty() {
                            by_phase.get(&phase.phase).into_iter().flatten().cloned().collect()
                        } else {
                            named
                        }
                    }
                };
                items.push((format!("risk {}: {}", f.code, f.headline()), anchors));
            }
        }
        for check in preflight.iter().filter(|c| !c.allowed) {
            let hit: BTreeSet<ChangeId> = plan
                .changes()
                .filter(|c| permission_for(c).as_ref() == Some(&check.need))
                .map(|c| c.id.clone())
                .collect();
            if !hit.is_empty() {
                let why = if check.reason.is_empty() { String::new() } else { format!(" ({})", check.reason) };
                items.push((format!("denied: {}{why}, needed by {}", check.need, join(&hit)), hit));
            }
        }
        for check in access.iter().filter(|c| !c.allowed) {
            let hit: BTreeSet<ChangeId> = plan
                .changes()
                .filter(|c| {
                    gitlab_access_for(c).is_some_and(|n| {
                        n.scope == check.need.scope && (n.scope == AccessScope::Instance || n.path == check.need.path)
                    })
                })
                .map(|c| c.id.clone())
                .collect();
            if !hit.is_empty() {
                items.push((
                    format!("denied: {} (the token has {}), needed by {}", check.need, check.have, join(&hit)),
                    hit,
                ));
            }
        }
        let blocked = plan
            .phases
            .iter()
            .flat_map(|p| p.blocked.iter().map(|b| (p.phase, format!("blocked {}: {}", b.id, b.reason))))
            .collect();
        Gate { items, blocked }
    }

    /// What stops `selection` of `plan` from starting: every risk, denied permission and
    /// blocked change that bears on what it would write or on what that needs; for the whole
    /// plan, every one of them. Empty: the run may start.
    pub fn stops(&self, plan: &Plan, selection: &Selection) -> Vec<String> {
        let (reach, phase) = match selection {
            Selection::All => {
                let mut out: Vec<String> = self.items.iter().map(|(line, _)| line.clone()).collect();
                out.extend(self.blocked.iter().map(|(_, line)| line.clone()));
                return out;
            }
            Selection::Phase(p) => {
                let mut reach = BTreeSet::new();
                for c in plan.changes().filter(|c| c.phase == *p) {
                    reach.extend(with_dependencies(plan, &c.id));
                }
                reach.extend(
                    plan.phases.iter().filter(|x| x.phase == *p).flat_map(|x| x.blocked.iter().map(|b| b.id.clone())),
                );
                (reach, Some(*p))
            }
            Selection::Step(id) => (with_dependencies(plan, id), None),
        };
        let mut out: Vec<String> = self
            .items
            .iter()
            .filter(|(_, anchors)| {
                if anchors.len() < reach.len() {
                    anchors.iter().any(|a| reach.contains(a))
                } else {
                    reach.iter().any(|a| anchors.contains(a))
                }
            })
            .map(|(line, _)| line.clone())
            .collect();
        out.extend(self.blocked.iter().filter(|(p, _)| Some(*p) == phase).map(|(_, line)| line.clone()));
        out
    }

    /// The changes of `plan` that a step's apply would stop on, for the TUI's marks.
    pub fn risky_steps(&self, plan: &Plan) -> BTreeSet<ChangeId> {
        plan.changes()
            .filter(|c| !self.stops(plan, &Selection::Step(c.id.clone())).is_empty())
            .map(|c| c.id.clone())
            .collect()
    }
}

fn join(ids: &BTreeSet<ChangeId>) -> String {
    let shown: Vec<&str> = ids.iter().take(3).map(ChangeId::as_str).collect();
    let more = if ids.len() > 3 { format!(" and {} more", ids.len() - 3) } else { String::new() };
    format!("{}{more}", shown.join(", "))
}
