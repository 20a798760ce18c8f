//! The journal: one JSON line per step event, fsynced before the next write, so a run that
//! stops anywhere (Ctrl-C, crash, kill -9) can be resumed or rolled back from what it says.
//!
//! Records carry the planned before- and after-images with every sensitive pointer masked;
//! a runner token is never in them (it is bound at apply time and never kept). A last line
//! without its newline is a torn write from a crash: it is reported and cut off, and the
//! step it described is re-checked against the live state. Any other unreadable line is
//! corruption, and the journal is refused.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ports::StateObjects;
use super::state::{ClusterStore, HistoryRef, Lease, StateError};
use crate::model::{Action, Change, ChangeId, Document};
use crate::phases::rollback::{Applied, Journal as AppliedMap};

/// What happened to a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Event {
    /// About to write (before-image recorded).
    Intent,
    /// The write returned; the after-image is what was asked for.
    Written,
    /// Its verification passed.
    Verified,
    /// Its write or verification failed; `message` says why.
    Failed,
    /// Rollback undid it.
    Reverted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub seq: u64,
    /// RFC 3339, UTC.
    pub time: String,
    /// The plan (file digest) the step belongs to.
    pub plan: String,
    pub change: ChangeId,
    pub event: Event,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Document>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Document>,
    /// What the step does to its target (create, update, delete): rollback deletes only what
    /// archshift created, and restores what it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// The GitLab runner a step created (rollback deletes it by id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// On an intent: the change itself, without its images (they are `before` and `after`),
    /// so that a later run planned afresh, which no longer lists it (its target holds), can
    /// still check and verify a write an earlier run made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Box<Change>>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot use the journal {path}: {cause}")]
    Io { path: String, cause: String },
    #[error(
        "the journal {path} is corrupt at line {line}: {cause}; nothing was written. Move it aside only if you know what it recorded"
    )]
    Corrupt { path: String, line: usize, cause: String },
    #[error(
        "the journal {path} is in use by another archshift run (an apply, a rollback or the TUI); nothing was written. Let it finish or stop it first: two runs at once could each create a runner"
    )]
    Busy { path: String },
    /// The migration's history or Lease in the cluster.
    #[error(transparent)]
    State(#[from] StateError),
    #[error("the journal {path} was opened read-only (a dry run); it takes no records")]
    ReadOnly { path: String },
}

/// Where the records go.
enum Store {
    /// A local file, locked for the run (`--journal FILE`).
    File(File),
    /// The migration's history in the cluster; `keep` is where a torn tail starts, cut
    /// before the first append.
    Cluster { store: ClusterStore, keep: Option<usize>, bytes: Vec<u8> },
    /// Read for a dry run: never written, never created.
    ReadOnly,
}

/// An open journal: its records so far, and where new ones are appended.
pub struct Journal {
    location: String,
    store: Store,
    records: Vec<Record>,
    /// The run's Lease on the migration: every append first checks it is still held.
    lease: Option<Lease>,
    /// The torn last line found on opening (cut off), for the operator to see.
    pub torn: Option<String>,
}

