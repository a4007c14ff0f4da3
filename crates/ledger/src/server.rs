//! The ledger server: `Core` (state machine + log + keys) and its HTTP API.
//!
//! Every state change arrives as a signed instruction on `POST /v1/tx` (the
//! development faucet signs its mints with the operator's mint key). The
//! operator's keys (the VRF beacon's, and on development networks the
//! mint's) live in a directory of their own, never in the data directory:
//! disputes are judged by committees of staked nodes, not by keys the
//! operator holds. An instruction is applied, then appended to the log and
//! committed, and only then acknowledged. If the commit fails the process
//! aborts: the state in memory is ahead of the log, and a restart rebuilds it
//! from the log, which holds exactly what was acknowledged.

use crate::log::{Entry, Log, LogError};
use crate::{blobs, keys};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use parking_lot::Mutex;
use splitup_protocol::api::*;
use splitup_protocol::state::Ledger;
use splitup_protocol::*;
use splitup_store::{Store, StoreError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Largest signed instruction accepted (a model registration with many tasks fits).
pub const TX_BYTES_MAX: usize = 1024 * 1024;
/// Largest faucet grant per request, in USDC.
pub const FAUCET_USDC_MAX: u64 = 100_000;
/// A faucet grant when the request names no amount, in USDC: the stake of
/// the README's node (`node start --vram 8GiB`: 1000 + 100 × 9 GB = 1900
/// USDC at the default parameters) with room for fees, and the stake of any
/// node up to 32 GB (4200 USDC). Checked by `faucet_default_covers_a_node`.
pub const FAUCET_USDC_DEFAULT: u64 = 5_000;

#[derive(Clone, Debug)]
pub struct Config {
    pub data: PathBuf,
    /// The operator's key directory (`beacon.json`, and `mint-authority.json`
    /// on development networks). Must not be inside `data`.
    pub keys: PathBuf,
    pub listen: SocketAddr,
    /// Challenge probability at genesis (ignored when the data directory exists).
    pub challenge_ppm: u64,
    /// A development network: the mint key lives in the data directory and
    /// the faucet mints on request. Loopback addresses only.
    pub dev: bool,
    /// A public network's mint authority (its key is kept elsewhere); `None`
    /// with `dev` false: nobody can mint (USDC only arrives by transfer).
    pub mint_authority: Option<Pubkey>,
    /// Tests only: 2 s heartbeats, 10 s minimum task timeouts and 20 s disputes (ignored when the genesis exists).
    pub test_timeouts: bool,
    /// Tensors (inputs and task outputs) of finished executions are deleted
    /// this long after they finish, or as soon as their user has fetched them.
    pub retention_ms: Millis,
    /// A snapshot of the state is stored after this many log entries.
    pub snapshot_every: u64,
    /// The blob store's URL (see `splitup_store`); `None`: `DATA/blobs` on the local disk.
    pub store: Option<String>,
    /// Requests per second (and burst) allowed per client address and per signing key.
    pub limits: crate::limits::Rates,
    /// Tests only: the rules "panic" after applying a transfer of exactly this
    /// many micro-USDC (before it is durable), to show a panic fails only its request.
    pub test_panic_on_transfer: Option<Micro>,
    /// Tests only: register models without checking their blobs (to show
    /// that nodes contain what a lax or bypassed check lets through).
    pub test_unchecked_registrations: bool,
    /// How to start a task worker (`splitup node worker`), with which
    /// registration loads each task in ONNX Runtime; `None` skips that step.
    pub worker: Option<splitup_exec::worker::WorkerCommand>,
    /// Bytes a node with stake may upload through `/v1/blobs` per rolling
    /// 24 h ([`blobs::UPLOAD_QUOTA_NODE`] by default), and any other account
    /// ([`blobs::UPLOAD_QUOTA_ACCOUNT`]).
    pub upload_quota_node: u64,
    pub upload_quota_account: u64,
    /// A blob that no model and no live execution refers to is deleted once
    /// it is this old (usually `retention_ms`).
    pub orphan_ttl_ms: Millis,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("genesis refused: {0}")]
    Genesis(ProtocolError),
    #[error("{0}")]
    Other(String),
}

pub struct Core {
    pub ledger: Ledger,
    beacon: VrfBeacon,
    /// The mint key: development networks only.
    authority: Option<Keypair>,
    log: Log,
    pub(crate) last_now: Millis,
    dev: bool,
    genesis: Genesis,
    /// Tests only: panic inside `submit` after applying a transfer of this amount.
    test_panic_on_transfer: Option<Micro>,
    last_seq: i64,
    snapshot_every: u64,
    since_snapshot: u64,
    /// How the state was rebuilt at start, for the start-up line.
    pub restored: String,
    /// Bumped after every change of state (an instruction, an applied tick):
    /// long-polling readers wait on it.
    changes: tokio::sync::watch::Sender<u64>,
}

