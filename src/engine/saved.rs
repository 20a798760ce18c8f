//! The saved plan (`archshift plan --out FILE`): the input plan file, the endpoints' identity,
//! every change in order with its precondition, bindings, write method, reversal and
//! verification, and a digest over all of it. `apply FILE` replays it exactly, or refuses.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::Plan;

pub const SAVED_FORMAT: &str = "archshift.io/saved-plan";
pub const SAVED_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SavedPlan {
    pub format: String,
    pub version: u32,
    /// Where the plan file was read from (informational).
    pub spec_file: String,
    /// The plan file's text, byte for byte: replay parses it again.
    pub spec: String,
    pub plan: Plan,
    /// `sha256:` over this document with `digest` empty.
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SavedError {
    #[error("{file}: not a saved archshift plan: {cause}")]
    Malformed { file: String, cause: String },
    #[error(
        "{file}: saved plan format {found} is not one this archshift reads ({SAVED_FORMAT} version {SAVED_VERSION})"
    )]
    Version { file: String, found: String },
    #[error("{file}: the digest does not match the content (edited after it was saved?): refusing to replay it")]
    Digest { file: String },
}

fn digest_of(saved: &SavedPlan) -> String {
    let mut unsealed = saved.clone();
    unsealed.digest = String::new();
    let bytes = serde_json::to_vec(&unsealed).unwrap_or_default();
    format!("sha256:{:x}", Sha256::digest(&bytes))
}

impl SavedPlan {
    /// Seals `plan` made from the plan file `spec_file` (text `spec`).
    pub fn seal(spec_file: &str, spec: &str, plan: Plan) -> SavedPlan {
        let mut saved = SavedPlan {
            format: SAVED_FORMAT.into(),
            version: SAVED_VERSION,
            spec_file: spec_file.into(),
            spec: spec.into(),
            plan,
            digest: String::new(),
        };
        saved.digest = digest_of(&saved);
        saved
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// Reads a saved plan, refusing anything malformed, of another format, or edited.
    pub fn read(file: &str, text: &str) -> Result<SavedPlan, SavedError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| SavedError::Malformed { file: file.into(), cause: e.to_string() })?;
        let (format, version) = (value["format"].as_str().unwrap_or(""), value["version"].as_u64().unwrap_or(0));
        if format != SAVED_FORMAT || version != u64::from(SAVED_VERSION) {
            return Err(SavedError::Version { file: file.into(), found: format!("{format:?} version {version}") });
        }
        let saved: SavedPlan = serde_json::from_value(value)
            .map_err(|e| SavedError::Malformed { file: file.into(), cause: e.to_string() })?;
        if digest_of(&saved) != saved.digest {
            return Err(SavedError::Digest { file: file.into() });
        }
        Ok(saved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::{plan, start};

    fn saved() -> SavedPlan {
        SavedPlan::seal("plans/sandbox.yaml", "apiVersion: archshift/v1\n", crate::phases::plan(&start(), &plan(), "x"))
    }

    #[test]
    fn a_saved_plan_reads_back_equal() {
        let s = saved();
        assert_eq!(SavedPlan::read("f", &s.to_json()).unwrap(), s);
        assert!(s.digest.starts_with("sha256:") && s.digest.len() == 71);
    }

    #[test]
    fn any_edit_breaks_the_digest() {
        let text = saved().to_json().replacen("\"arm64\"", "\"amd64\"", 1);
        assert_eq!(SavedPlan::read("f", &text), Err(SavedError::Digest { file: "f".into() }));
        let text = saved().to_json().replacen("archshift.io/saved-plan", "other", 1);
        assert!(matches!(SavedPlan::read("f", &text), Err(SavedError::Version { .. })));
        assert!(matches!(SavedPlan::read("f", "{\"format\": "), Err(SavedError::Malformed { .. })));
    }
}
