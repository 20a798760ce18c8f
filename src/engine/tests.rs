//! The engine against in-memory ports: order, journal, idempotence, stale refusal and a
//! declined phase, without any server.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{Value, json};

use super::journal::{Event as J, Journal};
use super::ports::{Cluster, FailKind, Forge, KubeRef, PortError, PortResult};
use super::run::{Engine, EngineError, Event};
use crate::model::fixtures::{plan as spec, start};
use crate::model::{Change, Document, Plan};
use crate::vocab::Phase;

#[derive(Default)]
struct Fake {
    objects: Mutex<BTreeMap<String, Value>>,
    vars: Mutex<BTreeMap<String, Value>>,
    writes: Mutex<Vec<String>>,
    /// The next JSON patch is carried out (`true`) or not (`false`), and its answer lost.
    lose_answer: Mutex<Option<bool>>,
}

impl Cluster for Fake {
    async fn get(&self, t: KubeRef<'_>) -> PortResult<Option<Value>> {
        Ok(self.objects.lock().unwrap().get(t.name).cloned())
    }
    async fn create(&self, t: KubeRef<'_>, body: &Value, dry_run: bool) -> PortResult<Value> {
        if !dry_run {
            self.objects.lock().unwrap().insert(t.name.into(), body.clone());
            self.writes.lock().unwrap().push(format!("create {}", t.name));
        }
        Ok(body.clone())
    }
    async fn apply(&self, t: KubeRef<'_>, _: &Value, _: &str, _: bool) -> PortResult<Value> {
        Err(PortError::other(format!("no apply in this fake ({})", t.name)))
    }
    async fn json_patch(&self, t: KubeRef<'_>, ops: &[Value], dry_run: bool) -> PortResult<Value> {
        let lost = if dry_run { None } else { self.lose_answer.lock().unwrap().take() };
        let timed_out = || PortError { kind: FailKind::Ambiguous, message: "operation timed out".into() };
        if lost == Some(false) {
            return Err(timed_out());
        }
        let mut objects = self.objects.lock().unwrap();
        let mut obj = objects.get(t.name).cloned().ok_or_else(|| PortError::other("not found"))?;
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops.to_vec())).unwrap();
        json_patch::patch(&mut obj, &patch)
            .map_err(|e| PortError { kind: FailKind::Conflict, message: e.to_string() })?;
        if !dry_run {
            let rv = obj["metadata"]["resourceVersion"].as_str().unwrap_or("0").parse::<u64>().unwrap_or(0) + 1;
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            objects.insert(t.name.into(), obj.clone());
            self.writes.lock().unwrap().push(format!("patch {}", t.name));
        }
        if lost == Some(true) {
            return Err(timed_out());
        }
        Ok(obj)
    }
    async fn delete(&self, t: KubeRef<'_>, _: Option<&str>, _: Option<&str>, _: bool) -> PortResult<()> {
        Err(PortError::other(format!("no delete in this fake ({})", t.name)))
    }
    async fn pods_on(&self, _: &str, _: &str) -> PortResult<usize> {
        Ok(0)
    }
}

impl Forge for Fake {
    async fn get(&self, path: &str) -> PortResult<Option<Value>> {
        Ok(self.vars.lock().unwrap().get(path.split('?').next().unwrap_or(path)).cloned())
    }
    async fn get_all(&self, _: &str) -> PortResult<Vec<Value>> {
        Ok(vec![])
    }
    async fn send(&self, method: &str, path: &str, body: Option<&Value>) -> PortResult<Value> {
        let body = body.cloned().unwrap_or(Value::Null);
        let key = format!("{path}/{}", body["key"].as_str().unwrap_or(""));
        self.vars.lock().unwrap().insert(key, body.clone());
        self.writes.lock().unwrap().push(format!("{method} {path}"));
        Ok(body)
    }
}

/// The fixture world's NodePool widening and the pipeline project's two variables; the
/// NodePool waits for the variables here (standing in for its pins in other phases).
fn small_plan() -> Plan {
    let full = crate::phases::plan(&start(), &spec(), "x");
    let keep = [
        "nodepool/spot-pool",
        "variable/platform/kaniko-builder/CICD_TAG_AMD64",
        "variable/platform/kaniko-builder/CICD_TAG_ARM64",
    ];
    let mut plan = full.clone();
    for p in &mut plan.phases {
        p.changes.retain(|c| keep.contains(&c.id.as_str()));
        for c in &mut p.changes {
            c.depends_on.retain(|d| keep.contains(&d.as_str()));
            if c.id.as_str() == "nodepool/spot-pool" {
                c.depends_on = keep[1..].iter().map(|k| crate::model::ChangeId::from(*k)).collect();
            }
            c.waits_for.clear();
        }
    }
    plan
}

fn world() -> Fake {
    let fake = Fake::default();
    for pool in start().node_pools {
        let name = pool["metadata"]["name"].as_str().unwrap().to_string();
        fake.objects.lock().unwrap().insert(name, pool);
    }
    fake
}

fn journal() -> Journal {
    let dir = std::env::temp_dir().join(format!("archshift-engine-{}-{}", std::process::id(), fastrand::u64(..)));
    Journal::open(&dir.join("j.jsonl")).unwrap()
}

