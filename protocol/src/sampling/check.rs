//! Verifier side of replayable sampling.
//!
//! Drift model: miner and verifier raw logits differ by at most `logit_drift` per token. After the
//! penalty (factor ≤ max(ρ, 1/ρ)) and temperature, scaled scores differ by at most
//! `δ = logit_drift · max(ρ, 1/ρ) / T`. If the miner's token `c` maximised `z_c + g_c` over its
//! candidate set, then under the verifier's scores `z_c + g_c ≥ z_v + g_v − 2δ` for every `v` the miner
//! also considered. Normalisers are shared by all candidates and cancel, so the margin is `2δ`.
//! Top-k/top-p boundaries move under drift, so the verifier only compares against a CORE set it can
//! prove the miner also had, and only requires the claimed token to be ADMISSIBLE (possibly in the
//! miner's set). Bounds are derived in `docs/PROTOCOL.md` §4.4.

use serde::{Deserialize, Serialize};

use super::noise::{gumbel_best, gumbel_noise};
use super::{better, scaled_scores, shifted_exp, top_k_threshold, SamplingParams};

/// Why a claimed token is not the replayed choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "violation", rename_all = "snake_case")]
pub enum SamplingViolation {
    #[error("claimed token {token} is outside the logits row of {vocab} entries")]
    TokenOutOfRange { token: u32, vocab: u32 },
    #[error("claimed token {token} cannot be in the sampling candidate set (excluded by top-k/top-p or a non-finite logit)")]
    TokenExcluded { token: u32 },
    #[error("claimed token {token} scores {claimed_score:.4} but token {best_token} scores {best_score:.4} (allowed margin {margin:.4}); the token was not chosen by the seeded rule")]
    NotTheSampledToken {
        token: u32,
        claimed_score: f64,
        best_token: u32,
        best_score: f64,
        margin: f64,
    },
    #[error("sampling parameters are invalid: {0}")]
    InvalidParams(String),
}

/// Checks a claimed token against processed log-probabilities (same candidate set on both sides):
/// passes if `logp_c + g_c ≥ max_v (logp_v + g_v) − margin`. Use `margin = 2δ` (module docs).
pub fn check_choice(
    processed: &[f32],
    key: &[u8; 32],
    claimed: u32,
    margin: f64,
) -> Result<(), SamplingViolation> {
    let Some(&claimed_logp) = processed.get(claimed as usize) else {
        return Err(SamplingViolation::TokenOutOfRange {
            token: claimed,
            vocab: processed.len() as u32,
        });
    };
    if !claimed_logp.is_finite() {
        return Err(SamplingViolation::TokenExcluded { token: claimed });
    }
    let claimed_score = f64::from(claimed_logp) + gumbel_noise(key, claimed);
    let (best_token, best_score) =
        gumbel_best(processed, key).expect("the claimed token is finite, so a best exists");
    compare(claimed, claimed_score, best_token, best_score, margin)
}

fn compare(
    token: u32,
    claimed_score: f64,
    best_token: u32,
    best_score: f64,
    margin: f64,
) -> Result<(), SamplingViolation> {
    if token == best_token || claimed_score + margin >= best_score {
        Ok(())
    } else {
        Err(SamplingViolation::NotTheSampledToken {
            token,
            claimed_score,
            best_token,
            best_score,
            margin,
        })
    }
}

/// Full replay check from the verifier's raw logits at one position: robust to `logit_drift` in the
/// logits, including top-k/top-p boundary flips. Greedy mode passes if `z_c ≥ max z − 2δ`.
pub fn check_sampled_token(
    raw_logits: &[f32],
    context: &[u32],
    params: &SamplingParams,
    key: &[u8; 32],
    claimed: u32,
    logit_drift: f64,
) -> Result<(), SamplingViolation> {
    params
        .validate()
        .map_err(|e| SamplingViolation::InvalidParams(e.to_string()))?;
    let z = scaled_scores(raw_logits, context, params);
    let Some(&z_claimed) = z.get(claimed as usize) else {
        return Err(SamplingViolation::TokenOutOfRange {
            token: claimed,
            vocab: z.len() as u32,
        });
    };
    if !z_claimed.is_finite() {
        return Err(SamplingViolation::TokenExcluded { token: claimed });
    }
    let penalty = f64::from(params.repetition_penalty);
    let delta = logit_drift.max(0.0) * penalty.max(1.0 / penalty) / params.scale_temperature();
    let two_delta = 2.0 * delta;
    if params.is_greedy() {
        let (best_token, best) = z
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| (i as u32, v))
            .min_by(|a, b| better((a.1, a.0), (b.1, b.0)))
            .expect("the claimed token is finite");
        return compare(claimed, z_claimed, best_token, best, two_delta);
    }
    let sets = CandidateBounds::new(&z, params, two_delta);
    if !sets.admissible(&z, claimed) {
        return Err(SamplingViolation::TokenExcluded { token: claimed });
    }
    let core_scores: Vec<f64> = z
        .iter()
        .zip(&sets.in_core)
        .map(|(&v, &core)| if core { v } else { f64::NEG_INFINITY })
        .collect();
    let Some((best_token, best_score)) = gumbel_best(&core_scores, key) else {
        return Ok(()); // nothing provably in the miner's set beats the claim
    };
    let claimed_score = z_claimed + gumbel_noise(key, claimed);
    compare(claimed, claimed_score, best_token, best_score, two_delta)
}

