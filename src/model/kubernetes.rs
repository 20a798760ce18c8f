//! Typed read-only views over raw Kubernetes objects.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::vocab::{ARCH_LABEL, ArgoKind};

/// `(kind, namespace, name)` of a raw object.
pub fn kube_id(obj: &Value) -> (&str, Option<&str>, &str) {
    (
        obj["kind"].as_str().unwrap_or(""),
        obj["metadata"]["namespace"].as_str(),
        obj["metadata"]["name"].as_str().unwrap_or(""),
    )
}

fn resource_version(obj: &Value) -> String {
    obj["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string()
}

/// One `spec.template.spec.requirements[]` item of a NodePool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Requirement {
    pub key: String,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_values: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodePoolView {
    pub name: String,
    pub resource_version: String,
    pub requirements: Vec<Requirement>,
    /// `(group, kind, name)` of `spec.template.spec.nodeClassRef`.
    pub node_class_ref: Option<(String, String, String)>,
}

impl NodePoolView {
    pub const REQUIREMENTS: &'static str = "/spec/template/spec/requirements";

    pub fn from_object(obj: &Value) -> Result<Self, String> {
        let name = kube_id(obj).2.to_string();
        let reqs = obj.pointer(Self::REQUIREMENTS).cloned().unwrap_or(Value::Array(vec![]));
        let requirements: Vec<Requirement> = serde_json::from_value(reqs)
            .map_err(|e| format!("NodePool {name}: spec.template.spec.requirements is not a requirement list: {e}"))?;
        let r = &obj["spec"]["template"]["spec"]["nodeClassRef"];
        let node_class_ref = r["name"].as_str().map(|n| {
            (r["group"].as_str().unwrap_or("").to_string(), r["kind"].as_str().unwrap_or("").to_string(), n.to_string())
        });
        Ok(Self { name, resource_version: resource_version(obj), requirements, node_class_ref })
    }

    pub fn arch_requirements(&self) -> impl Iterator<Item = (usize, &Requirement)> {
        self.requirements.iter().enumerate().filter(|(_, r)| r.key == ARCH_LABEL)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeClassView {
    pub name: String,
    /// Architectures of the AMIs the class resolved (`status.amis[].requirements`);
    /// `None` when the controller has not reported any yet.
    pub ami_archs: Option<BTreeSet<String>>,
}

impl NodeClassView {
    pub fn from_object(obj: &Value) -> Self {
        let ami_archs = obj["status"]["amis"].as_array().map(|amis| {
            amis.iter()
                .flat_map(|ami| ami["requirements"].as_array().cloned().unwrap_or_default())
                .filter(|r| r["key"] == ARCH_LABEL && r["operator"] == "In")
                .flat_map(|r| r["values"].as_array().cloned().unwrap_or_default())
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        });
        Self { name: kube_id(obj).2.to_string(), ami_archs }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseView {
    pub name: String,
    pub resource_version: String,
    /// `Ready` condition: status and message, if reported.
    pub ready: Option<(bool, String)>,
}

impl ReleaseView {
    pub fn from_object(obj: &Value) -> Self {
        let ready = obj["status"]["conditions"].as_array().and_then(|cs| {
            cs.iter().find(|c| c["type"] == "Ready").map(|c| {
                (c["status"] == "True", c["message"].as_str().or(c["reason"].as_str()).unwrap_or("").to_string())
            })
        });
        Self { name: kube_id(obj).2.to_string(), resource_version: resource_version(obj), ready }
    }
}

/// A Secret known by name and key names only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretMeta {
    pub namespace: String,
    pub name: String,
    pub keys: Vec<String>,
    pub resource_version: String,
}

/// An Argo WorkflowTemplate or CronWorkflow, with where its workflow spec lives.
#[derive(Debug, Clone, PartialEq)]
pub struct ArgoWorkloadView {
    pub kind: ArgoKind,
    /// `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
    pub name: String,
    pub resource_version: String,
    /// JSON pointer of the workflow spec: `/spec` or `/spec/workflowSpec` (CronWorkflow).
    pub spec_pointer: &'static str,
}

impl ArgoWorkloadView {
    pub fn from_object(obj: &Value) -> Option<Self> {
        let (kind, ns, name) = kube_id(obj);
        let kind = ArgoKind::from_kind(kind)?;
        let spec_pointer = kind.spec_pointer();
        Some(Self {
            kind,
            namespace: if kind.namespaced() { Some(ns.unwrap_or("default").to_string()) } else { None },
            name: name.to_string(),
            resource_version: resource_version(obj),
            spec_pointer,
        })
    }
}
