//! A simulated GitLab REST API v4: projects and groups, runners and their managers, CI/CD
//! variables, repository files and commits, branches, merge requests, CI lint, pipelines and
//! jobs, with GitLab's pagination headers, status codes and error bodies.

pub mod ci;
pub mod repo;

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::http::{Answer, AnswerBody, HttpRequest, percent_decode};
use repo::{Repo, blob_id};

pub fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[derive(Debug, Clone)]
pub struct Group {
    pub id: u64,
    pub name: String,
    pub path: String,
    pub full_path: String,
    pub parent_id: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Project {
    pub id: u64,
    pub name: String,
    pub path: String,
    pub namespace_id: u64,
    pub path_with_namespace: String,
    pub default_branch: String,
    pub repo: Repo,
}

#[derive(Debug, Clone)]
pub struct Manager {
    pub id: u64,
    pub system_id: String,
    pub version: String,
    pub platform: String,
    pub architecture: String,
    pub created_at: String,
    pub contacted_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Runner {
    pub id: u64,
    pub description: String,
    pub runner_type: String,
    pub group_id: Option<u64>,
    pub project_ids: Vec<u64>,
    pub tag_list: Vec<String>,
    pub run_untagged: bool,
    pub locked: bool,
    pub paused: bool,
    pub access_level: String,
    pub maximum_timeout: Option<u64>,
    pub maintenance_note: Option<String>,
    /// The `glrt-` authentication token; never in an answer after creation.
    pub token: String,
    pub created_at: String,
    pub managers: Vec<Manager>,
    /// Where its job pods go (set by the simulated runner manager; not part of the API).
    pub job_node_selector: Option<BTreeMap<String, String>>,
}

impl Runner {
    pub fn contacted_at(&self) -> Option<DateTime<Utc>> {
        self.managers.iter().map(|m| m.contacted_at).max()
    }

    /// GitLab's `online`: contacted within the last two hours; `None` when never contacted.
    pub fn online(&self) -> Option<bool> {
        self.contacted_at().map(|t| Utc::now() - t < chrono::Duration::hours(2))
    }

