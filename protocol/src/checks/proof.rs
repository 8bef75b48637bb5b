//! Forward-pass checks at challenged positions (deep-checked groups only): sketch, log-prob
//! deviation and sampling replay. Positions are completion-relative; the verifier supplies its own
//! recomputed rows for exactly those positions, in the same order.

use super::{CheckError, RejectReason};
use crate::randomness::{sampling_key, Randomness};
use crate::sampling::{check_sampled_token, SamplingParams};
use crate::sketch::{sketch, sketch_distance, SketchCoefficients, SketchParams, SketchTolerance};

/// Per-rollout sketch outcome (for metrics and calibration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SketchReport {
    /// Distance at each challenged position, in order.
    pub distances: Vec<u32>,
    pub failed: u32,
}

fn input_error(what: String) -> CheckError {
    CheckError::VerifierInput(what)
}

/// Sketch check. `hidden_rows` is row-major `[positions.len(), hidden_dim]`: row `i` is the verifier's
/// post-final-norm hidden state at absolute position `prompt_len + positions[i]`. Position `p` passes
/// when `distance ≤ tolerance.at(prompt_len + p)`; the rollout passes with at most
/// `tolerance.max_failed_positions` failures.
#[allow(clippy::too_many_arguments)]
pub fn check_sketches(
    rollout: u32,
    prompt_len: u32,
    positions: &[u32],
    claimed_sketches: &[u32],
    hidden_rows: &[f32],
    coefficients: &SketchCoefficients,
    params: &SketchParams,
    tolerance: &SketchTolerance,
) -> Result<SketchReport, CheckError> {
    let dim = coefficients.hidden_dim();
    if hidden_rows.len() != positions.len() * dim {
        return Err(input_error(format!(
            "hidden_rows has {} values, expected {} positions x hidden_dim {dim}",
            hidden_rows.len(),
            positions.len()
        )));
    }
    let mut report = SketchReport {
        distances: Vec::with_capacity(positions.len()),
        failed: 0,
    };
    let mut worst: Option<(u32, u32, u32)> = None; // (excess over tolerance, position, distance)
    for (i, &position) in positions.iter().enumerate() {
        let Some(&claimed) = claimed_sketches.get(position as usize) else {
            return Err(input_error(format!(
                "challenged position {position} is past the claimed sketches"
            )));
        };
        let row = &hidden_rows[i * dim..(i + 1) * dim];
        let recomputed =
            sketch(row, coefficients, params).map_err(|e| input_error(e.to_string()))?;
        let distance = sketch_distance(claimed, recomputed);
        let allowed = tolerance.at(prompt_len.saturating_add(position));
        report.distances.push(distance);
        if distance > allowed {
            report.failed += 1;
            let excess = distance - allowed;
            if worst.is_none_or(|(e, _, _)| excess > e) {
                worst = Some((excess, position, distance));
            }
        }
    }
    match worst {
        Some((_, worst_position, worst_distance))
            if report.failed > tolerance.max_failed_positions =>
        {
            Err(RejectReason::SketchMismatch {
                rollout,
                failed: report.failed,
                allowed: tolerance.max_failed_positions,
                worst_position,
                worst_distance,
                tolerance: tolerance.at(prompt_len.saturating_add(worst_position)),
            }
            .into())
        }
        _ => Ok(report),
    }
}

/// `exp(|claimed − recomputed|) − 1` per position (`+inf` if either side is not finite).
pub fn logprob_deviations(claimed: &[f32], recomputed: &[f32]) -> Vec<f64> {
    claimed
        .iter()
        .zip(recomputed)
        .map(|(&c, &r)| {
            let diff = (f64::from(c) - f64::from(r)).abs();
            if diff.is_finite() {
                diff.exp_m1()
            } else {
                f64::INFINITY
            }
        })
        .collect()
}

