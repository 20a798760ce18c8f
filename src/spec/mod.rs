//! The plan file: what the operator wants, in YAML (`apiVersion: archshift/v1`,
//! `kind: MigrationPlan`).
//!
//! Parsing is strict: unknown fields are errors, and every error names the file, the line
//! and the column, and says what was expected. Defaults come from the migration plan the
//! tool was designed from (`spot-pool`, chart `gitlab-runner` 0.78.1, `CICD_TAG_*`, ...).
//! No IO here: callers hand in the text and the name to report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::vocab::{Arch, ArgoKind};

pub const API_VERSION: &str = "archshift/v1";
pub const KIND: &str = "MigrationPlan";

/// A plan file, as written by the operator.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MigrationPlan {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default)]
    pub target: Endpoints,
    #[serde(default)]
    pub node_pool: NodePoolSpec,
    pub runners: RunnersSpec,
    pub pipeline: PipelineSpec,
    #[serde(default)]
    pub workloads: WorkloadsSpec,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Where the cluster and GitLab are. Secrets are never in the plan: only the names of the
/// environment variables (or a file path) that hold them.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Endpoints {
    /// Kube context; `None` means the current context of KUBECONFIG.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kube_context: Option<String>,
    pub gitlab: GitLabEndpoint,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct GitLabEndpoint {
    /// Environment variable holding the GitLab base URL.
    pub url_env: String,
    /// Environment variable holding the access token.
    pub token_env: String,
    /// A file holding the token, read instead of `tokenEnv` when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
}

