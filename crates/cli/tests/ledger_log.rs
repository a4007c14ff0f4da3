//! The ledger's log proves itself, with real processes and real SQLite
//! files: a damaged WAL, an altered row, deleted rows and a second ledger on
//! the same directory are refused with a message that says what happened;
//! `kill -9` in the middle of a stream of submits loses nothing acknowledged.

use serde_json::{json, Value};
use splitup_ledger::keys;
use splitup_protocol::{Instruction, Keypair, SignedTx, USDC};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Ledger {
    child: Child,
    url: String,
    /// Kept open, so that the ledger's last line ("ledger stopped") has a reader.
    _stdout: BufReader<ChildStdout>,
}

impl Drop for Ledger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_splitup"));
    c.args(["ledger", "start", "--dev", "--listen", "127.0.0.1:0", "--data"])
        .arg(data);
    c
}

fn start(data: &Path) -> Ledger {
    let mut child = command(data)
        .stdout(Stdio::piped())
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    Ledger {
        child,
        url,
        _stdout: stdout,
    }
}

/// Starts a ledger that must refuse to start: its exit code and stderr.
fn refused(data: &Path) -> (i32, String) {
    let mut child = command(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a ledger started on {} and kept running", data.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    eprintln!("refused start on {}: {err}", data.display());
    let code = out.status.code().unwrap_or_else(|| panic!("killed by a signal: {err}"));
    assert_ne!(code, 0, "a refused start exits non-zero: {err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "a refused ledger printed a banner"
    );
    (code, err)
}

/// SIGTERM, and wait for the clean stop (which checkpoints the WAL).
fn stop(mut l: Ledger) {
    let s = Command::new("kill")
        .args(["-TERM", &l.child.id().to_string()])
        .status()
        .unwrap();
    assert!(s.success());
    let status = l.child.wait().unwrap();
    assert!(status.success(), "clean stop: {status}");
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::new()
}

fn get(l: &Ledger, path: &str) -> Value {
    http().get(format!("{}{path}", l.url)).send().unwrap().json().unwrap()
}

fn account(l: &Ledger, k: &Keypair) -> (u64, u64) {
    let v = get(l, &format!("/v1/accounts/{}", k.pubkey().hex()));
    (v["balance"].as_u64().unwrap(), v["nonce"].as_u64().unwrap())
}

fn faucet(l: &Ledger, k: &Keypair, usdc: u64) {
    let r = http()
        .post(format!("{}/v1/faucet", l.url))
        .json(&json!({ "to": k.pubkey().hex(), "amount_usdc": usdc }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Posts a signed instruction; the HTTP status, or `None` when the ledger did not answer.
fn send(url: &str, tx: &SignedTx) -> Option<u16> {
    http()
        .post(format!("{url}/v1/tx"))
        .json(tx)
        .send()
        .ok()
        .map(|r| r.status().as_u16())
}

/// `n` acknowledged transfers of 1 USDC, each user to the next in a ring.
fn transfer_ring(l: &Ledger, users: &[Keypair], n: usize) {
    for i in 0..n {
        let (from, to) = (&users[i % users.len()], &users[(i + 1) % users.len()]);
        let ix = Instruction::Transfer {
            to: to.pubkey(),
            amount: USDC,
        };
        let tx = SignedTx::sign(from, account(l, from).1, ix);
        assert_eq!(send(&l.url, &tx), Some(200));
    }
}

/// A ledger in `data` with three funded users and `n` transfers; returns
/// the entries in its log (all acknowledged). The ledger is left running.
fn ledger_with_transfers(data: &Path, n: usize) -> (Ledger, i64) {
    let l = start(data);
    let users: Vec<Keypair> = (0..3).map(|_| keys::generate()).collect();
    for u in &users {
        faucet(&l, u, 100);
    }
    transfer_ring(&l, &users, n);
    let entries = get(&l, "/v1/status")["instructions"].as_i64().unwrap();
    (l, entries)
}

fn db(data: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(data.join("ledger.sqlite")).unwrap()
}

fn last_seq(data: &Path) -> i64 {
    db(data)
        .query_row("SELECT MAX(seq) FROM log", [], |r| r.get(0))
        .unwrap()
}

/// "the log ends at entry M but entry N was acknowledged" → (M, N).
fn lost(err: &str) -> (i64, i64) {
    let num = |after: &str| -> i64 {
        let i = err.find(after).unwrap_or_else(|| panic!("{after:?} not in {err}")) + after.len();
        err[i..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(
        err.contains("was acknowledged: the database or its WAL lost entries (damaged or truncated)"),
        "{err}"
    );
    (num("the log ends at entry "), num(" but entry "))
}

#[test]
fn a_flipped_byte_in_the_wal_is_refused_as_lost_entries() {
    let d = tempfile::tempdir().unwrap();
    let (l, acked) = ledger_with_transfers(d.path(), 40);
    drop(l); // SIGKILL: no checkpoint, the acknowledged entries are in the WAL.
    let wal = d.path().join("ledger.sqlite-wal");
    let mut bytes = std::fs::read(&wal).expect("a WAL after kill -9");
    assert!(bytes.len() > 32, "the WAL is empty");
    let page = u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let frames = (bytes.len() - 32) / (24 + page);
    assert!(frames >= 8, "{frames} frames");
    // A byte in the page of the middle frame.
    let at = 32 + frames / 2 * (24 + page) + 24 + page / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(&wal, &bytes).unwrap();

    let (_, err) = refused(d.path());
    let (last, ack) = lost(&err);
    assert_eq!(ack, acked, "{err}");
    assert!(last < ack, "{err}");
    // The refused start wrote nothing: the WAL is as it was, and the next
    // start says the same.
    assert_eq!(std::fs::read(&wal).unwrap(), bytes, "a refused start changed the WAL");
    assert_eq!(refused(d.path()).1, err);
}

#[test]
fn an_altered_row_is_refused_naming_its_entry() {
    // Altered through SQLite: an amount in an instruction, still valid JSON.
    let d = tempfile::tempdir().unwrap();
    let (l, _) = ledger_with_transfers(d.path(), 8);
    stop(l);
    let wal = d.path().join("ledger.sqlite-wal");
    assert!(
        std::fs::metadata(&wal).map(|m| m.len() == 0).unwrap_or(true),
        "the clean stop left the WAL uncheckpointed"
    );
    let c = db(d.path());
    let k: i64 = c
        .query_row(
            "SELECT seq FROM log WHERE body LIKE '%Transfer%' ORDER BY seq LIMIT 1 OFFSET 3",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let changed = c
        .execute(
            "UPDATE log SET body = replace(body, ?1, ?2) WHERE seq = ?3",
            rusqlite::params![format!("\"amount\":{USDC}"), format!("\"amount\":{}", 9 * USDC), k],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let body: String = c
        .query_row("SELECT body FROM log WHERE seq = ?1", [k], |r| r.get(0))
        .unwrap();
    serde_json::from_str::<Value>(&body).expect("still JSON");
    drop(c);
    let (_, err) = refused(d.path());
    assert!(
        err.contains(&format!(
            "entry {k} does not match the hash chain: the log was altered; the last verified entry is {}",
            k - 1
        )),
        "{err}"
    );

    // A byte flipped in the database file itself (SQLite keeps no page
    // checksums, so it reads the altered row as if it were written so).
    let d = tempfile::tempdir().unwrap();
    let (l, _) = ledger_with_transfers(d.path(), 8);
    stop(l);
    let c = db(d.path());
    let (altered, body): (i64, String) = c
        .query_row(
            "SELECT seq, body FROM log WHERE body LIKE '%Transfer%' ORDER BY seq LIMIT 1 OFFSET 4",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    drop(c);
    let file = d.path().join("ledger.sqlite");
    let mut bytes = std::fs::read(&file).unwrap();
    // The row's bytes (and any stale copy in a page's free space): its
    // amount's first digit, '1' → '3'.
    let digit = body.find(&format!("\"amount\":{USDC}")).unwrap() + "\"amount\":".len();
    let hits: Vec<usize> = (0..bytes.len().saturating_sub(body.len()))
        .filter(|&i| bytes[i..i + body.len()] == *body.as_bytes())
        .collect();
    assert!(!hits.is_empty(), "entry {altered} is not in the database file");
    for i in hits {
        bytes[i + digit] ^= 0x02;
    }
    std::fs::write(&file, &bytes).unwrap();
    let (_, err) = refused(d.path());
    assert!(
        err.contains(&format!("entry {altered} does not match the hash chain")),
        "{err}"
    );
}

#[test]
fn deleted_tail_rows_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let (l, acked) = ledger_with_transfers(d.path(), 6);
    drop(l);
    assert_eq!(last_seq(d.path()), acked);
    let c = db(d.path());
    c.execute("DELETE FROM log WHERE seq > ?1", [acked - 3]).unwrap();
    drop(c);
    let (_, err) = refused(d.path());
    assert_eq!(lost(&err), (acked - 3, acked), "{err}");
}

#[test]
fn a_second_ledger_on_the_same_directory_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (l, _) = ledger_with_transfers(d.path(), 2);
    let (_, err) = refused(d.path());
    assert!(
        err.contains(&format!(
            "another ledger is running on {} (lock held on {})",
            d.path().display(),
            d.path().join("ledger.lock").display()
        )),
        "{err}"
    );
    // The first keeps serving, and writing.
    let k = keys::generate();
    faucet(&l, &k, 7);
    assert_eq!(account(&l, &k), (7 * USDC, 0));
    drop(l);
    // Once it is gone, the directory is free.
    let l = start(d.path());
    assert_eq!(account(&l, &k), (7 * USDC, 0));
}

#[test]
fn kill_9_during_a_stream_of_submits_loses_no_acknowledged_instruction() {
    let d = tempfile::tempdir().unwrap();
    let sink = keys::generate();
    let clients: Vec<Keypair> = (0..4).map(|_| keys::generate()).collect();
    let amount = 1000;
    let l = start(d.path());
    for c in &clients {
        faucet(&l, c, 10);
    }
    // The sink exists first: a transfer that opens an account must carry 0.1 USDC.
    faucet(&l, &sink, 1);
    let total = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = clients
        .iter()
        .map(|c| {
            let (c, url, total, to) = (c.clone(), l.url.clone(), total.clone(), sink.pubkey());
            std::thread::spawn(move || {
                // Acknowledged instructions of this client; its nonces are 0..acked.
                let mut acked = 0;
                loop {
                    let tx = SignedTx::sign(&c, acked, Instruction::Transfer { to, amount });
                    match send(&url, &tx) {
                        Some(200) => {
                            acked += 1;
                            total.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(s) => panic!("status {s} while the ledger was up"),
                        None => return acked,
                    }
                }
            })
        })
        .collect();
    let t = Instant::now();
    while total.load(Ordering::SeqCst) < 80 && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(l); // SIGKILL with requests in flight.
    let acked: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(acked.iter().sum::<u64>() >= 80, "{acked:?}");

    let l = start(d.path());
    let mut moved = 0;
    for (c, &a) in clients.iter().zip(&acked) {
        let (balance, nonce) = account(&l, c);
        // Every acknowledged instruction is there; the one in flight may be too.
        assert!(
            nonce == a || nonce == a + 1,
            "acknowledged {a}, nonce after restart {nonce}"
        );
        assert_eq!(balance, 10 * USDC - nonce * amount);
        moved += nonce * amount;
    }
    assert_eq!(account(&l, &sink).0, USDC + moved);
    let entries = get(&l, "/v1/status")["instructions"].as_u64().unwrap();
    drop(l);
    // The chain and the head verify on their own, too.
    let log = splitup_ledger::log::Log::open(&d.path().join("ledger.sqlite")).unwrap();
    assert!(log.last_seq().unwrap() as u64 >= entries);
}
