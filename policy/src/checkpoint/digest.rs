//! Canonical BLAKE2b-256 digest of a [`WeightSet`].

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};

use candle_core::Tensor;

use std::collections::BTreeMap;

use super::{dtype_name, visit_le_bytes, CheckpointError, WeightSet};

/// 32-byte digest of a weight set.
pub type WeightDigest = [u8; 32];

/// Domain-separation tag hashed first, so a weight digest can never collide with another
/// BLAKE2b-256 use in the protocol.
pub const DIGEST_DOMAIN: &[u8] = b"grail-weights-v1";

fn put_u64(hasher: &mut Blake2b<U32>, value: u64) {
    hasher.update(value.to_le_bytes());
}

fn put_bytes(hasher: &mut Blake2b<U32>, bytes: &[u8]) {
    put_u64(hasher, bytes.len() as u64);
    hasher.update(bytes);
}

/// BLAKE2b-256 digest of a weight set, independent of how it is stored.
///
/// Byte layout hashed (unkeyed BLAKE2b with a 32-byte output; `u64` = 8-byte little-endian;
/// `bytes(x)` = `u64 len(x)` followed by `x`):
///
/// ```text
/// bytes("grail-weights-v1")             domain tag
/// u64 tensor_count
/// for each tensor, names in byte-wise lexicographic order (BTreeMap<String, _> order):
///     bytes(name)                       UTF-8
///     bytes(dtype)                      safetensors spelling: "F32", "BF16", "F16", "F64",
///                                       "U8", "U32", "I16", "I32", "I64"
///     u64 rank, then u64 dim for each dimension (row-major shape, outermost first)
///     bytes(data)                       elements in row-major order, each little-endian
/// ```
///
/// The digest covers names, dtypes, shapes and every bit of every value, so a set that is
/// saved and loaded again, or rebuilt from a delta, hashes identically.
pub fn digest(weights: &WeightSet) -> Result<WeightDigest, CheckpointError> {
    let mut hasher = WeightHasher::new(weights.len());
    visit_le_bytes(weights, &BTreeMap::new(), |name, tensor, bytes| {
        hasher.add(name, tensor, bytes)
    })?;
    Ok(hasher.finish())
}

/// Incremental form of [`digest`] for callers that already hold each tensor's raw bytes
/// (the delta codec), so the bytes are not produced twice. Tensors must be added in
/// canonical name order; the result equals [`digest`] of the same set.
pub struct WeightHasher {
    hasher: Blake2b<U32>,
}

impl WeightHasher {
    /// Starts a digest over `tensor_count` tensors.
    pub fn new(tensor_count: usize) -> Self {
        let mut hasher = Blake2b::<U32>::new();
        put_bytes(&mut hasher, DIGEST_DOMAIN);
        put_u64(&mut hasher, tensor_count as u64);
        Self { hasher }
    }

    /// Adds one tensor; `le_bytes` must be [`super::tensor_to_le_bytes`] of `tensor`.
    pub fn add(
        &mut self,
        name: &str,
        tensor: &Tensor,
        le_bytes: &[u8],
    ) -> Result<(), CheckpointError> {
        let dtype =
            dtype_name(tensor.dtype()).ok_or_else(|| CheckpointError::UnsupportedDtype {
                tensor: name.to_string(),
                dtype: tensor.dtype(),
            })?;
        put_bytes(&mut self.hasher, name.as_bytes());
        put_bytes(&mut self.hasher, dtype.as_bytes());
        let dims = tensor.dims();
        put_u64(&mut self.hasher, dims.len() as u64);
        for &dim in dims {
            put_u64(&mut self.hasher, dim as u64);
        }
        put_bytes(&mut self.hasher, le_bytes);
        Ok(())
    }

    /// The finished digest.
    pub fn finish(self) -> WeightDigest {
        self.hasher.finalize().into()
    }
}

/// [`digest`] as lowercase hex (64 characters), for logs and metadata files.
pub fn digest_hex(weights: &WeightSet) -> Result<String, CheckpointError> {
    let bytes = digest(weights)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
