//! The plan file: what the operator wants, in YAML (`apiVersion: archshift/v1`,
//! `kind: MigrationPlan`).
//!
//! Parsing is strict: unknown fields are errors, and every error names the file, the line
//! and the column, and says what was expected. Defaults come from the migration plan the
//! tool was designed from (`spot-pool`, chart `gitlab-runner` 0.78.1, `CICD_TAG_*`, ...).
//! No IO here: callers hand in the text and the name to report.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::Arch;

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
    pub target: Target,
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
pub struct Target {
    /// Kube context; `None` means the current context of KUBECONFIG.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kube_context: Option<String>,
    pub gitlab: GitLabTarget,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct GitLabTarget {
    /// Environment variable holding the GitLab base URL.
    pub url_env: String,
    /// Environment variable holding the access token.
    pub token_env: String,
    /// A file holding the token, read instead of `tokenEnv` when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
}

impl Default for GitLabTarget {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
pub enum ArgoKind {
    WorkflowTemplate,
    CronWorkflow,
}

impl fmt::Display for ArgoKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArgoKind::WorkflowTemplate => "WorkflowTemplate",
            ArgoKind::CronWorkflow => "CronWorkflow",
        })
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

    /// Semantic checks serde cannot express. Returns the path of the offending field.
    fn validate(&self) -> Result<(), (Vec<String>, String)> {
        let err = |path: &[&str], msg: String| Err((path.iter().map(|s| s.to_string()).collect(), msg));
        if self.api_version != API_VERSION {
            return err(&["apiVersion"], format!("expected `{API_VERSION}`, found `{}`", self.api_version));
        }
        if self.kind != KIND {
            return err(&["kind"], format!("expected `{KIND}`, found `{}`", self.kind));
        }
        if self.node_pool.name.is_empty() {
            return err(&["nodePool", "name"], "must not be empty".into());
        }
        if self.node_pool.architectures.is_empty() {
            return err(&["nodePool", "architectures"], "list at least one of amd64, arm64".into());
        }
        let mut seen = Vec::new();
        for a in &self.node_pool.architectures {
            if seen.contains(a) {
                return err(&["nodePool", "architectures"], format!("`{a}` is listed twice"));
            }
            seen.push(*a);
        }
        let r = &self.runners;
        if !is_tag_safe(&r.tag_prefix) {
            return err(
                &["runners", "tagPrefix"],
                format!("`{}` is not a usable runner tag prefix: use letters, digits, `-`, `_` or `.`", r.tag_prefix),
            );
        }
        if !is_dns_label(&r.namespace) {
            return err(
                &["runners", "namespace"],
                format!("`{}` is not a valid namespace name (RFC 1123 label)", r.namespace),
            );
        }
        for (field, name) in [("baselineRelease", &r.baseline_release), ("releasePrefix", &r.release_prefix)] {
            if !is_dns_subdomain(name) {
                return err(
                    &["runners", field],
                    format!("`{name}` is not a valid object name (lowercase RFC 1123 subdomain)"),
                );
            }
        }
        for arch in Arch::ALL {
            if r.release_name(arch) == r.baseline_release {
                return err(
                    &["runners", "baselineRelease"],
                    format!(
                        "`{}` is also the name of the new {arch} Release (releasePrefix + `-{arch}`): it would overwrite the baseline Release kept for rollback; change releasePrefix or baselineRelease",
                        r.baseline_release
                    ),
                );
            }
        }
        match (r.scope.kind, &r.scope.path) {
            (ScopeKind::Instance, Some(_)) => {
                return err(&["runners", "scope", "path"], "an instance runner has no path; remove it".into());
            }
            (ScopeKind::Group | ScopeKind::Project, None) => {
                return err(&["runners", "scope"], "missing field `path` (the group or project path)".into());
            }
            (_, Some(p)) if p.trim().is_empty() || p.starts_with('/') || p.ends_with('/') => {
                return err(
                    &["runners", "scope", "path"],
                    format!("`{p}` is not a GitLab path like `platform` or `platform/ci`"),
                );
            }
            _ => {}
        }
        match (r.registration.style, &r.registration.registration_token_env) {
            (RegistrationStyle::RegistrationToken, None) => {
                return err(
                    &["runners", "registration"],
                    "missing field `registrationTokenEnv` (required with style registrationToken)".into(),
                );
            }
            (RegistrationStyle::AuthenticationToken, Some(_)) => {
                return err(
                    &["runners", "registration", "registrationTokenEnv"],
                    "only used with style registrationToken; remove it".into(),
                );
            }
            _ => {}
        }
        let p = &self.pipeline;
        if !p.project.contains('/') {
            return err(
                &["pipeline", "project"],
                format!("`{}` is not a project path like `group/project`", p.project),
            );
        }
        for (field, name) in [("amd64", &p.variables.amd64), ("arm64", &p.variables.arm64)] {
            if !is_variable_key(name) {
                return err(
                    &["pipeline", "variables", field],
                    format!("`{name}` is not a valid CI/CD variable key (letters, digits and `_`, at most 255)"),
                );
            }
        }
        if p.variables.amd64 == p.variables.arm64 {
            return err(&["pipeline", "variables"], "amd64 and arm64 need different variables".into());
        }
        if let Some(g) = &self.workloads.gitlab
            && g.group.trim().is_empty()
        {
            return err(&["workloads", "gitlab", "group"], "must not be empty".into());
        }
        Ok(())
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

fn is_tag_safe(s: &str) -> bool {
    !s.is_empty() && s.len() <= 200 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    // Leave room for the `-amd64` / `-token` suffixes the tool appends.
    s.len() <= 240 && s.split('.').all(is_dns_label)
}

fn is_variable_key(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
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
