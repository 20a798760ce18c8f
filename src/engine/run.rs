//! Applying a plan: for each change in dependency order, check it against what is there now
//! (skip what already holds, refuse what drifted), dry-run it on the server, write it with its
//! guard, journal it, and verify it by what really happened.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Serialize;
use serde_json::{Value, json};

use super::check::{self, Current, Holds};
use super::journal::{self, Journal, JournalError, Record};
use super::ports::{Cluster, FailKind, Forge, KubeRef, PortError};
use crate::live::secret::Token;
use crate::model::{Change, ChangeId, Document, ObjectRef, Output, Plan, Verification, WriteMethod};
use crate::phases::pipeline::encode_path;
use crate::spec::{MigrationPlan, ScopeKind};
use crate::vocab::{Arch, Phase};

/// What the engine reports as it goes: printed as text, or one JSON object per line.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A phase's first step is about to run.
    Phase {
        phase: Phase,
    },
    Step {
        id: String,
        summary: String,
    },
    /// The after-state holds already: nothing written.
    Holds {
        id: String,
    },
    DryRun {
        id: String,
        result: String,
    },
    Written {
        id: String,
    },
    Waiting {
        id: String,
        what: String,
        elapsed_s: u64,
        timeout_s: u64,
    },
    Verified {
        id: String,
        what: String,
    },
    Failed {
        id: String,
        error: String,
    },
    Notice {
        message: String,
    },
    /// A risk, denied permission or blocked change that bears on this run, printed before
    /// its first write; `forced` when `--force` writes through it.
    Risk {
        message: String,
        forced: bool,
    },
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Phase { phase } => write!(f, "Phase {} {}", phase.number(), phase.title()),
            Event::Step { id, summary } => write!(f, "  [{id}] {summary}"),
            Event::Holds { id } => write!(f, "    {id}: already in place, nothing written"),
            Event::DryRun { id, result } => write!(f, "    {id}: dry run: {result}"),
            Event::Written { id } => write!(f, "    {id}: written"),
            Event::Waiting { what, elapsed_s, timeout_s, .. } => {
                write!(f, "    waiting for {what}: {elapsed_s}s / {timeout_s}s")
            }
            Event::Verified { what, .. } => write!(f, "    verified: {what}"),
            Event::Failed { id, error } => write!(f, "    {id}: FAILED: {error}"),
            Event::Notice { message } => write!(f, "    {message}"),
            Event::Risk { message, forced: false } => write!(f, "STOP {message}"),
            Event::Risk { message, forced: true } => write!(f, "FORCED {message}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The world moved since the plan was made: nothing was written after the check.
    #[error("the plan is stale; nothing was written:\n{}", list(.drifted))]
    Stale { drifted: Vec<(String, String)> },
    /// The engine will not do this (a dependency missing for `--phase`, a conflict mid-run).
    #[error("refused: {0}")]
    Refused(String),
    #[error("not applied: the operator declined Phase {}", .0.number())]
    Declined(Phase),
    #[error("step {id} failed: {cause}")]
    Failed { id: String, cause: String },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("the plan's dependency graph is broken: {0}")]
    Graph(String),
}

fn list(items: &[(String, String)]) -> String {
    items.iter().map(|(id, why)| format!("  {id}: {why}")).collect::<Vec<_>>().join("\n")
}

/// What one look at a condition being waited for found.
enum Probe {
    Done(String),
    /// Not yet; the state, for the progress line.
    Waiting(String),
    /// Never will be (a job failed, ran on the wrong architecture).
    Failed(String),
}

/// How long to wait and how often to look.
#[derive(Debug, Clone)]
pub struct Settings {
    pub poll: Duration,
    pub release_ready: Duration,
    pub runner_online: Duration,
    pub pipeline: Duration,
    /// How long a write whose answer was lost is looked for before its step fails: the server
    /// may still be carrying it out after the client gave up.
    pub lost_write: Duration,
}

impl Settings {
    pub fn from_spec(spec: &MigrationPlan) -> Settings {
        Settings {
            poll: Duration::from_millis(500),
            release_ready: Duration::from_secs(spec.waits.release_ready),
            runner_online: Duration::from_secs(spec.waits.runner_online),
            pipeline: Duration::from_secs(spec.waits.pipeline),
            lost_write: Duration::from_secs(10),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub written: Vec<String>,
    pub already: Vec<String>,
    /// Job URLs that proved a pipeline ran on the right architectures.
    pub proofs: Vec<String>,
    /// What a proof found besides (other jobs' failures): reported, not failed on.
    pub notes: Vec<String>,
}

/// Marks a line of a proof's result that is a finding, not a proof.
const NOTE: &str = "note: ";

/// What to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    /// One phase; refused while a dependency outside it is not in place.
    Phase(Phase),
    /// One step and every step it depends on (those already in place are skipped).
    Step(ChangeId),
}

/// `id` and everything it depends on, transitively.
pub fn with_dependencies(plan: &Plan, id: &ChangeId) -> BTreeSet<ChangeId> {
    let mut out = BTreeSet::new();
    let mut todo = vec![id.clone()];
    while let Some(next) = todo.pop() {
        if out.insert(next.clone())
            && let Some(c) = plan.change(&next)
        {
            todo.extend(c.depends_on.iter().cloned());
        }
    }
    out
}

/// Asked once per phase before its first write, with the changes it will make.
pub type Confirm<'a> = dyn FnMut(Phase, &[&Change]) -> bool + Send + Sync + 'a;

pub struct Engine<'a, C: Cluster, F: Forge> {
    pub cluster: &'a C,
    pub forge: &'a F,
    pub spec: &'a MigrationPlan,
    pub journal: &'a mut Journal,
    pub emit: &'a (dyn Fn(&Event) + Sync),
    pub confirm: &'a mut Confirm<'a>,
    pub settings: Settings,
    /// Runner tokens from this run, by the change that produced them. Memory only.
    tokens: BTreeMap<ChangeId, Token>,
}

