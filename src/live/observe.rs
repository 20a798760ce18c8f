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
    let step = |what: &str| progress(Progress::Reading(what.to_string()));
    let mut not_served = Vec::new();
    let (cluster, node_pools, node_classes, releases, argo) = {
        let mut list_all = async |kind: k::Kind, namespaces: &[String]| -> Result<Vec<serde_json::Value>, KubeError> {
            let scopes: Vec<Option<&str>> =
                if namespaces.is_empty() { vec![None] } else { namespaces.iter().map(|n| Some(n.as_str())).collect() };
            let mut out = Vec::new();
            for ns in scopes {
                match kube.list(kind, ns).await? {
                    Some(items) => out.extend(items),
                    None => {
                        not_served.push(kind.display());
                        break;
                    }
                }
            }
            Ok(out)
        };

        step("the cluster's identity");
        let cluster = kube.identity().await?;
        step("NodePools and EC2NodeClasses");
        let node_pools = list_all(k::NODE_POOL, &[]).await?;
        let node_classes = list_all(k::EC2_NODE_CLASS, &[]).await?;
        step("runner Releases");
        let releases = list_all(k::RELEASE, &[]).await?;
        step("Argo templates");
        let mut argo = Vec::new();
        for kind in &spec.workloads.argo.kinds {
            let namespaces =
                if *kind == ArgoKind::ClusterWorkflowTemplate { &[][..] } else { &spec.workloads.argo.namespaces };
            argo.extend(list_all(argo_kind(*kind), namespaces).await?);
        }
        (cluster, node_pools, node_classes, releases, argo)
    };
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
    step(&format!("workloads on NodePool {}", spec.node_pool.name));
    let pool_workloads = kube.pool_workloads(&spec.node_pool.name).await?;

    let mut ids = BTreeMap::new();
    step(&format!("GitLab project {}", spec.pipeline.project));
    let project = gl.project(&spec.pipeline.project).await?;
    ids.insert(project.path.clone(), project.id);
    if let (ScopeKind::Group, Some(path)) = (spec.runners.scope.kind, &spec.runners.scope.path) {
        let g = gl.group(path).await?;
        ids.insert(g.path, g.id);
    }
    step("runners");
    let runners = gl.runners(&spec.runners.scope).await?;
    step("CI/CD variables");
    let mut unreadable = Vec::new();
    let project_variables = match gl.project_variables(&spec.pipeline.project).await {
        Err(GitLabError::Forbidden { .. }) => {
            unreadable.push((
                Phase::Pipeline,
                format!(
                    "GitLab refused to list the variables of project {} (403: reading them needs Maintainer); the plan assumes there are none",
                    spec.pipeline.project
                ),
            ));
            Vec::new()
        }
        read => read?,
    };
    let mut groups: Vec<String> = Vec::new();
    if spec.pipeline.variables.level == VariableLevel::Group
        && let Some((parent, _)) = spec.pipeline.project.rsplit_once('/')
    {
        groups.push(parent.to_string());
    }
    if let Some(w) = &spec.workloads.gitlab {
        groups.push(w.group.clone());
    }
    groups.dedup();
    let mut group_variables = BTreeMap::new();
    for g in groups {
        let vars = match gl.group_variables(&g).await {
            Err(GitLabError::Forbidden { .. }) => {
                let phase = if spec.workloads.gitlab.as_ref().is_some_and(|w| w.group == g) {
                    Phase::Workloads
                } else {
                    Phase::Pipeline
                };
                unreadable.push((
                    phase,
                    format!(
                        "GitLab refused to list the variables of group {g} (403: reading them needs Owner); the plan assumes there are none"
                    ),
                ));
                Vec::new()
            }
            read => read?,
        };
        group_variables.insert(g.clone(), vars);
    }
    let branch = spec.pipeline.branch.clone().unwrap_or_else(|| project.default_branch.clone());
    // The plan's file, unless the plan kept the default and the project configures another.
    let pipeline_file = match &project.ci_config {
        Some(CiConfigPath::Local(path)) if spec.pipeline.ci_file == DEFAULT_CI_FILE => path.clone(),
        Some(CiConfigPath::Elsewhere(at)) if spec.pipeline.ci_file == DEFAULT_CI_FILE => {
            unreadable.push((
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
    step(&format!("{}:{pipeline_file}", project.path));
    let ci_file = gl.ci_file(&spec.pipeline.project, &pipeline_file, &branch).await?;

    let mut other_projects = Vec::new();
    if let Some(w) = &spec.workloads.gitlab {
        step(&format!("projects of group {}", w.group));
        let g = gl.group(&w.group).await?;
        ids.insert(g.path, g.id);
        let projects: Vec<ProjectInfo> = gl
            .group_projects(&w.group)
            .await?
            .into_iter()
            .filter(|p| p.path != spec.pipeline.project && !w.exclude_projects.contains(&p.path))
            .collect();
        // Their CI files concurrently (the reader bounds what is in flight), in list order.
        let total = projects.len();
        progress(Progress::Files { done: 0, total });
        let mut tasks = tokio::task::JoinSet::new();
        for (i, p) in projects.iter().enumerate() {
            let path = match &p.ci_config {
                Some(CiConfigPath::Local(path)) => path.clone(),
                Some(CiConfigPath::Elsewhere(at)) => {
                    unreadable.push((
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
                    Err(e) => return (i, Err(e)),
                };
                let includes = match &file {
                    Some(f) => local_includes_of(&gl, &project, &branch, &f.content).await,
                    None => Ok(None),
                };
                (i, includes.map(|inc| (file, inc)))
            });
        }
        let mut files: Vec<Option<CiRead>> = vec![None; total];
        let mut done = total - tasks.len();
        while let Some(joined) = tasks.join_next().await {
            let (i, file) = joined.map_err(|e| GitLabError::Transport {
                url: gl.url().to_string(),
                cause: format!("a read task failed: {e}"),
            })?;
            files[i] = Some(file?);
            done += 1;
            progress(Progress::Files { done, total });
        }
        for (p, read) in projects.into_iter().zip(files) {
            if let Some((file, includes)) = read {
                other_projects.push(ProjectCi { path: p.path, default_branch: p.default_branch, file, includes });
            }
        }
    }

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
        assert!(seen.contains(&Progress::Reading("runners".into())), "{seen:?}");
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
