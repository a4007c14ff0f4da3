//! A node must survive a hostile or broken ledger: whatever the answers
//! (well-formed bodies with absurd values, malformed JSON, random bytes,
//! error statuses), the daemon returns or keeps retrying; it never panics
//! and never hangs past its stop flag. The ledger here is a real HTTP
//! server on 127.0.0.1 that answers each route with what proptest chose.

use proptest::prelude::*;
use serde_json::{json, Value};
use splitup_node::daemon::{run, Config, Fault};
use splitup_protocol::{Keypair, Params};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// (status, body) per route prefix; the longest matching prefix answers.
type Answers = Arc<Mutex<BTreeMap<String, (u16, Vec<u8>)>>>;

fn serve(answers: Answers) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let answers = answers.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    return;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                // Skip the head; bodies (signed instructions, uploads) are not read.
                let mut h = String::new();
                while r.read_line(&mut h).map(|n| n > 0).unwrap_or(false) && h != "\r\n" {
                    h.clear();
                }
                let (status, body) = {
                    let a = answers.lock().unwrap();
                    a.iter()
                        .filter(|(p, _)| path.starts_with(p.as_str()))
                        .max_by_key(|(p, _)| p.len())
                        .map(|(_, v)| v.clone())
                        .unwrap_or((404, b"{}".to_vec()))
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nx-splitup-version: 1\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(&body);
            });
        }
    });
    url
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(u32::MAX)),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        Just(json!(1.5)),
        Just(json!("7")),
        Just(Value::Null),
        any::<u32>().prop_map(|n| json!(n)),
    ]
}

fn hash() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("00".repeat(32))),
        Just(json!("ZZ".repeat(32))),
        Just(json!("+f".repeat(32))),
        Just(json!([1, 2, 3])),
        Just(Value::Null),
    ]
}

fn garbage() -> impl Strategy<Value = (u16, Vec<u8>)> {
    prop_oneof![
        Just((500, b"{\"error\":\"boom\",\"code\":500}".to_vec())),
        Just((200, b"".to_vec())),
        Just((200, b"null".to_vec())),
        Just((200, b"[]".to_vec())),
        Just((409, b"not json".to_vec())),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| (200, b)),
    ]
}

fn shaped(v: impl Strategy<Value = Value>) -> impl Strategy<Value = (u16, Vec<u8>)> {
    v.prop_map(|v| (200, serde_json::to_vec(&v).unwrap()))
}

fn answers() -> impl Strategy<Value = BTreeMap<String, (u16, Vec<u8>)>> {
    let me = Keypair::from_seed([5; 32]).pubkey().hex();
    let genesis = (number(), number(), number()).prop_map(|(hb, load, tasks)| {
        let mut p = serde_json::to_value(Params::default()).unwrap();
        p["heartbeat_ms"] = hb;
        p["node_load_max"] = load;
        p["tasks_per_model_max"] = tasks;
        json!({ "params": p, "mint_authority": "00".repeat(32), "committee": [], "beacon": "00".repeat(32), "dev": true })
    });
    let status = (number(), hash()).prop_map(|(now, h)| {
        json!({ "instructions": 1, "blockhash": h, "now_ms": now, "slot": 1, "accounts": 1, "nodes": 1,
                "models": 1, "executions": 1, "supply": 1, "treasury": 1, "store": "x" })
    });
    let models = (number(), number()).prop_map(
        |(id, tasks)| json!([{ "id": id, "name": "m", "owner": "00".repeat(32), "active": true, "tasks": tasks }]),
    );
    let spec = json!({ "name": "x", "shape": [u64::MAX, 2], "dtype": "float32" });
    let model = (number(), number(), number(), hash()).prop_map(move |(vram, cu, task, h)| {
        json!({ "id": 1, "owner": "00".repeat(32), "active": true, "def": {
            "name": "m", "inputs": [spec.clone()], "outputs": [spec.clone()],
            "tasks": [{ "vram": vram, "compute_units": cu, "inputs": [spec.clone()], "outputs": [spec.clone()],
                        "weight_uri": "x", "weight_hash": vec![0u8; 32], "graph_hash": h }],
            "connections": [{ "source_task": task, "destination_task": 1, "source_output": 0, "dest_input": 7 }] } })
    });
    let account = (number(), number()).prop_map(move |(balance, nonce)| {
        json!({ "key": Keypair::from_seed([5; 32]).pubkey().hex(), "balance": balance, "nonce": nonce, "node": null })
    });
    let work = (number(), number(), number(), number(), hash()).prop_map(|(e, m, t, deadline, c)| {
        json!([{ "execution": e, "model": m, "task": t, "kind": "compute", "attempt": 0, "deadline_ms": deadline, "commitment": null },
               { "execution": e, "model": m, "task": t, "kind": "validate", "attempt": 1, "deadline_ms": deadline, "commitment": c }])
    });
    let execution = (number(), hash()).prop_map(|(t, input)| {
        json!({ "id": 1, "model": 1, "user": "00".repeat(32), "input": input, "status": "InProgress", "escrow": 0,
                "fetched": false, "tasks": [{ "task": t, "status": "Completed", "node": null, "attempts": 0, "timeouts": 0,
                "challenged": false, "validator": null, "outcome": null, "commitment": null, "output_uris": ["x/y/"] }] })
    });
    let tx = prop_oneof![
        Just(json!({ "ok": true, "seq": 1, "events": [] })),
        Just(json!({ "ok": true, "seq": 1, "events": [{ "ModelRegistered": { "model": "x" } }] })),
    ];
    (
        prop_oneof![shaped(genesis), garbage()],
        prop_oneof![shaped(status), garbage()],
        prop_oneof![shaped(models), garbage()],
        prop_oneof![shaped(model), garbage()],
        prop_oneof![shaped(account), garbage()],
        prop_oneof![shaped(work), garbage()],
        prop_oneof![shaped(execution), garbage()],
        prop_oneof![shaped(tx), garbage()],
        garbage(),
    )
        .prop_map(move |(g, s, ms, m, a, w, e, t, b)| {
            BTreeMap::from([
                ("/v1/genesis".to_string(), g),
                ("/v1/status".to_string(), s),
                ("/v1/models".to_string(), ms),
                ("/v1/models/".to_string(), m),
                ("/v1/accounts/".to_string(), a),
                (format!("/v1/nodes/{me}/work"), w),
                ("/v1/executions/".to_string(), e),
                ("/v1/tx".to_string(), t),
                ("/v1/blobs/".to_string(), b),
            ])
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn malformed_ledger_answers_never_crash_or_hang_a_node(a in answers()) {
        let url = serve(Arc::new(Mutex::new(a)));
        let cfg = Config {
            ledger: url,
            store: None,
            key: Keypair::from_seed([5; 32]),
            key_file: None,
            vram: 1 << 30,
            stake: None,
            stake_idle: false,
            specialise: vec![],
            threads: 1,
            heartbeat_every: Duration::from_millis(100),
            poll_every: Duration::from_millis(50),
            worker: splitup_exec::worker::WorkerCommand { program: "/bin/false".into(), args: vec![] },
            fault: Fault::None,
            delay: Duration::ZERO,
            metrics_listen: None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = stop.clone();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&cfg, &flag)));
            let _ = tx.send(r.map(|r| r.err().map(|e| format!("{e:#}"))));
        });
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::SeqCst);
        let r = rx.recv_timeout(Duration::from_secs(30));
        prop_assert!(r.is_ok(), "the daemon did not stop within 30 s of its stop flag");
        prop_assert!(r.unwrap().is_ok(), "the daemon panicked");
    }
}
