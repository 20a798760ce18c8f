//! Runners: list and detail shapes, filters, `POST /user/runners`, `PUT /runners/:id`, managers.

use super::routes::Ctx;
#[allow(clippy::wildcard_imports)]
use super::*;

/// Grape's Boolean coercion (dry-types `Params::Bool`).
pub(super) fn boolean(v: &str) -> Option<bool> {
    match v {
        "1" | "on" | "t" | "true" | "y" | "yes" => Some(true),
        "0" | "off" | "f" | "false" | "n" | "no" => Some(false),
        _ => None,
    }
}

/// The parameter declarations of `POST /user/runners` (lib/api/user_runners.rb), checked as
/// Grape checks them: every failure, in declaration order, in one `{"error": …}` 400.
fn validate_create(p: &Params) -> Result<(), R> {
    let mut errors: Vec<String> = Vec::new();
    let runner_type = p.get("runner_type").map(String::as_str);
    match runner_type {
        None => errors.push("runner_type is missing".into()),
        Some("instance_type" | "group_type" | "project_type") => {}
        Some(_) => errors.push("runner_type does not have a valid value".into()),
    }
    for (kind, key) in [("group_type", "group_id"), ("project_type", "project_id")] {
        if runner_type == Some(kind) {
            match p.get(key) {
                None => errors.push(format!("{key} is missing")),
                Some(v) if v.parse::<i64>().is_err() => errors.push(format!("{key} is invalid")),
                Some(_) => {}
            }
        }
    }
    for key in ["paused", "locked"] {
        if p.get(key).is_some_and(|v| boolean(v).is_none()) {
            errors.push(format!("{key} is invalid"));
        }
    }
    if p.get("access_level").is_some_and(|v| !["not_protected", "ref_protected"].contains(&v.as_str())) {
        errors.push("access_level does not have a valid value".into());
    }
    if p.get("run_untagged").is_some_and(|v| boolean(v).is_none()) {
        errors.push("run_untagged is invalid".into());
    }
    if p.get("maximum_timeout").is_some_and(|v| v.parse::<i64>().is_err()) {
        errors.push("maximum_timeout is invalid".into());
    }
    if errors.is_empty() { Ok(()) } else { Err(Reply::json(400, json!({"error": errors.join(", ")}))) }
}

impl GitLabState {
    /// A runner list, filtered as the request asks, one page of it.
    pub(super) fn list_runners(&self, rs: Vec<&Runner>, c: &routes::Ctx) -> R {
        match self.filter_runners(rs, &c.p) {
            Ok(items) => paginate(c.req, &self.base_url, items),
            Err(r) => r,
        }
    }

    pub(super) fn runner_list_item(&self, r: &Runner) -> Value {
        entities::to_json(&self.runner_entity(r))
    }

    pub(super) fn runner_entity(&self, r: &Runner) -> entities::Runner {
        entities::Runner {
            id: r.id,
            description: r.description.clone(),
            ip_address: None,
            active: !r.paused,
            paused: r.paused,
            is_shared: r.runner_type == "instance_type",
            runner_type: r.runner_type.clone(),
            name: "gitlab-runner",
            online: r.online(),
            created_by: self.user_basic_entity(),
            created_at: r.created_at.clone(),
            status: r.status(),
            job_execution_status: self.execution_status(r),
        }
    }

