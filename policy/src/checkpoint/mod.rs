//! Weight sets: the in-memory form of a checkpoint, its canonical digest and safetensors I/O.
//!
//! A [`WeightSet`] maps tensor names to CPU tensors. The map is a `BTreeMap`, so iteration is
//! always in byte-wise name order: this is the canonical order used by the digest, the delta
//! codec and the safetensors header.

mod cast;
mod digest;
mod dither;
mod io;
mod raw;

pub use cast::{cast_floats, committed_float_dtype};
pub use digest::{digest, digest_hex, WeightDigest, WeightHasher, DIGEST_DOMAIN};
pub use dither::Rounding;
pub use io::{from_safetensors_bytes, load_safetensors, save_safetensors, to_safetensors_bytes};
pub use raw::{dtype_code, dtype_from_code, dtype_name, tensor_from_le_bytes, tensor_to_le_bytes};
pub(crate) use raw::{memory_bounded_batches, visit_le_bytes};

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{DType, Tensor};

/// Named weights of one model, iterated in canonical (byte-wise sorted) name order.
pub type WeightSet = BTreeMap<String, Tensor>;

/// Failures while hashing, saving or loading a [`WeightSet`].
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("tensor `{tensor}` has dtype {dtype:?}, which checkpoints do not support (use f32, bf16, f16, f64, u8, u32, i16, i32 or i64)")]
    UnsupportedDtype { tensor: String, dtype: DType },
    #[error("safetensors data {origin}: tensor `{tensor}` has dtype {dtype}, which checkpoints do not support")]
    UnsupportedFileDtype {
        origin: String,
        tensor: String,
        dtype: String,
    },
    #[error("tensor `{tensor}`: {source}")]
    Tensor {
        tensor: String,
        #[source]
        source: candle_core::Error,
    },
    #[error("I/O error on `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("safetensors data {origin} is invalid: {source}")]
    Safetensors {
        origin: String,
        #[source]
        source: safetensors::SafeTensorError,
    },
}
