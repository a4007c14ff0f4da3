//! Deploy-time calibration: how far honest runs of one task may differ.
//!
//! A task is run, on sample inputs, under the variants nodes may use (see
//! [`Variant`]); [`splitup_tensor::calibrate`] turns the spread of their
//! outputs into a tolerance per output that [`splitup_tensor::judge`] then
//! applies when a validator re-executes the task.
//!
//! Reduced precision is emulated here, on ONNX Runtime's CPU provider, by
//! rewriting the model ([`emulate_precision`]): every float32 weight and
//! input is rounded to fp16 or bf16, and so is every float32 value a
//! top-level node produces, as it would be stored between kernels. Each
//! op still computes in fp32 internally. What this does not model:
//! accumulation inside a kernel at reduced precision or in another order
//! (a GPU's bf16 GEMM with split-K, tensor-core fp16 accumulation), fused
//! kernels that keep intermediates in fp32 registers, mixed-precision
//! policies that keep some ops in fp32 (LayerNorm, Softmax) while rounding
//! others, and values inside `If`/`Loop`/`Scan` bodies (not rewritten).
//! Thread counts and optimisation levels are real ONNX Runtime settings.

use crate::runner::{self, RunError};
use crate::{OptLevel, OrtEval, OrtRuntime};
use splitup_graph::model::Weight;
use splitup_graph::onnx::{attr_type, AttributeProto, NodeProto};
use splitup_graph::shape::{self, Bindings};
use splitup_graph::Graph;
use splitup_tensor::{CalibrateError, DType, IndicesOf, OutputTolerance, Pairings, Tensor};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// The safety factor deployments use unless they choose another: the
/// calibrated spread is multiplied by this (see [`splitup_tensor::calibrate`]).
pub const SAFETY: f64 = 4.0;

/// The arithmetic a node may run a task in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    /// IEEE half precision: 11 significant bits, largest finite 65504.
    F16,
    /// bfloat16: 8 significant bits, the range of f32.
    Bf16,
    /// 4 significant bits with the range of f32 (as fp8 E4M3 has 4, though
    /// with a far smaller range). No node may use it: tests use it as the
    /// lazy node that computes below the precision the task allows.
    Bits4,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "fp32",
            Precision::F16 => "fp16",
            Precision::Bf16 => "bf16",
            Precision::Bits4 => "4-bit",
        }
    }

    /// Rounds one f32 to this precision (round to nearest; fp16 overflows
    /// to infinity and underflows to subnormals or zero, as fp16 does).
    pub fn round(self, x: f32) -> f32 {
        match self {
            Precision::F32 => x,
            Precision::F16 => half::f16::from_f32(x).to_f32(),
            Precision::Bf16 => half::bf16::from_f32(x).to_f32(),
            Precision::Bits4 => veltkamp(x, VELTKAMP_BITS4),
        }
    }
}

/// Splitting constants 2^s + 1: Veltkamp's split of an f32 (24 significant
/// bits) keeps 24 − s of them, rounded to nearest.
const VELTKAMP_BF16: f32 = 65537.0; // 2^16 + 1: 8 bits
const VELTKAMP_BITS4: f32 = 1_048_577.0; // 2^20 + 1: 4 bits

/// `x` rounded to 24 − s significant bits by Veltkamp's split (exact in
/// IEEE arithmetic while x·c does not overflow).
fn veltkamp(x: f32, c: f32) -> f32 {
    let p = x * c;
    p - (p - x)
}

/// One way a node may run a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Variant {
    pub precision: Precision,
    pub level: OptLevel,
    /// Intra-op threads of the session (0: ONNX Runtime's default).
    pub intra_threads: usize,
}

impl Variant {
    pub const fn new(precision: Precision, level: OptLevel, intra_threads: usize) -> Variant {
        Variant {
            precision,
            level,
            intra_threads,
        }
    }

