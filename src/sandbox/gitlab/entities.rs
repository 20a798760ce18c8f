//! GitLab's response shapes, one struct an entity, fields in the order GitLab writes them.
//! Each names the Grape entity it mirrors (`lib/api/entities/…` in GitLab's source), so a
//! shape can be checked against the reference instead of read out of scattered `json!`.

use serde::Serialize;
use serde_json::Value;

/// `Entities::UserBasic`.
#[derive(Serialize)]
pub struct UserBasic {
    pub id: u64,
    pub username: &'static str,
    pub name: &'static str,
    pub state: &'static str,
    pub locked: bool,
    pub avatar_url: String,
    pub web_url: String,
}

/// `Entities::UserPublic` as `GET /user` shows it to an administrator (a subset).
#[derive(Serialize)]
pub struct User {
    #[serde(flatten)]
    pub basic: UserBasic,
    pub is_admin: bool,
    pub email: &'static str,
}

/// `Entities::NamespaceBasic`.
#[derive(Serialize)]
pub struct Namespace {
    pub id: u64,
    pub name: String,
    pub path: String,
    pub kind: &'static str,
    pub full_path: String,
    pub parent_id: Option<u64>,
}

/// `Entities::Project` (the fields clients of this sandbox read).
#[derive(Serialize)]
pub struct Project {
    pub id: u64,
    pub name: String,
    pub path: String,
    pub path_with_namespace: String,
    pub name_with_namespace: String,
    pub default_branch: String,
    pub visibility: &'static str,
    pub web_url: String,
    pub http_url_to_repo: String,
    pub namespace: Option<Namespace>,
    pub archived: bool,
    pub shared_runners_enabled: bool,
    pub created_at: &'static str,
    /// `null` until set.
    pub ci_config_path: Option<String>,
}

/// `Entities::Group` (a subset).
#[derive(Serialize)]
pub struct Group {
    pub id: u64,
    pub name: String,
    pub path: String,
    pub full_path: String,
    pub full_name: String,
    pub parent_id: Option<u64>,
    pub visibility: &'static str,
    pub web_url: String,
}

/// `Entities::Ci::Runner`: a list item (no `tag_list`).
#[derive(Serialize)]
pub struct Runner {
    pub id: u64,
    pub description: String,
    /// `expose(:ip_address) { nil }` in current GitLab.
    pub ip_address: Option<String>,
    pub active: bool,
    pub paused: bool,
    pub is_shared: bool,
    pub runner_type: String,
    pub name: &'static str,
    /// `null` until a manager contacts GitLab.
    pub online: Option<bool>,
    pub created_by: UserBasic,
    pub created_at: String,
    pub status: &'static str,
    pub job_execution_status: &'static str,
}

/// `Entities::Ci::RunnerDetails`: the list item plus what only the detail carries.
#[derive(Serialize)]
pub struct RunnerDetails {
    #[serde(flatten)]
    pub runner: Runner,
    pub tag_list: Vec<String>,
    pub run_untagged: bool,
    pub locked: bool,
    pub maximum_timeout: Option<u64>,
    pub access_level: String,
    /// Deprecated since 17.0: the most recently contacted manager's, or `null`.
    pub version: Option<String>,
    pub revision: Option<&'static str>,
    pub platform: Option<String>,
    pub architecture: Option<String>,
    pub contacted_at: Option<String>,
    pub maintenance_note: Option<String>,
    /// Present only with `include_projects` (the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projects: Option<Vec<Value>>,
    pub groups: Vec<Value>,
}

/// `Entities::Ci::RunnerManager`.
#[derive(Serialize)]
pub struct RunnerManager {
    pub id: u64,
    pub system_id: String,
    pub version: String,
    pub revision: &'static str,
    pub platform: String,
    pub architecture: String,
    pub created_at: String,
    pub contacted_at: String,
    pub ip_address: Option<String>,
    pub status: &'static str,
    pub job_execution_status: &'static str,
}

/// `Entities::Ci::Variable`; a hidden variable's value is `null`.
#[derive(Serialize)]
pub struct Variable {
    pub variable_type: String,
    pub key: String,
    pub value: Option<String>,
    pub hidden: bool,
    pub protected: bool,
    pub masked: bool,
    pub raw: bool,
    pub environment_scope: String,
    pub description: Option<String>,
}

/// `Entities::Ci::PipelineBasic`.
#[derive(Serialize)]
pub struct Pipeline {
    pub id: u64,
    pub iid: u64,
    pub project_id: u64,
    pub sha: String,
    #[serde(rename = "ref")]
    pub r#ref: String,
    pub status: String,
    pub source: String,
    pub created_at: String,
    pub updated_at: String,
    pub web_url: String,
}

/// `Entities::Commit` (the short form a job embeds).
#[derive(Serialize)]
pub struct CommitBasic {
    pub id: String,
    pub short_id: String,
    pub title: String,
    pub created_at: String,
}