fn other(id: &ChangeId, e: impl std::fmt::Display) -> EngineError {
    EngineError::Failed { id: id.to_string(), cause: e.to_string() }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A document as the journal may hold it: sensitive pointers and Secret values masked.
fn journaled(change: &Change, doc: Option<&Document>) -> Option<Document> {
    doc.map(|d| match d {
        Document::Object(v) => Document::Object(crate::redact::mask(v, &change.sensitive)),
        Document::Text(t) => Document::Text(t.clone()),
    })
}

/// The forward change a rollback change undoes (`rollback/X` undoes X; the preparatory
/// `rollback/pause/...` and `rollback/reroute/...` steps undo nothing).
pub fn reverted_forward(id: &ChangeId) -> Option<ChangeId> {
    let rest = id.as_str().strip_prefix("rollback/")?;
    if rest.starts_with("pause/") || rest.starts_with("reroute/") {
        return None;
    }
    Some(ChangeId::from(rest))
}

fn kube_ref(target: &ObjectRef) -> Option<KubeRef<'_>> {
    match target {
        ObjectRef::Kube { api_version, kind, namespace, name } => {
            Some(KubeRef { api_version, kind, namespace: namespace.as_deref(), name })
        }
        _ => None,
    }
}

fn file_path(project: &str, path: &str) -> String {
    format!("/projects/{}/repository/files/{}", encode_path(project), encode_path(path))
}

fn decode_file(v: &Value) -> Result<Current, String> {
    let raw = v["content"].as_str().unwrap_or_default().replace(['\n', '\r'], "");
    let bytes = base64::engine::general_purpose::STANDARD.decode(raw).map_err(|e| e.to_string())?;
    let content = String::from_utf8(bytes).map_err(|_| "the file is not UTF-8 text".to_string())?;
    Ok(Current::File { content, last_commit_id: v["last_commit_id"].as_str().unwrap_or_default().to_string() })
}

impl<'a, C: Cluster, F: Forge> Engine<'a, C, F> {
    pub fn new(
        cluster: &'a C,
        forge: &'a F,
        spec: &'a MigrationPlan,
        journal: &'a mut Journal,
        emit: &'a (dyn Fn(&Event) + Sync),
        confirm: &'a mut Confirm<'a>,
    ) -> Self {
        let settings = Settings::from_spec(spec);
        Engine { cluster, forge, spec, journal, emit, confirm, settings, tokens: BTreeMap::new() }
    }

    async fn record(
        &mut self,
        plan: &Plan,
        change: &Change,
        event: journal::Event,
        message: Option<String>,
    ) -> Result<(), JournalError> {
        self.record_with(plan, change, event, message, None).await
    }

    async fn record_with(
        &mut self,
        plan: &Plan,
        change: &Change,
        event: journal::Event,
        message: Option<String>,
        runner_id: Option<u64>,
    ) -> Result<(), JournalError> {
        let images = matches!(event, journal::Event::Intent | journal::Event::Written);
        self.journal
            .append(Record {
                seq: 0,
                time: now(),
                plan: plan.spec_digest.clone(),
                change: change.id.clone(),
                event,
                before: if images { journaled(change, change.before.as_ref()) } else { None },
                // The intent carries the after-image too: a write carried out whose `written`
                // record was lost (a kill between the two) is undone from it.
                after: if images { journaled(change, change.after.as_ref()) } else { None },
                action: images.then_some(change.action),
                runner_id,
                message,
                step: (event == journal::Event::Intent)
                    .then(|| Box::new(Change { before: None, after: None, ..change.clone() })),
            })
            .await
    }

    /// Applies `plan` (only `phase`'s changes when given) in dependency order.
    pub async fn apply(&mut self, plan: &Plan, phase: Option<Phase>) -> Result<Outcome, EngineError> {
        let selection = match phase {
            Some(p) => Selection::Phase(p),
            None => Selection::All,
        };
        self.apply_selection(plan, &selection).await
    }

