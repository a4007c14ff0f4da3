//! The whole network as real processes on 127.0.0.1: a ledger, node daemons
//! and the client. A networked run equals the unsplit local run.

use splitup_tensor::{allclose, npy, Tensor, Tolerance};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

mod common;
use common::{bin, fund_key, ok, start_ledger_env, start_node_env, Proc};

fn start_ledger(dir: &Path) -> (Proc, String) {
    start_ledger_with(dir, "127.0.0.1:0", &[])
}

fn start_ledger_with(dir: &Path, listen: &str, extra: &[&str]) -> (Proc, String) {
    start_ledger_env(dir, listen, extra, &[])
}

/// Starts a node and waits until it reports that it is registered.
fn start_node(dir: &Path, url: &str, name: &str) -> Proc {
    start_node_with(dir, url, name, &[])
}

fn start_node_with(dir: &Path, url: &str, name: &str, extra: &[&str]) -> Proc {
    start_node_env(dir, url, name, extra, &[])
}

#[test]
fn networked_run_equals_the_unsplit_run() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_ledger, url) = start_ledger(dir);
    let (whole, tasks) = deploy_and_reference(dir, &url);
    let _nodes: Vec<Proc> = (0..2).map(|i| start_node(dir, &url, &format!("node{i}"))).collect();
    let out = submit_and_wait(dir, &url, &[]);
    assert!(out.contains("execution 1") && out.contains("logits.npy"), "{out}");
    let net = npy::decode(&std::fs::read(dir.join("net/logits.npy")).unwrap()).unwrap();
    assert_eq!(net.shape, vec![1, 8, 2048]);
    allclose(&net, &whole, Tolerance::PARTITION).unwrap();
    let status = ok(bin()
        .args(["status", "1", "--ledger", &url])
        .current_dir(dir)
        .output()
        .unwrap());
    assert!(status.contains("Completed"), "{status}");
    // Without an id: the ledger and its executions (this one completed and fetched).
    let overview = ok(bin()
        .args(["status", "--ledger", &url])
        .current_dir(dir)
        .output()
        .unwrap());
    assert!(
        overview.contains("slot") && overview.contains("1 execution;"),
        "{overview}"
    );
    let row = overview
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap_or_else(|| panic!("{overview}"));
    assert!(
        row.contains(&format!("{tasks}/{tasks}")) && row.contains("yes") && row.contains("Completed"),
        "{row}"
    );
    assert_eq!(
        status
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("Completed"))
            .count(),
        tasks,
        "{status}"
    );
}

/// Issue 11: nodes follow the market while running. Started on an empty
/// ledger, they pick up a model deployed afterwards (no restart) and run
/// it; when its owner deactivates it, they unload it and stop supporting it.
#[test]
fn a_model_deployed_after_the_nodes_started_runs_and_a_deactivated_one_is_unloaded() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_ledger, url) = start_ledger(dir);
    let _nodes: Vec<Proc> = (0..2).map(|i| start_node(dir, &url, &format!("node{i}"))).collect();
    let supports = |url: &str| -> Vec<usize> {
        get(url, "/v1/nodes")
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["supports"].as_array().unwrap().len())
            .collect()
    };
    assert_eq!(supports(&url), vec![0, 0], "nothing is deployed yet");
    let (whole, tasks) = deploy_and_reference(dir, &url);
    wait_for(60, "both nodes to support every task", || {
        supports(&url) == vec![tasks, tasks]
    });
    submit_and_wait(dir, &url, &[]);
    let net = npy::decode(&std::fs::read(dir.join("net/logits.npy")).unwrap()).unwrap();
    allclose(&net, &whole, Tolerance::PARTITION).unwrap();

    let owner = splitup_ledger::keys::read(&dir.join("user.json")).unwrap();
    let c = splitup_node::Client::new(&url).unwrap().signed_by(owner.clone());
    c.send(&owner, splitup_protocol::Instruction::DeactivateModel { model: 1 })
        .unwrap();
    wait_for(30, "both nodes to drop the deactivated model", || {
        supports(&url) == vec![0, 0]
    });
}

/// Parses a Prometheus text exposition with the reference parser
/// (`prometheus_client` from PyPI): (sample name, labels, value) triples.
fn prometheus_samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    use std::io::Write;
    let script = "import sys, json\n\
from prometheus_client.parser import text_string_to_metric_families as parse\n\
print(json.dumps([(s.name, s.labels, s.value) for f in parse(sys.stdin.read()) for s in f.samples]))";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sample(samples: &[(String, BTreeMap<String, String>, f64)], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, _, v)| v)
        .sum()
}

