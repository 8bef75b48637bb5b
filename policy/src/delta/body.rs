//! Delta body decoding: a sequential, fully validating parse into per-tensor patches, then
//! the patches applied to copies of the base tensors in parallel.

use std::collections::BTreeMap;

use rayon::prelude::*;

use super::format::{BodyReader, ENCODING_DENSE, ENCODING_SPARSE};
use super::{corrupt, DeltaError};
use crate::checkpoint::{dtype_code, memory_bounded_batches, tensor_to_le_bytes, WeightSet};

/// One tensor's validated change.
struct Patch<'a> {
    name: String,
    width: usize,
    /// Changed element indices (sparse), or `None` for a dense residual.
    positions: Option<Vec<usize>>,
    /// Residuals in byte-plane order.
    planes: &'a [u8],
}

/// Decodes every entry into the new raw bytes of the tensors it changes.
pub(super) fn decode_body(
    base: &WeightSet,
    body: &[u8],
) -> Result<BTreeMap<String, Vec<u8>>, DeltaError> {
    let patches = parse_patches(base, body)?;
    let size = |p: &Patch| base[&p.name].elem_count() * p.width;
    let mut changed = BTreeMap::new();
    for batch in memory_bounded_batches(&patches, size) {
        let patched = batch
            .par_iter()
            .map(|patch| {
                let mut bytes = tensor_to_le_bytes(&patch.name, &base[&patch.name])?;
                match patch.width {
                    1 => patch.apply::<1>(&mut bytes),
                    2 => patch.apply::<2>(&mut bytes),
                    4 => patch.apply::<4>(&mut bytes),
                    _ => patch.apply::<8>(&mut bytes),
                }
                Ok((patch.name.clone(), bytes))
            })
            .collect::<Result<Vec<_>, DeltaError>>()?;
        changed.extend(patched);
    }
    Ok(changed)
}

fn parse_patches<'a>(base: &WeightSet, body: &'a [u8]) -> Result<Vec<Patch<'a>>, DeltaError> {
    let mut reader = BodyReader::new(body);
    let entry_count = reader.varint("entry count")?;
    if entry_count > base.len() as u64 {
        let reason = format!(
            "{entry_count} entries but the base has {} tensors",
            base.len()
        );
        return Err(corrupt(None, reason));
    }
    let mut patches: Vec<Patch> = Vec::with_capacity(entry_count as usize);
    for _ in 0..entry_count {
        let name_len = reader.varint("tensor name length")?;
        let name_len = usize::try_from(name_len).map_err(|_| corrupt(None, "name too long"))?;
        let name = std::str::from_utf8(reader.take(name_len, "tensor name")?)
            .map_err(|_| corrupt(None, "tensor name is not UTF-8"))?
            .to_string();
        if patches.last().is_some_and(|p| p.name >= name) {
            let reason = "entries are not in strictly increasing name order";
            return Err(corrupt(Some(&name), reason));
        }
        let base_tensor = base
            .get(&name)
            .ok_or_else(|| corrupt(Some(&name), "no tensor of this name in the base"))?;
        let code = reader.u8("dtype code")?;
        if Some(code) != dtype_code(base_tensor.dtype()) {
            let reason = format!(
                "dtype code {code} does not match the base dtype {:?}",
                base_tensor.dtype()
            );
            return Err(corrupt(Some(&name), reason));
        }
        let element_count = base_tensor.elem_count();
        let declared = reader.varint("element count")?;
        if declared != element_count as u64 {
            let reason = format!("{declared} elements, base has {element_count}");
            return Err(corrupt(Some(&name), reason));
        }
        let width = base_tensor.dtype().size_in_bytes();
        let (positions, planes) = match reader.u8("encoding")? {
            ENCODING_SPARSE => {
                let positions = read_positions(&mut reader, element_count, &name)?;
                let planes = reader.take(positions.len() * width, "sparse residuals")?;
                (Some(positions), planes)
            }
            ENCODING_DENSE => (None, reader.take(element_count * width, "dense residuals")?),
            other => return Err(corrupt(Some(&name), format!("unknown encoding {other}"))),
        };
        patches.push(Patch {
            name,
            width,
            positions,
            planes,
        });
    }
    if !reader.is_at_end() {
        return Err(corrupt(None, "trailing bytes after the last entry"));
    }
    Ok(patches)
}

/// Reads `nnz` and the position gaps; every position is checked to be in range.
fn read_positions(
    reader: &mut BodyReader,
    element_count: usize,
    name: &str,
) -> Result<Vec<usize>, DeltaError> {
    let nnz = reader.varint("changed count")?;
    if nnz == 0 || nnz > element_count as u64 {
        return Err(corrupt(Some(name), format!("{nnz} changed elements")));
    }
    let mut positions = Vec::with_capacity(nnz as usize);
    let mut next_min = 0u64;
    for _ in 0..nnz {
        let gap = reader.varint("position gap")?;
        let position = next_min
            .checked_add(gap)
            .filter(|&p| p < element_count as u64)
            .ok_or_else(|| corrupt(Some(name), "position out of range"))?;
        positions.push(position as usize);
        next_min = position + 1;
    }
    Ok(positions)
}

impl Patch<'_> {
    /// XORs the residuals into `bytes` (the base tensor's raw bytes); sizes were validated.
    fn apply<const W: usize>(&self, bytes: &mut [u8]) {
        let (values, _) = bytes.as_chunks_mut::<W>();
        match &self.positions {
            Some(positions) => {
                let nnz = positions.len();
                for (k, &position) in positions.iter().enumerate() {
                    for (b, byte) in values[position].iter_mut().enumerate() {
                        *byte ^= self.planes[b * nnz + k];
                    }
                }
            }
            None => {
                let count = values.len();
                for (i, value) in values.iter_mut().enumerate() {
                    for (b, byte) in value.iter_mut().enumerate() {
                        *byte ^= self.planes[b * count + i];
                    }
                }
            }
        }
    }
}
