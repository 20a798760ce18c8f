//! The one place secrets are masked. Diffs, reports, logs, saved plans and the journal all
//! pass what they print or write through here, so a new output cannot forget a rule.

use serde_json::Value;

/// Replaces every secret value in output.
pub const SENSITIVE: &str = "(sensitive)";

/// Keys whose values are credentials wherever they appear (chart values, runner config).
const SECRET_KEYS: [&str; 5] = ["runnerToken", "runnerRegistrationToken", "token", "password", "registration-token"];
/// Prefixes of GitLab tokens: personal/project/group access, runner authentication, deploy,
/// pipeline trigger, legacy registration.
const TOKEN_PREFIXES: [&str; 5] = ["glpat-", "glrt-", "gldt-", "glptt-", "GR1348941"];

/// Masks the listed JSON pointers, Secret data, masked variables' values, credential-named
/// keys and token-looking strings.
pub fn mask(obj: &Value, pointers: &[String]) -> Value {
    let mut v = obj.clone();
    for p in pointers {
        if let Some(slot) = v.pointer_mut(p)
            && !slot.is_null()
        {
            *slot = Value::String(SENSITIVE.into());
        }
    }
    if v.get("kind").and_then(Value::as_str) == Some("Secret") {
        for field in ["data", "stringData"] {
            if let Some(m) = v.get_mut(field).and_then(Value::as_object_mut) {
                for val in m.values_mut() {
                    *val = Value::String(SENSITIVE.into());
                }
            }
        }
    }
    if v.get("masked") == Some(&Value::Bool(true))
        && let Some(value) = v.get_mut("value").filter(|x| !x.is_null())
    {
        *value = Value::String(SENSITIVE.into());
    }
    mask_walk(&mut v);
    v
}

fn mask_walk(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if SECRET_KEYS.contains(&k.as_str()) && (val.is_string() || val.is_number()) {
                    *val = Value::String(SENSITIVE.into());
                } else {
                    mask_walk(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask_walk),
        Value::String(s) => {
            let scrubbed = scrub_text(s);
            if scrubbed != *s {
                *s = scrubbed;
            }
        }
        _ => {}
    }
}

/// Replaces token-looking words in free text (a runner `config.toml`, a CI file, a log line),
/// and the value of `token = "…"` lines.
pub fn scrub_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("token")
            && rest.trim_start().starts_with('=')
        {
            let indent = &line[..line.len() - trimmed.len()];
            let eol = if line.ends_with("\r\n") {
                "\r\n"
            } else if line.ends_with('\n') {
                "\n"
            } else {
                ""
            };
            out.push_str(&format!("{indent}token = \"{SENSITIVE}\"{eol}"));
            continue;
        }
        out.push_str(&scrub_words(line));
    }
    out
}

fn scrub_words(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some((pos, prefix)) =
        TOKEN_PREFIXES.iter().filter_map(|p| rest.find(p).map(|i| (i, *p))).min_by_key(|(i, _)| *i)
    {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos + prefix.len()..];
        let len =
            tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')).unwrap_or(tail.len());
        if len >= 8 {
            out.push_str(SENSITIVE);
        } else {
            out.push_str(&rest[pos..pos + prefix.len() + len]);
        }
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

/// Masks every secret in a serialisable value (a plan, a journal record) before it is written.
pub fn redact_json(v: &Value) -> Value {
    mask(v, &[])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tokens_in_free_text_and_toml_token_lines_are_masked() {
        let text = "url = \"x\"\r\n  token = \"abc\"\r\nuse glrt-AbCdEf123456 and glpat-short\n";
        let out = scrub_text(text);
        assert_eq!(out, "url = \"x\"\r\n  token = \"(sensitive)\"\r\nuse (sensitive) and glpat-short\n");
    }

    #[test]
    fn pointers_secret_data_masked_variables_and_credential_keys_are_masked() {
        let v =
            json!({"kind": "Secret", "data": {"a": "c2VjcmV0"}, "x": {"runnerToken": "t", "ok": "GR1348941abcdefgh"}});
        let m = mask(&v, &["/x/ok".into()]);
        assert_eq!(
            m,
            json!({"kind": "Secret", "data": {"a": SENSITIVE}, "x": {"runnerToken": SENSITIVE, "ok": SENSITIVE}})
        );
        let var = json!({"key": "K", "value": "v", "masked": true});
        assert_eq!(mask(&var, &[])["value"], SENSITIVE);
        let nested = json!({"list": [{"note": "token glrt-0123456789abcdef here"}]});
        assert_eq!(redact_json(&nested)["list"][0]["note"], "token (sensitive) here");
    }
}
