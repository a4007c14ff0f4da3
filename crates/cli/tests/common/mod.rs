//! What the process tests share: the binary, a child killed on drop, and a
//! ledger started on a free port.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// A child process, killed and reaped when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_splitup"))
}

/// The standard output of a command that must succeed (else both streams, in the panic).
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `splitup ledger start --dev` on 127.0.0.1 with its data in `DIR/ledger`.
pub fn start_ledger(dir: &Path, extra: &[&str]) -> (Proc, String) {
    start_ledger_env(dir, "127.0.0.1:0", extra, &[])
}

/// As [`start_ledger`], listening on `listen`, with `env` set; its output
/// after the first line is forwarded to stderr, tagged with `dir`'s name.
///
/// Without `--p` in `extra` the ledger challenges nothing (`--p 0`): a
/// challenged result needs a validator and two judges besides its asserter,
/// which most of these small networks do not have (the execution would fail
/// with a refund). Tests of verification pass `--p` themselves.
pub fn start_ledger_env(dir: &Path, listen: &str, extra: &[&str], env: &[(&str, String)]) -> (Proc, String) {
    let p: &[&str] = if extra.contains(&"--p") { &[] } else { &["--p", "0"] };
    let mut child = bin()
        .args(["ledger", "start", "--dev", "--listen", listen, "--data"])
        .arg(dir.join("ledger"))
        .args(p)
        .args(extra)
        // Its log (stderr, shared with the test's) at warn unless asked.
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let tag = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            eprintln!("[ledger {tag}] {l}");
        }
    });
    (Proc(child), url)
}

/// A new key file `DIR/KEY` holding `usdc` from the faucet.
pub fn fund_key(dir: &Path, url: &str, key: &str, usdc: u64) {
    ok(bin()
        .args(["keys", "new", "-o", key])
        .current_dir(dir)
        .output()
        .unwrap());
    ok(bin()
        .args(["faucet", "--ledger", url, "--key", key, "--amount", &usdc.to_string()])
        .current_dir(dir)
        .output()
        .unwrap());
}

/// Funds key `NAME.json` with 5000 USDC, starts a node on it (8 GiB, plus
/// `extra` flags and `env`) and waits until it reports that it is
/// registered; its output after that is forwarded to stderr.
pub fn start_node_env(dir: &Path, url: &str, name: &str, extra: &[&str], env: &[(&str, String)]) -> Proc {
    let key = format!("{name}.json");
    fund_key(dir, url, &key, 5000);
    let mut child = bin()
        .args(["node", "start", "--ledger", url, "--key", &key, "--vram", "8GiB"])
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k, v)))
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
    let tag = name.to_string();
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            eprintln!("[{tag}] {l}");
        }
    });
    Proc(child)
}
