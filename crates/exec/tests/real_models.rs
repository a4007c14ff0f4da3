//! Conformance on models we did not write.
//!
//! `scripts/real_models.py` lists the ONNX models shipped inside pinned pip
//! packages (OCR, VAD, file-type detection, speech quality, wake words),
//! with seeded realistic inputs and the outputs ONNX Runtime gives on the
//! unsplit model. `scripts/make_models.py` builds, with real tools, the
//! classes that set lacks: `Loop` and `Scan`, QDQ / QOperator / dynamic
//! quantisation (onnxruntime.quantization), scikit-learn pipelines
//! (skl2onnx), external data; and hostile external-data models.
//!
//! Each model is split into at least two tasks at a budget that forces it
//! (and again below its largest weight where its activations allow), run,
//! and compared with ONNX Runtime's unsplit outputs (rtol 1e-4, atol 1e-5;
//! integers exact). A model may instead be refused only with an error that
//! names a vendor-domain op it uses. Set SPLITUP_REAL_MODELS /
//! SPLITUP_MADE_MODELS to generated directories to skip generation.

mod common;
use common::{generated, runtime};
use splitup_exec::{runner, OrtEval};
use splitup_graph::partition::{activation_floor, partition, smallest_budget, Options};
use splitup_graph::plan;
use splitup_graph::shape::Bindings;
use splitup_graph::Graph;
use splitup_tensor::{allclose, npy, Tensor, Tolerance};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(serde::Deserialize)]
struct Entry {
    name: String,
    path: PathBuf,
    shapes: BTreeMap<String, Vec<usize>>,
    inputs: BTreeMap<String, PathBuf>,
    #[serde(default)]
    vendor_ops: Vec<String>,
    #[serde(default)]
    outputs: BTreeMap<String, PathBuf>,
}

#[derive(serde::Deserialize)]
struct List {
    models: Vec<Entry>,
}

fn read_list(dir: &Path) -> Vec<Entry> {
    let text = std::fs::read_to_string(dir.join("models.json")).unwrap();
    serde_json::from_str::<List>(&text).unwrap().models
}

