//! Delta encoder.

use std::io::Write;

use rayon::prelude::*;

use super::format::{
    put_varint, varint_len, DeltaHeader, ENCODING_DENSE, ENCODING_SPARSE, HEADER_LEN,
};
use super::{DeltaError, DeltaOptions, DeltaStats};
use crate::checkpoint::{
    dtype_code, memory_bounded_batches, tensor_to_le_bytes, WeightHasher, WeightSet,
};

/// Encodes the change from `base` to `new` with default options.
pub fn encode_delta(base: &WeightSet, new: &WeightSet) -> Result<Vec<u8>, DeltaError> {
    encode_delta_with(base, new, &DeltaOptions::default()).map(|(bytes, _)| bytes)
}

/// Encodes the change from `base` to `new`; both must have the same names, shapes and dtypes.
pub fn encode_delta_with(
    base: &WeightSet,
    new: &WeightSet,
    options: &DeltaOptions,
) -> Result<(Vec<u8>, DeltaStats), DeltaError> {
    check_same_layout(base, new)?;
    let mut base_hasher = WeightHasher::new(base.len());
    let mut target_hasher = WeightHasher::new(new.len());
    let mut stats = DeltaStats {
        tensors_total: base.len(),
        ..DeltaStats::default()
    };
    let mut entries = Vec::new();
    let mut entry_count = 0u64;
    let names: Vec<&String> = base.keys().collect();
    let size = |name: &&String| base[*name].elem_count() * base[*name].dtype().size_in_bytes();
    for batch in memory_bounded_batches(&names, size) {
        // Diff the tensors of a batch in parallel; hash and append them in canonical order.
        let prepared = batch
            .par_iter()
            .map(|name| PreparedTensor::new(name, base, new))
            .collect::<Result<Vec<_>, DeltaError>>()?;
        let (hashed_base, hashed_target) = rayon::join(
            || -> Result<(), DeltaError> {
                for p in &prepared {
                    base_hasher.add(p.name, &base[p.name], &p.base_bytes)?;
                }
                Ok(())
            },
            || -> Result<(), DeltaError> {
                for p in &prepared {
                    target_hasher.add(p.name, &new[p.name], &p.new_bytes)?;
                }
                Ok(())
            },
        );
        hashed_base?;
        hashed_target?;
        for p in prepared {
            stats.elements_total += base[p.name].elem_count() as u64;
            match p.outcome {
                EntryOutcome::Unchanged => continue,
                EntryOutcome::Sparse(changed) => {
                    stats.tensors_sparse += 1;
                    stats.elements_changed += changed;
                }
                EntryOutcome::Dense(changed) => {
                    stats.tensors_dense += 1;
                    stats.elements_changed += changed;
                }
            }
            entries.extend_from_slice(&p.entry);
            entry_count += 1;
        }
    }

    let mut body = Vec::with_capacity(entries.len() + 10);
    put_varint(&mut body, entry_count);
    body.extend_from_slice(&entries);
    drop(entries);

    let header = DeltaHeader {
        base_digest: base_hasher.finish(),
        target_digest: target_hasher.finish(),
        body_len: body.len() as u64,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() / 4);
    header.write(&mut out);
    let out = compress(out, &body, options.zstd_level).map_err(DeltaError::Compress)?;
    stats.body_bytes = body.len() as u64;
    stats.encoded_bytes = out.len() as u64;
    Ok((out, stats))
}

/// One tensor's raw bytes on both sides and its encoded entry.
struct PreparedTensor<'a> {
    name: &'a str,
    base_bytes: Vec<u8>,
    new_bytes: Vec<u8>,
    entry: Vec<u8>,
    outcome: EntryOutcome,
}

impl<'a> PreparedTensor<'a> {
    fn new(name: &'a str, base: &WeightSet, new: &WeightSet) -> Result<Self, DeltaError> {
        let (base_tensor, new_tensor) = (&base[name], &new[name]);
        let base_bytes = tensor_to_le_bytes(name, base_tensor)?;
        let new_bytes = tensor_to_le_bytes(name, new_tensor)?;
        let dtype = base_tensor.dtype();
        let code = dtype_code(dtype).expect("tensor_to_le_bytes accepted the dtype");
        let mut entry = Vec::new();
        let mut writer = EntryWriter {
            out: &mut entry,
            name,
            code,
            element_count: base_tensor.elem_count() as u64,
        };
        let outcome = match dtype.size_in_bytes() {
            1 => writer.write::<1>(&base_bytes, &new_bytes),
            2 => writer.write::<2>(&base_bytes, &new_bytes),
            4 => writer.write::<4>(&base_bytes, &new_bytes),
            _ => writer.write::<8>(&base_bytes, &new_bytes),
        };
        Ok(Self {
            name,
            base_bytes,
            new_bytes,
            entry,
            outcome,
        })
    }
}

