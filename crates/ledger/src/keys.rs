//! Key files: `{"secret": "<64 hex digits>"}`, written owner-readable only.

use splitup_protocol::crypto::{from_hex32, to_hex};
use splitup_protocol::Keypair;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write key file {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("{path} is not a SplitUp key file (expected {{\"secret\": \"<64 hex digits>\"}})")]
    Format { path: String },
    #[error("{path} already exists; refusing to overwrite a key")]
    Exists { path: String },
}

/// A fresh key from the operating system's randomness (shells may draw
/// randomness; the protocol core never does).
pub fn generate() -> Keypair {
    Keypair::from_seed(rand::random())
}

pub fn write(path: &Path, key: &Keypair) -> Result<(), KeyError> {
    let p = path.display().to_string();
    if path.exists() {
        return Err(KeyError::Exists { path: p });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| KeyError::Write {
            path: p.clone(),
            source,
        })?;
    }
    let body = format!(
        "{{\"secret\": \"{}\", \"public\": \"{}\"}}\n",
        to_hex(&key.seed()),
        key.pubkey().hex()
    );
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    use std::io::Write;
    let mut f = opts.open(path).map_err(|source| KeyError::Write {
        path: p.clone(),
        source,
    })?;
    f.write_all(body.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|source| KeyError::Write { path: p, source })
}

pub fn read(path: &Path) -> Result<Keypair, KeyError> {
    let p = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Read {
        path: p.clone(),
        source,
    })?;
    if meta.len() > 4096 {
        return Err(KeyError::Format { path: p });
    }
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: p.clone(),
        source,
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| KeyError::Format { path: p.clone() })?;
    let seed = v
        .get("secret")
        .and_then(|s| s.as_str())
        .and_then(from_hex32)
        .ok_or(KeyError::Format { path: p })?;
    Ok(Keypair::from_seed(seed))
}

/// Reads the key at `path`, creating it first if it does not exist.
pub fn read_or_create(path: &Path) -> Result<Keypair, KeyError> {
    if path.exists() {
        read(path)
    } else {
        let k = generate();
        write(path, &k)?;
        Ok(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_refuses_overwrite_and_garbage() {
        let d = std::env::temp_dir().join(format!("splitup-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let k = generate();
        write(&d.join("a.json"), &k).unwrap();
        assert_eq!(read(&d.join("a.json")).unwrap().pubkey(), k.pubkey());
        assert!(matches!(write(&d.join("a.json"), &k), Err(KeyError::Exists { .. })));
        std::fs::write(d.join("b.json"), "{\"secret\": \"zz\"}").unwrap();
        assert!(matches!(read(&d.join("b.json")), Err(KeyError::Format { .. })));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
