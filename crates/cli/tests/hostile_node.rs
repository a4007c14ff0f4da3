//! Hostile tasks against real node processes (issue 9): a task that hangs,
//! one that allocates far beyond what it declares, graphs that try to make
//! the runtime read the node's key file, and a second daemon on one key.
//! Models are crafted here as ONNX protobufs and registered with raw signed
//! `RegisterModel` instructions, so their task declarations can lie.

use prost::Message;
use splitup_graph::onnx::{
    attr_type, AttributeProto, DimValue, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto,
};
use splitup_node::Client;
use splitup_protocol::{Connection, Instruction, Keypair, ModelDef, TaskDef, TensorSpec};
use splitup_tensor::Tensor;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// These tests burn CPU on purpose (a hanging task): one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

mod common;
use common::{bin, Proc};

/// The one place these tests start a ledger: a development network with
/// test timeouts and no challenges (a challenge needs more nodes than these
/// tests run; containment is the point here, not verification).
fn start_ledger(dir: &Path) -> (Proc, String) {
    common::start_ledger(
        dir,
        &[
            "--test-timeouts",
            // These models lie about themselves on purpose: the ledger's
            // registration checks would refuse them, and the point here is
            // that nodes contain what gets past (or around) those checks.
            "--test-unchecked-registrations",
        ],
    )
}

fn get(url: &str, path: &str) -> serde_json::Value {
    reqwest::blocking::get(format!("{url}{path}")).unwrap().json().unwrap()
}

