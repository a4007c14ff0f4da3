//! README's "Five minutes: run your own model on a local network", run as
//! written: the shell block is taken from README.md, with only the build
//! line replaced (the binary cargo built is put on PATH) and the port
//! changed to a free one. A real ledger, three real nodes, real processes.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The walk-through's shell block.
fn walkthrough() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let section = readme
        .split("\n## Five minutes")
        .nth(1)
        .expect("README.md has a section \"## Five minutes\"");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("the walk-through has a ```sh block");
    block.to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_readme_walkthrough_runs_a_model_on_a_local_network() {
    let block = walkthrough();
    let build = block.lines().next().unwrap();
    assert!(build.starts_with("cargo build --release -p splitup-cli"), "{build}");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_splitup")).parent().unwrap();
    let script = format!(
        "set -euo pipefail\nexport PATH={}:$PATH\n{}\n",
        bin_dir.display(),
        block.lines().skip(1).collect::<Vec<_>>().join("\n")
    )
    .replace("7878", &free_port().to_string());
    let d = tempfile::tempdir().unwrap();
    let mut child = Command::new("bash")
        .args(["-c", &script])
        .current_dir(d.path())
        .env_remove("SPLITUP_KEY")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: whatever happens, the ledger and nodes it
        // started in the background are killed with it.
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id() as i32;
    struct KillGroup(i32);
    impl Drop for KillGroup {
        fn drop(&mut self) {
            unsafe { libc::kill(-self.0, libc::SIGKILL) };
        }
    }
    let _group = KillGroup(pgid);
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(600) {
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            panic!("the walk-through did not finish in 600 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The script's last line stops what it started in the background; if it
    // failed before that line, this does (they hold its output pipes open).
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let (out, err) = (t_out.join().unwrap(), t_err.join().unwrap());
    let logs = |name: &str| std::fs::read_to_string(d.path().join("walkthrough").join(name)).unwrap_or_default();
    assert!(
        status.success(),
        "the walk-through failed ({status}):\nstdout:\n{out}\nstderr:\n{err}\nledger.log:\n{}\nnode1.log:\n{}",
        logs("ledger.log"),
        logs("node1.log")
    );
    // It said what a user needs to see: the split, the run, the comparison.
    assert!(out.contains("model 1 registered"), "{out}");
    assert!(out.contains("wrote out/logits.npy"), "{out}");
    assert!(out.contains("Completed"), "{out}");
    assert!(out.contains("largest difference from the unsplit run:"), "{out}");
    // Every node registered and none is left running.
    for i in 1..=3 {
        assert!(logs(&format!("node{i}.log")).contains("registered"), "node{i}");
    }
}
