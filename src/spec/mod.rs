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
    #[serde(default)]
    pub rollback: RollbackSpec,
    #[serde(default)]
    pub waits: Waits,
}

/// How long the engine waits for each kind of verification, in seconds.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Waits {
    /// A Release to report Ready and Synced (Helm install or upgrade).
    pub release_ready: u64,
    /// A runner to come online (its pod scheduled, a node launched, GitLab contacted).
    pub runner_online: u64,
    /// A merge request to be merged and a pipeline to run.
    pub pipeline: u64,
}

impl Default for Waits {
    fn default() -> Self {
        Self { release_ready: 600, runner_online: 600, pipeline: 3600 }
    }
}

/// How rollback routes work back to the baseline runner.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct RollbackSpec {
    /// A tag the baseline runner carries; rollback sets the amd64 tag variables to it so amd64
    /// jobs go back to the baseline at once. Default: the baseline runner's first tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reroute_tag: Option<String>,
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
    /// Namespace of the runners and their token Secrets; default: the baseline's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
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
    /// Labels laid over the runner manager pod's `nodeSelector`; default: the baseline's
    /// (inherited), with the architecture `managerArch` says.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub manager_node_selector: BTreeMap<String, String>,
    /// Which architecture the manager pod runs on. Its jobs' architecture does not depend on it.
    #[serde(default)]
    pub manager_arch: ManagerArch,
    /// Labels laid over the job pods' `[runners.kubernetes.node_selector]`; default: the
    /// baseline's (inherited) with `karpenter.sh/nodepool` defaulting to `nodePool.name`; the
    /// architecture is always added.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub job_node_selector: BTreeMap<String, String>,
    /// Pin the baseline Release's job pods to amd64 before the pool widens (default true). The
    /// baseline is the rollback target and runs untagged jobs: unpinned, they float to arm64
    /// nodes once the pool allows arm64. `false` blocks the widening instead.
    #[serde(default = "yes")]
    pub pin_baseline: bool,
    #[serde(default)]
    pub registration: Registration,
    /// Tags the new runners carry besides `<prefix>-<arch>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_tags: Vec<String>,
    /// `not_protected` (default) or `ref_protected` (jobs of protected refs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_level: Option<AccessLevel>,
    /// Seconds a job may run on the new runners (GitLab requires at least 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_timeout: Option<u64>,
    /// `managed` (default): archshift creates the runners and writes their token Secrets.
    /// `external`: the Secrets come from a secret store (External Secrets, Vault); archshift
    /// expects the runners and Secrets to exist and only checks them.
    #[serde(default)]
    pub token_secrets: TokenSecrets,
    /// Per-architecture additions to the new Releases.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_arch: BTreeMap<Arch, ArchOverrides>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLevel {
    NotProtected,
    RefProtected,
}

impl AccessLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLevel::NotProtected => "not_protected",
            AccessLevel::RefProtected => "ref_protected",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TokenSecrets {
    #[default]
    Managed,
    External,
}

/// What one architecture's Release gets besides the shared settings.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ArchOverrides {
    /// Laid over the job pods' node selector (after `jobNodeSelector`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub job_node_selector: BTreeMap<String, String>,
    /// Job pod tolerations, as the runner config writes them: `"key=value" = "NoSchedule"`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub job_tolerations: BTreeMap<String, String>,
    /// Chart values deep-merged into the Release's values (resources, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<yaml_serde::Value>,
}

fn default_baseline() -> String {
    "gitlab-runner".into()
}

/// The architecture of the runner manager pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ManagerArch {
    /// The same as the runner's jobs (the manager pod is placed like them).
    #[default]
    Follow,
    /// amd64 for both runners: the manager's pool need not allow arm64.
    Amd64,
    /// No architecture constraint on the manager pod (its image is multi-arch).
    Any,
}

