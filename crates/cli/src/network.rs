//! Commands that talk to a ledger over HTTP.

use crate::util::human;
use crate::{
    DeployArgs, FaucetArgs, FetchArgs, KeyedArgs, LedgerStartArgs, LedgerUrl, MintArgs, NodeStartArgs, StatusArgs,
    SubmitArgs,
};
use anyhow::{bail, Context, Result};
use serde_json::json;
use splitup_ledger::{keys, server};
use splitup_protocol::api::{AccountView, ExecutionSummary, ExecutionView, NodeView, Status};
use splitup_protocol::ExecStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The default place of the operator's keys: a directory beside the data
/// directory (`DATA-operator-keys`), never inside it.
pub fn operator_keys_beside(data: &std::path::Path) -> std::path::PathBuf {
    let mut name = data
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "splitup-data".into());
    name.push("-operator-keys");
    data.with_file_name(name)
}

pub fn ledger_start(a: LedgerStartArgs) -> Result<i32> {
    if !(0.0..=1.0).contains(&a.p) {
        bail!("--p must be between 0 and 1");
    }
    let keys = a.operator_keys.clone().unwrap_or_else(|| operator_keys_beside(&a.data));
    let cfg = server::Config {
        keys,
        data: a.data,
        listen: a.listen,
        challenge_ppm: (a.p * 1e6).round() as u64,
        dev: a.dev,
        mint_authority: a.mint_authority,
        limits: splitup_ledger::limits::Rates {
            per_address: splitup_ledger::limits::Rate {
                per_sec: a.rate_per_address,
                burst: a.rate_per_address.saturating_mul(2),
            },
            per_key: splitup_ledger::limits::Rate {
                per_sec: a.rate_per_key,
                burst: a.rate_per_key.saturating_mul(4),
            },
        },
        test_panic_on_transfer: a.test_panic_on_transfer,
        test_unchecked_registrations: a.test_unchecked_registrations,
        // Registration loads each task in ONNX Runtime in a worker: this executable.
        worker: splitup_exec::worker::WorkerCommand::current_exe(&["node", "worker"]).ok(),
        test_timeouts: a.test_timeouts,
        retention_ms: a.retention_secs.saturating_mul(1000),
        snapshot_every: a.snapshot_every,
        store: a.store,
        upload_quota_node: splitup_ledger::blobs::UPLOAD_QUOTA_NODE,
        upload_quota_account: splitup_ledger::blobs::UPLOAD_QUOTA_ACCOUNT,
        orphan_ttl_ms: a.retention_secs.saturating_mul(1000),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(server::serve_with(cfg, |_| {}))?;
    println!("ledger stopped");
    Ok(0)
}

pub fn keys_new(path: &std::path::Path) -> Result<i32> {
    let k = keys::generate();
    keys::write(path, &k)?;
    println!("{}", k.pubkey().hex());
    Ok(0)
}

pub fn faucet(a: FaucetArgs) -> Result<i32> {
    let key = keys::read(&a.keyed.key)?;
    let c = a.keyed.ledger.client()?;
    c.post(
        "/v1/faucet",
        &json!({ "to": key.pubkey().hex(), "amount_usdc": a.amount }),
    )?;
    let acct: AccountView = c.get_as(&format!("/v1/accounts/{}", key.pubkey().hex()))?;
    println!(
        "minted {} USDC to {}; balance {:.6} USDC",
        a.amount,
        key.pubkey().hex(),
        acct.balance as f64 / 1e6
    );
    Ok(0)
}

pub fn mint(a: MintArgs) -> Result<i32> {
    let key = keys::read(&a.keyed.key)?;
    let c = a.keyed.ledger.client()?;
    let amount = a
        .amount
        .checked_mul(splitup_protocol::USDC)
        .context("--amount is too large")?;
    c.send(&key, splitup_protocol::Instruction::Mint { to: a.to, amount })?;
    println!("minted {} USDC to {}", a.amount, a.to.hex());
    Ok(0)
}

pub fn balance(a: KeyedArgs) -> Result<i32> {
    let key = keys::read(&a.key)?;
    let c = a.ledger.client()?;
    let acct: AccountView = c.get_as(&format!("/v1/accounts/{}", key.pubkey().hex()))?;
    println!("{}: {:.6} USDC", key.pubkey().hex(), acct.balance as f64 / 1e6);
    if let Some(n) = acct.node {
        println!(
            "node: stake {:.6} USDC, {} VRAM, status {}, earned {:.6} USDC, slashed {:.6} USDC",
            n.stake as f64 / 1e6,
            human(n.vram),
            n.status,
            n.earned_total as f64 / 1e6,
            n.slashed_total as f64 / 1e6
        );
    }
    Ok(0)
}

pub fn nodes(a: LedgerUrl) -> Result<i32> {
    let c = a.client()?;
    let list: Vec<NodeView> = c.get_as("/v1/nodes")?;
    println!(
        "{:<16} {:>10} {:>14} {:>13} {:>5} {:>9}",
        "node", "vram", "stake (USDC)", "status", "load", "tasks"
    );
    for n in &list {
        println!(
            "{:<16} {:>10} {:>14.2} {:>13} {:>5} {:>9}",
            &n.key.hex()[..16],
            human(n.vram),
            n.stake as f64 / 1e6,
            n.status,
            n.load,
            n.supports.len()
        );
    }
    println!("{} nodes", list.len());
    Ok(0)
}

pub fn deploy(a: DeployArgs) -> Result<i32> {
    let key = keys::read(&a.keyed.key)?;
    let c = a.keyed.ledger.client()?.signed_by(key.clone());
    let (g, b) = crate::commands::load_model(&a.model)?;
    if !g.is_materialised() {
        bail!(
            "{} has weights described by shape only; only real weights can be deployed",
            a.model.model
        );
    }
    let opts = splitup_graph::partition::Options::uniform(a.vram);
    let p = splitup_graph::partition::partition(&g, &b, &opts)?;
    let name = std::path::Path::new(&a.model.model)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let files = splitup_graph::plan::build(&p, name.trim_start_matches('@'), &b, &opts, true)?;
    crate::commands::print_plan(&files.manifest);
    let blobs: std::collections::BTreeMap<String, Vec<u8>> = files.files.into_iter().collect();
    let sample = if a.calibration_inputs.is_empty() {
        None
    } else {
        Some(crate::util::read_inputs(&a.calibration_inputs)?)
    };
    let n = files.manifest.tasks.len() as u64;
    let pb = indicatif::ProgressBar::new(n).with_message("calibrating tolerances");
    pb.set_style(
        indicatif::ProgressStyle::with_template("{msg} {pos}/{len} tasks {wide_bar}").expect("a valid template"),
    );
    let checks = splitup_node::ops::calibrate(
        &files.manifest,
        &blobs,
        sample.as_ref(),
        &|done, _| pb.set_position(done as u64),
        &|line| pb.suspend(|| eprintln!("{line}")),
    )?;
    pb.set_position(0);
    pb.set_message("uploading");
    let id = splitup_node::ops::deploy(&c, &key, &files.manifest, &blobs, &checks, &|done, _| {
        pb.set_position(done as u64)
    })?;
    pb.finish_and_clear();
    println!("model {id} registered ({} tasks)", files.manifest.tasks.len());
    Ok(0)
}

pub fn submit(a: SubmitArgs) -> Result<i32> {
    let key = keys::read(&a.keyed.key)?;
    let c = a.keyed.ledger.client()?.signed_by(key.clone());
    let inputs = crate::util::read_inputs(&a.inputs)?;
    let id = splitup_node::ops::submit(&c, &key, a.model, &inputs, a.priority)?;
    println!("execution {id}");
    if !a.wait {
        return Ok(0);
    }
    let started = std::time::Instant::now();
    let pb = indicatif::ProgressBar::new(0);
    let mut seen = None;
    loop {
        // Long-poll: the ledger answers when the execution's state may have changed.
        let (e, version): (ExecutionView, _) =
            c.get_when_changed_as(&format!("/v1/executions/{id}"), seen, std::time::Duration::from_secs(5))?;
        seen = version;
        pb.set_length(e.tasks.len() as u64);
        pb.set_position(e.tasks.iter().filter(|t| t.status == "Completed").count() as u64);
        match &e.status {
            ExecStatus::Completed => break,
            ExecStatus::Failed(reason) => {
                pb.finish_and_clear();
                bail!("execution {id} failed: {reason}");
            }
            ExecStatus::InProgress => {}
        }
        if started.elapsed().as_secs() > a.timeout {
            pb.finish_and_clear();
            bail!(
                "execution {id} did not finish within {} s (see `splitup status {id}`)",
                a.timeout
            );
        }
    }
    pb.finish_and_clear();
    let outputs = splitup_node::ops::fetch(&c, id)?;
    for p in crate::util::write_outputs(a.output.as_ref().unwrap(), &outputs)? {
        println!("wrote {}", p.display());
    }
    if !a.keep {
        acknowledge(&c, &key, id)?;
    }
    Ok(0)
}

/// Tells the ledger the outputs are safely on disk, so the storage may
/// delete the execution's tensors now rather than after the retention time.
fn acknowledge(c: &splitup_node::Client, key: &splitup_protocol::Keypair, id: u64) -> Result<()> {
    c.send(key, splitup_protocol::Instruction::Fetched { execution: id })?;
    println!("acknowledged: the network may now delete execution {id}'s tensors");
    Ok(())
}

pub fn status(a: StatusArgs) -> Result<i32> {
    let c = a.ledger.client()?;
    let Some(id) = a.execution else {
        let s: Status = c.get_as("/v1/status")?;
        println!(
            "ledger {}: slot {}, block hash {}, {} instructions; {} nodes, {} models, {} executions; blobs in {}",
            c.base(),
            s.slot,
            &splitup_protocol::crypto::to_hex(&s.blockhash)[..16],
            s.instructions,
            s.nodes,
            s.models,
            s.executions,
            s.store
        );
        let list: Vec<ExecutionSummary> = c.get_as("/v1/executions?limit=20")?;
        if !list.is_empty() {
            println!(
                "{:>9} {:>6} {:>10} {:>9} {:<18}",
                "execution", "model", "tasks done", "fetched", "status"
            );
        }
        for e in list {
            println!(
                "{:>9} {:>6} {:>10} {:>9} {}",
                e.id,
                e.model,
                format!("{}/{}", e.completed, e.tasks),
                e.fetched,
                show_status(&e.status)
            );
        }
        return Ok(0);
    };
    let e: ExecutionView = c.get_as(&format!("/v1/executions/{id}"))?;
    println!("execution {id} of model {}: {}", e.model, show_status(&e.status));
    println!(
        "{:>5} {:>11} {:<18} {:>8} {:>8} {:>11} outcome",
        "task", "state", "node", "attempts", "timeouts", "challenged"
    );
    for t in &e.tasks {
        let node = t.node.map(|n| n.hex()[..16].to_string()).unwrap_or_else(|| "-".into());
        println!(
            "{:>5} {:>11} {:<18} {:>8} {:>8} {:>11} {}",
            t.task,
            t.status,
            node,
            t.attempts,
            t.timeouts,
            t.challenged,
            t.outcome.as_deref().unwrap_or("")
        );
    }
    Ok(0)
}

fn show_status(s: &ExecStatus) -> String {
    match s {
        ExecStatus::InProgress => "InProgress".into(),
        ExecStatus::Completed => "Completed".into(),
        ExecStatus::Failed(why) => format!("Failed: {why}"),
    }
}

pub fn fetch(a: FetchArgs) -> Result<i32> {
    let key = a.key.as_deref().map(keys::read).transpose()?;
    let c = match (&key, &a.ledger.store) {
        (Some(k), _) => a.ledger.client()?.signed_by(k.clone()),
        (None, Some(_)) => a.ledger.client()?,
        (None, None) => bail!(
            "reading an execution's tensors through the ledger takes the submitter's key: give --key FILE (or --store URL to read the store directly)"
        ),
    };
    let outputs = splitup_node::ops::fetch(&c, a.execution)?;
    for p in crate::util::write_outputs(&a.output, &outputs)? {
        println!("wrote {}", p.display());
    }
    if let Some(k) = &key {
        acknowledge(&c, k, a.execution)?;
    }
    Ok(0)
}

pub fn node_start(a: NodeStartArgs) -> Result<i32> {
    let key = keys::read(&a.keyed.key)?;
    let mut specialise = Vec::new();
    for s in &a.specialise {
        let (m, t) = match s.split_once('/') {
            Some((m, t)) => (
                m,
                Some(
                    t.parse::<u32>()
                        .with_context(|| format!("--specialise {s}: the task must be a number"))?,
                ),
            ),
            None => (s.as_str(), None),
        };
        specialise.push((
            m.parse::<u64>()
                .with_context(|| format!("--specialise {s}: the model must be a number"))?,
            t,
        ));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("cannot install the SIGINT/SIGTERM handler")?;
    let cfg = splitup_node::daemon::Config {
        ledger: a.keyed.ledger.ledger.clone(),
        store: a.keyed.ledger.store.clone(),
        key,
        key_file: Some(a.keyed.key.clone()),
        vram: a.vram,
        stake: a.stake.map(|s| s * splitup_protocol::USDC),
        specialise,
        threads: a.threads,
        heartbeat_every: std::time::Duration::from_secs(10),
        poll_every: std::time::Duration::from_millis(100),
        worker: splitup_exec::worker::WorkerCommand::current_exe(&["node", "worker"])
            .context("cannot find this executable to start task workers")?,
        fault: match a.test_attack.as_deref() {
            _ if a.cheat => splitup_node::daemon::Fault::Cheat,
            _ if a.jitter => splitup_node::daemon::Fault::Jitter,
            None => splitup_node::daemon::Fault::None,
            Some("uri-swap") => splitup_node::daemon::Fault::UriSwap,
            Some("withhold") => splitup_node::daemon::Fault::Withhold,
            Some("lazy-validator") => splitup_node::daemon::Fault::LazyValidator,
            Some("grief") => splitup_node::daemon::Fault::Grief,
            Some("absent") => splitup_node::daemon::Fault::Absent,
            Some(other) => bail!("--test-attack {other}: one of uri-swap, withhold, lazy-validator, grief, absent"),
        },
        delay: std::time::Duration::from_millis(a.delay_ms),
        metrics_listen: a.metrics_listen,
    };
    splitup_node::daemon::run(&cfg, &stop, &|m| {
        println!("{m}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    })?;
    Ok(0)
}
