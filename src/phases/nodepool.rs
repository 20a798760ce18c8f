//! Phase 1: widen the Karpenter NodePool's `kubernetes.io/arch` requirement.
//!
//! Requirements are ANDed, so the architectures a pool may launch are the intersection of
//! every `kubernetes.io/arch` requirement. The usual case (one `In`) gets the missing values
//! appended, the smallest edit; anything else (`NotIn`, duplicates, `DoesNotExist`) is
//! replaced by one explicit `In` and reported, because a reviewer must see it.

use std::collections::BTreeSet;

use serde_json::Value;

use super::patch::patch_change;
use super::{WideningGate, flag_reconciler, join, plural};
use crate::model::{
    ARCH_LABEL, Arch, ChangeId, FindingCode, NodeClassView, NodePoolView, ObjectRef, ObservedState, Phase, PhasePlan,
    Requirement, Status, kube_id,
};
use crate::spec::MigrationPlan;
use crate::vocab::{EC2_NODE_CLASS, NODE_POOL, NODEPOOL_LABEL};

/// Architectures a set of requirements lets the pool launch, among those archshift knows.
pub fn allowed_archs(reqs: &[Requirement]) -> BTreeSet<Arch> {
    let mut allowed: BTreeSet<Arch> = Arch::ALL.into_iter().collect();
    for r in reqs.iter().filter(|r| r.key == ARCH_LABEL) {
        // Node labels are exactly `amd64`/`arm64`: aliases such as x86_64 match no node.
        let listed: BTreeSet<Arch> =
            Arch::ALL.into_iter().filter(|a| r.values.iter().any(|v| v == a.as_str())).collect();
        match r.operator.as_str() {
            "In" => allowed.retain(|a| listed.contains(a)),
            "NotIn" => allowed.retain(|a| !r.values.iter().any(|v| v == a.as_str())),
            "Exists" => {}
            // DoesNotExist (every node has the label) and numeric operators match nothing.
            _ => allowed.clear(),
        }
    }
    allowed
}