fn wall_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// The state the log proves: the newest snapshot that reads back intact
/// (a damaged one is reported and skipped) plus the entries after it,
/// replayed. Returns (the snapshot's entry or 0, the clock, the state, entries replayed).
fn restore_state(
    log: &Log,
    genesis_ledger: Ledger,
    beacon: &VrfBeacon,
) -> Result<(i64, Millis, Ledger, u64), ServerError> {
    // The newest snapshot that reads back intact; a damaged one is reported and skipped.
    let mut start = None;
    for (seq, now, body) in log.snapshots()? {
        match Ledger::restore(&body) {
            Ok(l) if l.params == genesis_ledger.params && l.beacon == genesis_ledger.beacon => {
                start = Some((seq, now, l));
                break;
            }
            Ok(_) => tracing::warn!("snapshot at log entry {seq} belongs to another genesis; skipped"),
            Err(e) => tracing::warn!("snapshot at log entry {seq}: {e}; skipped"),
        }
    }
    let (after, mut last_now, mut ledger) = start.unwrap_or((0, 0, genesis_ledger));
    let replayed = log.replay(after, |_, e| {
        match e {
            Entry::Tx { now, tx } => {
                ledger
                    .submit(&tx, now, beacon)
                    .map_err(|e| format!("a logged instruction is now rejected: {e}"))?;
                last_now = now;
            }
            Entry::Tick { now } => {
                ledger.tick(now, beacon);
                last_now = now;
            }
        }
        ledger.poll_events();
        Ok(())
    })?;
    Ok((after, last_now, ledger, replayed))
}

impl Core {
    /// Opens the data directory: keys (created on first start), genesis, and
    /// the log, replayed through the state machine.
    pub fn open(cfg: &Config) -> Result<Core, ServerError> {
        std::fs::create_dir_all(&cfg.data)
            .map_err(|e| ServerError::Other(format!("cannot create {}: {e}", cfg.data.display())))?;
        let kd = cfg.keys.clone();
        let inside = |dir: &std::path::Path| {
            let abs = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            abs(dir).starts_with(abs(&cfg.data))
        };
        if inside(&kd) {
            return Err(ServerError::Other(format!(
                "the operator's keys ({}) must live outside the data directory ({})",
                kd.display(),
                cfg.data.display()
            )));
        }
        if cfg.data.join("keys").join("beacon.json").exists() {
            return Err(ServerError::Other(format!(
                "{} holds operator keys from an older version: move {}/keys/beacon.json (and mint-authority.json) to {} and delete {}/keys (committee keys are no longer used)",
                cfg.data.display(),
                cfg.data.display(),
                kd.display(),
                cfg.data.display()
            )));
        }
        let mint_key = kd.join("mint-authority.json");
        if cfg.dev && !cfg.listen.ip().is_loopback() {
            return Err(ServerError::Other(format!(
                "--dev keeps a mint key on disk and serves a faucet, so it listens on loopback addresses only, not {}",
                cfg.listen
            )));
        }
        if !cfg.dev && mint_key.exists() {
            return Err(ServerError::Other(format!(
                "{} is a development network (its mint key is in {}): start it with --dev",
                cfg.data.display(),
                mint_key.display()
            )));
        }
        let authority = if cfg.dev {
            Some(keys::read_or_create(&mint_key)?)
        } else {
            None
        };
        let mint_authority = match (&authority, cfg.mint_authority) {
            (Some(k), None) => k.pubkey(),
            (None, Some(p)) => p,
            (Some(_), Some(_)) => {
                return Err(ServerError::Other(
                    "--mint-authority is for public networks; --dev makes its own mint key".into(),
                ))
            }
            // Nobody holds the zero key's secret: minting is off.
            (None, None) => Pubkey([0; 32]),
        };
        let beacon_seed = keys::read_or_create(&kd.join("beacon.json"))?.seed();
        let beacon = VrfBeacon::from_seed(beacon_seed);
        let log = Log::open(&cfg.data.join("ledger.sqlite"))?;
        let genesis = match log.meta("genesis")? {
            Some(g) => serde_json::from_str::<Genesis>(&g)
                .map_err(|e| ServerError::Other(format!("stored genesis is unreadable: {e}")))?,
            None => {
                let g = Genesis {
                    params: if cfg.test_timeouts {
                        Params {
                            challenge_ppm: cfg.challenge_ppm,
                            unverified: cfg.dev && cfg.challenge_ppm == 0,
                            heartbeat_ms: 2_000,
                            task_timeout_min_ms: 10_000,
                            task_timeout_per_100cu_ms: 100,
                            unstake_lockup_ms: 10_000,
                            dispute_ms: 20_000,
                            ..Params::default()
                        }
                    } else {
                        Params {
                            challenge_ppm: cfg.challenge_ppm,
                            unverified: cfg.dev && cfg.challenge_ppm == 0,
                            ..Params::default()
                        }
                    },
                    mint_authority,
                    beacon: beacon.public_key(),
                };
                Ledger::genesis(g.clone()).map_err(ServerError::Genesis)?;
                log.set_meta("genesis", &serde_json::to_string(&g).unwrap())?;
                g
            }
        };
        if genesis.beacon != beacon.public_key() {
            return Err(ServerError::Other(format!(
                "the beacon key in {} does not match this ledger's genesis",
                kd.display()
            )));
        }
        if genesis.mint_authority != mint_authority {
            return Err(ServerError::Other(format!(
                "this ledger's genesis names mint authority {}, not {}",
                genesis.mint_authority.hex(),
                mint_authority.hex()
            )));
        }
        let genesis_ledger = Ledger::genesis(genesis.clone()).map_err(ServerError::Genesis)?;
        let (after, last_now, ledger, replayed) = restore_state(&log, genesis_ledger, &beacon)?;
        let entries = if replayed == 1 { "entry" } else { "entries" };
        let restored = if after > 0 {
            format!("snapshot at log entry {after} + {replayed} {entries} replayed")
        } else {
            format!("{replayed} log {entries} replayed")
        };
        let last_seq = log.last_seq()?;
        Ok(Core {
            ledger,
            beacon,
            authority,
            log,
            last_now,
            dev: cfg.dev,
            genesis,
            test_panic_on_transfer: cfg.test_panic_on_transfer,
            last_seq,
            snapshot_every: cfg.snapshot_every.max(1),
            since_snapshot: replayed,
            restored,
            changes: tokio::sync::watch::Sender::new(0),
        })
    }

