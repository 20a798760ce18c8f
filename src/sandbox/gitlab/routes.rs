//! The route table of the simulated API: one line a route. `:project` and `:group` are
//! resolved once, by numeric id or URL-encoded path, answering GitLab's 404 when missing;
//! other `:name` captures and a trailing `*` reach the handler as they are.

#[allow(clippy::wildcard_imports)]
use super::*;

/// What a handler is given: the request, its parameters, and the captures of its route.
pub(super) struct Ctx<'a> {
    pub req: &'a Request,
    pub p: Params,
    /// Index into `projects` of `:project`.
    pub project: usize,
    /// Index into `groups` of `:group`.
    pub group: usize,
    /// Other captures, in order.
    pub args: Vec<String>,
    /// What `*` matched.
    pub rest: Vec<String>,
}

type Handler = fn(&mut GitLabState, &Ctx) -> R;

pub(super) struct Route {
    method: &'static str,
    pattern: &'static str,
    handler: Handler,
}

const fn route(method: &'static str, pattern: &'static str, handler: Handler) -> Route {
    Route { method, pattern, handler }
}

pub(super) const ROUTES: &[Route] = &[
    route("GET", "version", version),
    route("GET", "user", current_user),
    route("GET", "projects", list_projects),
    route("GET", "projects/:project", get_project),
    route("PUT", "projects/:project", edit_project),
    route("GET", "groups", list_groups),
    route("GET", "groups/:group", get_group),
    route("GET", "groups/:group/projects", list_group_projects),
    route("GET", "groups/:group/members/all/:user_id", member),
    route("GET", "projects/:project/members/all/:user_id", member),
    route("GET", "runners", runners::list_all),
    route("GET", "runners/all", runners::list_all),
    route("POST", "runners", runners::register_legacy),
    route("POST", "runners/verify", runners::verify),
    route("POST", "user/runners", runners::create),
    route("GET", "runners/:id", runners::get),
    route("GET", "runners/:id/managers", runners::managers),
    route("GET", "runners/:id/jobs", runners::jobs),
    route("PUT", "runners/:id", runners::update),
    route("DELETE", "runners/:id", runners::delete),
    route("POST", "runners/:id/reset_authentication_token", runners::reset_token),
    route("GET", "projects/:project/runners", runners::list_project),
    route("GET", "groups/:group/runners", runners::list_group),
    route("*", "projects/:project/variables/*", variables::project),
    route("*", "groups/:group/variables/*", variables::group),
    route("*", "projects/:project/repository/files/:path/*", repository::file),
    route("POST", "projects/:project/repository/commits", repository::commit),
    route("GET", "projects/:project/repository/commits/:sha", repository::get_commit),
    route("GET", "projects/:project/repository/branches", repository::list_branches),
    route("GET", "projects/:project/repository/branches/:branch", repository::get_branch),
    route("POST", "projects/:project/repository/branches", repository::branch),
    route("POST", "projects/:project/merge_requests", merge_requests::create),
    route("GET", "projects/:project/merge_requests", merge_requests::list),
    route("GET", "projects/:project/merge_requests/:iid", merge_requests::get),
    route("PUT", "projects/:project/merge_requests/:iid/merge", merge_requests::merge),
    route("POST", "projects/:project/ci/lint", pipelines::lint_content),
    route("GET", "projects/:project/ci/lint", pipelines::lint_ref),
    route("POST", "projects/:project/pipeline", pipelines::create),
    route("GET", "projects/:project/pipelines", pipelines::list),
    route("GET", "projects/:project/pipelines/:id", pipelines::get),
    route("GET", "projects/:project/pipelines/:id/jobs", pipelines::jobs),
    route("GET", "projects/:project/jobs/:id", pipelines::job),
    route("POST", "projects/:project/jobs/:id/play", pipelines::play),
];

/// Finds the route for a request and runs it; GitLab's 404 for an unknown route.
pub(super) fn dispatch(state: &mut GitLabState, req: &Request) -> R {
    let Some(rest) = req.path.strip_prefix("/api/v4") else { return msg(404, "404 Not Found") };
    let seg: Vec<String> = rest.trim_matches('/').split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
    for r in ROUTES {
        if r.method != "*" && r.method != req.method {
            continue;
        }
        let pattern: Vec<&str> = r.pattern.split('/').collect();
        let Some((captures, tail)) = matches(&pattern, &seg) else { continue };
        let mut ctx = Ctx { req, p: Params::new(req), project: 0, group: 0, args: vec![], rest: tail };
        for (name, value) in captures {
            match name {
                "project" => match state.project_index(&value) {
                    Some(i) => ctx.project = i,
                    None => return not_found("Project"),
                },
                "group" => match state.group_index(&value) {
                    Some(i) => ctx.group = i,
                    None => return not_found("Group"),
                },
                _ => ctx.args.push(value),
            }
        }
        return (r.handler)(state, &ctx);
    }
    // Grape's answer for a route it does not have.
    Reply::json(404, json!({"error": "404 Not Found"}))
}

