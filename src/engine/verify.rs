//! Verifying one change by what happened: a Release Ready and Synced, a runner online with
//! its tags on the right architecture, a pipeline's jobs run where they should, the
//! baseline taking the work back.

use super::events::{EngineError, Event};
use super::run::{Engine, NOTE, Outcome, kube_ref, other};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::check::{self, Current, Holds};
use super::ports::{Cluster, FailKind, Forge, PortError};
use crate::model::{Change, Document, ObjectRef, Verification, WriteMethod};
use crate::phases::pipeline::encode_path;
use crate::vocab::Arch;

/// What one look at a condition being waited for found.
pub(super) enum Probe {
    Done(String),
    /// Not yet; the state, for the progress line.
    Waiting(String),
    /// Never will be (a job failed, ran on the wrong architecture).
    Failed(String),
}

impl<C: Cluster, F: Forge> Engine<'_, C, F> {
    /// Polls `probe` until it says done, emitting progress; fails after `timeout`.
    pub(super) async fn wait<P, Fut>(
        &self,
        change: &Change,
        what: &str,
        timeout: Duration,
        mut probe: P,
    ) -> Result<String, EngineError>
    where
        P: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Probe, PortError>>,
    {
        let started = Instant::now();
        let mut last_report = 0u64;
        loop {
            match probe().await {
                Ok(Probe::Done(done)) => return Ok(done),
                Ok(Probe::Failed(why)) => return Err(other(&change.id, format!("{what}: {why}"))),
                Ok(Probe::Waiting(state)) => {
                    let elapsed = started.elapsed();
                    if elapsed >= timeout {
                        return Err(other(
                            &change.id,
                            format!("timed out after {}s waiting for {what}: {state}", timeout.as_secs()),
                        ));
                    }
                    let secs = elapsed.as_secs();
                    if secs >= last_report + 5 || last_report == 0 {
                        last_report = secs.max(1);
                        (self.emit)(&Event::Waiting {
                            id: change.id.to_string(),
                            what: format!("{what} ({state})"),
                            elapsed_s: secs,
                            timeout_s: timeout.as_secs(),
                        });
                    }
                }
                Err(e) if e.kind == FailKind::Ambiguous => {}
                Err(e) => return Err(other(&change.id, e)),
            }
            tokio::time::sleep(self.settings.poll).await;
        }
    }

    pub(super) async fn check(
        &self,
        change: &Change,
        v: &Verification,
        outcome: &mut Outcome,
    ) -> Result<(), EngineError> {
        let done = match v {
            Verification::ReadBack if matches!(change.method, WriteMethod::KubeDelete) => {
                // Finalizers (provider-helm's uninstall) keep a deleted object a while.
                let t = kube_ref(&change.target).ok_or_else(|| other(&change.id, "not a Kubernetes object"))?;
                self.wait(change, &format!("{} to be gone", change.target), self.settings.release_ready, || async {
                    Ok(match self.cluster.get(t).await? {
                        None => Probe::Done(format!("{} is gone", change.target)),
                        Some(v) if v["metadata"]["deletionTimestamp"].is_string() => {
                            Probe::Waiting("marked for deletion, finalizers running".into())
                        }
                        Some(_) => Probe::Waiting("still there".into()),
                    })
                })
                .await?
            }
            Verification::ReadBack => {
                if matches!(change.target, ObjectRef::RunnerToken { .. }) {
                    "a token cannot be read back; its Secret is checked instead".to_string()
                } else {
                    let (cur, base) = self.current(change).await?;
                    match check::holds(change, &cur, base.as_ref()) {
                        Holds::Yes => format!("{} reads back as planned", change.target),
                        Holds::Partly(note) => format!("{}: {note}", change.target),
                        Holds::No => {
                            return Err(other(&change.id, format!("{} does not read back as planned", change.target)));
                        }
                    }
                }
            }
            Verification::ReleaseReady => {
                let t = kube_ref(&change.target).ok_or_else(|| other(&change.id, "not a Release"))?;
                let name = t.name.to_string();
                self.wait(
                    change,
                    &format!("Release {name} to be Ready and Synced"),
                    self.settings.release_ready,
                    || async {
                        let obj = self.cluster.get(t).await?;
                        Ok(match release_ready(obj.as_ref()) {
                            Ok(done) => Probe::Done(done),
                            Err(state) => Probe::Waiting(state),
                        })
                    },
                )
                .await?
            }
            Verification::RunnerOnline { tag_list, architecture } => {
                let tag = tag_list.first().cloned().unwrap_or_default();
                self.wait(
                    change,
                    &format!("runner {tag} to come online on {architecture}"),
                    self.settings.runner_online,
                    || self.runner_online(&tag, tag_list, *architecture),
                )
                .await?
            }
            Verification::CiFileOnBranch { branch } => {
                let ObjectRef::CiFile { project, path, .. } = &change.target else {
                    return Err(other(&change.id, "not a CI file"));
                };
                let Some(Document::Text(after)) = &change.after else { return Err(other(&change.id, "no content")) };
                let before = match &change.before {
                    Some(Document::Text(b)) => b.as_str(),
                    _ => after.as_str(),
                };
                self.wait(change, &format!("the new {path} on {project}@{branch}"), self.settings.pipeline, || async {
                    Ok(match self.file(project, path, branch).await? {
                        Current::File { content, .. } if &content == after => {
                            Probe::Done(format!("{project}:{path} on {branch} is the new file"))
                        }
                        // Merged, and someone else committed since: archshift's edits are there.
                        Current::File { content, .. } if check::edits_hold(before, after, &content) => {
                            Probe::Done(format!("{project}:{path} on {branch} holds archshift's edits"))
                        }
                        _ => Probe::Waiting("not merged yet".to_string()),
                    })
                })
                .await?
            }
            Verification::PipelineProof { jobs } => {
                let ObjectRef::CiFile { project, .. } = &change.target else {
                    return Err(other(&change.id, "not a CI file"));
                };
                let branch = match &change.method {
                    WriteMethod::GitLabCommit { merge_request: Some(mr), .. } => mr.target_branch.clone(),
                    WriteMethod::GitLabCommit { branch, .. } => branch.clone(),
                    _ => return Err(other(&change.id, "not a commit")),
                };
                let urls = self.pipeline_proof(change, project, &branch, jobs).await?;
                let summary = format!("pipeline ran {}", urls.join(", "));
                outcome.proofs.extend(urls);
                summary
            }
            Verification::BaselineTakesWork { branch, tag, jobs } => {
                let ObjectRef::CiFile { project, .. } = &change.target else {
                    return Err(other(&change.id, "not a CI file"));
                };
                let lines = self.baseline_takes_work(change, project, branch, tag, jobs).await?;
                for line in lines {
                    match line.strip_prefix(NOTE) {
                        Some(note) => {
                            (self.emit)(&Event::Notice { message: format!("finding: {note}") });
                            outcome.notes.push(note.to_string());
                        }
                        None => outcome.proofs.push(line),
                    }
                }
                format!("the jobs the revert moved ran on the runner tagged {tag} (pipeline on {branch})")
            }
            Verification::ArchDrained { node_pool, architecture } => {
                let arch = architecture.to_string();
                self.wait(
                    change,
                    &format!("no pod left on {arch} nodes of {node_pool}"),
                    self.settings.release_ready,
                    || async {
                        let n = self.cluster.pods_on(node_pool, &arch).await?;
                        Ok(if n == 0 {
                            Probe::Done(format!("no pod on {arch} nodes of {node_pool}"))
                        } else {
                            Probe::Waiting(format!("{n} pod(s) left"))
                        })
                    },
                )
                .await?
            }
        };
        (self.emit)(&Event::Verified { id: change.id.to_string(), what: done });
        Ok(())
    }

    pub(super) async fn runner_online(&self, tag: &str, tag_list: &[String], arch: Arch) -> Result<Probe, PortError> {
        let Some(runner) = self.find_runner(tag, None).await? else {
            return Ok(Probe::Waiting("not registered".into()));
        };
        let rid = runner["id"].as_u64().unwrap_or_default();
        let tags: BTreeSet<&str> =
            runner["tag_list"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let want: BTreeSet<&str> = tag_list.iter().map(String::as_str).collect();
        if tags != want {
            return Ok(Probe::Failed(format!("runner #{rid} has tags {tags:?}, not {want:?}")));
        }
        if runner["status"] != "online" {
            return Ok(Probe::Waiting(format!("runner #{rid} is {}", runner["status"].as_str().unwrap_or("?"))));
        }
        let managers = self.forge.get_all(&format!("/runners/{rid}/managers")).await?;
        let arch = arch.to_string();
        let online: Vec<&Value> = managers.iter().filter(|m| m["status"] == "online").collect();
        if online.is_empty() {
            return Ok(Probe::Waiting(format!("runner #{rid} has no manager online")));
        }
        if let Some(m) = online.iter().find(|m| m["architecture"] != arch.as_str()) {
            return Ok(Probe::Failed(format!(
                "runner #{rid} has a manager on {}, not {arch}",
                m["architecture"].as_str().unwrap_or("?")
            )));
        }
        Ok(Probe::Done(format!("runner #{rid} online with tags {want:?}, {} manager(s) on {arch}", online.len())))
    }

    /// The pipeline GitLab ran for the branch's head: each job named ran, on a runner whose
    /// manager reports the job's architecture. Returns the jobs' URLs.
    pub(super) async fn pipeline_proof(
        &self,
        change: &Change,
        project: &str,
        branch: &str,
        jobs: &BTreeMap<String, Arch>,
    ) -> Result<Vec<String>, EngineError> {
        let (api, head) = self.branch_head(change, project, branch).await?;
        let what =
            format!("a pipeline on {project}@{branch} to run {}", jobs.keys().cloned().collect::<Vec<_>>().join(", "));
        let urls = self
            .wait(change, &what, self.settings.pipeline, || async {
                let Some(p) = self.newest_pipeline(&api, branch, &head).await? else {
                    return Ok(Probe::Waiting(format!("no pipeline for {head} yet")));
                };
                let pid = p["id"].as_u64().unwrap_or_default();
                let all = self.forge.get_all(&format!("{api}/pipelines/{pid}/jobs")).await?;
                let mut urls = Vec::new();
                for (name, arch) in jobs {
                    let Some(job) = all.iter().find(|j| j["name"] == name.as_str()) else {
                        return Ok(Probe::Failed(format!("pipeline #{pid} has no job {name}")));
                    };
                    if let Some(not_yet) = unfinished(job, &format!("job {name}"), &format!(" in pipeline #{pid}")) {
                        return Ok(not_yet);
                    }
                    let ran_on = match job["runner_manager"]["architecture"].as_str() {
                        Some(a) => a.to_string(),
                        None => {
                            let rid = job["runner"]["id"].as_u64().unwrap_or_default();
                            let managers = self.forge.get_all(&format!("/runners/{rid}/managers")).await?;
                            managers.first().and_then(|m| m["architecture"].as_str()).unwrap_or("unknown").to_string()
                        }
                    };
                    if ran_on != arch.to_string() {
                        return Ok(Probe::Failed(format!(
                            "job {name} ran on {ran_on}, not {arch} (runner {})",
                            job["runner"]["description"].as_str().unwrap_or("?")
                        )));
                    }
                    urls.push(format!("{name} on {arch}: {}", job["web_url"].as_str().unwrap_or_default()));
                }
                Ok(Probe::Done(urls.join("\n")))
            })
            .await?;
        Ok(urls.lines().map(str::to_string).collect())
    }
}

