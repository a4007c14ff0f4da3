//! A deterministic whole-network simulator for the protocol.
//!
//! One process holds the ledger state machine, N simulated nodes, an honest
//! 3-member committee and the users, on a virtual clock driven by an event
//! queue. Every random choice comes from one ChaCha8 stream seeded by
//! `Config::seed`, so a seed replays exactly (the final block hash and
//! summary are equal); a failing run reports its seed.
//!
//! Faults, as one options struct: crashes, slow nodes, partitions between a
//! node and the ledger, lazy nodes that return garbage with probability q,
//! and a colluding fraction of validators that confirm whatever they check.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use splitup_protocol::state::Ledger;
use splitup_protocol::*;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// Virtual time between ledger ticks.
pub const TICK_MS: Millis = 1_000;

#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    pub nodes: usize,
    /// Model executions; each runs a 4-task diamond DAG (1 → 2, 3 → 4).
    pub executions: usize,
    /// Fraction of nodes that crash at a random time in the first half of the run.
    pub crash_frac: f64,
    /// Fraction of nodes that compute `slow_factor` times slower.
    pub slow_frac: f64,
    pub slow_factor: u64,
    /// Fraction of nodes cut off from the ledger for `partition_ms` at a random time.
    pub partition_frac: f64,
    pub partition_ms: Millis,
    /// Fraction of nodes that return garbage with probability `lazy_q`.
    pub lazy_frac: f64,
    pub lazy_q: f64,
    /// Fraction of nodes that, as validators, confirm any result.
    pub collude_frac: f64,
    pub params: Params,
    /// Time between submissions of executions.
    pub submit_every_ms: Millis,
    /// Compute time of one task on a normal node.
    pub task_ms: Millis,
    /// Check money conservation after every `check_every` steps (1 = every step).
    pub check_every: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            seed: 1,
            nodes: 100,
            executions: 1000,
            crash_frac: 0.0,
            slow_frac: 0.0,
            slow_factor: 5,
            partition_frac: 0.0,
            partition_ms: 120_000,
            lazy_frac: 0.0,
            lazy_q: 0.0,
            collude_frac: 0.0,
            params: Params::default(),
            submit_every_ms: 50,
            task_ms: 2_000,
            check_every: 1,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub seed: u64,
    pub executions: u64,
    pub completed: u64,
    pub failed: BTreeMap<String, u64>,
    pub task_results: u64,
    pub challenges: u64,
    pub validations: u64,
    pub frauds_caught: u64,
    pub frauds_undetected: u64,
    pub lazy_results: u64,
    pub slashed: Micro,
    pub slashes: u64,
    pub fees_paid: Micro,
    pub reassignments: u64,
    pub nodes_marked_unresponsive: u64,
    pub instructions: u64,
    pub steps: u64,
    pub virtual_ms: Millis,
    /// Stake lost by nodes that never cheated.
    pub honest_stake_lost: Micro,
    /// Lazy nodes, and how many of them ended with less than they staked.
    pub lazy_nodes: u64,
    pub lazy_nodes_net_loss: u64,
    pub final_blockhash: [u8; 32],
    /// Time spent inside the state machine, for instructions per second.
    pub ledger_time: Duration,
    /// Of which: producing VRF proofs (the beacon key holder's work).
    pub vrf_time: Duration,
    pub vrf_proofs: u64,
    /// Per cheating node: (results submitted, caught at least once by then).
    pub first_catch: Vec<(u64, Option<u64>)>,
}

impl Summary {
    pub fn instructions_per_second(&self) -> f64 {
        self.instructions as f64 / self.ledger_time.as_secs_f64().max(1e-9)
    }
    /// Instructions per second of the rules alone, without producing VRF proofs.
    pub fn instructions_per_second_without_vrf(&self) -> f64 {
        self.instructions as f64 / (self.ledger_time.saturating_sub(self.vrf_time)).as_secs_f64().max(1e-9)
    }
    /// Validation compute over primary compute.
    pub fn validation_overhead(&self) -> f64 {
        self.validations as f64 / self.task_results.max(1) as f64
    }
}

