//! The durable instruction log: every accepted signed instruction and every
//! tick that changed something, in order, in SQLite (WAL, synchronous=FULL);
//! and snapshots of the state, each naming the last log entry it includes.
//! On start the state is the newest readable snapshot plus the entries after
//! it, replayed through the deterministic state machine (the whole log when
//! there is no readable snapshot). The log itself is never truncated (but by
//! the recovery function [`Log::truncate_to_verified`], which no command
//! calls): it is the audit trail every snapshot can be checked against.
//!
//! The log proves itself:
//! - **Hash chain.** Each row carries `chain = BLAKE3(previous chain ‖ seq ‖
//!   kind ‖ now ‖ body)` (see [`next_chain`] for the exact encoding). The
//!   chain before entry 1 is derived from the stored genesis JSON
//!   ([`genesis_chain`]), so the genesis parameters are covered too. A
//!   snapshot records the chain value of the entry it includes.
//! - **Head file** (`ledger.head`, see [`crate::head`]): the last
//!   acknowledged entry's number and chain value, outside SQLite, fsynced
//!   after each commit and before [`Log::append`] returns. SQLite drops
//!   every WAL frame after a damaged one, consistently; only a witness
//!   outside the database can tell that entries are missing.
//! - **Lock** (`ledger.lock`): an exclusive advisory lock held for the
//!   `Log`'s lifetime; a second ledger on the same directory is refused.
//!
//! [`Log::open`] verifies the whole chain and checks that the log ends at the
//! head (or one entry after it: the process stopped between the commit and
//! the head write, and the head is brought forward). Until that succeeds the
//! database is only read, and closing it does not checkpoint, so a refused
//! start leaves the database and its WAL as they were.

use crate::head::{HeadFault, HeadFile};
use rusqlite::config::DbConfig;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};
use splitup_protocol::{Millis, SignedTx};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

pub use crate::head::Hash;

pub enum Entry {
    Tx { now: Millis, tx: Box<SignedTx> },
    Tick { now: Millis },
}

/// The chain value "before entry 1": BLAKE3 in key-derivation mode with the
/// context `"splitup ledger log v1 genesis"` over the stored genesis JSON
/// (the `meta` row `genesis`, byte for byte).
pub fn genesis_chain(genesis_json: &str) -> Hash {
    blake3::derive_key("splitup ledger log v1 genesis", genesis_json.as_bytes())
}

/// The chain value of entry `seq`: BLAKE3 of the previous entry's chain
/// (32 bytes) ‖ seq (i64 LE) ‖ kind length (u64 LE) ‖ kind ‖ now (i64 LE) ‖
/// body, where body is `0x00` for none and `0x01 ‖ length (u64 LE) ‖ bytes`
/// otherwise.
pub fn next_chain(prev: &Hash, seq: i64, kind: &[u8], now: i64, body: Option<&[u8]>) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(prev);
    h.update(&seq.to_le_bytes());
    h.update(&(kind.len() as u64).to_le_bytes());
    h.update(kind);
    h.update(&now.to_le_bytes());
    match body {
        None => {
            h.update(&[0]);
        }
        Some(b) => {
            h.update(&[1]);
            h.update(&(b.len() as u64).to_le_bytes());
            h.update(b);
        }
    }
    *h.finalize().as_bytes()
}

