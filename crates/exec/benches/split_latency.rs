//! Split-vs-unsplit latency of a generated transformer at 2, 4 and 8 tasks,
//! measured in one process, interleaved round by round, reported as ratios
//! to the unsplit run (medians). Both sides run warm sessions with one
//! thread each, as a node would after pre-loading.
//!
//! Run: cargo bench -p splitup-exec --bench split_latency

use rand::{Rng, SeedableRng};
use splitup_exec::runner;
use splitup_exec::OrtRuntime;
use splitup_graph::builder::{transformer, TransformerConfig};
use splitup_graph::partition::{partition, Options};
use splitup_graph::plan;
use splitup_graph::shape::Bindings;
use splitup_tensor::Tensor;
use std::collections::BTreeMap;
use std::time::Instant;

const ROUNDS: usize = 30;
const WARMUP: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run one round then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let c = TransformerConfig::bench();
    let g = transformer(&c).unwrap();
    let mut b = Bindings::default();
    b.dims.insert("batch".into(), 1);
    b.dims.insert("seq".into(), 64);
    let rt = OrtRuntime::new(1).expect("pip install onnxruntime==1.31.1");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let ids: Vec<i64> = (0..64).map(|_| rng.random_range(0..c.vocab as i64)).collect();
    let inputs: BTreeMap<String, Tensor> =
        [("input_ids".to_string(), Tensor::from_i64(vec![1, 64], &ids).unwrap())].into();
    let total = g.weight_bytes();
    let dir = tempfile::tempdir().unwrap();
    let mut plans = Vec::new();
    for want in [2usize, 4, 8] {
        // The largest budget whose plan has at least `want` tasks (binary search).
        let (mut lo, mut hi) = (1u64, total * 2);
        while hi - lo > total / 1000 {
            let mid = (lo + hi) / 2;
            match partition(&g, &b, &Options::uniform(mid)) {
                Ok(p) if p.tasks.len() >= want => lo = mid,
                Ok(_) => hi = mid,
                Err(_) => lo = mid,
            }
        }
        let opts = Options::uniform(lo);
        let p = partition(&g, &b, &opts).unwrap();
        let files = plan::build(&p, "bench", &b, &opts, true).unwrap();
        let pdir = dir.path().join(format!("plan{want}"));
        runner::write_plan(&pdir, &files).unwrap();
        let m = runner::load_manifest(&pdir).unwrap();
        let sessions = runner::prepare_plan(&pdir, &m, &rt, 2, &|_| {}).unwrap();
        plans.push((want, m, sessions));
    }
    let mut whole = runner::prepare_model(&g, &rt).unwrap();
    let specs = plans[0].1.inputs.clone();
    let mut unsplit = Vec::new();
    let mut split: Vec<Vec<f64>> = vec![Vec::new(); plans.len()];
    let rounds = if quick { 1 } else { WARMUP + ROUNDS };
    for round in 0..rounds {
        let t = Instant::now();
        runner::run_model(whole.as_mut(), &specs, &inputs).unwrap();
        let u = t.elapsed().as_secs_f64();
        let mut s = Vec::new();
        for (_, m, sessions) in plans.iter_mut() {
            let t = Instant::now();
            runner::execute(m, sessions, &inputs, 4, &|_| {}).unwrap();
            s.push(t.elapsed().as_secs_f64());
        }
        if round >= rounds.saturating_sub(ROUNDS) || quick {
            unsplit.push(u);
            for (k, v) in s.into_iter().enumerate() {
                split[k].push(v);
            }
        }
    }
    let base = median(unsplit);
    println!(
        "transformer: {} layers, hidden {}, vocab {}, seq 64, {:.1} MiB of weights; {} rounds, medians",
        c.layers,
        c.hidden,
        c.vocab,
        total as f64 / 1048576.0,
        if quick { 1 } else { ROUNDS }
    );
    println!("{:<22} {:>10} {:>8} {:>14}", "run", "tasks", "ms", "ratio to unsplit");
    println!("{:<22} {:>10} {:>8.2} {:>14.2}", "unsplit", 1, base * 1e3, 1.0);
    for ((want, m, _), times) in plans.iter().zip(split) {
        let t = median(times);
        println!(
            "{:<22} {:>10} {:>8.2} {:>14.2}",
            format!("split (target {want})"),
            m.tasks.len(),
            t * 1e3,
            t / base
        );
    }
}