    /// Applies what `selection` names, in dependency order.
    pub async fn apply_selection(&mut self, plan: &Plan, selection: &Selection) -> Result<Outcome, EngineError> {
        let order = plan.order().map_err(|e| EngineError::Graph(e.to_string()))?;
        let wanted: BTreeSet<ChangeId> = match selection {
            Selection::All => order.iter().map(|c| c.id.clone()).collect(),
            Selection::Phase(p) => order.iter().filter(|c| c.phase == *p).map(|c| c.id.clone()).collect(),
            Selection::Step(id) => with_dependencies(plan, id),
        };
        let phase = match selection {
            Selection::Phase(p) => Some(*p),
            _ => None,
        };
        let selected: Vec<&Change> = order.into_iter().filter(|c| wanted.contains(&c.id)).collect();
        let chosen: BTreeSet<&ChangeId> = selected.iter().map(|c| &c.id).collect();

        // Read every target once, before anything is written.
        let mut state: BTreeMap<ChangeId, (Current, Option<Current>)> = BTreeMap::new();
        let mut drifted = Vec::new();
        // A target an earlier step of this run writes (a variable re-routed, then deleted)
        // is checked just before its own write instead: its precondition is that step's result.
        let mut written_before: Vec<&ObjectRef> = Vec::new();
        let mut deferred: BTreeSet<ChangeId> = BTreeSet::new();
        for change in &selected {
            if written_before.contains(&&change.target) {
                deferred.insert(change.id.clone());
                continue;
            }
            written_before.push(&change.target);
            let (cur, base) = self.current(change).await?;
            let holds = check::holds(change, &cur, base.as_ref());
            // Even a step the journal says was written is checked: someone may have undone
            // it since, and its precondition is what the next write relies on.
            if holds == Holds::No
                && let Err(why) = check::precondition(change, &cur, base.as_ref())
            {
                drifted.push((change.id.to_string(), format!("{}: {why}", change.target)));
            }
            state.insert(change.id.clone(), (cur, base));
        }
        // `--phase`: what it depends on outside the phase must be in place already.
        if phase.is_some() {
            let mut missing = Vec::new();
            for change in &selected {
                for dep in change.depends_on.iter().filter(|d| !chosen.contains(d)) {
                    let Some(dep_change) = plan.change(dep) else { continue };
                    let (cur, base) = self.current(dep_change).await?;
                    if check::holds(dep_change, &cur, base.as_ref()) != Holds::Yes {
                        missing.push(format!("{} needs {dep} ({}) first", change.id, dep_change.summary));
                    }
                }
            }
            if !missing.is_empty() {
                missing.dedup();
                return Err(EngineError::Refused(format!(
                    "these changes depend on others not in place yet; apply those first (or the whole plan):\n  {}",
                    missing.join("\n  ")
                )));
            }
        }
        if !drifted.is_empty() {
            return Err(EngineError::Stale { drifted });
        }

        let mut outcome = Outcome::default();
        self.verify_earlier_writes(plan, selection, &mut outcome).await?;
        let mut confirmed: BTreeSet<Phase> = BTreeSet::new();
        let mut announced: Option<Phase> = None;
        for change in &selected {
            let (cur, base) = match state.remove(&change.id) {
                Some(read) => read,
                None => {
                    let (cur, base) = self.current(change).await?;
                    if deferred.contains(&change.id)
                        && check::holds(change, &cur, base.as_ref()) == Holds::No
                        && let Err(why) = check::precondition(change, &cur, base.as_ref())
                    {
                        return Err(EngineError::Stale {
                            drifted: vec![(change.id.to_string(), format!("{}: {why}", change.target))],
                        });
                    }
                    (cur, base)
                }
            };
            if announced != Some(change.phase) {
                (self.emit)(&Event::Phase { phase: change.phase });
                announced = Some(change.phase);
            }
            (self.emit)(&Event::Step { id: change.id.to_string(), summary: change.summary.clone() });
            let holds = check::holds(change, &cur, base.as_ref());
            let verified =
                self.journal.last(&plan.spec_digest, &change.id).is_some_and(|r| r.event == journal::Event::Verified);
            if holds == Holds::Yes || (self.journaled_as_written(plan, change) && matches!(cur, Current::Unknown)) {
                (self.emit)(&Event::Holds { id: change.id.to_string() });
                outcome.already.push(change.id.to_string());
                if !verified {
                    self.verify(plan, change, &mut outcome).await?;
                }
                continue;
            }
            if !confirmed.contains(&change.phase) {
                let pending: Vec<&Change> = selected.iter().copied().filter(|c| c.phase == change.phase).collect();
                if !(self.confirm)(change.phase, &pending) {
                    return Err(EngineError::Declined(change.phase));
                }
                confirmed.insert(change.phase);
            }
            for wait in &change.waits_for {
                self.check(change, wait, &mut outcome).await?;
            }
            if let Holds::Partly(note) = &holds {
                (self.emit)(&Event::Notice { message: note.clone() });
            } else {
                self.dry_run(change, &cur).await?;
                self.record(plan, change, journal::Event::Intent, None).await?;
            }
            let runner_id = match self.write(change, &cur, base.as_ref(), &holds).await {
                Ok(id) => id,
                Err(e) => {
                    self.record(plan, change, journal::Event::Failed, Some(e.to_string())).await?;
                    (self.emit)(&Event::Failed { id: change.id.to_string(), error: e.to_string() });
                    return Err(e);
                }
            };
            self.record_with(plan, change, journal::Event::Written, None, runner_id).await?;
            (self.emit)(&Event::Written { id: change.id.to_string() });
            outcome.written.push(change.id.to_string());
            self.verify(plan, change, &mut outcome).await?;
        }
        Ok(outcome)
    }

