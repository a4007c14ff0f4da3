//! Static shape inference: a concrete dtype and shape for every value of a
//! graph once its symbolic dims are fixed (`--dim seq=128`, `--shape x=1,3,224,224`).
//!
//! Three sources, in order:
//! 1. **Constant folding.** A node whose inputs are all known constants
//!    (weights, folded values, inputs fixed with `--value`) is evaluated by
//!    the [`NodeEval`] the caller supplies (ONNX Runtime, from the `exec`
//!    crate), so the shape-computing chains exporters emit (`Shape -> Gather
//!    -> Concat -> Reshape`, `ConstantOfShape -> ... -> Pad`) resolve exactly,
//!    whatever ops they use. Ops that can make a large output from small
//!    inputs (`ConstantOfShape`, `Expand`, `Range`, ...) are folded only
//!    after their rule has bounded the output.
//! 2. **Rules** for the ops below, with small integer values propagated, so
//!    that inference works without a runtime too (the pure crate, benches).
//! 3. **Asking the runtime** about a single node whose op has no rule: it is
//!    evaluated on inputs of the known shapes (known values where known,
//!    zeros elsewhere), provided every small (rank <= 1) input, where shapes
//!    hide, is a known constant.
//!
//! Declared `value_info` is never a source: where it disagrees with what was
//! inferred, the disagreement is reported in [`Shapes::warnings`]. Every
//! output size is computed with checked arithmetic; a shape too large to
//! represent is an error that names the tensor. Data-dependent output shapes
//! (`NonZero`, `Unique`, `Compress`, `NonMaxSuppression`) are errors unless
//! their inputs are constant.

use crate::model::{captures, node_label, Dim, Graph};
use crate::onnx::{attr_type, AttributeProto, NodeProto, OperatorSetIdProto};
use splitup_tensor::{DType, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Integer tensors up to this many elements are evaluated by the rules.
pub const VALUE_ELEMS_MAX: usize = 64;
/// Folded constants up to this many elements are kept (and fed to later folds).
pub const CONST_ELEMS_MAX: usize = 1 << 16;
/// No tensor may exceed this many bytes (1 PiB): far beyond any device, and
/// far from the point where byte counts overflow.
pub const TENSOR_BYTES_MAX: u64 = 1 << 50;
/// Most bytes of zero-filled inputs used to ask the runtime about one node.
pub const EVAL_INPUT_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Most iterations a `Loop` may declare (its maximum trip count must be a
/// constant; the work is costed at that maximum).
pub const LOOP_TRIPS_MAX: i64 = 1 << 20;

#[derive(Clone, Debug, PartialEq)]
pub struct Info {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl Info {
    /// Bytes of the tensor (saturating: inference refuses any tensor above
    /// [`TENSOR_BYTES_MAX`], so saturation is never reached for inferred values).
    pub fn bytes(&self) -> u64 {
        self.checked_bytes().unwrap_or(u64::MAX)
    }
    pub fn elems(&self) -> u64 {
        self.shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
            .unwrap_or(u64::MAX)
    }
    pub fn checked_bytes(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64))?
            .checked_mul(self.dtype.size() as u64)
    }
}

/// Element count of a shape, or an error when it overflows.
pub fn numel(shape: &[usize]) -> Result<usize, String> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} has more elements than can be counted"))
}

/// Evaluates a single node on concrete inputs: ONNX Runtime behind the
/// `exec` crate (the graph crate itself links no engine).
pub trait NodeEval: Send + Sync {
    /// `inputs[i]` is the node's i-th input (`None` where an optional input
    /// is absent); `captures` are the outer-scope values its subgraphs read.
    /// Returns every output of the node, in order.
    fn eval(
        &self,
        node: &NodeProto,
        opset: &[OperatorSetIdProto],
        inputs: &[Option<Tensor>],
        captures: &[(String, Tensor)],
    ) -> Result<Vec<Tensor>, String>;
}

/// An optional [`NodeEval`]; without one, inference uses its rules only.
#[derive(Clone, Default)]
pub struct Evaluator(pub Option<Arc<dyn NodeEval>>);

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Evaluator(runtime)"
        } else {
            "Evaluator(rules only)"
        })
    }
}

/// What the user fixes: named dims, whole input shapes, and inputs frozen
/// to a value (`--value sr=16000`), plus the evaluator inference may use.
#[derive(Clone, Debug, Default)]
pub struct Bindings {
    pub dims: BTreeMap<String, usize>,
    pub shapes: BTreeMap<String, Vec<usize>>,
    /// Inputs fixed to a constant: they become weights of the partitioned
    /// graph (no longer inputs), so branches on them fold.
    pub values: BTreeMap<String, Tensor>,
    pub eval: Evaluator,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ShapeError {
    #[error(
        "input {input:?} has symbolic dimension {dim:?}; fix it with --dim {dim}=N (or --shape {input}=D0,D1,...)"
    )]
    Unbound { input: String, dim: String },
    #[error("input {input:?} has no declared shape; give it with --shape {input}=D0,D1,...")]
    NoShape { input: String },
    #[error("--shape {input}: {msg}")]
    BadBinding { input: String, msg: String },
    #[error("cannot infer the shape of {value:?} produced by node {node:?} ({op}): {msg}")]
    Node {
        node: String,
        op: String,
        value: String,
        msg: String,
    },
    #[error("tensor {value:?} produced by node {node:?} ({op}) has shape {shape:?} of {dtype}: too large to represent (over {TENSOR_BYTES_MAX} bytes)")]
    TooLarge {
        value: String,
        node: String,
        op: String,
        shape: Vec<usize>,
        dtype: String,
    },
}

#[derive(Clone, Debug, Default)]
pub struct Shapes {
    pub info: HashMap<String, Info>,
    /// Evaluated small integer values.
    pub values: HashMap<String, Vec<i64>>,
    /// Known constant values (weights, folded nodes), up to [`CONST_ELEMS_MAX`] elements.
    pub consts: HashMap<String, Tensor>,
    /// Where the model's declared `value_info` disagrees with inference.
    pub warnings: Vec<String>,
}

impl Shapes {
    pub fn get(&self, name: &str) -> &Info {
        &self.info[name]
    }
}

fn int_values(t: &Tensor) -> Option<Vec<i64>> {
    if t.len() <= VALUE_ELEMS_MAX {
        t.to_i64_vec()
    } else {
        None
    }
}

fn tensor_from_i64(dtype: DType, shape: &[usize], v: &[i64]) -> Option<Tensor> {
    let data: Vec<u8> = match dtype {
        DType::I64 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::I32 => v.iter().flat_map(|x| (*x as i32).to_le_bytes()).collect(),
        _ => return None,
    };
    Tensor::new(dtype, shape.to_vec(), data).ok()
}

pub fn infer(g: &Graph, b: &Bindings) -> Result<Shapes, ShapeError> {
    let mut s = Shapes::default();
    infer_into(g, b, &mut s)?;
    Ok(s)
}

/// As [`infer`], but keeps what was inferred before an error: the
/// partitioner folds `If`s on known conditions and tries again.
pub fn infer_partial(g: &Graph, b: &Bindings) -> (Shapes, Option<ShapeError>) {
    let mut s = Shapes::default();
    let e = infer_into(g, b, &mut s).err();
    (s, e)
}