/// Plans the widening. It depends on every pin of `gate`, and is refused while `gate` has
/// blockers: something that would float to arm64 and that this plan cannot pin.
pub fn plan(state: &ObservedState, spec: &MigrationPlan, gate: &WideningGate) -> PhasePlan {
    let pins = &gate.pins;
    let mut out = PhasePlan::new(Phase::NodePool);
    let name = &spec.node_pool.name;
    let Some(obj) = state.node_pools.iter().find(|o| kube_id(o).2 == name) else {
        out.finding(
            FindingCode::NodePoolNotFound,
            Status::Risk,
            Some(ObjectRef::kube(NODE_POOL, None, name)),
            format!("not found in the cluster: check nodePool.name in the plan (pools seen: {})", pool_names(state)),
        );
        out.refuse(
            ChangeId::node_pool(name),
            ObjectRef::kube(NODE_POOL, None, name),
            format!("widen NodePool {name}"),
            format!("NodePool {name} is not in the cluster"),
        );
        return out;
    };
    // The object's own apiVersion: a pool served as karpenter.sh/v1beta1 is written back as one.
    let target = ObjectRef::Kube {
        api_version: obj["apiVersion"].as_str().unwrap_or(NODE_POOL.api_version).to_string(),
        kind: NODE_POOL.kind.into(),
        namespace: None,
        name: name.clone(),
    };
    let pool = match NodePoolView::from_object(obj) {
        Ok(p) => p,
        Err(e) => {
            out.refuse(ChangeId::node_pool(name), target.clone(), format!("widen NodePool {name}"), e.clone());
            out.finding(FindingCode::NodePoolInvalid, Status::Risk, Some(target), e);
            return out;
        }
    };
    let wanted = spec.architectures();
    let allowed = allowed_archs(&pool.requirements);
    let missing: Vec<Arch> = wanted.iter().copied().filter(|a| !allowed.contains(a)).collect();
    let arch_reqs: Vec<(usize, &Requirement)> = pool.arch_requirements().collect();

    if wanted.contains(&Arch::Arm64)
        && let Some(why) = excludes_graviton(&pool.requirements)
    {
        out.finding(
            FindingCode::NodePoolArm64Impossible,
            Status::Risk,
            Some(target.clone()),
            format!("{why}: no arm64 (Graviton) instance type qualifies, so arm64 nodes can never launch; widen that requirement too"),
        );
    }
    if missing.is_empty() {
        let how = if arch_reqs.is_empty() {
            "has no kubernetes.io/arch requirement, so every architecture is allowed".to_string()
        } else {
            format!("allows {}", join(allowed.iter()))
        };
        out.finding(FindingCode::NodePoolAllows, Status::Done, Some(target.clone()), how);
        out.holds(ChangeId::node_pool(name));
    } else if !gate.blockers.is_empty() {
        out.refuse(
            ChangeId::node_pool(name),
            target.clone(),
            format!("allow {} on NodePool {name}", join(missing.iter())),
            format!("not widened while unpinned workloads would float to arm64: {}", join(gate.blockers.iter())),
        );
        out.finding(
            FindingCode::NodePoolWidenBlocked,
            Status::Risk,
            Some(target.clone()),
            format!(
                "not widened: {} would run on arm64 nodes and this plan cannot pin {}: {}",
                plural(gate.blockers.len(), "workload"),
                if gate.blockers.len() == 1 { "it" } else { "them" },
                join(gate.blockers.iter())
            ),
        );
    } else {
        let id = ChangeId::node_pool(name);
        let new_reqs = widened(&pool.requirements, &arch_reqs, wanted, &allowed);
        let min_values: Vec<u64> = arch_reqs.iter().filter_map(|(_, r)| r.min_values).collect();
        if arch_reqs.len() > 1 && !min_values.is_empty() {
            out.finding_for(
                FindingCode::NodePoolMinValuesMerged,
                Status::Pending,
                Some(target.clone()),
                &id,
                format!("minValues {} carried over to the merged requirement", min_values.iter().max().unwrap_or(&0)),
            );
        }
        if arch_reqs.len() != 1 || arch_reqs[0].1.operator != "In" {
            out.finding_for(
                FindingCode::NodePoolArchRewritten,
                Status::Risk,
                Some(target.clone()),
                &id,
                format!(
                    "kubernetes.io/arch is constrained by {} ({}); they are replaced by one `In [{}]`",
                    plural(arch_reqs.len(), "requirement"),
                    arch_reqs.iter().map(|(_, r)| describe(r)).collect::<Vec<_>>().join(", "),
                    join(wanted_in_order(wanted, &allowed).iter())
                ),
            );
        }
        let mut after = obj.clone();
        if let Some(slot) = after.pointer_mut(NodePoolView::REQUIREMENTS) {
            *slot = serde_json::to_value(&new_reqs).unwrap_or(Value::Null);
        }
        flag_reconciler(&mut out, obj, &target, &id);
        let summary = format!("allow {} on NodePool {name}", join(missing.iter()));
        out.changes.push(
            patch_change(id.clone(), Phase::NodePool, target.clone(), summary, obj, after)
                .depends_on(pins.iter().cloned()),
        );
        out.finding_for(
            FindingCode::NodePoolWidenNeeded,
            Status::Pending,
            Some(target.clone()),
            &id,
            format!("allows {}; needs {}", join_or_none(&allowed), join(missing.iter())),
        );
        if !pins.is_empty() {
            out.finding_for(
                FindingCode::NodePoolWaitsForPins,
                Status::Pending,
                Some(target),
                &id,
                format!(
                    "widened only after {} that pin workloads and the baseline's job pods to amd64: once arm64 is allowed, Karpenter may launch arm64 nodes for any pod without an architecture constraint",
                    plural(pins.len(), "change")
                ),
            );
        }
    }
    check_node_class(state, &pool, wanted, &mut out);
    out
}

