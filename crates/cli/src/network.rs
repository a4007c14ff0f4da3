//! Commands that talk to a ledger over HTTP.
//!
//! Each prints a human report, or with `--json` one JSON document
//! (`util::emit`; the fields are documented in docs/cli-json.md).

use crate::util::{emit, human, json, plural, short, usdc};
use crate::{
    DeployArgs, FaucetArgs, FetchArgs, KeyedArgs, LedgerStartArgs, LedgerUrl, MintArgs, NodeStartArgs, StatusArgs,
    SubmitArgs, UndeployArgs, UnstakeArgs,
};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use splitup_ledger::{keys, server};
use splitup_protocol::api::{
    AccountView, ExecutionSummary, ExecutionView, GenesisView, ModelSummary, NodeView, Status, TaskView,
};
use splitup_protocol::{ExecStatus, Instruction, Millis};
use std::path::Path;
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
    crate::util::init_logging(crate::util::LogTo::Stderr);
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
    let data = cfg.data.clone();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(server::serve_with(cfg, |addr| {
        if json() {
            let _ = emit(&json!({
                "event": "listening",
                "url": format!("http://{addr}"),
                "data": data.display().to_string(),
            }));
        }
    }))?;
    if json() {
        emit(&json!({ "event": "stopped" }))?;
    } else {
        println!("ledger stopped");
    }
    Ok(0)
}