/// What a route pattern matched: its named captures, and the `*` tail.
type Matched<'p> = (Vec<(&'p str, String)>, Vec<String>);

/// The captures and the `*` tail when `pattern` matches `seg`.
fn matches<'p>(pattern: &[&'p str], seg: &[String]) -> Option<Matched<'p>> {
    let mut captures = Vec::new();
    for (i, p) in pattern.iter().enumerate() {
        if *p == "*" {
            return Some((captures, seg[i.min(seg.len())..].to_vec()));
        }
        let s = seg.get(i)?;
        match p.strip_prefix(':') {
            Some(name) => captures.push((name, s.clone())),
            None if *p == s => {}
            None => return None,
        }
    }
    (pattern.len() == seg.len()).then_some((captures, vec![]))
}

/// `GET /api/v4/version`
pub(super) fn version(_s: &mut GitLabState, _c: &Ctx) -> R {
    Reply::json(
        200,
        json!({"version": "17.11.2-ee", "revision": "a1b2c3d4e5f", "kas": {"enabled": false, "externalUrl": null, "version": null}, "enterprise": true}),
    )
}

/// `GET /api/v4/user`
pub(super) fn current_user(s: &mut GitLabState, _c: &Ctx) -> R {
    Reply::json(200, s.user())
}

/// `PUT /api/v4/projects/:project`: the settings archshift's tests change (`ci_config_path`,
/// `description`); Maintainer, as GitLab's `admin_project`. Like the real endpoint it
/// refuses a call that names none of the parameters it knows.
pub(super) fn edit_project(s: &mut GitLabState, c: &Ctx) -> R {
    if !s.may(MAINTAINER) {
        return msg(403, "403 Forbidden");
    }
    let known = ["ci_config_path", "description"];
    if !known.iter().any(|k| c.p.get(k).is_some()) {
        return Reply::json(
            400,
            json!({"error": format!("{} are missing, at least one parameter must be provided", known.join(", "))}),
        );
    }
    if let Some(path) = c.p.get("ci_config_path") {
        s.projects[c.project].ci_config_path = (!path.is_empty()).then(|| path.clone());
    }
    Reply::json(200, s.project_json(&s.projects[c.project]))
}

/// `GET /api/v4/{groups,projects}/:id/members/all/:user_id`: the user's effective membership,
/// inherited ones included; 404 for anyone who is not a member.
pub(super) fn member(s: &mut GitLabState, c: &Ctx) -> R {
    let me = s.user_basic_entity();
    if c.args[0] != me.id.to_string() {
        return record_not_found();
    }
    let mut json = entities::to_json(&me);
    json["access_level"] = json!(s.access_level());
    json["created_at"] = json!("2026-01-05T09:00:00.000Z");
    json["expires_at"] = Value::Null;
    json["membership_state"] = json!("active");
    Reply::json(200, json)
}

/// `GET /api/v4/projects`
pub(super) fn list_projects(s: &mut GitLabState, c: &Ctx) -> R {
    let items: Vec<&Project> = s
        .projects
        .iter()
        .filter(|p| c.p.get("search").is_none_or(|q| p.path_with_namespace.contains(q.as_str())))
        .collect();
    // /projects offers keyset pagination by id.
    if wants_keyset(c.req) {
        return keyset_by_id(c.req, &s.base_url, items.into_iter().map(|p| (p.id, s.project_json(p))).collect());
    }
    paginate(c.req, &s.base_url, items.into_iter().map(|p| s.project_json(p)).collect())
}

/// `GET /api/v4/projects/:project`
pub(super) fn get_project(s: &mut GitLabState, c: &Ctx) -> R {
    Reply::json(200, s.project_json(&s.projects[c.project]))
}

/// `GET /api/v4/groups`
pub(super) fn list_groups(s: &mut GitLabState, c: &Ctx) -> R {
    paginate(c.req, &s.base_url, s.groups.iter().map(|g| s.group_json(g)).collect())
}

/// `GET /api/v4/groups/:group`
pub(super) fn get_group(s: &mut GitLabState, c: &Ctx) -> R {
    Reply::json(200, s.group_json(&s.groups[c.group]))
}

/// `GET /api/v4/groups/:group/projects`
pub(super) fn list_group_projects(s: &mut GitLabState, c: &Ctx) -> R {
    let gid = s.groups[c.group].id;
    let sub = c.p.get("include_subgroups").is_some_and(|v| v == "true");
    let items: Vec<Value> = s
        .projects
        .iter()
        .filter(|p| p.namespace_id == gid || (sub && s.group_chain(p.namespace_id).contains(&gid)))
        .map(|p| s.project_json(p))
        .collect();
    paginate(c.req, &s.base_url, items)
}
