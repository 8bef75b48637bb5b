//! Per-token commitment to the last-layer (post-final-norm) hidden state.
//!
//! `sketch(h) = Σ_{j ∈ top-k(|h|)} c[j] · bucket(h[j])  mod P`, with `c` keyed by hidden-dimension
//! index and derived from the window's OPEN randomness (the miner cannot choose it), and `bucket` the
//! signed octave of `1 + |h[j]|`, so every selected coordinate contributes at least `±c[j]`.
//! The sum is small (|s| ≤ k·127·15), so the sketch is locality-preserving: float drift that flips one
//! bucket moves it by `|c[j]|`, while a wrong hidden state (different top-k set) moves it by a random
//! amount with a spread of thousands. See `docs/PROTOCOL.md` §3 for the false-accept analysis.

use serde::{Deserialize, Serialize};

use crate::randomness::{domain, prf, Randomness};

/// Sketch modulus (2^31 − 1): wire sketches are `u32 < P`, 4 bytes per token.
pub const SKETCH_PRIME: u32 = 2_147_483_647;
/// Coefficients are uniform in `[-127, -1] ∪ [1, 127]` (never 0: every coordinate counts).
pub const COEFFICIENT_RANGE: i32 = 127;
/// Largest bucket magnitude; `|h| ≥ 2^14 − 1` all land in bucket 15.
pub const MAX_BUCKET: i32 = 15;

/// Commitment parameters; miner and verifier must agree (they belong in the checkpoint/config).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SketchParams {
    /// Number of largest-|h| coordinates per token.
    pub top_k: u32,
}

impl Default for SketchParams {
    fn default() -> Self {
        Self { top_k: 16 }
    }
}

/// Verifier-side acceptance rule: position `pos` (absolute token index, prompt included) passes when
/// `sketch_distance ≤ base + floor(growth · sqrt(pos))`; a rollout passes when at most
/// `max_failed_positions` of its challenged positions fail.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SketchTolerance {
    pub base: u32,
    pub growth: f64,
    pub max_failed_positions: u32,
}

impl Default for SketchTolerance {
    fn default() -> Self {
        Self {
            base: 400,
            growth: 4.0,
            max_failed_positions: 1,
        }
    }
}

impl SketchTolerance {
    pub fn at(&self, position: u32) -> u32 {
        // `f64 as u32` saturates (and maps NaN to 0), so hostile config values cannot panic.
        let growth = (self.growth.max(0.0) * f64::from(position).sqrt()).floor() as u32;
        self.base.saturating_add(growth)
    }
}

/// Per-hidden-dimension coefficients of one window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SketchCoefficients {
    values: Vec<i32>,
}

impl SketchCoefficients {
    /// Block `b` = `prf(SKETCH_COEFFICIENTS, [open, le32(hidden_dim), le32(b)])` gives 8 LE u32 words;
    /// word `w` of dimension `j = 8b + i` maps `r = w mod 254` to `r + 1` (r < 127) or `126 − r`.
    pub fn derive(open: &Randomness, hidden_dim: u32) -> Self {
        let mut values = Vec::with_capacity(hidden_dim as usize);
        let mut block = 0u32;
        while values.len() < hidden_dim as usize {
            let bytes = prf(
                domain::SKETCH_COEFFICIENTS,
                &[open, &hidden_dim.to_le_bytes(), &block.to_le_bytes()],
            );
            for chunk in bytes.chunks_exact(4) {
                if values.len() == hidden_dim as usize {
                    break;
                }
                let word = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                let r = (word % 254) as i32;
                values.push(if r < COEFFICIENT_RANGE {
                    r + 1
                } else {
                    COEFFICIENT_RANGE - 1 - r
                });
            }
            block += 1;
        }
        Self { values }
    }

    pub fn hidden_dim(&self) -> usize {
        self.values.len()
    }

    pub fn values(&self) -> &[i32] {
        &self.values
    }
}

/// Shorthand for [`SketchCoefficients::derive`].
pub fn coefficients(open: &Randomness, hidden_dim: u32) -> SketchCoefficients {
    SketchCoefficients::derive(open, hidden_dim)
}

