//! The operator's terminal UI (ratatui): state -> update -> render. [`app`] is the state
//! machine, [`view`] draws it (no IO), [`run`] owns the terminal and the engine's worker.

pub mod app;
mod run;
pub mod view;

pub use run::{TuiOptions, demo, run};
#[cfg(test)]
mod tests;