#[derive(Debug, thiserror::Error)]
#[error("simulation with seed {seed} failed at step {step} (t = {at} ms): {message}\nreplay with: splitup sim --seed {seed} (same options)")]
pub struct Failure {
    pub seed: u64,
    pub step: u64,
    pub at: Millis,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Tick,
    Heartbeat(usize),
    Submit(u64),
    /// Node `n` delivers its result for (execution, task, attempt).
    Result(usize, u64, u32, u32),
    /// Node `n` delivers its validation of (execution, task).
    Validate(usize, u64, u32),
}

struct SimNode {
    key: Keypair,
    crash_at: Option<Millis>,
    slow: bool,
    partition: Option<(Millis, Millis)>,
    lazy: bool,
    colluder: bool,
    staked: Micro,
    nonce: u64,
    results: u64,
    /// Index (1-based) of each result this node submitted, by (execution, task).
    result_index: HashMap<(u64, u32), u64>,
    first_caught: Option<u64>,
}

impl SimNode {
    fn down(&self, now: Millis) -> bool {
        self.crash_at.is_some_and(|c| now >= c)
    }
    fn cut_off(&self, now: Millis) -> bool {
        self.partition.is_some_and(|(a, b)| now >= a && now < b)
    }
}

/// The VRF beacon, timed.
struct TimedBeacon {
    inner: VrfBeacon,
    spent: std::cell::Cell<Duration>,
    proofs: std::cell::Cell<u64>,
}

impl Beacon for TimedBeacon {
    fn public_key(&self) -> Pubkey {
        self.inner.public_key()
    }
    fn prove(&self, alpha: &[u8]) -> (splitup_protocol::crypto::VrfProof, [u8; 64]) {
        let t = Instant::now();
        let r = self.inner.prove(alpha);
        self.spent.set(self.spent.get() + t.elapsed());
        self.proofs.set(self.proofs.get() + 1);
        r
    }
}

struct Sim<'a> {
    cfg: Config,
    rng: ChaCha8Rng,
    ledger: Ledger,
    beacon: TimedBeacon,
    nodes: Vec<SimNode>,
    index: HashMap<Pubkey, usize>,
    committee: Vec<(Keypair, u64)>,
    authority: (Keypair, u64),
    user: (Keypair, u64),
    queue: BinaryHeap<Reverse<(Millis, u64, Ev)>>,
    seq: u64,
    now: Millis,
    model: u64,
    s: Summary,
    progress: &'a mut dyn FnMut(u64, u64),
}

/// The honest output of a task: what every honest node computes.
fn truth(execution: u64, task: u32) -> [u8; 32] {
    *blake3::hash(&[&execution.to_le_bytes()[..], &task.to_le_bytes()].concat()).as_bytes()
}

fn keypair(rng: &mut ChaCha8Rng) -> Keypair {
    Keypair::from_seed(rng.random())
}

