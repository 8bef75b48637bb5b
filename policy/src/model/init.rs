//! Deterministic weight initialisation. `Device::Cpu.set_seed` is unsupported in candle 0.11, so
//! a `VarMap`'s own random init cannot be reproduced; these functions fill every tensor from a
//! SplitMix64 stream keyed by the seed and the tensor's name, independent of the rand crate.

use std::collections::HashMap;

use candle_core::{Device, Result, Tensor};
use candle_nn::VarMap;

use crate::config::ModelConfig;

/// The SplitMix64 generator (Steele, Lea, Flood 2014).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 24 bits of precision (exact in f32).
    pub fn next_unit_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The values of tensor `name` with `shape`: norm weights 1, embeddings uniform in ±0.05,
/// biases uniform in ±0.05 (non-zero so that tests notice a loader or model that drops them),
/// other weights uniform in ±sqrt(3 / fan_in) (fan_in = last dimension).
fn seeded_values(name: &str, shape: &[usize], seed: u64) -> Vec<f32> {
    let count: usize = shape.iter().product();
    if name.ends_with("norm.weight") {
        return vec![1.0; count];
    }
    let bound = if name.contains("embed_tokens") || name.ends_with(".bias") {
        0.05
    } else {
        let fan_in = *shape.last().unwrap_or(&1) as f32;
        (3.0 / fan_in.max(1.0)).sqrt()
    };
    let mut rng = SplitMix64::new(seed ^ fnv1a64(name));
    (0..count)
        .map(|_| (2.0 * rng.next_unit_f32() - 1.0) * bound)
        .collect()
}

/// Every tensor of `cfg` (HF names, f32) filled deterministically from `seed`.
pub fn seeded_weights(
    cfg: &ModelConfig,
    seed: u64,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    cfg.expected_tensors()
        .into_iter()
        .map(|(name, shape)| {
            let values = seeded_values(&name, &shape, seed);
            let t = Tensor::from_vec(values, shape, device)?;
            Ok((name, t))
        })
        .collect()
}

/// Overwrites every var of `varmap` (visited in sorted name order) with seeded values.
pub fn init_seeded(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("varmap mutex poisoned".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let values = seeded_values(name, var.dims(), seed);
        let t = Tensor::from_vec(values, var.dims(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}
