//! The cost model: FLOPs per node and computeUnits (FLOPs / 10^6, rounded up),
//! deterministic from the graph so every party prices a task the same way.

use crate::onnx::{GraphProto, NodeProto};
use crate::shape::Shapes;

/// Elements of every tensor a subgraph carries (initializers and attribute
/// tensors, recursively).
fn carried_elems(g: &GraphProto) -> u64 {
    let dims = |d: &[i64]| d.iter().fold(1u64, |a, &x| a.saturating_mul(x.max(0) as u64));
    let mut total = g.initializer.iter().fold(0u64, |a, t| a.saturating_add(dims(&t.dims)));
    for n in &g.node {
        for a in &n.attribute {
            if let Some(t) = &a.t {
                total = total.saturating_add(dims(&t.dims));
            }
            for sub in a.g.iter().map(|g| g.as_ref()).chain(&a.graphs) {
                total = total.saturating_add(carried_elems(sub));
            }
        }
    }
    total
}

/// An estimate for control flow, whose bodies have no shapes of their own
/// here: per iteration, two FLOPs per element of every tensor the body
/// carries or captures (a multiply-add per weight) plus the outputs, times
/// the trip count (a `Loop`'s maximum, a `Scan`'s sequence length); an `If`
/// costs its most expensive branch.
fn control_flow_flops(n: &NodeProto, s: &Shapes, out_elems: u64) -> u64 {
    let captured: u64 = crate::model::captures(n)
        .iter()
        .filter_map(|c| s.info.get(c))
        .fold(0u64, |a, i| a.saturating_add(i.elems()));
    let bodies = n
        .attribute
        .iter()
        .flat_map(|a| a.g.iter().map(|g| g.as_ref()).chain(&a.graphs));
    let body = bodies.map(carried_elems).max().unwrap_or(0);
    let per_iter = body
        .saturating_add(captured)
        .saturating_mul(2)
        .saturating_add(out_elems);
    let trips = match n.op_type.as_str() {
        "Loop" => n
            .input
            .first()
            .and_then(|m| s.values.get(m))
            .and_then(|v| v.first())
            .map(|&v| v.max(1) as u64)
            .unwrap_or(1),
        "Scan" => {
            let k = n
                .attribute
                .iter()
                .find(|a| a.name == "num_scan_inputs")
                .map(|a| a.i.max(0) as usize)
                .unwrap_or(0);
            let first = n.input.len().saturating_sub(k);
            n.input
                .get(first)
                .and_then(|x| s.info.get(x))
                .and_then(|i| i.shape.first().copied())
                .unwrap_or(1)
                .max(1) as u64
        }
        _ => 1,
    };
    per_iter.saturating_mul(trips)
}

pub fn node_flops(n: &NodeProto, s: &Shapes) -> u64 {
    let info = |i: usize| n.input.get(i).filter(|x| !x.is_empty()).and_then(|x| s.info.get(x));
    // RNNs cost their weights per step.
    if matches!(n.op_type.as_str(), "RNN" | "GRU" | "LSTM") {
        // Per step and batch row: W (input) and R (recurrent) multiply-adds.
        let x = info(0).map(|x| x.shape.clone()).unwrap_or_default();
        let steps_rows = x.iter().take(2).fold(1u64, |a, &d| a.saturating_mul(d as u64));
        let w = info(1).map(|w| w.elems()).unwrap_or(0);
        let r = info(2).map(|r| r.elems()).unwrap_or(0);
        return steps_rows.saturating_mul(w.saturating_add(r)).saturating_mul(2);
    }
    let out_elems = n
        .output
        .first()
        .and_then(|o| s.info.get(o))
        .map(|i| i.elems())
        .unwrap_or(0);
    match n.op_type.as_str() {
        "MatMul" | "MatMulInteger" | "QLinearMatMul" => {
            let k = info(0).and_then(|a| a.shape.last().copied()).unwrap_or(1) as u64;
            out_elems.saturating_mul(k).saturating_mul(2)
        }
        "If" | "Loop" | "Scan" if n.domain.is_empty() => control_flow_flops(n, s, out_elems),
        "Gemm" => {
            let a = info(0).map(|a| a.shape.clone()).unwrap_or_default();
            let trans_a = n.attribute.iter().any(|x| x.name == "transA" && x.i != 0);
            let k = if trans_a { a.first() } else { a.get(1) }.copied().unwrap_or(1) as u64;
            out_elems.saturating_mul(k).saturating_mul(2).saturating_add(out_elems)
        }
        "Conv" | "ConvInteger" | "ConvTranspose" | "QLinearConv" => {
            // QLinearConv's weight is its fourth input.
            let w = info(if n.op_type == "QLinearConv" { 3 } else { 1 })
                .map(|w| w.shape.clone())
                .unwrap_or_default();
            let per_out: u64 = w.iter().skip(1).fold(1u64, |a, &d| a.saturating_mul(d as u64));
            out_elems.saturating_mul(per_out.max(1)).saturating_mul(2)
        }
        "MaxPool" | "AveragePool" | "LpPool" => {
            let k: u64 = n
                .attribute
                .iter()
                .find(|a| a.name == "kernel_shape")
                .map(|a| a.ints.iter().fold(1u64, |p, &k| p.saturating_mul(k.max(1) as u64)))
                .unwrap_or(1);
            out_elems.saturating_mul(k)
        }
        "GlobalAveragePool" | "GlobalMaxPool" | "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "Softmax"
        | "LogSoftmax" => info(0)
            .map(|i| i.elems())
            .unwrap_or(out_elems)
            .saturating_mul(if n.op_type.contains("Softmax") { 5 } else { 1 }),
        _ => out_elems,
    }
}

pub fn compute_units(flops: u64) -> u64 {
    flops.div_ceil(1_000_000)
}
