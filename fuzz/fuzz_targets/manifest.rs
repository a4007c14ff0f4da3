#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = serde_json::from_slice::<splitup_graph::plan::Manifest>(data) {
        let _ = m.validate();
    }
});
