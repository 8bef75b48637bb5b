//! Replayable sampling: the miner's token choice at every step is a deterministic function of the
//! model's logits and a per-step key derived from OPEN randomness, so a verifier with the same logits
//! replays it. Grail has no such rule; there a miner may pick any plausible token.
//!
//! Processing order (all in f64, see `docs/PROTOCOL.md` §4):
//! 1. non-finite raw logits are excluded;
//! 2. repetition penalty over the distinct ids of `context` (prompt + completion so far): a positive
//!    logit is divided by the penalty, a non-positive one multiplied (HF semantics);
//! 3. temperature: `z = logit / T` (T = 0 means greedy: only the first maximum survives);
//! 4. top-k: keep the k largest `z`, ties to the lower token id;
//! 5. log-softmax over the survivors;
//! 6. top-p: sort survivors by probability (ties to the lower id), keep the shortest prefix whose
//!    cumulative probability is `≥ top_p`;
//! 7. renormalise over the final survivors. Excluded tokens get `-inf`.

mod check;
mod noise;

pub use check::{check_choice, check_sampled_token, SamplingViolation};
pub use noise::{choose, gumbel_noise, mix64, noise_bits};

use serde::{Deserialize, Serialize};

/// Sampling parameters (serde: they live in the checkpoint/window config).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingParams {
    /// `> 0`: sampling temperature; `0`: greedy decoding.
    pub temperature: f32,
    /// `0` disables top-k.
    pub top_k: u32,
    /// `1.0` disables top-p; must be in `(0, 1]`.
    pub top_p: f32,
    /// `1.0` disables the penalty; must be `> 0`.
    pub repetition_penalty: f32,
}

impl Default for SamplingParams {
    /// Plain temperature-1 sampling: exactly the policy distribution, which is what on-policy GRPO
    /// wants (masks make the behaviour policy differ from the trained one).
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
        }
    }
}

/// A sampling configuration that cannot be replayed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingParamsError {
    #[error("sampling temperature={0} is invalid: use a finite value >= 0 (0 = greedy)")]
    Temperature(f32),
    #[error("sampling top_p={0} is invalid: use a value in (0, 1] (1 = disabled)")]
    TopP(f32),
    #[error("sampling repetition_penalty={0} is invalid: use a finite value > 0 (1 = disabled)")]
    RepetitionPenalty(f32),
}

