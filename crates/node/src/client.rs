//! A blocking client for the ledger's JSON API.

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde_json::Value;
use splitup_protocol::api::AccountView;
use splitup_protocol::{Instruction, Keypair, Pubkey, SignedTx};
use splitup_store::BlockingStore;
use std::collections::HashMap;
use std::sync::Mutex;

pub struct Client {
    base: String,
    http: reqwest::blocking::Client,
    /// `Some`: blobs are read and written in this store directly (its own
    /// credentials apply); `None`: through the ledger's `/v1/blobs`, signed.
    store: Option<BlockingStore>,
    /// The key that signs blob requests to the ledger.
    key: Option<Keypair>,
    /// Held from the nonce read to the answer of the post, so that threads
    /// sharing this client never sign two instructions with one nonce. It
    /// holds, per guarded key, the nonce the ledger should show next.
    signing: Mutex<HashMap<Pubkey, Option<u64>>>,
}

/// The ledger's nonce for a guarded key advanced by instructions this
/// process did not send: another process is signing with the key.
#[derive(Debug)]
pub struct ForeignSigner {
    pub key: Pubkey,
    pub expected: u64,
    pub found: u64,
}

impl std::fmt::Display for ForeignSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "another process is signing with this node's key {}: the ledger's nonce is {}, this process sent instructions up to nonce {}",
            self.key.hex(),
            self.found,
            self.expected.saturating_sub(1)
        )
    }
}

impl std::error::Error for ForeignSigner {}

/// How long a signed blob request stays valid (the ledger takes at most 10 min).
const BLOB_REQUEST_TTL: std::time::Duration = std::time::Duration::from_secs(5 * 60);
/// A whole blob moves within one request: allow a large one time.
const BLOB_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

impl Client {
    /// A client of the ledger at `base` whose blobs go through the ledger's
    /// own store API (`BASE/v1/blobs`).
    pub fn new(base: &str) -> Result<Client> {
        Client::with_store(base, None)
    }

