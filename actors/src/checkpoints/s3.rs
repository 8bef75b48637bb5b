//! [`S3Store`]: checkpoint objects in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, R2, …)
//! through the `object_store` client.
//!
//! Layout under `s3://<bucket>/<prefix>`:
//!
//! * `blobs/<blake2b-256 hex>`: the bytes, content-addressed. Two names with the same bytes
//!   share one blob; a blob is deleted when the last name pointing at it goes.
//! * `names/<name>`: a one-line pointer `<digest hex> <bytes>` (what `list` and `get` read).
//! * `staging/<name>.<random>`: a large upload in flight. Its digest is only known after the
//!   last byte, so it is uploaded here (multipart, parts of `part_size`) and then copied
//!   server-side to its blob key. Objects that fit in one part go straight to their blob.
//!
//! Every read is verified: the body is hashed as it streams and the read fails with
//! `InvalidData` at the end if the digest or the length differ from the pointer, so a
//! tampered or truncated blob never reaches a caller as good bytes (the book additionally
//! checks the announced digest, as with every store).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use bytes::Bytes;
use futures::stream::{BoxStream, FuturesUnordered};
use futures::{StreamExt, TryStreamExt};
use messages::Hash32;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::store::{
    check_name, CheckpointStore, HashingReader, ObjectReader, StoreError, StoreFuture, StoredObject,
};
use crate::worker_pool::BoxError;

/// S3 refuses parts below 5 MiB (except the last).
pub const MIN_PART_BYTES: usize = 5 << 20;
/// Parts uploaded at once per object.
const PARTS_IN_FLIGHT: usize = 4;

/// Where the bucket is and how to sign for it. `Debug` never shows the secret.
#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing '/'; may be empty).
    pub prefix: String,
    /// `http(s)://host:port` of an S3-compatible server; `None` = AWS for `region`.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Multipart part size (≥ 5 MiB); objects up to this size take one PUT.
    pub part_size: usize,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field(
                "access_key_id",
                &self.access_key_id.as_ref().map(|_| "<set>"),
            )
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<set>"),
            )
            .field("part_size", &self.part_size)
            .finish()
    }
}

impl S3Config {
    /// Parse `s3://bucket/prefix?endpoint=http://host:port&region=r&part_mib=16`, then take
    /// what the URL leaves open from the environment: `AWS_ENDPOINT_URL`, `AWS_REGION` (or
    /// `AWS_DEFAULT_REGION`), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
    /// Credentials are only read from the environment, never from the URL (it is logged).
    pub fn from_url(url: &str) -> Result<Self, String> {
        Self::from_url_with_env(url, |k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    pub fn from_url_with_env(
        url: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            format!("{url:?} is not an S3 URL: write it as \"s3://<bucket>/<prefix>\"")
        })?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
        if bucket.is_empty() {
            return Err(format!(
                "{url:?} names no bucket: write \"s3://<bucket>/<prefix>\""
            ));
        }
        let mut cfg = S3Config {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: env("AWS_ENDPOINT_URL"),
            region: env("AWS_REGION")
                .or_else(|| env("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".into()),
            access_key_id: env("AWS_ACCESS_KEY_ID"),
            secret_access_key: env("AWS_SECRET_ACCESS_KEY"),
            session_token: env("AWS_SESSION_TOKEN"),
            part_size: 16 << 20,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "endpoint" => cfg.endpoint = Some(value.to_string()),
                "region" => cfg.region = value.to_string(),
                "part_mib" => {
                    let mib: usize = value.parse().map_err(|_| {
                        format!("{url:?}: part_mib={value:?} is not a whole number of MiB")
                    })?;
                    cfg.part_size = mib << 20;
                }
                _ => {
                    return Err(format!(
                        "{url:?}: unknown option {key:?} (known: endpoint, region, part_mib; \
                         credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
                    ))
                }
            }
        }
        if cfg.part_size < MIN_PART_BYTES {
            return Err(format!(
                "{url:?}: part_mib must be at least 5 (S3's smallest part)"
            ));
        }
        Ok(cfg)
    }
}

