//! Honest request latency with and without a flood of slow connections.
//!
//! The ledger runs in this process (`server::serve_with`, a development
//! network on a temporary directory). 1,000 honest requests from 4 client
//! threads, half signed transfers (`POST /v1/tx`, each one an fsync'd commit)
//! and half `GET /v1/status`; two threads keep their connection alive, two
//! open a new connection for every request. Measured with no flood, then
//! while 500 connections trickle a request head a byte a second (each
//! reopened as soon as the server closes it), in the same process: three
//! rounds of each, interleaved, after a warm-up of 3,000 requests.
//!
//! Then the same runs against a ledger in a child process under a
//! 256-descriptor limit, where the flood is larger than the connection cap
//! and the server sheds trickling connections to admit honest ones.
//!
//! Run: cargo bench -p splitup-ledger --bench flood

use serde_json::{json, Value};
use splitup_ledger::keys;
use splitup_ledger::server::{serve_with, Config};
use splitup_protocol::{Instruction, Keypair, SignedTx, USDC};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const REQUESTS: usize = 1000;
const ROUNDS: usize = 3;
const WARM_UP: usize = 3000;
const THREADS: usize = 4;
const SLOW: usize = 500;
const CHILD_ENV: &str = "SPLITUP_FLOOD_BENCH_SERVER";

fn config(data: &Path) -> Config {
    Config {
        keys: data.with_extension("operator-keys"),
        data: data.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        challenge_ppm: 80_000,
        dev: true,
        mint_authority: None,
        test_timeouts: false,
        retention_ms: 3_600_000,
        snapshot_every: 1000,
        store: None,
        // The flood is what is measured, not the rate limits: set them out of reach.
        limits: splitup_ledger::limits::Rates {
            per_address: splitup_ledger::limits::Rate {
                per_sec: 1_000_000,
                burst: 1_000_000,
            },
            per_key: splitup_ledger::limits::Rate {
                per_sec: 1_000_000,
                burst: 1_000_000,
            },
        },
        test_panic_on_transfer: None,
        test_unchecked_registrations: false,
        worker: None,
        upload_quota_node: splitup_ledger::blobs::UPLOAD_QUOTA_NODE,
        upload_quota_account: splitup_ledger::blobs::UPLOAD_QUOTA_ACCOUNT,
        orphan_ttl_ms: 3_600_000,
    }
}

/// Runs a ledger on `data` in this process; returns its address.
fn start_in_process(data: &Path) -> SocketAddr {
    let cfg = config(data);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(serve_with(cfg, move |addr| {
            let _ = tx.send(addr);
        }))
        .unwrap();
    });
    rx.recv().expect("the ledger did not start")
}

struct ChildLedger(Child);

impl Drop for ChildLedger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a ledger on `data` in a child process (this program again) limited
/// to `nofile` descriptors; returns it and its address.
fn start_child(data: &Path, nofile: u64) -> (ChildLedger, SocketAddr) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(CHILD_ENV, data).stdout(Stdio::piped()).stderr(Stdio::inherit());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let r = libc::rlimit {
                rlim_cur: nofile as libc::rlim_t,
                rlim_max: nofile as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = ChildLedger(cmd.spawn().unwrap());
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    std::thread::spawn(move || for _ in out.lines() {});
    // The start-up line names the address.
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (child, addr)
}

/// A connection that sent part of a request head.
struct Trickler {
    s: TcpStream,
}

impl Trickler {
    fn open(addr: SocketAddr) -> Option<Trickler> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
        s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: ledger\r\nX-Slow: ")
            .ok()?;
        s.set_nonblocking(true).ok()?;
        Some(Trickler { s })
    }

    /// Sends one more byte; false once the server has closed the connection.
    fn trickle(&mut self) -> bool {
        let mut b = [0u8; 256];
        match self.s.read(&mut b) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            _ => return false,
        }
        match self.s.write(b"a") {
            Ok(n) => n == 1,
            Err(e) => e.kind() == ErrorKind::WouldBlock,
        }
    }
}