fn read_npy(p: &Path) -> Tensor {
    npy::decode(&std::fs::read(p).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

struct Row {
    name: String,
    nodes: usize,
    tasks: String,
    below_weight: String,
    result: String,
    ok: bool,
}

/// Partitions at `budget`, runs the plan and compares with `expected`.
/// Returns the number of tasks.
fn run_split(
    g: &Graph,
    b: &Bindings,
    budget: u64,
    inputs: &BTreeMap<String, Tensor>,
    expected: &BTreeMap<String, Tensor>,
) -> Result<(usize, usize), String> {
    let opts = Options::uniform(budget);
    let p = partition(g, b, &opts).map_err(|e| format!("partition: {e}"))?;
    let files = plan::build(&p, &g.name, b, &opts, true).map_err(|e| format!("plan: {e}"))?;
    let dir = tempfile::tempdir().unwrap();
    runner::write_plan(dir.path(), &files).map_err(|e| e.to_string())?;
    let m = runner::load_manifest(dir.path()).map_err(|e| e.to_string())?;
    for t in &m.tasks {
        if t.vram_requirement > budget {
            return Err(format!("task {} needs {} > budget {budget}", t.id, t.vram_requirement));
        }
    }
    let rt = runtime();
    let mut sessions = runner::prepare_plan(dir.path(), &m, &rt, 2, &|_| {}).map_err(|e| format!("prepare: {e}"))?;
    let feed: BTreeMap<String, Tensor> = m
        .inputs
        .iter()
        .map(|s| (s.name.clone(), inputs[&s.name].clone()))
        .collect();
    let report = runner::execute(&m, &mut sessions, &feed, 2, &|_| {}).map_err(|e| format!("execute: {e}"))?;
    if report.passed_bytes != m.cut_bytes {
        return Err(format!(
            "{} bytes crossed cuts, the plan says {}",
            report.passed_bytes, m.cut_bytes
        ));
    }
    for (name, actual) in &report.outputs {
        let want = expected
            .get(name)
            .ok_or_else(|| format!("output {name:?} has no reference"))?;
        let tol = if actual.dtype.is_float() {
            Tolerance::PARTITION
        } else {
            Tolerance::EXACT
        };
        allclose(actual, want, tol).map_err(|e| format!("output {name:?} differs from ONNX Runtime unsplit: {e}"))?;
    }
    if report.outputs.len() != expected.len() {
        return Err(format!(
            "{} outputs, ONNX Runtime gave {}",
            report.outputs.len(),
            expected.len()
        ));
    }
    Ok((m.tasks.len(), m.splits.len()))
}

fn check_model(e: &Entry) -> Row {
    let mut row = Row {
        name: e.name.clone(),
        nodes: 0,
        tasks: "-".into(),
        below_weight: "-".into(),
        result: String::new(),
        ok: false,
    };
    let g = match Graph::load_file(&e.path) {
        Ok(g) => g,
        Err(err) => {
            let err = err.to_string();
            row.ok = e.vendor_ops.iter().any(|op| {
                let (domain, name) = op.split_once("::").unwrap_or(("", op));
                err.contains(domain) && err.contains(name)
            });
            row.result = format!("refused: {err}");
            return row;
        }
    };
    row.nodes = g.nodes.len();
    let inputs: BTreeMap<String, Tensor> = e.inputs.iter().map(|(n, p)| (n.clone(), read_npy(p))).collect();
    let expected: BTreeMap<String, Tensor> = e.outputs.iter().map(|(n, p)| (n.clone(), read_npy(p))).collect();
    let mut b = Bindings {
        shapes: e.shapes.clone(),
        eval: OrtEval::evaluator().unwrap(),
        ..Default::default()
    };
    // Scalar integer inputs (a sample rate) are frozen, so branches on them fold.
    for (name, t) in &inputs {
        if t.shape.is_empty() && !t.dtype.is_float() {
            b.values.insert(name.clone(), t.clone());
            b.shapes.remove(name);
        }
    }
    let whole = match partition(
        &g,
        &b,
        &Options {
            vertical_split: false,
            ..Options::uniform(u64::MAX / 4)
        },
    ) {
        Ok(p) => p.tasks[0].vram_bytes,
        Err(err) => {
            row.result = format!("partition: {err}");
            return row;
        }
    };
    // At least two tasks: the smallest budget that partitions the model,
    // which must be below what the whole model needs as one task.
    let budget = match smallest_budget(&g, &b, &Options::uniform(1)) {
        Ok(Some(budget)) if budget < whole => budget,
        Ok(other) => {
            row.result = format!("no budget below the whole model ({whole} bytes) partitions it ({other:?})");
            return row;
        }
        Err(err) => {
            row.result = format!("partition: {err}");
            return row;
        }
    };
    match run_split(&g, &b, budget, &inputs, &expected) {
        Ok((tasks, _)) => row.tasks = tasks.to_string(),
        Err(err) => {
            row.result = err;
            return row;
        }
    }
    // Below the largest weight, where the activations allow it.
    let largest = g.weights.values().map(|w| w.byte_len()).max().unwrap_or(0);
    let floor = activation_floor(&g, &b, 10).unwrap_or(u64::MAX);
    let mut budget = (largest * 3 / 4).max(floor);
    while budget < largest && partition(&g, &b, &Options::uniform(budget)).is_err() {
        budget += budget / 16 + 1;
    }
    if budget < largest {
        match run_split(&g, &b, budget, &inputs, &expected) {
            Ok((tasks, splits)) => row.below_weight = format!("{tasks} ({splits} split)"),
            Err(err) => {
                row.result = format!("below largest weight: {err}");
                return row;
            }
        }
    } else {
        row.below_weight = "activations".into();
    }
    row.ok = true;
    row.result = "equal".into();
    row
}

fn table(title: &str, rows: &[Row]) {
    eprintln!("\n{title}\n| model | nodes | tasks | below largest weight | result |\n|---|---|---|---|---|");
    for r in rows {
        eprintln!(
            "| {} | {} | {} | {} | {} |",
            r.name,
            r.nodes,
            r.tasks,
            r.below_weight,
            r.result.replace('|', "/").replace('\n', " ")
        );
    }
    let ok = rows.iter().filter(|r| r.ok).count();
    eprintln!("{ok} of {} conform", rows.len());
}

fn assert_all(rows: &[Row]) {
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{}: {}", r.name, r.result))
        .collect();
    assert!(
        bad.is_empty(),
        "models that neither split equal nor name a vendor op:\n{}",
        bad.join("\n")
    );
}

#[test]
fn third_party_and_tool_made_models_split_and_equal_onnx_runtime() {
    let (real_dir, _keep) = generated(
        "SPLITUP_REAL_MODELS",
        "real_models.py",
        &[],
        "see its message above for the pip command it needs",
    );
    let real = read_list(&real_dir);
    assert!(real.len() >= 28, "expected the shipped models, found {}", real.len());
    let rows: Vec<Row> = real.iter().map(check_model).collect();
    table("Third-party models (pip packages)", &rows);
    let json = real_dir.join("models.json");
    let (made_dir, _keep2) = generated(
        "SPLITUP_MADE_MODELS",
        "make_models.py",
        &[&json],
        "see its message above for the pip command it needs",
    );
    let made = read_list(&made_dir);
    let made_rows: Vec<Row> = made.iter().map(check_model).collect();
    table("Models made with real tools", &made_rows);
    for class in [
        "loop_const",
        "scan",
        "qdq_static",
        "qoperator_static",
        "dynamic",
        "sklearn_tree",
        "sklearn_linear",
        "external_data",
    ] {
        assert!(made.iter().any(|m| m.name == class), "make_models.py made no {class}");
    }
    assert_all(&rows);
    assert_all(&made_rows);
    // The one vendor op in the set is refused by name, not by an unused import.
    let old = rows.iter().find(|r| r.name.contains("common_old")).unwrap();
    assert!(
        old.result.contains("com.microsoft::DynamicQuantizeLSTM"),
        "{}",
        old.result
    );

    // Hostile external data: refused at load, naming why.
    #[derive(serde::Deserialize)]
    struct Hostile {
        name: String,
        path: PathBuf,
    }
    let hostile: Vec<Hostile> =
        serde_json::from_str(&std::fs::read_to_string(made_dir.join("hostile.json")).unwrap()).unwrap();
    assert_eq!(hostile.len(), 4);
    for h in hostile {
        let err = Graph::load_file(&h.path).expect_err(&h.name).to_string();
        assert!(err.contains("external data"), "{}: {err}", h.name);
        // What the model pointed at never became a weight.
        let bytes = std::fs::read(&h.path).unwrap();
        assert!(Graph::load(&bytes).is_err(), "{}: loaded from bytes alone", h.name);
    }
}
