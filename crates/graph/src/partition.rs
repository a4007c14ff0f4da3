//! The partitioner: cuts a graph into tasks that each fit a memory budget.
//!
//! Objective, in order (DESIGN.md §3): every task fits; fewest tasks; fewest
//! bytes crossing cuts; balanced compute (smallest maximum task FLOPs).
//!
//! Tasks are contiguous ranges of one topological order. For every start `i`
//! the range is grown one node at a time while its memory requirement is
//! updated incrementally (weights, held inputs, live activations), so each
//! candidate costs O(1) amortised; a forward-relaxing dynamic program over
//! cut points picks the lexicographically best plan. For a chain this is
//! optimal; for a DAG it is optimal among plans that respect the order, and
//! ranges without data dependencies between them run as parallel tasks.
//!
//! Memory of a task = weight bytes + its inputs (held for the whole task) +
//! the peak of the values it produces that are still needed, all times
//! `1 + overhead` for the runtime's own buffers.

use crate::cost;
use crate::model::{node_inputs, node_label, Graph};
use crate::shape::{self, Bindings, Shapes};
use std::collections::HashMap;

#[derive(Clone, Debug)]
pub struct Options {
    /// Memory of each node; one entry means "every node has this much".
    pub capacities: Vec<u64>,
    /// Runtime overhead on top of weights and activations, in percent.
    pub overhead_pct: u64,
    /// Ops whose weight exceeds the budget are split into column slices.
    pub vertical_split: bool,
}

