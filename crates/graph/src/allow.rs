//! The op allow-list: the seeds' "memory-safe, tensor-only format".
//!
//! A task must be a pure, terminating, deterministic function of tensors, so
//! that any node re-executing it (Proof of Sampling) gets the same answer.
//! Hence: only the default ONNX domain, no control flow (`If`, `Loop`,
//! `Scan`: unbounded or data-dependent work), no sequences, maps or optionals,
//! no strings, no random-number ops, no training ops, no model-local
//! functions. Everything is rejected by name.

use crate::model::node_label;
use crate::onnx::{NodeProto, OperatorSetIdProto};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotAllowed {
    #[error("op {domain}::{op} (node {node:?}) is in domain {domain:?}; only the default ONNX domain is allowed (custom and vendor ops are not portable or verifiable)")]
    Domain { domain: String, op: String, node: String },
    #[error("op {op} (node {node:?}) is not allowed: {why}")]
    Op {
        op: String,
        node: String,
        why: &'static str,
    },
    #[error("op {op} (node {node:?}) is not in SplitUp's allow-list of tensor ops")]
    Unknown { op: String, node: String },
    #[error("the model imports opset domain {0:?}; only the default ONNX domain is allowed")]
    OpsetDomain(String),
    #[error("model-local functions are not allowed (inline them first)")]
    Functions,
}

/// Why a known ONNX op is refused, or `None` when it is allowed.
fn refusal(op: &str) -> Option<&'static str> {
    Some(match op {
        "If" | "Loop" | "Scan" => {
            "control flow (its work depends on the data, so it has no fixed cost and may not terminate)"
        }
        "SequenceAt" | "SequenceConstruct" | "SequenceEmpty" | "SequenceErase" | "SequenceInsert"
        | "SequenceLength" | "SequenceMap" | "SplitToSequence" | "ConcatFromSequence" => {
            "sequence values are not tensors"
        }
        "Optional" | "OptionalGetElement" | "OptionalHasElement" => "optional values are not tensors",
        "StringNormalizer" | "StringConcat" | "StringSplit" | "RegexFullMatch" | "TfIdfVectorizer" | "LabelEncoder" => {
            "string ops are not tensor computation"
        }
        "RandomNormal" | "RandomNormalLike" | "RandomUniform" | "RandomUniformLike" | "Bernoulli" | "Multinomial" => {
            "random ops are not deterministic, so their results cannot be verified by re-execution"
        }
        "ImageDecoder" => "decoding encoded bytes is not tensor computation",
        "Gradient" | "Adagrad" | "Adam" | "Momentum" => "training ops are not allowed",
        _ => return None,
    })
}