    fn now(&mut self) -> Millis {
        self.last_now = wall_ms().max(self.last_now);
        self.last_now
    }

    fn durable(&mut self, e: &Entry) -> i64 {
        match self.log.append(e) {
            Ok(seq) => {
                self.last_seq = seq;
                self.since_snapshot += 1;
                if self.since_snapshot >= self.snapshot_every {
                    self.snapshot();
                }
                seq
            }
            Err(err) => {
                // The state is ahead of the log; the log is the truth. Restart rebuilds it.
                tracing::error!("cannot make an accepted instruction durable: {err}");
                std::process::abort();
            }
        }
    }

    /// Replaces the state in memory by the one the log proves (after a panic
    /// left it possibly half-changed).
    pub fn rebuild(&mut self) -> Result<(), ServerError> {
        let genesis_ledger = Ledger::genesis(self.genesis.clone()).map_err(ServerError::Genesis)?;
        let (_, last_now, ledger, replayed) = restore_state(&self.log, genesis_ledger, &self.beacon)?;
        self.ledger = ledger;
        self.last_now = self.last_now.max(last_now);
        self.last_seq = self.log.last_seq()?;
        self.since_snapshot = replayed;
        self.changes.send_modify(|v| *v += 1);
        Ok(())
    }

    /// Stores the state as of the last log entry. A failure only costs a
    /// longer replay at the next start, so it is reported, not fatal.
    pub fn snapshot(&mut self) {
        match self
            .log
            .save_snapshot(self.last_seq, self.last_now, &self.ledger.snapshot())
        {
            Ok(()) => self.since_snapshot = 0,
            Err(e) => tracing::warn!("snapshot at log entry {} not stored: {e}", self.last_seq),
        }
    }

    /// Applies a signed instruction, makes it durable, and returns its log
    /// sequence number and the events it caused.
    pub fn submit(&mut self, tx: SignedTx) -> Result<(i64, Vec<Event>), ProtocolError> {
        let now = self.now();
        self.ledger.submit(&tx, now, &self.beacon)?;
        if let (Instruction::Transfer { amount, .. }, Some(p)) = (&tx.ix, self.test_panic_on_transfer) {
            if *amount == p {
                panic!("injected test panic after applying a transfer of {amount}");
            }
        }
        let seq = self.durable(&Entry::Tx { now, tx: Box::new(tx) });
        self.changes.send_modify(|v| *v += 1);
        let events = self.ledger.poll_events();
        crate::events::log(&events);
        Ok((seq, events))
    }

    /// Runs the state machine's deadlines when one is due (or a task waits
    /// for a node); a tick that could change nothing is neither applied nor logged.
    pub fn tick(&mut self) {
        let now = self.now();
        let due = self.ledger.poll_timeout().is_some_and(|t| t <= now);
        let waiting = self.ledger.active.iter().any(|id| {
            self.ledger.executions[id]
                .tasks
                .iter()
                .any(|r| r.status == TaskStatus::Ready)
        });
        if !due && !waiting {
            return;
        }
        self.ledger.tick(now, &self.beacon);
        self.durable(&Entry::Tick { now });
        self.changes.send_modify(|v| *v += 1);
        crate::events::log(&self.ledger.poll_events());
    }

    fn sign(&self, key: &Keypair, ix: Instruction) -> SignedTx {
        let nonce = self.ledger.accounts.get(&key.pubkey()).map(|a| a.nonce).unwrap_or(0);
        SignedTx::sign(key, nonce, ix)
    }

    pub fn faucet(&mut self, to: Pubkey, amount: Micro) -> Result<(i64, Vec<Event>), ProtocolError> {
        let Some(authority) = self.authority.clone().filter(|_| self.dev) else {
            return Err(ProtocolError::Unauthorized(
                "the faucet exists on development networks only (splitup ledger start --dev)".into(),
            ));
        };
        let tx = self.sign(&authority, Instruction::Mint { to, amount });
        self.submit(tx)
    }
}

pub(crate) struct AppState {
    pub(crate) core: Mutex<Core>,
    pub(crate) blobs: Store,
    pub(crate) collected: Mutex<std::collections::BTreeSet<u64>>,
    pub(crate) limits: crate::limits::Limits,
    /// `RegisterModel` is checked against its blobs (`admit`); off only in tests.
    pub(crate) check_registrations: bool,
    /// Starts the task workers that load registered tasks in ONNX Runtime.
    pub(crate) worker: Option<splitup_exec::worker::WorkerCommand>,
    pub(crate) access: blobs::Access,
}

pub(crate) type Shared = Arc<AppState>;

/// The client's address, when the server loop records it (`ConnectInfo`).
pub(crate) struct Peer(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Peer, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

pub(crate) fn error(status: StatusCode, code: u32, msg: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            error: msg.into(),
            code,
        }),
    )
        .into_response()
}

