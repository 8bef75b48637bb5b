//! Shared fixtures for the model-backed compute tests and examples: a tiny model world with a
//! hash-chain clock, miners, checkpoints, and helpers that re-prove tampered groups honestly.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use envs::{build, EnvSpec, Environment};
use grail_actors::compute::model::{
    checkpoint_from_weights, MinerOptions, ModelBase, ModelMiner, ModelVerifier, VerifierOptions,
};
use grail_actors::compute::ActiveCheckpoint;
use grail_actors::roles::miner::{MineJob, MinerCompute};
use grail_actors::roles::verifier::{VerifierCompute, VerifyJob, VerifyOutcome};
use messages::{
    Hash32, Identity, PackedF32, PackedU32, RolloutGroup, SamplingSpec, WindowClose, WindowOpen,
    WIRE_VERSION,
};
use policy::proof::{proof_forward, ProofInput, ProofOptions};
use policy::{Arch, LoadOptions};
use protocol::checks::grpo_advantages;
use protocol::randomness::{close_randomness, open_randomness, prf, HashChain};
use protocol::sketch::{sketch, SketchCoefficients, SketchParams};

pub const WINDOW_MS: u64 = 10_000;

pub struct World {
    _dir: tempfile::TempDir,
    pub base: Arc<ModelBase>,
    pub env: Arc<dyn Environment>,
    pub checkpoint: ActiveCheckpoint,
    chain: HashChain,
}

pub fn sampling(max_new_tokens: u32) -> SamplingSpec {
    SamplingSpec {
        max_new_tokens,
        ..SamplingSpec::default()
    }
}

pub fn tiny_base(dir: &Path, seed: u64) -> ModelBase {
    policy::write_tiny_model(dir, Arch::Qwen2, seed).unwrap();
    ModelBase::load(dir, &LoadOptions::default()).unwrap()
}

