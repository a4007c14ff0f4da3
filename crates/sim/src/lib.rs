//! A deterministic whole-network simulator for the protocol.
//!
//! One process holds the ledger state machine, N simulated staked nodes and
//! a user, on a virtual clock driven by an event queue. The nodes are the
//! whole network: they run tasks, validate the results the VRF challenges
//! (seal, then reveal) and sit on the dispute committees the VRF draws (a
//! member re-executes the task, paying for the compute, and votes). Every
//! random choice comes from one ChaCha8 stream seeded by `Config::seed`, so a
//! seed replays exactly (the final block hash and summary are equal); a
//! failing run reports its seed.
//!
//! The simulator also plays the ledger's shell and its content-addressed
//! store: a result is a blob of bytes named by its BLAKE3; the shell refuses
//! a `SubmitResult` whose blob is not in the store and a `RevealValidation`
//! whose bytes do not produce the validator's seal; the store refuses bytes
//! put under another name, and refuses an unsealed validator the bytes it
//! must check. Honest outputs of (execution, task) are [`truth_bytes`].
//!
//! Money: every execution of a task (as asserter, validator or committee
//! member) costs the node `compute_cost_pct` % of the task's fee in
//! electricity and hardware, so a node's profit is its earnings, less its
//! slashes, less the compute it spent, in USDC.
//!
//! Faults, as one options struct: crashes, slow nodes, partitions between a
//! node and the ledger, a fraction of nodes following a named [`Strategy`],
//! and a colluding fraction (a cartel with every cheater: as validators they
//! confirm a cheater's result with the cheater's own bytes, as committee
//! members they vote for the cheater and against the honest side).

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use splitup_protocol::crypto::{to_hex, validation_seal};
use splitup_protocol::state::{Ledger, TaskRun};
use splitup_protocol::*;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// Virtual time between ledger ticks.
pub const TICK_MS: Millis = 1_000;
/// The one task (1-based) of the diamond that sybil nodes claim.
pub const SYBIL_TASK: u32 = 1;

/// What a fraction of the nodes does instead of following the protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Strategy {
    /// Follows the protocol.
    #[default]
    Honest,
    /// Returns garbage (without computing) with probability q.
    Lazy,
    /// Commits the honest hash but tries to serve another blob.
    UriSwap,
    /// Commits the honest hash and never uploads the bytes.
    Withhold,
    /// As validator, says "match" without computing. It cannot seal the
    /// asserter's bytes (the store refuses them to an unsealed validator),
    /// so it seals garbage and tries to reveal the asserter's commitment:
    /// the shell refuses the reveal, the validator is replaced, unpaid.
    /// (Revealing its garbage instead is `LazyValidatorReveal`: a dispute
    /// and a slash. Silence is the better of the two for the attacker.)
    LazyValidator,
    /// As validator, seals and reveals garbage without computing.
    LazyValidatorReveal,
    /// As validator, reveals a random output to force a dispute on an honest result.
    Grief,
    /// The same total stake split over many minimum-stake nodes that all
    /// claim one task ([`SYBIL_TASK`]), return garbage with probability q,
    /// and validate and judge each other as a cartel.
    Sybil,
    /// Perturbs every output to just inside the calibrated tolerance
    /// (honest-equivalent: the committee upholds both sides) and flips
    /// argmax tokens (beyond the tolerance: garbage) with probability q.
    Tolerance,
}

impl Strategy {
    pub const ALL: [Strategy; 9] = [
        Strategy::Honest,
        Strategy::Lazy,
        Strategy::UriSwap,
        Strategy::Withhold,
        Strategy::LazyValidator,
        Strategy::LazyValidatorReveal,
        Strategy::Grief,
        Strategy::Sybil,
        Strategy::Tolerance,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Honest => "honest",
            Strategy::Lazy => "lazy",
            Strategy::UriSwap => "uri-swap",
            Strategy::Withhold => "withhold",
            Strategy::LazyValidator => "lazy-validator",
            Strategy::LazyValidatorReveal => "lazy-validator-reveal",
            Strategy::Grief => "grief",
            Strategy::Sybil => "sybil",
            Strategy::Tolerance => "tolerance",
        }
    }

    pub fn parse(s: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|x| x.name() == s)
    }

    pub fn names() -> String {
        Strategy::ALL.map(|s| s.name()).join(", ")
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Strategy, String> {
        Strategy::parse(s).ok_or_else(|| format!("unknown strategy {s:?}; one of: {}", Strategy::names()))
    }
}

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
    /// What `strategy_frac` of the nodes (exactly, rounded) do. For
    /// `Sybil`: that fraction of the nodes' stake, split over nodes of the
    /// minimum stake.
    pub strategy: Strategy,
    pub strategy_frac: f64,
    /// Per-result probability of cheating for `Lazy`, `Sybil` and `Tolerance`.
    pub q: f64,
    /// Fraction of nodes (exactly, rounded; never strategy nodes) in a
    /// cartel with every cheater.
    pub collude_frac: f64,
    /// Compute cost of one execution of a task, as a percentage of its fee.
    pub compute_cost_pct: u64,
    /// VRAM every (non-sybil) node claims; it stakes the requirement for it
    /// plus `node_stake_extra`.
    pub node_vram: u64,
    pub node_stake_extra: Micro,
    pub params: Params,
    /// Time between submissions of executions.
    pub submit_every_ms: Millis,
    /// Compute time of one task on a normal node.
    pub task_ms: Millis,
    /// Check money conservation after every `check_every` steps (1 = every step).
    pub check_every: u64,
}

/// Compute cost as a share of the fee, by default: electricity and the
/// hardware's amortisation at 60 % leave an honest node a 40 % margin.
/// (At the protocol's default `fee_per_cu`, 0.0001 USDC per 10^6 FLOPs, the
/// real cost of the FLOPs on a rented H100 is orders of magnitude lower;
/// a high figure favours the cheater, whose only saving is the compute.)
pub const COMPUTE_COST_PCT: u64 = 60;

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
            strategy: Strategy::Honest,
            strategy_frac: 0.1,
            q: 0.5,
            collude_frac: 0.0,
            compute_cost_pct: COMPUTE_COST_PCT,
            node_vram: 8 * GB,
            node_stake_extra: 1_000 * USDC,
            params: Params::default(),
            submit_every_ms: 50,
            task_ms: 2_000,
            check_every: 1,
        }
    }
}

