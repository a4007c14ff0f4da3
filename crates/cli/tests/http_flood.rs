//! The ledger as a real process under a 256 file-descriptor limit, flooded
//! with 300 connections that trickle a request head a byte a second (the
//! slowloris attack that used to take every descriptor): honest requests,
//! reads and signed instructions, on kept-alive and on new connections, are
//! all answered, and the server closes every trickling connection within its
//! header timeout. The only time bounds are generous ones that a hang breaks.

use serde_json::{json, Value};
use splitup_ledger::keys;
use splitup_protocol::{Instruction, Keypair, SignedTx, USDC};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const NOFILE: u64 = 256;
const ATTACKERS: usize = 300;
/// The ledger's header timeout (`http::Limits::default`).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// What the bounds allow on top of it: only a hang exceeds them.
const SLACK: Duration = Duration::from_secs(10);

struct Ledger {
    child: Child,
    url: String,
    addr: SocketAddr,
    /// Everything the ledger wrote to stderr so far.
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for Ledger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `splitup ledger start --dev` with RLIMIT_NOFILE = 256 (soft and hard).
fn start_limited(data: &Path) -> Ledger {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_splitup"));
    cmd.args(["ledger", "start", "--dev", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let r = libc::rlimit {
                rlim_cur: NOFILE as libc::rlim_t,
                rlim_max: NOFILE as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let err = BufReader::new(child.stderr.take().unwrap());
    let lines = stderr.clone();
    std::thread::spawn(move || {
        for l in err.lines().map_while(Result::ok) {
            eprintln!("ledger: {l}");
            lines.lock().unwrap().push(l);
        }
    });
    Ledger {
        child,
        url,
        addr,
        stderr,
    }
}

/// The cap the ledger announced on stderr ("serving at most N connections").
fn announced_cap(l: &Ledger) -> usize {
    let t = Instant::now();
    loop {
        let found = l.stderr.lock().unwrap().iter().find_map(|s| {
            s.split("serving at most ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        });
        if let Some(n) = found {
            return n;
        }
        assert!(t.elapsed() < SLACK, "no cap announced: {:?}", l.stderr.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A connection that sent part of a request head.
struct Trickler {
    s: TcpStream,
    opened: Instant,
}

impl Trickler {
    fn open(addr: SocketAddr) -> Option<Trickler> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
        s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: ledger\r\nX-Slow: ")
            .ok()?;
        s.set_nonblocking(true).ok()?;
        Some(Trickler {
            s,
            opened: Instant::now(),
        })
    }

    /// Sends one more byte; false once the server has closed the connection.
    fn trickle(&mut self) -> bool {
        let mut b = [0u8; 256];
        match self.s.read(&mut b) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            // End of stream, a reset, or an error answer: the server is done with it.
            _ => return false,
        }
        match self.s.write(b"a") {
            Ok(n) => n == 1,
            Err(e) => e.kind() == ErrorKind::WouldBlock,
        }
    }
}

fn client(pooled: bool) -> reqwest::blocking::Client {
    let b = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30));
    let b = if pooled { b } else { b.pool_max_idle_per_host(0) };
    b.build().unwrap()
}

fn get(c: &reqwest::blocking::Client, l: &Ledger, path: &str) -> Value {
    let r = c
        .get(format!("{}{path}", l.url))
        .send()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(r.status().as_u16(), 200, "GET {path}");
    r.json().unwrap()
}

fn post(c: &reqwest::blocking::Client, l: &Ledger, path: &str, body: Vec<u8>) -> Value {
    let r = c
        .post(format!("{}{path}", l.url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = r.status().as_u16();
    let v: Value = r.json().unwrap_or(Value::Null);
    assert_eq!(status, 200, "POST {path}: {v}");
    v
}

fn transfer(c: &reqwest::blocking::Client, l: &Ledger, from: &Keypair, to: &Keypair) {
    let nonce = get(c, l, &format!("/v1/accounts/{}", from.pubkey().hex()))["nonce"]
        .as_u64()
        .unwrap();
    let tx = SignedTx::sign(
        from,
        nonce,
        Instruction::Transfer {
            to: to.pubkey(),
            amount: USDC / 10,
        },
    );
    let v = post(c, l, "/v1/tx", serde_json::to_vec(&tx).unwrap());
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn a_slowloris_flood_under_256_descriptors_leaves_honest_clients_served() {
    let d = tempfile::tempdir().unwrap();
    let l = start_limited(d.path());
    let pid = l.child.id();
    let cap = announced_cap(&l);
    assert!(cap < NOFILE as usize, "cap {cap} under a limit of {NOFILE}");
    eprintln!("cap {cap}, {} descriptors open at start", open_fds(pid));

    let c = client(true);
    let (alice, bob) = (keys::generate(), keys::generate());
    post(
        &c,
        &l,
        "/v1/faucet",
        serde_json::to_vec(&json!({ "to": alice.pubkey().hex(), "amount_usdc": 100 })).unwrap(),
    );

    // Alone, a trickling connection is closed within the header timeout.
    let mut t = Trickler::open(l.addr).expect("connect");
    while t.trickle() {
        assert!(
            t.opened.elapsed() < HEADER_TIMEOUT + SLACK,
            "a trickled head was never cut off"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("a lone trickler was closed after {:?}", t.opened.elapsed());

    // The flood: 300 connections trickling a byte a second, each reopened
    // as soon as the server closes it.
    let stop = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(AtomicUsize::new(0));
    let (lives_tx, lives_rx) = mpsc::channel::<Duration>();
    let flood = {
        let (stop, closed, addr) = (stop.clone(), closed.clone(), l.addr);
        std::thread::spawn(move || {
            let mut conns: Vec<Option<Trickler>> = (0..ATTACKERS).map(|_| None).collect();
            while !stop.load(Ordering::Relaxed) {
                for slot in conns.iter_mut() {
                    match slot {
                        None => *slot = Trickler::open(addr),
                        Some(t) => {
                            if !t.trickle() {
                                let _ = lives_tx.send(t.opened.elapsed());
                                closed.fetch_add(1, Ordering::Relaxed);
                                *slot = None;
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            conns.iter().flatten().map(|t| t.opened.elapsed()).max()
        })
    };
    // Let the flood fill the ledger's connections before measuring.
    std::thread::sleep(Duration::from_secs(2));

    // Honest traffic for 15 s (three header timeouts): reads and signed
    // transfers, on a kept-alive client and on a new connection every time.
    let fresh = client(false);
    let started = Instant::now();
    let (mut served, mut max_fds, mut slowest) = (0, 0, Duration::ZERO);
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(15) {
        let cl = if i % 2 == 0 { &c } else { &fresh };
        let t = Instant::now();
        let status = get(cl, &l, "/v1/status");
        assert!(status["instructions"].as_u64().is_some(), "{status}");
        if i % 3 == 0 {
            transfer(cl, &l, &alice, &bob);
        }
        slowest = slowest.max(t.elapsed());
        max_fds = max_fds.max(open_fds(pid));
        served += 1;
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let oldest_open = flood.join().unwrap();
    let lives: Vec<Duration> = lives_rx.try_iter().collect();
    let longest = lives.iter().max().copied().unwrap_or_default();
    eprintln!(
        "{served} honest rounds served (slowest {slowest:?}) while {} trickling connections were closed (longest lived {longest:?}); at most {max_fds} descriptors open",
        closed.load(Ordering::Relaxed)
    );
    assert!(served > 10, "only {served} honest rounds");
    assert!(slowest < SLACK, "an honest request took {slowest:?}");
    // The server closed the trickling connections, and none outlived the header timeout by much.
    assert!(
        lives.len() >= ATTACKERS,
        "only {} trickling connections closed",
        lives.len()
    );
    assert!(
        longest < HEADER_TIMEOUT + SLACK,
        "a trickling connection lived {longest:?}"
    );
    if let Some(o) = oldest_open {
        assert!(o < HEADER_TIMEOUT + SLACK, "a trickling connection is {o:?} old");
    }
    let transfers = get(&c, &l, &format!("/v1/accounts/{}", alice.pubkey().hex()))["nonce"]
        .as_u64()
        .unwrap();
    assert!(transfers > 0);
    // The reserve held: the ledger never ran out of descriptors.
    let log = l.stderr.lock().unwrap().clone();
    assert!(
        !log.iter()
            .any(|s| s.contains("Too many open files") || s.contains("accepting a connection")),
        "{log:?}"
    );
}
