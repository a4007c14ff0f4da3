//! The ledger's HTTP API as types: every request and response body the
//! ledger writes and its clients read. Both sides use these structs, so a
//! field cannot be misspelt on one side, and a client given a malformed or
//! hostile answer gets a decoding error, never a default. Keys, hashes and
//! commitments travel as canonical lowercase hex (see [`crate::crypto::from_hex32`]).

use crate::crypto::{from_hex32, to_hex, Pubkey};
use crate::state::ExecStatus;
use crate::types::{Event, Micro, Millis, ModelDef, Params};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Hex on the wire for 32-byte values (`Pubkey` or `[u8; 32]`).
pub trait Hex32: Sized {
    fn bytes(&self) -> [u8; 32];
    fn from_bytes(b: [u8; 32]) -> Self;
}

impl Hex32 for Pubkey {
    fn bytes(&self) -> [u8; 32] {
        self.0
    }
    fn from_bytes(b: [u8; 32]) -> Self {
        Pubkey(b)
    }
}

impl Hex32 for [u8; 32] {
    fn bytes(&self) -> [u8; 32] {
        *self
    }
    fn from_bytes(b: [u8; 32]) -> Self {
        b
    }
}

/// `#[serde(with = "hex")]` for a 32-byte value.
pub mod hex {
    use super::*;
    pub fn serialize<T: Hex32, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&to_hex(&v.bytes()))
    }
    pub fn deserialize<'de, T: Hex32, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let s = String::deserialize(d)?;
        from_hex32(&s)
            .map(T::from_bytes)
            .ok_or_else(|| serde::de::Error::custom("expected 64 lowercase hex digits"))
    }
}

/// `#[serde(with = "hex_opt")]` for an optional 32-byte value (`null` when absent).
pub mod hex_opt {
    use super::*;
    pub fn serialize<T: Hex32, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&to_hex(&v.bytes())),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, T: Hex32, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => from_hex32(&s)
                .map(|b| Some(T::from_bytes(b)))
                .ok_or_else(|| serde::de::Error::custom("expected 64 lowercase hex digits")),
        }
    }
}

/// `#[serde(with = "hex_vec")]` for a list of public keys.
pub mod hex_vec {
    use super::*;
    pub fn serialize<S: Serializer>(v: &[Pubkey], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|k| k.hex()))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Pubkey>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| Pubkey::from_hex(s).ok_or_else(|| serde::de::Error::custom("expected 64 lowercase hex digits")))
            .collect()
    }
}

/// Every error answer: a message and the protocol's stable code (1–12 from
/// [`crate::ProtocolError::code`]; 100–102 malformed requests, 103 over
/// the upload quota, 429 rate limited, 500 internal, 502 the backing store
/// failed, 503 the ledger is stopping).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApiError {
    pub error: String,
    pub code: u32,
}

/// `POST /v1/tx` (and the faucet): the instruction is durable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TxAccepted {
    pub ok: bool,
    /// Its position in the ledger's log.
    pub seq: i64,
    pub events: Vec<Event>,
}

/// `PUT /v1/blobs/{hash}`: the blob is in the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlobStored {
    pub ok: bool,
    /// Its BLAKE3: the hash it was uploaded under.
    #[serde(with = "hex")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Hex32))]
    pub blake3: [u8; 32],
    /// Bytes stored.
    pub bytes: u64,
}

/// `POST /v1/faucet` (development networks).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FaucetRequest {
    #[serde(with = "hex")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Hex32))]
    pub to: Pubkey,
    /// Whole USDC, 1 to 100,000 (default 5000: enough to stake a node of up to 32 GB).
    #[serde(default)]
    pub amount_usdc: Option<u64>,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Status {
    pub instructions: u64,
    #[serde(with = "hex")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Hex32))]
    pub blockhash: [u8; 32],
    pub now_ms: Millis,
    pub slot: u64,
    pub accounts: usize,
    pub nodes: usize,
    pub models: usize,
    pub executions: usize,
    pub supply: Micro,
    pub treasury: Micro,
    pub store: String,
}

/// `GET /v1/blockhashes`: one recent slot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SlotHash {
    pub slot: u64,
    #[serde(with = "hex")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Hex32))]
    pub blockhash: [u8; 32],
}