    /// The server-side dry run of one step alone, against what is there now (nothing is
    /// written, nothing journaled). `Ok(None)` when its after-state already holds.
    pub async fn dry_run_step(&mut self, plan: &Plan, id: &ChangeId) -> Result<Option<String>, EngineError> {
        let change = plan.change(id).ok_or_else(|| EngineError::Refused(format!("no step {id} in this plan")))?;
        let (cur, base) = self.current(change).await?;
        if check::holds(change, &cur, base.as_ref()) == Holds::Yes {
            (self.emit)(&Event::Holds { id: id.to_string() });
            return Ok(None);
        }
        if let Err(why) = check::precondition(change, &cur, base.as_ref()) {
            return Err(EngineError::Stale { drifted: vec![(id.to_string(), format!("{}: {why}", change.target))] });
        }
        self.dry_run(change, &cur).await?;
        Ok(Some(format!("{id}: the dry run passed")))
    }

    /// Writes an earlier run intended or made and never verified, which this plan no longer
    /// lists (planned afresh, it found them in place): each is checked first, before
    /// anything else is written, and verified when it holds, so that a run killed between a
    /// write and its proof cannot end in a later run's "nothing to do" without that proof.
    /// One that does not hold is left to the plan, which did not ask for it.
    async fn verify_earlier_writes(
        &mut self,
        plan: &Plan,
        selection: &Selection,
        outcome: &mut Outcome,
    ) -> Result<(), EngineError> {
        let phases: BTreeSet<Phase> = plan.phases.iter().map(|p| p.phase).collect();
        let earlier: Vec<Change> = self
            .journal
            .unverified()
            .into_iter()
            .filter(|c| plan.change(&c.id).is_none() && phases.contains(&c.phase))
            .filter(|c| match selection {
                Selection::All => true,
                Selection::Phase(p) => c.phase == *p,
                Selection::Step(id) => c.id == *id,
            })
            .collect();
        for change in &earlier {
            let (cur, base) = self.current(change).await?;
            if check::holds(change, &cur, base.as_ref()) != Holds::Yes {
                (self.emit)(&Event::Notice {
                    message: format!(
                        "{}: an earlier run intended it and it is not in place now; this plan does not ask for it",
                        change.id
                    ),
                });
                continue;
            }
            (self.emit)(&Event::Step { id: change.id.to_string(), summary: change.summary.clone() });
            (self.emit)(&Event::Holds { id: change.id.to_string() });
            outcome.already.push(change.id.to_string());
            self.verify(plan, change, outcome).await?;
        }
        Ok(())
    }

    fn journaled_as_written(&self, plan: &Plan, change: &Change) -> bool {
        self.journal
            .last(&plan.spec_digest, &change.id)
            .is_some_and(|r| matches!(r.event, journal::Event::Written | journal::Event::Verified))
    }

    /// Runs the change's verifications, journals the result.
    async fn verify(&mut self, plan: &Plan, change: &Change, outcome: &mut Outcome) -> Result<(), EngineError> {
        let proven = outcome.proofs.len();
        for v in &change.verify {
            if let Err(e) = self.check(change, v, outcome).await {
                self.record(plan, change, journal::Event::Failed, Some(e.to_string())).await?;
                (self.emit)(&Event::Failed { id: change.id.to_string(), error: e.to_string() });
                return Err(e);
            }
        }
        // The proof is kept with the step: a later run that finds it done shows the same one.
        let proofs = outcome.proofs[proven..].join("\n");
        self.record(plan, change, journal::Event::Verified, (!proofs.is_empty()).then_some(proofs)).await?;
        // A rollback step that undid a forward change: that change is no longer applied.
        if let Some(forward) = reverted_forward(&change.id) {
            self.journal
                .append(Record {
                    seq: 0,
                    time: now(),
                    plan: plan.spec_digest.clone(),
                    change: forward,
                    event: journal::Event::Reverted,
                    before: None,
                    after: None,
                    action: None,
                    runner_id: None,
                    message: Some(format!("undone by {}", change.id)),
                    step: None,
                })
                .await?;
        }
        Ok(())
    }

    // ---- reading ----

