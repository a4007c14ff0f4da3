//! The ledger as a real process on 127.0.0.1: bad input gets a clear 4xx and
//! changes nothing; acknowledged instructions survive `kill -9`.

use serde_json::{json, Value};
use splitup_ledger::keys;
use splitup_protocol::{Instruction, Keypair, SignedTx, USDC};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

struct Ledger {
    child: Child,
    url: String,
    /// The start-up line: address, and how the state was rebuilt.
    banner: String,
}

impl Drop for Ledger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &Path) -> Ledger {
    start_with(data, &[])
}

fn start_with(data: &Path, extra: &[&str]) -> Ledger {
    let mut child = Command::new(env!("CARGO_BIN_EXE_splitup"))
        .args(["ledger", "start", "--dev", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(extra)
        .stdout(Stdio::piped())
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    Ledger {
        child,
        url,
        banner: line,
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::new()
}

fn get(l: &Ledger, path: &str) -> (u16, Value) {
    let r = http().get(format!("{}{path}", l.url)).send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

fn post_raw(l: &Ledger, path: &str, body: Vec<u8>) -> (u16, Value) {
    let r = http()
        .post(format!("{}{path}", l.url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

fn send(l: &Ledger, tx: &SignedTx) -> (u16, Value) {
    post_raw(l, "/v1/tx", serde_json::to_vec(tx).unwrap())
}

fn nonce(l: &Ledger, k: &Keypair) -> u64 {
    get(l, &format!("/v1/accounts/{}", k.pubkey().hex())).1["nonce"]
        .as_u64()
        .unwrap()
}

fn balance(l: &Ledger, k: &Keypair) -> u64 {
    get(l, &format!("/v1/accounts/{}", k.pubkey().hex())).1["balance"]
        .as_u64()
        .unwrap()
}

fn faucet(l: &Ledger, k: &Keypair, usdc: u64) {
    let (s, v) = post_raw(
        l,
        "/v1/faucet",
        serde_json::to_vec(&json!({ "to": k.pubkey().hex(), "amount_usdc": usdc })).unwrap(),
    );
    assert_eq!(s, 200, "{v}");
}

/// `n` acknowledged transfers of 1 USDC, each user to the next in a ring.
fn transfer_ring(l: &Ledger, users: &[Keypair], n: usize) {
    for i in 0..n {
        let (from, to) = (&users[i % users.len()], &users[(i + 1) % users.len()]);
        let tx = SignedTx::sign(
            from,
            nonce(l, from),
            Instruction::Transfer {
                to: to.pubkey(),
                amount: USDC,
            },
        );
        let (s, v) = send(l, &tx);
        assert_eq!(s, 200, "{v}");
    }
}

#[test]
fn bad_requests_get_clear_4xx_and_change_nothing() {
    let d = tempfile::tempdir().unwrap();
    let l = start(d.path());
    let (alice, bob) = (keys::generate(), keys::generate());
    faucet(&l, &alice, 100);
    let good = SignedTx::sign(
        &alice,
        nonce(&l, &alice),
        Instruction::Transfer {
            to: bob.pubkey(),
            amount: 5 * USDC,
        },
    );
    assert_eq!(send(&l, &good).0, 200);
    let instructions = get(&l, "/v1/status").1["instructions"].as_u64().unwrap();
    let alice_before = balance(&l, &alice);

    let (s, v) = post_raw(&l, "/v1/tx", b"{\"signer\": [1, 2".to_vec());
    assert_eq!((s, v["code"].as_u64()), (400, Some(100)), "malformed JSON: {v}");
    assert!(v["error"].as_str().unwrap().contains("malformed"));
    let (s, _) = post_raw(&l, "/v1/tx", vec![b' '; 2 * 1024 * 1024]);
    assert_eq!(s, 413, "oversized body");
    // Signed by a key other than the signer it names.
    let mut forged = SignedTx::sign(
        &bob,
        nonce(&l, &alice),
        Instruction::Transfer {
            to: bob.pubkey(),
            amount: 50 * USDC,
        },
    );
    forged.signer = alice.pubkey();
    let (s, v) = send(&l, &forged);
    assert_eq!((s, v["code"].as_u64()), (401, Some(1)), "{v}");
    // Unsigned (all-zero signature).
    let mut unsigned = SignedTx::sign(
        &alice,
        nonce(&l, &alice),
        Instruction::Transfer {
            to: bob.pubkey(),
            amount: 1,
        },
    );
    unsigned.signature = [0; 64];
    assert_eq!(send(&l, &unsigned).0, 401);
    // Replay of an accepted instruction.
    let (s, v) = send(&l, &good);
    assert_eq!((s, v["code"].as_u64()), (409, Some(2)), "replay: {v}");
    // Unknown ids and keys.
    assert_eq!(get(&l, "/v1/executions/999").0, 404);
    assert_eq!(get(&l, "/v1/models/77").0, 404);
    assert_eq!(get(&l, "/v1/accounts/not-a-key").0, 400);
    let dereg = SignedTx::sign(&alice, nonce(&l, &alice), Instruction::DeactivateModel { model: 42 });
    let (s, v) = send(&l, &dereg);
    assert_eq!((s, v["code"].as_u64()), (404, Some(4)), "{v}");
    // Blobs whose hash does not match their content (blob requests are signed: tests/blobs.rs).
    let data = b"task weights".to_vec();
    let hash = blake3::hash(&data).to_hex().to_string();
    let wrong = blake3::hash(b"other").to_hex().to_string();
    let blob = |method: reqwest::Method, hash: &str| {
        let expires = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            + 60_000;
        let msg = splitup_protocol::crypto::blob_request_message(method.as_str(), hash, expires);
        http()
            .request(method, format!("{}/v1/blobs/{hash}", l.url))
            .header("x-splitup-key", alice.pubkey().hex())
            .header("x-splitup-expires", expires.to_string())
            .header(
                "x-splitup-signature",
                splitup_protocol::crypto::to_hex(&alice.sign(&msg)),
            )
    };
    let r = blob(reqwest::Method::PUT, &wrong).body(data.clone()).send().unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(
        !d.path().join("blobs").join(&wrong).exists(),
        "a refused blob is not stored"
    );
    let r = blob(reqwest::Method::PUT, &hash).body(data.clone()).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let back = blob(reqwest::Method::GET, &hash).send().unwrap().bytes().unwrap();
    assert_eq!(back.as_ref(), data.as_slice());
    assert_eq!(get(&l, "/v1/blobs/..%2F..%2Fetc%2Fpasswd").0, 400);

    assert_eq!(
        get(&l, "/v1/status").1["instructions"].as_u64().unwrap(),
        instructions,
        "rejected requests changed the ledger"
    );
    assert_eq!(balance(&l, &alice), alice_before);
    assert_eq!(balance(&l, &bob), 5 * USDC);
}

#[test]
fn acknowledged_instructions_survive_kill_9_and_restart() {
    let d = tempfile::tempdir().unwrap();
    let users: Vec<Keypair> = (0..4).map(|_| keys::generate()).collect();
    let mut expected = Vec::new();
    {
        let l = start(d.path());
        for (i, u) in users.iter().enumerate() {
            faucet(&l, u, 10 + i as u64);
        }
        transfer_ring(&l, &users, 6);
        for u in &users {
            expected.push((balance(&l, u), nonce(&l, u)));
        }
        // `l` is dropped here: SIGKILL, no shutdown path runs.
    }
    let l = start(d.path());
    for (u, want) in users.iter().zip(&expected) {
        assert_eq!((balance(&l, u), nonce(&l, u)), *want, "state after kill -9 and restart");
    }
    // The next nonce continues where the acknowledged ones stopped.
    let tx = SignedTx::sign(
        &users[0],
        expected[0].1,
        Instruction::Transfer {
            to: users[1].pubkey(),
            amount: 1,
        },
    );
    assert_eq!(send(&l, &tx).0, 200);
}

#[test]
fn keys_faucet_and_balance_from_the_command_line() {
    let d = tempfile::tempdir().unwrap();
    let l = start(&d.path().join("data"));
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_splitup"))
            .args(args)
            .current_dir(d.path())
            .output()
            .unwrap()
    };
    let o = run(&["keys", "new", "-o", "me.json"]);
    assert!(o.status.success());
    let pubkey = String::from_utf8(o.stdout).unwrap().trim().to_string();
    assert_eq!(pubkey.len(), 64);
    let o = run(&["keys", "new", "-o", "me.json"]);
    assert_eq!(o.status.code(), Some(1), "refuses to overwrite a key");
    let o = run(&["faucet", "--ledger", &l.url, "--key", "me.json", "--amount", "250"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["balance", "--ledger", &l.url, "--key", "me.json"]);
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains(&pubkey) && out.contains(": 250 USDC"), "{out}");
    let o = run(&["balance", "--ledger", "http://127.0.0.1:9", "--key", "me.json"]);
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("cannot reach the ledger"), "{err}");
}

/// Entries of each kind in the ledger's log.
fn log_rows(data: &Path, kind: &str) -> i64 {
    let db = rusqlite::Connection::open(data.join("ledger.sqlite")).unwrap();
    db.query_row("SELECT COUNT(*) FROM log WHERE kind = ?1", [kind], |r| r.get(0))
        .unwrap()
}

#[test]
fn restarts_load_a_snapshot_and_a_damaged_snapshot_falls_back_to_the_log() {
    let d = tempfile::tempdir().unwrap();
    let users: Vec<Keypair> = (0..3).map(|_| keys::generate()).collect();
    let state = |l: &Ledger| {
        let st = get(l, "/v1/status").1;
        let b: Vec<(u64, u64)> = users.iter().map(|u| (balance(l, u), nonce(l, u))).collect();
        (st["blockhash"].clone(), st["instructions"].clone(), b)
    };
    let before = {
        let l = start_with(d.path(), &["--snapshot-every", "4"]);
        for u in &users {
            faucet(&l, u, 100);
        }
        transfer_ring(&l, &users, 7);
        // Idle: nothing is due, so no tick is applied or logged.
        let ticks = log_rows(d.path(), "tick");
        std::thread::sleep(std::time::Duration::from_millis(2500));
        assert_eq!(log_rows(d.path(), "tick"), ticks, "an idle ledger logged ticks");
        state(&l)
        // SIGKILL on drop.
    };
    let total = log_rows(d.path(), "tx");
    assert_eq!(total, 10);
    {
        let l = start_with(d.path(), &["--snapshot-every", "4"]);
        assert!(
            l.banner.contains("snapshot at log entry 8 + 2 entries replayed"),
            "{}",
            l.banner
        );
        assert_eq!(
            state(&l),
            before,
            "snapshot + tail differs from the state before kill -9"
        );
    }
    // Damage the newest snapshot: the older one is used, and the state is the same.
    let db = rusqlite::Connection::open(d.path().join("ledger.sqlite")).unwrap();
    db.execute(
        "UPDATE snapshots SET body = CAST(substr(body, 1, length(body) - 1) || 'x' AS BLOB) WHERE seq = (SELECT MAX(seq) FROM snapshots)",
        [],
    )
    .unwrap();
    drop(db);
    let l = start_with(d.path(), &["--snapshot-every", "4"]);
    assert!(
        l.banner.contains("snapshot at log entry 4 + 6 entries replayed"),
        "{}",
        l.banner
    );
    assert_eq!(state(&l), before);
}

#[test]
fn work_and_execution_reads_long_poll_until_the_state_changes() {
    let d = tempfile::tempdir().unwrap();
    let l = start(d.path());
    let node = keys::generate();
    faucet(&l, &node, 5000);
    let tx = SignedTx::sign(
        &node,
        nonce(&l, &node),
        Instruction::RegisterNode {
            vram: 1 << 30,
            supports: vec![],
        },
    );
    assert_eq!(send(&l, &tx).0, 200);
    let path = format!("{}/v1/nodes/{}/work", l.url, node.pubkey().hex());
    let version = |r: &reqwest::blocking::Response| -> u64 {
        r.headers()["x-splitup-version"].to_str().unwrap().parse().unwrap()
    };
    let r = http().get(&path).send().unwrap();
    assert_eq!(r.status(), 200);
    let v0 = version(&r);
    // A change 300 ms from now ends the wait, long before its 20 s limit.
    let (url, key) = (l.url.clone(), node.clone());
    let beat = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let n = http()
            .get(format!("{url}/v1/accounts/{}", key.pubkey().hex()))
            .send()
            .unwrap()
            .json::<Value>()
            .unwrap()["nonce"]
            .as_u64()
            .unwrap();
        let tx = SignedTx::sign(&key, n, Instruction::Heartbeat);
        http().post(format!("{url}/v1/tx")).json(&tx).send().unwrap().status()
    });
    let t = std::time::Instant::now();
    let r = http().get(format!("{path}?after={v0}&wait_ms=20000")).send().unwrap();
    assert_eq!(beat.join().unwrap(), 200);
    assert_eq!(r.status(), 200);
    assert!(version(&r) > v0, "answered before the state changed");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "the wait did not end at the change"
    );
    // Without a change the answer comes at the limit, unchanged.
    let v1 = version(&r);
    let r = http().get(format!("{path}?after={v1}&wait_ms=300")).send().unwrap();
    assert_eq!((r.status().as_u16(), version(&r)), (200, v1));
    // Nonsense parameters are a 400.
    let r = http().get(format!("{path}?after=soon")).send().unwrap();
    assert_eq!(r.status(), 400);
}

#[test]
fn a_panic_in_the_rules_fails_only_that_request_and_applies_nothing() {
    let d = tempfile::tempdir().unwrap();
    let poison = 777_777u64;
    let l = start_with(d.path(), &["--test-panic-on-transfer", &poison.to_string()]);
    let (alice, bob) = (keys::generate(), keys::generate());
    faucet(&l, &alice, 100);
    faucet(&l, &bob, 1);
    let before = (balance(&l, &alice), balance(&l, &bob), nonce(&l, &alice));
    let tx = SignedTx::sign(
        &alice,
        before.2,
        Instruction::Transfer {
            to: bob.pubkey(),
            amount: poison,
        },
    );
    let (s, v) = send(&l, &tx);
    assert_eq!(s, 500, "{v}");
    assert_eq!(v["code"], 500, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not applied"), "{v}");
    // The half-applied transfer was rolled back to what the log holds.
    assert_eq!((balance(&l, &alice), balance(&l, &bob), nonce(&l, &alice)), before);
    // The ledger keeps serving: the next instruction (same nonce) is applied.
    transfer_ring(&l, &[alice.clone(), bob.clone()], 2);
    assert_eq!(balance(&l, &alice), before.0);
    assert_eq!(nonce(&l, &alice), before.2 + 1);
    // And a restart agrees with what was acknowledged.
    let (a, b) = (balance(&l, &alice), balance(&l, &bob));
    drop(l);
    let l = start(d.path());
    assert_eq!((balance(&l, &alice), balance(&l, &bob)), (a, b));
}

#[test]
fn a_key_over_its_rate_gets_429_and_nothing_it_sent_is_applied() {
    let d = tempfile::tempdir().unwrap();
    let l = start_with(d.path(), &["--rate-per-key", "1"]);
    let (alice, bob) = (keys::generate(), keys::generate());
    faucet(&l, &alice, 100);
    faucet(&l, &bob, 1);
    let start_nonce = nonce(&l, &alice);
    let (mut ok, mut limited) = (0u64, 0u64);
    for i in 0..12 {
        let tx = SignedTx::sign(
            &alice,
            start_nonce + ok,
            Instruction::Transfer {
                to: bob.pubkey(),
                amount: USDC + i,
            },
        );
        let r = http()
            .post(format!("{}/v1/tx", l.url))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&tx).unwrap())
            .send()
            .unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                assert!(r.headers().contains_key("retry-after"));
                let v: Value = r.json().unwrap();
                assert_eq!(v["code"], 429, "{v}");
                limited += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert!(limited > 0, "12 instructions in a burst of 4 were all accepted");
    // A burst of 4, one of them spent by the faucet grant to alice.
    assert!(ok >= 3, "the burst was refused: {ok} accepted");
    assert_eq!(nonce(&l, &alice), start_nonce + ok, "a refused instruction was applied");
    // Another key is not limited by alice's rate.
    transfer_ring(&l, &[bob.clone(), alice.clone()], 1);
}

/// `splitup ledger openapi` prints what a running ledger serves at
/// `/openapi.json`, which is the checked-in docs/openapi.json.
#[test]
fn ledger_openapi_prints_the_served_description() {
    let d = tempfile::tempdir().unwrap();
    let l = start(&d.path().join("ledger"));
    let out = Command::new(env!("CARGO_BIN_EXE_splitup"))
        .args(["ledger", "openapi"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    let served = http()
        .get(format!("{}/openapi.json", l.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(printed, served);
    let file = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")).unwrap();
    assert_eq!(
        printed, file,
        "docs/openapi.json is stale: UPDATE_OPENAPI=1 cargo test -p splitup-ledger --test openapi"
    );
}