/// A new key file `DIR/NAME.json`, funded by the faucet.
fn funded_key(dir: &Path, url: &str, name: &str, usdc: u64) -> (Keypair, PathBuf) {
    let path = dir.join(format!("{name}.json"));
    let out = bin().args(["keys", "new", "-o"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let key = splitup_ledger::keys::read(&path).unwrap();
    let r = reqwest::blocking::Client::new()
        .post(format!("{url}/v1/faucet"))
        .json(&serde_json::json!({ "to": key.pubkey().hex(), "amount_usdc": usdc }))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "faucet: {}", r.status());
    (key, path)
}

/// A node process whose output lines are collected.
struct NodeProc {
    proc: Proc,
    lines: Arc<Mutex<Vec<String>>>,
}

impl NodeProc {
    fn pid(&self) -> u32 {
        self.proc.0.id()
    }

    fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn logged(&self, what: &str) -> bool {
        self.log().iter().any(|l| l.contains(what))
    }
}

/// Starts `splitup node start` with `key` (8 GiB) and waits until it says
/// it registered.
fn start_node(url: &str, key: &Path, name: &str) -> NodeProc {
    let node = spawn_node(url, key, name);
    wait_for(120, &format!("node {name} to register"), || {
        assert!(
            !node_exited(&node),
            "node {name} exited before registering: {:#?}",
            node.log()
        );
        node.logged("registered")
    });
    node
}

fn spawn_node(url: &str, key: &Path, name: &str) -> NodeProc {
    let mut child = bin()
        .args(["node", "start", "--ledger", url, "--key"])
        .arg(key)
        .args(["--vram", "8GiB"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let (lines, tag) = (lines.clone(), name.to_string());
        std::thread::spawn(move || {
            for l in BufReader::new(stream).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {l}");
                lines.lock().unwrap().push(l);
            }
        });
    }
    NodeProc {
        proc: Proc(child),
        lines,
    }
}

fn node_exited(n: &NodeProc) -> bool {
    // /proc tells whether the process is still there and not a zombie (it is reaped only on drop).
    std::fs::read_to_string(format!("/proc/{}/stat", n.pid()))
        .map(|s| s.split_whitespace().nth(2) == Some("Z"))
        .unwrap_or(true)
}

/// Polls until `f` holds, failing after `secs`.
fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed().as_secs() < secs, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- crafting models -------------------------------------------------

const FLOAT: i32 = 1;
const INT64: i32 = 7;
const BOOL: i32 = 9;

fn vi(name: &str, elem_type: i32, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(if d < 0 {
                                DimValue::DimParam("n".into())
                            } else {
                                DimValue::DimValue(d)
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

fn node(op: &str, inputs: &[&str], outputs: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: format!("{op}_{}", outputs[0]),
        op_type: op.into(),
        attribute,
        ..Default::default()
    }
}

fn i64_tensor(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: INT64,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// A `Constant` node holding an int64 scalar.
fn const_i64(name: &str, v: i64) -> NodeProto {
    node(
        "Constant",
        &[],
        &[name],
        vec![AttributeProto {
            name: "value".into(),
            r#type: attr_type::TENSOR,
            t: Some(i64_tensor("", &[], &[v])),
            ..Default::default()
        }],
    )
}

/// Tensor data stored "outside the model", at `path`.
fn external(path: &Path, mut t: TensorProto) -> TensorProto {
    t.raw_data.clear();
    t.data_location = 1;
    t.external_data = vec![
        StringStringEntryProto {
            key: "location".into(),
            value: path.display().to_string(),
        },
        StringStringEntryProto {
            key: "offset".into(),
            value: "0".into(),
        },
        StringStringEntryProto {
            key: "length".into(),
            value: "16".into(),
        },
    ];
    t
}

fn model_bytes(ir_version: i64, g: GraphProto) -> Vec<u8> {
    ModelProto {
        ir_version,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        producer_name: "hostile_node test".into(),
        graph: Some(g),
        ..Default::default()
    }
    .encode_to_vec()
}

fn graph(nodes: Vec<NodeProto>, inputs: Vec<ValueInfoProto>, outputs: Vec<ValueInfoProto>) -> GraphProto {
    GraphProto {
        node: nodes,
        name: "g".into(),
        input: inputs,
        output: outputs,
        ..Default::default()
    }
}

fn spec(name: &str, dtype: &str, shape: &[u64]) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        shape: shape.to_vec(),
        dtype: dtype.into(),
    }
}

/// Registers a one-task model whose task is `onnx` (initializers without
/// data) plus `weights`, declaring `vram` bytes and `compute_units`;
/// returns its id.
#[allow(clippy::too_many_arguments)]
fn register(
    c: &Client,
    owner: &Keypair,
    name: &str,
    onnx: Vec<u8>,
    weights: BTreeMap<String, Tensor>,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    vram: u64,
    compute_units: u64,
) -> u64 {
    // Uploads are signed by the owner (the ledger refuses anonymous ones).
    let up = Client::new(c.base()).unwrap().signed_by(owner.clone());
    let gh = up.put_blob(onnx).unwrap();
    let wh = up.put_blob(splitup_tensor::st::encode(&weights).unwrap()).unwrap();
    let mut connections = Vec::new();
    for k in 0..inputs.len() as u32 {
        connections.push(Connection {
            source_task: 0,
            destination_task: 1,
            source_output: k,
            dest_input: k,
        });
    }
    for k in 0..outputs.len() as u32 {
        connections.push(Connection {
            source_task: 1,
            destination_task: 0,
            source_output: k,
            dest_input: k,
        });
    }
    let def = ModelDef {
        name: name.into(),
        inputs: inputs.clone(),
        outputs: outputs.clone(),
        tasks: vec![TaskDef {
            vram,
            compute_units,
            inputs,
            checks: outputs
                .iter()
                .map(|o| splitup_protocol::OutputCheck::exact(&o.name))
                .collect(),
            outputs,
            weight_uri: c.blob_uri(&wh),
            weight_hash: splitup_node::unhex32(&wh).unwrap(),
            graph_hash: splitup_node::unhex32(&gh).unwrap(),
        }],
        connections,
    };
    let events = c.send(owner, Instruction::RegisterModel(def)).unwrap();
    events
        .iter()
        .find_map(|e| e.get("ModelRegistered").and_then(|m| m["model"].as_u64()))
        .expect("a model id")
}

/// y = x + x on 4 floats: honest, declared honestly.
fn register_honest(c: &Client, owner: &Keypair) -> u64 {
    let g = graph(
        vec![node("Add", &["x", "x"], &["y"], vec![])],
        vec![vi("x", FLOAT, &[4])],
        vec![vi("y", FLOAT, &[4])],
    );
    register(
        c,
        owner,
        "honest",
        model_bytes(8, g),
        BTreeMap::new(),
        vec![spec("x", "float32", &[4])],
        vec![spec("y", "float32", &[4])],
        1 << 20,
        1,
    )
}

/// Submits x = [1, 2, 3, 4] to the honest model, waits for the execution
/// and checks that it returned 2x.
fn honest_run(c: &Client, user: &Keypair, model: u64, secs: u64) -> Vec<f64> {
    // The user's blob requests (input upload, output reads) are signed by the user.
    let c = &Client::new(c.base()).unwrap().signed_by(user.clone());
    let x = Tensor::from_f32(vec![4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    let e = splitup_node::ops::submit(c, user, model, &BTreeMap::from([("x".to_string(), x)]), 0).unwrap();
    wait_for(secs, "the honest execution to complete", || {
        let s = &c.get(&format!("/v1/executions/{e}")).unwrap()["status"];
        assert!(s.get("Failed").is_none(), "the honest execution failed: {s}");
        s == "Completed"
    });
    let out = splitup_node::ops::fetch(c, e).unwrap();
    assert_eq!(out.len(), 1);
    let y = out[0].1.to_f64_vec();
    assert_eq!(y, vec![2.0, 4.0, 6.0, 8.0]);
    y
}

/// The processes whose parent is `pid` (a node's task workers).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …: the command may hold spaces, so read after its ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn a_hanging_task_is_killed_and_reported_while_the_node_heartbeats_and_serves_others() {
    let _serial = serial();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_ledger, url) = start_ledger(dir);
    let c = Client::new(&url).unwrap();
    let (owner, _) = funded_key(dir, &url, "owner", 100);
    let (user, _) = funded_key(dir, &url, "user", 100);
    // A Loop of 2^20 iterations (the gate's bound) whose body multiplies a
    // 256×256 matrix by itself (33 MFLOP): hours of work, declared as 1
    // compute unit.
    let body = graph(
        vec![
            node("Identity", &["cond_in"], &["cond_out"], vec![]),
            node("MatMul", &["x_in", "x_in"], &["x_out"], vec![]),
        ],
        vec![
            vi("i", INT64, &[]),
            vi("cond_in", BOOL, &[]),
            vi("x_in", FLOAT, &[256, 256]),
        ],
        vec![vi("cond_out", BOOL, &[]), vi("x_out", FLOAT, &[256, 256])],
    );
    let g = graph(
        vec![
            const_i64("trips", 1 << 20),
            node(
                "Loop",
                &["trips", "", "x"],
                &["y"],
                vec![AttributeProto {
                    name: "body".into(),
                    r#type: attr_type::GRAPH,
                    g: Some(Box::new(body)),
                    ..Default::default()
                }],
            ),
        ],
        vec![vi("x", FLOAT, &[256, 256])],
        vec![vi("y", FLOAT, &[256, 256])],
    );
    let hang = register(
        &c,
        &owner,
        "hang",
        model_bytes(8, g),
        BTreeMap::new(),
        vec![spec("x", "float32", &[256, 256])],
        vec![spec("y", "float32", &[256, 256])],
        4 << 20,
        1,
    );
    let honest = register_honest(&c, &owner);
    let (_, key) = funded_key(dir, &url, "node", 5000);
    let n = start_node(&url, &key, "node");
    let me = splitup_ledger::keys::read(&key).unwrap().pubkey().hex();
    // One warm worker per task.
    assert_eq!(children(n.pid()).len(), 2);

    let x = Tensor::from_f32(vec![256, 256], &vec![0.5; 256 * 256]).unwrap();
    let e = splitup_node::ops::submit(
        &Client::new(&url).unwrap().signed_by(user.clone()),
        &user,
        hang,
        &BTreeMap::from([("x".to_string(), x)]),
        0,
    )
    .unwrap();
    wait_for(30, "the hanging task to be assigned", || {
        get(&url, &format!("/v1/executions/{e}"))["tasks"][0]["node"] == me.as_str()
    });
    let started = Instant::now();
    // While it hangs, an execution of another model submitted now completes.
    honest_run(&c, &user, honest, 30);
    assert!(
        !n.logged(&format!("execution {e} task 1: cannot run here")),
        "the honest execution should complete while the other task hangs: {:#?}",
        n.log()
    );
    // And heartbeats go on.
    let hb = |url: &str| {
        let a = get(url, &format!("/v1/accounts/{me}"));
        assert_eq!(a["node"]["status"], "Active", "{a}");
        a["node"]["last_heartbeat_ms"].as_u64().unwrap()
    };
    let first = hb(&url);
    std::thread::sleep(Duration::from_millis(1500));
    let second = hb(&url);
    assert!(
        second > first,
        "no heartbeat for 1.5 s during the hang ({first} → {second})"
    );
    // The node kills it at its wall-clock limit (5 s + 10 ms for 1 compute
    // unit), well before the ledger's 10 s deadline, and reports it.
    wait_for(30, "the hanging task to be reported", || {
        n.logged(&format!("execution {e} task 1: cannot run here, reported"))
    });
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "killed after {took:?}");
    let line = n
        .log()
        .into_iter()
        .find(|l| l.contains(&format!("execution {e} task 1: cannot run here")))
        .unwrap();
    assert!(line.contains("wall-clock limit of 5.0 s"), "{line}");
    let t = &get(&url, &format!("/v1/executions/{e}"))["tasks"][0];
    assert_ne!(t["node"], me.as_str(), "the task is no longer this node's: {t}");
    // Its worker is gone (killed and reaped); the other stays warm.
    assert_eq!(children(n.pid()).len(), 1, "the hung worker still runs");
    // Still heartbeating, not suspect, and serving.
    let third = hb(&url);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(hb(&url) > third);
    honest_run(&c, &user, honest, 30);
    assert!(!node_exited(&n));
}

#[test]
fn a_task_that_allocates_beyond_its_declaration_hits_its_worker_ceiling_and_fails_after_two_reports() {
    let _serial = serial();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_ledger, url) = start_ledger(dir);
    let c = Client::new(&url).unwrap();
    let (owner, _) = funded_key(dir, &url, "owner", 100);
    let (user, _) = funded_key(dir, &url, "user", 100);
    // ConstantOfShape whose shape is the user's input: 2^33 floats (32 GiB),
    // declared as 1 byte of memory.
    let g = graph(
        vec![node("ConstantOfShape", &["shape"], &["y"], vec![])],
        vec![vi("shape", INT64, &[1])],
        vec![vi("y", FLOAT, &[-1])],
    );
    let bomb = register(
        &c,
        &owner,
        "bomb",
        model_bytes(8, g),
        BTreeMap::new(),
        vec![spec("shape", "int64", &[1])],
        vec![spec("y", "float32", &[1 << 33])],
        1,
        1,
    );
    let honest = register_honest(&c, &owner);
    let nodes: Vec<(NodeProc, String)> = (0..2)
        .map(|i| {
            let (k, key) = funded_key(dir, &url, &format!("node{i}"), 5000);
            (start_node(&url, &key, &format!("node{i}")), k.pubkey().hex())
        })
        .collect();
    let owner_before = get(&url, &format!("/v1/accounts/{}", owner.pubkey().hex()))["balance"]
        .as_u64()
        .unwrap();
    let shape = Tensor::from_i64(vec![1], &[1 << 33]).unwrap();
    let e = splitup_node::ops::submit(
        &Client::new(&url).unwrap().signed_by(user.clone()),
        &user,
        bomb,
        &BTreeMap::from([("shape".to_string(), shape)]),
        0,
    )
    .unwrap();
    wait_for(60, "the execution to fail", || {
        get(&url, &format!("/v1/executions/{e}"))["status"]
            .get("Failed")
            .is_some()
    });
    let status = get(&url, &format!("/v1/executions/{e}"))["status"].clone();
    let reason = status["Failed"].as_str().unwrap();
    assert!(
        reason.contains("2 independent nodes") && reason.contains("memory ceiling"),
        "{reason}"
    );
    for (n, _) in &nodes {
        assert!(
            n.logged(&format!("execution {e} task 1: cannot run here, reported")),
            "{:#?}",
            n.log()
        );
        // The 32 GiB went nowhere near the node itself.
        let hwm = vm_hwm_kib(n.pid());
        eprintln!("node VmHWM: {hwm} KiB");
        assert!(hwm < 256 * 1024, "node VmHWM {hwm} KiB");
        assert!(!node_exited(n));
    }
    // The model's owner paid both reporters the task's cost (1 compute
    // unit at 100 micro-USDC + 1 byte at 2000 micro-USDC/GB, rounded up).
    let owner_after = get(&url, &format!("/v1/accounts/{}", owner.pubkey().hex()))["balance"]
        .as_u64()
        .unwrap();
    assert_eq!(owner_before - owner_after, 2 * 101);
    for (_, k) in &nodes {
        let earned = get(&url, &format!("/v1/accounts/{k}"))["node"]["earned_total"]
            .as_u64()
            .unwrap();
        assert_eq!(earned, 101, "node {k}");
    }
    // Both nodes still serve.
    honest_run(&c, &user, honest, 30);
}

