//! `rules:` and `workflow: rules:` as GitLab evaluates them when it creates a pipeline: the
//! `if:` expression language (`$VAR`, strings, `/regex/`, `null`, `==`, `!=`, `=~`, `!~`,
//! `&&` before `||`, parentheses), `exists:` against the commit's files, `changes:` (true for
//! pipelines that are not pushes or merge requests), and the first matching rule's `when`.
//! Also the legacy `only:`/`except:` by ref and source.

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;
use yaml_serde::Value;

/// What a matching rule decides for a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub when: String,
    pub allow_failure: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Var(String),
    Str(String),
    Regex(String, String),
    Null,
    Op(&'static str),
    Open,
    Close,
}

fn tokenize(expr: &str) -> Result<Vec<Token>, String> {
    let c: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '$' {
            let start = i + 1;
            let braced = c.get(start) == Some(&'{');
            let mut j = if braced { start + 1 } else { start };
            while j < c.len() && (c[j].is_ascii_alphanumeric() || c[j] == '_') {
                j += 1;
            }
            let name: String = c[if braced { start + 1 } else { start }..j].iter().collect();
            out.push(Token::Var(name));
            i = if braced { j + 1 } else { j };
        } else if ch == '"' || ch == '\'' {
            let end = c[i + 1..].iter().position(|x| *x == ch).ok_or("unterminated string")? + i + 1;
            out.push(Token::Str(c[i + 1..end].iter().collect()));
            i = end + 1;
        } else if ch == '/' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '/' {
                if c[j] == '\\' {
                    j += 1;
                }
                j += 1;
            }
            let pattern: String = c[i + 1..j.min(c.len())].iter().collect();
            let mut k = j + 1;
            while k < c.len() && c[k].is_ascii_alphabetic() {
                k += 1;
            }
            out.push(Token::Regex(pattern, c[(j + 1).min(c.len())..k.min(c.len())].iter().collect()));
            i = k;
        } else if ch == '(' {
            out.push(Token::Open);
            i += 1;
        } else if ch == ')' {
            out.push(Token::Close);
            i += 1;
        } else {
            let rest: String = c[i..].iter().collect();
            let op = ["==", "!=", "=~", "!~", "&&", "||"].into_iter().find(|o| rest.starts_with(o));
            if let Some(op) = op {
                out.push(Token::Op(op));
                i += 2;
            } else if rest.starts_with("null") {
                out.push(Token::Null);
                i += 4;
            } else {
                return Err(format!("invalid expression syntax near {rest:?}"));
            }
        }
    }
    Ok(out)
}

/// A value of the expression language.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(Option<String>),
    Regex(String, String),
    Bool(bool),
}

impl Val {
    fn truthy(&self) -> bool {
        match self {
            Val::Str(s) => s.as_deref().is_some_and(|s| !s.is_empty()),
            Val::Regex(..) => true,
            Val::Bool(b) => *b,
        }
    }
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    vars: &'a BTreeMap<String, String>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn or(&mut self) -> Result<Val, String> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Op("||")) {
            self.pos += 1;
            let right = self.and()?;
            left = Val::Bool(left.truthy() || right.truthy());
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Val, String> {
        let mut left = self.comparison()?;
        while self.peek() == Some(&Token::Op("&&")) {
            self.pos += 1;
            let right = self.comparison()?;
            left = Val::Bool(left.truthy() && right.truthy());
        }
        Ok(left)
    }

    fn comparison(&mut self) -> Result<Val, String> {
        let left = self.operand()?;
        let op = match self.peek() {
            Some(Token::Op(op @ ("==" | "!=" | "=~" | "!~"))) => *op,
            _ => return Ok(left),
        };
        self.pos += 1;
        let right = self.operand()?;
        Ok(Val::Bool(match op {
            "==" => left == right,
            "!=" => left != right,
            _ => {
                let text = match &left {
                    Val::Str(s) => s.clone().unwrap_or_default(),
                    _ => return Err("=~ needs a variable or string on the left".into()),
                };
                let hit = match &right {
                    Val::Regex(p, flags) => {
                        let prefix = if flags.contains('i') { "(?i)" } else { "" };
                        Regex::new(&format!("{prefix}{p}")).map_err(|e| e.to_string())?.is_match(&text)
                    }
                    _ => return Err("=~ needs a /regex/ on the right".into()),
                };
                if op == "=~" { hit } else { !hit }
            }
        }))
    }

