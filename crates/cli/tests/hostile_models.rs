//! Crafted hostile models (scripts/hostile_models.py) are refused at `run`
//! and at `deploy`, and a registration that bypasses the CLI (raw signed
//! instructions) is refused by the ledger's checks; the ledger keeps serving
//! and the key file's secret is never read into anything.

use splitup_graph::partition::{partition, Options};
use splitup_graph::plan;
use splitup_protocol::{Connection, Instruction, Keypair, ModelDef, TaskDef, TensorSpec};
use splitup_tensor::{npy, Tensor};
use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::{bin, start_ledger};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Writes the crafted models into `dir`; returns the key file's secret.
fn crafted(dir: &Path) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/hostile_models.py");
    let o = Command::new("python3")
        .arg(script)
        .arg(dir)
        .output()
        .expect("python3 runs");
    assert!(
        o.status.success(),
        "{script} failed (pip install onnx==1.23.2): {}",
        text(&o)
    );
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn write_npy(path: &Path, t: &Tensor) {
    std::fs::write(path, npy::encode(t).unwrap()).unwrap();
}

/// (model file, its input, what the refusal names; at `run`, at `deploy`).
fn cases() -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
    vec![
        ("key_initializer.onnx", "x=key_x.npy", "is a key file", "is a key file"),
        ("key_attribute.onnx", "x=key_x.npy", "external data", "external data"),
        ("custom_op.onnx", "x=x.npy", "com.evil::Steal", "com.evil::Steal"),
        ("loop_2_62.onnx", "x=x.npy", "trip count", "1048576 iterations"),
        ("ir14.onnx", "x=x.npy", "IR version 14", "IR version 14"),
        ("over_vram.onnx", "", "", "must be a constant"),
    ]
}

#[test]
fn crafted_models_are_refused_at_run_and_at_deploy() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let secret = crafted(dir);
    write_npy(&dir.join("x.npy"), &Tensor::from_f32(vec![4], &[1.0; 4]).unwrap());
    let key_len = std::fs::metadata(dir.join("node.json")).unwrap().len() as usize;
    let zeros = Tensor::new(splitup_tensor::DType::U8, vec![key_len], vec![0; key_len]).unwrap();
    write_npy(&dir.join("key_x.npy"), &zeros);
    let (_ledger, url) = start_ledger(dir, &[]);
    let o = bin()
        .args(["keys", "new", "-o", "user.json"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = bin()
        .args(["faucet", "--ledger", &url, "--key", "user.json", "--amount", "100"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    for (model, input, at_run, at_deploy) in cases() {
        if !input.is_empty() {
            let o = bin()
                .args(["run", model, "-i", input, "-o", "out"])
                .current_dir(dir)
                .output()
                .unwrap();
            let t = text(&o);
            assert_eq!(o.status.code(), Some(1), "{model} ran: {t}");
            assert!(t.contains(at_run), "{model} at run: {t}");
            assert!(!t.contains(&secret), "{model} printed the secret");
        }
        let o = bin()
            .args([
                "deploy",
                model,
                "--ledger",
                &url,
                "--key",
                "user.json",
                "--vram",
                "1GiB",
            ])
            .current_dir(dir)
            .output()
            .unwrap();
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{model} deployed: {t}");
        assert!(t.contains(at_deploy), "{model} at deploy: {t}");
    }
    assert!(!dir.join("out").exists(), "a refused model wrote outputs");
    let models: serde_json::Value = reqwest::blocking::get(format!("{url}/v1/models"))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(models, serde_json::json!([]), "a refused model was registered");
    // Nothing the ledger stored holds the secret.
    for f in walk(&dir.join("ledger")) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds the key file's secret",
            f.display()
        );
    }
}

fn walk(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn spec(name: &str) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        shape: vec![4],
        dtype: "float32".into(),
    }
}

/// A one-task model around a graph blob and a weights blob.
fn one_task(graph: &str, weights: &str) -> ModelDef {
    let h = |s: &str| splitup_protocol::crypto::from_hex32(s).unwrap();
    ModelDef {
        name: "crafted".into(),
        inputs: vec![spec("x")],
        outputs: vec![spec("y")],
        tasks: vec![TaskDef {
            vram: 1 << 20,
            compute_units: 1,
            inputs: vec![spec("x")],
            outputs: vec![spec("y")],
            weight_uri: String::new(),
            weight_hash: h(weights),
            graph_hash: h(graph),
            checks: vec![splitup_protocol::OutputCheck::exact("y")],
        }],
        connections: vec![
            Connection {
                source_task: 0,
                destination_task: 1,
                source_output: 0,
                dest_input: 0,
            },
            Connection {
                source_task: 1,
                destination_task: 0,
                source_output: 0,
                dest_input: 0,
            },
        ],
    }
}

