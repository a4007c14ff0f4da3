//! Tensor values and their codecs.
//!
//! Everything here is pure: bytes in, values out. Every decoder treats its
//! input as hostile: sizes are checked with checked arithmetic against the
//! bytes actually present and against an explicit limit before anything is
//! allocated.

mod compare;
mod dtype;
mod judge;
pub mod npy;
pub mod st;
mod value;

#[cfg(test)]
pub use compare::{agree, Agreement};
pub use compare::{allclose, Mismatch, Tolerance};
pub use dtype::DType;
pub use judge::{
    allowed_misses, assess, calibrate, judge, CalibrateError, Check, CheckKind, IndicesOf, JudgeError, OutputTolerance,
    Pairings, Worst, ATOL_MAX, CALIBRATION_QUANTILE, FALSE_ALARM, MISS_RATE_FLOOR, MISS_RATE_MAX, RTOL_MAX, SAFETY_MAX,
    SAFETY_MIN,
};
pub use value::{Tensor, TensorError};

/// BLAKE3 of `bytes`, as 64 lowercase hex characters: the content address of
/// every file and tensor in SplitUp.
pub fn hash_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}
