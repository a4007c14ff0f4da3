//! The node daemon: register, stake, pre-load the weights of its tasks into
//! warm sessions (hash-checked), heartbeat, execute assignments and validate
//! the challenges it is drawn for, upload outputs, submit signed results.
//!
//! Tasks run in worker processes ([`splitup_exec::worker`]): each under a
//! memory ceiling derived from the task's declared requirement and a
//! wall-clock limit derived from its compute units. A task that passes
//! either, crashes its worker, or that the gate or ONNX Runtime refuses, is
//! handed back with `ReportUnrunnable`; only its worker dies.

use crate::client::ForeignSigner;
use crate::ops::task_output;
use crate::{hex, unhex32, Client};
use anyhow::{bail, Context, Result};
use splitup_exec::worker::{memory_ceiling, Worker, WorkerCommand, WorkerError};
use splitup_protocol::api::{
    AccountView, ExecutionView, GenesisView, ModelSummary, ModelView, Status, WorkItem, WorkKind,
};
use splitup_protocol::{Instruction, Keypair, ModelDef, TaskDef, TensorSpec, GB};
use splitup_tensor::{DType, Tensor};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub struct Config {
    pub ledger: String,
    /// Blob store URL; `None`: through the ledger's HTTP store API.
    pub store: Option<String>,
    pub key: Keypair,
    /// The key's file: the daemon holds an exclusive lock on `FILE.lock`
    /// while it runs, so a second daemon with this key refuses to start.
    pub key_file: Option<PathBuf>,
    pub vram: u64,
    /// Micro-USDC to stake; `None`: exactly what the VRAM requires.
    pub stake: Option<u64>,
    /// Register and stake even when the VRAM runs no task of any active
    /// model (see [`run`]); without it such a node refuses to start.
    pub stake_idle: bool,
    /// (model, task) pairs; a task of `None` means every task of the model;
    /// an empty list means every task of every active model.
    pub specialise: Vec<(u64, Option<u32>)>,
    /// Intra-op threads of each task's session.
    pub threads: usize,
    pub heartbeat_every: Duration,
    pub poll_every: Duration,
    /// How to start a task worker (a program that calls `splitup_exec::worker::serve`).
    pub worker: WorkerCommand,
    /// Test only: misbehave (cheat, or differ in the last bits like other hardware).
    pub fault: Fault,
    /// Test only: a slow node: wait this long before executing each task,
    /// and execute one task at a time.
    pub delay: Duration,
    /// Serve Prometheus metrics at `http://ADDR/metrics`.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// The wall-clock limit of one run of a task: [`RUN_FLOOR`] plus
/// [`RUN_PER_CU`] per declared compute unit (10⁶ FLOPs: this allows a rate
/// of 100 MFLOP/s, far below any GPU or CPU core), and never past the
/// ledger's deadline for the assignment. Being killed at the first limit is
/// the task's doing (reported); at the deadline, the node's (not reported).
pub const RUN_FLOOR: Duration = Duration::from_secs(5);
pub const RUN_PER_CU: Duration = Duration::from_millis(10);
/// The limit of loading a task into a session: a floor plus 1 s per
/// [`LOAD_BYTES_PER_SEC`] of ONNX.
pub const LOAD_FLOOR: Duration = Duration::from_secs(30);
pub const LOAD_BYTES_PER_SEC: u64 = 50_000_000;
/// Longest reason sent with `ReportUnrunnable` (the ledger's bound).
const REASON_MAX: usize = 512;

/// The run limit of a task that declares `compute_units`.
pub fn run_limit(compute_units: u64) -> Duration {
    RUN_FLOOR.saturating_add(RUN_PER_CU.saturating_mul(u32::try_from(compute_units).unwrap_or(u32::MAX)))
}

fn load_limit(onnx_bytes: usize) -> Duration {
    LOAD_FLOOR.saturating_add(Duration::from_secs(onnx_bytes as u64 / LOAD_BYTES_PER_SEC))
}

type Key = (u64, u32);

/// Why a task could not be executed.
enum Failure {
    /// The task's doing (its graph, its declared limits, or what it does
    /// with its inputs): reported to the ledger.
    Task(String),
    /// May pass (an upstream blob not yet readable, the ledger unreachable,
    /// the deadline reached, no worker could start): retried while the
    /// ledger lists the work.
    Transient(anyhow::Error),
}

impl Failure {
    fn into_error(self) -> anyhow::Error {
        match self {
            Failure::Task(why) => anyhow::anyhow!("the task cannot run: {why}"),
            Failure::Transient(e) => e,
        }
    }
}

fn transient(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Transient(e.into())
}

/// A worker failure, against the task's own limit: killed at the ledger's
/// deadline (shorter than the task's limit) is not the task's doing.
fn classify(e: WorkerError, task_limit: Duration, what: &str) -> Failure {
    match e {
        WorkerError::TimedOut(l) if l < task_limit => Failure::Transient(anyhow::anyhow!(
            "{what}: the ledger's deadline came first ({:.1} s)",
            l.as_secs_f64()
        )),
        e if !e.is_task_fault() => Failure::Transient(e.into()),
        e => Failure::Task(format!("{what}: {e}")),
    }
}

struct Slot {
    worker: Option<Worker>,
    busy: bool,
    need: u64,
    last_used: u64,
}

#[derive(Default)]
struct Slots {
    map: HashMap<Key, Slot>,
    used: u64,
    clock: u64,
}

/// Warm workers within the node's memory (the declared requirements of
/// the tasks they hold add up to at most `capacity`): tasks are loaded
/// while they fit; a task needed when there is no room evicts the least
/// recently used idle workers. A worker serves one request at a time.
struct Cache {
    slots: Mutex<Slots>,
    changed: Condvar,
    capacity: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cache {
    /// Takes the warm worker of `key` (`Some`), or reserves room to start
    /// one (`None`). Waits while this task's worker, or the room it needs,
    /// is in use (at most as long as the tasks using them may run); `Err`
    /// when `abort` holds meanwhile.
    fn take(&self, key: Key, need: u64, abort: &dyn Fn() -> bool) -> Result<Option<Worker>, ()> {
        let mut s = lock(&self.slots);
        loop {
            if abort() {
                return Err(());
            }
            s.clock += 1;
            let now = s.clock;
            if let Some(slot) = s.map.get_mut(&key) {
                if !slot.busy {
                    slot.busy = true;
                    slot.last_used = now;
                    if let Some(w) = slot.worker.take() {
                        return Ok(Some(w));
                    }
                    return Ok(None);
                }
            } else {
                while s.used + need > self.capacity {
                    let victim = s
                        .map
                        .iter()
                        .filter(|(_, v)| !v.busy)
                        .min_by_key(|(k, v)| (v.last_used, **k))
                        .map(|(k, _)| *k);
                    let Some(victim) = victim else { break };
                    if let Some(v) = s.map.remove(&victim) {
                        s.used -= v.need;
                    }
                    tracing::info!(
                        "unloaded model {} task {} (least recently used) to make room for model {} task {}",
                        victim.0,
                        victim.1,
                        key.0,
                        key.1
                    );
                }
                if s.used + need <= self.capacity || s.map.is_empty() {
                    s.used += need;
                    s.map.insert(
                        key,
                        Slot {
                            worker: None,
                            busy: true,
                            need,
                            last_used: now,
                        },
                    );
                    return Ok(None);
                }
            }
            s = self
                .changed
                .wait_timeout(s, Duration::from_millis(200))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Returns what [`Cache::take`] gave: a live worker stays warm; without
    /// one (it failed, died or was killed) the task's room is freed.
    fn give_back(&self, key: Key, worker: Option<Worker>) {
        let mut s = lock(&self.slots);
        match worker.filter(|w| w.is_alive()) {
            Some(w) => {
                if let Some(slot) = s.map.get_mut(&key) {
                    slot.worker = Some(w);
                    slot.busy = false;
                }
            }
            None => {
                if let Some(v) = s.map.remove(&key) {
                    s.used -= v.need;
                }
            }
        }
        drop(s);
        self.changed.notify_all();
    }

    /// Keeps a pre-loaded worker if its task fits; returns it otherwise.
    fn keep(&self, key: Key, need: u64, worker: Worker) -> Option<Worker> {
        let mut s = lock(&self.slots);
        if s.used + need > self.capacity || s.map.contains_key(&key) {
            return Some(worker);
        }
        s.used += need;
        s.clock += 1;
        let last_used = s.clock;
        s.map.insert(
            key,
            Slot {
                worker: Some(worker),
                busy: false,
                need,
                last_used,
            },
        );
        None
    }

    fn forget_model(&self, model: u64) {
        let mut s = lock(&self.slots);
        let gone: Vec<Key> = s.map.keys().filter(|k| k.0 == model).copied().collect();
        for k in gone {
            if let Some(v) = s.map.remove(&k) {
                s.used -= v.need;
            }
        }
    }

    /// (tasks loaded, bytes they declare)
    fn usage(&self) -> (usize, u64) {
        let s = lock(&self.slots);
        (s.map.len(), s.used)
    }
}

/// What the work threads share.
struct Node<'a> {
    c: Client,
    cfg: &'a Config,
    /// The models it supports, learnt at start and while running.
    defs: Mutex<BTreeMap<u64, Arc<ModelDef>>>,
    /// The (model, task) pairs it told the ledger it supports.
    supports: Mutex<BTreeSet<(u64, u32)>>,
    /// Models it found it cannot run (not retried until they change).
    skipped: Mutex<BTreeSet<u64>>,
    cache: Cache,
    metrics: Arc<crate::metrics::NodeMetrics>,
    /// The ledger's clock minus this machine's, in ms (deadlines are the ledger's).
    clock_offset_ms: i128,
    stop: &'a AtomicBool,
    /// Why the daemon must stop at once (another process signs with its key).
    fatal: Mutex<Option<String>>,
}

fn local_ms() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i128)
        .unwrap_or(0)
}

impl Node<'_> {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || lock(&self.fatal).is_some()
    }

    /// When the ledger's deadline `deadline_ms` (its clock) falls on this machine's clock.
    fn deadline(&self, deadline_ms: u64) -> Instant {
        let left = deadline_ms as i128 - (local_ms() + self.clock_offset_ms);
        Instant::now() + Duration::from_millis(left.clamp(0, u64::MAX as i128) as u64)
    }

    /// Signs and sends; another process signing with this key stops the daemon.
    fn send(&self, ix: Instruction) -> Result<Vec<serde_json::Value>> {
        let r = self.c.send(&self.cfg.key, ix);
        if let Err(e) = &r {
            if let Some(f) = e.downcast_ref::<ForeignSigner>() {
                let mut fatal = lock(&self.fatal);
                if fatal.is_none() {
                    tracing::warn!("{f}; stopping");
                    *fatal = Some(f.to_string());
                }
            }
        }
        r
    }

    /// Loaded tasks, supported tasks and stake, for `/metrics`.
    fn refresh_gauges(&self) {
        let (loaded, bytes) = self.cache.usage();
        self.metrics.loaded_tasks.set(loaded as i64);
        self.metrics.loaded_bytes.set(bytes.min(i64::MAX as u64) as i64);
        self.metrics.supported_tasks.set(lock(&self.supports).len() as i64);
        if let Ok(a) = self
            .c
            .get_as::<AccountView>(&format!("/v1/accounts/{}", self.cfg.key.pubkey().hex()))
        {
            self.metrics.stake_usdc.set(a.node.map_or(0, |n| n.stake) as f64 / 1e6);
        }
    }

    fn def(&self, model: u64) -> Option<Arc<ModelDef>> {
        lock(&self.defs).get(&model).cloned()
    }

    fn start_task(&self, def: &ModelDef, task: u32, deadline: Option<Instant>) -> Result<Worker, Failure> {
        start_worker(&self.c, &self.cfg.worker, self.cfg.threads, def, task, deadline)
    }
}