fn protocol_error(e: ProtocolError) -> Response {
    let status = match e.code() {
        1 => StatusCode::UNAUTHORIZED,
        2 => StatusCode::CONFLICT,
        3 => StatusCode::FORBIDDEN,
        4 => StatusCode::NOT_FOUND,
        6 | 7 => StatusCode::PAYMENT_REQUIRED,
        12 => StatusCode::LOCKED,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, e.code(), e.to_string())
}

/// The answer to an instruction the core applied (or refused, or panicked on).
fn applied(r: Applied) -> Response {
    match r {
        Ok(Ok((seq, events))) => Json(TxAccepted { ok: true, seq, events }).into_response(),
        Ok(Err(e)) => protocol_error(e),
        Err(Internal(msg)) => error(StatusCode::INTERNAL_SERVER_ERROR, 500, msg),
    }
}

/// A panic inside the rules, contained: the request fails, the state is
/// rebuilt from the log, and the ledger keeps serving.
pub struct Internal(pub String);

type Applied = Result<Result<(i64, Vec<Event>), ProtocolError>, Internal>;

/// Runs `f` on the core on a blocking thread (the rules and the log's fsync
/// must not stall the async executor). A panic in `f` fails only this
/// request: the state, which may be half-changed, is rebuilt from the log,
/// which holds exactly what was acknowledged.
async fn with_core(
    s: &Shared,
    f: impl FnOnce(&mut Core) -> Result<(i64, Vec<Event>), ProtocolError> + Send + 'static,
) -> Applied {
    let s = s.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let mut core = s.core.lock();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut core))) {
            Ok(r) => Ok(r),
            Err(p) => {
                let what = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                tracing::error!("the rules panicked on a request ({what}); rebuilding the state from the log");
                if let Err(e) = core.rebuild() {
                    // The state in memory cannot be trusted and cannot be rebuilt: stop.
                    tracing::error!("cannot rebuild the state from the log: {e}");
                    std::process::abort();
                }
                Err(Internal(format!(
                    "the ledger failed on this request ({what}); it was not applied"
                )))
            }
        }
    })
    .await;
    joined.unwrap_or_else(|e| Err(Internal(format!("the request's worker failed: {e}"))))
}

#[utoipa::path(
    post,
    path = "/v1/tx",
    tag = "instructions",
    request_body(content = SignedTx, description = "A signed instruction (at most 1 MiB of JSON)."),
    responses(
        (status = 200, description = "Applied and durable: its position in the log and the events it caused.", body = TxAccepted),
        (status = 400, description = "Malformed JSON (code 100), or refused by the rules: overflow (5), invalid model (8), invalid instruction (9), unexpected result (10), insecure parameters (11).", body = ApiError),
        (status = 401, description = "The signature does not verify for the signer (code 1).", body = ApiError),
        (status = 402, description = "Insufficient balance (code 6) or stake (7).", body = ApiError),
        (status = 403, description = "The signer may not do this (code 3).", body = ApiError),
        (status = 404, description = "The instruction names an unknown model, execution, task or node (code 4).", body = ApiError),
        (status = 409, description = "The nonce is not the signer's next nonce (code 2).", body = ApiError),
        (status = 413, description = "The body is over 1 MiB (plain text, from the HTTP layer).", body = String, content_type = "text/plain"),
        (status = 423, description = "Locked (code 12): e.g. a withdrawal before the unstake lockup ends.", body = ApiError),
        (status = 429, description = crate::openapi::RATE_LIMITED, body = ApiError, headers(("retry-after" = u64, description = "Seconds to wait."))),
        (status = 500, description = crate::openapi::INTERNAL, body = ApiError),
    )
)]
async fn post_tx(State(s): State<Shared>, peer: Peer, body: Bytes) -> Response {
    let tx: SignedTx = match serde_json::from_slice(&body) {
        Ok(tx) => tx,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                100,
                format!("malformed signed instruction: {e}"),
            )
        }
    };
    if let Some(r) = s.limits.check(peer.0, Some(tx.signer)) {
        return r;
    }
    // Some instructions are checked against the store before the rules see
    // them: a registration against its blobs, the gate and its declared
    // figures; a result's outputs must be in the store; a reveal's bytes must
    // produce the validator's seal. Those reads come only after the
    // signature verifies, so a forged instruction costs none.
    let admitted = matches!(
        &tx.ix,
        Instruction::RegisterModel(_) | Instruction::SubmitResult { .. } | Instruction::RevealValidation { .. }
    );
    if admitted
        && !splitup_protocol::crypto::verify_signature(
            &tx.signer,
            &SignedTx::message(&tx.signer, tx.nonce, &tx.ix),
            &tx.signature,
        )
    {
        return protocol_error(ProtocolError::BadSignature);
    }
    match &tx.ix {
        Instruction::RegisterModel(def) if s.check_registrations => {
            if let Err(why) = crate::admit::check_model(def, &s.blobs, s.worker.as_ref()).await {
                return protocol_error(ProtocolError::InvalidModel(why));
            }
        }
        Instruction::SubmitResult { commitment, .. } => {
            if let Err(why) = crate::admit::check_result(commitment, &s.blobs).await {
                return protocol_error(ProtocolError::Invalid(why));
            }
        }
        Instruction::RevealValidation {
            execution,
            task,
            commitment,
            ..
        } => {
            let seal = {
                let core = s.core.lock();
                core.ledger
                    .executions
                    .get(execution)
                    .and_then(|e| e.tasks.get((*task as usize).wrapping_sub(1)))
                    .and_then(|r| r.validator_seal)
            };
            // Without a seal on record the rules refuse the reveal themselves.
            if let Some(seal) = seal {
                if let Err(why) =
                    crate::admit::check_reveal(&tx.signer, *execution, *task, commitment, &seal, &s.blobs).await
                {
                    return protocol_error(ProtocolError::Invalid(why));
                }
            }
        }
        _ => {}
    }
    applied(with_core(&s, move |core| core.submit(tx)).await)
}

