//! OpenAPI v3 discovery (`/openapi/v3` and one document per group version), as kubectl reads
//! it: to find a kind's schema and to learn that PATCH accepts `fieldValidation` (then it
//! leaves validation to the server).

use serde_json::{Map, Value, json};

use super::resources::{Registry, Resource};

fn gv_path(r: &Resource) -> String {
    if r.group.is_empty() { format!("api/{}", r.version) } else { format!("apis/{}/{}", r.group, r.version) }
}

fn schema_name(r: &Resource) -> String {
    if r.group.is_empty() {
        format!("io.k8s.api.core.{}.{}", r.version, r.kind)
    } else {
        let reversed: Vec<&str> = r.group.split('.').rev().collect();
        format!("{}.{}.{}", reversed.join("."), r.version, r.kind)
    }
}

/// `GET /openapi/v3`.
pub fn root(reg: &Registry) -> Value {
    let mut paths = Map::new();
    for r in &reg.resources {
        let p = gv_path(r);
        let hash = format!(
            "{:016X}",
            p.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
        );
        paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}));
    }
    json!({"paths": paths})
}

fn param(name: &str) -> Value {
    json!({"name": name, "in": "query", "description": name, "schema": {"type": "string", "uniqueItems": true}})
}

fn op(r: &Resource, id: &str, params: &[&str], schema_ref: &str) -> Value {
    json!({
        "tags": [gv_path(r)],
        "operationId": id,
        "parameters": params.iter().map(|p| param(p)).collect::<Vec<_>>(),
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": schema_ref}}}}},
        "x-kubernetes-action": id.split('_').next().unwrap_or(id),
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind}
    })
}

/// `GET /openapi/v3/apis/GROUP/VERSION` (or `/openapi/v3/api/v1`).
pub fn document(reg: &Registry, gv: &str) -> Option<Value> {
    let rs: Vec<&Resource> = reg.resources.iter().filter(|r| gv_path(r) == gv).collect();
    if rs.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for r in rs {
        let name = schema_name(r);
        let reference = format!("#/components/schemas/{name}");
        let base = format!("/{}", gv_path(r));
        let (collection, item) = if r.namespaced {
            (
                format!("{base}/namespaces/{{namespace}}/{}", r.plural),
                format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
            )
        } else {
            (format!("{base}/{}", r.plural), format!("{base}/{}/{{name}}", r.plural))
        };
        let write = ["dryRun", "fieldManager", "fieldValidation", "pretty"];
        paths.insert(
            collection,
            json!({
                "get": op(r, &format!("list_{}", r.plural), &["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion"], &reference),
                "post": op(r, &format!("create_{}", r.kind), &write, &reference)
            }),
        );
        paths.insert(
            item,
            json!({
                "get": op(r, &format!("read_{}", r.kind), &["pretty"], &reference),
                "put": op(r, &format!("replace_{}", r.kind), &write, &reference),
                "patch": op(r, &format!("patch_{}", r.kind), &["dryRun", "fieldManager", "fieldValidation", "force", "pretty"], &reference),
                "delete": op(r, &format!("delete_{}", r.kind), &["dryRun", "gracePeriodSeconds", "propagationPolicy"], &reference)
            }),
        );
        let mut schema =
            r.schema.clone().unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
        schema["x-kubernetes-group-version-kind"] = json!([{"group": r.group, "kind": r.kind, "version": r.version}]);
        schemas.insert(name, schema);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.4-archshift-sandbox"},
        "paths": paths,
        "components": {"schemas": schemas}
    }))
}
