//! The embedded ledger: the protocol state machine behind an HTTP/JSON API,
//! durable in a SQLite instruction log, with a clock (the shell reads the
//! clock; the state machine is given the time), a VRF beacon key, an
//! in-process committee of three oracle keys, and a content-addressed blob
//! store served over HTTP.

pub mod admit;
pub mod blobs;
pub mod events;
pub mod head;
pub mod http;
pub mod keys;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod openapi;
pub mod server;