fn infer_into(g: &Graph, b: &Bindings, s: &mut Shapes) -> Result<(), ShapeError> {
    for (name, vt) in &g.inputs {
        if let Some(t) = b.values.get(name) {
            if t.dtype != vt.dtype {
                return Err(ShapeError::BadBinding {
                    input: name.clone(),
                    msg: format!("the model declares {} but the value given is {}", vt.dtype, t.dtype),
                });
            }
            s.info.insert(
                name.clone(),
                Info {
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                },
            );
            if let Some(v) = int_values(t) {
                s.values.insert(name.clone(), v);
            }
            s.consts.insert(name.clone(), t.clone());
            continue;
        }
        let shape = if let Some(shape) = b.shapes.get(name) {
            if let Some(dims) = &vt.dims {
                if dims.len() != shape.len() {
                    return Err(ShapeError::BadBinding {
                        input: name.clone(),
                        msg: format!(
                            "the model declares rank {} but {} dims were given",
                            dims.len(),
                            shape.len()
                        ),
                    });
                }
                for (i, (d, &v)) in dims.iter().zip(shape).enumerate() {
                    if let Dim::Fixed(f) = d {
                        if *f != v {
                            return Err(ShapeError::BadBinding {
                                input: name.clone(),
                                msg: format!("dimension {i} is fixed to {f} by the model, not {v}"),
                            });
                        }
                    }
                }
            }
            shape.clone()
        } else {
            let dims = vt
                .dims
                .as_ref()
                .ok_or_else(|| ShapeError::NoShape { input: name.clone() })?;
            dims.iter()
                .map(|d| match d {
                    Dim::Fixed(v) => Ok(*v),
                    Dim::Sym(s) => b.dims.get(s).copied().ok_or_else(|| ShapeError::Unbound {
                        input: name.clone(),
                        dim: s.clone(),
                    }),
                })
                .collect::<Result<_, _>>()?
        };
        let info = Info { dtype: vt.dtype, shape };
        if info.checked_bytes().is_none_or(|b| b > TENSOR_BYTES_MAX) {
            return Err(ShapeError::BadBinding {
                input: name.clone(),
                msg: format!("shape {:?} is too large to represent", info.shape),
            });
        }
        s.info.insert(name.clone(), info);
    }
    for (name, w) in &g.weights {
        s.info.insert(
            name.clone(),
            Info {
                dtype: w.dtype,
                shape: w.shape.clone(),
            },
        );
        if numel(&w.shape).is_ok_and(|n| n <= CONST_ELEMS_MAX) {
            if let Some(t) = w.tensor() {
                if let Some(v) = int_values(&t) {
                    s.values.insert(name.clone(), v);
                }
                s.consts.insert(name.clone(), t);
            }
        }
    }
    let opset_default = g
        .opset
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(1);
    for n in &g.nodes {
        let outs = infer_one(g, n, s, b, opset_default).map_err(|msg| ShapeError::Node {
            node: node_label(n),
            op: n.op_type.clone(),
            value: n.output.first().cloned().unwrap_or_default(),
            msg,
        })?;
        for (name, (info, value)) in n.output.iter().zip(outs) {
            if name.is_empty() {
                continue;
            }
            if info.checked_bytes().is_none_or(|b| b > TENSOR_BYTES_MAX) {
                return Err(ShapeError::TooLarge {
                    value: name.clone(),
                    node: node_label(n),
                    op: n.op_type.clone(),
                    shape: info.shape,
                    dtype: info.dtype.name().into(),
                });
            }
            if let Some(declared) = g.value_info.get(name).and_then(|vt| vt.dims.as_ref()) {
                let fixed: Option<Vec<usize>> = declared
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(v) => Some(*v),
                        Dim::Sym(s) => b.dims.get(s).copied(),
                    })
                    .collect();
                if fixed.is_some_and(|f| f != info.shape) {
                    s.warnings.push(format!(
                        "{name:?}: the model declares {declared:?}, inference gives {:?} (using the inferred shape)",
                        info.shape
                    ));
                }
            }
            match value {
                Some(t) => {
                    if let Some(v) = int_values(&t) {
                        s.values.insert(name.clone(), v);
                    }
                    s.consts.insert(name.clone(), t);
                }
                None => {
                    s.values.remove(name);
                }
            }
            s.info.insert(name.clone(), info);
        }
    }
    Ok(())
}

/// Ops whose output can be far larger than their inputs: folded only once
/// a rule has bounded the output.
fn expands(op: &str) -> bool {
    matches!(
        op,
        "ConstantOfShape"
            | "Expand"
            | "Tile"
            | "Range"
            | "Resize"
            | "Upsample"
            | "OneHot"
            | "Pad"
            | "Col2Im"
            | "CenterCropPad"
            | "MaxUnpool"
            | "BlackmanWindow"
            | "HammingWindow"
            | "HannWindow"
            | "MelWeightMatrix"
            | "AffineGrid"
            | "STFT"
            | "DFT"
            | "TensorScatter"
            | "EyeLike"
    )
}

/// Ops whose output shape depends on the values of their inputs.
fn data_dependent(op: &str) -> bool {
    matches!(op, "NonZero" | "Unique" | "Compress" | "NonMaxSuppression")
}

