//! Semantic checks of a plan file that serde cannot express. Each failure names the path of
//! the offending field, which `MigrationPlan::parse` turns into a line and column.

use super::{API_VERSION, Arch, KIND, MigrationPlan, RegistrationStyle, ScopeKind};

impl MigrationPlan {
    /// Semantic checks serde cannot express. Returns the path of the offending field.
    pub(super) fn validate(&self) -> Result<(), (Vec<String>, String)> {
        let err = |path: &[&str], msg: String| Err((path.iter().map(|s| s.to_string()).collect(), msg));
        if self.api_version != API_VERSION {
            return err(&["apiVersion"], format!("expected `{API_VERSION}`, found `{}`", self.api_version));
        }
        if self.kind != KIND {
            return err(&["kind"], format!("expected `{KIND}`, found `{}`", self.kind));
        }
        // Names reach journal paths, URLs and object names: checked as the APIs check them.
        if !self.metadata.name.is_empty() && !is_dns_subdomain(&self.metadata.name) {
            return err(
                &["metadata", "name"],
                format!(
                    "`{}` is not a valid name (lowercase RFC 1123 subdomain, as Kubernetes object names)",
                    self.metadata.name
                ),
            );
        }
        if self.node_pool.name.is_empty() {
            return err(&["nodePool", "name"], "must not be empty".into());
        }
        if !is_dns_subdomain(&self.node_pool.name) {
            return err(
                &["nodePool", "name"],
                format!("`{}` is not a valid NodePool name (RFC 1123 subdomain)", self.node_pool.name),
            );
        }
        for ns in &self.workloads.argo.namespaces {
            if !is_dns_label(ns) {
                return err(
                    &["workloads", "argo", "namespaces"],
                    format!("`{ns}` is not a valid namespace name (RFC 1123 label)"),
                );
            }
        }
        if !is_gitlab_path(&self.pipeline.project) {
            return err(&["pipeline", "project"], format!("`{}` is not a GitLab project path", self.pipeline.project));
        }
        if let Some(path) = &self.runners.scope.path
            && !is_gitlab_path(path)
            && path.parse::<u64>().is_err()
        {
            return err(&["runners", "scope", "path"], format!("`{path}` is not a GitLab group or project path"));
        }
        if let Some(g) = &self.workloads.gitlab {
            for (field, path) in
                std::iter::once(("group", &g.group)).chain(g.exclude_projects.iter().map(|p| ("excludeProjects", p)))
            {
                if !path.trim().is_empty() && !is_gitlab_path(path) {
                    return err(&["workloads", "gitlab", field], format!("`{path}` is not a GitLab path"));
                }
            }
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
        if let Some(ns) = &r.namespace
            && !is_dns_label(ns)
        {
            return err(&["runners", "namespace"], format!("`{ns}` is not a valid namespace name (RFC 1123 label)"));
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
        // Jobs are retagged onto the new runners: those must be able to take them.
        if !r.scope.covers(&p.project) {
            return err(
                &["pipeline", "project"],
                format!("`{}` is outside runners.scope: the new runners could never take its jobs", p.project),
            );
        }
        if let Some(g) = &self.workloads.gitlab {
            let covered = match r.scope.kind {
                ScopeKind::Project => false,
                _ => r.scope.covers(&g.group),
            };
            if !covered {
                return err(
                    &["workloads", "gitlab", "group"],
                    format!(
                        "`{}` is outside runners.scope: its projects' jobs would be retagged onto a runner that cannot take them and stay pending",
                        g.group
                    ),
                );
            }
        }
        for (i, t) in r.extra_tags.iter().enumerate() {
            if !is_tag_safe(t) || Arch::ALL.iter().any(|a| *t == r.tag(*a)) {
                return err(
                    &["runners", "extraTags"],
                    format!(
                        "entry {} `{t}` is not a usable extra tag (one of archshift's own, or not letters, digits, `-`, `_`, `.`)",
                        i + 1
                    ),
                );
            }
        }
        if r.extra_tags.len() + 1 > 50 {
            return err(&["runners", "extraTags"], "GitLab allows at most 50 tags on a runner".into());
        }
        if let Some(t) = r.maximum_timeout
            && t < 600
        {
            return err(&["runners", "maximumTimeout"], format!("{t} is below GitLab's minimum of 600 seconds"));
        }
        if let Some(tag) = &self.rollback.reroute_tag
            && (tag.trim().is_empty() || tag.starts_with(&format!("{}-", r.tag_prefix)))
        {
            return err(
                &["rollback", "rerouteTag"],
                format!(
                    "`{tag}` must be a tag of the baseline runner, not empty and not one of archshift's `{}-*` tags",
                    r.tag_prefix
                ),
            );
        }
        Ok(())
    }
}

fn is_tag_safe(s: &str) -> bool {
    !s.is_empty() && s.len() <= 200 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns_subdomain(s: &str) -> bool {
    // Leave room for the `-amd64` / `-token` suffixes the tool appends.
    s.len() <= 240 && s.split('.').all(is_dns_label)
}

/// A GitLab namespace or project path as GitLab's path rules allow it (`Gitlab::PathRegex`):
/// segments of letters, digits, `_`, `-` and `.`, none of them `.` or `..`, none starting with
/// `-` or ending in `.git` or `.atom`.
fn is_gitlab_path(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && !seg.starts_with('-')
                && !seg.ends_with(".git")
                && !seg.ends_with(".atom")
                && seg.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

fn is_variable_key(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
