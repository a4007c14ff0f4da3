//! The ledger state and its transitions.
//!
//! Every handler validates everything before it mutates anything, so a
//! rejected instruction leaves the state exactly as it was (asserted by the
//! property tests). Time (`now`) and randomness (the [`Beacon`]) are arguments.

use crate::crypto::{verify_signature, Beacon, Pubkey, VrfProof};
use crate::types::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub balance: Micro,
    pub nonce: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum NodeStatus {
    Active,
    Unresponsive,
    /// Left gracefully (`Leave`); active again at its next heartbeat.
    Offline,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub vram: u64,
    /// Total staked, including any amount waiting out its unstake lockup.
    pub stake: Micro,
    pub unstaking: Option<(Micro, Millis)>,
    pub supports: BTreeSet<(u64, u32)>,
    pub last_heartbeat: Millis,
    pub status: NodeStatus,
    /// Tasks and validations currently held.
    pub load: u32,
    /// Disputes it is party to (asserter, validator or committee member).
    pub disputes: u32,
    pub slashed_total: Micro,
    pub earned_total: Micro,
}

impl Node {
    pub fn free_stake(&self) -> Micro {
        self.stake - self.unstaking.map(|u| u.0).unwrap_or(0)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub owner: Pubkey,
    pub def: ModelDef,
    pub active: bool,
    /// Per task (0-based): the tasks (1-based) it reads from.
    pub upstream: Vec<Vec<u32>>,
    pub downstream: Vec<Vec<u32>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TaskStatus {
    /// Waiting for upstream results.
    Pending,
    /// Inputs exist; no node holds it.
    Ready,
    Assigned,
    /// Result committed and challenged: a validator re-executes.
    Challenged,
    /// Asserter and validator disagree (or no validator answered): the committee decides.
    Disputed,
    Completed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRun {
    pub status: TaskStatus,
    pub node: Option<Pubkey>,
    pub attempts: u32,
    /// Timeouts of this task so far: each doubles its timeout.
    pub failures: u32,
    pub deadline: Millis,
    pub commitment: Option<[u8; 32]>,
    pub output_uris: Vec<String>,
    pub draw: Option<VrfProof>,
    pub challenged: bool,
    pub validator: Option<Pubkey>,
    /// The validator's sealed recomputation ([`crate::crypto::validation_seal`]).
    pub validator_seal: Option<[u8; 32]>,
    /// Revealed after the seal: the BLAKE3 of its outputs, and where they are.
    pub validator_commitment: Option<[u8; 32]>,
    pub validator_uris: Vec<String>,
    pub validator_attempts: u32,
    /// The committee drawn for a dispute, and each member's (asserter
    /// honest?, validator honest?) vote.
    pub committee: Vec<Pubkey>,
    pub votes: BTreeMap<Pubkey, Vote>,
    /// Nodes that failed or cheated on this task: not assigned it again.
    pub excluded: Vec<Pubkey>,
    /// Already paid from escrow (so an invalidation refunds from the treasury).
    pub paid: bool,
    pub outcome: Option<String>,
    /// While Ready with no eligible node: when the execution gives up.
    pub ready_deadline: Option<Millis>,
    /// Nodes that reported this task unrunnable (`ReportUnrunnable`).
    #[serde(default)]
    pub unrunnable: Vec<Pubkey>,
}

impl TaskRun {
    fn new() -> TaskRun {
        TaskRun {
            status: TaskStatus::Pending,
            node: None,
            attempts: 0,
            failures: 0,
            deadline: 0,
            commitment: None,
            output_uris: vec![],
            draw: None,
            challenged: false,
            validator: None,
            validator_seal: None,
            validator_commitment: None,
            validator_uris: vec![],
            validator_attempts: 0,
            committee: vec![],
            votes: BTreeMap::new(),
            excluded: vec![],
            paid: false,
            outcome: None,
            ready_deadline: None,
            unrunnable: vec![],
        }
    }
    /// Its output can feed downstream tasks (optimistically while challenged).
    fn has_output(&self) -> bool {
        matches!(
            self.status,
            TaskStatus::Completed | TaskStatus::Challenged | TaskStatus::Disputed
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ExecStatus {
    InProgress,
    Completed,
    Failed(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub model: u64,
    pub user: Pubkey,
    pub priority: u64,
    pub input_commitment: [u8; 32],
    pub escrow: Micro,
    pub status: ExecStatus,
    pub tasks: Vec<TaskRun>,
    pub submitted_at: Millis,
    pub finished_at: Option<Millis>,
    /// The user acknowledged it fetched the outputs (`Fetched`).
    #[serde(default)]
    pub fetched: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Genesis {
    pub params: Params,
    pub mint_authority: Pubkey,
    pub beacon: Pubkey,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    pub params: Params,
    pub mint_authority: Pubkey,
    pub beacon: Pubkey,
    pub accounts: BTreeMap<Pubkey, Account>,
    pub nodes: BTreeMap<Pubkey, Node>,
    pub models: BTreeMap<u64, Model>,
    pub executions: BTreeMap<u64, Execution>,
    pub active: BTreeSet<u64>,
    /// Nodes supporting each (model, task): the candidates for assignment.
    pub candidates: BTreeMap<(u64, u32), Vec<Pubkey>>,
    pub supply: Micro,
    pub treasury: Micro,
    pub next_model: u64,
    pub next_execution: u64,
    /// The hash chain of the ledger (advanced by every accepted instruction
    /// and every tick): the recent block hash in VRF inputs.
    pub blockhash: [u8; 32],
    /// The slot clock: (slot, block hash at the end of that slot so far) for
    /// the most recent slots that changed the state, oldest first.
    #[serde(default)]
    pub recent_blockhashes: std::collections::VecDeque<(u64, [u8; 32])>,
    pub instructions: u64,
    #[serde(skip)]
    pub events: Vec<Event>,
}

/// Length of a slot of the ledger's clock.
pub const SLOT_MS: Millis = 1000;
/// Slots whose block hashes are kept (Solana keeps 150 recent blockhashes).
pub const RECENT_BLOCKHASHES: usize = 150;

const SNAPSHOT_TAG: &[u8] = b"splitup-ledger-snapshot-v1\0";

fn err_unknown(kind: &'static str, id: impl ToString) -> ProtocolError {
    ProtocolError::Unknown {
        kind,
        id: id.to_string(),
    }
}

fn add(a: Micro, b: Micro) -> Result<Micro, ProtocolError> {
    a.checked_add(b).ok_or(ProtocolError::Overflow)
}

/// p(1 − r)(R + S) > C, exactly, in integers.
pub fn security_holds(p: &Params, cost: Micro, slashable: Micro) -> bool {
    let reward = cost as u128 * p.verification_reward_pct as u128 / 100;
    let lhs = p.challenge_ppm as u128 * (PPM - p.collusion_ppm.min(PPM)) as u128 * (reward + slashable as u128);
    lhs > cost as u128 * PPM as u128 * PPM as u128
}

impl Ledger {
    /// Creates the ledger, refusing parameters for which the security
    /// condition fails for some task cost up to `task_cost_max`.
    pub fn genesis(g: Genesis) -> Result<Ledger, ProtocolError> {
        let p = &g.params;
        if p.challenge_ppm > PPM || p.collusion_ppm >= PPM || p.slash_multiplier == 0 || p.task_cost_max == 0 {
            return Err(ProtocolError::Invalid(
                "p must be <= 1, r < 1, and the slash multiplier and largest task cost positive".into(),
            ));
        }
        // The margin p(1-r)(R+S) - C is linear in C on each side of
        // slash_min / multiplier, so checking the two ends decides every cost.
        if p.unverified && p.challenge_ppm != 0 {
            return Err(ProtocolError::Invalid(
                "an unverified development network has p = 0".into(),
            ));
        }
        let knee = (p.slash_min / p.slash_multiplier).clamp(1, p.task_cost_max);
        for cost in [knee, p.task_cost_max].into_iter().filter(|_| !p.unverified) {
            let s = (cost.saturating_mul(p.slash_multiplier)).max(p.slash_min);
            if !security_holds(p, cost, s) {
                let (pf, rf) = (p.challenge_ppm as f64 / 1e6, p.collusion_ppm as f64 / 1e6);
                let reward = cost as f64 * p.verification_reward_pct as f64 / 100.0;
                let need = cost as f64 / ((1.0 - rf) * (reward + s as f64));
                return Err(ProtocolError::Insecure(format!(
                    "at task cost C = {:.6} USDC: p = {pf}, r = {rf}, R = {:.6} USDC, S = {:.6} USDC gives p(1-r)(R+S) = {:.6} <= C; p must exceed {need:.6} (or raise the slash, or lower task_cost_max)",
                    cost as f64 / 1e6,
                    reward / 1e6,
                    s as f64 / 1e6,
                    pf * (1.0 - rf) * (reward + s as f64) / 1e6
                )));
            }
        }
        let mut blockhash = [0u8; 32];
        blockhash.copy_from_slice(blake3::hash(&serde_json::to_vec(&g).expect("genesis serialises")).as_bytes());
        Ok(Ledger {
            params: g.params,
            mint_authority: g.mint_authority,
            beacon: g.beacon,
            accounts: BTreeMap::new(),
            nodes: BTreeMap::new(),
            models: BTreeMap::new(),
            executions: BTreeMap::new(),
            active: BTreeSet::new(),
            candidates: BTreeMap::new(),
            supply: 0,
            treasury: 0,
            next_model: 1,
            next_execution: 1,
            blockhash,
            recent_blockhashes: Default::default(),
            instructions: 0,
            events: Vec::new(),
        })
    }

    /// Drains the events produced since the last call.
    pub fn poll_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Money everywhere; must always equal `supply`.
    pub fn money_total(&self) -> u128 {
        self.accounts.values().map(|a| a.balance as u128).sum::<u128>()
            + self.nodes.values().map(|n| n.stake as u128).sum::<u128>()
            + self.executions.values().map(|e| e.escrow as u128).sum::<u128>()
            + self.treasury as u128
    }

    pub fn balance(&self, k: &Pubkey) -> Micro {
        self.accounts.get(k).map(|a| a.balance).unwrap_or(0)
    }

    pub fn stake_required(&self, vram: u64) -> Micro {
        self.params
            .stake_base
            .saturating_add(self.params.stake_per_gb.saturating_mul(vram.div_ceil(GB)))
    }

    pub fn task_cost(&self, t: &TaskDef) -> Micro {
        t.compute_units
            .saturating_mul(self.params.fee_per_cu)
            .saturating_add(self.params.fee_per_gb.saturating_mul(t.vram).div_ceil(GB))
    }

    pub fn slash_amount(&self, cost: Micro, node: &Node) -> Micro {
        cost.saturating_mul(self.params.slash_multiplier)
            .max(self.params.slash_min)
            .min(node.stake)
    }

    pub fn timeout(&self, t: &TaskDef, failures: u32) -> Millis {
        let base = self
            .params
            .task_timeout_min_ms
            .max(self.params.task_timeout_per_100cu_ms.saturating_mul(t.compute_units) / 100);
        base.saturating_mul(1u64 << failures.min(16))
    }

    /// Records the block hash as the latest of `now`'s slot.
    fn record_slot(&mut self, now: Millis) {
        let slot = now / SLOT_MS;
        match self.recent_blockhashes.back_mut() {
            Some((s, h)) if *s == slot => *h = self.blockhash,
            _ => {
                self.recent_blockhashes.push_back((slot, self.blockhash));
                if self.recent_blockhashes.len() > RECENT_BLOCKHASHES {
                    self.recent_blockhashes.pop_front();
                }
            }
        }
    }

    fn advance_hash(&mut self, data: &[u8]) {
        let mut h = blake3::Hasher::new();
        h.update(&self.blockhash);
        h.update(data);
        self.blockhash = *h.finalize().as_bytes();
    }

    /// The whole state as bytes (events excluded): a version tag, the
    /// postcard encoding, and its BLAKE3 hash, so a damaged snapshot is
    /// detected rather than loaded.
    pub fn snapshot(&self) -> Vec<u8> {
        let body = postcard::to_stdvec(self).expect("the ledger state serialises");
        let mut out = Vec::with_capacity(SNAPSHOT_TAG.len() + body.len() + 32);
        out.extend_from_slice(SNAPSHOT_TAG);
        out.extend_from_slice(blake3::hash(&body).as_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Reads a [`Ledger::snapshot`], checking its tag and hash.
    pub fn restore(bytes: &[u8]) -> Result<Ledger, String> {
        let rest = bytes
            .strip_prefix(SNAPSHOT_TAG)
            .ok_or("not a ledger snapshot of this version")?;
        if rest.len() < 32 {
            return Err("snapshot truncated".into());
        }
        let (hash, body) = rest.split_at(32);
        if blake3::hash(body).as_bytes() != hash {
            return Err("snapshot damaged: its content does not match its hash".into());
        }
        postcard::from_bytes(body).map_err(|e| format!("snapshot unreadable: {e}"))
    }

    /// Verifies the signature, then applies. The only entry point for
    /// instructions from the network.
    pub fn submit(&mut self, tx: &SignedTx, now: Millis, beacon: &dyn Beacon) -> Result<(), ProtocolError> {
        if !verify_signature(
            &tx.signer,
            &SignedTx::message(&tx.signer, tx.nonce, &tx.ix),
            &tx.signature,
        ) {
            return Err(ProtocolError::BadSignature);
        }
        self.apply_verified(tx.signer, tx.nonce, &tx.ix, now, beacon)
    }

    /// Applies an instruction whose signature the caller has verified (the
    /// simulator drives the rules at scale through this; `submit` is the
    /// path for anything from outside).
    pub fn apply_verified(
        &mut self,
        signer: Pubkey,
        nonce: u64,
        ix: &Instruction,
        now: Millis,
        beacon: &dyn Beacon,
    ) -> Result<(), ProtocolError> {
        let expected = self.accounts.get(&signer).map(|a| a.nonce).unwrap_or(0);
        if nonce != expected {
            return Err(ProtocolError::BadNonce { expected, got: nonce });
        }
        self.dispatch(signer, ix, now, beacon)?;
        self.accounts.entry(signer).or_default().nonce = expected + 1;
        self.instructions += 1;
        self.advance_hash(&nonce.to_le_bytes());
        self.advance_hash(&signer.0);
        self.record_slot(now);
        Ok(())
    }

    fn dispatch(
        &mut self,
        signer: Pubkey,
        ix: &Instruction,
        now: Millis,
        beacon: &dyn Beacon,
    ) -> Result<(), ProtocolError> {
        match ix {
            Instruction::Mint { to, amount } => {
                if signer != self.mint_authority {
                    return Err(ProtocolError::Unauthorized("only the mint authority mints".into()));
                }
                let supply = add(self.supply, *amount)?;
                let bal = add(self.balance(to), *amount)?;
                self.supply = supply;
                self.accounts.entry(*to).or_default().balance = bal;
                Ok(())
            }
            Instruction::Transfer { to, amount } => {
                if *amount == 0 {
                    return Err(ProtocolError::Invalid("a transfer moves at least 1 micro-USDC".into()));
                }
                if !self.accounts.contains_key(to) && *amount < self.params.account_min {
                    return Err(ProtocolError::Invalid(format!(
                        "a transfer that opens an account carries at least {} micro-USDC, not {amount}",
                        self.params.account_min
                    )));
                }
                let have = self.balance(&signer);
                if have < *amount {
                    return Err(ProtocolError::InsufficientBalance {
                        needed: *amount,
                        available: have,
                    });
                }
                if *to != signer {
                    let to_bal = add(self.balance(to), *amount)?;
                    self.accounts.entry(signer).or_default().balance = have - amount;
                    self.accounts.entry(*to).or_default().balance = to_bal;
                }
                Ok(())
            }
            Instruction::RegisterModel(def) => self.register_model(signer, def),
            Instruction::DeactivateModel { model } => {
                let m = self.models.get_mut(model).ok_or_else(|| err_unknown("model", model))?;
                if m.owner != signer {
                    return Err(ProtocolError::Unauthorized(
                        "only the model's owner deactivates it".into(),
                    ));
                }
                m.active = false;
                Ok(())
            }
            Instruction::RegisterNode { vram, supports } => self.register_node(signer, *vram, supports, now),
            Instruction::Stake { amount } => {
                let have = self.balance(&signer);
                let node = self
                    .nodes
                    .get(&signer)
                    .ok_or_else(|| err_unknown("node", signer.short()))?;
                if have < *amount {
                    return Err(ProtocolError::InsufficientBalance {
                        needed: *amount,
                        available: have,
                    });
                }
                let stake = add(node.stake, *amount)?;
                self.accounts.entry(signer).or_default().balance = have - amount;
                self.nodes.get_mut(&signer).unwrap().stake = stake;
                Ok(())
            }
            Instruction::RequestUnstake { amount } => {
                let node = self
                    .nodes
                    .get(&signer)
                    .ok_or_else(|| err_unknown("node", signer.short()))?;
                if node.unstaking.is_some() {
                    return Err(ProtocolError::Locked(
                        "an unstake is already waiting out its lockup".into(),
                    ));
                }
                if *amount == 0 || *amount > node.stake {
                    return Err(ProtocolError::InsufficientStake(format!(
                        "cannot unstake {amount} of a stake of {}",
                        node.stake
                    )));
                }
                let unlock = now
                    .checked_add(self.params.unstake_lockup_ms)
                    .ok_or(ProtocolError::Overflow)?;
                self.nodes.get_mut(&signer).unwrap().unstaking = Some((*amount, unlock));
                Ok(())
            }
            Instruction::Withdraw => {
                let node = self
                    .nodes
                    .get(&signer)
                    .ok_or_else(|| err_unknown("node", signer.short()))?;
                let Some((amount, unlock)) = node.unstaking else {
                    return Err(ProtocolError::Invalid("nothing is unstaking".into()));
                };
                if now < unlock {
                    return Err(ProtocolError::Locked(format!(
                        "the lockup ends at {unlock} ms, now is {now} ms"
                    )));
                }
                if node.load > 0 || node.disputes > 0 {
                    return Err(ProtocolError::Locked(format!(
                        "the node holds {} tasks and {} disputes",
                        node.load, node.disputes
                    )));
                }
                let amount = amount.min(node.stake);
                let bal = add(self.balance(&signer), amount)?;
                let n = self.nodes.get_mut(&signer).unwrap();
                n.stake -= amount;
                n.unstaking = None;
                self.accounts.entry(signer).or_default().balance = bal;
                Ok(())
            }
            Instruction::Heartbeat => {
                let n = self
                    .nodes
                    .get_mut(&signer)
                    .ok_or_else(|| err_unknown("node", signer.short()))?;
                n.last_heartbeat = now;
                n.status = NodeStatus::Active;
                Ok(())
            }
            Instruction::Leave => self.leave(signer, now, beacon),
            Instruction::ReportUnrunnable {
                execution,
                task,
                reason,
            } => self.report_unrunnable(signer, *execution, *task, reason, now, beacon),
            Instruction::Fetched { execution } => {
                let e = self
                    .executions
                    .get_mut(execution)
                    .ok_or_else(|| err_unknown("execution", execution))?;
                if e.user != signer {
                    return Err(ProtocolError::Unauthorized(
                        "only the execution's user acknowledges its outputs".into(),
                    ));
                }
                if e.status == ExecStatus::InProgress {
                    return Err(ProtocolError::Invalid(format!(
                        "execution {execution} is still in progress"
                    )));
                }
                e.fetched = true;
                Ok(())
            }
            Instruction::SubmitExecution {
                model,
                priority,
                input_commitment,
            } => self.submit_execution(signer, *model, *priority, *input_commitment, now, beacon),
            Instruction::SubmitResult {
                execution,
                task,
                commitment,
                output_uris,
            } => self.submit_result(signer, *execution, *task, *commitment, output_uris, now, beacon),
            Instruction::SubmitValidation { execution, task, seal } => {
                self.submit_validation(signer, *execution, *task, *seal, now)
            }
            Instruction::RevealValidation {
                execution,
                task,
                commitment,
                output_uris,
            } => self.reveal_validation(signer, *execution, *task, *commitment, output_uris, now, beacon),
            Instruction::DisputeVote {
                execution,
                task,
                asserter_honest,
                validator_honest,
            } => self.dispute_vote(
                signer,
                *execution,
                *task,
                *asserter_honest,
                *validator_honest,
                now,
                beacon,
            ),
        }
    }

    fn register_model(&mut self, signer: Pubkey, def: &ModelDef) -> Result<(), ProtocolError> {
        let bad = |m: String| Err(ProtocolError::InvalidModel(m));
        let n = def.tasks.len();
        if n == 0 || n > self.params.tasks_per_model_max {
            return bad(format!(
                "a model needs 1 to {} tasks, not {n}",
                self.params.tasks_per_model_max
            ));
        }
        self.check_model_size(def)?;
        let fee = self
            .params
            .model_fee
            .checked_add(self.params.model_fee_per_task.saturating_mul(n as u64))
            .ok_or(ProtocolError::Overflow)?;
        let have = self.balance(&signer);
        if have < fee {
            return Err(ProtocolError::InsufficientBalance {
                needed: fee,
                available: have,
            });
        }
        for (i, t) in def.tasks.iter().enumerate() {
            check_task_checks(t).or_else(|m| bad(format!("task {}: {m}", i + 1)))?;
            let cost = self.task_cost(t);
            if cost > self.params.task_cost_max {
                return bad(format!(
                    "task {} costs {cost} micro-USDC, above the network's largest secure task cost {}",
                    i + 1,
                    self.params.task_cost_max
                ));
            }
        }
        // Every task input and every model output is fed exactly once, by an
        // existing end whose spec matches; edges go from lower to higher ids
        // (so the DAG is acyclic by construction).
        let mut fed: BTreeMap<(u32, u32), usize> = BTreeMap::new();
        let mut upstream = vec![Vec::new(); n];
        let mut downstream = vec![Vec::new(); n];
        for c in &def.connections {
            let src = if c.source_task == 0 {
                def.inputs.get(c.source_output as usize)
            } else {
                def.tasks
                    .get(c.source_task as usize - 1)
                    .and_then(|t| t.outputs.get(c.source_output as usize))
            };
            let dst = if c.destination_task == 0 {
                def.outputs.get(c.dest_input as usize)
            } else {
                def.tasks
                    .get(c.destination_task as usize - 1)
                    .and_then(|t| t.inputs.get(c.dest_input as usize))
            };
            let (Some(src), Some(dst)) = (src, dst) else {
                return bad(format!(
                    "connection {} -> {} refers to a missing task or tensor",
                    c.source_task, c.destination_task
                ));
            };
            if src.shape != dst.shape || src.dtype != dst.dtype {
                return bad(format!(
                    "connection {} -> {}: {:?} {:?} does not match {:?} {:?}",
                    c.source_task, c.destination_task, src.dtype, src.shape, dst.dtype, dst.shape
                ));
            }
            if c.source_task != 0 && c.destination_task != 0 {
                if c.source_task >= c.destination_task {
                    return bad(format!(
                        "connection {} -> {} goes backwards: tasks must be numbered in topological order (no cycles)",
                        c.source_task, c.destination_task
                    ));
                }
                let d = c.destination_task as usize - 1;
                if !upstream[d].contains(&c.source_task) {
                    upstream[d].push(c.source_task);
                    downstream[c.source_task as usize - 1].push(c.destination_task);
                }
            }
            *fed.entry((c.destination_task, c.dest_input)).or_default() += 1;
        }
        for (i, t) in def.tasks.iter().enumerate() {
            for k in 0..t.inputs.len() {
                match fed.get(&(i as u32 + 1, k as u32)) {
                    Some(1) => {}
                    Some(x) => return bad(format!("task {} input {k} is fed {x} times", i + 1)),
                    None => return bad(format!("task {} input {k} ({}) is never fed", i + 1, t.inputs[k].name)),
                }
            }
        }
        for k in 0..def.outputs.len() {
            if fed.get(&(0, k as u32)) != Some(&1) {
                return bad(format!("model output {k} is not produced exactly once"));
            }
        }
        let treasury = add(self.treasury, fee)?;
        self.accounts.entry(signer).or_default().balance = have - fee;
        self.treasury = treasury;
        let id = self.next_model;
        self.next_model += 1;
        self.models.insert(
            id,
            Model {
                owner: signer,
                def: def.clone(),
                active: true,
                upstream,
                downstream,
            },
        );
        self.events.push(Event::ModelRegistered { model: id });
        Ok(())
    }

    fn register_node(
        &mut self,
        signer: Pubkey,
        vram: u64,
        supports: &[(u64, u32)],
        now: Millis,
    ) -> Result<(), ProtocolError> {
        if supports.len() > self.params.supported_interfaces_max {
            return Err(ProtocolError::Invalid(format!(
                "at most {} supported tasks",
                self.params.supported_interfaces_max
            )));
        }
        if !self.nodes.contains_key(&signer) {
            let need = self.stake_required(vram);
            let have = self.balance(&signer);
            if have < need {
                return Err(ProtocolError::InsufficientBalance {
                    needed: need,
                    available: have,
                });
            }
        }
        for (m, t) in supports {
            let model = self.models.get(m).ok_or_else(|| err_unknown("model", m))?;
            if *t == 0 || *t as usize > model.def.tasks.len() {
                return Err(err_unknown("task", format!("{m}/{t}")));
            }
        }
        let old: Vec<(u64, u32)> = self
            .nodes
            .get(&signer)
            .map(|n| n.supports.iter().copied().collect())
            .unwrap_or_default();
        for key in old {
            if let Some(v) = self.candidates.get_mut(&key) {
                v.retain(|k| *k != signer);
            }
        }
        let set: BTreeSet<(u64, u32)> = supports.iter().copied().collect();
        for key in &set {
            let v = self.candidates.entry(*key).or_default();
            if let Err(at) = v.binary_search(&signer) {
                v.insert(at, signer);
            }
        }
        let node = self.nodes.entry(signer).or_insert_with(|| Node {
            vram,
            stake: 0,
            unstaking: None,
            supports: BTreeSet::new(),
            last_heartbeat: now,
            status: NodeStatus::Active,
            load: 0,
            disputes: 0,
            slashed_total: 0,
            earned_total: 0,
        });
        node.vram = vram;
        node.supports = set;
        node.last_heartbeat = now;
        Ok(())
    }

    fn submit_execution(
        &mut self,
        user: Pubkey,
        model_id: u64,
        priority: u64,
        input: [u8; 32],
        now: Millis,
        beacon: &dyn Beacon,
    ) -> Result<(), ProtocolError> {
        let model = self
            .models
            .get(&model_id)
            .ok_or_else(|| err_unknown("model", model_id))?;
        if !model.active {
            return Err(ProtocolError::Invalid(format!("model {model_id} is deactivated")));
        }
        let mut escrow: Micro = 0;
        for t in &model.def.tasks {
            let c = self.task_cost(t);
            escrow = add(
                escrow,
                add(c, c.saturating_mul(self.params.verification_reward_pct) / 100)?,
            )?;
        }
        let prio = priority
            .saturating_mul(self.params.priority_fee)
            .min(self.params.priority_fee_max);
        let fee = add(prio, self.params.execution_fee)?;
        let total = add(escrow, fee)?;
        let have = self.balance(&user);
        if have < total {
            return Err(ProtocolError::InsufficientBalance {
                needed: total,
                available: have,
            });
        }
        let treasury = add(self.treasury, fee)?;
        let ntasks = model.def.tasks.len();
        self.accounts.entry(user).or_default().balance = have - total;
        self.treasury = treasury;
        let id = self.next_execution;
        self.next_execution += 1;
        self.executions.insert(
            id,
            Execution {
                model: model_id,
                user,
                priority,
                input_commitment: input,
                escrow,
                status: ExecStatus::InProgress,
                tasks: (0..ntasks).map(|_| TaskRun::new()).collect(),
                submitted_at: now,
                finished_at: None,
                fetched: false,
            },
        );
        self.active.insert(id);
        self.events.push(Event::ExecutionSubmitted { execution: id, escrow });
        self.progress(id, now, beacon);
        Ok(())
    }

    /// The bounds on a model's description (the DAG itself is checked by `register_model`).
    fn check_model_size(&self, def: &ModelDef) -> Result<(), ProtocolError> {
        let p = &self.params;
        let bad = |m: String| Err(ProtocolError::InvalidModel(m));
        if def.name.len() > p.name_bytes_max {
            return bad(format!("the name is longer than {} bytes", p.name_bytes_max));
        }
        if def.connections.len() > p.connections_per_model_max {
            return bad(format!(
                "{} connections, at most {}",
                def.connections.len(),
                p.connections_per_model_max
            ));
        }
        let specs = |what: String, v: &[TensorSpec]| -> Result<(), ProtocolError> {
            if v.len() > p.tensors_per_task_max {
                return bad(format!(
                    "{what}: {} tensors, at most {}",
                    v.len(),
                    p.tensors_per_task_max
                ));
            }
            for s in v {
                if s.name.len() > p.name_bytes_max || s.dtype.len() > p.name_bytes_max {
                    return bad(format!(
                        "{what}: a tensor name or type is longer than {} bytes",
                        p.name_bytes_max
                    ));
                }
                if s.shape.len() > p.rank_max {
                    return bad(format!(
                        "{what}: tensor {:?} has rank {}, at most {}",
                        s.name,
                        s.shape.len(),
                        p.rank_max
                    ));
                }
            }
            Ok(())
        };
        specs("model inputs".into(), &def.inputs)?;
        specs("model outputs".into(), &def.outputs)?;
        for (i, t) in def.tasks.iter().enumerate() {
            specs(format!("task {} inputs", i + 1), &t.inputs)?;
            specs(format!("task {} outputs", i + 1), &t.outputs)?;
            if t.weight_uri.len() > p.uri_bytes_max {
                return bad(format!(
                    "task {}: weight URI longer than {} bytes",
                    i + 1,
                    p.uri_bytes_max
                ));
            }
        }
        Ok(())
    }

    /// `ReportUnrunnable`: the assigned node hands the task back with its
    /// reason; the task is reassigned to a node that has not reported it.
    /// At `unrunnable_reports` distinct reporters the execution fails and
    /// the model's owner pays each reporter the task's cost (as far as its
    /// balance goes).
    fn report_unrunnable(
        &mut self,
        node: Pubkey,
        execution: u64,
        task: u32,
        reason: &str,
        now: Millis,
        beacon: &dyn Beacon,
    ) -> Result<(), ProtocolError> {
        if reason.len() > self.params.reason_bytes_max {
            return Err(ProtocolError::Invalid(format!(
                "a reason is at most {} bytes",
                self.params.reason_bytes_max
            )));
        }
        let r = self.run_ref(execution, task)?;
        if r.status != TaskStatus::Assigned || r.node != Some(node) {
            return Err(ProtocolError::UnexpectedResult {
                execution,
                task,
                why: "the task is not assigned to the signer".into(),
            });
        }
        let t = task as usize - 1;
        if let Some(n) = self.nodes.get_mut(&node) {
            dec(&mut n.load);
        }
        let e = self
            .executions
            .get_mut(&execution)
            .ok_or_else(|| err_unknown("execution", execution))?;
        let r = &mut e.tasks[t];
        r.excluded.push(node);
        if !r.unrunnable.contains(&node) {
            r.unrunnable.push(node);
        }
        r.status = TaskStatus::Ready;
        r.node = None;
        let reporters = r.unrunnable.clone();
        let model = e.model;
        self.events.push(Event::Unrunnable {
            execution,
            task,
            node,
            reason: reason.to_string(),
        });
        if reporters.len() >= self.params.unrunnable_reports.max(1) as usize {
            let cost = self.task_cost(&self.models[&model].def.tasks[t]);
            let owner = self.models[&model].owner;
            for rep in &reporters {
                let have = self.balance(&owner);
                let pay = cost.min(have);
                if pay > 0 {
                    self.accounts.entry(owner).or_default().balance = have - pay;
                    let b = self.balance(rep).saturating_add(pay);
                    self.accounts.entry(*rep).or_default().balance = b;
                    if let Some(n) = self.nodes.get_mut(rep) {
                        n.earned_total = n.earned_total.saturating_add(pay);
                    }
                }
            }
            let reason = format!(
                "task {task} could not run on {} independent nodes; the last said: {reason}",
                reporters.len()
            );
            self.fail_execution(execution, reason, now);
        } else {
            self.progress(execution, now, beacon);
        }
        Ok(())
    }

    /// The run of `task` (1-based) of `execution`, checked to exist and to
    /// belong to an execution in progress (finishing released every hold).
    fn run_ref(&self, execution: u64, task: u32) -> Result<&TaskRun, ProtocolError> {
        let e = self
            .executions
            .get(&execution)
            .ok_or_else(|| err_unknown("execution", execution))?;
        if e.status != ExecStatus::InProgress {
            return Err(ProtocolError::UnexpectedResult {
                execution,
                task,
                why: format!("the execution has finished ({:?})", e.status),
            });
        }
        if task == 0 {
            return Err(err_unknown("task", format!("{execution}/0")));
        }
        e.tasks
            .get(task as usize - 1)
            .ok_or_else(|| err_unknown("task", format!("{execution}/{task}")))
    }

    #[allow(clippy::too_many_arguments)]
    #[allow(clippy::too_many_arguments)]
    fn submit_result(
        &mut self,
        node: Pubkey,
        execution: u64,
        task: u32,
        commitment: [u8; 32],
        uris: &[String],
        now: Millis,
        beacon: &dyn Beacon,
    ) -> Result<(), ProtocolError> {
        self.check_uris(uris, &commitment)?;
        let run = self.run_ref(execution, task)?;
        let unexpected = |why: &str| {
            Err(ProtocolError::UnexpectedResult {
                execution,
                task,
                why: why.into(),
            })
        };
        if run.status != TaskStatus::Assigned {
            return unexpected("the task is not awaiting a result (duplicate or late)");
        }
        if run.node != Some(node) {
            return unexpected("the task is assigned to another node");
        }
        // Commit, then draw: the VRF input includes the commitment, so the
        // node cannot know whether it will be challenged before committing.
        let mut alpha = Vec::with_capacity(32 + 8 + 4 + 32);
        alpha.extend_from_slice(&self.blockhash);
        alpha.extend_from_slice(&execution.to_le_bytes());
        alpha.extend_from_slice(&task.to_le_bytes());
        alpha.extend_from_slice(&commitment);
        let (proof, beta) = beacon.prove(&alpha);
        let draw = u64::from_le_bytes(beta[..8].try_into().unwrap()) % PPM;
        let challenged = draw < self.params.challenge_ppm;
        let t = task as usize - 1;
        {
            let r = &mut self.executions.get_mut(&execution).unwrap().tasks[t];
            r.commitment = Some(commitment);
            r.output_uris = uris.to_vec();
            r.draw = Some(proof.clone());
            r.challenged = challenged;
        }
        if challenged {
            let validator = self.pick_validator(execution, task, beacon);
            self.events.push(Event::Drawn {
                execution,
                task,
                challenged,
                validator,
                proof,
            });
            let r = &mut self.executions.get_mut(&execution).unwrap().tasks[t];
            r.status = TaskStatus::Challenged;
            match validator {
                Some(v) => self.assign_validator(execution, task, v, now),
                None => self.escalate(execution, task, now, beacon),
            }
        } else {
            self.events.push(Event::Drawn {
                execution,
                task,
                challenged,
                validator: None,
                proof,
            });
            self.complete_task(execution, task);
        }
        self.progress(execution, now, beacon);
        Ok(())
    }

    /// Output locations are bounded and bound to the commitment.
    fn check_uris(&self, uris: &[String], commitment: &[u8; 32]) -> Result<(), ProtocolError> {
        if uris.len() > self.params.uris_per_result_max || uris.iter().any(|u| u.len() > self.params.uri_bytes_max) {
            return Err(ProtocolError::Invalid(format!(
                "at most {} output URIs of {} bytes",
                self.params.uris_per_result_max, self.params.uri_bytes_max
            )));
        }
        if !crate::crypto::uris_name(uris, commitment) {
            return Err(ProtocolError::Invalid(
                "the output URIs must name the committed blob (their last path segment is the commitment's hex)".into(),
            ));
        }
        Ok(())
    }

    fn assign_validator(&mut self, execution: u64, task: u32, v: Pubkey, now: Millis) {
        let model = self.executions[&execution].model;
        let deadline = now.saturating_add(self.timeout(&self.models[&model].def.tasks[task as usize - 1], 0));
        let r = &mut self.executions.get_mut(&execution).unwrap().tasks[task as usize - 1];
        r.validator = Some(v);
        r.validator_seal = None;
        r.validator_attempts = r.validator_attempts.saturating_add(1);
        r.deadline = deadline;
        inc(&mut self.nodes.get_mut(&v).unwrap().load);
        self.events.push(Event::ValidatorAssigned {
            execution,
            task,
            validator: v,
            deadline,
        });
    }

    /// Asserter and validator disagree, or no validator answered: a
    /// committee drawn by the VRF from the staked nodes that support the
    /// task (weighted by stake, never the asserter or the validator)
    /// re-executes it and judges both sides by `dispute_ms` from now.
    fn escalate(&mut self, execution: u64, task: u32, now: Millis, beacon: &dyn Beacon) {
        let t = task as usize - 1;
        let (asserter, validator) = {
            let r = &self.executions[&execution].tasks[t];
            (r.node.unwrap(), r.validator)
        };
        let mut avoid = vec![asserter];
        avoid.extend(validator);
        let mut committee = Vec::new();
        for i in 0..self.params.committee_size {
            let purpose = [&b"committee"[..], &i.to_le_bytes()].concat();
            match self.draw(execution, task, &purpose, &avoid, true, beacon) {
                Some(m) => {
                    avoid.push(m);
                    committee.push(m);
                }
                None => break,
            }
        }
        let deadline = now.saturating_add(self.params.dispute_ms);
        {
            let r = &mut self.executions.get_mut(&execution).unwrap().tasks[t];
            r.status = TaskStatus::Disputed;
            r.committee = committee.clone();
            r.votes.clear();
            r.deadline = deadline;
        }
        for k in std::iter::once(asserter)
            .chain(validator)
            .chain(committee.iter().copied())
        {
            inc(&mut self.nodes.get_mut(&k).unwrap().disputes);
        }
        self.events.push(Event::Disputed {
            execution,
            task,
            asserter,
            validator,
            committee: committee.clone(),
            deadline,
        });
        if (committee.len() as u32) < majority(self.params.committee_size) {
            let why = format!(
                "dispute on task {task}: only {} nodes other than the asserter and validator can judge it, {} needed",
                committee.len(),
                majority(self.params.committee_size)
            );
            self.end_undecided(execution, task, why, now);
        }
    }

    fn submit_validation(
        &mut self,
        v: Pubkey,
        execution: u64,
        task: u32,
        seal: [u8; 32],
        now: Millis,
    ) -> Result<(), ProtocolError> {
        let run = self.run_ref(execution, task)?;
        if run.status != TaskStatus::Challenged || run.validator != Some(v) || run.validator_seal.is_some() {
            return Err(ProtocolError::UnexpectedResult {
                execution,
                task,
                why: "no validation of this task is expected from this node".into(),
            });
        }
        // The reveal gets the task's timeout again from the seal.
        let model = self.executions[&execution].model;
        let deadline = now.saturating_add(self.timeout(&self.models[&model].def.tasks[task as usize - 1], 0));
        let r = &mut self.executions.get_mut(&execution).unwrap().tasks[task as usize - 1];
        r.validator_seal = Some(seal);
        r.deadline = deadline;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn reveal_validation(
        &mut self,
        v: Pubkey,
        execution: u64,
        task: u32,
        commitment: [u8; 32],
        uris: &[String],
        now: Millis,
        beacon: &dyn Beacon,
    ) -> Result<(), ProtocolError> {
        self.check_uris(uris, &commitment)?;
        let run = self.run_ref(execution, task)?;
        if run.status != TaskStatus::Challenged
            || run.validator != Some(v)
            || run.validator_seal.is_none()
            || run.validator_commitment.is_some()
        {
            return Err(ProtocolError::UnexpectedResult {
                execution,
                task,
                why: "no reveal of this task is expected from this node (seal first)".into(),
            });
        }
        let matched = run.commitment == Some(commitment);
        let t = task as usize - 1;
        dec(&mut self.nodes.get_mut(&v).unwrap().load);
        {
            let r = &mut self.executions.get_mut(&execution).unwrap().tasks[t];
            r.validator_commitment = Some(commitment);
            r.validator_uris = uris.to_vec();
        }
        if matched {
            self.pay_validator(execution, task, v);
            self.complete_task(execution, task);
        } else {
            self.escalate(execution, task, now, beacon);
        }
        self.progress(execution, now, beacon);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn dispute_vote(
        &mut self,
        member: Pubkey,
        execution: u64,
        task: u32,
        asserter: Option<bool>,
        validator: Option<bool>,
        now: Millis,
        beacon: &dyn Beacon,
    ) -> Result<(), ProtocolError> {
        let run = self.run_ref(execution, task)?;
        if run.status != TaskStatus::Disputed {
            return Err(ProtocolError::UnexpectedResult {
                execution,
                task,
                why: "the task is not in dispute".into(),
            });
        }
        if !run.committee.contains(&member) {
            return Err(ProtocolError::Unauthorized(
                "only the members drawn for this dispute vote on it".into(),
            ));
        }
        if now >= run.deadline {
            return Err(ProtocolError::Locked(format!(
                "the dispute's deadline ({} ms) has passed",
                run.deadline
            )));
        }
        if run.votes.contains_key(&member) {
            return Err(ProtocolError::Invalid("this member already voted".into()));
        }
        let t = task as usize - 1;
        let r = &mut self.executions.get_mut(&execution).unwrap().tasks[t];
        r.votes.insert(member, (asserter, validator));
        let (a, v, all) = self.tally(execution, task);
        let validator_on_record = self.executions[&execution].tasks[t].validator_commitment.is_some();
        // Decided once every member has voted (or at the deadline): a member
        // who re-executes is never shut out by an early majority.
        match a {
            Some(a) if all => {
                self.resolve_dispute(execution, task, a, v.filter(|_| validator_on_record), false);
                self.progress(execution, now, beacon);
            }
            None if all => {
                self.end_undecided(
                    execution,
                    task,
                    format!("the committee reached no majority on task {task}"),
                    now,
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// The verdicts a strict majority of the drawn committee agrees on (on
    /// the asserter, on the validator), and whether every member voted.
    fn tally(&self, execution: u64, task: u32) -> (Option<bool>, Option<bool>, bool) {
        let r = &self.executions[&execution].tasks[task as usize - 1];
        let need = majority(self.params.committee_size).max(majority(r.committee.len() as u32)) as usize;
        let decided = |pick: fn(&Vote) -> Option<bool>| {
            [true, false]
                .into_iter()
                .find(|side| r.votes.values().filter(|x| pick(x) == Some(*side)).count() >= need)
        };
        (decided(|x| x.0), decided(|x| x.1), r.votes.len() >= r.committee.len())
    }

    /// Releases what a dispute holds: the disputes counters of the asserter,
    /// the validator and every member.
    fn close_dispute(&mut self, execution: u64, task: u32) {
        let r = &self.executions[&execution].tasks[task as usize - 1];
        let parties: Vec<Pubkey> = r.node.iter().chain(&r.validator).chain(&r.committee).copied().collect();
        for k in parties {
            if let Some(n) = self.nodes.get_mut(&k) {
                dec(&mut n.disputes);
            }
        }
    }

    /// At a dispute's deadline, members who have not voted pay `absent_penalty`.
    fn penalise_absent(&mut self, execution: u64, task: u32) {
        let r = &self.executions[&execution].tasks[task as usize - 1];
        let absent: Vec<Pubkey> = r
            .committee
            .iter()
            .filter(|m| !r.votes.contains_key(m))
            .copied()
            .collect();
        for m in absent {
            self.penalise(m, self.params.absent_penalty, execution, task);
        }
    }

    /// Takes up to `amount` of `node`'s stake into the treasury.
    fn penalise(&mut self, node: Pubkey, amount: Micro, execution: u64, task: u32) {
        let Some(n) = self.nodes.get_mut(&node) else {
            return;
        };
        let amount = amount.min(n.stake);
        if amount == 0 {
            return;
        }
        n.stake -= amount;
        n.slashed_total = n.slashed_total.saturating_add(amount);
        if let Some((u, _)) = n.unstaking.as_mut() {
            *u = (*u).min(n.stake);
        }
        self.treasury = self.treasury.saturating_add(amount);
        self.events.push(Event::Slashed {
            node,
            amount,
            execution,
            task,
        });
    }

    /// No verdict by the deadline (or no committee to give one): the
    /// execution fails, the user is refunded, every hold is released, nobody
    /// is slashed for the task.
    fn end_undecided(&mut self, execution: u64, task: u32, why: String, now: Millis) {
        self.events.push(Event::DisputeEnded {
            execution,
            task,
            verdict: format!("undecided: {why}"),
        });
        self.executions.get_mut(&execution).unwrap().tasks[task as usize - 1].outcome = Some("undecided".into());
        self.fail_execution(execution, format!("{why}; the escrow is refunded"), now);
    }

    /// Carries out a decided dispute. `at_deadline`: decided only by the
    /// votes in when time ran out, so members who did not vote pay.
    fn resolve_dispute(
        &mut self,
        execution: u64,
        task: u32,
        asserter_honest: bool,
        validator: Option<bool>,
        at_deadline: bool,
    ) {
        let t = task as usize - 1;
        let model = self.executions[&execution].model;
        let cost = self.task_cost(&self.models[&model].def.tasks[t]);
        let r = self.executions[&execution].tasks[t].clone();
        let (asserter, v) = (r.node.unwrap(), r.validator);
        self.close_dispute(execution, task);
        if at_deadline {
            self.penalise_absent(execution, task);
        }
        let verdict;
        if asserter_honest {
            match validator {
                Some(false) => self.slash(v.unwrap(), cost, Some(asserter), execution, task),
                Some(true) => self.pay_validator(execution, task, v.unwrap()),
                None => {}
            }
            verdict = match validator {
                Some(false) => "asserter upheld, validator slashed",
                Some(true) => "both honest (within tolerance)",
                None => "asserter upheld",
            };
            self.executions.get_mut(&execution).unwrap().tasks[t].outcome = Some(verdict.into());
            self.complete_task(execution, task);
        } else {
            let winner = v.filter(|_| validator == Some(true));
            self.slash(asserter, cost, winner, execution, task);
            match validator {
                Some(true) => self.pay_validator(execution, task, v.unwrap()),
                Some(false) => self.slash(v.unwrap(), cost, None, execution, task),
                None => {}
            }
            verdict = match validator {
                Some(false) => "asserter and validator slashed",
                _ => "asserter slashed",
            };
            self.invalidate(execution, task);
            let r = &mut self.executions.get_mut(&execution).unwrap().tasks[t];
            r.outcome = Some(verdict.into());
            r.excluded.push(asserter);
            if let (Some(v), Some(false)) = (v, validator) {
                r.excluded.push(v);
            }
        }
        // The committee, once the slashes are in the treasury (the majority
        // is paid from them first): the majority is paid, members who voted
        // against it lose stake.
        for (m, (a, _)) in &r.votes {
            match a {
                Some(x) if *x == asserter_honest => {
                    let pay = (cost.saturating_mul(self.params.committee_reward_pct) / 100).min(self.treasury);
                    self.treasury -= pay;
                    credit(&mut self.accounts, &mut self.nodes, *m, pay);
                }
                Some(_) => {
                    let s = self.slash_amount(cost, &self.nodes[m]);
                    self.penalise(*m, s, execution, task);
                }
                None => {}
            }
        }
        self.events.push(Event::DisputeEnded {
            execution,
            task,
            verdict: verdict.into(),
        });
    }

    /// Slashes `loser`; half goes to `winner` (if any), the rest to the treasury.
    fn slash(&mut self, loser: Pubkey, cost: Micro, winner: Option<Pubkey>, execution: u64, task: u32) {
        let amount = self.slash_amount(cost, &self.nodes[&loser]);
        self.penalise(loser, amount, execution, task);
        if let Some(w) = winner {
            let to_winner = (amount / 2).min(self.treasury);
            self.treasury -= to_winner;
            credit(&mut self.accounts, &mut self.nodes, w, to_winner);
        }
    }

    fn pay(&mut self, execution: u64, to: Pubkey, amount: Micro) {
        let e = self.executions.get_mut(&execution).unwrap();
        let amount = amount.min(e.escrow);
        e.escrow -= amount;
        credit(&mut self.accounts, &mut self.nodes, to, amount);
    }

    fn pay_validator(&mut self, execution: u64, task: u32, v: Pubkey) {
        let model = self.executions[&execution].model;
        let cost = self.task_cost(&self.models[&model].def.tasks[task as usize - 1]);
        self.pay(
            execution,
            v,
            cost.saturating_mul(self.params.verification_reward_pct) / 100,
        );
    }

    /// Marks a task done and pays its asserter (once).
    fn complete_task(&mut self, execution: u64, task: u32) {
        let t = task as usize - 1;
        let model = self.executions[&execution].model;
        let cost = self.task_cost(&self.models[&model].def.tasks[t]);
        let (node, paid) = {
            let r = &self.executions[&execution].tasks[t];
            (r.node.unwrap(), r.paid)
        };
        if !paid {
            self.pay(execution, node, cost);
            self.executions.get_mut(&execution).unwrap().tasks[t].paid = true;
        }
        let r = &mut self.executions.get_mut(&execution).unwrap().tasks[t];
        if r.status != TaskStatus::Completed {
            // The node held the task until now (validated or not).
            r.status = TaskStatus::Completed;
            dec(&mut self.nodes.get_mut(&node).unwrap().load);
        }
        self.events.push(Event::TaskCompleted { execution, task, node });
    }

    /// Releases every hold a task's run has on nodes (loads and dispute
    /// counters), as its state says; the run itself is left as it is.
    fn release_holds(&mut self, execution: u64, t: usize) {
        let r = self.executions[&execution].tasks[t].clone();
        match r.status {
            TaskStatus::Assigned => {
                if let Some(n) = r.node.and_then(|n| self.nodes.get_mut(&n)) {
                    dec(&mut n.load);
                }
            }
            TaskStatus::Challenged => {
                if let Some(n) = r.node.and_then(|n| self.nodes.get_mut(&n)) {
                    dec(&mut n.load);
                }
                if r.validator_commitment.is_none() {
                    if let Some(v) = r.validator.and_then(|v| self.nodes.get_mut(&v)) {
                        dec(&mut v.load);
                    }
                }
            }
            TaskStatus::Disputed => {
                if let Some(n) = r.node.and_then(|n| self.nodes.get_mut(&n)) {
                    dec(&mut n.load);
                }
                self.close_dispute(execution, t as u32 + 1);
            }
            _ => {}
        }
    }

    /// A fraud was proven: the task and everything downstream of it that
    /// used its output are recomputed. Work already paid for is refunded to
    /// the escrow from the treasury (which the slash just funded).
    fn invalidate(&mut self, execution: u64, task: u32) {
        let model = self.executions[&execution].model;
        let mut stack = vec![task];
        let mut seen = BTreeSet::new();
        while let Some(k) = stack.pop() {
            if !seen.insert(k) {
                continue;
            }
            let t = k as usize - 1;
            let cost = self.task_cost(&self.models[&model].def.tasks[t]);
            let (status, node, paid) = {
                let r = &self.executions[&execution].tasks[t];
                (r.status, r.node, r.paid)
            };
            // A task waiting for a node (Ready) read the fraudulent output too.
            if k != task
                && !matches!(
                    status,
                    TaskStatus::Completed
                        | TaskStatus::Challenged
                        | TaskStatus::Disputed
                        | TaskStatus::Assigned
                        | TaskStatus::Ready
                )
            {
                continue;
            }
            if paid {
                let refund = cost.min(self.treasury);
                self.treasury -= refund;
                let e = self.executions.get_mut(&execution).unwrap();
                e.escrow = e.escrow.saturating_add(refund);
            }
            if k != task {
                self.release_holds(execution, t);
            } else if let Some(n) = node {
                // The cheated task: its asserter's hold ends here.
                dec(&mut self.nodes.get_mut(&n).unwrap().load);
            }
            let excluded = std::mem::take(&mut self.executions.get_mut(&execution).unwrap().tasks[t].excluded);
            let attempts = self.executions[&execution].tasks[t].attempts;
            let failures = self.executions[&execution].tasks[t].failures;
            let r = &mut self.executions.get_mut(&execution).unwrap().tasks[t];
            *r = TaskRun::new();
            r.excluded = excluded;
            r.attempts = attempts;
            r.failures = failures;
            self.events.push(Event::Invalidated { execution, task: k });
            stack.extend(self.models[&model].downstream[t].iter().copied());
        }
    }

    /// Takes every assignment, and every validation not yet sealed, away
    /// from `node` and hands it to others. `excluded`: the node may not take
    /// those tasks again in those executions.
    fn release_node(&mut self, node: Pubkey, timed_out: bool, now: Millis, beacon: &dyn Beacon) {
        let ids: Vec<u64> = self.active.iter().copied().collect();
        for id in ids {
            let mut touched = false;
            for t in 0..self.executions[&id].tasks.len() {
                // Replacing a validator can end the execution (a dispute with
                // too small a committee): its holds are all released then.
                if self.executions[&id].status != ExecStatus::InProgress {
                    break;
                }
                let task = t as u32 + 1;
                let r = &self.executions[&id].tasks[t];
                if r.status == TaskStatus::Assigned && r.node == Some(node) {
                    if timed_out {
                        self.fail_attempt(id, task, now);
                    } else {
                        dec(&mut self.nodes.get_mut(&node).unwrap().load);
                        let r = &mut self.executions.get_mut(&id).unwrap().tasks[t];
                        r.excluded.push(node);
                        r.status = TaskStatus::Ready;
                        self.events.push(Event::Released {
                            execution: id,
                            task,
                            node,
                            validation: false,
                        });
                    }
                    touched = true;
                } else if r.status == TaskStatus::Challenged && r.validator == Some(node) && r.validator_seal.is_none()
                {
                    if !timed_out {
                        self.events.push(Event::Released {
                            execution: id,
                            task,
                            node,
                            validation: true,
                        });
                    }
                    self.replace_validator(id, task, now, beacon);
                    touched = true;
                }
            }
            if touched {
                self.progress(id, now, beacon);
            }
        }
    }

    /// The assigned node did not deliver: exclude it, double the timeout, reassign.
    fn fail_attempt(&mut self, execution: u64, task: u32, _now: Millis) {
        let t = task as usize - 1;
        let node = self.executions[&execution].tasks[t].node.unwrap();
        dec(&mut self.nodes.get_mut(&node).unwrap().load);
        let r = &mut self.executions.get_mut(&execution).unwrap().tasks[t];
        r.failures = r.failures.saturating_add(1);
        r.excluded.push(node);
        r.status = TaskStatus::Ready;
        let attempt = r.attempts;
        self.events.push(Event::TimedOut {
            execution,
            task,
            node,
            attempt,
        });
    }

    /// `Leave`: hands back everything the node holds, then reassigns it.
    fn leave(&mut self, node: Pubkey, now: Millis, beacon: &dyn Beacon) -> Result<(), ProtocolError> {
        let n = self
            .nodes
            .get_mut(&node)
            .ok_or_else(|| err_unknown("node", node.short()))?;
        n.status = NodeStatus::Offline;
        self.events.push(Event::NodeLeft { node });
        self.release_node(node, false, now, beacon);
        Ok(())
    }

    /// The validator did not seal or reveal in time (or left): another is
    /// drawn, until `validator_attempts_max`, then the committee arbitrates.
    fn replace_validator(&mut self, execution: u64, task: u32, now: Millis, beacon: &dyn Beacon) {
        let t = task as usize - 1;
        let old = self.executions[&execution].tasks[t].validator.unwrap();
        dec(&mut self.nodes.get_mut(&old).unwrap().load);
        {
            let r = &mut self.executions.get_mut(&execution).unwrap().tasks[t];
            r.excluded.push(old);
            r.validator = None;
            r.validator_seal = None;
        }
        let attempts = self.executions[&execution].tasks[t].validator_attempts;
        let next = if attempts < self.params.validator_attempts_max {
            self.pick_validator(execution, task, beacon)
        } else {
            None
        };
        match next {
            Some(v) => self.assign_validator(execution, task, v, now),
            None => self.escalate(execution, task, now, beacon),
        }
    }

    /// Why `node` cannot take `task` of `execution` now, or `None` if it can.
    pub fn ineligible(&self, node: &Pubkey, execution: u64, task: u32) -> Option<String> {
        self.ineligible_for(node, execution, task, false)
    }

    /// As [`Ledger::ineligible`]; `judge`: for a committee seat, which holds
    /// no load (the load limit does not apply).
    fn ineligible_for(&self, node: &Pubkey, execution: u64, task: u32, judge: bool) -> Option<String> {
        let e = &self.executions[&execution];
        let def = &self.models[&e.model].def.tasks[task as usize - 1];
        let Some(n) = self.nodes.get(node) else {
            return Some("not a node".into());
        };
        if n.status != NodeStatus::Active {
            return Some("unresponsive or offline".into());
        }
        if !n.supports.contains(&(e.model, task)) {
            return Some("does not support the task".into());
        }
        if n.vram < def.vram {
            return Some(format!("{} bytes of VRAM, the task needs {}", n.vram, def.vram));
        }
        if !judge && n.load >= self.params.node_load_max {
            return Some("at its load limit".into());
        }
        if e.tasks[task as usize - 1].excluded.contains(node) {
            return Some("failed or cheated on this task before".into());
        }
        let required = self.stake_required(n.vram);
        if n.free_stake() < required {
            return Some(format!("stake {} below the required {}", n.free_stake(), required));
        }
        let cost = self.task_cost(def);
        let s = self.slash_amount(cost, n).min(n.free_stake());
        if !self.params.unverified && !security_holds(&self.params, cost, s) {
            return Some(format!(
                "slashable stake {s} too small for a task costing {cost}: p(1-r)(R+S) <= C"
            ));
        }
        None
    }

    /// A draw from the VRF, weighted by free stake, among the eligible
    /// candidates for `task` other than `avoid`. The VRF input is (block
    /// hash, execution, task, attempts, `purpose`): nobody without the
    /// beacon's key can predict or steer the outcome, and a node's chance
    /// is its share of the eligible stake (never its load).
    fn draw(
        &mut self,
        execution: u64,
        task: u32,
        purpose: &[u8],
        avoid: &[Pubkey],
        judge: bool,
        beacon: &dyn Beacon,
    ) -> Option<Pubkey> {
        let model = self.executions[&execution].model;
        let list = self.candidates.get(&(model, task))?.clone();
        let mut pool: Vec<(Pubkey, Micro)> = Vec::new();
        let mut skipped = Vec::new();
        for k in &list {
            if avoid.contains(k) {
                continue;
            }
            match self.ineligible_for(k, execution, task, judge) {
                None => pool.push((*k, self.nodes[k].free_stake())),
                Some(why) => skipped.push((*k, why)),
            }
        }
        for (node, reason) in skipped.into_iter().take(8) {
            self.events.push(Event::Skipped {
                execution,
                task,
                node,
                reason,
            });
        }
        let total: u128 = pool.iter().map(|p| p.1 as u128).sum();
        if total == 0 {
            return None;
        }
        let r = &self.executions[&execution].tasks[task as usize - 1];
        let mut alpha = Vec::with_capacity(96);
        alpha.extend_from_slice(&self.blockhash);
        alpha.extend_from_slice(&execution.to_le_bytes());
        alpha.extend_from_slice(&task.to_le_bytes());
        alpha.extend_from_slice(&r.attempts.to_le_bytes());
        alpha.extend_from_slice(&r.validator_attempts.to_le_bytes());
        alpha.extend_from_slice(purpose);
        let (_, beta) = beacon.prove(&alpha);
        let mut x = u128::from_le_bytes(beta[..16].try_into().unwrap()) % total;
        for (k, w) in &pool {
            if x < *w as u128 {
                return Some(*k);
            }
            x -= *w as u128;
        }
        None
    }

    /// The node for a ready task: the one that ran an adjacent upstream
    /// task if it is eligible (its inputs are already there), otherwise a
    /// stake-weighted VRF draw.
    fn select(&mut self, execution: u64, task: u32, beacon: &dyn Beacon) -> Option<Pubkey> {
        let e = &self.executions[&execution];
        for &up in &self.models[&e.model].upstream[task as usize - 1] {
            if let Some(n) = e.tasks[up as usize - 1].node {
                if self.ineligible(&n, execution, task).is_none() {
                    return Some(n);
                }
            }
        }
        // A validator that has not sealed must not read the result it checks,
        // which a downstream task would read as input.
        let avoid: Vec<Pubkey> = e
            .tasks
            .iter()
            .filter(|r| r.status == TaskStatus::Challenged && r.validator_seal.is_none())
            .filter_map(|r| r.validator)
            .collect();
        self.draw(execution, task, b"assign", &avoid, false, beacon)
    }

    /// A validator: a stake-weighted VRF draw among the task's candidates
    /// that hold no task of this execution (a node downstream of the
    /// result would read the bytes it must not see before sealing).
    fn pick_validator(&mut self, execution: u64, task: u32, beacon: &dyn Beacon) -> Option<Pubkey> {
        let avoid: Vec<Pubkey> = self.executions[&execution]
            .tasks
            .iter()
            .filter_map(|r| r.node)
            .collect();
        self.draw(execution, task, b"validate", &avoid, false, beacon)
    }

    /// Moves an execution forward: ready tasks, assignments, completion.
    fn progress(&mut self, execution: u64, now: Millis, beacon: &dyn Beacon) {
        let Some(e) = self.executions.get(&execution) else {
            return;
        };
        if e.status != ExecStatus::InProgress {
            return;
        }
        let model = e.model;
        let n = e.tasks.len();
        for t in 0..n {
            let r = &self.executions[&execution].tasks[t];
            if r.status == TaskStatus::Pending
                && self.models[&model].upstream[t]
                    .iter()
                    .all(|&u| self.executions[&execution].tasks[u as usize - 1].has_output())
            {
                self.executions.get_mut(&execution).unwrap().tasks[t].status = TaskStatus::Ready;
            }
        }
        for t in 0..n {
            if self.executions[&execution].tasks[t].status != TaskStatus::Ready {
                continue;
            }
            let task = t as u32 + 1;
            let attempts = self.executions[&execution].tasks[t].attempts;
            if attempts >= self.params.attempts_max {
                self.fail_execution(
                    execution,
                    format!("task {task} got no valid result after {attempts} attempts"),
                    now,
                );
                return;
            }
            let found = self.select(execution, task, beacon);
            if found.is_none() {
                let wait = self
                    .params
                    .task_timeout_min_ms
                    .saturating_mul(self.params.unassigned_waits_max);
                let r = &mut self.executions.get_mut(&execution).unwrap().tasks[t];
                match r.ready_deadline {
                    None => r.ready_deadline = Some(now.saturating_add(wait)),
                    Some(d) if now >= d => {
                        self.fail_execution(
                            execution,
                            format!(
                                "task {task}: no eligible node for {wait} ms (none live, capable and staked enough)"
                            ),
                            now,
                        );
                        return;
                    }
                    _ => {}
                }
            }
            if let Some(node) = found {
                let def = &self.models[&model].def.tasks[t];
                let failures = self.executions[&execution].tasks[t].failures;
                let deadline = now.saturating_add(self.timeout(def, failures));
                inc(&mut self.nodes.get_mut(&node).unwrap().load);
                let r = &mut self.executions.get_mut(&execution).unwrap().tasks[t];
                r.status = TaskStatus::Assigned;
                r.ready_deadline = None;
                r.node = Some(node);
                r.attempts = r.attempts.saturating_add(1);
                r.deadline = deadline;
                let attempt = r.attempts;
                self.events.push(Event::Assigned {
                    execution,
                    task,
                    node,
                    deadline,
                    attempt,
                });
            }
        }
        if self.executions[&execution]
            .tasks
            .iter()
            .all(|r| r.status == TaskStatus::Completed)
        {
            let e = self.executions.get_mut(&execution).unwrap();
            e.status = ExecStatus::Completed;
            e.finished_at = Some(now);
            let refund = std::mem::take(&mut e.escrow);
            let user = e.user;
            credit(&mut self.accounts, &mut BTreeMap::new(), user, refund);
            self.active.remove(&execution);
            self.events.push(Event::ExecutionCompleted { execution });
        }
    }

    fn fail_execution(&mut self, execution: u64, reason: String, now: Millis) {
        // Release every hold of this execution's tasks.
        for t in 0..self.executions[&execution].tasks.len() {
            self.release_holds(execution, t);
        }
        let e = self.executions.get_mut(&execution).unwrap();
        e.status = ExecStatus::Failed(reason.clone());
        e.finished_at = Some(now);
        let refund = std::mem::take(&mut e.escrow);
        let user = e.user;
        credit(&mut self.accounts, &mut BTreeMap::new(), user, refund);
        self.active.remove(&execution);
        self.events.push(Event::ExecutionFailed { execution, reason });
    }

    /// Deadlines: task, validator and dispute timeouts, missed heartbeats,
    /// and assignments of tasks that found no node before. Call at least at
    /// every [`Ledger::poll_timeout`].
    pub fn tick(&mut self, now: Millis, beacon: &dyn Beacon) {
        self.advance_hash(&now.to_le_bytes());
        self.record_slot(now);
        let silence = self
            .params
            .heartbeat_ms
            .saturating_mul(self.params.heartbeats_missed_max);
        let silent: Vec<Pubkey> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.status == NodeStatus::Active && now.saturating_sub(n.last_heartbeat) > silence)
            .map(|(k, _)| *k)
            .collect();
        // All of them first: a task taken from one must not go to another.
        for node in &silent {
            self.nodes.get_mut(node).unwrap().status = NodeStatus::Unresponsive;
            self.events.push(Event::NodeUnresponsive { node: *node });
        }
        for node in silent {
            self.release_node(node, true, now, beacon);
        }
        let ids: Vec<u64> = self.active.iter().copied().collect();
        for id in ids {
            for t in 0..self.executions[&id].tasks.len() {
                if self.executions[&id].status != ExecStatus::InProgress {
                    break;
                }
                let r = &self.executions[&id].tasks[t];
                if r.deadline > now {
                    continue;
                }
                let task = t as u32 + 1;
                match r.status {
                    TaskStatus::Assigned => self.fail_attempt(id, task, now),
                    TaskStatus::Challenged if r.validator_commitment.is_none() && r.validator.is_some() => {
                        self.replace_validator(id, task, now, beacon)
                    }
                    TaskStatus::Disputed => {
                        let (a, v, _) = self.tally(id, task);
                        let on_record = r.validator_commitment.is_some();
                        match a {
                            Some(a) => self.resolve_dispute(id, task, a, v.filter(|_| on_record), true),
                            None => {
                                // The holds go with the execution's failure.
                                self.penalise_absent(id, task);
                                self.end_undecided(
                                    id,
                                    task,
                                    format!("the committee gave no verdict on task {task} by the dispute's deadline"),
                                    now,
                                );
                            }
                        }
                    }
                    _ => {}
                }
            }
            self.progress(id, now, beacon);
        }
    }

    /// The earliest deadline the ledger is waiting on.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let tasks = self
            .active
            .iter()
            .flat_map(|id| self.executions[id].tasks.iter())
            .filter_map(|r| match r.status {
                TaskStatus::Assigned | TaskStatus::Challenged | TaskStatus::Disputed => Some(r.deadline),
                TaskStatus::Ready => r.ready_deadline,
                _ => None,
            });
        let silence = self
            .params
            .heartbeat_ms
            .saturating_mul(self.params.heartbeats_missed_max);
        let hb = self
            .nodes
            .values()
            .filter(|n| n.status == NodeStatus::Active)
            .map(|n| n.last_heartbeat.saturating_add(silence).saturating_add(1));
        tasks.chain(hb).min()
    }
}

/// A committee member's vote: (asserter honest?, validator honest?); `None`
/// where it could not judge.
pub type Vote = (Option<bool>, Option<bool>);

/// The smallest strict majority of `n` members.
pub fn majority(n: u32) -> u32 {
    n / 2 + 1
}

fn inc(x: &mut u32) {
    *x = x.saturating_add(1);
}

/// Counters of holds never go below zero (a bug elsewhere must not wrap one
/// to 4294967295 and lock a node out).
fn dec(x: &mut u32) {
    debug_assert!(*x > 0, "a hold counter would go below zero");
    *x = x.saturating_sub(1);
}

/// Adds `amount` to `to`'s balance, and to its earnings if it is a node.
fn credit(accounts: &mut BTreeMap<Pubkey, Account>, nodes: &mut BTreeMap<Pubkey, Node>, to: Pubkey, amount: Micro) {
    if amount == 0 {
        return;
    }
    let a = accounts.entry(to).or_default();
    a.balance = a.balance.saturating_add(amount);
    if let Some(n) = nodes.get_mut(&to) {
        n.earned_total = n.earned_total.saturating_add(amount);
    }
}

/// Whether a float dtype name (the dtypes whose outputs are judged within a
/// tolerance; every other dtype must match exactly).
fn is_float_dtype(d: &str) -> bool {
    matches!(d, "float32" | "float16" | "bfloat16" | "float64")
}

/// A task's output checks are well formed: one per output, derived checks
/// only with `indices_of`, every tolerance a number within the limits, and
/// indices pointing into a float output along one of its axes. The ledger
/// cannot judge results (it runs no model); it refuses checks that could
/// not be applied or would accept anything.
fn check_task_checks(t: &TaskDef) -> Result<(), String> {
    let output = |n: &str| t.outputs.iter().find(|o| o.name == n);
    let mut seen = BTreeSet::new();
    for c in &t.checks {
        if !seen.insert(c.name.as_str()) {
            return Err(format!("two checks for {:?}", c.name));
        }
        for (what, v, max) in [
            ("rtol", c.rtol, CHECK_RTOL_MAX),
            ("atol", c.atol, CHECK_ATOL_MAX),
            ("miss_rate", c.miss_rate, CHECK_MISS_RATE_MAX),
        ] {
            if v.is_nan() || !(0.0..=max).contains(&v) {
                return Err(format!("check {:?}: {what} {v} is not a number in [0, {max}]", c.name));
            }
        }
        let own = output(&c.name);
        match (&c.indices_of, own) {
            (None, None) => return Err(format!("check {:?} names no output of the task", c.name)),
            (None, Some(_)) => {}
            (Some((values, axis)), own) => {
                let v = output(values)
                    .filter(|v| is_float_dtype(&v.dtype))
                    .ok_or_else(|| format!("check {:?}: {values:?} is not a float output of the task", c.name))?;
                if *axis as usize >= v.shape.len() {
                    return Err(format!(
                        "check {:?}: axis {axis} is not an axis of {values:?} {:?}",
                        c.name, v.shape
                    ));
                }
                if own.is_some_and(|o| is_float_dtype(&o.dtype)) {
                    return Err(format!("check {:?}: indices must be an integer output", c.name));
                }
            }
        }
    }
    if let Some(o) = t.outputs.iter().find(|o| !seen.contains(o.name.as_str())) {
        return Err(format!(
            "output {:?} has no check (deploy calibrates one per output)",
            o.name
        ));
    }
    Ok(())
}
