//! The model-backed verifier: every check of PROTOCOL.md §5 that applies to one group.
//!
//! Cheap checks run on every group, in this order: deadline (server time) → window →
//! checkpoint → problem seed → env / problem id → group shape (size, lengths, vocabulary,
//! sketch range, finiteness) → prompt re-derivation → duplicates and group count (the
//! [`super::registry::WindowRegistry`]) → termination shape → advantages vs claimed rewards → rewards recomputed
//! by the environment (soft) → cross-miner copies. Groups whose close-randomness draw is below
//! `deep_check_rate_ppm` also get the forward-pass checks ([`super::deep`]).
//!
//! One group is one verdict: soft findings are folded per group with [`SoftThresholds`]
//! (e.g. reward mismatches on more than 10 % of its rollouts reject it), because the scorer
//! fails a miner's window on any rejected group.

use std::sync::Arc;

use envs::{Environment, Problem};
use messages::{RolloutGroup, Ss58Address};
use protocol::checks::{
    check_advantages, check_deadline, check_group_shape, check_problem_seed, check_reward,
    check_termination_shape, check_window, grpo_advantages, unique_completions, Limits,
    RejectReason, RolloutClaim, WindowVerdict, WindowVerdictBuilder,
};
use protocol::randomness::deep_check_draw;
use protocol::sketch::SketchCoefficients;

use super::deep::{deep_check_group, DeepContext};
use super::{sampling_params, LoadedCheckpoint, ModelBase, ModelComputeError};
use crate::compute::verify::{counted_digests, VerifierCompute, VerifyJob, VerifyOutcome};
use crate::compute::ComputeError;

pub use super::verifier_options::VerifierOptions;

/// Verifies groups with a real model; one per worker thread (it owns its loaded weights).
pub struct ModelVerifier {
    base: Arc<ModelBase>,
    env: Arc<dyn Environment>,
    opts: VerifierOptions,
    loaded: LoadedCheckpoint,
}

fn outcome_rejected(reason: &RejectReason, deep_checked: bool) -> VerifyOutcome {
    VerifyOutcome {
        accepted: false,
        reason: Some(reason.code()),
        deep_checked,
        unique_rollouts: 0,
        learning_signal: false,
        mean_reward: 0.0,
    }
}

impl ModelVerifier {
    pub fn new(base: Arc<ModelBase>, env: Arc<dyn Environment>, opts: VerifierOptions) -> Self {
        Self {
            base,
            env,
            opts,
            loaded: LoadedCheckpoint::default(),
        }
    }

    pub fn options(&self) -> &VerifierOptions {
        &self.opts
    }

    /// Verifies a group and returns the full protocol verdict (the reason with its fields),
    /// without consulting or updating the idempotency cache.
    pub fn judge(&mut self, job: &VerifyJob) -> Result<(WindowVerdict, bool), ComputeError> {
        let g = &job.group;
        let mut verdict = WindowVerdictBuilder::new();
        if let Err(reason) = check_deadline(job.server_ts_ms, job.open.deadline_ms) {
            verdict.reject(reason);
            return Ok((verdict.finish(&self.opts.soft), false));
        }
        let checkpoint = job
            .checkpoint
            .as_ref()
            .ok_or(ModelComputeError::NoCheckpoint { window: g.window })?;
        let miner = Ss58Address::parse(&g.miner).map_err(ComputeError::job)?;
        let spec = &checkpoint.sampling;
        let limits = Limits {
            max_new_tokens: spec.max_new_tokens,
            group_size: self.opts.group_size,
            max_groups_per_window: self.opts.max_groups_per_window,
            vocab_size: self.base.config.vocab_size as u32,
        };
        let problem = match self.cheap_identity_checks(job, &miner.public, &limits) {
            Ok(problem) => problem,
            Err(reason) => {
                verdict.reject(reason);
                return Ok((verdict.finish(&self.opts.soft), false));
            }
        };
        self.cheap_content_checks(job, &problem, &limits, &mut verdict)?;
        let deep = !verdict.has_failed()
            && deep_check_draw(&job.close.randomness.0, &miner.public, g.group_index)
                < self.opts.deep_check_rate_ppm;
        if deep {
            if !self.opts.rescore_every_group {
                self.rescore(g, &problem, &mut verdict)?;
            }
            let params = sampling_params(spec)?;
            let model = self.loaded.ensure(&self.base, checkpoint)?;
            let coefficients = SketchCoefficients::derive(
                &job.open.randomness.0,
                self.base.config.hidden_size as u32,
            );
            let ctx = DeepContext {
                open: &job.open.randomness.0,
                close: &job.close.randomness.0,
                miner_pubkey: &miner.public,
                params: &params,
                coefficients: &coefficients,
                eos_ids: &self.base.eos_ids,
                max_new_tokens: spec.max_new_tokens,
                opts: &self.opts,
            };
            deep_check_group(model, &ctx, g, self.base.pad_id, &mut verdict)?;
        }
        Ok((verdict.finish(&self.opts.soft), deep))
    }