/// Issue 11: `/metrics` on the ledger and on a node, scraped during a run
/// and read by the reference Prometheus parser.
#[test]
fn the_ledger_and_a_node_expose_metrics_a_prometheus_parser_reads() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_ledger, url) = start_ledger(dir);
    let (_, tasks) = deploy_and_reference(dir, &url);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let _node = start_node_with(dir, &url, "node0", &["--metrics-listen", &listen]);
    submit_and_wait(dir, &url, &[]);
    let scrape = |u: String| {
        let r = reqwest::blocking::get(u).unwrap();
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        r.text().unwrap()
    };
    let ledger = prometheus_samples(&scrape(format!("{url}/metrics")));
    assert_eq!(sample(&ledger, "splitup_executions", &[("state", "completed")]), 1.0);
    assert_eq!(sample(&ledger, "splitup_execution_seconds_count", &[]), 1.0);
    assert_eq!(sample(&ledger, "splitup_nodes", &[("status", "active")]), 1.0);
    assert!(sample(&ledger, "splitup_stake_usdc", &[]) > 0.0);
    assert!(sample(&ledger, "splitup_earned_usdc_total", &[]) > 0.0);
    assert_eq!(sample(&ledger, "splitup_models", &[("active", "true")]), 1.0);
    let node = prometheus_samples(&scrape(format!("http://{listen}/metrics")));
    assert_eq!(
        sample(
            &node,
            "splitup_node_work_total",
            &[("kind", "compute"), ("outcome", "submitted")]
        ),
        tasks as f64
    );
    assert_eq!(
        sample(&node, "splitup_node_run_seconds_count", &[("kind", "compute")]),
        tasks as f64
    );
    assert!(sample(&node, "splitup_node_bytes_total", &[("direction", "in")]) > 0.0);
    assert!(sample(&node, "splitup_node_bytes_total", &[("direction", "out")]) > 0.0);
    // Gauges refresh every MODELS_EVERY.
    wait_for(10, "the node's gauges", || {
        let node = prometheus_samples(&scrape(format!("http://{listen}/metrics")));
        sample(&node, "splitup_node_supported_tasks", &[]) == tasks as f64
            && sample(&node, "splitup_node_loaded_tasks", &[]) > 0.0
            && sample(&node, "splitup_node_stake_usdc", &[]) > 0.0
    });
}

fn get(url: &str, path: &str) -> serde_json::Value {
    reqwest::blocking::get(format!("{url}{path}")).unwrap().json().unwrap()
}

/// What the ledger has slashed from a node so far (micro-USDC).
fn slashed_total(url: &str, key: &str) -> u64 {
    get(url, &format!("/v1/accounts/{key}"))["node"]["slashed_total"]
        .as_u64()
        .unwrap_or(0)
}

fn pubkey(dir: &Path, name: &str) -> String {
    splitup_ledger::keys::read(&dir.join(format!("{name}.json")))
        .unwrap()
        .pubkey()
        .hex()
}