/// `GET /v1/genesis`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GenesisView {
    pub params: Params,
    #[serde(with = "hex")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Hex32))]
    pub mint_authority: Pubkey,
    #[serde(with = "hex")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Hex32))]
    pub beacon: Pubkey,
    /// A development network (faucet on).
    pub dev: bool,
}

/// A node as `GET /v1/nodes` and `/v1/accounts/{key}` show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeView {
    #[serde(with = "hex")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Hex32))]
    pub key: Pubkey,
    pub vram: u64,
    pub stake: Micro,
    /// `Active`, `Unresponsive` or `Offline`.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::state::NodeStatus))]
    pub status: String,
    pub load: u32,
    /// Disputes it is party to (asserter, validator or committee member).
    pub disputes: u32,
    pub last_heartbeat_ms: Millis,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::ModelTask>))]
    pub supports: Vec<(u64, u32)>,
    pub slashed_total: Micro,
    pub earned_total: Micro,
    /// An unstake waiting out its lockup (`RequestUnstake`); `None` when
    /// nothing is unstaking.
    pub unstaking: Option<UnstakingView>,
}

/// Stake on its way out: `amount` is still staked (and slashable) until
/// `Withdraw` moves it to the balance, which the ledger accepts from
/// `unlock_ms` on, once the node holds no task and no dispute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnstakingView {
    pub amount: Micro,
    pub unlock_ms: Millis,
}

/// `GET /v1/accounts/{key}` (an unknown key reads as an empty account).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountView {
    #[serde(with = "hex")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Hex32))]
    pub key: Pubkey,
    pub balance: Micro,
    /// The nonce its next instruction must carry.
    pub nonce: u64,
    pub node: Option<NodeView>,
}

/// `GET /v1/models` (one line per model).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelSummary {
    pub id: u64,
    pub name: String,
    #[serde(with = "hex")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Hex32))]
    pub owner: Pubkey,
    pub active: bool,
    pub tasks: usize,
}

/// `GET /v1/models/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelView {
    pub id: u64,
    #[serde(with = "hex")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Hex32))]
    pub owner: Pubkey,
    pub active: bool,
    pub def: ModelDef,
    /// Demand, for nodes choosing what to pre-load: per task (in order),
    /// how many Active nodes support it.
    #[serde(default)]
    pub nodes_per_task: Vec<u32>,
    /// Executions of this model submitted in the last hour (by the ledger's clock).
    #[serde(default)]
    pub recent_executions: u64,
}

/// One task of `GET /v1/executions/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskView {
    /// 1-based.
    pub task: u32,
    /// `Pending`, `Ready`, `Assigned`, `Challenged`, `Disputed` or `Completed`.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::state::TaskStatus))]
    pub status: String,
    #[serde(with = "hex_opt")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::Hex32>, required = true))]
    pub node: Option<Pubkey>,
    pub attempts: u32,
    pub timeouts: u32,
    pub challenged: bool,
    #[serde(with = "hex_opt")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::Hex32>, required = true))]
    pub validator: Option<Pubkey>,
    pub outcome: Option<String>,
    #[serde(with = "hex_opt")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::Hex32>, required = true))]
    pub commitment: Option<[u8; 32]>,
    pub output_uris: Vec<String>,
    /// The validator sealed its recomputation (its bytes are not shown
    /// until it reveals).
    pub validator_sealed: bool,
    /// The validator's revealed outputs (after its seal).
    #[serde(with = "hex_opt")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::Hex32>, required = true))]
    pub validator_commitment: Option<[u8; 32]>,
    pub validator_uris: Vec<String>,
    /// A dispute's committee, and the members who voted.
    #[serde(with = "hex_vec")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::Hex32>))]
    pub committee: Vec<Pubkey>,
    #[serde(with = "hex_vec")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::Hex32>))]
    pub voted: Vec<Pubkey>,
    /// Nodes no longer assigned this task in this execution: found
    /// dishonest by a dispute, timed out, or unable to run it.
    #[serde(with = "hex_vec", default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::Hex32>))]
    pub excluded: Vec<Pubkey>,
    /// The current deadline (result, validation, or dispute), ledger ms.
    pub deadline_ms: Millis,
}

/// `GET /v1/executions/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecutionView {
    pub id: u64,
    pub model: u64,
    #[serde(with = "hex")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Hex32))]
    pub user: Pubkey,
    /// The input commitment: the BLAKE3 of the input blob.
    #[serde(with = "hex")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Hex32))]
    pub input: [u8; 32],
    pub status: ExecStatus,
    pub escrow: Micro,
    pub fetched: bool,
    pub tasks: Vec<TaskView>,
}