    /// The variants calibration runs by default, the first being the
    /// reference: fp32 at the optimisation level nodes use, one thread;
    /// fp32 unoptimised; fp32 fully optimised on four threads; and fp16 and
    /// bf16 (emulated, see the module documentation).
    pub fn standard() -> Vec<Variant> {
        vec![
            Variant::new(Precision::F32, OptLevel::Layout, 1),
            Variant::new(Precision::F32, OptLevel::Disabled, 1),
            Variant::new(Precision::F32, OptLevel::All, 4),
            Variant::new(Precision::F16, OptLevel::Layout, 1),
            Variant::new(Precision::Bf16, OptLevel::Layout, 1),
        ]
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}t",
            self.precision.name(),
            self.level.name(),
            self.intra_threads
        )
    }
}

/// What [`emulate_precision`] rewrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Emulation {
    /// Float32 weights and inputs rounded.
    pub tensors_rounded: usize,
    /// Float32 values produced by top-level nodes, rounded where produced.
    pub values_rounded: usize,
    /// Values produced by top-level nodes whose type shape inference could
    /// not tell (left as they are).
    pub values_unknown: usize,
}

fn round_tensor(t: &Tensor, p: Precision) -> Tensor {
    let v: Vec<f32> = t
        .bytes()
        .chunks_exact(4)
        .map(|c| p.round(f32::from_le_bytes(c.try_into().expect("4 bytes"))))
        .collect();
    Tensor::from_f32(t.shape.clone(), &v).expect("same shape, same length")
}

fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attr_type::INT,
        i,
        ..Default::default()
    }
}

fn node(op: &str, name: String, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        name,
        op_type: op.into(),
        attribute,
        ..Default::default()
    }
}

/// The model and inputs as a node computing at `precision` stores them:
/// float32 weights and inputs rounded, and every float32 value a top-level
/// node produces rounded where it is produced (fp16: `Cast` to float16 and
/// back; bf16 and 4-bit: Veltkamp's split, `Mul` and two `Sub`s, which needs
/// no bfloat16 kernel and works at every opset). Value types come from
/// shape inference on the given inputs; values it cannot type are left as
/// they are and counted. The graph outputs keep their names and types.
/// Veltkamp's split overflows to NaN for |x| above about 5·10³³ (bf16) or
/// 3·10³² (4-bit): a model holding such values is left out at those
/// precisions by [`calibrate_task`], as one that overflows fp16 is.
pub fn emulate_precision(
    g: &Graph,
    inputs: &BTreeMap<String, Tensor>,
    precision: Precision,
) -> (Graph, BTreeMap<String, Tensor>, Emulation) {
    let mut stats = Emulation::default();
    if precision == Precision::F32 {
        return (g.clone(), inputs.clone(), stats);
    }
    let inputs: BTreeMap<String, Tensor> = inputs
        .iter()
        .map(|(n, t)| {
            if t.dtype == DType::F32 {
                stats.tensors_rounded += 1;
                (n.clone(), round_tensor(t, precision))
            } else {
                (n.clone(), t.clone())
            }
        })
        .collect();
    let mut out = g.clone();
    for w in out.weights.values_mut() {
        if let (DType::F32, Some(t)) = (w.dtype, w.tensor()) {
            *w = Weight {
                dtype: DType::F32,
                shape: w.shape.clone(),
                data: Some(Arc::new(round_tensor(&t, precision).into_bytes())),
            };
            stats.tensors_rounded += 1;
        }
    }
    // Types of every value, as far as inference gets.
    let b = Bindings {
        shapes: inputs
            .iter()
            .filter(|(n, _)| g.inputs.iter().any(|(i, _)| i == *n))
            .map(|(n, t)| (n.clone(), t.shape.clone()))
            .collect(),
        eval: OrtEval::evaluator().unwrap_or_default(),
        ..Default::default()
    };
    let (types, _) = shape::infer_partial(g, &b);
    let mut names: HashSet<String> = g.nodes.iter().flat_map(|n| n.output.iter().cloned()).collect();
    names.extend(g.weights.keys().cloned());
    names.extend(g.inputs.iter().map(|(n, _)| n.clone()));
    let mut fresh = |base: String| {
        let mut name = base;
        while !names.insert(name.clone()) {
            name.push('_');
        }
        name
    };
    let constant = fresh(format!("splitup.round/{}", precision.name()));
    let c = match precision {
        Precision::Bits4 => VELTKAMP_BITS4,
        _ => VELTKAMP_BF16,
    };
    out.weights.insert(
        constant.clone(),
        Weight {
            dtype: DType::F32,
            shape: vec![],
            data: Some(Arc::new(c.to_le_bytes().to_vec())),
        },
    );
    let mut nodes = Vec::with_capacity(g.nodes.len() * 3);
    for (k, n) in g.nodes.iter().enumerate() {
        let mut n = n.clone();
        let mut added = Vec::new();
        for o in n.output.iter_mut().filter(|o| !o.is_empty()) {
            match types.info.get(o.as_str()).map(|i| i.dtype) {
                Some(DType::F32) => {}
                Some(_) => continue,
                None => {
                    stats.values_unknown += 1;
                    continue;
                }
            }
            stats.values_rounded += 1;
            let value = o.clone();
            let raw = fresh(format!("splitup.round/{value}/raw"));
            *o = raw.clone();
            let name = |i: usize| format!("splitup.round/{k}/{value}/{i}");
            if precision == Precision::F16 {
                let half = fresh(format!("splitup.round/{value}/f16"));
                added.push(node("Cast", name(0), &[&raw], &half, vec![int_attr("to", 10)]));
                added.push(node("Cast", name(1), &[&half], &value, vec![int_attr("to", 1)]));
            } else {
                let scaled = fresh(format!("splitup.round/{value}/scaled"));
                let low = fresh(format!("splitup.round/{value}/low"));
                added.push(node("Mul", name(0), &[&raw, &constant], &scaled, vec![]));
                added.push(node("Sub", name(1), &[&scaled, &raw], &low, vec![]));
                added.push(node("Sub", name(2), &[&scaled, &low], &value, vec![]));
            }
        }
        nodes.push(n);
        nodes.extend(added);
    }
    out.nodes = nodes;
    (out, inputs, stats)
}

