//! The saved plan (`archshift plan --out FILE`): the input plan file, the endpoints' identity,
//! every change in order with its precondition, bindings, write method, reversal and
//! verification, sealed with an HMAC. `apply FILE` replays it exactly, or refuses.
//!
//! The seal's key is 32 random bytes kept in a Secret of the cluster the plan was made
//! against (see `live::kube::SealKeys`), so only someone who can read that Secret can make a
//! plan `apply` accepts: a plain digest over the file can be recomputed by anyone who edits it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::model::Plan;

pub const SAVED_FORMAT: &str = "archshift.io/saved-plan";
/// Version 1 was sealed with a plain sha256 anyone could recompute; it is refused.
pub const SAVED_VERSION: u32 = 2;

/// Where the seal's key is kept: a Secret (data key [`SEAL_DATA_KEY`]) in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SealRef {
    pub namespace: String,
    pub secret: String,
}

/// The data key of the seal Secret.
pub const SEAL_DATA_KEY: &str = "hmac-sha256-key";

impl SealRef {
    /// The seal of migration `name` (the plan's `metadata.name`) in the runners' namespace.
    pub fn for_migration(namespace: &str, name: &str) -> SealRef {
        SealRef { namespace: namespace.into(), secret: format!("archshift-{name}-seal") }
    }

    /// Both parts are Kubernetes names (RFC 1123), checked before they reach a URL.
    fn valid(&self) -> bool {
        crate::spec::is_dns_label(&self.namespace) && crate::spec::is_dns_subdomain(&self.secret)
    }
}

/// The seal's key. Its bytes never leave through `Debug` or `Display`.
#[derive(Clone)]
pub struct SealKey(Vec<u8>);

impl SealKey {
    /// At least 32 bytes (the size of the HMAC's hash); anything shorter is refused.
    pub fn new(bytes: Vec<u8>) -> Option<SealKey> {
        (bytes.len() >= 32).then_some(SealKey(bytes))
    }

    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<SealKey, SavedError> {
        let mut bytes = vec![0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).map_err(|_| SavedError::Random)?;
        Ok(SealKey(bytes))
    }

    /// The bytes, for the Secret that keeps them only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    fn hmac(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.0)
    }
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(***)")
    }
}

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
    /// Where the key of `seal` is kept.
    pub seal_key: SealRef,
    /// `hmac-sha256:` and the base64 of the HMAC over this document with `seal` empty, keyed by the key `seal_key` names.
    pub seal: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SavedError {
    #[error("{file}: not a saved archshift plan: {cause}")]
    Malformed { file: String, cause: String },
    #[error(
        "{file}: saved plan format {found} is not one this archshift reads ({SAVED_FORMAT} version {SAVED_VERSION}); make it again with `archshift plan --out`"
    )]
    Version { file: String, found: String },
    #[error(
        "{file}: the seal does not match the content (edited after it was saved, or sealed with another key): refusing to replay it"
    )]
    Seal { file: String },
    #[error("{file}: the saved plan names no {what}: refusing to replay it")]
    Incomplete { file: String, what: String },
    #[error("no random bytes from the operating system for a seal key")]
    Random,
}

fn unsealed_bytes(saved: &SavedPlan) -> Vec<u8> {
    let mut unsealed = saved.clone();
    unsealed.seal = String::new();
    serde_json::to_vec(&unsealed).unwrap_or_default()
}

