//! The cost model: FLOPs per node and computeUnits (FLOPs / 10^6, rounded up),
//! deterministic from the graph so every party prices a task the same way.

use crate::onnx::NodeProto;
use crate::shape::Shapes;

pub fn node_flops(n: &NodeProto, s: &Shapes) -> u64 {
    let info = |i: usize| n.input.get(i).filter(|x| !x.is_empty()).and_then(|x| s.info.get(x));
    let out_elems = n
        .output
        .first()
        .and_then(|o| s.info.get(o))
        .map(|i| i.elems())
        .unwrap_or(0);
    match n.op_type.as_str() {
        "MatMul" | "MatMulInteger" => {
            let k = info(0).and_then(|a| a.shape.last().copied()).unwrap_or(1) as u64;
            2 * out_elems * k
        }
        "Gemm" => {
            let a = info(0).map(|a| a.shape.clone()).unwrap_or_default();
            let trans_a = n.attribute.iter().any(|x| x.name == "transA" && x.i != 0);
            let k = if trans_a { a.first() } else { a.get(1) }.copied().unwrap_or(1) as u64;
            2 * out_elems * k + out_elems
        }
        "Conv" | "ConvInteger" | "ConvTranspose" => {
            let w = info(1).map(|w| w.shape.clone()).unwrap_or_default();
            let per_out: u64 = w.iter().skip(1).map(|&d| d as u64).product();
            2 * out_elems * per_out.max(1)
        }
        "MaxPool" | "AveragePool" | "LpPool" => {
            let k: u64 = n
                .attribute
                .iter()
                .find(|a| a.name == "kernel_shape")
                .map(|a| a.ints.iter().map(|&k| k.max(1) as u64).product())
                .unwrap_or(1);
            out_elems * k
        }
        "GlobalAveragePool" | "GlobalMaxPool" | "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "Softmax"
        | "LogSoftmax" => {
            info(0).map(|i| i.elems()).unwrap_or(out_elems) * if n.op_type.contains("Softmax") { 5 } else { 1 }
        }
        _ => out_elems,
    }
}

pub fn compute_units(flops: u64) -> u64 {
    flops.div_ceil(1_000_000)
}
