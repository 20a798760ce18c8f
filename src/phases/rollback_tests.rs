//! Rollback (issue 8): plan, apply (simulated), roll back (simulated), and the world is the
//! start again except for the pins kept on purpose.

use serde_json::json;

use super::rollback::{Applied, Journal};
use super::tests::render;
use super::*;
use crate::model::fixtures::{self, plan, start};
use crate::model::{Action, Arch, FindingCode, NodePoolView, Requirement, Verification, apply_change};

/// Applies the whole plan in dependency order, journaling each change as the engine will.
fn migrate(state: &mut ObservedState, spec: &MigrationPlan) -> Journal {
    let mut journal = Journal::new();
    let plan = super::plan(state, spec, "");
    for c in plan.order().unwrap() {
        apply_change(state, c).unwrap_or_else(|e| panic!("{}: {e}", c.id));
        journal.insert(
            c.id.clone(),
            Applied { before: c.before.clone(), after: c.after.clone(), action: Some(c.action), runner_id: None },
        );
    }
    // Controllers: the new runners come online.
    for r in state.runners.iter_mut() {
        r.status = "online".into();
    }
    journal
}

/// Plans the rollback and applies it (simulated); each verified step's forward change leaves
/// the journal, as the engine's `reverted` record takes it out.
fn roll_back(state: &mut ObservedState, spec: &MigrationPlan, journal: &mut Journal) -> Vec<String> {
    let p = rollback::plan(state, spec, journal);
    let plan = Plan {
        format_version: crate::model::PLAN_FORMAT_VERSION,
        spec_digest: String::new(),
        observed_at: None,
        endpoints: Default::default(),
        phases: vec![p],
    };
    let order: Vec<Change> = plan.order().expect("acyclic rollback").into_iter().cloned().collect();
    for c in &order {
        apply_change(state, c).unwrap_or_else(|e| panic!("{}: {e}", c.id));
        if let Some(rest) = c.id.as_str().strip_prefix("rollback/")
            && !rest.starts_with("pause/")
            && !rest.starts_with("reroute/")
        {
            journal.remove(&ChangeId::from(rest));
        }
    }
    order.iter().map(|c| c.id.to_string()).collect()
}

fn requirements(s: &ObservedState) -> Vec<Requirement> {
    NodePoolView::from_object(&s.node_pools[0]).unwrap().requirements
}

#[test]
fn rollback_after_a_full_migration_returns_to_the_start_except_the_pins() {
    let spec = plan();
    let start = start();
    let mut s = start.clone();
    let mut journal = migrate(&mut s, &spec);
    assert!(nodepool::allowed_archs(&requirements(&s)).contains(&Arch::Arm64));

    let order = roll_back(&mut s, &spec, &mut journal);
    assert_eq!(requirements(&s), requirements(&start), "NodePool requirements as before");
    let releases: Vec<&str> = s.releases.iter().map(|r| crate::model::kube_id(r).2).collect();
    assert_eq!(releases, ["gitlab-runner"], "only the baseline Release");
    assert_eq!(s.runners.iter().map(|r| r.id).collect::<Vec<_>>(), [1], "only the baseline runner");
    assert_eq!(s.secrets, start.secrets, "token Secrets removed");
    assert_eq!(s.ci_file.as_ref().unwrap().content, start.ci_file.as_ref().unwrap().content, "CI file byte-equal");
    assert!(s.project_variables.is_empty(), "the variables archshift created are gone: {:?}", s.project_variables);
    // Kept on purpose: the baseline's amd64 pin, Argo and other projects' pins, and the group
    // variable those pins use, now routed to the baseline runner.
    let config = s.releases[0].pointer("/spec/forProvider/values/runners/config").unwrap().as_str().unwrap();
    assert!(config.contains("\"kubernetes.io/arch\" = \"amd64\""));
    assert_eq!(s.argo, migrated_argo(&spec));
    let group = s.group_variables("platform");
    let tag_var = group.iter().find(|v| v.key == "CICD_TAG_AMD64").expect("the group's tag variable stays");
    assert_eq!(tag_var.value.as_deref(), Some("sandbox"), "routed to the baseline's tag");
    let others: Vec<_> = group.iter().filter(|v| v.key != "CICD_TAG_AMD64").collect();
    let before: Vec<_> = start.group_variables("platform").iter().collect();
    assert_eq!(others, before, "the group's other variables untouched");
    assert!(order.last().unwrap().starts_with("rollback/nodepool/"), "the pool is narrowed last: {order:?}");
}