async fn run(
    fake: &Fake,
    plan: &Plan,
    journal: &mut Journal,
    answer: bool,
) -> (Result<usize, EngineError>, Vec<Event>) {
    let spec = spec();
    let events = Mutex::new(Vec::new());
    let emit = |e: &Event| events.lock().unwrap().push(e.clone());
    let mut confirm = |_: Phase, _: &[&Change]| answer;
    let mut engine = Engine::new(fake, fake, &spec, journal, &emit, &mut confirm);
    // A lost write that did not happen is not looked for again: nothing here could change it.
    engine.settings.lost_write = std::time::Duration::ZERO;
    let result = engine.apply(plan, None).await.map(|o| o.written.len());
    drop(engine);
    (result, events.into_inner().unwrap())
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

#[test]
fn writes_follow_the_order_are_journaled_and_a_second_run_writes_nothing() {
    let fake = world();
    let plan = small_plan();
    let mut j = journal();
    let (written, events) = block_on(run(&fake, &plan, &mut j, true));
    assert_eq!(written.unwrap(), 3, "{events:?}");
    let writes = fake.writes.lock().unwrap().clone();
    assert_eq!(
        writes.last().map(String::as_str),
        Some("patch spot-pool"),
        "the pool after what it waits for: {writes:?}"
    );
    let pool = fake.objects.lock().unwrap()["spot-pool"].clone();
    assert_eq!(pool["spec"]["template"]["spec"]["requirements"][1]["values"], json!(["amd64", "arm64"]));
    let events_of =
        |id: &str| -> Vec<J> { j.records().iter().filter(|r| r.change.as_str() == id).map(|r| r.event).collect() };
    assert_eq!(events_of("nodepool/spot-pool"), [J::Intent, J::Written, J::Verified]);
    let written_rec =
        j.records().iter().find(|r| r.event == J::Written && r.change.as_str() == "nodepool/spot-pool").unwrap();
    assert!(matches!(&written_rec.before, Some(Document::Object(_))), "the before-image is kept for rollback");

    let before = fake.writes.lock().unwrap().len();
    let (written, events) = block_on(run(&fake, &plan, &mut j, true));
    assert_eq!(written.unwrap(), 0);
    assert_eq!(fake.writes.lock().unwrap().len(), before, "nothing written twice");
    assert_eq!(events.iter().filter(|e| matches!(e, Event::Holds { .. })).count(), 3);
}

#[test]
fn a_drifted_target_refuses_the_whole_run_before_any_write() {
    let fake = world();
    fake.objects.lock().unwrap().get_mut("spot-pool").unwrap()["spec"]["template"]["spec"]["requirements"][1]["values"] =
        json!(["amd64", "s390x"]);
    fake.objects.lock().unwrap().get_mut("spot-pool").unwrap()["metadata"]["generation"] = json!(99);
    fake.objects.lock().unwrap().get_mut("spot-pool").unwrap()["metadata"]["resourceVersion"] = json!("5000");
    let mut j = journal();
    let (result, _) = block_on(run(&fake, &small_plan(), &mut j, true));
    let Err(EngineError::Stale { drifted }) = result else { panic!("{result:?}") };
    assert_eq!(drifted.len(), 1);
    assert!(drifted[0].0 == "nodepool/spot-pool" && drifted[0].1.contains("no longer holds"), "{drifted:?}");
    assert!(fake.writes.lock().unwrap().is_empty(), "the variables were not written either");
    assert!(j.records().is_empty());
}

#[test]
fn a_declined_phase_writes_nothing_of_it() {
    let fake = world();
    let mut j = journal();
    let (result, _) = block_on(run(&fake, &small_plan(), &mut j, false));
    assert!(matches!(result, Err(EngineError::Declined(_))), "{result:?}");
    assert!(fake.writes.lock().unwrap().is_empty());
}

#[test]
fn a_kubernetes_write_whose_answer_was_lost_is_read_back_not_sent_again() {
    // The API server carried the patch out; its answer never came.
    let fake = world();
    *fake.lose_answer.lock().unwrap() = Some(true);
    let mut j = journal();
    let (written, events) = block_on(run(&fake, &small_plan(), &mut j, true));
    assert_eq!(written.unwrap(), 3, "{events:?}");
    let patches = fake.writes.lock().unwrap().iter().filter(|w| *w == "patch spot-pool").count();
    assert_eq!(patches, 1, "read back, not patched twice");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Notice { message } if message.contains("reading back shows it happened"))),
        "{events:?}"
    );
    let events_of: Vec<J> =
        j.records().iter().filter(|r| r.change.as_str() == "nodepool/spot-pool").map(|r| r.event).collect();
    assert_eq!(events_of, [J::Intent, J::Written, J::Verified]);

    // The patch never arrived: the step fails, the journal says it was only intended, and the
    // next run writes it.
    let fake = world();
    *fake.lose_answer.lock().unwrap() = Some(false);
    let mut j = journal();
    let (result, _) = block_on(run(&fake, &small_plan(), &mut j, true));
    let Err(EngineError::Failed { id, cause }) = result else { panic!("{result:?}") };
    assert_eq!(id, "nodepool/spot-pool");
    assert!(cause.contains("reading back for 0s does not show it"), "{cause}");
    let events_of = |j: &Journal| -> Vec<J> {
        j.records().iter().filter(|r| r.change.as_str() == "nodepool/spot-pool").map(|r| r.event).collect()
    };
    assert_eq!(events_of(&j), [J::Intent, J::Failed]);
    let (written, _) = block_on(run(&fake, &small_plan(), &mut j, true));
    assert_eq!(written.unwrap(), 1);
    assert_eq!(events_of(&j), [J::Intent, J::Failed, J::Intent, J::Written, J::Verified]);
}
