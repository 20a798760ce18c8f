//! The runner `config.toml` template (`values.runners.config`), edited in place with
//! toml_edit so the operator's comments and layout survive.

use std::collections::BTreeMap;

use crate::vocab::{ARCH_LABEL, Arch};

/// The chart's default `runners.config`.
pub const DEFAULT_CONFIG: &str =
    "[[runners]]\n  [runners.kubernetes]\n    namespace = \"{{.Release.Namespace}}\"\n    image = \"alpine\"\n";

/// Whether every `[[runners]]` entry of a runner config pins job pods to an architecture.
pub fn job_pods_pinned(config: &str) -> bool {
    let selectors = job_selectors(config);
    !selectors.is_empty() && selectors.iter().all(|s| s.contains_key(ARCH_LABEL))
}

/// The job pod node selector of every `[[runners]]` entry (empty when the config is not
/// plain TOML or has no entry).
pub fn job_selectors(config: &str) -> Vec<BTreeMap<String, String>> {
    let Ok(doc) = config.parse::<toml_edit::DocumentMut>() else { return Vec::new() };
    let Some(entries) = doc.get("runners").and_then(|r| r.as_array_of_tables()) else { return Vec::new() };
    entries
        .iter()
        .map(|e| {
            e.get("kubernetes")
                .and_then(|k| k.get("node_selector"))
                .and_then(|n| n.as_table_like())
                .map(|t| t.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.to_string(), v.to_string()))).collect())
                .unwrap_or_default()
        })
        .collect()
}

fn parse(config: &str) -> Result<toml_edit::DocumentMut, String> {
    config.parse().map_err(|e: toml_edit::TomlError| {
        format!(
            "values.runners.config is not plain TOML, so it cannot be edited safely (a Helm template construct?): {}",
            e.message()
        )
    })
}

/// The `[runners.kubernetes.<table>]` of every `[[runners]]` entry, created when missing.
fn for_each_kube_table(
    doc: &mut toml_edit::DocumentMut,
    table: &str,
    mut f: impl FnMut(&mut dyn toml_edit::TableLike),
) -> Result<(), String> {
    let runners = doc.entry("runners").or_insert_with(|| {
        let mut aot = toml_edit::ArrayOfTables::new();
        aot.push(toml_edit::Table::new());
        toml_edit::Item::ArrayOfTables(aot)
    });
    let aot = runners.as_array_of_tables_mut().ok_or("values.runners.config: `runners` must be [[runners]] entries")?;
    for entry in aot.iter_mut() {
        let kube = entry.entry("kubernetes").or_insert_with(toml_edit::table);
        let kube = kube.as_table_like_mut().ok_or("values.runners.config: runners.kubernetes is not a table")?;
        let t = kube.entry(table).or_insert(toml_edit::table());
        let t = t
            .as_table_like_mut()
            .ok_or_else(|| format!("values.runners.config: runners.kubernetes.{table} is not a table"))?;
        f(t);
    }
    Ok(())
}

/// Sets `key = value` in a table, keeping the key's decoration and a trailing comment, and
/// giving new keys the indentation of the keys already there.
fn set_key(t: &mut dyn toml_edit::TableLike, key: &str, value: &str) {
    let indent: Option<String> = t.iter().next().and_then(|(k, _)| {
        t.get_key_value(k).and_then(|(key, _)| key.leaf_decor().prefix().and_then(|p| p.as_str()).map(str::to_string))
    });
    match t.get_mut(key) {
        Some(item) if item.as_str() == Some(value) => {}
        Some(item) if item.is_value() => {
            let decor = item.as_value().map(|x| x.decor().clone());
            *item = toml_edit::value(value);
            if let (Some(d), Some(val)) = (decor, item.as_value_mut()) {
                *val.decor_mut() = d;
            }
        }
        _ => {
            t.insert(key, toml_edit::value(value));
            if let (Some(prefix), Some(mut k)) = (&indent, t.key_mut(key)) {
                k.leaf_decor_mut().set_prefix(prefix.as_str());
            }
        }
    }
}

/// Pins job pods with `[runners.kubernetes.node_selector]` in every `[[runners]]` entry:
/// `selector` is set, `defaults` only where the key is missing.
pub fn pin_job_node_selector(
    config: &str,
    selector: &BTreeMap<String, String>,
    defaults: &BTreeMap<String, String>,
) -> Result<String, String> {
    let mut doc = parse(config)?;
    for_each_kube_table(&mut doc, "node_selector", |ns| {
        for (k, v) in defaults {
            if !ns.contains_key(k) && !selector.contains_key(k) {
                set_key(ns, k, v);
            }
        }
        for (k, v) in selector {
            set_key(ns, k, v);
        }
    })?;
    Ok(doc.to_string())
}

/// Job pod tolerations (`[runners.kubernetes.node_tolerations]`, `"key=value" = "Effect"`).
pub fn set_job_tolerations(config: &str, tolerations: &BTreeMap<String, String>) -> Result<String, String> {
    let mut doc = parse(config)?;
    for_each_kube_table(&mut doc, "node_tolerations", |t| {
        for (k, v) in tolerations {
            set_key(t, k, v);
        }
    })?;
    Ok(doc.to_string())
}

/// Adds a job pod annotation (`[runners.kubernetes.pod_annotations]`) to every entry.
pub fn add_pod_annotation(config: &str, key: &str, value: &str) -> Result<String, String> {
    let mut doc = parse(config)?;
    for_each_kube_table(&mut doc, "pod_annotations", |t| set_key(t, key, value))?;
    Ok(doc.to_string())
}

/// Settings of a runner config that name an architecture other than `arch`: a helper image
/// built for it, an affinity or selector asking for it.
pub fn arch_specific_settings(config: &str, arch: Arch) -> Vec<String> {
    let Ok(doc) = config.parse::<toml_edit::DocumentMut>() else { return Vec::new() };
    let mut found = Vec::new();
    walk(doc.as_item(), "", arch, &mut found);
    found
}

fn walk(item: &toml_edit::Item, path: &str, arch: Arch, found: &mut Vec<String>) {
    if let Some(t) = item.as_table_like() {
        for (k, v) in t.iter() {
            let p = if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
            // The node selector's arch key is the one archshift sets.
            if p.ends_with("node_selector") {
                continue;
            }
            walk(v, &p, arch, found);
        }
    } else if let Some(aot) = item.as_array_of_tables() {
        for t in aot.iter() {
            for (k, v) in t.iter() {
                walk(v, &format!("{path}.{k}"), arch, found);
            }
        }
    } else if let Some(s) = item.as_str().filter(|s| names_other_arch(s, arch)) {
        found.push(format!("{path} = \"{s}\""));
    } else if let Some(a) =
        item.as_array().filter(|a| a.iter().filter_map(|v| v.as_str()).any(|s| names_other_arch(s, arch)))
    {
        found.push(format!("{path} = {a}"));
    }
}

fn names_other_arch(s: &str, arch: Arch) -> bool {
    let lower = s.to_ascii_lowercase();
    lower
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|word| Arch::from_alias(word).is_some_and(|a| a != arch))
}
