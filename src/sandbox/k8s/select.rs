//! Label and field selectors as the API server parses them, and the label, annotation and
//! qualified-name rules writes are validated with (apimachinery's `validation` package).

use serde_json::Value;

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";

fn name_chars_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

fn dns_subdomain_ok(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// `validation.IsQualifiedName`: the messages for a label or annotation key.
pub fn qualified_name_errors(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) if !n.contains('/') => (Some(p), n),
        Some(_) => {
            return vec![format!(
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '{QUALIFIED_NAME_FMT}') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )];
        }
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".to_string());
        } else if !dns_subdomain_ok(p) {
            errs.push(format!("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '{DNS1123_SUBDOMAIN_FMT}')"));
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    if !name.is_empty() && !name_chars_ok(name) {
        errs.push(format!("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '{QUALIFIED_NAME_FMT}')"));
    }
    errs
}

/// `validation.IsValidLabelValue`.
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !value.is_empty() && !name_chars_ok(value) {
        errs.push(format!("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '{LABEL_VALUE_FMT}')"));
    }
    errs
}

/// Equality- and set-based label selectors: `a=b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`.
pub struct LabelSelector(Vec<(String, String, Vec<String>)>);

impl LabelSelector {
    /// Parses a selector; the error is the message after "unable to parse requirement: ".
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        let mut rest = s.trim();
        while !rest.is_empty() {
            // Split at the next comma that is not inside parentheses.
            let mut depth = 0;
            let end = rest
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    *c == ',' && depth == 0
                })
                .map_or(rest.len(), |(i, _)| i);
            let part = rest[..end].trim();
            rest = rest[end..].trim_start_matches(',').trim();
            let req = if let Some(k) = part.strip_prefix('!') {
                (k.trim().to_string(), "!".to_string(), vec![])
            } else if let Some((k, v)) = part.split_once("!=") {
                (k.trim().into(), "!=".into(), vec![v.trim().into()])
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (k.trim().into(), "=".into(), vec![v.trim().into()])
            } else if let Some((k, v)) = part.split_once(" notin ").or_else(|| part.split_once(" in ")) {
                let op = if part.contains(" notin ") { "notin" } else { "in" };
                let vals = v
                    .trim()
                    .strip_prefix('(')
                    .and_then(|x| x.strip_suffix(')'))
                    .ok_or_else(|| format!("found '{}', expected: '('", v.trim()))?;
                (k.trim().into(), op.into(), vals.split(',').map(|x| x.trim().to_string()).collect())
            } else if !part.is_empty() && !part.contains([' ', '(', ')']) {
                (part.into(), "exists".into(), vec![])
            } else {
                return Err(format!("found '{part}', expected: identifier"));
            };
            if let Some(e) = qualified_name_errors(&req.0).first() {
                return Err(format!("key: Invalid value: {:?}: {e}", req.0));
            }
            for (i, v) in req.2.iter().enumerate() {
                if let Some(e) = label_value_errors(v).first() {
                    return Err(format!("values[{i}][{}]: Invalid value: {v:?}: {e}", req.0));
                }
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, labels: &Value) -> bool {
        self.0.iter().all(|(k, op, vals)| {
            let v = labels.get(k).and_then(Value::as_str);
            match op.as_str() {
                "=" => v == Some(vals[0].as_str()),
                "!=" => v != Some(vals[0].as_str()),
                "in" => v.is_some_and(|v| vals.iter().any(|x| x == v)),
                "notin" => v.is_none_or(|v| !vals.iter().any(|x| x == v)),
                "exists" => v.is_some(),
                _ => v.is_none(),
            }
        })
    }
}

/// Field selectors: `field=value`, `field==value`, `field!=value`, comma-separated, over the
/// fields a kind supports (custom resources: `metadata.name` and `metadata.namespace`).
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// `supported`: the field labels of the kind besides metadata.name/namespace. The error is
    /// the message of the 400 the server answers.
    pub fn parse(s: &str, supported: &[&str]) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(format!("invalid selector: '{s}'; can't understand '{part}'"));
            };
            let field = field.trim();
            if !["metadata.name", "metadata.namespace"].contains(&field) && !supported.contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let have = field.split('.').try_fold(obj, |cur, k| cur.get(k));
            let have = match have {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(v) if !v.is_null() => v.to_string(),
                _ => String::new(),
            };
            (have == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn label_selectors_are_validated_like_the_api_servers() {
        assert!(
            LabelSelector::parse("app=web,tier in (a, b),!old").unwrap().matches(&json!({"app": "web", "tier": "a"}))
        );
        let e = LabelSelector::parse("a=b=c").err().unwrap();
        assert!(e.starts_with("values[0][a]: Invalid value: \"b=c\": a valid label must be"), "{e}");
        assert!(LabelSelector::parse("bad key=x").is_err());
        assert!(LabelSelector::parse("x in a,b").err().unwrap().contains("expected: '('"));
    }

    #[test]
    fn field_selectors_accept_only_supported_fields() {
        let s = FieldSelector::parse("metadata.name!=spot-pool", &[]).unwrap();
        assert!(!s.matches(&json!({"metadata": {"name": "spot-pool"}})));
        assert!(s.matches(&json!({"metadata": {"name": "other"}})));
        assert!(FieldSelector::parse("metadata.name==a", &[]).unwrap().matches(&json!({"metadata": {"name": "a"}})));
        assert_eq!(FieldSelector::parse("spec.weight=3", &[]).err().unwrap(), "field label not supported: spec.weight");
        assert!(FieldSelector::parse("type=Opaque", &["type"]).unwrap().matches(&json!({"type": "Opaque"})));
    }

    #[test]
    fn qualified_names_follow_is_qualified_name() {
        assert!(qualified_name_errors("karpenter.sh/nodepool").is_empty());
        assert!(qualified_name_errors("app").is_empty());
        assert_eq!(qualified_name_errors("Bad_Prefix/x")[0].split(' ').next(), Some("prefix"));
        assert!(!qualified_name_errors("-leading").is_empty());
        assert!(!qualified_name_errors(&"x".repeat(64)).is_empty());
        assert!(label_value_errors("").is_empty() && !label_value_errors("has space").is_empty());
    }
}