impl SamplingParams {
    /// Greedy decoding (temperature 0, no other processing).
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    pub fn validate(&self) -> Result<(), SamplingParamsError> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(SamplingParamsError::Temperature(self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplingParamsError::TopP(self.top_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(SamplingParamsError::RepetitionPenalty(
                self.repetition_penalty,
            ));
        }
        Ok(())
    }

    /// The temperature that scales logits (1 for greedy, where only the order matters).
    pub(crate) fn scale_temperature(&self) -> f64 {
        if self.is_greedy() {
            1.0
        } else {
            f64::from(self.temperature)
        }
    }
}

/// Steps 1–3: penalised, temperature-scaled scores `z` (f64; `-inf` for non-finite raw logits).
pub(crate) fn scaled_scores(
    raw_logits: &[f32],
    context: &[u32],
    params: &SamplingParams,
) -> Vec<f64> {
    let mut z: Vec<f64> = raw_logits
        .iter()
        .map(|&x| {
            if x.is_finite() {
                f64::from(x)
            } else {
                f64::NEG_INFINITY
            }
        })
        .collect();
    let penalty = f64::from(params.repetition_penalty);
    if penalty != 1.0 && !context.is_empty() {
        let mut seen = vec![false; z.len()];
        for &token in context {
            let Some(flag) = seen.get_mut(token as usize) else {
                continue;
            };
            if std::mem::replace(flag, true) {
                continue;
            }
            let value = &mut z[token as usize];
            if value.is_finite() {
                *value = if *value > 0.0 {
                    *value / penalty
                } else {
                    *value * penalty
                };
            }
        }
    }
    let temperature = params.scale_temperature();
    if temperature != 1.0 {
        z.iter_mut().for_each(|v| *v /= temperature);
    }
    z
}

/// Orders candidates best first: larger score, then lower token id.
#[inline]
pub(crate) fn better(a: (f64, u32), b: (f64, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// `k`-th best `(score, id)` among finite scores, if top-k actually cuts (`0 < k < #finite`).
pub(crate) fn top_k_threshold(z: &[f64], k: u32) -> Option<(f64, u32)> {
    if k == 0 {
        return None;
    }
    let mut finite: Vec<(f64, u32)> = z
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, &v)| (v, i as u32))
        .collect();
    let k = k as usize;
    if k >= finite.len() {
        return None;
    }
    let (_, kth, _) = finite.select_nth_unstable_by(k - 1, |&a, &b| better(a, b));
    Some(*kth)
}

/// `exp(v − max)` for `v ≤ max`: evaluated in f32 (relative error ~1e-7, far below any logit drift)
/// and accumulated by callers in f64. `-inf` maps to 0.
#[inline]
pub(crate) fn shifted_exp(v: f64, max: f64) -> f64 {
    f64::from(((v - max) as f32).exp())
}

/// Processed log-probabilities (steps 1–7); `-inf` marks excluded tokens. Invalid parameters or an
/// all-excluded row yield an all-`-inf` vector, which [`choose`] answers with `None`.
pub fn process_logits(raw_logits: &[f32], context: &[u32], params: &SamplingParams) -> Vec<f32> {
    let mut out = vec![f32::NEG_INFINITY; raw_logits.len()];
    if params.validate().is_err() {
        return out;
    }
    let mut z = scaled_scores(raw_logits, context, params);
    let Some(argmax) = first_argmax(&z) else {
        return out;
    };
    if params.is_greedy() {
        out[argmax] = 0.0;
        return out;
    }
    if let Some(kth) = top_k_threshold(&z, params.top_k) {
        for (id, value) in z.iter_mut().enumerate() {
            if better((*value, id as u32), kth) == std::cmp::Ordering::Greater {
                *value = f64::NEG_INFINITY;
            }
        }
    }
    let max = z[argmax];
    let weights: Vec<f64> = z.iter().map(|&v| shifted_exp(v, max)).collect();
    let mut total: f64 = weights.iter().sum();
    if params.top_p < 1.0 {
        total = apply_top_p(&mut z, &weights, max, total, f64::from(params.top_p));
    }
    let log_normaliser = max + total.ln();
    for (slot, &value) in out.iter_mut().zip(&z) {
        if value.is_finite() {
            *slot = (value - log_normaliser) as f32;
        }
    }
    out
}

/// Nucleus candidates are searched in windows of this many nats below the maximum, widest last. The
/// nucleus is the prefix of the global order, so once the tokens inside a window carry `≥ top_p` of
/// the mass, the nucleus closes inside it and nothing below needs sorting. The last window is exact
/// too: `top_p < 1` is an f32, so `top_p ≤ 1 − 2^-24`, while everything 40 nats below the maximum
/// carries less than `2^32 · e^-40 < 2^-25` of the mass.
const NUCLEUS_WINDOWS: [f64; 5] = [2.0, 5.0, 10.0, 20.0, 40.0];

/// Step 6: keeps the shortest prefix (by `better`) with cumulative probability `≥ top_p`, excludes the
/// rest, and returns the kept mass (`Σ weights` of survivors).
fn apply_top_p(z: &mut [f64], weights: &[f64], max: f64, total: f64, top_p: f64) -> f64 {
    let mut window_floor = max - NUCLEUS_WINDOWS[NUCLEUS_WINDOWS.len() - 1];
    for width in NUCLEUS_WINDOWS {
        let floor = max - width;
        let inside: f64 = z
            .iter()
            .zip(weights)
            .filter(|(&v, _)| v >= floor)
            .map(|(_, &w)| w)
            .sum();
        if inside >= top_p * total {
            window_floor = floor;
            break;
        }
    }
    let mut ordered: Vec<(f64, u32)> = z
        .iter()
        .enumerate()
        .filter(|(_, &v)| v.is_finite() && v >= window_floor)
        .map(|(i, &v)| (v, i as u32))
        .collect();
    ordered.sort_unstable_by(|&a, &b| better(a, b));
    let mut kept = vec![false; z.len()];
    let mut cumulative = 0.0;
    for &(_, id) in &ordered {
        kept[id as usize] = true;
        cumulative += weights[id as usize];
        if cumulative >= top_p * total {
            break;
        }
    }
    for (value, keep) in z.iter_mut().zip(kept) {
        if !keep {
            *value = f64::NEG_INFINITY;
        }
    }
    cumulative
}

fn first_argmax(z: &[f64]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &v) in z.iter().enumerate() {
        if v.is_finite() && best.is_none_or(|b| v > z[b]) {
            best = Some(i);
        }
    }
    best
}

/// Policy log-probability of `token`: `log_softmax(raw / T)[token]` with `T = 1` for greedy, no
/// penalty and no masks. This is the value miners report and the trainer's importance ratio uses;
/// `-inf` when the token is out of range or the row has no finite logit.
pub fn token_logprob(raw_logits: &[f32], token: u32, temperature: f32) -> f32 {
    let params = SamplingParams {
        temperature,
        ..SamplingParams::default()
    };
    unmasked_logprob(raw_logits, &[], &params, token) as f32
}

/// `log p(token)` after steps 1–3 only (penalty and temperature, no masks): the distribution the EOS
/// check uses, because top-k/top-p boundaries flip under float drift.
pub fn unmasked_logprob(
    raw_logits: &[f32],
    context: &[u32],
    params: &SamplingParams,
    token: u32,
) -> f64 {
    let z = scaled_scores(raw_logits, context, params);
    let Some(&value) = z.get(token as usize) else {
        return f64::NEG_INFINITY;
    };
    let Some(argmax) = first_argmax(&z) else {
        return f64::NEG_INFINITY;
    };
    if !value.is_finite() {
        return f64::NEG_INFINITY;
    }
    let max = z[argmax];
    let sum: f64 = z.iter().map(|&v| shifted_exp(v, max)).sum();
    value - max - sum.ln()
}

#[cfg(test)]
mod tests;