    pub(super) fn execution_status(&self, r: &Runner) -> &'static str {
        if self.jobs.iter().any(|j| j.runner_id == Some(r.id) && j.status == "running") { "active" } else { "idle" }
    }

    pub(super) fn runner_detail(&self, r: &Runner, params: &Params) -> Value {
        let last = r.managers.iter().max_by_key(|m| m.contacted_at);
        let projects = params.get("include_projects").is_none_or(|x| x != "false").then(|| {
            self.projects
                .iter()
                .filter(|p| r.runner_type == "project_type" && r.project_ids.contains(&p.id))
                .map(|p| json!({"id": p.id, "name": p.name, "name_with_namespace": p.path_with_namespace.replace('/', " / "), "path": p.path, "path_with_namespace": p.path_with_namespace}))
                .collect()
        });
        let groups = self
            .groups
            .iter()
            .filter(|g| r.group_id == Some(g.id))
            .map(
                |g| json!({"id": g.id, "web_url": format!("{}/groups/{}", self.base_url, g.full_path), "name": g.name}),
            )
            .collect();
        entities::to_json(&entities::RunnerDetails {
            runner: self.runner_entity(r),
            tag_list: r.tag_list.clone(),
            run_untagged: r.run_untagged,
            locked: r.locked,
            maximum_timeout: r.maximum_timeout,
            access_level: r.access_level.clone(),
            version: last.map(|m| m.version.clone()),
            revision: last.map(|_| "5a021a1c"),
            platform: last.map(|m| m.platform.clone()),
            architecture: last.map(|m| m.architecture.clone()),
            contacted_at: r.contacted_at().map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            maintenance_note: r.maintenance_note.clone(),
            projects,
            groups,
        })
    }

    pub(super) fn filter_runners(&self, rs: Vec<&Runner>, p: &Params) -> Result<Vec<Value>, R> {
        let wanted_tags: Vec<String> = p
            .get("tag_list")
            .map(|t| t.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        if let Some(t) = p.get("type")
            && !["instance_type", "group_type", "project_type"].contains(&t.as_str())
        {
            return Err(Reply::json(400, json!({"error": "type does not have a valid value"})));
        }
        if let Some(s) = p.get("status")
            && !["online", "offline", "stale", "never_contacted", "active", "paused"].contains(&s.as_str())
        {
            return Err(Reply::json(400, json!({"error": "status does not have a valid value"})));
        }
        Ok(rs
            .into_iter()
            .filter(|r| p.get("type").is_none_or(|t| *t == r.runner_type))
            .filter(|r| match p.get("status").map(String::as_str) {
                None => true,
                Some("offline") => matches!(r.status(), "offline" | "stale"),
                Some("active") => !r.paused,
                Some("paused") => r.paused,
                Some(s) => r.status() == s,
            })
            .filter(|r| p.get("paused").is_none_or(|x| (x == "true") == r.paused))
            .filter(|r| wanted_tags.iter().all(|t| r.tag_list.contains(t)))
            .map(|r| self.runner_list_item(r))
            .collect())
    }

    pub(super) fn with_runner(&self, id: &str, f: impl FnOnce(&Self, &Runner) -> R) -> R {
        match id.parse::<u64>().ok().and_then(|id| self.runners.iter().find(|r| r.id == id)) {
            Some(r) => f(self, r),
            None => not_found("Runner"),
        }
    }

    pub(super) fn create_runner(&mut self, p: &Params) -> R {
        if let Err(e) = validate_create(p) {
            return e;
        }
        let rtype = p.get("runner_type").cloned().unwrap_or_default();
        // The ids are integers (validated above): a group or project by id, never by path.
        let (group_id, project_ids) = match rtype.as_str() {
            // Group runners need Owner, project runners Maintainer, instance runners an admin.
            "group_type" => match p.get("group_id").and_then(|g| g.parse::<u64>().ok()) {
                Some(gid) if self.groups.iter().any(|g| g.id == gid) && self.may(OWNER) => (Some(gid), vec![]),
                _ => return msg(403, "403 Forbidden - User is not allowed to create a runner"),
            },
            "project_type" => match p.get("project_id").and_then(|x| x.parse::<u64>().ok()) {
                Some(pid) if self.projects.iter().any(|x| x.id == pid) && self.may(MAINTAINER) => (None, vec![pid]),
                _ => return msg(403, "403 Forbidden - User is not allowed to create a runner"),
            },
            _ if self.access.is_some() => return msg(403, "403 Forbidden - User is not allowed to create a runner"),
            _ => (None, vec![]),
        };
        let tags = p.list("tag_list");
        let run_untagged = p.get("run_untagged").is_none_or(|v| boolean(v) == Some(true));
        if !run_untagged && tags.is_empty() {
            return bad("Tags list can not be empty when runner is not allowed to pick untagged jobs");
        }
        if tags.len() > 50 {
            return bad("Tags list is too long (maximum is 50 tags)");
        }
        let maximum_timeout = p.get("maximum_timeout").and_then(|t| t.parse::<u64>().ok());
        if maximum_timeout.is_some_and(|t| t < 600) {
            return bad("Maximum timeout needs to be at least 10 minutes");
        }
        let id = self.next_id();
        let token = Self::new_runner_token();
        self.runners.push(Runner {
            id,
            description: p.get("description").cloned().unwrap_or_default(),
            runner_type: rtype,
            group_id,
            project_ids,
            tag_list: tags,
            run_untagged,
            locked: p.get("locked").is_some_and(|v| boolean(v) == Some(true)),
            paused: p.get("paused").is_some_and(|v| boolean(v) == Some(true)),
            access_level: p.get("access_level").cloned().unwrap_or("not_protected".into()),
            maximum_timeout,
            maintenance_note: p.get("maintenance_note").cloned(),
            token: token.clone(),
            created_at: now(),
            managers: vec![],
            job_node_selector: None,
        });
        Reply::json(201, json!({"id": id, "token": token, "token_expires_at": null}))
    }

    pub(super) fn update_runner(&mut self, id: &str, p: &Params) -> R {
        let Some(idx) = id.parse::<u64>().ok().and_then(|id| self.runners.iter().position(|r| r.id == id)) else {
            return not_found("Runner");
        };
        let mut r = self.runners[idx].clone();
        if let Some(d) = p.get("description") {
            r.description = d.clone();
        }
        if p.has("tag_list") {
            r.tag_list = p.list("tag_list");
        }
        if let Some(v) = p.get("run_untagged") {
            r.run_untagged = v == "true";
        }
        if let Some(v) = p.get("locked") {
            r.locked = v == "true";
        }
        if let Some(v) = p.get("paused") {
            r.paused = v == "true";
        } else if let Some(v) = p.get("active") {
            r.paused = v != "true";
        }
        if let Some(v) = p.get("access_level") {
            if !["not_protected", "ref_protected"].contains(&v.as_str()) {
                return Reply::json(400, json!({"error": "access_level does not have a valid value"}));
            }
            r.access_level = v.clone();
        }
        if let Some(v) = p.get("maximum_timeout") {
            match v.parse::<u64>() {
                Ok(t) if t >= 600 => r.maximum_timeout = Some(t),
                _ => {
                    return Reply::json(
                        400,
                        json!({"message": {"maximum_timeout": ["needs to be at least 10 minutes"]}}),
                    );
                }
            }
        }
        if let Some(v) = p.get("maintenance_note") {
            r.maintenance_note = Some(v.clone());
        }
        if !r.run_untagged && r.tag_list.is_empty() {
            return Reply::json(
                400,
                json!({"message": {"tags_list": ["can not be empty when runner is not allowed to pick untagged jobs"]}}),
            );
        }
        self.runners[idx] = r;
        let r = &self.runners[idx];
        Reply::json(200, self.runner_detail(r, p))
    }
}

