//! Model-backed compute: the real miner and verifier behind [`MinerCompute`] and
//! [`VerifierCompute`], built on `policy` (candle engine), `protocol` (proof math,
//! `docs/PROTOCOL.md`) and `envs` (problems and rewards).
//!
//! * [`base`]: [`ModelBase`], the config/tokenizer/template/device loaded once per process.
//! * [`sampler`]: [`SeededSampler`], the replayable Gumbel-max sampler (PROTOCOL.md §4).
//! * [`miner`]: [`ModelMiner`]: problem from the seed, G seeded completions, sketches,
//!   log-probs, rewards, GRPO advantages.
//! * [`verifier`]: [`ModelVerifier`]: cheap checks on every group, forward-pass checks
//!   ([`deep`]) on the groups the close randomness selects.
//! * [`evaluate`]: held-out evaluation (pass@1, pass@k), shared by `grail eval` and the
//!   evaluator role; [`evaluator`]: [`ModelEvaluator`], its worker.
//! * [`registry`]: [`WindowRegistry`], the per-verifier-process memory of a window (duplicate
//!   nonces and group indices, cross-miner copies, idempotent verdicts).
//!
//! [`MinerCompute`]: crate::roles::miner::MinerCompute
//! [`VerifierCompute`]: crate::roles::verifier::VerifierCompute

pub mod base;
pub mod deep;
pub mod evaluate;
pub mod evaluator;
pub mod miner;
pub mod registry;
pub mod sampler;
pub mod verifier;
pub mod verifier_options;

pub use base::{checkpoint_from_weights, ModelBase};
pub use evaluator::ModelEvaluator;
pub use miner::{MinerOptions, ModelMiner};
pub use registry::{CopyRules, WindowRegistry};
pub use sampler::SeededSampler;
pub use verifier::{ModelVerifier, VerifierOptions};

use messages::{Hash32, SamplingSpec};
use policy::checkpoint::CheckpointError;
use policy::Model;
use protocol::sampling::SamplingParams;

use crate::compute::{ActiveCheckpoint, ComputeError};
use crate::worker_pool::WorkerFault;

/// Failures of the model compute itself (never a verdict on a miner: those are reason codes).
#[derive(Debug, thiserror::Error)]
pub enum ModelComputeError {
    #[error("loading the base model from `{path}`: {source}")]
    Load {
        path: String,
        #[source]
        source: Box<policy::LoadError>,
    },
    #[error("building a model from the weights of {origin}: {source} (the checkpoint must match the base model's config)")]
    Build {
        origin: String,
        #[source]
        source: Box<policy::LoadError>,
    },
    #[error("the weights of {origin}: {source}")]
    Weights {
        origin: String,
        #[source]
        source: Box<CheckpointError>,
    },
    #[error("tokenizer on problem `{problem}`: {source}")]
    Tokenizer {
        problem: String,
        #[source]
        source: policy::PolicyError,
    },
    #[error("job for window {window} carries no checkpoint; model compute needs the checkpoint valid for the window (wire the checkpoint book into the role)")]
    NoCheckpoint { window: u64 },
    #[error("checkpoint sampling spec is not replayable: {0}")]
    Sampling(String),
    #[error("model: {0}")]
    Policy(#[from] policy::PolicyError),
    #[error("the verifier's recomputed rows are inconsistent (a verifier bug, never the miner's fault): {0}")]
    VerifierRows(String),
    #[error("sampler: {0}")]
    Sampler(String),
}

/// A job error when the job's input is at fault (no checkpoint, a checkpoint that does not fit
/// the base model or has an unreplayable spec, a problem the tokenizer refuses); a fault when
/// the model or device misbehaved (candle errors, non-finite logits, inconsistent rows), where
/// a fresh worker may succeed.
impl WorkerFault for ModelComputeError {
    fn rebuilds_worker(&self) -> bool {
        match self {
            ModelComputeError::NoCheckpoint { .. }
            | ModelComputeError::Sampling(_)
            | ModelComputeError::Tokenizer { .. } => false,
            // candle failing to place or convert a tensor is the device's fault; a
            // checkpoint missing a tensor or of the wrong shape or dtype is the job's.
            ModelComputeError::Build { source, .. } => {
                matches!(**source, policy::LoadError::Candle(_))
            }
            ModelComputeError::Weights { source, .. } => {
                matches!(**source, CheckpointError::Tensor { .. })
            }
            ModelComputeError::Policy(e) => e.rebuilds_worker(),
            ModelComputeError::Load { .. }
            | ModelComputeError::VerifierRows(_)
            | ModelComputeError::Sampler(_) => true,
        }
    }
}

impl From<ModelComputeError> for ComputeError {
    fn from(e: ModelComputeError) -> Self {
        ComputeError::classify(e)
    }
}

/// The protocol's sampling parameters for a checkpoint's published spec.
pub fn sampling_params(spec: &SamplingSpec) -> Result<SamplingParams, ModelComputeError> {
    let params = SamplingParams {
        temperature: spec.temperature,
        top_k: spec.top_k,
        top_p: spec.top_p,
        repetition_penalty: spec.repetition_penalty,
    };
    params
        .validate()
        .map_err(|e| ModelComputeError::Sampling(e.to_string()))?;
    Ok(params)
}

/// The model built from the checkpoint a worker last saw; rebuilt only when the digest changes.
#[derive(Default)]
pub struct LoadedCheckpoint {
    current: Option<(Hash32, Model)>,
}

impl LoadedCheckpoint {
    /// The model for `checkpoint`, swapping weights if its digest differs from the loaded one.
    pub fn ensure(
        &mut self,
        base: &ModelBase,
        checkpoint: &ActiveCheckpoint,
    ) -> Result<&Model, ModelComputeError> {
        let stale = self
            .current
            .as_ref()
            .is_none_or(|(digest, _)| *digest != checkpoint.digest);
        if stale {
            let origin = format!("checkpoint {} (seq {})", checkpoint.digest, checkpoint.seq);
            let model = base.build_model(&checkpoint.weights.0, &origin)?;
            tracing::info!(checkpoint = %checkpoint.digest, seq = checkpoint.seq, "loaded checkpoint weights");
            self.current = Some((checkpoint.digest, model));
        }
        Ok(&self.current.as_ref().expect("set above").1)
    }