pub struct Log {
    // Field order is drop order: the database closes (and checkpoints)
    // while the lock is still held.
    db: Connection,
    head: HeadFile,
    /// The last entry in the log (0: none) and its chain value (meaningless for 0).
    last: i64,
    last_chain: Hash,
    _lock: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("ledger database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("ledger database is corrupt at entry {seq}: {msg}")]
    Corrupt { seq: i64, msg: String },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another ledger is running on {} (lock held on {})", dir.display(), lock.display())]
    Locked { dir: PathBuf, lock: PathBuf },
    #[error("{} was written by an earlier version of splitup whose log has no hash chain: its {entries} entries cannot be verified, so this version does not start on it (run the earlier version on this directory, or start a new ledger in an empty one)", db.display())]
    Unchained { db: PathBuf, entries: i64 },
    #[error("the log ends at entry {last} but entry {acked} was acknowledged: the database or its WAL lost entries (damaged or truncated)")]
    Lost { last: i64, acked: i64 },
    #[error("entry {seq} does not match the hash chain: the log was altered; the last verified entry is {}", seq - 1)]
    Altered { seq: i64 },
    #[error("the log has entry {found} where entry {expected} belongs: the log was altered; the last verified entry is {}", expected - 1)]
    Gap { expected: i64, found: i64 },
    #[error("the log has entries but no stored genesis to start its hash chain from: the database was altered")]
    NoGenesis,
    #[error("the head file {} is missing but the log has {entries} entries: it records the last acknowledged entry, and without it lost entries cannot be detected (if the database was restored from a copy, restore its ledger.head with it)", path.display())]
    HeadMissing { path: PathBuf, entries: i64 },
    #[error("the head file {} is damaged ({why}): it records the last acknowledged entry, and without it lost entries cannot be detected", path.display())]
    HeadDamaged { path: PathBuf, why: String },
    #[error("the log goes on to entry {last} but the head file {} names entry {head} as the last acknowledged one: the head file is stale (restored from an older copy?) or belongs to another ledger", path.display())]
    HeadBehind { path: PathBuf, head: i64, last: i64 },
    #[error("entry {seq} does not match the chain value the head file {} recorded when it was acknowledged: the log was rewritten, or the head file belongs to another ledger", path.display())]
    HeadMismatch { path: PathBuf, seq: i64 },
}

fn head_error(path: &Path, f: HeadFault) -> LogError {
    match f {
        HeadFault::Io(what, source) => LogError::Io {
            what,
            path: path.to_path_buf(),
            source,
        },
        HeadFault::Damaged(why) => LogError::HeadDamaged {
            path: path.to_path_buf(),
            why,
        },
    }
}

/// What [`Log::truncate_to_verified`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Entries 1..=kept verified and were kept.
    pub kept: i64,
    /// Entries deleted after `kept` (they did not verify, or followed one that did not).
    pub removed: usize,
    /// The last acknowledged entry the head file named, when it was readable:
    /// entries `kept+1..=acknowledged` were acknowledged and are gone.
    pub acknowledged: Option<i64>,
}

/// The files next to the database `ledger.sqlite`: `ledger.head` and `ledger.lock`.
struct Files {
    dir: PathBuf,
    head: PathBuf,
    lock: PathBuf,
}

impl Files {
    fn of(db: &Path) -> Files {
        let dir = match db.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Files {
            dir,
            head: db.with_extension("head"),
            lock: db.with_extension("lock"),
        }
    }

    /// Takes the directory's exclusive lock; it lasts as long as the returned file.
    fn lock(&self) -> Result<File, LogError> {
        let io = |what| {
            let path = self.lock.clone();
            move |source| LogError::Io { what, path, source }
        };
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(io("cannot open the lock file"))?;
        match f.try_lock() {
            Ok(()) => Ok(f),
            Err(TryLockError::WouldBlock) => Err(LogError::Locked {
                dir: self.dir.clone(),
                lock: self.lock.clone(),
            }),
            Err(TryLockError::Error(e)) => Err(io("cannot lock")(e)),
        }
    }
}

/// A log row as stored; `None` fields did not have the type the log writes.
struct Raw<'a> {
    kind: &'a [u8],
    now: i64,
    body: Option<&'a [u8]>,
    chain: &'a [u8],
}

fn raw<'a>(r: &'a rusqlite::Row<'_>) -> Result<(i64, Option<Raw<'a>>), LogError> {
    let seq: i64 = r.get(0)?;
    let kind = match r.get_ref(1)? {
        ValueRef::Text(t) => t,
        _ => return Ok((seq, None)),
    };
    let now = match r.get_ref(2)? {
        ValueRef::Integer(n) => n,
        _ => return Ok((seq, None)),
    };
    let body = match r.get_ref(3)? {
        ValueRef::Null => None,
        ValueRef::Text(t) => Some(t),
        _ => return Ok((seq, None)),
    };
    let chain = match r.get_ref(4)? {
        ValueRef::Blob(b) => b,
        _ => return Ok((seq, None)),
    };
    Ok((seq, Some(Raw { kind, now, body, chain })))
}

/// Walks the entries after `after` (whose chain value is `prev`) in order,
/// checking that they are numbered consecutively and that each one's chain
/// value is its predecessor's hashed with its content; calls `f` with each
/// verified entry and its chain value. Returns the last entry and its chain value.
fn walk(
    db: &Connection,
    after: i64,
    mut prev: Hash,
    mut f: impl FnMut(i64, &Raw, &Hash) -> Result<(), LogError>,
) -> Result<(i64, Hash), LogError> {
    let mut st = db.prepare("SELECT seq, kind, now, body, chain FROM log WHERE seq > ?1 ORDER BY seq")?;
    let mut rows = st.query(params![after])?;
    let mut last = after;
    while let Some(r) = rows.next()? {
        let (seq, e) = raw(r)?;
        if seq != last + 1 {
            return Err(LogError::Gap {
                expected: last + 1,
                found: seq,
            });
        }
        let Some(e) = e else {
            return Err(LogError::Altered { seq });
        };
        let chain = next_chain(&prev, seq, e.kind, e.now, e.body);
        if e.chain != chain {
            return Err(LogError::Altered { seq });
        }
        f(seq, &e, &chain)?;
        prev = chain;
        last = seq;
    }
    Ok((last, prev))
}

