//! Delta decoder: verifies the base, rebuilds the changed tensors, verifies the result.

use std::collections::BTreeMap;
use std::io::Read;

use super::format::{BodyReader, DeltaHeader, ENCODING_DENSE, ENCODING_SPARSE, HEADER_LEN};
use super::{hex, DeltaError};
use crate::checkpoint::{
    digest, dtype_code, tensor_from_le_bytes, tensor_to_le_bytes, WeightDigest, WeightHasher,
    WeightSet,
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
    let mut hasher = WeightHasher::new(base.len());
    for (name, base_tensor) in base {
        if let Some(bytes) = changed.get(name) {
            let tensor =
                tensor_from_le_bytes(name, bytes, base_tensor.dtype(), base_tensor.dims())?;
            hasher.add(name, &tensor, bytes)?;
            result.insert(name.clone(), tensor);
        } else {
            hasher.add(name, base_tensor, &tensor_to_le_bytes(name, base_tensor)?)?;
            result.insert(name.clone(), base_tensor.clone());
        }
    }
    let target_digest = hasher.finish();
    if target_digest != header.target_digest {
        return Err(DeltaError::TargetMismatch {
            expected: hex(&header.target_digest),
            actual: hex(&target_digest),
        });
    }
    Ok((result, target_digest))
}

fn corrupt(tensor: Option<&str>, reason: impl Into<String>) -> DeltaError {
    DeltaError::Corrupt {
        tensor: tensor.map(str::to_string),
        reason: reason.into(),
    }
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

/// Decodes every entry into the new raw bytes of the tensors it changes.
fn decode_body(base: &WeightSet, body: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, DeltaError> {
    let mut reader = BodyReader::new(body);
    let entry_count = reader.varint("entry count")?;
    if entry_count > base.len() as u64 {
        return Err(corrupt(
            None,
            format!(
                "{entry_count} entries but the base has {} tensors",
                base.len()
            ),
        ));
    }
    let mut changed = BTreeMap::new();
    let mut previous: Option<String> = None;
    for _ in 0..entry_count {
        let name_len = reader.varint("tensor name length")?;
        let name_len = usize::try_from(name_len).map_err(|_| corrupt(None, "name too long"))?;
        let name = std::str::from_utf8(reader.take(name_len, "tensor name")?)
            .map_err(|_| corrupt(None, "tensor name is not UTF-8"))?
            .to_string();
        if previous.as_ref().is_some_and(|p| *p >= name) {
            return Err(corrupt(
                Some(&name),
                "entries are not in strictly increasing name order",
            ));
        }
        let base_tensor = base
            .get(&name)
            .ok_or_else(|| corrupt(Some(&name), "no tensor of this name in the base"))?;
        let code = reader.u8("dtype code")?;
        if Some(code) != dtype_code(base_tensor.dtype()) {
            return Err(corrupt(
                Some(&name),
                format!(
                    "dtype code {code} does not match the base dtype {:?}",
                    base_tensor.dtype()
                ),
            ));
        }
        let element_count = reader.varint("element count")?;
        if element_count != base_tensor.elem_count() as u64 {
            return Err(corrupt(
                Some(&name),
                format!(
                    "{element_count} elements, base has {}",
                    base_tensor.elem_count()
                ),
            ));
        }
        let mut bytes = tensor_to_le_bytes(&name, base_tensor)?;
        let mut patch = Patch {
            reader: &mut reader,
            name: &name,
        };
        match base_tensor.dtype().size_in_bytes() {
            1 => patch.apply::<1>(&mut bytes)?,
            2 => patch.apply::<2>(&mut bytes)?,
            4 => patch.apply::<4>(&mut bytes)?,
            _ => patch.apply::<8>(&mut bytes)?,
        }
        changed.insert(name.clone(), bytes);
        previous = Some(name);
    }
    if !reader.is_at_end() {
        return Err(corrupt(None, "trailing bytes after the last entry"));
    }
    Ok(changed)
}

/// Applies one entry's residuals to a copy of the base tensor's bytes.
struct Patch<'r, 'a> {
    reader: &'r mut BodyReader<'a>,
    name: &'r str,
}

impl Patch<'_, '_> {
    fn apply<const W: usize>(&mut self, bytes: &mut [u8]) -> Result<(), DeltaError> {
        let (values, _) = bytes.as_chunks_mut::<W>();
        let element_count = values.len();
        match self.reader.u8("encoding")? {
            ENCODING_SPARSE => {
                let nnz = self.reader.varint("changed count")?;
                if nnz == 0 || nnz > element_count as u64 {
                    return Err(corrupt(Some(self.name), format!("{nnz} changed elements")));
                }
                let nnz = nnz as usize;
                let mut positions = Vec::with_capacity(nnz);
                let mut next_min = 0u64;
                for _ in 0..nnz {
                    let gap = self.reader.varint("position gap")?;
                    let position = next_min
                        .checked_add(gap)
                        .filter(|&p| p < element_count as u64)
                        .ok_or_else(|| corrupt(Some(self.name), "position out of range"))?;
                    positions.push(position as usize);
                    next_min = position + 1;
                }
                let planes = self.reader.take(nnz * W, "sparse residuals")?;
                for (k, &position) in positions.iter().enumerate() {
                    for (b, byte) in values[position].iter_mut().enumerate() {
                        *byte ^= planes[b * nnz + k];
                    }
                }
            }
            ENCODING_DENSE => {
                let planes = self.reader.take(element_count * W, "dense residuals")?;
                for (i, value) in values.iter_mut().enumerate() {
                    for (b, byte) in value.iter_mut().enumerate() {
                        *byte ^= planes[b * element_count + i];
                    }
                }
            }
            other => {
                return Err(corrupt(
                    Some(self.name),
                    format!("unknown encoding {other}"),
                ))
            }
        }
        Ok(())
    }
}
