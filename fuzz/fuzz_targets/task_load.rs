//! A node loading a task: hostile bytes as the task's graph (ONNX, its
//! initializers declared by name, type and shape) and its weights
//! (safetensors), joined by `plan::join_weights` behind the gate. Input:
//! a little-endian u32 length, that many bytes of graph (fewer if the input
//! ends first), the rest weights. Joining is an error or a model, never a
//! panic; a model it returns decodes and passes the gate again (what a
//! runtime is handed never points outside itself, never carries a vendor op
//! or an unbounded Loop).
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message;
use splitup_graph::onnx::ModelProto;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let n = (u32::from_le_bytes(*len) as usize).min(rest.len());
    let (graph, weights) = rest.split_at(n);
    if let Ok(joined) = splitup_graph::plan::join_weights(graph, weights) {
        let model = ModelProto::decode(joined.as_slice()).expect("a joined task decodes");
        if let Err(e) = splitup_graph::model::check_runnable(&model) {
            panic!("a joined task fails the gate: {e}");
        }
    }
});
