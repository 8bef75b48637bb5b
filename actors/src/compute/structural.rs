//! Model-free compute: completions are drawn from a PRF of the problem seed, rewards are a
//! deterministic function of the completion, and the verifier re-derives everything it can
//! without a model (problem seed, group size, advantages, deadline). It lets the transport,
//! supervision and scoring machinery be tested at full speed, and it is the reference for what
//! the model-backed compute must additionally check.

use messages::RejectCode;
use messages::{Hash32, PackedF32, PackedU32, Rollout, RolloutGroup, WIRE_VERSION};
use protocol::checks::{check_deadline, check_problem_seed, grpo_advantages, unique_completions};
use protocol::randomness::{prf, problem_seed};

use crate::compute::mine::{MineJob, MinerCompute};
use crate::compute::verify::{VerifierCompute, VerifyJob, VerifyOutcome};
use crate::compute::ComputeError;

pub const GROUP_SIZE: usize = 16;

pub struct StructuralMiner {
    /// Named in groups when the job carries no checkpoint (clusters without a publisher).
    pub checkpoint: Hash32,
}

fn reward_of(completion: &[u32]) -> f32 {
    completion.iter().filter(|t| **t % 3 == 0).count() as f32 / completion.len().max(1) as f32
}

impl MinerCompute for StructuralMiner {
    fn mine(&mut self, job: &MineJob) -> Result<RolloutGroup, ComputeError> {
        let seed = problem_seed(&job.open_randomness, &job.miner_pubkey, job.group_index);
        let mut rollouts = Vec::with_capacity(GROUP_SIZE);
        for i in 0..GROUP_SIZE as u32 {
            let noise = prf(
                "grail-rs/structural",
                &[&seed.to_le_bytes(), &i.to_le_bytes()],
            );
            let prompt: Vec<u32> = seed.to_le_bytes()[..4].iter().map(|b| *b as u32).collect();
            let completion: Vec<u32> = noise[..8].iter().map(|b| (*b % 32) as u32).collect();
            let mut tokens = prompt.clone();
            tokens.extend_from_slice(&completion);
            rollouts.push(Rollout {
                prompt_len: prompt.len() as u32,
                sketches: PackedU32(vec![0; completion.len()]),
                logprobs: PackedF32(vec![-1.0; completion.len()]),
                reward: reward_of(&completion),
                advantage: 0.0,
                success: false,
                tokens: PackedU32(tokens),
            });
        }
        let rewards: Vec<f32> = rollouts.iter().map(|r| r.reward).collect();
        for (r, a) in rollouts
            .iter_mut()
            .zip(grpo_advantages(&rewards).advantages)
        {
            r.advantage = a;
        }
        Ok(RolloutGroup {
            version: WIRE_VERSION,
            window: job.window,
            miner: job.miner.clone(),
            group_index: job.group_index,
            nonce: u64::from_le_bytes(
                prf("grail-rs/nonce", &[&seed.to_le_bytes()])[..8]
                    .try_into()
                    .map_err(ComputeError::fault)?,
            ),
            checkpoint: job
                .checkpoint
                .as_ref()
                .map_or(self.checkpoint, |c| c.digest),
            env: "structural".into(),
            problem_seed: seed,
            problem_id: format!("structural/{seed}"),
            rollouts,
        })
    }

    fn checkpoint(&self) -> Hash32 {
        self.checkpoint
    }
}

pub struct StructuralVerifier;

pub fn reject(reason: RejectCode) -> VerifyOutcome {
    VerifyOutcome {
        accepted: false,
        reason: Some(reason),
        deep_checked: false,
        unique_rollouts: 0,
        learning_signal: false,
        mean_reward: 0.0,
    }
}

impl VerifierCompute for StructuralVerifier {
    fn verify(&mut self, job: &VerifyJob) -> Result<VerifyOutcome, ComputeError> {
        let g = &job.group;
        if let Err(r) = check_deadline(job.server_ts_ms, job.open.deadline_ms) {
            return Ok(reject(r.code()));
        }
        // Groups must be mined on the checkpoint governing their window.
        if let Some(c) = &job.checkpoint {
            if g.checkpoint != c.digest {
                let mismatch = protocol::checks::RejectReason::CheckpointMismatch {
                    claimed: g.checkpoint.to_string(),
                    expected: c.digest.to_string(),
                };
                return Ok(reject(mismatch.code()));
            }
        }
        if g.rollouts.len() != GROUP_SIZE {
            return Ok(reject(RejectCode::GroupSizeMismatch));
        }
        let miner = messages::Ss58Address::parse(&g.miner).map_err(ComputeError::job)?;
        if let Err(r) = check_problem_seed(
            g.problem_seed,
            &job.open.randomness.0,
            &miner.public,
            g.group_index,
        ) {
            return Ok(reject(r.code()));
        }
        for r in &g.rollouts {
            if r.reward != reward_of(r.completion()) {
                return Ok(reject(RejectCode::RewardMismatch));
            }
        }
        let rewards: Vec<f32> = g.rollouts.iter().map(|r| r.reward).collect();
        let adv = grpo_advantages(&rewards);
        if g.rollouts
            .iter()
            .zip(&adv.advantages)
            .any(|(r, a)| (r.advantage - a).abs() > 1e-3)
        {
            return Ok(reject(RejectCode::AdvantageMismatch));
        }
        let completions: Vec<&[u32]> = g.rollouts.iter().map(|r| r.completion()).collect();
        Ok(VerifyOutcome {
            accepted: true,
            reason: None,
            deep_checked: false,
            unique_rollouts: unique_completions(&completions).len() as u32,
            learning_signal: adv.has_learning_signal,
            mean_reward: rewards.iter().sum::<f32>() / rewards.len() as f32,
        })
    }
}
