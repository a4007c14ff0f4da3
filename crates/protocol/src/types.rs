//! Parameters, instructions, errors and events of the protocol.

use crate::crypto::{Pubkey, VrfProof};
use serde::{Deserialize, Serialize};

/// Milliseconds of the ledger's clock. The state machine never reads a
/// clock: every call that needs the time receives it.
pub type Millis = u64;
/// Amounts in micro-USDC (6 decimals).
pub type Micro = u64;
pub const USDC: Micro = 1_000_000;
pub const GB: u64 = 1_000_000_000;
pub const PPM: u64 = 1_000_000;

/// Genesis parameters. No floats anywhere: probabilities are parts per
/// million, ratios are percentages, so a Solana program computes the same.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct Params {
    /// Challenge probability p, parts per million (seed: 0.08).
    pub challenge_ppm: u64,
    /// Verification reward R as a percentage of the task cost (seed: 1.2×).
    pub verification_reward_pct: u64,
    /// Slash = min(max(multiplier × task cost, slash_min), stake).
    pub slash_multiplier: u64,
    pub slash_min: Micro,
    /// Largest colluding fraction r the security condition must tolerate, ppm.
    pub collusion_ppm: u64,
    /// Stake required: base + per GB of claimed VRAM.
    pub stake_base: Micro,
    pub stake_per_gb: Micro,
    /// Fee = computeUnits × fee_per_cu + min(priority × priority_fee, priority_fee_max) + fee_per_gb × GB of VRAM.
    pub fee_per_cu: Micro,
    pub priority_fee: Micro,
    pub priority_fee_max: Micro,
    pub fee_per_gb: Micro,
    /// The largest task cost the network accepts; the security condition is
    /// checked at genesis for every cost up to it.
    pub task_cost_max: Micro,
    pub heartbeat_ms: Millis,
    /// Heartbeats a node may miss before the committee is asked about it.
    pub heartbeats_missed_max: u64,
    pub task_timeout_min_ms: Millis,
    /// Timeout per 100 compute units: max(min, per_100cu × cu / 100), doubled per failure.
    pub task_timeout_per_100cu_ms: Millis,
    /// Attempts of one task before its execution fails.
    pub attempts_max: u32,
    /// A task that finds no eligible node waits this many minimum timeouts, then its execution fails.
    pub unassigned_waits_max: u64,
    /// Validators tried for one challenge before the committee arbitrates alone.
    pub validator_attempts_max: u32,
    pub unstake_lockup_ms: Millis,
    /// Nodes probed per assignment (deterministic sample of the candidates).
    pub candidates_probed: usize,
    /// Tasks one node may hold at once.
    pub node_load_max: u32,
    /// Bounds on what instructions carry.
    pub tasks_per_model_max: usize,
    pub uris_per_result_max: usize,
    pub uri_bytes_max: usize,
    pub supported_interfaces_max: usize,
    /// Nothing that grows the state is free: registering a model costs
    /// `model_fee` + `model_fee_per_task` per task, every execution pays
    /// `execution_fee` on top of its escrow (both to the treasury), and a
    /// transfer that creates an account carries at least `account_min`.
    pub model_fee: Micro,
    pub model_fee_per_task: Micro,
    pub execution_fee: Micro,
    pub account_min: Micro,
    /// Independent nodes that must report a task unrunnable before its
    /// execution fails (the model's owner pays each of them the task cost).
    pub unrunnable_reports: u32,
    /// Bounds on a model's description: names, tensors per task, rank, connections.
    pub name_bytes_max: usize,
    pub tensors_per_task_max: usize,
    pub rank_max: usize,
    pub connections_per_model_max: usize,
    /// Longest reason a node may give for a task it cannot run.
    pub reason_bytes_max: usize,
    /// Members of the committee drawn (by the VRF, weighted by stake, from
    /// the staked nodes that support the task) to arbitrate one dispute; a
    /// verdict needs a strict majority of them.
    pub committee_size: u32,
    /// How long a committee has to vote, from the dispute. At the deadline
    /// an undecided dispute ends: the user is refunded, holds are released,
    /// nobody is slashed, and members who did not vote pay `absent_penalty`.
    pub dispute_ms: Millis,
    pub absent_penalty: Micro,
    /// Each member of a decided dispute's majority earns this percentage of
    /// the task cost (from the slash, else from the treasury).
    pub committee_reward_pct: u64,
    /// A development network without Proof of Sampling: p must be 0 and
    /// the security condition is not checked (at genesis or per node).
    /// Only `splitup ledger start --dev --p 0` sets it: nothing is verified.
    pub unverified: bool,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            challenge_ppm: 80_000,
            verification_reward_pct: 120,
            slash_multiplier: 10,
            slash_min: 500 * USDC,
            collusion_ppm: 100_000,
            stake_base: 1_000 * USDC,
            stake_per_gb: 100 * USDC,
            fee_per_cu: 100,
            priority_fee: 50_000,
            priority_fee_max: 5 * USDC,
            fee_per_gb: 2_000,
            task_cost_max: 25 * USDC,
            heartbeat_ms: 30_000,
            heartbeats_missed_max: 3,
            task_timeout_min_ms: 30_000,
            task_timeout_per_100cu_ms: 5_000,
            attempts_max: 6,
            unassigned_waits_max: 10,
            validator_attempts_max: 3,
            unstake_lockup_ms: 24 * 3600 * 1000,
            candidates_probed: 16,
            node_load_max: 4,
            tasks_per_model_max: 1024,
            uris_per_result_max: 64,
            uri_bytes_max: 2048,
            supported_interfaces_max: 4096,
            model_fee: USDC,
            model_fee_per_task: 10_000,
            execution_fee: 1_000,
            account_min: 100_000,
            unrunnable_reports: 2,
            name_bytes_max: 256,
            tensors_per_task_max: 1024,
            rank_max: 16,
            connections_per_model_max: 65_536,
            reason_bytes_max: 512,
            committee_size: 3,
            dispute_ms: 600_000,
            absent_penalty: 10 * USDC,
            committee_reward_pct: 100,
            unverified: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<u64>,
    pub dtype: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskDef {
    pub vram: u64,
    pub compute_units: u64,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub weight_uri: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Bytes32))]
    pub weight_hash: [u8; 32],
    /// BLAKE3 of the task's ONNX graph (its initializers carry no data).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Bytes32))]
    pub graph_hash: [u8; 32],
    /// How a committee member judges a result of this task against its own
    /// recomputation: one check per output, plus derived checks (the greedy
    /// tokens of logits). Calibrated at deploy time; see ARCHITECTURE.md,
    /// "Judging across hardware".
    pub checks: Vec<OutputCheck>,
}