pub(super) fn manager_json(m: &Manager) -> Value {
    entities::to_json(&manager_entity(m))
}

pub(super) fn manager_entity(m: &Manager) -> entities::RunnerManager {
    let online = Utc::now() - m.contacted_at < chrono::Duration::hours(2);
    entities::RunnerManager {
        id: m.id,
        system_id: m.system_id.clone(),
        version: m.version.clone(),
        revision: "5a021a1c",
        platform: m.platform.clone(),
        architecture: m.architecture.clone(),
        created_at: m.created_at.clone(),
        contacted_at: m.contacted_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        ip_address: None,
        status: if online { "online" } else { "offline" },
        job_execution_status: "idle",
    }
}

/// `GET /api/v4/runners`
pub(super) fn list_all(s: &mut GitLabState, c: &Ctx) -> R {
    s.list_runners(s.runners.iter().collect(), c)
}

/// `POST /api/v4/runners`
pub(super) fn register_legacy(_s: &mut GitLabState, _c: &Ctx) -> R {
    Reply::json(410, json!({"message": "410 Gone - runner registration disallowed"}))
}

/// `POST /api/v4/runners/verify`
pub(super) fn verify(s: &mut GitLabState, c: &Ctx) -> R {
    let Some(token) = c.p.get("token") else { return missing("token") };
    match s.runners.iter().find(|r| r.token == *token) {
        Some(r) => Reply::json(200, json!({"id": r.id, "token": token, "token_expires_at": null})),
        None => msg(403, "403 Forbidden"),
    }
}