#[test]
fn registrations_that_bypass_the_cli_are_checked_against_their_blobs() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    crafted(dir);
    let (_ledger, url) = start_ledger(dir, &[]);
    let owner = Keypair::from_seed([42; 32]);
    let c = splitup_node::Client::new(&url).unwrap().signed_by(owner.clone());
    reqwest::blocking::Client::new()
        .post(format!("{url}/v1/faucet"))
        .json(&serde_json::json!({ "to": owner.pubkey().hex(), "amount_usdc": 100 }))
        .send()
        .unwrap();
    let refused = |def: ModelDef, why: &str| {
        let e = c.send(&owner, Instruction::RegisterModel(def)).expect_err("registered");
        let e = format!("{e:#}");
        assert!(e.contains("invalid model") && e.contains(why), "expected {why:?}: {e}");
    };
    let no_weights = c
        .put_blob(splitup_tensor::st::encode(&Default::default()).unwrap())
        .unwrap();
    // Task graphs an attacker writes by hand: each is refused by the gate.
    // The key-stealing initializer comes with weights of the right shape,
    // so only its external-data location can refuse it.
    let key_len = std::fs::metadata(dir.join("node.json")).unwrap().len() as usize;
    let mut w = std::collections::BTreeMap::new();
    w.insert(
        "w".to_string(),
        Tensor::new(splitup_tensor::DType::U8, vec![key_len], vec![0; key_len]).unwrap(),
    );
    let w = c.put_blob(splitup_tensor::st::encode(&w).unwrap()).unwrap();
    let g = c
        .put_blob(std::fs::read(dir.join("key_initializer.onnx")).unwrap())
        .unwrap();
    refused(one_task(&g, &w), "points at external data");
    let weights = |list: Vec<(&str, Tensor)>| {
        let m: std::collections::BTreeMap<String, Tensor> = list.into_iter().map(|(n, t)| (n.to_string(), t)).collect();
        c.put_blob(splitup_tensor::st::encode(&m).unwrap()).unwrap()
    };
    let shape = weights(vec![("shape", Tensor::from_i64(vec![1], &[key_len as i64]).unwrap())]);
    let bounds = weights(vec![
        ("m", Tensor::from_i64(vec![], &[1i64 << 62]).unwrap()),
        ("t", Tensor::new(splitup_tensor::DType::Bool, vec![], vec![1]).unwrap()),
    ]);
    for (file, w, why) in [
        ("key_attribute.onnx", &shape, "external data"),
        ("custom_op.onnx", &no_weights, "com.evil::Steal"),
        ("loop_2_62.onnx", &bounds, "trip count"),
        ("ir14.onnx", &no_weights, "IR version 14"),
    ] {
        let g = c.put_blob(std::fs::read(dir.join(file)).unwrap()).unwrap();
        refused(one_task(&g, w), why);
    }
    // A graph the gate passes but ONNX Runtime refuses (float + int64): the
    // ledger loads each task in a worker before it registers anything.
    let c4 = weights(vec![("c", Tensor::from_i64(vec![4], &[1, 2, 3, 4]).unwrap())]);
    let g = c
        .put_blob(std::fs::read(dir.join("type_mismatch.onnx")).unwrap())
        .unwrap();
    refused(one_task(&g, &c4), "does not load");
    // A blob that is not in the store.
    let ghost = splitup_store::hash_of(b"never uploaded");
    refused(one_task(&ghost, &no_weights), "no blob");

    // An honest plan, then lies about it.
    let g = splitup_graph::builder::transformer(&splitup_graph::builder::TransformerConfig::tiny()).unwrap();
    let mut b = splitup_graph::shape::Bindings::default();
    b.dims.insert("batch".into(), 1);
    b.dims.insert("seq".into(), 8);
    let opts = Options::uniform(1 << 30);
    let p = partition(&g, &b, &opts).unwrap();
    let files = plan::build(&p, "tiny", &b, &opts, true).unwrap();
    let blobs = files.files.into_iter().collect();
    let checks = splitup_node::ops::calibrate(&files.manifest, &blobs, None, &|_, _| {}, &|_| {}).unwrap();
    let honest = splitup_node::ops::upload_plan(&c, &files.manifest, &blobs, &checks, &|_, _| {}).unwrap();
    let mut lie = honest.clone();
    lie.tasks[0].vram = 1;
    refused(lie, "bytes of VRAM; its graph needs");
    let mut lie = honest.clone();
    lie.tasks[0].compute_units = 1;
    refused(lie, "compute units; its graph needs");
    let mut lie = honest.clone();
    lie.tasks[0].inputs[0].shape[1] = 4096;
    lie.inputs[0].shape[1] = 4096;
    refused(lie, "declared inputs");
    let mut lie = honest.clone();
    let t = &mut lie.tasks[0];
    std::mem::swap(&mut t.graph_hash, &mut t.weight_hash);
    refused(lie, "task 1");
    // Tolerances that would let any result through, or judge nothing.
    let mut lie = honest.clone();
    lie.tasks[0].checks[0].rtol = 2.0;
    refused(lie, "rtol 2 is not a number in [0, 1]");
    let mut lie = honest.clone();
    lie.tasks[0].checks[0].miss_rate = 0.9;
    refused(lie, "miss_rate 0.9 is not a number in [0, 0.5]");
    // JSON has no infinity or NaN: such a tolerance never reaches the rules.
    let mut lie = honest.clone();
    lie.tasks[0].checks[0].atol = f64::INFINITY;
    let e = c.send(&owner, Instruction::RegisterModel(lie)).expect_err("registered");
    assert!(format!("{e:#}").contains("malformed"), "{e:#}");
    let mut lie = honest.clone();
    lie.tasks[0].checks.clear();
    refused(lie, "has no check");
    let mut lie = honest.clone();
    let mut extra = lie.tasks[0].checks[0].clone();
    extra.name = "nothing".into();
    lie.tasks[0].checks.push(extra.clone());
    refused(lie, "names no output");
    let mut lie = honest.clone();
    extra.indices_of = Some((lie.tasks[0].outputs[0].name.clone(), 99));
    lie.tasks[0].checks.push(extra);
    refused(lie, "axis 99 is not an axis");
    // Nothing was registered; the honest model still is.
    let models: serde_json::Value = c.get("/v1/models").unwrap();
    assert_eq!(models, serde_json::json!([]));
    c.send(&owner, Instruction::RegisterModel(honest)).unwrap();
    let models: serde_json::Value = c.get("/v1/models").unwrap();
    assert_eq!(models.as_array().unwrap().len(), 1);
}