fn migrated_argo(spec: &MigrationPlan) -> Vec<serde_json::Value> {
    let mut s = start();
    migrate(&mut s, spec);
    s.argo
}

#[test]
fn rollback_strands_nothing_reroute_first_quiesce_then_remove_narrow_last() {
    let spec = plan();
    let mut s = start();
    let journal = migrate(&mut s, &spec);
    let p = rollback::plan(&s, &spec, &journal);
    let plan = Plan {
        format_version: 1,
        spec_digest: String::new(),
        observed_at: None,
        endpoints: Default::default(),
        phases: vec![p.clone()],
    };
    let order: Vec<&str> = plan.order().unwrap().iter().map(|c| c.id.as_str()).collect();
    let pos = |id: &str| order.iter().position(|x| *x == id).unwrap_or_else(|| panic!("{id} not in {order:?}"));
    let reroute = pos("rollback/reroute/variable/platform/kaniko-builder/CICD_TAG_AMD64");
    let group = pos("rollback/reroute/group-variable/platform/CICD_TAG_AMD64");
    let pause = pos("rollback/pause/runner/sandbox-arm64");
    let revert = pos("rollback/cifile/platform/kaniko-builder/.gitlab-ci.yml");
    for release in ["rollback/release/gitlab-runner-amd64", "rollback/release/gitlab-runner-arm64"] {
        assert!(reroute < pos(release) && group < pos(release) && pause < pos(release) && revert < pos(release));
    }
    assert!(revert > reroute, "amd64 jobs are routed back before the file changes");
    assert!(pos("rollback/release/gitlab-runner-arm64") < pos("rollback/runner/sandbox-arm64"));
    assert!(
        pos("rollback/release/gitlab-runner-arm64") < pos("rollback/secret/gitlab-runner/gitlab-runner-arm64-token")
    );
    let narrow = p.changes.iter().find(|c| c.id == "rollback/nodepool/spot-pool").unwrap();
    assert_eq!(
        narrow.waits_for,
        [Verification::ArchDrained { node_pool: "spot-pool".into(), architecture: Arch::Arm64 }]
    );
    assert_eq!(pos("rollback/nodepool/spot-pool"), order.len() - 1);
    assert!(p.has(FindingCode::RollbackPinsKept), "{}", render(&p));
}

#[test]
fn rollback_is_idempotent() {
    let spec = plan();
    let mut s = start();
    let mut journal = migrate(&mut s, &spec);
    roll_back(&mut s, &spec, &mut journal);
    let again = rollback::plan(&s, &spec, &journal);
    assert!(again.changes.is_empty(), "{}", render(&again));
}

#[test]
fn without_a_before_image_the_ci_file_is_not_reverted_and_arm64_jobs_are_reported() {
    let spec = plan();
    let mut s = start();
    let mut journal = migrate(&mut s, &spec);
    journal.remove(&ChangeId::ci_file("platform/kaniko-builder", ".gitlab-ci.yml"));
    journal.remove(&ChangeId::node_pool("spot-pool"));
    let p = rollback::plan(&s, &spec, &journal);
    assert!(p.risks().any(|f| f.code == FindingCode::RollbackArm64JobsPending), "{}", render(&p));
    assert!(!p.changes.iter().any(|c| c.id.as_str().starts_with("rollback/cifile/")));
    // Without the journal's record of the widening, the pool is not archshift's to narrow.
    assert!(!p.changes.iter().any(|c| c.id == "rollback/nodepool/spot-pool"), "{}", render(&p));
    assert!(p.has(FindingCode::RollbackLeftAlone), "{}", render(&p));
}

#[test]
fn a_ci_file_changed_since_archshift_wrote_it_is_left_for_a_person() {
    let spec = plan();
    let mut s = start();
    let journal = migrate(&mut s, &spec);
    s.ci_file.as_mut().unwrap().content.push_str("\n# a later edit\n");
    let p = rollback::plan(&s, &spec, &journal);
    assert!(!p.changes.iter().any(|c| c.id.as_str().starts_with("rollback/cifile/")), "{}", render(&p));
    assert!(p.risks().any(|f| f.code == FindingCode::RollbackArm64JobsPending));
}

