//! The op allow-list: the seeds' "memory-safe, tensor-only format".
//!
//! A task must be a pure, terminating, deterministic function of tensors, so
//! that any node re-executing it (Proof of Sampling) gets the same answer.
//! Hence: the default ONNX domain and the pure tensor ops of `ai.onnx.ml`;
//! control flow (`If`, `Loop`, `Scan`) only as atomic nodes whose subgraphs
//! pass the same checks recursively (`Loop` trip counts are bounded at shape
//! inference); no sequences, maps or optionals, no strings, no random-number
//! ops, no training ops, no model-local functions, and no tensor anywhere in
//! a node (attribute tensors included) that points at external data.
//! Everything is rejected by name.

use crate::model::node_label;
use crate::onnx::{GraphProto, NodeProto, OperatorSetIdProto, TensorProto};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotAllowed {
    #[error("op {domain}::{op} (node {node:?}) is in domain {domain:?}; only the default ONNX domain and the tensor ops of ai.onnx.ml are allowed (custom and vendor ops are not portable or verifiable)")]
    Domain { domain: String, op: String, node: String },
    #[error("op {op} (node {node:?}) is not allowed: {why}")]
    Op {
        op: String,
        node: String,
        why: &'static str,
    },
    #[error("op {op} (node {node:?}) is not in SplitUp's allow-list of tensor ops")]
    Unknown { op: String, node: String },
    #[error("model-local functions are not allowed (inline them first)")]
    Functions,
    #[error("op Dropout (node {node:?}) is not allowed: its training_mode input {input:?} is not a constant false: a Dropout in training mode is random, so its results cannot be verified by re-execution")]
    RandomDropout { node: String, input: String },
    #[error("node {node:?} ({op}): attribute {attr:?} holds a tensor stored as external data; tensors inside nodes must be embedded (external data is only read for a model's initializers, from the model's own directory)")]
    ExternalAttribute { node: String, op: String, attr: String },
}

