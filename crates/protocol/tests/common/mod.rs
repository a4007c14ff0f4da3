//! What the protocol's integration tests share: a world of keys around a
//! ledger, and the oracles.
//!
//! The oracles compute every amount from the published formulas (DESIGN.md
//! §4 and the doc comments of `Params`), in u128 so that no saturation can
//! hide a difference. They never call `Ledger::task_cost`, `slash_amount`,
//! `stake_required`, `timeout` or `security_holds`: a test that asked the
//! ledger what the ledger should have done could not fail.
#![allow(dead_code)]

use splitup_protocol::crypto::to_hex;
use splitup_protocol::state::{Ledger, TaskRun};
use splitup_protocol::*;

pub mod oracle {
    use splitup_protocol::*;

    /// Task cost C = computeUnits × fee_per_cu + ⌈fee_per_gb × VRAM / GB⌉.
    pub fn task_cost(p: &Params, t: &TaskDef) -> u128 {
        t.compute_units as u128 * p.fee_per_cu as u128 + (p.fee_per_gb as u128 * t.vram as u128).div_ceil(GB as u128)
    }

    /// Verification reward R = C × verification_reward_pct / 100 (what a validator is paid).
    pub fn verification_reward(p: &Params, cost: u128) -> u128 {
        cost * p.verification_reward_pct as u128 / 100
    }

    /// Escrow of an execution: Σ over its tasks of C + R.
    pub fn escrow(p: &Params, def: &ModelDef) -> u128 {
        def.tasks
            .iter()
            .map(|t| {
                let c = task_cost(p, t);
                c + verification_reward(p, c)
            })
            .sum()
    }

    /// What a submission pays the treasury on top of its escrow:
    /// min(priority × priority_fee, priority_fee_max) + execution_fee.
    pub fn execution_fee(p: &Params, priority: u64) -> u128 {
        (priority as u128 * p.priority_fee as u128).min(p.priority_fee_max as u128) + p.execution_fee as u128
    }

    /// Registering a model: model_fee + model_fee_per_task × tasks.
    pub fn model_fee(p: &Params, tasks: usize) -> u128 {
        p.model_fee as u128 + p.model_fee_per_task as u128 * tasks as u128
    }

    /// Slash = min(max(slash_multiplier × C, slash_min), stake).
    pub fn slash(p: &Params, cost: u128, stake: u64) -> u128 {
        slash_uncapped(p, cost).min(stake as u128)
    }

    /// max(slash_multiplier × C, slash_min): the slash before the stake caps it.
    pub fn slash_uncapped(p: &Params, cost: u128) -> u128 {
        (cost * p.slash_multiplier as u128).max(p.slash_min as u128)
    }

    /// Stake required = stake_base + stake_per_gb × ⌈VRAM / GB⌉.
    pub fn stake_required(p: &Params, vram: u64) -> u128 {
        p.stake_base as u128 + p.stake_per_gb as u128 * (vram as u128).div_ceil(GB as u128)
    }

    /// Each member of a decided dispute's majority: C × committee_reward_pct / 100.
    pub fn committee_reward(p: &Params, cost: u128) -> u128 {
        cost * p.committee_reward_pct as u128 / 100
    }

    /// Task timeout: max(min, per_100cu × cu / 100), doubled per failure.
    pub fn timeout(p: &Params, t: &TaskDef, failures: u32) -> u128 {
        let base =
            (p.task_timeout_min_ms as u128).max(p.task_timeout_per_100cu_ms as u128 * t.compute_units as u128 / 100);
        base << failures.min(16)
    }

    /// The security condition p(1 − r)(R + S) > C with p and r in parts per
    /// million, R the reward actually paid and S the slashable amount:
    /// p_ppm × (10⁶ − r_ppm) × (R + S) > C × 10¹².
    pub fn secure(p: &Params, cost: u128, slashable: u128) -> bool {
        let lhs = p.challenge_ppm as u128
            * (1_000_000 - p.collusion_ppm as u128)
            * (verification_reward(p, cost) + slashable);
        lhs > cost * 1_000_000_000_000
    }

    /// The smallest strict majority of `n`.
    pub fn majority(n: usize) -> usize {
        n / 2 + 1
    }
}

pub fn key(i: u8) -> Keypair {
    Keypair::from_seed([i; 32])
}

