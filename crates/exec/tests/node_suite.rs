//! The ONNX backend node test suite (generated from the pip `onnx` package by
//! `scripts/gen_node_suite.py`, which calls `collect_testcases()`) through
//! SplitUp's loader, allow-list and ONNX Runtime executor.
//!
//! Every case ends as one of: passed; rejected (by the allow-list or the
//! tensor-only rules: counted, never a crash); failed (the executor ran it
//! and disagreed, or ONNX Runtime refused it). Set SPLITUP_NODE_SUITE to a
//! generated directory to skip the generation step.

mod common;
use prost::Message;
use splitup_exec::runner;
use splitup_exec::Runtime;
use splitup_graph::model::weight_from_proto;
use splitup_graph::onnx::TensorProto;
use splitup_graph::plan::TensorSpec;
use splitup_graph::Graph;
use splitup_tensor::{allclose, Tensor, Tolerance};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Passes recorded in BENCHMARKS.md; a drop below this is a regression.
const PASSED_MIN: usize = 1338;

enum Outcome {
    Passed,
    Rejected(String),
    Failed(String),
}

fn read_tensor(path: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let tp = TensorProto::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
    let w = weight_from_proto(&tp)?;
    w.tensor().ok_or_else(|| "no data".to_string())
}

fn run_case(dir: &Path, rt: &dyn Runtime) -> Outcome {
    if let Ok(why) = std::fs::read_to_string(dir.join("unsupported")) {
        return Outcome::Rejected(format!("not a tensor value: {why}"));
    }
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    let g = match Graph::load(&bytes) {
        Ok(g) => g,
        Err(e) => return Outcome::Rejected(e.to_string()),
    };
    let tol: Vec<f64> = std::fs::read_to_string(dir.join("tolerance"))
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let tol = Tolerance {
        rtol: tol[0],
        atol: tol[1],
    };
    let mut session = match runner::prepare_model(&g, rt) {
        Ok(s) => s,
        // The gate's refusals (an unbounded Loop, a training Dropout) are refusals by name.
        Err(e @ runner::RunError::Refused(_)) => return Outcome::Rejected(e.to_string()),
        Err(e) => return Outcome::Failed(format!("load: {e}")),
    };
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    sets.sort();
    for set in sets {
        let mut inputs = BTreeMap::new();
        let mut specs = Vec::new();
        for (k, (name, _)) in g.inputs.iter().enumerate() {
            let t = match read_tensor(&set.join(format!("input_{k}.pb"))) {
                Ok(t) => t,
                Err(e) => return Outcome::Rejected(format!("input {k}: {e}")),
            };
            specs.push(TensorSpec {
                name: name.clone(),
                dimensions: vec![],
                shape: t.shape.iter().map(|&d| d as u64).collect(),
                dtype: t.dtype.name().into(),
            });
            inputs.insert(name.clone(), t);
        }
        let outputs = match runner::run_model(session.as_mut(), &specs, &inputs) {
            Ok(o) => o,
            Err(e) => return Outcome::Failed(format!("run: {e}")),
        };
        for (k, (name, actual)) in outputs.iter().enumerate() {
            let expected = match read_tensor(&set.join(format!("output_{k}.pb"))) {
                Ok(t) => t,
                Err(e) => return Outcome::Rejected(format!("output {k}: {e}")),
            };
            if let Err(m) = allclose(actual, &expected, tol) {
                return Outcome::Failed(format!("output {name}: {m}"));
            }
        }
    }
    Outcome::Passed
}

/// Runs the case's original model bytes straight through ONNX Runtime.
fn direct_passes(dir: &Path, rt: &dyn Runtime) -> bool {
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    let Ok(g) = Graph::load(&bytes) else { return false };
    let Ok(mut session) = rt.load(&bytes) else { return false };
    let tol: Vec<f64> = std::fs::read_to_string(dir.join("tolerance"))
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let set = dir.join("test_data_set_0");
    let Ok(inputs) = (0..g.inputs.len())
        .map(|k| read_tensor(&set.join(format!("input_{k}.pb"))))
        .collect::<Result<Vec<_>, _>>()
    else {
        return false;
    };
    let refs: Vec<(&str, &Tensor)> = g.inputs.iter().map(|(n, _)| n.as_str()).zip(&inputs).collect();
    let Ok(outs) = session.run(&refs) else { return false };
    outs.iter().enumerate().all(|(k, (_, a))| {
        read_tensor(&set.join(format!("output_{k}.pb"))).is_ok_and(|e| {
            allclose(
                a,
                &e,
                Tolerance {
                    rtol: tol[0],
                    atol: tol[1],
                },
            )
            .is_ok()
        })
    })
}

