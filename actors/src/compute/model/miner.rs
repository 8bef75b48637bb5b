//! The model-backed miner: one GRPO group per job.
//!
//! problem seed (OPEN, miner key, group index) → environment problem → chat prompt → G
//! completions sampled with the seeded Gumbel-max rule under the checkpoint's sampling spec →
//! one proof forward (final-norm hidden states) → a sketch per completion token with the
//! window's coefficients → environment rewards → GRPO advantages.

use std::sync::Arc;

use envs::Environment;
use messages::{Hash32, PackedF32, PackedU32, Rollout, RolloutGroup, WIRE_VERSION};
use policy::generate::{generate_group, GeneratedSequence, GroupRequest};
use policy::generate_batch::generate_groups;
use policy::proof::{proof_forward, ProofInput, ProofOptions};
use policy::Model;
use protocol::checks::grpo_advantages;
use protocol::randomness::{prf, problem_seed};
use protocol::sketch::{sketch, SketchCoefficients, SketchParams};

use super::sampler::SeededSampler;
use super::{sampling_params, LoadedCheckpoint, ModelBase, ModelComputeError};
use crate::compute::mine::{MineJob, MinerCompute};
use crate::compute::ComputeError;

/// Miner knobs. `group_size` and `sketch` are protocol parameters the verifiers share.
#[derive(Clone, Debug)]
pub struct MinerOptions {
    /// Rollouts per group (protocol G).
    pub group_size: usize,
    pub sketch: SketchParams,
    /// Rows per proof-forward batch (bounds memory; results differ only at rounding level).
    pub proof_batch_rows: usize,
}

impl Default for MinerOptions {
    fn default() -> Self {
        Self {
            group_size: 16,
            sketch: SketchParams::default(),
            proof_batch_rows: 16,
        }
    }
}

/// Mines groups with a real model; one per worker thread (it owns its loaded weights).
pub struct ModelMiner {
    base: Arc<ModelBase>,
    env: Arc<dyn Environment>,
    opts: MinerOptions,
    loaded: LoadedCheckpoint,
}

impl ModelMiner {
    pub fn new(base: Arc<ModelBase>, env: Arc<dyn Environment>, opts: MinerOptions) -> Self {
        Self {
            base,
            env,
            opts,
            loaded: LoadedCheckpoint::default(),
        }
    }
}

/// One job's problem, prompt and sampler, ready for decoding.
struct Prepared {
    seed: u64,
    problem: envs::Problem,
    prompt: Vec<u32>,
}

impl ModelMiner {
    fn prepare(
        &self,
        job: &MineJob,
        params: &protocol::sampling::SamplingParams,
    ) -> Result<(Prepared, SeededSampler), ModelComputeError> {
        let seed = problem_seed(&job.open_randomness, &job.miner_pubkey, job.group_index);
        let problem = self.env.problem(seed);
        let prompt = self.base.prompt_tokens(&problem)?;
        let sampler = SeededSampler::new(
            job.open_randomness,
            job.miner_pubkey,
            job.group_index,
            prompt.len(),
            *params,
            self.opts.group_size,
            self.base.eos_ids.first().copied().unwrap_or(0),
        );
        Ok((
            Prepared {
                seed,
                problem,
                prompt,
            },
            sampler,
        ))
    }

    /// Mines `jobs` (all under one checkpoint) with one decode batch over all their rows:
    /// each weight read then serves `jobs.len() × G` rows. Every group is exactly what
    /// [`MinerCompute::mine`] would produce up to f32 rounding in the decode (the tokens are
    /// the seeded choices over logits that differ at rounding level; the sketches and
    /// rewards come from the same per-group proof forward). Results are in job order.
    pub fn mine_batched(&mut self, jobs: &[MineJob]) -> Result<Vec<RolloutGroup>, ComputeError> {
        let Some(first) = jobs.first() else {
            return Ok(Vec::new());
        };
        let checkpoint = first
            .checkpoint
            .as_ref()
            .ok_or(ModelComputeError::NoCheckpoint {
                window: first.window,
            })?;
        if let Some(other) = jobs
            .iter()
            .find(|j| j.checkpoint.as_ref().map(|c| c.digest) != Some(checkpoint.digest))
        {
            return Err(ModelComputeError::Sampler(format!(
                "a decode batch spans checkpoints ({} and group {} under {:?}); batch jobs of one checkpoint only",
                checkpoint.digest,
                other.group_index,
                other.checkpoint.as_ref().map(|c| c.digest)
            ))
            .into());
        }
        let params = sampling_params(&checkpoint.sampling)?;
        let max_new_tokens = checkpoint.sampling.max_new_tokens as usize;
        self.loaded.ensure(&self.base, checkpoint)?;
        let (prepared, mut samplers): (Vec<Prepared>, Vec<SeededSampler>) = jobs
            .iter()
            .map(|job| self.prepare(job, &params))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .unzip();
        let model = self.loaded.ensure(&self.base, checkpoint)?;
        let requests: Vec<GroupRequest> = prepared
            .iter()
            .map(|p| GroupRequest {
                prompt: &p.prompt,
                group_size: self.opts.group_size,
                max_new_tokens,
                eos_ids: &self.base.eos_ids,
            })
            .collect();
        let groups = generate_groups(model, &requests, &mut samplers)?;
        drop(requests);
        let mut out = Vec::with_capacity(jobs.len());
        for (((job, p), sequences), sampler) in jobs.iter().zip(prepared).zip(groups).zip(samplers)
        {
            out.push(finish(
                model,
                (&self.base, &*self.env, &self.opts),
                job,
                checkpoint.digest,
                p,
                sampler,
                sequences,
            )?);
        }
        Ok(out)
    }
}

