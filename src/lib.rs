//! archshift: move GitLab CI runners on Kubernetes from amd64-only to amd64 + arm64, safely.
//!
//! The pure core (`vocab`, `spec`, `model`, `phases`, `diff`, `redact`, `ciyaml`, and `par`
//! for scoped parallelism) does no IO (a test in `tests/architecture.rs` enforces it); adapters, the
//! engine and the views build on it.

pub mod audit;
pub mod bench;
pub mod ciyaml;
pub mod diff;
pub mod engine;
pub mod live;
pub mod model;
pub mod par;
pub mod phases;
pub mod redact;
pub mod sandbox;
pub mod spec;
pub mod tui;
pub mod vocab;