impl<'a> Sim<'a> {
    fn push(&mut self, at: Millis, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, ev)));
    }

    fn fail(&self, message: String) -> Failure {
        Failure {
            seed: self.cfg.seed,
            step: self.s.steps,
            at: self.now,
            message,
        }
    }

    /// Applies an instruction (signature already produced by a known key),
    /// timing the state machine, and processes the events it caused.
    fn apply(&mut self, who: Who, ix: Instruction) -> Result<Result<(), ProtocolError>, Failure> {
        let (key, nonce) = match who {
            Who::Authority => (self.authority.0.pubkey(), &mut self.authority.1),
            Who::User => (self.user.0.pubkey(), &mut self.user.1),
            Who::Committee(i) => (self.committee[i].0.pubkey(), &mut self.committee[i].1),
            Who::Node(i) => (self.nodes[i].key.pubkey(), &mut self.nodes[i].nonce),
        };
        let t = Instant::now();
        let r = self.ledger.apply_verified(key, *nonce, &ix, self.now, &self.beacon);
        self.s.ledger_time += t.elapsed();
        if r.is_ok() {
            *nonce += 1;
            self.s.instructions += 1;
        }
        self.after_step()?;
        Ok(r)
    }

    fn tick(&mut self) -> Result<(), Failure> {
        let t = Instant::now();
        self.ledger.tick(self.now, &self.beacon);
        self.s.ledger_time += t.elapsed();
        self.after_step()
    }

    fn after_step(&mut self) -> Result<(), Failure> {
        self.s.steps += 1;
        if self.s.steps.is_multiple_of(self.cfg.check_every.max(1))
            && self.ledger.money_total() != self.ledger.supply as u128
        {
            return Err(self.fail(format!(
                "money not conserved: {} in accounts, stakes, escrows and treasury, supply {}",
                self.ledger.money_total(),
                self.ledger.supply
            )));
        }
        let events = self.ledger.poll_events();
        for ev in events {
            self.on_event(ev)?;
        }
        Ok(())
    }

    fn compute_ms(&mut self, n: usize) -> Millis {
        let jitter = self.rng.random_range(0..self.cfg.task_ms / 4 + 1);
        (self.cfg.task_ms + jitter) * if self.nodes[n].slow { self.cfg.slow_factor } else { 1 }
    }

    fn on_event(&mut self, ev: Event) -> Result<(), Failure> {
        match ev {
            Event::Assigned {
                execution,
                task,
                node,
                attempt,
                ..
            } => {
                // Invariant: only live, capable, staked nodes get work.
                let n = &self.ledger.nodes[&node];
                let e = &self.ledger.executions[&execution];
                let def = &self.ledger.models[&e.model].def.tasks[task as usize - 1];
                let cost = self.ledger.task_cost(def);
                if n.status != NodeStatus::Active
                    || !n.supports.contains(&(e.model, task))
                    || n.vram < def.vram
                    || n.free_stake() < self.ledger.stake_required(n.vram)
                    || !security_holds(&self.ledger.params, cost, self.ledger.slash_amount(cost, n))
                {
                    return Err(self.fail(format!("task {execution}/{task} assigned to ineligible node {node:?}")));
                }
                if attempt > 1 {
                    self.s.reassignments += 1;
                }
                let i = self.index[&node];
                let at = self.now + self.compute_ms(i);
                self.push(at, Ev::Result(i, execution, task, attempt));
            }
            Event::ValidatorAssigned {
                execution,
                task,
                validator,
                ..
            } => {
                let i = self.index[&validator];
                let at = self.now + self.compute_ms(i);
                self.push(at, Ev::Validate(i, execution, task));
            }
            Event::Drawn { challenged, .. } if challenged => {
                self.s.challenges += 1;
            }
            // (temporary while the simulator is ported: disputes end at their deadline)
            Event::Disputed { .. } => {}
            Event::Slashed {
                node,
                amount,
                execution,
                task,
            } => {
                self.s.slashed += amount;
                self.s.slashes += 1;
                let i = self.index[&node];
                if self.nodes[i].lazy {
                    self.s.frauds_caught += 1;
                    // Which of its results was caught (not how many it has sent since).
                    let idx = self.nodes[i]
                        .result_index
                        .get(&(execution, task))
                        .copied()
                        .unwrap_or(self.nodes[i].results);
                    let first = self.nodes[i].first_caught.map_or(idx, |f| f.min(idx));
                    self.nodes[i].first_caught = Some(first);
                }
            }
            Event::NodeUnresponsive { .. } => self.s.nodes_marked_unresponsive += 1,
            Event::ExecutionCompleted { .. } => {
                self.s.completed += 1;
                (self.progress)(
                    self.s.completed + self.s.failed.values().sum::<u64>(),
                    self.cfg.executions as u64,
                );
            }
            Event::ExecutionFailed { reason, .. } => {
                let key = reason.split(':').next().unwrap_or("").trim().to_string();
                let key = if key.starts_with("task ") {
                    reason
                        .split_once(' ')
                        .map(|x| x.1)
                        .unwrap_or(&reason)
                        .split_once(' ')
                        .map(|x| x.1.to_string())
                        .unwrap_or(reason)
                } else {
                    key
                };
                *self.s.failed.entry(key).or_default() += 1;
                (self.progress)(
                    self.s.completed + self.s.failed.values().sum::<u64>(),
                    self.cfg.executions as u64,
                );
            }
            _ => {}
        }
        Ok(())
    }

    fn run(mut self) -> Result<Summary, Failure> {
        let total = self.cfg.executions as u64;
        self.push(0, Ev::Tick);
        for i in 0..self.nodes.len() {
            let at = self.rng.random_range(0..self.ledger.params.heartbeat_ms);
            self.push(at, Ev::Heartbeat(i));
        }
        for k in 0..total {
            self.push(1 + k * self.cfg.submit_every_ms, Ev::Submit(k));
        }
        // Bound on the run: every execution must end well before this.
        let horizon = 1 + total * self.cfg.submit_every_ms + 40 * 3600 * 1000;
        while let Some(Reverse((at, _, ev))) = self.queue.pop() {
            if self.ledger.active.is_empty() && self.s.completed + self.s.failed.values().sum::<u64>() == total {
                break;
            }
            if at > horizon {
                return Err(self.fail(format!(
                    "{} executions still in progress at the horizon: an execution was lost",
                    self.ledger.active.len()
                )));
            }
            self.now = at;
            match ev {
                Ev::Tick => {
                    self.tick()?;
                    // A fixed cadence: deadlines are tens of seconds, and with
                    // thousands of nodes `poll_timeout` would tick every few ms.
                    let next = self.now + TICK_MS;
                    self.push(next, Ev::Tick);
                }
                Ev::Heartbeat(i) => {
                    if self.nodes[i].down(self.now) {
                        continue;
                    }
                    if !self.nodes[i].cut_off(self.now) {
                        self.apply(Who::Node(i), Instruction::Heartbeat)?
                            .map_err(|e| self.fail(format!("heartbeat refused: {e}")))?;
                    }
                    let next = self.now + self.ledger.params.heartbeat_ms;
                    self.push(next, Ev::Heartbeat(i));
                }
                Ev::Submit(_) => {
                    let r = self.apply(
                        Who::User,
                        Instruction::SubmitExecution {
                            model: self.model,
                            priority: 0,
                            input_commitment: [0; 32],
                        },
                    )?;
                    r.map_err(|e| self.fail(format!("submission refused: {e}")))?;
                }
                Ev::Result(i, execution, task, attempt) => {
                    let n = &self.nodes[i];
                    if n.down(self.now) || n.cut_off(self.now) {
                        continue;
                    }
                    // Only the current attempt of a node still holding the task reports.
                    let r = &self.ledger.executions[&execution].tasks[task as usize - 1];
                    if r.status != TaskStatus::Assigned || r.node != Some(n.key.pubkey()) || r.attempts != attempt {
                        continue;
                    }
                    let cheat = n.lazy && self.rng.random_bool(self.cfg.lazy_q);
                    let commitment = if cheat {
                        self.rng.random()
                    } else {
                        truth(execution, task)
                    };
                    self.nodes[i].results += 1;
                    let idx = self.nodes[i].results;
                    self.nodes[i].result_index.insert((execution, task), idx);
                    if cheat {
                        self.s.lazy_results += 1;
                    }
                    self.s.task_results += 1;
                    let uris = vec![format!("mem://{execution}/{task}")];
                    self.apply(
                        Who::Node(i),
                        Instruction::SubmitResult {
                            execution,
                            task,
                            commitment,
                            output_uris: uris,
                        },
                    )?
                    .map_err(|e| self.fail(format!("result refused: {e}")))?;
                }
                Ev::Validate(i, execution, task) => {
                    let n = &self.nodes[i];
                    if n.down(self.now) || n.cut_off(self.now) {
                        continue;
                    }
                    let r = &self.ledger.executions[&execution].tasks[task as usize - 1];
                    if r.status != TaskStatus::Challenged || r.validator != Some(n.key.pubkey()) {
                        continue;
                    }
                    // A colluder confirms whatever it is shown; anyone else recomputes.
                    let commitment = if n.colluder {
                        r.commitment.unwrap()
                    } else {
                        truth(execution, task)
                    };
                    self.s.validations += 1;
                    self.apply(
                        Who::Node(i),
                        Instruction::SubmitValidation {
                            execution,
                            task,
                            seal: commitment,
                        },
                    )?
                    .map_err(|e| self.fail(format!("validation refused: {e}")))?;
                    let uri = format!("sim://{}", splitup_protocol::crypto::to_hex(&commitment));
                    self.apply(
                        Who::Node(i),
                        Instruction::RevealValidation {
                            execution,
                            task,
                            commitment,
                            output_uris: vec![uri],
                        },
                    )?
                    .map_err(|e| self.fail(format!("reveal refused: {e}")))?;
                }
            }
        }
        if self.ledger.money_total() != self.ledger.supply as u128 {
            return Err(self.fail("money not conserved at the end".into()));
        }
        let remaining = total - self.s.completed - self.s.failed.values().sum::<u64>();
        if remaining > 0 {
            return Err(self.fail(format!("{remaining} executions neither completed nor failed")));
        }
        // Results of lazy nodes that were never caught.
        for (id, e) in &self.ledger.executions {
            for (t, r) in e.tasks.iter().enumerate() {
                if r.status == TaskStatus::Completed && r.commitment != Some(truth(*id, t as u32 + 1)) {
                    self.s.frauds_undetected += 1;
                }
            }
        }
        for n in &self.nodes {
            let node = &self.ledger.nodes[&n.key.pubkey()];
            if n.lazy {
                self.s.lazy_nodes += 1;
                let end = node.stake + self.ledger.balance(&n.key.pubkey());
                if end < n.staked {
                    self.s.lazy_nodes_net_loss += 1;
                }
                self.s.first_catch.push((n.results, n.first_caught));
            } else {
                self.s.honest_stake_lost += node.slashed_total;
            }
            self.s.fees_paid += node.earned_total;
        }
        self.s.executions = total;
        self.s.vrf_time = self.beacon.spent.get();
        self.s.vrf_proofs = self.beacon.proofs.get();
        self.s.virtual_ms = self.now;
        self.s.final_blockhash = self.ledger.blockhash;
        Ok(self.s)
    }
}

