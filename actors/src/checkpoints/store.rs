//! Where checkpoint bytes live: a [`CheckpointStore`] of named blobs, streamed in and out so a
//! multi-GB checkpoint never has to be one contiguous buffer on the way through.
//!
//! Three implementations ship: [`NatsObjectStore`] (JetStream object store bucket
//! `grail_checkpoints`, chunked by the server), [`LocalDirStore`] (one file per object,
//! written to a `.partial` sibling and renamed, so readers never see half an object) and
//! [`S3Store`](super::s3::S3Store) (an S3-compatible bucket: content-addressed blobs, multipart
//! uploads, the digest checked at the end of every read).
//!
//! Announcements carry the object digest, so readers never need to trust the store (an S3
//! ETag is not a content digest for multipart uploads). Roles take an
//! `Arc<dyn CheckpointStore>`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use async_nats::jetstream::{self, object_store};
use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use futures::StreamExt;
use messages::Hash32;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::worker_pool::BoxError;

/// A readable object body (a file, an object-store download, an in-memory buffer).
pub type ObjectReader = Pin<Box<dyn AsyncRead + Send>>;
/// What every store method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A stored object as written: its name, size and BLAKE2b-256 digest of the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    pub name: String,
    pub bytes: u64,
    pub digest: Hash32,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("checkpoint object {name:?} not found in {store}")]
    NotFound { store: String, name: String },
    #[error(
        "object name {name:?} is not allowed: {detail} (use letters, digits, '-', '_' and '.')"
    )]
    BadName { name: String, detail: &'static str },
    #[error("object {name:?} has {bytes} bytes, more than the {limit} this reader accepts")]
    TooLarge {
        name: String,
        bytes: u64,
        limit: u64,
    },
    #[error("{store}: {op} {name:?} failed: {source}{hint}")]
    Backend {
        store: String,
        op: &'static str,
        name: String,
        /// How to fix it, when known (appended to the message).
        hint: &'static str,
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// A backend failure of `op` on `name` in `store` (no fix known).
    pub(crate) fn backend(
        store: String,
        op: &'static str,
        name: &str,
        source: impl Into<BoxError>,
    ) -> Self {
        StoreError::Backend {
            store,
            op,
            name: name.to_string(),
            hint: "",
            source: source.into(),
        }
    }

    /// Stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::NotFound { .. } => "object_missing",
            StoreError::BadName { .. } => "bad_object_name",
            StoreError::TooLarge { .. } => "object_too_large",
            StoreError::Backend { .. } => "store_error",
        }
    }
}

/// Named blobs holding checkpoint bytes (full safetensors, deltas, staged trainer weights).
pub trait CheckpointStore: Send + Sync {
    /// Human-readable location for logs and errors (`nats object store grail_checkpoints`).
    fn describe(&self) -> String;
    /// Store `body` under `name` (replacing any previous object of that name).
    fn put<'a>(&'a self, name: &'a str, body: ObjectReader) -> StoreFuture<'a, StoredObject>;
    /// Open `name` for reading.
    fn get<'a>(&'a self, name: &'a str) -> StoreFuture<'a, ObjectReader>;
    /// Remove `name`; removing a missing object is not an error.
    fn delete<'a>(&'a self, name: &'a str) -> StoreFuture<'a, ()>;
    /// Names of the stored objects, sorted.
    fn list(&self) -> StoreFuture<'_, Vec<String>>;
}

/// Store an in-memory buffer.
pub async fn put_bytes(
    store: &dyn CheckpointStore,
    name: &str,
    bytes: Vec<u8>,
) -> Result<StoredObject, StoreError> {
    store.put(name, Box::pin(std::io::Cursor::new(bytes))).await
}

/// Read a whole object (at most `limit` bytes) and its BLAKE2b-256 digest.
pub async fn get_bytes(
    store: &dyn CheckpointStore,
    name: &str,
    limit: u64,
) -> Result<(Vec<u8>, Hash32), StoreError> {
    let reader = store.get(name).await?;
    let mut hashing = HashingReader::new(reader);
    let mut out = Vec::new();
    // One byte past the limit tells "exactly at the limit" from "too large" (saturating: a
    // caller passing u64::MAX means "no limit", not an overflow).
    (&mut hashing)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .await
        .map_err(|e| StoreError::Backend {
            store: store.describe(),
            op: "read",
            name: name.to_string(),
            hint: "",
            source: e.into(),
        })?;
    if out.len() as u64 > limit {
        return Err(StoreError::TooLarge {
            name: name.to_string(),
            bytes: out.len() as u64,
            limit,
        });
    }
    let (_, digest) = hashing.finish();
    Ok((out, digest))
}

