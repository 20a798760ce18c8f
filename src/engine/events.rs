//! What the engine reports as it goes (its event vocabulary, printed as text or one JSON
//! object per line), and how a run fails.

use serde::Serialize;

use super::journal::JournalError;
use crate::vocab::Phase;

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