/// Signed octave bucket: `sign(x) · min(15, 1 + floor(log2(1 + |x|)))`, computed exactly from the f64
/// exponent of `1 + |x|` (no libm). `NaN → 0`, `±inf → ±15`, `-0.0 → +1`.
pub fn bucket(x: f32) -> i32 {
    if x.is_nan() {
        return 0;
    }
    let magnitude = if x.is_infinite() {
        MAX_BUCKET
    } else {
        let y = 1.0 + f64::from(x.abs());
        let exponent = ((y.to_bits() >> 52) & 0x7ff) as i32 - 1023;
        (1 + exponent).min(MAX_BUCKET)
    };
    if x < 0.0 {
        -magnitude
    } else {
        magnitude
    }
}

/// Ranking key of a coordinate: larger is better. Magnitude bits (NaN lowest) then lower index first.
#[inline]
fn rank_key(x: f32, index: usize) -> u64 {
    let magnitude = if x.is_nan() {
        0
    } else {
        x.abs().to_bits() as u64 + 1
    };
    (magnitude << 32) | u64::from(u32::MAX - index as u32)
}

/// Indices of the `k` largest `|h|` (ties → lower index), in descending rank order.
pub fn top_k_indices(hidden: &[f32], k: usize) -> Vec<usize> {
    let k = k.min(hidden.len());
    if k == 0 {
        return Vec::new();
    }
    // `best` stays sorted descending; a new key enters only if it beats the current k-th.
    let mut best: Vec<u64> = Vec::with_capacity(k + 1);
    for (index, &x) in hidden.iter().enumerate() {
        let key = rank_key(x, index);
        if best.len() == k && key <= best[k - 1] {
            continue;
        }
        let slot = best.partition_point(|&existing| existing > key);
        best.insert(slot, key);
        best.truncate(k);
    }
    best.iter()
        .map(|&key| (u32::MAX - (key & 0xffff_ffff) as u32) as usize)
        .collect()
}

/// Errors computing a sketch (all are caller bugs or hostile shapes, never panics).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SketchError {
    #[error("hidden row has {actual} values but the coefficients cover hidden_dim={expected}; derive coefficients for the model's hidden size")]
    DimensionMismatch { expected: usize, actual: usize },
}

/// The sketch of one hidden row (length `hidden_dim`), reduced to `0..SKETCH_PRIME`.
pub fn sketch(
    hidden: &[f32],
    coefficients: &SketchCoefficients,
    params: &SketchParams,
) -> Result<u32, SketchError> {
    if hidden.len() != coefficients.hidden_dim() {
        return Err(SketchError::DimensionMismatch {
            expected: coefficients.hidden_dim(),
            actual: hidden.len(),
        });
    }
    let sum: i64 = top_k_indices(hidden, params.top_k as usize)
        .into_iter()
        .map(|j| i64::from(coefficients.values[j]) * i64::from(bucket(hidden[j])))
        .sum();
    Ok(sum.rem_euclid(i64::from(SKETCH_PRIME)) as u32)
}

/// Sketches of consecutive rows of a row-major `[rows, hidden_dim]` matrix.
pub fn sketch_rows(
    hidden_rows: &[f32],
    coefficients: &SketchCoefficients,
    params: &SketchParams,
) -> Result<Vec<u32>, SketchError> {
    let dim = coefficients.hidden_dim();
    if dim == 0 || !hidden_rows.len().is_multiple_of(dim) {
        return Err(SketchError::DimensionMismatch {
            expected: dim,
            actual: hidden_rows.len(),
        });
    }
    hidden_rows
        .chunks_exact(dim)
        .map(|row| sketch(row, coefficients, params))
        .collect()
}

