//! The operator's terminal UI (ratatui): state -> update -> render. [`app`] is the state,
//! [`update`] how it changes, [`text`] what it says, [`view`] draws it (no IO), [`run`] owns the terminal and the engine's worker.

pub mod app;
mod run;
pub mod text;
pub mod update;
pub mod view;

pub use run::{TuiOptions, demo, run};
#[cfg(test)]
mod tests;