/// One group of nodes (`honest`, a strategy's name, or `colluder`) at the end of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StrategyRow {
    pub strategy: String,
    pub nodes: u64,
    /// Stake at the start.
    pub stake: Micro,
    pub earned: Micro,
    pub slashed: Micro,
    pub slashes: u64,
    /// Compute spent (as asserter, validator and committee member).
    pub compute: Micro,
    /// Σ (earned − slashed − compute), micro-USDC.
    pub profit: i128,
    pub mean_profit_usdc: f64,
    /// Mean profit of the run's honest nodes, for comparison.
    pub honest_mean_profit_usdc: f64,
    /// Profit per 1000 USDC staked (the fair comparison for unequal stakes).
    pub profit_per_kusdc: f64,
    /// Results the ledger admitted from this group.
    pub results: u64,
    /// Validations this group delivered (sealed).
    pub validations: u64,
    /// Committee seats this group held.
    pub seats: u64,
    /// Bad results or validations this group tried: garbage, flipped
    /// tokens, withheld or swapped blobs, fake validations, confirmations
    /// of a cheater's garbage.
    pub bad_results: u64,
    /// Of which went through: a bad result completed and paid, a fake
    /// validation paid or its faker unslashed at the end of its dispute.
    pub bad_accepted: u64,
}

/// The security condition for one task of the model, with the real numbers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SecurityRow {
    pub task: u32,
    /// The task's fee C, the validator's reward R, the slash S a normal node pays.
    pub cost: Micro,
    pub reward: Micro,
    pub slash: Micro,
    pub p: f64,
    /// The collusion bound of the parameters.
    pub r: f64,
    /// p(1 − r)(R + S) > C, as the ledger checks it.
    pub holds: bool,
    /// p(1 − r)(R + S) − C, USDC.
    pub margin_usdc: f64,
    /// Compute a cheat saves (`compute_cost_pct` of C).
    pub compute: Micro,
    /// Expected gain of one lazy result against an honest one:
    /// κC − p(1 − r)(C + S), USDC (negative: cheating does not pay).
    pub cheat_gain_usdc: f64,
}

/// Draws that went to the cartel (colluders and sybils), against the
/// cartel's share of the free stake of the pool each draw was made from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShareCounts {
    pub draws: u64,
    pub cartel: u64,
    /// Σ over draws of the cartel's share of the eligible free stake.
    pub expected: f64,
}

impl ShareCounts {
    /// The cartel's share of the draws.
    pub fn share(&self) -> f64 {
        self.cartel as f64 / self.draws.max(1) as f64
    }
    /// Its mean share of the eligible stake at the draws.
    pub fn expected_share(&self) -> f64 {
        self.expected / self.draws.max(1) as f64
    }
    fn add(&mut self, cartel: bool, expected: f64) {
        self.draws += 1;
        self.cartel += cartel as u64;
        self.expected += expected;
    }
}

/// Validator draws and committee seats, in all and per task (index = task − 1).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DrawShares {
    /// The cartel's share of all stake at the start.
    pub stake_share: f64,
    pub validators: ShareCounts,
    pub seats: ShareCounts,
    pub validators_by_task: Vec<ShareCounts>,
    pub seats_by_task: Vec<ShareCounts>,
    /// Disputes whose committee had a cartel majority.
    pub committees_captured: u64,
}

/// What the ledger, its shell and its store refused from the nodes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Refusals {
    /// `SubmitResult` whose URIs do not name the commitment (the ledger).
    pub uri_not_commitment: u64,
    /// Bytes put under a name that is not their hash (the store).
    pub store_name_mismatch: u64,
    /// An unsealed validator asking for the bytes it checks (the store).
    pub store_read_unsealed: u64,
    /// `SubmitResult` whose blob is not in the store (the shell).
    pub result_blob_missing: u64,
    /// `RevealValidation` whose bytes do not produce the seal (the shell).
    pub reveal_seal_mismatch: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub seed: u64,
    pub strategy: Strategy,
    pub executions: u64,
    pub completed: u64,
    pub failed: BTreeMap<String, u64>,
    pub task_results: u64,
    pub challenges: u64,
    /// Validations performed (sealed).
    pub validations: u64,
    pub disputes: u64,
    /// Of which with no validator on record (none eligible, or none revealed in time).
    pub disputes_without_validator: u64,
    /// How disputes ended, by verdict.
    pub verdicts: BTreeMap<String, u64>,
    /// Bad results submitted (see [`StrategyRow::bad_results`], asserters only).
    pub bad_results: u64,
    /// Slashes of a cheater for one of its bad results.
    pub frauds_caught: u64,
    /// Bad results completed and paid.
    pub frauds_undetected: u64,
    pub slashed: Micro,
    pub slashes: u64,
    pub fees_paid: Micro,
    pub compute_spent: Micro,
    pub reassignments: u64,
    pub nodes_marked_unresponsive: u64,
    pub instructions: u64,
    pub steps: u64,
    pub virtual_ms: Millis,
    /// Stake lost by honest nodes (not cheaters, not colluders), other than
    /// absent penalties while they were down or cut off.
    pub honest_stake_lost: Micro,
    /// Of which in disputes whose committee had a cartel majority.
    pub honest_stake_lost_to_cartel: Micro,
    /// Absent penalties honest nodes paid for a dispute they missed while down or cut off.
    pub honest_absent_penalties: Micro,
    /// Nodes following a dishonest strategy, and how many ended with a loss.
    pub cheater_nodes: u64,
    pub cheaters_net_loss: u64,
    pub final_blockhash: [u8; 32],
    /// Time spent inside the state machine, for instructions per second.
    pub ledger_time: Duration,
    /// Of which: producing VRF proofs (the beacon key holder's work).
    pub vrf_time: Duration,
    pub vrf_proofs: u64,
    /// Per node returning bad results: (results submitted, index of the
    /// first bad one it was slashed for).
    pub first_catch: Vec<(u64, Option<u64>)>,
    /// The cartel's (colluders' and sybils') share of the stake at the start.
    pub colluding_stake_share: f64,
    /// Per group of nodes: honest, the strategy, colluders.
    pub groups: Vec<StrategyRow>,
    pub security: Vec<SecurityRow>,
    pub shares: DrawShares,
    pub refused: Refusals,
    /// Protocol findings: a task assigned to a node that is the unsealed
    /// validator of another task of the same execution, and the first case.
    pub validator_also_assigned: u64,
    pub validator_also_assigned_first: Option<String>,
    /// Assignments undone within the instruction that made them (a tick
    /// assigning a task to a node it then marks unresponsive).
    pub assignments_withdrawn: u64,
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
    /// The row of a group (`honest`, a strategy's name, `colluder`).
    pub fn group(&self, name: &str) -> Option<&StrategyRow> {
        self.groups.iter().find(|g| g.strategy == name)
    }
    /// The row of the run's strategy (the honest row for `Honest`).
    pub fn strategy_row(&self) -> Option<&StrategyRow> {
        self.group(self.strategy.name())
    }
    pub fn honest_mean_profit_usdc(&self) -> f64 {
        self.group("honest").map(|g| g.mean_profit_usdc).unwrap_or(0.0)
    }
}

