//! CI lint, pipelines created from a ref, and their jobs.

use super::routes::Ctx;
#[allow(clippy::wildcard_imports)]
use super::*;

impl GitLabState {
    /// `POST /projects/:id/jobs/:job_id/play`: a manual job joins the queue.
    pub(super) fn play_job(&mut self, pi: usize, job: &str) -> R {
        let proj = self.projects[pi].id;
        let Some(j) = self.jobs.iter_mut().find(|j| j.project_id == proj && job.parse() == Ok(j.id)) else {
            return record_not_found();
        };
        if j.status != "manual" {
            return Reply::json(400, json!({"message": "400 Bad request - Unplayable Job"}));
        }
        j.status = "pending".into();
        let j = j.clone();
        self.advance_pipelines();
        Reply::json(200, self.job_json(&j))
    }

    pub(super) fn load_ci(&self, pi: usize, content: &str, r: &str) -> Result<ci::Config, Vec<String>> {
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

    pub(super) fn lint(&self, pi: usize, content: &str, p: &Params) -> R {
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
        Reply::json(200, out)
    }

    pub(super) fn create_pipeline(&mut self, pi: usize, r: &str, p: &Params) -> R {
        self.run_pipeline(pi, r, p, "api")
    }

    /// What a push to branch `r` starts, as GitLab does for a commit through the API or a
    /// merge: a `push` pipeline, when the branch has a CI file that yields jobs (otherwise
    /// nothing, silently).
    pub(super) fn push_pipeline(&mut self, pi: usize, r: &str) {
        let _ = self.run_pipeline(pi, r, &Params::default(), "push");
    }

    fn run_pipeline(&mut self, pi: usize, r: &str, p: &Params, source: &str) -> R {
        let proj = &self.projects[pi];
        let Some(commit) = proj.repo.resolve(r).cloned() else {
            return Reply::json(400, json!({"message": {"base": ["Reference not found"]}}));
        };
        let Some(content) = commit.files.get(".gitlab-ci.yml").map(|b| String::from_utf8_lossy(b).into_owned()) else {
            return Reply::json(400, json!({"message": {"base": ["Missing CI config file"]}}));
        };
        let cfg = match self.load_ci(pi, &content, r) {
            Ok(c) => c,
            Err(errors) => return Reply::json(400, json!({"message": {"base": errors}})),
        };
        let protected = proj.repo.protected.contains(&r.to_string());
        let mut vars = self.variables_for(proj.id, protected);
        for v in p.json.get("variables").and_then(Value::as_array).into_iter().flatten() {
            if let (Some(k), Some(val)) = (v["key"].as_str(), v["value"].as_str()) {
                vars.insert(k.into(), val.into());
            }
        }
        vars.extend(cfg.variables.clone());
        // Predefined variables of an API pipeline on a branch.
        let is_tag = !proj.repo.branches.contains_key(r);
        for (k, v) in [
            ("CI_PIPELINE_SOURCE", source.to_string()),
            ("CI_COMMIT_REF_NAME", r.to_string()),
            ("CI_COMMIT_SHA", commit.id.clone()),
            ("CI_DEFAULT_BRANCH", proj.default_branch.clone()),
        ] {
            vars.insert(k.into(), v);
        }
        vars.insert(if is_tag { "CI_COMMIT_TAG" } else { "CI_COMMIT_BRANCH" }.into(), r.to_string());
        let files: std::collections::BTreeSet<String> = commit.files.keys().cloned().collect();
        if !cfg.workflow_rules.is_null() {
            match rules::first_match(&cfg.workflow_rules, &vars, &files) {
                Ok(Some(o)) if o.when != "never" => {}
                Ok(_) => {
                    return Reply::json(
                        400,
                        json!({"message": {"base": ["Pipeline filtered out by workflow rules."]}}),
                    );
                }
                Err(e) => return Reply::json(400, json!({"message": {"base": [e]}})),
            }
        }
        // Which jobs the pipeline gets, and how each runs.
        let mut planned: Vec<(&ci::Job, String, bool)> = Vec::new();
        for j in cfg.jobs.iter().filter(|j| !j.trigger) {
            let mut v = vars.clone();
            v.extend(j.variables.clone());
            let (when, allow_failure) = if j.rules.is_null() {
                if !rules::only_except(&j.only, &j.except, r, source, is_tag, &v) {
                    continue;
                }
                // Manual jobs without rules may fail (they do not block later stages).
                (j.when.clone(), j.allow_failure || j.when == "manual")
            } else {
                match rules::first_match(&j.rules, &v, &files) {
                    Ok(Some(o)) if o.when != "never" => (o.when.clone(), o.allow_failure.unwrap_or(j.allow_failure)),
                    Ok(_) => continue,
                    Err(e) => return Reply::json(400, json!({"message": {"base": [format!("{}: {e}", j.name)]}})),
                }
            };
            planned.push((j, when, allow_failure));
        }
        if planned.is_empty() {
            return Reply::json(
                400,
                json!({"message": {"base": ["Pipeline will not run for the selected trigger. The rules configuration prevented any jobs from being added to the pipeline."]}}),
            );
        }
        let project_id = proj.id;
        let id = self.next_id();
        let iid = self.pipelines.iter().filter(|x| x.project_id == project_id).count() as u64 + 1;
        let created = now();
        for (j, when, allow_failure) in planned {
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
                status: "created".into(),
                tag_list: tags,
                runner_id: None,
                manager_id: None,
                created_at: created.clone(),
                started_at: None,
                finished_at: None,
                r#ref: r.into(),
                failure_reason: None,
                protected_ref: protected,
                when,
                allow_failure,
                needs: j.needs_names(),
                stage_index: j.stage_index,
            });
        }
        let pipeline = Pipeline {
            id,
            iid,
            project_id,
            sha: commit.id.clone(),
            r#ref: r.into(),
            status: "pending".into(),
            source: source.into(),
            created_at: created.clone(),
            updated_at: created,
        };
        self.pipelines.push(pipeline);
        self.advance_pipelines();
        match self.pipelines.iter().find(|x| x.id == id) {
            Some(p) => Reply::json(201, self.pipeline_json(p)),
            None => record_not_found(),
        }
    }

    /// Moves waiting jobs on as GitLab's processing does: a job without `needs:` waits for every
    /// earlier stage, one with `needs:` for those jobs only; then it runs (`pending`), waits to be
    /// played (`manual`), or is `skipped` by its `when`. Pipelines then take their jobs' status.
    pub(crate) fn advance_pipelines(&mut self) {
        let waiting: Vec<usize> = (0..self.jobs.len()).filter(|i| self.jobs[*i].status == "created").collect();
        for i in waiting {
            let job = &self.jobs[i];
            let deps: Vec<&Job> = self
                .jobs
                .iter()
                .filter(|d| d.pipeline_id == job.pipeline_id && d.id != job.id)
                .filter(|d| match &job.needs {
                    Some(names) => names.contains(&d.name),
                    None => d.stage_index < job.stage_index,
                })
                .collect();
            // A non-blocking manual job (allow_failure) does not hold later stages back.
            let done = |d: &&Job| match d.status.as_str() {
                "success" | "failed" | "skipped" | "canceled" => true,
                "manual" => d.allow_failure && job.needs.is_none(),
                _ => false,
            };
            if !deps.iter().all(done) {
                continue;
            }
            let failed = deps.iter().any(|d| d.status == "failed" && !d.allow_failure);
            let next = match (job.when.as_str(), failed) {
                ("always", _) | ("on_failure", true) => "pending",
                ("on_failure", false) | (_, true) => "skipped",
                ("manual", false) => "manual",
                _ => "pending",
            };
            self.jobs[i].status = next.into();
        }
        for p in 0..self.pipelines.len() {
            let pid = self.pipelines[p].id;
            let jobs: Vec<&Job> = self.jobs.iter().filter(|j| j.pipeline_id == pid).collect();
            let any = |s: &str| jobs.iter().any(|j| j.status == s);
            let status = if any("running") {
                "running"
            } else if any("pending") {
                if jobs.iter().any(|j| matches!(j.status.as_str(), "success" | "failed")) {
                    "running"
                } else {
                    "pending"
                }
            } else if any("created") {
                "running"
            } else if jobs.iter().any(|j| j.status == "failed" && !j.allow_failure) {
                "failed"
            } else if jobs.iter().any(|j| j.status == "manual" && !j.allow_failure) {
                "manual"
            } else {
                "success"
            };
            if self.pipelines[p].status != status {
                self.pipelines[p].status = status.into();
                self.pipelines[p].updated_at = now();
            }
        }
    }

    pub(crate) fn pipeline_json(&self, p: &Pipeline) -> Value {
        entities::to_json(&self.pipeline_entity(p))
    }

    fn pipeline_entity(&self, p: &Pipeline) -> entities::Pipeline {
        let path =
            self.projects.iter().find(|x| x.id == p.project_id).map(|x| x.path_with_namespace.as_str()).unwrap_or("");
        entities::Pipeline {
            id: p.id,
            iid: p.iid,
            project_id: p.project_id,
            sha: p.sha.clone(),
            r#ref: p.r#ref.clone(),
            status: p.status.clone(),
            source: p.source.clone(),
            created_at: p.created_at.clone(),
            updated_at: p.updated_at.clone(),
            web_url: format!("{}/{path}/-/pipelines/{}", self.base_url, p.id),
        }
    }

    pub(crate) fn job_json(&self, j: &Job) -> Value {
        let pipeline = self.pipelines.iter().find(|p| p.id == j.pipeline_id);
        let path =
            self.projects.iter().find(|x| x.id == j.project_id).map(|x| x.path_with_namespace.as_str()).unwrap_or("");
        let runner = j.runner_id.and_then(|id| self.runners.iter().find(|r| r.id == id));
        let manager = runner.and_then(|r| r.managers.iter().find(|m| Some(m.id) == j.manager_id));
        entities::to_json(&entities::Job {
            id: j.id,
            status: j.status.clone(),
            stage: j.stage.clone(),
            name: j.name.clone(),
            r#ref: j.r#ref.clone(),
            tag: false,
            coverage: None,
            allow_failure: j.allow_failure,
            created_at: j.created_at.clone(),
            started_at: j.started_at.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            finished_at: j.finished_at.clone(),
            erased_at: None,
            duration: j.started_at.map(|s| (Utc::now() - s).num_milliseconds() as f64 / 1000.0),
            queued_duration: None,
            user: self.user_basic_entity(),
            commit: pipeline.map(|p| entities::CommitBasic {
                id: p.sha.clone(),
                short_id: p.sha.chars().take(8).collect(),
                title: String::new(),
                created_at: p.created_at.clone(),
            }),
            pipeline: pipeline.map(|p| self.pipeline_entity(p)),
            web_url: format!("{}/{path}/-/jobs/{}", self.base_url, j.id),
            project: json!({"ci_job_token_scope_enabled": false}),
            artifacts: vec![],
            runner: runner.map(|r| self.runner_entity(r)),
            runner_manager: manager.map(runners::manager_entity),
            artifacts_expire_at: None,
            archived: false,
            tag_list: j.tag_list.clone(),
            failure_reason: (j.status == "failed").then(|| j.failure_reason.clone()),
        })
    }
}