/// Polls until `f` holds, failing after `secs`.
fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !f() {
        assert!(t.elapsed().as_secs() < secs, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Deploys the generated 8-layer model (≥ 4 tasks) and writes `ids.npy` and the unsplit output.
fn deploy_and_reference(dir: &Path, url: &str) -> (Tensor, usize) {
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
        .args(["faucet", "--ledger", url, "--key", "user.json", "--amount", "100"])
        .current_dir(dir)
        .output()
        .unwrap());
    let out = ok(bin()
        .args([
            "deploy",
            "model.onnx",
            "--ledger",
            url,
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
        .find(|l| l.contains("; largest needs"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(tasks >= 4, "{tasks} tasks");
    let ids = Tensor::from_i64(vec![1, 8], &[2, 7, 1, 8, 2, 8, 1, 8]).unwrap();
    std::fs::write(dir.join("ids.npy"), npy::encode(&ids).unwrap()).unwrap();
    ok(bin()
        .args(["run", "model.onnx", "-i", "input_ids=ids.npy", "-o", "whole"])
        .current_dir(dir)
        .output()
        .unwrap());
    (
        npy::decode(&std::fs::read(dir.join("whole/logits.npy")).unwrap()).unwrap(),
        tasks,
    )
}

/// `splitup submit 1 --wait -o net`: returns its standard output.
fn submit_and_wait(dir: &Path, url: &str, extra: &[&str]) -> String {
    ok(bin()
        .args([
            "submit",
            "1",
            "--ledger",
            url,
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
        .args(extra)
        .current_dir(dir)
        .output()
        .unwrap())
}

/// The blobs execution 1 owns (its input and every task's output), by hash.
fn execution_blobs(url: &str) -> Vec<String> {
    let e = get(url, "/v1/executions/1");
    let mut out: Vec<String> = e["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| splitup_store::hash_of_uri(t["output_uris"][0].as_str().unwrap()).to_string())
        .collect();
    out.push(e["input"].as_str().unwrap().to_string());
    out
}

/// The weight blobs of model 1, by hash.
fn weight_blobs(url: &str) -> Vec<String> {
    get(url, "/v1/models/1")["def"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["weight_hash"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| format!("{:02x}", b.as_u64().unwrap()))
                .collect()
        })
        .collect()
}

/// `splitup submit 1` without waiting; returns the execution id it printed.
fn submit(dir: &Path, url: &str) -> u64 {
    let out = ok(bin()
        .args([
            "submit",
            "1",
            "--ledger",
            url,
            "--key",
            "user.json",
            "-i",
            "input_ids=ids.npy",
        ])
        .current_dir(dir)
        .output()
        .unwrap());
    out.trim()
        .strip_prefix("execution ")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no execution id in {out:?}"))
}

fn fetch_and_compare(dir: &Path, url: &str, reference: &Tensor) {
    ok(bin()
        .args(["fetch", "1", "--ledger", url, "--key", "user.json", "-o", "net"])
        .current_dir(dir)
        .output()
        .unwrap());
    let net = npy::decode(&std::fs::read(dir.join("net/logits.npy")).unwrap()).unwrap();
    allclose(&net, reference, Tolerance::PARTITION).unwrap();
}

/// Starts honest nodes `NAME0..NAMEn` at once (each registers in parallel).
fn start_honest(dir: &Path, url: &str, n: usize) -> Vec<Proc> {
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|i| s.spawn(move || start_node(dir, url, &format!("honest{i}"))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn earned_total(url: &str, key: &str) -> u64 {
    get(url, &format!("/v1/accounts/{key}"))["node"]["earned_total"]
        .as_u64()
        .unwrap()
}

/// No honest node lost stake, every node's holds are released once the
/// execution has finished, and none of execution 1's kept results is `who`'s.
fn honest_kept(dir: &Path, url: &str, n: usize, who: &str) {
    for i in 0..n {
        let k = pubkey(dir, &format!("honest{i}"));
        assert_eq!(slashed_total(url, &k), 0, "honest{i} lost stake");
    }
    for node in get(url, "/v1/nodes").as_array().unwrap() {
        assert_eq!(node["disputes"], 0, "a dispute hold was never released: {node}");
    }
    let e = get(url, "/v1/executions/1");
    assert!(
        e["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["node"].as_str() != Some(who)),
        "the attacker's result survived: {e}"
    );
}

#[test]
fn a_cheating_node_is_found_out_slashed_and_the_user_gets_the_honest_output() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // p = 1: every result is challenged, so the outcome is deterministic.
    let (_ledger, url) = start_ledger_with(dir, "127.0.0.1:0", &["--p", "1", "--test-timeouts"]);
    let (reference, _) = deploy_and_reference(dir, &url);
    // The cheater is alone when the execution starts, so it takes task 1; it
    // waits 5 s before computing, by when its validator and the two nodes a
    // committee needs are up.
    let _cheater = start_node_with(dir, &url, "cheater", &["--cheat", "--delay-ms", "5000"]);
    assert_eq!(submit(dir, &url), 1);
    let _honest = start_honest(dir, &url, 3);
    let cheater = pubkey(dir, "cheater");
    wait_for(90, "the cheater to be slashed", || slashed_total(&url, &cheater) > 0);
    wait_for(120, "execution 1 to complete", || {
        get(&url, "/v1/executions/1")["status"] == "Completed"
    });
    fetch_and_compare(dir, &url, &reference);
    let slashed = slashed_total(&url, &cheater);
    assert!(slashed >= 500_000_000, "slashed {slashed}");
    honest_kept(dir, &url, 3, &cheater);
}

#[test]
fn an_honest_node_on_different_hardware_is_upheld_by_the_committee_and_nobody_is_slashed() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_ledger, url) = start_ledger_with(dir, "127.0.0.1:0", &["--p", "1", "--test-timeouts"]);
    let (reference, _) = deploy_and_reference(dir, &url);
    // Its outputs differ from ONNX Runtime's on this machine in the last bits
    // (1 ± 1e-6), so a validator's bytes never equal them: the committee
    // re-executes and finds both sides honest within the tolerance.
    let _jitter = start_node_with(dir, &url, "jitter", &["--jitter", "--delay-ms", "5000"]);
    assert_eq!(submit(dir, &url), 1);
    let _honest = start_honest(dir, &url, 3);
    let jitter = pubkey(dir, "jitter");
    wait_for(120, "execution 1 to complete", || {
        get(&url, "/v1/executions/1")["status"] == "Completed"
    });
    fetch_and_compare(dir, &url, &reference);
    let e = get(&url, "/v1/executions/1");
    let tasks = e["tasks"].as_array().unwrap();
    assert!(tasks.iter().all(|t| t["challenged"] == true), "p = 1: {e}");
    let t1 = &tasks[0];
    assert_eq!(t1["node"], jitter.as_str(), "{e}");
    assert_eq!(t1["outcome"], "both honest (within tolerance)", "{e}");
    assert!(earned_total(&url, &jitter) > 0);
    assert_eq!(slashed_total(&url, &jitter), 0, "the honest jittery node was slashed");
    honest_kept(dir, &url, 3, "none");
}

/// An asserter that commits the honest hash but serves other bytes, or
/// commits without serving: the ledger refuses the result, the task times
/// out to an honest node, the attacker earns nothing.
fn refused_asserter(attack: &str) {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_ledger, url) = start_ledger_with(dir, "127.0.0.1:0", &["--p", "1", "--test-timeouts"]);
    let (reference, _) = deploy_and_reference(dir, &url);
    let _attacker = start_node_with(dir, &url, "attacker", &["--test-attack", attack]);
    assert_eq!(submit(dir, &url), 1);
    let attacker = pubkey(dir, "attacker");
    let _honest = start_honest(dir, &url, 3);
    wait_for(120, "execution 1 to complete", || {
        get(&url, "/v1/executions/1")["status"] == "Completed"
    });
    fetch_and_compare(dir, &url, &reference);
    let e = get(&url, "/v1/executions/1");
    assert!(e["tasks"][0]["timeouts"].as_u64().unwrap() >= 1, "{e}");
    // It is paid nothing for the task it attacked. It may since have
    // validated other tasks of the execution honestly (p = 1): at most those
    // validators' rewards (120% of a task's cost, so comparing with the
    // worker's earnings would not do: task 1 is the cheapest).
    let params = get(&url, "/v1/genesis")["params"].clone();
    let tasks = get(&url, "/v1/models/1")["def"]["tasks"].clone();
    let p = |k: &str| params[k].as_u64().unwrap();
    let validated: u64 = e["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["validator"].as_str() == Some(attacker.as_str()))
        .map(|t| {
            let def = &tasks[t["task"].as_u64().unwrap() as usize - 1];
            let cost = def["compute_units"].as_u64().unwrap() * p("fee_per_cu")
                + (p("fee_per_gb") * def["vram"].as_u64().unwrap()).div_ceil(splitup_protocol::GB);
            cost * p("verification_reward_pct") / 100
        })
        .sum();
    let earned = earned_total(&url, &attacker);
    assert!(
        earned <= validated,
        "{attack}: the attacker earned {earned}, more than the {validated} its validations pay"
    );
    honest_kept(dir, &url, 3, &attacker);
}

#[test]
fn a_uri_swapping_asserter_is_refused_and_earns_nothing() {
    refused_asserter("uri-swap");
}

#[test]
fn a_withholding_asserter_is_refused_and_earns_nothing() {
    refused_asserter("withhold");
}

/// `honest0` takes the execution alone and waits 5 s before computing; the
/// node `name` (started next, and waiting 5 s before each work item) is
/// then the only possible validator of task 1. Returns once it is drawn.
fn challenged_by(dir: &Path, url: &str, name: &str, attack: &str) -> (Proc, Proc) {
    let first = start_node_with(dir, url, "honest0", &["--delay-ms", "5000"]);
    assert_eq!(submit(dir, url), 1);
    // It supports task 1 only: it is paid for nothing but that validation.
    let v = start_node_with(
        dir,
        url,
        name,
        &["--test-attack", attack, "--delay-ms", "5000", "--specialise", "1/1"],
    );
    let k = pubkey(dir, name);
    wait_for(60, "the attacker to be drawn as task 1's validator", || {
        get(url, "/v1/executions/1")["tasks"][0]["validator"] == k.as_str()
    });
    (first, v)
}

#[test]
fn a_lazy_validator_cannot_read_or_copy_the_result_and_earns_nothing() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_ledger, url) = start_ledger_with(dir, "127.0.0.1:0", &["--p", "1", "--test-timeouts"]);
    let (reference, _) = deploy_and_reference(dir, &url);
    let (_h0, _lazy) = challenged_by(dir, &url, "lazy", "lazy-validator");
    let lazy = pubkey(dir, "lazy");
    let _more: Vec<Proc> = (1..3).map(|i| start_node(dir, &url, &format!("honest{i}"))).collect();
    wait_for(120, "execution 1 to complete", || {
        get(&url, "/v1/executions/1")["status"] == "Completed"
    });
    fetch_and_compare(dir, &url, &reference);
    assert_eq!(earned_total(&url, &lazy), 0, "copying paid");
    assert_eq!(
        slashed_total(&url, &lazy),
        0,
        "it revealed nothing, so nothing to judge"
    );
    let e = get(&url, "/v1/executions/1");
    assert_ne!(
        e["tasks"][0]["validator"],
        lazy.as_str(),
        "the lazy validator was kept: {e}"
    );
    honest_kept(dir, &url, 3, &lazy);
}

#[test]
fn a_griefing_validator_loses_its_dispute_and_stake_and_the_honest_asserter_is_paid() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_ledger, url) = start_ledger_with(dir, "127.0.0.1:0", &["--p", "1", "--test-timeouts"]);
    let (reference, _) = deploy_and_reference(dir, &url);
    let (_h0, _griefer) = challenged_by(dir, &url, "griefer", "grief");
    // The two more nodes a committee needs.
    let _more: Vec<Proc> = (1..3).map(|i| start_node(dir, &url, &format!("honest{i}"))).collect();
    let griefer = pubkey(dir, "griefer");
    wait_for(120, "execution 1 to complete", || {
        get(&url, "/v1/executions/1")["status"] == "Completed"
    });
    fetch_and_compare(dir, &url, &reference);
    let e = get(&url, "/v1/executions/1");
    assert_eq!(e["tasks"][0]["validator"], griefer.as_str(), "{e}");
    assert_eq!(e["tasks"][0]["outcome"], "asserter upheld, validator slashed", "{e}");
    assert!(slashed_total(&url, &griefer) >= 500_000_000);
    // The asserter it tried to grief earned half the slash on top of its fee.
    assert!(earned_total(&url, &pubkey(dir, "honest0")) >= 250_000_000);
    honest_kept(dir, &url, 3, &griefer);
}

#[test]
fn a_dispute_nobody_judges_ends_at_its_deadline_with_the_user_refunded_and_stakes_unlocked() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_ledger, url) = start_ledger_with(dir, "127.0.0.1:0", &["--p", "1", "--test-timeouts"]);
    deploy_and_reference(dir, &url);
    let (_h0, _griefer) = challenged_by(dir, &url, "griefer", "grief");
    let balance = || {
        get(&url, &format!("/v1/accounts/{}", pubkey(dir, "user")))["balance"]
            .as_u64()
            .unwrap()
    };
    let escrow = get(&url, "/v1/executions/1")["escrow"].as_u64().unwrap();
    let before = balance();
    // The only possible judges never vote.
    let _absent: Vec<Proc> = (0..2)
        .map(|i| start_node_with(dir, &url, &format!("absent{i}"), &["--test-attack", "absent"]))
        .collect();
    wait_for(120, "execution 1 to end", || {
        get(&url, "/v1/executions/1")["status"] != "InProgress"
    });
    let e = get(&url, "/v1/executions/1");
    let failed = e["status"]["Failed"].as_str().unwrap_or_else(|| panic!("{e}"));
    assert!(failed.contains("no verdict") && failed.contains("refunded"), "{failed}");
    assert_eq!(e["escrow"], 0);
    assert_eq!(e["tasks"][0]["outcome"], "undecided", "{e}");
    // What no completed task was paid from the escrow comes back.
    assert!(escrow > 0);
    assert!(balance() > before, "the user was not refunded");
    for name in ["honest0", "griefer"] {
        assert_eq!(
            slashed_total(&url, &pubkey(dir, name)),
            0,
            "{name} was slashed with no verdict"
        );
    }
    for node in get(&url, "/v1/nodes").as_array().unwrap() {
        assert_eq!(node["disputes"], 0, "a stake is still locked: {node}");
        assert_eq!(node["load"], 0, "a hold was not released: {node}");
    }
    // The members who stayed away paid for it.
    for i in 0..2 {
        assert!(slashed_total(&url, &pubkey(dir, &format!("absent{i}"))) > 0);
    }
}

#[test]
fn a_killed_node_loses_its_task_to_another_and_is_marked_unresponsive() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_ledger, url) = start_ledger_with(dir, "127.0.0.1:0", &["--test-timeouts"]);
    let (reference, _) = deploy_and_reference(dir, &url);
    let mut stuck = start_node_with(dir, &url, "stuck", &["--delay-ms", "600000"]);
    assert_eq!(submit(dir, &url), 1);
    let k = pubkey(dir, "stuck");
    wait_for(30, "task 1 to be assigned to the node", || {
        get(&url, "/v1/executions/1")["tasks"][0]["node"].as_str() == Some(k.as_str())
    });
    stuck.0.kill().unwrap(); // SIGKILL while it holds the assignment
    let _spare = start_node(dir, &url, "spare");
    wait_for(120, "execution 1 to complete", || {
        get(&url, "/v1/executions/1")["status"] == "Completed"
    });
    let e = get(&url, "/v1/executions/1");
    assert!(
        e["tasks"][0]["attempts"].as_u64().unwrap() >= 2,
        "task 1 was not reassigned: {e}"
    );
    fetch_and_compare(dir, &url, &reference);
    wait_for(30, "the killed node to be marked unresponsive", || {
        get(&url, &format!("/v1/accounts/{k}"))["node"]["status"] == "Unresponsive"
    });
}