#[utoipa::path(
    post,
    path = "/v1/faucet",
    tag = "instructions",
    request_body(content = FaucetRequest, description = "Development networks only (`splitup ledger start --dev`): the ledger mints USDC to `to` with its mint key (at most 4 KiB of JSON)."),
    responses(
        (status = 200, description = "Minted and durable.", body = TxAccepted),
        (status = 400, description = "Malformed request, or `amount_usdc` not 1 to 100 000 (code 101).", body = ApiError),
        (status = 403, description = "Not a development network: there is no faucet (code 3).", body = ApiError),
        (status = 413, description = "The body is over 4 KiB (plain text, from the HTTP layer).", body = String, content_type = "text/plain"),
        (status = 429, description = crate::openapi::RATE_LIMITED, body = ApiError, headers(("retry-after" = u64, description = "Seconds to wait."))),
        (status = 500, description = crate::openapi::INTERNAL, body = ApiError),
    )
)]
async fn post_faucet(State(s): State<Shared>, peer: Peer, body: Bytes) -> Response {
    let req: FaucetRequest = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                101,
                format!("expected {{\"to\": PUBKEY (64 lowercase hex digits), \"amount_usdc\": N}}: {e}"),
            )
        }
    };
    let usdc = req.amount_usdc.unwrap_or(FAUCET_USDC_DEFAULT);
    if usdc == 0 || usdc > FAUCET_USDC_MAX {
        return error(
            StatusCode::BAD_REQUEST,
            101,
            format!("amount_usdc must be 1 to {FAUCET_USDC_MAX}"),
        );
    }
    if let Some(r) = s.limits.check(peer.0, Some(req.to)) {
        return r;
    }
    applied(with_core(&s, move |core| core.faucet(req.to, usdc * USDC)).await)
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "The ledger's metrics in the Prometheus text format 0.0.4, computed from its state at each scrape.", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"))
)]
async fn get_metrics(State(s): State<Shared>) -> Response {
    let text = {
        let core = s.core.lock();
        crate::metrics::render(&core.ledger, core.last_now.max(wall_ms()))
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "state",
    responses((status = 200, description = "Counts, supply, the latest block hash and the ledger's clock.", body = Status))
)]
async fn get_status(State(s): State<Shared>) -> Response {
    let core = s.core.lock();
    let l = &core.ledger;
    Json(Status {
        instructions: l.instructions,
        blockhash: l.blockhash,
        now_ms: core.last_now,
        slot: core.last_now / splitup_protocol::state::SLOT_MS,
        accounts: l.accounts.len(),
        nodes: l.nodes.len(),
        models: l.models.len(),
        executions: l.executions.len(),
        supply: l.supply,
        treasury: l.treasury,
        store: s.blobs.url().to_string(),
    })
    .into_response()
}

#[utoipa::path(
    get,
    path = "/v1/blockhashes",
    tag = "state",
    responses((status = 200, description = "Recent slots that changed the state, newest first, with the block hash at the end of each.", body = Vec<SlotHash>))
)]
/// The slot clock: the block hash at the end of each recent slot that changed the state.
async fn get_blockhashes(State(s): State<Shared>) -> Response {
    let core = s.core.lock();
    let list: Vec<SlotHash> = core
        .ledger
        .recent_blockhashes
        .iter()
        .rev()
        .map(|(slot, h)| SlotHash {
            slot: *slot,
            blockhash: *h,
        })
        .collect();
    Json(list).into_response()
}

#[utoipa::path(
    get,
    path = "/v1/genesis",
    tag = "state",
    responses((status = 200, description = "The genesis parameters, the mint authority and the beacon's key.", body = GenesisView))
)]
async fn get_genesis(State(s): State<Shared>) -> Response {
    let core = s.core.lock();
    let l = &core.ledger;
    Json(GenesisView {
        params: l.params.clone(),
        mint_authority: l.mint_authority,
        beacon: l.beacon,
        dev: core.dev,
    })
    .into_response()
}

fn bad_key() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        101,
        "not a public key (64 lowercase hex digits)",
    )
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{key}",
    tag = "state",
    params(("key" = splitup_protocol::schema::Hex32, Path, description = "The account's public key.")),
    responses(
        (status = 200, description = "Balance, next nonce and, for a node, its view. An unknown key reads as an empty account.", body = AccountView),
        (status = 400, description = crate::openapi::BAD_KEY, body = ApiError),
    )
)]
async fn get_account(State(s): State<Shared>, UrlPath(key): UrlPath<String>) -> Response {
    let Some(k) = Pubkey::from_hex(&key) else {
        return bad_key();
    };
    let core = s.core.lock();
    let a = core.ledger.accounts.get(&k).cloned().unwrap_or_default();
    Json(AccountView {
        key: k,
        balance: a.balance,
        nonce: a.nonce,
        node: core.ledger.nodes.get(&k).map(|n| node_view(&k, n)),
    })
    .into_response()
}

