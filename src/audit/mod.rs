//! Reports of a plan: what is done, pending and risky, with diffs. Pure renderers over
//! `model::Plan`; the audit command that observes the live systems builds on them.

pub mod live;
pub mod render;
pub mod report;
