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
        // The demo reads the "ready" line from the log: keep it at info.
        .env("RUST_LOG", "info")
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

/// Inferences the demo adds, beyond `--inferences`, while the cheater has
/// not been caught.
const EXTRA_INFERENCES: usize = 10;

/// One group of consecutive tasks and the nodes that run it.
#[derive(Debug, PartialEq)]
struct Group {
    /// Ledger task numbers (1-based), end excluded.
    tasks: std::ops::Range<usize>,
    honest: usize,
    cheaters: usize,
}

/// Committee members needed for a verdict (a majority of the default committee).
fn judges() -> usize {
    let size = splitup_protocol::Params::default().committee_size as usize;
    size / 2 + 1
}

/// Cuts a chain of `tasks` tasks into three groups of consecutive tasks (so
/// an inference visits at least three nodes) and spreads `nodes` nodes over
/// them. Each group needs an asserter and a validator that holds no task of
/// the execution; the cheater's group (the middle one) also needs enough
/// honest judges besides those two for a committee to reach a verdict.
fn layout(tasks: usize, nodes: usize, cheat: bool) -> Result<Vec<Group>> {
    if tasks < 3 {
        bail!("the network demo needs at least 3 tasks to spread over 3 groups of nodes (use a larger --tasks)");
    }
    let mut need = [2, 2, 2];
    if cheat {
        need[1] = 2 + judges();
    }
    let least: usize = need.iter().sum();
    if nodes < least {
        bail!(
            "--nodes {nodes} is too few: the demo needs {least} ({}), one group of consecutive tasks on 2 nodes each (asserter and validator){}",
            need.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" + "),
            if cheat {
                format!(", and the cheater's group {} more to judge disputes", judges())
            } else {
                String::new()
            }
        );
    }
    for extra in 0..nodes - least {
        need[extra % 3] += 1;
    }
    let mut start = 1;
    Ok((0..3)
        .map(|g| {
            let len = tasks / 3 + usize::from(g < tasks % 3);
            let group = Group {
                tasks: start..start + len,
                honest: need[g] - usize::from(cheat && g == 1),
                cheaters: usize::from(cheat && g == 1),
            };
            start += len;
            group
        })
        .collect())
}