    fn operand(&mut self) -> Result<Val, String> {
        let t = self.tokens.get(self.pos).cloned().ok_or("unexpected end of expression")?;
        self.pos += 1;
        Ok(match t {
            Token::Var(v) => Val::Str(self.vars.get(&v).cloned()),
            Token::Str(s) => Val::Str(Some(s)),
            Token::Regex(p, f) => Val::Regex(p, f),
            Token::Null => Val::Str(None),
            Token::Open => {
                let v = self.or()?;
                if self.peek() != Some(&Token::Close) {
                    return Err("missing )".into());
                }
                self.pos += 1;
                v
            }
            other => return Err(format!("unexpected {other:?}")),
        })
    }
}

/// Evaluates a `rules: if:` expression.
pub fn eval(expr: &str, vars: &BTreeMap<String, String>) -> Result<bool, String> {
    let mut p = Parser { tokens: tokenize(expr)?, pos: 0, vars };
    let v = p.or()?;
    if p.pos != p.tokens.len() {
        return Err(format!("invalid expression syntax: {expr}"));
    }
    Ok(v.truthy())
}

fn glob_match(pattern: &str, path: &str) -> bool {
    let re = regex::escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*");
    Regex::new(&format!("^{re}$")).is_ok_and(|r| r.is_match(path))
}

/// The first rule that matches decides; `None` when no rule matches (the job is left out).
pub fn first_match(
    rules: &Value,
    vars: &BTreeMap<String, String>,
    files: &BTreeSet<String>,
) -> Result<Option<Outcome>, String> {
    for rule in rules.as_sequence().into_iter().flatten() {
        if let Some(expr) = rule.get("if").and_then(Value::as_str)
            && !eval(expr, vars)?
        {
            continue;
        }
        let globs = |v: Option<&Value>| -> Vec<String> {
            match v {
                Some(Value::Sequence(s)) => s.iter().filter_map(Value::as_str).map(str::to_string).collect(),
                Some(Value::Mapping(m)) => m
                    .get("paths")
                    .and_then(Value::as_sequence)
                    .map(|s| s.iter().filter_map(Value::as_str).map(str::to_string).collect())
                    .unwrap_or_default(),
                _ => vec![],
            }
        };
        let exists = globs(rule.get("exists"));
        if rule.get("exists").is_some() && !exists.iter().any(|g| files.iter().any(|f| glob_match(g, f))) {
            continue;
        }
        // `changes:` is true for every pipeline that is not a push or a merge request.
        let source = vars.get("CI_PIPELINE_SOURCE").map(String::as_str).unwrap_or("api");
        if rule.get("changes").is_some() && matches!(source, "push" | "merge_request_event") {
            continue;
        }
        return Ok(Some(Outcome {
            when: rule.get("when").and_then(Value::as_str).unwrap_or("on_success").to_string(),
            allow_failure: rule.get("allow_failure").and_then(Value::as_bool),
        }));
    }
    Ok(None)
}

