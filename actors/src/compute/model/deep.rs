//! Forward-pass checks on one deep-checked group (PROTOCOL.md §5.1 checks 7–10): one
//! full-sequence prefill per rollout (batched), then at the K challenged positions the sketch,
//! the log-prob deviation, the seeded-sampling replay and the termination rule.

use messages::{Rollout, RolloutGroup};
use policy::proof::{proof_forward, ProofInput, ProofOptions};
use policy::Model;
use protocol::checks::{
    check_logprob_deviation, check_sampling_replay, check_sketches, check_termination, CheckError,
    SamplingReplay, WindowVerdictBuilder,
};
use protocol::randomness::{challenged_positions, Randomness};
use protocol::sampling::{token_logprob, SamplingParams};
use protocol::sketch::SketchCoefficients;

use super::verifier_options::VerifierOptions;
use super::ModelComputeError;

/// The verifier's own rows at one rollout's challenged positions.
#[derive(Clone, Debug)]
pub struct Recomputed {
    /// Completion-relative challenged positions, ascending (the last one is the final token).
    pub positions: Vec<u32>,
    /// `[positions, hidden]`: final-norm hidden state at absolute `prompt_len + p`.
    pub hidden_rows: Vec<f32>,
    /// `[positions, vocab]`: raw logits at absolute `prompt_len + p − 1` (the row that
    /// predicted completion token `p`).
    pub logits_rows: Vec<f32>,
    pub vocab: usize,
}

impl Recomputed {
    pub fn logits_row(&self, i: usize) -> &[f32] {
        &self.logits_rows[i * self.vocab..(i + 1) * self.vocab]
    }
}

/// Runs the proof forward over `rollouts` (prompt + completion each, `prompt_len ≥ 1`) in
/// batches of `batch_rows` and returns the rows at `positions[r]` for each rollout.
pub fn recompute(
    model: &Model,
    rollouts: &[&Rollout],
    positions: &[Vec<u32>],
    batch_rows: usize,
    pad_id: u32,
) -> Result<Vec<Recomputed>, ModelComputeError> {
    let opts = ProofOptions {
        pad_id,
        next_token_logprobs: false,
        ..ProofOptions::default()
    };
    let vocab = model.config().vocab_size;
    let logit_positions: Vec<Vec<usize>> = rollouts
        .iter()
        .zip(positions)
        .map(|(r, ps)| {
            ps.iter()
                .map(|&p| r.prompt_len as usize + p as usize - 1)
                .collect()
        })
        .collect();
    let mut out = Vec::with_capacity(rollouts.len());
    let batch_rows = batch_rows.max(1);
    for start in (0..rollouts.len()).step_by(batch_rows) {
        let end = (start + batch_rows).min(rollouts.len());
        let inputs: Vec<ProofInput> = (start..end)
            .map(|i| ProofInput {
                tokens: &rollouts[i].tokens.0,
                logit_positions: &logit_positions[i],
            })
            .collect();
        for (i, proof) in (start..end).zip(proof_forward(model, &inputs, &opts)?) {
            let prompt_len = rollouts[i].prompt_len as usize;
            let hidden_rows = positions[i]
                .iter()
                .flat_map(|&p| proof.hidden_at(prompt_len + p as usize).iter().copied())
                .collect();
            let logits_rows = proof.logits.into_iter().flat_map(|(_, row)| row).collect();
            out.push(Recomputed {
                positions: positions[i].clone(),
                hidden_rows,
                logits_rows,
                vocab,
            });
        }
    }
    Ok(out)
}

/// Everything that keys and bounds the deep checks of one group.
pub struct DeepContext<'a> {
    pub open: &'a Randomness,
    pub close: &'a Randomness,
    pub miner_pubkey: &'a [u8; 32],
    pub params: &'a SamplingParams,
    pub coefficients: &'a SketchCoefficients,
    pub eos_ids: &'a [u32],
    pub max_new_tokens: u32,
    pub opts: &'a VerifierOptions,
}

/// The challenged positions of every rollout of `group` (PROTOCOL.md §2.6).
pub fn group_positions(ctx: &DeepContext<'_>, group: &RolloutGroup) -> Vec<Vec<u32>> {
    (0..group.rollouts.len() as u32)
        .map(|r| rollout_positions(ctx, group, r))
        .collect()
}

