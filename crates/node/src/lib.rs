//! The network side of SplitUp outside the ledger: deploying a plan,
//! submitting inputs and fetching outputs, and the node daemon that executes
//! the tasks the ledger assigns.

pub mod client;
pub mod daemon;
pub mod metrics;
pub mod ops;

pub use client::Client;

pub use splitup_protocol::crypto::{from_hex32 as unhex32, to_hex as hex};