/// Why a known ONNX op is refused, or `None` when it is allowed.
fn refusal(op: &str) -> Option<&'static str> {
    Some(match op {
        "SequenceAt" | "SequenceConstruct" | "SequenceEmpty" | "SequenceErase" | "SequenceInsert"
        | "SequenceLength" | "SequenceMap" | "SplitToSequence" | "ConcatFromSequence" => {
            "sequence values are not tensors"
        }
        "Optional" | "OptionalGetElement" | "OptionalHasElement" => "optional values are not tensors",
        "StringNormalizer" | "StringConcat" | "StringSplit" | "RegexFullMatch" | "TfIdfVectorizer" => {
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

/// Why an `ai.onnx.ml` op is refused, or `None` when it is allowed.
fn ml_refusal(n: &NodeProto) -> Option<&'static str> {
    let has = |name: &str| n.attribute.iter().any(|a| a.name == name);
    Some(match n.op_type.as_str() {
        "ZipMap" => "ZipMap outputs a sequence of maps, not a tensor; convert the model without it (skl2onnx: options={'zipmap': False}) and read the probabilities tensor",
        "DictVectorizer" | "CastMap" => "map values are not tensors",
        "CategoryMapper" => "string ops are not tensor computation",
        "LinearClassifier" | "SVMClassifier" | "TreeEnsembleClassifier" if has("classlabels_strings") => {
            "string class labels are not tensors; train with integer labels (or map them after the model)"
        }
        "LabelEncoder" if has("keys_strings") || has("values_strings") => {
            "LabelEncoder is allowed on numeric tensors only, not on strings"
        }
        "OneHotEncoder" if has("cats_strings") => "OneHotEncoder is allowed on numeric categories only, not on strings",
        _ => return None,
    })
}

/// The `ai.onnx.ml` ops SplitUp accepts: pure tensor-to-tensor functions.
pub const ALLOWED_ML_OPS: &[&str] = &[
    "ArrayFeatureExtractor",
    "Binarizer",
    "FeatureVectorizer",
    "Imputer",
    "LabelEncoder",
    "LinearClassifier",
    "LinearRegressor",
    "Normalizer",
    "OneHotEncoder",
    "SVMClassifier",
    "SVMRegressor",
    "Scaler",
    "TreeEnsemble",
    "TreeEnsembleClassifier",
    "TreeEnsembleRegressor",
];

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
    "If",
    "InstanceNormalization",
    "IsInf",
    "IsNaN",
    "LRN",
    "LSTM",
    "LayerNormalization",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Loop",
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
    "Scan",
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

pub const ML_DOMAIN: &str = "ai.onnx.ml";

/// True when a tensor proto's bytes live outside the model file.
pub fn is_external(t: &TensorProto) -> bool {
    t.data_location == 1 || !t.external_data.is_empty()
}

/// Checks one node, and every node of its subgraphs, against the allow-list.
/// Opset imports are not checked: an import that no node uses is harmless,
/// and a node of a vendor domain is refused by its own name.
pub fn check_node(n: &NodeProto, opsets: &[OperatorSetIdProto]) -> Result<(), NotAllowed> {
    check_op(n)?;
    for a in &n.attribute {
        for g in a.g.iter().map(|g| g.as_ref()).chain(&a.graphs) {
            check_subgraph(g, opsets)?;
        }
    }
    Ok(())
}

/// Checks one node alone, not its subgraphs: its op, its attribute tensors,
/// and that only control flow carries subgraphs.
pub fn check_op(n: &NodeProto) -> Result<(), NotAllowed> {
    let node = node_label(n);
    let ml = n.domain == ML_DOMAIN;
    if !ml && !is_default_domain(&n.domain) {
        return Err(NotAllowed::Domain {
            domain: n.domain.clone(),
            op: n.op_type.clone(),
            node,
        });
    }
    let (refused, allowed, name) = if ml {
        (ml_refusal(n), ALLOWED_ML_OPS, format!("ai.onnx.ml::{}", n.op_type))
    } else {
        (refusal(&n.op_type), ALLOWED_OPS, n.op_type.clone())
    };
    if let Some(why) = refused {
        return Err(NotAllowed::Op {
            op: n.op_type.clone(),
            node,
            why,
        });
    }
    if !allowed.contains(&n.op_type.as_str()) {
        return Err(NotAllowed::Unknown { op: name, node });
    }
    let control_flow = !ml && matches!(n.op_type.as_str(), "If" | "Loop" | "Scan");
    for a in &n.attribute {
        if a.t.as_ref().is_some_and(is_external) || a.tensors.iter().any(is_external) {
            return Err(NotAllowed::ExternalAttribute {
                node,
                op: n.op_type.clone(),
                attr: a.name.clone(),
            });
        }
        if (a.g.is_some() || !a.graphs.is_empty()) && !control_flow {
            return Err(NotAllowed::Op {
                op: n.op_type.clone(),
                node,
                why: "only If, Loop and Scan may carry subgraphs",
            });
        }
    }
    Ok(())
}

/// Checks every node and initializer of a subgraph (recursively).
pub fn check_subgraph(g: &GraphProto, opsets: &[OperatorSetIdProto]) -> Result<(), NotAllowed> {
    if let Some(t) = g.initializer.iter().find(|t| is_external(t)) {
        return Err(NotAllowed::ExternalAttribute {
            node: format!("subgraph {:?}", g.name),
            op: "initializer".into(),
            attr: t.name.clone(),
        });
    }
    let consts = crate::model::small_constants(g);
    for n in &g.node {
        check_node(n, opsets)?;
        check_dropout(n, |t| consts.get(t).is_some_and(is_all_zero))?;
    }
    Ok(())
}

/// True when every element of the tensor is zero (false).
pub fn is_all_zero(t: &splitup_tensor::Tensor) -> bool {
    t.bytes().iter().all(|&b| b == 0)
}

/// A `Dropout` is deterministic only when its `training_mode` input is
/// absent or a constant false (`is_false` says which values are). The one
/// check for shape inference (which knows folded values), subgraphs and
/// task files.
pub fn check_dropout(n: &NodeProto, is_false: impl Fn(&str) -> bool) -> Result<(), NotAllowed> {
    if n.op_type == "Dropout" && n.domain.is_empty() {
        if let Some(t) = n.input.get(2).filter(|t| !t.is_empty()) {
            if !is_false(t) {
                return Err(NotAllowed::RandomDropout {
                    node: node_label(n),
                    input: t.clone(),
                });
            }
        }
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
        assert_eq!(
            check("Loop", ""),
            Ok(()),
            "a Loop without subgraphs passes the list; its bound is checked at shape inference"
        );
        let e = check("ZipMap", "ai.onnx.ml").unwrap_err();
        assert!(e.contains("zipmap"), "{e}");
        assert_eq!(check("TreeEnsembleClassifier", "ai.onnx.ml"), Ok(()));
        let e = check("Frobnicate", "ai.onnx.ml").unwrap_err();
        assert!(e.contains("ai.onnx.ml::Frobnicate"), "{e}");
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
