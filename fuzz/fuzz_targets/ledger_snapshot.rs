#![no_main]
use libfuzzer_sys::fuzz_target;

// Snapshot bytes come from the ledger's database file: damaged or hostile
// content must be an error. The snapshot hash is checked first, so also feed
// the decoder directly by re-sealing the fuzzed body with a valid hash.
fuzz_target!(|data: &[u8]| {
    let _ = splitup_protocol::Ledger::restore(data);
    let mut sealed = b"splitup-ledger-snapshot-v1\0".to_vec();
    sealed.extend_from_slice(blake3::hash(data).as_bytes());
    sealed.extend_from_slice(data);
    let _ = splitup_protocol::Ledger::restore(&sealed);
});
