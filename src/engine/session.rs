//! One `apply` (or `rollback`) as the CLI and the TUI start it: read the saved plan or plan
//! afresh, connect the write handles, refuse a plan made against other endpoints, open the
//! journal, and run the engine. The caller supplies how to confirm and how to show events.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::gate::Gate;
use super::journal::{Journal, JournalError};
use super::ports::StateObjects;
use super::run::{Confirm, Engine, EngineError, Event, Outcome, Selection};
use super::saved::{SEAL_DATA_KEY, SavedError, SavedPlan, SealKey, SealRef};
use super::state::{HistoryRef, Lease};
use crate::live::gitlab::{self, GitLabError, GitLabWriter};
use crate::live::kube::{KubeError, KubeWriter};
use crate::live::observe::{ObserveError, Progress, observe};
use crate::live::secret::Token;
use crate::model::Plan;
use crate::phases::pipeline::encode_path;
use crate::spec::{MigrationPlan, SpecError};
use crate::vocab::Phase;

/// Where the plan comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A saved plan (`plan --out`): replayed exactly, or refused.
    Saved(PathBuf),
    /// A plan file: observed and planned now, then applied.
    Spec(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Options {
    pub source: Source,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub journal: Option<PathBuf>,
    pub phase: Option<Phase>,
    pub concurrency: usize,
    /// The GitLab URL and token to use instead of the plan's variables (the embedded demo).
    pub gitlab: Option<(String, Token)>,
    /// How long one request to either system may take before it counts as failed (`--timeout`).
    pub timeout: std::time::Duration,
    /// Accept certificates that do not verify, on both systems (`--insecure-skip-tls-verify`).
    pub insecure_skip_tls_verify: bool,
    /// A run that writes nothing (a dry run, the read-only TUI): it reads the migration's
    /// history, takes no Lease and creates nothing, neither in the cluster nor on disk.
    pub read_only: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot read {path}: {cause}")]
    Read { path: String, cause: String },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Saved(#[from] SavedError),
    /// The saved plan was made against another cluster or GitLab.
    #[error("{0}; refusing to replay it here (nothing was written)")]
    Mismatch(String),
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(transparent)]
    GitLab(#[from] GitLabError),
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The history read holds nothing of a migration that is in place: it lives elsewhere.
    #[error("{0}")]
    NoHistory(String),
}

impl SessionError {
    /// 3 for a stale, mismatched, edited or refused plan; 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            SessionError::Mismatch(_)
            | SessionError::Saved(
                SavedError::Seal { .. } | SavedError::Incomplete { .. } | SavedError::Version { .. },
            )
            | SessionError::Engine(EngineError::Stale { .. } | EngineError::Refused(_)) => 3,
            _ => 1,
        }
    }
}

fn read(path: &Path) -> Result<String, SessionError> {
    let bytes = std::fs::read(path)
        .map_err(|e| SessionError::Read { path: path.display().to_string(), cause: e.to_string() })?;
    String::from_utf8(bytes).map_err(|e| SessionError::Read {
        path: path.display().to_string(),
        cause: format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
    })
}

/// The GitLab URL and token the plan names (environment variables or a token file).
pub fn gitlab_endpoint(spec: &MigrationPlan) -> Result<(String, Token), SessionError> {
    let endpoint = &spec.target.gitlab;
    let url = std::env::var(&endpoint.url_env).map_err(|_| {
        SessionError::Setup(format!("set {} to the GitLab URL (the plan's target.gitlab.urlEnv)", endpoint.url_env))
    })?;
    let token = match &endpoint.token_file {
        Some(file) => Token::new(
            std::fs::read_to_string(file)
                .map_err(|e| SessionError::Read { path: file.clone(), cause: format!("the GitLab token file: {e}") })?,
            file.clone(),
        ),
        None => Token::from_env(&endpoint.token_env).ok_or_else(|| {
            SessionError::Setup(format!(
                "set {} to a GitLab token with the api scope (the plan's target.gitlab.tokenEnv)",
                endpoint.token_env
            ))
        })?,
    };
    Ok((url, token))
}

