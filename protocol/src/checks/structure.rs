//! Cheap structural checks: sizes, vocabulary, group shape, window/replay binding, duplicates,
//! deadline and termination. They run on every submission before any forward pass.

use serde::{Deserialize, Serialize};

use super::RejectReason;
use crate::randomness::{problem_seed, Randomness};
use crate::sampling::{unmasked_logprob, SamplingParams};
use crate::sketch::SKETCH_PRIME;

/// Minimum probability of the final EOS under the unmasked (penalty + temperature) distribution.
pub const MIN_EOS_PROBABILITY: f64 = 0.02;

/// Size limits of a window submission (config; the verifier's values are authoritative).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Maximum completion tokens per rollout (generation stops there without EOS).
    pub max_new_tokens: u32,
    /// Exact number of rollouts per group (GRPO group size G).
    pub group_size: u32,
    /// Maximum groups one miner may submit per window.
    pub max_groups_per_window: u32,
    /// Model vocabulary size (`config.vocab_size`, the logits width, not the tokenizer length).
    pub vocab_size: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_new_tokens: 1024,
            group_size: 16,
            max_groups_per_window: 1024,
            vocab_size: 151_936,
        }
    }
}

/// What a miner claims for one rollout (a borrowed view over the lead's message types).
#[derive(Clone, Copy, Debug)]
pub struct RolloutClaim<'a> {
    pub completion: &'a [u32],
    /// One sketch per completion token (hidden row at absolute position `prompt_len + i`).
    pub sketches: &'a [u32],
    /// One policy log-prob per completion token ([`crate::sampling::token_logprob`]).
    pub logprobs: &'a [f32],
    pub reward: f32,
    pub advantage: f32,
}