/// The largest relative tolerance a check may carry (above it any value of
/// the right sign passes).
pub const CHECK_RTOL_MAX: f64 = 1.0;
/// The largest absolute tolerance a check may carry.
pub const CHECK_ATOL_MAX: f64 = 1e12;
/// The largest miss rate a check may carry (above it an output is guessed
/// at, not checked).
pub const CHECK_MISS_RATE_MAX: f64 = 0.5;

/// The tolerance of one output of a task, or of one derived check.
///
/// An element of a float output misses when |a − b| > atol + rtol·|b|
/// (integers: when they differ); the output is a mismatch only when its
/// misses exceed what an honest node missing each element with probability
/// `miss_rate` exceeds with probability 10⁻⁹. With `indices_of`, the output
/// (or, under a name that is not an output, the argmax a greedy sampler
/// takes) holds indices into the float output `indices_of.0` along axis
/// `indices_of.1`, judged by that output's values. The rule itself is
/// `splitup_tensor::judge`; the ledger checks only that a check is well
/// formed and within the limits above.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutputCheck {
    pub name: String,
    pub rtol: f64,
    pub atol: f64,
    pub miss_rate: f64,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::IndicesOf>))]
    pub indices_of: Option<(String, u32)>,
}

impl OutputCheck {
    /// Every element must be equal (a task nodes run bit-identically).
    pub fn exact(name: &str) -> OutputCheck {
        OutputCheck {
            name: name.to_string(),
            rtol: 0.0,
            atol: 0.0,
            miss_rate: 0.0,
            indices_of: None,
        }
    }
}