/// Where archshift before 0.2 kept a journal by default: next to a saved plan, or
/// `.archshift/NAME.journal.jsonl` under the directory it ran in. Such a file, if it holds
/// records, is the migration's history until it is given with `--journal`.
pub fn legacy_journal(source: &Source, spec: &MigrationPlan) -> PathBuf {
    match source {
        Source::Saved(path) => {
            let mut p = path.as_os_str().to_owned();
            p.push(".journal.jsonl");
            PathBuf::from(p)
        }
        Source::Spec(_) => Path::new(".archshift").join(format!("{}.journal.jsonl", spec.metadata.name)),
    }
}

/// Where the migration's history lives in the cluster: the runners' namespace (the
/// baseline Release's, read now, when the plan names none), keyed by the plan's name and
/// the GitLab URL.
pub async fn history_ref(
    kube: &KubeWriter,
    spec: &MigrationPlan,
    gitlab_url: &str,
) -> Result<HistoryRef, SessionError> {
    let namespace = runners_namespace(kube, spec).await?;
    Ok(HistoryRef::new(&namespace, &spec.metadata.name, gitlab_url))
}

async fn runners_namespace(kube: &KubeWriter, spec: &MigrationPlan) -> Result<String, SessionError> {
    let baseline = match spec.runners.namespace {
        Some(_) => None,
        None => kube.reader().get(crate::live::kube::RELEASE, None, &spec.runners.baseline_release).await?,
    };
    Ok(crate::phases::runners::namespace_for(spec, baseline.as_ref()))
}

/// Opens the journal the run uses: the file given with `--journal`, or the migration's
/// history in the cluster; a run that may write first takes the migration's Lease (with a
/// local file too: the Lease is what keeps two machines apart).
async fn open_journal(
    opts: &Options,
    spec: &MigrationPlan,
    kube: &KubeWriter,
    history: HistoryRef,
) -> Result<Journal, SessionError> {
    let objects: Arc<dyn StateObjects> = Arc::new(kube.clone());
    let mut journal = match &opts.journal {
        Some(path) if opts.read_only => Journal::read_only(path)?,
        Some(path) => Journal::open(path)?,
        None => Journal::in_cluster(objects.clone(), history.clone(), !opts.read_only).await?,
    };
    if opts.journal.is_none() && journal.records().is_empty() {
        let legacy = legacy_journal(&opts.source, spec);
        if std::fs::metadata(&legacy).is_ok_and(|m| m.len() > 0) {
            return Err(SessionError::NoHistory(format!(
                "the migration's history {} is empty, but {} holds a journal an earlier archshift kept there; nothing was written. Continue with it: --journal {}",
                journal.location(),
                legacy.display(),
                legacy.display()
            )));
        }
    }
    if !opts.read_only {
        let lease = Lease::take(objects.clone(), &history).await.map_err(JournalError::from)?;
        // Read again under the Lease: what a run that held it until just now appended counts.
        if opts.journal.is_none() {
            journal = Journal::in_cluster(objects, history, true).await?;
        }
        journal.hold(lease);
    }
    Ok(journal)
}

/// Everything an apply or rollback needs, connected and checked.
pub struct Prepared {
    pub spec: MigrationPlan,
    pub spec_text: String,
    pub spec_file: String,
    /// The plan to apply: the saved one, or one made just now.
    pub plan: Plan,
    pub kube: KubeWriter,
    pub gitlab: GitLabWriter,
    pub journal: Journal,
    pub context: Option<String>,
    /// Where the migration's history and Lease live (the runners' namespace).
    pub state_namespace: String,
}

/// The plan file, the write handles and the journal.
struct Connected {
    spec: MigrationPlan,
    spec_text: String,
    spec_file: String,
    saved: Option<SavedPlan>,
    kube: KubeWriter,
    gitlab: GitLabWriter,
    journal: Journal,
    context: Option<String>,
    state_namespace: String,
}

