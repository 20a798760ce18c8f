//! Request parameters as Grape merges them (query, JSON or form body), and pagination.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Request parameters from the query string, a JSON body or a form body, as Grape merges them.
pub struct Params {
    map: HashMap<String, String>,
    lists: HashMap<String, Vec<String>>,
    pub json: Value,
}

impl Default for Params {
    /// No parameters: what an internal call (a push pipeline) passes.
    fn default() -> Params {
        Params { map: HashMap::new(), lists: HashMap::new(), json: Value::Null }
    }
}

impl Params {
    pub(super) fn new(req: &Request) -> Params {
        let mut map: HashMap<String, String> = HashMap::new();
        let mut lists: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in &req.query_all {
            push_param(&mut map, &mut lists, k, v);
        }
        let ct = req.headers.get("content-type").map(String::as_str).unwrap_or("");
        let mut json_body = Value::Null;
        if ct.starts_with("application/json") || (!req.body.is_empty() && req.body[0] == b'{') {
            if let Ok(v) = serde_json::from_slice::<Value>(&req.body) {
                if let Some(o) = v.as_object() {
                    for (k, x) in o {
                        match x {
                            Value::Array(a) => {
                                lists.insert(
                                    k.clone(),
                                    a.iter()
                                        .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                                        .collect(),
                                );
                                map.insert(
                                    k.clone(),
                                    a.iter()
                                        .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                                        .collect::<Vec<_>>()
                                        .join(","),
                                );
                            }
                            Value::String(s) => {
                                map.insert(k.clone(), s.clone());
                            }
                            Value::Null => {}
                            other => {
                                map.insert(k.clone(), other.to_string());
                            }
                        }
                    }
                }
                json_body = v;
            }
        } else if !req.body.is_empty() {
            for pair in String::from_utf8_lossy(&req.body).split('&') {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                push_param(
                    &mut map,
                    &mut lists,
                    &percent_decode(&k.replace('+', " ")),
                    &percent_decode(&v.replace('+', " ")),
                );
            }
        }
        Params { map, lists, json: json_body }
    }

    pub(super) fn get(&self, k: &str) -> Option<&String> {
        self.map.get(k)
    }

    pub(super) fn has(&self, k: &str) -> bool {
        self.map.contains_key(k) || self.lists.contains_key(k) || self.json.get(k).is_some()
    }

    /// A list parameter: JSON array, repeated `k[]=`, or a comma-separated string.
    pub(super) fn list(&self, k: &str) -> Vec<String> {
        if let Some(l) = self.lists.get(k) {
            return l
                .iter()
                .flat_map(|s| s.split(','))
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        self.map
            .get(k)
            .map(|s| s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect())
            .unwrap_or_default()
    }
}

pub(super) fn push_param(
    map: &mut HashMap<String, String>,
    lists: &mut HashMap<String, Vec<String>>,
    k: &str,
    v: &str,
) {
    if let Some(base) = k.strip_suffix("[]") {
        lists.entry(base.to_string()).or_default().push(v.to_string());
    } else {
        map.insert(k.to_string(), v.to_string());
    }
}

/// Whether the request asks for keyset pagination.
pub(super) fn wants_keyset(req: &Request) -> bool {
    req.query.get("pagination").is_some_and(|p| p == "keyset")
}

/// GitLab's answer where keyset pagination is not offered (PaginationStrategies#keyset_paginator).
pub(super) fn keyset_unavailable() -> R {
    Reply::json(405, json!({"error": "Keyset pagination is not yet available for this type of request"}))
}

/// Keyset pagination by `id` (`order_by=id`, `sort=asc|desc`): one page after `id_after`
/// (or before `id_before`), and a `Link rel="next"` while more remain; no totals.
pub(super) fn keyset_by_id(req: &Request, base: &str, mut items: Vec<(u64, Value)>) -> R {
    if req.query.get("order_by").is_some_and(|o| o != "id") {
        return keyset_unavailable();
    }
    let desc = req.query.get("sort").is_some_and(|s| s == "desc");
    let per_page =
        req.query.get("per_page").and_then(|p| p.parse::<usize>().ok()).filter(|p| *p > 0).unwrap_or(20).min(100);
    items.sort_by_key(|(id, _)| *id);
    if desc {
        items.reverse();
    }
    let after = req.query.get("id_after").and_then(|v| v.parse::<u64>().ok());
    let before = req.query.get("id_before").and_then(|v| v.parse::<u64>().ok());
    let rest: Vec<(u64, Value)> =
        items.into_iter().filter(|(id, _)| after.is_none_or(|a| *id > a) && before.is_none_or(|b| *id < b)).collect();
    let more = rest.len() > per_page;
    let page: Vec<(u64, Value)> = rest.into_iter().take(per_page).collect();
    let mut headers = vec![("x-per-page".to_string(), per_page.to_string())];
    if more && let Some((last, _)) = page.last() {
        let cursor = if desc { format!("id_before={last}") } else { format!("id_after={last}") };
        let keep: Vec<String> = req
            .query_all
            .iter()
            .filter(|(k, _)| k != "id_after" && k != "id_before")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        headers.push(("Link".into(), format!("<{base}{}?{}&{cursor}>; rel=\"next\"", req.path, keep.join("&"))));
    }
    Reply { code: 200, body: Body::Json(Value::Array(page.into_iter().map(|(_, v)| v).collect())), headers }
}

/// Offset pagination with the headers GitLab sends (405 when keyset is asked for).
pub(super) fn paginate(req: &Request, base: &str, items: Vec<Value>) -> R {
    if wants_keyset(req) {
        return keyset_unavailable();
    }
    let page = req.query.get("page").and_then(|p| p.parse::<usize>().ok()).filter(|p| *p > 0).unwrap_or(1);
    let per_page =
        req.query.get("per_page").and_then(|p| p.parse::<usize>().ok()).filter(|p| *p > 0).unwrap_or(20).min(100);
    let total = items.len();
    let total_pages = total.div_ceil(per_page).max(1);
    let slice: Vec<Value> = items.into_iter().skip((page - 1) * per_page).take(per_page).collect();
    let next = if page < total_pages { (page + 1).to_string() } else { String::new() };
    let prev = if page > 1 { (page - 1).to_string() } else { String::new() };
    let link_for = |p: usize| {
        let mut q: Vec<(String, String)> =
            req.query_all.iter().filter(|(k, _)| k != "page" && k != "per_page").cloned().collect();
        q.push(("page".into(), p.to_string()));
        q.push(("per_page".into(), per_page.to_string()));
        let qs: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{base}{}?{}", req.path, qs.join("&"))
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("<{}>; rel=\"prev\"", link_for(page - 1)));
    }
    if page < total_pages {
        links.push(format!("<{}>; rel=\"next\"", link_for(page + 1)));
    }
    links.push(format!("<{}>; rel=\"first\"", link_for(1)));
    links.push(format!("<{}>; rel=\"last\"", link_for(total_pages)));
    let headers = vec![
        ("x-page".into(), page.to_string()),
        ("x-per-page".into(), per_page.to_string()),
        ("x-next-page".into(), next),
        ("x-prev-page".into(), prev),
        ("x-total".into(), total.to_string()),
        ("x-total-pages".into(), total_pages.to_string()),
        ("Link".into(), links.join(", ")),
    ];
    Reply { code: 200, body: Body::Json(Value::Array(slice)), headers }
}