    pub fn status(&self) -> &'static str {
        match self.online() {
            None => "never_contacted",
            Some(_) if self.paused => "paused",
            Some(true) => "online",
            Some(false) => "offline",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Variable {
    pub key: String,
    pub value: String,
    pub variable_type: String,
    pub protected: bool,
    pub masked: bool,
    pub hidden: bool,
    pub raw: bool,
    pub environment_scope: String,
    pub description: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub id: u64,
    pub iid: u64,
    pub project_id: u64,
    pub sha: String,
    pub r#ref: String,
    pub status: String,
    pub source: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: u64,
    pub pipeline_id: u64,
    pub project_id: u64,
    pub name: String,
    pub stage: String,
    pub status: String,
    /// Expanded, sorted.
    pub tag_list: Vec<String>,
    pub runner_id: Option<u64>,
    pub manager_id: Option<u64>,
    pub created_at: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<String>,
    pub r#ref: String,
    pub failure_reason: Option<String>,
    pub protected_ref: bool,
}

#[derive(Debug, Clone)]
pub struct MergeRequest {
    pub id: u64,
    pub iid: u64,
    pub project_id: u64,
    pub title: String,
    pub description: String,
    pub source_branch: String,
    pub target_branch: String,
    pub state: String,
    pub created_at: String,
    pub merged_at: Option<String>,
}

pub struct GitLabState {
    pub base_url: String,
    pub groups: Vec<Group>,
    pub projects: Vec<Project>,
    pub runners: Vec<Runner>,
    pub project_vars: HashMap<u64, Vec<Variable>>,
    pub group_vars: HashMap<u64, Vec<Variable>>,
    pub pipelines: Vec<Pipeline>,
    pub jobs: Vec<Job>,
    pub merge_requests: Vec<MergeRequest>,
    next_id: u64,
}

type R = Answer;

fn msg(code: u16, message: &str) -> R {
    Answer::json(code, json!({"message": message}))
}

fn not_found(what: &str) -> R {
    msg(404, &format!("404 {what} Not Found"))
}

fn missing(param: &str) -> R {
    Answer::json(400, json!({"error": format!("{param} is missing")}))
}

fn bad(reason: &str) -> R {
    msg(400, &format!("400 Bad request - {reason}"))
}

impl Default for GitLabState {
    fn default() -> Self {
        Self::new("http://127.0.0.1")
    }
}

impl GitLabState {
    pub fn new(base_url: &str) -> Self {
        GitLabState {
            base_url: base_url.trim_end_matches('/').to_string(),
            groups: vec![],
            projects: vec![],
            runners: vec![],
            project_vars: HashMap::new(),
            group_vars: HashMap::new(),
            pipelines: vec![],
            jobs: vec![],
            merge_requests: vec![],
            next_id: 100,
        }
    }

    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn new_runner_token() -> String {
        let chars: String = std::iter::repeat_with(fastrand::alphanumeric).take(20).collect();
        format!("glrt-{chars}")
    }

    pub fn add_group(&mut self, path: &str, parent: Option<u64>) -> u64 {
        let id = self.next_id();
        let full_path = match parent.and_then(|p| self.groups.iter().find(|g| g.id == p)) {
            Some(pg) => format!("{}/{path}", pg.full_path),
            None => path.to_string(),
        };
        self.groups.push(Group { id, name: path.to_string(), path: path.to_string(), full_path, parent_id: parent });
        id
    }

    pub fn add_project(&mut self, group_id: u64, path: &str, files: BTreeMap<String, Vec<u8>>) -> u64 {
        let id = self.next_id();
        let g = self.groups.iter().find(|g| g.id == group_id).map(|g| g.full_path.clone()).unwrap_or_default();
        self.projects.push(Project {
            id,
            name: path.into(),
            path: path.into(),
            namespace_id: group_id,
            path_with_namespace: format!("{g}/{path}"),
            default_branch: "main".into(),
            repo: Repo::init("main", files, &now()),
        });
        id
    }

    fn project_index(&self, id_or_path: &str) -> Option<usize> {
        let decoded = percent_decode(id_or_path);
        match decoded.parse::<u64>() {
            Ok(id) => self.projects.iter().position(|p| p.id == id),
            Err(_) => self.projects.iter().position(|p| p.path_with_namespace == decoded),
        }
    }

    fn group_index(&self, id_or_path: &str) -> Option<usize> {
        let decoded = percent_decode(id_or_path);
        match decoded.parse::<u64>() {
            Ok(id) => self.groups.iter().position(|g| g.id == id),
            Err(_) => self.groups.iter().position(|g| g.full_path == decoded),
        }
    }

    /// The group and its ancestors.
    fn group_chain(&self, id: u64) -> Vec<u64> {
        let mut out = vec![];
        let mut cur = Some(id);
        while let Some(c) = cur {
            out.push(c);
            cur = self.groups.iter().find(|g| g.id == c).and_then(|g| g.parent_id);
        }
        out
    }

    /// Whether `runner` may take jobs of `project`.
    pub fn runner_serves(&self, runner: &Runner, project_id: u64) -> bool {
        match runner.runner_type.as_str() {
            "instance_type" => true,
            "group_type" => {
                let ns = self.projects.iter().find(|p| p.id == project_id).map(|p| p.namespace_id);
                ns.is_some_and(|ns| runner.group_id.is_some_and(|g| self.group_chain(ns).contains(&g)))
            }
            _ => runner.project_ids.contains(&project_id),
        }
    }

    /// Variables visible to a project's jobs (group ones from the top down, then the project's).
    pub fn variables_for(&self, project_id: u64, protected_ref: bool) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Some(p) = self.projects.iter().find(|p| p.id == project_id) {
            let mut chain = self.group_chain(p.namespace_id);
            chain.reverse();
            for g in chain {
                for v in self.group_vars.get(&g).into_iter().flatten() {
                    if (!v.protected || protected_ref) && (v.environment_scope == "*") {
                        out.insert(v.key.clone(), v.value.clone());
                    }
                }
            }
            for v in self.project_vars.get(&project_id).into_iter().flatten() {
                if (!v.protected || protected_ref) && v.environment_scope == "*" {
                    out.insert(v.key.clone(), v.value.clone());
                }
            }
            out.insert("CI_PROJECT_PATH".into(), p.path_with_namespace.clone());
            out.insert("CI_PROJECT_ID".into(), p.id.to_string());
            out.insert("CI_DEFAULT_BRANCH".into(), p.default_branch.clone());
        }
        out
    }

    /// Serves one request to `/api/v4/...`.
    pub fn handle(&mut self, req: &HttpRequest) -> R {
        let Some(rest) = req.path.strip_prefix("/api/v4") else { return msg(404, "404 Not Found") };
        let seg: Vec<&str> = rest.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
        let m = req.method.as_str();
        let body = Params::new(req);
        match (m, seg.as_slice()) {
            ("GET", ["version"]) => Answer::json(
                200,
                json!({"version": "17.11.2-ee", "revision": "a1b2c3d4e5f", "kas": {"enabled": false, "externalUrl": null, "version": null}, "enterprise": true}),
            ),
            ("GET", ["user"]) => Answer::json(200, self.user()),
            ("GET", ["projects"]) => {
                let items: Vec<Value> = self
                    .projects
                    .iter()
                    .filter(|p| body.get("search").is_none_or(|s| p.path_with_namespace.contains(s.as_str())))
                    .map(|p| self.project_json(p))
                    .collect();
                paginate(req, &self.base_url, items)
            }
            ("GET", ["projects", id]) => match self.project_index(id) {
                Some(i) => Answer::json(200, self.project_json(&self.projects[i])),
                None => not_found("Project"),
            },
            ("GET", ["groups"]) => {
                let items: Vec<Value> = self.groups.iter().map(|g| self.group_json(g)).collect();
                paginate(req, &self.base_url, items)
            }
            ("GET", ["groups", id]) => match self.group_index(id) {
                Some(i) => Answer::json(200, self.group_json(&self.groups[i])),
                None => not_found("Group"),
            },
            ("GET", ["groups", id, "projects"]) => {
                let Some(gi) = self.group_index(id) else { return not_found("Group") };
                let gid = self.groups[gi].id;
                let sub = body.get("include_subgroups").is_some_and(|v| v == "true");
                let items: Vec<Value> = self
                    .projects
                    .iter()
                    .filter(|p| p.namespace_id == gid || (sub && self.group_chain(p.namespace_id).contains(&gid)))
                    .map(|p| self.project_json(p))
                    .collect();
                paginate(req, &self.base_url, items)
            }
            // Runners.
            ("GET", ["runners"]) | ("GET", ["runners", "all"]) => {
                let items = self.filter_runners(self.runners.iter().collect(), &body);
                match items {
                    Ok(items) => paginate(req, &self.base_url, items),
                    Err(r) => r,
                }
            }
            ("POST", ["runners"]) => Answer::json(410, json!({"message": "410 Gone - runner registration disallowed"})),
            ("POST", ["runners", "verify"]) => {
                let Some(token) = body.get("token") else { return missing("token") };
                if self.runners.iter().any(|r| r.token == *token) {
                    Answer::json(
                        200,
                        json!({"id": self.runners.iter().find(|r| r.token == *token).map(|r| r.id), "token": token, "token_expires_at": null}),
                    )
                } else {
                    msg(403, "403 Forbidden")
                }
            }
            ("POST", ["user", "runners"]) => self.create_runner(&body),
            ("GET", ["runners", id]) => self.with_runner(id, |s, r| Answer::json(200, s.runner_detail(r, &body))),
            ("GET", ["runners", id, "managers"]) => self
                .with_runner(id, |_, r| Answer::json(200, Value::Array(r.managers.iter().map(manager_json).collect()))),
            ("GET", ["runners", id, "jobs"]) => {
                let Ok(rid) = id.parse::<u64>() else { return not_found("Runner") };
                if !self.runners.iter().any(|r| r.id == rid) {
                    return not_found("Runner");
                }
                let items: Vec<Value> = self
                    .jobs
                    .iter()
                    .filter(|j| j.runner_id == Some(rid))
                    .filter(|j| body.get("status").is_none_or(|s| *s == j.status))
                    .map(|j| self.job_json(j))
                    .collect();
                paginate(req, &self.base_url, items)
            }
            ("PUT", ["runners", id]) => self.update_runner(id, &body),
            ("DELETE", ["runners", id]) => {
                let Ok(rid) = id.parse::<u64>() else { return not_found("Runner") };
                let before = self.runners.len();
                self.runners.retain(|r| r.id != rid);
                if self.runners.len() == before {
                    not_found("Runner")
                } else {
                    Answer { code: 204, body: AnswerBody::Empty, headers: vec![] }
                }
            }
            ("POST", ["runners", id, "reset_authentication_token"]) => {
                let Ok(rid) = id.parse::<u64>() else { return not_found("Runner") };
                let Some(r) = self.runners.iter_mut().find(|r| r.id == rid) else { return not_found("Runner") };
                r.token = Self::new_runner_token();
                Answer::json(201, json!({"token": r.token, "token_expires_at": null}))
            }
            ("GET", ["projects", id, "runners"]) => {
                let Some(pi) = self.project_index(id) else { return not_found("Project") };
                let pid = self.projects[pi].id;
                let rs: Vec<&Runner> = self.runners.iter().filter(|r| self.runner_serves(r, pid)).collect();
                match self.filter_runners(rs, &body) {
                    Ok(items) => paginate(req, &self.base_url, items),
                    Err(r) => r,
                }
            }
            ("GET", ["groups", id, "runners"]) => {
                let Some(gi) = self.group_index(id) else { return not_found("Group") };
                let chain = self.group_chain(self.groups[gi].id);
                let rs: Vec<&Runner> = self
                    .runners
                    .iter()
                    .filter(|r| {
                        r.runner_type == "instance_type"
                            || (r.runner_type == "group_type" && r.group_id.is_some_and(|g| chain.contains(&g)))
                    })
                    .collect();
                match self.filter_runners(rs, &body) {
                    Ok(items) => paginate(req, &self.base_url, items),
                    Err(r) => r,
                }
            }
            // Variables.
            (_, ["projects", id, "variables", rest @ ..]) => {
                let Some(pi) = self.project_index(id) else { return not_found("Project") };
                let pid = self.projects[pi].id;
                let vars = self.project_vars.entry(pid).or_default();
                variables(m, rest, &body, vars, "Variable", req, &self.base_url.clone())
            }
            (_, ["groups", id, "variables", rest @ ..]) => {
                let Some(gi) = self.group_index(id) else { return not_found("Group") };
                let gid = self.groups[gi].id;
                let vars = self.group_vars.entry(gid).or_default();
                variables(m, rest, &body, vars, "GroupVariable", req, &self.base_url.clone())
            }
            // Repository.
            (_, ["projects", id, "repository", "files", path, rest @ ..]) => {
                let Some(pi) = self.project_index(id) else { return not_found("Project") };
                self.files(pi, m, &percent_decode(path), rest, &body)
            }
            ("POST", ["projects", id, "repository", "commits"]) => {
                let Some(pi) = self.project_index(id) else { return not_found("Project") };
                self.create_commit(pi, &body)
            }
            ("GET", ["projects", id, "repository", "commits", sha]) => {
                let Some(pi) = self.project_index(id) else { return not_found("Project") };
                match self.projects[pi].repo.resolve(&percent_decode(sha)) {
                    Some(c) => {
                        Answer::json(200, commit_json(c, &self.base_url, &self.projects[pi].path_with_namespace))
                    }
                    None => not_found("Commit"),
                }
            }
            ("GET", ["projects", id, "repository", "branches"]) => {
                let Some(pi) = self.project_index(id) else { return not_found("Project") };
                let p = &self.projects[pi];
                let items: Vec<Value> = p.repo.branches.keys().map(|b| branch_json(p, b, &self.base_url)).collect();
                paginate(req, &self.base_url, items)
            }
            ("GET", ["projects", id, "repository", "branches", name]) => {
                let Some(pi) = self.project_index(id) else { return not_found("Project") };
                let p = &self.projects[pi];
                let name = percent_decode(name);
                if p.repo.branches.contains_key(&name) {
                    Answer::json(200, branch_json(p, &name, &self.base_url))
                } else {
                    not_found("Branch")
                }
            }
            ("POST", ["projects", id, "repository", "branches"]) => {
                let Some(pi) = self.project_index(id) else { return not_found("Project") };
                let (Some(branch), Some(r)) = (body.get("branch"), body.get("ref")) else {
                    return missing(if body.get("branch").is_none() { "branch" } else { "ref" });
                };
                let p = &mut self.projects[pi];
                if p.repo.branches.contains_key(branch) {
                    return msg(400, "Branch already exists");
                }
                let Some(c) = p.repo.resolve(r).map(|c| c.id.clone()) else {
                    return msg(400, "Invalid reference name: ".to_string().as_str());
                };
                p.repo.branches.insert(branch.clone(), c);
                Answer::json(201, branch_json(p, branch, &self.base_url))
            }
            // Merge requests.
            ("POST", ["projects", id, "merge_requests"]) => {
                let Some(pi) = self.project_index(id) else { return not_found("Project") };
                self.create_mr(pi, &body)
            }
            ("GET", ["projects", id, "merge_requests"]) => {
                let Some(pi) = self.project_index(id) else { return not_found("Project") };
                let pid = self.projects[pi].id;
                let items: Vec<Value> = self
                    .merge_requests
                    .iter()
                    .filter(|mr| mr.project_id == pid)
                    .filter(|mr| body.get("state").is_none_or(|s| s == "all" || *s == mr.state))
                    .filter(|mr| body.get("source_branch").is_none_or(|s| *s == mr.source_branch))
                    .filter(|mr| body.get("target_branch").is_none_or(|s| *s == mr.target_branch))
                    .map(|mr| self.mr_json(mr))
                    .collect();
                paginate(req, &self.base_url, items)
            }
            ("GET", ["projects", id, "merge_requests", iid]) => {
                let Some(pi) = self.project_index(id) else { return not_found("Project") };
                let pid = self.projects[pi].id;
                match self.merge_requests.iter().find(|mr| mr.project_id == pid && iid.parse() == Ok(mr.iid)) {
                    Some(mr) => Answer::json(200, self.mr_json(mr)),
                    None => not_found(""),
                }
            }
            ("PUT", ["projects", id, "merge_requests", iid, "merge"]) => {
                let Some(pi) = self.project_index(id) else { return not_found("Project") };
                self.merge_mr(pi, iid, &body)
            }
            // CI.
            ("POST", ["projects", id, "ci", "lint"]) => {
                let Some(pi) = self.project_index(id) else { return not_found("Project") };
                let Some(content) = body.get("content").cloned() else { return missing("content") };
                self.lint(pi, &content, &body)
            }
            ("GET", ["projects", id, "ci", "lint"]) => {
                let Some(pi) = self.project_index(id) else { return not_found("Project") };
                let p = &self.projects[pi];
                let r = body.get("content_ref").or(body.get("sha")).cloned().unwrap_or(p.default_branch.clone());
                let Some(content) = p
                    .repo
                    .resolve(&r)
                    .and_then(|c| c.files.get(".gitlab-ci.yml"))
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                else {
                    return not_found("File");
                };
                self.lint(pi, &content, &body)
            }
            ("POST", ["projects", id, "pipeline"]) => {
                let Some(pi) = self.project_index(id) else { return not_found("Project") };
                let Some(r) = body.get("ref").cloned() else { return missing("ref") };
                self.create_pipeline(pi, &r, &body)
            }
            ("GET", ["projects", id, "pipelines"]) => {
                let Some(pi) = self.project_index(id) else { return not_found("Project") };
                let pid = self.projects[pi].id;
                let mut items: Vec<Value> = self
                    .pipelines
                    .iter()
                    .filter(|p| {
                        p.project_id == pid
                            && body.get("ref").is_none_or(|r| *r == p.r#ref)
                            && body.get("status").is_none_or(|s| *s == p.status)
                    })
                    .map(|p| self.pipeline_json(p))
                    .collect();
                items.reverse();
                paginate(req, &self.base_url, items)
            }
            ("GET", ["projects", id, "pipelines", pid]) => {
                let Some(pi) = self.project_index(id) else { return not_found("Project") };
                let proj = self.projects[pi].id;
                match self.pipelines.iter().find(|p| p.project_id == proj && pid.parse() == Ok(p.id)) {
                    Some(p) => Answer::json(200, self.pipeline_json(p)),
                    None => not_found(""),
                }
            }
            ("GET", ["projects", id, "pipelines", pid, "jobs"]) => {
                let Some(pi) = self.project_index(id) else { return not_found("Project") };
                let proj = self.projects[pi].id;
                let Ok(pid) = pid.parse::<u64>() else { return not_found("") };
                if !self.pipelines.iter().any(|p| p.id == pid && p.project_id == proj) {
                    return not_found("");
                }
                let scopes: Vec<&String> =
                    req.query_all.iter().filter(|(k, _)| k == "scope[]" || k == "scope").map(|(_, v)| v).collect();
                let items: Vec<Value> = self
                    .jobs
                    .iter()
                    .filter(|j| j.pipeline_id == pid && (scopes.is_empty() || scopes.contains(&&j.status)))
                    .map(|j| self.job_json(j))
                    .collect();
                paginate(req, &self.base_url, items)
            }
            ("GET", ["projects", id, "jobs", jid]) => {
                let Some(pi) = self.project_index(id) else { return not_found("Project") };
                let proj = self.projects[pi].id;
                match self.jobs.iter().find(|j| j.project_id == proj && jid.parse() == Ok(j.id)) {
                    Some(j) => Answer::json(200, self.job_json(j)),
                    None => not_found(""),
                }
            }
            _ => msg(404, "404 Not Found"),
        }
    }

    fn user(&self) -> Value {
        json!({"id": 1, "username": "root", "name": "Administrator", "state": "active", "locked": false,
               "avatar_url": format!("{}/uploads/-/system/user/avatar/1/avatar.png", self.base_url),
               "web_url": format!("{}/root", self.base_url), "is_admin": true, "email": "admin@sandbox.test"})
    }

    fn project_json(&self, p: &Project) -> Value {
        let g = self.groups.iter().find(|g| g.id == p.namespace_id);
        json!({"id": p.id, "name": p.name, "path": p.path, "path_with_namespace": p.path_with_namespace,
               "name_with_namespace": p.path_with_namespace.replace('/', " / "),
               "default_branch": p.default_branch, "visibility": "private",
               "web_url": format!("{}/{}", self.base_url, p.path_with_namespace),
               "http_url_to_repo": format!("{}/{}.git", self.base_url, p.path_with_namespace),
               "namespace": g.map(|g| json!({"id": g.id, "name": g.name, "path": g.path, "kind": "group", "full_path": g.full_path, "parent_id": g.parent_id})),
               "archived": false, "shared_runners_enabled": true, "created_at": "2025-01-01T00:00:00.000Z"})
    }

    fn group_json(&self, g: &Group) -> Value {
        json!({"id": g.id, "name": g.name, "path": g.path, "full_path": g.full_path, "full_name": g.full_path.replace('/', " / "),
               "parent_id": g.parent_id, "visibility": "private", "web_url": format!("{}/groups/{}", self.base_url, g.full_path)})
    }

    fn runner_list_item(&self, r: &Runner) -> Value {
        json!({"id": r.id, "description": r.description, "ip_address": null, "active": !r.paused, "paused": r.paused,
               "is_shared": r.runner_type == "instance_type", "runner_type": r.runner_type, "name": "gitlab-runner",
               "online": r.online(), "created_by": self.user_basic(), "created_at": r.created_at,
               "status": r.status(), "job_execution_status": self.execution_status(r)})
    }

    fn user_basic(&self) -> Value {
        json!({"id": 1, "username": "root", "name": "Administrator", "state": "active", "locked": false,
               "avatar_url": format!("{}/uploads/-/system/user/avatar/1/avatar.png", self.base_url), "web_url": format!("{}/root", self.base_url)})
    }

    fn execution_status(&self, r: &Runner) -> &'static str {
        if self.jobs.iter().any(|j| j.runner_id == Some(r.id) && j.status == "running") { "active" } else { "idle" }
    }

    fn runner_detail(&self, r: &Runner, params: &Params) -> Value {
        let last = r.managers.iter().max_by_key(|m| m.contacted_at);
        let mut v = self.runner_list_item(r);
        let extra = json!({"tag_list": r.tag_list, "run_untagged": r.run_untagged, "locked": r.locked,
                           "maximum_timeout": r.maximum_timeout, "access_level": r.access_level,
                           "version": last.map(|m| m.version.clone()), "revision": last.map(|_| "5a021a1c"),
                           "platform": last.map(|m| m.platform.clone()), "architecture": last.map(|m| m.architecture.clone()),
                           "contacted_at": r.contacted_at().map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
                           "maintenance_note": r.maintenance_note});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in e {
                o.insert(k.clone(), x.clone());
            }
        }
        if params.get("include_projects").is_none_or(|x| x != "false") {
            let projects: Vec<Value> = self
                .projects
                .iter()
                .filter(|p| r.runner_type == "project_type" && r.project_ids.contains(&p.id))
                .map(|p| json!({"id": p.id, "name": p.name, "name_with_namespace": p.path_with_namespace.replace('/', " / "), "path": p.path, "path_with_namespace": p.path_with_namespace}))
                .collect();
            v["projects"] = json!(projects);
        }
        let groups: Vec<Value> = self
            .groups
            .iter()
            .filter(|g| r.group_id == Some(g.id))
            .map(
                |g| json!({"id": g.id, "web_url": format!("{}/groups/{}", self.base_url, g.full_path), "name": g.name}),
            )
            .collect();
        v["groups"] = json!(groups);
        v
    }