    /// The change's target now, and for a CI file the file on the branch it starts from.
    async fn current(&self, change: &Change) -> Result<(Current, Option<Current>), EngineError> {
        let id = &change.id;
        match &change.target {
            ObjectRef::Kube { .. } => {
                let t = kube_ref(&change.target).ok_or_else(|| other(id, "not a Kubernetes object"))?;
                let obj = self.cluster.get(t).await.map_err(|e| other(id, e))?;
                Ok((obj.map_or(Current::Absent, Current::Object), None))
            }
            ObjectRef::GitLabRunner { tag, id: runner_id } => {
                let found = self.find_runner(tag, *runner_id).await.map_err(|e| other(id, e))?;
                Ok((found.map_or(Current::Absent, Current::Object), None))
            }
            ObjectRef::RunnerToken { .. } => Ok((Current::Unknown, None)),
            ObjectRef::ProjectVariable { project, key } => {
                let path = format!("/projects/{}/variables/{}", encode_path(project), encode_path(key));
                let v = self.forge.get(&path).await.map_err(|e| other(id, e))?;
                Ok((v.map_or(Current::Absent, Current::Object), None))
            }
            ObjectRef::GroupVariable { group, key } => {
                let path = format!("/groups/{}/variables/{}", encode_path(group), encode_path(key));
                let v = self.forge.get(&path).await.map_err(|e| other(id, e))?;
                Ok((v.map_or(Current::Absent, Current::Object), None))
            }
            ObjectRef::CiFile { project, path, branch } => {
                let cur = self.file(project, path, branch).await.map_err(|e| other(id, e))?;
                let base_branch = match &change.method {
                    WriteMethod::GitLabCommit { merge_request: Some(mr), .. } => Some(mr.target_branch.clone()),
                    WriteMethod::GitLabCommit { start_branch: Some(b), .. } => Some(b.clone()),
                    _ => None,
                };
                let base = match base_branch {
                    Some(b) if &b != branch => Some(self.file(project, path, &b).await.map_err(|e| other(id, e))?),
                    _ => None,
                };
                Ok((cur, base))
            }
            ObjectRef::CiJob { .. } | ObjectRef::Project { .. } => Ok((Current::Unknown, None)),
        }
    }

    async fn file(&self, project: &str, path: &str, branch: &str) -> Result<Current, PortError> {
        let api = format!("{}?ref={}", file_path(project, path), encode_path(branch));
        match self.forge.get(&api).await? {
            None => Ok(Current::Absent),
            Some(v) => decode_file(&v).map_err(PortError::other),
        }
    }

    /// The runner archshift knows by `tag` in the plan's scope, with its detail.
    async fn find_runner(&self, tag: &str, id: Option<u64>) -> Result<Option<Value>, PortError> {
        if let Some(id) = id {
            return self.forge.get(&format!("/runners/{id}")).await;
        }
        let scope = &self.spec.runners.scope;
        let list = match (scope.kind, scope.path.as_deref()) {
            (ScopeKind::Group, Some(p)) => format!("/groups/{}/runners?type=group_type", encode_path(p)),
            (ScopeKind::Project, Some(p)) => format!("/projects/{}/runners?type=project_type", encode_path(p)),
            _ => "/runners/all?type=instance_type".to_string(),
        };
        let items = self.forge.get_all(&format!("{list}&tag_list={}", encode_path(tag))).await?;
        let mut found = None;
        for item in items {
            let Some(rid) = item["id"].as_u64() else { continue };
            let Some(detail) = self.forge.get(&format!("/runners/{rid}")).await? else { continue };
            let has_tag = detail["tag_list"].as_array().is_some_and(|t| t.iter().any(|x| x == tag));
            if detail["description"] == tag {
                return Ok(Some(detail));
            }
            if has_tag && found.is_none() {
                found = Some(detail);
            }
        }
        Ok(found)
    }

    // ---- writing ----

    /// The change's body with its bindings filled in.
    async fn bound(&mut self, change: &Change, doc: &Value) -> Result<Value, EngineError> {
        let mut body = doc.clone();
        for b in &change.bindings {
            let Output::RunnerToken = b.output;
            let token = match self.tokens.get(&b.from) {
                Some(t) => t.clone(),
                // Resumed after the runner was created, or its creation's answer was lost: the
                // token never reached this run, so it is reset (the runner has no manager yet
                // that could use the old one).
                None => self.reset_token(change, &b.from).await?,
            };
            if let Some(slot) = body.pointer_mut(&b.pointer) {
                *slot = Value::String(token.expose().to_string());
            }
        }
        // The legacy flow: the registration token comes from the variable the plan names.
        let reg = &self.spec.runners.registration;
        if reg.style == crate::spec::RegistrationStyle::RegistrationToken
            && let Some(slot) = body.pointer_mut("/stringData/runner-registration-token")
        {
            let var = reg.registration_token_env.as_deref().unwrap_or("");
            let token = Token::from_env(var).ok_or_else(|| {
                other(
                    &change.id,
                    format!("set {var} to the runner registration token (the plan's runners.registration)"),
                )
            })?;
            *slot = Value::String(token.expose().to_string());
        }
        Ok(body)
    }

