//! A partition as a portable plan: one ONNX graph and one safetensors file
//! per task, plus a JSON manifest in the shape of seed 000 §7.1–7.2.
//!
//! Building a plan is pure: it returns the files as bytes, and the caller
//! writes them. Task ONNX files carry their initializers by name, type and
//! shape only; the bytes live in the task's safetensors file and are joined
//! back in by [`assemble_task`] after both files' BLAKE3 hashes are checked.

use crate::model::{Dim, Graph, ValueType};
use crate::onnx::ModelProto;
use crate::partition::Partition;
use prost::Message;
use serde::{Deserialize, Serialize};
use splitup_tensor::{hash_hex, DType, Tensor};
use std::collections::{BTreeMap, HashMap};

pub const MANIFEST_FILE: &str = "manifest.json";
pub const FORMAT: &str = "splitup-plan/1";
/// A manifest is metadata; anything near this size is hostile.
pub const MANIFEST_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Seed 000 §7.1 `TensorSpec`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    /// Symbolic dims where the model names them, else the number as text.
    pub dimensions: Vec<String>,
    pub shape: Vec<u64>,
    pub dtype: String,
}

impl TensorSpec {
    pub fn bytes(&self) -> u64 {
        let d = DType::from_name(&self.dtype).map(|d| d.size() as u64).unwrap_or(0);
        self.shape.iter().product::<u64>() * d
    }
}

/// Seed 000 §7.1 `TaskConnection`; task id 0 is the user (model inputs and outputs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskConnection {
    pub source_task_id: u64,
    pub destination_task_id: u64,
    pub source_output_index: u64,
    pub dest_input_index: u64,
    pub tensor_spec: TensorSpec,
    /// Bytes this connection carries per execution.
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileRef {
    pub file: String,
    pub blake3: String,
    pub bytes: u64,
}

/// Seed 000 §7.2 `TaskInfo`, plus what a runner needs to check and load it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub id: u64,
    pub description: String,
    /// weights + peak activations, times (1 + overhead).
    pub vram_requirement: u64,
    pub weight_bytes: u64,
    pub activation_bytes: u64,
    pub compute_units: u64,
    pub flops: u64,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub graph: FileRef,
    pub weights: FileRef,
    /// URI of the weight file, relative to the plan directory until deployed.
    pub weight_uri: String,
    /// Index of the node (from `--nodes`) this task is placed on.
    pub node: Option<usize>,
    pub ops: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub capacities: Vec<u64>,
    pub overhead_pct: u64,
}

/// Seed 000 §7.1 `ModelInfo`, as a self-contained plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub name: String,
    pub description: String,
    pub budget: Budget,
    pub dims: BTreeMap<String, usize>,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub tasks: Vec<TaskInfo>,
    pub connections: Vec<TaskConnection>,
    /// Bytes passed between tasks per execution (connections between two tasks).
    pub cut_bytes: u64,
    pub splits: Vec<(String, usize)>,
}

impl Manifest {
    pub fn task_ids(&self) -> Vec<u64> {
        self.tasks.iter().map(|t| t.id).collect()
    }

