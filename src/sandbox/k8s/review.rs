//! Who the caller is and what it may do: SelfSubjectAccessReview (`kubectl auth can-i`),
//! SelfSubjectRulesReview (`can-i --list`), SelfSubjectReview (`kubectl auth whoami`), and the
//! 403s a restricted identity gets, worded as RBAC's authorizer words them.

use std::str::FromStr;

use serde_json::{Value, json};

use super::resources::{Registry, Resource};
use super::status::{Reply, failure};

/// A verb on a resource the sandbox's identity may not use (`--deny VERB:RESOURCE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// A verb (`patch`), or `*`.
    pub verb: String,
    /// `plural` for the core group, `plural.group` otherwise, or `*`.
    pub resource: String,
}

impl FromStr for Denial {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (verb, resource) = s
            .split_once(':')
            .ok_or_else(|| format!("deny {s:?}: expected VERB:RESOURCE, e.g. patch:nodepools.karpenter.sh"))?;
        if verb.is_empty() || resource.is_empty() {
            return Err(format!("deny {s:?}: expected VERB:RESOURCE, e.g. patch:nodepools.karpenter.sh"));
        }
        Ok(Denial { verb: verb.to_string(), resource: resource.to_string() })
    }
}

impl Denial {
    fn denies(&self, verb: &str, plural: &str, group: &str) -> bool {
        let qualified = if group.is_empty() { plural.to_string() } else { format!("{plural}.{group}") };
        (self.verb == "*" || self.verb == verb) && (self.resource == "*" || self.resource == qualified)
    }
}

/// The caller the sandbox's token authenticates as.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub denied: Vec<Denial>,
}

impl Identity {
    pub fn username(&self) -> &'static str {
        if self.denied.is_empty() { "archshift-sandbox-admin" } else { "archshift-sandbox-restricted" }
    }

    fn groups(&self) -> Vec<&'static str> {
        if self.denied.is_empty() {
            vec!["system:masters", "system:authenticated"]
        } else {
            vec!["archshift:restricted", "system:authenticated"]
        }
    }

    pub fn allowed(&self, verb: &str, plural: &str, group: &str) -> bool {
        !self.denied.iter().any(|d| d.denies(verb, plural, group))
    }

    /// The 403 for a request this identity may not make.
    pub fn forbidden(&self, verb: &str, res: &Resource, ns: &str, name: Option<&str>) -> Reply {
        let qualified = res.qualified();
        let subject = match name {
            Some(n) => format!("{qualified} {n:?}"),
            None => qualified,
        };
        let scope = if ns.is_empty() { "at the cluster scope".to_string() } else { format!("in the namespace {ns:?}") };
        let message = format!(
            "{subject} is forbidden: User {:?} cannot {verb} resource {:?} in API group {:?} {scope}",
            self.username(),
            res.plural,
            res.group
        );
        let mut details = json!({"kind": res.plural});
        if let Some(n) = name {
            details["name"] = json!(n);
        }
        if !res.group.is_empty() {
            details["group"] = json!(res.group);
        }
        failure(403, "Forbidden", &message, Some(details))
    }

    /// `POST selfsubjectaccessreviews`: may the caller do this?
    pub fn access_review(&self, mut body: Value) -> Reply {
        let attrs = &body["spec"]["resourceAttributes"];
        if attrs.is_null() && body["spec"]["nonResourceAttributes"].is_null() {
            return failure(
                422,
                "Invalid",
                "SelfSubjectAccessReview.authorization.k8s.io \"\" is invalid: spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
                None,
            );
        }
        let allowed = attrs.is_null()
            || self.allowed(
                attrs["verb"].as_str().unwrap_or(""),
                attrs["resource"].as_str().unwrap_or(""),
                attrs["group"].as_str().unwrap_or(""),
            );
        // RBAC names the binding that allows, and gives no reason when nothing does.
        body["status"] = if allowed {
            json!({"allowed": true, "reason": format!("RBAC: allowed by ClusterRoleBinding \"archshift-sandbox\" of ClusterRole \"cluster-admin\" to User \"{}\"", self.username())})
        } else {
            json!({"allowed": false})
        };
        if body["metadata"].is_null() || body["metadata"] == json!({}) {
            body["metadata"] = json!({"creationTimestamp": null});
        }
        Reply::ok(201, body)
    }

    /// `POST selfsubjectrulesreviews`: everything the caller may do in a namespace.
    pub fn rules_review(&self, mut body: Value, registry: &Registry) -> Reply {
        if body["spec"]["namespace"].is_null() {
            body["spec"]["namespace"] = json!("");
        }
        let rules: Vec<Value> = if self.denied.is_empty() {
            vec![json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})]
        } else {
            registry
                .resources
                .iter()
                .filter_map(|r| {
                    let verbs: Vec<&str> =
                        r.verbs.iter().copied().filter(|v| self.allowed(v, &r.plural, &r.group)).collect();
                    (!verbs.is_empty())
                        .then(|| json!({"verbs": verbs, "apiGroups": [r.group], "resources": [r.plural]}))
                })
                .collect()
        };
        body["status"] = json!({
            "resourceRules": rules,
            "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/version", "/openapi/*"]}],
            "incomplete": false,
        });
        if body["metadata"].is_null() || body["metadata"] == json!({}) {
            body["metadata"] = json!({"creationTimestamp": null});
        }
        Reply::ok(201, body)
    }

    /// `POST selfsubjectreviews`: who the caller is.
    pub fn self_review(&self, mut body: Value) -> Reply {
        body["metadata"] = json!({"creationTimestamp": null});
        body["status"] = json!({"userInfo": {"username": self.username(), "groups": self.groups()}});
        Reply::ok(201, body)
    }
}
