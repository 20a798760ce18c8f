//! Project and group CI/CD variables: the rules both share (scopes, masking, hidden values).

use super::routes::Ctx;
#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn variable_json(v: &Variable) -> Value {
    entities::to_json(&entities::Variable {
        variable_type: v.variable_type.clone(),
        key: v.key.clone(),
        value: (!v.hidden).then(|| v.value.clone()),
        hidden: v.hidden,
        protected: v.protected,
        masked: v.masked,
        raw: v.raw,
        environment_scope: v.environment_scope.clone(),
        description: v.description.clone(),
    })
}

/// Project and group CI/CD variables share their rules.
pub(super) fn variables(
    method: &str,
    rest: &[&str],
    p: &Params,
    vars: &mut Vec<Variable>,
    what: &str,
    req: &Request,
    base: &str,
) -> R {
    let scope_filter = p.get("filter[environment_scope]").cloned();
    let matching = |vars: &Vec<Variable>, key: &str| -> Vec<usize> {
        vars.iter()
            .enumerate()
            .filter(|(_, v)| v.key == key && scope_filter.as_ref().is_none_or(|s| *s == v.environment_scope))
            .map(|(i, _)| i)
            .collect()
    };
    let ambiguous =
        || msg(409, "There are multiple variables with provided parameters. Please use 'filter[environment_scope]'");
    match (method, rest) {
        ("GET", []) => paginate(req, base, vars.iter().map(variable_json).collect()),
        ("GET", [key]) => match matching(vars, &percent_decode(key)).as_slice() {
            [] => not_found(what),
            [i] => Reply::json(200, variable_json(&vars[*i])),
            _ => ambiguous(),
        },
        ("POST", []) => {
            let Some(key) = p.get("key").cloned() else { return missing("key") };
            let Some(value) = p.get("value").cloned() else { return missing("value") };
            if key.len() > 255 || key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Reply::json(400, json!({"message": {"key": ["can contain only letters, digits and '_'."]}}));
            }
            let scope = p.get("environment_scope").cloned().unwrap_or("*".into());
            if vars.iter().any(|v| v.key == key && v.environment_scope == scope) {
                return Reply::json(400, json!({"message": {"key": [format!("({key}) has already been taken")]}}));
            }
            let hidden = p.get("masked_and_hidden").is_some_and(|v| v == "true");
            let masked = hidden || p.get("masked").is_some_and(|v| v == "true");
            if masked && (value.len() < 8 || value.contains(char::is_whitespace)) {
                return Reply::json(400, json!({"message": {"value": ["is invalid"]}}));
            }
            let v = Variable {
                key,
                value,
                variable_type: p.get("variable_type").cloned().unwrap_or("env_var".into()),
                protected: p.get("protected").is_some_and(|v| v == "true"),
                masked,
                hidden,
                raw: p.get("raw").is_some_and(|v| v == "true"),
                environment_scope: scope,
                description: p.get("description").cloned(),
            };
            let j = variable_json(&v);
            vars.push(v);
            Reply::json(201, j)
        }
        ("PUT", [key]) => {
            let idx = match matching(vars, &percent_decode(key)).as_slice() {
                [] => return not_found(what),
                [i] => *i,
                _ => return ambiguous(),
            };
            let v = &mut vars[idx];
            if v.hidden && p.get("masked").is_some_and(|m| m != "true") {
                return msg(400, "The visibility setting cannot be changed for masked and hidden variables.");
            }
            if let Some(x) = p.get("value") {
                v.value = x.clone();
            }
            for (k, slot) in [("protected", &mut v.protected), ("masked", &mut v.masked), ("raw", &mut v.raw)] {
                if let Some(x) = p.get(k) {
                    *slot = x == "true";
                }
            }
            if let Some(x) = p.get("variable_type") {
                v.variable_type = x.clone();
            }
            if let Some(x) = p.get("environment_scope") {
                v.environment_scope = x.clone();
            }
            if let Some(x) = p.get("description") {
                v.description = Some(x.clone());
            }
            if v.masked && (v.value.len() < 8 || v.value.contains(char::is_whitespace)) {
                return Reply::json(400, json!({"message": {"value": ["is invalid"]}}));
            }
            Reply::json(200, variable_json(v))
        }
        ("DELETE", [key]) => match matching(vars, &percent_decode(key)).as_slice() {
            [] => not_found(what),
            [i] => {
                vars.remove(*i);
                no_content()
            }
            _ => ambiguous(),
        },
        _ => msg(405, "405 Method Not Allowed"),
    }
}

/// `* /api/v4/projects/:project/variables/*`
pub(super) fn project(s: &mut GitLabState, c: &Ctx) -> R {
    // Project variables need Maintainer (`admin_cicd_variables` in ProjectPolicy), reads too.
    if !s.may(MAINTAINER) {
        return msg(403, "403 Forbidden");
    }
    let pid = s.projects[c.project].id;
    let base = s.base_url.clone();
    let rest: Vec<&str> = c.rest.iter().map(String::as_str).collect();
    variables(&c.req.method, &rest, &c.p, s.project_vars.entry(pid).or_default(), "Variable", c.req, &base)
}

/// `* /api/v4/groups/:group/variables/*`
pub(super) fn group(s: &mut GitLabState, c: &Ctx) -> R {
    // Group variables need Owner (`admin_cicd_variables` in GroupPolicy), reads too.
    if !s.may(OWNER) {
        return msg(403, "403 Forbidden");
    }
    let gid = s.groups[c.group].id;
    let base = s.base_url.clone();
    let rest: Vec<&str> = c.rest.iter().map(String::as_str).collect();
    variables(&c.req.method, &rest, &c.p, s.group_vars.entry(gid).or_default(), "GroupVariable", c.req, &base)
}
