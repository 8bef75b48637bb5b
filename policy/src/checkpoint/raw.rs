//! Conversion between candle tensors and their raw little-endian element bytes.
//!
//! Going through raw bytes (never through float arithmetic) keeps every bit pattern intact,
//! including `-0.0`, subnormals and NaN payloads.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use super::{CheckpointError, WeightSet};

/// Stable one-byte code for each supported dtype (used by the delta wire format).
pub fn dtype_code(dtype: DType) -> Option<u8> {
    Some(match dtype {
        DType::F32 => 0,
        DType::BF16 => 1,
        DType::F16 => 2,
        DType::F64 => 3,
        DType::U8 => 4,
        DType::U32 => 5,
        DType::I16 => 6,
        DType::I32 => 7,
        DType::I64 => 8,
        _ => return None,
    })
}

/// Inverse of [`dtype_code`].
pub fn dtype_from_code(code: u8) -> Option<DType> {
    Some(match code {
        0 => DType::F32,
        1 => DType::BF16,
        2 => DType::F16,
        3 => DType::F64,
        4 => DType::U8,
        5 => DType::U32,
        6 => DType::I16,
        7 => DType::I32,
        8 => DType::I64,
        _ => return None,
    })
}

/// The safetensors spelling of a supported dtype (`"F32"`, `"BF16"`, ...); used by the digest.
pub fn dtype_name(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::F32 => "F32",
        DType::BF16 => "BF16",
        DType::F16 => "F16",
        DType::F64 => "F64",
        DType::U8 => "U8",
        DType::U32 => "U32",
        DType::I16 => "I16",
        DType::I32 => "I32",
        DType::I64 => "I64",
        _ => return None,
    })
}

fn le_bytes_of<T: candle_core::WithDType, const N: usize>(
    flat: &Tensor,
    to_le: fn(T) -> [u8; N],
) -> candle_core::Result<Vec<u8>> {
    let values = flat.to_vec1::<T>()?;
    let mut out = Vec::with_capacity(values.len() * N);
    for v in values {
        out.extend_from_slice(&to_le(v));
    }
    Ok(out)
}

/// Row-major little-endian bytes of `tensor` (copied to the host if needed).
pub fn tensor_to_le_bytes(name: &str, tensor: &Tensor) -> Result<Vec<u8>, CheckpointError> {
    let wrap = |source| CheckpointError::Tensor {
        tensor: name.to_string(),
        source,
    };
    let flat = tensor.flatten_all().map_err(wrap)?;
    let bytes = match tensor.dtype() {
        DType::F32 => le_bytes_of::<f32, 4>(&flat, f32::to_le_bytes),
        DType::BF16 => le_bytes_of::<half::bf16, 2>(&flat, half::bf16::to_le_bytes),
        DType::F16 => le_bytes_of::<half::f16, 2>(&flat, half::f16::to_le_bytes),
        DType::F64 => le_bytes_of::<f64, 8>(&flat, f64::to_le_bytes),
        DType::U8 => le_bytes_of::<u8, 1>(&flat, u8::to_le_bytes),
        DType::U32 => le_bytes_of::<u32, 4>(&flat, u32::to_le_bytes),
        DType::I16 => le_bytes_of::<i16, 2>(&flat, i16::to_le_bytes),
        DType::I32 => le_bytes_of::<i32, 4>(&flat, i32::to_le_bytes),
        DType::I64 => le_bytes_of::<i64, 8>(&flat, i64::to_le_bytes),
        dtype => {
            return Err(CheckpointError::UnsupportedDtype {
                tensor: name.to_string(),
                dtype,
            })
        }
    };
    bytes.map_err(wrap)
}

/// Builds a CPU tensor from row-major little-endian bytes.
pub fn tensor_from_le_bytes(
    name: &str,
    bytes: &[u8],
    dtype: DType,
    shape: &[usize],
) -> Result<Tensor, CheckpointError> {
    if dtype_code(dtype).is_none() {
        return Err(CheckpointError::UnsupportedDtype {
            tensor: name.to_string(),
            dtype,
        });
    }
    // candle reads the buffer in native order; every supported target is little-endian.
    Tensor::from_raw_buffer(bytes, dtype, shape, &Device::Cpu).map_err(|source| {
        CheckpointError::Tensor {
            tensor: name.to_string(),
            source,
        }
    })
}

#[cfg(target_endian = "big")]
compile_error!("grail-policy checkpoints assume a little-endian host");

/// Splits `items` (in order) into runs holding at most ~256 MiB of tensor data each, so work
/// done in parallel over a run never holds more than a bounded copy of the weights.
pub(crate) fn memory_bounded_batches<T>(items: &[T], bytes_of: impl Fn(&T) -> usize) -> Vec<&[T]> {
    const BATCH_BYTES: usize = 256 << 20;
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        bytes += bytes_of(item);
        if bytes >= BATCH_BYTES {
            batches.push(&items[start..=i]);
            (start, bytes) = (i + 1, 0);
        }
    }
    if start < items.len() {
        batches.push(&items[start..]);
    }
    batches
}

/// Calls `visit` on every tensor of `weights` in canonical order with its raw bytes, taken
/// from `known` when present and converted (in parallel, batch by batch) otherwise.
pub(crate) fn visit_le_bytes<F>(
    weights: &WeightSet,
    known: &BTreeMap<String, Vec<u8>>,
    mut visit: F,
) -> Result<(), CheckpointError>
where
    F: FnMut(&str, &Tensor, &[u8]) -> Result<(), CheckpointError>,
{
    let entries: Vec<(&String, &Tensor)> = weights.iter().collect();
    let size = |(_, t): &(&String, &Tensor)| t.elem_count() * t.dtype().size_in_bytes();
    for batch in memory_bounded_batches(&entries, size) {
        let converted = batch
            .par_iter()
            .map(|(name, t)| match known.contains_key(*name) {
                true => Ok(None),
                false => tensor_to_le_bytes(name, t).map(Some),
            })
            .collect::<Result<Vec<_>, _>>()?;
        for ((name, t), bytes) in batch.iter().zip(&converted) {
            let bytes = bytes.as_deref().or(known.get(*name).map(Vec::as_slice));
            visit(name, t, bytes.unwrap_or_default())?;
        }
    }
    Ok(())
}
