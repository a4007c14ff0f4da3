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
    let summary = out.lines().find(|l| l.contains("; largest needs")).unwrap();
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
        let summary = out.lines().find(|l| l.contains("; largest needs")).unwrap();
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
        "--strategy",
        "lazy",
        "--strategy-frac",
        "0.2",
        "--q",
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
    let err = fails(&splitup(&["sim", "--strategy-frac", "1.5"], d.path()), 1);
    assert!(err.contains("--strategy-frac must be between 0 and 1"), "{err}");
    let err = fails(&splitup(&["sim", "--strategy", "sneaky"], d.path()), 1);
    assert!(err.contains("unknown strategy") && err.contains("uri-swap"), "{err}");
}

#[test]
fn sim_strategy_all_prints_one_row_per_strategy() {
    let d = tempfile::tempdir().unwrap();
    let args = [
        "sim",
        "--strategy",
        "all",
        "--nodes",
        "30",
        "--executions",
        "100",
        "--seed",
        "3",
        "--submit-every-ms",
        "200",
    ];
    let out = ok(&splitup(&args, d.path()));
    assert!(out.contains("seed 3 (replay with --seed 3)"), "{out}");
    let table = out.split_once("\nstrategy ").expect("a table").1;
    assert!(table.contains("profit/node") && table.contains("accepted"), "{out}");
    for name in [
        "honest",
        "lazy",
        "uri-swap",
        "withhold",
        "lazy-validator",
        "lazy-validator-reveal",
        "grief",
        "sybil",
        "tolerance",
    ] {
        assert!(
            table.lines().any(|l| l.split_whitespace().next() == Some(name)),
            "no row for {name}:\n{out}"
        );
    }
}

/// Bytes of a size as `print_plan` shows it ("581.4 KiB", "0 B"): rounded to
/// 0.1 of its unit, which keeps order, so `a <= b` implies `shown(a) <= shown(b)`.
fn shown_bytes(num: &str, unit: &str) -> f64 {
    let v: f64 = num.parse().unwrap_or_else(|_| panic!("{num:?} is not a number"));
    let exp = ["B", "KiB", "MiB", "GiB", "TiB"]
        .iter()
        .position(|u| *u == unit)
        .unwrap_or_else(|| panic!("{unit:?} is not a unit"));
    v * 1024f64.powi(exp as i32)
}

/// A byte count as `print_plan` shows it, read back.
fn shown_bytes_of(bytes: u64) -> f64 {
    let (mut v, mut exp) = (bytes as f64, 0);
    while v >= 1024.0 && exp < 4 {
        v /= 1024.0;
        exp += 1;
    }
    let v: f64 = if exp == 0 {
        v
    } else {
        format!("{v:.1}").parse().unwrap()
    };
    v * 1024f64.powi(exp)
}

/// A task row of a printed plan: task id, memory shown, and the node index
/// and its capacity shown, when the table has a node column.
type PlanRow = (u64, f64, Option<(usize, f64)>);

fn plan_rows(out: &str) -> Vec<PlanRow> {
    out.lines()
        .filter(|l| !l.contains("; largest needs"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let id: u64 = f.first()?.parse().ok()?;
            // id ops weights(2) activations(2) memory(2) cu deps cut(2) [#n (size unit)]
            let memory = shown_bytes(f[6], f[7]);
            let node = (f.len() == 15).then(|| {
                let n: usize = f[12].trim_start_matches('#').parse().unwrap();
                let cap = shown_bytes(f[13].trim_start_matches('('), f[14].trim_end_matches(')'));
                (n, cap)
            });
            Some((id, memory, node))
        })
        .collect()
}

fn task_count(out: &str) -> usize {
    let summary = out
        .lines()
        .find(|l| l.contains("; largest needs"))
        .unwrap_or_else(|| panic!("no plan summary in:\n{out}"));
    summary.split_whitespace().next().unwrap().parse().unwrap()
}

