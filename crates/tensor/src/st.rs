//! safetensors files: the weights of every task.

use crate::{DType, Tensor};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum StError {
    #[error("invalid safetensors file: {0}")]
    Format(#[from] safetensors::SafeTensorError),
    #[error("tensor {name:?} has dtype {dtype:?}, which SplitUp does not carry")]
    DType { name: String, dtype: String },
    #[error("invalid tensor {name:?}: {source}")]
    Tensor { name: String, source: crate::TensorError },
}

/// Decodes every tensor of a safetensors file. The `safetensors` crate
/// validates the header (size-limited to 100 MB, offsets within the file,
/// no overlaps) before any tensor is touched.
pub fn decode(bytes: &[u8]) -> Result<BTreeMap<String, Tensor>, StError> {
    let st = safetensors::SafeTensors::deserialize(bytes)?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let dtype = DType::from_safetensors(view.dtype()).ok_or_else(|| StError::DType {
            name: name.clone(),
            dtype: format!("{:?}", view.dtype()),
        })?;
        let t = Tensor::new(dtype, view.shape().to_vec(), view.data().to_vec()).map_err(|source| StError::Tensor {
            name: name.clone(),
            source,
        })?;
        out.insert(name, t);
    }
    Ok(out)
}

/// Encodes tensors as a safetensors file, in name order (deterministic bytes,
/// hence a deterministic BLAKE3 address).
pub fn encode(tensors: &BTreeMap<String, Tensor>) -> Result<Vec<u8>, StError> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, t)| {
            let v = safetensors::tensor::TensorView::new(t.dtype.to_safetensors(), t.shape.clone(), t.bytes())?;
            Ok((n.clone(), v))
        })
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    Ok(safetensors::serialize(views, None)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_truncation() {
        let mut m = BTreeMap::new();
        m.insert(
            "w".to_string(),
            Tensor::from_f32(vec![2, 2], &[1., 2., 3., 4.]).unwrap(),
        );
        m.insert("ids".to_string(), Tensor::from_i64(vec![3], &[1, 2, 3]).unwrap());
        let bytes = encode(&m).unwrap();
        assert_eq!(decode(&bytes).unwrap(), m);
        assert_eq!(encode(&m).unwrap(), bytes, "encoding is deterministic");
        for cut in [0, 7, 8, 20, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "truncated at {cut} must fail");
        }
    }
}