    /// As [`Client::new`], with blobs read and written directly in the store
    /// `store` names (`s3://…`, `gs://…`, `file://…`, `http(s)://…`), which
    /// must be the ledger's; the store's own credentials (`AWS_*`,
    /// `GOOGLE_*`) then decide who reads and writes, not the ledger.
    pub fn with_store(base: &str, store: Option<&str>) -> Result<Client> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--ledger must be an http:// or https:// URL, not {base:?}");
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()?;
        let store = store.map(BlockingStore::open).transpose()?;
        Ok(Client {
            base,
            http,
            store,
            key: None,
            signing: Mutex::new(HashMap::new()),
        })
    }

    /// This client, signing its blob requests to the ledger with `key`: the
    /// ledger lets a key upload if it is a node or a funded account, and read
    /// what it is a party to (see `splitup_ledger::blobs`).
    pub fn signed_by(self, key: Keypair) -> Client {
        Client { key: Some(key), ..self }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The URI a blob stored through this client has.
    pub fn blob_uri(&self, hash: &str) -> String {
        match &self.store {
            Some(s) => s.store().uri(hash),
            None => format!("{}/v1/blobs/{hash}", self.base),
        }
    }

    /// A blob request to the ledger's store, signed by this client's key.
    fn blob_request(&self, method: reqwest::Method, hash: &str) -> Result<reqwest::blocking::RequestBuilder> {
        let Some(key) = &self.key else {
            bail!(
                "blob requests to the ledger are signed, and this client has no key (give --key FILE, or --store URL to use the store directly)"
            );
        };
        let expires = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| (d + BLOB_REQUEST_TTL).as_millis() as u64)
            .unwrap_or(0);
        let msg = splitup_protocol::crypto::blob_request_message(method.as_str(), hash, expires);
        let sig = splitup_protocol::crypto::to_hex(&key.sign(&msg));
        Ok(self
            .http
            .request(method, format!("{}/v1/blobs/{hash}", self.base))
            .timeout(BLOB_TIMEOUT)
            .header("x-splitup-key", key.pubkey().hex())
            .header("x-splitup-expires", expires.to_string())
            .header("x-splitup-signature", sig))
    }

    fn check(
        &self,
        what: &str,
        r: reqwest::Result<reqwest::blocking::Response>,
    ) -> Result<reqwest::blocking::Response> {
        let r = r.with_context(|| {
            format!(
                "cannot reach the ledger at {} (is `splitup ledger start` running?)",
                self.base
            )
        })?;
        let status = r.status();
        if !status.is_success() {
            let body: Value = r.json().unwrap_or(Value::Null);
            let msg = body.get("error").and_then(|e| e.as_str()).unwrap_or("no details");
            bail!("{what}: the ledger answered {status}: {msg}");
        }
        Ok(r)
    }

    /// As [`Client::get`] for the ledger's long-polling reads: with
    /// `after = Some(v)` the ledger answers once its state has changed since
    /// version `v`, or after `wait`. Returns the answer and its version.
    pub fn get_when_changed(
        &self,
        path: &str,
        after: Option<u64>,
        wait: std::time::Duration,
    ) -> Result<(Value, Option<u64>)> {
        let url = match after {
            Some(v) => format!("{}{path}?after={v}&wait_ms={}", self.base, wait.as_millis()),
            None => format!("{}{path}", self.base),
        };
        let r = self.check(path, self.http.get(url).send())?;
        let version = r
            .headers()
            .get("x-splitup-version")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok((r.json()?, version))
    }

    /// As [`Client::get_when_changed`], decoded as `T` (a malformed answer is an error).
    pub fn get_when_changed_as<T: DeserializeOwned>(
        &self,
        path: &str,
        after: Option<u64>,
        wait: std::time::Duration,
    ) -> Result<(T, Option<u64>)> {
        let (v, version) = self.get_when_changed(path, after, wait)?;
        let t = serde_json::from_value(v).with_context(|| format!("{path}: a malformed answer"))?;
        Ok((t, version))
    }

    /// `GET path`, decoded as `T` (one of [`splitup_protocol::api`]'s types):
    /// a missing or malformed field is an error, never a default.
    pub fn get_as<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        serde_json::from_value(self.get(path)?).with_context(|| format!("{path}: a malformed answer"))
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        Ok(self
            .check(path, self.http.get(format!("{}{path}", self.base)).send())?
            .json()?)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        Ok(self
            .check(path, self.http.post(format!("{}{path}", self.base)).json(body).send())?
            .json()?)
    }

    /// From now on, [`Client::send`] with `key` fails with [`ForeignSigner`]
    /// when the ledger's nonce for it has advanced past the instructions this
    /// client sent (after the first, which sets the baseline).
    pub fn guard_nonces(&self, key: &Pubkey) {
        self.signing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(*key, None);
    }

    /// Signs `ix` with the key's next nonce and submits it; returns the
    /// events. Sends through one client are serialised (nonce read to answer).
    pub fn send(&self, key: &Keypair, ix: Instruction) -> Result<Vec<Value>> {
        let me = key.pubkey();
        let mut signing = self.signing.lock().unwrap_or_else(|e| e.into_inner());
        let acct: AccountView = self.get_as(&format!("/v1/accounts/{}", me.hex()))?;
        let nonce = acct.nonce;
        if let Some(Some(expected)) = signing.get(&me) {
            if nonce > *expected {
                return Err(ForeignSigner {
                    key: me,
                    expected: *expected,
                    found: nonce,
                }
                .into());
            }
        }
        let tx = SignedTx::sign(key, nonce, ix);
        let r = self.http.post(format!("{}/v1/tx", self.base)).json(&tx).send();
        if let Some(next) = signing.get_mut(&me) {
            // An answer from the ledger that refuses the instruction means
            // the nonce was not used; without an answer it may have been.
            let refused = matches!(&r, Ok(resp) if !resp.status().is_success());
            *next = Some(if refused { nonce } else { nonce + 1 });
        }
        drop(signing);
        let r = self.check("/v1/tx", r)?.json::<Value>()?;
        Ok(r["events"].as_array().cloned().unwrap_or_default())
    }

    /// Uploads a blob; returns its hash.
    pub fn put_blob(&self, bytes: Vec<u8>) -> Result<String> {
        if let Some(s) = &self.store {
            return s.put(bytes).context("upload");
        }
        let hash = splitup_store::hash_of(&bytes);
        let r = self.blob_request(reqwest::Method::PUT, &hash)?.body(bytes).send();
        self.check(&format!("upload of blob {hash}"), r)?;
        Ok(hash)
    }

    /// Downloads a blob, checking its content against its name.
    pub fn get_blob(&self, hash: &str) -> Result<Vec<u8>> {
        if let Some(s) = &self.store {
            return Ok(s.get(hash).context("download")?.to_vec());
        }
        if !splitup_store::is_hash(hash) {
            bail!("{hash:?} is not a blob name (a BLAKE3 hash)");
        }
        let r = self.blob_request(reqwest::Method::GET, hash)?.send();
        let r = self.check(&format!("download of blob {hash}"), r)?;
        let size = r.content_length().unwrap_or(0);
        if size > splitup_store::BLOB_BYTES_MAX {
            bail!("blob {hash} is {size} bytes, over the store's limit");
        }
        let mut bytes = Vec::with_capacity(size as usize);
        use std::io::Read;
        r.take(splitup_store::BLOB_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("download of blob {hash}"))?;
        let actual = splitup_store::hash_of(&bytes);
        if actual != hash {
            bail!("download of blob {hash}: the content hashes to {actual}");
        }
        Ok(bytes)
    }
}
