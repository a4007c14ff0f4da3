//! Any bytes given as an ONNX model: what loads has its shapes inferred and
//! is partitioned at several budgets. Each step is an error or a result,
//! never a panic; inferred tensors stay within the byte limit and every task
//! of a plan fits its budget (a wrapped byte count would not).
#![no_main]
use libfuzzer_sys::fuzz_target;
use splitup_graph::partition::{partition, Options};
use splitup_graph::shape::{self, Bindings};

fuzz_target!(|data: &[u8]| {
    let Ok(g) = splitup_graph::Graph::load(data) else {
        return;
    };
    // Fix every symbolic dim to a small size, so inference gets past the inputs.
    let mut b = Bindings::default();
    for d in g.symbolic_dims() {
        b.dims.insert(d, 2);
    }
    if let Ok(s) = shape::infer(&g, &b) {
        for (name, info) in &s.info {
            assert!(
                info.checked_bytes().is_some_and(|n| n <= shape::TENSOR_BYTES_MAX),
                "{name:?} inferred with shape {:?}, out of range",
                info.shape
            );
        }
    }
    for budget in [1, 1 << 20, 1 << 40, u64::MAX] {
        if let Ok(p) = partition(&g, &b, &Options::uniform(budget)) {
            for t in &p.tasks {
                assert!(
                    t.vram_bytes <= budget,
                    "a task of {} bytes under a budget of {budget}",
                    t.vram_bytes
                );
                assert!(t.vram_bytes >= t.weight_bytes + t.activation_bytes);
            }
        }
    }
});
