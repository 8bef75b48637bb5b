//! GRPO training compute: turns the verified groups of a window into optimizer steps on the
//! policy and hands back the new weights (the trainer role stores them as a checkpoint
//! candidate for the publisher).
//!
//! The trainer keeps training its own weights from job to job. It (re)starts from the job's
//! base checkpoint only when its weights do not descend from it: on the first job, after a
//! crash (a fresh worker), or when another trainer's checkpoint was published meanwhile.
//!
//! Published checkpoints are cast to the network's committed dtype (bf16 for real models), so
//! restarting from one would lose the f32 master weights' low bits and the AdamW moments. With
//! [`TrainerOptions::state_path`] the trainer saves them after every job
//! ([`policy::train_state`]), tagged with the digest of the weights it handed back, and a
//! restart from exactly that checkpoint resumes from the file instead.

use std::collections::{HashMap, HashSet};

use candle_core::{DType, Device, Tensor};
use messages::{Hash32, RolloutGroup};
use policy::checkpoint::{self, CheckpointError, Rounding, WeightSet};
use policy::grpo::{GrpoConfig, GrpoSample, GrpoTrainer};
use policy::train_state::{load_train_state, save_train_state, train_state_head};
use policy::{ModelConfig, PolicyError};

use crate::compute::train::{TrainJob, TrainReport, TrainerCompute};
use crate::compute::{ActiveCheckpoint, ComputeError, SharedWeights};
use crate::worker_pool::WorkerFault;

/// Why a training job failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("building the trainer from checkpoint {checkpoint}: {source}")]
    Build {
        checkpoint: Hash32,
        #[source]
        source: PolicyError,
    },
    #[error("GRPO step: {0}")]
    Step(#[source] PolicyError),
    #[error("copying the trained weights to the CPU in the checkpoint's dtype: {0}")]
    Snapshot(#[source] CheckpointError),
    #[error("digest of the trained weights: {0}")]
    Digest(#[source] CheckpointError),
}

/// A base checkpoint that does not fit the model config is the job's fault; everything else
/// (candle on the device, the weights the trainer produced) is the worker's.
impl WorkerFault for TrainError {
    fn rebuilds_worker(&self) -> bool {
        match self {
            TrainError::Build { source, .. } | TrainError::Step(source) => source.rebuilds_worker(),
            TrainError::Snapshot(_) | TrainError::Digest(_) => true,
        }
    }
}

impl From<TrainError> for ComputeError {
    fn from(e: TrainError) -> Self {
        ComputeError::classify(e)
    }
}

/// How the trainer turns a window's groups into steps.
#[derive(Clone, Debug)]
pub struct TrainerOptions {
    pub grpo: GrpoConfig,
    /// Passes over the job's samples (each pass = one optimizer step per mini-batch).
    pub epochs: u32,
    /// Rollouts per optimizer step (0: all of the job's rollouts in one step).
    pub mini_batch: usize,
    /// Dtype the trainable weights are kept in (f32 on CPU).
    pub dtype: DType,
    pub device: Device,
    /// Where the private f32 master weights and optimizer state are kept (None: not kept; a
    /// restart begins from the published weights).
    pub state_path: Option<std::path::PathBuf>,
    /// How master weights are rounded into a bf16 checkpoint.
    pub rounding: Rounding,
}

impl Default for TrainerOptions {
    fn default() -> Self {
        Self {
            grpo: GrpoConfig::default(),
            epochs: 1,
            mini_batch: 0,
            dtype: DType::F32,
            device: Device::Cpu,
            state_path: None,
            rounding: Rounding::default(),
        }
    }
}

/// The live training state: the optimizer and every checkpoint digest it descends from.
struct Live {
    trainer: GrpoTrainer,
    /// Digests this trainer started from or produced: a base in this set needs no reload.
    lineage: HashSet<Hash32>,
    /// Digest of the weights the trainer holds now.
    head: Hash32,
}

pub struct GrpoTrainerCompute {
    model: ModelConfig,
    pad_id: u32,
    opts: TrainerOptions,
    live: Option<Live>,
}

impl GrpoTrainerCompute {
    /// `model`/`pad_id` come from the base model directory every checkpoint shares.
    pub fn new(model: ModelConfig, pad_id: u32, opts: TrainerOptions) -> Self {
        Self {
            model,
            pad_id,
            opts,
            live: None,
        }
    }

    /// Resumes the saved master weights and optimizer state when they were saved as exactly
    /// `base` (false: no usable state; a damaged file is reported and ignored).
    fn resume_saved(&mut self, base: &ActiveCheckpoint) -> bool {
        let Some(path) = &self.opts.state_path else {
            return false;
        };
        match train_state_head(path) {
            Ok(Some(head)) if Hash32::from(head) == base.digest => {}
            Ok(_) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "trainer state unreadable; starting from the checkpoint");
                return false;
            }
        }
        let grpo = self.opts.grpo.clone();
        let (model, pad, dtype, device) =
            (&self.model, self.pad_id, self.opts.dtype, &self.opts.device);
        match load_train_state(path, model, grpo, pad, dtype, device) {
            Ok((trainer, _)) => {
                tracing::info!(checkpoint = %base.digest, seq = base.seq, path = %path.display(), "trainer resumed its f32 master weights and optimizer state");
                self.live = Some(Live {
                    trainer,
                    lineage: HashSet::from([base.digest]),
                    head: base.digest,
                });
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "trainer state not loadable; starting from the checkpoint");
                false
            }
        }
    }

    fn restart_from(&mut self, base: &ActiveCheckpoint) -> Result<(), TrainError> {
        let weights: HashMap<String, Tensor> = base
            .weights
            .0
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let trainer = GrpoTrainer::from_weights(
            &self.model,
            &weights,
            self.opts.grpo.clone(),
            self.pad_id,
            self.opts.dtype,
            &self.opts.device,
        )
        .map_err(|source| TrainError::Build {
            checkpoint: base.digest,
            source,
        })?;
        tracing::info!(checkpoint = %base.digest, seq = base.seq, "trainer (re)started from checkpoint");
        self.live = Some(Live {
            trainer,
            lineage: HashSet::from([base.digest]),
            head: base.digest,
        });
        Ok(())
    }

    /// A detached CPU copy of the trainer's weights in the base checkpoint's dtypes.
    fn snapshot(
        trainer: &GrpoTrainer,
        like: &WeightSet,
        rounding: Rounding,
    ) -> Result<WeightSet, TrainError> {
        let mut out = WeightSet::new();
        for (name, t) in trainer.weights() {
            let dtype = like.get(&name).map(|b| b.dtype()).unwrap_or(DType::F32);
            let t = rounding
                .cast(&name, &t, dtype)
                .map_err(TrainError::Snapshot)?;
            out.insert(name, t);
        }
        Ok(out)
    }
}