    fn filter_runners(&self, rs: Vec<&Runner>, p: &Params) -> Result<Vec<Value>, R> {
        let wanted_tags: Vec<String> = p
            .get("tag_list")
            .map(|t| t.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        if let Some(t) = p.get("type")
            && !["instance_type", "group_type", "project_type"].contains(&t.as_str())
        {
            return Err(Answer::json(400, json!({"error": "type does not have a valid value"})));
        }
        if let Some(s) = p.get("status")
            && !["online", "offline", "stale", "never_contacted", "active", "paused"].contains(&s.as_str())
        {
            return Err(Answer::json(400, json!({"error": "status does not have a valid value"})));
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

    fn with_runner(&self, id: &str, f: impl FnOnce(&Self, &Runner) -> R) -> R {
        match id.parse::<u64>().ok().and_then(|id| self.runners.iter().find(|r| r.id == id)) {
            Some(r) => f(self, r),
            None => not_found("Runner"),
        }
    }

    fn create_runner(&mut self, p: &Params) -> R {
        let Some(rtype) = p.get("runner_type").cloned() else { return missing("runner_type") };
        let (group_id, project_ids) = match rtype.as_str() {
            "instance_type" => (None, vec![]),
            "group_type" => {
                let Some(gid) = p.get("group_id") else { return bad("group_id is missing") };
                match self.group_index(gid) {
                    Some(i) => (Some(self.groups[i].id), vec![]),
                    None => return msg(403, "403 Forbidden - User is not allowed to create a runner"),
                }
            }
            "project_type" => {
                let Some(pid) = p.get("project_id") else { return bad("project_id is missing") };
                match self.project_index(pid) {
                    Some(i) => (None, vec![self.projects[i].id]),
                    None => return msg(403, "403 Forbidden - User is not allowed to create a runner"),
                }
            }
            _ => return Answer::json(400, json!({"error": "runner_type does not have a valid value"})),
        };
        let tags = p.list("tag_list");
        let run_untagged = p.get("run_untagged").is_none_or(|v| v == "true");
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
            locked: p.get("locked").is_some_and(|v| v == "true"),
            paused: p.get("paused").is_some_and(|v| v == "true"),
            access_level: p.get("access_level").cloned().unwrap_or("not_protected".into()),
            maximum_timeout,
            maintenance_note: p.get("maintenance_note").cloned(),
            token: token.clone(),
            created_at: now(),
            managers: vec![],
            job_node_selector: None,
        });
        Answer::json(201, json!({"id": id, "token": token, "token_expires_at": null}))
    }

    fn update_runner(&mut self, id: &str, p: &Params) -> R {
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
                return Answer::json(400, json!({"error": "access_level does not have a valid value"}));
            }
            r.access_level = v.clone();
        }
        if let Some(v) = p.get("maximum_timeout") {
            match v.parse::<u64>() {
                Ok(t) if t >= 600 => r.maximum_timeout = Some(t),
                _ => {
                    return Answer::json(
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
            return Answer::json(
                400,
                json!({"message": {"tags_list": ["can not be empty when runner is not allowed to pick untagged jobs"]}}),
            );
        }
        self.runners[idx] = r;
        let r = &self.runners[idx];
        Answer::json(200, self.runner_detail(r, p))
    }

    fn files(&mut self, pi: usize, method: &str, path: &str, rest: &[&str], p: &Params) -> R {
        let raw = rest == ["raw"];
        if !rest.is_empty() && !raw {
            return msg(404, "404 Not Found");
        }
        match method {
            "GET" | "HEAD" => {
                let proj = &self.projects[pi];
                let r = p.get("ref").cloned().unwrap_or_else(|| proj.default_branch.clone());
                if !raw && p.get("ref").is_none() {
                    return missing("ref");
                }
                let Some(commit) = proj.repo.resolve(&r) else { return not_found("Commit") };
                let Some(content) = commit.files.get(path) else { return not_found("File") };
                let last = proj.repo.last_commit_for(&commit.id, path).unwrap_or_default();
                let sha256 = repo::hex(&Sha256::digest(content));
                let headers = vec![
                    ("X-Gitlab-Blob-Id".into(), blob_id(content)),
                    ("X-Gitlab-Commit-Id".into(), commit.id.clone()),
                    ("X-Gitlab-Content-Sha256".into(), sha256.clone()),
                    ("X-Gitlab-Encoding".into(), "base64".into()),
                    ("X-Gitlab-File-Name".into(), path.rsplit('/').next().unwrap_or(path).into()),
                    ("X-Gitlab-File-Path".into(), path.into()),
                    ("X-Gitlab-Last-Commit-Id".into(), last.clone()),
                    ("X-Gitlab-Ref".into(), r.clone()),
                    ("X-Gitlab-Size".into(), content.len().to_string()),
                    ("X-Gitlab-Execute-Filemode".into(), "false".into()),
                ];
                if method == "HEAD" {
                    return Answer { code: 200, body: AnswerBody::Empty, headers };
                }
                if raw {
                    return Answer {
                        code: 200,
                        body: AnswerBody::Raw(content.clone(), "text/plain; charset=utf-8"),
                        headers,
                    };
                }
                let body = json!({"file_name": path.rsplit('/').next().unwrap_or(path), "file_path": path, "size": content.len(),
                                  "encoding": "base64", "content": base64::engine::general_purpose::STANDARD.encode(content),
                                  "content_sha256": sha256, "ref": r, "blob_id": blob_id(content), "commit_id": commit.id,
                                  "last_commit_id": last, "execute_filemode": false});
                Answer { code: 200, body: AnswerBody::Json(body), headers }
            }
            "POST" | "PUT" | "DELETE" => {
                for req in ["branch", "commit_message"] {
                    if p.get(req).is_none() {
                        return missing(req);
                    }
                }
                if method != "DELETE" && p.get("content").is_none() {
                    return missing("content");
                }
                let action = match method {
                    "POST" => "create",
                    "PUT" => "update",
                    _ => "delete",
                };
                let mut a = json!({"action": action, "file_path": path});
                for k in ["content", "encoding", "last_commit_id"] {
                    if let Some(v) = p.get(k) {
                        a[k] = json!(v);
                    }
                }
                match self.commit_actions(pi, p, &[a], true) {
                    Ok(_) if method == "DELETE" => Answer { code: 204, body: AnswerBody::Empty, headers: vec![] },
                    Ok(_) => Answer::json(
                        if method == "POST" { 201 } else { 200 },
                        json!({"file_path": path, "branch": p.get("branch")}),
                    ),
                    Err(e) => e,
                }
            }
            _ => msg(405, "405 Method Not Allowed"),
        }
    }

    fn create_commit(&mut self, pi: usize, p: &Params) -> R {
        for req in ["branch", "commit_message", "actions"] {
            if !p.has(req) {
                return missing(req);
            }
        }
        let actions = p.json.get("actions").and_then(Value::as_array).cloned().unwrap_or_default();
        match self.commit_actions(pi, p, &actions, false) {
            Ok(c) => {
                let proj = &self.projects[pi];
                Answer::json(201, commit_json(&c, &self.base_url, &proj.path_with_namespace))
            }
            Err(e) => e,
        }
    }

    fn commit_actions(&mut self, pi: usize, p: &Params, actions: &[Value], files_api: bool) -> Result<repo::Commit, R> {
        let branch = p.get("branch").cloned().unwrap_or_default();
        let start = p.get("start_branch").or(p.get("start_sha")).cloned();
        let force = p.get("force").is_some_and(|f| f == "true");
        let proj = &mut self.projects[pi];
        let exists = proj.repo.branches.contains_key(&branch);
        if exists && start.as_ref().is_some_and(|s| *s != branch) && !force && !files_api {
            return Err(bad(&format!(
                "A branch called '{branch}' already exists. Switch to that branch in order to make changes"
            ))
            .with_plain_message());
        }
        let base_ref = if exists && !force { branch.clone() } else { start.clone().unwrap_or(branch.clone()) };
        let Some(base) = proj.repo.resolve(&base_ref).cloned() else {
            return Err(if exists || start.is_some() {
                msg(400, "Invalid start branch")
            } else {
                msg(400, "You can only create or edit files when you are on a branch")
            });
        };
        let mut files = base.files.clone();
        for a in actions {
            let action = a["action"].as_str().unwrap_or("");
            let Some(path) = a["file_path"].as_str() else {
                return Err(Answer::json(400, json!({"error": "actions[0][file_path] is missing"})));
            };
            let content = match (a["content"].as_str(), a["encoding"].as_str()) {
                (Some(c), Some("base64")) => base64::engine::general_purpose::STANDARD
                    .decode(c)
                    .map_err(|_| bad("content is not valid base64"))?,
                (Some(c), _) => c.as_bytes().to_vec(),
                (None, _) => Vec::new(),
            };
            if let Some(expected) = a["last_commit_id"].as_str()
                && ["update", "delete", "move", "chmod"].contains(&action)
            {
                let actual = proj.repo.last_commit_for(&base.id, path).unwrap_or_default();
                if actual != expected {
                    return Err(msg(
                        400,
                        &if files_api {
                            "You are attempting to update a file that has changed since you started editing it."
                                .to_string()
                        } else {
                            format!("The file has changed since you started editing it: {path}")
                        },
                    ));
                }
            }
            match action {
                "create" => {
                    if files.contains_key(path) {
                        return Err(msg(400, "A file with this name already exists"));
                    }
                    files.insert(path.into(), content);
                }
                "update" => {
                    if !files.contains_key(path) {
                        return Err(msg(400, "A file with this name doesn't exist"));
                    }
                    files.insert(path.into(), content);
                }
                "delete" => {
                    if files.remove(path).is_none() {
                        return Err(msg(400, "A file with this name doesn't exist"));
                    }
                }
                "move" => {
                    let prev = a["previous_path"].as_str().unwrap_or("");
                    let old = files.remove(prev).ok_or_else(|| msg(400, "A file with this name doesn't exist"))?;
                    files.insert(path.into(), if a["content"].is_null() { old } else { content });
                }
                "chmod" => {}
                _ => return Err(Answer::json(400, json!({"error": "actions[0][action] does not have a valid value"}))),
            }
        }
        if !exists || force {
            proj.repo.branches.insert(branch.clone(), base.id.clone());
        }
        let message = p.get("commit_message").cloned().unwrap_or_default();
        let author = (
            p.get("author_name").cloned().unwrap_or("Administrator".into()),
            p.get("author_email").cloned().unwrap_or("admin@sandbox.test".into()),
        );
        proj.repo.commit(&branch, None, files, &message, (&author.0, &author.1), &now()).map_err(|e| msg(400, &e))
    }

    /// A concurrent writer commits to the file first (fault injection).
    pub fn concurrent_edit(&mut self, project: &str, path: &str, branch: &str) {
        let Some(pi) = self.project_index(project) else { return };
        let proj = &mut self.projects[pi];
        let Some(head) = proj.repo.head(branch).cloned() else { return };
        let mut files = head.files.clone();
        if let Some(content) = files.get_mut(path) {
            content.extend_from_slice(b"# concurrent edit\n");
            let _ =
                proj.repo.commit(branch, None, files, "Concurrent edit", ("Someone Else", "else@sandbox.test"), &now());
        }
    }

    fn create_mr(&mut self, pi: usize, p: &Params) -> R {
        for req in ["source_branch", "target_branch", "title"] {
            if p.get(req).is_none() {
                return missing(req);
            }
        }
        let (source, target) =
            (p.get("source_branch").cloned().unwrap_or_default(), p.get("target_branch").cloned().unwrap_or_default());
        let pid = self.projects[pi].id;
        if source == target {
            return Answer::json(422, json!({"message": ["You can't use same project/branch for source and target"]}));
        }
        if !self.projects[pi].repo.branches.contains_key(&source) {
            return Answer::json(400, json!({"message": ["Source branch does not exist"]}));
        }
        if let Some(existing) = self.merge_requests.iter().find(|m| {
            m.project_id == pid && m.state == "opened" && m.source_branch == source && m.target_branch == target
        }) {
            return Answer::json(
                409,
                json!({"message": [format!("Another open merge request already exists for this source branch: !{}", existing.iid)]}),
            );
        }
        let id = self.next_id();
        let iid = self.merge_requests.iter().filter(|m| m.project_id == pid).count() as u64 + 1;
        let mr = MergeRequest {
            id,
            iid,
            project_id: pid,
            title: p.get("title").cloned().unwrap_or_default(),
            description: p.get("description").cloned().unwrap_or_default(),
            source_branch: source,
            target_branch: target,
            state: "opened".into(),
            created_at: now(),
            merged_at: None,
        };
        let j = self.mr_json(&mr);
        self.merge_requests.push(mr);
        Answer::json(201, j)
    }

    fn mr_json(&self, mr: &MergeRequest) -> Value {
        let proj = self.projects.iter().find(|p| p.id == mr.project_id);
        let sha = proj.and_then(|p| p.repo.head(&mr.source_branch)).map(|c| c.id.clone());
        json!({"id": mr.id, "iid": mr.iid, "project_id": mr.project_id, "title": mr.title, "description": mr.description,
               "state": mr.state, "created_at": mr.created_at, "merged_at": mr.merged_at,
               "source_branch": mr.source_branch, "target_branch": mr.target_branch, "sha": sha,
               "merge_status": "can_be_merged", "detailed_merge_status": if mr.state == "opened" { "mergeable" } else { "not_open" },
               "draft": false, "author": self.user_basic(),
               "web_url": format!("{}/{}/-/merge_requests/{}", self.base_url, proj.map(|p| p.path_with_namespace.as_str()).unwrap_or(""), mr.iid)})
    }

    fn merge_mr(&mut self, pi: usize, iid: &str, p: &Params) -> R {
        let pid = self.projects[pi].id;
        let Some(mi) = self.merge_requests.iter().position(|m| m.project_id == pid && iid.parse() == Ok(m.iid)) else {
            return not_found("");
        };
        if self.merge_requests[mi].state != "opened" {
            return msg(405, "405 Method Not Allowed");
        }
        let (source, target) =
            (self.merge_requests[mi].source_branch.clone(), self.merge_requests[mi].target_branch.clone());
        let proj = &mut self.projects[pi];
        let Some(src) = proj.repo.head(&source).cloned() else { return msg(422, "Branch cannot be merged") };
        if let Some(sha) = p.get("sha")
            && *sha != src.id
        {
            return msg(409, &format!("SHA does not match HEAD of source branch: {}", src.id));
        }
        let title = format!("Merge branch '{source}' into '{target}'");
        if proj
            .repo
            .commit(&target, None, src.files.clone(), &title, ("Administrator", "admin@sandbox.test"), &now())
            .is_err()
        {
            return msg(422, "Branch cannot be merged");
        }
        let mr = &mut self.merge_requests[mi];
        mr.state = "merged".into();
        mr.merged_at = Some(now());
        let mr = mr.clone();
        Answer::json(200, self.mr_json(&mr))
    }

    fn load_ci(&self, pi: usize, content: &str, r: &str) -> Result<ci::Config, Vec<String>> {
        let projects = &self.projects;
        let this = &projects[pi];
        let resolver = |project: Option<&str>, path: &str| -> Option<String> {
            let p = match project {
                None => this,
                Some(pp) => projects.iter().find(|x| x.path_with_namespace == pp)?,
            };
            let commit = p.repo.resolve(if project.is_none() { r } else { &p.default_branch })?;
            commit.files.get(path).map(|b| String::from_utf8_lossy(b).into_owned())
        };
        ci::load(content, &resolver)
    }

    fn lint(&self, pi: usize, content: &str, p: &Params) -> R {
        let dry_run = p.get("dry_run").is_some_and(|v| v == "true");
        let include_jobs = p.get("include_jobs").is_some_and(|v| v == "true");
        let proj = &self.projects[pi];
        let r = p.get("ref").or(p.get("dry_run_ref")).cloned().unwrap_or(proj.default_branch.clone());
        let mut out = match self.load_ci(pi, content, &r) {
            Ok(cfg) => {
                let protected = proj.repo.protected.contains(&r);
                let mut vars = self.variables_for(proj.id, protected);
                vars.extend(cfg.variables.clone());
                let jobs: Vec<Value> = cfg
                    .jobs
                    .iter()
                    .filter(|j| !j.trigger || !dry_run)
                    .map(|j| {
                        let tag_list: Vec<String> = if dry_run {
                            let mut v = vars.clone();
                            v.extend(j.variables.clone());
                            let mut t: Vec<String> = j.tags.iter().map(|t| ci::expand_existing(t, &v)).collect();
                            t.sort();
                            t
                        } else {
                            j.tags.clone()
                        };
                        let mut job = json!({"name": j.name, "stage": j.stage, "before_script": j.before_script, "script": j.script,
                                             "after_script": j.after_script, "tag_list": tag_list, "environment": j.environment,
                                             "when": j.when, "allow_failure": j.allow_failure});
                        if !dry_run {
                            job["only"] = json!(serde_json::to_value(&j.only).unwrap_or(Value::Null));
                            job["except"] = json!(serde_json::to_value(&j.except).unwrap_or(Value::Null));
                            job["needs"] = json!(serde_json::to_value(&j.needs).unwrap_or(Value::Null));
                        }
                        job
                    })
                    .collect();
                json!({"valid": true, "errors": [], "warnings": cfg.warnings, "merged_yaml": cfg.merged_yaml, "includes": cfg.includes, "jobs": jobs})
            }
            Err(errors) => {
                json!({"valid": false, "errors": errors, "warnings": [], "merged_yaml": null, "includes": [], "jobs": []})
            }
        };
        if !include_jobs && let Some(o) = out.as_object_mut() {
            o.remove("jobs");
        }
        Answer::json(200, out)
    }

    fn create_pipeline(&mut self, pi: usize, r: &str, p: &Params) -> R {
        let proj = &self.projects[pi];
        let Some(commit) = proj.repo.resolve(r).cloned() else {
            return Answer::json(400, json!({"message": {"base": ["Reference not found"]}}));
        };
        let Some(content) = commit.files.get(".gitlab-ci.yml").map(|b| String::from_utf8_lossy(b).into_owned()) else {
            return Answer::json(400, json!({"message": {"base": ["Missing CI config file"]}}));
        };
        let cfg = match self.load_ci(pi, &content, r) {
            Ok(c) => c,
            Err(errors) => return Answer::json(400, json!({"message": {"base": errors}})),
        };
        let protected = proj.repo.protected.contains(&r.to_string());
        let mut vars = self.variables_for(proj.id, protected);
        for v in p.json.get("variables").and_then(Value::as_array).into_iter().flatten() {
            if let (Some(k), Some(val)) = (v["key"].as_str(), v["value"].as_str()) {
                vars.insert(k.into(), val.into());
            }
        }
        vars.extend(cfg.variables.clone());
        let project_id = proj.id;
        let id = self.next_id();
        let iid = self.pipelines.iter().filter(|x| x.project_id == project_id).count() as u64 + 1;
        let created = now();
        for j in cfg.jobs.iter().filter(|j| !j.trigger) {
            let mut v = vars.clone();
            v.extend(j.variables.clone());
            let mut tags: Vec<String> = j.tags.iter().map(|t| ci::expand_existing(t, &v)).collect();
            tags.sort();
            let jid = self.next_id();
            self.jobs.push(Job {
                id: jid,
                pipeline_id: id,
                project_id,
                name: j.name.clone(),
                stage: j.stage.clone(),
                status: "pending".into(),
                tag_list: tags,
                runner_id: None,
                manager_id: None,
                created_at: created.clone(),
                started_at: None,
                finished_at: None,
                r#ref: r.into(),
                failure_reason: None,
                protected_ref: protected,
            });
        }
        let pipeline = Pipeline {
            id,
            iid,
            project_id,
            sha: commit.id.clone(),
            r#ref: r.into(),
            status: "pending".into(),
            source: "api".into(),
            created_at: created.clone(),
            updated_at: created,
        };
        let j = self.pipeline_json(&pipeline);
        self.pipelines.push(pipeline);
        Answer::json(201, j)
    }

    pub fn pipeline_json(&self, p: &Pipeline) -> Value {
        let path = self
            .projects
            .iter()
            .find(|x| x.id == p.project_id)
            .map(|x| x.path_with_namespace.clone())
            .unwrap_or_default();
        json!({"id": p.id, "iid": p.iid, "project_id": p.project_id, "sha": p.sha, "ref": p.r#ref, "status": p.status,
               "source": p.source, "created_at": p.created_at, "updated_at": p.updated_at,
               "web_url": format!("{}/{path}/-/pipelines/{}", self.base_url, p.id)})
    }

    pub fn job_json(&self, j: &Job) -> Value {
        let pipeline = self.pipelines.iter().find(|p| p.id == j.pipeline_id);
        let path = self
            .projects
            .iter()
            .find(|x| x.id == j.project_id)
            .map(|x| x.path_with_namespace.clone())
            .unwrap_or_default();
        let runner = j.runner_id.and_then(|id| self.runners.iter().find(|r| r.id == id));
        let manager = runner.and_then(|r| r.managers.iter().find(|m| Some(m.id) == j.manager_id));
        let duration = j.started_at.map(|s| (Utc::now() - s).num_milliseconds() as f64 / 1000.0);
        let mut v = json!({"id": j.id, "status": j.status, "stage": j.stage, "name": j.name, "ref": j.r#ref, "tag": false,
               "coverage": null, "allow_failure": false, "created_at": j.created_at,
               "started_at": j.started_at.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
               "finished_at": j.finished_at, "erased_at": null, "duration": duration, "queued_duration": null,
               "user": self.user_basic(),
               "commit": pipeline.map(|p| json!({"id": p.sha, "short_id": &p.sha[..8.min(p.sha.len())], "title": "", "created_at": p.created_at})),
               "pipeline": pipeline.map(|p| json!({"id": p.id, "iid": p.iid, "project_id": p.project_id, "sha": p.sha, "ref": p.r#ref,
                                                     "status": p.status, "source": p.source, "created_at": p.created_at, "updated_at": p.updated_at,
                                                     "web_url": format!("{}/{path}/-/pipelines/{}", self.base_url, p.id)})),
               "web_url": format!("{}/{path}/-/jobs/{}", self.base_url, j.id), "project": {"ci_job_token_scope_enabled": false},
               "artifacts": [], "runner": runner.map(|r| self.runner_list_item(r)), "runner_manager": manager.map(manager_json),
               "artifacts_expire_at": null, "archived": false, "tag_list": j.tag_list});
        if j.status == "failed" {
            v["failure_reason"] = json!(j.failure_reason);
        }
        v
    }
}

trait PlainMessage {
    fn with_plain_message(self) -> Self;
}

impl PlainMessage for Answer {
    /// The commits API's branch-exists error carries the text without the "400 Bad request" prefix.
    fn with_plain_message(mut self) -> Self {
        if let AnswerBody::Json(v) = &mut self.body
            && let Some(m) =
                v["message"].as_str().and_then(|m| m.strip_prefix("400 Bad request - ")).map(str::to_string)
        {
            v["message"] = json!(m);
        }
        self
    }
}

fn manager_json(m: &Manager) -> Value {
    let online = Utc::now() - m.contacted_at < chrono::Duration::hours(2);
    json!({"id": m.id, "system_id": m.system_id, "version": m.version, "revision": "5a021a1c", "platform": m.platform,
           "architecture": m.architecture, "created_at": m.created_at,
           "contacted_at": m.contacted_at.to_rfc3339_opts(SecondsFormat::Millis, true), "ip_address": null,
           "status": if online { "online" } else { "offline" }, "job_execution_status": "idle"})
}

fn commit_json(c: &repo::Commit, base: &str, path: &str) -> Value {
    json!({"id": c.id, "short_id": &c.id[..8], "title": c.title, "message": c.message, "author_name": c.author_name,
           "author_email": c.author_email, "authored_date": c.created_at, "committer_name": c.author_name,
           "committer_email": c.author_email, "committed_date": c.created_at, "created_at": c.created_at,
           "parent_ids": c.parent_ids, "stats": {"additions": 0, "deletions": 0, "total": 0}, "status": null,
           "web_url": format!("{base}/{path}/-/commit/{}", c.id)})
}

fn branch_json(p: &Project, name: &str, base: &str) -> Value {
    let c = p.repo.head(name);
    json!({"name": name, "merged": false, "protected": p.repo.protected.iter().any(|b| b == name), "default": p.default_branch == name,
           "developers_can_push": false, "developers_can_merge": false, "can_push": true,
           "web_url": format!("{base}/{}/-/tree/{name}", p.path_with_namespace),
           "commit": c.map(|c| json!({"id": c.id, "short_id": &c.id[..8], "title": c.title, "message": c.message, "created_at": c.created_at, "parent_ids": c.parent_ids}))})
}

fn variable_json(v: &Variable) -> Value {
    json!({"variable_type": v.variable_type, "key": v.key, "value": if v.hidden { Value::Null } else { json!(v.value) },
           "hidden": v.hidden, "protected": v.protected, "masked": v.masked, "raw": v.raw,
           "environment_scope": v.environment_scope, "description": v.description})
}

/// Project and group CI/CD variables share their rules.
fn variables(
    method: &str,
    rest: &[&str],
    p: &Params,
    vars: &mut Vec<Variable>,
    what: &str,
    req: &HttpRequest,
    base: &str,
) -> R {
    let scope_filter = p.get("filter[environment_scope]").cloned();
    let matching = |vars: &Vec<Variable>, key: &str| -> Vec<usize> {
        vars.iter()
            .enumerate()
            .filter(|(_, v)| v.key == key && scope_filter.as_ref().is_none_or(|s| *s == v.environment_scope))
            .map(|(i, _)| i)
            .collect()
    };
    let ambiguous =
        || msg(409, "There are multiple variables with provided parameters. Please use 'filter[environment_scope]'");
    match (method, rest) {
        ("GET", []) => paginate(req, base, vars.iter().map(variable_json).collect()),
        ("GET", [key]) => match matching(vars, &percent_decode(key)).as_slice() {
            [] => not_found(what),
            [i] => Answer::json(200, variable_json(&vars[*i])),
            _ => ambiguous(),
        },
        ("POST", []) => {
            let Some(key) = p.get("key").cloned() else { return missing("key") };
            let Some(value) = p.get("value").cloned() else { return missing("value") };
            if key.len() > 255 || key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Answer::json(400, json!({"message": {"key": ["can contain only letters, digits and '_'."]}}));
            }
            let scope = p.get("environment_scope").cloned().unwrap_or("*".into());
            if vars.iter().any(|v| v.key == key && v.environment_scope == scope) {
                return Answer::json(400, json!({"message": {"key": [format!("({key}) has already been taken")]}}));
            }
            let hidden = p.get("masked_and_hidden").is_some_and(|v| v == "true");
            let masked = hidden || p.get("masked").is_some_and(|v| v == "true");
            if masked && (value.len() < 8 || value.contains(char::is_whitespace)) {
                return Answer::json(400, json!({"message": {"value": ["is invalid"]}}));
            }
            let v = Variable {
                key,
                value,
                variable_type: p.get("variable_type").cloned().unwrap_or("env_var".into()),
                protected: p.get("protected").is_some_and(|v| v == "true"),
                masked,
                hidden,
                raw: p.get("raw").is_some_and(|v| v == "true"),
                environment_scope: scope,
                description: p.get("description").cloned(),
            };
            let j = variable_json(&v);
            vars.push(v);
            Answer::json(201, j)
        }
        ("PUT", [key]) => {
            let idx = match matching(vars, &percent_decode(key)).as_slice() {
                [] => return not_found(what),
                [i] => *i,
                _ => return ambiguous(),
            };
            let v = &mut vars[idx];
            if v.hidden && p.get("masked").is_some_and(|m| m != "true") {
                return msg(400, "The visibility setting cannot be changed for masked and hidden variables.");
            }
            if let Some(x) = p.get("value") {
                v.value = x.clone();
            }
            for (k, slot) in [("protected", &mut v.protected), ("masked", &mut v.masked), ("raw", &mut v.raw)] {
                if let Some(x) = p.get(k) {
                    *slot = x == "true";
                }
            }
            if let Some(x) = p.get("variable_type") {
                v.variable_type = x.clone();
            }
            if let Some(x) = p.get("environment_scope") {
                v.environment_scope = x.clone();
            }
            if let Some(x) = p.get("description") {
                v.description = Some(x.clone());
            }
            if v.masked && (v.value.len() < 8 || v.value.contains(char::is_whitespace)) {
                return Answer::json(400, json!({"message": {"value": ["is invalid"]}}));
            }
            Answer::json(200, variable_json(v))
        }
        ("DELETE", [key]) => match matching(vars, &percent_decode(key)).as_slice() {
            [] => not_found(what),
            [i] => {
                vars.remove(*i);
                Answer { code: 204, body: AnswerBody::Empty, headers: vec![] }
            }
            _ => ambiguous(),
        },
        _ => msg(405, "405 Method Not Allowed"),
    }
}

/// Request parameters from the query string, a JSON body or a form body, as Grape merges them.
pub struct Params {
    map: HashMap<String, String>,
    lists: HashMap<String, Vec<String>>,
    pub json: Value,
}

impl Params {
    fn new(req: &HttpRequest) -> Params {
        let mut map: HashMap<String, String> = HashMap::new();
        let mut lists: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in &req.query_all {
            push_param(&mut map, &mut lists, k, v);
        }
        let ct = req.headers.get("content-type").map(String::as_str).unwrap_or("");
        let mut json_body = Value::Null;
        if ct.starts_with("application/json") || (!req.body.is_empty() && req.body[0] == b'{') {
            if let Ok(v) = serde_json::from_slice::<Value>(&req.body) {
                if let Some(o) = v.as_object() {
                    for (k, x) in o {
                        match x {
                            Value::Array(a) => {
                                lists.insert(
                                    k.clone(),
                                    a.iter()
                                        .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                                        .collect(),
                                );
                                map.insert(
                                    k.clone(),
                                    a.iter()
                                        .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                                        .collect::<Vec<_>>()
                                        .join(","),
                                );
                            }
                            Value::String(s) => {
                                map.insert(k.clone(), s.clone());
                            }
                            Value::Null => {}
                            other => {
                                map.insert(k.clone(), other.to_string());
                            }
                        }
                    }
                }
                json_body = v;
            }
        } else if !req.body.is_empty() {
            for pair in String::from_utf8_lossy(&req.body).split('&') {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                push_param(
                    &mut map,
                    &mut lists,
                    &percent_decode(&k.replace('+', " ")),
                    &percent_decode(&v.replace('+', " ")),
                );
            }
        }
        Params { map, lists, json: json_body }
    }