impl<C: Cluster, F: Forge> Engine<'_, C, F> {
    /// The project's API path and the commit at the head of `branch`.
    pub(super) async fn branch_head(
        &self,
        change: &Change,
        project: &str,
        branch: &str,
    ) -> Result<(String, String), EngineError> {
        let api = format!("/projects/{}", encode_path(project));
        let head = self
            .forge
            .get(&format!("{api}/repository/branches/{}", encode_path(branch)))
            .await
            .map_err(|e| other(&change.id, e))?
            .and_then(|b| b["commit"]["id"].as_str().map(str::to_string))
            .ok_or_else(|| other(&change.id, format!("branch {branch} of {project} is gone")))?;
        Ok((api, head))
    }

    /// The newest pipeline GitLab ran for `head` on `branch`.
    pub(super) async fn newest_pipeline(
        &self,
        api: &str,
        branch: &str,
        head: &str,
    ) -> Result<Option<Value>, PortError> {
        let pipelines = self
            .forge
            .get_all(&format!("{api}/pipelines?ref={}&sha={head}&order_by=id&sort=desc", encode_path(branch)))
            .await?;
        Ok(pipelines.into_iter().next())
    }

    /// The jobs the revert moved (`jobs`; none named: every job) ran, in the pipeline GitLab
    /// ran for the branch's head, on a runner carrying `tag`: once each has a runner, it is
    /// proven, whatever its script does. Other jobs are not waited for (one bound to another
    /// runner may never start, a flaky test may fail); their failures, and a moved job's, come
    /// back as `note: ` lines beside the proofs.
    pub(super) async fn baseline_takes_work(
        &self,
        change: &Change,
        project: &str,
        branch: &str,
        tag: &str,
        moved: &[String],
    ) -> Result<Vec<String>, EngineError> {
        let (api, head) = self.branch_head(change, project, branch).await?;
        let what = format!("the jobs the revert moved to run on the runner tagged {tag} ({project}@{branch})");
        let lines = self
            .wait(change, &what, self.settings.pipeline, || async {
                let Some(p) = self.newest_pipeline(&api, branch, &head).await? else {
                    return Ok(Probe::Waiting(format!("no pipeline for {head} yet")));
                };
                let pid = p["id"].as_u64().unwrap_or_default();
                let finished = matches!(p["status"].as_str(), Some("success" | "failed" | "canceled" | "skipped"));
                let jobs = self.forge.get_all(&format!("{api}/pipelines/{pid}/jobs")).await?;
                let name = |j: &Value| j["name"].as_str().unwrap_or("?").to_string();
                let is_moved = |j: &Value| moved.is_empty() || moved.contains(&name(j));
                let mut lines = Vec::new();
                let mut pending_others = Vec::new();
                for job in jobs.iter().filter(|j| is_moved(j)) {
                    let Some(rid) = job["runner"]["id"].as_u64() else {
                        // `pending` waits for a runner to take it: that is what is proven. A job
                        // still `created` waits for earlier jobs (perhaps one bound to another
                        // runner), says nothing about the baseline, and is reported instead.
                        if job["status"] == "pending" && !finished {
                            return Ok(Probe::Waiting(format!("job {} of pipeline #{pid} is pending", name(job))));
                        }
                        pending_others.push(format!(
                            "{NOTE}job {} (moved by the revert) did not start: {} (it waits for other jobs)",
                            name(job),
                            job["status"].as_str().unwrap_or("?")
                        ));
                        continue;
                    };
                    let runner = self.forge.get(&format!("/runners/{rid}")).await?.unwrap_or(Value::Null);
                    let carries = runner["tag_list"].as_array().is_some_and(|t| t.iter().any(|x| x == tag));
                    if !carries {
                        return Ok(Probe::Failed(format!(
                            "job {} ran on runner #{rid} ({}), which does not carry {tag}",
                            name(job),
                            runner["description"].as_str().unwrap_or("?")
                        )));
                    }
                    let url = job["web_url"].as_str().unwrap_or_default();
                    lines.push(format!("{} on the baseline runner: {url}", name(job)));
                    if matches!(job["status"].as_str(), Some("failed" | "canceled")) {
                        lines.push(format!(
                            "{NOTE}job {} ran on the baseline runner and {}: {url}",
                            name(job),
                            job["status"].as_str().unwrap_or("?")
                        ));
                    }
                }
                if lines.is_empty() {
                    if !finished {
                        return Ok(Probe::Waiting(format!("pipeline #{pid} has not run the moved jobs yet")));
                    }
                    return Ok(Probe::Failed(format!(
                        "pipeline #{pid} finished without running any of the jobs the revert moved ({})",
                        moved.join(", ")
                    )));
                }
                lines.extend(pending_others);
                for job in jobs.iter().filter(|j| !is_moved(j)) {
                    if matches!(job["status"].as_str(), Some("failed" | "canceled")) {
                        lines.push(format!(
                            "{NOTE}job {} (not moved by the revert) {}: {}",
                            name(job),
                            job["status"].as_str().unwrap_or("?"),
                            job["web_url"].as_str().unwrap_or_default()
                        ));
                    }
                }
                Ok(Probe::Done(lines.join("\n")))
            })
            .await?;
        Ok(lines.lines().map(str::to_string).collect())
    }
}

