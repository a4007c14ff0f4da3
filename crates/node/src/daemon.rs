//! The node daemon: register, stake, pre-load the weights of its tasks into
//! warm sessions (hash-checked), heartbeat, execute assignments and validate
//! the challenges it is drawn for, upload outputs, submit signed results.

use crate::ops::task_output;
use crate::{hex, unhex32, Client};
use anyhow::{bail, Context, Result};
use splitup_exec::{OrtRuntime, Runtime, Session};
use splitup_protocol::{Instruction, Keypair, ModelDef, GB};
use splitup_tensor::Tensor;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub struct Config {
    pub ledger: String,
    /// Blob store URL; `None`: through the ledger's HTTP store API.
    pub store: Option<String>,
    pub key: Keypair,
    pub vram: u64,
    /// Micro-USDC to stake; `None`: exactly what the VRAM requires.
    pub stake: Option<u64>,
    /// (model, task) pairs; a task of `None` means every task of the model;
    /// an empty list means every task of every active model.
    pub specialise: Vec<(u64, Option<u32>)>,
    pub threads: usize,
    pub heartbeat_every: Duration,
    pub poll_every: Duration,
    /// Test only: misbehave (cheat, or differ in the last bits like other hardware).
    pub fault: Fault,
    /// Test only: wait this long before executing each task (a slow node).
    pub delay: Duration,
}

struct Loaded {
    session: Box<dyn Session>,
    def: ModelDef,
}

/// Warm sessions within the node's memory: tasks are loaded while they fit;
/// an assignment for an unloaded task evicts the least recently used ones.
struct Cache {
    rt: OrtRuntime,
    defs: BTreeMap<u64, ModelDef>,
    loaded: HashMap<(u64, u32), Loaded>,
    last_used: HashMap<(u64, u32), u64>,
    clock: u64,
    used: u64,
    capacity: u64,
}

impl Cache {
    fn need(&self, key: (u64, u32)) -> u64 {
        self.defs[&key.0].tasks[key.1 as usize - 1].vram
    }

    fn load(&mut self, c: &Client, key: (u64, u32), log: &dyn Fn(String)) -> Result<()> {
        let need = self.need(key);
        while self.used + need > self.capacity {
            let Some(victim) = self
                .loaded
                .keys()
                .copied()
                .min_by_key(|k| (self.last_used.get(k).copied().unwrap_or(0), *k))
            else {
                break;
            };
            self.loaded.remove(&victim);
            self.used -= self.need(victim);
            log(format!(
                "unloaded model {} task {} (least recently used) to make room for model {} task {}",
                victim.0, victim.1, key.0, key.1
            ));
        }
        let def = self.defs[&key.0].clone();
        let session = load_task(c, &self.rt, &def, key.1).with_context(|| format!("model {}", key.0))?;
        self.loaded.insert(key, Loaded { session, def });
        self.used += need;
        Ok(())
    }

    fn get(&mut self, c: &Client, key: (u64, u32), log: &dyn Fn(String)) -> Result<&mut Loaded> {
        if !self.loaded.contains_key(&key) {
            self.load(c, key, log)?;
        }
        self.clock += 1;
        self.last_used.insert(key, self.clock);
        Ok(self.loaded.get_mut(&key).unwrap())
    }
}