/// Group size, per-rollout sizes, vocabulary, field lengths, sketch range and finiteness.
pub fn check_group_shape(
    rollouts: &[RolloutClaim<'_>],
    limits: &Limits,
) -> Result<(), RejectReason> {
    if rollouts.len() != limits.group_size as usize {
        return Err(RejectReason::GroupSizeMismatch {
            expected: limits.group_size,
            actual: u32::try_from(rollouts.len()).unwrap_or(u32::MAX),
        });
    }
    for (index, claim) in rollouts.iter().enumerate() {
        check_rollout_shape(index as u32, claim, limits)?;
    }
    Ok(())
}

fn check_rollout_shape(
    rollout: u32,
    claim: &RolloutClaim<'_>,
    limits: &Limits,
) -> Result<(), RejectReason> {
    let length = claim.completion.len();
    if length == 0 {
        return Err(RejectReason::EmptyCompletion { rollout });
    }
    if length > limits.max_new_tokens as usize {
        return Err(RejectReason::CompletionTooLong {
            rollout,
            length: u32::try_from(length).unwrap_or(u32::MAX),
            max: limits.max_new_tokens,
        });
    }
    let length = length as u32;
    for (field, actual) in [
        ("sketches", claim.sketches.len()),
        ("logprobs", claim.logprobs.len()),
    ] {
        if actual != length as usize {
            return Err(RejectReason::LengthMismatch {
                rollout,
                field: field.to_string(),
                expected: length,
                actual: u32::try_from(actual).unwrap_or(u32::MAX),
            });
        }
    }
    if let Some((position, &token)) = claim
        .completion
        .iter()
        .enumerate()
        .find(|(_, &t)| t >= limits.vocab_size)
    {
        return Err(RejectReason::TokenOutOfVocab {
            rollout,
            position: position as u32,
            token,
            vocab: limits.vocab_size,
        });
    }
    if let Some((position, &value)) = claim
        .sketches
        .iter()
        .enumerate()
        .find(|(_, &s)| s >= SKETCH_PRIME)
    {
        return Err(RejectReason::SketchOutOfRange {
            rollout,
            position: position as u32,
            value,
        });
    }
    let non_finite = |field: &str| RejectReason::NonFiniteValue {
        rollout,
        field: field.to_string(),
    };
    if !claim.reward.is_finite() {
        return Err(non_finite("reward"));
    }
    if !claim.advantage.is_finite() {
        return Err(non_finite("advantage"));
    }
    // Log-probs are ≤ 0; -inf would mean the miner emitted an impossible token.
    if claim.logprobs.iter().any(|lp| !lp.is_finite() || *lp > 0.0) {
        return Err(non_finite("logprobs"));
    }
    Ok(())
}

/// Number of groups one miner submitted in the window.
pub fn check_group_count(groups: usize, limits: &Limits) -> Result<(), RejectReason> {
    if groups > limits.max_groups_per_window as usize {
        return Err(RejectReason::TooManyGroups {
            max: limits.max_groups_per_window,
            actual: u32::try_from(groups).unwrap_or(u32::MAX),
        });
    }
    Ok(())
}

/// Replay across windows: the signed window must be the window being verified.
pub fn check_window(signed_window: u64, current_window: u64) -> Result<(), RejectReason> {
    if signed_window != current_window {
        return Err(RejectReason::WrongWindow {
            signed: signed_window,
            current: current_window,
        });
    }
    Ok(())
}

/// The group's problem seed must re-derive from this window's OPEN randomness, the miner and the group.
pub fn check_problem_seed(
    claimed: u64,
    open: &Randomness,
    miner_pubkey: &[u8; 32],
    group_index: u32,
) -> Result<(), RejectReason> {
    let expected = problem_seed(open, miner_pubkey, group_index);
    if claimed != expected {
        return Err(RejectReason::ProblemSeedMismatch {
            group: group_index,
            claimed,
            expected,
        });
    }
    Ok(())
}

/// No nonce twice from one miner in one window.
pub fn check_unique_nonces(nonces: &[u64]) -> Result<(), RejectReason> {
    first_duplicate(nonces).map_or(Ok(()), |nonce| Err(RejectReason::DuplicateNonce { nonce }))
}

/// No group index twice from one miner in one window.
pub fn check_unique_group_indices(groups: &[u32]) -> Result<(), RejectReason> {
    first_duplicate(groups).map_or(Ok(()), |group| {
        Err(RejectReason::DuplicateGroupIndex { group })
    })
}

fn first_duplicate<T: Ord + Copy>(values: &[T]) -> Option<T> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

/// Late submission: the broker's (server) timestamp, never the miner's clock, against the deadline.
pub fn check_deadline(server_timestamp_ms: u64, deadline_ms: u64) -> Result<(), RejectReason> {
    if server_timestamp_ms > deadline_ms {
        return Err(RejectReason::LateSubmission {
            server_timestamp_ms,
            deadline_ms,
        });
    }
    Ok(())
}

/// The token-only part of [`check_termination`] (no logits, so it runs on every group): no EOS
/// before the end, and either a final EOS or exactly `max_new_tokens` tokens. Returns whether the
/// completion ends with EOS (whose probability only the full check can judge).
pub fn check_termination_shape(
    rollout: u32,
    completion: &[u32],
    eos_ids: &[u32],
    max_new_tokens: u32,
) -> Result<bool, RejectReason> {
    let length = u32::try_from(completion.len()).unwrap_or(u32::MAX);
    let Some((&last, body)) = completion.split_last() else {
        return Err(RejectReason::EmptyCompletion { rollout });
    };
    if let Some(position) = body.iter().position(|t| eos_ids.contains(t)) {
        return Err(RejectReason::EosBeforeEnd {
            rollout,
            position: position as u32,
        });
    }
    if eos_ids.contains(&last) {
        return Ok(true);
    }
    if length == max_new_tokens {
        Ok(false)
    } else {
        Err(RejectReason::MissingEos {
            rollout,
            length,
            max: max_new_tokens,
        })
    }
}

/// Termination: either the completion ends with one of `eos_ids` (and contains no earlier EOS) whose
/// unmasked probability at the final step is `≥ min_probability`, or it has exactly `max_new_tokens`
/// tokens and no EOS at all. `final_logits` is the verifier's raw logits row that predicted the last
/// token and `context` the prompt plus all completion tokens but the last.
#[allow(clippy::too_many_arguments)]
pub fn check_termination(
    rollout: u32,
    completion: &[u32],
    eos_ids: &[u32],
    max_new_tokens: u32,
    final_logits: &[f32],
    context: &[u32],
    params: &SamplingParams,
    min_probability: f64,
) -> Result<(), RejectReason> {
    if !check_termination_shape(rollout, completion, eos_ids, max_new_tokens)? {
        return Ok(());
    }
    let Some(&last) = completion.last() else {
        return Err(RejectReason::EmptyCompletion { rollout });
    };
    let probability = unmasked_logprob(final_logits, context, params, last).exp();
    if probability.is_nan() || probability < min_probability {
        return Err(RejectReason::LowEosProbability {
            rollout,
            probability,
            minimum: min_probability,
        });
    }
    Ok(())
}
