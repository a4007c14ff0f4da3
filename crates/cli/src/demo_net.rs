//! `splitup demo`: a whole local network (a ledger and 4 node processes),
//! a deployed transformer split into ≥ 4 tasks, several inferences, and what
//! happened: outputs, which node ran which task, challenges, fees, stakes.

use crate::util::human;
use crate::DemoArgs;
use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use splitup_graph::builder::transformer;
use splitup_ledger::keys;
use splitup_node::Client;
use splitup_tensor::{allclose, Tensor, Tolerance};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Child processes, killed when the demo ends or is interrupted.
#[derive(Clone, Default)]
struct Children(Arc<Mutex<Vec<Child>>>);

impl Children {
    fn kill_all(&self) {
        for c in self.0.lock().unwrap().iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Guard(Children);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.kill_all();
    }
}

fn spawn(children: &Children, args: &[&str], wait_for: &str, log: Option<std::path::PathBuf>) -> Result<String> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().unwrap());
    children.0.lock().unwrap().push(child);
    let mut first = String::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line)? == 0 {
            bail!("`splitup {}` exited before it was ready", args.join(" "));
        }
        if line.contains(wait_for) {
            first = line;
            break;
        }
        first.push_str(&line);
    }
    std::thread::spawn(move || {
        let mut f = log.and_then(|p| std::fs::File::create(p).ok());
        for l in out.lines().map_while(Result::ok) {
            if let Some(f) = f.as_mut() {
                use std::io::Write;
                let _ = writeln!(f, "{l}");
            }
        }
    });
    Ok(first)
}

fn usdc(v: &serde_json::Value) -> f64 {
    v.as_u64().unwrap_or(0) as f64 / 1e6
}