impl ExecutionView {
    /// Task `task` (1-based), or a clear error for an id the answer lacks.
    pub fn task(&self, task: u32) -> Result<&TaskView, String> {
        task.checked_sub(1)
            .and_then(|i| self.tasks.get(i as usize))
            .ok_or_else(|| format!("execution {} has no task {task}", self.id))
    }
}

/// `GET /v1/executions` (newest first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecutionSummary {
    pub id: u64,
    pub model: u64,
    #[serde(with = "hex")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Hex32))]
    pub user: Pubkey,
    pub status: ExecStatus,
    pub tasks: usize,
    pub completed: usize,
    pub submitted_ms: Millis,
    pub finished_ms: Option<Millis>,
    pub fetched: bool,
}

/// What a work item asks of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum WorkKind {
    /// Execute the task (the node is its assigned asserter).
    Compute,
    /// Re-execute it, seal the outputs, then reveal them. The item never
    /// carries the result being checked.
    Validate,
    /// As a drawn committee member: re-execute it and judge the asserter's
    /// result (`commitment`) and the validator's (`validator_commitment`).
    Judge,
}

impl std::fmt::Display for WorkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WorkKind::Compute => "compute",
            WorkKind::Validate => "validate",
            WorkKind::Judge => "judge",
        })
    }
}

/// `GET /v1/nodes/{key}/work`: one item of a node's work.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkItem {
    pub execution: u64,
    pub model: u64,
    /// 1-based.
    pub task: u32,
    pub kind: WorkKind,
    pub attempt: u32,
    pub deadline_ms: Millis,
    /// For `judge`: the asserter's committed result (never sent to a validator).
    #[serde(with = "hex_opt")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::Hex32>, required = true))]
    pub commitment: Option<[u8; 32]>,
    /// For `judge`: the validator's revealed result, if it revealed one.
    #[serde(default, with = "hex_opt")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::Hex32>))]
    pub validator_commitment: Option<[u8; 32]>,
}

/// `GET /v1/disputes`: a task in dispute, its committee and its deadline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DisputeView {
    pub execution: u64,
    pub model: u64,
    pub task: u32,
    #[serde(with = "hex_opt")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::Hex32>, required = true))]
    pub asserter: Option<Pubkey>,
    #[serde(with = "hex_opt")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::Hex32>, required = true))]
    pub commitment: Option<[u8; 32]>,
    #[serde(with = "hex_opt")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::Hex32>, required = true))]
    pub validator: Option<Pubkey>,
    #[serde(with = "hex_opt")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::Hex32>, required = true))]
    pub validator_commitment: Option<[u8; 32]>,
    #[serde(with = "hex_vec")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::Hex32>))]
    pub committee: Vec<Pubkey>,
    #[serde(with = "hex_vec")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::Hex32>))]
    pub voters: Vec<Pubkey>,
    pub deadline_ms: Millis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_travel_as_canonical_hex_and_anything_else_is_an_error() {
        let w = WorkItem {
            execution: 1,
            model: 2,
            task: 3,
            kind: WorkKind::Validate,
            attempt: 0,
            deadline_ms: 9,
            commitment: Some([0xab; 32]),
            validator_commitment: None,
        };
        let j = serde_json::to_value(&w).unwrap();
        assert_eq!(j["commitment"], "ab".repeat(32));
        assert_eq!(j["kind"], "validate");
        assert_eq!(serde_json::from_value::<WorkItem>(j.clone()).unwrap(), w);
        for bad in [
            serde_json::json!({"commitment": "AB".repeat(32)}),
            serde_json::json!({"commitment": 5}),
            serde_json::json!({"task": -1}),
            serde_json::json!({"kind": "steal"}),
            serde_json::json!({"task": null}),
        ] {
            let mut v = j.clone();
            for (k, x) in bad.as_object().unwrap() {
                v[k] = x.clone();
            }
            assert!(serde_json::from_value::<WorkItem>(v).is_err(), "{bad}");
        }
        let mut missing = j.clone();
        missing.as_object_mut().unwrap().remove("task");
        assert!(serde_json::from_value::<WorkItem>(missing).is_err());
    }
}