impl Options {
    pub fn uniform(vram_bytes: u64) -> Options {
        Options {
            capacities: vec![vram_bytes],
            overhead_pct: 10,
            vertical_split: true,
        }
    }
    fn heterogeneous(&self) -> bool {
        self.capacities.len() > 1
    }
    fn max_capacity(&self) -> u64 {
        self.capacities.iter().copied().max().unwrap_or(0)
    }
    fn with_overhead(&self, bytes: u64) -> u64 {
        bytes.saturating_add(bytes.saturating_mul(self.overhead_pct).div_ceil(100))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// Indices into the partitioned graph's nodes: `start..end`.
    pub start: usize,
    pub end: usize,
    /// Values the task receives (model inputs or other tasks' outputs), in order of first use.
    pub inputs: Vec<String>,
    /// Values the task produces that later tasks or the user need.
    pub outputs: Vec<String>,
    pub weights: Vec<String>,
    pub weight_bytes: u64,
    /// Inputs held plus the peak of live produced values.
    pub activation_bytes: u64,
    /// (weights + activations) × (1 + overhead).
    pub vram_bytes: u64,
    pub flops: u64,
    /// Bytes of inputs that come from other tasks (not from the user).
    pub cut_in_bytes: u64,
    /// Index into `Options::capacities` of the node this task is placed on.
    pub placement: usize,
}

#[derive(Clone, Debug)]
pub struct Partition {
    /// The graph after vertical splits; tasks index its nodes.
    pub graph: Graph,
    pub shapes: Shapes,
    pub tasks: Vec<Task>,
    /// Nodes that were split vertically, with the number of slices.
    pub splits: Vec<(String, usize)>,
}

impl Partition {
    pub fn cut_bytes(&self) -> u64 {
        self.tasks.iter().map(|t| t.cut_in_bytes).sum()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PartitionError {
    #[error(transparent)]
    Shape(#[from] shape::ShapeError),
    #[error("no valid plan: tensor {tensor:?} ({shape:?} {dtype}, {bytes} bytes) alone needs {need} bytes with overhead in node {node:?} ({op}), which exceeds the budget of {budget} bytes by {over} bytes")]
    Activation {
        tensor: String,
        shape: Vec<usize>,
        dtype: String,
        bytes: u64,
        need: u64,
        node: String,
        op: String,
        budget: u64,
        over: u64,
    },
    #[error("no valid plan: weight {weight:?} of node {node:?} ({op}) is {bytes} bytes and the node needs {need} bytes with overhead, exceeding the budget of {budget} bytes by {over} bytes; {why}")]
    Weight {
        why: String,
        weight: String,
        node: String,
        op: String,
        bytes: u64,
        need: u64,
        budget: u64,
        over: u64,
    },
    #[error("the budget must be positive")]
    NoBudget,
    #[error("{0}")]
    Model(String),
    #[error("model output {0:?} is a model input or a weight; there is nothing to compute for it")]
    TrivialOutput(String),
}

/// Per-value facts the dynamic program needs, indexed by value id.
struct Index {
    bytes: Vec<u64>,
    /// Producing node, `None` for model inputs.
    producer: Vec<Option<usize>>,
    /// Last node that reads the value (`usize::MAX` for model outputs).
    last_use: Vec<usize>,
    /// Per node: (non-weight inputs, weight inputs, outputs), deduplicated.
    node_inputs: Vec<Vec<usize>>,
    node_weights: Vec<Vec<usize>>,
    node_outputs: Vec<Vec<usize>>,
    /// Values whose last use is node k (produced by a node).
    dies_at: Vec<Vec<usize>>,
    weight_bytes: Vec<u64>,
    flops: Vec<u64>,
    value_names: Vec<String>,
    weight_names: Vec<String>,
}

fn index(g: &Graph, s: &Shapes) -> Result<Index, PartitionError> {
    let mut wids: HashMap<&str, usize> = HashMap::new();
    let mut ix = Index {
        bytes: vec![],
        producer: vec![],
        last_use: vec![],
        node_inputs: vec![],
        node_weights: vec![],
        node_outputs: vec![],
        dies_at: vec![Vec::new(); g.nodes.len()],
        weight_bytes: vec![],
        flops: vec![],
        value_names: vec![],
        weight_names: vec![],
    };
    for (name, w) in &g.weights {
        wids.insert(name, ix.weight_bytes.len());
        ix.weight_bytes.push(w.byte_len());
        ix.weight_names.push(name.clone());
    }
    let add = |ix: &mut Index, name: &str, producer: Option<usize>| -> usize {
        let id = ix.bytes.len();
        ix.bytes.push(s.info.get(name).map(|i| i.bytes()).unwrap_or(0));
        ix.producer.push(producer);
        ix.last_use.push(producer.unwrap_or(0));
        ix.value_names.push(name.to_string());
        id
    };
    let mut id_of: HashMap<String, usize> = HashMap::new();
    for (name, _) in &g.inputs {
        let id = add(&mut ix, name, None);
        id_of.insert(name.clone(), id);
    }
    for (k, n) in g.nodes.iter().enumerate() {
        let mut ins = Vec::new();
        let mut ws = Vec::new();
        for i in &node_inputs(n) {
            if let Some(&w) = wids.get(i.as_str()) {
                if !ws.contains(&w) {
                    ws.push(w);
                }
            } else {
                let v = *id_of.get(i).ok_or_else(|| {
                    PartitionError::Shape(shape::ShapeError::Node {
                        node: node_label(n),
                        op: n.op_type.clone(),
                        value: i.clone(),
                        msg: "reads a value that nothing defines".into(),
                    })
                })?;
                if !ins.contains(&v) {
                    ins.push(v);
                }
                ix.last_use[v] = ix.last_use[v].max(k);
            }
        }
        let mut outs = Vec::new();
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            let id = add(&mut ix, o, Some(k));
            id_of.insert(o.clone(), id);
            outs.push(id);
        }
        ix.node_inputs.push(ins);
        ix.node_weights.push(ws);
        ix.node_outputs.push(outs);
        ix.flops.push(cost::node_flops(n, s));
    }
    for (o, _) in &g.outputs {
        match id_of.get(o) {
            Some(&v) if ix.producer[v].is_some() => ix.last_use[v] = usize::MAX,
            _ => return Err(PartitionError::TrivialOutput(o.clone())),
        }
    }
    for v in 0..ix.bytes.len() {
        if ix.producer[v].is_some() && ix.last_use[v] != usize::MAX {
            ix.dies_at[ix.last_use[v]].push(v);
        }
    }
    Ok(ix)
}

/// A candidate range `start..end` with its costs.
#[derive(Clone, Copy, Debug)]
struct Segment {
    start: usize,
    end: usize,
    vram: u64,
    /// Held inputs plus peak live produced values.
    act: u64,
    cut_in: u64,
    flops: u64,
}

/// Enumerates, for each start, every range whose requirement fits `limit`,
/// calling `f` on each. Requirements only grow as a range grows, so the
/// enumeration for a start stops at the first range that does not fit.
fn for_each_segment(ix: &Index, opts: &Options, limit: u64, mut f: impl FnMut(Segment)) {
    let n = ix.node_inputs.len();
    let mut in_seen = vec![usize::MAX; ix.bytes.len()];
    let mut w_seen = vec![usize::MAX; ix.weight_bytes.len()];
    for i in 0..n {
        // u128: a graph may hold many tensors of up to 2^50 bytes each, and
        // `live` goes down as well as up, so saturation would be wrong.
        let (mut weights, mut held, mut cut_in, mut live, mut peak, mut flops) =
            (0u128, 0u128, 0u128, 0u128, 0u128, 0u128);
        for j in i..n {
            for &w in &ix.node_weights[j] {
                if w_seen[w] != i {
                    w_seen[w] = i;
                    weights += ix.weight_bytes[w] as u128;
                }
            }
            for &v in &ix.node_inputs[j] {
                let outside = ix.producer[v].is_none_or(|p| p < i);
                if outside && in_seen[v] != i {
                    in_seen[v] = i;
                    held += ix.bytes[v] as u128;
                    if ix.producer[v].is_some() {
                        cut_in += ix.bytes[v] as u128;
                    }
                }
            }
            if j > i {
                for &v in &ix.dies_at[j - 1] {
                    if ix.producer[v].is_some_and(|p| p >= i) {
                        live -= ix.bytes[v] as u128;
                    }
                }
            }
            live += ix.node_outputs[j].iter().map(|&v| ix.bytes[v] as u128).sum::<u128>();
            peak = peak.max(live);
            flops += ix.flops[j] as u128;
            let vram = opts.with_overhead(clamp64(weights + held + peak));
            if vram > limit {
                break;
            }
            f(Segment {
                start: i,
                end: j + 1,
                vram,
                act: clamp64(held + peak),
                cut_in: clamp64(cut_in),
                flops: clamp64(flops),
            });
        }
    }
}

/// A u128 sum as u64, saturating (a need of u64::MAX fits no budget).
fn clamp64(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Sum of byte counts, saturating.
fn sum_sat(it: impl Iterator<Item = u64>) -> u64 {
    it.fold(0u64, |a, b| a.saturating_add(b))
}

type Score = (usize, u64, u64);

fn better(a: Score, b: Option<Score>) -> bool {
    b.is_none_or(|b| a < b)
}

/// The graph as the partitioner sees it, with its shapes: inputs given a
/// value (`--value`) frozen into weights, and every `If` whose condition is
/// then known replaced by the branch it takes (repeatedly: a branch may hold
/// further `If`s, and inference may stop at an `If` it can only see through
/// once folded).
pub fn prepare(graph: &Graph, bindings: &Bindings) -> Result<(Graph, Shapes), PartitionError> {
    let mut g = graph.clone();
    crate::transform::freeze_inputs(&mut g, &bindings.values).map_err(PartitionError::Model)?;
    loop {
        let (shapes, err) = shape::infer_partial(&g, bindings);
        let folded =
            crate::transform::fold_constant_ifs(&mut g, &shapes).map_err(|e| PartitionError::Model(e.to_string()))?;
        if folded > 0 {
            continue;
        }
        if let Some(e) = err {
            return Err(e.into());
        }
        // A Loop bound computed by a foldable chain becomes a weight, so every
        // node can check the bound from the task file alone.
        let mut changed = false;
        for k in 0..g.nodes.len() {
            let n = &g.nodes[k];
            let Some(m) = n.input.first().filter(|m| n.op_type == "Loop" && !m.is_empty()) else {
                continue;
            };
            if g.weights.contains_key(m) {
                continue;
            }
            if let Some(t) = shapes.consts.get(m) {
                let name = format!("{m}/trips");
                g.weights.insert(
                    name.clone(),
                    crate::model::Weight {
                        dtype: t.dtype,
                        shape: t.shape.clone(),
                        data: Some(std::sync::Arc::new(t.bytes().to_vec())),
                    },
                );
                g.nodes[k].input[0] = name;
                changed = true;
            }
        }
        if changed {
            crate::transform::prune_dead(&mut g);
            continue;
        }
        return Ok((g, shapes));
    }
}

/// Partitions `graph` for the given budget.
pub fn partition(graph: &Graph, bindings: &Bindings, opts: &Options) -> Result<Partition, PartitionError> {
    partition_with_progress(graph, bindings, opts, &mut |_, _| {})
}

/// As [`partition`], reporting progress as (nodes scanned, total nodes).
pub fn partition_with_progress(
    graph: &Graph,
    bindings: &Bindings,
    opts: &Options,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Partition, PartitionError> {
    if opts.capacities.is_empty() || opts.capacities.contains(&0) {
        return Err(PartitionError::NoBudget);
    }
    let (mut g, mut shapes) = prepare(graph, bindings)?;
    let mut splits = Vec::new();
    check_activations(&g, &shapes, opts)?;
    if opts.vertical_split {
        split_oversized(&mut g, &mut shapes, bindings, opts, &mut splits)?;
    }
    let ix = index(&g, &shapes)?;
    check_single_nodes(&g, &shapes, &ix, opts)?;
    let n = g.nodes.len();
    let tasks = if opts.heterogeneous() {
        match place_pipeline(&ix, opts, progress) {
            Some(t) => t,
            None => place_shared(&ix, opts, progress),
        }
    } else {
        chain_plan(&ix, opts, opts.capacities[0], progress)
            .into_iter()
            .map(|seg| (seg, 0))
            .collect()
    };
    progress(n, n);
    let tasks = tasks
        .into_iter()
        .map(|(seg, placement)| describe(&g, &ix, seg, placement))
        .collect();
    Ok(Partition {
        graph: g,
        shapes,
        tasks,
        splits,
    })
}

/// Heterogeneous nodes, one task per node, in the order the nodes were
/// given (a pipeline): DP over (cut point, node).
fn place_pipeline(ix: &Index, opts: &Options, progress: &mut dyn FnMut(usize, usize)) -> Option<Vec<(Segment, usize)>> {
    let n = ix.node_inputs.len();
    let m = opts.capacities.len();
    let mut segs: Vec<Segment> = Vec::new();
    for_each_segment(ix, opts, opts.max_capacity(), |s| segs.push(s));
    progress(n / 2, n);
    // score[j][k]: best plan covering nodes ..j using machines ..k.
    let mut score: Vec<Vec<Option<Score>>> = vec![vec![None; m + 1]; n + 1];
    let mut back: Vec<Vec<Option<(Segment, usize)>>> = vec![vec![None; m + 1]; n + 1];
    score[0].fill(Some((0, 0, 0)));
    segs.sort_by_key(|s| s.start);
    for k in 1..=m {
        let cap = opts.capacities[k - 1];
        // Machine k may stay unused: carry the plans of machines ..k-1
        // (a `None` back-pointer means "look at machine k-1").
        for row in score.iter_mut() {
            row[k] = row[k - 1];
        }
        for seg in segs.iter().filter(|s| s.vram <= cap) {
            let Some(base) = score[seg.start][k - 1] else {
                continue;
            };
            let cand = (base.0 + 1, base.1 + seg.cut_in, base.2.max(seg.flops));
            if better(cand, score[seg.end][k]) {
                score[seg.end][k] = Some(cand);
                back[seg.end][k] = Some((*seg, k - 1));
            }
        }
    }
    score[n][m]?;
    let mut out = Vec::new();
    let (mut j, mut k) = (n, m);
    while j > 0 {
        match back[j][k] {
            Some((seg, machine)) => {
                out.push((seg, machine));
                j = seg.start;
                k = machine;
            }
            None => k -= 1,
        }
    }
    out.reverse();
    Some(out)
}

/// The lexicographically best sequence of ranges, each within `limit`:
/// forward relaxation over cut points, then a backtrack from the end.
fn chain_plan(ix: &Index, opts: &Options, limit: u64, progress: &mut dyn FnMut(usize, usize)) -> Vec<Segment> {
    let n = ix.node_inputs.len();
    let mut best: Vec<Option<Segment>> = vec![None; n + 1];
    let mut start_score: Vec<Option<Score>> = vec![None; n + 1];
    start_score[0] = Some((0, 0, 0));
    let mut last_i = usize::MAX;
    for_each_segment(ix, opts, limit, |seg| {
        if seg.start != last_i {
            last_i = seg.start;
            if seg.start % 256 == 0 {
                progress(seg.start, n);
            }
        }
        let Some(base) = start_score[seg.start] else {
            return;
        };
        let cand = (base.0 + 1, base.1 + seg.cut_in, base.2.max(seg.flops));
        if better(cand, start_score[seg.end]) {
            start_score[seg.end] = Some(cand);
            best[seg.end] = Some(seg);
        }
    });
    let mut segs = Vec::new();
    let mut at = n;
    while at > 0 {
        let seg = best[at].expect("single nodes fit the limit, so every prefix has a plan");
        segs.push(seg);
        at = seg.start;
    }
    segs.reverse();
    segs
}

/// Fewer nodes than tasks: plan for the largest node, then place each task
/// on the smallest node it fits (several tasks may share a node).
fn place_shared(ix: &Index, opts: &Options, progress: &mut dyn FnMut(usize, usize)) -> Vec<(Segment, usize)> {
    let segs = chain_plan(ix, opts, opts.max_capacity(), progress);
    let mut load = vec![0usize; opts.capacities.len()];
    segs.into_iter()
        .map(|seg| {
            let machine = (0..opts.capacities.len())
                .filter(|&k| opts.capacities[k] >= seg.vram)
                .min_by_key(|&k| (load[k], opts.capacities[k]))
                .expect("fits the largest");
            load[machine] += 1;
            (seg, machine)
        })
        .collect()
}

fn describe(g: &Graph, ix: &Index, seg: Segment, placement: usize) -> Task {
    let (i, j) = (seg.start, seg.end);
    let mut inputs = Vec::new();
    let mut weights = Vec::new();
    let mut outputs = Vec::new();
    let mut weight_bytes = 0;
    for k in i..j {
        for &v in &ix.node_inputs[k] {
            if ix.producer[v].is_none_or(|p| p < i) && !inputs.contains(&v) {
                inputs.push(v);
            }
        }
        for &w in &ix.node_weights[k] {
            if !weights.contains(&w) {
                weights.push(w);
                weight_bytes += ix.weight_bytes[w];
            }
        }
        for &v in &ix.node_outputs[k] {
            if ix.last_use[v] >= j {
                outputs.push(v);
            }
        }
    }
    let _ = g;
    Task {
        start: i,
        end: j,
        inputs: inputs.iter().map(|&v| ix.value_names[v].clone()).collect(),
        outputs: outputs.iter().map(|&v| ix.value_names[v].clone()).collect(),
        weights: weights.iter().map(|&w| ix.weight_names[w].clone()).collect(),
        weight_bytes,
        activation_bytes: seg.act,
        vram_bytes: seg.vram,
        flops: seg.flops,
        cut_in_bytes: seg.cut_in,
        placement,
    }
}

/// Requirement of a single node run alone (the same accounting as a range).
fn single_need(ix: &Index, opts: &Options, k: usize) -> u64 {
    let w = sum_sat(ix.node_weights[k].iter().map(|&w| ix.weight_bytes[w]));
    let a = sum_sat(
        ix.node_inputs[k]
            .iter()
            .chain(&ix.node_outputs[k])
            .map(|&v| ix.bytes[v]),
    );
    opts.with_overhead(w.saturating_add(a))
}

/// Memory of node `k` run alone: its weights, inputs and outputs, with overhead.
fn node_need(g: &Graph, s: &Shapes, k: usize, opts: &Options) -> u64 {
    let n = &g.nodes[k];
    let mut seen = std::collections::HashSet::new();
    let ins = node_inputs(n);
    let bytes: u64 = ins
        .iter()
        .chain(&n.output)
        .filter(|v| !v.is_empty() && seen.insert(v.as_str()))
        .map(|v| {
            g.weights
                .get(v)
                .map(|w| w.byte_len())
                .or_else(|| s.info.get(v).map(|i| i.bytes()))
                .unwrap_or(0)
        })
        .fold(0u64, u64::saturating_add);
    opts.with_overhead(bytes)
}

/// Most slices one op is split into.
pub const SLICES_MAX: usize = 4096;

/// Splits every node whose requirement alone exceeds the budget and can be
/// split, into as few slices as make every slice fit (checked on the split
/// graph, so rounding of uneven slices is accounted for).
fn split_oversized(
    g: &mut Graph,
    shapes: &mut Shapes,
    b: &Bindings,
    opts: &Options,
    splits: &mut Vec<(String, usize)>,
) -> Result<(), PartitionError> {
    let budget = opts.max_capacity();
    let mut k = 0;
    while k < g.nodes.len() {
        let n = &g.nodes[k];
        let weight: u64 = n
            .input
            .iter()
            .filter_map(|i| g.weights.get(i))
            .map(|w| w.byte_len())
            .fold(0u64, u64::saturating_add);
        let need = node_need(g, shapes, k, opts);
        if need <= budget || weight == 0 || !matches!(n.op_type.as_str(), "MatMul" | "Gemm" | "Conv" | "Gather") {
            k += 1;
            continue;
        }
        // First guess: the weight and output shared out over what the budget
        // leaves after the (unsplit) inputs; then grow until every slice fits.
        let room = (budget as u128 * 100 / (100 + opts.overhead_pct as u128)) as u64;
        let inputs: u64 = n
            .input
            .iter()
            .filter(|i| !g.weights.contains_key(*i))
            .filter_map(|i| shapes.info.get(i))
            .map(|i| i.bytes())
            .fold(0u64, u64::saturating_add);
        let out: u64 = n
            .output
            .first()
            .and_then(|o| shapes.info.get(o))
            .map(|i| i.bytes())
            .unwrap_or(0);
        if room <= inputs {
            k += 1; // the inputs alone do not fit: reported by the activation check
            continue;
        }
        let label = node_label(n);
        let mut parts = weight.saturating_add(out).div_ceil(room - inputs).max(2) as usize;
        let mut done = None;
        while parts <= SLICES_MAX {
            let mut trial = g.clone();
            let Some(made) = crate::split::split_node(&mut trial, k, parts) else {
                break;
            };
            let trial_shapes = shape::infer(&trial, b)?;
            if (k..k + made).all(|i| node_need(&trial, &trial_shapes, i, opts) <= budget) || made < parts {
                done = Some((trial, trial_shapes, made));
                break;
            }
            parts += (parts / 8).max(1);
        }
        match done {
            Some((trial, trial_shapes, made)) => {
                *g = trial;
                *shapes = trial_shapes;
                splits.push((label, made));
                k += made + 1;
            }
            None => k += 1,
        }
    }
    Ok(())
}

/// The error for a tensor of node `n` that no budget of `budget` can hold.
fn activation_error(
    tensor: &str,
    info: &crate::shape::Info,
    n: &crate::onnx::NodeProto,
    need: u64,
    budget: u64,
) -> PartitionError {
    PartitionError::Activation {
        tensor: tensor.to_string(),
        shape: info.shape.clone(),
        dtype: info.dtype.name().into(),
        bytes: info.bytes(),
        need,
        node: node_label(n),
        op: n.op_type.clone(),
        budget,
        over: need - budget,
    }
}

/// Rejects a graph in which some node's activations (inputs and outputs that
/// are not weights) alone exceed the largest budget: no split can help.
fn check_activations(g: &Graph, s: &Shapes, opts: &Options) -> Result<(), PartitionError> {
    let budget = opts.max_capacity();
    for n in &g.nodes {
        let ins = node_inputs(n);
        let acts: Vec<(&String, &crate::shape::Info)> = ins
            .iter()
            .chain(&n.output)
            .filter(|v| !v.is_empty() && !g.weights.contains_key(*v))
            .filter_map(|v| s.info.get(v).map(|i| (v, i)))
            .collect();
        let need = opts.with_overhead(sum_sat(acts.iter().map(|(_, i)| i.bytes())));
        if need > budget {
            let (t, info) = acts
                .iter()
                .max_by_key(|(_, i)| i.bytes())
                .expect("a positive need has a tensor");
            return Err(activation_error(t, info, n, need, budget));
        }
    }
    Ok(())
}

/// Why a node whose weight exceeds the budget was not split vertically.
fn no_split_reason(n: &crate::onnx::NodeProto, opts: &Options) -> String {
    if !opts.vertical_split {
        "vertical splits are off (--no-vertical-split)".into()
    } else if matches!(n.op_type.as_str(), "MatMul" | "Gemm" | "Conv" | "Gather") {
        format!("even split into the most column slices allowed ({SLICES_MAX}) it does not fit")
    } else {
        format!("{} cannot be split vertically", n.op_type)
    }
}

fn check_single_nodes(g: &Graph, s: &Shapes, ix: &Index, opts: &Options) -> Result<(), PartitionError> {
    let budget = opts.max_capacity();
    for (k, n) in g.nodes.iter().enumerate() {
        let need = single_need(ix, opts, k);
        if need <= budget {
            continue;
        }
        let over = need - budget;
        let ins = node_inputs(n);
        let weight = ins
            .iter()
            .filter_map(|i| g.weights.get(i).map(|w| (i, w.byte_len())))
            .max_by_key(|x| x.1);
        let act = ins
            .iter()
            .chain(&n.output)
            .filter(|i| !i.is_empty() && !g.weights.contains_key(*i))
            .filter_map(|i| s.info.get(i).map(|info| (i, info)))
            .max_by_key(|x| x.1.bytes());
        match (weight, act) {
            (Some((w, wb)), Some((_, a))) if wb >= a.bytes() => {
                return Err(PartitionError::Weight {
                    why: no_split_reason(n, opts),
                    weight: w.clone(),
                    node: node_label(n),
                    op: n.op_type.clone(),
                    bytes: wb,
                    need,
                    budget,
                    over,
                })
            }
            (_, Some((t, info))) => return Err(activation_error(t, info, n, need, budget)),
            (Some((w, wb)), None) => {
                return Err(PartitionError::Weight {
                    why: no_split_reason(n, opts),
                    weight: w.clone(),
                    node: node_label(n),
                    op: n.op_type.clone(),
                    bytes: wb,
                    need,
                    budget,
                    over,
                })
            }
            (None, None) => {}
        }
    }
    Ok(())
}

/// The smallest budget any plan of this graph can have: the largest
/// activation footprint (non-weight inputs plus outputs) of a single node,
/// with overhead. Weights can be split vertically; activations cannot.
pub fn activation_floor(graph: &Graph, bindings: &Bindings, overhead_pct: u64) -> Result<u64, PartitionError> {
    let (graph, s) = prepare(graph, bindings)?;
    let graph = &graph;
    let opts = Options {
        capacities: vec![1],
        overhead_pct,
        vertical_split: false,
    };
    Ok(graph
        .nodes
        .iter()
        .map(|n| {
            let io: u64 = node_inputs(n)
                .iter()
                .chain(&n.output)
                .filter(|v| !v.is_empty() && !graph.weights.contains_key(*v))
                .filter_map(|v| s.info.get(v))
                .map(|i| i.bytes())
                .fold(0u64, u64::saturating_add);
            opts.with_overhead(io)
        })
        .max()
        .unwrap_or(0))
}

/// The smallest uniform budget at which this graph partitions (with the
/// options' overhead and vertical splitting), found by bisection between
/// the activation floor and the budget of one task holding everything, and
/// confirmed by a successful partition at exactly that budget. `None` when
/// no budget works (the graph fails for another reason).
pub fn smallest_budget(graph: &Graph, bindings: &Bindings, opts: &Options) -> Result<Option<u64>, PartitionError> {
    // Prepare once: the prepared graph has its `--value` inputs frozen
    // already, so every trial below starts from it with no values to freeze.
    let (g, s) = prepare(graph, bindings)?;
    let b = Bindings {
        values: Default::default(),
        ..bindings.clone()
    };
    let trial = |budget: u64| {
        partition(
            &g,
            &b,
            &Options {
                capacities: vec![budget],
                ..opts.clone()
            },
        )
        .is_ok()
    };
    let everything: u64 = g
        .weight_bytes()
        .saturating_add(s.info.values().fold(0u64, |a, i| a.saturating_add(i.bytes())));
    let mut hi = opts.with_overhead(everything).max(1);
    if !trial(hi) {
        return Ok(None);
    }
    let mut lo = activation_floor(&g, &b, opts.overhead_pct)?.saturating_sub(1);
    // Invariant: hi partitions; lo does not (or is below the floor).
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if trial(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(Some(hi))
}
