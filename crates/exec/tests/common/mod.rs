//! Shared helpers for the executor's integration tests: partition a graph,
//! write the plan to a temporary directory, run it split and unsplit.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use splitup_exec::runner::{self, Report};
use splitup_exec::OrtRuntime;
use splitup_graph::partition::{partition, Options};
use splitup_graph::plan::{self, Manifest};
use splitup_graph::shape::{self, Bindings};
use splitup_graph::Graph;
use splitup_tensor::{allclose, DType, Tensor, Tolerance};
use std::collections::BTreeMap;

/// Runs `scripts/SCRIPT OUT_DIR ARGS...` into a fresh directory, unless the
/// environment variable `env` names a directory generated earlier. The
/// `TempDir` (if any) must be kept alive while the files are used.
pub fn generated(
    env: &str,
    script: &str,
    args: &[&std::path::Path],
    hint: &str,
) -> (std::path::PathBuf, Option<tempfile::TempDir>) {
    if let Some(d) = std::env::var_os(env) {
        return (d.into(), None);
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(script);
    let st = std::process::Command::new("python3")
        .arg(&path)
        .arg(tmp.path())
        .args(args)
        .status()
        .expect("python3 must be installed");
    assert!(st.success(), "{script} failed ({hint})");
    (tmp.path().to_path_buf(), Some(tmp))
}

pub fn runtime() -> OrtRuntime {
    OrtRuntime::new(1).expect("ONNX Runtime must be installed (pip install onnxruntime==1.31.1)")
}

/// Seeded inputs for every model input: token ids in range for int64 inputs,
/// uniform floats otherwise.
pub fn random_inputs(g: &Graph, b: &Bindings, seed: u64, id_max: i64) -> BTreeMap<String, Tensor> {
    let shapes = shape::infer(g, b).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    g.inputs
        .iter()
        .map(|(name, _)| {
            let info = shapes.get(name);
            let n: usize = info.shape.iter().product();
            let t = match info.dtype {
                DType::I64 => Tensor::from_i64(
                    info.shape.clone(),
                    &(0..n).map(|_| rng.random_range(0..id_max)).collect::<Vec<_>>(),
                )
                .unwrap(),
                DType::F32 => Tensor::from_f32(
                    info.shape.clone(),
                    &(0..n).map(|_| rng.random::<f32>()).collect::<Vec<_>>(),
                )
                .unwrap(),
                other => panic!("no generator for {other}"),
            };
            (name.clone(), t)
        })
        .collect()
}

pub struct Compared {
    pub manifest: Manifest,
    pub report: Report,
    pub unsplit: Vec<(String, Tensor)>,
}

/// Partitions `g` at `opts`, writes the plan, runs it and the unsplit model,
/// and asserts every output agrees within the partition tolerance.
pub fn split_and_compare(g: &Graph, b: &Bindings, opts: &Options, inputs: &BTreeMap<String, Tensor>) -> Compared {
    let rt = runtime();
    let p = partition(g, b, opts).unwrap_or_else(|e| panic!("partition failed: {e}"));
    let files = plan::build(&p, &g.name, b, opts, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    runner::write_plan(dir.path(), &files).unwrap();
    let manifest = runner::load_manifest(dir.path()).unwrap();
    let mut sessions = runner::prepare_plan(dir.path(), &manifest, &rt, 2, &|_| {}).unwrap();
    let report = runner::execute(&manifest, &mut sessions, inputs, 4, &|_| {}).unwrap();
    let mut whole = runner::prepare_model(g, &rt).unwrap();
    let unsplit = runner::run_model(whole.as_mut(), &manifest.inputs, inputs).unwrap();
    assert_eq!(report.outputs.len(), unsplit.len());
    for ((n1, a), (n2, e)) in report.outputs.iter().zip(&unsplit) {
        assert_eq!(n1, n2);
        let finite = e.to_f64_vec();
        assert!(
            finite.iter().all(|v| v.is_finite()),
            "{}: output {n1} of the unsplit run is not finite",
            g.name
        );
        assert!(
            finite.iter().any(|&v| v != finite[0]),
            "{}: output {n1} is constant; the comparison would prove nothing",
            g.name
        );
        allclose(a, e, Tolerance::PARTITION)
            .unwrap_or_else(|m| panic!("{}: output {n1} differs split vs unsplit: {m}", g.name));
    }
    // Each task fits: weights + activations (+ overhead) within its node's budget.
    for t in &manifest.tasks {
        let cap = opts.capacities[t.node.unwrap_or(0)];
        assert!(
            t.weight_bytes + t.activation_bytes <= t.vram_requirement && t.vram_requirement <= cap,
            "task {} needs {} of {cap}",
            t.id,
            t.vram_requirement
        );
    }
    // The manifest's cut bytes are exactly what crossed between tasks.
    assert_eq!(
        report.passed_bytes, manifest.cut_bytes,
        "{}: measured vs planned cut bytes",
        g.name
    );
    Compared {
        manifest,
        report,
        unsplit,
    }
}