#[test]
fn a_ledger_killed_mid_execution_restarts_and_the_execution_completes() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (ledger, url) = start_ledger(dir);
    let listen = url.trim_start_matches("http://").to_string();
    let (reference, _) = deploy_and_reference(dir, &url);
    let _node = start_node_with(dir, &url, "node", &["--delay-ms", "700"]);
    assert_eq!(submit(dir, &url), 1);
    wait_for(60, "a first task to complete", || {
        get(&url, "/v1/executions/1")["tasks"][0]["status"] == "Completed"
    });
    drop(ledger); // SIGKILL
    let (_ledger, url2) = start_ledger_with(dir, &listen, &[]);
    assert_eq!(url, url2);
    // Everything acknowledged before the kill is still there.
    assert_eq!(get(&url, "/v1/executions/1")["tasks"][0]["status"], "Completed");
    wait_for(120, "execution 1 to complete after the restart", || {
        get(&url, "/v1/executions/1")["status"] == "Completed"
    });
    fetch_and_compare(dir, &url, &reference);
}

#[test]
fn the_demo_spreads_tasks_over_nodes_catches_its_cheater_and_cleans_up() {
    let d = tempfile::tempdir().unwrap();
    let out = ok(bin()
        .args(["demo", "--inferences", "2", "-o"])
        .arg(d.path().join("demo"))
        .output()
        .unwrap());
    // It runs 2 inferences, more only while the cheater has not been drawn.
    let inferences = out.matches("\ninference ").count();
    assert!(inferences >= 2, "{out}");
    assert_eq!(out.matches("equals the unsplit local run").count(), inferences, "{out}");
    let tasks: usize = out
        .lines()
        .find(|l| l.contains("; largest needs"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(tasks >= 4);
    let nodes: Vec<&str> = out.lines().filter(|l| l.contains(" of VRAM runs task")).collect();
    assert_eq!(nodes.len(), 8, "{out}");
    assert_eq!(nodes.iter().filter(|l| l.contains("CHEATS")).count(), 1, "{out}");
    // Every inference visits at least 3 different nodes.
    for block in out.split("\ninference ").skip(1) {
        let ran: std::collections::BTreeSet<&str> = block
            .lines()
            .filter_map(|l| l.split(" ran on ").nth(1))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert!(ran.len() >= 3, "tasks ran on {ran:?} only: {out}");
    }
    // The cheater is caught and slashed; nobody else is.
    let cheater = out.lines().find(|l| l.contains("(the cheater)")).unwrap();
    assert!(!cheater.contains("slashed   0.00 USDC"), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.contains("slashed   0.00 USDC")).count(),
        7,
        "{out}"
    );
    assert!(out.contains("was caught and slashed"), "{out}");
    assert!(out.contains("the user paid"), "{out}");
    // -o keeps what its help says: the ledger's data, node keys, logs and
    // each inference's outputs.
    let kept = d.path().join("demo");
    for f in [
        "ledger",
        "ledger.log",
        "node0.json",
        "node0.log",
        "outputs/execution-1/logits.npy",
        "outputs/execution-2/logits.npy",
    ] {
        assert!(kept.join(f).exists(), "demo -o did not keep {f}");
    }
    // The ledger and the nodes are gone: the ledger's port no longer answers.
    let url = out
        .lines()
        .find_map(|l| l.strip_prefix("ledger: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    assert!(
        reqwest::blocking::get(format!("{url}/v1/status")).is_err(),
        "the demo left its ledger running"
    );
}

#[test]
fn at_the_default_p_a_cheater_is_eventually_caught_and_only_it_loses_stake() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_ledger, url) = start_ledger_with(dir, "127.0.0.1:0", &["--p", "0.08", "--test-timeouts"]);
    assert_eq!(get(&url, "/v1/genesis")["params"]["challenge_ppm"], 80_000);
    deploy_and_reference(dir, &url);
    // A dispute needs a validator and two more judges: the cheater works
    // among three honest nodes. It cheats as asserter and as validator.
    let _cheater = start_node_with(dir, &url, "cheater", &["--cheat"]);
    let _honest = start_honest(dir, &url, 3);
    let cheater = pubkey(dir, "cheater");
    let staked = get(&url, &format!("/v1/accounts/{cheater}"))["node"]["stake"]
        .as_u64()
        .unwrap();
    // Each execution has about 5 tasks; at p = 0.08 a challenge comes every
    // ~2.5 executions and catches the cheater about half the time (it asserted
    // the result or was drawn to validate it), so a fixed batch of 15 misses it
    // about 1 time in 15. Submit in batches until it is caught: after 120
    // executions the chance of a miss is below 1 in 10^9.
    let mut submitted = 0u64;
    while slashed_total(&url, &cheater) == 0 {
        assert!(
            submitted < 120,
            "the cheater was never caught in {submitted} executions"
        );
        for _ in 0..10 {
            submitted += 1;
            assert_eq!(submit(dir, &url), submitted);
        }
        wait_for(180, "the batch to finish", || {
            (submitted - 9..=submitted).all(|i| get(&url, &format!("/v1/executions/{i}"))["status"] != "InProgress")
        });
    }
    let t = std::time::Instant::now();
    loop {
        let unfinished: Vec<serde_json::Value> = (1..=submitted)
            .map(|i| get(&url, &format!("/v1/executions/{i}")))
            .filter(|e| e["status"] == "InProgress")
            .collect();
        if unfinished.is_empty() {
            break;
        }
        assert!(t.elapsed().as_secs() < 240, "executions not finished: {unfinished:#?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for i in 0..3 {
        let h = pubkey(dir, &format!("honest{i}"));
        assert_eq!(slashed_total(&url, &h), 0, "honest{i} lost stake");
    }
    let node = get(&url, &format!("/v1/accounts/{cheater}"))["node"].clone();
    assert!(
        node["stake"].as_u64().unwrap() < staked,
        "the cheater ends below the {staked} it staked: {node}"
    );
}

#[test]
fn tensors_of_finished_executions_are_garbage_collected_after_the_retention_time() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_ledger, url) = start_ledger_with(dir, "127.0.0.1:0", &["--retention-secs", "2"]);
    let (reference, _) = deploy_and_reference(dir, &url);
    let _node = start_node(dir, &url, "node");
    // --keep: no acknowledgement, so only the retention time frees the tensors.
    let out = submit_and_wait(dir, &url, &["--keep"]);
    assert!(out.contains("logits.npy") && !out.contains("acknowledged"), "{out}");
    let net = npy::decode(&std::fs::read(dir.join("net/logits.npy")).unwrap()).unwrap();
    allclose(&net, &reference, Tolerance::PARTITION).unwrap();
    // Reads are signed and limited to parties (tests/blobs.rs): look in the ledger's store.
    let stored = |h: &str| dir.join("ledger/blobs").join(h).exists();
    let tensors = execution_blobs(&url);
    wait_for(60, "the execution's tensors to be deleted", || {
        tensors.iter().all(|h| !stored(h))
    });
    // The model's weights are not the execution's to delete.
    for w in weight_blobs(&url) {
        assert!(stored(&w));
    }
}

