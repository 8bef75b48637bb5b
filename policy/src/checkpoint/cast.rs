//! The published form of a weight set: every floating-point tensor in the network's committed
//! dtype (bf16 for real models), everything else as it is.
//!
//! The trainer keeps f32 master weights privately; what it publishes, what the digest commits
//! to and what miners and verifiers load is this cast. Conversion is round-to-nearest-even
//! (candle uses `half::bf16::from_f32`), so the same master weights always publish the same
//! bits; widening back (bf16 -> f32, what a CPU miner computes in) is exact.

use candle_core::{DType, Device};

use super::{CheckpointError, WeightSet};

/// `weights` with every floating-point tensor converted to `dtype` (a CPU copy). Integer
/// tensors are kept as they are; tensors already in `dtype` are shared, not copied.
pub fn cast_floats(weights: &WeightSet, dtype: DType) -> Result<WeightSet, CheckpointError> {
    if !dtype.is_float() {
        return Err(CheckpointError::UnsupportedDtype {
            tensor: "(publish dtype)".to_string(),
            dtype,
        });
    }
    let mut out = WeightSet::new();
    for (name, tensor) in weights {
        let cast = if tensor.dtype().is_float() && tensor.dtype() != dtype {
            tensor
                .to_device(&Device::Cpu)
                .and_then(|t| t.to_dtype(dtype))
                .map_err(|source| CheckpointError::Tensor {
                    tensor: name.clone(),
                    source,
                })?
        } else {
            tensor.clone()
        };
        out.insert(name.clone(), cast);
    }
    Ok(out)
}

/// The dtype a published weight set commits to: the one dtype all its floating-point
/// tensors share (None when it has none or they differ).
pub fn committed_float_dtype(weights: &WeightSet) -> Option<DType> {
    let mut floats = weights.values().map(|t| t.dtype()).filter(|d| d.is_float());
    let first = floats.next()?;
    floats.all(|d| d == first).then_some(first)
}
