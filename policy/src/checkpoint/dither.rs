//! Dithered f32 → bf16 rounding for publishing the trainer's master weights.
//!
//! The trainer starts from a published bf16 checkpoint, so its f32 master weights begin on
//! the bf16 grid. Round-to-nearest then hides every update smaller than half a bf16 ulp
//! (|w| ≈ 0.05: ulp 2.4e-4, while an AdamW step at lr 2e-5 moves a weight ~2e-5): miners keep
//! sampling the old policy until a weight's accumulated update crosses the midpoint, and
//! learning stalls (docs/BENCHMARKS.md, "The copy run with bf16 checkpoints").
//!
//! Dithered rounding rounds `x` up to the next bf16 when its fraction of an ulp (the 16 bits
//! bf16 drops) exceeds a threshold drawn once per weight from a hash of the tensor's name and
//! the element index. Each weight's threshold is fixed, so:
//! * the same master weights always publish the same bits (digests are reproducible), and a
//!   weight's published value changes only when its master value crosses its own threshold
//!   (deltas stay sparse: no re-randomisation between checkpoints);
//! * over the weights of a tensor the rounding is unbiased: an update of δ ulp moves a weight
//!   with probability |δ|, so small updates reach miners on average at once instead of
//!   after half an ulp.
//!
//! Exact bf16 values (fraction 0) are kept as they are; NaN and ±∞ convert as usual.

use candle_core::{DType, Device, Tensor};
use half::bf16;

use super::CheckpointError;

/// How the trainer's f32 master weights become a bf16 checkpoint (`[checkpoints] rounding`).
/// Checkpoints published in f32 are exact either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rounding {
    /// Round to nearest even (candle's cast): sub-half-ulp updates are not published.
    Nearest,
    /// Fixed per-weight thresholds (module docs): unbiased, still deterministic and sparse.
    #[default]
    Dithered,
}

impl Rounding {
    /// `tensor` (named `name`) in `dtype`: dithered when asked for bf16, cast otherwise.
    pub fn cast(
        self,
        name: &str,
        tensor: &Tensor,
        dtype: DType,
    ) -> Result<Tensor, CheckpointError> {
        if self == Rounding::Dithered && dtype == DType::BF16 && tensor.dtype().is_float() {
            return dither_tensor_bf16(name, tensor);
        }
        tensor
            .to_device(&Device::Cpu)
            .and_then(|t| t.to_dtype(dtype))
            .and_then(|t| t.copy())
            .map_err(|source| CheckpointError::Tensor {
                tensor: name.to_string(),
                source,
            })
    }
}

/// splitmix64: a fast, well-mixed 64-bit hash step.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The per-tensor seed: FNV-1a of the name, mixed.
fn tensor_seed(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// `x` rounded to bf16, up iff its dropped 16 bits exceed `threshold` (0..=65535).
fn dither_one(x: f32, threshold: u16) -> bf16 {
    let bits = x.to_bits();
    if x.is_nan() || x.is_infinite() {
        return bf16::from_f32(x);
    }
    let kept = bits >> 16;
    let dropped = bits & 0xffff;
    // Magnitude grows with the kept bits for either sign, so "up" is away from zero: the
    // rounding is unbiased in magnitude, hence in value.
    let up = dropped > u32::from(threshold);
    let rounded = if up { kept + 1 } else { kept };
    bf16::from_bits(rounded as u16)
}

/// `values` (tensor `name`'s elements in row-major order) rounded with per-element
/// thresholds derived from `name` and the index.
fn dither_values(name: &str, values: &[f32]) -> Vec<bf16> {
    let seed = tensor_seed(name);
    values
        .iter()
        .enumerate()
        .map(|(i, &x)| dither_one(x, (mix(seed ^ i as u64) >> 48) as u16))
        .collect()
}

/// `tensor` (any float dtype) as a bf16 CPU tensor, dithered (see module docs).
fn dither_tensor_bf16(name: &str, tensor: &Tensor) -> Result<Tensor, CheckpointError> {
    let err = |source| CheckpointError::Tensor {
        tensor: name.to_string(),
        source,
    };
    let shape = tensor.shape().clone();
    let values = tensor
        .to_device(&Device::Cpu)
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(err)?;
    Tensor::from_vec(dither_values(name, &values), shape, &Device::Cpu).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_values_stay_and_others_land_on_a_neighbour() {
        for x in [0.0f32, 1.0, -0.5, 0.046875, -0.000_030_517_578] {
            let b = bf16::from_f32(x);
            assert_eq!(b.to_f32(), x, "test value must be bf16-exact");
            for t in [0u16, 1, 40_000, u16::MAX] {
                assert_eq!(dither_one(x, t), b, "{x} threshold {t}");
            }
        }
        let x = 0.05f32;
        let down = bf16::from_bits((x.to_bits() >> 16) as u16);
        let up = bf16::from_bits(down.to_bits() + 1);
        assert_eq!(dither_one(x, u16::MAX), down);
        assert_eq!(dither_one(x, 0), up);
        assert!(dither_one(f32::NAN, 7).is_nan());
        assert_eq!(dither_one(f32::INFINITY, 7).to_f32(), f32::INFINITY);
    }

    #[test]
    fn deterministic_per_name_and_index() {
        let v: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin() * 0.1).collect();
        assert_eq!(dither_values("a", &v), dither_values("a", &v));
        assert_ne!(dither_values("a", &v), dither_values("b", &v));
    }

    /// The property the trainer needs: an update far below half an ulp still moves the
    /// published weights by the update on average, where round-to-nearest moves nothing.
    #[test]
    fn sub_ulp_updates_reach_the_published_weights_on_average() {
        let n = 200_000;
        let base: Vec<f32> = (0..n)
            .map(|i| bf16::from_f32(0.04 + (i % 97) as f32 * 1e-4).to_f32())
            .collect();
        let delta = 2e-5f32; // ~0.1 ulp at these magnitudes
        let updated: Vec<f32> = base.iter().map(|w| w + delta).collect();
        let mean_shift = |pubd: &[bf16]| {
            pubd.iter()
                .zip(&base)
                .map(|(p, b)| f64::from(p.to_f32() - b))
                .sum::<f64>()
                / n as f64
        };
        let nearest: Vec<bf16> = updated.iter().map(|x| bf16::from_f32(*x)).collect();
        assert_eq!(
            mean_shift(&nearest),
            0.0,
            "nearest rounding hides the update"
        );
        let dithered = dither_values("w", &updated);
        let shift = mean_shift(&dithered);
        assert!(
            (shift - f64::from(delta)).abs() < 0.1 * f64::from(delta),
            "mean published shift {shift:e} vs update {delta:e}"
        );
        let moved = dithered
            .iter()
            .zip(&nearest)
            .filter(|(d, n)| d != n)
            .count();
        assert!(
            moved < n / 4,
            "only a fraction of the weights change: {moved}"
        );
        // And a tensor round trip keeps shape and values.
        let t = Tensor::from_vec(updated.clone(), (n / 100, 100), &Device::Cpu).unwrap();
        let d = dither_tensor_bf16("w", &t).unwrap();
        assert_eq!(d.dims(), &[n / 100, 100]);
        assert_eq!(d.dtype(), DType::BF16);
        assert_eq!(
            d.flatten_all().unwrap().to_vec1::<bf16>().unwrap(),
            dithered
        );
    }
}