#[test]
fn a_node_short_of_memory_swaps_tasks_in_and_out_and_still_computes_correctly() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_ledger, url) = start_ledger(dir);
    let (reference, _) = deploy_and_reference(dir, &url);
    fund_key(dir, &url, "small.json", 5000);
    // Room for about two of the ≥ 4 tasks (each needs at most 700 KiB).
    let mut child = bin()
        .args([
            "node",
            "start",
            "--ledger",
            &url,
            "--key",
            "small.json",
            "--vram",
            "1400KiB",
        ])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let _node = Proc(child);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.contains("registered")) {
        lines.push(
            rx.recv_timeout(std::time::Duration::from_secs(30))
                .expect("the node registers"),
        );
    }
    // The summary ("node KEY pre-loaded L of N tasks (...)"), not a task's own line.
    let preload = lines
        .iter()
        .find(|l| l.contains(": node ") && l.contains("pre-loaded"))
        .unwrap();
    let (loaded, total) = {
        let w: Vec<&str> = preload.split_whitespace().collect();
        let i = w.iter().position(|x| *x == "pre-loaded").unwrap();
        (w[i + 1].parse::<usize>().unwrap(), w[i + 3].parse::<usize>().unwrap())
    };
    assert!(loaded < total, "the node should not fit every task: {preload}");
    let out = submit_and_wait(dir, &url, &[]);
    assert!(out.contains("logits.npy"), "{out}");
    let net = npy::decode(&std::fs::read(dir.join("net/logits.npy")).unwrap()).unwrap();
    allclose(&net, &reference, Tolerance::PARTITION).unwrap();
    lines.extend(rx.try_iter());
    assert!(
        lines.iter().any(|l| l.contains("unloaded model 1 task")),
        "no task was unloaded: {lines:?}"
    );
}

