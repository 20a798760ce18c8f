//! Merge requests: create (409 on a duplicate), read, merge.

use super::routes::Ctx;
#[allow(clippy::wildcard_imports)]
use super::*;

impl GitLabState {
    pub(super) fn create_mr(&mut self, pi: usize, p: &Params) -> R {
        for req in ["source_branch", "target_branch", "title"] {
            if p.get(req).is_none() {
                return missing(req);
            }
        }
        let (source, target) =
            (p.get("source_branch").cloned().unwrap_or_default(), p.get("target_branch").cloned().unwrap_or_default());
        let pid = self.projects[pi].id;
        if source == target {
            return Reply::json(422, json!({"message": ["You can't use same project/branch for source and target"]}));
        }
        if !self.projects[pi].repo.branches.contains_key(&source) {
            return Reply::json(400, json!({"message": ["Source branch does not exist"]}));
        }
        if let Some(existing) = self.merge_requests.iter().find(|m| {
            m.project_id == pid && m.state == "opened" && m.source_branch == source && m.target_branch == target
        }) {
            return Reply::json(
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
            force_remove_source_branch: p
                .get("remove_source_branch")
                .is_some_and(|v| super::runners::boolean(v) == Some(true)),
        };
        let j = self.mr_json(&mr);
        self.merge_requests.push(mr);
        Reply::json(201, j)
    }

    pub(super) fn mr_json(&self, mr: &MergeRequest) -> Value {
        let proj = self.projects.iter().find(|p| p.id == mr.project_id);
        let sha = proj.and_then(|p| p.repo.head(&mr.source_branch)).map(|c| c.id.clone());
        let path = proj.map(|p| p.path_with_namespace.as_str()).unwrap_or("");
        entities::to_json(&entities::MergeRequest {
            id: mr.id,
            iid: mr.iid,
            project_id: mr.project_id,
            title: mr.title.clone(),
            description: mr.description.clone(),
            state: mr.state.clone(),
            created_at: mr.created_at.clone(),
            merged_at: mr.merged_at.clone(),
            source_branch: mr.source_branch.clone(),
            target_branch: mr.target_branch.clone(),
            sha,
            merge_status: "can_be_merged",
            detailed_merge_status: if mr.state == "opened" { "mergeable" } else { "not_open" },
            draft: false,
            force_remove_source_branch: mr.force_remove_source_branch,
            author: self.user_basic_entity(),
            web_url: format!("{}/{path}/-/merge_requests/{}", self.base_url, mr.iid),
        })
    }

    pub(super) fn merge_mr(&mut self, pi: usize, iid: &str, p: &Params) -> R {
        let pid = self.projects[pi].id;
        let Some(mi) = self.merge_requests.iter().position(|m| m.project_id == pid && iid.parse() == Ok(m.iid)) else {
            return record_not_found();
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
        // GitLab deletes the source branch after the merge when asked at creation or now.
        if mr.force_remove_source_branch
            || p.get("should_remove_source_branch").is_some_and(|v| super::runners::boolean(v) == Some(true))
        {
            self.projects[pi].repo.branches.remove(&source);
        }
        self.push_pipeline(pi, &target);
        Reply::json(200, self.mr_json(&mr))
    }
}

/// `POST /api/v4/projects/:project/merge_requests`
pub(super) fn create(s: &mut GitLabState, c: &Ctx) -> R {
    s.create_mr(c.project, &c.p)
}

/// `GET /api/v4/projects/:project/merge_requests`
pub(super) fn list(s: &mut GitLabState, c: &Ctx) -> R {
    let pid = s.projects[c.project].id;
    let items: Vec<Value> = s
        .merge_requests
        .iter()
        .filter(|mr| mr.project_id == pid)
        .filter(|mr| c.p.get("state").is_none_or(|st| st == "all" || *st == mr.state))
        .filter(|mr| c.p.get("source_branch").is_none_or(|b| *b == mr.source_branch))
        .filter(|mr| c.p.get("target_branch").is_none_or(|b| *b == mr.target_branch))
        .map(|mr| s.mr_json(mr))
        .collect();
    paginate(c.req, &s.base_url, items)
}

/// `GET /api/v4/projects/:project/merge_requests/:iid`
pub(super) fn get(s: &mut GitLabState, c: &Ctx) -> R {
    let pid = s.projects[c.project].id;
    match s.merge_requests.iter().find(|mr| mr.project_id == pid && c.args[0].parse() == Ok(mr.iid)) {
        Some(mr) => Reply::json(200, s.mr_json(mr)),
        None => record_not_found(),
    }
}

/// `PUT /api/v4/projects/:project/merge_requests/:iid/merge`
pub(super) fn merge(s: &mut GitLabState, c: &Ctx) -> R {
    s.merge_mr(c.project, &c.args[0], &c.p)
}
