//! The runner `config.toml` template (`values.runners.config`), edited in place with
//! toml_edit so the operator's comments and layout survive.

use std::collections::BTreeMap;

use crate::vocab::ARCH_LABEL;

/// Whether every `[[runners]]` entry of a runner config pins job pods to an architecture.
pub fn job_pods_pinned(config: &str) -> bool {
    let Ok(doc) = config.parse::<toml_edit::DocumentMut>() else { return false };
    let Some(entries) = doc.get("runners").and_then(|r| r.as_array_of_tables()) else { return false };
    !entries.is_empty()
        && entries
            .iter()
            .all(|e| e.get("kubernetes").and_then(|k| k.get("node_selector")).and_then(|n| n.get(ARCH_LABEL)).is_some())
}

/// The chart's default `runners.config`.
pub const DEFAULT_CONFIG: &str =
    "[[runners]]\n  [runners.kubernetes]\n    namespace = \"{{.Release.Namespace}}\"\n    image = \"alpine\"\n";

/// Pins job pods with `[runners.kubernetes.node_selector]` in every `[[runners]]` entry,
/// editing the TOML in place so comments and layout survive.
pub fn pin_job_node_selector(config: &str, selector: &BTreeMap<String, String>) -> Result<String, String> {
    let mut doc: toml_edit::DocumentMut = config.parse().map_err(|e: toml_edit::TomlError| {
        format!("values.runners.config is not plain TOML, so its job node selector cannot be edited safely (a Helm template construct?): {}", e.message())
    })?;
    let runners = doc.entry("runners").or_insert_with(|| {
        let mut aot = toml_edit::ArrayOfTables::new();
        aot.push(toml_edit::Table::new());
        toml_edit::Item::ArrayOfTables(aot)
    });
    let aot = runners.as_array_of_tables_mut().ok_or("values.runners.config: `runners` must be [[runners]] entries")?;
    for entry in aot.iter_mut() {
        let kube = entry.entry("kubernetes").or_insert_with(toml_edit::table);
        let kube = kube.as_table_like_mut().ok_or("values.runners.config: runners.kubernetes is not a table")?;
        let ns = kube.entry("node_selector").or_insert(toml_edit::table());
        let ns =
            ns.as_table_like_mut().ok_or("values.runners.config: runners.kubernetes.node_selector is not a table")?;
        // New keys take the indentation of the keys already there.
        let indent: Option<String> = ns.iter().next().and_then(|(k, _)| {
            ns.get_key_value(k)
                .and_then(|(key, _)| key.leaf_decor().prefix().and_then(|p| p.as_str()).map(str::to_string))
        });
        for (k, v) in selector {
            match ns.get_mut(k) {
                Some(item) if item.as_str() == Some(v.as_str()) => {}
                Some(item) if item.is_value() => {
                    // Keep the key's decoration and any trailing comment; replace the value only.
                    let decor = item.as_value().map(|x| x.decor().clone());
                    *item = toml_edit::value(v.as_str());
                    if let (Some(d), Some(val)) = (decor, item.as_value_mut()) {
                        *val.decor_mut() = d;
                    }
                }
                _ => {
                    ns.insert(k, toml_edit::value(v.as_str()));
                    if let (Some(prefix), Some(mut key)) = (&indent, ns.key_mut(k)) {
                        key.leaf_decor_mut().set_prefix(prefix.as_str());
                    }
                }
            }
        }
    }
    Ok(doc.to_string())
}
