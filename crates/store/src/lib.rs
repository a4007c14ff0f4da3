//! Content-addressed blob storage on [`object_store`].
//!
//! Every blob is named by the BLAKE3 hash of its bytes (64 lowercase hex
//! digits), checked before it is written and again after it is read, so a
//! store that loses, truncates or swaps bytes is detected rather than
//! believed. One store is a URL:
//!
//! | URL | backend | configuration |
//! |---|---|---|
//! | `file:///abs/dir` or a plain path | local directory | none |
//! | `s3://bucket/prefix` | Amazon S3 or any S3-compatible server | `AWS_*` environment variables (`AWS_ENDPOINT`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`) |
//! | `gs://bucket/prefix` | Google Cloud Storage | `GOOGLE_*` environment variables |
//! | `http(s)://host/path` | an HTTP server taking PUT and GET (a ledger's `/v1/blobs`, WebDAV) | none |
//!
//! A blob's URI is the store URL followed by `/` and its hash; readers take
//! the hash from the URI's last segment and read it from their own store.

use bytes::Bytes;
use object_store::aws::AmazonS3ConfigKey as S3Key;
use object_store::gcp::GoogleConfigKey as GcsKey;
use object_store::path::Path;
use object_store::{ClientConfigKey, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use std::sync::Arc;
use std::time::Duration;

/// Largest blob accepted (task weights of a 12 GiB node fit).
pub const BLOB_BYTES_MAX: u64 = 16 * 1024 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0:?} is not a BLAKE3 hash (64 lowercase hex digits)")]
    BadName(String),
    #[error("content hashes to {actual}, not {expected}")]
    Mismatch { expected: String, actual: String },
    #[error("no blob {0}")]
    Missing(String),
    #[error("blob {hash} is {bytes} bytes, over the {BLOB_BYTES_MAX}-byte limit")]
    TooLarge { hash: String, bytes: u64 },
    #[error("storage URL {url:?}: {why}")]
    Config { url: String, why: String },
    #[error("storage {url}: {source}")]
    Backend {
        url: String,
        #[source]
        source: object_store::Error,
    },
}

pub fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The BLAKE3 name of some bytes.
pub fn hash_of(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// The hash a blob URI names (its last path segment).
pub fn hash_of_uri(uri: &str) -> &str {
    uri.rsplit('/').next().unwrap_or(uri)
}

fn check(hash: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let actual = hash_of(bytes);
    if actual != hash {
        return Err(StoreError::Mismatch {
            expected: hash.into(),
            actual,
        });
    }
    Ok(())
}

/// A content-addressed store (async).
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
}

/// Retries a few times, then reports: a node must not hang for minutes on
/// an unreachable store.
fn retry() -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
        ..RetryConfig::default()
    }
}

/// A whole blob moves within one request: allow a large one time. (For S3
/// and GCS, set over the environment's configuration, which `from_env`
/// reads first; options given to `open_with` override them.)
const TIMEOUT: &str = "600s";
const CONNECT_TIMEOUT: &str = "10s";