    /// Checks the manifest is internally consistent: unique ids, every task
    /// input fed by exactly one connection from an earlier task or the user,
    /// specs equal on both ends, file names that stay inside the plan.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("unknown plan format {:?} (expected {FORMAT:?})", self.format));
        }
        let by_id: HashMap<u64, &TaskInfo> = self.tasks.iter().map(|t| (t.id, t)).collect();
        if by_id.len() != self.tasks.len() || by_id.contains_key(&0) {
            return Err("task ids must be unique and non-zero".into());
        }
        for t in &self.tasks {
            for f in [&t.graph.file, &t.weights.file] {
                if f.is_empty() || f.contains('/') || f.contains('\\') || f.starts_with('.') {
                    return Err(format!(
                        "task {}: file name {f:?} must be a plain name inside the plan",
                        t.id
                    ));
                }
            }
        }
        let mut fed: HashMap<(u64, u64), usize> = HashMap::new();
        for c in &self.connections {
            let src = if c.source_task_id == 0 {
                self.inputs.get(c.source_output_index as usize)
            } else {
                by_id
                    .get(&c.source_task_id)
                    .and_then(|t| t.outputs.get(c.source_output_index as usize))
            }
            .ok_or_else(|| {
                format!(
                    "connection from task {} output {} refers to nothing",
                    c.source_task_id, c.source_output_index
                )
            })?;
            let dst = if c.destination_task_id == 0 {
                self.outputs.get(c.dest_input_index as usize)
            } else {
                by_id
                    .get(&c.destination_task_id)
                    .and_then(|t| t.inputs.get(c.dest_input_index as usize))
            }
            .ok_or_else(|| {
                format!(
                    "connection to task {} input {} refers to nothing",
                    c.destination_task_id, c.dest_input_index
                )
            })?;
            if src.shape != dst.shape
                || src.dtype != dst.dtype
                || src != &c.tensor_spec && src.name != c.tensor_spec.name
            {
                return Err(format!(
                    "connection {} -> {} carries {:?} but the ends disagree on its spec",
                    c.source_task_id, c.destination_task_id, c.tensor_spec.name
                ));
            }
            if c.source_task_id != 0 && c.destination_task_id != 0 && c.source_task_id >= c.destination_task_id {
                return Err(format!(
                    "connection {} -> {} goes backwards (the DAG must be acyclic)",
                    c.source_task_id, c.destination_task_id
                ));
            }
            *fed.entry((c.destination_task_id, c.dest_input_index)).or_default() += 1;
        }
        for t in &self.tasks {
            for i in 0..t.inputs.len() {
                match fed.get(&(t.id, i as u64)) {
                    Some(1) => {}
                    Some(n) => return Err(format!("task {} input {} is fed {n} times", t.id, t.inputs[i].name)),
                    None => return Err(format!("task {} input {:?} is never fed", t.id, t.inputs[i].name)),
                }
            }
        }
        for i in 0..self.outputs.len() {
            if fed.get(&(0, i as u64)) != Some(&1) {
                return Err(format!(
                    "model output {:?} is not produced exactly once",
                    self.outputs[i].name
                ));
            }
        }
        Ok(())
    }
}

pub struct PlanFiles {
    pub manifest: Manifest,
    /// (file name, bytes), the manifest last.
    pub files: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("weight {0:?} is described by shape only; a plan with files needs real weights (use the manifest alone)")]
    NoWeightData(String),
    #[error("cannot encode weights: {0}")]
    SafeTensors(#[from] splitup_tensor::st::StError),
}

fn spec(name: &str, info: &crate::shape::Info, declared: Option<&ValueType>) -> TensorSpec {
    let dimensions = match declared.and_then(|d| d.dims.as_ref()) {
        Some(dims) if dims.len() == info.shape.len() => dims
            .iter()
            .zip(&info.shape)
            .map(|(d, v)| match d {
                Dim::Sym(s) => s.clone(),
                Dim::Fixed(_) => v.to_string(),
            })
            .collect(),
        _ => info.shape.iter().map(|v| v.to_string()).collect(),
    };
    TensorSpec {
        name: name.into(),
        dimensions,
        shape: info.shape.iter().map(|&d| d as u64).collect(),
        dtype: info.dtype.name().into(),
    }
}

/// The sub-graph of one task, with concrete input and output types.
pub fn task_graph(p: &Partition, k: usize) -> Graph {
    let t = &p.tasks[k];
    let g = &p.graph;
    let vt = |name: &str| {
        let info = p.shapes.get(name);
        ValueType {
            dtype: info.dtype,
            dims: Some(info.shape.iter().map(|&d| Dim::Fixed(d)).collect()),
        }
    };
    Graph {
        name: format!("{}/task{}", g.name, k + 1),
        ir_version: g.ir_version,
        opset: g.opset.clone(),
        nodes: g.nodes[t.start..t.end].to_vec(),
        inputs: t.inputs.iter().map(|n| (n.clone(), vt(n))).collect(),
        outputs: t.outputs.iter().map(|n| (n.clone(), Some(vt(n)))).collect(),
        weights: t.weights.iter().map(|w| (w.clone(), g.weights[w].clone())).collect(),
        value_info: HashMap::new(),
    }
}