/// The requirement list after widening: one `In` carrying what was allowed plus what is wanted.
fn widened(
    reqs: &[Requirement],
    arch_reqs: &[(usize, &Requirement)],
    wanted: &[Arch],
    allowed: &BTreeSet<Arch>,
) -> Vec<Requirement> {
    if let [(i, r)] = arch_reqs
        && r.operator == "In"
    {
        let mut values = r.values.clone();
        values.extend(wanted.iter().filter(|a| !r.values.iter().any(|v| v == a.as_str())).map(|a| a.to_string()));
        let mut out = reqs.to_vec();
        out[*i] = Requirement { values, ..(*r).clone() };
        return out;
    }
    let values: Vec<String> = wanted_in_order(wanted, allowed).iter().map(|a| a.to_string()).collect();
    // The strictest minValues of the requirements merged stays (Karpenter's flexibility floor).
    let min_values = arch_reqs.iter().filter_map(|(_, r)| r.min_values).max();
    let merged = Requirement { key: ARCH_LABEL.into(), operator: "In".into(), values, min_values };
    let first = arch_reqs.first().map_or(reqs.len(), |(i, _)| *i);
    let mut out: Vec<Requirement> = Vec::with_capacity(reqs.len());
    for (i, r) in reqs.iter().enumerate() {
        if i == first {
            out.push(merged.clone());
        }
        if r.key != ARCH_LABEL {
            out.push(r.clone());
        }
    }
    if first == reqs.len() {
        out.push(merged);
    }
    out
}

/// What stays allowed, then what is wanted, without duplicates, amd64 first.
fn wanted_in_order(wanted: &[Arch], allowed: &BTreeSet<Arch>) -> Vec<Arch> {
    let mut all: Vec<Arch> = allowed.iter().chain(wanted.iter()).copied().collect();
    all.sort();
    all.dedup();
    all
}

/// arm64 nodes launch only if the EC2NodeClass resolves an arm64 AMI.
fn check_node_class(state: &ObservedState, pool: &NodePoolView, wanted: &[Arch], out: &mut PhasePlan) {
    let Some((_, kind, class)) = &pool.node_class_ref else {
        out.finding(
            FindingCode::NodePoolNoNodeClass,
            Status::Risk,
            Some(ObjectRef::kube(NODE_POOL, None, &pool.name)),
            "has no spec.template.spec.nodeClassRef",
        );
        return;
    };
    if kind != EC2_NODE_CLASS.kind {
        return; // Another provider: its image selection is outside what archshift can check.
    }
    let target = Some(ObjectRef::kube(EC2_NODE_CLASS, None, class));
    let Some(view) = state.node_classes.iter().find(|o| kube_id(o).2 == class).map(NodeClassView::from_object) else {
        out.finding(
            FindingCode::NodeClassNotFound,
            Status::Risk,
            target,
            format!("referenced by NodePool {} but not found", pool.name),
        );
        return;
    };
    let Some(archs) = view.ami_archs else {
        out.finding(
            FindingCode::NodeClassAmisUnknown,
            Status::Pending,
            target,
            "has not reported status.amis yet; cannot tell which architectures it can launch",
        );
        return;
    };
    let lacking: Vec<&Arch> = wanted.iter().filter(|a| !archs.contains(a.as_str())).collect();
    if lacking.is_empty() {
        out.finding(
            FindingCode::NodeClassAmis,
            Status::Done,
            target,
            format!("resolves AMIs for {}", join(archs.iter())),
        );
    } else {
        out.finding(
            FindingCode::NodeClassNoAmi,
            Status::Risk,
            target,
            format!(
                "resolves no AMI for {}: nodes of that architecture will fail to launch; use an alias such as al2023@latest or add an AMI for it",
                join(lacking.iter())
            ),
        );
    }
}

