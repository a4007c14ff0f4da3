//! The head file (`ledger.head`, next to the database): a witness, outside
//! SQLite, of the last acknowledged log entry (its sequence number and hash
//! chain value).
//!
//! SQLite drops every WAL frame after a damaged one, and the rows and meta
//! entries in them vanish together, so nothing inside the database can tell
//! that they existed. This file can: it is written and fsynced after each
//! commit, before the entry is acknowledged.
//!
//! Layout: 128 bytes, two 64-byte slots; entry `seq` is written to slot
//! `seq % 2` in place (one `write` + `fdatasync`, no rename), so a write torn
//! by a power loss damages at most the slot being written and the other one
//! still names the entry before it. Each slot is
//! `b"SPLHEAD1" ‖ seq (u64 LE) ‖ chain (32 bytes) ‖ BLAKE3(first 48 bytes)[..16]`.
//! The head is the valid slot with the larger `seq`.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub type Hash = [u8; 32];

const MAGIC: &[u8; 8] = b"SPLHEAD1";
const SLOT: usize = 64;
pub const HEAD_BYTES: usize = 2 * SLOT;

/// Why a head file cannot be used (the caller names the file).
#[derive(Debug)]
pub enum HeadFault {
    Io(&'static str, std::io::Error),
    Damaged(String),
}

pub struct HeadFile {
    file: File,
    pub path: PathBuf,
}

fn slot(seq: u64, chain: &Hash) -> [u8; SLOT] {
    let mut s = [0u8; SLOT];
    s[..8].copy_from_slice(MAGIC);
    s[8..16].copy_from_slice(&seq.to_le_bytes());
    s[16..48].copy_from_slice(chain);
    let check = blake3::hash(&s[..48]);
    s[48..].copy_from_slice(&check.as_bytes()[..16]);
    s
}

fn parse_slot(s: &[u8]) -> Option<(u64, Hash)> {
    if s.len() != SLOT || &s[..8] != MAGIC || blake3::hash(&s[..48]).as_bytes()[..16] != s[48..] {
        return None;
    }
    let seq = u64::from_le_bytes(s[8..16].try_into().ok()?);
    let chain: Hash = s[16..48].try_into().ok()?;
    Some((seq, chain))
}

/// The head recorded in `bytes` (the whole file).
pub fn parse(bytes: &[u8]) -> Result<(i64, Hash), HeadFault> {
    if bytes.len() != HEAD_BYTES {
        return Err(HeadFault::Damaged(format!(
            "{} bytes, a head file has {HEAD_BYTES}",
            bytes.len()
        )));
    }
    let best = [parse_slot(&bytes[..SLOT]), parse_slot(&bytes[SLOT..])]
        .into_iter()
        .flatten()
        .max_by_key(|(seq, _)| *seq);
    match best {
        None => Err(HeadFault::Damaged("neither of its two copies verifies".into())),
        Some((seq, chain)) => match i64::try_from(seq) {
            Ok(seq) => Ok((seq, chain)),
            Err(_) => Err(HeadFault::Damaged(format!("entry number {seq} is out of range"))),
        },
    }
}

impl HeadFile {
    /// Reads the head; `None` when the file does not exist.
    pub fn read(path: &Path) -> Result<Option<(i64, Hash)>, HeadFault> {
        let mut f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(HeadFault::Io("cannot open", e)),
        };
        let mut bytes = Vec::with_capacity(HEAD_BYTES);
        // A file far larger than a head file is damaged; do not read it all.
        (&mut f)
            .take(HEAD_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| HeadFault::Io("cannot read", e))?;
        parse(&bytes).map(Some)
    }

    /// Opens an existing head file for writing.
    pub fn open(path: &Path) -> Result<HeadFile, HeadFault> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| HeadFault::Io("cannot open", e))?;
        Ok(HeadFile {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Creates the head file naming entry `seq`, durably (the file and its
    /// directory entry are fsynced). Refuses to replace an existing file.
    pub fn create(path: &Path, seq: i64, chain: &Hash) -> Result<HeadFile, HeadFault> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| HeadFault::Io("cannot create", e))?;
        HeadFile::init(file, path, seq, chain)
    }

    /// Replaces whatever is at `path` (a damaged or stale head file) with
    /// one naming entry `seq`, durably. For recovery only.
    pub fn reset(path: &Path, seq: i64, chain: &Hash) -> Result<HeadFile, HeadFault> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| HeadFault::Io("cannot create", e))?;
        HeadFile::init(file, path, seq, chain)
    }

    /// Both slots name entry `seq`; the file and its directory entry are fsynced.
    fn init(file: File, path: &Path, seq: i64, chain: &Hash) -> Result<HeadFile, HeadFault> {
        let seq = seq as u64;
        let mut bytes = [0u8; HEAD_BYTES];
        bytes[..SLOT].copy_from_slice(&slot(seq, chain));
        bytes[SLOT..].copy_from_slice(&slot(seq, chain));
        file.write_all_at(&bytes, 0)
            .and_then(|()| file.sync_all())
            .map_err(|e| HeadFault::Io("cannot write", e))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| HeadFault::Io("cannot sync the directory of", e))?;
        Ok(HeadFile {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Records entry `seq` as the head and waits until it is on disk.
    pub fn write(&self, seq: i64, chain: &Hash) -> Result<(), HeadFault> {
        let seq = seq as u64;
        let at = (seq % 2) * SLOT as u64;
        self.file
            .write_all_at(&slot(seq, chain), at)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| HeadFault::Io("cannot write", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newer_valid_slot_is_the_head_and_a_torn_one_falls_back() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ledger.head");
        assert!(HeadFile::read(&p).unwrap().is_none());
        let h = HeadFile::create(&p, 0, &[0; 32]).unwrap();
        assert_eq!(HeadFile::read(&p).unwrap(), Some((0, [0; 32])));
        h.write(1, &[1; 32]).unwrap();
        h.write(2, &[2; 32]).unwrap();
        assert_eq!(HeadFile::read(&p).unwrap(), Some((2, [2; 32])));
        h.write(3, &[3; 32]).unwrap();
        assert_eq!(HeadFile::read(&p).unwrap(), Some((3, [3; 32])));
        // Tear the slot of entry 3: entry 2's slot still stands.
        let mut b = std::fs::read(&p).unwrap();
        b[SLOT + 20] ^= 0x40;
        std::fs::write(&p, &b).unwrap();
        assert_eq!(HeadFile::read(&p).unwrap(), Some((2, [2; 32])));
        // Both torn: damaged, not silently zero.
        b[20] ^= 0x40;
        std::fs::write(&p, &b).unwrap();
        assert!(matches!(HeadFile::read(&p), Err(HeadFault::Damaged(_))));
        std::fs::write(&p, b"short").unwrap();
        assert!(matches!(HeadFile::read(&p), Err(HeadFault::Damaged(_))));
        assert!(matches!(HeadFile::create(&p, 0, &[0; 32]), Err(HeadFault::Io(..))));
        HeadFile::reset(&p, 7, &[7; 32]).unwrap();
        assert_eq!(HeadFile::read(&p).unwrap(), Some((7, [7; 32])));
    }
}