/// The default-domain ONNX ops SplitUp accepts (tensor in, tensor out).
pub const ALLOWED_OPS: &[&str] = &[
    "Abs",
    "Acos",
    "Acosh",
    "Add",
    "AffineGrid",
    "And",
    "ArgMax",
    "ArgMin",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "Attention",
    "AveragePool",
    "BatchNormalization",
    "BitShift",
    "BitwiseAnd",
    "BitwiseNot",
    "BitwiseOr",
    "BitwiseXor",
    "BlackmanWindow",
    "Cast",
    "CastLike",
    "Ceil",
    "Celu",
    "CenterCropPad",
    "Clip",
    "Col2Im",
    "Compress",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvInteger",
    "ConvTranspose",
    "Cos",
    "Cosh",
    "CausalConvWithState",
    "CumProd",
    "CumSum",
    "DFT",
    "DeformConv",
    "DepthToSpace",
    "DequantizeLinear",
    "Det",
    "Div",
    "Dropout",
    "DynamicQuantizeLinear",
    "Einsum",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "EyeLike",
    "Flatten",
    "Floor",
    "GRU",
    "Gather",
    "GatherElements",
    "GatherND",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "GlobalLpPool",
    "GlobalMaxPool",
    "Greater",
    "GreaterOrEqual",
    "GridSample",
    "GroupNormalization",
    "HammingWindow",
    "HannWindow",
    "HardSigmoid",
    "HardSwish",
    "Hardmax",
    "Identity",
    "InstanceNormalization",
    "IsInf",
    "IsNaN",
    "LRN",
    "LSTM",
    "LayerNormalization",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "LogSoftmax",
    "LpNormalization",
    "LpPool",
    "MatMul",
    "MatMulInteger",
    "Max",
    "MaxPool",
    "MaxRoiPool",
    "MaxUnpool",
    "Mean",
    "MeanVarianceNormalization",
    "MelWeightMatrix",
    "Min",
    "Mish",
    "Mod",
    "Mul",
    "Neg",
    "NegativeLogLikelihoodLoss",
    "NonMaxSuppression",
    "NonZero",
    "Not",
    "OneHot",
    "Or",
    "PRelu",
    "Pad",
    "Pow",
    "QLinearConv",
    "QLinearMatMul",
    "QuantizeLinear",
    "RMSNormalization",
    "RNN",
    "Range",
    "Reciprocal",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
    "Relu",
    "Reshape",
    "Resize",
    "ReverseSequence",
    "RoiAlign",
    "RotaryEmbedding",
    "Round",
    "STFT",
    "Scatter",
    "ScatterElements",
    "ScatterND",
    "Selu",
    "Shape",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Size",
    "Slice",
    "Softmax",
    "SoftmaxCrossEntropyLoss",
    "Softplus",
    "Softsign",
    "SpaceToDepth",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "SwiGLU",
    "Swish",
    "Tan",
    "Tanh",
    "TensorScatter",
    "ThresholdedRelu",
    "Tile",
    "TopK",
    "Transpose",
    "Trilu",
    "Unique",
    "Unsqueeze",
    "Upsample",
    "Where",
    "Xor",
];

fn is_default_domain(d: &str) -> bool {
    d.is_empty() || d == "ai.onnx"
}

pub fn check_opsets(opsets: &[OperatorSetIdProto]) -> Result<(), NotAllowed> {
    match opsets.iter().find(|o| !is_default_domain(&o.domain)) {
        Some(o) => Err(NotAllowed::OpsetDomain(o.domain.clone())),
        None => Ok(()),
    }
}

pub fn check_node(n: &NodeProto, _opsets: &[OperatorSetIdProto]) -> Result<(), NotAllowed> {
    let node = node_label(n);
    if !is_default_domain(&n.domain) {
        return Err(NotAllowed::Domain {
            domain: n.domain.clone(),
            op: n.op_type.clone(),
            node,
        });
    }
    if let Some(why) = refusal(&n.op_type) {
        return Err(NotAllowed::Op {
            op: n.op_type.clone(),
            node,
            why,
        });
    }
    if !ALLOWED_OPS.contains(&n.op_type.as_str()) {
        return Err(NotAllowed::Unknown {
            op: n.op_type.clone(),
            node,
        });
    }
    if n.attribute.iter().any(|a| a.g.is_some() || !a.graphs.is_empty()) {
        return Err(NotAllowed::Op {
            op: n.op_type.clone(),
            node,
            why: "subgraph attributes are control flow",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, domain: &str) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            domain: domain.into(),
            output: vec!["y".into()],
            ..Default::default()
        }
    }

    #[test]
    fn rejections_name_the_op() {
        let check = |op: &str, domain: &str| check_node(&node(op, domain), &[]).map_err(|e| e.to_string());
        assert_eq!(check("MatMul", ""), Ok(()));
        assert_eq!(check("Conv", "ai.onnx"), Ok(()));
        let e = check("FusedMatMul", "com.microsoft").unwrap_err();
        assert!(e.contains("com.microsoft::FusedMatMul"), "{e}");
        let e = check("Loop", "").unwrap_err();
        assert!(e.contains("Loop") && e.contains("control flow"), "{e}");
        let e = check("StringNormalizer", "").unwrap_err();
        assert!(e.contains("string"), "{e}");
        let e = check("RandomNormal", "").unwrap_err();
        assert!(e.contains("deterministic"), "{e}");
        let e = check("Frobnicate", "").unwrap_err();
        assert!(e.contains("Frobnicate") && e.contains("allow-list"), "{e}");
        assert!(check("Adam", "ai.onnx.preview.training")
            .unwrap_err()
            .contains("ai.onnx.preview.training"));
    }
}