#[test]
fn a_node_stopped_with_sigterm_finishes_the_task_in_hand_and_hands_back_the_rest() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_ledger, url) = start_ledger_with(dir, "127.0.0.1:0", &["--test-timeouts"]);
    let (reference, _) = deploy_and_reference(dir, &url);
    // A slow node takes the first task of three executions.
    let mut slow = start_node_with(dir, &url, "slow", &["--delay-ms", "3000"]);
    let slow_key = pubkey(dir, "slow");
    for i in 1..=3 {
        assert_eq!(submit(dir, &url), i);
    }
    wait_for(30, "the slow node to hold three assignments", || {
        get(&url, &format!("/v1/nodes/{slow_key}/work"))
            .as_array()
            .unwrap()
            .len()
            == 3
    });
    // Three more: a challenged result needs a validator and two judges.
    let _fast = start_honest(dir, &url, 3);
    let st = Command::new("kill")
        .args(["-TERM", &slow.0.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = slow.0.wait().unwrap();
    assert!(status.success(), "the node exited with {status:?}");
    let nodes = get(&url, "/v1/nodes");
    let me = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["key"] == slow_key.as_str())
        .unwrap();
    assert_eq!(me["status"], "Offline", "{me}");
    assert_eq!(me["load"], 0, "it holds nothing after leaving: {me}");
    for id in 1..=3 {
        wait_for(60, "the executions to complete", || {
            get(&url, &format!("/v1/executions/{id}"))["status"] == "Completed"
        });
        let e = get(&url, &format!("/v1/executions/{id}"));
        for t in e["tasks"].as_array().unwrap() {
            assert_eq!(t["timeouts"], 0, "a task waited for its timeout: {t}");
        }
    }
    // The one task it had started it finished; the others went to the fast nodes.
    let by_slow = (1..=3)
        .filter(|id| get(&url, &format!("/v1/executions/{id}"))["tasks"][0]["node"] == slow_key.as_str())
        .count();
    assert_eq!(by_slow, 1);
    fetch_and_compare(dir, &url, &reference);
}

