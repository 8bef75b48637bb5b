//! Shared helpers for the checkpoint and delta tests: random weight sets and bit comparisons.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use grail_policy::checkpoint::{tensor_to_le_bytes, WeightSet};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Awkward f32 bit patterns that float arithmetic would not preserve or would compare equal.
pub const SPECIAL_F32_BITS: [u32; 8] = [
    0x0000_0000, // +0.0
    0x8000_0000, // -0.0
    0x7fc0_0001, // quiet NaN with payload
    0xffa0_1234, // negative signalling NaN with payload
    0x7f80_0000, // +inf
    0xff80_0000, // -inf
    0x0000_0001, // smallest subnormal
    0x8000_0003, // negative subnormal
];

/// Awkward bf16/f16 bit patterns (same idea, 16 bits).
pub const SPECIAL_16_BITS: [u16; 6] = [0x0000, 0x8000, 0x7fc1, 0xff81, 0x7f80, 0x0001];

fn random_f32(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| (rng.random::<f32>() - 0.5) * 0.04).collect()
}

/// A random tensor of `dtype` (f32, bf16 or f16) with special values sprinkled in.
pub fn random_tensor(rng: &mut StdRng, dtype: DType, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let t = Tensor::from_vec(random_f32(rng, n), shape, &Device::Cpu).unwrap();
    let mut bytes = tensor_to_le_bytes("random", &t.to_dtype(dtype).unwrap()).unwrap();
    let width = dtype.size_in_bytes();
    for k in 0..n.min(8) {
        let slot = rng.random_range(0..n) * width;
        match width {
            4 => bytes[slot..slot + 4].copy_from_slice(&SPECIAL_F32_BITS[k].to_le_bytes()),
            _ => bytes[slot..slot + 2]
                .copy_from_slice(&SPECIAL_16_BITS[k % SPECIAL_16_BITS.len()].to_le_bytes()),
        }
    }
    Tensor::from_raw_buffer(&bytes, dtype, shape, &Device::Cpu).unwrap()
}

/// A small model-like weight set: a few 2-D matrices, a norm vector and a scalar.
pub fn random_set(rng: &mut StdRng, dtype: DType) -> WeightSet {
    let mut set = WeightSet::new();
    let shapes: [(&str, &[usize]); 5] = [
        ("model.embed_tokens.weight", &[64, 32]),
        ("model.layers.0.mlp.up_proj.weight", &[48, 32]),
        ("model.layers.0.self_attn.q_proj.weight", &[32, 32]),
        ("model.norm.weight", &[32]),
        ("scale", &[]),
    ];
    for (name, shape) in shapes {
        set.insert(name.to_string(), random_tensor(rng, dtype, shape));
    }
    set
}

/// Changes about `fraction` of the elements of every tensor by rewriting their raw bits
/// (random low-bit edits, sign flips of zeros, NaN payload changes).
pub fn perturb(rng: &mut StdRng, set: &WeightSet, fraction: f64) -> WeightSet {
    let mut out = WeightSet::new();
    for (name, tensor) in set {
        let mut bytes = tensor_to_le_bytes(name, tensor).unwrap();
        let width = tensor.dtype().size_in_bytes();
        for value in bytes.chunks_exact_mut(width) {
            if rng.random_bool(fraction) {
                match rng.random_range(0..3) {
                    // -0.0 <-> +0.0 style: only the sign bit.
                    0 => value[width - 1] ^= 0x80,
                    // A small update: flip a low mantissa bit.
                    1 => value[0] ^= 1 << rng.random_range(0..8),
                    // Anything at all.
                    _ => rng.fill(value),
                }
            }
        }
        let t =
            Tensor::from_raw_buffer(&bytes, tensor.dtype(), tensor.dims(), &Device::Cpu).unwrap();
        out.insert(name.clone(), t);
    }
    out
}

/// True when both sets have the same names, dtypes, shapes and every bit of every value.
pub fn bit_identical(a: &WeightSet, b: &WeightSet) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((na, ta), (nb, tb))| {
            na == nb
                && ta.dtype() == tb.dtype()
                && ta.dims() == tb.dims()
                && tensor_to_le_bytes(na, ta).unwrap() == tensor_to_le_bytes(nb, tb).unwrap()
        })
}
