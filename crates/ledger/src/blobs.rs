//! The ledger's blob store over HTTP (`/v1/blobs/{hash}`): signed requests,
//! who may upload and read what, per-key upload quotas, and garbage
//! collection by reference.
//!
//! Every request carries `x-splitup-key` (the signer's public key, hex),
//! `x-splitup-expires` (ms since the Unix epoch, in the future and at most
//! [`BLOB_REQUEST_TTL_MAX_MS`] ahead) and `x-splitup-signature` (ed25519, hex,
//! over [`blob_request_message`]`(method, hash, expires)`); a request without
//! them, expired, or whose signature does not verify is refused with 401.
//!
//! - **Upload** (`PUT`): a registered node or an account holding at least
//!   `params.account_min`. Each key may upload so many bytes per rolling
//!   24 h (a node with stake:
//!   [`UPLOAD_QUOTA_NODE`], any other account:
//!   [`UPLOAD_QUOTA_ACCOUNT`], by default; every upload counts as at least
//!   [`UPLOAD_CHARGE_MIN`]); beyond it, 429. The body is streamed into the
//!   store ([`splitup_store::Store::put_stream`]): memory stays bounded whatever its size.
//! - **Read** (`GET`): an execution's tensors (its input and every task
//!   output) by its parties: the user, every node holding one of its tasks,
//!   validating one or sitting on one's dispute committee, except that a
//!   validator never reads the result it checks before it has sealed its own
//!   recomputation; a model's graph and weights by its owner, any registered
//!   node, and any account that could register one (its balance covers
//!   `params.stake_base`: a node loads its tasks before it registers). Executions the collector has finished
//!   with no longer count. A blob nothing readable refers to: only its
//!   uploader, for the orphan TTL after the upload. Otherwise 403.
//!
//! Cost of a read's check: a hash index of models and executions, rebuilt by
//! the collector (every 5 s, linear in the executions not yet collected),
//! plus a scan of what changed since (executions in progress and newer
//! ones, models registered since), so a request costs O(executions in
//! progress + references to the hash), not O(history).

use crate::server::{error, Core, Shared};
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use parking_lot::Mutex;
use splitup_protocol::api::ApiError;
use splitup_protocol::crypto::{
    blob_request_message, from_hex32, from_hex64, verify_signature, BLOB_REQUEST_TTL_MAX_MS,
};
use splitup_protocol::state::Execution;
use splitup_protocol::*;
use splitup_store::{StoreError, BLOB_BYTES_MAX};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Default bytes a node with stake may upload per rolling 24 h.
pub const UPLOAD_QUOTA_NODE: u64 = 64 * 1024 * 1024 * 1024;
/// Default bytes any other account may upload per rolling 24 h.
pub const UPLOAD_QUOTA_ACCOUNT: u64 = 4 * 1024 * 1024 * 1024;
/// Every upload counts as at least this many bytes against the quota, so
/// that a quota also bounds how many blobs (and uploader records) a key makes.
pub const UPLOAD_CHARGE_MIN: u64 = 64 * 1024;
const QUOTA_WINDOW_MS: Millis = 24 * 3600 * 1000;
const QUOTA_BUCKET_MS: Millis = 60 * 1000;
/// Uploads streamed at once (more wait): bounds the memory uploads hold.
const UPLOADS_AT_ONCE: usize = 16;
/// A blob written this recently is not deleted as an execution's garbage
/// (a client may be about to submit an instruction naming the same content);
/// it is retried at the next collection.
const DELETE_GRACE_MS: Millis = 15_000;
/// A staged upload untouched this long was abandoned (a crash, a killed process).
const STALE_UPLOAD: Duration = Duration::from_secs(3600);
/// The store is listed for orphans and stale uploads every this many collections (5 s each).
const SWEEP_EVERY: u64 = 12;

pub(crate) fn wall_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// Per key: (bucket start, bytes) over the last 24 h, and their sum.
type Usage = HashMap<Pubkey, (VecDeque<(Millis, u64)>, u64)>;
/// Per blob: who uploaded it, and when (last time).
type Uploaders = HashMap<[u8; 32], Vec<(Pubkey, Millis)>>;

/// Who uploaded what and how much: the in-memory side of blob access.
pub(crate) struct Access {
    quota_node: u64,
    quota_account: u64,
    orphan_ttl_ms: Millis,
    usage: Mutex<Usage>,
    uploaders: Mutex<Uploaders>,
    index: Mutex<Index>,
    slots: tokio::sync::Semaphore,
    /// Garbage skipped because it was written within [`DELETE_GRACE_MS`].
    deferred: Mutex<BTreeSet<String>>,
    collections: Mutex<u64>,
}