impl Journal {
    /// Opens (or creates, 0600) the journal at `path`, reading what it holds.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let io = |e: std::io::Error| JournalError::Io { path: path.display().to_string(), cause: e.to_string() };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut opts = OpenOptions::new();
        opts.read(true).append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let file = opts.open(path).map_err(io)?;
        // The mode is enforced on every open, not only at creation: a journal left 0644 (copied,
        // made by hand, an older version) is tightened before anything is read from it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        // One run per journal: held until this process ends, however it ends (kill -9 too,
        // so no stale lock is left behind), and taken before anything is read or cut off.
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(JournalError::Busy { path: path.display().to_string() });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let (records, torn, keep) = parse(&bytes).map_err(|(line, cause)| JournalError::Corrupt {
            path: path.display().to_string(),
            line,
            cause,
        })?;
        if keep < bytes.len() {
            file.set_len(keep as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        Ok(Journal { location: path.display().to_string(), store: Store::File(file), records, lease: None, torn })
    }

    /// Reads the journal at `path` for a dry run: nothing is created, locked or cut off; a
    /// missing file is an empty journal.
    pub fn read_only(path: &Path) -> Result<Journal, JournalError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(JournalError::Io { path: path.display().to_string(), cause: e.to_string() }),
        };
        let location = path.display().to_string();
        let (records, torn, _) =
            parse(&bytes).map_err(|(line, cause)| JournalError::Corrupt { path: location.clone(), line, cause })?;
        Ok(Journal { location, store: Store::ReadOnly, records, lease: None, torn })
    }

    /// Opens the migration's history in the cluster; `writable` for a run that may write
    /// (a dry run reads it only). Nothing is created before the first record.
    pub async fn in_cluster(
        objects: std::sync::Arc<dyn StateObjects>,
        at: HistoryRef,
        writable: bool,
    ) -> Result<Journal, JournalError> {
        let location = at.describe();
        let (store, bytes) = ClusterStore::load(objects, at).await?;
        let (records, torn, keep) =
            parse(&bytes).map_err(|(line, cause)| JournalError::Corrupt { path: location.clone(), line, cause })?;
        let store = if writable {
            Store::Cluster { store, keep: (keep < bytes.len()).then_some(keep), bytes }
        } else {
            Store::ReadOnly
        };
        Ok(Journal { location, store, records, lease: None, torn })
    }

    /// Binds the run's Lease: from now on every record first checks it is still held.
    pub fn hold(&mut self, lease: Lease) {
        self.lease = Some(lease);
    }

    /// Releases the Lease, if any (the run is over).
    pub async fn close(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release().await;
        }
    }

    /// Where the records are: a file's path, or the history's Secrets.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Whether the records live in the cluster (else in a local file).
    pub fn is_local(&self) -> bool {
        matches!(self.store, Store::File(_))
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Appends one record, durably (fsynced, or stored by the API server) before returning:
    /// the next write waits for it. Refused once the run's Lease is lost.
    pub async fn append(&mut self, mut rec: Record) -> Result<(), JournalError> {
        if let Some(lease) = &self.lease {
            lease.check()?;
        }
        rec.seq = self.records.last().map_or(1, |r| r.seq + 1);
        let mut line = serde_json::to_string(&rec)
            .map_err(|e| JournalError::Io { path: self.location.clone(), cause: e.to_string() })?;
        line.push('\n');
        match &mut self.store {
            Store::File(file) => {
                let io = |e: std::io::Error| JournalError::Io { path: self.location.clone(), cause: e.to_string() };
                file.write_all(line.as_bytes()).map_err(io)?;
                file.sync_data().map_err(io)?;
            }
            Store::Cluster { store, keep, bytes } => {
                if let Some(k) = *keep {
                    store.truncate(k, bytes).await?;
                    *keep = None;
                    bytes.clear();
                }
                store.append(line.as_bytes()).await?;
            }
            Store::ReadOnly => return Err(JournalError::ReadOnly { path: self.location.clone() }),
        }
        self.records.push(rec);
        Ok(())
    }

    /// The last event recorded for `change` under `plan`.
    pub fn last(&self, plan: &str, change: &ChangeId) -> Option<&Record> {
        self.records.iter().rev().find(|r| r.plan == plan && &r.change == change)
    }

    /// What rollback needs: every change written (and not since reverted), with its images,
    /// latest first wins; plus the runner ids steps created. A change only intended (its
    /// `written` record lost to a crash, or its write's answer lost) counts as possibly
    /// written: rollback compares what is there with both images before it undoes anything.
    pub fn applied(&self) -> (AppliedMap, BTreeMap<ChangeId, u64>) {
        let mut applied = AppliedMap::new();
        let mut runners = BTreeMap::new();
        for r in &self.records {
            match r.event {
                Event::Intent if !applied.contains_key(&r.change) => {
                    let runner_id = runners.get(&r.change).copied();
                    applied.insert(
                        r.change.clone(),
                        Applied { before: r.before.clone(), after: r.after.clone(), action: r.action, runner_id },
                    );
                }
                Event::Written => {
                    let runner_id = r.runner_id.or_else(|| runners.get(&r.change).copied());
                    applied.insert(
                        r.change.clone(),
                        Applied { before: r.before.clone(), after: r.after.clone(), action: r.action, runner_id },
                    );
                    if let Some(id) = r.runner_id {
                        runners.insert(r.change.clone(), id);
                    }
                }
                Event::Reverted => {
                    applied.remove(&r.change);
                    runners.remove(&r.change);
                }
                Event::Intent | Event::Verified | Event::Failed => {}
            }
        }
        (applied, runners)
    }
}

