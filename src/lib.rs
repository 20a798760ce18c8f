//! archshift: move GitLab CI runners on Kubernetes from amd64-only to amd64 + arm64, safely.
//!
//! The pure core (`spec`, `model`, `phases`, `diff`, `ciyaml`) does no IO; adapters, the
//! engine and the views build on it.
#![forbid(unsafe_code)]

pub mod ciyaml;
pub mod diff;
pub mod model;
pub mod phases;
pub mod sandbox;
pub mod spec;