async fn connect(opts: &Options) -> Result<Connected, SessionError> {
    let (spec_file, spec_text, saved) = match &opts.source {
        Source::Saved(path) => {
            // Owner-only on every open, not only when `plan --out` wrote it (best effort: a
            // plan someone else owns keeps its mode).
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
            }
            let text = read(path)?;
            let saved = SavedPlan::read(&path.display().to_string(), &text)?;
            (saved.spec_file.clone(), saved.spec.clone(), Some(saved))
        }
        Source::Spec(path) => (path.display().to_string(), read(path)?, None),
    };
    let spec = MigrationPlan::parse(&spec_text, &spec_file)?;
    let (url, token) = match &opts.gitlab {
        Some(given) => given.clone(),
        None => gitlab_endpoint(&spec)?,
    };
    let context = opts.context.clone().or_else(|| spec.target.kube_context.clone());
    let how =
        crate::live::kube::Connect { timeout: opts.timeout, insecure_skip_tls_verify: opts.insecure_skip_tls_verify };
    let kube = KubeWriter::connect_with(opts.kubeconfig.as_deref(), context.as_deref(), how).await?;
    let gitlab = GitLabWriter::new(
        &url,
        token,
        gitlab::Options {
            concurrency: opts.concurrency.max(1),
            timeout: opts.timeout,
            insecure_skip_tls_verify: opts.insecure_skip_tls_verify,
            ..gitlab::Options::default()
        },
    )?;
    if let Some(saved) = &saved {
        let file = match &opts.source {
            Source::Saved(path) => path.display().to_string(),
            Source::Spec(_) => spec_file.clone(),
        };
        // Where it was made first (reads only, and the clearest refusal for a plan replayed
        // elsewhere), then whether its seal holds with the key kept there.
        check_endpoints(&saved.plan, &kube, &gitlab).await?;
        let at = &saved.seal_key;
        let key = seal_key(&kube, at, false).await?.ok_or_else(|| {
            SessionError::Mismatch(format!(
                "{file}: its seal key (Secret {}/{}) is not in this cluster, so it cannot be checked (made against another cluster, or the key was deleted: plan again)",
                at.namespace, at.secret
            ))
        })?;
        saved.verify(&file, &key)?;
    }
    let history = history_ref(&kube, &spec, gitlab.reader().url()).await?;
    let state_namespace = history.namespace.clone();
    let journal = open_journal(opts, &spec, &kube, history).await?;
    Ok(Connected { spec, spec_text, spec_file, saved, kube, gitlab, journal, context, state_namespace })
}

/// The migration's history alone, read only (`archshift journal show`): the plan is read
/// for its name and runners' namespace, nothing is observed, checked or written.
pub async fn history(opts: &Options) -> Result<Journal, SessionError> {
    let (spec_file, spec_text) = match &opts.source {
        Source::Saved(path) => {
            let saved = SavedPlan::read(&path.display().to_string(), &read(path)?)?;
            (saved.spec_file.clone(), saved.spec.clone())
        }
        Source::Spec(path) => (path.display().to_string(), read(path)?),
    };
    let spec = MigrationPlan::parse(&spec_text, &spec_file)?;
    let (url, token) = match &opts.gitlab {
        Some(given) => given.clone(),
        None => gitlab_endpoint(&spec)?,
    };
    let context = opts.context.clone().or_else(|| spec.target.kube_context.clone());
    let how =
        crate::live::kube::Connect { timeout: opts.timeout, insecure_skip_tls_verify: opts.insecure_skip_tls_verify };
    let kube = KubeWriter::connect_with(opts.kubeconfig.as_deref(), context.as_deref(), how).await?;
    // Only for the URL as the other commands normalise it: nothing is sent to GitLab.
    let gitlab = GitLabWriter::new(&url, token, gitlab::Options::default())?;
    let history = history_ref(&kube, &spec, gitlab.reader().url()).await?;
    let read_only = Options { read_only: true, ..opts.clone() };
    open_journal(&read_only, &spec, &kube, history).await
}