fn slashed_of(c: &Client, key: &str) -> Result<u64> {
    Ok(c.get(&format!("/v1/accounts/{key}"))?["node"]["slashed_total"]
        .as_u64()
        .unwrap_or(0))
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

    let groups = layout(files.manifest.tasks.len(), a.nodes, !a.no_cheater)?;
    let whole_vram: u64 = files.manifest.tasks.iter().map(|t| t.vram_requirement).sum();
    println!(
        "\neach node gets the VRAM of one group of consecutive tasks (the whole model needs {}), so every inference visits at least {} nodes:",
        human(whole_vram),
        groups.len()
    );
    // Keys and names in start order (node0, node1, ...), and names by key.
    let mut started: Vec<(String, String)> = Vec::new();
    let mut names = BTreeMap::new();
    let mut cheater = None;
    let mut i = 0;
    for g in &groups {
        let vram: u64 = g
            .tasks
            .clone()
            .map(|t| files.manifest.tasks[t - 1].vram_requirement)
            .sum();
        let tasks = if g.tasks.len() == 1 {
            format!("task {}", g.tasks.start)
        } else {
            format!("tasks {}-{}", g.tasks.start, g.tasks.end - 1)
        };
        let specs: Vec<String> = g.tasks.clone().map(|t| format!("{model}/{t}")).collect();
        for honest in std::iter::repeat_n(true, g.honest).chain(std::iter::repeat_n(false, g.cheaters)) {
            let name = format!("node{i}");
            let key_path = dir.join(format!("{name}.json"));
            let _ = std::fs::remove_file(&key_path);
            let k = keys::generate();
            keys::write(&key_path, &k)?;
            client.post(
                "/v1/faucet",
                &serde_json::json!({ "to": k.pubkey().hex(), "amount_usdc": 5000 }),
            )?;
            let vram_arg = format!("{vram}B");
            let mut args = vec![
                "node",
                "start",
                "--ledger",
                &url,
                "--key",
                key_path.to_str().unwrap(),
                "--vram",
                &vram_arg,
            ];
            for s in &specs {
                args.extend(["--specialise", s]);
            }
            if !honest {
                args.push("--cheat");
                cheater = Some(k.pubkey().hex());
            }
            spawn(&children, &args, "registered", Some(dir.join(format!("{name}.log"))))?;
            println!(
                "{name}: {} with {} of VRAM runs {tasks}{}",
                &k.pubkey().hex()[..16],
                human(vram),
                if honest {
                    ""
                } else {
                    "; it CHEATS: returns perturbed outputs, as asserter and as validator"
                }
            );
            names.insert(k.pubkey().hex(), name.clone());
            started.push((k.pubkey().hex(), name));
            i += 1;
        }
    }
    let rt = splitup_exec::OrtRuntime::new(1)?;
    let mut whole = splitup_exec::runner::prepare_model(&g, &rt)?;
    let balance_before = client.get(&format!("/v1/accounts/{}", user.pubkey().hex()))?["balance"].clone();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.input_seed);
    let mut code = 0;
    let mut runs = 0;
    // Each node's slashed total after the last inference.
    let mut slashed: BTreeMap<String, u64> = BTreeMap::new();
    let caught = |slashed: &BTreeMap<String, u64>| match &cheater {
        Some(k) => slashed.get(k).is_some_and(|s| *s > 0),
        None => true,
    };
    // The requested inferences, then more (at most EXTRA_INFERENCES) until
    // the cheater has been caught: whether it is drawn is up to the VRF.
    while runs < a.inferences || (runs < a.inferences + EXTRA_INFERENCES && !caught(&slashed)) {
        let run = runs;
        runs += 1;
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
            let excluded: Vec<String> = t["excluded"]
                .as_array()
                .map(|v| v.iter().map(who).collect())
                .unwrap_or_default();
            println!(
                "  task {:>2}: ran on {} ({} attempt{}{}), {challenge}",
                t["task"],
                who(&t["node"]),
                t["attempts"],
                if t["attempts"] == 1 { "" } else { "s" },
                if excluded.is_empty() {
                    String::new()
                } else {
                    format!("; {} excluded", excluded.join(", "))
                }
            );
        }
        for (k, n) in &started {
            let now = slashed_of(&client, k)?;
            let before = slashed.insert(k.clone(), now).unwrap_or(0);
            if now > before {
                println!(
                    "  {n} was caught cheating by the committee and slashed {:.2} USDC",
                    (now - before) as f64 / 1e6
                );
            }
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
    let paid = usdc(&balance_before) - usdc(&after["balance"]);
    println!("\nsummary after {}:", crate::util::plural(runs as u64, "inference"));
    println!("  the user paid {paid:.6} USDC in fees");
    let (mut earned, mut slashed_all) = (0.0, 0.0);
    for (k, n) in &started {
        let acct = client.get(&format!("/v1/accounts/{k}"))?;
        let node = &acct["node"];
        earned += usdc(&node["earned_total"]);
        slashed_all += usdc(&node["slashed_total"]);
        println!(
            "  {n}: earned {:.6} USDC, slashed {:>6.2} USDC, stake now {:>7.2} USDC{}",
            usdc(&node["earned_total"]),
            usdc(&node["slashed_total"]),
            usdc(&node["stake"]),
            if cheater.as_deref() == Some(k.as_str()) {
                " (the cheater)"
            } else {
                ""
            }
        );
    }
    let treasury = client.get("/v1/status")?["treasury"].clone();
    println!(
        "  nodes earned {earned:.6} USDC in all; {slashed_all:.2} USDC was slashed: half goes to the honest party the cheater wronged, the judges are paid from the rest, the remainder stays in the treasury (now {:.2} USDC)",
        usdc(&treasury)
    );
    match &cheater {
        Some(k) if caught(&slashed) => println!(
            "  the cheater {} was caught and slashed; every output the user received is the honest one",
            names[k]
        ),
        Some(k) => {
            println!(
                "  the cheater {} was never drawn in {runs} inferences (the VRF decides who runs and validates)",
                names[k]
            );
        }
        None => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_gives_every_group_an_asserter_and_a_validator_and_the_cheater_judges() {
        let g = layout(8, 8, true).unwrap();
        assert_eq!(
            g.iter().map(|g| g.tasks.clone()).collect::<Vec<_>>(),
            [1..4, 4..7, 7..9]
        );
        assert_eq!(
            g.iter().map(|g| (g.honest, g.cheaters)).collect::<Vec<_>>(),
            [(2, 0), (3, 1), (2, 0)]
        );
        // Extra nodes are spread over the groups; every task is in one group.
        let g = layout(4, 10, true).unwrap();
        assert_eq!(g.iter().map(|g| g.tasks.len()).sum::<usize>(), 4);
        assert_eq!(g.iter().map(|g| g.honest + g.cheaters).sum::<usize>(), 10);
        let g = layout(3, 6, false).unwrap();
        assert!(g.iter().all(|g| g.honest == 2 && g.cheaters == 0 && g.tasks.len() == 1));
        // Too few nodes or tasks: an error that says how many are needed.
        let e = layout(8, 7, true).unwrap_err().to_string();
        assert!(e.contains("needs 8"), "{e}");
        assert!(layout(2, 8, true).unwrap_err().to_string().contains("at least 3 tasks"));
    }
}
