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
