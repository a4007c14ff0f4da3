//! Vertical splitting (seed 002): an op whose weight alone exceeds the budget
//! (an LM head, a huge projection) becomes parallel column slices joined by a
//! Concat. MatMul and Gemm split along output columns, Conv along output
//! channels, an embedding Gather along the embedding width.

use crate::model::{Graph, Weight};
use crate::onnx::{AttributeProto, NodeProto};
use std::sync::Arc;

/// How a node can be split: which input holds the weight and along which
/// axis of it the output columns run.
struct Plan {
    weight_input: usize,
    /// Axis of the weight that is sliced.
    weight_axis: usize,
    /// Axis of the output along which the slices are concatenated (negative
    /// counts from the end).
    concat_axis: i64,
}

fn splittable(n: &NodeProto, g: &Graph) -> Option<Plan> {
    if n.op_type == "Gather" {
        // An embedding table [rows, width] gathered along rows: slice the width.
        let w = g.weights.get(n.input.first()?)?;
        let axis = n.attribute.iter().find(|a| a.name == "axis").map(|a| a.i).unwrap_or(0);
        return (w.shape.len() == 2 && axis == 0 && !g.weights.contains_key(n.input.get(1)?)).then_some(Plan {
            weight_input: 0,
            weight_axis: 1,
            concat_axis: -1,
        });
    }
    let w = g.weights.get(n.input.get(1)?)?;
    match n.op_type.as_str() {
        "MatMul" if w.shape.len() == 2 => Some(Plan {
            weight_input: 1,
            weight_axis: 1,
            concat_axis: -1,
        }),
        "Gemm" if w.shape.len() == 2 => {
            let trans_b = n.attribute.iter().any(|a| a.name == "transB" && a.i != 0);
            // A bias must be a weight that is a scalar or runs along the columns.
            if let Some(c) = n.input.get(2).filter(|c| !c.is_empty()) {
                let cw = g.weights.get(c)?;
                let cols = w.shape[if trans_b { 0 } else { 1 }];
                let ok = cw.shape.iter().product::<usize>() == 1
                    || cw.shape.last() == Some(&cols) && cw.shape.iter().rev().skip(1).all(|&d| d == 1);
                if !ok {
                    return None;
                }
            }
            Some(Plan {
                weight_input: 1,
                weight_axis: if trans_b { 0 } else { 1 },
                concat_axis: 1,
            })
        }
        "Conv" => {
            let group = n.attribute.iter().find(|a| a.name == "group").map(|a| a.i).unwrap_or(1);
            if group != 1
                || n.input
                    .get(2)
                    .is_some_and(|b| !b.is_empty() && !g.weights.contains_key(b))
            {
                return None;
            }
            Some(Plan {
                weight_input: 1,
                weight_axis: 0,
                concat_axis: 1,
            })
        }
        _ => None,
    }
}

/// Slices `w` along `axis` into `[start, end)`.
fn slice_weight(w: &Weight, axis: usize, start: usize, end: usize) -> Weight {
    let mut shape = w.shape.clone();
    shape[axis] = end - start;
    let data = w.data.as_ref().map(|d| {
        let outer: usize = w.shape[..axis].iter().product();
        let inner: usize = w.shape[axis + 1..].iter().product::<usize>() * w.dtype.size();
        let row = w.shape[axis] * inner;
        let mut out = Vec::with_capacity(outer * (end - start) * inner);
        for o in 0..outer {
            out.extend_from_slice(&d[o * row + start * inner..o * row + end * inner]);
        }
        Arc::new(out)
    });
    Weight {
        dtype: w.dtype,
        shape,
        data,
    }
}

/// Splits node `idx` into `k` column slices (fewer if it has fewer columns)
/// plus a Concat. Returns the number of slices, or `None` if the node cannot
/// be split.
pub fn split_node(g: &mut Graph, idx: usize, k: usize) -> Option<usize> {
    let n = g.nodes[idx].clone();
    let plan = splittable(&n, g)?;
    let w = g.weights[&n.input[plan.weight_input]].clone();
    let cols = w.shape[plan.weight_axis];
    let k = k.min(cols);
    if k < 2 {
        return None;
    }
    let out = n.output[0].clone();
    let mut new_nodes = Vec::with_capacity(k + 1);
    let mut parts = Vec::with_capacity(k);
    for p in 0..k {
        let (start, end) = (p * cols / k, (p + 1) * cols / k);
        let mut node = n.clone();
        node.name = format!("{}/split{p}", if n.name.is_empty() { &out } else { &n.name });
        let wname = format!("{}/split{p}", n.input[plan.weight_input]);
        g.weights
            .insert(wname.clone(), slice_weight(&w, plan.weight_axis, start, end));
        node.input[plan.weight_input] = wname;
        // A bias that runs along the sliced columns is sliced with them.
        if let Some(b) = n.input.get(2).filter(|b| !b.is_empty() && n.op_type != "Gather") {
            let bw = g.weights[b].clone();
            if bw.shape.iter().product::<usize>() == cols {
                let bname = format!("{b}/split{p}");
                let axis = bw.shape.len() - 1;
                g.weights.insert(bname.clone(), slice_weight(&bw, axis, start, end));
                node.input[2] = bname;
            }
        }
        let part = format!("{out}/split{p}");
        node.output = vec![part.clone()];
        parts.push(part);
        new_nodes.push(node);
    }
    new_nodes.push(NodeProto {
        input: parts,
        output: vec![out.clone()],
        name: format!("{out}/concat"),
        op_type: "Concat".into(),
        attribute: vec![AttributeProto {
            name: "axis".into(),
            r#type: crate::onnx::attr_type::INT,
            i: plan.concat_axis,
            ..Default::default()
        }],
        ..Default::default()
    });
    // Drop weights no longer used by any node.
    let old: Vec<String> = n.input.iter().filter(|i| g.weights.contains_key(*i)).cloned().collect();
    g.nodes.splice(idx..=idx, new_nodes);
    for name in old {
        if !g.nodes.iter().any(|x| x.input.contains(&name)) && !g.outputs.iter().any(|(o, _)| o == &name) {
            g.weights.remove(&name);
        }
    }
    Some(k)
}