/// BLAKE2b-256 of `bytes`: the `object_digest` of announcements and candidates.
pub fn object_digest(bytes: &[u8]) -> Hash32 {
    Hash32::from(<[u8; 32]>::from(Blake2b::<U32>::digest(bytes)))
}

/// Counts and hashes what passes through it, so digests cost no second pass over the data.
pub struct HashingReader<R> {
    inner: R,
    hasher: Blake2b<U32>,
    bytes: u64,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Blake2b::<U32>::new(),
            bytes: 0,
        }
    }
    /// Bytes read so far and their digest.
    pub fn finish(self) -> (u64, Hash32) {
        (
            self.bytes,
            Hash32::from(<[u8; 32]>::from(self.hasher.finalize())),
        )
    }

    /// What a store reports for the object `name` this reader has fed it.
    pub fn into_stored(self, name: &str) -> StoredObject {
        let (bytes, digest) = self.finish();
        StoredObject {
            name: name.to_string(),
            bytes,
            digest,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            let fresh = &buf.filled()[before..];
            this.hasher.update(fresh);
            this.bytes += fresh.len() as u64;
        }
        polled
    }
}

/// Names become file names and NATS subjects tokens: keep them to a safe alphabet.
pub(crate) fn check_name(name: &str) -> Result<(), StoreError> {
    let bad = |detail| StoreError::BadName {
        name: name.chars().take(80).collect(),
        detail,
    };
    if name.is_empty() || name.len() > 200 {
        return Err(bad("empty or longer than 200 bytes"));
    }
    if name.starts_with('.') {
        return Err(bad("starts with '.'"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(bad("contains a character outside [A-Za-z0-9._-]"));
    }
    Ok(())
}

/// The JetStream object store bucket (created by `grail streams` / the topology).
#[derive(Clone)]
pub struct NatsObjectStore {
    bucket: String,
    store: object_store::ObjectStore,
}

/// Chunk size for uploads: large chunks keep the per-message overhead of multi-GB objects low
/// while staying far below the server's max payload.
const NATS_CHUNK_BYTES: usize = 1 << 20;

impl NatsObjectStore {
    /// Open the `grail_checkpoints` bucket.
    pub async fn open(js: &jetstream::Context) -> Result<Self, StoreError> {
        Self::open_bucket(js, messages::subjects::OBJECTS_CHECKPOINTS).await
    }

    pub async fn open_bucket(js: &jetstream::Context, bucket: &str) -> Result<Self, StoreError> {
        let store = js
            .get_object_store(bucket)
            .await
            .map_err(|e| StoreError::Backend {
                store: format!("nats object store {bucket}"),
                op: "open",
                name: bucket.to_string(),
                hint: " (run `grail streams` to create the topology)",
                source: e.into(),
            })?;
        Ok(Self {
            bucket: bucket.to_string(),
            store,
        })
    }

    fn backend(&self, op: &'static str, name: &str, e: impl Into<BoxError>) -> StoreError {
        StoreError::backend(self.describe(), op, name, e)
    }
}

impl CheckpointStore for NatsObjectStore {
    fn describe(&self) -> String {
        format!("nats object store {}", self.bucket)
    }

    fn put<'a>(&'a self, name: &'a str, body: ObjectReader) -> StoreFuture<'a, StoredObject> {
        Box::pin(async move {
            check_name(name)?;
            let mut hashing = HashingReader::new(body);
            let meta = object_store::ObjectMetadata {
                name: name.to_string(),
                chunk_size: Some(NATS_CHUNK_BYTES),
                ..Default::default()
            };
            self.store
                .put(meta, &mut hashing)
                .await
                .map_err(|e| self.backend("put", name, e))?;
            Ok(hashing.into_stored(name))
        })
    }

    fn get<'a>(&'a self, name: &'a str) -> StoreFuture<'a, ObjectReader> {
        Box::pin(async move {
            check_name(name)?;
            match self.store.get(name).await {
                Ok(object) => Ok(Box::pin(object) as ObjectReader),
                Err(e) if e.kind() == object_store::GetErrorKind::NotFound => {
                    Err(StoreError::NotFound {
                        store: self.describe(),
                        name: name.to_string(),
                    })
                }
                Err(e) => Err(self.backend("get", name, e)),
            }
        })
    }

    fn delete<'a>(&'a self, name: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            check_name(name)?;
            match self.store.delete(name).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == object_store::DeleteErrorKind::NotFound => Ok(()),
                Err(e) => Err(self.backend("delete", name, e)),
            }
        })
    }

    fn list(&self) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            let mut listing = match self.store.list().await {
                Ok(l) => l,
                Err(e) => return Err(self.backend("list", "*", e)),
            };
            let mut names = Vec::new();
            while let Some(info) = listing.next().await {
                let info = info.map_err(|e| self.backend("list", "*", e))?;
                names.push(info.name);
            }
            names.sort();
            Ok(names)
        })
    }
}