fn compress(out: Vec<u8>, body: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    let mut encoder = zstd::stream::Encoder::new(out, level)?;
    encoder.include_checksum(true)?;
    encoder.set_pledged_src_size(Some(body.len() as u64))?;
    encoder.write_all(body)?;
    encoder.finish()
}

fn check_same_layout(base: &WeightSet, new: &WeightSet) -> Result<(), DeltaError> {
    if let Some(name) = base.keys().find(|name| !new.contains_key(*name)) {
        return Err(DeltaError::NameSetsDiffer {
            tensor: name.clone(),
            side: "base",
        });
    }
    if let Some(name) = new.keys().find(|name| !base.contains_key(*name)) {
        return Err(DeltaError::NameSetsDiffer {
            tensor: name.clone(),
            side: "new",
        });
    }
    for (name, base_tensor) in base {
        let new_tensor = &new[name];
        if base_tensor.dtype() != new_tensor.dtype() {
            return Err(DeltaError::DtypeMismatch {
                tensor: name.clone(),
                base: base_tensor.dtype(),
                new: new_tensor.dtype(),
            });
        }
        if base_tensor.dims() != new_tensor.dims() {
            return Err(DeltaError::ShapeMismatch {
                tensor: name.clone(),
                base: base_tensor.dims().to_vec(),
                new: new_tensor.dims().to_vec(),
            });
        }
    }
    Ok(())
}

enum EntryOutcome {
    Unchanged,
    Sparse(u64),
    Dense(u64),
}

/// Writes one tensor's entry into the body.
struct EntryWriter<'a> {
    out: &'a mut Vec<u8>,
    name: &'a str,
    code: u8,
    element_count: u64,
}

impl EntryWriter<'_> {
    fn write<const W: usize>(&mut self, base: &[u8], new: &[u8]) -> EntryOutcome {
        let (base, _) = base.as_chunks::<W>();
        let (new, _) = new.as_chunks::<W>();
        let changed: Vec<usize> = (0..base.len()).filter(|&i| base[i] != new[i]).collect();
        if changed.is_empty() {
            return EntryOutcome::Unchanged;
        }
        let gap_bytes: usize = gaps(&changed).map(varint_len).sum();
        let sparse_size = gap_bytes + changed.len() * W;
        let dense_size = base.len() * W;

        put_varint(self.out, self.name.len() as u64);
        self.out.extend_from_slice(self.name.as_bytes());
        self.out.push(self.code);
        put_varint(self.out, self.element_count);
        let residual = |i: usize| -> [u8; W] { std::array::from_fn(|b| base[i][b] ^ new[i][b]) };
        if sparse_size < dense_size {
            self.out.push(ENCODING_SPARSE);
            put_varint(self.out, changed.len() as u64);
            for gap in gaps(&changed) {
                put_varint(self.out, gap);
            }
            let residuals: Vec<[u8; W]> = changed.iter().map(|&i| residual(i)).collect();
            put_planes(self.out, &residuals);
            EntryOutcome::Sparse(changed.len() as u64)
        } else {
            self.out.push(ENCODING_DENSE);
            let residuals: Vec<[u8; W]> = (0..base.len()).map(residual).collect();
            put_planes(self.out, &residuals);
            EntryOutcome::Dense(changed.len() as u64)
        }
    }
}

/// Position gaps: the first index itself, then `index - previous - 1` (never negative).
fn gaps(positions: &[usize]) -> impl Iterator<Item = u64> + '_ {
    positions.iter().enumerate().map(move |(k, &p)| {
        if k == 0 {
            p as u64
        } else {
            (p - positions[k - 1] - 1) as u64
        }
    })
}

/// Byte-plane layout: byte 0 of every value, then byte 1, ... (see the module docs).
fn put_planes<const W: usize>(out: &mut Vec<u8>, values: &[[u8; W]]) {
    out.reserve(values.len() * W);
    for plane in 0..W {
        out.extend(values.iter().map(|v| v[plane]));
    }
}
