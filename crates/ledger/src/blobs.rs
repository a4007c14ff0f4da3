//! The ledger's blob store over HTTP (`/v1/blobs/{hash}`) and its garbage
//! collection.

use crate::server::{error, Core, Shared};
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use splitup_protocol::*;
use splitup_store::StoreError;

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::BadName(_) | StoreError::Mismatch { .. } | StoreError::TooLarge { .. } => {
            error(StatusCode::BAD_REQUEST, 102, e.to_string())
        }
        StoreError::Missing(_) => error(StatusCode::NOT_FOUND, 4, e.to_string()),
        // The backing store failed (or holds damaged bytes we refuse to serve).
        _ => error(StatusCode::BAD_GATEWAY, 502, e.to_string()),
    }
}

/// The ledger's store over HTTP, for nodes and clients on other hosts: PUT
/// and GET check content against the name both ways.
pub(crate) async fn put_blob(State(s): State<Shared>, UrlPath(hash): UrlPath<String>, body: Bytes) -> Response {
    let n = body.len();
    match s.blobs.put(&hash, body).await {
        Ok(()) => Json(json!({ "ok": true, "blake3": hash, "bytes": n })).into_response(),
        Err(e) => store_error(e),
    }
}

pub(crate) async fn get_blob(State(s): State<Shared>, UrlPath(hash): UrlPath<String>) -> Response {
    match s.blobs.get(&hash).await {
        Ok(bytes) => bytes.into_response(),
        Err(e) => store_error(e),
    }
}

/// Deletes the blobs finished executions no longer need (see [`garbage`]).
pub(crate) async fn collect(state: &Shared, retention_ms: Millis) {
    let garbage = {
        let mut core = state.core.lock();
        garbage(&mut core, retention_ms, &mut state.collected.lock())
    };
    for h in garbage {
        if let Err(e) = state.blobs.remove(&h).await {
            eprintln!("warning: garbage collection: {e}");
        }
    }
}

/// Blobs that finished executions no longer need: their input and every
/// task output, once the user fetched them or `retention_ms` has passed since they finished,
/// unless an unfinished execution or a model still refers to the same
/// content. Returns the hashes to delete and marks the executions done.
pub fn garbage(core: &mut Core, retention_ms: Millis, collected: &mut std::collections::BTreeSet<u64>) -> Vec<String> {
    let now = core.last_now;
    let blob_of = |uri: &str| splitup_store::hash_of_uri(uri).to_string();
    let mut keep: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for m in core.ledger.models.values() {
        for t in &m.def.tasks {
            keep.insert(Pubkey(t.weight_hash).hex());
            keep.insert(Pubkey(t.graph_hash).hex());
        }
    }
    for id in &core.ledger.active {
        let e = &core.ledger.executions[id];
        keep.insert(Pubkey(e.input_commitment).hex());
        for r in &e.tasks {
            keep.extend(r.output_uris.iter().map(|u| blob_of(u)));
        }
    }
    let mut out = Vec::new();
    for (id, e) in &core.ledger.executions {
        let Some(done) = e.finished_at else { continue };
        if collected.contains(id) || (!e.fetched && now.saturating_sub(done) < retention_ms) {
            continue;
        }
        collected.insert(*id);
        let mut hashes = vec![Pubkey(e.input_commitment).hex()];
        for r in &e.tasks {
            hashes.extend(r.output_uris.iter().map(|u| blob_of(u)));
        }
        out.extend(hashes.into_iter().filter(|h| !keep.contains(h)));
    }
    out
}