fn table_columns(db: &Connection, table: &str) -> Result<Vec<String>, LogError> {
    let mut st = db.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let cols = st.query_map(params![table], |r| r.get(0))?;
    Ok(cols.collect::<Result<_, _>>()?)
}

/// Opens the database without writing to it; closing it does not checkpoint
/// until [`ready`] (a refused start leaves the database and its WAL as they were).
fn connect(path: &Path) -> Result<Connection, LogError> {
    let db = Connection::open(path)?;
    db.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "FULL")?;
    Ok(db)
}

fn ready(db: &Connection) -> Result<(), LogError> {
    db.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, false)?;
    Ok(())
}

/// Creates the tables of a new database, or brings an old one's empty log
/// up to date; an old log with entries (no chain to verify them by) is refused.
/// `acked` is the head file's entry: a database without a log while entries
/// were acknowledged lost them all, and is left untouched.
fn schema(db: &Connection, path: &Path, acked: Option<i64>) -> Result<(), LogError> {
    let log = table_columns(db, "log")?;
    if log.is_empty() {
        if let Some(acked) = acked.filter(|&a| a > 0) {
            return Err(LogError::Lost { last: 0, acked });
        }
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE log (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, now INTEGER NOT NULL, body TEXT, chain BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS snapshots (seq INTEGER PRIMARY KEY, now INTEGER NOT NULL, body BLOB NOT NULL, chain BLOB NOT NULL);",
        )?;
    } else if !log.iter().any(|c| c == "chain") {
        let entries: i64 = db.query_row("SELECT COUNT(*) FROM log", [], |r| r.get(0))?;
        if entries > 0 {
            return Err(LogError::Unchained {
                db: path.to_path_buf(),
                entries,
            });
        }
        db.execute_batch("ALTER TABLE log ADD COLUMN chain BLOB")?;
    }
    if table_columns(db, "meta")?.is_empty() {
        db.execute_batch("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")?;
    }
    let snapshots = table_columns(db, "snapshots")?;
    if snapshots.is_empty() {
        db.execute_batch(
            "CREATE TABLE snapshots (seq INTEGER PRIMARY KEY, now INTEGER NOT NULL, body BLOB NOT NULL, chain BLOB NOT NULL)",
        )?;
    } else if !snapshots.iter().any(|c| c == "chain") {
        // Snapshots of an old, empty log: without a chain value they are skipped.
        db.execute_batch("ALTER TABLE snapshots ADD COLUMN chain BLOB")?;
    }
    Ok(())
}

fn stored_genesis(db: &Connection) -> Result<Option<String>, LogError> {
    Ok(db
        .query_row("SELECT value FROM meta WHERE key = 'genesis'", [], |r| r.get(0))
        .optional()?)
}

/// The chain value entry 1 follows, when the log has entries.
fn start_chain(db: &Connection) -> Result<Hash, LogError> {
    let any: bool = db.query_row("SELECT EXISTS (SELECT 1 FROM log)", [], |r| r.get(0))?;
    match stored_genesis(db)? {
        Some(g) => Ok(genesis_chain(&g)),
        None if any => Err(LogError::NoGenesis),
        None => Ok([0; 32]),
    }
}

impl Log {
    /// Opens the log in `path` (`DATA/ledger.sqlite`; the head and lock files
    /// are `DATA/ledger.head` and `DATA/ledger.lock`): takes the lock,
    /// verifies the hash chain of every entry, and checks the log against the
    /// head file (created, naming entry 0, with a new database).
    pub fn open(path: &Path) -> Result<Log, LogError> {
        let files = Files::of(path);
        let lock = files.lock()?;
        let recorded = HeadFile::read(&files.head).map_err(|f| head_error(&files.head, f))?;
        let db = connect(path)?;
        schema(&db, path, recorded.map(|(seq, _)| seq))?;
        let start = start_chain(&db)?;
        let head_seq = recorded.map(|(seq, _)| seq);
        let mut at_head = None;
        let (last, last_chain) = walk(&db, 0, start, |seq, _, chain| {
            if Some(seq) == head_seq {
                at_head = Some(*chain);
            }
            Ok(())
        })?;
        let head = match recorded {
            None if last == 0 => HeadFile::create(&files.head, 0, &[0; 32]),
            None => {
                return Err(LogError::HeadMissing {
                    path: files.head,
                    entries: last,
                })
            }
            Some((acked, chain)) => {
                if last < acked {
                    return Err(LogError::Lost { last, acked });
                }
                if last > acked + 1 {
                    return Err(LogError::HeadBehind {
                        path: files.head,
                        head: acked,
                        last,
                    });
                }
                if acked > 0 && at_head != Some(chain) {
                    return Err(LogError::HeadMismatch {
                        path: files.head,
                        seq: acked,
                    });
                }
                HeadFile::open(&files.head).and_then(|h| {
                    if last == acked + 1 {
                        // Committed, then stopped before the head was written
                        // (so never acknowledged): the head catches up.
                        h.write(last, &last_chain)?;
                    }
                    Ok(h)
                })
            }
        }
        .map_err(|f| head_error(&files.head, f))?;
        ready(&db)?;
        Ok(Log {
            db,
            head,
            last,
            last_chain,
            _lock: lock,
        })
    }