/// Relaxed (`plus`) and tightened (`minus`) candidate sets under drift `2δ`.
struct CandidateBounds {
    two_delta: f64,
    top_k_cut: Option<f64>,
    top_p: f64,
    max: f64,
    /// `Σ_{S_k^+} e^(z−max)` and `Σ_{S_k^-} e^(z−max)`.
    mass_plus: f64,
    mass_minus: f64,
    in_core: Vec<bool>,
}

impl CandidateBounds {
    fn new(z: &[f64], params: &SamplingParams, two_delta: f64) -> Self {
        let top_k_cut = top_k_threshold(z, params.top_k).map(|(value, _)| value);
        let max = z
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(f64::NEG_INFINITY, f64::max);
        let mut bounds = Self {
            two_delta,
            top_k_cut,
            top_p: f64::from(params.top_p),
            max,
            mass_plus: 0.0,
            mass_minus: 0.0,
            in_core: vec![false; z.len()],
        };
        if bounds.top_p < 1.0 {
            for &v in z.iter().filter(|v| v.is_finite()) {
                if bounds.in_k_plus(v) {
                    bounds.mass_plus += shifted_exp(v, max);
                }
                if bounds.in_k_minus(v) {
                    bounds.mass_minus += shifted_exp(v, max);
                }
            }
        }
        bounds.fill_core(z);
        bounds
    }

    /// Possibly in the miner's top-k: `z ≥ τ_k − 2δ`.
    fn in_k_plus(&self, v: f64) -> bool {
        v.is_finite() && self.top_k_cut.is_none_or(|cut| v >= cut - self.two_delta)
    }

    /// Surely in the miner's top-k: `z > τ_k + 2δ`.
    fn in_k_minus(&self, v: f64) -> bool {
        v.is_finite() && self.top_k_cut.is_none_or(|cut| v > cut + self.two_delta)
    }

    /// The miner may have kept `c`: in `S_k^+` and the lower bound
    /// `e^(−2δ) · Σ_{u ∈ S_k^-, z_u > z_c + 2δ} e^(z_u) / Σ_{S_k^+} e^z` of its mass-before is `< top_p`.
    fn admissible(&self, z: &[f64], claimed: u32) -> bool {
        let zc = z[claimed as usize];
        if !self.in_k_plus(zc) {
            return false;
        }
        if self.top_p >= 1.0 {
            return true;
        }
        let above: f64 = z
            .iter()
            .filter(|&&v| self.in_k_minus(v) && v > zc + self.two_delta)
            .map(|&v| shifted_exp(v, self.max))
            .sum();
        (-self.two_delta).exp() * above / self.mass_plus < self.top_p
    }

    /// Core: in `S_k^-` and the upper bound
    /// `e^(2δ) · Σ_{u ∈ S_k^+, u ≠ v, z_u ≥ z_v − 2δ} e^(z_u) / Σ_{S_k^-} e^z` of its mass-before is
    /// `< top_p`. A token below `max − w` has every token above `max − w` in that sum, so once those
    /// alone push the bound to `top_p`, nothing below `max − w` can be core and only the window is
    /// sorted (dropping tokens from the core is always safe).
    fn fill_core(&mut self, z: &[f64]) {
        if self.top_p >= 1.0 {
            self.in_core = z.iter().map(|&v| self.in_k_minus(v)).collect();
            return;
        }
        let lift = self.two_delta.exp() / self.mass_minus;
        let mut width = 40.0;
        for candidate in [2.0, 5.0, 10.0, 20.0] {
            let floor = self.max - candidate;
            let inside: f64 = z
                .iter()
                .filter(|&&v| self.in_k_plus(v) && v >= floor)
                .map(|&v| shifted_exp(v, self.max))
                .sum();
            if lift * inside >= self.top_p {
                width = candidate;
                break;
            }
        }
        let floor = self.max - width - self.two_delta;
        let mut ordered: Vec<(f64, u32)> = z
            .iter()
            .enumerate()
            .filter(|(_, &v)| self.in_k_plus(v) && v >= floor)
            .map(|(i, &v)| (v, i as u32))
            .collect();
        ordered.sort_unstable_by(|&a, &b| better(a, b));
        let mut prefix = Vec::with_capacity(ordered.len() + 1);
        prefix.push(0.0f64);
        for &(v, _) in &ordered {
            prefix.push(prefix.last().copied().unwrap_or(0.0) + shifted_exp(v, self.max));
        }
        for &(v, id) in &ordered {
            if !self.in_k_minus(v) || v < self.max - width {
                continue;
            }
            let within = ordered.partition_point(|&(u, _)| u >= v - self.two_delta);
            let others = prefix[within] - shifted_exp(v, self.max);
            self.in_core[id as usize] = lift * others < self.top_p;
        }
    }
}

#[cfg(test)]
mod tests;
