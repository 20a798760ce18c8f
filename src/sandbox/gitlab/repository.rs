//! Repository files, commits with actions, and branches, with `last_commit_id` locking.

use super::routes::Ctx;
#[allow(clippy::wildcard_imports)]
use super::*;

impl GitLabState {
    /// `POST /projects/:id/repository/branches`.
    pub(super) fn create_branch(&mut self, pi: usize, p: &Params) -> R {
        let (Some(branch), Some(r)) = (p.get("branch"), p.get("ref")) else {
            return missing(if p.get("branch").is_none() { "branch" } else { "ref" });
        };
        let proj = &mut self.projects[pi];
        if proj.repo.branches.contains_key(branch) {
            return msg(400, "Branch already exists");
        }
        let Some(c) = proj.repo.resolve(r).map(|c| c.id.clone()) else { return msg(400, "Invalid reference name") };
        proj.repo.branches.insert(branch.clone(), c);
        Reply::json(201, branch_json(proj, branch, &self.base_url))
    }

    pub(super) fn files(&mut self, pi: usize, method: &str, path: &str, rest: &[&str], p: &Params) -> R {
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
                    return Reply { code: 200, body: Body::Empty, headers };
                }
                if raw {
                    return Reply { code: 200, body: Body::Raw(content.clone(), "text/plain; charset=utf-8"), headers };
                }
                let body = json!({"file_name": path.rsplit('/').next().unwrap_or(path), "file_path": path, "size": content.len(),
                                  "encoding": "base64", "content": base64::engine::general_purpose::STANDARD.encode(content),
                                  "content_sha256": sha256, "ref": r, "blob_id": blob_id(content), "commit_id": commit.id,
                                  "last_commit_id": last, "execute_filemode": false});
                Reply { code: 200, body: Body::Json(body), headers }
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
                    Ok(_) if method == "DELETE" => no_content(),
                    Ok(_) => Reply::json(
                        if method == "POST" { 201 } else { 200 },
                        json!({"file_path": path, "branch": p.get("branch")}),
                    ),
                    Err(e) => e,
                }
            }
            _ => msg(405, "405 Method Not Allowed"),
        }
    }

    pub(super) fn create_commit(&mut self, pi: usize, p: &Params) -> R {
        for req in ["branch", "commit_message", "actions"] {
            if !p.has(req) {
                return missing(req);
            }
        }
        let actions = p.json.get("actions").and_then(Value::as_array).cloned().unwrap_or_default();
        match self.commit_actions(pi, p, &actions, false) {
            Ok(c) => {
                let reply = Reply::json(201, commit_json(&c, &self.base_url, &self.projects[pi].path_with_namespace));
                // A commit is a push: GitLab starts the branch's pipeline (unless [skip ci]).
                if let Some(branch) = p.get("branch").cloned()
                    && !c.message.contains("[skip ci]")
                    && !c.message.contains("[ci skip]")
                {
                    self.push_pipeline(pi, &branch);
                }
                reply
            }
            Err(e) => e,
        }
    }

    pub(super) fn commit_actions(
        &mut self,
        pi: usize,
        p: &Params,
        actions: &[Value],
        files_api: bool,
    ) -> Result<repo::Commit, R> {
        let branch = p.get("branch").cloned().unwrap_or_default();
        let start = p.get("start_branch").or(p.get("start_sha")).cloned();
        let force = p.get("force").is_some_and(|f| f == "true");
        let proj = &mut self.projects[pi];
        let exists = proj.repo.branches.contains_key(&branch);
        // Commits::CreateService#validate_branch_existence!, for the Files API too.
        if exists && start.as_ref().is_some_and(|s| *s != branch) && !force {
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
                return Err(Reply::json(400, json!({"error": "actions[0][file_path] is missing"})));
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
                _ => return Err(Reply::json(400, json!({"error": "actions[0][action] does not have a valid value"}))),
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
    pub(crate) fn concurrent_edit(&mut self, project: &str, path: &str, branch: &str) {
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
}

pub(super) fn commit_json(c: &repo::Commit, base: &str, path: &str) -> Value {
    entities::to_json(&entities::Commit {
        id: c.id.clone(),
        short_id: c.id.chars().take(8).collect(),
        title: c.title.clone(),
        message: c.message.clone(),
        author_name: c.author_name.clone(),
        author_email: c.author_email.clone(),
        authored_date: c.created_at.clone(),
        committer_name: c.author_name.clone(),
        committer_email: c.author_email.clone(),
        committed_date: c.created_at.clone(),
        created_at: c.created_at.clone(),
        parent_ids: c.parent_ids.clone(),
        stats: json!({"additions": 0, "deletions": 0, "total": 0}),
        status: None,
        web_url: format!("{base}/{path}/-/commit/{}", c.id),
    })
}

pub(super) fn branch_json(p: &Project, name: &str, base: &str) -> Value {
    entities::to_json(&entities::Branch {
        name: name.to_string(),
        merged: false,
        protected: p.repo.protected.iter().any(|b| b == name),
        default: p.default_branch == name,
        developers_can_push: false,
        developers_can_merge: false,
        can_push: true,
        web_url: format!("{base}/{}/-/tree/{name}", p.path_with_namespace),
        commit: p.repo.head(name).map(|c| entities::BranchCommit {
            id: c.id.clone(),
            short_id: c.id.chars().take(8).collect(),
            title: c.title.clone(),
            message: c.message.clone(),
            created_at: c.created_at.clone(),
            parent_ids: c.parent_ids.clone(),
        }),
    })
}

trait PlainMessage {
    fn with_plain_message(self) -> Self;
}

impl PlainMessage for Reply {
    /// The commits API's branch-exists error carries the text without the "400 Bad request" prefix.
    fn with_plain_message(mut self) -> Self {
        if let Body::Json(v) = &mut self.body
            && let Some(m) =
                v["message"].as_str().and_then(|m| m.strip_prefix("400 Bad request - ")).map(str::to_string)
        {
            v["message"] = json!(m);
        }
        self
    }
}

/// `* /api/v4/projects/:project/repository/files/:path/*`
pub(super) fn file(s: &mut GitLabState, c: &Ctx) -> R {
    // Pushing needs Developer (the default branch protection lets Developers push to
    // unprotected branches; the sandbox protects none).
    if c.req.method != "GET" && c.req.method != "HEAD" && !s.may(DEVELOPER) {
        return msg(403, "403 Forbidden");
    }
    let rest: Vec<&str> = c.rest.iter().map(String::as_str).collect();
    s.files(c.project, &c.req.method, &c.args[0], &rest, &c.p)
}

/// `POST /api/v4/projects/:project/repository/commits`
pub(super) fn commit(s: &mut GitLabState, c: &Ctx) -> R {
    if !s.may(DEVELOPER) {
        return msg(403, "403 Forbidden");
    }
    s.create_commit(c.project, &c.p)
}

/// `GET /api/v4/projects/:project/repository/commits/:sha`
pub(super) fn get_commit(s: &mut GitLabState, c: &Ctx) -> R {
    let proj = &s.projects[c.project];
    match proj.repo.resolve(&c.args[0]) {
        Some(commit) => Reply::json(200, commit_json(commit, &s.base_url, &proj.path_with_namespace)),
        None => not_found("Commit"),
    }
}

/// `GET /api/v4/projects/:project/repository/branches`
pub(super) fn list_branches(s: &mut GitLabState, c: &Ctx) -> R {
    let p = &s.projects[c.project];
    paginate(c.req, &s.base_url, p.repo.branches.keys().map(|b| branch_json(p, b, &s.base_url)).collect())
}

/// `GET /api/v4/projects/:project/repository/branches/:branch`
pub(super) fn get_branch(s: &mut GitLabState, c: &Ctx) -> R {
    let p = &s.projects[c.project];
    if p.repo.branches.contains_key(&c.args[0]) {
        Reply::json(200, branch_json(p, &c.args[0], &s.base_url))
    } else {
        not_found("Branch")
    }
}

/// `POST /api/v4/projects/:project/repository/branches`
pub(super) fn branch(s: &mut GitLabState, c: &Ctx) -> R {
    s.create_branch(c.project, &c.p)
}