    fn get(&self, k: &str) -> Option<&String> {
        self.map.get(k)
    }

    fn has(&self, k: &str) -> bool {
        self.map.contains_key(k) || self.lists.contains_key(k) || self.json.get(k).is_some()
    }

    /// A list parameter: JSON array, repeated `k[]=`, or a comma-separated string.
    fn list(&self, k: &str) -> Vec<String> {
        if let Some(l) = self.lists.get(k) {
            return l
                .iter()
                .flat_map(|s| s.split(','))
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        self.map
            .get(k)
            .map(|s| s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect())
            .unwrap_or_default()
    }
}

fn push_param(map: &mut HashMap<String, String>, lists: &mut HashMap<String, Vec<String>>, k: &str, v: &str) {
    if let Some(base) = k.strip_suffix("[]") {
        lists.entry(base.to_string()).or_default().push(v.to_string());
    } else {
        map.insert(k.to_string(), v.to_string());
    }
}

/// Offset pagination with the headers GitLab sends.
fn paginate(req: &HttpRequest, base: &str, items: Vec<Value>) -> R {
    let page = req.query.get("page").and_then(|p| p.parse::<usize>().ok()).filter(|p| *p > 0).unwrap_or(1);
    let per_page =
        req.query.get("per_page").and_then(|p| p.parse::<usize>().ok()).filter(|p| *p > 0).unwrap_or(20).min(100);
    let total = items.len();
    let total_pages = total.div_ceil(per_page).max(1);
    let slice: Vec<Value> = items.into_iter().skip((page - 1) * per_page).take(per_page).collect();
    let next = if page < total_pages { (page + 1).to_string() } else { String::new() };
    let prev = if page > 1 { (page - 1).to_string() } else { String::new() };
    let link_for = |p: usize| {
        let mut q: Vec<(String, String)> =
            req.query_all.iter().filter(|(k, _)| k != "page" && k != "per_page").cloned().collect();
        q.push(("page".into(), p.to_string()));
        q.push(("per_page".into(), per_page.to_string()));
        let qs: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{base}{}?{}", req.path, qs.join("&"))
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("<{}>; rel=\"prev\"", link_for(page - 1)));
    }
    if page < total_pages {
        links.push(format!("<{}>; rel=\"next\"", link_for(page + 1)));
    }
    links.push(format!("<{}>; rel=\"first\"", link_for(1)));
    links.push(format!("<{}>; rel=\"last\"", link_for(total_pages)));
    let headers = vec![
        ("x-page".into(), page.to_string()),
        ("x-per-page".into(), per_page.to_string()),
        ("x-next-page".into(), next),
        ("x-prev-page".into(), prev),
        ("x-total".into(), total.to_string()),
        ("x-total-pages".into(), total_pages.to_string()),
        ("Link".into(), links.join(", ")),
    ];
    Answer { code: 200, body: AnswerBody::Json(Value::Array(slice)), headers }
}

#[cfg(test)]
mod tests;