impl Access {
    pub(crate) fn new(quota_node: u64, quota_account: u64, orphan_ttl_ms: Millis) -> Access {
        Access {
            quota_node,
            quota_account,
            orphan_ttl_ms,
            usage: Mutex::new(HashMap::new()),
            uploaders: Mutex::new(HashMap::new()),
            index: Mutex::new(Index::default()),
            slots: tokio::sync::Semaphore::new(UPLOADS_AT_ONCE),
            deferred: Mutex::new(BTreeSet::new()),
            collections: Mutex::new(0),
        }
    }

    /// Adds `bytes` to `key`'s usage at `now`; returns its usage over the window.
    fn charge(&self, key: Pubkey, now: Millis, bytes: u64) -> u64 {
        let mut usage = self.usage.lock();
        let (buckets, total) = usage.entry(key).or_default();
        while let Some(&(t, n)) = buckets.front() {
            if t + QUOTA_WINDOW_MS > now {
                break;
            }
            buckets.pop_front();
            *total -= n;
        }
        if bytes > 0 {
            let bucket = now - now % QUOTA_BUCKET_MS;
            match buckets.back_mut() {
                Some((t, n)) if *t == bucket => *n += bytes,
                _ => buckets.push_back((bucket, bytes)),
            }
            *total += bytes;
        }
        *total
    }

    fn prune(&self, now: Millis) {
        let keys: Vec<Pubkey> = self.usage.lock().keys().copied().collect();
        for k in keys {
            if self.charge(k, now, 0) == 0 {
                self.usage.lock().remove(&k);
            }
        }
        let ttl = self.orphan_ttl_ms;
        self.uploaders.lock().retain(|_, who| {
            who.retain(|(_, t)| t.saturating_add(ttl) > now);
            !who.is_empty()
        });
    }

    fn uploaded(&self, hash: [u8; 32], key: Pubkey, now: Millis) {
        let mut up = self.uploaders.lock();
        let who = up.entry(hash).or_default();
        who.retain(|(k, _)| *k != key);
        who.push((key, now));
    }

    fn young_upload_of(&self, hash: &[u8; 32], key: &Pubkey, now: Millis) -> bool {
        self.uploaders.lock().get(hash).is_some_and(|who| {
            who.iter()
                .any(|(k, t)| k == key && t.saturating_add(self.orphan_ttl_ms) > now)
        })
    }
}

/// Blob hash → the models and executions referring to it, as of the last
/// collection; with what has changed since, see [`may_read`].
#[derive(Default)]
pub(crate) struct Index {
    executions: HashMap<[u8; 32], Vec<u64>>,
    models: HashMap<[u8; 32], Vec<u64>>,
    /// Executions from this id on were not there when it was built.
    next_execution: u64,
    next_model: u64,
    /// Executions in progress when it was built: their outputs may have grown since.
    active: Vec<u64>,
}

/// The blobs an execution refers to: its input, each task's committed
/// outputs and each validator's revealed outputs (what its judges read).
fn execution_blobs(e: &Execution) -> impl Iterator<Item = [u8; 32]> + '_ {
    std::iter::once(e.input_commitment).chain(
        e.tasks
            .iter()
            .flat_map(|r| r.commitment.into_iter().chain(r.validator_commitment)),
    )
}

fn model_blobs(m: &splitup_protocol::state::Model) -> impl Iterator<Item = [u8; 32]> + '_ {
    m.def.tasks.iter().flat_map(|t| [t.graph_hash, t.weight_hash])
}

fn build_index(core: &Core, collected: &BTreeSet<u64>) -> Index {
    let l = &core.ledger;
    let mut ix = Index {
        next_execution: l.executions.keys().next_back().map_or(0, |k| k + 1),
        next_model: l.models.keys().next_back().map_or(0, |k| k + 1),
        active: l.active.iter().copied().collect(),
        ..Index::default()
    };
    for (id, e) in &l.executions {
        if collected.contains(id) {
            continue;
        }
        for h in execution_blobs(e) {
            let v = ix.executions.entry(h).or_default();
            if v.last() != Some(id) {
                v.push(*id);
            }
        }
    }
    for (id, m) in &l.models {
        for h in model_blobs(m) {
            let v = ix.models.entry(h).or_default();
            if v.last() != Some(id) {
                v.push(*id);
            }
        }
    }
    ix
}