impl ManagerArch {
    /// The `kubernetes.io/arch` value for the manager of `arch`'s runner, if any.
    pub fn for_runner(self, arch: Arch) -> Option<Arch> {
        match self {
            ManagerArch::Follow => Some(arch),
            ManagerArch::Amd64 => Some(Arch::Amd64),
            ManagerArch::Any => None,
        }
    }
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

impl RunnerScope {
    /// Whether a runner of this scope can take jobs of the project (or the group's projects) at `path`.
    pub fn covers(&self, path: &str) -> bool {
        match (self.kind, &self.path) {
            (ScopeKind::Instance, _) => true,
            (ScopeKind::Group, Some(g)) => path == g || path.starts_with(&format!("{g}/")),
            (ScopeKind::Project, Some(p)) => path == p,
            _ => false,
        }
    }
}

impl ScopeKind {
    /// The `runner_type` value of `POST /user/runners`.
    pub fn noun(self) -> &'static str {
        match self {
            ScopeKind::Instance => "instance",
            ScopeKind::Group => "group",
            ScopeKind::Project => "project",
        }
    }

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
    /// The branch the CI file is read from and changes are merged into; default: the
    /// project's default branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default)]
    pub jobs: JobMapping,
    #[serde(default)]
    pub delivery: Delivery,
}

fn default_ci_file() -> String {
    ".gitlab-ci.yml".into()
}

/// Names of the CI/CD variables holding each architecture's runner tag.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TagVariables {
    pub amd64: String,
    pub arm64: String,
    /// Where they are defined: `project` (default) or `group`, the pipeline project's group,
    /// so every project of the group can use them.
    pub level: VariableLevel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum VariableLevel {
    #[default]
    Project,
    Group,
}

impl Default for TagVariables {
    fn default() -> Self {
        Self { amd64: "CICD_TAG_AMD64".into(), arm64: "CICD_TAG_ARM64".into(), level: VariableLevel::Project }
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
    /// Whether archshift merges the merge request itself once it is open (after CI lint);
    /// by default a person merges and the verification waits for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub merge: bool,
}

fn default_mr_branch() -> String {
    "archshift/multiarch-runners".into()
}

impl Default for Delivery {
    fn default() -> Self {
        Self { mode: DeliveryMode::MergeRequest, branch: default_mr_branch(), merge: false }
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
    /// Only objects carrying all these labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub label_selector: BTreeMap<String, String>,
    /// Objects left alone: `namespace/name`, or `name` for cluster-scoped kinds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

impl Default for ArgoSpec {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            kinds: vec![ArgoKind::WorkflowTemplate, ArgoKind::CronWorkflow, ArgoKind::ClusterWorkflowTemplate],
            label_selector: BTreeMap::new(),
            exclude: Vec::new(),
        }
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
        bounded(text).map_err(|(line, message)| SpecError { file: file.into(), line, column: 1, message })?;
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

/// A plan file is a few kilobytes: one past these bounds is hostile or a mistake, and is
/// refused before the YAML parser sees it (a document nested 100,000 levels deep takes it
/// seconds and deep recursion).
const MAX_PLAN_BYTES: usize = 1 << 20;
const MAX_NESTING: usize = 64;

/// `Err((line, why))` for a plan too large or nested too deeply (flow brackets or indentation).
fn bounded(text: &str) -> Result<(), (usize, String)> {
    if text.len() > MAX_PLAN_BYTES {
        return Err((1, format!("the plan file is {} bytes; a plan is at most {MAX_PLAN_BYTES}", text.len())));
    }
    let mut depth = 0usize;
    for (i, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches([' ', '-']).len();
        if indent > 2 * MAX_NESTING {
            return Err((i + 1, format!("nested deeper than {MAX_NESTING} levels")));
        }
        let mut quote: Option<char> = None;
        for c in line.chars() {
            match (quote, c) {
                (None, '#') => break,
                (None, '\'' | '"') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '[' | '{') => depth += 1,
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth > MAX_NESTING {
                return Err((i + 1, format!("nested deeper than {MAX_NESTING} levels")));
            }
        }
    }
    Ok(())
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
pub use validate::{is_dns_label, is_dns_subdomain};