/// Shapes (and, where known, values) of one node's outputs.
fn infer_one(
    g: &Graph,
    n: &NodeProto,
    s: &Shapes,
    b: &Bindings,
    opset: i64,
) -> Result<Vec<(Info, Option<Tensor>)>, String> {
    let ins: Vec<Option<&Info>> = n
        .input
        .iter()
        .map(|i| if i.is_empty() { None } else { s.info.get(i) })
        .collect();
    let vals: Vec<Option<&Vec<i64>>> = n.input.iter().map(|i| s.values.get(i)).collect();
    let consts: Vec<Option<&Tensor>> = n.input.iter().map(|i| s.consts.get(i)).collect();
    // Before anything evaluates it: a Loop must be bounded.
    if n.op_type == "Loop" && n.domain.is_empty() {
        loop_bound(n, &vals)?;
    }
    // Nor may anything evaluate a Dropout that draws random numbers.
    crate::allow::check_dropout(n, |t| s.consts.get(t).is_some_and(crate::allow::is_all_zero))
        .map_err(|e| e.to_string())?;
    let caps = captures(n);
    for c in &caps {
        if !s.info.contains_key(c) {
            return Err(format!("its subgraph reads {c:?}, whose shape is not known"));
        }
    }
    let ml = n.domain == crate::allow::ML_DOMAIN;
    let rule = if ml {
        Err(format!("shape rules do not cover ai.onnx.ml::{}", n.op_type))
    } else if data_dependent(&n.op_type) {
        Err(format!(
            "{}'s output shape depends on the values of its inputs, which are not constants here; SplitUp needs static shapes (compute it outside the model, or make its inputs constant)",
            n.op_type
        ))
    } else {
        infer_node(n, &ins, &vals, &consts, opset)
    };
    let all_const = n.input.iter().all(|i| i.is_empty() || s.consts.contains_key(i))
        && caps.iter().all(|c| s.consts.contains_key(c));
    let eval = b.eval.0.as_ref();
    let small = |outs: &Vec<Out>| {
        outs.iter()
            .all(|(i, _)| numel(&i.shape).is_ok_and(|n| n <= CONST_ELEMS_MAX))
    };
    // 1. Constant folding.
    if let Some(e) = eval.filter(|_| all_const) {
        let bounded = match &rule {
            Ok(outs) => small(outs),
            Err(_) => !expands(&n.op_type),
        };
        if bounded {
            let inputs: Vec<Option<Tensor>> = n.input.iter().map(|i| s.consts.get(i).cloned()).collect();
            let cap: Vec<(String, Tensor)> = caps.iter().map(|c| (c.clone(), s.consts[c].clone())).collect();
            match e.eval(n, &g.opset, &inputs, &cap) {
                Ok(ts) => {
                    return Ok(ts
                        .into_iter()
                        .map(|t| {
                            let info = Info {
                                dtype: t.dtype,
                                shape: t.shape.clone(),
                            };
                            let keep = t.len() <= CONST_ELEMS_MAX;
                            (info, keep.then_some(t))
                        })
                        .collect())
                }
                Err(e) if rule.is_err() => return Err(format!("ONNX Runtime could not evaluate it: {e}")),
                // The rule still gives the shapes; only the values stay unknown.
                Err(_) => {}
            }
        }
    }
    // 2. Rules.
    let rule_msg = match rule {
        Ok(outs) => {
            return Ok(outs
                .into_iter()
                .map(|(info, v)| {
                    let t = v.and_then(|v| tensor_from_i64(info.dtype, &info.shape, &v));
                    (info, t)
                })
                .collect())
        }
        Err(msg) => msg,
    };
    // 3. Ask the runtime about this node on zero-filled inputs of known shapes.
    let Some(e) = eval else {
        return Err(rule_msg);
    };
    if data_dependent(&n.op_type) || expands(&n.op_type) {
        return Err(rule_msg);
    }
    let mut total = 0u64;
    let mut fill = |name: &str| -> Result<Tensor, String> {
        if let Some(t) = s.consts.get(name) {
            return Ok(t.clone());
        }
        let info = &s.info[name];
        if info.shape.len() <= 1 && numel(&info.shape)? <= VALUE_ELEMS_MAX {
            return Err(format!(
                "{rule_msg}; and its small input {name:?} (where shapes usually hide) is not a constant, so asking ONNX Runtime on placeholder values could give a wrong shape"
            ));
        }
        let bytes = info.checked_bytes().ok_or("input too large")?;
        total = total.saturating_add(bytes);
        if total > EVAL_INPUT_BYTES_MAX {
            return Err(format!(
                "{rule_msg}; and its inputs are too large to evaluate the node alone"
            ));
        }
        Tensor::new(info.dtype, info.shape.clone(), vec![0u8; bytes as usize]).map_err(|e| e.to_string())
    };
    let mut inputs: Vec<Option<Tensor>> = Vec::with_capacity(n.input.len());
    for (k, i) in n.input.iter().enumerate() {
        if i.is_empty() {
            inputs.push(None);
        } else if n.op_type == "If" && k == 0 && !s.consts.contains_key(i) {
            inputs.push(Some(
                Tensor::new(DType::Bool, s.info[i].shape.clone(), vec![0; numel(&s.info[i].shape)?])
                    .map_err(|e| e.to_string())?,
            ));
        } else {
            inputs.push(Some(fill(i)?));
        }
    }
    let mut cap = Vec::with_capacity(caps.len());
    for c in &caps {
        cap.push((c.clone(), fill(c)?));
    }
    let run = |inputs: &[Option<Tensor>]| -> Result<Vec<Out>, String> {
        let ts = e
            .eval(n, &g.opset, inputs, &cap)
            .map_err(|err| format!("{rule_msg}; and ONNX Runtime could not evaluate it alone: {err}"))?;
        Ok(ts
            .into_iter()
            .map(|t| {
                (
                    Info {
                        dtype: t.dtype,
                        shape: t.shape,
                    },
                    None,
                )
            })
            .collect())
    };
    let unknown_cond = n.op_type == "If" && !s.consts.contains_key(&n.input[0]);
    let outs = run(&inputs).map_err(|e| {
        if unknown_cond {
            format!(
                "{e}; its condition {:?} is not a constant: fixing the inputs it depends on (--value NAME=V) folds the If into one branch",
                n.input[0]
            )
        } else {
            e
        }
    })?;
    if unknown_cond {
        // The condition is not known: both branches must give the same shapes.
        let mut other = inputs.clone();
        if let Some(Some(c)) = other.first_mut() {
            *c = Tensor::new(DType::Bool, c.shape.clone(), vec![1; c.len()]).map_err(|e| e.to_string())?;
        }
        let outs2 = run(&other)?;
        if outs != outs2 {
            return Err(format!(
                "its branches give different output shapes ({:?} vs {:?}) and its condition {:?} is not a constant; fix the inputs it depends on (--value NAME=V)",
                outs.iter().map(|o| &o.0.shape).collect::<Vec<_>>(),
                outs2.iter().map(|o| &o.0.shape).collect::<Vec<_>>(),
                n.input.first().cloned().unwrap_or_default()
            ));
        }
    }
    Ok(outs.into_iter().map(|(i, _)| (i, None)).collect())
}

/// A `Loop` must have a constant maximum trip count no larger than
/// [`LOOP_TRIPS_MAX`]; returns it.
pub fn loop_bound(n: &NodeProto, vals: &[Option<&Vec<i64>>]) -> Result<i64, String> {
    let m =
        n.input.first().filter(|m| !m.is_empty()).ok_or(
            "a Loop without a maximum trip count (input M) may never terminate; SplitUp needs a constant bound",
        )?;
    let v = vals
        .first()
        .copied()
        .flatten()
        .and_then(|v| v.first().copied())
        .ok_or_else(|| format!("its maximum trip count {m:?} is not a constant; SplitUp needs a constant bound to cost and terminate it"))?;
    if !(0..=LOOP_TRIPS_MAX).contains(&v) {
        return Err(format!(
            "its maximum trip count is {v}; SplitUp accepts at most {LOOP_TRIPS_MAX} iterations"
        ));
    }
    Ok(v)
}

type Out = (Info, Option<Vec<i64>>);

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}
fn attr_i(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map(|a| a.i).unwrap_or(default)
}
fn attr_f(n: &NodeProto, name: &str, default: f32) -> f32 {
    attr(n, name).map(|a| a.f).unwrap_or(default)
}
fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name)
        .filter(|a| a.r#type == attr_type::INTS || !a.ints.is_empty())
        .map(|a| a.ints.clone())
}
fn attr_s(n: &NodeProto, name: &str) -> Option<String> {
    attr(n, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

fn norm_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

pub fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let x = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let y = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        out[i] = if x == y || y == 1 {
            x
        } else if x == 1 {
            y
        } else {
            return Err(format!("shapes {a:?} and {b:?} do not broadcast"));
        };
    }
    Ok(out)
}

fn one(dtype: DType, shape: Vec<usize>) -> Result<Vec<Out>, String> {
    Ok(vec![(Info { dtype, shape }, None)])
}

fn valued(dtype: DType, shape: Vec<usize>, v: Vec<i64>) -> Result<Vec<Out>, String> {
    let keep = v.len() <= VALUE_ELEMS_MAX;
    Ok(vec![(Info { dtype, shape }, keep.then_some(v))])
}