/// Sketches, rewards and advantages of one generated group.
fn finish(
    model: &Model,
    (base, env, opts): (&ModelBase, &dyn Environment, &MinerOptions),
    job: &MineJob,
    checkpoint: Hash32,
    p: Prepared,
    sampler: SeededSampler,
    sequences: Vec<GeneratedSequence>,
) -> Result<RolloutGroup, ComputeError> {
    let logprobs = sampler.finish().map_err(ModelComputeError::Sampler)?;
    let coefficients =
        SketchCoefficients::derive(&job.open_randomness, base.config.hidden_size as u32);
    let sketches = commit_sketches(model, &sequences, &coefficients, opts, base.pad_id)?;

    let mut rollouts = Vec::with_capacity(sequences.len());
    for ((sequence, sketches), logprobs) in sequences.into_iter().zip(sketches).zip(logprobs) {
        let text = base.completion_text(sequence.completion())?;
        let reward = env.score(&p.problem, &text);
        rollouts.push(Rollout {
            prompt_len: sequence.prompt_len as u32,
            sketches: PackedU32(sketches),
            logprobs: PackedF32(logprobs),
            reward: reward.total,
            advantage: 0.0,
            success: reward.success,
            tokens: PackedU32(sequence.tokens),
        });
    }
    let rewards: Vec<f32> = rollouts.iter().map(|r| r.reward).collect();
    for (rollout, advantage) in rollouts
        .iter_mut()
        .zip(grpo_advantages(&rewards).advantages)
    {
        rollout.advantage = advantage;
    }
    Ok(RolloutGroup {
        version: WIRE_VERSION,
        window: job.window,
        miner: job.miner.clone(),
        group_index: job.group_index,
        nonce: group_nonce(&job.open_randomness, &job.miner_pubkey, job.group_index),
        checkpoint,
        env: env.id().to_string(),
        problem_seed: p.seed,
        problem_id: p.problem.id,
        rollouts,
    })
}

impl MinerCompute for ModelMiner {
    fn mine_batch(&mut self, jobs: &[MineJob]) -> Result<Vec<RolloutGroup>, ComputeError> {
        match jobs {
            [one] => Ok(vec![self.mine(one)?]),
            many => self.mine_batched(many),
        }
    }

    fn mine(&mut self, job: &MineJob) -> Result<RolloutGroup, ComputeError> {
        let checkpoint = job
            .checkpoint
            .as_ref()
            .ok_or(ModelComputeError::NoCheckpoint { window: job.window })?;
        let params = sampling_params(&checkpoint.sampling)?;
        let max_new_tokens = checkpoint.sampling.max_new_tokens as usize;
        self.loaded.ensure(&self.base, checkpoint)?;
        let (p, mut sampler) = self.prepare(job, &params)?;
        let model = self.loaded.ensure(&self.base, checkpoint)?;
        let request = GroupRequest {
            prompt: &p.prompt,
            group_size: self.opts.group_size,
            max_new_tokens,
            eos_ids: &self.base.eos_ids,
        };
        let sequences = generate_group(model, &request, &mut sampler)?;
        finish(
            model,
            (&self.base, &*self.env, &self.opts),
            job,
            checkpoint.digest,
            p,
            sampler,
            sequences,
        )
    }

    fn checkpoint(&self) -> Hash32 {
        self.loaded.digest()
    }
}

/// A nonce unique per (window, miner, group) and reproducible (a re-mined group after a
/// worker restart gets the same one, so JetStream de-duplication and verifiers agree).
pub fn group_nonce(open: &[u8; 32], miner_pubkey: &[u8; 32], group_index: u32) -> u64 {
    let digest = prf(
        "grail-rs/group-nonce",
        &[open, miner_pubkey, &group_index.to_le_bytes()],
    );
    u64::from_le_bytes(digest[..8].try_into().expect("32-byte digest"))
}

/// One sketch per completion token: the final-norm hidden state at its absolute position
/// (PROTOCOL.md §3.1), from a full-sequence proof forward (what the verifier recomputes).
fn commit_sketches(
    model: &Model,
    sequences: &[GeneratedSequence],
    coefficients: &SketchCoefficients,
    opts: &MinerOptions,
    pad_id: u32,
) -> Result<Vec<Vec<u32>>, ModelComputeError> {
    let proof_opts = ProofOptions {
        pad_id,
        next_token_logprobs: false,
        ..ProofOptions::default()
    };
    let mut out = Vec::with_capacity(sequences.len());
    for chunk in sequences.chunks(opts.proof_batch_rows.max(1)) {
        let inputs: Vec<ProofInput> = chunk
            .iter()
            .map(|s| ProofInput {
                tokens: &s.tokens,
                logit_positions: &[],
            })
            .collect();
        for (sequence, proof) in chunk
            .iter()
            .zip(proof_forward(model, &inputs, &proof_opts)?)
        {
            let sketches = (sequence.prompt_len..sequence.tokens.len())
                .map(|position| sketch(proof.hidden_at(position), coefficients, &opts.sketch))
                .collect::<Result<Vec<u32>, _>>()
                .map_err(|e| ModelComputeError::Sampler(format!("sketch: {e}")))?;
            out.push(sketches);
        }
    }
    Ok(out)
}