/// Whether a node launched from `pool` could carry every label of `selector`: labels the
/// pool's template sets, its own name, and well-known labels its requirements allow.
/// `widened`: a pool (by name) taken to allow these architectures, as after its widening.
pub fn pool_can_host(
    pool: &Value,
    selector: &std::collections::BTreeMap<String, String>,
    widened: Option<(&str, &[Arch])>,
) -> bool {
    let Ok(mut view) = NodePoolView::from_object(pool) else { return false };
    if let Some((name, archs)) = widened
        && name == view.name
    {
        view.requirements.retain(|r| r.key != ARCH_LABEL);
        view.requirements.push(Requirement {
            key: ARCH_LABEL.into(),
            operator: "In".into(),
            values: archs.iter().map(|a| a.to_string()).collect(),
            min_values: None,
        });
    }
    let template_labels = &pool["spec"]["template"]["metadata"]["labels"];
    selector.iter().all(|(key, value)| {
        if key == NODEPOOL_LABEL {
            return *value == view.name;
        }
        if let Some(l) = template_labels.get(key).and_then(Value::as_str) {
            return l == value;
        }
        let reqs: Vec<&Requirement> = view.requirements.iter().filter(|r| r.key == *key).collect();
        let well_known = matches!(
            key.as_str(),
            ARCH_LABEL
                | "kubernetes.io/os"
                | "karpenter.sh/capacity-type"
                | "node.kubernetes.io/instance-type"
                | "topology.kubernetes.io/zone"
        );
        if reqs.is_empty() {
            return well_known;
        }
        reqs.iter().all(|r| match r.operator.as_str() {
            "In" => r.values.contains(value),
            "NotIn" => !r.values.contains(value),
            "Exists" => true,
            _ => false,
        })
    })
}

/// Why other requirements leave no arm64 instance type, if they do: a CPU manufacturer other
/// than AWS (Graviton), or instance families or types that are all x86.
fn excludes_graviton(reqs: &[Requirement]) -> Option<String> {
    for r in reqs {
        let values = || r.values.iter().map(String::as_str);
        match (r.key.as_str(), r.operator.as_str()) {
            ("karpenter.k8s.aws/instance-cpu-manufacturer", "In") if !values().any(|v| v == "aws") => {
                return Some(format!("{} In [{}]", r.key, r.values.join(", ")));
            }
            ("karpenter.k8s.aws/instance-cpu-manufacturer", "NotIn") if values().any(|v| v == "aws") => {
                return Some(format!("{} NotIn [{}]", r.key, r.values.join(", ")));
            }
            ("karpenter.k8s.aws/instance-family", "In") if !values().any(is_graviton_family) => {
                return Some(format!("{} In [{}]", r.key, r.values.join(", ")));
            }
            ("node.kubernetes.io/instance-type", "In")
                if !values().any(|t| is_graviton_family(t.split('.').next().unwrap_or(t))) =>
            {
                return Some(format!("{} In [{}]", r.key, r.values.join(", ")));
            }
            _ => {}
        }
    }
    None
}

/// EC2 families with Graviton CPUs: a `g` among the letters after the generation digit
/// (`m7g`, `c6gn`, `im4gn`, `is4gen`, `x2gd`), and the first-generation `a1`.
fn is_graviton_family(family: &str) -> bool {
    if family == "a1" {
        return true;
    }
    let Some(digit) = family.find(|c: char| c.is_ascii_digit()) else { return false };
    let after = family[digit..].trim_start_matches(|c: char| c.is_ascii_digit());
    let letters = after.split(['-', '.']).next().unwrap_or("");
    letters.contains('g')
}

fn describe(r: &Requirement) -> String {
    if r.values.is_empty() { r.operator.clone() } else { format!("{} [{}]", r.operator, r.values.join(", ")) }
}

fn pool_names(state: &ObservedState) -> String {
    let names: Vec<&str> = state.node_pools.iter().map(|o| kube_id(o).2).collect();
    if names.is_empty() { "none".into() } else { names.join(", ") }
}

fn join_or_none(set: &BTreeSet<Arch>) -> String {
    if set.is_empty() { "no architecture".into() } else { join(set.iter()) }
}