/// Builds the manifest and, when `with_files`, every task's files.
pub fn build(
    p: &Partition,
    name: &str,
    bindings: &crate::shape::Bindings,
    opts: &crate::partition::Options,
    with_files: bool,
) -> Result<PlanFiles, PlanError> {
    let g = &p.graph;
    let declared: HashMap<&str, &ValueType> = g
        .inputs
        .iter()
        .map(|(n, t)| (n.as_str(), t))
        .chain(
            g.outputs
                .iter()
                .filter_map(|(n, t)| t.as_ref().map(|t| (n.as_str(), t))),
        )
        .collect();
    let sp = |n: &str| spec(n, p.shapes.get(n), declared.get(n).copied());
    let inputs: Vec<TensorSpec> = g.inputs.iter().map(|(n, _)| sp(n)).collect();
    let outputs: Vec<TensorSpec> = g.outputs.iter().map(|(n, _)| sp(n)).collect();
    let mut files = Vec::new();
    let mut tasks = Vec::new();
    // Where each value comes from: (task id, output index); 0 = the user.
    let mut source: HashMap<&str, (u64, u64)> = g
        .inputs
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.as_str(), (0, i as u64)))
        .collect();
    let mut connections = Vec::new();
    for (k, t) in p.tasks.iter().enumerate() {
        let id = k as u64 + 1;
        let tg = task_graph(p, k);
        let onnx_bytes = tg.to_proto(false).encode_to_vec();
        let mut weights = BTreeMap::new();
        if with_files {
            for (wn, w) in &tg.weights {
                let tensor = w.tensor().ok_or_else(|| PlanError::NoWeightData(wn.clone()))?;
                weights.insert(wn.clone(), tensor);
            }
        }
        let st_bytes = if with_files {
            splitup_tensor::st::encode(&weights)?
        } else {
            Vec::new()
        };
        let graph_file = format!("task_{id:04}.onnx");
        let weights_file = format!("task_{id:04}.safetensors");
        let graph_ref = FileRef {
            file: graph_file.clone(),
            blake3: hash_hex(&onnx_bytes),
            bytes: onnx_bytes.len() as u64,
        };
        let weights_ref = FileRef {
            file: weights_file.clone(),
            blake3: hash_hex(&st_bytes),
            bytes: st_bytes.len() as u64,
        };
        if with_files {
            files.push((graph_file, onnx_bytes));
            files.push((weights_file.clone(), st_bytes));
        }
        let ops = t.end - t.start;
        let first = &g.nodes[t.start].op_type;
        let last = &g.nodes[t.end - 1].op_type;
        let task_inputs: Vec<TensorSpec> = t.inputs.iter().map(|n| sp(n)).collect();
        for (i, inp) in t.inputs.iter().enumerate() {
            let (src, idx) = source[inp.as_str()];
            connections.push(TaskConnection {
                source_task_id: src,
                destination_task_id: id,
                source_output_index: idx,
                dest_input_index: i as u64,
                tensor_spec: task_inputs[i].clone(),
                bytes: task_inputs[i].bytes(),
            });
        }
        for (o, out) in t.outputs.iter().enumerate() {
            source.insert(out.as_str(), (id, o as u64));
        }
        tasks.push(TaskInfo {
            id,
            description: format!("{ops} ops, {first} .. {last}"),
            vram_requirement: t.vram_bytes,
            weight_bytes: t.weight_bytes,
            activation_bytes: t.activation_bytes,
            compute_units: crate::cost::compute_units(t.flops),
            flops: t.flops,
            inputs: task_inputs,
            outputs: t.outputs.iter().map(|n| sp(n)).collect(),
            graph: graph_ref,
            weights: weights_ref,
            weight_uri: weights_file,
            node: (opts.capacities.len() > 1).then_some(t.placement),
            ops,
        });
    }
    for (i, (name, _)) in g.outputs.iter().enumerate() {
        let (src, idx) = source[name.as_str()];
        connections.push(TaskConnection {
            source_task_id: src,
            destination_task_id: 0,
            source_output_index: idx,
            dest_input_index: i as u64,
            tensor_spec: outputs[i].clone(),
            bytes: outputs[i].bytes(),
        });
    }
    let cut_bytes = connections
        .iter()
        .filter(|c| c.source_task_id != 0 && c.destination_task_id != 0)
        .map(|c| c.bytes)
        .sum();
    let manifest = Manifest {
        format: FORMAT.into(),
        name: name.into(),
        description: format!("{} ops in {} tasks", g.nodes.len(), p.tasks.len()),
        budget: Budget {
            capacities: opts.capacities.clone(),
            overhead_pct: opts.overhead_pct,
        },
        dims: bindings.dims.clone(),
        inputs,
        outputs,
        tasks,
        connections,
        cut_bytes,
        splits: p.splits.clone(),
    };
    Ok(PlanFiles { manifest, files })
}

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("{file}: BLAKE3 is {actual}, the manifest says {expected}; the file is corrupt or was tampered with")]
    Hash {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{file}: {msg}")]
    Invalid { file: String, msg: String },
}

