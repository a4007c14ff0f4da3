//! The durable instruction log: every accepted signed instruction and every
//! tick that changed something, in order, in SQLite (WAL, synchronous=FULL);
//! and snapshots of the state, each naming the last log entry it includes.
//! On start the state is the newest readable snapshot plus the entries after
//! it, replayed through the deterministic state machine (the whole log when
//! there is no readable snapshot). The log itself is never truncated: it is
//! the audit trail every snapshot can be checked against.

use rusqlite::{params, Connection};
use splitup_protocol::{Millis, SignedTx};
use std::path::Path;

pub enum Entry {
    Tx { now: Millis, tx: Box<SignedTx> },
    Tick { now: Millis },
}

pub struct Log {
    db: Connection,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("ledger database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("ledger database is corrupt at entry {seq}: {msg}")]
    Corrupt { seq: i64, msg: String },
}

impl Log {
    pub fn open(path: &Path) -> Result<Log, LogError> {
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, now INTEGER NOT NULL, body TEXT);
             CREATE TABLE IF NOT EXISTS snapshots (seq INTEGER PRIMARY KEY, now INTEGER NOT NULL, body BLOB NOT NULL);",
        )?;
        Ok(Log { db })
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, LogError> {
        let mut st = self.db.prepare("SELECT value FROM meta WHERE key = ?1")?;
        let mut rows = st.query(params![key])?;
        Ok(match rows.next()? {
            Some(r) => Some(r.get(0)?),
            None => None,
        })
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), LogError> {
        self.db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            params![key, value],
        )?;
        Ok(())
    }

    /// Appends and commits (the call returns after the entry is durable).
    pub fn append(&self, e: &Entry) -> Result<i64, LogError> {
        match e {
            Entry::Tx { now, tx } => {
                let body = serde_json::to_string(tx).expect("transactions serialise");
                self.db.execute(
                    "INSERT INTO log (kind, now, body) VALUES ('tx', ?1, ?2)",
                    params![*now as i64, body],
                )?;
            }
            Entry::Tick { now } => {
                self.db.execute(
                    "INSERT INTO log (kind, now, body) VALUES ('tick', ?1, NULL)",
                    params![*now as i64],
                )?;
            }
        }
        Ok(self.db.last_insert_rowid())
    }

    /// Stores a snapshot of the state after log entry `seq`, keeping the two newest.
    pub fn save_snapshot(&self, seq: i64, now: Millis, body: &[u8]) -> Result<(), LogError> {
        self.db.execute(
            "INSERT OR REPLACE INTO snapshots (seq, now, body) VALUES (?1, ?2, ?3)",
            params![seq, now as i64, body],
        )?;
        self.db.execute(
            "DELETE FROM snapshots WHERE seq NOT IN (SELECT seq FROM snapshots ORDER BY seq DESC LIMIT 2)",
            [],
        )?;
        Ok(())
    }

    /// Snapshots, newest first: (last log entry included, clock, bytes).
    pub fn snapshots(&self) -> Result<Vec<(i64, Millis, Vec<u8>)>, LogError> {
        let mut st = self
            .db
            .prepare("SELECT seq, now, body FROM snapshots ORDER BY seq DESC")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as Millis, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The last entry's sequence number (0 for an empty log).
    pub fn last_seq(&self) -> Result<i64, LogError> {
        Ok(self
            .db
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM log", [], |r| r.get(0))?)
    }

    /// Replays the entries after `after` in order; returns how many.
    pub fn replay(&self, after: i64, mut f: impl FnMut(i64, Entry) -> Result<(), String>) -> Result<u64, LogError> {
        let mut st = self
            .db
            .prepare("SELECT seq, kind, now, body FROM log WHERE seq > ?1 ORDER BY seq")?;
        let mut rows = st.query(params![after])?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let kind: String = r.get(1)?;
            let now = r.get::<_, i64>(2)? as Millis;
            let entry = match kind.as_str() {
                "tx" => {
                    let body: String = r.get(3)?;
                    let tx = serde_json::from_str(&body).map_err(|e| LogError::Corrupt {
                        seq,
                        msg: e.to_string(),
                    })?;
                    Entry::Tx { now, tx: Box::new(tx) }
                }
                "tick" => Entry::Tick { now },
                other => {
                    return Err(LogError::Corrupt {
                        seq,
                        msg: format!("unknown entry kind {other:?}"),
                    })
                }
            };
            f(seq, entry).map_err(|msg| LogError::Corrupt { seq, msg })?;
            n += 1;
        }
        Ok(n)
    }
}
