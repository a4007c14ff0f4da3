//! The ledger's HTTP API as an OpenAPI 3.1 description, generated from the
//! server's own types: the bodies' schemas from `splitup_protocol::api` and
//! `types` (feature `openapi`), each operation from its handler's
//! `#[utoipa::path]` annotation. Served at `GET /openapi.json`; a copy is
//! checked in as `docs/openapi.json` and `tests/openapi.rs` fails when the
//! two differ (`UPDATE_OPENAPI=1 cargo test -p splitup-ledger --test
//! openapi` rewrites the copy), when a route has no annotation, when the
//! description is not valid OpenAPI, or when a real answer does not match
//! its schema.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::LazyLock;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, RefOr};
use utoipa::{OpenApi, PartialSchema, ToSchema};

/// The description's introduction: what every client must know before
/// the operations make sense (docs/http-api.md says the same at more length).
const DESCRIPTION: &str = r#"The SplitUp ledger: accounts, nodes, models and executions, changed only by signed instructions, and a content-addressed blob store for model files and tensors.

**Conventions.** Bodies are JSON. Amounts are integers in micro-USDC (1 USDC = 1 000 000); times are milliseconds since the Unix epoch by the ledger's clock. The read views (`/v1/status`, `/v1/accounts/…`, `/v1/executions/…`, …) write public keys, hashes and commitments as exactly 64 lowercase hex digits (the only spelling accepted in paths and headers too). A signed instruction and the events it causes carry the same values as serde writes byte arrays: JSON arrays of integers 0-255 (32 for a key or hash, 64 for a signature).

**Signed instructions (`POST /v1/tx`).** Every change of state is a `SignedTx`: `signer` (an ed25519 public key), `nonce` (exactly the signer's next nonce: `nonce` of `GET /v1/accounts/{key}`; a replayed or reordered instruction is refused with 409), `ix` (the instruction) and `signature`: ed25519 over the bytes `splitup-tx-v1` followed by the compact JSON of the array `[signer, nonce, ix]` (serde_json's encoding of `splitup_protocol::SignedTx::message`: keys as byte arrays, no spaces, fields in declaration order, floats written so they read back exactly). The instruction is applied, made durable in the ledger's log, and only then acknowledged with its log position and the events it caused.

**Signed blob requests (`PUT`/`GET /v1/blobs/{hash}`).** Each carries three headers: `x-splitup-key` (the signer's public key, hex), `x-splitup-expires` (ms since the Unix epoch, in the future and at most 600 000 ms ahead) and `x-splitup-signature` (ed25519, 128 hex digits) over the UTF-8 text `splitup-blob-request-v1\n{METHOD}\n{hash}\n{expires}` (`splitup_protocol::crypto::blob_request_message`). A request without them, expired, or whose signature does not verify is refused with 401. Uploads are for registered nodes and accounts holding at least `params.account_min`, within a per-key quota per rolling 24 h; reads are for the parties of the execution or model that refers to the blob (its user, its nodes, validators and judges; a model's owner, registered nodes and accounts that could stake one).

**Long-polling.** `GET /v1/nodes/{key}/work` and `GET /v1/executions/{id}` answer with an `x-splitup-version` header (the state's version). Sent back as `?after=VERSION`, the request waits until the state changes past it or `wait_ms` (default 10 000, at most 30 000) passes, then answers with the state as it is.

**Errors.** Every error the ledger itself writes is an `ApiError`: `{"error": message, "code": N}` with a stable code: 1-12 the protocol's rejections (`splitup_protocol::ProtocolError::code`), 100 a malformed instruction, 101 a malformed request, 102 a malformed or refused blob, 103 over the upload quota, 429 rate limited (with `Retry-After`), 500 the rules failed on this request (nothing applied), 502 the blob store failed, 503 the ledger is stopping. A body over an operation's size limit (413) or a query string that does not parse (400) is refused by the HTTP layer with a plain-text message. Instructions and faucet requests are rate limited per client address and per signing key."#;

/// Descriptions that several operations share.
pub(crate) const RATE_LIMITED: &str =
    "Over the request rate of this client address or signing key (code 429); nothing was applied.";
pub(crate) const INTERNAL: &str =
    "The rules failed on this request (code 500): it was not applied, and the ledger rebuilt its state from its log.";
pub(crate) const BAD_KEY: &str = "Not a public key: 64 lowercase hex digits (code 101).";

/// The ledger's HTTP API. `paths(...)` must name every handler in the
/// router: `tests/openapi.rs` compares them.
#[derive(OpenApi)]
#[openapi(
    info(title = "SplitUp ledger HTTP API", description = DESCRIPTION),
    paths(
        crate::server::post_tx,
        crate::server::post_faucet,
        crate::server::get_status,
        crate::server::get_metrics,
        crate::server::get_genesis,
        crate::server::get_blockhashes,
        crate::server::get_account,
        crate::server::get_nodes,
        crate::server::get_work,
        crate::server::get_models,
        crate::server::get_disputes,
        crate::server::get_executions,
        crate::server::get_execution,
        crate::server::get_model,
        crate::blobs::put_blob,
        crate::blobs::get_blob,
        get_openapi,
    ),
    // Header parameters' schemas are not collected by utoipa: named here.
    components(schemas(splitup_protocol::schema::Hex64)),
    tags(
        (name = "instructions", description = "Signed instructions: every change of state."),
        (name = "state", description = "Read views of the ledger's state."),
        (name = "nodes", description = "What nodes read to do their work."),
        (name = "blobs", description = "The content-addressed blob store (signed requests)."),
        (name = "operations", description = "Metrics and this description."),
    )
)]
pub struct ApiDoc;