/// `Ok` when the Release reports Ready and Synced, `Err` with its condition messages.
/// A GitLab pipeline or job that has not succeeded: failed for good (with its URL), or still
/// on its way. `None` once it succeeded. `what` names it, `where_` follows the failure.
pub(super) fn unfinished(it: &Value, what: &str, where_: &str) -> Option<Probe> {
    match it["status"].as_str().unwrap_or("") {
        "success" => None,
        status @ ("failed" | "canceled" | "skipped") => {
            Some(Probe::Failed(format!("{what} {status}{where_}: {}", it["web_url"].as_str().unwrap_or(""))))
        }
        status => Some(Probe::Waiting(format!("{what} is {status}"))),
    }
}

pub(super) fn release_ready(obj: Option<&Value>) -> Result<String, String> {
    let Some(obj) = obj else { return Err("it does not exist".into()) };
    let conditions = obj["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let status = |t: &str| conditions.iter().find(|c| c["type"] == t);
    let ok = |t: &str| status(t).is_some_and(|c| c["status"] == "True");
    if ok("Ready") && ok("Synced") {
        return Ok(format!("Release {} Ready and Synced", obj["metadata"]["name"].as_str().unwrap_or("?")));
    }
    let messages: Vec<String> = conditions
        .iter()
        .filter(|c| c["status"] != "True")
        .map(|c| {
            format!(
                "{} {}: {}",
                c["type"].as_str().unwrap_or("?"),
                c["reason"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            )
        })
        .collect();
    Err(if messages.is_empty() { "no conditions yet".into() } else { messages.join("; ") })
}
