//! Shape inference's oracle: one ONNX node evaluated by ONNX Runtime.
//!
//! `splitup_graph::shape` folds constants and, for ops it has no rule for,
//! asks the runtime what a node produces on inputs of the known shapes. This
//! wraps the node alone in a model (its inputs, and the outer-scope values
//! its subgraphs read, as graph inputs), runs it, and returns its outputs.
//! Results are memoised by a BLAKE3 hash of the node and its inputs, because
//! the partitioner re-infers shapes on trial graphs.

use crate::{OrtRuntime, Runtime};
use prost::Message;
use splitup_graph::model::value_info_proto;
use splitup_graph::onnx::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto};
use splitup_graph::shape::{Evaluator, NodeEval};
use splitup_graph::ValueType;
use splitup_tensor::{DType, Tensor};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type Evaluated = Result<Vec<Tensor>, String>;

/// Evaluates single nodes with ONNX Runtime (one thread per session).
pub struct OrtEval {
    rt: OrtRuntime,
    cache: Mutex<HashMap<[u8; 32], Evaluated>>,
}

impl OrtEval {
    pub fn new() -> Result<OrtEval, crate::ExecError> {
        Ok(OrtEval {
            rt: OrtRuntime::new(1)?,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// An [`Evaluator`] for [`splitup_graph::shape::Bindings::eval`].
    pub fn evaluator() -> Result<Evaluator, crate::ExecError> {
        Ok(Evaluator(Some(Arc::new(OrtEval::new()?))))
    }
}

/// The IR version a model of this default-domain opset needs (ONNX's table).
fn ir_for(opset: i64) -> i64 {
    match opset {
        ..=18 => 8,
        19..=20 => 9,
        21..=22 => 10,
        _ => 11,
    }
}

fn key(
    node: &NodeProto,
    opset: &[OperatorSetIdProto],
    inputs: &[Option<Tensor>],
    captures: &[(String, Tensor)],
) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&node.encode_to_vec());
    for o in opset {
        h.update(&o.encode_to_vec());
    }
    let mut t = |t: &Tensor| {
        h.update(t.dtype.name().as_bytes());
        h.update(&(t.shape.len() as u64).to_le_bytes());
        for d in &t.shape {
            h.update(&(*d as u64).to_le_bytes());
        }
        h.update(&(t.bytes().len() as u64).to_le_bytes());
        h.update(t.bytes());
    };
    for x in inputs.iter().flatten() {
        t(x);
    }
    for (_, c) in captures {
        t(c);
    }
    *h.finalize().as_bytes()
}

impl NodeEval for OrtEval {
    fn eval(
        &self,
        node: &NodeProto,
        opset: &[OperatorSetIdProto],
        inputs: &[Option<Tensor>],
        captures: &[(String, Tensor)],
    ) -> Result<Vec<Tensor>, String> {
        let k = key(node, opset, inputs, captures);
        if let Some(r) = self.cache.lock().map_err(|_| "evaluator cache poisoned")?.get(&k) {
            return r.clone();
        }
        let r = self.run(node, opset, inputs, captures);
        if let Ok(mut c) = self.cache.lock() {
            c.insert(k, r.clone());
        }
        r
    }
}

impl OrtEval {
    fn run(
        &self,
        node: &NodeProto,
        opset: &[OperatorSetIdProto],
        inputs: &[Option<Tensor>],
        captures: &[(String, Tensor)],
    ) -> Result<Vec<Tensor>, String> {
        let mut feeds: Vec<(String, &Tensor)> = Vec::new();
        for (name, t) in node.input.iter().zip(inputs) {
            if let Some(t) = t {
                if !name.is_empty() && !feeds.iter().any(|(n, _)| n == name) {
                    feeds.push((name.clone(), t));
                }
            }
        }
        for (name, t) in captures {
            if !feeds.iter().any(|(n, _)| n == name) {
                feeds.push((name.clone(), t));
            }
        }
        let vt = |t: &Tensor| ValueType {
            dtype: t.dtype,
            dims: Some(t.shape.iter().map(|&d| splitup_graph::Dim::Fixed(d)).collect()),
        };
        let outputs: Vec<ValueInfoProto> = node
            .output
            .iter()
            .filter(|o| !o.is_empty())
            .map(|o| ValueInfoProto {
                name: o.clone(),
                ..Default::default()
            })
            .collect();
        let default_opset = opset
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .unwrap_or(1);
        let model = ModelProto {
            ir_version: ir_for(default_opset),
            opset_import: opset.to_vec(),
            producer_name: "splitup-shape-inference".into(),
            graph: Some(GraphProto {
                node: vec![node.clone()],
                name: "node".into(),
                input: feeds.iter().map(|(n, t)| value_info_proto(n, Some(&vt(t)))).collect(),
                output: outputs,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut session = self.rt.load(&model.encode_to_vec()).map_err(|e| e.to_string())?;
        let refs: Vec<(&str, &Tensor)> = feeds.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        let outs = session.run(&refs).map_err(|e| e.to_string())?;
        let mut by_name: HashMap<String, Tensor> = outs.into_iter().collect();
        node.output
            .iter()
            .map(|o| {
                if o.is_empty() {
                    // An absent optional output: a placeholder the caller skips.
                    Tensor::new(DType::F32, vec![], vec![0; 4]).map_err(|e| e.to_string())
                } else {
                    by_name
                        .remove(o)
                        .ok_or_else(|| format!("ONNX Runtime returned no {o:?}"))
                }
            })
            .collect()
    }
}