    async fn reset_token(&mut self, change: &Change, from: &ChangeId) -> Result<Token, EngineError> {
        let tag = self
            .journal
            .records()
            .iter()
            .rev()
            .find(|r| &r.change == from)
            .and_then(|r| r.runner_id)
            .map(|id| (String::new(), Some(id)));
        let (tag, id) = match tag {
            Some(t) => t,
            // A token reset whose token was lost (killed before its Secret, or the Secret's
            // write failed) is done again the same way: the last token never reached a Secret.
            None => match from.as_str().strip_prefix("runner/").or_else(|| from.as_str().strip_prefix("runner-token/"))
            {
                Some(tag) => (tag.to_string(), None),
                None => return Err(other(&change.id, format!("no token from {from} in this run"))),
            },
        };
        let runner = self
            .find_runner(&tag, id)
            .await
            .map_err(|e| other(&change.id, e))?
            .ok_or_else(|| other(&change.id, format!("the runner {from} created is gone")))?;
        let rid = runner["id"].as_u64().unwrap_or_default();
        let v = self
            .forge
            .send("POST", &format!("/runners/{rid}/reset_authentication_token"), None)
            .await
            .map_err(|e| other(&change.id, e))?;
        let token = Token::new(v["token"].as_str().unwrap_or_default(), format!("runner #{rid}"));
        (self.emit)(&Event::Notice {
            message: format!("reset the token of runner #{rid}: the one issued at creation never reached this run"),
        });
        self.tokens.insert(from.clone(), token.clone());
        Ok(token)
    }

