//! Applying a plan: for each change in dependency order, check it against what is there now
//! (skip what already holds, refuse what drifted), dry-run it on the server, write it with its
//! guard, journal it, and verify it by what really happened.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use super::check::{self, Current, Holds};
pub use super::events::{EngineError, Event};
use super::journal::{self, Journal, JournalError, Record};
use super::ports::{Cluster, Forge, KubeRef};
use crate::live::secret::Token;
use crate::model::{Change, ChangeId, Document, ObjectRef, Plan};
use crate::phases::pipeline::encode_path;
use crate::spec::MigrationPlan;
use crate::vocab::Phase;

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
pub(super) const NOTE: &str = "note: ";

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
    pub(super) tokens: BTreeMap<ChangeId, Token>,
}

pub(super) fn other(id: &ChangeId, e: impl std::fmt::Display) -> EngineError {
    EngineError::Failed { id: id.to_string(), cause: e.to_string() }
}

pub(super) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A document as the journal may hold it: sensitive pointers and Secret values masked.
pub(super) fn journaled(change: &Change, doc: Option<&Document>) -> Option<Document> {
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

pub(super) fn kube_ref(target: &ObjectRef) -> Option<KubeRef<'_>> {
    match target {
        ObjectRef::Kube { api_version, kind, namespace, name } => {
            Some(KubeRef { api_version, kind, namespace: namespace.as_deref(), name })
        }
        _ => None,
    }
}

pub(super) fn file_path(project: &str, path: &str) -> String {
    format!("/projects/{}/repository/files/{}", encode_path(project), encode_path(path))
}

pub(super) fn decode_file(v: &Value) -> Result<Current, String> {
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

    pub(super) async fn record(
        &mut self,
        plan: &Plan,
        change: &Change,
        event: journal::Event,
        message: Option<String>,
    ) -> Result<(), JournalError> {
        self.record_with(plan, change, event, message, None).await
    }

    pub(super) async fn record_with(
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
    pub(super) async fn verify_earlier_writes(
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

    pub(super) fn journaled_as_written(&self, plan: &Plan, change: &Change) -> bool {
        self.journal
            .last(&plan.spec_digest, &change.id)
            .is_some_and(|r| matches!(r.event, journal::Event::Written | journal::Event::Verified))
    }

    /// Runs the change's verifications, journals the result.
    pub(super) async fn verify(
        &mut self,
        plan: &Plan,
        change: &Change,
        outcome: &mut Outcome,
    ) -> Result<(), EngineError> {
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
}