/// Bytes of a blob: any content, named by its BLAKE3.
pub struct Binary;

impl PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .description(Some("raw bytes"))
            .into()
    }
}

impl ToSchema for Binary {}

/// The description as JSON, with two corrections to what utoipa writes:
/// fields of an alias type (`Micro`, `Millis`: `u64`) refer to a component
/// named after the primitive, which is inlined instead; and unsigned
/// formats are spelt as the OpenAPI format registry spells them.
pub fn spec() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the description serialises");
    let primitives: Vec<(String, Value)> = doc["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| is_primitive(name))
        .map(|(name, s)| (format!("#/components/schemas/{name}"), s.clone()))
        .collect();
    inline_refs(&mut doc, &primitives);
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        schemas.retain(|name, _| !is_primitive(name));
    }
    unsigned_formats(&mut doc);
    doc
}

fn is_primitive(name: &str) -> bool {
    matches!(
        name,
        "u8" | "u16"
            | "u32"
            | "u64"
            | "usize"
            | "i8"
            | "i16"
            | "i32"
            | "i64"
            | "isize"
            | "f32"
            | "f64"
            | "bool"
            | "String"
    )
}

/// Replaces each `{"$ref": R}` whose R is in `targets` by its schema.
fn inline_refs(v: &mut Value, targets: &[(String, Value)]) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                if let Some((_, s)) = targets.iter().find(|(t, _)| t == r) {
                    // Keep what sits beside the reference (a description).
                    let mut inlined = s.as_object().cloned().unwrap_or_default();
                    m.remove("$ref");
                    inlined.extend(std::mem::take(m));
                    *v = Value::Object(inlined);
                    return;
                }
            }
            m.values_mut().for_each(|x| inline_refs(x, targets));
            // `{"oneOf": [S], …}` left by an inlined reference: S itself.
            if let Some(Value::Array(one)) = m.get("oneOf") {
                if let [Value::Object(only)] = one.as_slice() {
                    if !only.contains_key("$ref") && only.keys().all(|k| !m.contains_key(k)) {
                        let only = only.clone();
                        m.remove("oneOf");
                        m.extend(only);
                    }
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| inline_refs(x, targets)),
        _ => {}
    }
}

/// utoipa 5 writes the unsigned formats kebab-cased (`u-int64`); the
/// OpenAPI format registry spells them `uint64`.
fn unsigned_formats(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(f)) = m.get_mut("format") {
                if let Some(bits) = f.strip_prefix("u-int") {
                    *f = format!("uint{bits}");
                }
            }
            m.values_mut().for_each(unsigned_formats);
        }
        Value::Array(a) => a.iter_mut().for_each(unsigned_formats),
        _ => {}
    }
}

/// [`spec`], pretty-printed with a final newline: what `GET /openapi.json`
/// answers and `docs/openapi.json` holds. Keys are sorted, except at the
/// top, where the introduction comes first and the schemas last.
pub fn spec_json() -> String {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        let doc = spec();
        let first = ["openapi", "info", "tags", "paths"];
        let top = doc.as_object().expect("the description is an object");
        let keys = first
            .iter()
            .filter(|k| top.contains_key(**k))
            .copied()
            .chain(top.keys().map(String::as_str).filter(|k| !first.contains(k)));
        let fields: Vec<String> = keys
            .map(|k| {
                let v = serde_json::to_string_pretty(&top[k]).expect("JSON serialises");
                format!("  {}: {}", Value::from(k), v.replace('\n', "\n  "))
            })
            .collect();
        format!("{{\n{}\n}}\n", fields.join(",\n"))
    });
    JSON.clone()
}

/// `GET /openapi.json`: this description.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This OpenAPI 3.1 description of the ledger's HTTP API (also `docs/openapi.json` in the repository).", body = Object, content_type = "application/json"))
)]
pub(crate) async fn get_openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], spec_json()).into_response()
}
