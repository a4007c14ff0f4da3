//! The in-memory model: a validated, topologically sorted ONNX graph whose
//! weights (initializers and `Constant` nodes alike) live apart from the
//! nodes, so that a task can carry exactly the weights it uses.

use crate::allow;
use crate::onnx::{self, attr_type, ModelProto, NodeProto, TensorProto};
use prost::Message;
use splitup_tensor::DType;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// protobuf cannot encode messages above 2 GiB, so no valid ONNX file is larger.
pub const MODEL_BYTES_MAX: u64 = 2 * 1024 * 1024 * 1024;
/// Bound on nodes in one graph, far above the largest real models (~10^5).
pub const NODES_MAX: usize = 5_000_000;
/// Bound on the rank of any tensor.
pub const RANK_MAX: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("model file is {0} bytes; ONNX files cannot exceed {MODEL_BYTES_MAX} bytes")]
    TooLarge(u64),
    #[error("not a valid ONNX model (protobuf decode failed: {0}); the file may be truncated")]
    Decode(#[from] prost::DecodeError),
    #[error("the model has no graph")]
    NoGraph,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    NotAllowed(#[from] allow::NotAllowed),
}

fn invalid(msg: impl Into<String>) -> LoadError {
    LoadError::Invalid(msg.into())
}

/// A dimension: known, or named (`batch`, `seq`) until the user fixes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Fixed(usize),
    Sym(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ValueType {
    pub dtype: DType,
    /// `None` when the model declares no shape at all.
    pub dims: Option<Vec<Dim>>,
}

/// A weight: its bytes, or only its shape (a model "described by shape",
/// such as a 70B-shaped graph that is partitioned but never run).
#[derive(Clone, Debug, PartialEq)]
pub struct Weight {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Option<Arc<Vec<u8>>>,
}

impl Weight {
    /// Bytes of the weight (saturating: a weight with data holds exactly
    /// this many bytes, and shape-only weights come from our own generator).
    pub fn byte_len(&self) -> u64 {
        self.shape
            .iter()
            .try_fold(self.dtype.size() as u64, |a, &d| a.checked_mul(d as u64))
            .unwrap_or(u64::MAX)
    }

    pub fn tensor(&self) -> Option<splitup_tensor::Tensor> {
        let data = self.data.as_ref()?;
        splitup_tensor::Tensor::new(self.dtype, self.shape.clone(), data.to_vec()).ok()
    }
}

#[derive(Clone, Debug)]
pub struct Graph {
    pub name: String,
    pub ir_version: i64,
    pub opset: Vec<onnx::OperatorSetIdProto>,
    /// Topologically sorted; no `Constant` nodes (they became weights).
    pub nodes: Vec<NodeProto>,
    /// Real inputs: graph inputs that are not initializers.
    pub inputs: Vec<(String, ValueType)>,
    pub outputs: Vec<(String, Option<ValueType>)>,
    pub weights: BTreeMap<String, Weight>,
    /// Types the model itself declares for intermediate values.
    pub value_info: HashMap<String, ValueType>,
}

impl Graph {
    pub fn load_file(path: &std::path::Path) -> Result<Graph, LoadError> {
        let io = |source| LoadError::Io {
            path: path.display().to_string(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MODEL_BYTES_MAX {
            return Err(LoadError::TooLarge(len));
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let mut model = ModelProto::decode(bytes.as_slice())?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        crate::external::resolve(&mut model, &dir).map_err(LoadError::Invalid)?;
        Graph::from_proto(model)
    }

    /// Decodes and validates an ONNX model: allow-listed ops only, every
    /// value defined once, acyclic, weights with consistent sizes. Bytes
    /// alone have no directory, so external data is refused here (use
    /// [`Graph::load_file`]).
    pub fn load(bytes: &[u8]) -> Result<Graph, LoadError> {
        if bytes.len() as u64 > MODEL_BYTES_MAX {
            return Err(LoadError::TooLarge(bytes.len() as u64));
        }
        let model = ModelProto::decode(bytes)?;
        Graph::from_proto(model)
    }

    pub fn from_proto(model: ModelProto) -> Result<Graph, LoadError> {
        if !model.functions.is_empty() {
            return Err(allow::NotAllowed::Functions.into());
        }
        check_versions(&model)?;
        let g = model.graph.ok_or(LoadError::NoGraph)?;
        if !g.sparse_initializer.is_empty() {
            return Err(invalid("sparse initializers are not supported"));
        }
        if g.node.len() > NODES_MAX {
            return Err(invalid(format!(
                "graph has {} nodes; the limit is {NODES_MAX}",
                g.node.len()
            )));
        }
        let mut weights = BTreeMap::new();
        for t in &g.initializer {
            if t.name.is_empty() {
                return Err(invalid("an initializer has no name"));
            }
            let w = weight_from_proto(t).map_err(|e| invalid(format!("initializer {:?}: {e}", t.name)))?;
            weights.insert(t.name.clone(), w);
        }
        let mut inputs = Vec::new();
        for vi in &g.input {
            if weights.contains_key(&vi.name) {
                continue; // IR < 4: initializers are listed as inputs too.
            }
            let vt = value_type(vi, true).map_err(|e| invalid(format!("graph input {:?}: {e}", vi.name)))?;
            inputs.push((
                vi.name.clone(),
                vt.ok_or_else(|| invalid(format!("graph input {:?} has no tensor type", vi.name)))?,
            ));
        }
        let mut outputs = Vec::new();
        for vi in &g.output {
            let vt = value_type(vi, false).map_err(|e| invalid(format!("graph output {:?}: {e}", vi.name)))?;
            outputs.push((vi.name.clone(), vt));
        }
        let mut value_info = HashMap::new();
        for vi in &g.value_info {
            if let Ok(Some(vt)) = value_type(vi, false) {
                value_info.insert(vi.name.clone(), vt);
            }
        }
        let opset = model.opset_import.clone();
        let mut nodes = Vec::with_capacity(g.node.len());
        let output_names: HashSet<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
        for n in g.node {
            allow::check_node(&n, &opset)?;
            if n.op_type == "Constant"
                && n.domain.is_empty()
                && n.output.len() == 1
                && !output_names.contains(n.output[0].as_str())
            {
                let w = constant_weight(&n).map_err(|e| invalid(format!("Constant node {:?}: {e}", node_label(&n))))?;
                if weights.insert(n.output[0].clone(), w).is_some() {
                    return Err(invalid(format!("value {:?} is defined twice", n.output[0])));
                }
                continue;
            }
            nodes.push(n);
        }
        let mut graph = Graph {
            name: g.name,
            ir_version: model.ir_version,
            opset,
            nodes,
            inputs,
            outputs,
            weights,
            value_info,
        };
        graph.sort_topologically()?;
        Ok(graph)
    }

    /// Orders the nodes so every value is produced before it is used
    /// (stable: a valid order is kept as it is). Rejects cycles, values
    /// defined twice and values used but never defined.
    pub fn sort_topologically(&mut self) -> Result<(), LoadError> {
        let mut producer: HashMap<&str, usize> = HashMap::new();
        let defined: HashSet<&str> = self
            .inputs
            .iter()
            .map(|(n, _)| n.as_str())
            .chain(self.weights.keys().map(|s| s.as_str()))
            .collect();
        for (i, n) in self.nodes.iter().enumerate() {
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                if defined.contains(o.as_str()) || producer.insert(o, i).is_some() {
                    return Err(invalid(format!("value {o:?} is defined more than once")));
                }
            }
        }
        let mut indegree = vec![0usize; self.nodes.len()];
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            let mut seen = HashSet::new();
            for inp in node_inputs(n) {
                if let Some(&p) = producer.get(inp.as_str()) {
                    if seen.insert(p) {
                        indegree[i] += 1;
                        users[p].push(i);
                    }
                } else if !defined.contains(inp.as_str()) {
                    return Err(invalid(format!(
                        "node {:?} uses {inp:?}, which no node, input or weight defines",
                        node_label(n)
                    )));
                }
            }
        }
        for (o, _) in &self.outputs {
            if !producer.contains_key(o.as_str()) && !defined.contains(o.as_str()) {
                return Err(invalid(format!("graph output {o:?} is never produced")));
            }
        }
        // Kahn's algorithm, always taking the lowest original index first so
        // that an already sorted graph keeps its order.
        let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = (0..self.nodes.len())
            .filter(|&i| indegree[i] == 0)
            .map(std::cmp::Reverse)
            .collect();
        let mut order = Vec::with_capacity(self.nodes.len());
        while let Some(std::cmp::Reverse(i)) = ready.pop() {
            order.push(i);
            for &u in &users[i] {
                indegree[u] -= 1;
                if indegree[u] == 0 {
                    ready.push(std::cmp::Reverse(u));
                }
            }
        }
        if order.len() != self.nodes.len() {
            let stuck = (0..self.nodes.len()).find(|&i| indegree[i] > 0).unwrap();
            return Err(invalid(format!(
                "the graph has a cycle through node {:?}",
                node_label(&self.nodes[stuck])
            )));
        }
        if order.iter().enumerate().any(|(k, &i)| k != i) {
            let mut old: Vec<Option<NodeProto>> = std::mem::take(&mut self.nodes).into_iter().map(Some).collect();
            self.nodes = order.into_iter().map(|i| old[i].take().unwrap()).collect();
        }
        Ok(())
    }

    /// Names of the symbolic dimensions of the graph's inputs (what `--dim` binds).
    pub fn symbolic_dims(&self) -> std::collections::BTreeSet<String> {
        self.inputs
            .iter()
            .filter_map(|(_, vt)| vt.dims.as_ref())
            .flatten()
            .filter_map(|d| match d {
                Dim::Sym(s) => Some(s.clone()),
                Dim::Fixed(_) => None,
            })
            .collect()
    }

    /// Total bytes of all weights.
    pub fn weight_bytes(&self) -> u64 {
        self.weights.values().map(Weight::byte_len).sum()
    }

    /// True when every weight has its bytes (the model can be run).
    pub fn is_materialised(&self) -> bool {
        self.weights.values().all(|w| w.data.is_some())
    }

    /// An ONNX model of this graph. With `embed_weights`, weights are
    /// initializers holding their bytes; without, initializers carry only
    /// name, type and shape (the bytes travel in a safetensors file).
    pub fn to_proto(&self, embed_weights: bool) -> ModelProto {
        let initializer = self
            .weights
            .iter()
            .map(|(name, w)| TensorProto {
                dims: w.shape.iter().map(|&d| d as i64).collect(),
                data_type: w.dtype.onnx_code(),
                name: name.clone(),
                raw_data: match (&w.data, embed_weights) {
                    (Some(d), true) => d.to_vec(),
                    _ => Vec::new(),
                },
                ..Default::default()
            })
            .collect();
        ModelProto {
            ir_version: self.ir_version.max(4),
            opset_import: self.opset.clone(),
            producer_name: "splitup".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(onnx::GraphProto {
                node: self.nodes.clone(),
                name: self.name.clone(),
                initializer,
                input: self.inputs.iter().map(|(n, t)| value_info_proto(n, Some(t))).collect(),
                output: self
                    .outputs
                    .iter()
                    .map(|(n, t)| value_info_proto(n, t.as_ref()))
                    .collect(),
                value_info: Vec::new(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// The gate every graph passes before it meets a runtime (a node loading a
/// task, a validator, the committee, `run-plan`): no model-local functions or
/// sparse initializers, every node (and every node of every subgraph) on the
/// allow-list with no attribute tensor stored outside the model, no
/// initializer stored outside the model (task files are self-contained; a
/// runtime would otherwise read a file of the node's choosing), and every
/// `Loop` bounded by a constant trip count of at most
/// [`crate::shape::LOOP_TRIPS_MAX`]. It copies nothing, so it is cheap on
/// large tasks.
/// The newest ONNX IR version the pinned ONNX Runtime (1.31) loads.
pub const IR_VERSION_MAX: i64 = 13;
/// The newest default-domain opset the pinned ONNX Runtime supports.
pub const OPSET_MAX: i64 = 26;

/// Versions the runtime cannot load are refused by name, with the fix
/// (`onnx` 1.23 writes IR 14 by default).
pub fn check_versions(model: &ModelProto) -> Result<(), LoadError> {
    if model.ir_version > IR_VERSION_MAX {
        return Err(invalid(format!(
            "the model has ONNX IR version {}; ONNX Runtime loads versions up to {IR_VERSION_MAX} (save it with `model.ir_version = {IR_VERSION_MAX}` or onnx.helper.make_model(..., ir_version={IR_VERSION_MAX}))",
            model.ir_version
        )));
    }
    if let Some(o) = model
        .opset_import
        .iter()
        .find(|o| (o.domain.is_empty() || o.domain == "ai.onnx") && o.version > OPSET_MAX)
    {
        return Err(invalid(format!(
            "the model imports ONNX opset {}; ONNX Runtime supports opsets up to {OPSET_MAX} (convert it with onnx.version_converter.convert_version(model, {OPSET_MAX}))",
            o.version
        )));
    }
    Ok(())
}

pub fn check_runnable(model: &ModelProto) -> Result<(), LoadError> {
    if !model.functions.is_empty() {
        return Err(allow::NotAllowed::Functions.into());
    }
    check_versions(model)?;
    let g = model.graph.as_ref().ok_or(LoadError::NoGraph)?;
    check_graph_runnable(g, &HashMap::new())
}

fn check_graph_runnable(
    g: &onnx::GraphProto,
    outer: &HashMap<String, splitup_tensor::Tensor>,
) -> Result<(), LoadError> {
    if !g.sparse_initializer.is_empty() {
        return Err(invalid("sparse initializers are not supported"));
    }
    if let Some(t) = g.initializer.iter().find(|t| allow::is_external(t)) {
        return Err(invalid(format!(
            "initializer {:?} points at external data; task files must be self-contained",
            t.name
        )));
    }
    // Small constants in scope (this graph's and its outer scopes'), for
    // Loop bounds and Dropout modes.
    let mut consts = outer.clone();
    consts.extend(small_constants(g));
    for n in &g.node {
        // Each graph checks its own nodes; the recursion below reaches subgraphs.
        allow::check_op(n)?;
        allow::check_dropout(n, |t| consts.get(t).is_some_and(allow::is_all_zero))?;
        if n.op_type == "Loop" && n.domain.is_empty() {
            let m = n
                .input
                .first()
                .and_then(|m| consts.get(m))
                .and_then(|t| t.to_i64_vec())
                .and_then(|v| (v.len() == 1).then(|| v[0]));
            match m {
                Some(m) if (0..=crate::shape::LOOP_TRIPS_MAX).contains(&m) => {}
                _ => {
                    return Err(invalid(format!(
                        "Loop {:?} has no constant maximum trip count of at most {} (it could run unbounded)",
                        node_label(n),
                        crate::shape::LOOP_TRIPS_MAX
                    )))
                }
            }
        }
        for a in &n.attribute {
            for sub in a.g.iter().map(|g| g.as_ref()).chain(&a.graphs) {
                check_graph_runnable(sub, &consts)?;
            }
        }
    }
    Ok(())
}

/// The small constants a graph defines (initializers and `Constant` nodes of
/// at most [`crate::shape::VALUE_ELEMS_MAX`] elements), decoded. Large
/// initializers are not decoded (a task's weights are never copied here).
pub(crate) fn small_constants(g: &onnx::GraphProto) -> HashMap<String, splitup_tensor::Tensor> {
    let small = |dims: &[i64]| {
        dims.iter()
            .try_fold(1u64, |a, &d| u64::try_from(d).ok().and_then(|d| a.checked_mul(d)))
            .is_some_and(|n| n <= crate::shape::VALUE_ELEMS_MAX as u64)
    };
    let mut out = HashMap::new();
    for t in g.initializer.iter().filter(|t| small(&t.dims)) {
        if let Some(v) = weight_from_proto(t).ok().and_then(|w| w.tensor()) {
            out.insert(t.name.clone(), v);
        }
    }
    for n in g
        .node
        .iter()
        .filter(|n| n.op_type == "Constant" && n.domain.is_empty() && n.output.len() == 1)
    {
        let w = constant_weight(n)
            .ok()
            .filter(|w| crate::shape::numel(&w.shape).is_ok_and(|k| k <= crate::shape::VALUE_ELEMS_MAX));
        if let Some(v) = w.and_then(|w| w.tensor()) {
            out.insert(n.output[0].clone(), v);
        }
    }
    out
}

/// Every value a node reads: its explicit inputs, then the outer-scope
/// values its subgraphs (`If`, `Loop`, `Scan`) capture. Dataflow (order,
/// liveness, task inputs) must use this, not `NodeProto::input` alone.
pub fn node_inputs(n: &NodeProto) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(n.input.len());
    for i in n.input.iter().filter(|i| !i.is_empty()) {
        if !out.contains(i) {
            out.push(i.clone());
        }
    }
    for c in captures(n) {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// Outer-scope values that a node's subgraphs read, in order of first use.
pub fn captures(n: &NodeProto) -> Vec<String> {
    let mut out = Vec::new();
    for a in &n.attribute {
        for g in a.g.iter().map(|g| g.as_ref()).chain(&a.graphs) {
            free_values(g, &mut out);
        }
    }
    out
}

/// Values a graph reads that it does not define itself (recursively).
fn free_values(g: &onnx::GraphProto, out: &mut Vec<String>) {
    let mut defined: HashSet<&str> = g
        .input
        .iter()
        .map(|v| v.name.as_str())
        .chain(g.initializer.iter().map(|t| t.name.as_str()))
        .collect();
    for n in &g.node {
        defined.extend(n.output.iter().map(String::as_str));
    }
    let push = |v: &str, out: &mut Vec<String>| {
        if !v.is_empty() && !defined.contains(v) && !out.iter().any(|o| o == v) {
            out.push(v.to_string());
        }
    };
    for n in &g.node {
        for i in &n.input {
            push(i, out);
        }
        for c in captures(n) {
            push(&c, out);
        }
    }
    for o in &g.output {
        push(&o.name, out);
    }
}

pub fn node_label(n: &NodeProto) -> String {
    if n.name.is_empty() {
        format!(
            "{} -> {}",
            n.op_type,
            n.output.first().map(String::as_str).unwrap_or("?")
        )
    } else {
        n.name.clone()
    }
}

pub fn value_info_proto(name: &str, t: Option<&ValueType>) -> onnx::ValueInfoProto {
    onnx::ValueInfoProto {
        name: name.to_string(),
        r#type: t.map(|t| onnx::TypeProto {
            tensor_type: Some(onnx::TypeProtoTensor {
                elem_type: t.dtype.onnx_code(),
                shape: t.dims.as_ref().map(|dims| onnx::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| onnx::Dimension {
                            value: Some(match d {
                                Dim::Fixed(v) => onnx::DimValue::DimValue(*v as i64),
                                Dim::Sym(s) => onnx::DimValue::DimParam(s.clone()),
                            }),
                            denotation: String::new(),
                        })
                        .collect(),
                }),
            }),
            ..Default::default()
        }),
        doc_string: String::new(),
    }
}

/// The declared type of a value. Unknown dims (a `dim_param`, nothing, or a
/// negative number, as some exporters write for "dynamic"; and for graph
/// inputs also 0) are symbolic: named by their `dim_param`, else
/// `VALUE:INDEX`, and bound with `--dim` or `--shape`.
fn value_type(vi: &onnx::ValueInfoProto, is_input: bool) -> Result<Option<ValueType>, String> {
    let Some(tp) = &vi.r#type else {
        return Ok(None);
    };
    if tp.sequence_type.is_some()
        || tp.map_type.is_some()
        || tp.optional_type.is_some()
        || tp.sparse_tensor_type.is_some()
    {
        return Err("only dense tensors are supported (sequence, map, optional and sparse values are not)".into());
    }
    let Some(tt) = &tp.tensor_type else {
        return Ok(None);
    };
    let dtype = dtype_of(tt.elem_type)?;
    let dims = match &tt.shape {
        None => None,
        Some(s) => {
            if s.dim.len() > RANK_MAX {
                return Err(format!("rank {} exceeds {RANK_MAX}", s.dim.len()));
            }
            Some(
                s.dim
                    .iter()
                    .enumerate()
                    .map(|(i, d)| match &d.value {
                        Some(onnx::DimValue::DimValue(v)) if *v > 0 || *v == 0 && !is_input => {
                            Ok(Dim::Fixed(*v as usize))
                        }
                        Some(onnx::DimValue::DimParam(p)) if !p.is_empty() => Ok::<_, String>(Dim::Sym(p.clone())),
                        _ => Ok(Dim::Sym(format!("{}:{i}", vi.name))),
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
    };
    Ok(Some(ValueType { dtype, dims }))
}

pub fn dtype_of(code: i32) -> Result<DType, String> {
    DType::from_onnx_code(code).ok_or_else(|| match code {
        8 => "string tensors are not allowed (tensor-only format)".to_string(),
        14 | 15 => "complex tensors are not supported".to_string(),
        0 => "element type is undefined".to_string(),
        c => format!("element type {c} (float8/int4 family) is not supported"),
    })
}

/// Decodes a TensorProto's bytes (raw or typed fields) to little-endian bytes,
/// checking that the data matches the declared shape exactly.
pub fn weight_from_proto(t: &TensorProto) -> Result<Weight, String> {
    if crate::allow::is_external(t) {
        return Err("its data is stored outside the model (external data); SplitUp reads external data only when it loads the model from its file, from the model's own directory".into());
    }
    let dtype = dtype_of(t.data_type)?;
    if t.dims.len() > RANK_MAX {
        return Err(format!("rank {} exceeds {RANK_MAX}", t.dims.len()));
    }
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        shape.push(usize::try_from(d).map_err(|_| format!("negative dimension {d}"))?);
    }
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("shape overflows")?;
    let expected = count.checked_mul(dtype.size()).ok_or("shape overflows")?;
    let data: Vec<u8> = if !t.raw_data.is_empty() || count == 0 {
        t.raw_data.clone()
    } else {
        let len_of = |n: usize| {
            if n == count {
                Ok(())
            } else {
                Err(format!("holds {n} values but its shape {shape:?} needs {count}"))
            }
        };
        match dtype {
            DType::F32 => {
                len_of(t.float_data.len())?;
                t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            DType::F64 => {
                len_of(t.double_data.len())?;
                t.double_data.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            DType::I64 => {
                len_of(t.int64_data.len())?;
                t.int64_data.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            DType::U32 | DType::U64 => {
                len_of(t.uint64_data.len())?;
                if dtype == DType::U32 {
                    t.uint64_data.iter().flat_map(|&v| (v as u32).to_le_bytes()).collect()
                } else {
                    t.uint64_data.iter().flat_map(|v| v.to_le_bytes()).collect()
                }
            }
            // int32_data carries every type of 32 bits or less, one per entry.
            _ => {
                len_of(t.int32_data.len())?;
                let n = dtype.size();
                t.int32_data
                    .iter()
                    .flat_map(|v| v.to_le_bytes().into_iter().take(n))
                    .collect()
            }
        }
    };
    if data.len() != expected {
        return Err(format!(
            "holds {} bytes but its shape {shape:?} of {dtype} needs {expected}",
            data.len()
        ));
    }
    Ok(Weight {
        dtype,
        shape,
        data: Some(Arc::new(data)),
    })
}

pub(crate) fn constant_weight(n: &NodeProto) -> Result<Weight, String> {
    let a = n
        .attribute
        .first()
        .filter(|_| n.attribute.len() == 1)
        .ok_or("a Constant needs exactly one attribute")?;
    let scalar = |dtype: DType, bytes: Vec<u8>, shape: Vec<usize>| Weight {
        dtype,
        shape,
        data: Some(Arc::new(bytes)),
    };
    match (a.name.as_str(), a.r#type) {
        ("value", attr_type::TENSOR) => weight_from_proto(a.t.as_ref().ok_or("missing tensor")?),
        ("value_float", attr_type::FLOAT) => Ok(scalar(DType::F32, a.f.to_le_bytes().to_vec(), vec![])),
        ("value_int", attr_type::INT) => Ok(scalar(DType::I64, a.i.to_le_bytes().to_vec(), vec![])),
        ("value_floats", attr_type::FLOATS) => Ok(scalar(
            DType::F32,
            a.floats.iter().flat_map(|v| v.to_le_bytes()).collect(),
            vec![a.floats.len()],
        )),
        ("value_ints", attr_type::INTS) => Ok(scalar(
            DType::I64,
            a.ints.iter().flat_map(|v| v.to_le_bytes()).collect(),
            vec![a.ints.len()],
        )),
        (name, _) => Err(format!(
            "attribute {name:?} is not supported (string and sparse constants are not tensors SplitUp carries)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_and_garbage_models_are_errors() {
        assert!(matches!(
            Graph::load(b"\x0a\xff\xff\xff\xff\x0f"),
            Err(LoadError::Decode(_))
        ));
        assert!(matches!(Graph::load(&[]), Err(LoadError::NoGraph)));
    }
}