/// Whether `key` may read the blob `hash` (see the module documentation).
fn may_read(s: &Shared, key: &Pubkey, hash: &[u8; 32], now: Millis) -> bool {
    if s.access.young_upload_of(hash, key, now) {
        return true;
    }
    let core = s.core.lock();
    let collected = s.collected.lock();
    let ix = s.access.index.lock();
    let l = &core.ledger;
    // Executions: indexed, in progress (then or now), or newer than the index.
    let mut seen = HashSet::new();
    let candidates = ix
        .executions
        .get(hash)
        .into_iter()
        .flatten()
        .chain(ix.active.iter())
        .chain(l.active.iter())
        .copied()
        .chain(l.executions.range(ix.next_execution..).map(|(id, _)| *id));
    for id in candidates {
        if !seen.insert(id) || collected.contains(&id) {
            continue;
        }
        let Some(e) = l.executions.get(&id) else { continue };
        if !execution_blobs(e).any(|h| h == *hash) {
            continue;
        }
        // A validator never reads the result it checks before it has sealed
        // its own recomputation (whatever other role it has).
        if e.tasks
            .iter()
            .any(|r| r.validator == Some(*key) && r.validator_seal.is_none() && r.commitment == Some(*hash))
        {
            return false;
        }
        let party = e.user == *key
            || e.tasks
                .iter()
                .any(|r| r.node == Some(*key) || r.validator == Some(*key) || r.committee.contains(key));
        if party {
            return true;
        }
    }
    // Models: their definitions never change.
    let node_or_could_be =
        l.nodes.contains_key(key) || l.accounts.get(key).is_some_and(|a| a.balance >= l.params.stake_base);
    let models = ix
        .models
        .get(hash)
        .into_iter()
        .flatten()
        .copied()
        .chain(l.models.range(ix.next_model..).map(|(id, _)| *id));
    for id in models {
        let Some(m) = l.models.get(&id) else { continue };
        if model_blobs(m).any(|h| h == *hash) && (node_or_could_be || m.owner == *key) {
            return true;
        }
    }
    false
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::TooLarge { .. } => error(StatusCode::PAYLOAD_TOO_LARGE, 102, e.to_string()),
        StoreError::BadName(_) | StoreError::Mismatch { .. } | StoreError::Source { .. } => {
            error(StatusCode::BAD_REQUEST, 102, e.to_string())
        }
        StoreError::Missing(_) => error(StatusCode::NOT_FOUND, 4, e.to_string()),
        // The backing store failed (or holds damaged bytes we refuse to serve).
        _ => error(StatusCode::BAD_GATEWAY, 502, e.to_string()),
    }
}

/// The signer of a blob request, or why it is refused (answered with 401).
fn authenticate(headers: &HeaderMap, method: &str, hash: &str, now: Millis) -> Result<Pubkey, String> {
    let refuse = |why: String| Err(why);
    let field = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(key), Some(expires), Some(sig)) = (
        field("x-splitup-key"),
        field("x-splitup-expires"),
        field("x-splitup-signature"),
    ) else {
        return refuse(
            "blob requests are signed: x-splitup-key, x-splitup-expires and x-splitup-signature headers (splitup_protocol::crypto::blob_request_message)".into(),
        );
    };
    let Some(key) = Pubkey::from_hex(key) else {
        return refuse("x-splitup-key is not a public key (64 lowercase hex digits)".into());
    };
    let Ok(expires) = expires.parse::<u64>() else {
        return refuse("x-splitup-expires is not a time in ms since the Unix epoch".into());
    };
    if expires <= now {
        return refuse(format!("the request expired at {expires} (now {now})"));
    }
    if expires > now.saturating_add(BLOB_REQUEST_TTL_MAX_MS) {
        return refuse(format!(
            "x-splitup-expires is more than {} s ahead",
            BLOB_REQUEST_TTL_MAX_MS / 1000
        ));
    }
    let Some(sig) = from_hex64(sig) else {
        return refuse("x-splitup-signature is not a signature (128 lowercase hex digits)".into());
    };
    if !verify_signature(&key, &blob_request_message(method, hash, expires), &sig) {
        return refuse("the signature does not verify for this key, method, hash and expiry".into());
    }
    Ok(key)
}

