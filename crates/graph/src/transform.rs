//! Graph rewrites used before partitioning.

use crate::builder::{encode_floats, rng_for};
use crate::model::{Graph, Weight};
use rand::Rng;
use std::sync::Arc;

/// Replaces every weight made by `ConstantOfShape(shape weight)` (the way the
/// ONNX `light/` models and some exporters carry their weights) with a
/// seeded random initializer of that shape, so that a model's real
/// computation is exercised. Returns how many weights were replaced.
///
/// Values: matrices and kernels uniform with variance 1/fan_in (activations
/// keep their scale through deep stacks); vectors (biases, normalisation
/// statistics) uniform in [0.5, 1.0], positive so that variances stay valid.
pub fn randomize_constant_weights(g: &mut Graph, seed: u64) -> usize {
    let mut replaced = 0;
    let mut keep = Vec::with_capacity(g.nodes.len());
    for n in std::mem::take(&mut g.nodes) {
        let shape = (n.op_type == "ConstantOfShape" && n.input.len() == 1)
            .then(|| g.weights.get(&n.input[0]))
            .flatten()
            .and_then(|w| w.tensor())
            .and_then(|t| t.to_i64_vec());
        let dtype = n
            .attribute
            .iter()
            .find(|a| a.name == "value")
            .and_then(|a| a.t.as_ref())
            .map(|t| splitup_tensor::DType::from_onnx_code(t.data_type))
            .unwrap_or(Some(splitup_tensor::DType::F32));
        match (shape, dtype) {
            (Some(shape), Some(dtype)) if dtype.is_float() && shape.iter().all(|&d| d >= 0) => {
                let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
                let count: usize = shape.iter().product();
                let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
                let name = n.output[0].clone();
                let mut rng = rng_for(seed, &name);
                let values: Box<dyn Iterator<Item = f32>> = if shape.len() <= 1 {
                    Box::new((0..count).map(move |_| 0.5 + 0.5 * rng.random::<f32>()))
                } else {
                    let a = (3.0 / fan_in as f32).sqrt();
                    Box::new((0..count).map(move |_| a * (2.0 * rng.random::<f32>() - 1.0)))
                };
                g.weights.insert(
                    name,
                    Weight {
                        dtype,
                        shape,
                        data: Some(Arc::new(encode_floats(dtype, values))),
                    },
                );
                replaced += 1;
            }
            _ => keep.push(n),
        }
    }
    g.nodes = keep;
    // Shape tensors that fed only the replaced nodes are no longer used.
    let used: std::collections::HashSet<&String> = g
        .nodes
        .iter()
        .flat_map(|n| n.input.iter())
        .chain(g.outputs.iter().map(|(o, _)| o))
        .collect();
    let unused: Vec<String> = g
        .weights
        .keys()
        .filter(|k| !used.contains(k) && k.ends_with("__SHAPE"))
        .cloned()
        .collect();
    for k in unused {
        g.weights.remove(&k);
    }
    replaced
}