/// Seed 000 §7.1 `TaskConnection`, with task ids 1-based and 0 the user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Connection {
    pub source_task: u32,
    pub destination_task: u32,
    pub source_output: u32,
    pub dest_input: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelDef {
    pub name: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub tasks: Vec<TaskDef>,
    pub connections: Vec<Connection>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Instruction {
    /// Local networks only: the mint authority creates money.
    Mint {
        to: Pubkey,
        amount: Micro,
    },
    Transfer {
        to: Pubkey,
        amount: Micro,
    },
    RegisterModel(ModelDef),
    DeactivateModel {
        model: u64,
    },
    /// Registers or updates the signer as a node.
    RegisterNode {
        vram: u64,
        #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::ModelTask>))]
        supports: Vec<(u64, u32)>,
    },
    Stake {
        amount: Micro,
    },
    RequestUnstake {
        amount: Micro,
    },
    Withdraw,
    Heartbeat,
    SubmitExecution {
        model: u64,
        priority: u64,
        #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Bytes32))]
        input_commitment: [u8; 32],
    },
    SubmitResult {
        execution: u64,
        task: u32,
        #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Bytes32))]
        commitment: [u8; 32],
        output_uris: Vec<String>,
    },
    /// Commit: the validator seals its own recomputation before it can see
    /// the result it checks. `seal` is [`crate::crypto::validation_seal`] of
    /// its output bytes: only a node holding those bytes can produce it, and
    /// it reveals nothing of them.
    SubmitValidation {
        execution: u64,
        task: u32,
        #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Bytes32))]
        seal: [u8; 32],
    },
    /// Reveal: the BLAKE3 of the validator's output bytes and where they are
    /// (each URI names that hash). The ledger's shell checks that the bytes
    /// behind `commitment` produce the seal before it admits the reveal.
    RevealValidation {
        execution: u64,
        task: u32,
        #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Bytes32))]
        commitment: [u8; 32],
        output_uris: Vec<String>,
    },
    /// The signer (a node) goes offline gracefully: every assignment and
    /// validation it holds is handed back and reassigned at once, and it is
    /// not assigned more work until its next heartbeat.
    Leave,
    /// The assigned node cannot run this task (it crashed, ran out of
    /// memory, passed its wall-clock limit, or the gate refused the graph):
    /// the task is handed back and reassigned to another node. Once
    /// `unrunnable_reports` independent nodes said so, the execution fails,
    /// the user's escrow is refunded, and the model's owner pays each
    /// reporter the task's cost for the wasted work.
    ReportUnrunnable {
        execution: u64,
        task: u32,
        reason: String,
    },
    /// The user of a finished execution has its outputs: the storage may
    /// delete the execution's tensors without waiting for the retention time.
    Fetched {
        execution: u64,
    },
    /// A member of the dispute's committee, after re-executing the task:
    /// is the asserter's result honest, and the validator's (when it
    /// revealed one)? `None`: this member could not judge (it could not run
    /// the task, or the bytes could not be read).
    DisputeVote {
        execution: u64,
        task: u32,
        asserter_honest: Option<bool>,
        validator_honest: Option<bool>,
    },
}

/// A signed instruction. `nonce` must equal the signer's next nonce, so a
/// replayed or reordered instruction is rejected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignedTx {
    pub signer: Pubkey,
    pub nonce: u64,
    pub ix: Instruction,
    #[serde(with = "sig_serde")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Bytes64))]
    pub signature: [u8; 64],
}

mod sig_serde {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let v: Vec<u8> = Vec::deserialize(d)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("a signature is 64 bytes"))
    }
}

impl SignedTx {
    /// The bytes that are signed: a domain tag, then signer, nonce and instruction.
    pub fn message(signer: &Pubkey, nonce: u64, ix: &Instruction) -> Vec<u8> {
        let mut m = b"splitup-tx-v1".to_vec();
        m.extend_from_slice(&serde_json::to_vec(&(signer, nonce, ix)).expect("instructions serialise"));
        m
    }

    pub fn sign(key: &crate::crypto::Keypair, nonce: u64, ix: Instruction) -> SignedTx {
        let signer = key.pubkey();
        let signature = key.sign(&SignedTx::message(&signer, nonce, &ix));
        SignedTx {
            signer,
            nonce,
            ix,
            signature,
        }
    }
}

