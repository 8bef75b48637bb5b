//! Delta decoder: verifies the base, rebuilds the changed tensors, verifies the result.

use std::io::Read;

use super::body::decode_body;
use super::format::{DeltaHeader, HEADER_LEN};
use super::{corrupt, hex, DeltaError};
use crate::checkpoint::{
    digest, tensor_from_le_bytes, visit_le_bytes, WeightDigest, WeightHasher, WeightSet,
};

/// Applies one delta to `base`, checking the base digest first and the result digest last.
pub fn apply_delta(base: &WeightSet, delta: &[u8]) -> Result<WeightSet, DeltaError> {
    let base_digest = digest(base)?;
    apply_verified(base, &base_digest, delta).map(|(weights, _)| weights)
}

/// Applies deltas oldest-first; each one must start where the previous one ended.
/// Every step is verified, and the base is hashed only once.
pub fn apply_delta_chain<I, D>(base: &WeightSet, deltas: I) -> Result<WeightSet, DeltaError>
where
    I: IntoIterator<Item = D>,
    D: AsRef<[u8]>,
{
    let mut current = base.clone();
    let mut current_digest = digest(base)?;
    for (index, delta) in deltas.into_iter().enumerate() {
        let (next, next_digest) = apply_verified(&current, &current_digest, delta.as_ref())
            .map_err(|source| DeltaError::ChainStep {
                index,
                source: Box::new(source),
            })?;
        current = next;
        current_digest = next_digest;
    }
    Ok(current)
}

/// The largest body a genuine delta over `base` can have: every tensor dense, plus framing.
fn max_body_len(base: &WeightSet) -> u64 {
    let per_tensor: u64 = base
        .iter()
        .map(|(name, t)| (t.elem_count() * t.dtype().size_in_bytes() + name.len() + 32) as u64)
        .sum();
    per_tensor + 16
}

fn apply_verified(
    base: &WeightSet,
    base_digest: &WeightDigest,
    delta: &[u8],
) -> Result<(WeightSet, WeightDigest), DeltaError> {
    let header = DeltaHeader::parse(delta)?;
    if header.base_digest != *base_digest {
        return Err(DeltaError::WrongBase {
            expected: hex(&header.base_digest),
            actual: hex(base_digest),
        });
    }
    let limit = max_body_len(base);
    if header.body_len > limit {
        return Err(corrupt(
            None,
            format!(
                "declared body length {} exceeds the {limit} bytes any delta over this base can need",
                header.body_len
            ),
        ));
    }
    let body = decompress(&delta[HEADER_LEN..], header.body_len)?;
    let changed = decode_body(base, &body)?;

    let mut result = WeightSet::new();
    for (name, base_tensor) in base {
        let tensor = match changed.get(name) {
            Some(bytes) => {
                tensor_from_le_bytes(name, bytes, base_tensor.dtype(), base_tensor.dims())?
            }
            None => base_tensor.clone(),
        };
        result.insert(name.clone(), tensor);
    }
    let mut hasher = WeightHasher::new(result.len());
    visit_le_bytes(&result, &changed, |name, tensor, bytes| {
        hasher.add(name, tensor, bytes)
    })?;
    let target_digest = hasher.finish();
    if target_digest != header.target_digest {
        return Err(DeltaError::TargetMismatch {
            expected: hex(&header.target_digest),
            actual: hex(&target_digest),
        });
    }
    Ok((result, target_digest))
}

fn decompress(compressed: &[u8], body_len: u64) -> Result<Vec<u8>, DeltaError> {
    let decoder = zstd::stream::Decoder::new(compressed).map_err(DeltaError::Decompress)?;
    let mut body = Vec::with_capacity(body_len as usize);
    // One byte more than declared, so an over-long body is detected instead of cut short.
    decoder
        .take(body_len + 1)
        .read_to_end(&mut body)
        .map_err(DeltaError::Decompress)?;
    if body.len() as u64 != body_len {
        return Err(corrupt(
            None,
            format!(
                "body decompresses to {} bytes, header declares {body_len}",
                body.len()
            ),
        ));
    }
    Ok(body)
}