fn infer_node(
    n: &NodeProto,
    ins: &[Option<&Info>],
    vals: &[Option<&Vec<i64>>],
    consts: &[Option<&Tensor>],
    opset: i64,
) -> Result<Vec<Out>, String> {
    let input = |i: usize| -> Result<&Info, String> {
        ins.get(i)
            .copied()
            .flatten()
            .ok_or_else(|| format!("input {i} is missing or has no known shape"))
    };
    let value = |i: usize| -> Result<&Vec<i64>, String> {
        vals.get(i).copied().flatten().ok_or_else(|| {
            format!(
                "input {i} ({:?}) must be a constant",
                n.input.get(i).map(String::as_str).unwrap_or("")
            )
        })
    };
    let op = n.op_type.as_str();
    match op {
        "Relu"
        | "Sigmoid"
        | "Tanh"
        | "Exp"
        | "Log"
        | "Sqrt"
        | "Neg"
        | "Abs"
        | "Erf"
        | "Reciprocal"
        | "Floor"
        | "Ceil"
        | "Round"
        | "Sin"
        | "Cos"
        | "Tan"
        | "Asin"
        | "Acos"
        | "Atan"
        | "Sinh"
        | "Cosh"
        | "Asinh"
        | "Acosh"
        | "Atanh"
        | "Softplus"
        | "Softsign"
        | "LeakyRelu"
        | "Elu"
        | "Selu"
        | "Celu"
        | "HardSigmoid"
        | "HardSwish"
        | "Gelu"
        | "Mish"
        | "Swish"
        | "Sign"
        | "Clip"
        | "Softmax"
        | "LogSoftmax"
        | "Hardmax"
        | "LRN"
        | "InstanceNormalization"
        | "GroupNormalization"
        | "RMSNormalization"
        | "MeanVarianceNormalization"
        | "Not"
        | "CumSum"
        | "Trilu"
        | "ThresholdedRelu"
        | "Shrink"
        | "LpNormalization"
        | "BitwiseNot"
        | "ScatterElements"
        | "ScatterND"
        | "Scatter" => {
            let x = input(0)?;
            one(x.dtype, x.shape.clone())
        }
        "Identity" => {
            let x = input(0)?;
            Ok(vec![(x.clone(), vals[0].cloned())])
        }
        "Dropout" => {
            let x = input(0)?;
            Ok(vec![
                (x.clone(), None),
                (
                    Info {
                        dtype: DType::Bool,
                        shape: x.shape.clone(),
                    },
                    None,
                ),
            ])
        }
        "BatchNormalization" => {
            let x = input(0)?;
            let c = x.shape.get(1).copied().unwrap_or(1);
            let stat = Info {
                dtype: x.dtype,
                shape: vec![c],
            };
            Ok(vec![
                (x.clone(), None),
                (stat.clone(), None),
                (stat.clone(), None),
                (stat.clone(), None),
                (stat, None),
            ])
        }
        "LayerNormalization" => {
            let x = input(0)?;
            let axis = norm_axis(attr_i(n, "axis", -1), x.shape.len())?;
            let mut stat = x.shape.clone();
            for d in stat.iter_mut().skip(axis) {
                *d = 1;
            }
            let stat = Info {
                dtype: DType::F32,
                shape: stat,
            };
            Ok(vec![(x.clone(), None), (stat.clone(), None), (stat, None)])
        }
        "IsNaN" | "IsInf" => one(DType::Bool, input(0)?.shape.clone()),
        "Cast" => {
            let x = input(0)?;
            let to = DType::from_onnx_code(attr_i(n, "to", 0) as i32).ok_or("unsupported target type")?;
            let v = vals[0].cloned().filter(|_| !to.is_float() && to != DType::Bool);
            Ok(vec![(
                Info {
                    dtype: to,
                    shape: x.shape.clone(),
                },
                v,
            )])
        }
        "CastLike" => one(input(1)?.dtype, input(0)?.shape.clone()),
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Mod" | "Max" | "Min" | "Sum" | "Mean" | "And" | "Or" | "Xor"
        | "BitShift" | "BitwiseAnd" | "BitwiseOr" | "BitwiseXor" | "PRelu" | "Equal" | "Less" | "Greater"
        | "LessOrEqual" | "GreaterOrEqual" => {
            let mut shape = input(0)?.shape.clone();
            for i in 1..ins.len() {
                shape = broadcast(&shape, &input(i)?.shape)?;
            }
            let dtype = if matches!(op, "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual") {
                DType::Bool
            } else {
                input(0)?.dtype
            };
            // Evaluate integer shape arithmetic on equal-length or scalar operands.
            let v = if ins.len() == 2 && !dtype.is_float() && dtype != DType::Bool {
                match (vals[0], vals[1]) {
                    (Some(a), Some(b)) if a.len() == b.len() || a.len() == 1 || b.len() == 1 => {
                        let len = a.len().max(b.len());
                        let get = |v: &Vec<i64>, i: usize| if v.len() == 1 { v[0] } else { v[i] };
                        (0..len)
                            .map(|i| {
                                let (x, y) = (get(a, i), get(b, i));
                                match op {
                                    "Add" => x.checked_add(y),
                                    "Sub" => x.checked_sub(y),
                                    "Mul" => x.checked_mul(y),
                                    "Div" => x.checked_div_euclid(y),
                                    "Max" => Some(x.max(y)),
                                    "Min" => Some(x.min(y)),
                                    _ => None,
                                }
                            })
                            .collect::<Option<Vec<_>>>()
                    }
                    _ => None,
                }
            } else {
                None
            };
            Ok(vec![(Info { dtype, shape }, v)])
        }
        "Where" => {
            let shape = broadcast(&broadcast(&input(0)?.shape, &input(1)?.shape)?, &input(2)?.shape)?;
            one(input(1)?.dtype, shape)
        }
        "MatMul" | "MatMulInteger" | "QLinearMatMul" => {
            // QLinearMatMul: b is its fourth input, the output type its y_zero_point's.
            let (a, b) = (input(0)?, input(if op == "QLinearMatMul" { 3 } else { 1 })?);
            let dtype = match op {
                "MatMulInteger" => DType::I32,
                "QLinearMatMul" => input(7)?.dtype,
                _ => a.dtype,
            };
            one(dtype, matmul_shape(&a.shape, &b.shape)?)
        }
        "Gemm" => {
            let (a, b) = (input(0)?, input(1)?);
            if a.shape.len() != 2 || b.shape.len() != 2 {
                return Err("Gemm needs 2-D operands".into());
            }
            let m = if attr_i(n, "transA", 0) != 0 {
                a.shape[1]
            } else {
                a.shape[0]
            };
            let nn = if attr_i(n, "transB", 0) != 0 {
                b.shape[0]
            } else {
                b.shape[1]
            };
            one(a.dtype, vec![m, nn])
        }
        "Conv" | "ConvInteger" | "QLinearConv" => {
            // QLinearConv: the weight is its fourth input, the output type its y_zero_point's.
            let (x, w) = (input(0)?, input(if op == "QLinearConv" { 3 } else { 1 })?);
            if x.shape.len() < 3 || w.shape.len() != x.shape.len() {
                return Err(format!(
                    "Conv input rank {} and weight rank {} do not agree",
                    x.shape.len(),
                    w.shape.len()
                ));
            }
            let spatial = pool_shape(n, &x.shape[2..], &w.shape[2..], false)?;
            let mut shape = vec![x.shape[0], w.shape[0]];
            shape.extend(spatial);
            let dtype = match op {
                "ConvInteger" => DType::I32,
                "QLinearConv" => input(7)?.dtype,
                _ => x.dtype,
            };
            one(dtype, shape)
        }
        "MaxPool" | "AveragePool" | "LpPool" => {
            let x = input(0)?;
            let kernel: Vec<usize> = attr_ints(n, "kernel_shape")
                .ok_or("missing kernel_shape")?
                .iter()
                .map(|&k| k as usize)
                .collect();
            if x.shape.len() != kernel.len() + 2 {
                return Err("kernel rank does not match input".into());
            }
            let ceil = attr_i(n, "ceil_mode", 0) != 0;
            let mut shape = x.shape[..2].to_vec();
            shape.extend(pool_shape(n, &x.shape[2..], &kernel, ceil)?);
            let out = Info {
                dtype: x.dtype,
                shape: shape.clone(),
            };
            Ok(vec![
                (out, None),
                (
                    Info {
                        dtype: DType::I64,
                        shape,
                    },
                    None,
                ),
            ])
        }
        "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => {
            let x = input(0)?;
            let mut shape = x.shape.clone();
            for d in shape.iter_mut().skip(2) {
                *d = 1;
            }
            one(x.dtype, shape)
        }
        "Concat" => {
            let first = input(0)?;
            let axis = norm_axis(attr_i(n, "axis", 0), first.shape.len())?;
            let mut shape = first.shape.clone();
            let mut all = Vec::new();
            let mut have_values = true;
            for (i, val) in vals.iter().enumerate() {
                let x = input(i)?;
                if x.shape.len() != shape.len() {
                    return Err("Concat inputs differ in rank".into());
                }
                if i > 0 {
                    shape[axis] = shape[axis].checked_add(x.shape[axis]).ok_or("Concat overflows")?;
                }
                match val {
                    Some(v) if have_values => all.extend(v.iter()),
                    _ => have_values = false,
                }
            }
            let v = (have_values && shape.len() == 1 && all.len() <= VALUE_ELEMS_MAX).then_some(all);
            Ok(vec![(
                Info {
                    dtype: first.dtype,
                    shape,
                },
                v,
            )])
        }
        "Flatten" => {
            let x = input(0)?;
            let r = x.shape.len() as i64;
            let axis = attr_i(n, "axis", 1);
            let axis = if axis < 0 { axis + r } else { axis };
            if !(0..=r).contains(&axis) {
                return Err(format!("axis {axis} out of range"));
            }
            let a = numel(&x.shape[..axis as usize])?;
            let b = numel(&x.shape[axis as usize..])?;
            one(x.dtype, vec![a, b])
        }
        "Reshape" => {
            let x = input(0)?;
            let target = if opset < 5 {
                attr_ints(n, "shape").ok_or("missing shape")?
            } else {
                value(1)?.clone()
            };
            let allowzero = attr_i(n, "allowzero", 0) != 0;
            let total = numel(&x.shape)?;
            let mut shape = Vec::with_capacity(target.len());
            let mut infer_at = None;
            for (i, &t) in target.iter().enumerate() {
                match t {
                    0 if !allowzero => shape.push(*x.shape.get(i).ok_or("0 in Reshape beyond the input rank")?),
                    -1 if infer_at.is_none() => {
                        infer_at = Some(i);
                        shape.push(1)
                    }
                    t if t >= 0 => shape.push(t as usize),
                    _ => return Err(format!("invalid Reshape target {target:?}")),
                }
            }
            let known = numel(&shape)?;
            if let Some(i) = infer_at {
                if known == 0 || !total.is_multiple_of(known) {
                    return Err(format!("cannot reshape {:?} into {target:?}", x.shape));
                }
                shape[i] = total / known;
            } else if known != total {
                return Err(format!(
                    "cannot reshape {:?} ({total} elements) into {shape:?}",
                    x.shape
                ));
            }
            let v = vals[0].cloned();
            Ok(vec![(Info { dtype: x.dtype, shape }, v)])
        }
        "Transpose" => {
            let x = input(0)?;
            let r = x.shape.len();
            let perm = attr_ints(n, "perm").unwrap_or_else(|| (0..r as i64).rev().collect());
            if perm.len() != r {
                return Err("perm length differs from rank".into());
            }
            let shape = perm
                .iter()
                .map(|&p| x.shape.get(p as usize).copied().ok_or("perm out of range"))
                .collect::<Result<_, _>>()?;
            one(x.dtype, shape)
        }
        "Squeeze" | "Unsqueeze" => {
            let x = input(0)?;
            let axes = if opset >= 13 {
                vals.get(1).copied().flatten().cloned()
            } else {
                attr_ints(n, "axes")
            };
            if op == "Squeeze" {
                let r = x.shape.len();
                let axes: Vec<usize> = match axes {
                    Some(a) => a.iter().map(|&a| norm_axis(a, r)).collect::<Result<_, _>>()?,
                    None if ins.len() > 1 && ins[1].is_some() => return Err("axes must be a constant".into()),
                    None => (0..r).filter(|&i| x.shape[i] == 1).collect(),
                };
                let shape = x
                    .shape
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !axes.contains(i))
                    .map(|(_, &d)| d)
                    .collect();
                Ok(vec![(Info { dtype: x.dtype, shape }, vals[0].cloned())])
            } else {
                let axes = axes.ok_or("axes must be a constant")?;
                let r = x.shape.len() + axes.len();
                let mut axes: Vec<usize> = axes.iter().map(|&a| norm_axis(a, r)).collect::<Result<_, _>>()?;
                axes.sort_unstable();
                let mut shape = Vec::with_capacity(r);
                let mut it = x.shape.iter();
                for i in 0..r {
                    if axes.contains(&i) {
                        shape.push(1);
                    } else {
                        shape.push(*it.next().ok_or("duplicate axes")?);
                    }
                }
                Ok(vec![(Info { dtype: x.dtype, shape }, vals[0].cloned())])
            }
        }
        "Shape" => {
            let x = input(0)?;
            let r = x.shape.len() as i64;
            let clamp = |v: i64| if v < 0 { (v + r).max(0) } else { v.min(r) } as usize;
            let start = clamp(attr_i(n, "start", 0));
            let end = clamp(attr(n, "end").map(|a| a.i).unwrap_or(r));
            let dims: Vec<i64> = x.shape[start..end.max(start)].iter().map(|&d| d as i64).collect();
            valued(DType::I64, vec![dims.len()], dims)
        }
        "Size" => {
            let x = input(0)?;
            valued(DType::I64, vec![], vec![numel(&x.shape)? as i64])
        }
        "Gather" => {
            let (x, idx) = (input(0)?, input(1)?);
            let axis = norm_axis(attr_i(n, "axis", 0), x.shape.len())?;
            let mut shape = x.shape[..axis].to_vec();
            shape.extend(&idx.shape);
            shape.extend(&x.shape[axis + 1..]);
            let v = match (vals[0], vals[1]) {
                (Some(data), Some(ix)) if x.shape.len() == 1 => ix
                    .iter()
                    .map(|&i| {
                        let i = if i < 0 { i + data.len() as i64 } else { i };
                        data.get(i as usize).copied()
                    })
                    .collect::<Option<Vec<_>>>(),
                _ => None,
            };
            Ok(vec![(Info { dtype: x.dtype, shape }, v)])
        }
        "GatherElements" => one(input(0)?.dtype, input(1)?.shape.clone()),
        "Slice" => {
            let x = input(0)?;
            let (starts, ends, axes, steps) = if opset < 10 {
                (
                    attr_ints(n, "starts").ok_or("missing starts")?,
                    attr_ints(n, "ends").ok_or("missing ends")?,
                    attr_ints(n, "axes"),
                    None,
                )
            } else {
                let opt = |i: usize| {
                    if ins.get(i).copied().flatten().is_some() {
                        value(i).map(|v| Some(v.clone()))
                    } else {
                        Ok(None)
                    }
                };
                (value(1)?.clone(), value(2)?.clone(), opt(3)?, opt(4)?)
            };
            let r = x.shape.len();
            let axes: Vec<usize> = match axes {
                Some(a) => a.iter().map(|&a| norm_axis(a, r)).collect::<Result<_, _>>()?,
                None if starts.len() <= r => (0..starts.len()).collect(),
                None => return Err(format!("{} starts for a rank-{r} input", starts.len())),
            };
            let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
            if starts.len() != ends.len() || axes.len() != starts.len() || steps.len() != starts.len() {
                return Err("starts, ends, axes and steps differ in length".into());
            }
            let mut shape = x.shape.clone();
            let mut ranges: Vec<(i64, i64, i64)> = x.shape.iter().map(|&d| (0, d as i64, 1)).collect();
            for k in 0..starts.len() {
                let dim = x.shape[axes[k]] as i64;
                let step = steps[k];
                if step == 0 {
                    return Err("step 0".into());
                }
                let fix = |v: i64| if v < 0 { v + dim } else { v };
                let (s, e) = if step > 0 {
                    (fix(starts[k]).clamp(0, dim), fix(ends[k]).clamp(0, dim))
                } else {
                    (fix(starts[k]).clamp(-1, dim - 1), fix(ends[k]).clamp(-1, dim - 1))
                };
                // i128: a step of i64::MIN or i64::MAX must not overflow.
                let (s128, e128, st) = (s as i128, e as i128, step as i128);
                let len = if step > 0 {
                    (e128 - s128 + st - 1).div_euclid(st)
                } else {
                    (s128 - e128 - st - 1).div_euclid(-st)
                };
                shape[axes[k]] = len.max(0) as usize;
                ranges[axes[k]] = (s, e, step);
            }
            let v = match vals[0] {
                Some(data) if r == 1 => {
                    let (s, _, step) = ranges[0];
                    Some((0..shape[0] as i64).map(|i| data[(s + i * step) as usize]).collect())
                }
                _ => None,
            };
            Ok(vec![(Info { dtype: x.dtype, shape }, v)])
        }
        "Split" => {
            let x = input(0)?;
            let axis = norm_axis(attr_i(n, "axis", 0), x.shape.len())?;
            let outs = n.output.len();
            let split: Vec<usize> = if let Some(s) = if opset >= 13 {
                vals.get(1).copied().flatten().cloned()
            } else {
                attr_ints(n, "split")
            } {
                s.iter()
                    .map(|&v| usize::try_from(v).map_err(|_| format!("negative split size {v}")))
                    .collect::<Result<_, _>>()?
            } else {
                let d = x.shape[axis];
                let chunk = d.div_ceil(outs.max(1));
                (0..outs).map(|i| chunk.min(d.saturating_sub(i * chunk))).collect()
            };
            let total = split.iter().try_fold(0usize, |a, &v| a.checked_add(v));
            if split.len() != outs || total != Some(x.shape[axis]) {
                return Err(format!("split {split:?} does not cover dimension {}", x.shape[axis]));
            }
            Ok(split
                .into_iter()
                .map(|len| {
                    let mut shape = x.shape.clone();
                    shape[axis] = len;
                    (Info { dtype: x.dtype, shape }, None)
                })
                .collect())
        }
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1" | "ReduceL2"
        | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceSumSquare" | "ArgMax" | "ArgMin" => {
            let x = input(0)?;
            let r = x.shape.len();
            let keep = attr_i(n, "keepdims", 1) != 0;
            let is_arg = op.starts_with("Arg");
            let axes_from_input = (op == "ReduceSum" && opset >= 13) || opset >= 18;
            let axes: Option<Vec<i64>> = if is_arg {
                Some(vec![attr_i(n, "axis", 0)])
            } else if axes_from_input {
                match ins.get(1).copied().flatten() {
                    Some(_) => Some(value(1)?.clone()),
                    None => None,
                }
            } else {
                attr_ints(n, "axes")
            };
            let axes: Vec<usize> = match axes {
                Some(a) if !a.is_empty() => a.iter().map(|&a| norm_axis(a, r)).collect::<Result<_, _>>()?,
                _ if attr_i(n, "noop_with_empty_axes", 0) != 0 => vec![],
                _ => (0..r).collect(),
            };
            let mut shape = Vec::new();
            for (i, &d) in x.shape.iter().enumerate() {
                if axes.contains(&i) {
                    if keep {
                        shape.push(1);
                    }
                } else {
                    shape.push(d);
                }
            }
            one(if is_arg { DType::I64 } else { x.dtype }, shape)
        }
        "Expand" => {
            let x = input(0)?;
            let target: Vec<usize> = value(1)?.iter().map(|&v| v.max(0) as usize).collect();
            one(x.dtype, broadcast(&x.shape, &target)?)
        }
        "Tile" => {
            let x = input(0)?;
            let reps = value(1)?;
            if reps.len() != x.shape.len() {
                return Err("repeats length differs from rank".into());
            }
            let shape = x
                .shape
                .iter()
                .zip(reps)
                .map(|(&d, &r)| d.checked_mul(r.max(0) as usize).ok_or("repeats overflow"))
                .collect::<Result<_, _>>()?;
            one(x.dtype, shape)
        }
        "ConstantOfShape" => {
            let shape: Vec<usize> = value(0)?.iter().map(|&v| v.max(0) as usize).collect();
            let (dtype, fill) = match attr(n, "value").and_then(|a| a.t.as_ref()) {
                Some(t) => {
                    let w = crate::model::weight_from_proto(t)?;
                    let fill = w.tensor().and_then(|t| t.to_i64_vec()).and_then(|v| v.first().copied());
                    (w.dtype, fill)
                }
                None => (DType::F32, None),
            };
            let count = numel(&shape)?;
            let v = fill.filter(|_| count <= VALUE_ELEMS_MAX).map(|f| vec![f; count]);
            Ok(vec![(Info { dtype, shape }, v)])
        }
        "Range" => {
            let scalar = |i: usize| -> Result<f64, String> {
                let c = consts.get(i).copied().flatten().ok_or_else(|| {
                    format!(
                        "input {i} ({:?}) must be a constant",
                        n.input.get(i).map(String::as_str).unwrap_or("")
                    )
                })?;
                match c.to_f64_vec().as_slice() {
                    [v] => Ok(*v),
                    other => Err(format!("input {i} must be a scalar, not {} values", other.len())),
                }
            };
            let dtype = input(0)?.dtype;
            let (start, limit, delta) = (scalar(0)?, scalar(1)?, scalar(2)?);
            if delta == 0.0 || !delta.is_finite() || !start.is_finite() || !limit.is_finite() {
                return Err("delta must be a finite non-zero number and start and limit finite".into());
            }
            let len = ((limit - start) / delta).ceil().max(0.0);
            if len > (TENSOR_BYTES_MAX / dtype.size() as u64) as f64 {
                return Err(format!("it would produce {len} elements"));
            }
            let len = len as usize;
            let v = match (vals[0], vals[2]) {
                (Some(s0), Some(d0)) if !dtype.is_float() && len <= VALUE_ELEMS_MAX => {
                    let (s0, d0) = (*s0.first().ok_or("empty start")?, *d0.first().ok_or("empty delta")?);
                    (0..len as i64)
                        .map(|i| i.checked_mul(d0).and_then(|x| x.checked_add(s0)))
                        .collect::<Option<Vec<_>>>()
                }
                _ => None,
            };
            Ok(vec![(
                Info {
                    dtype,
                    shape: vec![len],
                },
                v,
            )])
        }
        "Pad" => {
            let x = input(0)?;
            let pads = if opset >= 11 {
                value(1)?.clone()
            } else {
                attr_ints(n, "pads").ok_or("missing pads")?
            };
            let r = x.shape.len();
            let axes: Vec<usize> = match ins.get(3).copied().flatten() {
                Some(_) => value(3)?.iter().map(|&a| norm_axis(a, r)).collect::<Result<_, _>>()?,
                None => (0..r).collect(),
            };
            if pads.len() != 2 * axes.len() {
                return Err("pads length must be twice the number of axes".into());
            }
            let mut shape = x.shape.clone();
            for (k, &a) in axes.iter().enumerate() {
                let v = (shape[a] as i64)
                    .checked_add(pads[k])
                    .and_then(|v| v.checked_add(pads[k + axes.len()]))
                    .ok_or("pads overflow")?;
                shape[a] = v.max(0) as usize;
            }
            one(x.dtype, shape)
        }
        "DepthToSpace" | "SpaceToDepth" => {
            let x = input(0)?;
            let b = attr_i(n, "blocksize", 1);
            if x.shape.len() != 4 || b <= 0 {
                return Err("needs a 4-D input and a positive blocksize".into());
            }
            let b = b as usize;
            let bb = b.checked_mul(b).ok_or("blocksize overflows")?;
            let s = &x.shape;
            let mul = |a: usize, k: usize| {
                a.checked_mul(k)
                    .ok_or_else(|| format!("blocksize {b} overflows the shape"))
            };
            let shape = if op == "DepthToSpace" {
                if s[1] % bb != 0 {
                    return Err(format!("channels {} are not divisible by blocksize² {bb}", s[1]));
                }
                vec![s[0], s[1] / bb, mul(s[2], b)?, mul(s[3], b)?]
            } else {
                if s[2] % b != 0 || s[3] % b != 0 {
                    return Err(format!(
                        "height and width {:?} are not divisible by blocksize {b}",
                        &s[2..]
                    ));
                }
                vec![s[0], mul(s[1], bb)?, s[2] / b, s[3] / b]
            };
            one(x.dtype, shape)
        }
        "TopK" => {
            let x = input(0)?;
            let k = *value(1)?.first().ok_or("empty K")?;
            let axis = norm_axis(attr_i(n, "axis", -1), x.shape.len())?;
            let mut shape = x.shape.clone();
            shape[axis] = k.max(0) as usize;
            Ok(vec![
                (
                    Info {
                        dtype: x.dtype,
                        shape: shape.clone(),
                    },
                    None,
                ),
                (
                    Info {
                        dtype: DType::I64,
                        shape,
                    },
                    None,
                ),
            ])
        }
        "EyeLike" => {
            let x = input(0)?;
            let dtype = attr(n, "dtype")
                .and_then(|a| DType::from_onnx_code(a.i as i32))
                .unwrap_or(x.dtype);
            one(dtype, x.shape.clone())
        }
        "RNN" | "GRU" | "LSTM" => {
            let (x, w) = (input(0)?, input(1)?);
            if x.shape.len() != 3 || w.shape.len() != 3 {
                return Err("X and W must be 3-D".into());
            }
            let layout = attr_i(n, "layout", 0);
            let (seq, batch) = if layout == 0 {
                (x.shape[0], x.shape[1])
            } else {
                (x.shape[1], x.shape[0])
            };
            let dirs = w.shape[0];
            let gates = match op {
                "RNN" => 1,
                "GRU" => 3,
                _ => 4,
            };
            let hidden = match attr(n, "hidden_size") {
                Some(a) if a.i > 0 => a.i as usize,
                _ => w.shape[1] / gates,
            };
            let (y, yh) = if layout == 0 {
                (vec![seq, dirs, batch, hidden], vec![dirs, batch, hidden])
            } else {
                (vec![batch, seq, dirs, hidden], vec![batch, dirs, hidden])
            };
            let mut outs = vec![
                (
                    Info {
                        dtype: x.dtype,
                        shape: y,
                    },
                    None,
                ),
                (
                    Info {
                        dtype: x.dtype,
                        shape: yh.clone(),
                    },
                    None,
                ),
            ];
            if op == "LSTM" {
                outs.push((
                    Info {
                        dtype: x.dtype,
                        shape: yh,
                    },
                    None,
                ));
            }
            Ok(outs)
        }
        "Resize" | "Upsample" => {
            let x = input(0)?;
            let r = x.shape.len();
            let (scales_at, sizes_at) = match (op, opset) {
                ("Upsample", _) | (_, ..=10) => (1, usize::MAX),
                _ => (2, 3),
            };
            let axes: Vec<usize> = match attr_ints(n, "axes") {
                Some(a) => a.iter().map(|&a| norm_axis(a, r)).collect::<Result<_, _>>()?,
                None => (0..r).collect(),
            };
            let present = |i: usize| ins.get(i).copied().flatten().is_some_and(|t| t.elems() > 0);
            let mut shape = x.shape.clone();
            if present(sizes_at) {
                let sizes = value(sizes_at)?;
                if sizes.len() != axes.len() {
                    return Err("sizes and axes differ in length".into());
                }
                let policy = attr_s(n, "keep_aspect_ratio_policy").unwrap_or_else(|| "stretch".into());
                if policy != "stretch" {
                    return Err(format!("keep_aspect_ratio_policy {policy:?} has no rule"));
                }
                for (k, &a) in axes.iter().enumerate() {
                    shape[a] = usize::try_from(sizes[k]).map_err(|_| "negative size")?;
                }
            } else {
                let scales: Vec<f32> = if op == "Upsample" && opset < 9 {
                    attr(n, "scales").map(|a| a.floats.clone()).ok_or("missing scales")?
                } else {
                    let c = consts
                        .get(scales_at)
                        .copied()
                        .flatten()
                        .ok_or("its scales must be a constant")?;
                    c.to_f64_vec().into_iter().map(|v| v as f32).collect()
                };
                if scales.len() != axes.len() {
                    return Err("scales and axes differ in length".into());
                }
                for (k, &a) in axes.iter().enumerate() {
                    // As ONNX Runtime computes it: float product, truncated.
                    let v = scales[k] * shape[a] as f32;
                    if !(v.is_finite() && v >= 0.0 && (v as f64) < TENSOR_BYTES_MAX as f64) {
                        return Err(format!("scale {} gives an invalid size", scales[k]));
                    }
                    shape[a] = v as usize;
                }
            }
            one(x.dtype, shape)
        }
        "ConvTranspose" => {
            let (x, w) = (input(0)?, input(1)?);
            if x.shape.len() < 3 || w.shape.len() != x.shape.len() {
                return Err("ConvTranspose input and weight ranks do not agree".into());
            }
            let r = x.shape.len() - 2;
            let group = attr_i(n, "group", 1).max(1) as usize;
            let kernel: Vec<i64> =
                attr_ints(n, "kernel_shape").unwrap_or_else(|| w.shape[2..].iter().map(|&k| k as i64).collect());
            let strides = attr_ints(n, "strides").unwrap_or_else(|| vec![1; r]);
            let dil = attr_ints(n, "dilations").unwrap_or_else(|| vec![1; r]);
            let pads = attr_ints(n, "pads").unwrap_or_else(|| vec![0; 2 * r]);
            let outpad = attr_ints(n, "output_padding").unwrap_or_else(|| vec![0; r]);
            if kernel.len() != r || strides.len() != r || dil.len() != r || pads.len() != 2 * r || outpad.len() != r {
                return Err("kernel, strides, dilations, pads or output_padding do not match the spatial rank".into());
            }
            let auto = attr_s(n, "auto_pad").unwrap_or_default();
            let mut shape = vec![x.shape[0], w.shape[1].checked_mul(group).ok_or("channels overflow")?];
            if let Some(os) = attr_ints(n, "output_shape") {
                let os = &os[os.len().saturating_sub(r)..];
                for &d in os {
                    shape.push(usize::try_from(d).map_err(|_| "negative output_shape")?);
                }
            } else {
                for i in 0..r {
                    let xi = x.shape[i + 2] as i128;
                    let (st, dl) = (strides[i] as i128, dil[i] as i128);
                    let o = if matches!(auto.as_str(), "SAME_UPPER" | "SAME_LOWER") {
                        xi * st
                    } else {
                        let k = (kernel[i] as i128 - 1) * dl + 1;
                        st * (xi - 1) + outpad[i] as i128 + k - pads[i] as i128 - pads[i + r] as i128
                    };
                    shape.push(usize::try_from(o).map_err(|_| "output size is negative or overflows")?);
                }
            }
            one(x.dtype, shape)
        }
        "OneHot" => {
            let (idx, vals_in) = (input(0)?, input(2)?);
            let depth = consts
                .get(1)
                .copied()
                .flatten()
                .and_then(|c| c.to_f64_vec().first().copied())
                .ok_or("its depth must be a constant")?;
            if !(depth >= 1.0 && depth < TENSOR_BYTES_MAX as f64) {
                return Err(format!("depth {depth} is not a positive size"));
            }
            let r = idx.shape.len() + 1;
            let axis = norm_axis(attr_i(n, "axis", -1), r)?;
            let mut shape = idx.shape.clone();
            shape.insert(axis, depth as usize);
            one(vals_in.dtype, shape)
        }
        "QuantizeLinear" => {
            let x = input(0)?;
            let dtype = match ins.get(2).copied().flatten() {
                Some(zp) => zp.dtype,
                None => match attr(n, "output_dtype").map(|a| a.i as i32).filter(|&c| c != 0) {
                    Some(c) => DType::from_onnx_code(c).ok_or("unsupported output_dtype")?,
                    None => DType::U8,
                },
            };
            one(dtype, x.shape.clone())
        }
        "DequantizeLinear" => {
            let (x, scale) = (input(0)?, input(1)?);
            one(scale.dtype, x.shape.clone())
        }
        "DynamicQuantizeLinear" => {
            let x = input(0)?;
            Ok(vec![
                (
                    Info {
                        dtype: DType::U8,
                        shape: x.shape.clone(),
                    },
                    None,
                ),
                (
                    Info {
                        dtype: DType::F32,
                        shape: vec![],
                    },
                    None,
                ),
                (
                    Info {
                        dtype: DType::U8,
                        shape: vec![],
                    },
                    None,
                ),
            ])
        }
        _ => {
            let _ = (attr_f(n, "alpha", 0.0), attr_s(n, "mode"));
            Err(format!("shape inference does not know {op}"))
        }
    }
}