/// Checkpoint objects in an S3 bucket (see the module docs for the layout).
pub struct S3Store {
    client: Arc<AmazonS3>,
    cfg: S3Config,
    root: Key,
    parts_uploaded: AtomicU64,
}

impl S3Store {
    /// Build the client; nothing is sent until the first request.
    pub fn open(cfg: S3Config) -> Result<Self, StoreError> {
        // reqwest takes the process-wide rustls provider; ring is the one this build links
        // (an error only means one is installed already).
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            // A whole-request timeout would cut off multi-GB downloads; a stalled server is
            // caught by the per-read timeout instead (retried by the client).
            .with_client_options(
                ClientOptions::new()
                    .with_timeout_disabled()
                    .with_read_timeout(Duration::from_secs(60))
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_allow_http(
                        cfg.endpoint
                            .as_deref()
                            .is_some_and(|e| e.starts_with("http://")),
                    ),
            );
        if let Some(endpoint) = &cfg.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(key) = &cfg.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &cfg.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(token) = &cfg.session_token {
            builder = builder.with_token(token);
        }
        let client = builder.build().map_err(|e| StoreError::Backend {
            store: describe(&cfg),
            op: "open",
            name: String::new(),
            hint: " (check the s3:// URL, AWS_ENDPOINT_URL, AWS_REGION and the credentials)",
            source: e.into(),
        })?;
        Ok(Self {
            client: Arc::new(client),
            root: Key::from(cfg.prefix.as_str()),
            cfg,
            parts_uploaded: AtomicU64::new(0),
        })
    }

    /// Multipart parts uploaded by this client so far (tests, benchmarks).
    pub fn parts_uploaded(&self) -> u64 {
        self.parts_uploaded.load(Ordering::Relaxed)
    }

    /// The bucket key of the blob holding bytes with `digest`.
    pub fn blob_key(&self, digest: &Hash32) -> Key {
        self.root.clone().join("blobs").join(digest.to_string())
    }

    fn name_key(&self, name: &str) -> Key {
        self.root.clone().join("names").join(name)
    }

    fn backend(&self, op: &'static str, name: &str, e: impl Into<BoxError>) -> StoreError {
        StoreError::backend(self.describe(), op, name, e)
    }

