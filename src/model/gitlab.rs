//! GitLab objects as the planners need them.

use serde::{Deserialize, Serialize};

/// A runner as `GET /runners/:id` describes it (list items carry no tags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitLabRunner {
    pub id: u64,
    pub description: String,
    /// `instance_type`, `group_type` or `project_type`.
    pub runner_type: String,
    /// GitLab's REST status: `online`, `offline`, `stale`, `never_contacted` or `paused`.
    pub status: String,
    pub paused: bool,
    pub tag_list: Vec<String>,
    pub run_untagged: bool,
    pub locked: bool,
    /// Architectures reported by the runner's managers (`GET /runners/:id/managers`).
    #[serde(default)]
    pub manager_architectures: Vec<String>,
    /// `not_protected` or `ref_protected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_timeout: Option<u64>,
}

impl GitLabRunner {
    pub fn is_online(&self) -> bool {
        self.status == "online"
    }
}

/// A CI/CD variable. Masked and hidden variables carry no value: the adapter drops it at the
/// boundary so that it cannot reach a plan, a diff or a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiVariable {
    pub key: String,
    pub value: Option<String>,
    pub variable_type: String,
    pub protected: bool,
    pub masked: bool,
    pub hidden: bool,
    pub raw: bool,
    pub environment_scope: String,
}

impl CiVariable {
    /// The variable archshift creates for a runner tag: visible on every ref, not expanded.
    pub fn tag_variable(key: &str, value: &str) -> Self {
        Self {
            key: key.into(),
            value: Some(value.into()),
            variable_type: "env_var".into(),
            protected: false,
            masked: false,
            hidden: false,
            raw: true,
            environment_scope: "*".into(),
        }
    }

    /// The REST body for create/update (and the document shown in diffs).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "key": self.key,
            "value": self.value,
            "variable_type": self.variable_type,
            "protected": self.protected,
            "masked": self.masked,
            "raw": self.raw,
            "environment_scope": self.environment_scope,
        })
    }

    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        let masked = v["masked"].as_bool().unwrap_or(false);
        let hidden = v["hidden"].as_bool().unwrap_or(false);
        Some(Self {
            key: v["key"].as_str()?.to_string(),
            value: if masked || hidden { None } else { v["value"].as_str().map(str::to_string) },
            variable_type: v["variable_type"].as_str().unwrap_or("env_var").to_string(),
            protected: v["protected"].as_bool().unwrap_or(false),
            masked,
            hidden,
            raw: v["raw"].as_bool().unwrap_or(false),
            environment_scope: v["environment_scope"].as_str().unwrap_or("*").to_string(),
        })
    }
}

/// A file in a repository at a branch, with what optimistic locking needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiFile {
    pub project: String,
    pub path: String,
    pub branch: String,
    pub content: String,
    pub blob_id: String,
    /// The last commit that touched this file (not the branch head).
    pub last_commit_id: String,
}

/// Another project of the workloads group, with its CI file when it has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectCi {
    pub path: String,
    pub default_branch: String,
    pub file: Option<CiFile>,
    /// The file's `include:` files, read from the same branch, when every include is a
    /// local file that exists (and includes nothing itself); `None` otherwise or without
    /// includes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub includes: Option<Vec<CiFile>>,
}
