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
    if params.top_p < 1.0 {
        apply_top_p(&mut z, max, f64::from(params.top_p));
    }
    let sum: f64 = z
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| (v - max).exp())
        .sum();
    let log_normaliser = max + sum.ln();
    for (slot, &value) in out.iter_mut().zip(&z) {
        if value.is_finite() {
            *slot = (value - log_normaliser) as f32;
        }
    }
    out
}

/// Only tokens within this many nats of the maximum are sorted for top-p. Exact: `top_p` is an f32, so
/// `top_p < 1` means `top_p ≤ 1 − 2^-24`, while all tokens below the window together carry less than
/// `2^32 · e^-40 < 2^-25` of the mass, so the nucleus always closes inside the window.
const NUCLEUS_SORT_WINDOW: f64 = 40.0;

/// Step 6 on scores `z` whose maximum is `max` (the normaliser cancels in the cumulative ratio).
fn apply_top_p(z: &mut [f64], max: f64, top_p: f64) {
    let total: f64 = z
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| (v - max).exp())
        .sum();
    let floor = max - NUCLEUS_SORT_WINDOW;
    let mut ordered: Vec<(f64, u32)> = z
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite() && **v >= floor)
        .map(|(i, &v)| (v, i as u32))
        .collect();
    ordered.sort_unstable_by(|&a, &b| better(a, b));
    let keep = nucleus_len(&ordered, max, total, top_p).unwrap_or(ordered.len());
    let mut kept = vec![false; z.len()];
    for &(_, id) in &ordered[..keep] {
        kept[id as usize] = true;
    }
    for (value, keep) in z.iter_mut().zip(kept) {
        if !keep {
            *value = f64::NEG_INFINITY;
        }
    }
}

/// Length of the shortest prefix of `ordered` with cumulative probability `≥ top_p`.
fn nucleus_len(ordered: &[(f64, u32)], max: f64, total: f64, top_p: f64) -> Option<usize> {
    let mut cumulative = 0.0;
    for (i, &(value, _)) in ordered.iter().enumerate() {
        cumulative += (value - max).exp() / total;
        if cumulative >= top_p {
            return Some(i + 1);
        }
    }
    None
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
    let sum: f64 = z
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| (v - max).exp())
        .sum();
    value - max - sum.ln()
}

#[cfg(test)]
mod tests;