pub fn spec() -> TensorSpec {
    TensorSpec {
        name: "t".into(),
        shape: vec![4],
        dtype: "float32".into(),
    }
}

pub fn task_def(compute_units: u64, vram: u64) -> TaskDef {
    TaskDef {
        vram,
        compute_units,
        inputs: vec![spec()],
        outputs: vec![spec()],
        weight_uri: "file://w".into(),
        weight_hash: [1; 32],
        graph_hash: [2; 32],
        checks: vec![OutputCheck::exact(&spec().name)],
    }
}

/// A chain of tasks (user → 1 → 2 → … → user), each `(compute units, VRAM bytes)`.
pub fn chain(tasks: &[(u64, u64)]) -> ModelDef {
    let c = |s, d| Connection {
        source_task: s,
        destination_task: d,
        source_output: 0,
        dest_input: 0,
    };
    let n = tasks.len() as u32;
    let mut connections: Vec<Connection> = (0..n).map(|i| c(i, i + 1)).collect();
    connections.push(c(n, 0));
    ModelDef {
        name: "chain".into(),
        inputs: vec![spec()],
        outputs: vec![spec()],
        tasks: tasks.iter().map(|&(cu, vram)| task_def(cu, vram)).collect(),
        connections,
    }
}

/// The honest output of a task (the tasks are deterministic).
pub fn truth(execution: u64, task: u32) -> [u8; 32] {
    tagged(b"truth", execution, task, 0)
}

/// A wrong output; `salt` tells cheaters apart.
pub fn forged(execution: u64, task: u32, salt: u64) -> [u8; 32] {
    tagged(b"forged", execution, task, salt)
}

fn tagged(tag: &[u8], execution: u64, task: u32, salt: u64) -> [u8; 32] {
    *blake3::hash(&[tag, &execution.to_le_bytes(), &task.to_le_bytes(), &salt.to_le_bytes()].concat()).as_bytes()
}

/// URIs that name `c` (their last path segment is its hex).
pub fn uris(c: &[u8; 32]) -> Vec<String> {
    vec![format!("https://store.example/v1/blobs/{}", to_hex(c))]
}

/// A ledger with its beacon, clock and the keys of everyone who acts on it.
pub struct World {
    pub ledger: Ledger,
    pub beacon: VrfBeacon,
    pub authority: Keypair,
    /// Owner of the models.
    pub owner: Keypair,
    /// Users who submit executions (never nodes).
    pub users: Vec<Keypair>,
    pub nodes: Vec<Keypair>,
    pub now: Millis,
}

impl World {
    /// A world whose beacon is seeded by `beacon_seed`, with `nodes` node
    /// keys (not yet registered) and two users.
    pub fn new(params: Params, beacon_seed: u8, nodes: usize) -> Result<World, ProtocolError> {
        let beacon = VrfBeacon::from_seed([beacon_seed; 32]);
        let authority = key(1);
        let ledger = Ledger::genesis(Genesis {
            params,
            mint_authority: authority.pubkey(),
            beacon: beacon.public_key(),
        })?;
        Ok(World {
            ledger,
            beacon,
            authority,
            owner: key(2),
            users: vec![key(3), key(4)],
            nodes: (0..nodes).map(|i| key(20 + i as u8)).collect(),
            now: 1_000,
        })
    }

    pub fn params(&self) -> &Params {
        &self.ledger.params
    }

    pub fn nonce(&self, k: &Keypair) -> u64 {
        self.ledger.accounts.get(&k.pubkey()).map(|a| a.nonce).unwrap_or(0)
    }

    pub fn sign(&self, k: &Keypair, ix: Instruction) -> SignedTx {
        SignedTx::sign(k, self.nonce(k), ix)
    }

    /// Submits through the signed path; a refusal must leave the state as it
    /// was, and money is conserved either way.
    pub fn send(&mut self, k: &Keypair, ix: Instruction) -> Result<(), ProtocolError> {
        let tx = self.sign(k, ix);
        let before = self.ledger.clone();
        let r = self.ledger.submit(&tx, self.now, &self.beacon);
        if r.is_err() {
            assert!(self.ledger == before, "a refused {:?} changed the state", tx.ix);
        }
        assert_eq!(
            money(&self.ledger),
            self.ledger.supply as u128,
            "money after {:?}",
            tx.ix
        );
        r
    }

