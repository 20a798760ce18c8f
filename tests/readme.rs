//! The README is the operator's reference: it must list every finding code the planners emit
//! and the saved-plan format version the binary writes.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

use archshift::model::{FindingCode, PLAN_FORMAT_VERSION};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

#[test]
fn every_finding_code_is_documented_with_its_meaning() {
    let text = readme();
    let missing: Vec<String> = FindingCode::ALL
        .iter()
        .filter(|c| !text.contains(&format!("| `{}` | {} |", c.as_str(), c.describe())))
        .map(|c| format!("| `{}` | {} |", c.as_str(), c.describe()))
        .collect();
    assert!(missing.is_empty(), "README's finding code table lacks these rows:\n{}", missing.join("\n"));
}

#[test]
fn the_plan_format_version_is_documented() {
    assert!(
        readme().contains(&format!("format version is `{PLAN_FORMAT_VERSION}`")),
        "README must say: format version is `{PLAN_FORMAT_VERSION}`"
    );
}
