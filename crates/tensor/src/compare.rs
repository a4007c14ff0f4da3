#[cfg(test)]
use crate::DType;
use crate::Tensor;

/// Elementwise tolerance: |a - b| <= atol + rtol * |b| (numpy's `allclose`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub rtol: f64,
    pub atol: f64,
}

impl Tolerance {
    /// The tolerance the partitioner promises between split and unsplit runs.
    pub const PARTITION: Tolerance = Tolerance { rtol: 1e-4, atol: 1e-5 };
    pub const EXACT: Tolerance = Tolerance { rtol: 0.0, atol: 0.0 };
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Mismatch {
    #[error("dtype differs: {0} vs {1}")]
    DType(crate::DType, crate::DType),
    #[error("shape differs: {0:?} vs {1:?}")]
    Shape(Vec<usize>, Vec<usize>),
    #[error("{count} of {total} elements differ; worst at index {index}: {actual} vs {expected} (|diff| {diff:e})")]
    Values {
        count: usize,
        total: usize,
        index: usize,
        actual: f64,
        expected: f64,
        diff: f64,
    },
    /// Only [`agree`] (test-only) reports it.
    #[cfg(test)]
    #[error("drift beyond {limit:?}: relative L2 {rel_l2:e}, max |diff| {max_abs:e}")]
    Drift {
        rel_l2: f64,
        max_abs: f64,
        limit: Agreement,
    },
}

/// How far a validator's recomputation of a task may drift from the result
/// it checks and still agree: GPUs, drivers and kernels differ in the last
/// bits of floating-point results, so results are compared numerically, not
/// by hash (DESIGN §4). Both limits must hold:
/// - relative L2: ‖a − b‖₂ ≤ `rel_l2` · ‖b‖₂ (the bulk of the tensor);
/// - max-abs: max |a − b| ≤ `max_abs` · max(1, max |b|) (no single element
///   far off, scaled by the tensor's magnitude).
///
/// Integer and boolean outputs must match exactly.
///
/// These limits are fixed per dtype, not calibrated: the max-abs limit grows
/// with the tensor's largest value (so a few nudged logits pass) while the
/// relative-L2 limit can be tighter than honest bf16 runs. This was the
/// committee's rule before deploy-time calibration; every task is now
/// judged by [`crate::judge`], and this rule is kept only for the tests that
/// show what it let through.
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Agreement {
    pub rel_l2: f64,
    pub max_abs: f64,
}

#[cfg(test)]
impl Agreement {
    /// The limits for outputs of `dtype`; `None`: bit-exact.
    pub fn for_dtype(dtype: DType) -> Option<Agreement> {
        match dtype {
            DType::F64 => Some(Agreement {
                rel_l2: 1e-9,
                max_abs: 1e-7,
            }),
            // Loose enough for TF32 matmuls on one side and full FP32 on the other.
            DType::F32 => Some(Agreement {
                rel_l2: 1e-3,
                max_abs: 1e-2,
            }),
            DType::F16 | DType::Bf16 => Some(Agreement {
                rel_l2: 1e-2,
                max_abs: 5e-2,
            }),
            _ => None,
        }
    }
}

/// Whether a recomputed output (`actual`) agrees with the checked one
/// (`expected`) within [`Agreement::for_dtype`]. NaN must meet NaN and
/// infinities must match exactly.
#[cfg(test)]
pub fn agree(actual: &Tensor, expected: &Tensor) -> Result<(), Mismatch> {
    if actual.dtype != expected.dtype {
        return Err(Mismatch::DType(actual.dtype, expected.dtype));
    }
    if actual.shape != expected.shape {
        return Err(Mismatch::Shape(actual.shape.clone(), expected.shape.clone()));
    }
    let Some(limit) = Agreement::for_dtype(actual.dtype) else {
        return allclose(actual, expected, Tolerance::EXACT);
    };
    if actual.bytes() == expected.bytes() {
        return Ok(());
    }
    let (a, e) = (actual.to_f64_vec(), expected.to_f64_vec());
    let (mut diff2, mut norm2, mut max_diff, mut max_mag) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(&e) {
        if x.is_nan() || y.is_nan() || x.is_infinite() || y.is_infinite() {
            if !(x.is_nan() && y.is_nan()) && x != y {
                return allclose(actual, expected, Tolerance::EXACT);
            }
            continue;
        }
        let d = (x - y).abs();
        diff2 += d * d;
        norm2 += y * y;
        max_diff = max_diff.max(d);
        max_mag = max_mag.max(y.abs());
    }
    let rel_l2 = if norm2 > 0.0 {
        (diff2 / norm2).sqrt()
    } else if diff2 > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    if rel_l2 <= limit.rel_l2 && max_diff <= limit.max_abs * max_mag.max(1.0) {
        Ok(())
    } else {
        Err(Mismatch::Drift {
            rel_l2,
            max_abs: max_diff,
            limit,
        })
    }
}

/// Compares `actual` against `expected`. NaN equals NaN (both sides agree
/// there is no number); infinities must match exactly.
pub fn allclose(actual: &Tensor, expected: &Tensor, tol: Tolerance) -> Result<(), Mismatch> {
    if actual.dtype != expected.dtype {
        return Err(Mismatch::DType(actual.dtype, expected.dtype));
    }
    if actual.shape != expected.shape {
        return Err(Mismatch::Shape(actual.shape.clone(), expected.shape.clone()));
    }
    if actual.bytes() == expected.bytes() {
        return Ok(());
    }
    let a = actual.to_f64_vec();
    let e = expected.to_f64_vec();
    let mut count = 0;
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&x, &y)) in a.iter().zip(&e).enumerate() {
        let ok = if x.is_nan() || y.is_nan() {
            x.is_nan() && y.is_nan()
        } else if x.is_infinite() || y.is_infinite() {
            x == y
        } else {
            (x - y).abs() <= tol.atol + tol.rtol * y.abs()
        };
        if !ok {
            count += 1;
            let diff = if (x - y).is_nan() { f64::INFINITY } else { (x - y).abs() };
            if worst.is_none_or(|(_, w)| diff > w) {
                worst = Some((i, diff));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((index, diff)) => Err(Mismatch::Values {
            count,
            total: a.len(),
            index,
            actual: a[index],
            expected: e[index],
            diff,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_tolerates_gpu_noise_but_not_a_cheat() {
        let v: Vec<f32> = (0..1000).map(|i| ((i as f32) * 0.37).sin() * 3.0).collect();
        let honest = Tensor::from_f32(vec![1000], &v).unwrap();
        // Last-bits noise, as between two GPUs.
        let noisy: Vec<f32> = v
            .iter()
            .enumerate()
            .map(|(i, x)| x * (1.0 + if i % 2 == 0 { 2e-6 } else { -3e-6 }))
            .collect();
        assert_eq!(agree(&Tensor::from_f32(vec![1000], &noisy).unwrap(), &honest), Ok(()));
        // The test cheat: +1 everywhere.
        let cheat: Vec<f32> = v.iter().map(|x| x + 1.0).collect();
        assert!(matches!(
            agree(&Tensor::from_f32(vec![1000], &cheat).unwrap(), &honest),
            Err(Mismatch::Drift { .. })
        ));
        // One element far off is caught by max-abs even when L2 is small.
        let mut one = v.clone();
        one[500] += 0.5;
        assert!(agree(&Tensor::from_f32(vec![1000], &one).unwrap(), &honest).is_err());
        // Integers must match exactly.
        let a = Tensor::from_i64(vec![2], &[1, 2]).unwrap();
        let b = Tensor::from_i64(vec![2], &[1, 3]).unwrap();
        assert!(agree(&a, &b).is_err());
        assert!(agree(&a, &a).is_ok());
    }

    #[test]
    fn tolerance_is_relative_plus_absolute() {
        let e = Tensor::from_f32(vec![3], &[1.0, 100.0, 0.0]).unwrap();
        let ok = Tensor::from_f32(vec![3], &[1.00005, 100.009, 5e-6]).unwrap();
        assert_eq!(allclose(&ok, &e, Tolerance::PARTITION), Ok(()));
        let bad = Tensor::from_f32(vec![3], &[1.0, 100.02, 0.0]).unwrap();
        match allclose(&bad, &e, Tolerance::PARTITION) {
            Err(Mismatch::Values { count, index, .. }) => {
                assert_eq!((count, index), (1, 1));
            }
            other => panic!("expected a value mismatch, got {other:?}"),
        }
        let nan = Tensor::from_f32(vec![1], &[f32::NAN]).unwrap();
        assert!(allclose(&nan, &nan, Tolerance::EXACT).is_ok());
        let one = Tensor::from_f32(vec![1], &[1.0]).unwrap();
        assert!(allclose(&nan, &one, Tolerance::PARTITION).is_err());
    }
}
