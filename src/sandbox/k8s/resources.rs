//! The resources the simulated API server serves: a few built-ins and the real CRDs.

use serde_json::{Value, json};

const CRDS: [&str; 7] = [
    include_str!("../crds/karpenter.sh_nodepools.v1.14.1.yaml"),
    include_str!("../crds/karpenter.k8s.aws_ec2nodeclasses.v1.14.1.yaml"),
    include_str!("../crds/helm.crossplane.io_releases.yaml"),
    include_str!("../crds/helm.crossplane.io_providerconfigs.yaml"),
    include_str!("../crds/argoproj.io_workflowtemplates.yaml"),
    include_str!("../crds/argoproj.io_cronworkflows.yaml"),
    include_str!("../crds/argoproj.io_workflows.sandbox.yaml"),
];

#[derive(Debug, Clone)]
pub struct PrinterColumn {
    pub name: String,
    pub kind: String,
    pub json_path: String,
    pub priority: i64,
    pub description: String,
}

#[derive(Debug, Clone)]
pub struct Resource {
    /// "" for the core group.
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub verbs: Vec<&'static str>,
    /// `openAPIV3Schema` of a custom resource.
    pub schema: Option<Value>,
    pub printer_columns: Vec<PrinterColumn>,
    pub status_subresource: bool,
    /// Served from a CustomResourceDefinition (affects error details and delete answers).
    pub custom: bool,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `nodepools.karpenter.sh`, or `secrets` for the core group: how errors name the resource.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// `NodePool.karpenter.sh`: how validation errors name the kind.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() { self.kind.clone() } else { format!("{}.{}", self.kind, self.group) }
    }
}

const ALL_VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

