//! The audit against the live systems: observe, plan, and the preflight (every Kubernetes
//! write asked as `kubectl auth can-i`, every GitLab role checked), with the independent
//! checks asked at once.

use super::report::{
    AccessCheck, AccessScope, PreflightCheck, Report, needed_gitlab_access, needed_permissions, role_name,
    state_permissions,
};
use crate::live::gitlab::{CurrentUser, GitLabError, GitLabReader};
use crate::live::kube::{KubeError, KubeReader};
use crate::live::observe::{ObserveError, Progress, observe};
use crate::model::Plan;
use crate::spec::MigrationPlan;

/// Reads both systems (nothing written: the only POSTs are SelfSubjectAccessReviews) and
/// reports.
pub async fn run(
    spec: &MigrationPlan,
    spec_text: &str,
    kube: &KubeReader,
    gl: &GitLabReader,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Report, ObserveError> {
    // Who the token is does not depend on the world: asked with the reads.
    let (observation, me) = tokio::try_join!(observe(spec, kube, gl, progress), async {
        gl.current_user().await.map_err(ObserveError::from)
    })?;
    let plan = crate::phases::plan(&observation.state, spec, spec_text);
    let baseline =
        observation.state.releases.iter().find(|r| r["metadata"]["name"] == spec.runners.baseline_release.as_str());
    let namespace = crate::phases::runners::namespace_for(spec, baseline);
    let (preflight, access) = preflight_as(&plan, kube, gl, &me, Some(&namespace)).await?;
    Ok(Report::new(&plan, &observation.not_served, &observation.unreadable, preflight, access))
}

/// The preflight of `plan`: every Kubernetes write asked as `kubectl auth can-i` asks it, and
/// the token's role on every group and project it writes to. Apply asks it before its first
/// write, so a denied write stops the run before anything is written. With `state_namespace`,
/// also what keeping the migration's history and Lease there needs.
pub async fn preflight(
    plan: &Plan,
    kube: &KubeReader,
    gl: &GitLabReader,
    state_namespace: Option<&str>,
) -> Result<(Vec<PreflightCheck>, Vec<AccessCheck>), ObserveError> {
    let me = gl.current_user().await?;
    preflight_as(plan, kube, gl, &me, state_namespace).await
}

async fn preflight_as(
    plan: &Plan,
    kube: &KubeReader,
    gl: &GitLabReader,
    me: &CurrentUser,
    state_namespace: Option<&str>,
) -> Result<(Vec<PreflightCheck>, Vec<AccessCheck>), ObserveError> {
    let mut needs = needed_permissions(plan);
    needs.extend(state_namespace.map(state_permissions).unwrap_or_default());
    let can_i = async {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, need) in needs.into_iter().enumerate() {
            let kube = kube.clone();
            tasks.spawn(async move {
                let access = kube.can_i_on(need.verb, &need.group, &need.resource, need.namespace.as_deref()).await;
                (i, access.map(|a| PreflightCheck { need, allowed: a.allowed, reason: a.reason }))
            });
        }
        let mut checks = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (i, check) =
                joined.map_err(|e| KubeError::Decode { resource: "preflight".into(), cause: e.to_string() })?;
            checks.push((i, check?));
        }
        checks.sort_by_key(|(i, _)| *i);
        Ok::<_, ObserveError>(checks.into_iter().map(|(_, c)| c).collect::<Vec<_>>())
    };
    let roles = async {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, need) in needed_gitlab_access(plan).into_iter().enumerate() {
            let gl = gl.clone();
            let admin = me.is_admin;
            let uid = me.id;
            tasks.spawn(async move {
                let (have, allowed) = if admin {
                    ("administrator".to_string(), true)
                } else if need.scope == AccessScope::Instance {
                    ("no administrator rights".to_string(), false)
                } else {
                    match gl.access_level(need.scope == AccessScope::Project, &need.path, uid).await {
                        Ok(Some(level)) => (role_name(level).to_string(), level >= need.level),
                        Ok(None) => ("none".to_string(), false),
                        Err(e) => return (i, Err(e)),
                    }
                };
                (i, Ok(AccessCheck { need, have, allowed }))
            });
        }
        let mut checks = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (i, check) =
                joined.map_err(|e| GitLabError::Transport { url: gl.url().to_string(), cause: e.to_string() })?;
            checks.push((i, check?));
        }
        checks.sort_by_key(|(i, _)| *i);
        Ok::<_, ObserveError>(checks.into_iter().map(|(_, c)| c).collect::<Vec<_>>())
    };
    tokio::try_join!(can_i, roles)
}