/// The rollouts worth a gradient: groups whose rewards vary (zero-variance groups have zero
/// advantages everywhere and only cost compute).
pub fn samples_of(groups: &[RolloutGroup], max_length: usize) -> Vec<GrpoSample> {
    groups
        .iter()
        .filter(|g| g.rollouts.iter().any(|r| r.advantage.abs() > 1e-6))
        .flat_map(|g| g.rollouts.iter())
        .filter(|r| r.tokens.0.len() <= max_length && r.completion().len() == r.logprobs.0.len())
        .map(|r| GrpoSample {
            tokens: r.tokens.0.clone(),
            prompt_len: r.prompt_len as usize,
            advantage: r.advantage,
            behaviour_logprobs: r.logprobs.0.clone(),
        })
        .collect()
}

impl TrainerCompute for GrpoTrainerCompute {
    fn train(&mut self, job: &TrainJob) -> Result<TrainReport, ComputeError> {
        let mut report = TrainReport {
            mean_reward: job.mean_reward(),
            ..Default::default()
        };
        let samples = samples_of(&job.groups, self.opts.grpo.max_length);
        let Some(base) = &job.base else {
            tracing::warn!(
                window = job.window,
                "no checkpoint announced yet: nothing to train from"
            );
            return Ok(report);
        };
        if samples.is_empty() {
            return Ok(report);
        }
        let descends = self
            .live
            .as_ref()
            .is_some_and(|l| l.lineage.contains(&base.digest));
        if !descends && !self.resume_saved(base) {
            self.restart_from(base)?;
        }
        let Some(live) = self.live.as_mut() else {
            return Err(ComputeError::fault("trainer state missing after a restart"));
        };
        let per_step = if self.opts.mini_batch == 0 {
            samples.len()
        } else {
            self.opts.mini_batch
        };
        let (mut loss, mut kl, mut grad_norm, mut taken) = (0.0, 0.0, 0.0, 0u32);
        for _ in 0..self.opts.epochs.max(1) {
            for batch in samples.chunks(per_step) {
                let stats = live.trainer.step(batch).map_err(TrainError::Step)?;
                if stats.skipped {
                    continue;
                }
                taken += 1;
                loss += stats.loss;
                kl += stats.kl;
                grad_norm += stats.grad_norm;
            }
        }
        if taken == 0 {
            return Ok(report);
        }
        let weights = Self::snapshot(&live.trainer, &base.weights.0, self.opts.rounding)?;
        let digest = Hash32::from(checkpoint::digest(&weights).map_err(TrainError::Digest)?);
        report.trained_from = Some(live.head);
        live.lineage.insert(digest);
        live.head = digest;
        if let Some(path) = &self.opts.state_path {
            // Not fatal: without the file a restart begins from the published weights.
            if let Err(e) = save_train_state(&live.trainer, &digest.0, path) {
                tracing::warn!(error = %e, "trainer state not saved");
            }
        }
        report.steps = taken;
        report.loss = (loss / taken as f64) as f32;
        report.kl = (kl / taken as f64) as f32;
        report.grad_norm = (grad_norm / taken as f64) as f32;
        report.weights = Some(SharedWeights(std::sync::Arc::new(weights)));
        Ok(report)
    }
}