fn builtin(
    group: &str,
    plural: &str,
    singular: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    verbs: &[&'static str],
) -> Resource {
    Resource {
        group: group.into(),
        version: "v1".into(),
        plural: plural.into(),
        singular: singular.into(),
        kind: kind.into(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: vec![],
        verbs: verbs.to_vec(),
        schema: None,
        printer_columns: vec![],
        status_subresource: false,
        custom: false,
    }
}

pub struct Registry {
    pub resources: Vec<Resource>,
    /// The CRD objects, served read-only under apiextensions.k8s.io.
    pub crd_objects: Vec<Value>,
}

impl Registry {
    #[allow(clippy::expect_used, reason = "the embedded CRDs are constants; every sandbox test loads them")]
    pub fn load() -> Registry {
        let mut resources = vec![
            builtin(
                "",
                "namespaces",
                "namespace",
                "Namespace",
                false,
                &["ns"],
                &["create", "delete", "get", "list", "patch", "update", "watch"],
            ),
            builtin("", "nodes", "node", "Node", false, &["no"], &ALL_VERBS),
            builtin("", "secrets", "secret", "Secret", true, &[], &ALL_VERBS),
            builtin("", "configmaps", "configmap", "ConfigMap", true, &["cm"], &ALL_VERBS),
            builtin("", "pods", "pod", "Pod", true, &["po"], &ALL_VERBS),
            builtin("apps", "deployments", "deployment", "Deployment", true, &["deploy"], &ALL_VERBS),
            builtin("apps", "replicasets", "replicaset", "ReplicaSet", true, &["rs"], &ALL_VERBS),
            builtin("apps", "statefulsets", "statefulset", "StatefulSet", true, &["sts"], &ALL_VERBS),
            builtin("apps", "daemonsets", "daemonset", "DaemonSet", true, &["ds"], &ALL_VERBS),
            builtin("batch", "jobs", "job", "Job", true, &[], &ALL_VERBS),
            builtin("batch", "cronjobs", "cronjob", "CronJob", true, &["cj"], &ALL_VERBS),
            // What leader election and archshift's one-run-at-a-time Lease use.
            builtin("coordination.k8s.io", "leases", "lease", "Lease", true, &[], &ALL_VERBS),
            builtin(
                "authorization.k8s.io",
                "selfsubjectaccessreviews",
                "selfsubjectaccessreview",
                "SelfSubjectAccessReview",
                false,
                &[],
                &["create"],
            ),
            builtin(
                "authorization.k8s.io",
                "selfsubjectrulesreviews",
                "selfsubjectrulesreview",
                "SelfSubjectRulesReview",
                false,
                &[],
                &["create"],
            ),
            builtin(
                "authentication.k8s.io",
                "selfsubjectreviews",
                "selfsubjectreview",
                "SelfSubjectReview",
                false,
                &[],
                &["create"],
            ),
            builtin(
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                "customresourcedefinition",
                "CustomResourceDefinition",
                false,
                &["crd", "crds"],
                &["get", "list", "delete"],
            ),
        ];
        let mut crd_objects = Vec::new();
        for text in CRDS {
            let crd: Value = yaml_serde::from_str::<yaml_serde::Value>(text)
                .ok()
                .and_then(|v| serde_json::to_value(v).ok())
                .expect("embedded CRD parses");
            let spec = &crd["spec"];
            let names = &spec["names"];
            for v in spec["versions"].as_array().into_iter().flatten() {
                if v["storage"] != true {
                    continue;
                }
                let strs = |x: &Value| -> Vec<String> {
                    x.as_array()
                        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
                        .unwrap_or_default()
                };
                resources.push(Resource {
                    group: spec["group"].as_str().unwrap_or("").into(),
                    version: v["name"].as_str().unwrap_or("").into(),
                    plural: names["plural"].as_str().unwrap_or("").into(),
                    singular: names["singular"].as_str().unwrap_or("").into(),
                    kind: names["kind"].as_str().unwrap_or("").into(),
                    namespaced: spec["scope"] == "Namespaced",
                    short_names: strs(&names["shortNames"]),
                    categories: strs(&names["categories"]),
                    verbs: ALL_VERBS.to_vec(),
                    schema: Some(v["schema"]["openAPIV3Schema"].clone()),
                    printer_columns: v["additionalPrinterColumns"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| PrinterColumn {
                            name: c["name"].as_str().unwrap_or("").into(),
                            kind: c["type"].as_str().unwrap_or("string").into(),
                            json_path: c["jsonPath"].as_str().unwrap_or("").into(),
                            priority: c["priority"].as_i64().unwrap_or(0),
                            description: c["description"].as_str().unwrap_or("").into(),
                        })
                        .collect(),
                    status_subresource: v["subresources"]["status"].is_object(),
                    custom: true,
                });
            }
            crd_objects.push(crd);
        }
        Registry { resources, crd_objects }
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    pub fn by_kind(&self, kind: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.kind == kind)
    }

    fn groups(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for r in self.resources.iter().filter(|r| !r.group.is_empty()) {
            if !out.iter().any(|(g, _)| *g == r.group) {
                out.push((r.group.clone(), r.version.clone()));
            }
        }
        out
    }

    /// `GET /api`.
    pub fn api_versions(&self, server_address: &str) -> Value {
        json!({"kind": "APIVersions", "versions": ["v1"],
               "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]})
    }

    /// `GET /apis`.
    pub fn group_list(&self) -> Value {
        let groups: Vec<Value> = self.groups().into_iter().map(|(g, v)| group_json(&g, &v)).collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `GET /apis/GROUP`.
    pub fn group(&self, group: &str) -> Option<Value> {
        self.groups().into_iter().find(|(g, _)| g == group).map(|(g, v)| {
            let mut j = group_json(&g, &v);
            j["kind"] = json!("APIGroup");
            j["apiVersion"] = json!("v1");
            j
        })
    }

    /// `GET /api/v1` or `GET /apis/GROUP/VERSION`.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let rs: Vec<&Resource> = self.resources.iter().filter(|r| r.group == group && r.version == version).collect();
        if rs.is_empty() {
            return None;
        }
        let mut items = Vec::new();
        for r in rs {
            let mut item = json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                                  "kind": r.kind, "verbs": r.verbs});
            if !r.short_names.is_empty() {
                item["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                item["categories"] = json!(r.categories);
            }
            if r.custom {
                item["storageVersionHash"] = json!(format!("{:x}", fxhash(&r.qualified())));
            }
            items.push(item);
            if r.status_subresource {
                items.push(
                    json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced,
                                  "kind": r.kind, "verbs": ["get", "patch", "update"]}),
                );
            }
        }
        let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
        Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": items}))
    }
}

/// The media type of aggregated discovery answers; clients decide by it, not by the body.
pub const AGGREGATED_CONTENT_TYPE: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Does the client accept aggregated discovery (`as=APIGroupDiscoveryList`, v2)?
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|t| {
        t.contains("as=APIGroupDiscoveryList")
            && t.contains("g=apidiscovery.k8s.io")
            && t.contains("v=v2")
            && !t.contains("v=v2beta1")
    })
}

impl Registry {
    /// `GET /api` or `GET /apis` in aggregated form (`core`: the legacy group only).
    pub fn aggregated(&self, core: bool) -> Value {
        let mut items = Vec::new();
        let groups: Vec<(String, String)> = if core { vec![(String::new(), "v1".into())] } else { self.groups() };
        for (group, version) in groups {
            let resources: Vec<Value> = self
                .resources
                .iter()
                .filter(|r| r.group == group && r.version == version)
                .map(|r| {
                    let kind = json!({"group": r.group, "version": r.version, "kind": r.kind});
                    let mut item = json!({"resource": r.plural, "responseKind": kind, "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                                          "singularResource": r.singular, "verbs": r.verbs});
                    if !r.short_names.is_empty() {
                        item["shortNames"] = json!(r.short_names);
                    }
                    if !r.categories.is_empty() {
                        item["categories"] = json!(r.categories);
                    }
                    if r.status_subresource {
                        item["subresources"] = json!([{"subresource": "status", "responseKind": kind, "verbs": ["get", "patch", "update"]}]);
                    }
                    item
                })
                .collect();
            let metadata = if group.is_empty() {
                json!({"creationTimestamp": null})
            } else {
                json!({"name": group, "creationTimestamp": null})
            };
            items.push(json!({"metadata": metadata, "versions": [{"version": version, "resources": resources, "freshness": "Current"}]}));
        }
        json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
    }
}

fn group_json(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// A stable short hash for opaque identifiers (storage version hashes).
fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}
