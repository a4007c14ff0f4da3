//! A content-addressed blob store: every blob is named by its BLAKE3 hash,
//! checked when written and again when read.

use std::path::{Path, PathBuf};

/// Largest blob accepted (task weights of a 12 GiB node fit).
pub const BLOB_BYTES_MAX: u64 = 16 * 1024 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("{0:?} is not a BLAKE3 hash (64 lowercase hex digits)")]
    BadName(String),
    #[error("content hashes to {actual}, not {expected}")]
    Mismatch { expected: String, actual: String },
    #[error("no blob {0}")]
    Missing(String),
    #[error("blob store I/O: {0}")]
    Io(#[from] std::io::Error),
}

pub fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    pub fn open(root: &Path) -> Result<BlobStore, BlobError> {
        std::fs::create_dir_all(root)?;
        Ok(BlobStore {
            root: root.to_path_buf(),
        })
    }

    fn path(&self, hash: &str) -> PathBuf {
        self.root.join(&hash[..2]).join(hash)
    }

    /// Stores `bytes` under `hash` after checking it; writing the same blob twice is a no-op.
    pub fn put(&self, hash: &str, bytes: &[u8]) -> Result<(), BlobError> {
        if !is_hash(hash) {
            return Err(BlobError::BadName(hash.into()));
        }
        let actual = blake3::hash(bytes).to_hex().to_string();
        if actual != hash {
            return Err(BlobError::Mismatch {
                expected: hash.into(),
                actual,
            });
        }
        let path = self.path(hash);
        if path.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(path.parent().unwrap())?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Deletes a blob; a missing blob is not an error.
    pub fn remove(&self, hash: &str) -> Result<bool, BlobError> {
        if !is_hash(hash) {
            return Err(BlobError::BadName(hash.into()));
        }
        match std::fs::remove_file(self.path(hash)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads a blob, checking that its content still hashes to its name.
    pub fn get(&self, hash: &str) -> Result<Vec<u8>, BlobError> {
        if !is_hash(hash) {
            return Err(BlobError::BadName(hash.into()));
        }
        let bytes = std::fs::read(self.path(hash)).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                BlobError::Missing(hash.into())
            } else {
                BlobError::Io(e)
            }
        })?;
        let actual = blake3::hash(&bytes).to_hex().to_string();
        if actual != hash {
            return Err(BlobError::Mismatch {
                expected: hash.into(),
                actual,
            });
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_addressing_is_enforced_both_ways() {
        let d = std::env::temp_dir().join(format!("splitup-blobs-{}", std::process::id()));
        let s = BlobStore::open(&d).unwrap();
        let h = blake3::hash(b"weights").to_hex().to_string();
        s.put(&h, b"weights").unwrap();
        assert_eq!(s.get(&h).unwrap(), b"weights");
        assert!(matches!(s.put(&h, b"other"), Err(BlobError::Mismatch { .. })));
        assert!(matches!(s.get("../../etc/passwd"), Err(BlobError::BadName(_))));
        // Corruption on disk is detected on read.
        std::fs::write(d.join(&h[..2]).join(&h), b"rotten").unwrap();
        assert!(matches!(s.get(&h), Err(BlobError::Mismatch { .. })));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
