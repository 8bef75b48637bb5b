//! Gumbel-max choice with counter-based noise.
//!
//! `bits(key, v) = mix64(mix64(k0 ^ v) ^ k1)` with `k0, k1` the first two LE u64 words of the 32-byte
//! step key, `u = ((bits >> 11) + 0.5) / 2^53 ∈ (0, 1)`, `g = -ln(-ln u)`. The chosen token is
//! `argmax_v (logp_v + g_v)` over finite `logp_v`, ties to the lower id. Noise is a pure function of
//! `(key, v)`, so only candidates that can still win need it (see [`PRUNE_NATS`]).

pub use crate::mix::mix64;

#[derive(Clone, Copy)]
struct NoiseKey {
    k0: u64,
    k1: u64,
}

impl NoiseKey {
    fn new(key: &[u8; 32]) -> Self {
        Self {
            k0: crate::randomness::le_u64(&key[..8]),
            k1: crate::randomness::le_u64(&key[8..16]),
        }
    }

    #[inline]
    fn bits(self, token: u32) -> u64 {
        mix64(mix64(self.k0 ^ u64::from(token)) ^ self.k1)
    }
}

/// The 64 noise bits of token `token` under `key`.
pub fn noise_bits(key: &[u8; 32], token: u32) -> u64 {
    NoiseKey::new(key).bits(token)
}

#[inline]
fn gumbel_from_bits(bits: u64) -> f64 {
    let u = ((bits >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
    -(-u.ln()).ln()
}

/// Gumbel noise `g_v` of token `token` under `key`.
pub fn gumbel_noise(key: &[u8; 32], token: u32) -> f64 {
    gumbel_from_bits(noise_bits(key, token))
}

/// Pruning tiers (nats). A candidate at least `t` below the current best wins only if its noise
/// exceeds `t`, i.e. `u > exp(-e^-t)`; an integer comparison of the noise bits rules that out for all
/// but a fraction `1 − exp(-e^-t)` of candidates (≈ e^-t), and only the rest get the two exact
/// logarithms. The result is exactly the brute-force argmax (a 1e-9 slack absorbs rounding).
pub const PRUNE_TIERS: [f64; 8] = [12.0, 8.0, 5.0, 3.0, 2.0, 1.0, 0.5, 0.25];

/// `(t, c)` pairs: noise bits `>> 11` below `c` imply `g < t`.
fn prune_cuts() -> [(f64, u64); 8] {
    PRUNE_TIERS.map(|t| {
        let u = (-(-t).exp()).exp();
        (
            t,
            ((u * (1u64 << 53) as f64).floor() as u64).saturating_sub(1),
        )
    })
}

/// Best `(token, score)` of `values[v] + g_v` over finite values, ties to the lower id.
pub(crate) fn gumbel_best<T: Copy + Into<f64>>(values: &[T], key: &[u8; 32]) -> Option<(u32, f64)> {
    let key = NoiseKey::new(key);
    let mut start: Option<(usize, f64)> = None;
    for (i, &v) in values.iter().enumerate() {
        let v: f64 = v.into();
        if v.is_finite() && start.is_none_or(|(_, best)| v > best) {
            start = Some((i, v));
        }
    }
    let (start_id, start_value) = start?;
    let mut best_id = start_id as u32;
    let mut best = start_value + gumbel_from_bits(key.bits(best_id));
    let cuts = prune_cuts();
    'tokens: for (i, &v) in values.iter().enumerate() {
        let v: f64 = v.into();
        if !v.is_finite() || i == start_id {
            continue;
        }
        let bits = key.bits(i as u32);
        let gap = best - 1e-9 - v;
        for &(tier, cut) in &cuts {
            if gap > tier {
                if (bits >> 11) < cut {
                    continue 'tokens;
                }
                break;
            }
        }
        let score = v + gumbel_from_bits(bits);
        if score > best || (score == best && (i as u32) < best_id) {
            best = score;
            best_id = i as u32;
        }
    }
    Some((best_id, best))
}

/// Gumbel-max choice over processed log-probabilities; `None` if no token is allowed.
/// With greedy processing exactly one entry is finite, so the noise is irrelevant.
pub fn choose(processed: &[f32], key: &[u8; 32]) -> Option<u32> {
    gumbel_best(processed, key).map(|(token, _)| token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn brute_force(values: &[f32], key: &[u8; 32]) -> Option<u32> {
        let mut best: Option<(u32, f64)> = None;
        for (i, &v) in values.iter().enumerate() {
            if !v.is_finite() {
                continue;
            }
            let s = f64::from(v) + gumbel_noise(key, i as u32);
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((i as u32, s));
            }
        }
        best.map(|(i, _)| i)
    }

    #[test]
    fn pruned_choice_equals_brute_force() {
        let mut rng = SplitMix64::new(11);
        for trial in 0..300 {
            let spread = [0.5, 3.0, 15.0][trial % 3];
            let values: Vec<f32> = (0..500)
                .map(|_| {
                    if rng.below(10) == 0 {
                        f32::NEG_INFINITY
                    } else {
                        (rng.normal() * spread) as f32
                    }
                })
                .collect();
            let key = rng.bytes32();
            assert_eq!(choose(&values, &key), brute_force(&values, &key));
        }
    }

    #[test]
    fn choice_frequencies_follow_the_distribution() {
        let probs = [0.5f64, 0.3, 0.15, 0.05];
        let logp: Vec<f32> = probs.iter().map(|p| p.ln() as f32).collect();
        let mut rng = SplitMix64::new(5);
        let n = 40_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[choose(&logp, &rng.bytes32()).unwrap() as usize] += 1;
        }
        for (count, p) in counts.iter().zip(probs) {
            let freq = *count as f64 / n as f64;
            let sigma = (p * (1.0 - p) / n as f64).sqrt();
            assert!((freq - p).abs() < 5.0 * sigma, "{counts:?}");
        }
    }

    #[test]
    fn noise_is_gumbel_distributed() {
        // Gumbel(0,1): mean = Euler–Mascheroni constant, variance = pi^2/6.
        let key = [42u8; 32];
        let n = 100_000u32;
        let samples: Vec<f64> = (0..n).map(|v| gumbel_noise(&key, v)).collect();
        let mean = samples.iter().sum::<f64>() / f64::from(n);
        let var = samples.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / f64::from(n);
        assert!((mean - 0.577_215_66).abs() < 0.015, "{mean}");
        assert!(
            (var - std::f64::consts::PI.powi(2) / 6.0).abs() < 0.05,
            "{var}"
        );
    }

    #[test]
    fn empty_or_all_excluded_rows_have_no_choice() {
        assert_eq!(choose(&[], &[0; 32]), None);
        assert_eq!(choose(&[f32::NEG_INFINITY, f32::NAN], &[0; 32]), None);
        assert_eq!(choose(&[f32::NEG_INFINITY, -3.0], &[0; 32]), Some(1));
    }
}
