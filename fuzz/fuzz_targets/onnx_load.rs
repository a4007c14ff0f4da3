//! Any bytes given as an ONNX model: an error or a valid graph, never a panic,
//! and a loaded graph partitions or fails with an error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use splitup_graph::partition::{partition, Options};
use splitup_graph::shape::Bindings;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = splitup_graph::Graph::load(data) {
        let _ = partition(&g, &Bindings::default(), &Options::uniform(1 << 20));
    }
});
