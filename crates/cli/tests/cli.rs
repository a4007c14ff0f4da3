//! The real `splitup` binary, run in a sandbox directory.

use splitup_tensor::{allclose, npy, Tensor, Tolerance};
use std::path::Path;
use std::process::{Command, Output};

fn splitup(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_splitup"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ok(o: &Output) -> String {
    let (out, err) = text(o);
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{out}\nstderr:\n{err}",
        o.status.code()
    );
    out
}

fn fails(o: &Output, code: i32) -> String {
    let (out, err) = text(o);
    assert_eq!(o.status.code(), Some(code), "stdout:\n{out}\nstderr:\n{err}");
    assert!(!err.contains("panicked"), "a panic is never an error message: {err}");
    err
}

fn read(path: &Path) -> Tensor {
    npy::decode(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn local_demo_splits_into_four_or_more_tasks_and_matches() {
    let d = tempfile::tempdir().unwrap();
    let out = ok(&splitup(&["demo", "--local", "-o", "demo"], d.path()));
    assert!(out.contains("split equals unsplit"), "{out}");
    let summary = out.lines().find(|l| l.contains(" tasks; largest needs")).unwrap();
    let tasks: usize = summary.split_whitespace().next().unwrap().parse().unwrap();
    assert!(tasks >= 4, "{tasks} tasks");
    assert!(d.path().join("demo/outputs/logits.npy").is_file());
}

#[test]
fn partition_run_plan_and_run_agree_through_files() {
    let d = tempfile::tempdir().unwrap();
    ok(&splitup(&["generate", "--layers", "8", "-o", "model.onnx"], d.path()));
    let out = ok(&splitup(
        &[
            "partition",
            "model.onnx",
            "--vram",
            "700KiB",
            "--dim",
            "batch=1",
            "--dim",
            "seq=12",
            "-o",
            "plan",
        ],
        d.path(),
    ));
    assert!(out.contains("plan written to plan"), "{out}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("plan/manifest.json")).unwrap()).unwrap();
    let tasks = manifest["tasks"].as_array().unwrap();
    assert!(tasks.len() >= 4);
    for t in tasks {
        assert!(t["vram_requirement"].as_u64().unwrap() <= 700 * 1024);
        assert!(t["compute_units"].as_u64().unwrap() >= 1);
        assert_eq!(t["graph"]["blake3"].as_str().unwrap().len(), 64);
    }
    let ids = Tensor::from_i64(vec![1, 12], &[5, 17, 300, 2, 9, 1000, 44, 3, 3, 2047, 0, 12]).unwrap();
    std::fs::write(d.path().join("ids.npy"), npy::encode(&ids).unwrap()).unwrap();
    let out = ok(&splitup(
        &["run-plan", "plan", "--input", "input_ids=ids.npy", "-o", "split"],
        d.path(),
    ));
    assert!(out.contains("passed between tasks"), "{out}");
    ok(&splitup(
        &["run", "model.onnx", "--input", "input_ids=ids.npy", "-o", "whole"],
        d.path(),
    ));
    let (a, b) = (
        read(&d.path().join("split/logits.npy")),
        read(&d.path().join("whole/logits.npy")),
    );
    assert_eq!(a.shape, vec![1, 12, 2048]);
    allclose(&a, &b, Tolerance::PARTITION).unwrap();
}

#[test]
fn tampered_weights_are_refused() {
    let d = tempfile::tempdir().unwrap();
    ok(&splitup(
        &["partition", "@tiny", "--vram", "1MiB", "--dim", "seq=4", "-o", "plan"],
        d.path(),
    ));
    let ids = Tensor::from_i64(vec![1, 4], &[1, 2, 3, 4]).unwrap();
    std::fs::write(d.path().join("ids.npy"), npy::encode(&ids).unwrap()).unwrap();
    let w = d.path().join("plan/task_0002.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&w, bytes).unwrap();
    let err = fails(
        &splitup(&["run-plan", "plan", "-i", "input_ids=ids.npy", "-o", "out"], d.path()),
        1,
    );
    assert!(
        err.contains("task_0002.safetensors") && err.contains("BLAKE3") && err.contains("tampered"),
        "{err}"
    );
    assert!(
        !d.path().join("out").exists(),
        "nothing is written when a task file is corrupt"
    );
}

#[test]
fn bad_inputs_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    ok(&splitup(
        &["partition", "@tiny", "--vram", "1MiB", "--dim", "seq=4", "-o", "plan"],
        d.path(),
    ));
    // Wrong shape, wrong name, not an .npy file.
    let ids = Tensor::from_i64(vec![1, 5], &[1, 2, 3, 4, 5]).unwrap();
    std::fs::write(d.path().join("ids5.npy"), npy::encode(&ids).unwrap()).unwrap();
    let err = fails(
        &splitup(&["run-plan", "plan", "-i", "input_ids=ids5.npy", "-o", "out"], d.path()),
        1,
    );
    assert!(
        err.contains("input \"input_ids\" is int64 [1, 5], but the plan was made for int64 [1, 4]"),
        "{err}"
    );
    let err = fails(
        &splitup(&["run-plan", "plan", "-i", "tokens=ids5.npy", "-o", "out"], d.path()),
        1,
    );
    assert!(
        err.contains("missing input \"input_ids\"") && err.contains("unknown input \"tokens\""),
        "{err}"
    );
    std::fs::write(d.path().join("junk.npy"), b"PK\x03\x04 not numpy").unwrap();
    let err = fails(
        &splitup(&["run-plan", "plan", "-i", "input_ids=junk.npy", "-o", "out"], d.path()),
        1,
    );
    assert!(err.contains("not a valid .npy file") && err.contains("magic"), "{err}");
}

#[test]
fn impossible_budgets_and_missing_dims_are_explained() {
    let d = tempfile::tempdir().unwrap();
    ok(&splitup(&["generate", "-o", "model.onnx"], d.path()));
    let err = fails(
        &splitup(&["partition", "model.onnx", "--vram", "1MiB", "-o", "plan"], d.path()),
        1,
    );
    assert!(err.contains("--dim batch=N"), "{err}");
    let err = fails(
        &splitup(
            &[
                "partition",
                "model.onnx",
                "--vram",
                "200KiB",
                "--dim",
                "batch=1",
                "--dim",
                "seq=64",
                "-o",
                "plan",
            ],
            d.path(),
        ),
        1,
    );
    assert!(
        err.contains("tensor \"logits\"") && err.contains("exceeds the budget") && err.contains("smallest budget"),
        "{err}"
    );
    let err = fails(
        &splitup(
            &["partition", "model.onnx", "--vram", "12 parsecs", "-o", "plan"],
            d.path(),
        ),
        2,
    );
    assert!(err.contains("unknown size unit"), "{err}");
}

#[test]
fn hostile_model_files_are_errors_not_crashes() {
    let d = tempfile::tempdir().unwrap();
    ok(&splitup(&["generate", "-o", "model.onnx"], d.path()));
    let bytes = std::fs::read(d.path().join("model.onnx")).unwrap();
    std::fs::write(d.path().join("cut.onnx"), &bytes[..bytes.len() / 2]).unwrap();
    let err = fails(
        &splitup(&["partition", "cut.onnx", "--vram", "1GiB", "--dry-run"], d.path()),
        1,
    );
    assert!(
        err.contains("cannot load cut.onnx") && err.contains("truncated"),
        "{err}"
    );
    std::fs::write(d.path().join("empty.onnx"), b"").unwrap();
    let err = fails(
        &splitup(&["partition", "empty.onnx", "--vram", "1GiB", "--dry-run"], d.path()),
        1,
    );
    assert!(err.contains("no graph"), "{err}");
}

#[test]
fn llama_70b_shape_partitions_at_12_and_24_gib() {
    let d = tempfile::tempdir().unwrap();
    for (vram, min) in [("12GiB", 12), ("24GiB", 6)] {
        let out = ok(&splitup(
            &["partition", "@llama-70b", "--vram", vram, "--dry-run"],
            d.path(),
        ));
        let summary = out.lines().find(|l| l.contains(" tasks; largest needs")).unwrap();
        let tasks: usize = summary.split_whitespace().next().unwrap().parse().unwrap();
        assert!(tasks >= min, "{summary}");
    }
}

#[test]
fn missing_onnxruntime_names_the_install_command() {
    let d = tempfile::tempdir().unwrap();
    ok(&splitup(&["generate", "-o", "model.onnx"], d.path()));
    let ids = Tensor::from_i64(vec![1, 4], &[1, 2, 3, 4]).unwrap();
    std::fs::write(d.path().join("ids.npy"), npy::encode(&ids).unwrap()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_splitup"))
        .args(["run", "model.onnx", "-i", "input_ids=ids.npy", "-o", "out"])
        .current_dir(d.path())
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .unwrap();
    let err = fails(&o, 1);
    assert!(err.contains("pip install onnxruntime==1.31.1"), "{err}");
}

#[test]
fn sim_replays_from_its_seed_and_refuses_insecure_parameters() {
    let d = tempfile::tempdir().unwrap();
    let args = [
        "sim",
        "--nodes",
        "30",
        "--executions",
        "150",
        "--seed",
        "9",
        "--crash-frac",
        "0.1",
        "--lazy-frac",
        "0.2",
        "--lazy-q",
        "0.5",
    ];
    let a = ok(&splitup(&args, d.path()));
    assert!(a.contains("seed 9 (replay with --seed 9)"), "{a}");
    assert!(a.contains("completed 150 of 150 executions"), "{a}");
    assert!(a.contains("instructions/s"), "{a}");
    let b = ok(&splitup(&args, d.path()));
    // Everything but wall-clock figures replays exactly.
    let stable = |s: &str| {
        s.lines()
            .filter(|l| !l.contains("wall time") && !l.starts_with("state machine"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(stable(&a), stable(&b));
    let err = fails(
        &splitup(
            &["sim", "--nodes", "5", "--executions", "5", "--seed", "4", "--p", "0.01"],
            d.path(),
        ),
        1,
    );
    assert!(err.contains("seed 4") && err.contains("p must exceed"), "{err}");
    let err = fails(&splitup(&["sim", "--lazy-frac", "1.5"], d.path()), 1);
    assert!(err.contains("--lazy-frac must be between 0 and 1"), "{err}");
}
