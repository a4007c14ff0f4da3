//! Every model of the `light/` set shipped by the pip `onnx` package, with its
//! constant weights replaced by seeded random ones, runs split (at least four
//! tasks, and with its largest weight above the budget) exactly as it runs whole.

mod common;
use common::*;
use splitup_graph::partition::{activation_floor, partition, Options};
use splitup_graph::shape::Bindings;
use splitup_graph::transform::randomize_constant_weights;
use splitup_graph::Graph;
use std::path::PathBuf;

fn light_dir() -> PathBuf {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import onnx, os; print(os.path.join(os.path.dirname(onnx.__file__), 'backend/test/data/light'))",
        ])
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "the pip package onnx must be installed (pip install onnx==1.23.2)"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn models() -> Vec<(String, Graph)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(light_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 9, "expected the 9 light models, found {}", paths.len());
    paths
        .into_iter()
        .map(|p| {
            let mut g = Graph::load_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let replaced = randomize_constant_weights(&mut g, 42);
            assert!(replaced > 0, "{}: no constant weights found", p.display());
            (p.file_stem().unwrap().to_string_lossy().into_owned(), g)
        })
        .collect()
}

/// The requirement of the whole model as one task.
fn whole_requirement(g: &Graph) -> u64 {
    let p = partition(
        g,
        &Bindings::default(),
        &Options {
            vertical_split: false,
            ..Options::uniform(u64::MAX / 4)
        },
    )
    .unwrap();
    assert_eq!(p.tasks.len(), 1);
    p.tasks[0].vram_bytes
}

#[test]
fn light_models_split_in_four_or_more_tasks_equal_unsplit() {
    for (name, g) in models() {
        let whole = whole_requirement(&g);
        let inputs = random_inputs(&g, &Bindings::default(), 1, 1);
        // A quarter of the whole model, or the least budget its largest
        // single node allows when activations dominate (shufflenet).
        let mut budget = whole / 4;
        while partition(&g, &Bindings::default(), &Options::uniform(budget)).is_err() {
            budget += budget / 16;
        }
        let r = split_and_compare(&g, &Bindings::default(), &Options::uniform(budget), &inputs);
        assert!(r.manifest.tasks.len() >= 4, "{name}: {} tasks", r.manifest.tasks.len());
        eprintln!(
            "{name}: {} tasks, {} bytes across cuts",
            r.manifest.tasks.len(),
            r.manifest.cut_bytes
        );
    }
}

#[test]
fn light_models_with_largest_weight_above_budget_split_vertically_and_equal_unsplit() {
    let mut ran = Vec::new();
    for (name, g) in models() {
        let (wname, largest) = g
            .weights
            .iter()
            .map(|(n, w)| (n.clone(), w.byte_len()))
            .max_by_key(|x| x.1)
            .unwrap();
        let inputs = random_inputs(&g, &Bindings::default(), 2, 1);
        // Below the largest weight, but above the largest activation a single node needs.
        let mut budget = (largest * 3 / 4).max(activation_floor(&g, &Bindings::default(), 10).unwrap());
        while budget < largest && partition(&g, &Bindings::default(), &Options::uniform(budget)).is_err() {
            budget += budget / 16;
        }
        if budget >= largest {
            eprintln!("{name}: largest weight {wname} ({largest} bytes) is below its activations; skipped");
            continue;
        }
        let r = split_and_compare(&g, &Bindings::default(), &Options::uniform(budget), &inputs);
        assert!(
            !r.manifest.splits.is_empty(),
            "{name}: weight {wname} of {largest} bytes above budget {budget} but nothing was split"
        );
        ran.push(name);
    }
    // The three models whose largest weight (a Gemm) exceeds every single
    // node's activations must run below it; the others cannot (see BENCHMARKS.md).
    for must in ["alexnet", "vgg19", "zfnet512"] {
        assert!(
            ran.iter().any(|n| n.contains(must)),
            "{must} was not run below its largest weight (ran: {ran:?})"
        );
    }
}