/// Circular distance in Z_P: `min(|a − b|, P − |a − b|)`. Inputs `≥ P` are reduced first (the checks
/// reject them before this point).
pub fn sketch_distance(a: u32, b: u32) -> u32 {
    let (a, b) = (a % SKETCH_PRIME, b % SKETCH_PRIME);
    let diff = a.abs_diff(b);
    diff.min(SKETCH_PRIME - diff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn coefficients_are_nonzero_bounded_and_keyed_by_open() {
        let c = coefficients(&[1; 32], 896);
        assert_eq!(c.hidden_dim(), 896);
        assert!(c
            .values()
            .iter()
            .all(|&v| v != 0 && v.abs() <= COEFFICIENT_RANGE));
        let positives = c.values().iter().filter(|&&v| v > 0).count();
        assert!((380..516).contains(&positives), "{positives}");
        assert_ne!(c, coefficients(&[2; 32], 896));
        assert_eq!(
            coefficients(&[1; 32], 10).values(),
            coefficients(&[1; 32], 10).values()
        );
        assert_eq!(coefficients(&[1; 32], 0).hidden_dim(), 0);
    }

    #[test]
    fn bucket_boundaries_are_octaves() {
        assert_eq!(bucket(0.0), 1);
        assert_eq!(bucket(-0.0), 1);
        assert_eq!(bucket(0.999), 1);
        assert_eq!(bucket(1.0), 2);
        assert_eq!(bucket(-2.99), -2);
        assert_eq!(bucket(3.0), 3);
        assert_eq!(bucket(-7.0), -4);
        assert_eq!(bucket(1e9), 15);
        assert_eq!(bucket(f32::NEG_INFINITY), -15);
        assert_eq!(bucket(f32::NAN), 0);
    }

    #[test]
    fn top_k_breaks_ties_by_lower_index_and_ranks_nan_last() {
        let h = [1.0, -3.0, 3.0, f32::NAN, 0.5, -3.0];
        assert_eq!(top_k_indices(&h, 3), vec![1, 2, 5]);
        assert_eq!(top_k_indices(&h, 6), vec![1, 2, 5, 0, 4, 3]);
        assert_eq!(top_k_indices(&h, 10).len(), 6);
        assert!(top_k_indices(&h, 0).is_empty());
    }

    #[test]
    fn top_k_matches_a_full_sort() {
        let mut rng = SplitMix64::new(3);
        for _ in 0..200 {
            let h: Vec<f32> = (0..64).map(|_| (rng.below(9) as f32 - 4.0) * 0.5).collect();
            let mut order: Vec<usize> = (0..h.len()).collect();
            order.sort_by(|&a, &b| h[b].abs().total_cmp(&h[a].abs()).then(a.cmp(&b)));
            assert_eq!(top_k_indices(&h, 16), order[..16].to_vec());
        }
    }

    #[test]
    fn sketch_is_coordinate_keyed_and_shape_checked() {
        let c = coefficients(&[5; 32], 8);
        let params = SketchParams { top_k: 1 };
        let mut h = [0.1f32; 8];
        h[3] = 10.0;
        let s3 = sketch(&h, &c, &params).unwrap();
        let expected = i64::from(c.values()[3]) * 4;
        assert_eq!(s3, expected.rem_euclid(i64::from(SKETCH_PRIME)) as u32);
        // Same magnitude pattern on another coordinate gives another sketch (grail v5 did not).
        h[3] = 0.1;
        h[6] = 10.0;
        assert_ne!(s3, sketch(&h, &c, &params).unwrap());
        assert_eq!(
            sketch(&[0.0; 7], &c, &params),
            Err(SketchError::DimensionMismatch {
                expected: 8,
                actual: 7
            })
        );
        let rows = sketch_rows(&[h, h].concat(), &c, &params).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(sketch_rows(&[0.0; 9], &c, &params).is_err());
    }

    #[test]
    fn distance_is_circular_and_symmetric() {
        assert_eq!(sketch_distance(5, 5), 0);
        assert_eq!(sketch_distance(3, 10), 7);
        assert_eq!(sketch_distance(10, 3), 7);
        assert_eq!(sketch_distance(1, SKETCH_PRIME - 1), 2);
        assert_eq!(sketch_distance(0, SKETCH_PRIME / 2), SKETCH_PRIME / 2);
    }

    #[test]
    fn tolerance_grows_with_sqrt_position() {
        let t = SketchTolerance {
            base: 100,
            growth: 2.0,
            max_failed_positions: 0,
        };
        assert_eq!(t.at(0), 100);
        assert_eq!(t.at(100), 120);
        assert_eq!(t.at(10_000), 300);
        let huge = SketchTolerance {
            base: u32::MAX,
            growth: f64::INFINITY,
            max_failed_positions: 0,
        };
        assert_eq!(huge.at(5), u32::MAX);
        let nan = SketchTolerance {
            base: 1,
            growth: f64::NAN,
            max_failed_positions: 0,
        };
        assert_eq!(nan.at(5), 1);
    }
}