/// `POST /api/v4/projects/:project/ci/lint`
pub(super) fn lint_content(s: &mut GitLabState, c: &Ctx) -> R {
    let Some(content) = c.p.get("content").cloned() else { return missing("content") };
    s.lint(c.project, &content, &c.p)
}

/// `GET /api/v4/projects/:project/ci/lint`
pub(super) fn lint_ref(s: &mut GitLabState, c: &Ctx) -> R {
    let p = &s.projects[c.project];
    let r = c.p.get("content_ref").or(c.p.get("sha")).cloned().unwrap_or(p.default_branch.clone());
    let Some(content) = p
        .repo
        .resolve(&r)
        .and_then(|commit| commit.files.get(".gitlab-ci.yml"))
        .map(|b| String::from_utf8_lossy(b).into_owned())
    else {
        return not_found("File");
    };
    s.lint(c.project, &content, &c.p)
}

/// `POST /api/v4/projects/:project/pipeline`
pub(super) fn create(s: &mut GitLabState, c: &Ctx) -> R {
    let Some(r) = c.p.get("ref").cloned() else { return missing("ref") };
    s.create_pipeline(c.project, &r, &c.p)
}

/// `GET /api/v4/projects/:project/pipelines`
pub(super) fn list(s: &mut GitLabState, c: &Ctx) -> R {
    let pid = s.projects[c.project].id;
    let mut items: Vec<Value> = s
        .pipelines
        .iter()
        .filter(|p| {
            p.project_id == pid
                && c.p.get("ref").is_none_or(|r| *r == p.r#ref)
                && c.p.get("status").is_none_or(|st| *st == p.status)
        })
        .map(|p| s.pipeline_json(p))
        .collect();
    items.reverse();
    paginate(c.req, &s.base_url, items)
}

/// `GET /api/v4/projects/:project/pipelines/:id`
pub(super) fn get(s: &mut GitLabState, c: &Ctx) -> R {
    let proj = s.projects[c.project].id;
    match s.pipelines.iter().find(|p| p.project_id == proj && c.args[0].parse() == Ok(p.id)) {
        Some(p) => Reply::json(200, s.pipeline_json(p)),
        None => record_not_found(),
    }
}

/// `GET /api/v4/projects/:project/pipelines/:id/jobs`
pub(super) fn jobs(s: &mut GitLabState, c: &Ctx) -> R {
    let proj = s.projects[c.project].id;
    let Ok(pid) = c.args[0].parse::<u64>() else { return record_not_found() };
    if !s.pipelines.iter().any(|p| p.id == pid && p.project_id == proj) {
        return record_not_found();
    }
    let scopes: Vec<&String> =
        c.req.query_all.iter().filter(|(k, _)| k == "scope[]" || k == "scope").map(|(_, v)| v).collect();
    let items: Vec<Value> = s
        .jobs
        .iter()
        .filter(|j| j.pipeline_id == pid && (scopes.is_empty() || scopes.contains(&&j.status)))
        .map(|j| s.job_json(j))
        .collect();
    paginate(c.req, &s.base_url, items)
}

/// `GET /api/v4/projects/:project/jobs/:id`
pub(super) fn job(s: &mut GitLabState, c: &Ctx) -> R {
    let proj = s.projects[c.project].id;
    match s.jobs.iter().find(|j| j.project_id == proj && c.args[0].parse() == Ok(j.id)) {
        Some(j) => Reply::json(200, s.job_json(j)),
        None => record_not_found(),
    }
}

/// `POST /api/v4/projects/:project/jobs/:id/play`
pub(super) fn play(s: &mut GitLabState, c: &Ctx) -> R {
    s.play_job(c.project, &c.args[0])
}