/// Checks a task's files against the manifest and joins graph and weights
/// into one runnable ONNX model (bytes).
pub fn assemble_task(task: &TaskInfo, onnx_bytes: &[u8], st_bytes: &[u8]) -> Result<Vec<u8>, AssembleError> {
    for (f, bytes) in [(&task.graph, onnx_bytes), (&task.weights, st_bytes)] {
        let actual = hash_hex(bytes);
        if actual != f.blake3 {
            return Err(AssembleError::Hash {
                file: f.file.clone(),
                expected: f.blake3.clone(),
                actual,
            });
        }
    }
    join_weights(onnx_bytes, st_bytes).map_err(|(which, msg)| AssembleError::Invalid {
        file: if which == 0 {
            task.graph.file.clone()
        } else {
            task.weights.file.clone()
        },
        msg,
    })
}

/// Joins a task graph (initializers without data) and its safetensors
/// weights into one runnable ONNX model. Errors say which input was wrong
/// (0: the graph, 1: the weights) and why. Callers check hashes first.
pub fn join_weights(onnx_bytes: &[u8], st_bytes: &[u8]) -> Result<Vec<u8>, (u8, String)> {
    let mut model = ModelProto::decode(onnx_bytes).map_err(|e| (0, e.to_string()))?;
    let weights: BTreeMap<String, Tensor> = splitup_tensor::st::decode(st_bytes).map_err(|e| (1, e.to_string()))?;
    let graph = model.graph.as_mut().ok_or_else(|| (0, "no graph".to_string()))?;
    if graph.initializer.len() != weights.len() {
        return Err((
            1,
            format!(
                "holds {} tensors but the graph needs {}",
                weights.len(),
                graph.initializer.len()
            ),
        ));
    }
    for init in &mut graph.initializer {
        let w = weights
            .get(&init.name)
            .ok_or_else(|| (1, format!("missing weight {:?}", init.name)))?;
        let dims: Vec<i64> = w.shape.iter().map(|&d| d as i64).collect();
        if dims != init.dims || w.dtype.onnx_code() != init.data_type {
            return Err((
                1,
                format!(
                    "weight {:?} is {:?} {} but the graph declares {:?}",
                    init.name, w.shape, w.dtype, init.dims
                ),
            ));
        }
        init.raw_data = w.bytes().to_vec();
    }
    // The gate, on the joined model (Loop bounds are weights too).
    crate::model::check_runnable(&model).map_err(|e| (0, e.to_string()))?;
    Ok(model.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{attr_type, AttributeProto, GraphProto, NodeProto, StringStringEntryProto, TensorProto};

    fn model(nodes: Vec<NodeProto>, initializer: Vec<TensorProto>) -> Vec<u8> {
        ModelProto {
            ir_version: 8,
            opset_import: vec![crate::onnx::OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(GraphProto {
                node: nodes,
                initializer,
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn external(name: &str, location: &str) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: vec![4],
            data_type: 1,
            data_location: 1,
            external_data: vec![StringStringEntryProto {
                key: "location".into(),
                value: location.into(),
            }],
            ..Default::default()
        }
    }

    fn no_weights() -> Vec<u8> {
        splitup_tensor::st::encode(&BTreeMap::new()).unwrap()
    }

    /// A task file crafted to make a node read its own key (DESIGN §3, "one
    /// gate"): refused before any runtime sees it, however it is hidden.
    #[test]
    fn the_gate_refuses_task_files_that_point_outside_themselves() {
        // An attribute tensor stored as external data (ConstantOfShape's value).
        let node = NodeProto {
            op_type: "ConstantOfShape".into(),
            input: vec!["shape".into()],
            output: vec!["y".into()],
            attribute: vec![AttributeProto {
                name: "value".into(),
                r#type: attr_type::TENSOR,
                t: Some(external("v", "node.json")),
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = join_weights(&model(vec![node], vec![]), &no_weights()).unwrap_err();
        assert_eq!(e.0, 0);
        assert!(e.1.contains("external data"), "{}", e.1);

        // An initializer stored as external data: the weights file would hold
        // it, but the runtime would read the file the proto names.
        let mut t = external("w", "/etc/hostname");
        t.data_location = 1;
        let node = NodeProto {
            op_type: "Identity".into(),
            input: vec!["w".into()],
            output: vec!["y".into()],
            ..Default::default()
        };
        let mut weights = BTreeMap::new();
        weights.insert("w".to_string(), Tensor::from_f32(vec![4], &[0.0; 4]).unwrap());
        let st = splitup_tensor::st::encode(&weights).unwrap();
        let e = join_weights(&model(vec![node], vec![t]), &st).unwrap_err();
        assert!(e.1.contains("external data"), "{}", e.1);

        // A vendor op hidden in an If branch.
        let branch = GraphProto {
            node: vec![NodeProto {
                op_type: "FusedMatMul".into(),
                domain: "com.microsoft".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let node = NodeProto {
            op_type: "If".into(),
            input: vec!["c".into()],
            output: vec!["y".into()],
            attribute: vec![
                AttributeProto {
                    name: "then_branch".into(),
                    r#type: attr_type::GRAPH,
                    g: Some(Box::new(branch.clone())),
                    ..Default::default()
                },
                AttributeProto {
                    name: "else_branch".into(),
                    r#type: attr_type::GRAPH,
                    g: Some(Box::new(branch)),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let e = join_weights(&model(vec![node], vec![]), &no_weights()).unwrap_err();
        assert!(e.1.contains("com.microsoft::FusedMatMul"), "{}", e.1);
    }

    #[test]
    fn the_gate_refuses_unbounded_loops() {
        let body = GraphProto::default();
        let lp = |m: &str| NodeProto {
            op_type: "Loop".into(),
            input: vec![m.into(), String::new(), "x".into()],
            output: vec!["y".into()],
            attribute: vec![AttributeProto {
                name: "body".into(),
                r#type: attr_type::GRAPH,
                g: Some(Box::new(body.clone())),
                ..Default::default()
            }],
            ..Default::default()
        };
        // As a task file carries it: name, type and shape; the bytes are in the weights file.
        let m = TensorProto {
            name: "m".into(),
            data_type: 7,
            ..Default::default()
        };
        for (bound, ok) in [(1i64 << 62, false), (8, true)] {
            let mut weights = BTreeMap::new();
            weights.insert("m".to_string(), Tensor::from_i64(vec![], &[bound]).unwrap());
            let st = splitup_tensor::st::encode(&weights).unwrap();
            let r = join_weights(&model(vec![lp("m")], vec![m.clone()]), &st);
            assert_eq!(r.is_ok(), ok, "bound {bound}: {r:?}");
            if let Err(e) = r {
                assert!(e.1.contains("trip count"), "{}", e.1);
            }
        }
        // A bound that is a graph input (not a constant).
        let e = join_weights(&model(vec![lp("n")], vec![]), &no_weights()).unwrap_err();
        assert!(e.1.contains("trip count"), "{}", e.1);
    }

    #[test]
    fn the_gate_refuses_versions_the_runtime_cannot_load() {
        let mut m = ModelProto::decode(model(vec![], vec![]).as_slice()).unwrap();
        assert!(join_weights(&m.encode_to_vec(), &no_weights()).is_ok());
        m.ir_version = 14;
        let e = join_weights(&m.encode_to_vec(), &no_weights()).unwrap_err();
        assert!(
            e.1.contains("IR version 14") && e.1.contains("ir_version=13"),
            "{}",
            e.1
        );
        m.ir_version = 8;
        m.opset_import[0].version = 27;
        let e = join_weights(&m.encode_to_vec(), &no_weights()).unwrap_err();
        assert!(e.1.contains("opset 27"), "{}", e.1);
    }
}
