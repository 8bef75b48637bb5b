//! Fetch-and-verify steps for one checkpoint object. IO is async; parsing, hashing and delta
//! application run on tokio's blocking threads so a multi-GB checkpoint never stalls an actor.

use std::sync::Arc;

use messages::{CheckpointAnnounce, Hash32};
use policy::checkpoint::{digest, from_safetensors_bytes, CheckpointError, WeightSet};
use policy::delta::{apply_delta, DeltaError, DeltaHeader};

use super::store::{get_bytes, CheckpointStore, StoreError};

/// Why a checkpoint could not be loaded. `reason()` labels metrics.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("checkpoint seq {seq}: {source}")]
    Store {
        seq: u64,
        #[source]
        source: StoreError,
    },
    #[error("checkpoint seq {seq}: object {object} has {found_bytes} bytes / digest {found}, the announcement says {bytes} bytes / {expected} (corrupted or replaced in the store)")]
    ObjectDigest {
        seq: u64,
        object: String,
        found_bytes: u64,
        bytes: u64,
        found: Hash32,
        expected: Hash32,
    },
    #[error("checkpoint seq {seq}: object {object} does not parse: {source}")]
    Corrupt {
        seq: u64,
        object: String,
        #[source]
        source: Box<CheckpointError>,
    },
    #[error("checkpoint seq {seq}: weights hash to {found}, the announcement says {expected}")]
    WeightDigest {
        seq: u64,
        found: Hash32,
        expected: Hash32,
    },
    #[error("checkpoint seq {seq}: delta links {found}, the announcement says {announced}")]
    DeltaHeader {
        seq: u64,
        /// `base → target` digests as the delta header has them.
        found: String,
        announced: String,
    },
    #[error("checkpoint seq {seq}: applying the delta failed: {source}")]
    DeltaApply {
        seq: u64,
        #[source]
        source: Box<DeltaError>,
    },
    #[error("checkpoint seq {seq} depends on {base}, which is {why}")]
    BaseUnavailable { seq: u64, base: Hash32, why: String },
    #[error("checkpoint seq {seq} was never announced by a trusted publisher (list them with `grail tail 'grail.checkpoint.*' --stream`)")]
    NotAnnounced { seq: u64 },
    /// The blocking task panicked or was cancelled (the runtime shutting down).
    #[error("checkpoint seq {seq}: worker thread failed: {source}")]
    Worker {
        seq: u64,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl LoadError {
    pub fn reason(&self) -> &'static str {
        match self {
            LoadError::Store { source, .. } => source.reason(),
            LoadError::ObjectDigest { .. } => "object_digest_mismatch",
            LoadError::Corrupt { .. } => "object_corrupt",
            LoadError::WeightDigest { .. } => "weight_digest_mismatch",
            LoadError::DeltaHeader { .. } => "delta_header_mismatch",
            LoadError::DeltaApply { .. } => "delta_apply_failed",
            LoadError::BaseUnavailable { .. } => "base_unavailable",
            LoadError::NotAnnounced { .. } => "not_announced",
            LoadError::Worker { .. } => "worker_failed",
        }
    }

    /// Worth another try later (the store hiccupped), as opposed to a definite defect.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LoadError::Store {
                source: StoreError::Backend { .. },
                ..
            } | LoadError::Worker { .. }
        )
    }
}

/// Fetch the announced object and check its size and digest.
pub async fn fetch_verified(
    store: &dyn CheckpointStore,
    a: &CheckpointAnnounce,
    max_bytes: u64,
) -> Result<Vec<u8>, LoadError> {
    let (bytes, found) = get_bytes(store, &a.object, max_bytes.min(a.bytes))
        .await
        .map_err(|source| LoadError::Store { seq: a.seq, source })?;
    if found != a.object_digest || bytes.len() as u64 != a.bytes {
        return Err(LoadError::ObjectDigest {
            seq: a.seq,
            object: a.object.clone(),
            found_bytes: bytes.len() as u64,
            bytes: a.bytes,
            found,
            expected: a.object_digest,
        });
    }
    Ok(bytes)
}

async fn blocking<T: Send + 'static>(
    seq: u64,
    f: impl FnOnce() -> Result<T, LoadError> + Send + 'static,
) -> Result<T, LoadError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| LoadError::Worker { seq, source })?
}

/// Parse full safetensors bytes and check the weight digest against `expected`.
pub async fn decode_full(
    seq: u64,
    object: String,
    bytes: Vec<u8>,
    expected: Hash32,
) -> Result<Arc<WeightSet>, LoadError> {
    blocking(seq, move || {
        let weights =
            from_safetensors_bytes(&bytes, &object).map_err(|source| LoadError::Corrupt {
                seq,
                object: object.clone(),
                source: Box::new(source),
            })?;
        let found = Hash32::from(digest(&weights).map_err(|source| LoadError::Corrupt {
            seq,
            object,
            source: Box::new(source),
        })?);
        if found != expected {
            return Err(LoadError::WeightDigest {
                seq,
                found,
                expected,
            });
        }
        Ok(Arc::new(weights))
    })
    .await
}

/// Apply delta bytes to `base` (whose digest is `base_digest`); the codec checks the base
/// digest and the result digest, and the header must link the announced digests.
pub async fn decode_delta(
    seq: u64,
    base: Arc<WeightSet>,
    base_digest: Hash32,
    bytes: Vec<u8>,
    target: Hash32,
) -> Result<Arc<WeightSet>, LoadError> {
    blocking(seq, move || {
        let header = DeltaHeader::parse(&bytes).map_err(|source| LoadError::DeltaApply {
            seq,
            source: Box::new(source),
        })?;
        let (found_base, found_target) = (
            Hash32::from(header.base_digest),
            Hash32::from(header.target_digest),
        );
        if found_base != base_digest || found_target != target {
            return Err(LoadError::DeltaHeader {
                seq,
                found: format!("{found_base} → {found_target}"),
                announced: format!("{base_digest} → {target}"),
            });
        }
        let weights = apply_delta(&base, &bytes).map_err(|source| LoadError::DeltaApply {
            seq,
            source: Box::new(source),
        })?;
        Ok(Arc::new(weights))
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[tokio::test]
    async fn a_panicking_decode_keeps_the_join_error() {
        let err = blocking::<()>(7, || panic!("decoder bug"))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "worker_failed");
        assert!(err.is_transient());
        let join = err
            .source()
            .and_then(|s| s.downcast_ref::<tokio::task::JoinError>())
            .expect("the JoinError is the source");
        assert!(join.is_panic(), "{join}");
    }

    #[tokio::test]
    async fn unparsable_bytes_keep_the_checkpoint_error() {
        let err = decode_full(
            3,
            "c3.safetensors".into(),
            b"not safetensors".to_vec(),
            Hash32::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.reason(), "object_corrupt");
        assert!(err
            .source()
            .is_some_and(|s| s.downcast_ref::<Box<CheckpointError>>().is_some()));
    }
}
