//! The whole network as real processes on 127.0.0.1: a ledger, node daemons
//! and the client. A networked run equals the unsplit local run.

use splitup_tensor::{allclose, npy, Tensor, Tolerance};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_splitup"))
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn start_ledger(dir: &Path) -> (Proc, String) {
    let mut child = bin()
        .args(["ledger", "start", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.join("ledger"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    (Proc(child), url)
}

/// Starts a node and waits until it reports that it is registered.
fn start_node(dir: &Path, url: &str, name: &str) -> Proc {
    let key = format!("{name}.json");
    ok(bin()
        .args(["keys", "new", "-o", &key])
        .current_dir(dir)
        .output()
        .unwrap());
    ok(bin()
        .args(["faucet", "--ledger", url, "--key", &key, "--amount", "5000"])
        .current_dir(dir)
        .output()
        .unwrap());
    let mut child = bin()
        .args(["node", "start", "--ledger", url, "--key", &key, "--vram", "8GiB"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "node {name} exited before registering"
        );
        if line.contains("registered") {
            break;
        }
    }
    // Keep draining its output so the node never blocks on a full pipe.
    std::thread::spawn(move || for _ in out.lines() {});
    Proc(child)
}

#[test]
fn networked_run_equals_the_unsplit_run() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_ledger, url) = start_ledger(dir);
    ok(bin()
        .args(["generate", "--layers", "8", "-o", "model.onnx"])
        .current_dir(dir)
        .output()
        .unwrap());
    ok(bin()
        .args(["keys", "new", "-o", "user.json"])
        .current_dir(dir)
        .output()
        .unwrap());
    ok(bin()
        .args(["faucet", "--ledger", &url, "--key", "user.json", "--amount", "100"])
        .current_dir(dir)
        .output()
        .unwrap());
    let out = ok(bin()
        .args([
            "deploy",
            "model.onnx",
            "--ledger",
            &url,
            "--key",
            "user.json",
            "--vram",
            "700KiB",
            "--dim",
            "batch=1",
            "--dim",
            "seq=8",
        ])
        .current_dir(dir)
        .output()
        .unwrap());
    assert!(out.contains("model 1 registered"), "{out}");
    let tasks: usize = out
        .lines()
        .find(|l| l.contains(" tasks; largest needs"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(tasks >= 4, "{tasks} tasks");
    let _nodes: Vec<Proc> = (0..2).map(|i| start_node(dir, &url, &format!("node{i}"))).collect();
    let ids = Tensor::from_i64(vec![1, 8], &[3, 1, 4, 1, 5, 9, 2, 6]).unwrap();
    std::fs::write(dir.join("ids.npy"), npy::encode(&ids).unwrap()).unwrap();
    let out = ok(bin()
        .args([
            "submit",
            "1",
            "--ledger",
            &url,
            "--key",
            "user.json",
            "-i",
            "input_ids=ids.npy",
            "--wait",
            "-o",
            "net",
            "--timeout",
            "120",
        ])
        .current_dir(dir)
        .output()
        .unwrap());
    assert!(out.contains("execution 1") && out.contains("logits.npy"), "{out}");
    ok(bin()
        .args(["run", "model.onnx", "-i", "input_ids=ids.npy", "-o", "whole"])
        .current_dir(dir)
        .output()
        .unwrap());
    let net = npy::decode(&std::fs::read(dir.join("net/logits.npy")).unwrap()).unwrap();
    let whole = npy::decode(&std::fs::read(dir.join("whole/logits.npy")).unwrap()).unwrap();
    assert_eq!(net.shape, vec![1, 8, 2048]);
    allclose(&net, &whole, Tolerance::PARTITION).unwrap();
    let status = ok(bin()
        .args(["status", "1", "--ledger", &url])
        .current_dir(dir)
        .output()
        .unwrap());
    assert!(status.contains("Completed"), "{status}");
    assert_eq!(
        status.lines().filter(|l| l.contains(" Completed ")).count(),
        tasks,
        "{status}"
    );
}
