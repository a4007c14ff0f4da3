//! The ledger's rules as a deterministic state machine (quinn-proto style):
//! instructions come in through [`Ledger::submit`] / [`Ledger::apply_verified`]
//! with the time as an argument, deadlines through [`Ledger::tick`], and what
//! happened goes out through [`Ledger::poll_events`].
//!
//! No clock, no OS randomness, no I/O, no floats in consensus arithmetic
//! (fixed-point ppm and percentages), no threads: the same rules can run in
//! the embedded ledger and in a Solana program.

pub mod api;
pub mod crypto;
#[cfg(feature = "openapi")]
pub mod schema;
pub mod state;
pub mod types;

pub use crypto::{Beacon, Keypair, Pubkey, VrfBeacon};
pub use state::{security_holds, ExecStatus, Genesis, Ledger, NodeStatus, TaskStatus};
pub use types::*;