impl Store {
    /// Opens the store a URL names (see the module documentation).
    pub fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_with(url, &[])
    }

    /// As [`Store::open`], with configuration given as (key, value) pairs
    /// over the environment's: the keys of `object_store`'s S3 and GCS
    /// builders (`aws_endpoint`, `aws_access_key_id`, `google_service_account`, …).
    pub fn open_with(url: &str, options: &[(&str, &str)]) -> Result<Store, StoreError> {
        let bad = |why: String| StoreError::Config { url: url.into(), why };
        if !url.contains("://") {
            let dir = std::path::absolute(url).map_err(|e| bad(e.to_string()))?;
            return Store::local(&dir);
        }
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let prefix = || Path::parse(parsed.path().trim_matches('/')).map_err(|e| bad(e.to_string()));
        let built = |r: object_store::Result<Arc<dyn ObjectStore>>| r.map_err(|e| bad(e.to_string()));
        let (inner, prefix): (Arc<dyn ObjectStore>, Path) = match parsed.scheme() {
            "file" => {
                if !options.is_empty() {
                    return Err(bad("a file:// store takes no options".into()));
                }
                let dir = parsed
                    .to_file_path()
                    .map_err(|_| bad("a file:// URL needs an absolute path".into()))?;
                return Store::local(&dir);
            }
            "s3" | "s3a" => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .with_retry(retry())
                    .with_config(S3Key::Client(ClientConfigKey::Timeout), TIMEOUT)
                    .with_config(S3Key::Client(ClientConfigKey::ConnectTimeout), CONNECT_TIMEOUT);
                for (k, v) in options {
                    let key: S3Key = k.parse().map_err(|_| bad(format!("unknown S3 option {k:?}")))?;
                    b = b.with_config(key, *v);
                }
                (built(b.build().map(|s| Arc::new(s) as _))?, prefix()?)
            }
            "gs" => {
                let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .with_retry(retry())
                    .with_config(GcsKey::Client(ClientConfigKey::Timeout), TIMEOUT)
                    .with_config(GcsKey::Client(ClientConfigKey::ConnectTimeout), CONNECT_TIMEOUT);
                for (k, v) in options {
                    let key: GcsKey = k.parse().map_err(|_| bad(format!("unknown GCS option {k:?}")))?;
                    b = b.with_config(key, *v);
                }
                (built(b.build().map(|s| Arc::new(s) as _))?, prefix()?)
            }
            "http" | "https" => {
                let mut o = ClientOptions::new()
                    .with_config(ClientConfigKey::Timeout, TIMEOUT)
                    .with_config(ClientConfigKey::ConnectTimeout, CONNECT_TIMEOUT)
                    .with_allow_http(true);
                for (k, v) in options {
                    let key: ClientConfigKey = k.parse().map_err(|_| bad(format!("unknown HTTP option {k:?}")))?;
                    o = o.with_config(key, *v);
                }
                let b = object_store::http::HttpBuilder::new()
                    .with_url(url.trim_end_matches('/'))
                    .with_retry(retry())
                    .with_client_options(o);
                (built(b.build().map(|s| Arc::new(s) as _))?, Path::default())
            }
            other => {
                return Err(bad(format!(
                    "unsupported scheme {other:?} (use file://, s3://, gs://, http:// or https://)"
                )))
            }
        };
        Ok(Store {
            inner,
            prefix,
            url: url.trim_end_matches('/').to_string(),
        })
    }

    fn local(dir: &std::path::Path) -> Result<Store, StoreError> {
        let url = format!("file://{}", dir.display());
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Config {
            url: url.clone(),
            why: format!("cannot create {}: {e}", dir.display()),
        })?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| StoreError::Config {
            url: url.clone(),
            why: e.to_string(),
        })?;
        Ok(Store {
            inner: Arc::new(fs),
            prefix: Path::default(),
            url,
        })
    }

    /// The store's URL; a blob's URI is this, `/`, and its hash.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn uri(&self, hash: &str) -> String {
        format!("{}/{hash}", self.url)
    }

    fn path(&self, hash: &str) -> Result<Path, StoreError> {
        if !is_hash(hash) {
            return Err(StoreError::BadName(hash.into()));
        }
        Ok(self.prefix.clone().join(hash))
    }

    fn backend(&self, source: object_store::Error) -> StoreError {
        StoreError::Backend {
            url: self.url.clone(),
            source,
        }
    }

    /// Stores `bytes` under `hash` after checking that they hash to it.
    /// Writing the same blob twice leaves one copy.
    pub async fn put(&self, hash: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = self.path(hash)?;
        if bytes.len() as u64 > BLOB_BYTES_MAX {
            return Err(StoreError::TooLarge {
                hash: hash.into(),
                bytes: bytes.len() as u64,
            });
        }
        check(hash, &bytes)?;
        self.inner.put(&path, bytes.into()).await.map_err(|e| self.backend(e))?;
        Ok(())
    }

    /// Reads a blob, refusing one over the size limit or whose content does
    /// not hash to its name.
    pub async fn get(&self, hash: &str) -> Result<Bytes, StoreError> {
        let path = self.path(hash)?;
        let r = match self.inner.get(&path).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Err(StoreError::Missing(hash.into())),
            Err(e) => return Err(self.backend(e)),
        };
        if r.meta.size > BLOB_BYTES_MAX {
            return Err(StoreError::TooLarge {
                hash: hash.into(),
                bytes: r.meta.size,
            });
        }
        let bytes = r.bytes().await.map_err(|e| self.backend(e))?;
        check(hash, &bytes)?;
        Ok(bytes)
    }

    /// Deletes a blob; deleting a missing blob is not an error.
    pub async fn remove(&self, hash: &str) -> Result<(), StoreError> {
        let path = self.path(hash)?;
        match self.inner.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.backend(e)),
        }
    }
}