impl Journal {
    /// The changes an earlier run intended or wrote and never verified (nor reverted), as
    /// their intent recorded them, oldest first: possibly written, so checked again.
    pub fn unverified(&self) -> Vec<Change> {
        let mut last: BTreeMap<&ChangeId, (Event, Option<&Record>)> = BTreeMap::new();
        let mut order: Vec<&ChangeId> = Vec::new();
        for r in &self.records {
            let entry = last.entry(&r.change).or_insert_with(|| {
                order.push(&r.change);
                (r.event, None)
            });
            entry.0 = r.event;
            if r.event == Event::Intent && r.step.is_some() {
                entry.1 = Some(r);
            }
        }
        order
            .into_iter()
            .filter_map(|id| match last.get(id) {
                Some((Event::Intent | Event::Written | Event::Failed, Some(intent))) => {
                    let mut change = (**intent.step.as_ref()?).clone();
                    change.before.clone_from(&intent.before);
                    change.after.clone_from(&intent.after);
                    Some(change)
                }
                _ => None,
            })
            .collect()
    }
}

/// What [`parse`] read: the records, a torn last line (if any) and how many bytes are good.
pub type Parsed = (Vec<Record>, Option<String>, usize);

/// Parses journal bytes. Err is (line number, cause) of a bad line that is not the torn
/// last one.
pub fn parse(bytes: &[u8]) -> Result<Parsed, (usize, String)> {
    let mut records = Vec::new();
    let mut offset = 0;
    let mut line_no = 0;
    while offset < bytes.len() {
        line_no += 1;
        let rest = &bytes[offset..];
        let Some(end) = rest.iter().position(|b| *b == b'\n') else {
            // No newline: the write of this line never finished.
            let text = String::from_utf8_lossy(rest).chars().take(80).collect::<String>();
            return Ok((records, Some(format!("line {line_no}: {text}")), offset));
        };
        let line = &rest[..end];
        if !line.iter().all(u8::is_ascii_whitespace) {
            let rec: Record = serde_json::from_slice(line).map_err(|e| (line_no, e.to_string()))?;
            records.push(rec);
        }
        offset += end + 1;
    }
    Ok((records, None, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(change: &str, event: Event) -> Record {
        Record {
            seq: 0,
            time: "2026-11-28T00:00:00Z".into(),
            plan: "sha256:p".into(),
            change: ChangeId::from(change),
            event,
            before: None,
            after: Some(Document::Text("x".into())),
            action: None,
            runner_id: None,
            message: None,
            step: None,
        }
    }

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("archshift-journal-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("j.jsonl")
    }

    #[tokio::test]
    async fn records_survive_reopening_in_order_with_sequence_numbers() {
        let path = scratch();
        let mut j = Journal::open(&path).unwrap();
        j.append(rec("a", Event::Intent)).await.unwrap();
        j.append(rec("a", Event::Written)).await.unwrap();
        drop(j);
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.records().iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(j.last("sha256:p", &ChangeId::from("a")).map(|r| r.event), Some(Event::Written));
        assert!(j.torn.is_none());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[cfg(unix)]
    #[test]
    fn an_existing_journal_readable_by_others_is_tightened_on_open() {
        use std::os::unix::fs::PermissionsExt as _;
        let path = scratch();
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _j = Journal::open(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[tokio::test]
    async fn one_run_at_a_time_holds_a_journal() {
        let path = scratch();
        let mut first = Journal::open(&path).unwrap();
        first.append(rec("a", Event::Intent)).await.unwrap();
        let second = Journal::open(&path);
        assert!(matches!(&second, Err(JournalError::Busy { .. })), "{:?}", second.err());
        assert!(second.err().unwrap().to_string().contains("in use by another archshift run"));
        drop(first);
        let again = Journal::open(&path).unwrap();
        assert_eq!(again.records().len(), 1, "the refused open changed nothing");
    }

    #[tokio::test]
    async fn a_torn_last_line_is_reported_and_cut_off_so_appends_stay_readable() {
        let path = scratch();
        let mut j = Journal::open(&path).unwrap();
        j.append(rec("a", Event::Written)).await.unwrap();
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"seq":2,"time":"2026-11-28T00:00:01Z","plan":"sha256:p","change":"b","ev"#).unwrap();
        drop(f);
        let mut j = Journal::open(&path).unwrap();
        assert!(j.torn.as_deref().is_some_and(|t| t.starts_with("line 2: {\"seq\":2")), "{:?}", j.torn);
        assert_eq!(j.records().len(), 1);
        j.append(rec("b", Event::Intent)).await.unwrap();
        drop(j);
        let j = Journal::open(&path).unwrap();
        assert!(j.torn.is_none());
        assert_eq!(j.records().len(), 2);
        assert_eq!(j.records()[1].change.as_str(), "b");
    }

    #[test]
    fn garbage_before_the_last_line_is_corruption_not_a_torn_write() {
        let path = scratch();
        std::fs::write(&path, "not json\n{\"also\": \"bad\"}\n").unwrap();
        let e = Journal::open(&path).err().unwrap();
        assert!(matches!(e, JournalError::Corrupt { line: 1, .. }), "{e}");
        assert!(e.to_string().contains("corrupt at line 1"), "{e}");
    }

    #[tokio::test]
    async fn applied_lists_what_was_written_and_not_reverted() {
        let path = scratch();
        let mut j = Journal::open(&path).unwrap();
        j.append(Record { runner_id: Some(7), ..rec("runner/x", Event::Written) }).await.unwrap();
        j.append(rec("a", Event::Written)).await.unwrap();
        j.append(rec("a", Event::Reverted)).await.unwrap();
        let (applied, runners) = j.applied();
        assert_eq!(applied.keys().map(ChangeId::as_str).collect::<Vec<_>>(), ["runner/x"]);
        assert_eq!(runners.get(&ChangeId::from("runner/x")), Some(&7));
    }

    #[tokio::test]
    async fn a_write_only_intended_counts_as_possibly_written_with_its_images() {
        let path = scratch();
        let mut j = Journal::open(&path).unwrap();
        let intended = |change, before: &str| Record {
            before: Some(Document::Text(before.into())),
            after: Some(Document::Text("after".into())),
            action: Some(Action::Update),
            ..rec(change, Event::Intent)
        };
        // Killed between the write and its record; a second run's write failed.
        j.append(intended("nodepool/p", "original")).await.unwrap();
        j.append(intended("variable/v", "original")).await.unwrap();
        j.append(Record { message: Some("500".into()), ..rec("variable/v", Event::Failed) }).await.unwrap();
        // Written in one run, intended again (from archshift's own after-image) in another.
        j.append(intended("cifile/c", "original")).await.unwrap();
        j.append(Record {
            before: Some(Document::Text("original".into())),
            after: Some(Document::Text("after".into())),
            ..rec("cifile/c", Event::Written)
        })
        .await
        .unwrap();
        j.append(intended("cifile/c", "after")).await.unwrap();
        let (applied, _) = j.applied();
        assert_eq!(applied.keys().map(ChangeId::as_str).collect::<Vec<_>>(), ["cifile/c", "nodepool/p", "variable/v"]);
        for id in ["nodepool/p", "variable/v", "cifile/c"] {
            let a = &applied[&ChangeId::from(id)];
            assert_eq!(a.before, Some(Document::Text("original".into())), "{id}: the world before archshift");
            assert_eq!(a.after, Some(Document::Text("after".into())), "{id}");
        }
    }

    #[tokio::test]
    async fn unverified_lists_intended_or_written_changes_never_verified_with_their_intent_images() {
        let path = scratch();
        let mut j = Journal::open(&path).unwrap();
        let step = |id: &str| {
            let target = crate::model::ObjectRef::GitLabRunner { tag: "t".into(), id: None };
            let method = crate::model::WriteMethod::KubeDelete;
            Box::new(Change::new(ChangeId::from(id), crate::vocab::Phase::Runners, target, Action::Update, "s", method))
        };
        let intent = |id: &str| Record {
            before: Some(Document::Text("b".into())),
            after: Some(Document::Text("a".into())),
            step: Some(step(id)),
            ..rec(id, Event::Intent)
        };
        j.append(intent("done")).await.unwrap();
        j.append(rec("done", Event::Written)).await.unwrap();
        j.append(rec("done", Event::Verified)).await.unwrap();
        j.append(intent("killed")).await.unwrap();
        j.append(intent("written")).await.unwrap();
        j.append(rec("written", Event::Written)).await.unwrap();
        j.append(intent("undone")).await.unwrap();
        j.append(rec("undone", Event::Reverted)).await.unwrap();
        j.append(rec("old-format", Event::Written)).await.unwrap();
        let ids: Vec<String> = j.unverified().iter().map(|c| c.id.to_string()).collect();
        assert_eq!(ids, ["killed", "written"]);
        let killed = &j.unverified()[0];
        assert_eq!(
            (killed.before.clone(), killed.after.clone()),
            (Some(Document::Text("b".into())), Some(Document::Text("a".into())))
        );
    }
}