/// Observes both systems through the write handles' read side; refuses to go on from a read
/// that is missing what the plan needs.
async fn observe_for(
    c: &Connected,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<crate::model::ObservedState, SessionError> {
    let observation = observe(&c.spec, c.kube.reader(), c.gitlab.reader(), progress).await?;
    if let Some((_, what)) = observation.unreadable.first() {
        return Err(SessionError::Setup(format!("cannot plan safely: {what}")));
    }
    if let Some(kind) = observation.not_served.iter().find(|k| k.contains("karpenter") || k.contains("crossplane")) {
        return Err(SessionError::Setup(format!(
            "the cluster does not serve {kind}: is its controller installed? (`archshift audit` shows what is missing)"
        )));
    }
    Ok(observation.state)
}

/// Reads the plan, connects, and for a saved plan checks it was made against these endpoints.
pub async fn prepare(opts: &Options, progress: &(dyn Fn(Progress) + Send + Sync)) -> Result<Prepared, SessionError> {
    let c = connect(opts).await?;
    let plan = match &c.saved {
        Some(saved) => saved.plan.clone(),
        None => {
            let state = observe_for(&c, progress).await?;
            crate::phases::plan(&state, &c.spec, &c.spec_text)
        }
    };
    let Connected { spec, spec_text, spec_file, kube, gitlab, journal, context, state_namespace, .. } = c;
    Ok(Prepared { spec, spec_text, spec_file, plan, kube, gitlab, journal, context, state_namespace })
}

/// Like [`prepare`], for a rollback: observes now and plans the way back from what the
/// journal says archshift wrote.
pub async fn prepare_rollback(
    opts: &Options,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Prepared, SessionError> {
    let c = connect(opts).await?;
    let state = observe_for(&c, progress).await?;
    if c.journal.records().is_empty() {
        let traces = crate::phases::rollback::traces(&state, &c.spec);
        if !traces.is_empty() {
            return Err(SessionError::NoHistory(format!(
                "the migration history {} holds no records, yet {} of migration {} are in place: it was applied with its journal elsewhere; nothing was written. Give that journal with --journal FILE (an apply with --journal keeps it only there)",
                c.journal.location(),
                traces.join(", "),
                c.spec.metadata.name
            )));
        }
    }
    let (applied, _) = c.journal.applied();
    let phase = crate::phases::rollback::plan(&state, &c.spec, &applied);
    let plan = Plan {
        format_version: crate::model::PLAN_FORMAT_VERSION,
        spec_digest: crate::phases::digest(&c.spec_text),
        observed_at: state.observed_at.clone(),
        endpoints: state.endpoints.clone(),
        phases: vec![phase],
    };
    let Connected { spec, spec_text, spec_file, kube, gitlab, journal, context, state_namespace, .. } = c;
    Ok(Prepared { spec, spec_text, spec_file, plan, kube, gitlab, journal, context, state_namespace })
}

/// The key saved plans of a migration are sealed with, from its Secret at `at`; with `create`
/// (what `plan --out` asks) a fresh key is made when there is none, and a key another run
/// made first is read back rather than overwritten.
pub async fn seal_key(kube: &KubeWriter, at: &SealRef, create: bool) -> Result<Option<SealKey>, SessionError> {
    let short = || {
        SessionError::Setup(format!(
            "Secret {}/{} holds no usable seal key ({SEAL_DATA_KEY} must be at least 32 bytes)",
            at.namespace, at.secret
        ))
    };
    if let Some(bytes) = kube.secret_bytes(&at.namespace, &at.secret, SEAL_DATA_KEY).await? {
        return SealKey::new(bytes).map(Some).ok_or_else(short);
    }
    if !create {
        return Ok(None);
    }
    let key = SealKey::generate()?;
    if kube.create_secret_bytes(&at.namespace, &at.secret, SEAL_DATA_KEY, key.expose()).await? {
        return Ok(Some(key));
    }
    let bytes = kube.secret_bytes(&at.namespace, &at.secret, SEAL_DATA_KEY).await?.ok_or_else(short)?;
    SealKey::new(bytes).map(Some).ok_or_else(short)
}

/// Where the seal key of `spec`'s migration is kept: the runners' namespace (the baseline
/// Release's, read now, when the plan names none).
pub async fn seal_ref(kube: &KubeWriter, spec: &MigrationPlan) -> Result<SealRef, SessionError> {
    let namespace = runners_namespace(kube, spec).await?;
    Ok(SealRef::for_migration(&namespace, &spec.metadata.name))
}

/// The prepared plan, sealed with its migration's key (made when there is none yet and
/// `may_make_key`).
pub async fn seal(p: &Prepared, may_make_key: bool) -> Result<SavedPlan, SessionError> {
    let at = seal_ref(&p.kube, &p.spec).await?;
    let key = seal_key(&p.kube, &at, may_make_key).await?.ok_or_else(|| {
        SessionError::Setup(format!(
            "no seal key in Secret {}/{} yet, and a read-only session does not make one: `archshift plan --out FILE` does",
            at.namespace, at.secret
        ))
    })?;
    Ok(SavedPlan::seal(&p.spec_file, &p.spec_text, p.plan.clone(), at, &key))
}

/// Refuses a saved plan made against another cluster or GitLab (or other projects, groups).
async fn check_endpoints(plan: &Plan, kube: &KubeWriter, gitlab: &GitLabWriter) -> Result<(), SessionError> {
    if let Some(saved) = &plan.endpoints.cluster {
        let now = kube.reader().identity().await?;
        if now.kube_system_uid != saved.kube_system_uid {
            return Err(SessionError::Mismatch(format!(
                "the saved plan was made against cluster {} (kube-system {}), but this is {} (kube-system {})",
                saved.server, saved.kube_system_uid, now.server, now.kube_system_uid
            )));
        }
    }
    if let Some(saved) = &plan.endpoints.gitlab {
        let here = gitlab.reader().url().trim_end_matches('/');
        if saved.url.trim_end_matches('/') != here {
            return Err(SessionError::Mismatch(format!(
                "the saved plan was made against GitLab {}, but this is {here}",
                saved.url
            )));
        }
        for (path, id) in &saved.ids {
            let project = gitlab.get(&format!("/projects/{}", encode_path(path))).await?;
            let found = match project {
                Some(p) => p["id"].as_u64(),
                None => gitlab.get(&format!("/groups/{}", encode_path(path))).await?.and_then(|g| g["id"].as_u64()),
            };
            if found != Some(*id) {
                return Err(SessionError::Mismatch(format!(
                    "{path} was id {id} when the plan was saved, and is {} here",
                    found.map_or("missing".to_string(), |f| f.to_string())
                )));
            }
        }
    }
    Ok(())
}

/// Which history the run reads and writes, and how much it holds.
pub fn history_line(p: &Prepared) -> String {
    let n = p.journal.records().len();
    let plans: std::collections::BTreeSet<&str> = p.journal.records().iter().map(|r| r.plan.as_str()).collect();
    format!(
        "history: {} ({n} record(s){})",
        p.journal.location(),
        if plans.len() > 1 { format!(" from {} plans", plans.len()) } else { String::new() }
    )
}

/// Ends the session: the migration's Lease is given up, so the next run need not wait.
pub async fn finish(p: &mut Prepared) {
    p.journal.close().await;
}

/// What every run into the engine says first, whichever way it came in (the CLI's apply and
/// rollback, the TUI's): which history it writes and how much it holds, and a torn record
/// found on opening (once: the first append cuts it off).
fn announce(p: &mut Prepared, emit: &(dyn Fn(&Event) + Sync)) {
    emit(&Event::Notice { message: history_line(p) });
    if let Some(torn) = p.journal.torn.take() {
        emit(&Event::Notice {
            message: format!(
                "the journal {} ended in a torn record (a crash mid-write), cut off: {torn}; its step is re-checked",
                p.journal.location()
            ),
        });
    }
}

/// Applies the prepared plan.
pub async fn apply(
    p: &mut Prepared,
    phase: Option<Phase>,
    force: bool,
    emit: &(dyn Fn(&Event) + Sync),
    confirm: &mut Confirm<'_>,
) -> Result<Outcome, SessionError> {
    let selection = match phase {
        Some(p) => Selection::Phase(p),
        None => Selection::All,
    };
    let plan = p.plan.clone();
    apply_gated(p, &plan, &selection, force, emit, confirm).await
}

/// Applies what `selection` names of the prepared plan, behind the same gate as [`apply`].
pub async fn apply_selection(
    p: &mut Prepared,
    selection: &Selection,
    force: bool,
    emit: &(dyn Fn(&Event) + Sync),
    confirm: &mut Confirm<'_>,
) -> Result<Outcome, SessionError> {
    let plan = p.plan.clone();
    apply_gated(p, &plan, selection, force, emit, confirm).await
}

/// What stops `selection` of `plan` (see [`super::gate`]), with the preflight asked now.
pub async fn stops(p: &Prepared, plan: &Plan, selection: &Selection) -> Result<Vec<String>, SessionError> {
    let gate = gate_for(p, plan).await?;
    Ok(gate.stops(plan, selection))
}

/// The gate of `plan`: its risks and blocked changes, and the preflight's denials now.
pub async fn gate_for(p: &Prepared, plan: &Plan) -> Result<Gate, SessionError> {
    let (preflight, access) =
        crate::audit::live::preflight(plan, p.kube.reader(), p.gitlab.reader(), Some(&p.state_namespace)).await?;
    Ok(Gate::new(plan, &preflight, &access))
}

/// The risk gate, then the engine: every risk, denied permission and blocked change that
/// bears on what the run would write is printed before anything is written, and stops the run
/// (exit 3, nothing written) unless `force`.
async fn apply_gated(
    p: &mut Prepared,
    plan: &Plan,
    selection: &Selection,
    force: bool,
    emit: &(dyn Fn(&Event) + Sync),
    confirm: &mut Confirm<'_>,
) -> Result<Outcome, SessionError> {
    announce(p, emit);
    let stops = stops(p, plan, selection).await?;
    for line in &stops {
        emit(&Event::Risk { message: line.clone(), forced: force });
    }
    if !stops.is_empty() && !force {
        return Err(SessionError::Engine(EngineError::Refused(format!(
            "{} risk(s), denied permission(s) or blocked change(s) bear on what this run would write (listed above); nothing was written. Fix them, apply only what they do not touch (--phase N), or pass --force to write what is in place anyway",
            stops.len()
        ))));
    }
    let mut engine = Engine::new(&p.kube, &p.gitlab, &p.spec, &mut p.journal, emit, confirm);
    Ok(engine.apply_selection(plan, selection).await?)
}

/// The server-side dry run of one step of the prepared plan.
pub async fn dry_run(
    p: &mut Prepared,
    id: &crate::model::ChangeId,
    emit: &(dyn Fn(&Event) + Sync),
) -> Result<Option<String>, SessionError> {
    let plan = p.plan.clone();
    let mut never = |_: Phase, _: &[&crate::model::Change]| false;
    let mut engine = Engine::new(&p.kube, &p.gitlab, &p.spec, &mut p.journal, emit, &mut never);
    Ok(engine.dry_run_step(&plan, id).await?)
}

/// Observes again and plans afresh from the same plan file (what `r` in the TUI does).
pub async fn replan(p: &Prepared) -> Result<Plan, SessionError> {
    let observation = observe(&p.spec, p.kube.reader(), p.gitlab.reader(), &|_| {}).await?;
    Ok(crate::phases::plan(&observation.state, &p.spec, &p.spec_text))
}

/// The rollback plan for what the journal says archshift wrote, from what is there now.
pub async fn rollback_plan(p: &Prepared) -> Result<Plan, SessionError> {
    let observation = observe(&p.spec, p.kube.reader(), p.gitlab.reader(), &|_| {}).await?;
    let (applied, _) = p.journal.applied();
    let phase = crate::phases::rollback::plan(&observation.state, &p.spec, &applied);
    Ok(Plan {
        format_version: crate::model::PLAN_FORMAT_VERSION,
        spec_digest: crate::phases::digest(&p.spec_text),
        observed_at: observation.state.observed_at.clone(),
        endpoints: observation.state.endpoints.clone(),
        phases: vec![phase],
    })
}

/// Applies another plan (the rollback plan the TUI showed) with the prepared connections.
pub async fn apply_plan(
    p: &mut Prepared,
    plan: &Plan,
    emit: &(dyn Fn(&Event) + Sync),
    confirm: &mut Confirm<'_>,
) -> Result<Outcome, SessionError> {
    announce(p, emit);
    let mut engine = Engine::new(&p.kube, &p.gitlab, &p.spec, &mut p.journal, emit, confirm);
    Ok(engine.apply(plan, None).await?)
}