impl Default for GitLabEndpoint {
    fn default() -> Self {
        Self { url_env: "GITLAB_URL".into(), token_env: "GITLAB_TOKEN".into(), token_file: None }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct NodePoolSpec {
    pub name: String,
    pub architectures: Vec<Arch>,
}

impl Default for NodePoolSpec {
    fn default() -> Self {
        Self { name: "spot-pool".into(), architectures: vec![Arch::Amd64, Arch::Arm64] }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunnersSpec {
    /// Tags are `<tagPrefix>-amd64` and `<tagPrefix>-arm64`.
    pub tag_prefix: String,
    /// Where the runners are registered in GitLab.
    pub scope: RunnerScope,
    #[serde(default = "default_runner_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub chart: ChartSpec,
    /// The existing amd64-only Release, kept as the rollback target.
    #[serde(default = "default_baseline")]
    pub baseline_release: String,
    /// New Releases are `<releasePrefix>-amd64` and `<releasePrefix>-arm64`.
    #[serde(default = "default_baseline")]
    pub release_prefix: String,
    /// `gitlabUrl` for the chart; default: the baseline Release's, else the target URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitlab_url: Option<String>,
    /// Places the runner manager pod (chart `nodeSelector`); the arch label is added.
    #[serde(default = "default_manager_selector")]
    pub manager_node_selector: BTreeMap<String, String>,
    /// Places job pods (`[runners.kubernetes.node_selector]`); the arch label is added.
    #[serde(default = "default_job_selector")]
    pub job_node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub registration: Registration,
}

fn default_runner_namespace() -> String {
    "gitlab-runner".into()
}
fn default_baseline() -> String {
    "gitlab-runner".into()
}
fn default_manager_selector() -> BTreeMap<String, String> {
    BTreeMap::from([("lifecycle".into(), "OnDemand".into()), ("karpenter.sh/nodepool".into(), "system-pool".into())])
}
fn default_job_selector() -> BTreeMap<String, String> {
    BTreeMap::from([("karpenter.sh/nodepool".into(), "spot-pool".into()), ("lifecycle".into(), "Ec2Spot".into())])
}

impl RunnersSpec {
    pub fn tag(&self, arch: Arch) -> String {
        format!("{}-{}", self.tag_prefix, arch)
    }
    pub fn release_name(&self, arch: Arch) -> String {
        format!("{}-{}", self.release_prefix, arch)
    }
    /// The Secret holding the runner authentication token of one architecture's runner.
    pub fn token_secret_name(&self, arch: Arch) -> String {
        format!("{}-token", self.release_name(arch))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ChartSpec {
    pub name: String,
    pub repository: String,
    pub version: String,
}

impl Default for ChartSpec {
    fn default() -> Self {
        Self { name: "gitlab-runner".into(), repository: "https://charts.gitlab.io/".into(), version: "0.78.1".into() }
    }
}

/// Which GitLab runner type to create: `instance` (admin only), `group` or `project`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunnerScope {
    #[serde(rename = "type")]
    pub kind: ScopeKind,
    /// Group or project path; required for `group` and `project`, absent for `instance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ScopeKind {
    Instance,
    Group,
    Project,
}

impl ScopeKind {
    /// The `runner_type` value of `POST /user/runners`.
    pub fn runner_type(self) -> &'static str {
        match self {
            ScopeKind::Instance => "instance_type",
            ScopeKind::Group => "group_type",
            ScopeKind::Project => "project_type",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Registration {
    pub style: RegistrationStyle,
    /// Only for `registrationToken`: the environment variable holding the legacy token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_token_env: Option<String>,
}

impl Default for Registration {
    fn default() -> Self {
        Self { style: RegistrationStyle::AuthenticationToken, registration_token_env: None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RegistrationStyle {
    /// GitLab 16+: create the runner with `POST /user/runners`, keep its `glrt-` token in a Secret.
    AuthenticationToken,
    /// Deprecated since GitLab 15.6: the chart registers with a registration token.
    RegistrationToken,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PipelineSpec {
    /// Path of the project that builds for both architectures, e.g. `platform/kaniko-builder`.
    pub project: String,
    #[serde(default)]
    pub variables: TagVariables,
    #[serde(default = "default_ci_file")]
    pub ci_file: String,
    #[serde(default = "default_ref")]
    pub branch: String,
    #[serde(default)]
    pub jobs: JobMapping,
    #[serde(default)]
    pub delivery: Delivery,
}

fn default_ci_file() -> String {
    ".gitlab-ci.yml".into()
}
fn default_ref() -> String {
    "main".into()
}

/// Names of the CI/CD variables holding each architecture's runner tag.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TagVariables {
    pub amd64: String,
    pub arm64: String,
}

impl Default for TagVariables {
    fn default() -> Self {
        Self { amd64: "CICD_TAG_AMD64".into(), arm64: "CICD_TAG_ARM64".into() }
    }
}

impl TagVariables {
    pub fn name(&self, arch: Arch) -> &str {
        match arch {
            Arch::Amd64 => &self.amd64,
            Arch::Arm64 => &self.arm64,
        }
    }
    /// The tag as written in `.gitlab-ci.yml`: `$CICD_TAG_ARM64`.
    pub fn reference(&self, arch: Arch) -> String {
        format!("${}", self.name(arch))
    }
}

/// How build jobs map to architectures: explicit job names win; otherwise jobs are detected
/// by an architecture variable (`ARCH`, ...) or by a name ending in an architecture.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct JobMapping {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub explicit: BTreeMap<String, Arch>,
    /// Detect jobs by `ARCH`-like variables and name suffixes (default true).
    #[serde(default = "yes")]
    pub detect: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Delivery {
    pub mode: DeliveryMode,
    /// Branch that carries the change when `mode` is `mergeRequest`.
    #[serde(default = "default_mr_branch")]
    pub branch: String,
}

fn default_mr_branch() -> String {
    "archshift/multiarch-runners".into()
}

impl Default for Delivery {
    fn default() -> Self {
        Self { mode: DeliveryMode::MergeRequest, branch: default_mr_branch() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DeliveryMode {
    MergeRequest,
    DirectCommit,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct WorkloadsSpec {
    pub argo: ArgoSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gitlab: Option<GitLabWorkloads>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ArgoSpec {
    /// Namespaces to scan; empty means every namespace.
    pub namespaces: Vec<String>,
    pub kinds: Vec<ArgoKind>,
}

impl Default for ArgoSpec {
    fn default() -> Self {
        Self { namespaces: Vec::new(), kinds: vec![ArgoKind::WorkflowTemplate, ArgoKind::CronWorkflow] }
    }
}

/// Other projects of a group whose untagged jobs get pinned to amd64.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GitLabWorkloads {
    pub group: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_projects: Vec<String>,
    #[serde(default)]
    pub delivery: Delivery,
}

/// A plan file that could not be read: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct SpecError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl MigrationPlan {
    /// Parse and validate a plan. `file` is the name used in error messages.
    pub fn parse(text: &str, file: &str) -> Result<Self, SpecError> {
        let plan: MigrationPlan = yaml_serde::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            SpecError { file: file.into(), line, column, message: tidy_serde_message(&e.to_string()) }
        })?;
        plan.validate().map_err(|(path, message)| {
            let (line, column) = locate(text, &path).unwrap_or((1, 1));
            SpecError { file: file.into(), line, column, message: format!("{}: {message}", path.join(".")) }
        })?;
        Ok(plan)
    }

    /// Architectures the runners and pool are built for, in plan order.
    pub fn architectures(&self) -> &[Arch] {
        &self.node_pool.architectures
    }
}

/// serde messages name Rust types; say what the YAML should look like instead.
fn tidy_serde_message(msg: &str) -> String {
    // yaml_serde appends " at line L column C"; we print the location in front.
    let msg = match msg.find(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    msg.replace("struct ", "").replace("enum ", "")
}

/// 1-based line and column of the value at `path` in a YAML text, or of the deepest
/// ancestor that exists (so a missing field points at its parent mapping's key).
pub fn locate(text: &str, path: &[String]) -> Option<(usize, usize)> {
    let parsed = yaml_edit::YamlFile::parse(text);
    let doc = parsed.tree().document()?;
    let mut mapping = doc.as_mapping()?;
    let mut found = None;
    for segment in path {
        let Some(entry) = mapping.find_entry_by_key(segment.as_str()) else { break };
        let Some(key) = entry.key_node() else { break };
        found = Some(yaml_edit::byte_offset_to_line_column(text, key.byte_range().start as usize));
        match entry.value_node().and_then(|v| v.as_mapping().cloned()) {
            Some(m) => mapping = m,
            None => break,
        }
    }
    found.map(|lc| (lc.line, lc.column))
}

#[cfg(test)]
mod tests;
mod validate;
