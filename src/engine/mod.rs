//! The engine: applies a plan's changes to the live systems in dependency order, each checked
//! against what is there now, dry-run, written with its guard, journaled and verified; and
//! rolls back the same way. It talks to the systems through two small traits ([`ports`]).

pub mod check;
pub mod events;
pub mod gate;
pub mod journal;
pub mod live;
pub mod ports;
mod read;
pub mod run;
pub mod saved;
pub mod session;
pub mod state;
#[cfg(test)]
mod tests;
mod verify;
mod write;
