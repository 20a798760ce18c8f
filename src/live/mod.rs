//! Adapters to the live systems. They fill the core's plain types (`model`) from a real
//! GitLab (and, next, a real Kubernetes API server) and are the only code that talks to them.
//!
//! Read-only by construction: a reader type has no method that writes, so an audit that only
//! holds readers cannot change anything, whatever its flags say.

pub mod gitlab;
pub mod kube;
pub mod observe;
pub mod secret;