fn node_view(k: &Pubkey, n: &splitup_protocol::state::Node) -> NodeView {
    NodeView {
        key: *k,
        vram: n.vram,
        stake: n.stake,
        status: format!("{:?}", n.status),
        load: n.load,
        disputes: n.disputes,
        last_heartbeat_ms: n.last_heartbeat,
        supports: n.supports.iter().copied().collect(),
        slashed_total: n.slashed_total,
        earned_total: n.earned_total,
        unstaking: n
            .unstaking
            .map(|(amount, unlock_ms)| UnstakingView { amount, unlock_ms }),
    }
}

#[utoipa::path(
    get,
    path = "/v1/nodes",
    tag = "state",
    responses((status = 200, description = "Every registered node.", body = Vec<NodeView>))
)]
async fn get_nodes(State(s): State<Shared>) -> Response {
    let core = s.core.lock();
    let list: Vec<NodeView> = core.ledger.nodes.iter().map(|(k, n)| node_view(k, n)).collect();
    Json(list).into_response()
}

/// `?after=V&wait_ms=N`: answer once the state has changed since version
/// `V` (the `x-splitup-version` header of an earlier answer), or after `N`
/// ms (at most 30 s). Without `after` the answer is immediate. This is the
/// push channel: a node or client waits here instead of polling.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Wait {
    /// Wait until the state's version is past this one (the `x-splitup-version` header of an earlier answer); without it, answer at once.
    after: Option<u64>,
    /// The longest wait, ms (default 10 000, at most 30 000).
    wait_ms: Option<u64>,
}

pub const LONG_POLL_MS_MAX: u64 = 30_000;

async fn wait_for_change(s: &Shared, w: &Wait) {
    let Some(after) = w.after else { return };
    let mut rx = s.core.lock().changes.subscribe();
    let limit = std::time::Duration::from_millis(w.wait_ms.unwrap_or(10_000).min(LONG_POLL_MS_MAX));
    let _ = tokio::time::timeout(limit, rx.wait_for(|v| *v > after)).await;
}

/// Adds the state version the answer was computed at (read under the same lock).
fn versioned(core: &Core, r: Response) -> Response {
    let mut r = r;
    r.headers_mut()
        .insert("x-splitup-version", (*core.changes.borrow()).into());
    r
}

fn bad_id(what: &str) -> Response {
    error(StatusCode::BAD_REQUEST, 101, format!("{what} ids are numbers"))
}

#[utoipa::path(
    get,
    path = "/v1/executions/{id}",
    tag = "state",
    params(("id" = u64, Path, description = "The execution's id."), Wait),
    responses(
        (status = 200, description = "The execution and each of its tasks. With `after`, an execution in progress is answered once the state changes or `wait_ms` passes; a finished one at once.", body = ExecutionView, headers(("x-splitup-version" = u64, description = "The state's version this answer was computed at: send it back as `after` to wait for the next change."))),
        (status = 400, description = "The id is not a number (code 101), or the query string does not parse (plain text).", content((ApiError = "application/json"), (String = "text/plain"))),
        (status = 404, description = "Unknown execution (code 4).", body = ApiError),
    )
)]
async fn get_execution(State(s): State<Shared>, UrlPath(id): UrlPath<String>, Query(w): Query<Wait>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return bad_id("execution");
    };
    let finished = match s.core.lock().ledger.executions.get(&id) {
        None => return error(StatusCode::NOT_FOUND, 4, format!("unknown execution {id}")),
        Some(e) => e.status != ExecStatus::InProgress,
    };
    if !finished {
        wait_for_change(&s, &w).await;
    }
    let core = s.core.lock();
    let Some(e) = core.ledger.executions.get(&id) else {
        return error(StatusCode::NOT_FOUND, 4, format!("unknown execution {id}"));
    };
    let tasks: Vec<TaskView> = e
        .tasks
        .iter()
        .zip(1u32..)
        .map(|(r, task)| TaskView {
            task,
            status: format!("{:?}", r.status),
            node: r.node,
            attempts: r.attempts,
            timeouts: r.failures,
            challenged: r.challenged,
            validator: r.validator,
            outcome: r.outcome.clone(),
            commitment: r.commitment,
            output_uris: r.output_uris.clone(),
            validator_sealed: r.validator_seal.is_some(),
            validator_commitment: r.validator_commitment,
            validator_uris: r.validator_uris.clone(),
            committee: r.committee.clone(),
            voted: r.votes.keys().copied().collect(),
            excluded: r.excluded.clone(),
            deadline_ms: r.deadline,
        })
        .collect();
    let view = ExecutionView {
        id,
        model: e.model,
        user: e.user,
        input: e.input_commitment,
        status: e.status.clone(),
        escrow: e.escrow,
        fetched: e.fetched,
        tasks,
    };
    versioned(&core, Json(view).into_response())
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Limit {
    /// How many (default 20, at most 1000).
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/v1/executions",
    tag = "state",
    params(Limit),
    responses(
        (status = 200, description = "The most recent executions, newest first.", body = Vec<ExecutionSummary>),
        (status = 400, description = "The query string does not parse (plain text).", body = String, content_type = "text/plain"),
    )
)]
/// The most recent executions, newest first (`?limit=N`, default 20, at most 1000).
async fn get_executions(State(s): State<Shared>, Query(q): Query<Limit>) -> Response {
    let core = s.core.lock();
    let list: Vec<ExecutionSummary> = core
        .ledger
        .executions
        .iter()
        .rev()
        .take(q.limit.unwrap_or(20).min(1000))
        .map(|(id, e)| ExecutionSummary {
            id: *id,
            model: e.model,
            user: e.user,
            status: e.status.clone(),
            tasks: e.tasks.len(),
            completed: e.tasks.iter().filter(|r| r.status == TaskStatus::Completed).count(),
            submitted_ms: e.submitted_at,
            finished_ms: e.finished_at,
            fetched: e.fetched,
        })
        .collect();
    Json(list).into_response()
}

