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
//!
//! [`Store::put_stream`] writes a blob of any size from a stream of chunks in
//! bounded memory: it hashes while writing, enforces a byte limit as it goes,
//! and the blob appears under its name only once its content matched the
//! name. Staging: a `file://` store writes `DIR/uploads/HASH.N` and renames it
//! into place; S3 and GCS write a multipart upload to the blob's own name and
//! complete it only on a match (until then it is invisible to readers, and a
//! mismatch or an excess aborts it). Uploads a crash left behind:
//! [`Store::sweep_uploads`] removes stale `uploads/` files; an interrupted S3
//! or GCS multipart upload is removed by the bucket's lifecycle rule
//! (`AbortIncompleteMultipartUpload`), which `object_store` cannot list.

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use object_store::aws::AmazonS3ConfigKey as S3Key;
use object_store::gcp::GoogleConfigKey as GcsKey;
use object_store::path::Path;
use object_store::{
    ClientConfigKey, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

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
    #[error("blob {hash} is over the {limit}-byte limit ({bytes} bytes seen)")]
    TooLarge { hash: String, bytes: u64, limit: u64 },
    /// The stream a blob was being read from failed (the uploader went away,
    /// or its producer refused to go on).
    #[error("upload of {hash} interrupted: {why}")]
    Source { hash: String, why: String },
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

/// The bookkeeping of one streamed upload: bytes seen, the running hash, the limit.
struct Upload<'a> {
    hash: &'a str,
    limit: u64,
    seen: u64,
    hasher: blake3::Hasher,
}

impl Upload<'_> {
    /// The next chunk (hashed and counted), `None` at the end.
    async fn next<S, E>(&mut self, body: &mut std::pin::Pin<&mut S>) -> Result<Option<Bytes>, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        match body.next().await {
            None => Ok(None),
            Some(Err(e)) => Err(StoreError::Source {
                hash: self.hash.into(),
                why: e.to_string(),
            }),
            Some(Ok(chunk)) => {
                self.seen += chunk.len() as u64;
                if self.seen > self.limit {
                    return Err(StoreError::TooLarge {
                        hash: self.hash.into(),
                        bytes: self.seen,
                        limit: self.limit,
                    });
                }
                self.hasher.update(&chunk);
                Ok(Some(chunk))
            }
        }
    }

    /// Whether what was seen hashes to the name.
    fn finish(&self) -> Result<(), StoreError> {
        let actual = self.hasher.finalize().to_hex().to_string();
        if actual != self.hash {
            return Err(StoreError::Mismatch {
                expected: self.hash.into(),
                actual,
            });
        }
        Ok(())
    }
}

/// A content-addressed store (async).
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
    /// The directory of a `file://` store (streamed uploads are staged in its `uploads/`).
    local: Option<std::path::PathBuf>,
}

/// A streamed upload writes through this much buffered data at a time (a
/// blob no larger is written with one plain put).
const STREAM_BUFFER: usize = 1024 * 1024;
/// Part size of S3/GCS multipart uploads (S3 requires at least 5 MiB), and
/// how many parts may be in flight at once.
const PART_BYTES: usize = 8 * 1024 * 1024;
const PARTS_IN_FLIGHT: usize = 2;
/// Where a `file://` store stages streamed uploads.
pub const UPLOADS_DIR: &str = "uploads";

static UPLOAD_SEQ: AtomicU64 = AtomicU64::new(0);

