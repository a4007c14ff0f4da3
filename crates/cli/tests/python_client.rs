//! Issue 11: the Python client (`python/`) against real processes. Its
//! pytest suite starts a ledger and two nodes with the binary cargo just
//! built, deploys a model through `splitup.Client`, runs it on numpy arrays
//! and compares the outputs with ONNX Runtime's unsplit run, then checks
//! the errors a user meets. This test installs nothing: CI's pip line does.

use std::path::Path;
use std::process::Command;

/// What the suite needs from PyPI (the pins of `.ci/run` and the README).
const PIP: &str = "python3 -m pip install pytest==8.4.2 numpy onnxruntime==1.31.1";

#[test]
fn the_python_client_deploys_runs_and_matches_the_unsplit_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // A missing pytest is a failure that says what to install, never a pass.
    let probe = Command::new("python3")
        .args(["-c", "import pytest, numpy, onnxruntime"])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}); the Python client's tests need Python >= 3.9 and `{PIP}`")
        });
    assert!(
        probe.status.success(),
        "the Python client's tests need pytest, numpy and onnxruntime; run:\n    {PIP}\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let out = Command::new("python3")
        .args(["-m", "pytest", "python/tests", "-q", "-rfE", "-p", "no:cacheprovider"])
        .current_dir(&root)
        .env("SPLITUP_BIN", env!("CARGO_BIN_EXE_splitup"))
        // Leave no __pycache__ in the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "pytest python/tests failed (exit {:?}):\n{report}",
        out.status.code()
    );
    eprintln!("{report}");
}
