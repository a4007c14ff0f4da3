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

/// Turns the inputs given a value (`--value NAME=V`) into weights: the
/// partitioned graph no longer takes them, and what depends only on them
/// folds (an `If` on a sample rate, say). Returns the names frozen.
pub fn freeze_inputs(
    g: &mut Graph,
    values: &std::collections::BTreeMap<String, splitup_tensor::Tensor>,
) -> Result<Vec<String>, String> {
    let mut frozen = Vec::new();
    for (name, t) in values {
        let Some(pos) = g.inputs.iter().position(|(n, _)| n == name) else {
            let names: Vec<&str> = g.inputs.iter().map(|(n, _)| n.as_str()).collect();
            return Err(format!(
                "--value {name}: the model has no input {name:?} (its inputs: {names:?})"
            ));
        };
        let (_, vt) = g.inputs.remove(pos);
        if vt.dtype != t.dtype {
            return Err(format!(
                "--value {name}: the model declares {} but the value is {}",
                vt.dtype, t.dtype
            ));
        }
        g.weights.insert(
            name.clone(),
            Weight {
                dtype: t.dtype,
                shape: t.shape.clone(),
                data: Some(Arc::new(t.bytes().to_vec())),
            },
        );
        frozen.push(name.clone());
    }
    Ok(frozen)
}

/// Replaces every `If` whose condition is a known constant by the nodes of
/// the branch it takes (its initializers and `Constant`s become weights, its
/// outputs are renamed to the `If`'s through `Identity`), so the branch can
/// be partitioned like the rest of the graph. Skips an `If` whose branch
/// would redefine a name the graph already has. Returns how many were folded.
pub fn fold_constant_ifs(g: &mut Graph, shapes: &crate::shape::Shapes) -> Result<usize, crate::model::LoadError> {
    use crate::onnx::{attr_type, AttributeProto, NodeProto};
    let mut folded = 0;
    let mut k = 0;
    while k < g.nodes.len() {
        let n = &g.nodes[k];
        let cond = (n.op_type == "If" && n.domain.is_empty())
            .then(|| n.input.first())
            .flatten()
            .and_then(|c| shapes.consts.get(c))
            .filter(|c| c.len() == 1)
            .map(|c| c.bytes().iter().any(|&b| b != 0));
        let Some(cond) = cond else {
            k += 1;
            continue;
        };
        let branch_name = if cond { "then_branch" } else { "else_branch" };
        let Some(branch) = n
            .attribute
            .iter()
            .find(|a: &&AttributeProto| a.name == branch_name && a.r#type == attr_type::GRAPH)
            .and_then(|a| a.g.as_deref())
            .cloned()
        else {
            k += 1;
            continue;
        };
        if branch.output.len() != n.output.len() {
            k += 1;
            continue;
        }
        // Names the branch defines must be new to the graph.
        let mut existing: std::collections::HashSet<&str> = g
            .weights
            .keys()
            .map(String::as_str)
            .chain(g.inputs.iter().map(|(n, _)| n.as_str()))
            .collect();
        for m in &g.nodes {
            existing.extend(m.output.iter().map(String::as_str));
        }
        let defines = branch
            .initializer
            .iter()
            .map(|t| t.name.as_str())
            .chain(branch.node.iter().flat_map(|m| m.output.iter().map(String::as_str)));
        if defines
            .clone()
            .any(|d| !d.is_empty() && existing.contains(d) && !n.output.iter().any(|o| o == d))
        {
            k += 1;
            continue;
        }
        let outputs = n.output.clone();
        let mut new_nodes: Vec<NodeProto> = Vec::new();
        let mut new_weights = Vec::new();
        for t in &branch.initializer {
            let w = crate::model::weight_from_proto(t)
                .map_err(|e| crate::model::LoadError::Invalid(format!("If branch initializer {:?}: {e}", t.name)))?;
            new_weights.push((t.name.clone(), w));
        }
        for m in branch.node {
            if m.op_type == "Constant" && m.domain.is_empty() && m.output.len() == 1 {
                if let Ok(w) = crate::model::constant_weight(&m) {
                    new_weights.push((m.output[0].clone(), w));
                    continue;
                }
            }
            new_nodes.push(m);
        }
        for (out, bo) in outputs.iter().zip(&branch.output) {
            if out.is_empty() || *out == bo.name {
                continue;
            }
            new_nodes.push(NodeProto {
                input: vec![bo.name.clone()],
                output: vec![out.clone()],
                name: format!("{}/fold", out),
                op_type: "Identity".into(),
                ..Default::default()
            });
        }
        g.nodes.remove(k);
        for (name, w) in new_weights {
            g.weights.insert(name, w);
        }
        g.nodes.extend(new_nodes);
        folded += 1;
    }
    if folded > 0 {
        g.sort_topologically()?;
        prune_dead(g);
    }
    Ok(folded)
}

/// Removes nodes none of whose outputs is used (by a node, a subgraph or
/// the graph's outputs), and weights nothing reads.
pub fn prune_dead(g: &mut Graph) {
    loop {
        let mut used: std::collections::HashSet<String> = g.outputs.iter().map(|(n, _)| n.clone()).collect();
        for n in &g.nodes {
            used.extend(crate::model::node_inputs(n));
        }
        let before = g.nodes.len();
        g.nodes
            .retain(|n| n.output.iter().any(|o| !o.is_empty() && used.contains(o)));
        g.weights.retain(|name, _| used.contains(name));
        if g.nodes.len() == before {
            break;
        }
    }
}
