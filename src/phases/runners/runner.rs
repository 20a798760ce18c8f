//! The GitLab side of a per-architecture runner: create it with its tag, or bring an existing
//! one to exactly its tag, and report whether it is online on the right architecture.

use serde_json::{Value, json};

use crate::model::{
    Action, Change, ChangeId, Document, FindingCode, GitLabRunner, HttpMethod, ObjectRef, ObservedState, Phase,
    PhasePlan, Precondition, Reversal, Status, WriteMethod,
};
use crate::phases::join;
use crate::spec::{RunnersSpec, ScopeKind};
use crate::vocab::Arch;

/// Which architecture's runner an existing GitLab runner is: by description, else by its one
/// architecture tag, else by where its managers run; a runner carrying both tags goes to the
/// first architecture of the plan and loses the other tag.
pub fn owner_arch(runner: &GitLabRunner, r: &RunnersSpec, archs: &[Arch]) -> Option<Arch> {
    if let Some(a) = archs.iter().find(|a| runner.description == r.tag(**a)) {
        return Some(*a);
    }
    let tagged: Vec<Arch> = archs.iter().copied().filter(|a| runner.tag_list.contains(&r.tag(*a))).collect();
    match tagged.as_slice() {
        [] => None,
        [one] => Some(*one),
        several => {
            let managers: Vec<Arch> = runner.manager_architectures.iter().filter_map(|m| Arch::from_alias(m)).collect();
            match managers.as_slice() {
                [m, rest @ ..] if rest.iter().all(|x| x == m) && several.contains(m) => Some(*m),
                _ => several.first().copied(),
            }
        }
    }
}

