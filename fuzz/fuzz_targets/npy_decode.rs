#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = splitup_tensor::npy::decode(data) {
        // What decodes re-encodes to something that decodes to the same tensor.
        let again = splitup_tensor::npy::decode(&splitup_tensor::npy::encode(&t).unwrap()).unwrap();
        assert_eq!(again, t);
    }
});
