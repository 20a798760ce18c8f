//! How the simulated GitLab reads a CI configuration: includes, `extends`, `default:`,
//! variables, and the validation errors GitLab reports. Written from GitLab's documented
//! behaviour, independently of archshift's own CI-file module, so that a misreading in one
//! shows up against the other.

use std::collections::BTreeMap;

use yaml_serde::{Mapping, Value};

const GLOBAL: [&str; 11] = [
    "default",
    "include",
    "stages",
    "variables",
    "workflow",
    "image",
    "services",
    "cache",
    "before_script",
    "after_script",
    "spec",
];
/// Keywords `default:` hands down to jobs.
const INHERITABLE: [&str; 11] = [
    "after_script",
    "artifacts",
    "before_script",
    "cache",
    "hooks",
    "id_tokens",
    "image",
    "interruptible",
    "retry",
    "services",
    "tags",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub name: String,
    pub stage: String,
    /// Tags as written (variables not expanded).
    pub tags: Vec<String>,
    pub before_script: Vec<String>,
    pub script: Vec<String>,
    pub after_script: Vec<String>,
    pub when: String,
    pub allow_failure: bool,
    pub trigger: bool,
    pub variables: BTreeMap<String, String>,
    pub environment: Option<String>,
    pub only: Value,
    pub except: Value,
    pub needs: Value,
    /// `rules:` as written (evaluated when a pipeline is created).
    pub rules: Value,
    /// Position of its stage in `stages` (with `.pre` first and `.post` last).
    pub stage_index: usize,
}

impl Job {
    /// The jobs it `needs:` (strings or `{job: name}`); `None` without `needs:` (stage order).
    pub fn needs_names(&self) -> Option<Vec<String>> {
        let list = self.needs.as_sequence()?;
        Some(
            list.iter()
                .filter_map(|n| n.as_str().map(str::to_string).or_else(|| n.get("job")?.as_str().map(str::to_string)))
                .collect(),
        )
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub jobs: Vec<Job>,
    /// `workflow: rules:` as written.
    pub workflow_rules: Value,
    pub variables: BTreeMap<String, String>,
    pub merged_yaml: String,
    pub includes: Vec<serde_json::Value>,
    pub warnings: Vec<String>,
}

/// GitLab's own templates the sandbox serves (`include: template:`); see
/// `src/sandbox/ci-templates/README.md` for their origin.
pub fn template(name: &str) -> Option<&'static str> {
    Some(match name {
        "Docker.gitlab-ci.yml" => include_str!("../ci-templates/Docker.gitlab-ci.yml"),
        "Kaniko.gitlab-ci.yml" => include_str!("../ci-templates/Kaniko.gitlab-ci.yml"),
        "Jobs/Build.gitlab-ci.yml" => include_str!("../ci-templates/Jobs/Build.gitlab-ci.yml"),
        "Jobs/Test.gitlab-ci.yml" => include_str!("../ci-templates/Jobs/Test.gitlab-ci.yml"),
        "Jobs/Code-Quality.gitlab-ci.yml" => include_str!("../ci-templates/Jobs/Code-Quality.gitlab-ci.yml"),
        _ => return None,
    })
}

/// Where an include points: `(project or None for this one, path)`.
pub type Resolver<'a> = dyn Fn(Option<&str>, &str) -> Option<String> + 'a;

