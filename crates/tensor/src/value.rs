use crate::DType;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TensorError {
    #[error("shape {shape:?} of {dtype} overflows the address space")]
    Overflow { shape: Vec<usize>, dtype: DType },
    #[error("shape {shape:?} of {dtype} needs {expected} bytes but {actual} were given")]
    Length {
        shape: Vec<usize>,
        dtype: DType,
        expected: usize,
        actual: usize,
    },
    #[error("{value} cannot be stored as {dtype}")]
    Value { value: f64, dtype: DType },
}

/// A dense, row-major tensor whose elements are stored little-endian.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    data: Vec<u8>,
}

/// Number of bytes a tensor of this shape and type occupies, or `None` when it
/// overflows `usize`.
pub fn byte_len(dtype: DType, shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
}

impl Tensor {
    pub fn new(dtype: DType, shape: Vec<usize>, data: Vec<u8>) -> Result<Tensor, TensorError> {
        let expected = byte_len(dtype, &shape).ok_or_else(|| TensorError::Overflow {
            shape: shape.clone(),
            dtype,
        })?;
        if expected != data.len() {
            return Err(TensorError::Length {
                shape,
                dtype,
                expected,
                actual: data.len(),
            });
        }
        Ok(Tensor { dtype, shape, data })
    }

    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Result<Tensor, TensorError> {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::new(DType::F32, shape, data)
    }

    pub fn from_i64(shape: Vec<usize>, values: &[i64]) -> Result<Tensor, TensorError> {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::new(DType::I64, shape, data)
    }

    /// A tensor of `dtype` from numbers given as f64 (command-line values):
    /// integers must be whole and in range, booleans 0 or 1.
    pub fn from_f64_as(dtype: DType, shape: Vec<usize>, values: &[f64]) -> Result<Tensor, TensorError> {
        let mut data = Vec::with_capacity(values.len() * dtype.size());
        for &v in values {
            let bad = || TensorError::Value { value: v, dtype };
            let int = |lo: f64, hi: f64| -> Result<i128, TensorError> {
                if v.fract() == 0.0 && v >= lo && v <= hi {
                    Ok(v as i128)
                } else {
                    Err(bad())
                }
            };
            match dtype {
                DType::F32 => data.extend((v as f32).to_le_bytes()),
                DType::F64 => data.extend(v.to_le_bytes()),
                DType::F16 => data.extend(half::f16::from_f64(v).to_le_bytes()),
                DType::Bf16 => data.extend(half::bf16::from_f64(v).to_le_bytes()),
                DType::I8 => data.extend((int(i8::MIN as f64, i8::MAX as f64)? as i8).to_le_bytes()),
                DType::I16 => data.extend((int(i16::MIN as f64, i16::MAX as f64)? as i16).to_le_bytes()),
                DType::I32 => data.extend((int(i32::MIN as f64, i32::MAX as f64)? as i32).to_le_bytes()),
                DType::I64 => {
                    data.extend((int(-9.007_199_254_740_992e15, 9.007_199_254_740_992e15)? as i64).to_le_bytes())
                }
                DType::U8 => data.push(int(0.0, u8::MAX as f64)? as u8),
                DType::U16 => data.extend((int(0.0, u16::MAX as f64)? as u16).to_le_bytes()),
                DType::U32 => data.extend((int(0.0, u32::MAX as f64)? as u32).to_le_bytes()),
                DType::U64 => data.extend((int(0.0, 9.007_199_254_740_992e15)? as u64).to_le_bytes()),
                DType::Bool => data.push(int(0.0, 1.0)? as u8),
            }
        }
        Tensor::new(dtype, shape, data)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every element widened to f64 (exact for all types but the 64-bit
    /// integers above 2^53, which only matters for comparisons of huge ids).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        let d = &self.data;
        let n = self.dtype.size();
        d.chunks_exact(n)
            .map(|c| match self.dtype {
                DType::F32 => f32::from_le_bytes(c.try_into().unwrap()) as f64,
                DType::F64 => f64::from_le_bytes(c.try_into().unwrap()),
                DType::F16 => half::f16::from_le_bytes(c.try_into().unwrap()).to_f64(),
                DType::Bf16 => half::bf16::from_le_bytes(c.try_into().unwrap()).to_f64(),
                DType::I8 => c[0] as i8 as f64,
                DType::I16 => i16::from_le_bytes(c.try_into().unwrap()) as f64,
                DType::I32 => i32::from_le_bytes(c.try_into().unwrap()) as f64,
                DType::I64 => i64::from_le_bytes(c.try_into().unwrap()) as f64,
                DType::U8 => c[0] as f64,
                DType::U16 => u16::from_le_bytes(c.try_into().unwrap()) as f64,
                DType::U32 => u32::from_le_bytes(c.try_into().unwrap()) as f64,
                DType::U64 => u64::from_le_bytes(c.try_into().unwrap()) as f64,
                DType::Bool => (c[0] != 0) as u8 as f64,
            })
            .collect()
    }

    /// The elements as i64, for integer tensors (shape arithmetic).
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        let d = &self.data;
        Some(match self.dtype {
            DType::I64 => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            DType::I32 => d
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            _ => return None,
        })
    }

    /// BLAKE3 commitment of the tensor: dtype, shape and bytes, so two
    /// tensors with equal bytes but different shapes never collide.
    pub fn commitment(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(self.dtype.name().as_bytes());
        h.update(&(self.shape.len() as u64).to_le_bytes());
        for d in &self.shape {
            h.update(&(*d as u64).to_le_bytes());
        }
        h.update(&self.data);
        h.finalize().to_hex().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_must_match_shape() {
        let err = Tensor::new(DType::F32, vec![2, 3], vec![0; 23]).unwrap_err();
        assert_eq!(
            err,
            TensorError::Length {
                shape: vec![2, 3],
                dtype: DType::F32,
                expected: 24,
                actual: 23
            }
        );
        assert!(matches!(
            Tensor::new(DType::F64, vec![usize::MAX, 2], vec![]),
            Err(TensorError::Overflow { .. })
        ));
    }

    #[test]
    fn commitment_binds_shape() {
        let a = Tensor::from_f32(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        let b = Tensor::from_f32(vec![4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_ne!(a.commitment(), b.commitment());
        assert_eq!(a.commitment(), a.clone().commitment());
    }
}