/// The strategy table: one line per row, with a header.
pub fn format_rows(rows: &[StrategyRow]) -> String {
    let mut out = format!(
        "{:<22} {:>5} {:>10} {:>12} {:>12} {:>10} {:>6} {:>8} {:>7} {:>10}\n",
        "strategy", "nodes", "stake", "profit/node", "honest/node", "/kUSDC", "bad", "accepted", "slashes", "slashed"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<22} {:>5} {:>10.0} {:>12.4} {:>12.4} {:>10.4} {:>6} {:>8} {:>7} {:>10.0}\n",
            r.strategy,
            r.nodes,
            r.stake as f64 / 1e6,
            r.mean_profit_usdc,
            r.honest_mean_profit_usdc,
            r.profit_per_kusdc,
            r.bad_results,
            r.bad_accepted,
            r.slashes,
            r.slashed as f64 / 1e6
        ));
    }
    out
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
    /// Node `n` seals its validation of (execution, task, attempt, validator attempt).
    Validate(usize, u64, u32, u32, u32),
    /// Node `n` reveals `commitment` for (execution, task, attempt, validator attempt).
    Reveal(usize, u64, u32, u32, u32, [u8; 32]),
    /// Committee member `n` votes on (execution, task, attempt).
    Vote(usize, u64, u32, u32),
}

struct SimNode {
    key: Keypair,
    crash_at: Option<Millis>,
    slow: bool,
    partition: Option<(Millis, Millis)>,
    strategy: Strategy,
    colluder: bool,
    staked: Micro,
    nonce: u64,
    results: u64,
    /// Index (1-based) of each bad result it submitted, by (execution, task).
    bad_index: HashMap<(u64, u32), u64>,
    first_caught: Option<u64>,
    compute: Micro,
    validations: u64,
    seats: u64,
    slashes: u64,
    bad: u64,
    bad_accepted: u64,
}

impl SimNode {
    fn down(&self, now: Millis) -> bool {
        self.crash_at.is_some_and(|c| now >= c)
    }
    fn cut_off(&self, now: Millis) -> bool {
        self.partition.is_some_and(|(a, b)| now >= a && now < b)
    }
    /// Down or cut off at some time in [from, to].
    fn away_during(&self, from: Millis, to: Millis) -> bool {
        self.crash_at.is_some_and(|c| c <= to) || self.partition.is_some_and(|(a, b)| a <= to && b > from)
    }
    fn cheater(&self) -> bool {
        self.strategy != Strategy::Honest
    }
    /// In the cartel with every cheater.
    fn cartel(&self) -> bool {
        self.colluder || self.strategy == Strategy::Sybil
    }
    fn group(&self) -> &'static str {
        if self.cheater() {
            self.strategy.name()
        } else if self.colluder {
            "colluder"
        } else {
            "honest"
        }
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

/// A dispute in progress, as the simulator follows it.
struct Dispute {
    validator: Option<usize>,
    slashed: Vec<Pubkey>,
    /// Its committee has a cartel majority.
    captured: bool,
}

/// What a node returns as the asserter of a task.
#[derive(Clone, Copy, PartialEq)]
enum Output {
    Honest,
    /// Random bytes, not computed.
    Garbage,
    /// Within the tolerance of the honest output.
    Perturbed,
    /// Argmax tokens flipped: beyond the tolerance.
    Flipped,
    Withheld,
    Swapped,
}

/// What a node does as a validator.
#[derive(Clone, Copy, PartialEq)]
enum Check {
    /// Recomputes (honestly, or within the tolerance for `Tolerance` nodes).
    Compute,
    /// A cartel member confirms a cheater's result with the cheater's bytes.
    Confirm,
    /// Seals garbage, then tries to reveal the asserter's commitment.
    Silent,
    /// Seals and reveals garbage.
    Garbage,
}

struct Sim<'a> {
    cfg: Config,
    rng: ChaCha8Rng,
    ledger: Ledger,
    beacon: TimedBeacon,
    nodes: Vec<SimNode>,
    index: HashMap<Pubkey, usize>,
    authority: (Keypair, u64),
    user: (Keypair, u64),
    queue: BinaryHeap<Reverse<(Millis, u64, Ev)>>,
    seq: u64,
    now: Millis,
    model: u64,
    s: Summary,
    /// The content-addressed store: blobs by their BLAKE3.
    store: HashMap<[u8; 32], Vec<u8>>,
    /// Outputs within the tolerance of the honest one.
    tolerable: HashSet<[u8; 32]>,
    disputes: HashMap<(u64, u32), Dispute>,
    /// Validations faked (or cartel confirmations of bad results) by (execution, task, node).
    fake: HashSet<(u64, u32, usize)>,
    progress: &'a mut dyn FnMut(u64, u64),
}

/// The honest output bytes of a task: what every honest node computes.
pub fn truth_bytes(execution: u64, task: u32) -> Vec<u8> {
    [&b"output"[..], &execution.to_le_bytes(), &task.to_le_bytes()].concat()
}

/// The commitment of the honest output.
pub fn truth(execution: u64, task: u32) -> [u8; 32] {
    *blake3::hash(&truth_bytes(execution, task)).as_bytes()
}

fn uri(hash: &[u8; 32]) -> String {
    format!("mem://store/{}", to_hex(hash))
}

fn keypair(rng: &mut ChaCha8Rng) -> Keypair {
    Keypair::from_seed(rng.random())
}