/// `PUT /v1/blobs/{hash}`: a signed upload, streamed into the store.
#[utoipa::path(
    put,
    path = "/v1/blobs/{hash}",
    tag = "blobs",
    params(
        ("hash" = splitup_protocol::schema::Hex32, Path, description = "The blob's BLAKE3."),
        ("x-splitup-key" = splitup_protocol::schema::Hex32, Header, description = "The signer's public key."),
        ("x-splitup-expires" = u64, Header, description = "When the request expires, ms since the Unix epoch: in the future and at most 600 000 ms ahead of the ledger's clock."),
        ("x-splitup-signature" = splitup_protocol::schema::Hex64, Header, description = "ed25519 over `splitup-blob-request-v1\\n{METHOD}\\n{hash}\\n{expires}`."),
    ),
    request_body(content = crate::openapi::Binary, content_type = "application/octet-stream", description = "The blob's bytes, streamed (their BLAKE3 must be `hash`; at most the store's blob limit). Registered nodes and accounts holding at least `params.account_min` may upload, within a per-key quota per rolling 24 h."),
    responses(
        (status = 200, description = "Stored.", body = splitup_protocol::api::BlobStored),
        (status = 400, description = "`hash` is not 64 lowercase hex digits, or the bytes do not hash to it (code 102).", body = ApiError),
        (status = 401, description = "Missing, expired or bad signature headers (code 1).", body = ApiError),
        (status = 403, description = "Neither a registered node nor an account holding `params.account_min` (code 3).", body = ApiError),
        (status = 413, description = "Over the store's blob size limit (code 102).", body = ApiError),
        (status = 429, description = "Over this key's upload quota for the last 24 h (code 103).", body = ApiError),
        (status = 502, description = "The backing store failed (code 502).", body = ApiError),
        (status = 503, description = "The ledger is stopping (code 503).", body = ApiError),
    )
)]
pub(crate) async fn put_blob(
    State(s): State<Shared>,
    UrlPath(hash): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(name) = from_hex32(&hash) else {
        return store_error(StoreError::BadName(hash));
    };
    let now = wall_ms();
    let key = match authenticate(&headers, "PUT", &hash, now) {
        Ok(k) => k,
        Err(why) => return error(StatusCode::UNAUTHORIZED, 1, why),
    };
    let quota = {
        let core = s.core.lock();
        let l = &core.ledger;
        let node = l.nodes.get(&key);
        let balance = l.accounts.get(&key).map_or(0, |a| a.balance);
        if node.is_none() && balance < l.params.account_min {
            return error(
                StatusCode::FORBIDDEN,
                3,
                format!(
                    "only registered nodes and accounts holding at least {} micro-USDC may upload",
                    l.params.account_min
                ),
            );
        }
        if node.is_some_and(|n| n.stake > 0) {
            s.access.quota_node
        } else {
            s.access.quota_account
        }
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > BLOB_BYTES_MAX) {
        return store_error(StoreError::TooLarge {
            hash,
            bytes: n,
            limit: BLOB_BYTES_MAX,
        });
    }
    let over_quota = |used: u64| {
        error(
            StatusCode::TOO_MANY_REQUESTS,
            103,
            format!(
                "upload quota: {} of this key's {quota} bytes per 24 h are used",
                used.min(quota)
            ),
        )
    };
    let used = s.access.charge(key, now, 0);
    if used.saturating_add(declared.unwrap_or(0).max(UPLOAD_CHARGE_MIN)) > quota {
        return over_quota(used);
    }
    let Ok(_slot) = s.access.slots.acquire().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, 503, "the ledger is stopping");
    };
    // Every byte received counts against the quota as it arrives, whatever
    // becomes of the upload; past the quota the upload is cut off.
    let exceeded = Arc::new(AtomicBool::new(false));
    let counted = {
        let (s, exceeded) = (s.clone(), exceeded.clone());
        body.into_data_stream().map(move |chunk| {
            let chunk = chunk.map_err(|e| e.to_string())?;
            if s.access.charge(key, wall_ms(), chunk.len() as u64) > quota {
                exceeded.store(true, Ordering::SeqCst);
                return Err("over the upload quota".to_string());
            }
            Ok(chunk)
        })
    };
    let result = s.blobs.put_stream(&hash, counted, BLOB_BYTES_MAX).await;
    let received = match &result {
        Ok(n) => *n,
        Err(_) => 0,
    };
    if received < UPLOAD_CHARGE_MIN {
        s.access.charge(key, wall_ms(), UPLOAD_CHARGE_MIN - received);
    }
    if exceeded.load(Ordering::SeqCst) {
        return over_quota(quota);
    }
    match result {
        Ok(n) => {
            s.access.uploaded(name, key, wall_ms());
            Json(splitup_protocol::api::BlobStored {
                ok: true,
                blake3: name,
                bytes: n,
            })
            .into_response()
        }
        Err(e) => store_error(e),
    }
}