#[test]
fn graphs_that_reach_for_files_or_cannot_load_are_skipped_and_the_key_never_leaks() {
    let _serial = serial();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (ledger, url) = start_ledger(dir);
    let c = Client::new(&url).unwrap();
    let (owner, _) = funded_key(dir, &url, "owner", 100);
    let (user, _) = funded_key(dir, &url, "user", 100);
    let (node_key, key) = funded_key(dir, &url, "node", 5000);
    let secret_hex = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&key).unwrap()).unwrap()
        ["secret"]
        .as_str()
        .unwrap()
        .to_string();
    // A FIFO: whoever opens it for reading is seen by a writer that polls it.
    let fifo = dir.join("bait.fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let opened = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (fifo, opened, done) = (fifo.clone(), opened.clone(), done.clone());
        std::thread::spawn(move || {
            use std::os::unix::fs::OpenOptionsExt;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                // Opening a FIFO to write without blocking succeeds only while a reader has it open.
                if std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&fifo)
                    .is_ok()
                {
                    opened.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let xy = || (vec![vi("x", FLOAT, &[4])], vec![vi("y", FLOAT, &[4])]);
    let specs = || (vec![spec("x", "float32", &[4])], vec![spec("y", "float32", &[4])]);
    let w4 = || BTreeMap::from([("w".to_string(), Tensor::from_f32(vec![4], &[0.0; 4]).unwrap())]);
    let f32_tensor = |name: &str| TensorProto {
        name: name.into(),
        dims: vec![4],
        data_type: FLOAT,
        raw_data: vec![0; 16],
        ..Default::default()
    };
    let mut hostile: Vec<(&str, u64)> = Vec::new();
    // 1, 2: an initializer whose data is the key file (or the bait).
    for (name, target) in [("initializer->key", key.clone()), ("initializer->fifo", fifo.clone())] {
        let (i, o) = xy();
        let mut g = graph(vec![node("Add", &["x", "w"], &["y"], vec![])], i, o);
        g.initializer = vec![external(&target, f32_tensor("w"))];
        let (si, so) = specs();
        hostile.push((
            name,
            register(&c, &owner, name, model_bytes(8, g), w4(), si, so, 1 << 20, 1),
        ));
    }
    // 3, 4: an attribute tensor (ConstantOfShape's value) read from the key file (or the bait).
    for (name, target) in [("attribute->key", key.clone()), ("attribute->fifo", fifo.clone())] {
        let mut value = f32_tensor("");
        value.dims = vec![1];
        let g = graph(
            vec![
                const_i64("four", 4),
                node("Reshape", &["four", "one"], &["shape"], vec![]),
                node(
                    "ConstantOfShape",
                    &["shape"],
                    &["c"],
                    vec![AttributeProto {
                        name: "value".into(),
                        r#type: attr_type::TENSOR,
                        t: Some(external(&target, value)),
                        ..Default::default()
                    }],
                ),
                node("Add", &["x", "c"], &["y"], vec![]),
            ],
            xy().0,
            xy().1,
        );
        let mut g = g;
        g.node.insert(
            0,
            node(
                "Constant",
                &[],
                &["one"],
                vec![AttributeProto {
                    name: "value".into(),
                    r#type: attr_type::TENSOR,
                    t: Some(i64_tensor("", &[1], &[1])),
                    ..Default::default()
                }],
            ),
        );
        let (si, so) = specs();
        hostile.push((
            name,
            register(&c, &owner, name, model_bytes(8, g), BTreeMap::new(), si, so, 1 << 20, 1),
        ));
    }
    // 5: an op of a custom domain.
    {
        let (i, o) = xy();
        let mut n = node("ReadFile", &["x"], &["y"], vec![]);
        n.domain = "com.evil".into();
        let mut m = ModelProto::decode(&model_bytes(8, graph(vec![n], i, o))[..]).unwrap();
        m.opset_import.push(OperatorSetIdProto {
            domain: "com.evil".into(),
            version: 1,
        });
        let (si, so) = specs();
        hostile.push((
            "custom op",
            register(
                &c,
                &owner,
                "custom op",
                m.encode_to_vec(),
                BTreeMap::new(),
                si,
                so,
                1 << 20,
                1,
            ),
        ));
    }
    // 6: a Loop of 2^62 iterations.
    {
        let body = graph(
            vec![
                node("Identity", &["cond_in"], &["cond_out"], vec![]),
                node("Identity", &["x_in"], &["x_out"], vec![]),
            ],
            vec![vi("i", INT64, &[]), vi("cond_in", BOOL, &[]), vi("x_in", FLOAT, &[4])],
            vec![vi("cond_out", BOOL, &[]), vi("x_out", FLOAT, &[4])],
        );
        let (i, o) = xy();
        let g = graph(
            vec![
                const_i64("trips", 1 << 62),
                node(
                    "Loop",
                    &["trips", "", "x"],
                    &["y"],
                    vec![AttributeProto {
                        name: "body".into(),
                        r#type: attr_type::GRAPH,
                        g: Some(Box::new(body)),
                        ..Default::default()
                    }],
                ),
            ],
            i,
            o,
        );
        let (si, so) = specs();
        hostile.push((
            "loop 2^62",
            register(
                &c,
                &owner,
                "loop 2^62",
                model_bytes(8, g),
                BTreeMap::new(),
                si,
                so,
                1 << 20,
                1,
            ),
        ));
    }
    // 7: IR version 14, which this ONNX Runtime cannot load.
    {
        let (i, o) = xy();
        let g = graph(vec![node("Add", &["x", "x"], &["y"], vec![])], i, o);
        let (si, so) = specs();
        hostile.push((
            "ir 14",
            register(
                &c,
                &owner,
                "ir 14",
                model_bytes(14, g),
                BTreeMap::new(),
                si,
                so,
                1 << 20,
                1,
            ),
        ));
    }
    let honest = register_honest(&c, &owner);

    // The node starts, skips every hostile model with the reason, and serves the honest one.
    let n = start_node(&url, &key, "node");
    let log = n.log();
    for (name, id) in &hostile {
        let line = log
            .iter()
            .find(|l| l.contains(&format!("skipping model {id} ")))
            .unwrap_or_else(|| panic!("model {id} ({name}) was not skipped: {log:#?}"));
        let why = match *name {
            "ir 14" => "IR version",
            "custom op" => "com.evil",
            "loop 2^62" => "trip count",
            _ => "external data",
        };
        assert!(line.contains(why), "{name}: {line}");
    }
    let acct = get(&url, &format!("/v1/accounts/{}", node_key.pubkey().hex()));
    let supports: Vec<u64> = acct["node"]["supports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[0].as_u64().unwrap())
        .collect();
    assert_eq!(supports, vec![honest], "{acct}");
    let y = honest_run(&c, &user, honest, 30);
    assert!(!node_exited(&n));
    assert!(n.log().iter().all(|l| !l.contains(&secret_hex)));

    // A judge's path refuses them too, before any runtime sees them.
    let worker = splitup_exec::worker::WorkerCommand {
        program: env!("CARGO_BIN_EXE_splitup").into(),
        args: vec!["node".into(), "worker".into()],
    };
    for (name, id) in &hostile {
        // Read as the model's owner would (a judge signs with its own node key).
        let err = splitup_node::daemon::recompute(
            &Client::new(&url).unwrap().signed_by(owner.clone()),
            &worker,
            *id,
            1,
            1,
            Some([0; 32]),
            None,
        )
        .err()
        .unwrap_or_else(|| panic!("{name}: recompute should fail"));
        let why = format!("{err:#}");
        if name.contains("->") {
            assert!(why.contains("external data"), "{name}: {why}");
        }
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    watcher.join().unwrap();
    assert!(
        !opened.load(std::sync::atomic::Ordering::SeqCst),
        "something opened the bait file"
    );
    // The secret is in no blob the ledger stores, nor in any output.
    drop(n);
    drop(ledger);
    let mut blobs = 0;
    for entry in walk(&dir.join("ledger/blobs")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !contains(&bytes, secret_hex.as_bytes()) && !contains(&bytes, &node_key_secret(&secret_hex)),
            "{} holds the node's secret",
            entry.display()
        );
        blobs += 1;
    }
    assert!(blobs > 8, "{blobs} blobs scanned");
    assert!(!y.is_empty());
}

#[test]
fn a_second_daemon_on_one_key_is_refused_and_a_foreign_signer_stops_the_daemon() {
    let _serial = serial();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_ledger, url) = start_ledger(dir);
    let (_, key) = funded_key(dir, &url, "node", 5000);
    let first = start_node(&url, &key, "first");
    // The lock file next to the key refuses a second daemon at once.
    let out = bin()
        .args(["node", "start", "--ledger", &url, "--key"])
        .arg(&key)
        .args(["--vram", "8GiB"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second daemon started");
    assert!(err.contains("another node daemon is running with this key"), "{err}");
    assert!(!node_exited(&first));
    // Something else that signs with the key (a copy of the key file on
    // another machine, say) is noticed by the nonces and stops the daemon.
    let c = Client::new(&url).unwrap();
    let k = splitup_ledger::keys::read(&key).unwrap();
    wait_for(30, "a foreign heartbeat to land", || {
        c.send(&k, Instruction::Heartbeat).is_ok()
    });
    wait_for(30, "the daemon to stop", || node_exited(&first));
    assert!(
        first.logged("another process is signing with this node's key"),
        "{:#?}",
        first.log()
    );
    let mut first = first;
    let status = first.proc.0.wait().unwrap();
    assert!(!status.success(), "{status:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn node_key_secret(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap())
        .collect()
}