/// `only:`/`except:` (refs, `branches`, `tags`, sources, `/regex/`), as lists or as
/// `{refs, variables, kubernetes}` (`kubernetes: active` is false: no cluster integration).
pub fn only_except(
    only: &Value,
    except: &Value,
    r#ref: &str,
    source: &str,
    is_tag: bool,
    vars: &BTreeMap<String, String>,
) -> bool {
    // The `variables:` and `kubernetes:` clauses of the mapping form; `None` without them.
    let clauses = |v: &Value| -> Option<bool> {
        let m = v.as_mapping()?;
        let mut any = None;
        if let Some(list) = m.get("variables").and_then(Value::as_sequence) {
            any = Some(list.iter().filter_map(Value::as_str).any(|e| eval(e, vars).unwrap_or(false)));
        }
        if m.get("kubernetes").is_some() {
            any = Some(false);
        }
        any
    };
    fn refs(v: &Value) -> Option<Vec<String>> {
        let list = match v {
            Value::Sequence(s) => s.clone(),
            Value::String(s) => vec![Value::String(s.clone())],
            Value::Mapping(m) => m.get("refs").and_then(Value::as_sequence).cloned()?,
            _ => return None,
        };
        Some(list.iter().filter_map(Value::as_str).map(str::to_string).collect())
    }
    let matches = |pattern: &str| -> bool {
        match pattern {
            "branches" => !is_tag,
            "tags" => is_tag,
            "api" | "pushes" | "web" | "schedules" | "triggers" | "pipelines" | "merge_requests" | "external" => {
                let want = match pattern {
                    "pushes" => "push",
                    "schedules" => "schedule",
                    "triggers" => "trigger",
                    "pipelines" => "pipeline",
                    "merge_requests" => "merge_request_event",
                    other => other,
                };
                source == want
            }
            p if p.len() > 1 && p.starts_with('/') && p.ends_with('/') => {
                Regex::new(&p[1..p.len() - 1]).is_ok_and(|re| re.is_match(r#ref))
            }
            p => p == r#ref,
        }
    };
    // In `only:` every clause must hold; in `except:` any one excludes.
    let included = refs(only).is_none_or(|list| list.iter().any(|p| matches(p))) && clauses(only) != Some(false);
    let excluded = refs(except).is_some_and(|list| list.iter().any(|p| matches(p))) || clauses(except) == Some(true);
    included && !excluded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [("CI_PIPELINE_SOURCE", "api"), ("CI_COMMIT_BRANCH", "main"), ("CI_DEFAULT_BRANCH", "main"), ("EMPTY", "")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expressions_evaluate_like_gitlabs() {
        let v = vars();
        assert!(eval("$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH", &v).unwrap());
        assert!(eval("$CI_PIPELINE_SOURCE == \"api\" && $CI_COMMIT_BRANCH", &v).unwrap());
        assert!(!eval("$CI_COMMIT_TAG", &v).unwrap(), "undefined is false");
        assert!(!eval("$EMPTY", &v).unwrap(), "empty is false");
        assert!(eval("$CI_COMMIT_TAG == null", &v).unwrap());
        assert!(eval("$CI_COMMIT_BRANCH =~ /^ma/ || $X == 'y'", &v).unwrap());
        assert!(eval("$CI_COMMIT_BRANCH !~ /^release/", &v).unwrap());
        assert!(
            !eval("($CI_PIPELINE_SOURCE == 'push' || $CI_PIPELINE_SOURCE == 'web') && $CI_COMMIT_BRANCH", &v).unwrap()
        );
        assert!(eval("$X == ", &v).is_err());
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let rules: Value = yaml_serde::from_str(
            "- if: $CI_PIPELINE_SOURCE == 'push'\n  when: never\n- exists: [Dockerfile]\n  when: manual\n- when: always\n",
        )
        .unwrap();
        let files: BTreeSet<String> = ["Dockerfile".to_string()].into();
        let out = first_match(&rules, &vars(), &files).unwrap().unwrap();
        assert_eq!(out.when, "manual");
        let none: Value = yaml_serde::from_str("- if: $CI_COMMIT_TAG\n").unwrap();
        assert_eq!(first_match(&none, &vars(), &files).unwrap(), None);
    }

    #[test]
    fn only_and_except_filter_by_ref_and_source() {
        let only: Value = yaml_serde::from_str("[main, /^release-/]").unwrap();
        let v = vars();
        assert!(only_except(&only, &Value::Null, "main", "api", false, &v));
        assert!(only_except(&only, &Value::Null, "release-1", "api", false, &v));
        assert!(!only_except(&only, &Value::Null, "feature", "api", false, &v));
        let except: Value = yaml_serde::from_str("[api]").unwrap();
        assert!(!only_except(&Value::Null, &except, "main", "api", false, &v));
        let except_var: Value = yaml_serde::from_str("variables: [$CI_COMMIT_BRANCH]").unwrap();
        assert!(!only_except(&Value::Null, &except_var, "main", "api", false, &v));
        let only_k8s: Value = yaml_serde::from_str("{refs: [branches], kubernetes: active}").unwrap();
        assert!(!only_except(&only_k8s, &Value::Null, "main", "api", false, &v), "no cluster integration");
    }
}