/// `n` slow connections held open (reopened when closed) until dropped.
struct Flood {
    stop: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flood {
    fn start(addr: SocketAddr, n: usize) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, open, closed) = (stop.clone(), open.clone(), closed.clone());
            std::thread::spawn(move || {
                let mut conns: Vec<Option<Trickler>> = (0..n).map(|_| None).collect();
                while !stop.load(Ordering::Relaxed) {
                    for slot in conns.iter_mut() {
                        match slot {
                            None => *slot = Trickler::open(addr),
                            Some(t) => {
                                if !t.trickle() {
                                    closed.fetch_add(1, Ordering::Relaxed);
                                    *slot = None;
                                }
                            }
                        }
                    }
                    open.store(conns.iter().flatten().count(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        };
        Flood {
            stop,
            open,
            closed,
            thread: Some(thread),
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Honest {
    url: String,
    /// One funded key per client thread (their nonces do not interfere).
    keys: Vec<Keypair>,
    sink: Keypair,
}

impl Honest {
    fn new(addr: SocketAddr) -> Honest {
        let url = format!("http://{addr}");
        let c = reqwest::blocking::Client::new();
        let keys: Vec<Keypair> = (0..THREADS).map(|_| keys::generate()).collect();
        for k in &keys {
            let r = c
                .post(format!("{url}/v1/faucet"))
                .json(&json!({ "to": k.pubkey().hex(), "amount_usdc": 1000 }))
                .send()
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
        }
        Honest {
            url,
            keys,
            sink: keys::generate(),
        }
    }

    fn nonce(&self, c: &reqwest::blocking::Client, k: &Keypair) -> u64 {
        let v: Value = c
            .get(format!("{}/v1/accounts/{}", self.url, k.pubkey().hex()))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["nonce"].as_u64().unwrap()
    }

    /// `n` requests from the client threads; every latency, in ms.
    fn run(&self, n: usize) -> Vec<f64> {
        let per = n / THREADS;
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .keys
                .iter()
                .enumerate()
                .map(|(t, key)| {
                    s.spawn(move || {
                        let b = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60));
                        // Threads 0 and 1 keep their connection; 2 and 3 open one per request.
                        let c = if t < 2 { b } else { b.pool_max_idle_per_host(0) }.build().unwrap();
                        let mut nonce = self.nonce(&c, key);
                        let mut lat = Vec::with_capacity(per);
                        for i in 0..per {
                            let t0 = Instant::now();
                            if i % 2 == 0 {
                                let tx = SignedTx::sign(
                                    key,
                                    nonce,
                                    Instruction::Transfer {
                                        to: self.sink.pubkey(),
                                        amount: USDC / 10,
                                    },
                                );
                                let r = c
                                    .post(format!("{}/v1/tx", self.url))
                                    .header("content-type", "application/json")
                                    .body(serde_json::to_vec(&tx).unwrap())
                                    .send()
                                    .unwrap();
                                assert_eq!(r.status().as_u16(), 200, "{:?}", r.text());
                                let _ = r.bytes().unwrap();
                                nonce += 1;
                            } else {
                                let r = c.get(format!("{}/v1/status", self.url)).send().unwrap();
                                assert_eq!(r.status().as_u16(), 200);
                                let _ = r.bytes().unwrap();
                            }
                            lat.push(t0.elapsed().as_secs_f64() * 1e3);
                        }
                        lat
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        })
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Measures without, then with, a flood of `SLOW` connections against
/// `addr`, `ROUNDS` times interleaved; prints each round, then the pooled
/// p50 and p99 of both and their ratio.
fn compare(what: &str, addr: SocketAddr) {
    let honest = Honest::new(addr);
    // Warm-up, long enough for SQLite's write-ahead log to reach its steady
    // size (a growing log makes each commit's fsync dearer).
    honest.run(WARM_UP);
    let (mut base, mut flooded) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let t = Instant::now();
        let mut b = honest.run(REQUESTS);
        println!(
            "{what}, round {round}, no flood: {} requests in {:.2} s, p50 {:.2} ms, p99 {:.2} ms",
            b.len(),
            t.elapsed().as_secs_f64(),
            percentile(&mut b, 0.5),
            percentile(&mut b, 0.99)
        );
        base.extend(b);
        let flood = Flood::start(addr, SLOW);
        let held = Instant::now();
        // Let the slow connections fill in, and the first ones reach the header timeout.
        while flood.open.load(Ordering::Relaxed) < SLOW * 9 / 10 && held.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(6));
        let t = Instant::now();
        let mut f = honest.run(REQUESTS);
        let run_s = t.elapsed().as_secs_f64();
        // The flood's view lags by up to its 1 s pass.
        std::thread::sleep(Duration::from_millis(1100));
        println!(
            "{what}, round {round}, {SLOW} slow connections: {} requests in {run_s:.2} s, p50 {:.2} ms, p99 {:.2} ms \
             (the server closed {} slow connections in the {:.0} s the flood lasted)",
            f.len(),
            percentile(&mut f, 0.5),
            percentile(&mut f, 0.99),
            flood.closed.load(Ordering::Relaxed),
            held.elapsed().as_secs_f64()
        );
        flooded.extend(f);
        drop(flood);
        // The server notices the flood's connections are gone.
        std::thread::sleep(Duration::from_secs(1));
    }
    let b = (percentile(&mut base, 0.5), percentile(&mut base, 0.99));
    let f = (percentile(&mut flooded, 0.5), percentile(&mut flooded, 0.99));
    println!(
        "{what}: no flood p50 {:.2} ms, p99 {:.2} ms; {SLOW} slow connections p50 {:.2} ms, p99 {:.2} ms; \
         ratio p50 {:.2}x, p99 {:.2}x ({} requests each)",
        b.0,
        b.1,
        f.0,
        f.1,
        f.0 / b.0,
        f.1 / b.1,
        base.len()
    );
}

fn main() {
    if let Some(data) = std::env::var_os(CHILD_ENV) {
        // The child: a ledger under the descriptor limit its parent set.
        let cfg = config(Path::new(&data));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(serve_with(cfg, |_| {})).unwrap();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let addr = start_in_process(&dir.path().join("in-process"));
    compare("in process", addr);
    let (_child, addr) = start_child(&dir.path().join("child"), 256);
    compare("child process, 256 descriptors", addr);
}