#[derive(Clone, Copy)]
enum Who {
    Authority,
    User,
    Committee(usize),
    Node(usize),
}

/// Builds the network (genesis, model, nodes with stake) and runs it.
pub fn run(cfg: &Config, progress: &mut dyn FnMut(u64, u64)) -> Result<Summary, Failure> {
    let fail = |m: String| Failure {
        seed: cfg.seed,
        step: 0,
        at: 0,
        message: m,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let authority = keypair(&mut rng);
    let user = keypair(&mut rng);
    let committee: Vec<Keypair> = (0..3).map(|_| keypair(&mut rng)).collect();
    let beacon = VrfBeacon::from_seed(rng.random());
    let genesis = Genesis {
        params: cfg.params.clone(),
        mint_authority: authority.pubkey(),
        beacon: beacon.public_key(),
    };
    let ledger = Ledger::genesis(genesis).map_err(|e| fail(format!("genesis refused: {e}")))?;
    let mut nodes = Vec::with_capacity(cfg.nodes);
    let horizon = cfg.executions as u64 * cfg.submit_every_ms;
    for _ in 0..cfg.nodes {
        let key = keypair(&mut rng);
        let crash_at = rng
            .random_bool(cfg.crash_frac.clamp(0.0, 1.0))
            .then(|| rng.random_range(horizon / 10..horizon / 2 + 2));
        let slow = rng.random_bool(cfg.slow_frac.clamp(0.0, 1.0));
        let partition = rng.random_bool(cfg.partition_frac.clamp(0.0, 1.0)).then(|| {
            let a = rng.random_range(0..horizon / 2 + 1);
            (a, a + cfg.partition_ms)
        });
        let lazy = rng.random_bool(cfg.lazy_frac.clamp(0.0, 1.0));
        let colluder = rng.random_bool(cfg.collude_frac.clamp(0.0, 1.0));
        nodes.push(SimNode {
            key,
            crash_at,
            slow,
            partition,
            lazy,
            colluder,
            staked: 0,
            nonce: 0,
            results: 0,
            result_index: HashMap::new(),
            first_caught: None,
        });
    }
    let index = nodes.iter().enumerate().map(|(i, n)| (n.key.pubkey(), i)).collect();
    let mut sim = Sim {
        cfg: cfg.clone(),
        rng,
        ledger,
        beacon: TimedBeacon {
            inner: beacon,
            spent: Default::default(),
            proofs: Default::default(),
        },
        nodes,
        index,
        committee: committee.into_iter().map(|k| (k, 0)).collect(),
        authority: (authority, 0),
        user: (user, 0),
        queue: BinaryHeap::new(),
        seq: 0,
        now: 0,
        model: 1,
        s: Summary {
            seed: cfg.seed,
            ..Summary::default()
        },
        progress,
    };
    // A 4-task diamond: 1 -> 2, 1 -> 3, (2, 3) -> 4; 1000 compute units and 1 GB each.
    let spec = |n: &str| TensorSpec {
        name: n.into(),
        shape: vec![1, 256],
        dtype: "float32".into(),
    };
    let task = |ins: &[&str], outs: &[&str]| TaskDef {
        vram: GB,
        compute_units: 1000,
        inputs: ins.iter().map(|n| spec(n)).collect(),
        outputs: outs.iter().map(|n| spec(n)).collect(),
        weight_uri: "mem://w".into(),
        weight_hash: [0; 32],
        graph_hash: [0; 32],
    };
    let c = |s, d, so, di| Connection {
        source_task: s,
        destination_task: d,
        source_output: so,
        dest_input: di,
    };
    let model = ModelDef {
        name: "diamond".into(),
        inputs: vec![spec("x")],
        outputs: vec![spec("y")],
        tasks: vec![
            task(&["x"], &["a"]),
            task(&["a"], &["b"]),
            task(&["a"], &["c"]),
            task(&["b", "c"], &["y"]),
        ],
        connections: vec![
            c(0, 1, 0, 0),
            c(1, 2, 0, 0),
            c(1, 3, 0, 0),
            c(2, 4, 0, 0),
            c(3, 4, 0, 1),
            c(4, 0, 0, 0),
        ],
    };
    let check = |r: Result<Result<(), ProtocolError>, Failure>| -> Result<(), Failure> {
        r?.map_err(|e| fail(format!("setup refused: {e}")))
    };
    // Each execution escrows its tasks' costs and rewards and pays the execution fee.
    let escrow_each = 4
        * (sim.ledger.task_cost(&model.tasks[0]) * (100 + cfg.params.verification_reward_pct) / 100 + 1)
        + cfg.params.execution_fee;
    let model_fee = cfg.params.model_fee + cfg.params.model_fee_per_task * model.tasks.len() as u64;
    let user_key = sim.user.0.pubkey();
    check(sim.apply(
        Who::Authority,
        Instruction::Mint {
            to: user_key,
            amount: escrow_each * (cfg.executions as u64 + 1) + model_fee,
        },
    ))?;
    check(sim.apply(Who::User, Instruction::RegisterModel(model)))?;
    for i in 0..sim.nodes.len() {
        let vram = 8 * GB;
        let stake = sim.ledger.stake_required(vram) + 1_000 * USDC;
        let k = sim.nodes[i].key.pubkey();
        check(sim.apply(Who::Authority, Instruction::Mint { to: k, amount: stake }))?;
        check(sim.apply(
            Who::Node(i),
            Instruction::RegisterNode {
                vram,
                supports: (1..=4).map(|t| (1, t)).collect(),
            },
        ))?;
        check(sim.apply(Who::Node(i), Instruction::Stake { amount: stake }))?;
        sim.nodes[i].staked = stake;
    }
    sim.run()
}

pub struct CatchRow {
    pub after: u64,
    /// Cheating nodes that submitted at least `after` results.
    pub nodes: u64,
    pub measured: f64,
    pub expected: f64,
}

/// For nodes that cheat on every task: the fraction caught within their
/// first N results, against 1 − (1 − p(1 − r))^N.
pub fn catch_table(s: &Summary, cfg: &Config, ns: &[u64]) -> Vec<CatchRow> {
    let p = cfg.params.challenge_ppm as f64 / 1e6;
    let r = cfg.collude_frac;
    ns.iter()
        .map(|&n| {
            let eligible: Vec<_> = s
                .first_catch
                .iter()
                .filter(|(results, caught)| *results >= n || caught.is_some_and(|c| c <= n))
                .collect();
            let caught = eligible.iter().filter(|(_, c)| c.is_some_and(|c| c <= n)).count();
            CatchRow {
                after: n,
                nodes: eligible.len() as u64,
                measured: caught as f64 / eligible.len().max(1) as f64,
                expected: 1.0 - (1.0 - p * (1.0 - r)).powi(n as i32),
            }
        })
        .collect()
}