/// A [`Store`] for synchronous callers (node daemons, the command line): it
/// owns a small runtime. Not for use inside an async runtime.
pub struct BlockingStore {
    store: Store,
    rt: tokio::runtime::Runtime,
}

impl BlockingStore {
    pub fn open(url: &str) -> Result<BlockingStore, StoreError> {
        BlockingStore::open_with(url, &[])
    }

    /// See [`Store::open_with`].
    pub fn open_with(url: &str, options: &[(&str, &str)]) -> Result<BlockingStore, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Config {
                url: url.into(),
                why: format!("cannot start a runtime: {e}"),
            })?;
        // Building some backends needs a runtime context.
        let store = rt.block_on(async { Store::open_with(url, options) })?;
        Ok(BlockingStore { store, rt })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Uploads `bytes`; returns their hash.
    pub fn put(&self, bytes: Vec<u8>) -> Result<String, StoreError> {
        let hash = hash_of(&bytes);
        self.rt.block_on(self.store.put(&hash, bytes.into()))?;
        Ok(hash)
    }

    pub fn get(&self, hash: &str) -> Result<Bytes, StoreError> {
        self.rt.block_on(self.store.get(hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_addressing_is_enforced_both_ways_on_the_file_backend() {
        let d = tempfile::tempdir().unwrap();
        let s = BlockingStore::open(&format!("file://{}", d.path().display())).unwrap();
        let h = s.put(b"weights".to_vec()).unwrap();
        assert_eq!(h, hash_of(b"weights"));
        assert_eq!(&s.get(&h).unwrap()[..], b"weights");
        assert_eq!(s.store().uri(&h), format!("file://{}/{h}", d.path().display()));
        let rt = &s.rt;
        assert!(matches!(
            rt.block_on(s.store().put(&h, Bytes::from_static(b"other"))),
            Err(StoreError::Mismatch { .. })
        ));
        assert!(matches!(s.get("../../etc/passwd"), Err(StoreError::BadName(_))));
        let missing = hash_of(b"never stored");
        assert!(matches!(s.get(&missing), Err(StoreError::Missing(_))));
        // Corruption on disk is detected on read.
        std::fs::write(d.path().join(&h), b"rotten").unwrap();
        assert!(matches!(s.get(&h), Err(StoreError::Mismatch { .. })));
        rt.block_on(s.store().remove(&h)).unwrap();
        assert!(matches!(s.get(&h), Err(StoreError::Missing(_))));
        rt.block_on(s.store().remove(&h)).unwrap();
    }

    #[test]
    fn urls_are_checked() {
        for bad in ["ftp://x/y", "file://relative", "s3://"] {
            assert!(
                matches!(BlockingStore::open(bad), Err(StoreError::Config { .. })),
                "{bad} accepted"
            );
        }
        // A plain path is a local directory.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("blobs");
        let s = BlockingStore::open(p.to_str().unwrap()).unwrap();
        let h = s.put(vec![1, 2, 3]).unwrap();
        assert!(p.join(&h).exists());
    }
}