/// An S3-compatible server (moto, from PyPI; `.ci/run` installs it) on a
/// free port of 127.0.0.1, with `bucket` created. Returns it and its URL.
fn start_s3(bucket: &str) -> (Proc, String) {
    let mut child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("moto_server not found: `pip install 'moto[server]'` (.ci/run installs it)");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let endpoint = loop {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "moto_server exited");
        if let Some(i) = line.find("http://127.0.0.1:") {
            break line[i..].trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in err.lines().map_while(Result::ok) {});
    let r = reqwest::blocking::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());
    (Proc(child), endpoint)
}

#[test]
fn with_storage_on_s3_the_run_is_correct_and_a_fetch_frees_the_tensors() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_s3, endpoint) = start_s3("splitup-test");
    let env = [
        ("AWS_ENDPOINT", endpoint.clone()),
        ("AWS_ALLOW_HTTP", "true".to_string()),
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
    ];
    let store = "s3://splitup-test/blobs";
    let (_ledger, url) = start_ledger_env(dir, "127.0.0.1:0", &["--store", store], &env);
    assert_eq!(get(&url, "/v1/status")["store"], store);
    // The client deploys through the ledger's HTTP store API, which writes to S3.
    let (reference, _) = deploy_and_reference(dir, &url);
    // One node reads and writes S3 directly, one through the ledger.
    let _direct = start_node_env(dir, &url, "direct", &["--store", store], &env);
    let _proxied = start_node(dir, &url, "proxied");
    let out = submit_and_wait(dir, &url, &["--keep"]);
    assert!(!out.contains("acknowledged"), "{out}");
    let net = npy::decode(&std::fs::read(dir.join("net/logits.npy")).unwrap()).unwrap();
    allclose(&net, &reference, Tolerance::PARTITION).unwrap();
    assert!(
        !dir.join("ledger/blobs").exists(),
        "with --store s3://, nothing is stored on the ledger's disk"
    );
    // Every tensor of the execution, and the weights, are objects in the bucket.
    let opts: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_lowercase(), v.clone())).collect();
    let opts: Vec<(&str, &str)> = opts.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let bucket = splitup_store::BlockingStore::open_with(store, &opts).unwrap();
    let object = |hash: &str| match bucket.get(hash) {
        Ok(_) => 200,
        Err(splitup_store::StoreError::Missing(_)) => 404,
        Err(e) => panic!("{e}"),
    };
    let e = get(&url, "/v1/executions/1");
    for t in e["tasks"].as_array().unwrap() {
        let uri = t["output_uris"][0].as_str().unwrap();
        assert!(uri.starts_with(store) || uri.starts_with(&url), "{uri}");
    }
    let tensors = execution_blobs(&url);
    for h in &tensors {
        assert_eq!(object(h), 200, "tensor {h} is not in the bucket");
    }
    let weights = weight_blobs(&url);
    for w in &weights {
        assert_eq!(object(w), 200, "weights {w} are not in the bucket");
    }
    // Fetching with the user's key acknowledges: the tensors go well before the 1 h retention.
    let out = ok(bin()
        .args(["fetch", "1", "--ledger", &url, "--key", "user.json", "-o", "again"])
        .current_dir(dir)
        .output()
        .unwrap());
    assert!(out.contains("acknowledged"), "{out}");
    wait_for(60, "the execution's tensors to leave the bucket", || {
        tensors.iter().all(|h| object(h) == 404)
    });
    for w in &weights {
        assert_eq!(object(w), 200, "the model's weights must stay");
    }
}

