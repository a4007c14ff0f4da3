//! Static shape inference: a concrete dtype and shape for every value of a
//! graph once its symbolic dims are fixed (`--dim seq=128`, `--shape x=1,3,224,224`).
//!
//! Small integer tensors (shapes, axes, indices up to `VALUE_ELEMS_MAX`
//! elements) are also evaluated, so the `Shape -> Gather -> Concat -> Reshape`
//! chains that exporters emit resolve to constants. Where an op is not known
//! here, the type the model itself declares (`value_info`) is used; failing
//! both, the error names the node.

use crate::model::{node_label, Dim, Graph};
use crate::onnx::{attr_type, AttributeProto, NodeProto};
use splitup_tensor::DType;
use std::collections::{BTreeMap, HashMap};

/// Integer tensors up to this many elements are evaluated during inference.
pub const VALUE_ELEMS_MAX: usize = 64;

#[derive(Clone, Debug, PartialEq)]
pub struct Info {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl Info {
    pub fn bytes(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product::<u64>() * self.dtype.size() as u64
    }
    pub fn elems(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

/// What the user fixes: named dims, and whole input shapes.
#[derive(Clone, Debug, Default)]
pub struct Bindings {
    pub dims: BTreeMap<String, usize>,
    pub shapes: BTreeMap<String, Vec<usize>>,
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
}

#[derive(Clone, Debug, Default)]
pub struct Shapes {
    pub info: HashMap<String, Info>,
    /// Evaluated small integer values.
    pub values: HashMap<String, Vec<i64>>,
}

impl Shapes {
    pub fn get(&self, name: &str) -> &Info {
        &self.info[name]
    }
}

pub fn infer(g: &Graph, b: &Bindings) -> Result<Shapes, ShapeError> {
    let mut s = Shapes::default();
    for (name, vt) in &g.inputs {
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
        s.info.insert(name.clone(), Info { dtype: vt.dtype, shape });
    }
    for (name, w) in &g.weights {
        s.info.insert(
            name.clone(),
            Info {
                dtype: w.dtype,
                shape: w.shape.clone(),
            },
        );
        if let (Some(data), true) = (&w.data, matches!(w.dtype, DType::I64 | DType::I32)) {
            if w.shape.iter().product::<usize>() <= VALUE_ELEMS_MAX {
                if let Some(v) = splitup_tensor::Tensor::new(w.dtype, w.shape.clone(), data.to_vec())
                    .ok()
                    .and_then(|t| t.to_i64_vec())
                {
                    s.values.insert(name.clone(), v);
                }
            }
        }
    }
    let opset = g
        .opset
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(1);
    for n in &g.nodes {
        let ins: Vec<Option<&Info>> = n
            .input
            .iter()
            .map(|i| if i.is_empty() { None } else { s.info.get(i) })
            .collect();
        let vals: Vec<Option<&Vec<i64>>> = n.input.iter().map(|i| s.values.get(i)).collect();
        let result = infer_node(n, &ins, &vals, opset);
        let outs = match result {
            Ok(outs) => outs,
            Err(msg) => {
                // Fall back on what the model declares, if it declares everything.
                let declared: Option<Vec<Out>> = n
                    .output
                    .iter()
                    .map(|o| {
                        let vt = g
                            .value_info
                            .get(o)
                            .or_else(|| g.outputs.iter().find(|(n, _)| n == o).and_then(|(_, t)| t.as_ref()))?;
                        let shape = vt.dims.as_ref()?.iter().map(|d| match d {
                            Dim::Fixed(v) => Some(*v),
                            Dim::Sym(s) => b.dims.get(s).copied(),
                        });
                        Some((
                            Info {
                                dtype: vt.dtype,
                                shape: shape.collect::<Option<_>>()?,
                            },
                            None,
                        ))
                    })
                    .collect();
                declared.ok_or_else(|| ShapeError::Node {
                    node: node_label(n),
                    op: n.op_type.clone(),
                    value: n.output.first().cloned().unwrap_or_default(),
                    msg,
                })?
            }
        };
        for (name, (info, value)) in n.output.iter().zip(outs) {
            if name.is_empty() {
                continue;
            }
            if let Some(v) = value {
                s.values.insert(name.clone(), v);
            }
            s.info.insert(name.clone(), info);
        }
    }
    Ok(s)
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
    if a < 0 || a >= r.max(1) && !(r == 0 && a == 0) {
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
                                    "Div" if y != 0 => Some(x.div_euclid(y)),
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
        "MatMul" | "MatMulInteger" => {
            let (a, b) = (input(0)?, input(1)?);
            let dtype = if op == "MatMulInteger" { DType::I32 } else { a.dtype };
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
        "Conv" | "ConvInteger" => {
            let (x, w) = (input(0)?, input(1)?);
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
            one(if op == "ConvInteger" { DType::I32 } else { x.dtype }, shape)
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
                    shape[axis] += x.shape[axis];
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
            let a: usize = x.shape[..axis as usize].iter().product();
            let b: usize = x.shape[axis as usize..].iter().product();
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
            let total: usize = x.shape.iter().product();
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
            let known: usize = shape.iter().product();
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
            valued(DType::I64, vec![], vec![x.shape.iter().product::<usize>() as i64])
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
                None => (0..starts.len()).collect(),
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
                let len = if step > 0 {
                    (e - s + step - 1).div_euclid(step)
                } else {
                    (s - e + (-step) - 1).div_euclid(-step)
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
                s.iter().map(|&v| v as usize).collect()
            } else {
                let d = x.shape[axis];
                let chunk = d.div_ceil(outs.max(1));
                (0..outs).map(|i| chunk.min(d.saturating_sub(i * chunk))).collect()
            };
            if split.len() != outs || split.iter().sum::<usize>() != x.shape[axis] {
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
            one(
                x.dtype,
                x.shape.iter().zip(reps).map(|(&d, &r)| d * r.max(0) as usize).collect(),
            )
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
            let count: usize = shape.iter().product();
            let v = fill.filter(|_| count <= VALUE_ELEMS_MAX).map(|f| vec![f; count]);
            Ok(vec![(Info { dtype, shape }, v)])
        }
        "Range" => {
            let (s, l, d) = (value(0)?, value(1)?, value(2)?);
            let (s, l, d) = (s[0], l[0], d[0]);
            if d == 0 {
                return Err("delta 0".into());
            }
            let len = ((l - s) as f64 / d as f64).ceil().max(0.0) as usize;
            let v = (len <= VALUE_ELEMS_MAX).then(|| (0..len as i64).map(|i| s + i * d).collect());
            Ok(vec![(
                Info {
                    dtype: input(0)?.dtype,
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
                let v = shape[a] as i64 + pads[k] + pads[k + axes.len()];
                shape[a] = v.max(0) as usize;
            }
            one(x.dtype, shape)
        }
        "DepthToSpace" | "SpaceToDepth" => {
            let x = input(0)?;
            let b = attr_i(n, "blocksize", 1) as usize;
            if x.shape.len() != 4 || b == 0 {
                return Err("needs a 4-D input and a positive blocksize".into());
            }
            let s = &x.shape;
            let shape = if op == "DepthToSpace" {
                vec![s[0], s[1] / (b * b), s[2] * b, s[3] * b]
            } else {
                vec![s[0], s[1] * b * b, s[2] / b, s[3] / b]
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
        let (x, s, d) = (input[i] as i64, strides[i].max(1), dil[i].max(1));
        let k = (kernel[i] as i64 - 1) * d + 1;
        let o = match auto.as_str() {
            "SAME_UPPER" | "SAME_LOWER" => (x + s - 1) / s,
            "VALID" => (x - k) / s + 1,
            "" | "NOTSET" => {
                let span = x + pads[i] + pads[i + r] - k;
                if span < 0 {
                    return Err(format!(
                        "kernel {k} is larger than padded input {}",
                        x + pads[i] + pads[i + r]
                    ));
                }
                if ceil_mode {
                    let mut o = (span + s - 1) / s + 1;
                    // The last window must start inside the input or its left padding.
                    if (o - 1) * s >= x + pads[i] {
                        o -= 1;
                    }
                    o
                } else {
                    span / s + 1
                }
            }
            other => return Err(format!("unknown auto_pad {other:?}")),
        };
        out.push(o.max(0) as usize);
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