/// A refusal's reason without the node or value it names.
fn reason_key(why: &str) -> String {
    let mut out = String::new();
    let mut rest = why;
    while let Some(i) = rest.find("(node \"") {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        match rest.find("\")") {
            Some(j) => rest = &rest[j + 2..],
            None => break,
        }
    }
    out.push_str(rest);
    let line = out.lines().next().unwrap_or("");
    // Drop quoted names and element type numbers, so that one reason is one row.
    let mut key = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                if quoted {
                    key.push('…');
                }
            }
            _ if quoted => {}
            _ => key.push(c),
        }
    }
    let key = match key.find("element type ") {
        Some(i) => {
            let rest: String = key[i + 13..].chars().skip_while(|c| c.is_ascii_digit()).collect();
            format!("{}element type N{rest}", &key[..i])
        }
        None => key,
    };
    key.chars().take(150).collect()
}

#[test]
fn onnx_node_suite_runs_through_the_executor() {
    let (dir, _keep) = common::generated(
        "SPLITUP_NODE_SUITE",
        "gen_node_suite.py",
        &[],
        "pip install onnx==1.23.2 numpy",
    );
    let rt = common::runtime();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    cases.sort();
    assert!(
        cases.len() > 1500,
        "expected the full suite, found {} cases",
        cases.len()
    );
    let (mut passed, mut rejected, mut failed, mut panicked) = (0, Vec::new(), Vec::new(), Vec::new());
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(case, &rt))) {
            Ok(Outcome::Passed) => passed += 1,
            Ok(Outcome::Rejected(why)) => rejected.push((name, why)),
            Ok(Outcome::Failed(why)) => failed.push((name, why)),
            Err(_) => panicked.push(name),
        }
    }
    let by_name = |v: &Vec<(String, String)>, n: &str| v.iter().find(|(c, _)| c == n).map(|(_, w)| w.clone());
    eprintln!(
        "node suite: {} cases, {passed} passed, {} rejected, {} failed, {} panicked",
        cases.len(),
        rejected.len(),
        failed.len(),
        panicked.len()
    );
    for (c, why) in failed.iter() {
        eprintln!("  failed {c}: {}", why.lines().next().unwrap_or(""));
    }
    // A case ONNX Runtime passes on the original bytes must pass through
    // SplitUp's loader and serialiser too: failures are the runtime's, never ours.
    let lost: Vec<&String> = failed
        .iter()
        .filter(|(c, _)| direct_passes(&dir.join(c), &rt))
        .map(|(c, _)| c)
        .collect();
    assert!(
        lost.is_empty(),
        "cases ONNX Runtime passes directly but fail through SplitUp: {lost:?}"
    );
    assert!(panicked.is_empty(), "cases that panicked: {panicked:?}");
    // Refusals by reason (node names stripped), for BENCHMARKS.md.
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (_, why) in &rejected {
        *reasons.entry(reason_key(why)).or_default() += 1;
    }
    let mut by_count: Vec<(&String, &usize)> = reasons.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    eprintln!("refusals by reason:");
    for (why, n) in by_count {
        eprintln!("  {n:>4}  {why}");
    }
    // Control flow with bounded subgraphs runs; strings, random ops and a
    // Loop whose trip count is an input (unbounded) are rejected by name.
    for case in ["test_if", "test_scan9_sum"] {
        assert!(
            by_name(&rejected, case).is_none() && by_name(&failed, case).is_none(),
            "{case} should pass: {:?}",
            by_name(&rejected, case).or(by_name(&failed, case))
        );
    }
    for (case, word) in [
        ("test_strnormalizer_export_monday_casesensintive_lower", "string"),
        ("test_bernoulli", "Bernoulli"),
        ("test_loop11", "trip count"),
        ("test_training_dropout_zero_ratio", "training_mode"),
    ] {
        let why = by_name(&rejected, case).unwrap_or_else(|| panic!("{case} should be rejected"));
        assert!(why.contains(word), "{case} rejected without naming {word}: {why}");
    }
    assert!(passed >= PASSED_MIN, "{passed} passed, below the recorded {PASSED_MIN}");
    println!("{} passed, {} failed", passed, failed.len() + rejected.len());
}