    /// Digest of the loaded checkpoint (zero before the first job).
    pub fn digest(&self) -> Hash32 {
        self.current
            .as_ref()
            .map(|(digest, _)| *digest)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy::PolicyError;

    fn candle() -> candle_core::Error {
        candle_core::Error::Msg("CUDA_ERROR_OUT_OF_MEMORY".into())
    }

    #[test]
    fn unfit_jobs_are_the_jobs_fault_and_candle_errors_the_workers() {
        let origin = || "checkpoint c (seq 3)".to_string();
        let job = [
            ModelComputeError::NoCheckpoint { window: 1 },
            ModelComputeError::Sampling("temperature 0".into()),
            ModelComputeError::Build {
                origin: origin(),
                source: Box::new(policy::LoadError::Unsupported {
                    path: "c.safetensors".into(),
                    message: "tied embeddings".into(),
                }),
            },
            ModelComputeError::Weights {
                origin: origin(),
                source: Box::new(CheckpointError::UnsupportedDtype {
                    tensor: "lm_head.weight".into(),
                    dtype: candle_core::DType::U8,
                }),
            },
            ModelComputeError::Policy(PolicyError::InvalidInput("empty prompt".into())),
        ];
        for e in &job {
            assert!(!e.rebuilds_worker(), "{e}");
        }
        let faults = [
            ModelComputeError::Build {
                origin: origin(),
                source: Box::new(policy::LoadError::Candle(candle())),
            },
            ModelComputeError::Weights {
                origin: origin(),
                source: Box::new(CheckpointError::Tensor {
                    tensor: "lm_head.weight".into(),
                    source: candle(),
                }),
            },
            ModelComputeError::Policy(PolicyError::Candle(candle())),
            ModelComputeError::Sampler("no finite logit".into()),
            ModelComputeError::VerifierRows("row 3 has 2 logits".into()),
        ];
        for e in &faults {
            assert!(e.rebuilds_worker(), "{e}");
        }
        // The conversion the compute traits use keeps the judgement and the typed cause.
        let refused = ComputeError::from(ModelComputeError::NoCheckpoint { window: 1 });
        assert!(matches!(refused, ComputeError::Job(_)));
        assert!(refused.cause().is::<ModelComputeError>());
        let fault = ComputeError::from(ModelComputeError::Policy(PolicyError::Candle(candle())));
        assert!(matches!(fault, ComputeError::Fault(_)));
    }
}