/// Every rejection, with a stable numeric code (never renumber; append).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ProtocolError {
    #[error("the signature does not verify for the signer")]
    BadSignature,
    #[error("nonce {got} is not the signer's next nonce {expected} (replayed or out of order)")]
    BadNonce { expected: u64, got: u64 },
    #[error("the signer is not allowed to do this: {0}")]
    Unauthorized(String),
    #[error("unknown {kind} {id}")]
    Unknown { kind: &'static str, id: String },
    #[error("arithmetic overflow")]
    Overflow,
    #[error("insufficient balance: {needed} needed, {available} available")]
    InsufficientBalance { needed: Micro, available: Micro },
    #[error("insufficient stake: {0}")]
    InsufficientStake(String),
    #[error("invalid model: {0}")]
    InvalidModel(String),
    #[error("invalid instruction: {0}")]
    Invalid(String),
    #[error("result for execution {execution} task {task} is not expected now ({why})")]
    UnexpectedResult { execution: u64, task: u32, why: String },
    #[error("security condition p(1-r)(R+S) > C fails: {0}")]
    Insecure(String),
    #[error("locked: {0}")]
    Locked(String),
}

impl ProtocolError {
    pub fn code(&self) -> u32 {
        match self {
            ProtocolError::BadSignature => 1,
            ProtocolError::BadNonce { .. } => 2,
            ProtocolError::Unauthorized(_) => 3,
            ProtocolError::Unknown { .. } => 4,
            ProtocolError::Overflow => 5,
            ProtocolError::InsufficientBalance { .. } => 6,
            ProtocolError::InsufficientStake(_) => 7,
            ProtocolError::InvalidModel(_) => 8,
            ProtocolError::Invalid(_) => 9,
            ProtocolError::UnexpectedResult { .. } => 10,
            ProtocolError::Insecure(_) => 11,
            ProtocolError::Locked(_) => 12,
        }
    }
}

/// What happened, for the shells (node daemons, the simulator) to act on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Event {
    ModelRegistered {
        model: u64,
    },
    ExecutionSubmitted {
        execution: u64,
        escrow: Micro,
    },
    Assigned {
        execution: u64,
        task: u32,
        node: Pubkey,
        deadline: Millis,
        attempt: u32,
    },
    /// The VRF draw after a result was committed; `validator` is set when challenged.
    Drawn {
        execution: u64,
        task: u32,
        challenged: bool,
        validator: Option<Pubkey>,
        proof: VrfProof,
    },
    ValidatorAssigned {
        execution: u64,
        task: u32,
        validator: Pubkey,
        deadline: Millis,
    },
    TaskCompleted {
        execution: u64,
        task: u32,
        node: Pubkey,
    },
    Disputed {
        execution: u64,
        task: u32,
        asserter: Pubkey,
        validator: Option<Pubkey>,
        committee: Vec<Pubkey>,
        deadline: Millis,
    },
    /// A dispute ended: `verdict` says how.
    DisputeEnded {
        execution: u64,
        task: u32,
        verdict: String,
    },
    Slashed {
        node: Pubkey,
        amount: Micro,
        execution: u64,
        task: u32,
    },
    Invalidated {
        execution: u64,
        task: u32,
    },
    TimedOut {
        execution: u64,
        task: u32,
        node: Pubkey,
        attempt: u32,
    },
    ExecutionCompleted {
        execution: u64,
    },
    ExecutionFailed {
        execution: u64,
        reason: String,
    },
    /// A node missed `heartbeats_missed_max` heartbeats: it is taken off
    /// its work until its next heartbeat.
    NodeUnresponsive {
        node: Pubkey,
    },
    /// A node left gracefully (`Leave`).
    NodeLeft {
        node: Pubkey,
    },
    /// A task or validation handed back by a leaving node, before its deadline.
    Released {
        execution: u64,
        task: u32,
        node: Pubkey,
        validation: bool,
    },
    /// A node reported a task it cannot run; it is reassigned elsewhere.
    Unrunnable {
        execution: u64,
        task: u32,
        node: Pubkey,
        reason: String,
    },
    /// A candidate skipped during assignment, and why.
    Skipped {
        execution: u64,
        task: u32,
        node: Pubkey,
        reason: String,
    },
}