    /// DELETE guarded by the uid and the resourceVersion read just before: a controller's
    /// status update since the check moves resourceVersion, and the same uid and generation
    /// mean nobody changed what was checked. A 409 (the resourceVersion moved again between
    /// that read and the delete, as provider-helm's status updates do) is read again,
    /// checked again and retried, a few times, before it counts as a conflict.
    async fn delete_fresh(&self, t: KubeRef<'_>, cur: &Current, dry_run: bool) -> Result<(), PortError> {
        const ATTEMPTS: u64 = 4;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(fresh) = self.cluster.get(t).await? else { return Ok(()) };
            let checked = match cur {
                Current::Object(v) => v,
                _ => &fresh,
            };
            let meta = |v: &Value, k: &str| v["metadata"][k].clone();
            if meta(&fresh, "uid") != meta(checked, "uid") || meta(&fresh, "generation") != meta(checked, "generation")
            {
                return Err(PortError {
                    kind: FailKind::Conflict,
                    message: "it was replaced or its spec changed since it was checked".into(),
                });
            }
            let (uid, rv) = (fresh["metadata"]["uid"].as_str(), fresh["metadata"]["resourceVersion"].as_str());
            match self.cluster.delete(t, uid, rv, dry_run).await {
                Err(e) if e.kind == FailKind::Conflict && attempt < ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                result => return result,
            }
        }
    }

    async fn dry_run(&mut self, change: &Change, cur: &Current) -> Result<(), EngineError> {
        let id = &change.id;
        let result = match (&change.method, kube_ref(&change.target)) {
            (WriteMethod::KubeCreate, Some(t)) => {
                let mut body = change.after_object().cloned().unwrap_or(Value::Null);
                for b in &change.bindings {
                    if let Some(slot) = body.pointer_mut(&b.pointer) {
                        *slot = Value::String("dry-run".into());
                    }
                }
                self.cluster.create(t, &body, true).await.map(|_| "the API server accepts the object".to_string())
            }
            (WriteMethod::KubeApply { field_manager, patch }, Some(t)) => self
                .cluster
                .apply(t, patch, field_manager, true)
                .await
                .map(|_| "server-side apply accepted, no conflict".to_string()),
            (WriteMethod::KubeJsonPatch { patch }, Some(t)) => self
                .cluster
                .json_patch(t, patch, true)
                .await
                .map(|_| "the patch applies and its tests pass".to_string()),
            (WriteMethod::KubeDelete, Some(t)) => {
                self.delete_fresh(t, cur, true).await.map(|()| "the delete is allowed".to_string())
            }
            (WriteMethod::GitLabCommit { .. }, _) => {
                let ObjectRef::CiFile { project, .. } = &change.target else {
                    return Err(other(id, "a commit without a file"));
                };
                let Some(Document::Text(content)) = &change.after else { return Err(other(id, "no content")) };
                let lint = self
                    .forge
                    .send(
                        "POST",
                        &format!("/projects/{}/ci/lint", encode_path(project)),
                        Some(&json!({"content": content, "dry_run": true})),
                    )
                    .await
                    .map_err(|e| other(id, e))?;
                if lint["valid"] != true {
                    let errors: Vec<String> = lint["errors"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|e| e.as_str().map(str::to_string))
                        .collect();
                    return Err(other(id, format!("GitLab's CI lint rejects the new file: {}", errors.join("; "))));
                }
                Ok("GitLab's CI lint accepts the new file".to_string())
            }
            (WriteMethod::GitLab { .. }, _) => {
                Ok("GitLab has no dry run for this call; its precondition was checked just now".to_string())
            }
            _ => Err(PortError::other("a Kubernetes write for a target that is not a Kubernetes object")),
        };
        match result {
            Ok(result) => {
                (self.emit)(&Event::DryRun { id: id.to_string(), result });
                Ok(())
            }
            Err(e) if e.kind == FailKind::Conflict => Err(EngineError::Stale {
                drifted: vec![(id.to_string(), format!("{}: the server refused the dry run: {e}", change.target))],
            }),
            Err(e) => Err(other(id, format!("dry run: {e}"))),
        }
    }

    /// The write itself; returns the id of a runner it created.
    async fn write(
        &mut self,
        change: &Change,
        cur: &Current,
        base: Option<&Current>,
        holds: &Holds,
    ) -> Result<Option<u64>, EngineError> {
        let id = &change.id;
        let conflict = |e: PortError| -> EngineError {
            if e.kind == FailKind::Conflict {
                EngineError::Stale {
                    drifted: vec![(
                        id.to_string(),
                        format!("{}: another writer changed it between the check and the write: {e}", change.target),
                    )],
                }
            } else {
                other(id, e)
            }
        };
        match (&change.method, kube_ref(&change.target)) {
            (WriteMethod::KubeCreate, Some(t)) => {
                let body = self.bound(change, change.after_object().unwrap_or(&Value::Null)).await?;
                match self.cluster.create(t, &body, false).await {
                    Ok(_) => Ok(None),
                    Err(e) if e.kind == FailKind::Ambiguous => self.read_back(change, e).await,
                    Err(e) => Err(conflict(e)),
                }
            }
            (WriteMethod::KubeApply { field_manager, patch }, Some(t)) => {
                let patch = self.bound(change, patch).await?;
                match self.cluster.apply(t, &patch, field_manager, false).await {
                    Ok(_) => Ok(None),
                    Err(e) if e.kind == FailKind::Ambiguous => self.read_back(change, e).await,
                    Err(e) => Err(conflict(e)),
                }
            }
            (WriteMethod::KubeJsonPatch { patch }, Some(t)) => match self.cluster.json_patch(t, patch, false).await {
                Ok(_) => Ok(None),
                Err(e) if e.kind == FailKind::Ambiguous => self.read_back(change, e).await,
                Err(e) => Err(conflict(e)),
            },
            (WriteMethod::KubeDelete, Some(t)) => match self.delete_fresh(t, cur, false).await {
                Ok(()) => Ok(None),
                Err(e) if e.kind == FailKind::Ambiguous => self.read_back(change, e).await,
                Err(e) => Err(conflict(e)),
            },
            (WriteMethod::GitLab { method, path }, _) => {
                let method = method.to_string();
                let body = match change.after_object() {
                    Some(doc) if method != "DELETE" => Some(self.bound(change, doc).await?),
                    _ => None,
                };
                let answer = match self.forge.send(&method, path, body.as_ref()).await {
                    Ok(v) => v,
                    // Unknown whether it happened: a second runner would be worse than a read.
                    Err(e) if e.kind == FailKind::Ambiguous => return self.read_back(change, e).await,
                    Err(e) => return Err(conflict(e)),
                };
                if change.outputs().contains(&Output::RunnerToken) {
                    let token = answer["token"].as_str().unwrap_or_default();
                    if token.is_empty() {
                        return Err(other(id, "GitLab returned no runner token"));
                    }
                    let rid = answer["id"].as_u64();
                    self.tokens.insert(change.id.clone(), Token::new(token, format!("runner {}", change.id)));
                    return Ok(rid);
                }
                Ok(None)
            }
            (WriteMethod::GitLabCommit { branch, start_branch, merge_request }, _) => {
                let ObjectRef::CiFile { project, path, .. } = &change.target else {
                    return Err(other(id, "a commit without a file"));
                };
                let Some(Document::Text(content)) = &change.after else { return Err(other(id, "no content")) };
                let project_api = format!("/projects/{}", encode_path(project));
                if !matches!(holds, Holds::Partly(_)) {
                    let branch_exists = self
                        .forge
                        .get(&format!("{project_api}/repository/branches/{}", encode_path(branch)))
                        .await
                        .map_err(|e| other(id, e))?
                        .is_some();
                    let (from, lock) = if branch_exists {
                        match cur {
                            Current::File { last_commit_id, .. }
                                if start_branch.is_none() || merge_request.is_none() =>
                            {
                                (None, Some(last_commit_id.clone()))
                            }
                            _ => {
                                return Err(EngineError::Refused(format!(
                                    "branch {branch} of {project} exists already with other content; delete it or choose another delivery.branch"
                                )));
                            }
                        }
                    } else {
                        let lock = match base.unwrap_or(cur) {
                            Current::File { last_commit_id, .. } => Some(last_commit_id.clone()),
                            _ => None,
                        };
                        (start_branch.clone(), lock)
                    };
                    let action = if lock.is_some() { "update" } else { "create" };
                    let mut act = json!({"action": action, "file_path": path, "content": content});
                    if let Some(lock) = lock {
                        act["last_commit_id"] = json!(lock);
                    }
                    let message = match merge_request {
                        Some(mr) => mr.title.clone(),
                        None => format!("archshift: {}", change.summary),
                    };
                    let mut body = json!({"branch": branch, "commit_message": message, "actions": [act]});
                    if let Some(from) = from {
                        body["start_branch"] = json!(from);
                    }
                    self.forge
                        .send("POST", &format!("{project_api}/repository/commits"), Some(&body))
                        .await
                        .map_err(conflict)?;
                }
                if let Some(mr) = merge_request {
                    self.merge_request(change, &project_api, branch, mr).await?;
                }
                Ok(None)
            }
            _ => Err(other(id, "a Kubernetes write for a target that is not a Kubernetes object")),
        }
    }

    /// A write whose answer was lost (a timeout, a dropped connection, a 5xx): it may or may
    /// not have happened, so it is read back instead of sent again. Done when the step now
    /// holds (a deletion: the object is gone or on its way out); the created runner's id is
    /// returned for the journal. Otherwise the step fails and the journal says it was intended.
    async fn read_back(&self, change: &Change, e: PortError) -> Result<Option<u64>, EngineError> {
        let started = Instant::now();
        loop {
            let (now, base) = self.current(change).await?;
            if check::holds(change, &now, base.as_ref()) == Holds::Yes {
                (self.emit)(&Event::Notice {
                    message: format!("the write's answer was lost ({e}); reading back shows it happened"),
                });
                return Ok(match now {
                    Current::Object(v) if matches!(change.target, ObjectRef::GitLabRunner { .. }) => v["id"].as_u64(),
                    _ => None,
                });
            }
            // The server may still be working on it after the client gave up: look again.
            if started.elapsed() >= self.settings.lost_write {
                break;
            }
            tokio::time::sleep(self.settings.poll).await;
        }
        Err(other(
            &change.id,
            format!(
                "the write's answer was lost and reading back for {}s does not show it: {e}; if the server is still carrying it out, the same apply run again later finds it: it reads back first and never writes it twice",
                self.settings.lost_write.as_secs()
            ),
        ))
    }

    /// Opens (or finds) the merge request, and merges it when the plan says archshift may.
    async fn merge_request(
        &mut self,
        change: &Change,
        project_api: &str,
        branch: &str,
        mr: &crate::model::MergeRequest,
    ) -> Result<(), EngineError> {
        let id = &change.id;
        let open = self
            .forge
            .get_all(&format!(
                "{project_api}/merge_requests?state=opened&source_branch={}&target_branch={}",
                encode_path(branch),
                encode_path(&mr.target_branch)
            ))
            .await
            .map_err(|e| other(id, e))?;
        let found = match open.into_iter().next() {
            Some(m) => m,
            None => self
                .forge
                .send(
                    "POST",
                    &format!("{project_api}/merge_requests"),
                    Some(&json!({"source_branch": branch, "target_branch": mr.target_branch, "title": mr.title,
                                 "remove_source_branch": true})),
                )
                .await
                .map_err(|e| other(id, e))?,
        };
        let iid = found["iid"].as_u64().unwrap_or_default();
        let url = found["web_url"].as_str().unwrap_or_default().to_string();
        (self.emit)(&Event::Notice { message: format!("merge request !{iid}: {url}") });
        if !mr.merge {
            (self.emit)(&Event::Notice { message: format!("waiting for a person to merge {url}") });
            return Ok(());
        }
        // GitLab computes mergeability asynchronously after creation.
        let started = Instant::now();
        loop {
            let m = self
                .forge
                .get(&format!("{project_api}/merge_requests/{iid}"))
                .await
                .map_err(|e| other(id, e))?
                .unwrap_or(Value::Null);
            let status = m["detailed_merge_status"].as_str().or(m["merge_status"].as_str()).unwrap_or("");
            if m["state"] == "merged" {
                return Ok(());
            }
            if matches!(status, "mergeable" | "can_be_merged") {
                break;
            }
            if started.elapsed() > Duration::from_secs(120) || matches!(status, "cannot_be_merged" | "conflict") {
                return Err(other(id, format!("merge request {url} cannot be merged ({status})")));
            }
            tokio::time::sleep(self.settings.poll).await;
        }
        self.forge
            .send(
                "PUT",
                &format!("{project_api}/merge_requests/{iid}/merge"),
                Some(&json!({"should_remove_source_branch": true})),
            )
            .await
            .map_err(|e| other(id, format!("merging {url}: {e}")))?;
        (self.emit)(&Event::Notice { message: format!("merged {url}") });
        Ok(())
    }

    // ---- verifying ----

    /// Polls `probe` until it says done, emitting progress; fails after `timeout`.
    async fn wait<P, Fut>(
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

    async fn check(&self, change: &Change, v: &Verification, outcome: &mut Outcome) -> Result<(), EngineError> {
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

    async fn runner_online(&self, tag: &str, tag_list: &[String], arch: Arch) -> Result<Probe, PortError> {
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
    async fn pipeline_proof(
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
    async fn branch_head(&self, change: &Change, project: &str, branch: &str) -> Result<(String, String), EngineError> {
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
    async fn newest_pipeline(&self, api: &str, branch: &str, head: &str) -> Result<Option<Value>, PortError> {
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
    async fn baseline_takes_work(
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
fn unfinished(it: &Value, what: &str, where_: &str) -> Option<Probe> {
    match it["status"].as_str().unwrap_or("") {
        "success" => None,
        status @ ("failed" | "canceled" | "skipped") => {
            Some(Probe::Failed(format!("{what} {status}{where_}: {}", it["web_url"].as_str().unwrap_or(""))))
        }
        status => Some(Probe::Waiting(format!("{what} is {status}"))),
    }
}

fn release_ready(obj: Option<&Value>) -> Result<String, String> {
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