pub fn load(content: &str, resolve: &Resolver) -> Result<Config, Vec<String>> {
    let mut top = parse(content)?;
    let mut includes = Vec::new();
    if let Some(inc) = top.remove("include") {
        let entries = match inc {
            Value::Sequence(s) => s,
            other => vec![other],
        };
        let mut base = Mapping::new();
        for e in entries {
            let (project, path, kind) = match &e {
                Value::String(p) if p.starts_with("http") => (None, p.clone(), "remote"),
                Value::String(p) => (None, p.clone(), "local"),
                Value::Mapping(m) => {
                    if let Some(p) = m.get("local").and_then(Value::as_str) {
                        (None, p.to_string(), "local")
                    } else if let Some(p) = m.get("file").and_then(Value::as_str) {
                        (m.get("project").and_then(Value::as_str).map(str::to_string), p.to_string(), "file")
                    } else if let Some(t) = m.get("template").and_then(Value::as_str) {
                        (None, t.to_string(), "template")
                    } else if let Some(r) = m.get("remote").and_then(Value::as_str) {
                        (None, r.to_string(), "remote")
                    } else {
                        return Err(vec!["Included file must be a string or a hash with the `local`, `file`, `remote`, `template` or `component` key".into()]);
                    }
                }
                _ => return Err(vec!["Invalid configuration format".into()]),
            };
            let text = match kind {
                "local" | "file" => resolve(project.as_deref(), path.trim_start_matches('/')),
                "template" => template(&path).map(str::to_string),
                _ => None,
            };
            let Some(text) = text else {
                return Err(vec![match kind {
                    "local" => format!("Local file `{path}` does not exist!"),
                    "file" => format!("Project `{}` file `{path}` does not exist!", project.unwrap_or_default()),
                    "remote" => format!("Remote file `{path}` could not be fetched because of a timeout error!"),
                    _ => format!("Included file `{path}` is empty or does not exist!"),
                }]);
            };
            let inc_top = parse(&text)?;
            includes.push(serde_json::json!({"type": kind, "location": path, "blob": null, "raw": null, "extra": {}, "context_project": null, "context_sha": null}));
            deep_merge(&mut base, &inc_top);
        }
        deep_merge(&mut base, &top);
        top = base;
    }
    let merged_yaml = yaml_serde::to_string(&Value::Mapping(top.clone())).unwrap_or_default();
    let stages: Vec<String> = match top.get("stages") {
        Some(Value::Sequence(s)) => {
            let mut v: Vec<String> = vec![".pre".into()];
            v.extend(s.iter().filter_map(Value::as_str).map(str::to_string));
            v.push(".post".into());
            v
        }
        _ => [".pre", "build", "test", "deploy", ".post"].iter().map(|s| s.to_string()).collect(),
    };
    let variables = vars(top.get("variables"));
    let default = top.get("default").and_then(Value::as_mapping).cloned().unwrap_or_default();
    let mut errors = Vec::new();
    let mut jobs = Vec::new();
    for (k, v) in &top {
        let Some(name) = k.as_str() else { continue };
        if name.starts_with('.') || GLOBAL.contains(&name) {
            continue;
        }
        let Some(own) = v.as_mapping() else {
            errors.push(format!("jobs:{name} config should be a hash"));
            continue;
        };
        let resolved = match resolve_extends(name, own, &top, 0) {
            Ok(m) => m,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let mut job = resolved;
        let inherit_default = job.get("inherit").and_then(|i| i.get("default")).cloned();
        for key in INHERITABLE {
            let allowed = match &inherit_default {
                Some(Value::Bool(b)) => *b,
                Some(Value::Sequence(s)) => s.iter().any(|x| x.as_str() == Some(key)),
                _ => true,
            };
            if allowed
                && !job.contains_key(key)
                && !job.contains_key("trigger")
                && let Some(d) = default.get(key)
            {
                job.insert(Value::from(key), d.clone());
            }
        }
        let trigger = job.contains_key("trigger");
        if trigger && job.contains_key("tags") && own_or_extended_tags(own) {
            errors.push(format!("jobs:{name} config contains unknown keys: tags"));
            continue;
        }
        if !trigger && !job.contains_key("script") && !job.contains_key("run") {
            errors.push(format!("jobs:{name} config should implement the script:, run:, or trigger: keyword"));
            continue;
        }
        let tags = match job.get("tags") {
            None => vec![],
            Some(Value::Sequence(s)) => {
                let mut out = Vec::new();
                for t in s {
                    match t {
                        Value::String(x) if !x.is_empty() => out.push(x.clone()),
                        Value::Sequence(inner) => {
                            out.extend(inner.iter().filter_map(Value::as_str).map(str::to_string))
                        }
                        _ => {
                            errors.push(format!("jobs:{name}:tags config should be an array of strings"));
                            break;
                        }
                    }
                }
                out
            }
            Some(_) => {
                errors.push(format!("jobs:{name}:tags config should be an array of strings"));
                continue;
            }
        };
        let stage = job.get("stage").and_then(Value::as_str).unwrap_or("test").to_string();
        if !stages.contains(&stage) {
            errors.push(format!(
                "{name} job: chosen stage {stage} does not exist; available stages are {}",
                stages.join(", ")
            ));
            continue;
        }
        let stage_index = stages.iter().position(|s| *s == stage).unwrap_or(0);
        jobs.push(Job {
            name: name.into(),
            stage,
            tags,
            before_script: lines(job.get("before_script")),
            script: lines(job.get("script")),
            after_script: lines(job.get("after_script")),
            when: job.get("when").and_then(Value::as_str).unwrap_or("on_success").into(),
            allow_failure: job.get("allow_failure").and_then(Value::as_bool).unwrap_or(false),
            trigger,
            variables: vars(job.get("variables")),
            environment: job.get("environment").and_then(|e| {
                e.as_str().map(str::to_string).or_else(|| e.get("name").and_then(Value::as_str).map(str::to_string))
            }),
            only: job.get("only").cloned().unwrap_or(Value::Null),
            except: job.get("except").cloned().unwrap_or(Value::Null),
            needs: job.get("needs").cloned().unwrap_or(Value::Null),
            rules: job.get("rules").cloned().unwrap_or(Value::Null),
            stage_index,
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if jobs.is_empty() {
        return Err(vec!["jobs config should contain at least one visible job".into()]);
    }
    // `needs:` must name jobs of this pipeline.
    for j in &jobs {
        for n in j.needs_names().unwrap_or_default() {
            if !jobs.iter().any(|x| x.name == n) {
                errors.push(format!("{}: undefined need: {n}", j.name));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let workflow_rules = top.get("workflow").and_then(|w| w.get("rules")).cloned().unwrap_or(Value::Null);
    Ok(Config { jobs, workflow_rules, variables, merged_yaml, includes, warnings: vec![] })
}

fn own_or_extended_tags(own: &Mapping) -> bool {
    own.contains_key("tags") || own.contains_key("extends")
}

fn parse(content: &str) -> Result<Mapping, Vec<String>> {
    use serde::Deserialize;
    let text = content.strip_prefix('\u{feff}').unwrap_or(content);
    let mut docs = Vec::new();
    for d in yaml_serde::Deserializer::from_str(text) {
        match Value::deserialize(d) {
            Ok(v) => docs.push(v),
            Err(e) => return Err(vec![format!("(<unknown>): {e}")]),
        }
    }
    let mut doc = match docs.len() {
        1 => docs.pop().unwrap_or(Value::Null),
        2 if docs[0].get("spec").is_some() => docs.pop().unwrap_or(Value::Null),
        0 => return Err(vec!["Please provide content of .gitlab-ci.yml".into()]),
        _ => return Err(vec!["Invalid configuration format".into()]),
    };
    doc.apply_merge().map_err(|e| vec![format!("(<unknown>): {e}")])?;
    match doc {
        Value::Mapping(m) => Ok(m),
        _ => Err(vec!["Invalid configuration format".into()]),
    }
}

fn resolve_extends(name: &str, own: &Mapping, top: &Mapping, depth: usize) -> Result<Mapping, String> {
    if depth > 10 {
        return Err(format!("{name}: nesting too deep in `extends`"));
    }
    let parents: Vec<String> = match own.get("extends") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Sequence(s)) => s.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => vec![],
    };
    let mut base = Mapping::new();
    for p in parents {
        let Some(pv) = top.get(p.as_str()).and_then(Value::as_mapping) else {
            return Err(format!("{name}: unknown keys in `extends` ({p})"));
        };
        if p == name {
            return Err(format!("{name}: circular dependency detected in `extends`"));
        }
        let resolved = resolve_extends(&p, pv, top, depth + 1)?;
        deep_merge(&mut base, &resolved);
    }
    let mut own = own.clone();
    own.remove("extends");
    deep_merge(&mut base, &own);
    Ok(base)
}

fn deep_merge(base: &mut Mapping, over: &Mapping) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(Value::Mapping(b)), Value::Mapping(o)) => deep_merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

fn lines(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Sequence(s)) => s
            .iter()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                other => yaml_serde::to_string(other).unwrap_or_default().trim().to_string(),
            })
            .collect(),
        _ => vec![],
    }
}

fn vars(v: Option<&Value>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(m) = v.and_then(Value::as_mapping) {
        for (k, v) in m {
            let Some(k) = k.as_str() else { continue };
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Mapping(m) => m.get("value").and_then(Value::as_str).unwrap_or("").to_string(),
                _ => continue,
            };
            out.insert(k.to_string(), value);
        }
    }
    out
}

/// GitLab's `ExpandVariables.expand_existing`: one pass over `$NAME` and `${NAME}`; an
/// undefined name stays as written, and a value is not expanded again.
pub fn expand_existing(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, consumed) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            (&after[..end], end)
        };
        match (name.is_empty(), vars.get(name)) {
            (false, Some(v)) => out.push_str(v),
            _ => out.push_str(&rest[i..i + 1 + consumed]),
        }
        rest = &rest[i + 1 + consumed..];
        if consumed == 0 {
            // A lone `$`.
            continue;
        }
    }
    out.push_str(rest);
    out
}