pub fn run(a: DemoArgs) -> Result<i32> {
    let c = crate::commands::transformer_config(&a.shape);
    if a.seq == 0 || a.seq > c.max_seq {
        bail!("--seq must be between 1 and --max-seq ({})", c.max_seq);
    }
    let tmp;
    let dir = match &a.output {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&dir)?;
    let children = Children::default();
    let _guard = Guard(children.clone());
    {
        let children = children.clone();
        ctrlc::set_handler(move || {
            children.kill_all();
            std::process::exit(130);
        })
        .context("cannot install the SIGINT/SIGTERM handler")?;
    }
    let data = dir.join("ledger");
    let first = spawn(
        &children,
        &[
            "ledger",
            "start",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--data",
            data.to_str().unwrap(),
            "--p",
            &a.p.to_string(),
        ],
        "listening on",
        Some(dir.join("ledger.log")),
    )?;
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .context("the ledger did not print its address")?
        .to_string();
    println!(
        "ledger: {url} (data in {}, challenge probability p = {})",
        data.display(),
        a.p
    );
    let client = Client::new(&url)?;

    let g = transformer(&c).map_err(anyhow::Error::msg)?;
    let (budget, files) = crate::commands::demo_plan(&g, a.seq, a.tasks)?;
    println!(
        "model: generated transformer, {} layers, {} parameters, {} of weights; budget {} per node\n",
        c.layers,
        c.parameters(),
        human(g.weight_bytes()),
        human(budget)
    );
    crate::commands::print_plan(&files.manifest);

    let user = keys::generate();
    // The user's key signs its blob uploads and reads.
    let client = client.signed_by(user.clone());
    client.post(
        "/v1/faucet",
        &serde_json::json!({ "to": user.pubkey().hex(), "amount_usdc": 100 }),
    )?;
    let blobs: BTreeMap<String, Vec<u8>> = files.files.into_iter().collect();
    let checks = splitup_node::ops::calibrate(&files.manifest, &blobs, None, &|_, _| {}, &|_| {})?;
    let model = splitup_node::ops::deploy(&client, &user, &files.manifest, &blobs, &checks, &|_, _| {})?;
    println!("\ndeployed as model {model}");

    let mut names = BTreeMap::new();
    for i in 0..a.nodes {
        let key_path = dir.join(format!("node{i}.json"));
        let _ = std::fs::remove_file(&key_path);
        let k = keys::generate();
        keys::write(&key_path, &k)?;
        client.post(
            "/v1/faucet",
            &serde_json::json!({ "to": k.pubkey().hex(), "amount_usdc": 5000 }),
        )?;
        spawn(
            &children,
            &[
                "node",
                "start",
                "--ledger",
                &url,
                "--key",
                key_path.to_str().unwrap(),
                "--vram",
                "8GiB",
            ],
            "registered",
            Some(dir.join(format!("node{i}.log"))),
        )?;
        names.insert(k.pubkey().hex(), format!("node{i}"));
        println!("node{i}: {} started, staked and pre-loaded", &k.pubkey().hex()[..16]);
    }
    let rt = splitup_exec::OrtRuntime::new(1)?;
    let mut whole = splitup_exec::runner::prepare_model(&g, &rt)?;
    let balance_before = client.get(&format!("/v1/accounts/{}", user.pubkey().hex()))?["balance"].clone();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.input_seed);
    let mut code = 0;
    for run in 0..a.inferences {
        let ids: Vec<i64> = (0..a.seq).map(|_| rng.random_range(0..c.vocab as i64)).collect();
        let inputs: BTreeMap<String, Tensor> =
            [("input_ids".to_string(), Tensor::from_i64(vec![1, a.seq], &ids)?)].into();
        let t0 = Instant::now();
        let id = splitup_node::ops::submit(&client, &user, model, &inputs, 0)?;
        loop {
            let e = client.get(&format!("/v1/executions/{id}"))?;
            if e["status"] == "Completed" {
                break;
            }
            if let Some(why) = e["status"].get("Failed") {
                bail!("execution {id} failed: {}", why.as_str().unwrap_or("no reason given"));
            }
            if t0.elapsed() > Duration::from_secs(300) {
                bail!("execution {id} did not finish in 300 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let took = t0.elapsed();
        let outputs = splitup_node::ops::fetch(&client, id)?;
        if a.output.is_some() {
            crate::util::write_outputs(&dir.join("outputs").join(format!("execution-{id}")), &outputs)?;
        }
        let specs = vec![splitup_graph::plan::TensorSpec {
            name: "input_ids".into(),
            dimensions: vec![],
            shape: vec![1, a.seq as u64],
            dtype: "int64".into(),
        }];
        let local = splitup_exec::runner::run_model(whole.as_mut(), &specs, &inputs)?;
        let e = client.get(&format!("/v1/executions/{id}"))?;
        println!(
            "\ninference {} (execution {id}) in {:.0} ms:",
            run + 1,
            took.as_secs_f64() * 1e3
        );
        for t in e["tasks"].as_array().cloned().unwrap_or_default() {
            let who = |k: &serde_json::Value| {
                k.as_str()
                    .and_then(|k| names.get(k))
                    .cloned()
                    .unwrap_or_else(|| "-".into())
            };
            let challenge = if t["challenged"] == true {
                format!(
                    "challenged, validated by {}: {}",
                    who(&t["validator"]),
                    t["outcome"].as_str().unwrap_or("results matched")
                )
            } else {
                "not challenged".into()
            };
            println!(
                "  task {:>2}: ran on {} ({} attempt{}), {challenge}",
                t["task"],
                who(&t["node"]),
                t["attempts"],
                if t["attempts"] == 1 { "" } else { "s" }
            );
        }
        for ((name, net), (_, loc)) in outputs.iter().zip(&local) {
            let v = net.to_f64_vec();
            let top = v
                .iter()
                .enumerate()
                .skip(v.len() - c.vocab)
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i % c.vocab)
                .unwrap_or(0);
            match allclose(net, loc, Tolerance::PARTITION) {
                Ok(()) => println!(
                    "  output {name} {:?}: next token {top}; equals the unsplit local run",
                    net.shape
                ),
                Err(m) => {
                    println!("  output {name}: DIFFERS from the unsplit local run: {m}");
                    code = 3;
                }
            }
        }
    }
    let after = client.get(&format!("/v1/accounts/{}", user.pubkey().hex()))?;
    println!(
        "\nfees: the user paid {:.6} USDC for {}",
        usdc(&balance_before) - usdc(&after["balance"]),
        crate::util::plural(a.inferences as u64, "inference")
    );
    for (k, n) in &names {
        let acct = client.get(&format!("/v1/accounts/{k}"))?;
        let node = &acct["node"];
        println!(
            "{n}: earned {:.6} USDC, stake {:.2} USDC, slashed {:.2} USDC, status {}",
            usdc(&node["earned_total"]),
            usdc(&node["stake"]),
            usdc(&node["slashed_total"]),
            node["status"].as_str().unwrap_or("?")
        );
    }
    if a.output.is_some() {
        println!(
            "\nkept in {}: the ledger's data, node keys, logs, and outputs/execution-N/",
            dir.display()
        );
    }
    println!("\nstopping the ledger and the nodes");
    Ok(code)
}