/// Starts a worker for task `task` of `def` and loads the task in it: blobs
/// hash-checked, weights joined behind the gate (so a graph the gate
/// refuses never reaches a runtime), within the load limit (and `deadline`).
fn start_worker(
    c: &Client,
    cmd: &WorkerCommand,
    threads: usize,
    def: &ModelDef,
    task: u32,
    deadline: Option<Instant>,
) -> Result<Worker, Failure> {
    let td = task_def(def, task).map_err(Failure::Task)?;
    let graph = c.get_blob(&hex(&td.graph_hash)).map_err(transient)?;
    let weights = c.get_blob(&hex(&td.weight_hash)).map_err(transient)?;
    let onnx = splitup_graph::plan::join_weights(&graph, &weights)
        .map_err(|(_, e)| Failure::Task(format!("task {task}: refused before loading: {e}")))?;
    drop((graph, weights));
    let mut w = Worker::start(cmd, memory_ceiling(td.vram, threads), threads).map_err(transient)?;
    let task_limit = load_limit(onnx.len());
    let limit = match deadline {
        Some(d) => task_limit.min(d.saturating_duration_since(Instant::now())),
        None => task_limit,
    };
    w.load(&onnx, limit)
        .map_err(|e| classify(e, task_limit, &format!("task {task}: loading")))?;
    Ok(w)
}