/// `GET /v1/blobs/{hash}`: a signed read by a party, streamed from the store.
#[utoipa::path(
    get,
    path = "/v1/blobs/{hash}",
    tag = "blobs",
    params(
        ("hash" = splitup_protocol::schema::Hex32, Path, description = "The blob's BLAKE3."),
        ("x-splitup-key" = splitup_protocol::schema::Hex32, Header, description = "The signer's public key."),
        ("x-splitup-expires" = u64, Header, description = "When the request expires, ms since the Unix epoch: in the future and at most 600 000 ms ahead of the ledger's clock."),
        ("x-splitup-signature" = splitup_protocol::schema::Hex64, Header, description = "ed25519 over `splitup-blob-request-v1\\n{METHOD}\\n{hash}\\n{expires}`."),
    ),
    responses(
        (status = 200, description = "The blob's bytes, streamed.", body = crate::openapi::Binary, content_type = "application/octet-stream", headers(("content-length" = u64, description = "The blob's size in bytes."))),
        (status = 400, description = "`hash` is not 64 lowercase hex digits (code 102).", body = ApiError),
        (status = 401, description = "Missing, expired or bad signature headers (code 1).", body = ApiError),
        (status = 403, description = "The signer is not a party to an execution or model that refers to the blob (code 3).", body = ApiError),
        (status = 404, description = "Not in the store (code 4).", body = ApiError),
        (status = 502, description = "The backing store failed, or holds damaged bytes (code 502).", body = ApiError),
    )
)]
pub(crate) async fn get_blob(State(s): State<Shared>, UrlPath(hash): UrlPath<String>, headers: HeaderMap) -> Response {
    let Some(name) = from_hex32(&hash) else {
        return store_error(StoreError::BadName(hash));
    };
    let now = wall_ms();
    let key = match authenticate(&headers, "GET", &hash, now) {
        Ok(k) => k,
        Err(why) => return error(StatusCode::UNAUTHORIZED, 1, why),
    };
    if !may_read(&s, &key, &name, now) {
        return error(
            StatusCode::FORBIDDEN,
            3,
            format!(
                "{} may not read blob {hash}: not a party to an execution or model that refers to it",
                key.hex()
            ),
        );
    }
    match s.blobs.get_stream(&hash).await {
        Ok((size, stream)) => (
            [
                (header::CONTENT_LENGTH, size.to_string()),
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            ],
            Body::from_stream(stream),
        )
            .into_response(),
        Err(e) => store_error(e),
    }
}

/// One collection (every 5 s): deletes what [`garbage`] names, rebuilds the
/// read index, and every minute lists the store for orphans (blobs nothing
/// live refers to, written longer than the orphan TTL ago) and stale staged
/// uploads.
pub(crate) async fn collect(state: &Shared, retention_ms: Millis) {
    let (mut doomed, keep) = {
        let core = state.core.lock();
        let mut collected = state.collected.lock();
        let keep = live_blobs(&core, retention_ms);
        let g = garbage_except(&core, &keep, retention_ms, &mut collected);
        *state.access.index.lock() = build_index(&core, &collected);
        (g, keep)
    };
    let now = wall_ms();
    state.access.prune(now);
    {
        let mut deferred = state.access.deferred.lock();
        doomed.extend(std::mem::take(&mut *deferred));
    }
    doomed.sort();
    doomed.dedup();
    for h in doomed {
        if keep.contains(&h) {
            continue;
        }
        match state.blobs.modified(&h).await {
            Ok(Some(t)) if t.saturating_add(DELETE_GRACE_MS) > now => {
                state.access.deferred.lock().insert(h);
            }
            Ok(Some(_)) => remove(state, &h).await,
            Ok(None) => {}
            Err(e) => tracing::warn!("garbage collection: {e}"),
        }
    }
    let n = {
        let mut c = state.access.collections.lock();
        *c += 1;
        *c
    };
    if n % SWEEP_EVERY == 1 {
        sweep(state, &keep, now).await;
    }
}

async fn remove(state: &Shared, h: &str) {
    if let Err(e) = state.blobs.remove(h).await {
        tracing::warn!("garbage collection: {e}");
    }
}