/// What "recent" means in a model's demand: the last hour.
const RECENT_MS: Millis = 3_600_000;

#[utoipa::path(
    get,
    path = "/v1/models/{id}",
    tag = "state",
    params(("id" = u64, Path, description = "The model's id.")),
    responses(
        (status = 200, description = "The model's definition and its demand (nodes per task, recent executions).", body = ModelView),
        (status = 400, description = "The id is not a number (code 101).", body = ApiError),
        (status = 404, description = "Unknown model (code 4).", body = ApiError),
    )
)]
async fn get_model(State(s): State<Shared>, UrlPath(id): UrlPath<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return bad_id("model");
    };
    let core = s.core.lock();
    let (l, now) = (&core.ledger, core.last_now.max(wall_ms()));
    match l.models.get(&id) {
        Some(m) => {
            let nodes_per_task = (1..=m.def.tasks.len() as u32)
                .map(|t| {
                    l.candidates.get(&(id, t)).map_or(0, |v| {
                        v.iter()
                            .filter(|k| l.nodes.get(*k).is_some_and(|n| n.status == NodeStatus::Active))
                            .count() as u32
                    })
                })
                .collect();
            // Executions are numbered in submission order: scan back from the
            // newest until one is older than an hour.
            let since = now.saturating_sub(RECENT_MS);
            let recent_executions = l
                .executions
                .values()
                .rev()
                .take_while(|e| e.submitted_at >= since)
                .filter(|e| e.model == id)
                .count() as u64;
            Json(ModelView {
                id,
                owner: m.owner,
                active: m.active,
                def: m.def.clone(),
                nodes_per_task,
                recent_executions,
            })
            .into_response()
        }
        None => error(StatusCode::NOT_FOUND, 4, format!("unknown model {id}")),
    }
}

#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "state",
    responses((status = 200, description = "One line per registered model.", body = Vec<ModelSummary>))
)]
async fn get_models(State(s): State<Shared>) -> Response {
    let core = s.core.lock();
    let list: Vec<ModelSummary> = core
        .ledger
        .models
        .iter()
        .map(|(id, m)| ModelSummary {
            id: *id,
            name: m.def.name.clone(),
            owner: m.owner,
            active: m.active,
            tasks: m.def.tasks.len(),
        })
        .collect();
    Json(list).into_response()
}

#[utoipa::path(
    get,
    path = "/v1/nodes/{key}/work",
    tag = "nodes",
    params(("key" = splitup_protocol::schema::Hex32, Path, description = "The node's public key."), Wait),
    responses(
        (status = 200, description = "Its work items: tasks to compute, results to validate, disputes to judge. With `after`, answered once the state changes or `wait_ms` passes.", body = Vec<WorkItem>, headers(("x-splitup-version" = u64, description = "The state's version this answer was computed at: send it back as `after` to wait for the next change."))),
        (status = 400, description = "Not a public key (code 101), or the query string does not parse (plain text).", content((ApiError = "application/json"), (String = "text/plain"))),
        (status = 404, description = "Not a registered node (code 4).", body = ApiError),
    )
)]
/// What a node must do now: tasks assigned to it, and challenges it validates.
async fn get_work(State(s): State<Shared>, UrlPath(key): UrlPath<String>, Query(w): Query<Wait>) -> Response {
    let Some(k) = Pubkey::from_hex(&key) else {
        return bad_key();
    };
    if !s.core.lock().ledger.nodes.contains_key(&k) {
        return error(StatusCode::NOT_FOUND, 4, format!("unknown node {}", k.hex()));
    }
    wait_for_change(&s, &w).await;
    let core = s.core.lock();
    let l = &core.ledger;
    let mut work = Vec::new();
    for id in &l.active {
        let Some(e) = l.executions.get(id) else { continue };
        for (r, task) in e.tasks.iter().zip(1u32..) {
            let kind = match r.status {
                TaskStatus::Assigned if r.node == Some(k) => WorkKind::Compute,
                TaskStatus::Challenged if r.validator == Some(k) && r.validator_commitment.is_none() => {
                    WorkKind::Validate
                }
                TaskStatus::Disputed if r.committee.contains(&k) && !r.votes.contains_key(&k) => WorkKind::Judge,
                _ => continue,
            };
            // A validator is never told the result it checks: it seals its
            // own first. A judge is told both sides.
            let judge = kind == WorkKind::Judge;
            work.push(WorkItem {
                execution: *id,
                model: e.model,
                task,
                kind,
                attempt: r.attempts,
                deadline_ms: r.deadline,
                commitment: r.commitment.filter(|_| judge),
                validator_commitment: r.validator_commitment.filter(|_| judge),
            });
        }
    }
    versioned(&core, Json(work).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/disputes",
    tag = "state",
    responses((status = 200, description = "Tasks in dispute: committees, votes so far, deadlines.", body = Vec<DisputeView>))
)]
/// Tasks in dispute: their committees, votes so far and deadlines.
async fn get_disputes(State(s): State<Shared>) -> Response {
    let core = s.core.lock();
    let l = &core.ledger;
    let mut out = Vec::new();
    for id in &l.active {
        let Some(e) = l.executions.get(id) else { continue };
        for (r, task) in e.tasks.iter().zip(1u32..) {
            if r.status == TaskStatus::Disputed {
                out.push(DisputeView {
                    execution: *id,
                    model: e.model,
                    task,
                    asserter: r.node,
                    commitment: r.commitment,
                    validator: r.validator,
                    validator_commitment: r.validator_commitment,
                    committee: r.committee.clone(),
                    voters: r.votes.keys().copied().collect(),
                    deadline_ms: r.deadline,
                });
            }
        }
    }
    Json(out).into_response()
}