/// Task `task` (1-based) of a model, or why not.
fn task_def(def: &ModelDef, task: u32) -> Result<&TaskDef, String> {
    task.checked_sub(1)
        .and_then(|i| def.tasks.get(i as usize))
        .ok_or_else(|| format!("the model has no task {task}"))
}

/// Whether `t` is what `spec` declares.
fn check_spec(t: &Tensor, spec: &TensorSpec) -> Result<(), String> {
    let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
    if t.dtype.name() != spec.dtype || shape != spec.shape {
        return Err(format!(
            "{:?} is {} {:?}, the model declares {} {:?}",
            spec.name, t.dtype, t.shape, spec.dtype, spec.shape
        ));
    }
    Ok(())
}

/// The most bytes the declared outputs take as safetensors.
fn answer_max(td: &TaskDef) -> Result<u64, String> {
    let mut total: u64 = 64 * 1024;
    for s in &td.outputs {
        let dtype =
            DType::from_name(&s.dtype).ok_or_else(|| format!("output {:?}: unknown dtype {:?}", s.name, s.dtype))?;
        let bytes = s
            .shape
            .iter()
            .try_fold(dtype.size() as u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("output {:?}: its shape overflows", s.name))?;
        total = total
            .checked_add(bytes)
            .and_then(|t| t.checked_add(512 + s.name.len() as u64))
            .ok_or_else(|| "the outputs overflow".to_string())?;
    }
    Ok(total)
}

/// One line, cut to the ledger's bound at a character boundary.
fn short(reason: &str) -> String {
    let reason = splitup_exec::worker::tidy(reason);
    let mut end = reason.len().min(REASON_MAX);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

/// Another daemon holds this key's lock.
#[derive(Debug)]
pub struct AnotherDaemon(pub String);

impl std::fmt::Display for AnotherDaemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AnotherDaemon {}

/// Takes an exclusive lock on `KEY_FILE.lock` (next to the key file, links
/// resolved) for as long as the returned file is open; the operating
/// system drops it when the process ends, so a crash leaves no stale lock.
/// A second daemon with the same key file fails here with [`AnotherDaemon`].
pub fn lock_key_file(key_file: &Path) -> Result<std::fs::File> {
    let key_file = std::fs::canonicalize(key_file).unwrap_or_else(|_| key_file.to_path_buf());
    let mut name = key_file.into_os_string();
    name.push(".lock");
    let path = PathBuf::from(name);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the key's lock file {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            return Err(AnotherDaemon(format!(
                "another node daemon is running with this key: {} is locked{}; one key, one daemon",
                path.display(),
                if holder.is_empty() {
                    String::new()
                } else {
                    format!(" by process {holder}")
                }
            ))
            .into());
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
    use std::io::Write;
    f.set_len(0)?;
    write!(f, "{}", std::process::id())?;
    Ok(f)
}

/// Bytes for people: `8.00 GiB (8589934592 bytes)`.
fn gib(bytes: u64) -> String {
    format!("{:.2} GiB ({bytes} bytes)", bytes as f64 / (1u64 << 30) as f64)
}

/// Identifies one item of work: (execution, task, kind, attempt).
type WorkKey = (u64, u32, WorkKind, u32);