impl World {
    pub fn new(model_seed: u64, spec: SamplingSpec) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let base = Arc::new(tiny_base(dir.path(), model_seed));
        let checkpoint = base.base_checkpoint(spec).unwrap();
        Self {
            _dir: dir,
            base,
            env: build(&EnvSpec::new("arith")).unwrap(),
            checkpoint,
            chain: HashChain::new([9; 32], 64),
        }
    }

    /// A world around any model directory or `.gguf` file (e.g. SmolLM2-135M) on CPU, f32.
    pub fn from_model(path: &Path, spec: SamplingSpec) -> Self {
        let base = Arc::new(ModelBase::load(path, &LoadOptions::default()).unwrap());
        let checkpoint = base.base_checkpoint(spec).unwrap();
        Self {
            _dir: tempfile::tempdir().unwrap(),
            base,
            env: build(&EnvSpec::new("arith")).unwrap(),
            checkpoint,
            chain: HashChain::new([9; 32], 64),
        }
    }

    /// A checkpoint with the weights of another tiny model (another seed).
    pub fn foreign_checkpoint(&self, model_seed: u64) -> ActiveCheckpoint {
        let dir = tempfile::tempdir().unwrap();
        let other = tiny_base(dir.path(), model_seed);
        checkpoint_from_weights(
            other.base_weights().clone(),
            self.checkpoint.sampling.clone(),
            1,
            0,
        )
        .unwrap()
    }

    pub fn with_sampling(&self, spec: SamplingSpec) -> ActiveCheckpoint {
        ActiveCheckpoint {
            sampling: spec,
            ..self.checkpoint.clone()
        }
    }

    pub fn open(&self, window: u64) -> WindowOpen {
        let value = self.chain.value(window).unwrap();
        WindowOpen {
            version: WIRE_VERSION,
            window,
            randomness: Hash32::from(open_randomness(window, &value)),
            chain_anchor: Hash32::from(self.chain.anchor()),
            chain_position: window,
            chain_value: Hash32::from(value),
            opened_at_ms: window * WINDOW_MS,
            deadline_ms: window * WINDOW_MS + WINDOW_MS / 2,
        }
    }

    pub fn close(&self, window: u64) -> WindowClose {
        let next = self.chain.value(window + 1).unwrap();
        WindowClose {
            version: WIRE_VERSION,
            window,
            randomness: Hash32::from(close_randomness(window, &next)),
            chain_anchor: Hash32::from(self.chain.anchor()),
            chain_position: window + 1,
            chain_value: Hash32::from(next),
            closed_at_ms: window * WINDOW_MS + WINDOW_MS / 2 + 1,
        }
    }

    pub fn miner(&self) -> ModelMiner {
        ModelMiner::new(self.base.clone(), self.env.clone(), MinerOptions::default())
    }

    pub fn verifier(&self, opts: VerifierOptions) -> ModelVerifier {
        ModelVerifier::new(self.base.clone(), self.env.clone(), opts)
    }

    pub fn mine_with(
        &self,
        miner: &mut ModelMiner,
        who: &Identity,
        window: u64,
        group_index: u32,
        checkpoint: &ActiveCheckpoint,
    ) -> RolloutGroup {
        let open = self.open(window);
        let job = MineJob {
            window,
            open_randomness: open.randomness.0,
            deadline_ms: open.deadline_ms,
            group_index,
            miner: who.address().to_string(),
            miner_pubkey: who.public(),
            checkpoint: Some(checkpoint.clone()),
        };
        miner.mine(&job).unwrap()
    }

    pub fn mine(&self, who: &Identity, window: u64, group_index: u32) -> RolloutGroup {
        self.mine_with(
            &mut self.miner(),
            who,
            window,
            group_index,
            &self.checkpoint,
        )
    }

    /// A verify job as the role builds it: open/close of the group's window, server time in
    /// the middle of the window.
    pub fn job(&self, group: &RolloutGroup, checkpoint: &ActiveCheckpoint) -> VerifyJob {
        self.job_at(
            group,
            checkpoint,
            group.window,
            group.window * WINDOW_MS + 100,
        )
    }

    pub fn job_at(
        &self,
        group: &RolloutGroup,
        checkpoint: &ActiveCheckpoint,
        window: u64,
        server_ts_ms: u64,
    ) -> VerifyJob {
        VerifyJob {
            group: group.clone(),
            digest: envelope_digest(group),
            server_ts_ms,
            open: self.open(window),
            close: self.close(window),
            checkpoint: Some(checkpoint.clone()),
        }
    }

    pub fn verify(&self, verifier: &mut ModelVerifier, group: &RolloutGroup) -> VerifyOutcome {
        verifier.verify(&self.job(group, &self.checkpoint)).unwrap()
    }

    /// Recomputes sketches, log-probs (T = 1), rewards and advantages of every rollout with
    /// the weights of `checkpoint`: an "honest proof" for whatever tokens the group holds.
    pub fn reprove(&self, group: &mut RolloutGroup, checkpoint: &ActiveCheckpoint) {
        let model = self
            .base
            .build_model(&checkpoint.weights.0, "reprove")
            .unwrap();
        let open = self.open(group.window);
        let coefficients =
            SketchCoefficients::derive(&open.randomness.0, self.base.config.hidden_size as u32);
        let inputs: Vec<ProofInput> = group
            .rollouts
            .iter()
            .map(|r| ProofInput {
                tokens: &r.tokens.0,
                logit_positions: &[],
            })
            .collect();
        let opts = ProofOptions {
            pad_id: self.base.pad_id,
            ..ProofOptions::default()
        };
        let proofs = proof_forward(&model, &inputs, &opts).unwrap();
        let problem = self.env.problem(group.problem_seed);
        for (rollout, proof) in group.rollouts.iter_mut().zip(proofs) {
            let prompt_len = rollout.prompt_len as usize;
            let len = rollout.tokens.0.len();
            rollout.sketches = PackedU32(
                (prompt_len..len)
                    .map(|p| {
                        sketch(proof.hidden_at(p), &coefficients, &SketchParams::default()).unwrap()
                    })
                    .collect(),
            );
            rollout.logprobs =
                PackedF32(proof.next_token_logprobs[prompt_len - 1..len - 1].to_vec());
            let text = self.base.completion_text(rollout.completion()).unwrap();
            let reward = self.env.score(&problem, &text);
            rollout.reward = reward.total;
            rollout.success = reward.success;
        }
        fix_advantages(group);
    }
}

pub fn fix_advantages(group: &mut RolloutGroup) {
    let rewards: Vec<f32> = group.rollouts.iter().map(|r| r.reward).collect();
    for (r, a) in group
        .rollouts
        .iter_mut()
        .zip(grpo_advantages(&rewards).advantages)
    {
        r.advantage = a;
    }
}

/// Stands in for the signed envelope's digest (the bus computes the real one).
pub fn envelope_digest(group: &RolloutGroup) -> Hash32 {
    Hash32::from(prf("test/envelope", &[&messages::encode(group)]))
}

pub fn identity(n: u8) -> Identity {
    Identity::from_seed([n; 32])
}

/// Options that deep-check every group.
pub fn deep_all() -> VerifierOptions {
    VerifierOptions {
        deep_check_rate_ppm: 1_000_000,
        ..VerifierOptions::default()
    }
}

pub fn never_deep() -> VerifierOptions {
    VerifierOptions {
        deep_check_rate_ppm: 0,
        ..VerifierOptions::default()
    }
}