pub fn keys_new(path: Option<&Path>) -> Result<i32> {
    let (path, default) = match path {
        Some(p) => (p.to_path_buf(), false),
        None => (crate::config::default_key_path()?, true),
    };
    if default {
        // The splitup directory holds keys: owner-only, as the key files are.
        if let Some(dir) = path.parent() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    let k = keys::generate();
    keys::write(&path, &k)?;
    if json() {
        emit(&json!({ "public_key": k.pubkey().hex(), "path": path.display().to_string() }))?;
    } else {
        println!("{}", k.pubkey().hex());
        eprintln!(
            "wrote the key to {}{}",
            path.display(),
            if default {
                " (the default key: network commands use it when given no --key)"
            } else {
                ""
            }
        );
    }
    Ok(0)
}

pub fn keys_show(key: Option<&Path>) -> Result<i32> {
    let (path, k) = crate::config::read_key(key)?;
    if json() {
        emit(&json!({ "public_key": k.pubkey().hex(), "path": path.display().to_string() }))?;
    } else {
        println!("{}", k.pubkey().hex());
        eprintln!("key file {}", path.display());
    }
    Ok(0)
}

fn account(c: &splitup_node::Client, key: &splitup_protocol::Pubkey) -> Result<AccountView> {
    c.get_as(&format!("/v1/accounts/{}", key.hex()))
}

pub fn faucet(a: FaucetArgs) -> Result<i32> {
    let (_, key) = a.keyed.key()?;
    let c = a.keyed.ledger.client()?;
    let before = account(&c, &key.pubkey())?.balance;
    let mut body = json!({ "to": key.pubkey().hex() });
    if let Some(amount) = a.amount {
        body["amount_usdc"] = amount.into();
    }
    c.post("/v1/faucet", &body)?;
    let after = account(&c, &key.pubkey())?.balance;
    // What this request minted (the ledger's default when no --amount).
    let minted = after.saturating_sub(before);
    if json() {
        emit(&json!({
            "public_key": key.pubkey().hex(),
            "minted_micro_usdc": minted,
            "balance_micro_usdc": after,
        }))?;
    } else {
        println!(
            "minted {} to {}; balance {}",
            usdc(minted),
            key.pubkey().hex(),
            usdc(after)
        );
    }
    Ok(0)
}

pub fn mint(a: MintArgs) -> Result<i32> {
    let (_, key) = a.keyed.key()?;
    let c = a.keyed.ledger.client()?;
    let amount = a
        .amount
        .checked_mul(splitup_protocol::USDC)
        .context("--amount is too large")?;
    c.send(&key, Instruction::Mint { to: a.to, amount })?;
    if json() {
        emit(&json!({ "to": a.to.hex(), "minted_micro_usdc": amount }))?;
    } else {
        println!("minted {} to {}", usdc(amount), a.to.hex());
    }
    Ok(0)
}

/// A node as the JSON documents show it.
fn node_json(n: &NodeView) -> Value {
    json!({
        "public_key": n.key.hex(),
        "vram_bytes": n.vram,
        "stake_micro_usdc": n.stake,
        "unstaking": n.unstaking.as_ref().map(|u| json!({
            "amount_micro_usdc": u.amount,
            "withdrawable_at_ms": u.unlock_ms,
        })),
        "status": n.status,
        "load": n.load,
        "disputes": n.disputes,
        "supports": n.supports.iter().map(|(m, t)| json!({ "model": m, "task": t })).collect::<Vec<_>>(),
        "earned_micro_usdc": n.earned_total,
        "slashed_micro_usdc": n.slashed_total,
        "last_heartbeat_ms": n.last_heartbeat_ms,
    })
}

pub fn balance(a: KeyedArgs) -> Result<i32> {
    let (_, key) = a.key()?;
    let c = a.ledger.client()?;
    let acct = account(&c, &key.pubkey())?;
    if json() {
        emit(&json!({
            "public_key": key.pubkey().hex(),
            "balance_micro_usdc": acct.balance,
            "nonce": acct.nonce,
            "node": acct.node.as_ref().map(node_json),
        }))?;
        return Ok(0);
    }
    println!("{}: {}", key.pubkey().hex(), usdc(acct.balance));
    if let Some(n) = acct.node {
        println!(
            "node: stake {}, {} VRAM, status {}, earned {}, slashed {}",
            usdc(n.stake),
            human(n.vram),
            n.status,
            usdc(n.earned_total),
            usdc(n.slashed_total)
        );
        if let Some(u) = &n.unstaking {
            let now = c.get_as::<Status>("/v1/status")?.now_ms;
            println!(
                "unstaking {}: withdrawable {} with `splitup withdraw`",
                usdc(u.amount),
                when(u.unlock_ms, now)
            );
        }
    }
    Ok(0)
}

/// `in 23 h 59 min (2026-05-04 10:00 UTC)`, or `now` once it has passed.
fn when(at_ms: Millis, now_ms: Millis) -> String {
    if at_ms <= now_ms {
        return "now".into();
    }
    let mins = (at_ms - now_ms).div_ceil(60_000);
    let left = match (mins / 60, mins % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    };
    format!("in {left} ({})", utc(at_ms))
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM UTC` (the ledger's
/// clock is the Unix time of its host).
fn utc(ms: Millis) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

/// A table whose columns are as wide as their widest cell, two spaces
/// apart. `right[i]`: column `i` is right-aligned.
fn table(head: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            let pad = " ".repeat(width[i].saturating_sub(cell.chars().count()));
            if i > 0 {
                out.push_str("  ");
            }
            if right[i] {
                out.push_str(&pad);
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.push_str(&pad);
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(head.to_vec());
    for r in rows {
        out.push('\n');
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

pub fn nodes(a: LedgerUrl) -> Result<i32> {
    let c = a.client()?;
    let list: Vec<NodeView> = c.get_as("/v1/nodes")?;
    if json() {
        emit(&json!({ "nodes": list.iter().map(node_json).collect::<Vec<_>>() }))?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|n| {
            vec![
                short(&n.key),
                human(n.vram),
                format!("{:.2}", n.stake as f64 / 1e6),
                n.status.clone(),
                n.load.to_string(),
                n.supports.len().to_string(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &["node", "vram", "stake (USDC)", "status", "load", "tasks"],
            &rows,
            &[false, true, true, false, true, true]
        )
    );
    println!("{}", plural(list.len() as u64, "node"));
    Ok(0)
}

pub fn models(a: LedgerUrl) -> Result<i32> {
    let c = a.client()?;
    let list: Vec<ModelSummary> = c.get_as("/v1/models")?;
    if json() {
        let models: Vec<Value> = list
            .iter()
            .map(|m| {
                json!({
                    "id": m.id,
                    "name": m.name,
                    "tasks": m.tasks,
                    "active": m.active,
                    "owner": m.owner.hex(),
                })
            })
            .collect();
        emit(&json!({ "models": models }))?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.name.clone(),
                m.tasks.to_string(),
                if m.active { "yes" } else { "no" }.to_string(),
                short(&m.owner),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &["model", "name", "tasks", "active", "owner"],
            &rows,
            &[true, false, true, false, false]
        )
    );
    let active = list.iter().filter(|m| m.active).count();
    println!("{}, {active} active", plural(list.len() as u64, "model"));
    Ok(0)
}

pub fn deploy(a: DeployArgs) -> Result<i32> {
    let (_, key) = a.keyed.key()?;
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
    let tasks = files.manifest.tasks.len();
    if json() {
        emit(&json!({ "model": id, "name": files.manifest.name, "tasks": tasks, "owner": key.pubkey().hex() }))?;
    } else {
        println!("model {id} registered ({})", plural(tasks as u64, "task"));
    }
    Ok(0)
}

pub fn undeploy(a: UndeployArgs) -> Result<i32> {
    let (_, key) = a.keyed.key()?;
    let c = a.keyed.ledger.client()?;
    let before: ModelSummary = c
        .get_as::<Vec<ModelSummary>>("/v1/models")?
        .into_iter()
        .find(|m| m.id == a.model)
        .with_context(|| format!("there is no model {} on this ledger (see `splitup models`)", a.model))?;
    if before.owner != key.pubkey() {
        bail!(
            "model {} belongs to {}, not to this key ({}): only its owner may deactivate it",
            a.model,
            before.owner.hex(),
            key.pubkey().hex()
        );
    }
    c.send(&key, Instruction::DeactivateModel { model: a.model })?;
    let running = c
        .get_as::<Vec<ExecutionSummary>>("/v1/executions?limit=1000")?
        .iter()
        .filter(|e| e.model == a.model && e.status == ExecStatus::InProgress)
        .count();
    if json() {
        emit(&json!({
            "model": a.model,
            "name": before.name,
            "active": false,
            "was_active": before.active,
            "executions_in_progress": running,
        }))?;
        return Ok(0);
    }
    if before.active {
        println!("model {} ({:?}) deactivated", a.model, before.name);
    } else {
        println!("model {} ({:?}) was already inactive", a.model, before.name);
    }
    println!(
        "new executions of it are refused; {} in progress {} as usual. It cannot be reactivated (deploy it again for a new id). \
Nodes that start from now on do not load it; running nodes keep its tasks until they restart. \
Its files stay in the ledger's store while the model is listed.",
        plural(running as u64, "execution"),
        if running == 1 { "finishes" } else { "finish" }
    );
    Ok(0)
}

pub fn unstake(a: UnstakeArgs) -> Result<i32> {
    let (_, key) = a.keyed.key()?;
    let c = a.keyed.ledger.client()?;
    let acct = account(&c, &key.pubkey())?;
    let Some(n) = acct.node else {
        bail!("{} is not a node: it has nothing staked", key.pubkey().hex());
    };
    let now = c.get_as::<Status>("/v1/status")?.now_ms;
    if let Some(u) = &n.unstaking {
        bail!(
            "{} is already unstaking (one unstake at a time): it is withdrawable {} with `splitup withdraw`",
            usdc(u.amount),
            when(u.unlock_ms, now)
        );
    }
    let amount = a.amount.unwrap_or(n.stake);
    if amount == 0 {
        bail!("this node has nothing staked");
    }
    if amount > n.stake {
        bail!("cannot unstake {}: the stake is {}", usdc(amount), usdc(n.stake));
    }
    c.send(&key, Instruction::RequestUnstake { amount })?;
    let after = account(&c, &key.pubkey())?;
    let n = after.node.context("the ledger no longer shows this node")?;
    let u = n
        .unstaking
        .clone()
        .context("the ledger accepted the unstake but does not show it")?;
    let genesis: GenesisView = c.get_as("/v1/genesis")?;
    let p = &genesis.params;
    let required = p
        .stake_base
        .saturating_add(p.stake_per_gb.saturating_mul(n.vram.div_ceil(splitup_protocol::GB)));
    let free = n.stake.saturating_sub(u.amount);
    if json() {
        emit(&json!({
            "public_key": key.pubkey().hex(),
            "unstaking_micro_usdc": u.amount,
            "stake_micro_usdc": n.stake,
            "free_stake_micro_usdc": free,
            "required_stake_micro_usdc": required,
            "withdrawable_at_ms": u.unlock_ms,
            "lockup_ms": p.unstake_lockup_ms,
        }))?;
        return Ok(0);
    }
    println!(
        "unstaking {} of node {}'s {} stake: withdrawable {} with `splitup withdraw`, once the node holds no task and no dispute",
        usdc(u.amount),
        short(&key.pubkey()),
        usdc(n.stake),
        when(u.unlock_ms, now)
    );
    println!(
        "until then it stays staked and slashable{}; an unstake cannot be cancelled",
        if free < required {
            format!(
                ", and the node is assigned no new work (its free stake, {}, is below the {} its {} requires)",
                usdc(free),
                usdc(required),
                human(n.vram)
            )
        } else {
            String::new()
        }
    );
    Ok(0)
}

pub fn withdraw(a: KeyedArgs) -> Result<i32> {
    let (_, key) = a.key()?;
    let c = a.ledger.client()?;
    let acct = account(&c, &key.pubkey())?;
    let Some(n) = acct.node else {
        bail!("{} is not a node: it has nothing staked", key.pubkey().hex());
    };
    let Some(u) = n.unstaking else {
        bail!("nothing is unstaking: `splitup unstake` first, then withdraw after the lockup");
    };
    let now = c.get_as::<Status>("/v1/status")?.now_ms;
    if now < u.unlock_ms {
        bail!(
            "{} is still locked: withdrawable {}",
            usdc(u.amount),
            when(u.unlock_ms, now)
        );
    }
    if n.load > 0 || n.disputes > 0 {
        bail!(
            "the node holds {} and {}: it can withdraw once they are done",
            plural(n.load as u64, "task"),
            plural(n.disputes as u64, "dispute")
        );
    }
    c.send(&key, Instruction::Withdraw)?;
    let after = account(&c, &key.pubkey())?;
    let withdrawn = after.balance.saturating_sub(acct.balance);
    let stake = after.node.as_ref().map_or(0, |n| n.stake);
    if json() {
        emit(&json!({
            "public_key": key.pubkey().hex(),
            "withdrawn_micro_usdc": withdrawn,
            "stake_micro_usdc": stake,
            "balance_micro_usdc": after.balance,
        }))?;
    } else {
        println!(
            "withdrew {}: balance {}, stake left {}",
            usdc(withdrawn),
            usdc(after.balance),
            usdc(stake)
        );
    }
    Ok(0)
}

pub fn submit(a: SubmitArgs) -> Result<i32> {
    let (_, key) = a.keyed.key()?;
    let c = a.keyed.ledger.client()?.signed_by(key.clone());
    let inputs = crate::util::read_inputs(&a.inputs)?;
    let id = splitup_node::ops::submit(&c, &key, a.model, &inputs, a.priority)?;
    if !a.wait {
        if json() {
            emit(&json!({
                "execution": id,
                "model": a.model,
                "status": "InProgress",
                "outputs": [],
                "acknowledged": false,
            }))?;
        } else {
            println!("execution {id}");
        }
        return Ok(0);
    }
    if !json() {
        println!("execution {id}");
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
    let paths = crate::util::write_outputs(a.output.as_ref().unwrap(), &outputs)?;
    if !json() {
        for p in &paths {
            println!("wrote {}", p.display());
        }
    }
    if !a.keep {
        acknowledge(&c, &key, id)?;
    }
    if json() {
        emit(&json!({
            "execution": id,
            "model": a.model,
            "status": "Completed",
            "outputs": outputs_json(&outputs, &paths),
            "acknowledged": !a.keep,
        }))?;
    }
    Ok(0)
}

fn outputs_json(outputs: &[(String, splitup_tensor::Tensor)], paths: &[std::path::PathBuf]) -> Vec<Value> {
    outputs
        .iter()
        .zip(paths)
        .map(|((name, t), p)| {
            json!({
                "name": name,
                "path": p.display().to_string(),
                "dtype": t.dtype.name(),
                "shape": t.shape,
            })
        })
        .collect()
}

/// Tells the ledger the outputs are safely on disk, so the storage may
/// delete the execution's tensors now rather than after the retention time.
fn acknowledge(c: &splitup_node::Client, key: &splitup_protocol::Keypair, id: u64) -> Result<()> {
    c.send(key, Instruction::Fetched { execution: id })?;
    if !json() {
        println!("acknowledged: the network may now delete execution {id}'s tensors");
    }
    Ok(())
}

/// An execution's state in one word: `InProgress`, `Completed`, `Failed`.
fn state_word(s: &ExecStatus) -> &'static str {
    match s {
        ExecStatus::InProgress => "InProgress",
        ExecStatus::Completed => "Completed",
        ExecStatus::Failed(_) => "Failed",
    }
}

fn show_status(s: &ExecStatus) -> String {
    match s {
        ExecStatus::Failed(why) => format!("Failed: {why}"),
        other => state_word(other).into(),
    }
}

/// Who checked a task's result: its validator (short key), `pending` when
/// it was challenged and no validator holds it yet, `none` when it was not
/// challenged (or has no result yet).
fn challenge(t: &TaskView) -> String {
    match (t.challenged, &t.validator) {
        (true, Some(v)) => short(v),
        (true, None) => "pending".into(),
        (false, _) => "none".into(),
    }
}

/// What became of a task's result, never blank once there is one: a
/// dispute's verdict as the ledger recorded it; `validated` (a validator's
/// recomputation matched), `accepted` (not challenged), or where it stands.
fn verdict(t: &TaskView) -> String {
    if let Some(o) = &t.outcome {
        return o.clone();
    }
    match t.status.as_str() {
        "Completed" if t.challenged => "validated".into(),
        "Completed" => "accepted".into(),
        "Challenged" if t.validator_sealed => "validator sealed".into(),
        "Challenged" => "validating".into(),
        "Disputed" => format!("disputed ({} of {} votes)", t.voted.len(), t.committee.len()),
        _ => "-".into(),
    }
}

/// `Failed`'s reason, else null.
fn failure(s: &ExecStatus) -> Option<&str> {
    match s {
        ExecStatus::Failed(w) => Some(w),
        _ => None,
    }
}

pub fn status(a: StatusArgs) -> Result<i32> {
    let c = a.ledger.client()?;
    let Some(id) = a.execution else {
        let s: Status = c.get_as("/v1/status")?;
        let list: Vec<ExecutionSummary> = c.get_as("/v1/executions?limit=20")?;
        if json() {
            let recent: Vec<Value> = list
                .iter()
                .map(|e| {
                    json!({
                        "execution": e.id,
                        "model": e.model,
                        "user": e.user.hex(),
                        "status": state_word(&e.status),
                        "failure": failure(&e.status),
                        "tasks": e.tasks,
                        "completed": e.completed,
                        "fetched": e.fetched,
                        "submitted_ms": e.submitted_ms,
                        "finished_ms": e.finished_ms,
                    })
                })
                .collect();
            emit(&json!({
                "ledger": c.base(),
                "slot": s.slot,
                "blockhash": splitup_protocol::crypto::to_hex(&s.blockhash),
                "instructions": s.instructions,
                "now_ms": s.now_ms,
                "accounts": s.accounts,
                "nodes": s.nodes,
                "models": s.models,
                "executions": s.executions,
                "supply_micro_usdc": s.supply,
                "treasury_micro_usdc": s.treasury,
                "store": s.store,
                "recent": recent,
            }))?;
            return Ok(0);
        }
        println!(
            "ledger {}: slot {}, block hash {}, {}; {}, {}, {}; blobs in {}",
            c.base(),
            s.slot,
            &splitup_protocol::crypto::to_hex(&s.blockhash)[..16],
            plural(s.instructions, "instruction"),
            plural(s.nodes as u64, "node"),
            plural(s.models as u64, "model"),
            plural(s.executions as u64, "execution"),
            s.store
        );
        if !list.is_empty() {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|e| {
                    vec![
                        e.id.to_string(),
                        e.model.to_string(),
                        format!("{}/{}", e.completed, e.tasks),
                        if e.fetched { "yes" } else { "no" }.to_string(),
                        show_status(&e.status),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &["execution", "model", "tasks done", "fetched", "status"],
                    &rows,
                    &[true, true, true, false, false]
                )
            );
        }
        return Ok(0);
    };
    let e: ExecutionView = c.get_as(&format!("/v1/executions/{id}"))?;
    if json() {
        let tasks: Vec<Value> = e
            .tasks
            .iter()
            .map(|t| {
                json!({
                    "task": t.task,
                    "state": t.status,
                    "node": t.node.map(|k| k.hex()),
                    "attempts": t.attempts,
                    "timeouts": t.timeouts,
                    "challenged": t.challenged,
                    "validator": t.validator.map(|k| k.hex()),
                    "verdict": verdict(t),
                    "commitment": t.commitment.map(|h| splitup_protocol::crypto::to_hex(&h)),
                    "excluded": t.excluded.iter().map(|k| k.hex()).collect::<Vec<_>>(),
                    "deadline_ms": t.deadline_ms,
                })
            })
            .collect();
        emit(&json!({
            "execution": id,
            "model": e.model,
            "user": e.user.hex(),
            "status": state_word(&e.status),
            "failure": failure(&e.status),
            "escrow_micro_usdc": e.escrow,
            "fetched": e.fetched,
            "tasks": tasks,
        }))?;
        return Ok(0);
    }
    println!(
        "execution {id} of model {}: {}{}",
        e.model,
        show_status(&e.status),
        if e.fetched {
            " (outputs fetched and acknowledged)"
        } else {
            ""
        }
    );
    let rows: Vec<Vec<String>> = e
        .tasks
        .iter()
        .map(|t| {
            vec![
                t.task.to_string(),
                t.status.clone(),
                t.node.as_ref().map(short).unwrap_or_else(|| "-".into()),
                t.attempts.to_string(),
                t.timeouts.to_string(),
                challenge(t),
                verdict(t),
                if t.excluded.is_empty() {
                    "-".into()
                } else {
                    t.excluded.iter().map(short).collect::<Vec<_>>().join(",")
                },
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "task",
                "state",
                "node",
                "attempts",
                "timeouts",
                "challenge",
                "verdict",
                "excluded"
            ],
            &rows,
            &[true, false, false, true, true, false, false, false]
        )
    );
    Ok(0)
}

pub fn fetch(a: FetchArgs) -> Result<i32> {
    // The key: --key or SPLITUP_KEY, else the config file's, else the
    // default key file; with --store none is needed (reads are unsigned).
    let key = match (&a.key, &a.ledger.store) {
        (Some(k), _) => Some(crate::config::read_key(Some(k))?.1),
        (None, store) => {
            let (path, source) = crate::config::key_path(None)?;
            if source == crate::config::KeySource::Default && !path.exists() && store.is_some() {
                None
            } else {
                let (_, k) = crate::config::read_key(None).context(
                    "reading an execution's tensors through the ledger takes the submitter's key (or --store URL to read the store directly)",
                )?;
                Some(k)
            }
        }
    };
    let c = match &key {
        Some(k) => a.ledger.client()?.signed_by(k.clone()),
        None => a.ledger.client()?,
    };
    let e: ExecutionView = c.get_as(&format!("/v1/executions/{}", a.execution))?;
    match &e.status {
        ExecStatus::Completed => {}
        ExecStatus::InProgress => bail!(
            "execution {} is still in progress (see `splitup status {}`)",
            a.execution,
            a.execution
        ),
        ExecStatus::Failed(why) => bail!("execution {} failed, so it has no outputs: {why}", a.execution),
    }
    let outputs = match splitup_node::ops::fetch(&c, a.execution) {
        Ok(o) => o,
        // Once acknowledged (by `submit --wait` or an earlier `fetch`), the
        // storage deletes the execution's tensors: say so, not "no blob".
        Err(err) if e.fetched => {
            return Err(err.context(format!(
                "execution {}'s outputs were deleted when they were acknowledged (`submit --wait` and `fetch` acknowledge once the outputs are written); \
`submit --wait --keep` keeps them until the ledger's retention time",
                a.execution
            )))
        }
        Err(err) => {
            return Err(err.context(format!(
                "cannot read execution {}'s outputs (a finished execution's tensors are deleted after the ledger's retention time, `ledger start --retention-secs`)",
                a.execution
            )))
        }
    };
    let paths = crate::util::write_outputs(&a.output, &outputs)?;
    if !json() {
        for p in &paths {
            println!("wrote {}", p.display());
        }
    }
    match &key {
        Some(k) if !e.fetched => acknowledge(&c, k, a.execution)?,
        _ if e.fetched && !json() => println!("execution {} was already acknowledged", a.execution),
        _ => {}
    }
    if json() {
        emit(&json!({
            "execution": a.execution,
            "model": e.model,
            "outputs": outputs_json(&outputs, &paths),
            "acknowledged": key.is_some() || e.fetched,
        }))?;
    }
    Ok(0)
}

pub fn node_start(a: NodeStartArgs) -> Result<i32> {
    let (key_file, key) = a.keyed.key()?;
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
        ledger: a.keyed.ledger.url()?,
        store: a.keyed.ledger.store.clone(),
        key,
        key_file: Some(key_file),
        vram: a.vram,
        stake: a
            .stake
            .map(|s| s.checked_mul(splitup_protocol::USDC).context("--stake is too large"))
            .transpose()?,
        stake_idle: a.stake_idle,
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
    crate::util::init_logging(crate::util::LogTo::Stdout);
    splitup_node::daemon::run(&cfg, &stop)?;
    Ok(0)
}
