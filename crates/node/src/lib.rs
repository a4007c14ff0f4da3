//! The network side of SplitUp outside the ledger: deploying a plan,
//! submitting inputs and fetching outputs, and the node daemon that executes
//! the tasks the ledger assigns.

pub mod client;
pub mod daemon;
pub mod ops;

pub use client::Client;

/// 32 bytes from 64 hex digits.
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    splitup_ledger::server::parse_pubkey(s).map(|p| p.0)
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