fn millis(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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
            local: None,
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
            local: Some(dir.to_path_buf()),
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
                limit: BLOB_BYTES_MAX,
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
                limit: BLOB_BYTES_MAX,
            });
        }
        let bytes = r.bytes().await.map_err(|e| self.backend(e))?;
        check(hash, &bytes)?;
        Ok(bytes)
    }

    /// Stores the blob `hash` from a stream of chunks, in bounded memory
    /// whatever its size: the chunks are hashed (BLAKE3) as they are written
    /// to a staging object, at most `limit` bytes are taken (one more aborts
    /// the upload: [`StoreError::TooLarge`]), and only when the content hashes
    /// to `hash` does the blob appear under its name; otherwise the staged
    /// bytes are deleted ([`StoreError::Mismatch`]). An error from the stream
    /// aborts it too ([`StoreError::Source`]). Returns the blob's size.
    pub async fn put_stream<S, E>(&self, hash: &str, body: S, limit: u64) -> Result<u64, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let path = self.path(hash)?;
        let limit = limit.min(BLOB_BYTES_MAX);
        let mut body = std::pin::pin!(body);
        let mut up = Upload {
            hash,
            limit,
            seen: 0,
            hasher: blake3::Hasher::new(),
        };
        // Small blobs (most tensors) are written with one plain put.
        let mut head: Vec<Bytes> = Vec::new();
        let mut head_bytes = 0usize;
        let more = loop {
            match up.next(&mut body).await? {
                Some(chunk) => {
                    head_bytes += chunk.len();
                    head.push(chunk);
                    if head_bytes > STREAM_BUFFER {
                        break true;
                    }
                }
                None => break false,
            }
        };
        if !more {
            up.finish()?;
            self.inner
                .put(&path, PutPayload::from_iter(head))
                .await
                .map_err(|e| self.backend(e))?;
            return Ok(up.seen);
        }
        match &self.local {
            Some(dir) => self.put_stream_local(dir, up, head, body).await,
            None => self.put_stream_multipart(&path, up, head, body).await,
        }
    }

    async fn put_stream_local<S, E>(
        &self,
        dir: &std::path::Path,
        mut up: Upload<'_>,
        head: Vec<Bytes>,
        mut body: std::pin::Pin<&mut S>,
    ) -> Result<u64, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let io = |what: &str, e: std::io::Error| StoreError::Config {
            url: self.url.clone(),
            why: format!("{what}: {e}"),
        };
        let staging = dir.join(UPLOADS_DIR);
        tokio::fs::create_dir_all(&staging)
            .await
            .map_err(|e| io("cannot create the uploads directory", e))?;
        let temp = staging.join(format!(
            "{}.{}.{}",
            up.hash,
            std::process::id(),
            UPLOAD_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let written = async {
            let mut f = tokio::fs::File::create(&temp)
                .await
                .map_err(|e| io("cannot create a staging file", e))?;
            let mut buf: Vec<u8> = Vec::with_capacity(STREAM_BUFFER);
            for chunk in head {
                buf.extend_from_slice(&chunk);
            }
            loop {
                let chunk = up.next(&mut body).await?;
                if let Some(c) = &chunk {
                    buf.extend_from_slice(c);
                }
                if buf.len() >= STREAM_BUFFER || (chunk.is_none() && !buf.is_empty()) {
                    f.write_all(&buf)
                        .await
                        .map_err(|e| io("cannot write a staging file", e))?;
                    buf.clear();
                }
                if chunk.is_none() {
                    break;
                }
            }
            f.flush().await.map_err(|e| io("cannot write a staging file", e))?;
            drop(f);
            up.finish()?;
            tokio::fs::rename(&temp, dir.join(up.hash))
                .await
                .map_err(|e| io("cannot move a staged upload into place", e))
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        written.map(|()| up.seen)
    }

    async fn put_stream_multipart<S, E>(
        &self,
        path: &Path,
        mut up: Upload<'_>,
        head: Vec<Bytes>,
        mut body: std::pin::Pin<&mut S>,
    ) -> Result<u64, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        // The multipart upload is invisible until completed: it is the staging object.
        let upload = self.inner.put_multipart(path).await.map_err(|e| self.backend(e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        for chunk in head {
            w.put(chunk);
        }
        let fed = async {
            while let Some(chunk) = up.next(&mut body).await? {
                w.wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| self.backend(e))?;
                w.put(chunk);
            }
            up.finish()
        }
        .await;
        match fed {
            Ok(()) => {
                w.finish().await.map_err(|e| self.backend(e))?;
                Ok(up.seen)
            }
            Err(e) => {
                let _ = w.abort().await;
                Err(e)
            }
        }
    }

    /// Reads a blob as a stream of chunks (bounded memory whatever its
    /// size), with its size. The content is hashed as it passes: a blob
    /// that does not match its name ends the stream with
    /// [`StoreError::Mismatch`] instead of its end, so a reader that
    /// forwards the stream (the ledger's `GET /v1/blobs`) breaks off rather
    /// than completing a damaged answer.
    pub async fn get_stream(
        &self,
        hash: &str,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, StoreError>>), StoreError> {
        let path = self.path(hash)?;
        let r = match self.inner.get(&path).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Err(StoreError::Missing(hash.into())),
            Err(e) => return Err(self.backend(e)),
        };
        let size = r.meta.size;
        if size > BLOB_BYTES_MAX {
            return Err(StoreError::TooLarge {
                hash: hash.into(),
                bytes: size,
                limit: BLOB_BYTES_MAX,
            });
        }
        let inner = r.into_stream();
        let url = self.url.clone();
        let expected = hash.to_string();
        let state = (inner, blake3::Hasher::new(), false);
        let stream = futures_util::stream::unfold(state, move |(mut inner, mut hasher, done)| {
            let (url, expected) = (url.clone(), expected.clone());
            async move {
                if done {
                    return None;
                }
                match inner.next().await {
                    Some(Ok(chunk)) => {
                        hasher.update(&chunk);
                        Some((Ok(chunk), (inner, hasher, false)))
                    }
                    Some(Err(source)) => Some((Err(StoreError::Backend { url, source }), (inner, hasher, true))),
                    None => {
                        let actual = hasher.finalize().to_hex().to_string();
                        if actual == expected {
                            None
                        } else {
                            Some((Err(StoreError::Mismatch { expected, actual }), (inner, hasher, true)))
                        }
                    }
                }
            }
        });
        Ok((size, stream.boxed()))
    }

    /// Every blob in the store, with the time it was last written (ms since
    /// the Unix epoch). Objects that are not blobs (staged uploads, anything
    /// else under the prefix) are skipped.
    pub fn list(&self) -> BoxStream<'static, Result<(String, u64), StoreError>> {
        let url = self.url.clone();
        let prefix = self.prefix.clone();
        self.inner
            .list(Some(&self.prefix))
            .filter_map(move |r| {
                let out = match r {
                    Ok(meta) => {
                        let mut rest = meta.location.prefix_match(&prefix).into_iter().flatten();
                        match (rest.next(), rest.next()) {
                            (Some(name), None) if is_hash(name.as_ref()) => Some(Ok((
                                name.as_ref().to_string(),
                                meta.last_modified.timestamp_millis().max(0) as u64,
                            ))),
                            _ => None,
                        }
                    }
                    Err(source) => Some(Err(StoreError::Backend {
                        url: url.clone(),
                        source,
                    })),
                };
                std::future::ready(out)
            })
            .boxed()
    }

    /// When a blob was last written (ms since the Unix epoch), or `None` if
    /// it does not exist.
    pub async fn modified(&self, hash: &str) -> Result<Option<u64>, StoreError> {
        let path = self.path(hash)?;
        match self.inner.head(&path).await {
            Ok(meta) => Ok(Some(meta.last_modified.timestamp_millis().max(0) as u64)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.backend(e)),
        }
    }

    /// Deletes staged uploads untouched for `older_than` (left by a crash
    /// or a killed process mid-upload); returns how many. Only a `file://`
    /// store stages uploads as files; for S3 and GCS see the module
    /// documentation.
    pub async fn sweep_uploads(&self, older_than: Duration) -> Result<usize, StoreError> {
        let Some(dir) = &self.local else { return Ok(0) };
        let staging = dir.join(UPLOADS_DIR);
        let cutoff = millis(std::time::SystemTime::now()).saturating_sub(older_than.as_millis() as u64);
        let url = self.url.clone();
        tokio::task::spawn_blocking(move || {
            let mut n = 0;
            let entries = match std::fs::read_dir(&staging) {
                Ok(d) => d,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                Err(e) => {
                    return Err(StoreError::Config {
                        url,
                        why: format!("cannot list {}: {e}", staging.display()),
                    })
                }
            };
            for entry in entries.flatten() {
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .map(|t| millis(t) <= cutoff)
                    .unwrap_or(false);
                if stale && std::fs::remove_file(entry.path()).is_ok() {
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
        .map_err(|e| StoreError::Config {
            url: self.url.clone(),
            why: format!("sweeping uploads: {e}"),
        })?
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

    /// `n` deterministic bytes in chunks of `chunk` (a stand-in for a request body).
    fn chunks(n: usize, chunk: usize) -> Vec<Result<Bytes, String>> {
        let bytes: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
        bytes.chunks(chunk).map(|c| Ok(Bytes::copy_from_slice(c))).collect()
    }

    fn bytes_of(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn files_in(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[tokio::test]
    async fn a_streamed_upload_is_checked_limited_and_staged_until_it_matches() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path().to_str().unwrap()).unwrap();
        let uploads = d.path().join(UPLOADS_DIR);
        // Small and large (staged in uploads/, then renamed) both land under their name.
        for n in [0, 1000, 3 * STREAM_BUFFER + 17] {
            let h = hash_of(&bytes_of(n));
            let body = futures_util::stream::iter(chunks(n, 64 * 1024));
            assert_eq!(s.put_stream(&h, body, n as u64).await.unwrap(), n as u64);
            assert_eq!(&s.get(&h).await.unwrap()[..], &bytes_of(n)[..]);
            let (size, stream) = s.get_stream(&h).await.unwrap();
            let back: Vec<Bytes> = stream.map(|c| c.unwrap()).collect().await;
            assert_eq!((size, back.concat()), (n as u64, bytes_of(n)));
        }
        assert!(files_in(&uploads).is_empty(), "{:?}", files_in(&uploads));
        let n = 3 * STREAM_BUFFER;
        let h = hash_of(&bytes_of(n));
        // One byte over the limit: refused, nothing stored or left staged.
        let body = futures_util::stream::iter(chunks(n, 100_000));
        assert!(matches!(
            s.put_stream(&h, body, n as u64 - 1).await,
            Err(StoreError::TooLarge { limit, .. }) if limit == n as u64 - 1
        ));
        assert!(matches!(s.get(&h).await, Err(StoreError::Missing(_))));
        assert!(files_in(&uploads).is_empty());
        // Content that does not match its name, small or large: refused, nothing left.
        for n in [10, n] {
            let wrong = hash_of(b"something else");
            let body = futures_util::stream::iter(chunks(n, 100_000));
            assert!(matches!(
                s.put_stream(&wrong, body, u64::MAX).await,
                Err(StoreError::Mismatch { .. })
            ));
            assert!(matches!(s.get(&wrong).await, Err(StoreError::Missing(_))));
        }
        assert!(files_in(&uploads).is_empty());
        // The uploader goes away mid-stream: refused, nothing left.
        let mut body = chunks(n, 100_000);
        body.push(Err("connection reset".into()));
        assert!(matches!(
            s.put_stream(&h, futures_util::stream::iter(body), u64::MAX).await,
            Err(StoreError::Source { .. })
        ));
        assert!(matches!(s.get(&h).await, Err(StoreError::Missing(_))));
        assert!(files_in(&uploads).is_empty());
        assert!(matches!(
            s.put_stream("../x", futures_util::stream::iter(chunks(1, 1)), 10).await,
            Err(StoreError::BadName(_))
        ));
        // Corruption on disk ends a streamed read with an error instead of its end.
        let small = hash_of(&bytes_of(1000));
        std::fs::write(d.path().join(&small), b"rotten").unwrap();
        let (_, stream) = s.get_stream(&small).await.unwrap();
        let items: Vec<Result<Bytes, StoreError>> = stream.collect().await;
        assert!(matches!(items.last(), Some(Err(StoreError::Mismatch { .. }))));
    }

    #[tokio::test]
    async fn staged_uploads_left_by_a_crash_are_swept_and_listing_shows_only_blobs() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path().to_str().unwrap()).unwrap();
        let h = hash_of(b"blob");
        s.put(&h, Bytes::from_static(b"blob")).await.unwrap();
        // What a process killed mid-upload leaves behind.
        let uploads = d.path().join(UPLOADS_DIR);
        std::fs::create_dir_all(&uploads).unwrap();
        std::fs::write(uploads.join(format!("{h}.1.0")), b"half a blo").unwrap();
        let listed: Vec<(String, u64)> = s.list().map(|r| r.unwrap()).collect().await;
        assert_eq!(
            listed.iter().map(|(h, _)| h.clone()).collect::<Vec<_>>(),
            vec![h.clone()]
        );
        let now = millis(std::time::SystemTime::now());
        assert!(listed[0].1 <= now && listed[0].1 + 60_000 > now, "{listed:?}");
        assert_eq!(s.modified(&h).await.unwrap(), Some(listed[0].1));
        assert_eq!(s.modified(&hash_of(b"none")).await.unwrap(), None);
        // A fresh staged file may be an upload in progress: kept.
        assert_eq!(s.sweep_uploads(Duration::from_secs(3600)).await.unwrap(), 0);
        assert_eq!(files_in(&uploads).len(), 1);
        assert_eq!(s.sweep_uploads(Duration::ZERO).await.unwrap(), 1);
        assert!(files_in(&uploads).is_empty());
        assert_eq!(&s.get(&h).await.unwrap()[..], b"blob");
    }

    #[tokio::test]
    async fn a_streamed_upload_to_an_object_store_is_one_multipart_upload_completed_only_on_a_match() {
        // The S3/GCS path (multipart upload to the blob's name), on object_store's in-memory store.
        let s = Store {
            inner: Arc::new(object_store::memory::InMemory::new()),
            prefix: Path::from("blobs"),
            url: "memory:///blobs".into(),
            local: None,
        };
        let n = 2 * PART_BYTES + 5;
        let h = hash_of(&bytes_of(n));
        let body = futures_util::stream::iter(chunks(n, 300_000));
        assert!(matches!(
            s.put_stream(&h, body, n as u64 - 1).await,
            Err(StoreError::TooLarge { .. })
        ));
        let wrong = hash_of(b"x");
        let body = futures_util::stream::iter(chunks(n, 300_000));
        assert!(matches!(
            s.put_stream(&wrong, body, u64::MAX).await,
            Err(StoreError::Mismatch { .. })
        ));
        let listed: Vec<(String, u64)> = s.list().map(|r| r.unwrap()).collect().await;
        assert!(listed.is_empty(), "an aborted upload is visible: {listed:?}");
        let body = futures_util::stream::iter(chunks(n, 300_000));
        assert_eq!(s.put_stream(&h, body, n as u64).await.unwrap(), n as u64);
        assert_eq!(&s.get(&h).await.unwrap()[..], &bytes_of(n)[..]);
        let listed: Vec<String> = s.list().map(|r| r.unwrap().0).collect().await;
        assert_eq!(listed, vec![h]);
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