    fn map_err(&self, op: &'static str, name: &str, e: object_store::Error) -> StoreError {
        match e {
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                store: self.describe(),
                name: name.to_string(),
            },
            e => self.backend(op, name, e),
        }
    }

    /// The pointer of `name`: digest and size, or `None` when there is no such name.
    async fn pointer(&self, name: &str) -> Result<Option<(Hash32, u64)>, StoreError> {
        let got = match self.client.get(&self.name_key(name)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.backend("get", name, e)),
        };
        let text = got
            .bytes()
            .await
            .map_err(|e| self.backend("get", name, e))?;
        let parsed = std::str::from_utf8(&text).ok().and_then(|t| {
            let (digest, bytes) = t.trim().split_once(' ')?;
            Some((Hash32::from_hex(digest).ok()?, bytes.parse().ok()?))
        });
        parsed.map(Some).ok_or_else(|| {
            self.backend(
                "get",
                name,
                "pointer is not \"<digest hex> <bytes>\" (delete it and publish again)",
            )
        })
    }

    /// Read `body` fully into `first` up to `limit` bytes; true when the body ended.
    async fn fill(
        body: &mut (impl AsyncRead + Unpin),
        buf: &mut Vec<u8>,
        limit: usize,
    ) -> io::Result<bool> {
        buf.clear();
        let n = body.take(limit as u64).read_to_end(buf).await?;
        Ok(n < limit)
    }

    /// Upload `body` whose first part is `first`; returns the staging key it now lives under.
    async fn upload_multipart(
        &self,
        name: &str,
        first: Vec<u8>,
        body: &mut HashingReader<ObjectReader>,
    ) -> Result<Key, StoreError> {
        let staging = self
            .root
            .clone()
            .join("staging")
            .join(format!("{name}.{:016x}", rand::random::<u64>()));
        let mut upload = self
            .client
            .put_multipart(&staging)
            .await
            .map_err(|e| self.backend("create multipart upload", name, e))?;
        let mut in_flight = FuturesUnordered::new();
        let mut part = first;
        let sent: Result<(), StoreError> = async {
            loop {
                if !part.is_empty() {
                    in_flight.push(
                        upload.put_part(PutPayload::from(Bytes::from(std::mem::take(&mut part)))),
                    );
                    self.parts_uploaded.fetch_add(1, Ordering::Relaxed);
                }
                while in_flight.len() >= PARTS_IN_FLIGHT {
                    if let Some(done) = in_flight.next().await {
                        done.map_err(|e| self.backend("upload part", name, e))?;
                    }
                }
                let mut next = Vec::with_capacity(self.cfg.part_size);
                let ended = Self::fill(body, &mut next, self.cfg.part_size)
                    .await
                    .map_err(|e| self.backend("read", name, e))?;
                part = next;
                if ended {
                    if !part.is_empty() {
                        in_flight
                            .push(upload.put_part(PutPayload::from(Bytes::from(std::mem::take(
                                &mut part,
                            )))));
                        self.parts_uploaded.fetch_add(1, Ordering::Relaxed);
                    }
                    while let Some(done) = in_flight.next().await {
                        done.map_err(|e| self.backend("upload part", name, e))?;
                    }
                    return Ok(());
                }
            }
        }
        .await;
        drop(in_flight);
        match sent {
            Ok(()) => {
                upload
                    .complete()
                    .await
                    .map_err(|e| self.backend("complete multipart upload", name, e))?;
                Ok(staging)
            }
            Err(e) => {
                // Unfinished parts cost storage until aborted.
                let _ = upload.abort().await;
                Err(e)
            }
        }
    }

    /// Delete the blob `digest` unless a name (other than `except`) still points at it.
    async fn release_blob(&self, digest: &Hash32, except: &str) -> Result<(), StoreError> {
        for other in self.list_names().await? {
            if other != except
                && self
                    .pointer(&other)
                    .await?
                    .is_some_and(|(d, _)| d == *digest)
            {
                return Ok(());
            }
        }
        match self.client.delete(&self.blob_key(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.backend("delete", &digest.to_string(), e)),
        }
    }

    async fn list_names(&self) -> Result<Vec<String>, StoreError> {
        let names_dir = self.root.clone().join("names");
        let metas: Vec<_> = self
            .client
            .list(Some(&names_dir))
            .try_collect()
            .await
            .map_err(|e| self.backend("list", "*", e))?;
        let mut names: Vec<String> = metas
            .iter()
            .filter_map(|m| m.location.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }
}

fn describe(cfg: &S3Config) -> String {
    let at = cfg.endpoint.as_deref().unwrap_or("aws");
    format!("s3://{}/{} at {at}", cfg.bucket, cfg.prefix)
}

impl CheckpointStore for S3Store {
    fn describe(&self) -> String {
        describe(&self.cfg)
    }

    fn put<'a>(&'a self, name: &'a str, body: ObjectReader) -> StoreFuture<'a, StoredObject> {
        Box::pin(async move {
            check_name(name)?;
            let mut hashing = HashingReader::new(body);
            let mut first = Vec::new();
            let ended = Self::fill(&mut hashing, &mut first, self.cfg.part_size)
                .await
                .map_err(|e| self.backend("read", name, e))?;
            let staging = if ended {
                None
            } else {
                Some(
                    self.upload_multipart(name, std::mem::take(&mut first), &mut hashing)
                        .await?,
                )
            };
            let stored = hashing.into_stored(name);
            let blob = self.blob_key(&stored.digest);
            match staging {
                None => {
                    self.client
                        .put(&blob, PutPayload::from(first))
                        .await
                        .map_err(|e| self.backend("put", name, e))?;
                }
                Some(staging) => {
                    // Server-side copy to the content address (CopyObject: ≤ 5 GiB per object).
                    let copied = self.client.copy(&staging, &blob).await;
                    let _ = self.client.delete(&staging).await;
                    copied.map_err(|e| self.backend("copy to content address", name, e))?;
                }
            }
            let previous = self.pointer(name).await?;
            let pointer = format!("{} {}\n", stored.digest, stored.bytes);
            self.client
                .put(&self.name_key(name), PutPayload::from(pointer.into_bytes()))
                .await
                .map_err(|e| self.backend("put", name, e))?;
            if let Some((old, _)) = previous.filter(|(old, _)| *old != stored.digest) {
                self.release_blob(&old, "").await?;
            }
            Ok(stored)
        })
    }

