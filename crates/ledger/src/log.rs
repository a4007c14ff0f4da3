//! The durable instruction log: every accepted signed instruction and every
//! tick, in order, in SQLite (WAL, synchronous=FULL). The state is rebuilt
//! on start by replaying the log through the deterministic state machine.

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
             CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, now INTEGER NOT NULL, body TEXT);",
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

    pub fn replay(&self, mut f: impl FnMut(i64, Entry) -> Result<(), String>) -> Result<u64, LogError> {
        let mut st = self.db.prepare("SELECT seq, kind, now, body FROM log ORDER BY seq")?;
        let mut rows = st.query([])?;
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