pub fn run(cfg: &Config, stop: &AtomicBool, log: &dyn Fn(String)) -> Result<()> {
    let c = Client::with_store(&cfg.ledger, cfg.store.as_deref())?.signed_by(cfg.key.clone());
    let me = cfg.key.pubkey();
    let genesis = c.get("/v1/genesis")?;
    let p = &genesis["params"];
    let required =
        p["stake_base"].as_u64().unwrap_or(0) + p["stake_per_gb"].as_u64().unwrap_or(0) * cfg.vram.div_ceil(GB);
    let stake = cfg.stake.unwrap_or(required);
    if stake < required {
        bail!(
            "--stake {} USDC is below the {} USDC this network requires for {} bytes of VRAM",
            stake as f64 / 1e6,
            required as f64 / 1e6,
            cfg.vram
        );
    }
    // What to support.
    let models = c.get("/v1/models")?;
    let mut supports = Vec::new();
    let mut defs: BTreeMap<u64, ModelDef> = BTreeMap::new();
    for m in models.as_array().cloned().unwrap_or_default() {
        let id = m["id"].as_u64().unwrap_or(0);
        if m["active"] != true || !(cfg.specialise.is_empty() || cfg.specialise.iter().any(|(s, _)| *s == id)) {
            continue;
        }
        let def: ModelDef = serde_json::from_value(c.get(&format!("/v1/models/{id}"))?["def"].clone())?;
        for (i, t) in def.tasks.iter().enumerate() {
            let task = i as u32 + 1;
            let wanted = cfg.specialise.is_empty()
                || cfg
                    .specialise
                    .iter()
                    .any(|(s, tt)| *s == id && tt.is_none_or(|x| x == task));
            if wanted && t.vram <= cfg.vram {
                supports.push((id, task));
            }
        }
        defs.insert(id, def);
    }
    for (m, t) in &cfg.specialise {
        if !defs.contains_key(m) {
            bail!("--specialise {m}: no active model {m} on this ledger");
        }
        if let Some(t) = t {
            if !supports.contains(&(*m, *t)) {
                bail!("--specialise {m}/{t}: no such task, or it needs more VRAM than this node has");
            }
        }
    }
    // Pre-load before registering, so the node never claims what it cannot run.
    let rt = OrtRuntime::new(cfg.threads)?;
    let mut cache = Cache {
        rt,
        defs,
        loaded: HashMap::new(),
        last_used: HashMap::new(),
        clock: 0,
        used: 0,
        capacity: cfg.vram,
    };
    for &(m, t) in &supports {
        if cache.used + cache.need((m, t)) <= cache.capacity {
            cache.load(&c, (m, t), log)?;
        } else {
            // Checked now, so a task that cannot load fails at start rather than when assigned.
            let def = cache.defs[&m].clone();
            drop(load_task(&c, &cache.rt, &def, t).with_context(|| format!("model {m}"))?);
        }
    }
    log(format!(
        "node {} pre-loaded {} of {} tasks ({} of {} bytes)",
        me.hex(),
        cache.loaded.len(),
        supports.len(),
        cache.used,
        cache.capacity
    ));
    c.send(
        &cfg.key,
        Instruction::RegisterNode {
            vram: cfg.vram,
            supports: supports.clone(),
        },
    )?;
    let acct = c.get(&format!("/v1/accounts/{}", me.hex()))?;
    let staked = acct["node"]["stake"].as_u64().unwrap_or(0);
    if staked < stake {
        let need = stake - staked;
        let have = acct["balance"].as_u64().unwrap_or(0);
        if have < need {
            bail!("balance {} USDC cannot cover a stake of {} USDC; fund the key first (splitup faucet on local networks)", have as f64 / 1e6, need as f64 / 1e6);
        }
        c.send(&cfg.key, Instruction::Stake { amount: need })?;
    }
    log(format!(
        "node {} registered with {} USDC staked, supporting {} tasks",
        me.hex(),
        stake as f64 / 1e6,
        supports.len()
    ));
    // Heartbeat three times per period the network expects.
    let period = Duration::from_millis(p["heartbeat_ms"].as_u64().unwrap_or(30_000) / 3).min(cfg.heartbeat_every);
    let mut last_hb = Instant::now() - period;
    let mut done: HashSet<(u64, u32, String, u64)> = HashSet::new();
    // The ledger's state version last seen: the next read of the work list
    // waits (long-polls) until the state moves past it.
    let mut seen: Option<u64> = None;
    while !stop.load(Ordering::SeqCst) {
        match step(&c, cfg, &mut cache, &mut done, &mut last_hb, period, seen, stop, log) {
            Ok(Next::Wait(v)) => seen = v,
            // Something failed and may succeed soon without the state changing: poll.
            Ok(Next::Retry) => {
                seen = None;
                std::thread::sleep(cfg.poll_every);
            }
            // The ledger may be down (restarting): log, wait, retry.
            Err(err) => {
                log(format!("ledger unreachable or refused: {err:#}; retrying"));
                seen = None;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    // Finished the task in hand; hand back everything else at once rather
    // than let it time out.
    match c.send(&cfg.key, Instruction::Leave) {
        Ok(events) => {
            let n = events.iter().filter(|e| e.get("Released").is_some()).count();
            log(format!(
                "node {} stopping: finished the task in hand, handed back {n} assignments",
                me.hex()
            ));
        }
        Err(err) => log(format!(
            "node {} stopping; could not tell the ledger ({err:#}): its assignments will time out",
            me.hex()
        )),
    }
    Ok(())
}

enum Next {
    /// Wait for the ledger's state to move past this version.
    Wait(Option<u64>),
    Retry,
}

/// Longest a node waits for new work in one request; short enough to notice
/// SIGTERM promptly.
const WORK_WAIT_MAX: Duration = Duration::from_secs(2);

#[allow(clippy::too_many_arguments)]
fn step(
    c: &Client,
    cfg: &Config,
    cache: &mut Cache,
    done: &mut HashSet<(u64, u32, String, u64)>,
    last_hb: &mut Instant,
    period: Duration,
    seen: Option<u64>,
    stop: &AtomicBool,
    log: &dyn Fn(String),
) -> Result<Next> {
    let me = cfg.key.pubkey();
    // Heartbeats are due whatever the node is busy with: checked before each item of work.
    let beat = |last_hb: &mut Instant| -> Result<()> {
        if last_hb.elapsed() >= period {
            c.send(&cfg.key, Instruction::Heartbeat)?;
            *last_hb = Instant::now();
        }
        Ok(())
    };
    {
        beat(last_hb)?;
        // Wait for new work no longer than until the next heartbeat is due.
        let wait = period.saturating_sub(last_hb.elapsed()).min(WORK_WAIT_MAX);
        let (work, version) = c.get_when_changed(&format!("/v1/nodes/{}/work", me.hex()), seen, wait)?;
        let mut outcome = Next::Wait(version);
        for w in work.as_array().cloned().unwrap_or_default() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            beat(last_hb)?;
            let (e, m, t) = (
                w["execution"].as_u64().unwrap_or(0),
                w["model"].as_u64().unwrap_or(0),
                w["task"].as_u64().unwrap_or(0) as u32,
            );
            let kind = w["kind"].as_str().unwrap_or("").to_string();
            let key = (e, t, kind.clone(), w["attempt"].as_u64().unwrap_or(0));
            if done.contains(&key) {
                continue;
            }
            if !cache.defs.contains_key(&m) {
                log(format!("assigned model {m} task {t}, which this node does not support"));
                continue;
            }
            let l = cache.get(c, (m, t), log)?;
            std::thread::sleep(cfg.delay);
            match execute(c, l, e, t, cfg.fault) {
                Ok((outputs, commitment, blob)) => {
                    let ix = if kind == "validate" {
                        // Agree with the checked result when it is within the
                        // cross-GPU tolerance of ours; otherwise assert ours.
                        let claimed = w["commitment"].as_str().unwrap_or_default();
                        let commitment = match agrees(c, claimed, &outputs) {
                            Ok(claimed) => {
                                if claimed != commitment {
                                    log(format!(
                                        "validate execution {e} task {t}: bytes differ, numbers agree within tolerance"
                                    ));
                                }
                                claimed
                            }
                            Err(why) => {
                                log(format!("validate execution {e} task {t}: disagree: {why:#}"));
                                commitment
                            }
                        };
                        Instruction::SubmitValidation {
                            execution: e,
                            task: t,
                            commitment,
                        }
                    } else {
                        Instruction::SubmitResult {
                            execution: e,
                            task: t,
                            commitment,
                            output_uris: vec![c.blob_uri(&blob)],
                        }
                    };
                    match c.send(&cfg.key, ix) {
                        Ok(_) => log(format!("{kind} execution {e} task {t}: submitted {}", &blob[..16])),
                        Err(err) => log(format!(
                            "{kind} execution {e} task {t}: the ledger refused the result: {err:#}"
                        )),
                    }
                }
                Err(err) => {
                    // Often transient (an upstream result being recomputed): retry at the
                    // next poll while the ledger still lists the work; its deadline bounds this.
                    log(format!("{kind} execution {e} task {t} failed: {err:#}; will retry"));
                    outcome = Next::Retry;
                    continue;
                }
            }
            done.insert(key);
        }
        Ok(outcome)
    }
}

/// Downloads, assembles and loads one task (hash-checked), for a committee
/// member re-executing a disputed task.
pub fn load_task(c: &Client, rt: &dyn Runtime, def: &ModelDef, task: u32) -> Result<Box<dyn Session>> {
    let td = &def.tasks[task as usize - 1];
    let graph = c.get_blob(&hex(&td.graph_hash))?;
    let weights = c.get_blob(&hex(&td.weight_hash))?;
    let onnx =
        splitup_graph::plan::join_weights(&graph, &weights).map_err(|(_, e)| anyhow::anyhow!("task {task}: {e}"))?;
    Ok(rt.load(&onnx)?)
}

/// The committee's check of a disputed task: re-executes it and says
/// whether the asserter's committed outputs (`claimed`, hex) agree with the
/// recomputation within the cross-GPU tolerance (`Ok(())`), or why not.
pub fn recompute(
    c: &Client,
    rt: &dyn Runtime,
    model: u64,
    execution: u64,
    task: u32,
    claimed: &str,
) -> Result<Result<()>> {
    let def: ModelDef = serde_json::from_value(c.get(&format!("/v1/models/{model}"))?["def"].clone())?;
    let session = load_task(c, rt, &def, task)?;
    let mut l = Loaded { session, def };
    let (outputs, _, _) = execute(c, &mut l, execution, task, Fault::None)?;
    Ok(agrees(c, claimed, &outputs).map(|_| ()))
}

/// Whether the committed result `claimed` (hex) agrees with `mine` (the
/// same tensor names, each within [`splitup_tensor::agree`]); returns that
/// commitment if so. The committed blob is fetched by its hash, so a result
/// whose bytes are missing or do not match its commitment disagrees.
fn agrees(c: &Client, claimed: &str, mine: &BTreeMap<String, Tensor>) -> Result<[u8; 32]> {
    let commitment = unhex32(claimed).context("no committed result to check")?;
    let bytes = c.get_blob(claimed).context("the committed outputs cannot be read")?;
    let theirs = splitup_tensor::st::decode(&bytes).context("the committed outputs are not safetensors")?;
    if theirs.len() != mine.len() {
        bail!("{} outputs committed, {} computed", theirs.len(), mine.len());
    }
    for (name, t) in mine {
        let other = theirs
            .get(name)
            .with_context(|| format!("the committed outputs lack {name:?}"))?;
        splitup_tensor::agree(other, t).with_context(|| format!("output {name:?}"))?;
    }
    Ok(commitment)
}

/// Test-only misbehaviour of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Adds 1 to every float output: a cheat.
    Cheat,
    /// Scales float outputs by 1 ± 1e-6: an honest node on different
    /// hardware, whose bytes differ but whose numbers agree.
    Jitter,
}

/// Runs one task of one execution; returns the outputs, the commitment
/// (BLAKE3 of the outputs' safetensors bytes) and the uploaded blob's name.
fn execute(
    c: &Client,
    l: &mut Loaded,
    execution: u64,
    task: u32,
    fault: Fault,
) -> Result<(BTreeMap<String, Tensor>, [u8; 32], String)> {
    let ex = c.get(&format!("/v1/executions/{execution}"))?;
    let td = &l.def.tasks[task as usize - 1];
    let mut inputs: Vec<(String, Tensor)> = Vec::new();
    for (k, spec) in td.inputs.iter().enumerate() {
        let conn = l
            .def
            .connections
            .iter()
            .find(|x| x.destination_task == task && x.dest_input == k as u32)
            .context("an input without a source")?;
        inputs.push((
            spec.name.clone(),
            task_output(c, &ex, &l.def, conn.source_task, conn.source_output)?,
        ));
    }
    let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let outputs = l.session.run(&refs)?;
    let mut map: BTreeMap<String, Tensor> = BTreeMap::new();
    for (name, t) in outputs {
        map.insert(name, perturb(t, fault));
    }
    let bytes = splitup_tensor::st::encode(&map)?;
    let blob = c.put_blob(bytes)?;
    Ok((map, unhex32(&blob).unwrap(), blob))
}

fn perturb(t: Tensor, fault: Fault) -> Tensor {
    if t.dtype != splitup_tensor::DType::F32 || fault == Fault::None {
        return t;
    }
    let v: Vec<f32> = t
        .to_f64_vec()
        .into_iter()
        .enumerate()
        .map(|(i, x)| match fault {
            Fault::Cheat => x as f32 + 1.0,
            _ => (x * if i % 2 == 0 { 1.0 + 1e-6 } else { 1.0 - 1e-6 }) as f32,
        })
        .collect();
    Tensor::from_f32(t.shape.clone(), &v).unwrap_or(t)
}
