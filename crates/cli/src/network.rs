//! Commands that talk to a ledger over HTTP.

use crate::util::human;
use crate::{FaucetArgs, KeyedArgs, LedgerStartArgs, LedgerUrl};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use splitup_ledger::{keys, server};

/// A small blocking client for the ledger's JSON API.
pub struct Client {
    base: String,
    http: reqwest::blocking::Client,
}

impl Client {
    pub fn new(base: &str) -> Result<Client> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--ledger must be an http:// or https:// URL, not {base:?}");
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(Client { base, http })
    }

    fn check(&self, what: &str, r: reqwest::Result<reqwest::blocking::Response>) -> Result<Value> {
        let r = r.with_context(|| {
            format!(
                "cannot reach the ledger at {} (is `splitup ledger start` running?)",
                self.base
            )
        })?;
        let status = r.status();
        let body: Value = r.json().unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = body.get("error").and_then(|e| e.as_str()).unwrap_or("no details");
            bail!("{what}: the ledger answered {status}: {msg}");
        }
        Ok(body)
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        self.check(path, self.http.get(format!("{}{path}", self.base)).send())
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.check(path, self.http.post(format!("{}{path}", self.base)).json(body).send())
    }
}

pub fn ledger_start(a: LedgerStartArgs) -> Result<i32> {
    if !(0.0..=1.0).contains(&a.p) {
        bail!("--p must be between 0 and 1");
    }
    let cfg = server::Config {
        data: a.data,
        listen: a.listen,
        challenge_ppm: (a.p * 1e6).round() as u64,
        local: !a.no_faucet,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(server::serve(cfg))?;
    println!("ledger stopped");
    Ok(0)
}

pub fn keys_new(path: &std::path::Path) -> Result<i32> {
    let k = keys::generate();
    keys::write(path, &k)?;
    println!("{}", k.pubkey().hex());
    Ok(0)
}

pub fn faucet(a: FaucetArgs) -> Result<i32> {
    let key = keys::read(&a.keyed.key)?;
    let c = Client::new(&a.keyed.ledger.ledger)?;
    c.post(
        "/v1/faucet",
        &json!({ "to": key.pubkey().hex(), "amount_usdc": a.amount }),
    )?;
    let acct = c.get(&format!("/v1/accounts/{}", key.pubkey().hex()))?;
    println!(
        "minted {} USDC to {}; balance {:.6} USDC",
        a.amount,
        key.pubkey().hex(),
        acct["balance"].as_u64().unwrap_or(0) as f64 / 1e6
    );
    Ok(0)
}

pub fn balance(a: KeyedArgs) -> Result<i32> {
    let key = keys::read(&a.key)?;
    let c = Client::new(&a.ledger.ledger)?;
    let acct = c.get(&format!("/v1/accounts/{}", key.pubkey().hex()))?;
    println!(
        "{}: {:.6} USDC",
        key.pubkey().hex(),
        acct["balance"].as_u64().unwrap_or(0) as f64 / 1e6
    );
    if let Some(n) = acct.get("node").filter(|n| !n.is_null()) {
        println!(
            "node: stake {:.6} USDC, {} VRAM, status {}, earned {:.6} USDC, slashed {:.6} USDC",
            n["stake"].as_u64().unwrap_or(0) as f64 / 1e6,
            human(n["vram"].as_u64().unwrap_or(0)),
            n["status"].as_str().unwrap_or("?"),
            n["earned_total"].as_u64().unwrap_or(0) as f64 / 1e6,
            n["slashed_total"].as_u64().unwrap_or(0) as f64 / 1e6
        );
    }
    Ok(0)
}

pub fn nodes(a: LedgerUrl) -> Result<i32> {
    let c = Client::new(&a.ledger)?;
    let nodes = c.get("/v1/nodes")?;
    let list = nodes.as_array().cloned().unwrap_or_default();
    println!(
        "{:<16} {:>10} {:>14} {:>13} {:>5} {:>9}",
        "node", "vram", "stake (USDC)", "status", "load", "tasks"
    );
    for n in &list {
        println!(
            "{:<16} {:>10} {:>14.2} {:>13} {:>5} {:>9}",
            &n["key"].as_str().unwrap_or("")[..16.min(n["key"].as_str().unwrap_or("").len())],
            human(n["vram"].as_u64().unwrap_or(0)),
            n["stake"].as_u64().unwrap_or(0) as f64 / 1e6,
            n["status"].as_str().unwrap_or("?"),
            n["load"].as_u64().unwrap_or(0),
            n["supports"].as_array().map(|a| a.len()).unwrap_or(0)
        );
    }
    println!("{} nodes", list.len());
    Ok(0)
}