/// Runs the whole model once under `variant` (through the same gate as
/// every task) and returns its outputs by name.
pub fn run_variant(
    g: &Graph,
    inputs: &BTreeMap<String, Tensor>,
    variant: &Variant,
) -> Result<BTreeMap<String, Tensor>, RunError> {
    let (model, inputs, _) = emulate_precision(g, inputs, variant.precision);
    if let Some(n) = inputs.keys().find(|n| !model.inputs.iter().any(|(i, _)| i == *n)) {
        return Err(RunError::Inputs(format!("unknown input {n:?}")));
    }
    let mut refs = Vec::with_capacity(model.inputs.len());
    for (name, _) in &model.inputs {
        let t = inputs
            .get(name)
            .ok_or_else(|| RunError::Inputs(format!("missing input {name:?}")))?;
        refs.push((name.as_str(), t));
    }
    let rt = OrtRuntime::with_level(variant.intra_threads, variant.level)?;
    let mut session = runner::prepare_model(&model, &rt)?;
    Ok(session.run(&refs)?.into_iter().collect())
}

/// A task's calibrated tolerances and how they were obtained.
#[derive(Clone, Debug)]
pub struct Calibration {
    pub tolerances: BTreeMap<String, OutputTolerance>,
    /// The variants whose runs were calibrated from, with their outputs:
    /// the variants nodes may use for this task.
    pub runs: Vec<(Variant, BTreeMap<String, Tensor>)>,
    /// Reduced-precision variants left out, and why: the task cannot be
    /// run (or checked) at them, so nodes must not use them for it.
    pub excluded: Vec<(Variant, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    #[error("calibration needs a float32 variant first, then at least one other")]
    Variants,
    #[error("variant {variant}: {source}")]
    Run { variant: Variant, source: RunError },
    #[error(transparent)]
    Calibrate(#[from] CalibrateError),
}

/// Why a reduced-precision run cannot stand beside the reference: an
/// output the reference computes as a finite number is not finite.
fn overflow(run: &BTreeMap<String, Tensor>, reference: &BTreeMap<String, Tensor>) -> Option<String> {
    for (name, r) in reference {
        let Some(t) = run.get(name) else { continue };
        if !t.dtype.is_float() || t.shape != r.shape {
            continue;
        }
        let lost = t
            .to_f64_vec()
            .iter()
            .zip(r.to_f64_vec())
            .filter(|(a, b)| !a.is_finite() && b.is_finite())
            .count();
        if lost > 0 {
            return Some(format!(
                "output {name:?} has {lost} non-finite values where the reference has numbers"
            ));
        }
    }
    None
}

/// Calibrates the task `g` on sample `inputs`: runs it under every variant
/// (the first must be float32: the reference), and derives a tolerance per
/// output with [`splitup_tensor::calibrate`] at `safety`.
///
/// A float32 variant that fails is an error. A reduced-precision variant is
/// left out (and listed in [`Calibration::excluded`]) when the model does
/// not run at it, when it turns a finite output into infinities or NaNs, or
/// when its runs differ from the float32 ones beyond what a tolerance can
/// check ([`CalibrateError::Unstable`], tried for each reduced precision on
/// its own beside the float32 runs; should two pass alone but not together,
/// the lower is left out).
pub fn calibrate_task(
    g: &Graph,
    inputs: &BTreeMap<String, Tensor>,
    variants: &[Variant],
    safety: f64,
    pairings: &Pairings,
) -> Result<Calibration, CalibrationError> {
    if variants.len() < 2 || variants[0].precision != Precision::F32 {
        return Err(CalibrationError::Variants);
    }
    let mut runs: Vec<(Variant, BTreeMap<String, Tensor>)> = Vec::new();
    let mut excluded = Vec::new();
    for v in variants {
        match run_variant(g, inputs, v) {
            Ok(out) => {
                let lost = runs.first().and_then(|(_, r)| overflow(&out, r));
                match lost {
                    Some(why) if v.precision != Precision::F32 => excluded.push((*v, why)),
                    _ => runs.push((*v, out)),
                }
            }
            Err(e) if v.precision != Precision::F32 => excluded.push((*v, format!("does not run: {e}"))),
            Err(source) => return Err(CalibrationError::Run { variant: *v, source }),
        }
    }
    runs.sort_by_key(|(v, _)| v.precision != Precision::F32); // stable: the reference stays first
                                                              // Each reduced precision on its own beside the float32 runs: one that
                                                              // cannot be checked is left out without taking the others with it.
    let fp32 = runs.iter().filter(|(v, _)| v.precision == Precision::F32).count();
    let mut i = fp32;
    while i < runs.len() {
        let trial: Vec<BTreeMap<String, Tensor>> = runs[..fp32]
            .iter()
            .chain(std::iter::once(&runs[i]))
            .map(|(_, o)| o.clone())
            .collect();
        match splitup_tensor::calibrate(&trial, safety, pairings) {
            Err(e @ CalibrateError::Unstable { .. }) => {
                let (v, _) = runs.remove(i);
                excluded.push((v, e.to_string()));
            }
            _ => i += 1,
        }
    }
    loop {
        let outputs: Vec<BTreeMap<String, Tensor>> = runs.iter().map(|(_, o)| o.clone()).collect();
        match splitup_tensor::calibrate(&outputs, safety, pairings) {
            Ok(tolerances) => {
                return Ok(Calibration {
                    tolerances,
                    runs,
                    excluded,
                })
            }
            Err(e @ CalibrateError::Unstable { .. }) => {
                // Two reduced precisions each checkable beside float32 but
                // not beside each other: leave out the lower.
                let lowest = runs
                    .iter()
                    .enumerate()
                    .filter(|(_, (v, _))| v.precision != Precision::F32)
                    .min_by_key(|(_, (v, _))| match v.precision {
                        Precision::Bits4 => 0,
                        Precision::Bf16 => 1,
                        _ => 2,
                    })
                    .map(|(i, _)| i);
                match lowest {
                    Some(i) if runs.len() > 2 => {
                        let (v, _) = runs.remove(i);
                        excluded.push((v, e.to_string()));
                    }
                    _ => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Seeded sample inputs for calibration when the deployer gives none:
/// floats uniform in [−1, 1), integers 0 or 1 (valid indices for any
/// gather or embedding), booleans either way. Deterministic in `seed`.
pub fn sample_inputs(
    specs: &[splitup_graph::plan::TensorSpec],
    seed: u64,
) -> Result<BTreeMap<String, Tensor>, RunError> {
    let mut state = seed;
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut out = BTreeMap::new();
    for s in specs {
        let dtype = DType::from_name(&s.dtype)
            .ok_or_else(|| RunError::Inputs(format!("input {:?} has unknown dtype {:?}", s.name, s.dtype)))?;
        let shape: Vec<usize> = s.shape.iter().map(|&d| d as usize).collect();
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= 1 << 28)
            .ok_or_else(|| RunError::Inputs(format!("input {:?} {:?} is too large to sample", s.name, s.shape)))?;
        let values: Vec<f64> = (0..n)
            .map(|_| {
                let r = next();
                if dtype.is_float() {
                    (r >> 11) as f64 / (1u64 << 52) as f64 - 1.0
                } else {
                    (r & 1) as f64
                }
            })
            .collect();
        let t = Tensor::from_f64_as(dtype, shape, &values)
            .map_err(|e| RunError::Inputs(format!("input {:?}: {e}", s.name)))?;
        out.insert(s.name.clone(), t);
    }
    Ok(out)
}

/// The pairings calibration gives a task by default, found in its graph:
/// - an integer output made by `ArgMax` (first index on ties) or by
///   `TopK` (largest, sorted) of a float output of the same task is judged
///   by those values;
/// - every float output in `derived_for` (the model's outputs) whose last
///   axis holds two or more classes gets a derived check `NAME/argmax`:
///   the greedy tokens a sampler would take of it.
pub fn default_pairings(g: &Graph, outputs: &[splitup_graph::plan::TensorSpec], derived_for: &[&str]) -> Pairings {
    // The shape of a float output of the task.
    let out_shape = |name: &str| -> Option<Vec<u64>> {
        let s = outputs.iter().find(|s| s.name == name)?;
        DType::from_name(&s.dtype)?.is_float().then(|| s.shape.clone())
    };
    let attr = |n: &NodeProto, key: &str, default: i64| {
        n.attribute
            .iter()
            .find(|a| a.name == key && a.r#type == attr_type::INT)
            .map(|a| a.i)
            .unwrap_or(default)
    };
    let mut pairings = Pairings::new();
    for n in &g.nodes {
        if !n.domain.is_empty() && n.domain != "ai.onnx" {
            continue;
        }
        let (indices, ok) = match n.op_type.as_str() {
            "ArgMax" => (n.output.first(), attr(n, "select_last_index", 0) == 0),
            "TopK" => (n.output.get(1), attr(n, "largest", 1) == 1 && attr(n, "sorted", 1) == 1),
            _ => continue,
        };
        let (Some(indices), Some(values)) = (indices, n.input.first()) else {
            continue;
        };
        let Some(shape) = out_shape(values) else { continue };
        if !ok || !outputs.iter().any(|o| &o.name == indices) {
            continue;
        }
        let default_axis = if n.op_type == "TopK" { -1 } else { 0 };
        let rank = shape.len() as i64;
        let axis = attr(n, "axis", default_axis);
        let axis = if axis < 0 { axis + rank } else { axis };
        if (0..rank).contains(&axis) {
            pairings.insert(
                indices.clone(),
                IndicesOf {
                    values: values.clone(),
                    axis: axis as usize,
                },
            );
        }
    }
    for name in derived_for {
        let Some(shape) = out_shape(name) else { continue };
        if shape.last().is_some_and(|&d| d >= 2) {
            pairings.insert(
                format!("{name}/argmax"),
                IndicesOf {
                    values: name.to_string(),
                    axis: shape.len() - 1,
                },
            );
        }
    }
    pairings
}

/// One task of a plan, calibrated.
#[derive(Clone, Debug)]
pub struct TaskCalibration {
    pub task: u64,
    pub pairings: Pairings,
    pub calibration: Calibration,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanCalibrationError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("task {task}: {source}")]
    Task { task: u64, source: CalibrationError },
}

/// Calibrates every task of a plan (see [`calibrate_task`]), in manifest
/// order, which is topological: each task on the inputs that the reference
/// (first variant's) runs of the tasks upstream give it, starting from the
/// model's `inputs`. `files` holds the plan's files by name; `progress` is
/// called after each task with (done, total).
pub fn calibrate_plan(
    m: &splitup_graph::plan::Manifest,
    files: &BTreeMap<String, Vec<u8>>,
    inputs: &BTreeMap<String, Tensor>,
    variants: &[Variant],
    safety: f64,
    progress: &dyn Fn(usize, usize),
) -> Result<Vec<TaskCalibration>, PlanCalibrationError> {
    runner::check_inputs(&m.inputs, inputs)?;
    let file = |f: &splitup_graph::plan::FileRef| {
        files.get(&f.file).ok_or_else(|| RunError::File {
            path: f.file.clone(),
            msg: "missing from the plan".into(),
        })
    };
    // Values by (source task, output index); task 0 is the user.
    let mut values: BTreeMap<(u64, u64), Tensor> = BTreeMap::new();
    for (i, s) in m.inputs.iter().enumerate() {
        values.insert((0, i as u64), inputs[&s.name].clone());
    }
    let mut out = Vec::with_capacity(m.tasks.len());
    for (k, t) in m.tasks.iter().enumerate() {
        let bytes =
            splitup_graph::plan::assemble_task(t, file(&t.graph)?, file(&t.weights)?).map_err(RunError::from)?;
        let g = Graph::load(&bytes).map_err(RunError::Refused)?;
        let mut task_inputs = BTreeMap::new();
        for c in m.connections.iter().filter(|c| c.destination_task_id == t.id) {
            let spec = t
                .inputs
                .get(c.dest_input_index as usize)
                .ok_or_else(|| RunError::Manifest(format!("task {} has no input {}", t.id, c.dest_input_index)))?;
            let v = values
                .get(&(c.source_task_id, c.source_output_index))
                .ok_or_else(|| RunError::Manifest(format!("task {} is fed before its source ran", t.id)))?;
            task_inputs.insert(spec.name.clone(), v.clone());
        }
        let model_outputs: Vec<&str> = m
            .connections
            .iter()
            .filter(|c| c.source_task_id == t.id && c.destination_task_id == 0)
            .filter_map(|c| t.outputs.get(c.source_output_index as usize))
            .map(|s| s.name.as_str())
            .collect();
        let mut pairings = default_pairings(&g, &t.outputs, &model_outputs);
        let calibration = loop {
            match calibrate_task(&g, &task_inputs, variants, safety, &pairings) {
                // A pairing found in the graph that the outputs do not bear
                // out (shapes): judge without it rather than fail the deploy.
                Err(CalibrationError::Calibrate(CalibrateError::Pairing { output, .. }))
                    if pairings.remove(&output).is_some() => {}
                Err(source) => return Err(PlanCalibrationError::Task { task: t.id, source }),
                Ok(c) => break c,
            }
        };
        let reference = &calibration.runs[0].1;
        for (o, spec) in t.outputs.iter().enumerate() {
            let v = reference
                .get(&spec.name)
                .ok_or_else(|| RunError::Manifest(format!("task {} did not produce {:?}", t.id, spec.name)))?;
            values.insert((t.id, o as u64), v.clone());
        }
        out.push(TaskCalibration {
            task: t.id,
            pairings,
            calibration,
        });
        progress(k + 1, m.tasks.len());
    }
    Ok(out)
}