/// `POST /api/v4/user/runners`
pub(super) fn create(s: &mut GitLabState, c: &Ctx) -> R {
    s.create_runner(&c.p)
}

/// `GET /api/v4/runners/:id`
pub(super) fn get(s: &mut GitLabState, c: &Ctx) -> R {
    s.with_runner(&c.args[0], |s, r| Reply::json(200, s.runner_detail(r, &c.p)))
}

/// `GET /api/v4/runners/:id/managers`
pub(super) fn managers(s: &mut GitLabState, c: &Ctx) -> R {
    s.with_runner(&c.args[0], |_, r| Reply::json(200, Value::Array(r.managers.iter().map(manager_json).collect())))
}

/// `GET /api/v4/runners/:id/jobs`
pub(super) fn jobs(s: &mut GitLabState, c: &Ctx) -> R {
    s.with_runner(&c.args[0], |s, r| {
        let items: Vec<Value> = s
            .jobs
            .iter()
            .filter(|j| j.runner_id == Some(r.id))
            .filter(|j| c.p.get("status").is_none_or(|st| *st == j.status))
            .map(|j| s.job_json(j))
            .collect();
        paginate(c.req, &s.base_url, items)
    })
}

/// `PUT /api/v4/runners/:id`
pub(super) fn update(s: &mut GitLabState, c: &Ctx) -> R {
    s.update_runner(&c.args[0], &c.p)
}

/// `DELETE /api/v4/runners/:id`
pub(super) fn delete(s: &mut GitLabState, c: &Ctx) -> R {
    let Ok(rid) = c.args[0].parse::<u64>() else { return not_found("Runner") };
    let before = s.runners.len();
    s.runners.retain(|r| r.id != rid);
    if s.runners.len() == before { not_found("Runner") } else { no_content() }
}

/// `POST /api/v4/runners/:id/reset_authentication_token`
pub(super) fn reset_token(s: &mut GitLabState, c: &Ctx) -> R {
    let Ok(rid) = c.args[0].parse::<u64>() else { return not_found("Runner") };
    let Some(r) = s.runners.iter_mut().find(|r| r.id == rid) else { return not_found("Runner") };
    r.token = GitLabState::new_runner_token();
    Reply::json(201, json!({"token": r.token, "token_expires_at": null}))
}

/// `GET /api/v4/projects/:project/runners`
pub(super) fn list_project(s: &mut GitLabState, c: &Ctx) -> R {
    // Listing a project's or group's runners needs Maintainer (`read_runners`/`read_group_runners`).
    if !s.may(MAINTAINER) {
        return msg(403, "403 Forbidden");
    }
    let pid = s.projects[c.project].id;
    s.list_runners(s.runners.iter().filter(|r| s.runner_serves(r, pid)).collect(), c)
}

/// `GET /api/v4/groups/:group/runners`
pub(super) fn list_group(s: &mut GitLabState, c: &Ctx) -> R {
    if !s.may(MAINTAINER) {
        return msg(403, "403 Forbidden");
    }
    let chain = s.group_chain(s.groups[c.group].id);
    let rs = s
        .runners
        .iter()
        .filter(|r| {
            r.runner_type == "instance_type"
                || (r.runner_type == "group_type" && r.group_id.is_some_and(|g| chain.contains(&g)))
        })
        .collect();
    s.list_runners(rs, c)
}