/// Median over challenged positions of `exp|Δ| − 1` must be `≤ epsilon`. `recomputed[i]` is the
/// verifier's policy log-prob ([`crate::sampling::token_logprob`]) of completion token `positions[i]`.
/// Returns the median (even counts: mean of the two middle values).
pub fn check_logprob_deviation(
    rollout: u32,
    positions: &[u32],
    claimed_logprobs: &[f32],
    recomputed: &[f32],
    epsilon: f64,
) -> Result<f64, CheckError> {
    if recomputed.len() != positions.len() {
        return Err(input_error(format!(
            "{} recomputed log-probs for {} challenged positions",
            recomputed.len(),
            positions.len()
        )));
    }
    let mut claimed = Vec::with_capacity(positions.len());
    for &position in positions {
        let Some(&value) = claimed_logprobs.get(position as usize) else {
            return Err(input_error(format!(
                "challenged position {position} is past the claimed log-probs"
            )));
        };
        claimed.push(value);
    }
    let mut deviations = logprob_deviations(&claimed, recomputed);
    if deviations.is_empty() {
        return Ok(0.0);
    }
    deviations.sort_unstable_by(f64::total_cmp);
    let n = deviations.len();
    let median = if n % 2 == 1 {
        deviations[n / 2]
    } else {
        (deviations[n / 2 - 1] + deviations[n / 2]) / 2.0
    };
    if median.is_nan() || median > epsilon {
        return Err(RejectReason::LogprobDeviation {
            rollout,
            median,
            epsilon,
        }
        .into());
    }
    Ok(median)
}

/// Who sampled and how: everything that keys and shapes the replayed choice.
#[derive(Clone, Copy, Debug)]
pub struct SamplingReplay<'a> {
    pub open: &'a Randomness,
    pub miner_pubkey: &'a [u8; 32],
    pub group_index: u32,
    pub rollout_index: u32,
    pub params: &'a SamplingParams,
    /// Bound on |miner raw logit − verifier raw logit| (calibrated; see `docs/PROTOCOL.md` §4.4).
    pub logit_drift: f64,
}

/// Replays the seeded choice at each challenged position. `sequence` is prompt + completion;
/// `logits_rows` is row-major `[positions.len(), vocab]`: row `i` is the verifier's raw logits at
/// absolute position `prompt_len + positions[i] − 1`, the row that predicted completion token
/// `positions[i]`; its context is `sequence[..prompt_len + positions[i]]`.
pub fn check_sampling_replay(
    replay: &SamplingReplay<'_>,
    sequence: &[u32],
    prompt_len: u32,
    positions: &[u32],
    logits_rows: &[f32],
) -> Result<(), CheckError> {
    if prompt_len == 0 {
        return Err(input_error(
            "the prompt is empty: no logits row predicts the first token".into(),
        ));
    }
    if positions.is_empty() {
        return Ok(());
    }
    if !logits_rows.len().is_multiple_of(positions.len()) {
        return Err(input_error(format!(
            "logits_rows has {} values, not a multiple of {} positions",
            logits_rows.len(),
            positions.len()
        )));
    }
    let vocab = logits_rows.len() / positions.len();
    for (i, &position) in positions.iter().enumerate() {
        let absolute = prompt_len as usize + position as usize;
        let Some(&token) = sequence.get(absolute) else {
            return Err(input_error(format!(
                "challenged position {position} is past the sequence"
            )));
        };
        let key = sampling_key(
            replay.open,
            replay.miner_pubkey,
            replay.group_index,
            replay.rollout_index,
            position,
        );
        let row = &logits_rows[i * vocab..(i + 1) * vocab];
        check_sampled_token(
            row,
            &sequence[..absolute],
            replay.params,
            &key,
            token,
            replay.logit_drift,
        )
        .map_err(|violation| RejectReason::SamplingMismatch {
            rollout: replay.rollout_index,
            position,
            violation,
        })?;
    }
    Ok(())
}
