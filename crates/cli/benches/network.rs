//! End-to-end latency of a networked run (a ledger and 4 node processes on
//! this machine, a transformer split into 4 tasks) against the unsplit local
//! run of the same model, as a ratio; and executions per second with many in
//! flight. Run: cargo bench -p splitup-cli --bench network

use rand::{Rng, SeedableRng};
use splitup_graph::builder::{transformer, TransformerConfig};
use splitup_graph::partition::{partition, Options};
use splitup_graph::plan;
use splitup_graph::shape::Bindings;
use splitup_ledger::keys;
use splitup_node::Client;
use splitup_tensor::Tensor;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Procs(Vec<Child>);
impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(procs: &mut Procs, args: &[&str], ready: &str) -> String {
    let mut c = Command::new(env!("CARGO_BIN_EXE_splitup"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(c.stdout.take().unwrap());
    procs.0.push(c);
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "{args:?} exited");
        if line.contains(ready) {
            std::thread::spawn(move || for _ in out.lines() {});
            return line;
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Waits as `splitup submit --wait` does: long-polling the ledger.
fn wait_all(c: &Client, ids: &[u64]) {
    for id in ids {
        let t = Instant::now();
        let mut seen = None;
        loop {
            let (e, v) = c
                .get_when_changed(&format!("/v1/executions/{id}"), seen, Duration::from_secs(5))
                .unwrap();
            if e["status"] == "Completed" {
                break;
            }
            seen = v;
            assert!(t.elapsed() < Duration::from_secs(300), "execution {id} did not finish");
        }
    }
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Procs(Vec::new());
    let data = dir.path().join("ledger");
    let line = spawn(
        &mut procs,
        &[
            "ledger",
            "start",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--data",
            data.to_str().unwrap(),
        ],
        "listening on",
    );
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    let c = Client::new(&url).unwrap();
    let cfg = TransformerConfig::bench();
    let g = transformer(&cfg).unwrap();
    let mut b = Bindings::default();
    b.dims.insert("batch".into(), 1);
    b.dims.insert("seq".into(), 64);
    // The largest budget that still needs 4 tasks.
    let (mut lo, mut hi) = (1u64, g.weight_bytes() * 2);
    while hi - lo > g.weight_bytes() / 1000 {
        let mid = (lo + hi) / 2;
        match partition(&g, &b, &Options::uniform(mid)) {
            Ok(p) if p.tasks.len() >= 4 => lo = mid,
            _ => hi = mid,
        }
    }
    let opts = Options::uniform(lo);
    let p = partition(&g, &b, &opts).unwrap();
    let files = plan::build(&p, "bench", &b, &opts, true).unwrap();
    let user = keys::generate();
    c.post(
        "/v1/faucet",
        &serde_json::json!({ "to": user.pubkey().hex(), "amount_usdc": 10_000 }),
    )
    .unwrap();
    // The user's key signs its blob uploads and reads.
    let c = c.signed_by(user.clone());
    let blobs: BTreeMap<String, Vec<u8>> = files.files.into_iter().collect();
    let checks = splitup_node::ops::calibrate(&files.manifest, &blobs, None, &|_, _| {}, &|_| {}).unwrap();
    let model = splitup_node::ops::deploy(&c, &user, &files.manifest, &blobs, &checks, &|_, _| {}).unwrap();
    for i in 0..4 {
        let kp = dir.path().join(format!("n{i}.json"));
        let k = keys::generate();
        keys::write(&kp, &k).unwrap();
        c.post(
            "/v1/faucet",
            &serde_json::json!({ "to": k.pubkey().hex(), "amount_usdc": 5000 }),
        )
        .unwrap();
        spawn(
            &mut procs,
            &[
                "node",
                "start",
                "--ledger",
                &url,
                "--key",
                kp.to_str().unwrap(),
                "--vram",
                "8GiB",
            ],
            "registered",
        );
    }
    let rt = splitup_exec::OrtRuntime::new(1).unwrap();
    let mut whole = splitup_exec::runner::prepare_model(&g, &rt).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut input = || -> BTreeMap<String, Tensor> {
        let ids: Vec<i64> = (0..64).map(|_| rng.random_range(0..cfg.vocab as i64)).collect();
        [("input_ids".to_string(), Tensor::from_i64(vec![1, 64], &ids).unwrap())].into()
    };
    let specs = files.manifest.inputs.clone();
    let rounds = if quick { 1 } else { 10 };
    let (mut local, mut net) = (Vec::new(), Vec::new());
    for _ in 0..rounds + 1 {
        let inp = input();
        let t = Instant::now();
        splitup_exec::runner::run_model(whole.as_mut(), &specs, &inp).unwrap();
        local.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let id = splitup_node::ops::submit(&c, &user, model, &inp, 0).unwrap();
        wait_all(&c, &[id]);
        splitup_node::ops::fetch(&c, id).unwrap();
        net.push(t.elapsed().as_secs_f64());
    }
    // The first round warms up both sides.
    let (l, n) = (median(local[1..].to_vec()), median(net[1..].to_vec()));
    let in_flight = if quick { 4 } else { 40 };
    let t = Instant::now();
    let ids: Vec<u64> = (0..in_flight)
        .map(|_| splitup_node::ops::submit(&c, &user, model, &input(), 0).unwrap())
        .collect();
    wait_all(&c, &ids);
    let eps = in_flight as f64 / t.elapsed().as_secs_f64();
    println!("transformer: {} layers, hidden {}, vocab {}, seq 64, {} tasks on 4 local nodes, p = 0.08; medians of {rounds} rounds", cfg.layers, cfg.hidden, cfg.vocab, files.manifest.tasks.len());
    println!("unsplit local run:        {:>8.2} ms", l * 1e3);
    println!(
        "networked run (submit to fetched output): {:>8.2} ms  = {:.1}x the local run",
        n * 1e3,
        n / l
    );
    println!("throughput with {in_flight} executions in flight: {eps:.2} executions/s");
}
