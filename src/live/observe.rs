//! Both readers together: the `ObservedState` a plan needs, read from a live cluster and a live
//! GitLab with nothing written, plus what could not be read because it is not installed.

use std::collections::BTreeMap;

use super::gitlab::{CiConfigPath, GitLabError, GitLabReader, ProjectInfo};
use super::kube::{self as k, KubeError, KubeReader};
use crate::model::{EndpointIdentity, GitLabIdentity, ObservedState, ProjectCi};
use crate::spec::{MigrationPlan, ScopeKind, VariableLevel};
use crate::vocab::{ArgoKind, Phase};

/// A project's CI file and its local include files.
type CiRead = (Option<crate::model::CiFile>, Option<Vec<crate::model::CiFile>>);

/// The local files `content` includes, read from the same branch: `None` when it includes
/// nothing, something not local, a file that is missing, or a file that includes more.
async fn local_includes_of(
    gl: &GitLabReader,
    project: &str,
    branch: &str,
    content: &str,
) -> Result<Option<Vec<crate::model::CiFile>>, GitLabError> {
    let Some(paths) = crate::ciyaml::local_includes(content) else { return Ok(None) };
    let mut out = Vec::new();
    for path in paths {
        match gl.ci_file(project, &path, branch).await? {
            // One level: an included file that includes more is not followed.
            Some(f) if !f.content.contains("include:") => {
                out.push(f);
            }
            _ => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// Where GitLab looks for a project's CI configuration when nothing else is set.
const DEFAULT_CI_FILE: &str = ".gitlab-ci.yml";

/// A read that failed.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(transparent)]
    GitLab(#[from] GitLabError),
}

/// What was read, and the kinds the cluster does not serve (`nodepools.karpenter.sh`, ...):
/// the audit reports those instead of treating their absence as "no objects".
#[derive(Debug, Clone)]
pub struct Observation {
    pub state: ObservedState,
    pub not_served: Vec<String>,
    /// What GitLab refused to show (403), with the phase that needs it: read as empty, so
    /// the audit must report it rather than trust the plan built on it.
    pub unreadable: Vec<(Phase, String)>,
}

fn argo_kind(kind: ArgoKind) -> k::Kind {
    match kind {
        ArgoKind::WorkflowTemplate => k::WORKFLOW_TEMPLATE,
        ArgoKind::CronWorkflow => k::CRON_WORKFLOW,
        ArgoKind::ClusterWorkflowTemplate => k::CLUSTER_WORKFLOW_TEMPLATE,
    }
}

/// What [`observe`] is reading, for a progress display (a bar on a terminal, lines otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A step began, e.g. `NodePools` or `runners of group platform`.
    Reading(String),
    /// The CI files of the group's other projects: `done` of `total` read.
    Files { done: usize, total: usize },
}

/// Reads everything `spec` plans over, telling `progress` as it goes. Reads only: the one
/// POST either reader can send (a review, a lint) is not used here.
pub async fn observe(
    spec: &MigrationPlan,
    kube: &KubeReader,
    gl: &GitLabReader,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Observation, ObserveError> {
    // The two systems are read at the same time, and within each what does not depend on
    // another answer is asked at once: an audit costs the longest chain of dependent reads,
    // not their sum.
    let (cluster_side, gitlab_side) =
        tokio::try_join!(observe_cluster(spec, kube, progress), observe_gitlab(spec, gl, progress))?;
    let ClusterSide { cluster, node_pools, node_classes, releases, argo, secrets, pool_workloads, not_served } =
        cluster_side;
    let GitLabSide { ids, runners, project_variables, group_variables, ci_file, other_projects, unreadable } =
        gitlab_side;
    Ok(Observation {
        state: ObservedState {
            endpoints: EndpointIdentity {
                cluster: Some(cluster),
                gitlab: Some(GitLabIdentity { url: gl.url().to_string(), ids }),
            },
            observed_at: Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            node_pools,
            node_classes,
            releases,
            secrets,
            runners,
            project_variables,
            group_variables,
            ci_file,
            argo,
            pool_workloads,
            other_projects,
        },
        not_served,
        unreadable,
    })
}

struct ClusterSide {
    cluster: crate::model::ClusterIdentity,
    node_pools: Vec<serde_json::Value>,
    node_classes: Vec<serde_json::Value>,
    releases: Vec<serde_json::Value>,
    argo: Vec<serde_json::Value>,
    secrets: Vec<crate::model::SecretMeta>,
    pool_workloads: Vec<serde_json::Value>,
    not_served: Vec<String>,
}

/// One kind, in every namespace asked for (concurrently); `None` when not served.
async fn list_kind(
    kube: &KubeReader,
    kind: k::Kind,
    namespaces: &[String],
) -> Result<Option<Vec<serde_json::Value>>, KubeError> {
    if namespaces.is_empty() {
        return kube.list(kind, None).await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, ns) in namespaces.iter().enumerate() {
        let (kube, ns) = (kube.clone(), ns.clone());
        tasks.spawn(async move { (i, kube.list(kind, Some(&ns)).await) });
    }
    let mut parts: Vec<(usize, Option<Vec<serde_json::Value>>)> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (i, listed) = joined.map_err(|e| KubeError::Decode { resource: kind.display(), cause: e.to_string() })?;
        parts.push((i, listed?));
    }
    parts.sort_by_key(|(i, _)| *i);
    if parts.iter().any(|(_, p)| p.is_none()) {
        return Ok(None);
    }
    Ok(Some(parts.into_iter().flat_map(|(_, p)| p.unwrap_or_default()).collect()))
}

async fn observe_cluster(
    spec: &MigrationPlan,
    kube: &KubeReader,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<ClusterSide, ObserveError> {
    let step = |what: &str| progress(Progress::Reading(what.to_string()));
    step("the cluster: identity, NodePools, EC2NodeClasses, Releases, Argo templates");
    let argo_lists = async {
        let mut out = Vec::new();
        for kind in &spec.workloads.argo.kinds {
            let namespaces =
                if *kind == ArgoKind::ClusterWorkflowTemplate { &[][..] } else { &spec.workloads.argo.namespaces };
            out.push((argo_kind(*kind), list_kind(kube, argo_kind(*kind), namespaces)));
        }
        let mut lists = Vec::new();
        for (kind, fut) in out {
            lists.push((kind, fut.await?));
        }
        Ok::<_, KubeError>(lists)
    };
    let (cluster, node_pools, node_classes, releases, argo_lists, pool_workloads) = tokio::try_join!(
        kube.identity(),
        list_kind(kube, k::NODE_POOL, &[]),
        list_kind(kube, k::EC2_NODE_CLASS, &[]),
        list_kind(kube, k::RELEASE, &[]),
        argo_lists,
        kube.pool_workloads(&spec.node_pool.name),
    )?;
    let mut not_served = Vec::new();
    let mut served = |kind: k::Kind, listed: Option<Vec<serde_json::Value>>| match listed {
        Some(items) => items,
        None => {
            not_served.push(kind.display());
            Vec::new()
        }
    };
    let node_pools = served(k::NODE_POOL, node_pools);
    let node_classes = served(k::EC2_NODE_CLASS, node_classes);
    let releases = served(k::RELEASE, releases);
    let mut argo = Vec::new();
    for (kind, listed) in argo_lists {
        argo.extend(served(kind, listed));
    }
    // The runner namespace: the plan's, else the baseline Release's.
    let namespace = spec.runners.namespace.clone().or_else(|| {
        releases
            .iter()
            .find(|r| r["metadata"]["name"] == spec.runners.baseline_release.as_str())
            .and_then(|r| r["spec"]["forProvider"]["namespace"].as_str().map(str::to_string))
    });
    step("runner Secrets (key names only)");
    let secrets = match &namespace {
        Some(ns) => kube.secrets(ns).await?,
        None => Vec::new(),
    };
    Ok(ClusterSide { cluster, node_pools, node_classes, releases, argo, secrets, pool_workloads, not_served })
}

struct GitLabSide {
    ids: BTreeMap<String, u64>,
    runners: Vec<crate::model::GitLabRunner>,
    project_variables: Vec<crate::model::CiVariable>,
    group_variables: BTreeMap<String, Vec<crate::model::CiVariable>>,
    ci_file: Option<crate::model::CiFile>,
    other_projects: Vec<ProjectCi>,
    unreadable: Vec<(Phase, String)>,
}

/// Variables, or empty with a note when the token may not read them (403).
async fn readable<F>(
    read: F,
    phase: Phase,
    what: String,
    unreadable: &std::sync::Mutex<Vec<(Phase, String)>>,
) -> Result<Vec<crate::model::CiVariable>, GitLabError>
where
    F: std::future::Future<Output = Result<Vec<crate::model::CiVariable>, GitLabError>>,
{
    match read.await {
        Err(GitLabError::Forbidden { .. }) => {
            unreadable.lock().unwrap_or_else(|e| e.into_inner()).push((phase, what));
            Ok(Vec::new())
        }
        read => read,
    }
}

async fn observe_gitlab(
    spec: &MigrationPlan,
    gl: &GitLabReader,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<GitLabSide, ObserveError> {
    let step = |what: &str| progress(Progress::Reading(what.to_string()));
    step("GitLab: projects, groups, runners, variables, CI files");
    let unreadable = std::sync::Mutex::new(Vec::new());
    // Every group once, however many roles it plays.
    let mut group_paths: Vec<String> = Vec::new();
    if let (ScopeKind::Group, Some(path)) = (spec.runners.scope.kind, &spec.runners.scope.path) {
        group_paths.push(path.clone());
    }
    if let Some(w) = &spec.workloads.gitlab {
        group_paths.push(w.group.clone());
    }
    group_paths.dedup();
    let mut var_groups: Vec<String> = Vec::new();
    if spec.pipeline.variables.level == VariableLevel::Group
        && let Some((parent, _)) = spec.pipeline.project.rsplit_once('/')
    {
        var_groups.push(parent.to_string());
    }
    if let Some(w) = &spec.workloads.gitlab {
        var_groups.push(w.group.clone());
    }
    var_groups.dedup();

    let pipeline = async {
        let project = gl.project(&spec.pipeline.project).await?;
        let branch = spec.pipeline.branch.clone().unwrap_or_else(|| project.default_branch.clone());
        // The plan's file, unless the plan kept the default and the project configures another.
        let file = match &project.ci_config {
            Some(CiConfigPath::Local(path)) if spec.pipeline.ci_file == DEFAULT_CI_FILE => path.clone(),
            Some(CiConfigPath::Elsewhere(at)) if spec.pipeline.ci_file == DEFAULT_CI_FILE => {
                unreadable.lock().unwrap_or_else(|e| e.into_inner()).push((
                    Phase::Pipeline,
                    format!(
                        "project {} takes its CI configuration from {at} (ci_config_path): tag the build jobs there, or name the file in pipeline.ciFile",
                        project.path
                    ),
                ));
                spec.pipeline.ci_file.clone()
            }
            _ => spec.pipeline.ci_file.clone(),
        };
        let ci_file = gl.ci_file(&spec.pipeline.project, &file, &branch).await?;
        Ok::<_, GitLabError>((project, ci_file))
    };
    let groups = async {
        let mut out = Vec::new();
        let mut tasks = tokio::task::JoinSet::new();
        for g in &group_paths {
            let (gl, g) = (gl.clone(), g.clone());
            tasks.spawn(async move { gl.group(&g).await });
        }
        while let Some(joined) = tasks.join_next().await {
            out.push(joined.map_err(|e| GitLabError::Transport { url: gl.url().to_string(), cause: e.to_string() })??);
        }
        Ok::<_, GitLabError>(out)
    };
    let group_vars = async {
        let mut out = BTreeMap::new();
        for g in &var_groups {
            let phase = if spec.workloads.gitlab.as_ref().is_some_and(|w| &w.group == g) {
                Phase::Workloads
            } else {
                Phase::Pipeline
            };
            let what = format!(
                "GitLab refused to list the variables of group {g} (403: reading them needs Owner); the plan assumes there are none"
            );
            out.insert(g.clone(), readable(gl.group_variables(g), phase, what, &unreadable).await?);
        }
        Ok::<_, GitLabError>(out)
    };
    let others = async {
        let Some(w) = &spec.workloads.gitlab else { return Ok::<_, GitLabError>(Vec::new()) };
        let projects: Vec<ProjectInfo> = gl
            .group_projects(&w.group)
            .await?
            .into_iter()
            .filter(|p| p.path != spec.pipeline.project && !w.exclude_projects.contains(&p.path))
            .collect();
        other_projects(gl, projects, &unreadable, progress).await
    };
    let project_vars_what = format!(
        "GitLab refused to list the variables of project {} (403: reading them needs Maintainer); the plan assumes there are none",
        spec.pipeline.project
    );
    let ((project, ci_file), groups, runners, project_variables, group_variables, other_projects) = tokio::try_join!(
        pipeline,
        groups,
        gl.runners(&spec.runners.scope),
        readable(gl.project_variables(&spec.pipeline.project), Phase::Pipeline, project_vars_what, &unreadable),
        group_vars,
        others,
    )?;
    let mut ids = BTreeMap::new();
    ids.insert(project.path.clone(), project.id);
    for g in groups {
        ids.insert(g.path, g.id);
    }
    let unreadable = unreadable.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok(GitLabSide { ids, runners, project_variables, group_variables, ci_file, other_projects, unreadable })
}

/// The group's other projects' CI files (and their local includes), concurrently within the
/// reader's limit, in list order.
async fn other_projects(
    gl: &GitLabReader,
    projects: Vec<ProjectInfo>,
    unreadable: &std::sync::Mutex<Vec<(Phase, String)>>,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Vec<ProjectCi>, GitLabError> {
    let total = projects.len();
    progress(Progress::Files { done: 0, total });
    let mut tasks = tokio::task::JoinSet::new();
    for (i, p) in projects.iter().enumerate() {
        let path = match &p.ci_config {
            Some(CiConfigPath::Local(path)) => path.clone(),
            Some(CiConfigPath::Elsewhere(at)) => {
                unreadable.lock().unwrap_or_else(|e| e.into_inner()).push((
                    Phase::Workloads,
                    format!(
                        "project {} takes its CI configuration from {at} (ci_config_path): pin its jobs there",
                        p.path
                    ),
                ));
                continue;
            }
            None => DEFAULT_CI_FILE.to_string(),
        };
        let (gl, project, branch) = (gl.clone(), p.path.clone(), p.default_branch.clone());
        tasks.spawn(async move {
            let file = match gl.ci_file(&project, &path, &branch).await {
                Ok(f) => f,
                Err(e @ GitLabError::TooLarge { .. }) => return (i, Ok(Err(e.to_string()))),
                Err(e) => return (i, Err(e)),
            };
            let includes = match &file {
                Some(f) => local_includes_of(&gl, &project, &branch, &f.content).await,
                None => Ok(None),
            };
            match includes {
                Ok(inc) => (i, Ok(Ok((file, inc)))),
                Err(e @ GitLabError::TooLarge { .. }) => (i, Ok(Err(e.to_string()))),
                Err(e) => (i, Err(e)),
            }
        });
    }
    let mut files: Vec<Option<CiRead>> = vec![None; total];
    let mut done = total - tasks.len();
    while let Some(joined) = tasks.join_next().await {
        let (i, read) = joined.map_err(|e| GitLabError::Transport {
            url: gl.url().to_string(),
            cause: format!("a read task failed: {e}"),
        })?;
        match read? {
            Ok(read) => files[i] = Some(read),
            // Too large to read: reported, and the project left out like one whose CI
            // configuration lives elsewhere.
            Err(why) => unreadable.lock().unwrap_or_else(|e| e.into_inner()).push((Phase::Workloads, why)),
        }
        done += 1;
        progress(Progress::Files { done, total });
    }
    Ok(projects
        .into_iter()
        .zip(files)
        .filter_map(|(p, read)| {
            read.map(|(file, includes)| ProjectCi { path: p.path, default_branch: p.default_branch, file, includes })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::live::gitlab::Options;
    use crate::live::secret::Token;
    use crate::model::fixtures;
    use crate::sandbox::{Options as SandboxOptions, Sandbox};

    /// What the planners decide on, without ids, versions and timestamps that differ by
    /// construction between a live read and a hand-written fixture.
    fn summary(s: &ObservedState) -> Value {
        let names = |v: &[Value]| -> Vec<String> {
            let mut n: Vec<String> = v
                .iter()
                .map(|o| {
                    format!(
                        "{}/{}/{}",
                        o["kind"].as_str().unwrap_or("?"),
                        o["metadata"]["namespace"].as_str().unwrap_or("-"),
                        o["metadata"]["name"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            n.sort();
            n
        };
        let arch_of_pool = |p: &Value| -> Value {
            let reqs =
                p.pointer("/spec/template/spec/requirements").and_then(Value::as_array).cloned().unwrap_or_default();
            json!(reqs.into_iter().filter(|r| r["key"] == "kubernetes.io/arch").collect::<Vec<_>>())
        };
        let mut argo: Vec<Value> = s
            .argo
            .iter()
            .map(|a| {
                let spec = a.pointer("/spec/workflowSpec").unwrap_or(&a["spec"]);
                json!([
                    a["kind"],
                    a["metadata"]["namespace"],
                    a["metadata"]["name"],
                    spec["nodeSelector"],
                    spec["affinity"]
                ])
            })
            .collect();
        argo.sort_by_key(|v| v.to_string());
        let mut vars: Vec<String> = s.project_variables.iter().map(|v| v.key.clone()).collect();
        vars.sort();
        json!({
            "nodePools": s.node_pools.iter().map(|p| json!([p["metadata"]["name"], arch_of_pool(p)])).collect::<Vec<_>>(),
            "nodeClasses": names(&s.node_classes),
            "releases": names(&s.releases),
            "secrets": s.secrets.iter().map(|x| json!([x.namespace, x.name, x.keys])).collect::<Vec<_>>(),
            "runners": s.runners.iter().map(|r| json!([r.description, r.tag_list, r.status, r.run_untagged, r.paused])).collect::<Vec<_>>(),
            "projectVariables": vars,
            "groupVariables": s.group_variables.iter().map(|(g, v)| json!([g, v.len()])).collect::<Vec<_>>(),
            "ciFile": s.ci_file.as_ref().map(|f| json!([f.project, f.path, f.branch, f.content])),
            "argo": argo,
            "poolWorkloads": names(&s.pool_workloads),
            "otherProjects": s.other_projects.iter().map(|p| json!([p.path, p.default_branch, p.file.as_ref().map(|f| &f.content),
                p.includes.as_ref().map(|i| i.iter().map(|f| json!([f.path, f.content])).collect::<Vec<_>>())])).collect::<Vec<_>>(),
        })
    }

    /// The planners' fixture world and the sandbox's seed are written separately (the sandbox
    /// never imports client code); this keeps them from drifting apart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn observing_the_sandbox_seed_gives_the_planners_starting_world() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = std::env::temp_dir().join(format!("archshift-observe-{}", std::process::id()));
        let sb = Sandbox::start(SandboxOptions { dir: Some(dir.clone()), ..Default::default() }).await.unwrap();
        let env = std::fs::read_to_string(dir.join("gitlab.env")).unwrap();
        let token = env.lines().find_map(|l| l.strip_prefix("GITLAB_TOKEN=")).unwrap();
        let spec = MigrationPlan::parse(include_str!("../../plans/sandbox.yaml"), "plans/sandbox.yaml").unwrap();
        let kube = KubeReader::connect(Some(&dir.join("kubeconfig")), None).await.unwrap();
        let gl = GitLabReader::new(&sb.gitlab_url, Token::new(token, "GITLAB_TOKEN"), Options::default()).unwrap();

        let seen = std::sync::Mutex::new(Vec::new());
        let obs = observe(&spec, &kube, &gl, &|p| seen.lock().unwrap().push(p)).await.unwrap();
        let seen = seen.into_inner().unwrap();
        assert!(seen.iter().any(|p| matches!(p, Progress::Reading(w) if w.starts_with("GitLab: "))), "{seen:?}");
        let files: Vec<_> = seen.iter().filter(|p| matches!(p, Progress::Files { .. })).collect();
        assert_eq!(files.first(), Some(&&Progress::Files { done: 0, total: 4 }), "{seen:?}");
        assert_eq!(files.last(), Some(&&Progress::Files { done: 4, total: 4 }), "{seen:?}");
        sb.stop();
        let _ = std::fs::remove_dir_all(&dir);

        assert_eq!(obs.not_served, ["clusterworkflowtemplates.argoproj.io"]);
        let cluster = obs.state.endpoints.cluster.clone().unwrap();
        assert!(!cluster.kube_system_uid.is_empty());
        let ids = &obs.state.endpoints.gitlab.as_ref().unwrap().ids;
        assert!(ids.contains_key("platform") && ids.contains_key("platform/kaniko-builder"), "{ids:?}");
        let (got, want) = (summary(&obs.state), summary(&fixtures::start()));
        let differ: Vec<String> = want
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| got[k.as_str()] != want[k.as_str()])
            .map(|k| format!("{k}:\n  sandbox:  {}\n  fixtures: {}", got[k.as_str()], want[k.as_str()]))
            .collect();
        assert!(differ.is_empty(), "the sandbox seed and the planner fixtures differ:\n{}", differ.join("\n"));
    }
}