    /// Checks that bind the group to its window, checkpoint, miner and problem; returns the
    /// re-derived problem.
    fn cheap_identity_checks(
        &self,
        job: &VerifyJob,
        miner: &[u8; 32],
        limits: &Limits,
    ) -> Result<Problem, RejectReason> {
        let g = &job.group;
        check_window(g.window, job.open.window)?;
        let checkpoint = job
            .checkpoint
            .as_ref()
            .map(|c| c.digest)
            .unwrap_or_default();
        if g.checkpoint != checkpoint {
            return Err(RejectReason::CheckpointMismatch {
                claimed: g.checkpoint.to_string(),
                expected: checkpoint.to_string(),
            });
        }
        check_problem_seed(g.problem_seed, &job.open.randomness.0, miner, g.group_index)?;
        if g.env != self.env.id() {
            return Err(mismatch("env", &g.env, self.env.id()));
        }
        let problem = self.env.problem(g.problem_seed);
        if g.problem_id != problem.id {
            return Err(mismatch("problem_id", &g.problem_id, &problem.id));
        }
        let claims: Vec<RolloutClaim> = g
            .rollouts
            .iter()
            .map(|r| RolloutClaim {
                completion: r.completion(),
                sketches: &r.sketches.0,
                logprobs: &r.logprobs.0,
                reward: r.reward,
                advantage: r.advantage,
            })
            .collect();
        check_group_shape(&claims, limits)?;
        let prompt = self
            .base
            .prompt_tokens(&problem)
            .map_err(|e| mismatch("prompt", "(unencodable)", &e.to_string()))?;
        for (r, rollout) in g.rollouts.iter().enumerate() {
            let claimed = rollout.tokens.0.get(..rollout.prompt_len as usize);
            if prompt.is_empty() || claimed != Some(prompt.as_slice()) {
                return Err(RejectReason::PromptMismatch {
                    field: format!("rollouts[{r}].tokens[..prompt_len]"),
                    detail: format!(
                        "prompt_len {} vs re-derived prompt of {} tokens (or different ids)",
                        rollout.prompt_len,
                        prompt.len()
                    ),
                });
            }
        }
        self.opts.registry.claim(
            g.window,
            &g.miner,
            g.group_index,
            g.nonce,
            job.digest,
            limits,
        )?;
        Ok(problem)
    }

    /// Termination shape, advantages, rewards and copies: no model needed.
    fn cheap_content_checks(
        &self,
        job: &VerifyJob,
        problem: &Problem,
        limits: &Limits,
        verdict: &mut WindowVerdictBuilder,
    ) -> Result<(), ModelComputeError> {
        let g = &job.group;
        for (r, rollout) in g.rollouts.iter().enumerate() {
            let shape = check_termination_shape(
                r as u32,
                rollout.completion(),
                &self.base.eos_ids,
                limits.max_new_tokens,
            );
            if !verdict.record(shape) {
                return Ok(());
            }
        }
        let rewards: Vec<f32> = g.rollouts.iter().map(|r| r.reward).collect();
        let advantages: Vec<f32> = g.rollouts.iter().map(|r| r.advantage).collect();
        if !verdict.record(check_advantages(&advantages, &rewards, &self.opts.reward)) {
            return Ok(());
        }
        if self.opts.rescore_every_group {
            self.rescore(g, problem, verdict)?;
        }
        let digests = counted_digests(g, self.opts.registry.copy.min_tokens);
        verdict.record(self.opts.registry.check_copies(
            g.window,
            &g.miner,
            job.server_ts_ms,
            &digests,
        ));
        Ok(())
    }

    /// Recomputes every reward with the environment (soft: flaky environments exist).
    fn rescore(
        &self,
        g: &RolloutGroup,
        problem: &Problem,
        verdict: &mut WindowVerdictBuilder,
    ) -> Result<(), ModelComputeError> {
        for (r, rollout) in g.rollouts.iter().enumerate() {
            verdict.rollout_checked();
            let text = self.base.completion_text(rollout.completion())?;
            let reward = self.env.score(problem, &text);
            let mut result =
                check_reward(r as u32, rollout.reward, reward.total, &self.opts.reward);
            if result.is_ok() && reward.success != rollout.success {
                result = Err(RejectReason::RewardMismatch {
                    rollout: r as u32,
                    claimed: rollout.reward,
                    recomputed: reward.total,
                });
            }
            verdict.record(result);
        }
        Ok(())
    }
}

fn mismatch(field: &str, claimed: &str, expected: &str) -> RejectReason {
    RejectReason::PromptMismatch {
        field: field.to_string(),
        detail: format!("claimed `{claimed}`, re-derived `{expected}`"),
    }
}

impl VerifierCompute for ModelVerifier {
    fn verify(&mut self, job: &VerifyJob) -> Result<VerifyOutcome, ComputeError> {
        let g = &job.group;
        let registry = self.opts.registry.clone();
        if let Some(outcome) = registry.cached(g.window, &job.digest) {
            return Ok(outcome);
        }
        let (verdict, deep) = self.judge(job)?;
        let outcome = match verdict {
            WindowVerdict::Passed { .. } => {
                let digests = counted_digests(g, self.opts.registry.copy.min_tokens);
                registry.register_completions(g.window, &g.miner, job.server_ts_ms, &digests);
                let completions: Vec<&[u32]> = g.rollouts.iter().map(|r| r.completion()).collect();
                let rewards: Vec<f32> = g.rollouts.iter().map(|r| r.reward).collect();
                VerifyOutcome {
                    accepted: true,
                    reason: None,
                    deep_checked: deep,
                    unique_rollouts: unique_completions(&completions).len() as u32,
                    learning_signal: grpo_advantages(&rewards).has_learning_signal,
                    mean_reward: rewards.iter().sum::<f32>() / rewards.len().max(1) as f32,
                }
            }
            WindowVerdict::Failed { reason } | WindowVerdict::Discarded { reason } => {
                tracing::debug!(window = g.window, miner = %g.miner, group = g.group_index, %reason, "group rejected");
                outcome_rejected(&reason, deep)
            }
        };
        registry.remember(g.window, job.digest, &outcome);
        Ok(outcome)
    }
}