    /// Advances the clock by `ms` and runs the deadlines.
    pub fn tick(&mut self, ms: Millis) {
        self.now += ms;
        self.ledger.tick(self.now, &self.beacon);
        assert_eq!(money(&self.ledger), self.ledger.supply as u128, "money after a tick");
    }

    pub fn mint(&mut self, to: Pubkey, amount: Micro) {
        let auth = self.authority.clone();
        self.send(&auth, Instruction::Mint { to, amount }).unwrap();
    }

    /// The owner registers `def` (funded for the fee first); returns its id.
    pub fn register_model(&mut self, def: ModelDef) -> u64 {
        let owner = self.owner.clone();
        self.mint(owner.pubkey(), 10 * USDC);
        self.send(&owner, Instruction::RegisterModel(def)).unwrap();
        self.ledger.next_model - 1
    }

    /// Node `i` registers with `vram` bytes supporting `supports`, staking `stake`.
    pub fn add_node(&mut self, i: usize, vram: u64, stake: Micro, supports: Vec<(u64, u32)>) {
        let k = self.nodes[i].clone();
        // Enough for the stake its VRAM requires, and some left over.
        self.mint(k.pubkey(), stake + 5_000 * USDC);
        self.send(&k, Instruction::RegisterNode { vram, supports }).unwrap();
        self.send(&k, Instruction::Stake { amount: stake }).unwrap();
    }

    /// User `u` submits an execution of `model`; returns its id.
    pub fn submit(&mut self, u: usize, model: u64) -> u64 {
        let user = self.users[u].clone();
        self.mint(user.pubkey(), 1_000 * USDC);
        self.send(
            &user,
            Instruction::SubmitExecution {
                model,
                priority: 0,
                input_commitment: [7; 32],
            },
        )
        .unwrap();
        self.ledger.next_execution - 1
    }

    pub fn run(&self, execution: u64, task: u32) -> &TaskRun {
        &self.ledger.executions[&execution].tasks[task as usize - 1]
    }

    pub fn key_of(&self, p: &Pubkey) -> Keypair {
        self.nodes
            .iter()
            .chain(&self.users)
            .chain([&self.owner, &self.authority])
            .find(|k| k.pubkey() == *p)
            .cloned()
            .unwrap_or_else(|| panic!("no key for {p:?}"))
    }

    /// The assigned node commits `c` for (execution, task).
    pub fn result(&mut self, execution: u64, task: u32, c: [u8; 32]) -> Result<(), ProtocolError> {
        let node = self.run(execution, task).node.expect("assigned");
        let k = self.key_of(&node);
        self.send(
            &k,
            Instruction::SubmitResult {
                execution,
                task,
                commitment: c,
                output_uris: uris(&c),
            },
        )
    }

    /// The drawn validator seals, then reveals `c`.
    pub fn validate(&mut self, execution: u64, task: u32, c: [u8; 32]) -> Result<(), ProtocolError> {
        let v = self.run(execution, task).validator.expect("a validator");
        let k = self.key_of(&v);
        let seal = splitup_protocol::crypto::validation_seal(&v, execution, task, &c);
        self.send(&k, Instruction::SubmitValidation { execution, task, seal })?;
        self.send(
            &k,
            Instruction::RevealValidation {
                execution,
                task,
                commitment: c,
                output_uris: uris(&c),
            },
        )
    }

    /// Committee member `m` votes.
    pub fn vote(
        &mut self,
        m: &Pubkey,
        execution: u64,
        task: u32,
        asserter_honest: Option<bool>,
        validator_honest: Option<bool>,
    ) -> Result<(), ProtocolError> {
        let k = self.key_of(m);
        self.send(
            &k,
            Instruction::DisputeVote {
                execution,
                task,
                asserter_honest,
                validator_honest,
            },
        )
    }

    pub fn stake(&self, p: &Pubkey) -> Micro {
        self.ledger.nodes[p].stake
    }

    pub fn balance(&self, p: &Pubkey) -> Micro {
        self.ledger.balance(p)
    }
}

/// Money everywhere, summed here rather than by `Ledger::money_total`:
/// balances + stakes + escrows + treasury.
pub fn money(l: &Ledger) -> u128 {
    l.accounts.values().map(|a| a.balance as u128).sum::<u128>()
        + l.nodes.values().map(|n| n.stake as u128).sum::<u128>()
        + l.executions.values().map(|e| e.escrow as u128).sum::<u128>()
        + l.treasury as u128
}