/// Collects a child's output lines as they come.
fn collect(r: impl std::io::Read + Send + 'static) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    lines
}

#[test]
fn logs_name_the_execution_task_and_node_and_follow_rust_log() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // The ledger at the default level (info): one line per protocol event.
    let mut ledger = bin()
        .args([
            "ledger",
            "start",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--p",
            "0",
            "--data",
        ])
        .arg(dir.join("ledger"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(ledger.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    let ledger_log = collect(ledger.stderr.take().unwrap());
    let _ledger = Proc(ledger);
    deploy_and_reference(dir, &url);
    // A node logging JSON at the default level, and one told RUST_LOG=warn.
    let start = |name: &str, json: bool, rust_log: Option<&str>| {
        let key = format!("{name}.json");
        fund_key(dir, &url, &key, 5000);
        let mut c = bin();
        c.args(["node", "start", "--ledger", &url, "--key", &key, "--vram", "8GiB"])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if json {
            c.arg("--json");
        }
        match rust_log {
            Some(v) => c.env("RUST_LOG", v),
            None => c.env_remove("RUST_LOG"),
        };
        let mut child = c.spawn().unwrap();
        let lines = collect(child.stdout.take().unwrap());
        (Proc(child), lines)
    };
    let (_a, a_log) = start("a", true, None);
    let (_b, b_log) = start("b", false, Some("warn"));
    wait_for(60, "both nodes to register", || {
        get(&url, "/v1/nodes").as_array().map(|n| n.len()) == Some(2)
    });
    let a = pubkey(dir, "a");
    // Work until node a has run a task.
    let mut ran = None;
    for _ in 0..10 {
        let id = submit(dir, &url);
        wait_for(60, "the execution", || {
            get(&url, &format!("/v1/executions/{id}"))["status"] != "InProgress"
        });
        let e = get(&url, &format!("/v1/executions/{id}"));
        if let Some(t) = e["tasks"].as_array().unwrap().iter().find(|t| t["node"] == a.as_str()) {
            ran = Some((id, t["task"].as_u64().unwrap()));
            break;
        }
    }
    let (id, task) = ran.expect("node a ran no task in 10 executions");
    // Node a: every line a JSON document naming the node; its compute line
    // names the execution and task as fields.
    wait_for(30, "node a to log its result", || {
        a_log.lock().unwrap().iter().any(|l| l.contains("submitted"))
    });
    let docs: Vec<serde_json::Value> = a_log
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for doc in &docs {
        assert_eq!(doc["node"], a.as_str(), "{doc}");
        assert!(
            doc["level"].is_string() && doc["time_ms"].is_u64() && doc["message"].is_string(),
            "{doc}"
        );
    }
    assert!(docs
        .iter()
        .any(|d| d["message"].as_str().unwrap().contains("registered")));
    assert!(
        docs.iter().any(|d| d["kind"] == "compute"
            && d["execution"] == id
            && d["task"] == task
            && d["message"].as_str().unwrap().contains("submitted")),
        "no compute line for execution {id} task {task}: {docs:#?}"
    );
    // Node b, at warn, logged nothing at info (not even its registration).
    assert!(
        !b_log.lock().unwrap().iter().any(|l| l.contains("INFO")),
        "{:?}",
        b_log.lock().unwrap()
    );
    // The ledger: the assignment to node a, with its ids as fields.
    let assigned = format!("execution={id} task={task} node={a}");
    wait_for(10, "the ledger's assignment line", || {
        ledger_log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("INFO") && l.contains("Assigned") && l.contains(&assigned))
    });
}
