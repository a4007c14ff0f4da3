//! ONNX graphs: loading with limits, the op allow-list, shape and cost
//! models, the partitioner, and a transformer generator.
//!
//! Pure: no I/O beyond reading a model file the caller names.

// Partition errors carry the offending tensor by value for a precise message;
// they are returned once per command, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod allow;
pub mod external;
pub mod model;
pub mod onnx;
pub mod shape;

pub use model::{node_inputs, Dim, Graph, LoadError, ValueType, Weight};
pub mod builder;
pub mod cost;
pub mod partition;
pub mod plan;
pub mod split;
pub mod transform;