#[test]
fn with_no_known_baseline_tag_rollback_says_what_to_set() {
    let spec = plan();
    let mut s = start();
    let journal = migrate(&mut s, &spec);
    s.runners.push(fixtures::runner(40, &["other-team"], "online"));
    let p = rollback::plan(&s, &spec, &journal);
    assert!(p.risks().any(|f| f.code == FindingCode::RollbackNoRerouteTag), "{}", render(&p));
    let mut spec = spec;
    spec.rollback.reroute_tag = Some("sandbox".into());
    let p = rollback::plan(&s, &spec, &journal);
    let c =
        p.changes.iter().find(|c| c.id == "rollback/reroute/variable/platform/kaniko-builder/CICD_TAG_AMD64").unwrap();
    assert_eq!(c.after_object().unwrap()["value"], json!("sandbox"));
}

#[test]
fn nothing_to_roll_back_on_the_start() {
    let p = rollback::plan(&start(), &plan(), &Journal::new());
    assert!(p.changes.is_empty(), "{}", render(&p));
    assert!(p.has(FindingCode::RollbackNothing));
}

#[test]
fn what_archshift_did_not_write_is_never_undone() {
    // A world where the pool already allows every architecture (no arch requirement), a
    // CICD_TAG_AMD64 existed with another value and protected, and a runner tagged for arm64
    // was made by hand: archshift adopts that runner (token reset) and overwrites the variable.
    let spec = plan();
    let mut s = start();
    s.node_pools[0]["spec"]["template"]["spec"]["requirements"] =
        json!([{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]);
    let mut old = fixtures::variable("CICD_TAG_AMD64", "legacy-amd64");
    old.protected = true;
    s.project_variables.push(old.clone());
    s.runners.push(fixtures::runner(9, &["sandbox-arm64"], "never_contacted"));
    let pool_before = s.node_pools[0]["spec"].clone();
    let mut journal = migrate(&mut s, &spec);
    assert!(journal.contains_key(&ChangeId::runner_token("sandbox-arm64")), "adopted by a token reset");
    let p = rollback::plan(&s, &spec, &journal);
    let ids: Vec<&str> = p.changes.iter().map(|c| c.id.as_str()).collect();
    assert!(!ids.iter().any(|id| id.starts_with("rollback/nodepool/")), "never widened by archshift: {ids:?}");
    let runner_steps: Vec<&Change> = p.changes.iter().filter(|c| c.id == "rollback/runner/sandbox-arm64").collect();
    assert!(runner_steps.iter().all(|c| c.action != Action::Delete), "a hand-made runner is never deleted: {ids:?}");
    // archshift had retagged it (it ran untagged jobs): its tags from before come back.
    if let Some(c) = runner_steps.first() {
        assert_eq!(c.after_object().unwrap()["run_untagged"], json!(true), "{}", render(&p));
    }
    assert!(!ids.contains(&"rollback/pause/runner/sandbox-arm64"), "nor paused: {ids:?}");
    let restore = p
        .changes
        .iter()
        .find(|c| c.id == "rollback/variable/platform/kaniko-builder/CICD_TAG_AMD64")
        .unwrap_or_else(|| panic!("the variable's before-image is written back: {}", render(&p)));
    assert_eq!(restore.after_object().unwrap()["value"], json!("legacy-amd64"));
    assert_eq!(restore.after_object().unwrap()["protected"], json!(true));
    assert!(p.findings.iter().any(|f| f.code == FindingCode::RollbackLeftAlone && f.message.contains("runner #9")));
    roll_back(&mut s, &spec, &mut journal);
    assert_eq!(s.node_pools[0]["spec"], pool_before, "the pool is byte for byte as it was");
    let var = s.project_variables.iter().find(|v| v.key == "CICD_TAG_AMD64").expect("kept, restored");
    assert_eq!(var, &old);
    assert!(s.runners.iter().any(|r| r.id == 9), "the hand-made runner stays");
}