    fn get<'a>(&'a self, name: &'a str) -> StoreFuture<'a, ObjectReader> {
        Box::pin(async move {
            check_name(name)?;
            let (digest, bytes) =
                self.pointer(name)
                    .await?
                    .ok_or_else(|| StoreError::NotFound {
                        store: self.describe(),
                        name: name.to_string(),
                    })?;
            let got = self
                .client
                .get(&self.blob_key(&digest))
                .await
                .map_err(|e| self.map_err("get", name, e))?;
            Ok(Box::pin(VerifiedBody {
                stream: got.into_stream(),
                pending: Bytes::new(),
                hasher: Blake2b::new(),
                bytes: 0,
                expected: (digest, bytes),
                name: name.to_string(),
                done: false,
            }) as ObjectReader)
        })
    }

    fn delete<'a>(&'a self, name: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            check_name(name)?;
            let Some((digest, _)) = self.pointer(name).await? else {
                return Ok(());
            };
            match self.client.delete(&self.name_key(name)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.backend("delete", name, e)),
            }
            self.release_blob(&digest, name).await
        })
    }

    fn list(&self) -> StoreFuture<'_, Vec<String>> {
        Box::pin(self.list_names())
    }
}

/// A blob download that hashes as it streams and fails at the end on a digest or size
/// mismatch.
struct VerifiedBody {
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    pending: Bytes,
    hasher: Blake2b<U32>,
    bytes: u64,
    expected: (Hash32, u64),
    name: String,
    done: bool,
}

impl AsyncRead for VerifiedBody {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.pending.is_empty() && !this.done {
            match this.stream.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    this.hasher.update(&chunk);
                    this.bytes += chunk.len() as u64;
                    this.pending = chunk;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io::Error::other(e))),
                Poll::Ready(None) => {
                    this.done = true;
                    let digest = Hash32::from(<[u8; 32]>::from(this.hasher.finalize_reset()));
                    let (want, want_bytes) = &this.expected;
                    if digest != *want || this.bytes != *want_bytes {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "object {:?}: the bucket returned {} bytes with digest {digest}, \
                                 its pointer says {want_bytes} bytes with digest {want}: the blob \
                                 was altered or truncated; publish the checkpoint again",
                                this.name, this.bytes
                            ),
                        )));
                    }
                }
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_and_env_make_a_config_and_bad_urls_say_how_to_fix_them() {
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("AKID".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("very-secret".to_string()),
            "AWS_REGION" => Some("eu-west-1".to_string()),
            _ => None,
        };
        let cfg = S3Config::from_url_with_env(
            "s3://ckpts/run-7/?endpoint=http://127.0.0.1:9000&part_mib=8",
            env,
        )
        .unwrap();
        assert_eq!(
            (cfg.bucket.as_str(), cfg.prefix.as_str()),
            ("ckpts", "run-7")
        );
        assert_eq!(cfg.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!((cfg.region.as_str(), cfg.part_size), ("eu-west-1", 8 << 20));
        assert!(!format!("{cfg:?}").contains("very-secret"));
        for (url, says) in [
            ("nats", "s3://<bucket>"),
            ("s3:///x", "names no bucket"),
            ("s3://b/p?part_mib=1", "at least 5"),
            ("s3://b/p?secret=x", "unknown option"),
        ] {
            let err = S3Config::from_url_with_env(url, |_| None).unwrap_err();
            assert!(err.contains(says), "{url}: {err}");
        }
    }
}