/// The challenged positions of rollout `r` of `group`.
fn rollout_positions(ctx: &DeepContext<'_>, group: &RolloutGroup, r: u32) -> Vec<u32> {
    challenged_positions(
        ctx.close,
        ctx.miner_pubkey,
        group.group_index,
        r,
        group.rollouts[r as usize].completion().len() as u32,
        ctx.opts.challenge_k,
    )
}

/// The rollouts of `group` whose forward pass is recomputed: all of them, or the
/// close-drawn subset of `opts.rollouts_checked` (PROTOCOL.md §2.7).
pub fn checked_rollout_indices(ctx: &DeepContext<'_>, group: &RolloutGroup) -> Vec<u32> {
    protocol::randomness::checked_rollouts(
        ctx.close,
        ctx.miner_pubkey,
        group.group_index,
        group.rollouts.len() as u32,
        ctx.opts.rollouts_checked,
    )
}

/// Deep-checks the checked rollouts of a group that passed the cheap checks (shapes,
/// prompts) and records findings in `verdict`. Stops at the first hard finding. Returns the
/// number of challenged positions checked.
pub fn deep_check_group(
    model: &Model,
    ctx: &DeepContext<'_>,
    group: &RolloutGroup,
    pad_id: u32,
    verdict: &mut WindowVerdictBuilder,
) -> Result<usize, ModelComputeError> {
    let checked = checked_rollout_indices(ctx, group);
    let rollouts: Vec<&Rollout> = checked
        .iter()
        .map(|&r| &group.rollouts[r as usize])
        .collect();
    let positions: Vec<Vec<u32>> = checked
        .iter()
        .map(|&r| rollout_positions(ctx, group, r))
        .collect();
    let rows = recompute(model, &rollouts, &positions, ctx.opts.batch_rows, pad_id)?;
    let mut challenged = 0;
    for ((&r, rollout), rows) in checked.iter().zip(&rollouts).zip(&rows) {
        judge_rollout(r, group.group_index, rollout, rows, ctx, verdict)?;
        challenged += rows.positions.len();
        if verdict.has_failed() {
            break;
        }
    }
    Ok(challenged)
}

/// Checks 7–10 on one rollout from the verifier's recomputed rows.
pub fn judge_rollout(
    rollout_index: u32,
    group_index: u32,
    rollout: &Rollout,
    rows: &Recomputed,
    ctx: &DeepContext<'_>,
    verdict: &mut WindowVerdictBuilder,
) -> Result<(), ModelComputeError> {
    let opts = ctx.opts;
    let prompt_len = rollout.prompt_len;
    let completion = rollout.completion();
    let tokens = &rollout.tokens.0;
    let record = |verdict: &mut WindowVerdictBuilder,
                  result: Result<(), CheckError>|
     -> Result<(), ModelComputeError> {
        match result {
            Ok(()) => Ok(()),
            Err(CheckError::Rejected(reason)) => {
                verdict.reject(reason);
                Ok(())
            }
            Err(CheckError::VerifierInput(message)) => {
                Err(ModelComputeError::VerifierRows(message))
            }
        }
    };
    let sketches = check_sketches(
        rollout_index,
        prompt_len,
        &rows.positions,
        &rollout.sketches.0,
        &rows.hidden_rows,
        ctx.coefficients,
        &opts.sketch,
        &opts.tolerance,
    )
    .map(|_| ());
    record(verdict, sketches)?;
    let recomputed: Vec<f32> = rows
        .positions
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            token_logprob(
                rows.logits_row(i),
                completion[p as usize],
                ctx.params.temperature,
            )
        })
        .collect();
    let deviation = check_logprob_deviation(
        rollout_index,
        &rows.positions,
        &rollout.logprobs.0,
        &recomputed,
        opts.logprob_epsilon,
    )
    .map(|_| ());
    record(verdict, deviation)?;
    let replay = SamplingReplay {
        open: ctx.open,
        miner_pubkey: ctx.miner_pubkey,
        group_index,
        rollout_index,
        params: ctx.params,
        logit_drift: opts.logit_drift,
    };
    let sampling = check_sampling_replay(
        &replay,
        tokens,
        prompt_len,
        &rows.positions,
        &rows.logits_rows,
    );
    record(verdict, sampling)?;
    // The final position is always challenged, so its row is the last one.
    let last = rows.positions.len().saturating_sub(1);
    let final_context = &tokens[..tokens.len().saturating_sub(1)];
    verdict.record(check_termination(
        rollout_index,
        completion,
        ctx.eos_ids,
        ctx.max_new_tokens,
        rows.logits_row(last),
        final_context,
        ctx.params,
        opts.min_eos_probability,
    ));
    Ok(())
}
