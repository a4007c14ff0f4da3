//! Execution: the [`Runtime`] trait, the ONNX Runtime backend, and the plan
//! executor that runs a task DAG with ready tasks in parallel.
//!
//! This is the only crate that touches an ML engine.

pub mod calibrate;
pub mod eval;
mod ort_backend;
pub mod runner;
pub mod worker;

pub use eval::OrtEval;
pub use ort_backend::{find_onnxruntime, OptLevel, OrtRuntime, ORT_PIP_SPEC};
use splitup_tensor::Tensor;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{0}")]
    Runtime(String),
    #[error("ONNX Runtime was not found ({searched}). Install it with:\n    pip install {ORT_PIP_SPEC}\nor set ORT_DYLIB_PATH to the path of libonnxruntime.so")]
    LibraryMissing { searched: String },
    #[error("cannot load ONNX Runtime from {path}: {msg}\nInstall the matching version with:\n    pip install {ORT_PIP_SPEC}")]
    LibraryLoad { path: String, msg: String },
    #[error("input {name:?}: {msg}")]
    Input { name: String, msg: String },
    #[error("output {name:?}: {msg}")]
    Output { name: String, msg: String },
}

/// A backend that turns an ONNX model into a runnable session.
/// Implementations: ONNX Runtime (CPU here; GPU execution providers later).
pub trait Runtime: Send + Sync {
    fn name(&self) -> String;
    /// Prepares a model (a machine-specific artefact: the portable one is the ONNX bytes).
    fn load(&self, onnx: &[u8]) -> Result<Box<dyn Session>, ExecError>;
}

pub trait Session: Send {
    /// Runs the model; returns every graph output, in graph order.
    fn run(&mut self, inputs: &[(&str, &Tensor)]) -> Result<Vec<(String, Tensor)>, ExecError>;
}