    /// Recovery, for an operator who accepts losing what does not verify:
    /// keeps the entries from 1 up to the last one whose hash chain verifies
    /// (from the stored genesis), deletes every entry and snapshot after it,
    /// and rewrites the head file to name it. It trusts the genesis and the
    /// chain, not the head file: acknowledged entries after the kept ones
    /// are gone for good (`Recovery::acknowledged` says up to where). Takes
    /// the directory's lock, so it refuses while a ledger runs on it.
    pub fn truncate_to_verified(path: &Path) -> Result<Recovery, LogError> {
        let files = Files::of(path);
        let _lock = files.lock()?;
        let acknowledged = HeadFile::read(&files.head).ok().flatten().map(|(seq, _)| seq);
        let mut db = connect(path)?;
        schema(&db, path, None)?;
        let start = start_chain(&db)?;
        let mut ok = (0, start);
        match walk(&db, 0, start, |seq, _, chain| {
            ok = (seq, *chain);
            Ok(())
        }) {
            Ok(_) | Err(LogError::Altered { .. }) | Err(LogError::Gap { .. }) => {}
            Err(e) => return Err(e),
        }
        let (kept, chain) = ok;
        let t = db.transaction()?;
        let removed = t.execute("DELETE FROM log WHERE seq > ?1", params![kept])?;
        t.execute("DELETE FROM snapshots WHERE seq > ?1", params![kept])?;
        t.commit()?;
        HeadFile::reset(&files.head, kept, &chain).map_err(|f| head_error(&files.head, f))?;
        ready(&db)?;
        Ok(Recovery {
            kept,
            removed,
            acknowledged,
        })
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, LogError> {
        let mut st = self.db.prepare("SELECT value FROM meta WHERE key = ?1")?;
        let mut rows = st.query(params![key])?;
        Ok(match rows.next()? {
            Some(r) => Some(r.get(0)?),
            None => None,
        })
    }

    /// Sets a meta value. The `genesis` value starts the hash chain: it is
    /// written once, before the first entry; changing it later makes the log
    /// fail verification at entry 1.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), LogError> {
        self.db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            params![key, value],
        )?;
        Ok(())
    }

    /// The chain value of entry `seq` (for 0: the one derived from the genesis).
    fn chain_at(&self, seq: i64) -> Result<Hash, LogError> {
        if seq == 0 {
            return match stored_genesis(&self.db)? {
                Some(g) => Ok(genesis_chain(&g)),
                None => Err(LogError::NoGenesis),
            };
        }
        if seq == self.last {
            return Ok(self.last_chain);
        }
        let stored: Option<Vec<u8>> = self
            .db
            .query_row("SELECT chain FROM log WHERE seq = ?1", params![seq], |r| r.get(0))
            .optional()?;
        match stored {
            None => Err(LogError::Corrupt {
                seq,
                msg: "no such entry".into(),
            }),
            Some(c) => c.try_into().map_err(|_| LogError::Altered { seq }),
        }
    }

    /// Appends and commits, then records the entry in the head file; the
    /// call returns after both are durable, so the entry can be acknowledged.
    /// An error after the commit leaves the head one entry behind, which the
    /// next [`Log::open`] repairs; the caller must not go on appending.
    pub fn append(&mut self, e: &Entry) -> Result<i64, LogError> {
        let seq = self.commit(e)?;
        self.witness()?;
        Ok(seq)
    }

    /// The SQLite half of `append`: the row, with its chain value, committed.
    fn commit(&mut self, e: &Entry) -> Result<i64, LogError> {
        let seq = self.last + 1;
        let prev = if self.last == 0 {
            self.chain_at(0)?
        } else {
            self.last_chain
        };
        let (kind, now, body) = match e {
            Entry::Tx { now, tx } => (
                "tx",
                *now as i64,
                Some(serde_json::to_string(tx).expect("transactions serialise")),
            ),
            Entry::Tick { now } => ("tick", *now as i64, None),
        };
        let chain = next_chain(&prev, seq, kind.as_bytes(), now, body.as_deref().map(str::as_bytes));
        self.db.execute(
            "INSERT INTO log (seq, kind, now, body, chain) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![seq, kind, now, body, &chain[..]],
        )?;
        self.last = seq;
        self.last_chain = chain;
        Ok(seq)
    }

    /// The head file half of `append`: the last entry recorded and fsynced.
    fn witness(&self) -> Result<(), LogError> {
        self.head
            .write(self.last, &self.last_chain)
            .map_err(|f| head_error(&self.head.path, f))
    }

    /// Stores a snapshot of the state after log entry `seq` with that
    /// entry's chain value, keeping the two newest.
    pub fn save_snapshot(&self, seq: i64, now: Millis, body: &[u8]) -> Result<(), LogError> {
        let chain = self.chain_at(seq)?;
        self.db.execute(
            "INSERT OR REPLACE INTO snapshots (seq, now, body, chain) VALUES (?1, ?2, ?3, ?4)",
            params![seq, now as i64, body, &chain[..]],
        )?;
        self.db.execute(
            "DELETE FROM snapshots WHERE seq NOT IN (SELECT seq FROM snapshots ORDER BY seq DESC LIMIT 2)",
            [],
        )?;
        Ok(())
    }

    /// Snapshots, newest first: (last log entry included, clock, bytes). A
    /// snapshot whose recorded chain value is not that of its entry in this
    /// log (or that names an entry past the log's end) is reported on
    /// stderr and left out: the log, which verified, is the truth.
    pub fn snapshots(&self) -> Result<Vec<(i64, Millis, Vec<u8>)>, LogError> {
        let mut st = self
            .db
            .prepare("SELECT seq, now, body, chain FROM snapshots ORDER BY seq DESC")?;
        let mut rows = st.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let (ValueRef::Integer(now), ValueRef::Blob(body), chain) = (r.get_ref(1)?, r.get_ref(2)?, r.get_ref(3)?)
            else {
                tracing::warn!("snapshot at log entry {seq} is not in the stored form; skipped");
                continue;
            };
            if seq < 0 || seq > self.last {
                tracing::warn!(
                    "snapshot at log entry {seq} is past the log's last entry {}; skipped",
                    self.last
                );
                continue;
            }
            match self.chain_at(seq) {
                Ok(c) if matches!(chain, ValueRef::Blob(b) if b == c) => out.push((seq, now as Millis, body.to_vec())),
                Ok(_) => tracing::warn!(
                    "snapshot at log entry {seq} does not match the log's hash chain at that entry; skipped"
                ),
                Err(e) => tracing::warn!("snapshot at log entry {seq}: {e}; skipped"),
            }
        }
        Ok(out)
    }

    /// The last entry's sequence number (0 for an empty log).
    pub fn last_seq(&self) -> Result<i64, LogError> {
        Ok(self.last)
    }

    /// Replays the entries after `after` in order, checking the hash chain
    /// again as it reads them; returns how many.
    pub fn replay(&self, after: i64, mut f: impl FnMut(i64, Entry) -> Result<(), String>) -> Result<u64, LogError> {
        let prev = self.chain_at(after)?;
        let mut n = 0;
        let (last, _) = walk(&self.db, after, prev, |seq, e, _| {
            let now = e.now as Millis;
            let entry = match e.kind {
                b"tx" => {
                    let Some(body) = e.body else {
                        return Err(LogError::Corrupt {
                            seq,
                            msg: "an instruction entry without its instruction".into(),
                        });
                    };
                    let tx = serde_json::from_slice(body).map_err(|e| LogError::Corrupt {
                        seq,
                        msg: e.to_string(),
                    })?;
                    Entry::Tx { now, tx: Box::new(tx) }
                }
                b"tick" => Entry::Tick { now },
                other => {
                    return Err(LogError::Corrupt {
                        seq,
                        msg: format!("unknown entry kind {:?}", String::from_utf8_lossy(other)),
                    })
                }
            };
            f(seq, entry).map_err(|msg| LogError::Corrupt { seq, msg })?;
            n += 1;
            Ok(())
        })?;
        if last != self.last {
            return Err(LogError::Lost { last, acked: self.last });
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use splitup_protocol::{Instruction, Keypair};

    const GENESIS: &str = "{\"test\": \"genesis\"}";

    fn db_path(d: &tempfile::TempDir) -> PathBuf {
        d.path().join("ledger.sqlite")
    }

    fn tx(k: &Keypair, nonce: u64, amount: u64) -> Entry {
        Entry::Tx {
            now: 1000 + nonce,
            tx: Box::new(SignedTx::sign(
                k,
                nonce,
                Instruction::Transfer { to: k.pubkey(), amount },
            )),
        }
    }

    /// A log of `n` entries (instructions, every third a tick), closed.
    fn written(n: u64) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let mut log = Log::open(&db_path(&d)).unwrap();
        log.set_meta("genesis", GENESIS).unwrap();
        let k = crate::keys::generate();
        for i in 0..n {
            let e = if i % 3 == 2 {
                Entry::Tick { now: 5000 + i }
            } else {
                tx(&k, i, 7)
            };
            assert_eq!(log.append(&e).unwrap(), i as i64 + 1);
        }
        d
    }

    fn sql(d: &tempfile::TempDir, s: &str) {
        let db = Connection::open(db_path(d)).unwrap();
        db.execute_batch(s).unwrap();
    }

    fn replayed(log: &Log) -> u64 {
        log.replay(0, |_, _| Ok(())).unwrap()
    }

    #[test]
    fn a_written_log_verifies_on_reopen_and_goes_on() {
        let d = written(10);
        let mut log = Log::open(&db_path(&d)).unwrap();
        assert_eq!(log.last_seq().unwrap(), 10);
        assert_eq!(replayed(&log), 10);
        assert_eq!(log.append(&Entry::Tick { now: 9 }).unwrap(), 11);
        drop(log);
        let log = Log::open(&db_path(&d)).unwrap();
        assert_eq!(log.last_seq().unwrap(), 11);
        assert_eq!(
            HeadFile::read(&d.path().join("ledger.head")).unwrap().map(|h| h.0),
            Some(11)
        );
    }

    #[test]
    fn an_altered_body_is_refused_naming_its_entry() {
        let d = written(6);
        sql(
            &d,
            "UPDATE log SET body = replace(body, '\"amount\":7', '\"amount\":8') WHERE seq = 4",
        );
        let e = Log::open(&db_path(&d)).err().unwrap();
        assert!(matches!(e, LogError::Altered { seq: 4 }), "{e}");
        assert_eq!(
            e.to_string(),
            "entry 4 does not match the hash chain: the log was altered; the last verified entry is 3"
        );
    }

    #[test]
    fn altered_kind_clock_type_or_chain_are_refused() {
        for (change, seq) in [
            ("UPDATE log SET kind = 'tick', body = NULL WHERE seq = 2", 2),
            ("UPDATE log SET now = now + 1 WHERE seq = 3", 3),
            ("UPDATE log SET body = CAST(body AS BLOB) WHERE seq = 5", 5),
            ("UPDATE log SET chain = zeroblob(32) WHERE seq = 1", 1),
        ] {
            let d = written(6);
            sql(&d, change);
            let e = Log::open(&db_path(&d)).err().unwrap();
            assert!(matches!(e, LogError::Altered { seq: s } if s == seq), "{change}: {e}");
        }
    }

    #[test]
    fn an_altered_genesis_breaks_the_chain_at_entry_1() {
        let d = written(3);
        sql(
            &d,
            "UPDATE meta SET value = '{\"test\": \"other\"}' WHERE key = 'genesis'",
        );
        assert!(matches!(Log::open(&db_path(&d)), Err(LogError::Altered { seq: 1 })));
        sql(&d, "DELETE FROM meta");
        assert!(matches!(Log::open(&db_path(&d)), Err(LogError::NoGenesis)));
    }

    #[test]
    fn deleted_tail_entries_are_lost_entries() {
        let d = written(8);
        sql(&d, "DELETE FROM log WHERE seq > 5");
        let e = Log::open(&db_path(&d)).err().unwrap();
        assert!(matches!(e, LogError::Lost { last: 5, acked: 8 }), "{e}");
        assert_eq!(
            e.to_string(),
            "the log ends at entry 5 but entry 8 was acknowledged: the database or its WAL lost entries (damaged or truncated)"
        );
        // Every row gone, or the whole database: still lost, and the empty
        // database is not initialised over the evidence.
        sql(&d, "DELETE FROM log");
        assert!(matches!(
            Log::open(&db_path(&d)),
            Err(LogError::Lost { last: 0, acked: 8 })
        ));
        std::fs::remove_file(db_path(&d)).unwrap();
        assert!(matches!(
            Log::open(&db_path(&d)),
            Err(LogError::Lost { last: 0, acked: 8 })
        ));
        let db = Connection::open(db_path(&d)).unwrap();
        assert!(table_columns(&db, "log").unwrap().is_empty());
    }

    #[test]
    fn a_deleted_middle_entry_is_a_gap() {
        let d = written(8);
        sql(&d, "DELETE FROM log WHERE seq = 3");
        let e = Log::open(&db_path(&d)).err().unwrap();
        assert!(matches!(e, LogError::Gap { expected: 3, found: 4 }), "{e}");
    }

    #[test]
    fn a_head_one_entry_behind_is_brought_forward() {
        let d = written(4);
        let head = d.path().join("ledger.head");
        let before = std::fs::read(&head).unwrap();
        let mut log = Log::open(&db_path(&d)).unwrap();
        log.append(&Entry::Tick { now: 1 }).unwrap();
        drop(log);
        // As if the process died between the commit of entry 5 and its head write.
        std::fs::write(&head, &before).unwrap();
        let log = Log::open(&db_path(&d)).unwrap();
        assert_eq!(log.last_seq().unwrap(), 5);
        assert_eq!(HeadFile::read(&head).unwrap().map(|h| h.0), Some(5));
        drop(log);
        // Two behind: the head file is stale, not a crash.
        let mut log = Log::open(&db_path(&d)).unwrap();
        log.append(&Entry::Tick { now: 2 }).unwrap();
        drop(log);
        std::fs::write(&head, &before).unwrap();
        let e = Log::open(&db_path(&d)).err().unwrap();
        assert!(matches!(e, LogError::HeadBehind { head: 4, last: 6, .. }), "{e}");
    }

    #[test]
    fn a_torn_head_write_falls_back_to_the_entry_before() {
        let d = written(5);
        let head = d.path().join("ledger.head");
        let mut b = std::fs::read(&head).unwrap();
        // Entry 5 lives in slot 1.
        b[64 + 30] ^= 1;
        std::fs::write(&head, &b).unwrap();
        assert_eq!(HeadFile::read(&head).unwrap().map(|h| h.0), Some(4));
        assert_eq!(Log::open(&db_path(&d)).unwrap().last_seq().unwrap(), 5);
        assert_eq!(HeadFile::read(&head).unwrap().map(|h| h.0), Some(5));
    }

    #[test]
    fn a_missing_damaged_or_foreign_head_file_is_refused() {
        let d = written(3);
        let head = d.path().join("ledger.head");
        let good = std::fs::read(&head).unwrap();
        std::fs::remove_file(&head).unwrap();
        let e = Log::open(&db_path(&d)).err().unwrap();
        assert!(matches!(e, LogError::HeadMissing { entries: 3, .. }), "{e}");
        std::fs::write(&head, [0u8; 128]).unwrap();
        let e = Log::open(&db_path(&d)).err().unwrap();
        assert!(matches!(e, LogError::HeadDamaged { .. }), "{e}");
        // Another log's head at the same entry: the chain values differ.
        let other = written(3);
        std::fs::copy(other.path().join("ledger.head"), &head).unwrap();
        let e = Log::open(&db_path(&d)).err().unwrap();
        assert!(matches!(e, LogError::HeadMismatch { seq: 3, .. }), "{e}");
        std::fs::write(&head, &good).unwrap();
        Log::open(&db_path(&d)).unwrap();
    }

    #[test]
    fn a_second_log_on_the_directory_is_refused_while_the_first_is_open() {
        let d = written(1);
        let first = Log::open(&db_path(&d)).unwrap();
        let e = Log::open(&db_path(&d)).err().unwrap();
        assert_eq!(
            e.to_string(),
            format!(
                "another ledger is running on {} (lock held on {})",
                d.path().display(),
                d.path().join("ledger.lock").display()
            )
        );
        assert!(matches!(
            Log::truncate_to_verified(&db_path(&d)),
            Err(LogError::Locked { .. })
        ));
        drop(first);
        Log::open(&db_path(&d)).unwrap();
    }

    #[test]
    fn an_old_log_without_a_chain_is_refused_and_an_empty_one_upgraded() {
        for entries in [2, 0] {
            let d = tempfile::tempdir().unwrap();
            sql(
                &d,
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE log (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, now INTEGER NOT NULL, body TEXT);
                 CREATE TABLE snapshots (seq INTEGER PRIMARY KEY, now INTEGER NOT NULL, body BLOB NOT NULL);
                 INSERT INTO snapshots VALUES (0, 0, x'00');",
            );
            for i in 0..entries {
                sql(&d, &format!("INSERT INTO log (kind, now) VALUES ('tick', {i})"));
            }
            match Log::open(&db_path(&d)) {
                Err(e @ LogError::Unchained { entries: 2, .. }) => {
                    assert!(e.to_string().contains("no hash chain"), "{e}")
                }
                Ok(mut log) if entries == 0 => {
                    log.set_meta("genesis", GENESIS).unwrap();
                    log.append(&Entry::Tick { now: 1 }).unwrap();
                    // The old snapshot has no chain value: left out.
                    assert!(log.snapshots().unwrap().is_empty());
                    drop(log);
                    assert_eq!(Log::open(&db_path(&d)).unwrap().last_seq().unwrap(), 1);
                }
                other => panic!("{entries} entries: {:?}", other.err()),
            }
        }
    }

    #[test]
    fn snapshots_record_their_entrys_chain_and_a_mismatch_is_left_out() {
        let d = written(6);
        let log = Log::open(&db_path(&d)).unwrap();
        log.save_snapshot(0, 0, b"zero").unwrap();
        log.save_snapshot(4, 4, b"four").unwrap();
        let seqs = |log: &Log| -> Vec<i64> { log.snapshots().unwrap().iter().map(|s| s.0).collect() };
        assert_eq!(seqs(&log), [4, 0]);
        log.save_snapshot(6, 6, b"six").unwrap();
        assert_eq!(seqs(&log), [6, 4]);
        drop(log);
        sql(&d, "UPDATE snapshots SET chain = zeroblob(32) WHERE seq = 6");
        let log = Log::open(&db_path(&d)).unwrap();
        assert_eq!(seqs(&log), [4]);
        assert_eq!(log.replay(4, |_, _| Ok(())).unwrap(), 2);
        drop(log);
        sql(&d, "UPDATE snapshots SET seq = 9 WHERE seq = 4");
        assert!(seqs(&Log::open(&db_path(&d)).unwrap()).is_empty());
    }

    #[test]
    fn replay_checks_the_chain_again() {
        let d = written(5);
        let log = Log::open(&db_path(&d)).unwrap();
        // Altered behind the open log's back (SQLite itself does not stop this).
        sql(&d, "UPDATE log SET now = 1 WHERE seq = 5");
        assert!(matches!(
            log.replay(0, |_, _| Ok(())),
            Err(LogError::Altered { seq: 5 })
        ));
        sql(&d, "DELETE FROM log WHERE seq = 5");
        assert!(matches!(
            log.replay(2, |_, _| Ok(())),
            Err(LogError::Lost { last: 4, acked: 5 })
        ));
    }

    #[test]
    fn truncate_to_verified_keeps_the_verified_prefix() {
        let d = written(8);
        sql(&d, "UPDATE log SET now = 0 WHERE seq = 6");
        let e = Log::open(&db_path(&d)).err().unwrap();
        assert!(matches!(e, LogError::Altered { seq: 6 }), "{e}");
        let r = Log::truncate_to_verified(&db_path(&d)).unwrap();
        assert_eq!(
            r,
            Recovery {
                kept: 5,
                removed: 3,
                acknowledged: Some(8)
            }
        );
        let mut log = Log::open(&db_path(&d)).unwrap();
        assert_eq!(log.last_seq().unwrap(), 5);
        assert_eq!(log.append(&Entry::Tick { now: 1 }).unwrap(), 6);
        drop(log);
        // Entries lost in the WAL: the shorter log is adopted.
        sql(&d, "DELETE FROM log WHERE seq > 2");
        let r = Log::truncate_to_verified(&db_path(&d)).unwrap();
        assert_eq!((r.kept, r.removed, r.acknowledged), (2, 0, Some(6)));
        assert_eq!(Log::open(&db_path(&d)).unwrap().last_seq().unwrap(), 2);
    }

    /// The cost of the head file: `cargo test -p splitup-ledger append_cost
    /// -- --ignored --nocapture`. Prints timings, asserts nothing about them.
    #[test]
    #[ignore]
    fn append_cost() {
        let n = 300u32;
        let d = written(0);
        let mut log = Log::open(&db_path(&d)).unwrap();
        let (mut commit, mut head) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
        for i in 0..n {
            let t = std::time::Instant::now();
            log.commit(&Entry::Tick { now: i as Millis }).unwrap();
            let t1 = std::time::Instant::now();
            log.witness().unwrap();
            commit += t1 - t;
            head += t1.elapsed();
        }
        let (commit, head) = (commit / n, head / n);
        eprintln!(
            "in {}, per append: SQLite commit {commit:?}, head write + fdatasync {head:?} (+{:.0}%)",
            d.path().display(),
            100.0 * head.as_secs_f64() / commit.as_secs_f64()
        );
    }
}
