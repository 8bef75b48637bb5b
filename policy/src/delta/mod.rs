//! Bit-exact sparse deltas between two checkpoints with the same names, shapes and dtypes.
//!
//! # Wire format (version 1)
//!
//! ```text
//! "GRLDELTA"            8 bytes magic
//! u32 version = 1       little-endian
//! base digest           32 bytes, crate::checkpoint::digest of the base set
//! target digest         32 bytes, digest of the set the delta produces
//! u64 body_len          little-endian, exact decompressed body length
//! zstd frame            the body, with zstd's content checksum
//! ```
//!
//! The body (`varint` = unsigned LEB128):
//!
//! ```text
//! varint entry_count
//! entry_count times, names strictly increasing byte-wise; tensors without changes are omitted:
//!     varint name_len, name (UTF-8)
//!     u8 dtype code            (crate::checkpoint::dtype_code: 0 F32, 1 BF16, 2 F16, ...)
//!     varint element_count     must equal the base tensor's
//!     u8 encoding              0 = sparse, 1 = dense
//!     sparse: varint nnz, then nnz varint position gaps (the first is the absolute flat
//!             row-major index, each next one is index - previous_index - 1), then nnz
//!             residuals
//!     dense:  element_count residuals
//! ```
//!
//! A residual is `new_bits XOR base_bits` of one element, and residual arrays are stored in
//! byte-plane order (byte 0 of every element, then byte 1, ...). Reconstruction is therefore
//! pure bit manipulation: it is bit-exact for every value, `-0.0` and NaN payloads included,
//! while the mostly-zero high bytes of small updates compress well. Each changed tensor is
//! stored sparse or dense, whichever is smaller before compression.
//!
//! [`apply_delta`] checks the base digest before doing anything and the target digest of the
//! result, so a delta applied to the wrong base or corrupted in transit is always rejected
//! with a typed error, never silently accepted.

mod apply;
mod body;
mod encode;
mod format;

pub use apply::{apply_delta, apply_delta_chain};
pub use encode::{encode_delta, encode_delta_with};
pub use format::DeltaHeader;

use candle_core::DType;

use crate::checkpoint::CheckpointError;

/// Encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaOptions {
    /// zstd level (1..=22); 3 is zstd's default and a good speed/size trade-off here.
    pub zstd_level: i32,
}

impl Default for DeltaOptions {
    fn default() -> Self {
        Self { zstd_level: 3 }
    }
}

/// What an encoded delta contains (for logs and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeltaStats {
    pub tensors_total: usize,
    pub tensors_sparse: usize,
    pub tensors_dense: usize,
    pub elements_total: u64,
    pub elements_changed: u64,
    /// Body size before compression.
    pub body_bytes: u64,
    /// Full encoded size (header + compressed body).
    pub encoded_bytes: u64,
}

impl DeltaStats {
    /// Fraction of elements that did not change (1.0 = identical sets).
    pub fn sparsity(&self) -> f64 {
        if self.elements_total == 0 {
            1.0
        } else {
            1.0 - self.elements_changed as f64 / self.elements_total as f64
        }
    }
}

/// Failures while encoding or applying a delta. Variants name the tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("tensor `{tensor}` exists only in the {side} weight set; deltas need identical names")]
    NameSetsDiffer { tensor: String, side: &'static str },
    #[error("tensor `{tensor}` changed shape from {base:?} to {new:?}; deltas need identical shapes (publish a full checkpoint instead)")]
    ShapeMismatch {
        tensor: String,
        base: Vec<usize>,
        new: Vec<usize>,
    },
    #[error("tensor `{tensor}` changed dtype from {base:?} to {new:?}; deltas need identical dtypes (publish a full checkpoint instead)")]
    DtypeMismatch {
        tensor: String,
        base: DType,
        new: DType,
    },
    #[error("not a grail delta (bad magic bytes)")]
    NotADelta,
    #[error("unsupported delta format version {found} (this build reads version 1)")]
    UnsupportedVersion { found: u32 },
    #[error("delta truncated while reading {what}: needed {needed} bytes, {available} available")]
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("delta applies to base {expected}, but the given weights hash to {actual}; apply the missing deltas first or fetch the right base")]
    WrongBase { expected: String, actual: String },
    #[error("delta result hashes to {actual}, expected {expected}: the delta is corrupted")]
    TargetMismatch { expected: String, actual: String },
    #[error("delta body is corrupted{}: {reason}", tensor.as_ref().map(|t| format!(" at tensor `{t}`")).unwrap_or_default())]
    Corrupt {
        tensor: Option<String>,
        reason: String,
    },
    #[error("delta body does not decompress: {0}")]
    Decompress(#[source] std::io::Error),
    #[error("compressing the delta body failed: {0}")]
    Compress(#[source] std::io::Error),
    #[error("delta {index} of the chain failed: {source}")]
    ChainStep {
        index: usize,
        #[source]
        source: Box<DeltaError>,
    },
}

pub(crate) fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A [`DeltaError::Corrupt`] for `tensor` (None: the stream itself).
fn corrupt(tensor: Option<&str>, reason: impl Into<String>) -> DeltaError {
    DeltaError::Corrupt {
        tensor: tensor.map(str::to_string),
        reason: reason.into(),
    }
}