/// Probability that a strict majority of a committee of `size`, each seat
/// independently colluding with probability r, colludes.
pub fn capture_probability(r: f64, size: u32) -> f64 {
    let n = size as i32;
    let need = size / 2 + 1;
    let mut total = 0.0;
    for k in need as i32..=n {
        let mut binom = 1.0;
        for j in 0..k {
            binom *= (n - j) as f64 / (j + 1) as f64;
        }
        total += binom * r.powi(k) * (1.0 - r).powi(n - k);
    }
    total
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

    /// As `apply`, for an instruction that must be accepted.
    fn must(&mut self, who: Who, ix: Instruction, what: &str) -> Result<(), Failure> {
        self.apply(who, ix)?
            .map_err(|e| self.fail(format!("{what} refused: {e}")))
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

    fn run_of(&self, execution: u64, task: u32) -> &TaskRun {
        &self.ledger.executions[&execution].tasks[task as usize - 1]
    }

    fn in_progress(&self, execution: u64) -> bool {
        self.ledger.executions[&execution].status == ExecStatus::InProgress
    }

    /// Node `i` spends one execution of `task`.
    fn spend(&mut self, i: usize, execution: u64, task: u32) {
        let def = &self.ledger.models[&self.ledger.executions[&execution].model].def.tasks[task as usize - 1];
        let c = self.ledger.task_cost(def) * self.cfg.compute_cost_pct / 100;
        self.nodes[i].compute += c;
        self.s.compute_spent += c;
    }

    /// Whether a committed output is the honest one or within its tolerance.
    fn honest_equivalent(&self, execution: u64, task: u32, c: &[u8; 32]) -> bool {
        *c == truth(execution, task) || self.tolerable.contains(c)
    }

    /// Puts bytes into the store under their own name.
    fn put(&mut self, bytes: Vec<u8>) -> [u8; 32] {
        let h = *blake3::hash(&bytes).as_bytes();
        self.store.insert(h, bytes);
        h
    }

    /// Puts bytes under a given name: the store refuses a name that is not their hash.
    fn put_named(&mut self, name: [u8; 32], bytes: Vec<u8>) -> bool {
        if blake3::hash(&bytes).as_bytes() != &name {
            self.s.refused.store_name_mismatch += 1;
            return false;
        }
        self.store.insert(name, bytes);
        true
    }

    /// A read of a result's bytes by `reader`: refused while the reader is
    /// the task's validator and has not sealed.
    fn read_result(&mut self, reader: usize, execution: u64, task: u32) -> Option<Vec<u8>> {
        let r = self.run_of(execution, task);
        if r.validator == Some(self.nodes[reader].key.pubkey()) && r.validator_seal.is_none() {
            self.s.refused.store_read_unsealed += 1;
            return None;
        }
        r.commitment.and_then(|c| self.store.get(&c).cloned())
    }

    /// The cartel's share of the free stake eligible for `task` of
    /// `execution`, leaving out `avoid` (`chosen` were eligible when drawn).
    fn cartel_share(&self, execution: u64, task: u32, avoid: &[Pubkey], chosen: &[Pubkey], judge: bool) -> f64 {
        if self.s.colluding_stake_share == 0.0 {
            return 0.0;
        }
        let model = self.ledger.executions[&execution].model;
        let Some(list) = self.ledger.candidates.get(&(model, task)) else {
            return 0.0;
        };
        let (mut cartel, mut total) = (0u128, 0u128);
        for k in list {
            if avoid.contains(k) {
                continue;
            }
            let ok = chosen.contains(k)
                || match self.ledger.ineligible(k, execution, task) {
                    None => true,
                    // A committee seat holds no load.
                    Some(why) => judge && why == "at its load limit",
                };
            if ok {
                let w = self.ledger.nodes[k].free_stake() as u128;
                total += w;
                if self.nodes[self.index[k]].cartel() {
                    cartel += w;
                }
            }
        }
        cartel as f64 / total.max(1) as f64
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
                // Invariant: only live, capable, staked nodes get work. (Checked
                // after the instruction: a tick may assign a task to a node it
                // then finds silent, and hands the task back at once.)
                let n = &self.ledger.nodes[&node];
                let e = &self.ledger.executions[&execution];
                let r = &e.tasks[task as usize - 1];
                let still = e.status == ExecStatus::InProgress
                    && r.status == TaskStatus::Assigned
                    && r.node == Some(node)
                    && r.attempts == attempt;
                if !still {
                    self.s.assignments_withdrawn += 1;
                    return Ok(());
                }
                let def = &self.ledger.models[&e.model].def.tasks[task as usize - 1];
                let cost = self.ledger.task_cost(def);
                let why = if n.status != NodeStatus::Active {
                    Some(format!("{:?}", n.status))
                } else if !n.supports.contains(&(e.model, task)) || n.vram < def.vram {
                    Some("it does not support the task".into())
                } else if n.free_stake() < self.ledger.stake_required(n.vram) {
                    Some(format!(
                        "free stake {} below {}",
                        n.free_stake(),
                        self.ledger.stake_required(n.vram)
                    ))
                } else if !security_holds(&self.ledger.params, cost, self.ledger.slash_amount(cost, n)) {
                    Some("the security condition fails for its stake".into())
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(self.fail(format!(
                        "task {execution}/{task} assigned to ineligible node {} ({why})",
                        node.short()
                    )));
                }
                if attempt > 1 {
                    self.s.reassignments += 1;
                }
                // An unsealed validator never gets a task of the same execution
                // (downstream, it would read the bytes it checks before sealing).
                for (t, r) in self.ledger.executions[&execution].tasks.iter().enumerate() {
                    if r.status == TaskStatus::Challenged && r.validator == Some(node) && r.validator_seal.is_none() {
                        self.s.validator_also_assigned += 1;
                        if self.s.validator_also_assigned_first.is_none() {
                            self.s.validator_also_assigned_first = Some(format!(
                                "t = {} ms: task {execution}/{task} assigned to {}, the unsealed validator of task {} of the same execution",
                                self.now,
                                node.short(),
                                t + 1
                            ));
                        }
                    }
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
                let r = self.run_of(execution, task);
                let (attempts, vattempts) = (r.attempts, r.validator_attempts);
                let asserter = self.index[&r.node.expect("a challenged task has an asserter")];
                // The pool it was drawn from: no node holding a task of the
                // same execution (but it, if one was assigned to it since).
                let avoid: Vec<Pubkey> = self.ledger.executions[&execution]
                    .tasks
                    .iter()
                    .filter_map(|r| r.node)
                    .filter(|k| *k != validator)
                    .collect();
                let share = self.cartel_share(execution, task, &avoid, &[validator], false);
                let i = self.index[&validator];
                let cartel = self.nodes[i].cartel();
                let sh = &mut self.s.shares;
                sh.validators.add(cartel, share);
                sh.validators_by_task[task as usize - 1].add(cartel, share);
                let delay = if self.check(i, asserter) == Check::Compute {
                    self.compute_ms(i)
                } else {
                    TICK_MS
                };
                self.push(self.now + delay, Ev::Validate(i, execution, task, attempts, vattempts));
            }
            Event::Drawn { challenged, .. } if challenged => {
                self.s.challenges += 1;
            }
            Event::Disputed {
                execution,
                task,
                asserter,
                validator,
                committee,
                ..
            } => {
                self.s.disputes += 1;
                if validator.is_none() {
                    self.s.disputes_without_validator += 1;
                }
                let mut avoid = vec![asserter];
                avoid.extend(validator);
                let share = self.cartel_share(execution, task, &avoid, &committee, true);
                let mut cartel = 0;
                for m in &committee {
                    let c = self.nodes[self.index[m]].cartel();
                    cartel += c as u32;
                    self.s.shares.seats.add(c, share);
                    self.s.shares.seats_by_task[task as usize - 1].add(c, share);
                }
                let captured = cartel >= state::majority(self.ledger.params.committee_size);
                if captured {
                    self.s.shares.committees_captured += 1;
                }
                self.disputes.insert(
                    (execution, task),
                    Dispute {
                        validator: validator.map(|v| self.index[&v]),
                        slashed: vec![],
                        captured,
                    },
                );
                let attempts = self.run_of(execution, task).attempts;
                for m in committee {
                    let i = self.index[&m];
                    self.nodes[i].seats += 1;
                    let delay = if self.vote(i, execution, task).2 {
                        self.compute_ms(i)
                    } else {
                        TICK_MS
                    };
                    self.push(self.now + delay, Ev::Vote(i, execution, task, attempts));
                }
            }
            Event::DisputeEnded {
                execution,
                task,
                verdict,
            } => {
                let key = verdict.split(':').next().unwrap_or("").to_string();
                *self.s.verdicts.entry(key).or_default() += 1;
                if let Some(d) = self.disputes.remove(&(execution, task)) {
                    if let Some(v) = d.validator {
                        // A fake validation went through if its validator was not slashed.
                        if self.fake.contains(&(execution, task, v)) && !d.slashed.contains(&self.nodes[v].key.pubkey())
                        {
                            self.nodes[v].bad_accepted += 1;
                        }
                    }
                }
            }
            Event::Slashed {
                node,
                amount,
                execution,
                task,
            } => {
                self.s.slashed += amount;
                self.s.slashes += 1;
                let mut captured = false;
                if let Some(d) = self.disputes.get_mut(&(execution, task)) {
                    d.slashed.push(node);
                    captured = d.captured;
                }
                let i = self.index[&node];
                self.nodes[i].slashes += 1;
                if let Some(&idx) = self.nodes[i].bad_index.get(&(execution, task)) {
                    self.s.frauds_caught += 1;
                    // Which of its bad results was caught (not how many it has sent since).
                    let first = self.nodes[i].first_caught.map_or(idx, |f| f.min(idx));
                    self.nodes[i].first_caught = Some(first);
                }
                let n = &self.nodes[i];
                if !n.cheater() && !n.colluder {
                    let from = self.now.saturating_sub(self.ledger.params.dispute_ms);
                    if amount <= self.ledger.params.absent_penalty && n.away_during(from, self.now) {
                        self.s.honest_absent_penalties += amount;
                    } else {
                        self.s.honest_stake_lost += amount;
                        if captured {
                            self.s.honest_stake_lost_to_cartel += amount;
                        }
                    }
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

    /// What validator `i` does with the result of `asserter`.
    fn check(&self, i: usize, asserter: usize) -> Check {
        match self.nodes[i].strategy {
            Strategy::LazyValidator => Check::Silent,
            Strategy::LazyValidatorReveal | Strategy::Grief => Check::Garbage,
            _ if self.nodes[i].cartel() && self.nodes[asserter].cheater() => Check::Confirm,
            _ => Check::Compute,
        }
    }

    /// Committee member `i`'s vote on (execution, task): (asserter honest,
    /// validator honest, whether it re-executes the task to judge).
    fn vote(&self, i: usize, execution: u64, task: u32) -> (Option<bool>, Option<bool>, bool) {
        let r = self.run_of(execution, task);
        let asserter = &self.nodes[self.index[&r.node.expect("a disputed task has an asserter")]];
        let validator = r.validator.map(|v| &self.nodes[self.index[&v]]);
        let a_ok = r
            .commitment
            .is_some_and(|c| self.honest_equivalent(execution, task, &c));
        let v_ok = r
            .validator_commitment
            .map(|c| self.honest_equivalent(execution, task, &c));
        let me = &self.nodes[i];
        match me.strategy {
            // "Match" without computing.
            Strategy::LazyValidator | Strategy::LazyValidatorReveal => (Some(true), v_ok.map(|_| true), false),
            _ if me.cartel() && (asserter.cheater() || validator.is_some_and(|v| v.cheater())) => {
                let a = asserter.cheater() || a_ok;
                let v = v_ok.map(|ok| {
                    if validator.is_some_and(|v| v.cheater()) {
                        true
                    } else if asserter.cheater() {
                        false
                    } else {
                        ok
                    }
                });
                (Some(a), v, false)
            }
            _ => (Some(a_ok), v_ok, true),
        }
    }

    fn on_result(&mut self, i: usize, execution: u64, task: u32, attempt: u32) -> Result<(), Failure> {
        if self.nodes[i].down(self.now) {
            return Ok(());
        }
        let q = self.cfg.q.clamp(0.0, 1.0);
        let out = match self.nodes[i].strategy {
            Strategy::Lazy | Strategy::Sybil if self.rng.random_bool(q) => Output::Garbage,
            Strategy::Tolerance if self.rng.random_bool(q) => Output::Flipped,
            Strategy::Tolerance => Output::Perturbed,
            Strategy::Withhold => Output::Withheld,
            Strategy::UriSwap => Output::Swapped,
            _ => Output::Honest,
        };
        if out != Output::Garbage {
            self.spend(i, execution, task);
        }
        // Only the current attempt of a node still holding the task reports.
        let key = self.nodes[i].key.pubkey();
        let r = self.run_of(execution, task);
        if self.nodes[i].cut_off(self.now)
            || !self.in_progress(execution)
            || r.status != TaskStatus::Assigned
            || r.node != Some(key)
            || r.attempts != attempt
        {
            return Ok(());
        }
        let honest = truth_bytes(execution, task);
        let tag = |t: &[u8], x: u64| [t, &execution.to_le_bytes(), &task.to_le_bytes(), &x.to_le_bytes()].concat();
        let commitment = match out {
            Output::Honest => self.put(honest),
            Output::Garbage => {
                let x = self.rng.random();
                self.put(tag(b"garbage", x))
            }
            Output::Perturbed => {
                let h = self.put(tag(b"perturbed", i as u64));
                self.tolerable.insert(h);
                h
            }
            Output::Flipped => {
                let x = self.rng.random();
                self.put(tag(b"flipped", x))
            }
            Output::Withheld => truth(execution, task),
            Output::Swapped => {
                // The honest hash, other bytes: first behind a URI naming
                // them (the ledger refuses a URI that does not name the
                // commitment), then under the commitment's own name (the
                // store refuses bytes that are not the name's).
                let c = truth(execution, task);
                let other = self.rng.random::<u64>();
                let other = tag(b"swapped", other);
                let named = *blake3::hash(&other).as_bytes();
                let ix = Instruction::SubmitResult {
                    execution,
                    task,
                    commitment: c,
                    output_uris: vec![uri(&named)],
                };
                match self.apply(Who::Node(i), ix)? {
                    Err(ProtocolError::Invalid(_)) => self.s.refused.uri_not_commitment += 1,
                    other => {
                        return Err(self.fail(format!(
                            "a result whose URI names other bytes than its commitment was not refused as invalid: {other:?}"
                        )))
                    }
                }
                self.put_named(c, other);
                c
            }
        };
        let bad = matches!(
            out,
            Output::Garbage | Output::Flipped | Output::Withheld | Output::Swapped
        );
        if bad {
            self.nodes[i].bad += 1;
            self.s.bad_results += 1;
        }
        // The shell admits a result only once its blob is in the store.
        if !self.store.contains_key(&commitment) {
            self.s.refused.result_blob_missing += 1;
            return Ok(());
        }
        self.nodes[i].results += 1;
        self.s.task_results += 1;
        if matches!(out, Output::Garbage | Output::Flipped) {
            let idx = self.nodes[i].results;
            self.nodes[i].bad_index.insert((execution, task), idx);
        }
        self.must(
            Who::Node(i),
            Instruction::SubmitResult {
                execution,
                task,
                commitment,
                output_uris: vec![uri(&commitment)],
            },
            "result",
        )
    }

    fn validating(&self, i: usize, execution: u64, task: u32, attempts: u32, vattempts: u32) -> bool {
        if !self.in_progress(execution) {
            return false;
        }
        let r = self.run_of(execution, task);
        r.status == TaskStatus::Challenged
            && r.validator == Some(self.nodes[i].key.pubkey())
            && r.attempts == attempts
            && r.validator_attempts == vattempts
    }

    fn on_validate(&mut self, i: usize, execution: u64, task: u32, a: u32, va: u32) -> Result<(), Failure> {
        if self.nodes[i].down(self.now) || !self.validating(i, execution, task, a, va) {
            return Ok(());
        }
        if let Some(back) = self.back_online(i) {
            self.push(back, Ev::Validate(i, execution, task, a, va));
            return Ok(());
        }
        if self.run_of(execution, task).validator_seal.is_some() {
            return Ok(());
        }
        let r = self.run_of(execution, task);
        let asserted = r.commitment.expect("a challenged task has a commitment");
        let asserter = self.index[&r.node.expect("a challenged task has an asserter")];
        let plan = self.check(i, asserter);
        let bytes = match plan {
            Check::Compute => {
                self.spend(i, execution, task);
                if self.nodes[i].strategy == Strategy::Tolerance {
                    let b = [
                        &b"perturbed"[..],
                        &execution.to_le_bytes(),
                        &task.to_le_bytes(),
                        &(i as u64).to_le_bytes(),
                    ]
                    .concat();
                    self.tolerable.insert(*blake3::hash(&b).as_bytes());
                    b
                } else {
                    truth_bytes(execution, task)
                }
            }
            // The cheater hands its bytes over outside the protocol.
            Check::Confirm => self.store[&asserted].clone(),
            Check::Silent | Check::Garbage => {
                // The store will not show the asserter's bytes before a seal.
                if self.read_result(i, execution, task).is_some() {
                    return Err(self.fail("the store let an unsealed validator read the result it checks".into()));
                }
                let x: u64 = self.rng.random();
                [&b"fake"[..], &x.to_le_bytes()].concat()
            }
        };
        if plan != Check::Compute && !(plan == Check::Confirm && self.honest_equivalent(execution, task, &asserted)) {
            self.fake.insert((execution, task, i));
            self.nodes[i].bad += 1;
        }
        let key = self.nodes[i].key.pubkey();
        let seal = validation_seal(&key, execution, task, &bytes);
        let reveal = if plan == Check::Silent {
            // Never uploaded; it will claim the asserter's commitment.
            asserted
        } else {
            self.put(bytes)
        };
        self.s.validations += 1;
        self.nodes[i].validations += 1;
        self.must(
            Who::Node(i),
            Instruction::SubmitValidation { execution, task, seal },
            "validation seal",
        )?;
        // The reveal goes in once the seal is on the ledger (the next slot).
        self.push(self.now + state::SLOT_MS, Ev::Reveal(i, execution, task, a, va, reveal));
        Ok(())
    }

    fn on_reveal(&mut self, i: usize, execution: u64, task: u32, a: u32, va: u32, c: [u8; 32]) -> Result<(), Failure> {
        if self.nodes[i].down(self.now) || !self.validating(i, execution, task, a, va) {
            return Ok(());
        }
        if let Some(back) = self.back_online(i) {
            self.push(back, Ev::Reveal(i, execution, task, a, va, c));
            return Ok(());
        }
        let r = self.run_of(execution, task);
        let (Some(seal), None) = (r.validator_seal, r.validator_commitment) else {
            return Ok(());
        };
        let asserted = r.commitment;
        // The shell: the revealed bytes must exist and produce the seal.
        let key = self.nodes[i].key.pubkey();
        if self.store.get(&c).map(|b| validation_seal(&key, execution, task, b)) != Some(seal) {
            self.s.refused.reveal_seal_mismatch += 1;
            return Ok(());
        }
        self.must(
            Who::Node(i),
            Instruction::RevealValidation {
                execution,
                task,
                commitment: c,
                output_uris: vec![uri(&c)],
            },
            "validation reveal",
        )?;
        if asserted == Some(c) && self.fake.contains(&(execution, task, i)) {
            // A fake validation (or a confirmation of garbage) taken as a match.
            self.nodes[i].bad_accepted += 1;
        }
        Ok(())
    }

    fn on_vote(&mut self, i: usize, execution: u64, task: u32, attempts: u32) -> Result<(), Failure> {
        let n = &self.nodes[i];
        if n.down(self.now) || !self.in_progress(execution) {
            return Ok(());
        }
        let (asserter_honest, validator_honest, computes) = {
            let r = self.run_of(execution, task);
            let key = self.nodes[i].key.pubkey();
            if r.status != TaskStatus::Disputed
                || r.attempts != attempts
                || !r.committee.contains(&key)
                || r.votes.contains_key(&key)
            {
                // Decided without this member (it re-executed all the same).
                if self.vote_would_compute(i) {
                    self.spend(i, execution, task);
                }
                return Ok(());
            }
            self.vote(i, execution, task)
        };
        if let Some(back) = self.back_online(i) {
            // Cut off from the ledger: it votes when the partition ends.
            self.push(back, Ev::Vote(i, execution, task, attempts));
            return Ok(());
        }
        if computes {
            self.spend(i, execution, task);
        }
        match self.apply(
            Who::Node(i),
            Instruction::DisputeVote {
                execution,
                task,
                asserter_honest,
                validator_honest,
            },
        )? {
            Ok(()) | Err(ProtocolError::Locked(_)) => Ok(()),
            Err(e) => Err(self.fail(format!("committee vote refused: {e}"))),
        }
    }

    /// When node `i`, cut off from the ledger now, reaches it again.
    fn back_online(&self, i: usize) -> Option<Millis> {
        let n = &self.nodes[i];
        n.cut_off(self.now)
            .then(|| n.partition.map_or(self.now, |p| p.1) + TICK_MS)
    }

    /// Whether member `i` re-executes before voting, as far as the task's state no longer says.
    fn vote_would_compute(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        !n.cartel() && !matches!(n.strategy, Strategy::LazyValidator | Strategy::LazyValidatorReveal)
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
                        self.must(Who::Node(i), Instruction::Heartbeat, "heartbeat")?;
                    }
                    let next = self.now + self.ledger.params.heartbeat_ms;
                    self.push(next, Ev::Heartbeat(i));
                }
                Ev::Submit(_) => {
                    let ix = Instruction::SubmitExecution {
                        model: self.model,
                        priority: 0,
                        input_commitment: [0; 32],
                    };
                    self.must(Who::User, ix, "submission")?;
                }
                Ev::Result(i, execution, task, attempt) => self.on_result(i, execution, task, attempt)?,
                Ev::Validate(i, execution, task, a, va) => self.on_validate(i, execution, task, a, va)?,
                Ev::Reveal(i, execution, task, a, va, c) => self.on_reveal(i, execution, task, a, va, c)?,
                Ev::Vote(i, execution, task, a) => self.on_vote(i, execution, task, a)?,
            }
        }
        if self.ledger.money_total() != self.ledger.supply as u128 {
            return Err(self.fail("money not conserved at the end".into()));
        }
        let remaining = total - self.s.completed - self.s.failed.values().sum::<u64>();
        if remaining > 0 {
            return Err(self.fail(format!("{remaining} executions neither completed nor failed")));
        }
        // Bad results that were completed and paid.
        for (id, e) in &self.ledger.executions {
            for (t, r) in e.tasks.iter().enumerate() {
                let task = t as u32 + 1;
                if r.status == TaskStatus::Completed {
                    let c = r.commitment.expect("a completed task has a commitment");
                    if !self.honest_equivalent(*id, task, &c) {
                        self.s.frauds_undetected += 1;
                        let i = self.index[&r.node.expect("a completed task has a node")];
                        self.nodes[i].bad_accepted += 1;
                    }
                    if !self.store.contains_key(&c) {
                        return Err(self.fail(format!("task {id}/{task} completed but its blob is not in the store")));
                    }
                }
            }
        }
        self.finish()
    }

    /// Per-node and per-group accounting at the end of the run.
    fn finish(mut self) -> Result<Summary, Failure> {
        let mut groups: BTreeMap<&'static str, StrategyRow> = BTreeMap::new();
        for n in &self.nodes {
            let key = n.key.pubkey();
            let node = &self.ledger.nodes[&key];
            let end = node.stake as i128 + self.ledger.balance(&key) as i128;
            // Every change to a node's money is an earning or a slash.
            if node.earned_total as i128 - node.slashed_total as i128 != end - n.staked as i128 {
                return Err(self.fail(format!(
                    "node {} earned {} and lost {} but its money moved by {}",
                    key.short(),
                    node.earned_total,
                    node.slashed_total,
                    end - n.staked as i128
                )));
            }
            let profit = end - n.staked as i128 - n.compute as i128;
            let g = groups.entry(n.group()).or_default();
            g.nodes += 1;
            g.stake += n.staked;
            g.earned += node.earned_total;
            g.slashed += node.slashed_total;
            g.slashes += n.slashes;
            g.compute += n.compute;
            g.profit += profit;
            g.results += n.results;
            g.validations += n.validations;
            g.seats += n.seats;
            g.bad_results += n.bad;
            g.bad_accepted += n.bad_accepted;
            if n.cheater() {
                self.s.cheater_nodes += 1;
                if profit < 0 {
                    self.s.cheaters_net_loss += 1;
                }
            }
            if !n.bad_index.is_empty() || matches!(n.strategy, Strategy::Lazy | Strategy::Sybil | Strategy::Tolerance) {
                self.s.first_catch.push((n.results, n.first_caught));
            }
            self.s.fees_paid += node.earned_total;
        }
        let honest_mean = groups
            .get("honest")
            .map(|g| g.profit as f64 / g.nodes.max(1) as f64 / 1e6)
            .unwrap_or(0.0);
        let order = |name: &str| match name {
            "honest" => 0,
            "colluder" => 2,
            _ => 1,
        };
        let mut rows: Vec<StrategyRow> = groups
            .into_iter()
            .map(|(name, mut r)| {
                r.strategy = name.to_string();
                r.mean_profit_usdc = r.profit as f64 / r.nodes.max(1) as f64 / 1e6;
                r.honest_mean_profit_usdc = honest_mean;
                r.profit_per_kusdc = r.profit as f64 / r.stake.max(1) as f64 * 1000.0;
                r
            })
            .collect();
        rows.sort_by_key(|r| order(&r.strategy));
        self.s.groups = rows;
        self.s.executions = self.cfg.executions as u64;
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
    Node(usize),
}

/// The security condition and the cheat's expected gain for every task of
/// `model`, with the collusion bound r the ledger checks it with.
fn security_rows(ledger: &Ledger, model: &ModelDef, node_stake: Micro, cfg: &Config, r: f64) -> Vec<SecurityRow> {
    let p = &ledger.params;
    model
        .tasks
        .iter()
        .enumerate()
        .map(|(t, def)| {
            let cost = ledger.task_cost(def);
            let reward = cost * p.verification_reward_pct / 100;
            let slash = cost.saturating_mul(p.slash_multiplier).max(p.slash_min).min(node_stake);
            let pf = p.challenge_ppm as f64 / 1e6;
            let compute = cost * cfg.compute_cost_pct / 100;
            let usdc = |m: Micro| m as f64 / 1e6;
            SecurityRow {
                task: t as u32 + 1,
                cost,
                reward,
                slash,
                p: pf,
                r,
                holds: security_holds(p, cost, slash),
                margin_usdc: pf * (1.0 - r) * (usdc(reward) + usdc(slash)) - usdc(cost),
                compute,
                cheat_gain_usdc: usdc(compute) - pf * (1.0 - r) * (usdc(cost) + usdc(slash)),
            }
        })
        .collect()
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
    let beacon = VrfBeacon::from_seed(rng.random());
    let genesis = Genesis {
        params: cfg.params.clone(),
        mint_authority: authority.pubkey(),
        beacon: beacon.public_key(),
    };
    let ledger = Ledger::genesis(genesis).map_err(|e| fail(format!("genesis refused: {e}")))?;
    let normal_stake = ledger.stake_required(cfg.node_vram) + cfg.node_stake_extra;
    // Roles: exactly round(frac × nodes) of each, drawn by the seed.
    let count = |f: f64| ((f.clamp(0.0, 1.0) * cfg.nodes as f64).round() as usize).min(cfg.nodes);
    let k_strategy = if cfg.strategy == Strategy::Honest {
        0
    } else {
        count(cfg.strategy_frac)
    };
    let k_collude = count(cfg.collude_frac).min(cfg.nodes - k_strategy);
    let mut order: Vec<usize> = (0..cfg.nodes).collect();
    order.shuffle(&mut rng);
    // (strategy, colluder, vram, stake) per node.
    let mut roles: Vec<(Strategy, bool, u64, Micro)> =
        vec![(Strategy::Honest, false, cfg.node_vram, normal_stake); cfg.nodes];
    for &i in &order[k_strategy..k_strategy + k_collude] {
        roles[i].1 = true;
    }
    if cfg.strategy == Strategy::Sybil {
        // The same stake as k_strategy normal nodes, split over nodes of
        // the minimum stake for the task's VRAM.
        let mut gone: Vec<usize> = order[..k_strategy].to_vec();
        gone.sort_unstable();
        for i in gone.into_iter().rev() {
            roles.remove(i);
        }
        let vram = GB;
        let small = ledger.stake_required(vram);
        let m = (k_strategy as u128 * normal_stake as u128 / small as u128) as usize;
        roles.extend(std::iter::repeat_n((Strategy::Sybil, false, vram, small), m));
    } else {
        for &i in &order[..k_strategy] {
            roles[i].0 = cfg.strategy;
        }
    }
    let mut nodes = Vec::with_capacity(roles.len());
    let horizon = cfg.executions as u64 * cfg.submit_every_ms;
    for &(strategy, colluder, _, _) in &roles {
        let key = keypair(&mut rng);
        let crash_at = rng
            .random_bool(cfg.crash_frac.clamp(0.0, 1.0))
            .then(|| rng.random_range(horizon / 10..horizon / 2 + 2));
        let slow = rng.random_bool(cfg.slow_frac.clamp(0.0, 1.0));
        let partition = rng.random_bool(cfg.partition_frac.clamp(0.0, 1.0)).then(|| {
            let a = rng.random_range(0..horizon / 2 + 1);
            (a, a + cfg.partition_ms)
        });
        nodes.push(SimNode {
            key,
            crash_at,
            slow,
            partition,
            strategy,
            colluder,
            staked: 0,
            nonce: 0,
            results: 0,
            bad_index: HashMap::new(),
            first_caught: None,
            compute: 0,
            validations: 0,
            seats: 0,
            slashes: 0,
            bad: 0,
            bad_accepted: 0,
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
        authority: (authority, 0),
        user: (user, 0),
        queue: BinaryHeap::new(),
        seq: 0,
        now: 0,
        model: 1,
        s: Summary {
            seed: cfg.seed,
            strategy: cfg.strategy,
            ..Summary::default()
        },
        store: HashMap::new(),
        tolerable: HashSet::new(),
        disputes: HashMap::new(),
        fake: HashSet::new(),
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
        checks: outs.iter().map(|n| OutputCheck::exact(n)).collect(),
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
    check(sim.apply(Who::User, Instruction::RegisterModel(model.clone())))?;
    let total_stake: Micro = roles.iter().map(|r| r.3).sum();
    let cartel_stake: Micro = roles
        .iter()
        .filter(|r| r.1 || r.0 == Strategy::Sybil)
        .map(|r| r.3)
        .sum();
    for (i, &(strategy, _, vram, stake)) in roles.iter().enumerate() {
        let k = sim.nodes[i].key.pubkey();
        let supports = if strategy == Strategy::Sybil {
            vec![(1, SYBIL_TASK)]
        } else {
            (1..=4).map(|t| (1, t)).collect()
        };
        check(sim.apply(Who::Authority, Instruction::Mint { to: k, amount: stake }))?;
        check(sim.apply(Who::Node(i), Instruction::RegisterNode { vram, supports }))?;
        check(sim.apply(Who::Node(i), Instruction::Stake { amount: stake }))?;
        sim.nodes[i].staked = stake;
    }
    let r = cartel_stake as f64 / total_stake.max(1) as f64;
    sim.s.colluding_stake_share = r;
    sim.s.shares.stake_share = r;
    let bound = cfg.params.collusion_ppm as f64 / 1e6;
    sim.s.shares.validators_by_task = vec![ShareCounts::default(); model.tasks.len()];
    sim.s.shares.seats_by_task = vec![ShareCounts::default(); model.tasks.len()];
    sim.s.security = security_rows(&sim.ledger, &model, normal_stake, cfg, bound);
    sim.run()
}

pub struct CatchRow {
    pub after: u64,
    /// Cheating nodes that submitted at least `after` results.
    pub nodes: u64,
    pub measured: f64,
    /// 1 − (1 − p(1 − r))^N, r the cartel's stake share.
    pub expected: f64,
    /// The same with a captured committee (a cartel majority) letting the cheat through:
    /// 1 − (1 − p(1 − r)(1 − c))^N.
    pub expected_with_committee: f64,
}

/// For nodes that cheat on every task: the fraction caught within their
/// first N results, against 1 − (1 − p(1 − r))^N with r the colluders'
/// share of the stake (draws are weighted by stake).
pub fn catch_table(s: &Summary, cfg: &Config, ns: &[u64]) -> Vec<CatchRow> {
    let p = cfg.params.challenge_ppm as f64 / 1e6;
    let r = s.colluding_stake_share;
    let c = capture_probability(r, cfg.params.committee_size);
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
                expected_with_committee: 1.0 - (1.0 - p * (1.0 - r) * (1.0 - c)).powi(n as i32),
            }
        })
        .collect()
}