/// One file per object in a directory (a shared volume, or a cache next to a role).
#[derive(Clone, Debug)]
pub struct LocalDirStore {
    dir: PathBuf,
}

impl LocalDirStore {
    /// Use (and create) `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::Backend {
            store: format!("directory {}", dir.display()),
            op: "create",
            name: String::new(),
            hint: "",
            source: e.into(),
        })?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(&self, op: &'static str, name: &str, e: std::io::Error) -> StoreError {
        if e.kind() == std::io::ErrorKind::NotFound && op != "write" {
            return StoreError::NotFound {
                store: self.describe(),
                name: name.to_string(),
            };
        }
        StoreError::Backend {
            store: self.describe(),
            op,
            name: name.to_string(),
            hint: "",
            source: e.into(),
        }
    }
}

impl CheckpointStore for LocalDirStore {
    fn describe(&self) -> String {
        format!("directory {}", self.dir.display())
    }

    fn put<'a>(&'a self, name: &'a str, body: ObjectReader) -> StoreFuture<'a, StoredObject> {
        Box::pin(async move {
            check_name(name)?;
            let path = self.dir.join(name);
            let partial = self.dir.join(format!(".{name}.partial"));
            let mut hashing = HashingReader::new(body);
            let written = async {
                let mut file = tokio::fs::File::create(&partial).await?;
                tokio::io::copy(&mut hashing, &mut file).await?;
                file.sync_all().await?;
                tokio::fs::rename(&partial, &path).await
            }
            .await;
            if let Err(e) = written {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(self.io("write", name, e));
            }
            Ok(hashing.into_stored(name))
        })
    }

    fn get<'a>(&'a self, name: &'a str) -> StoreFuture<'a, ObjectReader> {
        Box::pin(async move {
            check_name(name)?;
            let file = tokio::fs::File::open(self.dir.join(name))
                .await
                .map_err(|e| self.io("open", name, e))?;
            Ok(Box::pin(file) as ObjectReader)
        })
    }

    fn delete<'a>(&'a self, name: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            check_name(name)?;
            match tokio::fs::remove_file(self.dir.join(name)).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(self.io("delete", name, e)),
            }
        })
    }

    fn list(&self) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            let mut entries = tokio::fs::read_dir(&self.dir)
                .await
                .map_err(|e| self.io("list", "*", e))?;
            let mut names = Vec::new();
            while let Some(entry) = entries
                .next_entry()
                .await
                .map_err(|e| self.io("list", "*", e))?
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                // Hidden files are in-progress writes.
                if !name.starts_with('.') && entry.file_type().await.is_ok_and(|t| t.is_file()) {
                    names.push(name);
                }
            }
            names.sort();
            Ok(names)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_dir_round_trip_digest_delete_and_hostile_names() {
        let dir = std::env::temp_dir().join(format!("grail-store-test-{}", rand::random::<u64>()));
        let store = LocalDirStore::open(dir.join("objects")).unwrap();
        let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let stored = put_bytes(&store, "ckpt-00000001-ab", body.clone())
            .await
            .unwrap();
        assert_eq!(stored.bytes, body.len() as u64);
        assert_eq!(stored.digest, object_digest(&body));
        let (back, digest) = get_bytes(&store, "ckpt-00000001-ab", 1 << 20)
            .await
            .unwrap();
        assert_eq!(back, body);
        assert_eq!(digest, stored.digest);
        assert_eq!(store.list().await.unwrap(), vec!["ckpt-00000001-ab"]);
        let too_small = get_bytes(&store, "ckpt-00000001-ab", 10).await.unwrap_err();
        assert_eq!(too_small.reason(), "object_too_large");
        store.delete("ckpt-00000001-ab").await.unwrap();
        store.delete("ckpt-00000001-ab").await.unwrap();
        let missing = get_bytes(&store, "ckpt-00000001-ab", 1 << 20).await;
        assert_eq!(missing.unwrap_err().reason(), "object_missing");
        for name in ["", "../etc", "a/b", ".hidden", "sp ace"] {
            let err = put_bytes(&store, name, vec![1]).await.unwrap_err();
            assert_eq!(err.reason(), "bad_object_name", "{name:?}");
        }
        assert!(store.list().await.unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