fn matmul_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    if a.is_empty() || b.is_empty() {
        return Err("MatMul operands must have rank >= 1".into());
    }
    let a2: Vec<usize> = if a.len() == 1 { vec![1, a[0]] } else { a.to_vec() };
    let b2: Vec<usize> = if b.len() == 1 { vec![b[0], 1] } else { b.to_vec() };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, nn) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return Err(format!("MatMul inner dimensions differ: {a:?} x {b:?}"));
    }
    let mut out = broadcast(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(nn);
    }
    Ok(out)
}

/// Output spatial dims of Conv and pooling ops.
fn pool_shape(n: &NodeProto, input: &[usize], kernel: &[usize], ceil_mode: bool) -> Result<Vec<usize>, String> {
    let r = input.len();
    let strides = attr_ints(n, "strides").unwrap_or_else(|| vec![1; r]);
    let dil = attr_ints(n, "dilations").unwrap_or_else(|| vec![1; r]);
    let pads = attr_ints(n, "pads").unwrap_or_else(|| vec![0; 2 * r]);
    let auto = attr_s(n, "auto_pad").unwrap_or_default();
    if strides.len() != r || dil.len() != r || pads.len() != 2 * r || kernel.len() != r {
        return Err("strides, dilations, pads or kernel do not match the spatial rank".into());
    }
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        // i128: attributes are hostile i64s, and no sum of four of them overflows i128.
        let (x, s, d) = (input[i] as i128, strides[i].max(1) as i128, dil[i].max(1) as i128);
        let k = (kernel[i] as i128 - 1) * d + 1;
        let (p0, p1) = (pads[i] as i128, pads[i + r] as i128);
        let o = match auto.as_str() {
            "SAME_UPPER" | "SAME_LOWER" => (x + s - 1) / s,
            "VALID" => (x - k) / s + 1,
            "" | "NOTSET" => {
                let span = x + p0 + p1 - k;
                if span < 0 {
                    return Err(format!("kernel {k} is larger than padded input {}", x + p0 + p1));
                }
                if ceil_mode {
                    let mut o = (span + s - 1) / s + 1;
                    // The last window must start inside the input or its left padding.
                    if (o - 1) * s >= x + p0 {
                        o -= 1;
                    }
                    o
                } else {
                    span / s + 1
                }
            }
            other => return Err(format!("unknown auto_pad {other:?}")),
        };
        out.push(usize::try_from(o.max(0)).map_err(|_| "output size overflows".to_string())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast(&[2, 1, 4], &[3, 1]), Ok(vec![2, 3, 4]));
        assert_eq!(broadcast(&[], &[5]), Ok(vec![5]));
        assert!(broadcast(&[2, 3], &[4]).is_err());
        assert_eq!(matmul_shape(&[2, 8, 3, 4], &[4, 5]), Ok(vec![2, 8, 3, 5]));
        assert_eq!(matmul_shape(&[4], &[4, 5]), Ok(vec![5]));
    }
}