impl SavedPlan {
    /// Seals `plan` made from the plan file `spec_file` (text `spec`) with `key`, kept at `at`.
    pub fn seal(spec_file: &str, spec: &str, plan: Plan, at: SealRef, key: &SealKey) -> SavedPlan {
        let mut saved = SavedPlan {
            format: SAVED_FORMAT.into(),
            version: SAVED_VERSION,
            spec_file: spec_file.into(),
            spec: spec.into(),
            plan,
            seal_key: at,
            seal: String::new(),
        };
        let tag = hmac::sign(&key.hmac(), &unsealed_bytes(&saved));
        saved.seal = format!("hmac-sha256:{}", BASE64.encode(tag.as_ref()));
        saved
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// Reads a saved plan, refusing anything malformed, of another format, or missing the
    /// endpoints it must be checked against. Its seal is checked by [`SavedPlan::verify`],
    /// once the key has been read from the cluster.
    pub fn read(file: &str, text: &str) -> Result<SavedPlan, SavedError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| SavedError::Malformed { file: file.into(), cause: e.to_string() })?;
        let (format, version) = (value["format"].as_str().unwrap_or(""), value["version"].as_u64().unwrap_or(0));
        if format != SAVED_FORMAT || version != u64::from(SAVED_VERSION) {
            return Err(SavedError::Version { file: file.into(), found: format!("{format:?} version {version}") });
        }
        let saved: SavedPlan = serde_json::from_value(value)
            .map_err(|e| SavedError::Malformed { file: file.into(), cause: e.to_string() })?;
        if !saved.seal_key.valid() {
            return Err(SavedError::Malformed {
                file: file.into(),
                cause: "sealKey names no Kubernetes Secret".into(),
            });
        }
        // A plan without endpoints would skip the check that it is replayed where it was made.
        let endpoints = &saved.plan.endpoints;
        if endpoints.cluster.is_none() {
            return Err(SavedError::Incomplete { file: file.into(), what: "cluster (endpoints.cluster)".into() });
        }
        if endpoints.gitlab.is_none() {
            return Err(SavedError::Incomplete { file: file.into(), what: "GitLab (endpoints.gitlab)".into() });
        }
        Ok(saved)
    }

    /// Whether the seal was made with `key` over exactly this content (constant-time).
    pub fn verify(&self, file: &str, key: &SealKey) -> Result<(), SavedError> {
        let tag = self.seal.strip_prefix("hmac-sha256:").and_then(|t| BASE64.decode(t).ok());
        match tag {
            Some(tag) if hmac::verify(&key.hmac(), &unsealed_bytes(self), &tag).is_ok() => Ok(()),
            _ => Err(SavedError::Seal { file: file.into() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::{plan, start};

    fn key(byte: u8) -> SealKey {
        SealKey::new(vec![byte; 32]).unwrap()
    }

    fn saved() -> SavedPlan {
        let at = SealRef::for_migration("gitlab-runner", "sandbox");
        let mut p = crate::phases::plan(&start(), &plan(), "x");
        p.endpoints.cluster =
            Some(crate::model::ClusterIdentity { server: "https://k".into(), kube_system_uid: "u".into() });
        p.endpoints.gitlab = Some(crate::model::GitLabIdentity { url: "https://g".into(), ids: Default::default() });
        SavedPlan::seal("plans/sandbox.yaml", "apiVersion: archshift/v1\n", p, at, &key(7))
    }

    #[test]
    fn a_saved_plan_reads_back_equal_and_verifies_with_its_key_only() {
        let s = saved();
        let read = SavedPlan::read("f", &s.to_json()).unwrap();
        assert_eq!(read, s);
        assert!(s.seal.starts_with("hmac-sha256:") && s.seal.len() == 12 + 44, "{}", s.seal);
        assert_eq!(read.verify("f", &key(7)), Ok(()));
        assert_eq!(read.verify("f", &key(8)), Err(SavedError::Seal { file: "f".into() }));
        assert_eq!(s.seal_key.secret, "archshift-sandbox-seal");
    }

    #[test]
    fn any_edit_breaks_the_seal_and_resealing_without_the_key_cannot_mend_it() {
        let text = saved().to_json().replacen("\"arm64\"", "\"amd64\"", 1);
        let edited = SavedPlan::read("f", &text).unwrap();
        assert_eq!(edited.verify("f", &key(7)), Err(SavedError::Seal { file: "f".into() }));
        // What a forger without the key can do: seal with a key of their own.
        let forged = SavedPlan::seal("p", &edited.spec, edited.plan.clone(), edited.seal_key.clone(), &key(1));
        assert!(forged.verify("f", &key(7)).is_err());
        let text = saved().to_json().replacen("archshift.io/saved-plan", "other", 1);
        assert!(matches!(SavedPlan::read("f", &text), Err(SavedError::Version { .. })));
        assert!(matches!(SavedPlan::read("f", "{\"format\": "), Err(SavedError::Malformed { .. })));
        let garbage = saved().to_json().replacen("hmac-sha256:", "hmac-sha256:zz", 1);
        assert!(SavedPlan::read("f", &garbage).unwrap().verify("f", &key(7)).is_err());
    }

    #[test]
    fn a_saved_plan_without_endpoints_or_with_a_bad_key_place_is_refused_as_read() {
        let mut s = saved();
        s.plan.endpoints.cluster = None;
        assert!(matches!(SavedPlan::read("f", &s.to_json()), Err(SavedError::Incomplete { .. })));
        let mut s = saved();
        s.seal_key.namespace = "../kube-system".into();
        assert!(matches!(SavedPlan::read("f", &s.to_json()), Err(SavedError::Malformed { .. })));
        assert_eq!(format!("{:?}", key(7)), "SealKey(***)");
        assert!(SealKey::new(vec![1; 16]).is_none(), "a short key is refused");
        assert_ne!(SealKey::generate().unwrap().expose(), SealKey::generate().unwrap().expose());
    }
}