/// Deletes orphans and stale staged uploads.
async fn sweep(state: &Shared, keep: &HashSet<String>, now: Millis) {
    let ttl = state.access.orphan_ttl_ms;
    let mut orphans = Vec::new();
    let mut list = state.blobs.list();
    while let Some(item) = list.next().await {
        match item {
            Ok((h, t)) if !keep.contains(&h) && t.saturating_add(ttl) <= now => orphans.push(h),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("garbage collection: listing the store: {e}");
                return;
            }
        }
    }
    for h in orphans {
        remove(state, &h).await;
    }
    if let Err(e) = state.blobs.sweep_uploads(STALE_UPLOAD).await {
        tracing::warn!("garbage collection: {e}");
    }
}

/// Whether an execution's tensors are still needed: it is in progress, or
/// it finished and its user has neither acknowledged the outputs nor let
/// the retention time pass. Once false, false for good.
fn live(e: &Execution, now: Millis, retention_ms: Millis) -> bool {
    match e.finished_at {
        None => true,
        Some(done) => !e.fetched && now.saturating_sub(done) < retention_ms,
    }
}

/// Every blob a model or a live execution refers to (hex).
fn live_blobs(core: &Core, retention_ms: Millis) -> HashSet<String> {
    let now = core.last_now;
    let l = &core.ledger;
    let mut keep = HashSet::new();
    for m in l.models.values() {
        keep.extend(model_blobs(m).map(|h| Pubkey(h).hex()));
    }
    for e in l.executions.values() {
        if live(e, now, retention_ms) {
            keep.extend(execution_blobs(e).map(|h| Pubkey(h).hex()));
        }
    }
    keep
}

/// Blobs that finished executions no longer need: the input and every task
/// output of each execution that stopped being live (its user fetched the
/// outputs, or `retention_ms` passed since it finished), except what a model
/// or a live execution also refers to: a blob is deleted by reference, never
/// because one of several executions sharing it is done. Returns the hashes
/// to delete and marks those executions collected.
pub fn garbage(core: &Core, retention_ms: Millis, collected: &mut BTreeSet<u64>) -> Vec<String> {
    garbage_except(core, &live_blobs(core, retention_ms), retention_ms, collected)
}

fn garbage_except(
    core: &Core,
    keep: &HashSet<String>,
    retention_ms: Millis,
    collected: &mut BTreeSet<u64>,
) -> Vec<String> {
    let now = core.last_now;
    let mut out = Vec::new();
    for (id, e) in &core.ledger.executions {
        if collected.contains(id) || live(e, now, retention_ms) {
            continue;
        }
        collected.insert(*id);
        out.extend(
            execution_blobs(e)
                .map(|h| Pubkey(h).hex())
                .filter(|h| !keep.contains(h)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_quotas_count_bytes_over_a_rolling_day() {
        let a = Access::new(1000, 100, 60_000);
        let (k, other) = (
            Keypair::from_seed([1; 32]).pubkey(),
            Keypair::from_seed([2; 32]).pubkey(),
        );
        let t0 = 10 * QUOTA_WINDOW_MS;
        assert_eq!(a.charge(k, t0, 40), 40);
        assert_eq!(a.charge(k, t0 + 1, 10), 50);
        assert_eq!(a.charge(k, t0 + QUOTA_BUCKET_MS, 5), 55);
        assert_eq!(a.charge(other, t0, 7), 7, "quotas are per key");
        // A day after the first bucket it no longer counts; the second still does.
        assert_eq!(a.charge(k, t0 + QUOTA_WINDOW_MS, 0), 5);
        assert_eq!(a.charge(k, t0 + QUOTA_WINDOW_MS + QUOTA_BUCKET_MS, 0), 0);
        a.prune(t0 + 2 * QUOTA_WINDOW_MS);
        assert!(a.usage.lock().is_empty());
    }

    #[test]
    fn an_uploader_reads_its_unreferenced_blob_only_while_it_is_young() {
        let a = Access::new(1000, 100, 60_000);
        let (k, other) = (
            Keypair::from_seed([1; 32]).pubkey(),
            Keypair::from_seed([2; 32]).pubkey(),
        );
        a.uploaded([7; 32], k, 1_000);
        assert!(a.young_upload_of(&[7; 32], &k, 60_999));
        assert!(!a.young_upload_of(&[7; 32], &other, 2_000));
        assert!(!a.young_upload_of(&[8; 32], &k, 2_000));
        assert!(!a.young_upload_of(&[7; 32], &k, 61_000));
        a.prune(61_000);
        assert!(a.uploaders.lock().is_empty());
    }
}