/// Brings an existing runner to exactly its tag without untagged jobs, and reports its state.
pub fn check_runner(runner: &GitLabRunner, r: &RunnersSpec, arch: Arch, out: &mut PhasePlan) {
    let tag = r.tag(arch);
    let target = ObjectRef::GitLabRunner { tag: tag.clone(), id: Some(runner.id) };
    let foreign: Vec<String> = Arch::ALL.iter().filter(|a| **a != arch).map(|a| r.tag(*a)).collect();
    let mut tags: Vec<String> = runner.tag_list.iter().filter(|t| !foreign.contains(t)).cloned().collect();
    for t in std::iter::once(&tag).chain(&r.extra_tags) {
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    let mut before = runner_doc(&runner.tag_list, runner.run_untagged);
    let mut after = runner_doc(&tags, false);
    let mut attrs = Vec::new();
    if let Some(level) = r.access_level.filter(|l| runner.access_level.as_deref() != Some(l.as_str())) {
        before["access_level"] = json!(runner.access_level);
        after["access_level"] = json!(level.as_str());
        attrs.push(format!("access level {}", level.as_str()));
    }
    if let Some(t) = r.maximum_timeout.filter(|t| runner.maximum_timeout != Some(*t)) {
        before["maximum_timeout"] = json!(runner.maximum_timeout);
        after["maximum_timeout"] = json!(t);
        attrs.push(format!("maximum timeout {t}s"));
    }
    if tags == runner.tag_list && !runner.run_untagged && attrs.is_empty() {
        out.holds(ChangeId::runner(&tag));
    } else {
        let mut why = attrs;
        if !runner.tag_list.contains(&tag) {
            why.push(format!("lacks tag {tag}"));
        }
        let missing_extra: Vec<&String> = r.extra_tags.iter().filter(|t| !runner.tag_list.contains(t)).collect();
        if !missing_extra.is_empty() {
            why.push(format!("lacks extra tag(s) {}", join(missing_extra.iter())));
        }
        if runner.tag_list.iter().any(|t| foreign.contains(t)) {
            why.push("carries another architecture's tag".to_string());
        }
        if runner.run_untagged {
            why.push("runs untagged jobs (they could land on the wrong architecture)".to_string());
        }
        out.changes.push(
            Change::new(
                ChangeId::runner(&tag),
                Phase::Runners,
                target.clone(),
                Action::Update,
                format!("retag runner #{}: {}", runner.id, why.join("; ")),
                WriteMethod::GitLab { method: HttpMethod::Put, path: format!("/runners/{}", runner.id) },
            )
            .before(Document::Object(before))
            .after(Document::Object(after))
            .precondition(Precondition::RunnerTags {
                tag_list: runner.tag_list.clone(),
                run_untagged: runner.run_untagged,
            }),
        );
    }
    if runner.is_online() {
        let wrong: Vec<&String> =
            runner.manager_architectures.iter().filter(|a| Arch::from_alias(a) != Some(arch)).collect();
        if wrong.is_empty() {
            out.finding(
                FindingCode::RunnerOnline,
                Status::Done,
                Some(target),
                format!("online{}", arch_note(&runner.manager_architectures)),
            );
        } else {
            out.finding(
                FindingCode::RunnerWrongArch,
                Status::Risk,
                Some(target),
                format!("online, but a manager reports architecture {}: check its nodeSelector", join(wrong.iter())),
            );
        }
    } else if runner.paused {
        out.finding(FindingCode::RunnerPaused, Status::Risk, Some(target), "paused: it takes no jobs");
    } else {
        out.finding(
            FindingCode::RunnerOffline,
            Status::Pending,
            Some(target),
            format!("{}: its manager pod has not connected to GitLab yet", runner.status),
        );
    }
}

fn arch_note(archs: &[String]) -> String {
    if archs.is_empty() { String::new() } else { format!(" on {}", archs.join(", ")) }
}

/// The `PUT /runners/:id` body (and the before-image shown next to it).
fn runner_doc(tags: &[String], run_untagged: bool) -> Value {
    json!({"tag_list": tags, "run_untagged": run_untagged})
}

/// `POST /user/runners`: the runner with its tag, no untagged jobs. GitLab answers with its
/// `glrt-` token, which the token Secret binds. The body names the group or project by the
/// integer id GitLab requires (`group_id`/`project_id`); the diff shows exactly what is sent.
pub fn create_runner(state: &ObservedState, r: &RunnersSpec, arch: Arch) -> Result<Change, String> {
    let tag = r.tag(arch);
    let tags: Vec<&String> = std::iter::once(&tag).chain(&r.extra_tags).collect();
    let mut body = json!({
        "runner_type": r.scope.kind.runner_type(),
        "description": tag,
        "tag_list": tags,
        "run_untagged": false,
        "locked": false,
    });
    if let Some(b) = body.as_object_mut() {
        if let Some(level) = r.access_level {
            b.insert("access_level".into(), json!(level.as_str()));
        }
        if let Some(t) = r.maximum_timeout {
            b.insert("maximum_timeout".into(), json!(t));
        }
    }
    if let (ScopeKind::Group | ScopeKind::Project, Some(p), Some(b)) =
        (r.scope.kind, &r.scope.path, body.as_object_mut())
    {
        let key = if r.scope.kind == ScopeKind::Group { "group_id" } else { "project_id" };
        let id = state.endpoints.gitlab.as_ref().and_then(|g| g.ids.get(p)).ok_or_else(|| {
            format!(
                "the id of {} {p} is unknown: it was not found in GitLab, or the token cannot see it",
                r.scope.kind.noun()
            )
        })?;
        b.insert(key.into(), json!(id));
    }
    Ok(Change::new(
        ChangeId::runner(&tag),
        Phase::Runners,
        ObjectRef::GitLabRunner { tag: tag.clone(), id: None },
        Action::Create,
        format!("create {} runner {tag} in GitLab (tagged {tag}, no untagged jobs)", r.scope.kind.runner_type()),
        WriteMethod::GitLab { method: HttpMethod::Post, path: "/user/runners".into() },
    )
    .after(Document::Object(body)))
}

/// `POST /runners/:id/reset_authentication_token`, for a runner whose token archshift never saw.
pub fn reset_token(runner: &GitLabRunner, tag: &str) -> Change {
    Change::new(
        ChangeId::runner_token(tag),
        Phase::Runners,
        ObjectRef::RunnerToken { tag: tag.to_string(), id: runner.id },
        Action::Update,
        format!("reset the authentication token of runner #{} ({tag})", runner.id),
        WriteMethod::GitLab {
            method: HttpMethod::Post,
            path: format!("/runners/{}/reset_authentication_token", runner.id),
        },
    )
    .precondition(Precondition::Exists)
    .reversal(Reversal::Irreversible {
        reason: "GitLab invalidates the old token at once; a manager still using it stops".into(),
    })
    // Nothing to read back: the new token is proven when the Release's runner comes online.
    .verify(vec![])
}