fn router(
    core: Core,
    blobs: Store,
    rates: crate::limits::Rates,
    check_registrations: bool,
    access: blobs::Access,
    worker: Option<splitup_exec::worker::WorkerCommand>,
) -> (Router, Shared) {
    let state: Shared = Arc::new(AppState {
        core: Mutex::new(core),
        blobs,
        collected: Mutex::new(Default::default()),
        limits: crate::limits::Limits::new(rates),
        check_registrations,
        worker,
        access,
    });
    let r = Router::new()
        .route("/v1/tx", post(post_tx).layer(DefaultBodyLimit::max(TX_BYTES_MAX)))
        .route("/v1/faucet", post(post_faucet).layer(DefaultBodyLimit::max(4096)))
        .route("/v1/status", get(get_status))
        .route("/metrics", get(get_metrics))
        .route("/v1/genesis", get(get_genesis))
        .route("/v1/blockhashes", get(get_blockhashes))
        .route("/v1/accounts/{key}", get(get_account))
        .route("/v1/nodes", get(get_nodes))
        .route("/v1/nodes/{key}/work", get(get_work))
        .route("/v1/models", get(get_models))
        .route("/v1/disputes", get(get_disputes))
        .route("/v1/executions", get(get_executions))
        .route("/v1/executions/{id}", get(get_execution))
        .route("/v1/models/{id}", get(get_model))
        // Streamed bodies: the store's limit and the upload quota apply, not a body limit.
        .route("/v1/blobs/{hash}", put(blobs::put_blob).get(blobs::get_blob))
        .route("/openapi.json", get(crate::openapi::get_openapi))
        .with_state(state.clone());
    (r, state)
}

/// Runs the ledger until SIGINT or SIGTERM. Prints the bound address first.
pub async fn serve(cfg: Config) -> Result<(), ServerError> {
    serve_with(cfg, |_| {}).await
}

/// As [`serve`], calling `on_ready` with the bound address once listening.
pub async fn serve_with(cfg: Config, on_ready: impl FnOnce(SocketAddr)) -> Result<(), ServerError> {
    let core = Core::open(&cfg)?;
    let replayed = core.restored.clone();
    let blobs = match &cfg.store {
        Some(url) => Store::open(url)?,
        None => Store::open(&format!(
            "file://{}",
            std::path::absolute(cfg.data.join("blobs"))
                .map_err(|e| ServerError::Other(e.to_string()))?
                .display()
        ))?,
    };
    let blobs_url = blobs.url().to_string();
    let access = blobs::Access::new(cfg.upload_quota_node, cfg.upload_quota_account, cfg.orphan_ttl_ms);
    let (app, state) = router(
        core,
        blobs,
        cfg.limits,
        !cfg.test_unchecked_registrations,
        access,
        cfg.worker.clone(),
    );
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| ServerError::Other(format!("cannot listen on {}: {e}", cfg.listen)))?;
    let addr = listener.local_addr().map_err(|e| ServerError::Other(e.to_string()))?;
    println!(
        "ledger listening on http://{addr} (data {}, state from {replayed}, blobs in {})",
        cfg.data.display(),
        blobs_url
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    on_ready(addr);
    let retention_ms = cfg.retention_ms;
    let ticker = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
            let mut n: u64 = 0;
            loop {
                every.tick().await;
                // Deadlines run (and are made durable) off the async executor;
                // a panic there fails this tick only (see `with_core`).
                let _ = with_core(&state, |core| {
                    core.tick();
                    Ok((0, vec![]))
                })
                .await;
                n += 1;
                if n.is_multiple_of(5) {
                    blobs::collect(&state, retention_ms).await;
                }
            }
        })
    };
    let shutdown = async {
        let ctrl_c = tokio::signal::ctrl_c();
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    };
    crate::http::serve(listener, app, shutdown)
        .await
        .map_err(|e| ServerError::Other(e.to_string()))?;
    ticker.abort();
    // A clean stop leaves a snapshot of the final state: the next start replays nothing.
    state.core.lock().snapshot();
    Ok(())
}

#[cfg(test)]
mod faucet_tests {
    use super::*;

    #[test]
    fn faucet_default_covers_a_node() {
        let l = splitup_protocol::Ledger::genesis(splitup_protocol::state::Genesis {
            params: splitup_protocol::Params::default(),
            mint_authority: Pubkey([1; 32]),
            beacon: Pubkey([2; 32]),
        })
        .unwrap();
        let grant = FAUCET_USDC_DEFAULT * USDC;
        // The README's node, with at least 1000 USDC to spare for fees.
        assert!(grant >= l.stake_required(8 << 30) + 1000 * USDC);
        assert!(grant >= l.stake_required(32_000_000_000));
    }

    // The default is a grant the faucet accepts.
    const _: () = assert!(FAUCET_USDC_DEFAULT <= FAUCET_USDC_MAX);
}