/// The N of "the smallest budget that partitions this model… is X (N bytes)".
fn smallest_budget(err: &str) -> u64 {
    let line = err
        .lines()
        .find(|l| l.contains("the smallest budget that partitions this model"))
        .unwrap_or_else(|| panic!("no smallest budget in:\n{err}"));
    let open = line.rfind('(').unwrap();
    let n = line[open + 1..].strip_suffix(" bytes)").unwrap();
    n.parse()
        .unwrap_or_else(|_| panic!("{n:?} is not a byte count: {line}"))
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn heterogeneous_nodes_place_every_task_on_a_node_it_fits() {
    let d = tempfile::tempdir().unwrap();
    // @tiny's weights alone (2.4 MiB) exceed the largest node, so every
    // plan has several tasks: first a pool as large as the plan, then one
    // whose tasks must share nodes.
    let pools: [(&str, &[u64]); 2] = [
        ("1200KiB,2MiB,1500KiB", &[1200 * 1024, 2 * 1024 * 1024, 1500 * 1024]),
        ("2MiB,1200KiB", &[2 * 1024 * 1024, 1200 * 1024]),
    ];
    let mut task_counts = vec![];
    for (nodes, caps) in pools {
        let out = ok(&splitup(
            &["partition", "@tiny", "--nodes", nodes, "--dry-run"],
            d.path(),
        ));
        let header = out.lines().find(|l| l.trim_start().starts_with("task")).unwrap();
        assert!(header.ends_with("  node"), "no node column: {header:?}\n{out}");
        let rows = plan_rows(&out);
        assert!(rows.len() >= 2, "{nodes}:\n{out}");
        task_counts.push(rows.len());
        assert_eq!(rows.len(), task_count(&out), "{out}");
        for (id, memory, node) in &rows {
            let (n, cap) = node.unwrap_or_else(|| panic!("task {id} has no node:\n{out}"));
            assert!(n < caps.len(), "task {id} on node #{n} of {}:\n{out}", caps.len());
            assert_eq!(cap, shown_bytes_of(caps[n]), "task {id}: node #{n}'s capacity:\n{out}");
            assert!(
                *memory <= cap,
                "task {id} needs {memory} B on node #{n} of {cap} B:\n{out}"
            );
        }
    }

    // The plan written agrees, exactly.
    let (nodes, caps) = pools[0];
    let out = ok(&splitup(
        &["partition", "@tiny", "--nodes", nodes, "-o", "plan"],
        d.path(),
    ));
    assert!(out.contains("plan written to plan"), "{out}");
    let m = manifest(&d.path().join("plan"));
    let capacities: Vec<u64> = m["budget"]["capacities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    assert_eq!(capacities, caps, "{m}");
    let tasks = m["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), task_counts[0], "the same plan as --dry-run printed");
    for t in tasks {
        let n = t["node"].as_u64().unwrap_or_else(|| panic!("task without a node: {t}")) as usize;
        let need = t["vram_requirement"].as_u64().unwrap();
        assert!(
            need <= capacities[n],
            "task {} needs {need} B on node #{n} of {} B",
            t["id"],
            capacities[n]
        );
    }

    // --nodes and --vram are alternatives.
    let err = fails(
        &splitup(
            &["partition", "@tiny", "--nodes", nodes, "--vram", "2MiB", "--dry-run"],
            d.path(),
        ),
        2,
    );
    assert!(err.contains("cannot be used with"), "{err}");

    // --nodes before the model does not swallow it, and repeating it adds nodes.
    ok(&splitup(
        &["partition", "--nodes", "2MiB,3MiB", "@tiny", "--dry-run"],
        d.path(),
    ));
    ok(&splitup(
        &["partition", "--nodes", "2MiB", "--nodes", "3MiB", "@tiny", "--dry-run"],
        d.path(),
    ));
}

#[test]
fn generated_models_default_seq_to_their_maximum() {
    let d = tempfile::tempdir().unwrap();
    // @tiny's max_seq is 64 (< 128): its logits are [1, 64, 2048].
    let err = fails(
        &splitup(&["partition", "@tiny", "--vram", "1MiB", "--dry-run"], d.path()),
        1,
    );
    assert!(
        err.contains("[1, 64, 2048]") && err.contains("smallest budget"),
        "{err}"
    );
    let out = ok(&splitup(
        &["partition", "@tiny", "--vram", "2MiB", "--dry-run"],
        d.path(),
    ));
    assert!(task_count(&out) >= 1 && !plan_rows(&out).is_empty(), "{out}");
    ok(&splitup(
        &["partition", "@tiny", "--vram", "2MiB", "-o", "plan"],
        d.path(),
    ));
    let m = manifest(&d.path().join("plan"));
    assert_eq!(m["dims"], serde_json::json!({"batch": 1, "seq": 64}), "{m}");
    assert_eq!(m["inputs"][0]["shape"], serde_json::json!([1, 64]), "{m}");
}

#[test]
fn unknown_dims_and_values_name_what_the_model_has() {
    let d = tempfile::tempdir().unwrap();
    let partition = |extra: &[&str]| {
        let mut args = vec!["partition", "@tiny", "--vram", "2MiB", "--dry-run"];
        args.extend_from_slice(extra);
        splitup(&args, d.path())
    };
    let err = fails(&partition(&["--dim", "bogus=3"]), 1);
    assert!(
        err.contains("bogus") && err.contains("batch, seq"),
        "names the dim and the model's symbolic dims: {err}"
    );
    let err = fails(&partition(&["--value", "nosuch=1"]), 1);
    assert!(err.contains("nosuch") && err.contains("input_ids"), "{err}");
    // input_ids is int64 [batch, seq]: rank 2, and --value freezes rank 0 or 1.
    for v in ["input_ids=1", "input_ids=1,2"] {
        let err = fails(&partition(&["--value", v]), 1);
        assert!(err.contains("input_ids") && err.contains("rank"), "{err}");
    }
    let err = fails(&partition(&["--value", "input_ids="]), 2);
    assert!(err.contains("is not a number"), "{err}");
}

#[test]
fn the_smallest_budget_named_in_an_error_is_enough() {
    let d = tempfile::tempdir().unwrap();
    for (extra, without) in [(&[][..], false), (&["--no-vertical-split"][..], true)] {
        let partition = |vram: &str| {
            let mut args = vec!["partition", "@tiny", "--vram", vram, "--dry-run"];
            args.extend_from_slice(extra);
            splitup(&args, d.path())
        };
        let err = fails(&partition("1MiB"), 1);
        assert_eq!(err.contains("without vertical splits"), without, "{extra:?}: {err}");
        let n = smallest_budget(&err);
        assert!(n > 1024 * 1024, "{err}");
        let out = ok(&partition(&n.to_string()));
        assert!(task_count(&out) >= 1, "{out}");
        for (id, memory, _) in plan_rows(&out) {
            assert!(
                memory <= shown_bytes_of(n),
                "task {id} needs {memory} B of {n} B:\n{out}"
            );
        }
        // And it is the smallest.
        let err = fails(&partition(&(n - 1).to_string()), 1);
        assert_eq!(smallest_budget(&err), n, "{err}");
    }
}

#[test]
fn partition_help_lists_the_shape_options() {
    let d = tempfile::tempdir().unwrap();
    let out = ok(&splitup(&["partition", "--help"], d.path()));
    for flag in ["--nodes", "--value", "--dim", "--shape", "--vram"] {
        assert!(out.contains(flag), "{flag} missing from:\n{out}");
    }
}
