//! A simulated GitLab REST API v4: projects and groups, runners and their managers, CI/CD
//! variables, repository files and commits, branches, merge requests, CI lint, pipelines and
//! jobs, with GitLab's pagination headers, status codes and error bodies.

pub mod ci;
mod entities;
mod merge_requests;
mod params;
mod pipelines;
pub mod repo;
mod repository;
mod routes;
mod rules;
mod runners;
mod variables;

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::exchange::{Body, Reply, Request, percent_decode};
use params::{Params, keyset_by_id, paginate, wants_keyset};
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
    /// Where the project's CI configuration lives when not `.gitlab-ci.yml`: a path in the
    /// repository, `file@group/project[:ref]`, or a URL (Settings > CI/CD > General pipelines).
    pub ci_config_path: Option<String>,
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
    /// `on_success`, `on_failure`, `always`, `manual` or `delayed`.
    pub when: String,
    pub allow_failure: bool,
    /// Names of the jobs it `needs:`; `None`: it waits for every earlier stage.
    pub needs: Option<Vec<String>>,
    pub stage_index: usize,
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
    /// `remove_source_branch` at creation: the source branch goes when it is merged.
    pub force_remove_source_branch: bool,
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
    /// The token's user: `None` is root, an administrator; `Some(level)` is `operator`, a
    /// member of every group at that access level (10 Guest .. 50 Owner), inherited by the
    /// groups' projects. The API refuses what the level does not allow, as GitLab does.
    pub access: Option<u8>,
    next_id: u64,
}

/// GitLab's access levels (`Gitlab::Access`).
pub const DEVELOPER: u8 = 30;
pub const MAINTAINER: u8 = 40;
pub const OWNER: u8 = 50;

type R = Reply;

fn msg(code: u16, message: &str) -> R {
    Reply::json(code, json!({"message": message}))
}

fn not_found(what: &str) -> R {
    msg(404, &format!("404 {what} Not Found"))
}

fn missing(param: &str) -> R {
    Reply::json(400, json!({"error": format!("{param} is missing")}))
}

/// What lib/api/api.rb's `rescue_from ActiveRecord::RecordNotFound` answers (pipelines, merge
/// requests and jobs are found with `find`).
fn record_not_found() -> R {
    msg(404, "404 Not found")
}

fn no_content() -> R {
    Reply::empty(204)
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
            access: None,
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
            ci_config_path: None,
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

    /// Serves one request to `/api/v4/...` (see `routes`).
    pub fn handle(&mut self, req: &Request) -> R {
        routes::dispatch(self, req)
    }

    fn user(&self) -> Value {
        entities::to_json(&entities::User {
            basic: self.user_basic_entity(),
            is_admin: self.access.is_none(),
            email: if self.access.is_none() { "admin@sandbox.test" } else { "operator@sandbox.test" },
        })
    }

    /// Whether the token's user holds `level` (admins hold every level).
    pub(super) fn may(&self, level: u8) -> bool {
        self.access.is_none_or(|a| a >= level)
    }

    /// The token's user's access level on any group or project (root owns them all).
    pub(super) fn access_level(&self) -> u8 {
        self.access.unwrap_or(OWNER)
    }

    /// The one user of the sandbox: root, or `operator` when `access` is set.
    pub(super) fn user_basic_entity(&self) -> entities::UserBasic {
        let (id, username, name) =
            if self.access.is_none() { (1, "root", "Administrator") } else { (2, "operator", "Platform Operator") };
        entities::UserBasic {
            id,
            username,
            name,
            state: "active",
            locked: false,
            avatar_url: format!("{}/uploads/-/system/user/avatar/{id}/avatar.png", self.base_url),
            web_url: format!("{}/{username}", self.base_url),
        }
    }

    fn project_json(&self, p: &Project) -> Value {
        let namespace = self.groups.iter().find(|g| g.id == p.namespace_id).map(|g| entities::Namespace {
            id: g.id,
            name: g.name.clone(),
            path: g.path.clone(),
            kind: "group",
            full_path: g.full_path.clone(),
            parent_id: g.parent_id,
        });
        entities::to_json(&entities::Project {
            id: p.id,
            name: p.name.clone(),
            path: p.path.clone(),
            path_with_namespace: p.path_with_namespace.clone(),
            name_with_namespace: p.path_with_namespace.replace('/', " / "),
            default_branch: p.default_branch.clone(),
            visibility: "private",
            web_url: format!("{}/{}", self.base_url, p.path_with_namespace),
            http_url_to_repo: format!("{}/{}.git", self.base_url, p.path_with_namespace),
            namespace,
            archived: false,
            shared_runners_enabled: true,
            created_at: "2025-01-01T00:00:00.000Z",
            ci_config_path: p.ci_config_path.clone(),
        })
    }

    fn group_json(&self, g: &Group) -> Value {
        entities::to_json(&entities::Group {
            id: g.id,
            name: g.name.clone(),
            path: g.path.clone(),
            full_path: g.full_path.clone(),
            full_name: g.full_path.replace('/', " / "),
            parent_id: g.parent_id,
            visibility: "private",
            web_url: format!("{}/groups/{}", self.base_url, g.full_path),
        })
    }
}

#[cfg(test)]
mod tests;