pub fn run(cfg: &Config, stop: &AtomicBool) -> Result<()> {
    // One daemon per key: a lock next to the key file catches a second one
    // on this machine at once; the nonce guard catches any other signer
    // (a copy of the key elsewhere) at the daemon's next instruction.
    let _lock = match cfg.key_file.as_deref().map(lock_key_file).transpose() {
        Ok(lock) => lock,
        Err(e) if e.downcast_ref::<AnotherDaemon>().is_some() => return Err(e),
        // A read-only key location (a mounted secret) cannot hold the lock.
        Err(e) => {
            tracing::warn!("{e:#}; only the nonce check will notice another daemon on this key");
            None
        }
    };
    let c = Client::with_store(&cfg.ledger, cfg.store.as_deref())?.signed_by(cfg.key.clone());
    let me = cfg.key.pubkey();
    // Every line this daemon logs names the node (and, while it works on
    // an item, the execution and task: see `handle`).
    let span = tracing::info_span!("node", node = %me.hex());
    let _in_node = span.enter();
    c.guard_nonces(&me);
    let genesis: GenesisView = c.get_as("/v1/genesis")?;
    let p = &genesis.params;
    let required = p
        .stake_base
        .saturating_add(p.stake_per_gb.saturating_mul(cfg.vram.div_ceil(GB)));
    let stake = cfg.stake.unwrap_or(required);
    if stake < required {
        bail!(
            "--stake {} USDC is below the {} USDC this network requires for {} bytes of VRAM",
            stake as f64 / 1e6,
            required as f64 / 1e6,
            cfg.vram
        );
    }
    // The stake must be affordable before anything is registered: a node
    // registered without its stake would be listed, and hold nothing.
    let acct: AccountView = c.get_as(&format!("/v1/accounts/{}", me.hex()))?;
    let staked = acct.node.as_ref().map_or(0, |n| n.stake);
    // What is left to stake once registered (nothing in between moves it).
    let need = stake.saturating_sub(staked);
    if acct.balance < need {
        let why = if cfg.stake.is_some() {
            "as --stake says".to_string()
        } else {
            format!(
                "{} USDC + {} USDC per GB of its {} of VRAM",
                p.stake_base as f64 / 1e6,
                p.stake_per_gb as f64 / 1e6,
                gib(cfg.vram)
            )
        };
        bail!(
            "this node stakes {} USDC ({why}) and the key holds {} USDC{}: \
fund it first (`splitup faucet` on a development network, a transfer otherwise); nothing was registered",
            stake as f64 / 1e6,
            acct.balance as f64 / 1e6,
            if staked > 0 {
                format!(" besides the {} USDC it has staked", staked as f64 / 1e6)
            } else {
                String::new()
            }
        );
    }
    let status: Status = c.get_as("/v1/status")?;
    let clock_offset_ms = status.now_ms as i128 - local_ms();
    let node = Node {
        c,
        cfg,
        defs: Mutex::new(BTreeMap::new()),
        supports: Mutex::new(BTreeSet::new()),
        skipped: Mutex::new(BTreeSet::new()),
        cache: Cache {
            slots: Mutex::new(Slots::default()),
            changed: Condvar::new(),
            capacity: cfg.vram,
        },
        metrics: Arc::new(crate::metrics::NodeMetrics::default()),
        clock_offset_ms,
        stop,
        fatal: Mutex::new(None),
    };
    if let Some(addr) = cfg.metrics_listen {
        let bound = crate::metrics::serve(addr, node.metrics.clone())?;
        tracing::info!("metrics at http://{bound}/metrics");
    }
    // Choose and pre-load before registering, so the node never claims what
    // it cannot run; later models are picked up while it runs.
    specialise(&node, true)?;
    if stop.load(Ordering::SeqCst) {
        return Ok(());
    }
    for (m, t) in &cfg.specialise {
        if node.def(*m).is_none() {
            bail!("--specialise {m}: no active model {m} on this ledger that this node can run");
        }
        if let Some(t) = t {
            if !lock(&node.supports).contains(&(*m, *t)) {
                bail!("--specialise {m}/{t}: no such task, or it needs more VRAM than this node has");
            }
        }
    }
    let supports: Vec<(u64, u32)> = lock(&node.supports).iter().copied().collect();
    // A node that runs no task of any active model would stake and earn
    // nothing: refuse unless asked (--stake-idle). With no active model at
    // all it supports nothing *yet*, which is how a new network starts.
    let skipped = lock(&node.skipped).len();
    if supports.is_empty() && skipped > 0 && !cfg.stake_idle {
        bail!(
            "this node's {} of VRAM runs no task of the {skipped} active model{} it would serve (see above). \
Nothing was registered or staked; give it more --vram, or --stake-idle to stake {} USDC anyway and wait for a model it can run",
            gib(cfg.vram),
            if skipped == 1 { "" } else { "s" },
            stake as f64 / 1e6
        );
    }
    if supports.is_empty() && skipped == 0 {
        tracing::info!("no active model on this ledger yet: this node will load models as they are deployed (`splitup models` lists them)");
    }
    let (loaded, used) = node.cache.usage();
    tracing::info!(
        "node {} pre-loaded {} of {} task{} ({} of {} bytes)",
        me.hex(),
        loaded,
        supports.len(),
        if supports.len() == 1 { "" } else { "s" },
        used,
        cfg.vram
    );
    node.send(Instruction::RegisterNode {
        vram: cfg.vram,
        supports: supports.clone(),
    })?;
    if need > 0 {
        node.send(Instruction::Stake { amount: need })?;
    }
    tracing::info!(
        "node {} registered with {} USDC staked, supporting {} task{}",
        me.hex(),
        stake as f64 / 1e6,
        supports.len(),
        if supports.len() == 1 { "" } else { "s" }
    );
    // Heartbeat three times per period the network expects.
    let period = Duration::from_millis(p.heartbeat_ms / 3).min(cfg.heartbeat_every);
    // Work items run on their own threads, at most as many as the ledger
    // lets a node hold (a slow test node: one).
    let lanes = if cfg.delay.is_zero() {
        p.node_load_max.max(1) as usize
    } else {
        1
    };
    let done: Mutex<HashSet<WorkKey>> = Mutex::new(HashSet::new());
    let in_flight: Mutex<HashSet<WorkKey>> = Mutex::new(HashSet::new());
    let retry = AtomicBool::new(false);
    std::thread::scope(|s| {
        let span = &span;
        s.spawn(|| {
            let _in_node = span.enter();
            heartbeats(&node, period)
        });
        s.spawn(|| {
            let _in_node = span.enter();
            follow_models(&node)
        });
        // The ledger's state version last seen: the next read of the work
        // list waits (long-polls) until the state moves past it.
        let mut seen: Option<u64> = None;
        while !node.stopping() {
            let path = format!("/v1/nodes/{}/work", me.hex());
            let work: Vec<WorkItem> = match node.c.get_when_changed_as(&path, seen, WORK_WAIT_MAX) {
                Ok((work, version)) => {
                    seen = version;
                    work
                }
                // The ledger may be down (restarting): log, wait, retry.
                Err(err) => {
                    tracing::warn!("ledger unreachable or refused: {err:#}; retrying");
                    seen = None;
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
            let listed: HashSet<WorkKey> = work.iter().map(|w| (w.execution, w.task, w.kind, w.attempt)).collect();
            lock(&done).retain(|k| listed.contains(k));
            for w in work {
                let key = (w.execution, w.task, w.kind, w.attempt);
                if node.stopping() {
                    break;
                }
                {
                    let mut fl = lock(&in_flight);
                    if lock(&done).contains(&key) || fl.contains(&key) {
                        continue;
                    }
                    if fl.len() >= lanes {
                        break;
                    }
                    fl.insert(key);
                }
                let (node, done, in_flight, retry) = (&node, &done, &in_flight, &retry);
                s.spawn(move || {
                    let _in_node = span.enter();
                    let finished = handle(node, &w);
                    if finished {
                        lock(done).insert(key);
                    } else {
                        retry.store(true, Ordering::SeqCst);
                    }
                    lock(in_flight).remove(&key);
                });
            }
            // Something failed and may succeed soon without the state changing: poll.
            if retry.swap(false, Ordering::SeqCst) {
                seen = None;
                std::thread::sleep(cfg.poll_every);
            }
        }
        // The scope waits for the work in hand to finish.
    });
    if let Some(why) = lock(&node.fatal).take() {
        // Its nonces are not its own: it sends nothing more, not even Leave.
        bail!("{why}; this daemon stopped (one key, one daemon)");
    }
    // Finished the work in hand; hand back everything else at once rather
    // than let it time out.
    match node.send(Instruction::Leave) {
        Ok(events) => {
            let n = events.iter().filter(|e| e.get("Released").is_some()).count();
            tracing::info!(
                "node {} stopping: finished the work in hand, handed back {n} assignments",
                me.hex()
            );
        }
        Err(err) => tracing::warn!(
            "node {} stopping; could not tell the ledger ({err:#}): its assignments will time out",
            me.hex()
        ),
    }
    Ok(())
}

/// How often a running node looks for new and deactivated models.
pub const MODELS_EVERY: Duration = Duration::from_secs(2);

/// Follows the market (seed 000's Specialization Manager): learns of
/// active models it does not know and of deactivated ones, chooses the
/// new models' tasks that fit its memory (and `--specialise`), pre-loads
/// them by demand (tasks fewest Active nodes support first, then the
/// models with the most executions in the last hour, then the smallest),
/// and unloads deactivated models. Says what it chose and why in its log.
/// Returns whether the supported set changed (the caller tells the ledger).
/// At start (`first`), a store or ledger error is fatal; later it is
/// logged and the model retried next round.
fn specialise(node: &Node<'_>, first: bool) -> Result<bool> {
    let cfg = node.cfg;
    let models: Vec<ModelSummary> = node.c.get_as("/v1/models")?;
    let wanted = |id: u64| cfg.specialise.is_empty() || cfg.specialise.iter().any(|(s, _)| *s == id);
    let active: BTreeSet<u64> = models
        .iter()
        .filter(|m| m.active && wanted(m.id))
        .map(|m| m.id)
        .collect();
    let mut changed = false;
    let known: Vec<u64> = lock(&node.defs).keys().copied().collect();
    for m in known.iter().filter(|m| !active.contains(m)) {
        lock(&node.defs).remove(m);
        lock(&node.supports).retain(|(x, _)| x != m);
        node.cache.forget_model(*m);
        tracing::info!("model {m} was deactivated: unloaded its tasks and no longer supports it");
        changed = true;
    }
    // Candidates among the new models: (nodes supporting it, recent executions, vram, model, task).
    let mut candidates: Vec<(u32, u64, u64, u64, u32)> = Vec::new();
    let mut views: BTreeMap<u64, ModelView> = BTreeMap::new();
    for &id in &active {
        if known.contains(&id) || lock(&node.skipped).contains(&id) {
            continue;
        }
        let view: ModelView = node.c.get_as(&format!("/v1/models/{id}"))?;
        let mut fits = Vec::new();
        for (i, t) in view.def.tasks.iter().enumerate() {
            let task = i as u32 + 1;
            let asked = cfg.specialise.is_empty()
                || cfg
                    .specialise
                    .iter()
                    .any(|(s, tt)| *s == id && tt.is_none_or(|x| x == task));
            if asked && t.vram <= cfg.vram {
                let nodes = view.nodes_per_task.get(i).copied().unwrap_or(0);
                fits.push((nodes, view.recent_executions, t.vram, id, task));
            }
        }
        if fits.is_empty() {
            let smallest = view.def.tasks.iter().map(|t| t.vram).min().unwrap_or(0);
            tracing::info!(
                "model {id} ({:?}): no task fits in this node's {} bytes (its smallest needs {smallest}); not supporting it",
                view.def.name, cfg.vram
            );
            lock(&node.skipped).insert(id);
            continue;
        }
        candidates.extend(fits);
        views.insert(id, view);
    }
    candidates.sort_by_key(|&(nodes, recent, vram, m, t)| (nodes, std::cmp::Reverse(recent), vram, m, t));
    // Pre-load in that order: a task that does not fit in what is left is
    // still loaded once (then dropped), so that a model none of whose tasks
    // can run here is skipped now rather than when assigned.
    let mut failed: BTreeSet<u64> = BTreeSet::new();
    let mut chosen: Vec<(u64, u32, String)> = Vec::new();
    for &(nodes, recent, vram, m, t) in &candidates {
        if failed.contains(&m) || node.stopping() {
            continue;
        }
        let def = &views[&m].def;
        match node.start_task(def, t, None) {
            Ok(w) => {
                let kept = node.cache.keep((m, t), vram, w).is_none();
                chosen.push((
                    m,
                    t,
                    format!(
                        "{} ({nodes} nodes support it, {recent} executions of the model in the last hour)",
                        if kept {
                            "pre-loaded"
                        } else {
                            "memory full: loads when assigned"
                        }
                    ),
                ));
            }
            Err(Failure::Task(why)) => {
                tracing::warn!("skipping model {m} ({:?}): it cannot run here: {why}", def.name);
                failed.insert(m);
                lock(&node.skipped).insert(m);
            }
            Err(Failure::Transient(e)) => {
                let missing = e
                    .chain()
                    .any(|c| matches!(c.downcast_ref(), Some(splitup_store::StoreError::Missing(_))));
                if missing {
                    tracing::info!(
                        "skipping model {m} ({:?}): task {t}'s files are not in the store: {e:#}",
                        def.name
                    );
                    lock(&node.skipped).insert(m);
                } else if first {
                    return Err(e.context(format!("model {m} task {t}")));
                } else {
                    tracing::warn!("model {m} task {t}: cannot load now ({e:#}); retrying later");
                }
                failed.insert(m);
            }
        }
    }
    for m in &failed {
        node.cache.forget_model(*m);
    }
    for (m, view) in views {
        if failed.contains(&m) || node.stopping() {
            continue;
        }
        for (_, t, why) in chosen.iter().filter(|(x, _, _)| *x == m) {
            tracing::info!("model {m} ({:?}) task {t}: supporting, {why}", view.def.name);
            lock(&node.supports).insert((m, *t));
        }
        lock(&node.defs).insert(m, Arc::new(view.def));
        changed = true;
    }
    Ok(changed)
}

/// Runs [`specialise`] every [`MODELS_EVERY`] until the daemon stops, and
/// tells the ledger when what the node supports changed.
fn follow_models(node: &Node<'_>) {
    let mut next = Instant::now() + MODELS_EVERY;
    while !node.stopping() {
        if Instant::now() >= next {
            next = Instant::now() + MODELS_EVERY;
            if node.cfg.metrics_listen.is_some() {
                node.refresh_gauges();
            }
            match specialise(node, false) {
                Ok(false) => {}
                Ok(true) => {
                    let supports: Vec<(u64, u32)> = lock(&node.supports).iter().copied().collect();
                    let n = supports.len();
                    match node.send(Instruction::RegisterNode {
                        vram: node.cfg.vram,
                        supports,
                    }) {
                        Ok(_) => tracing::info!("now supporting {}", plural(n, "task")),
                        Err(e) => tracing::warn!("could not tell the ledger what it supports: {e:#}"),
                    }
                }
                Err(e) => tracing::warn!("could not list models: {e:#}; retrying"),
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Sends a heartbeat every `period` until the daemon stops, whatever its
/// work threads are doing.
fn heartbeats(node: &Node<'_>, period: Duration) {
    let mut next = Instant::now();
    while !node.stopping() {
        if Instant::now() >= next {
            match node.send(Instruction::Heartbeat) {
                Ok(_) => next = Instant::now() + period,
                Err(err) => {
                    if !node.stopping() {
                        tracing::warn!("heartbeat failed: {err:#}; retrying");
                    }
                    next = Instant::now() + period.min(Duration::from_secs(1));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Longest a node waits for new work in one request; short enough to notice
/// SIGTERM promptly.
const WORK_WAIT_MAX: Duration = Duration::from_secs(2);

/// Does one item of work; returns whether it is finished with (false: retry it).
fn handle(node: &Node<'_>, w: &WorkItem) -> bool {
    let (e, m, t, kind) = (w.execution, w.model, w.task, w.kind);
    let _work = tracing::info_span!("work", %kind, execution = e, task = t).entered();
    let Some(def) = node.def(m) else {
        tracing::info!("assigned model {m} task {t}, which this node does not support");
        return true;
    };
    let def = &*def;
    let td = match task_def(def, t) {
        Ok(td) => td,
        Err(why) => {
            tracing::info!("{kind} execution {e}: {why}");
            return true;
        }
    };
    std::thread::sleep(node.cfg.delay);
    if kind == WorkKind::Judge {
        return judge(node, w);
    }
    if kind == WorkKind::Validate && node.cfg.fault == Fault::LazyValidator {
        return lazy_validate(node, w);
    }
    let computed = compute(node, w, def, td);
    if let Err(Failure::Task(_)) = &computed {
        node.metrics.count(kind, "unrunnable");
    }
    match computed {
        Ok((_, commitment, blob, seal)) => {
            if lock(&node.fatal).is_some() {
                return false;
            }
            let uri = node.c.blob_uri(&blob);
            let sent = match kind {
                // Commit, then reveal: the seal binds this validator to its
                // own bytes before it may read the result it checks.
                WorkKind::Validate => node
                    .send(Instruction::SubmitValidation {
                        execution: e,
                        task: t,
                        seal,
                    })
                    .and_then(|_| {
                        node.send(Instruction::RevealValidation {
                            execution: e,
                            task: t,
                            commitment,
                            output_uris: vec![uri],
                        })
                    }),
                _ => node.send(Instruction::SubmitResult {
                    execution: e,
                    task: t,
                    commitment,
                    output_uris: vec![uri],
                }),
            };
            match sent {
                Ok(_) => {
                    node.metrics.count(kind, "submitted");
                    tracing::info!("{kind} execution {e} task {t}: submitted {}", &blob[..16])
                }
                Err(err) => {
                    node.metrics.count(kind, "refused");
                    tracing::warn!("{kind} execution {e} task {t}: the ledger refused the result: {err:#}")
                }
            }
            true
        }
        Err(Failure::Task(why)) => match kind {
            WorkKind::Compute => {
                let reason = short(&why);
                match node.send(Instruction::ReportUnrunnable {
                    execution: e,
                    task: t,
                    reason: reason.clone(),
                }) {
                    Ok(_) => {
                        tracing::warn!("compute execution {e} task {t}: cannot run here, reported: {reason}");
                        true
                    }
                    Err(err) => {
                        tracing::warn!(
                            "compute execution {e} task {t}: cannot run here ({reason}); the report failed: {err:#}"
                        );
                        false
                    }
                }
            }
            // A validator cannot hand a challenge back: the ledger's
            // validator timeout gives it to another, or to the committee.
            WorkKind::Validate | WorkKind::Judge => {
                tracing::warn!(
                    "validate execution {e} task {t}: cannot run here: {why}; leaving it to another validator"
                );
                true
            }
        },
        Err(Failure::Transient(err)) => {
            node.metrics.count(kind, "retry");
            // Often passing (an upstream result being recomputed): retry at the
            // next poll while the ledger still lists the work; its deadline bounds this.
            tracing::warn!("{kind} execution {e} task {t} failed: {err:#}; will retry");
            false
        }
    }
}

/// Outputs, their commitment, the uploaded blob's name, and this node's
/// validation seal of the bytes.
type Computed = (BTreeMap<String, Tensor>, [u8; 32], String, [u8; 32]);

/// Runs one task of one execution in its worker; returns the outputs, the
/// commitment (BLAKE3 of the outputs' safetensors bytes) and the uploaded
/// blob's name.
fn compute(node: &Node<'_>, w: &WorkItem, def: &ModelDef, td: &TaskDef) -> Result<Computed, Failure> {
    let (m, t) = (w.model, w.task);
    let ex: ExecutionView = node
        .c
        .get_as(&format!("/v1/executions/{}", w.execution))
        .map_err(transient)?;
    let inputs = gather_inputs(&node.c, &ex, def, t).map_err(transient)?;
    node.metrics
        .moved("in", inputs.values().map(|t| t.bytes().len() as u64).sum());
    let answer_max = answer_max(td).map_err(|e| Failure::Task(format!("task {t}: {e}")))?;
    let deadline = node.deadline(w.deadline_ms);
    let worker = node
        .cache
        // Work in hand is finished on SIGTERM: only a foreign signer aborts it.
        .take((m, t), td.vram, &|| lock(&node.fatal).is_some())
        .map_err(|()| transient(anyhow::anyhow!("stopping")))?;
    let mut worker = match worker {
        Some(w) => w,
        None => match node.start_task(def, t, Some(deadline)) {
            Ok(w) => w,
            Err(f) => {
                node.cache.give_back((m, t), None);
                return Err(f);
            }
        },
    };
    let task_limit = run_limit(td.compute_units);
    let limit = task_limit.min(deadline.saturating_duration_since(Instant::now()));
    if limit.is_zero() {
        node.cache.give_back((m, t), Some(worker));
        return Err(transient(anyhow::anyhow!("the ledger's deadline has passed")));
    }
    // The worker cannot hold, so cannot send, more than its ceiling.
    let started = Instant::now();
    let r = worker.run(&inputs, limit, answer_max.min(worker.ceiling()));
    node.metrics
        .run_seconds
        .get_or_create(&vec![("kind", w.kind.to_string())])
        .observe(started.elapsed().as_secs_f64());
    node.cache.give_back((m, t), Some(worker));
    drop(inputs);
    let outputs = r.map_err(|e| {
        classify(
            e,
            task_limit,
            &format!(
                "task {t} (declares {} bytes, {} compute units)",
                td.vram, td.compute_units
            ),
        )
    })?;
    if outputs.len() != td.outputs.len() {
        return Err(Failure::Task(format!(
            "task {t}: {} outputs, the model declares {}",
            outputs.len(),
            td.outputs.len()
        )));
    }
    let mut map: BTreeMap<String, Tensor> = BTreeMap::new();
    for spec in &td.outputs {
        let o = outputs
            .get(&spec.name)
            .ok_or_else(|| Failure::Task(format!("task {t}: no output {:?}", spec.name)))?;
        check_spec(o, spec).map_err(|e| Failure::Task(format!("task {t}: output {e}")))?;
    }
    let fault = node.cfg.fault.on(w.kind);
    for (name, o) in outputs {
        map.insert(name, perturb(o, fault));
    }
    let bytes = splitup_tensor::st::encode(&map).map_err(transient)?;
    node.metrics.moved("out", bytes.len() as u64);
    let honest = splitup_store::hash_of(&bytes);
    let seal = splitup_protocol::crypto::validation_seal(&node.cfg.key.pubkey(), w.execution, w.task, &bytes);
    let blob = match fault {
        // Commits outputs it never uploads.
        Fault::Withhold => honest.clone(),
        // Commits the honest outputs, uploads other bytes and points at them.
        Fault::UriSwap => {
            let mut other = bytes;
            other.push(0);
            node.c.put_blob(other).map_err(transient)?
        }
        _ => node.c.put_blob(bytes).map_err(transient)?,
    };
    let commitment = unhex32(&honest)
        .context("the store named the blob oddly")
        .map_err(transient)?;
    Ok((map, commitment, blob, seal))
}

/// The inputs of task `task` in this execution, each checked against the
/// task's declaration (a mismatch is the upstream's doing, not this task's).
fn gather_inputs(c: &Client, ex: &ExecutionView, def: &ModelDef, task: u32) -> Result<BTreeMap<String, Tensor>> {
    let td = task_def(def, task).map_err(anyhow::Error::msg)?;
    let mut inputs = BTreeMap::new();
    for (k, spec) in td.inputs.iter().enumerate() {
        let conn = def
            .connections
            .iter()
            .find(|x| x.destination_task == task && x.dest_input == k as u32)
            .with_context(|| format!("input {:?} has no source", spec.name))?;
        let tensor = task_output(c, ex, def, conn.source_task, conn.source_output)?;
        check_spec(&tensor, spec).map_err(|e| anyhow::anyhow!("input {e} (from task {})", conn.source_task))?;
        inputs.insert(spec.name.clone(), tensor);
    }
    Ok(inputs)
}

/// A committee member's verdicts on a disputed task: is the asserter's
/// result honest, and the validator's (when it revealed one)? `None`: this
/// member could not judge that side (its bytes could not be read).
pub type Verdicts = (Option<bool>, Option<bool>);

/// A committee member's check of a disputed task: re-executes it in a
/// worker (started with `worker`, under the same memory ceiling and
/// wall-clock limit as a node's) and judges each side's committed outputs
/// against the recomputation within the cross-hardware tolerance. `Err`: it
/// could not re-execute (the task cannot run here, or a blob or the ledger
/// could not be read): it cannot judge either side.
pub fn recompute(
    c: &Client,
    worker: &WorkerCommand,
    model: u64,
    execution: u64,
    task: u32,
    asserter: Option<[u8; 32]>,
    validator: Option<[u8; 32]>,
) -> Result<Verdicts> {
    let def = c.get_as::<ModelView>(&format!("/v1/models/{model}"))?.def;
    let td = task_def(&def, task).map_err(anyhow::Error::msg)?;
    let answer_max = answer_max(td).map_err(anyhow::Error::msg)?;
    let mut w = start_worker(c, worker, 1, &def, task, None).map_err(Failure::into_error)?;
    let ex: ExecutionView = c.get_as(&format!("/v1/executions/{execution}"))?;
    let inputs = gather_inputs(c, &ex, &def, task)?;
    let outputs = w
        .run(&inputs, run_limit(td.compute_units), answer_max.min(w.ceiling()))
        .map_err(|e| classify(e, Duration::MAX, &format!("task {task}")).into_error())?;
    let side = |claimed: Option<[u8; 32]>| claimed.and_then(|h| judge_side(c, &h, &outputs, &td.checks));
    Ok((side(asserter), side(validator)))
}

/// Whether the committed outputs `claimed` agree with `mine` under the
/// task's calibrated `checks` ([`splitup_tensor::judge`]): `Some(false)`
/// for bytes that do not decode or disagree, `None` when they cannot be
/// read or the checks cannot be applied (nobody's result is then at fault).
/// The blob is fetched by its hash and checked against it, so bytes other
/// than the committed ones are never judged.
fn judge_side(
    c: &Client,
    claimed: &[u8; 32],
    mine: &BTreeMap<String, Tensor>,
    checks: &[splitup_protocol::OutputCheck],
) -> Option<bool> {
    let bytes = c.get_blob(&hex(claimed)).ok()?;
    verdict(&bytes, mine, checks)
}

/// The verdict on committed output bytes against the judge's own outputs.
pub fn verdict(
    bytes: &[u8],
    mine: &BTreeMap<String, Tensor>,
    checks: &[splitup_protocol::OutputCheck],
) -> Option<bool> {
    let Ok(theirs) = splitup_tensor::st::decode(bytes) else {
        return Some(false);
    };
    let (tolerances, pairings) = crate::ops::from_checks(checks);
    match splitup_tensor::judge(&theirs, mine, &tolerances, &pairings) {
        Ok(()) => Some(true),
        Err(e) if e.is_disagreement() => Some(false),
        Err(_) => None,
    }
}

/// Work as a drawn committee member: re-execute, judge both sides, vote.
/// A member that cannot run the task votes that it cannot judge (the
/// dispute then ends at its deadline if no majority forms).
fn judge(node: &Node<'_>, w: &WorkItem) -> bool {
    let (e, t) = (w.execution, w.task);
    if node.cfg.fault == Fault::Absent {
        tracing::info!("judge execution {e} task {t}: staying away");
        return true;
    }
    let (asserter_honest, validator_honest) = match recompute(
        &node.c,
        &node.cfg.worker,
        w.model,
        e,
        t,
        w.commitment,
        w.validator_commitment,
    ) {
        Ok(v) => v,
        Err(err) => {
            tracing::warn!("judge execution {e} task {t}: cannot re-execute: {err:#}");
            (None, None)
        }
    };
    match node.send(Instruction::DisputeVote {
        execution: e,
        task: t,
        asserter_honest,
        validator_honest,
    }) {
        Ok(_) => {
            node.metrics.count(WorkKind::Judge, "voted");
            tracing::info!(
                "judge execution {e} task {t}: voted asserter {}, validator {}",
                verdict_word(asserter_honest),
                verdict_word(validator_honest)
            )
        }
        Err(err) => {
            node.metrics.count(WorkKind::Judge, "refused");
            tracing::warn!("judge execution {e} task {t}: the vote was refused: {err:#}")
        }
    }
    true
}

fn verdict_word(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "honest",
        Some(false) => "dishonest",
        None => "not judged",
    }
}

/// The lazy validator's attack (test only): seal without computing, then
/// try to read the checked result and reveal it as its own. The store
/// refuses the read before the seal, and the ledger refuses the reveal
/// (the bytes do not produce the seal); the validator is replaced unpaid.
fn lazy_validate(node: &Node<'_>, w: &WorkItem) -> bool {
    let (e, t) = (w.execution, w.task);
    let claimed = node
        .c
        .get_as::<ExecutionView>(&format!("/v1/executions/{e}"))
        .ok()
        .and_then(|ex| ex.task(t).ok().and_then(|r| r.commitment));
    let Some(claimed) = claimed else {
        return false;
    };
    match node.c.get_blob(&hex(&claimed)) {
        Ok(_) => tracing::info!("lazy validate execution {e} task {t}: read the checked result before sealing"),
        Err(err) => {
            tracing::warn!("lazy validate execution {e} task {t}: cannot read the result before sealing: {err:#}")
        }
    }
    let seal = splitup_protocol::crypto::validation_seal(&node.cfg.key.pubkey(), e, t, b"not computed");
    if let Err(err) = node.send(Instruction::SubmitValidation {
        execution: e,
        task: t,
        seal,
    }) {
        tracing::warn!("lazy validate execution {e} task {t}: seal refused: {err:#}");
        return true;
    }
    let uri = node.c.blob_uri(&hex(&claimed));
    match node.send(Instruction::RevealValidation {
        execution: e,
        task: t,
        commitment: claimed,
        output_uris: vec![uri],
    }) {
        Ok(_) => tracing::info!("lazy validate execution {e} task {t}: the copied reveal was accepted"),
        Err(err) => tracing::warn!("lazy validate execution {e} task {t}: the copied reveal was refused: {err:#}"),
    }
    true
}

/// Test-only misbehaviour of a node: the attacks the ledger must defeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Adds 1 to every float output it computes or validates: a cheat.
    Cheat,
    /// Scales float outputs by 1 ± 1e-6: an honest node on different
    /// hardware, whose bytes differ but whose numbers agree.
    Jitter,
    /// As asserter: commits the honest outputs' hash but uploads other
    /// bytes and points its URI at them.
    UriSwap,
    /// As asserter: commits its outputs without ever uploading them.
    Withhold,
    /// As validator: never computes; seals anything, then tries to read the
    /// asserter's outputs and reveal them as its own.
    LazyValidator,
    /// As validator: reveals outputs of its own making (+1 everywhere) to
    /// force a dispute over an honest result.
    Grief,
    /// As a committee member: never votes.
    Absent,
}

impl Fault {
    /// The misbehaviour that applies to work of `kind` (a judge is honest).
    fn on(self, kind: WorkKind) -> Fault {
        match (self, kind) {
            (_, WorkKind::Judge) => Fault::None,
            (Fault::Grief, WorkKind::Validate) => Fault::Cheat,
            (Fault::Grief | Fault::LazyValidator | Fault::Absent, _) => Fault::None,
            (Fault::UriSwap | Fault::Withhold, WorkKind::Validate) => Fault::None,
            (f, _) => f,
        }
    }
}

fn perturb(t: Tensor, fault: Fault) -> Tensor {
    if t.dtype != splitup_tensor::DType::F32 || !matches!(fault, Fault::Cheat | Fault::Jitter) {
        return t;
    }
    let v: Vec<f32> = t
        .to_f64_vec()
        .into_iter()
        .enumerate()
        .map(|(i, x)| match fault {
            Fault::Cheat => x as f32 + 1.0,
            Fault::Jitter => (x * if i % 2 == 0 { 1.0 + 1e-6 } else { 1.0 - 1e-6 }) as f32,
            _ => x as f32,
        })
        .collect();
    Tensor::from_f32(t.shape.clone(), &v).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committee's verdict on committed bytes: the calibrated checks
    /// decide; bytes that are not outputs are a disagreement; checks that
    /// cannot be applied blame nobody.
    #[test]
    fn verdicts_follow_the_recorded_checks() {
        use splitup_protocol::OutputCheck;
        let logits: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
        let mine = BTreeMap::from([("y".to_string(), Tensor::from_f32(vec![2, 32], &logits).unwrap())]);
        let argmax = |v: &[f32]| -> Vec<usize> {
            v.chunks(32)
                .map(|r| (0..32).max_by(|&a, &b| r[a].total_cmp(&r[b]).then(b.cmp(&a))).unwrap())
                .collect()
        };
        let checks = vec![
            OutputCheck {
                rtol: 1e-3,
                atol: 1e-4,
                miss_rate: 0.01,
                ..OutputCheck::exact("y")
            },
            OutputCheck {
                miss_rate: 1e-10,
                indices_of: Some(("y".into(), 1)),
                ..OutputCheck::exact("y/argmax")
            },
        ];
        let encode = |v: &[f32]| {
            splitup_tensor::st::encode(&BTreeMap::from([(
                "y".to_string(),
                Tensor::from_f32(vec![2, 32], v).unwrap(),
            )]))
            .unwrap()
        };
        // Within tolerance everywhere: upheld.
        let near: Vec<f32> = logits.iter().map(|x| x * (1.0 + 2e-4)).collect();
        assert_eq!(verdict(&encode(&near), &mine, &checks), Some(true));
        // One logit raised just above its row's top: the greedy token flips,
        // and one element among 64 is within the elementwise miss rate.
        let mut flipped = logits.clone();
        let top = argmax(&logits)[0];
        let other = (top + 16) % 32;
        flipped[other] = logits[top] + 0.5;
        assert_ne!(argmax(&flipped)[0], top);
        assert_eq!(verdict(&encode(&flipped), &mine, &checks), Some(false));
        // Not safetensors at all.
        assert_eq!(verdict(b"garbage", &mine, &checks), Some(false));
        // No check recorded for the output: nobody can be blamed.
        assert_eq!(verdict(&encode(&near), &mine, &[]), None);
    }

    #[test]
    fn one_daemon_per_key_file_and_the_lock_goes_with_its_holder() {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("node.json");
        std::fs::write(&key, "{}").unwrap();
        let first = lock_key_file(&key).unwrap();
        // Through a link too: the lock sits next to the file it resolves to.
        let link = d.path().join("link.json");
        std::os::unix::fs::symlink(&key, &link).unwrap();
        for k in [&key, &link] {
            let e = lock_key_file(k).unwrap_err();
            assert!(e.downcast_ref::<AnotherDaemon>().is_some(), "{e:#}");
            assert!(e.to_string().contains(&std::process::id().to_string()), "{e:#}");
        }
        drop(first);
        lock_key_file(&link).unwrap();
    }

    #[test]
    fn limits_and_reasons() {
        assert_eq!(run_limit(1), Duration::from_millis(5_010));
        assert_eq!(run_limit(1_000), Duration::from_secs(15));
        assert!(run_limit(u64::MAX) > Duration::from_secs(40_000_000));
        let long = format!("{}\n{}", "é".repeat(300), "x");
        let r = short(&long);
        assert!(r.len() <= REASON_MAX && !r.contains('\n'));
        let td = TaskDef {
            vram: 1,
            compute_units: 1,
            inputs: vec![],
            outputs: vec![TensorSpec {
                name: "y".into(),
                shape: vec![u64::MAX, 2],
                dtype: "float32".into(),
            }],
            weight_uri: String::new(),
            weight_hash: [0; 32],
            graph_hash: [0; 32],
            checks: vec![],
        };
        assert!(answer_max(&td).is_err());
    }
}