/// `Entities::Ci::Job`; `failure_reason` only on failed jobs.
#[derive(Serialize)]
pub struct Job {
    pub id: u64,
    pub status: String,
    pub stage: String,
    pub name: String,
    #[serde(rename = "ref")]
    pub r#ref: String,
    pub tag: bool,
    pub coverage: Option<f64>,
    pub allow_failure: bool,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub erased_at: Option<String>,
    pub duration: Option<f64>,
    pub queued_duration: Option<f64>,
    pub user: UserBasic,
    pub commit: Option<CommitBasic>,
    pub pipeline: Option<Pipeline>,
    pub web_url: String,
    pub project: Value,
    pub artifacts: Vec<Value>,
    pub runner: Option<Runner>,
    pub runner_manager: Option<RunnerManager>,
    pub artifacts_expire_at: Option<String>,
    pub archived: bool,
    pub tag_list: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<Option<String>>,
}

/// `Entities::MergeRequest` (a subset).
#[derive(Serialize)]
pub struct MergeRequest {
    pub id: u64,
    pub iid: u64,
    pub project_id: u64,
    pub title: String,
    pub description: String,
    pub state: String,
    pub created_at: String,
    pub merged_at: Option<String>,
    pub source_branch: String,
    pub target_branch: String,
    pub sha: Option<String>,
    pub merge_status: &'static str,
    pub detailed_merge_status: &'static str,
    pub draft: bool,
    pub force_remove_source_branch: bool,
    pub author: UserBasic,
    pub web_url: String,
}

/// `Entities::Commit`.
#[derive(Serialize)]
pub struct Commit {
    pub id: String,
    pub short_id: String,
    pub title: String,
    pub message: String,
    pub author_name: String,
    pub author_email: String,
    pub authored_date: String,
    pub committer_name: String,
    pub committer_email: String,
    pub committed_date: String,
    pub created_at: String,
    pub parent_ids: Vec<String>,
    pub stats: Value,
    pub status: Option<String>,
    pub web_url: String,
}

/// The commit a branch points at, as `Entities::Branch` embeds it.
#[derive(Serialize)]
pub struct BranchCommit {
    pub id: String,
    pub short_id: String,
    pub title: String,
    pub message: String,
    pub created_at: String,
    pub parent_ids: Vec<String>,
}

/// `Entities::Branch`.
#[derive(Serialize)]
pub struct Branch {
    pub name: String,
    pub merged: bool,
    pub protected: bool,
    pub default: bool,
    pub developers_can_push: bool,
    pub developers_can_merge: bool,
    pub can_push: bool,
    pub web_url: String,
    pub commit: Option<BranchCommit>,
}

/// Any entity as the JSON a reply carries.
pub fn to_json<T: Serialize>(entity: &T) -> Value {
    serde_json::to_value(entity).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default()
    }

    fn basic() -> UserBasic {
        UserBasic {
            id: 1,
            username: "root",
            name: "Administrator",
            state: "active",
            locked: false,
            avatar_url: String::new(),
            web_url: String::new(),
        }
    }

    fn runner() -> Runner {
        Runner {
            id: 7,
            description: "d".into(),
            ip_address: None,
            active: true,
            paused: false,
            is_shared: false,
            runner_type: "group_type".into(),
            name: "gitlab-runner",
            online: None,
            created_by: basic(),
            created_at: "t".into(),
            status: "never_contacted",
            job_execution_status: "idle",
        }
    }

    #[test]
    fn runner_list_item_keeps_gitlabs_field_order_and_omits_tags() {
        let v = to_json(&runner());
        assert_eq!(
            keys(&v),
            [
                "id",
                "description",
                "ip_address",
                "active",
                "paused",
                "is_shared",
                "runner_type",
                "name",
                "online",
                "created_by",
                "created_at",
                "status",
                "job_execution_status"
            ]
        );
        assert!(v["online"].is_null(), "a never-contacted runner's online is null, not false");
    }

    #[test]
    fn runner_details_flatten_the_list_item_and_skip_absent_projects() {
        let d = RunnerDetails {
            runner: runner(),
            tag_list: vec!["ci-arm64".into()],
            run_untagged: false,
            locked: true,
            maximum_timeout: None,
            access_level: "not_protected".into(),
            version: None,
            revision: None,
            platform: None,
            architecture: None,
            contacted_at: None,
            maintenance_note: None,
            projects: None,
            groups: vec![],
        };
        let v = to_json(&d);
        let k = keys(&v);
        assert_eq!(&k[..13], keys(&to_json(&runner())).as_slice());
        assert!(k.contains(&"tag_list") && !k.contains(&"projects"));
        assert_eq!(v["tag_list"][0], "ci-arm64");
    }

    #[test]
    fn pipeline_ref_is_spelled_ref() {
        let p = Pipeline {
            id: 1,
            iid: 1,
            project_id: 2,
            sha: "s".into(),
            r#ref: "main".into(),
            status: "created".into(),
            source: "api".into(),
            created_at: "t".into(),
            updated_at: "t".into(),
            web_url: "u".into(),
        };
        assert_eq!(to_json(&p)["ref"], "main");
    }
}
