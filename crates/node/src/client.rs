//! A blocking client for the ledger's JSON API.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use splitup_protocol::{Instruction, Keypair, SignedTx};
use splitup_store::BlockingStore;

pub struct Client {
    base: String,
    http: reqwest::blocking::Client,
    store: BlockingStore,
}

impl Client {
    /// A client of the ledger at `base` whose blobs go through the ledger's
    /// own store API (`BASE/v1/blobs`).
    pub fn new(base: &str) -> Result<Client> {
        Client::with_store(base, None)
    }

    /// As [`Client::new`], with blobs read and written directly in the store
    /// `store` names (`s3://…`, `gs://…`, `file://…`, `http(s)://…`), which
    /// must be the ledger's.
    pub fn with_store(base: &str, store: Option<&str>) -> Result<Client> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--ledger must be an http:// or https:// URL, not {base:?}");
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()?;
        let url = store.map(str::to_string).unwrap_or_else(|| format!("{base}/v1/blobs"));
        let store = BlockingStore::open(&url)?;
        Ok(Client { base, http, store })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The URI a blob stored through this client has.
    pub fn blob_uri(&self, hash: &str) -> String {
        self.store.store().uri(hash)
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

    /// Signs `ix` with the key's next nonce and submits it; returns the events.
    pub fn send(&self, key: &Keypair, ix: Instruction) -> Result<Vec<Value>> {
        let acct = self.get(&format!("/v1/accounts/{}", key.pubkey().hex()))?;
        let nonce = acct["nonce"].as_u64().unwrap_or(0);
        let tx = SignedTx::sign(key, nonce, ix);
        let r = self.post("/v1/tx", &serde_json::to_value(&tx)?)?;
        Ok(r["events"].as_array().cloned().unwrap_or_default())
    }

    /// Uploads a blob; returns its hash.
    pub fn put_blob(&self, bytes: Vec<u8>) -> Result<String> {
        self.store.put(bytes).context("upload")
    }

    /// Downloads a blob, checking its content against its name.
    pub fn get_blob(&self, hash: &str) -> Result<Vec<u8>> {
        Ok(self.store.get(hash).context("download")?.to_vec())
    }
}
