//! What every model worker shares and never changes: the base model's config, tokenizer, chat
//! template, stop ids, device and dtype. Checkpoints only replace the weights.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device};
use envs::{render_chat, Problem};
use policy::checkpoint::{CheckpointError, WeightSet};
use policy::{LoadOptions, LoadedModel, Model, ModelConfig, PolicyTokenizer};

use super::ModelComputeError;
use crate::compute::{ActiveCheckpoint, SharedWeights};

/// The immutable part of a policy, loaded once per process and shared by its workers.
pub struct ModelBase {
    pub config: ModelConfig,
    pub tokenizer: PolicyTokenizer,
    pub chat_template: Option<String>,
    /// Generation stops at any of these; the verifier's termination rule uses the same set.
    pub eos_ids: Vec<u32>,
    pub pad_id: u32,
    pub device: Device,
    pub dtype: DType,
    /// Where the base came from (for errors and logs).
    pub origin: String,
    /// The base model's own weights (CPU, by HF name): the first checkpoint a publisher ships.
    base_weights: WeightSet,
}

impl std::fmt::Debug for ModelBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelBase")
            .field("origin", &self.origin)
            .field("hidden_size", &self.config.hidden_size)
            .field("vocab_size", &self.config.vocab_size)
            .field("device", &self.device)
            .field("dtype", &self.dtype)
            .finish()
    }
}

impl ModelBase {
    /// Loads an HF model directory (or `.gguf` file) with `opts` (device, dtype).
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self, ModelComputeError> {
        let loaded = policy::load_model(path, opts).map_err(|source| ModelComputeError::Load {
            path: path.display().to_string(),
            source: Box::new(source),
        })?;
        Self::from_loaded(loaded, opts.dtype)
    }

    /// Wraps an already loaded model (its weights become the base weight set).
    pub fn from_loaded(loaded: LoadedModel, dtype: DType) -> Result<Self, ModelComputeError> {
        let mut base_weights = WeightSet::new();
        for (name, tensor) in &loaded.weights {
            let cpu = tensor
                .to_device(&Device::Cpu)
                .and_then(|t| t.to_dtype(DType::F32))
                .map_err(|source| ModelComputeError::Weights {
                    origin: loaded.origin.clone(),
                    source: Box::new(CheckpointError::Tensor {
                        tensor: name.clone(),
                        source,
                    }),
                })?;
            base_weights.insert(name.clone(), cpu);
        }
        Ok(Self {
            config: loaded.config,
            tokenizer: loaded.tokenizer,
            chat_template: loaded.chat_template,
            eos_ids: loaded.eos_ids,
            pad_id: loaded.pad_id,
            device: loaded.device,
            dtype,
            origin: loaded.origin,
            base_weights,
        })
    }

    /// Publishes checkpoints in `dtype` (the network's committed dtype, see PROTOCOL.md
    /// "Checkpoints"): the base weights become their cast (round to nearest even), so the
    /// genesis checkpoint, its digest and the dtype every later checkpoint keeps (the trainer
    /// casts its f32 master weights to the base's dtypes) are `dtype`. Workers still compute in
    /// [`ModelBase::dtype`]: on the CPU, bf16 values widened exactly to f32.
    pub fn with_checkpoint_dtype(mut self, dtype: DType) -> Result<Self, ModelComputeError> {
        self.base_weights =
            policy::checkpoint::cast_floats(&self.base_weights, dtype).map_err(|source| {
                ModelComputeError::Weights {
                    origin: format!("{} published as {dtype:?}", self.origin),
                    source: Box::new(source),
                }
            })?;
        Ok(self)
    }

    /// The prompt ids for `problem`: its chat rendered with the model's template (ChatML),
    /// generation prompt appended, encoded without extra special tokens.
    pub fn prompt_tokens(&self, problem: &Problem) -> Result<Vec<u32>, ModelComputeError> {
        let text = render_chat(self.chat_template.as_deref(), &problem.messages, true);
        self.tokenizer
            .encode(&text)
            .map_err(|source| ModelComputeError::Tokenizer {
                problem: problem.id.clone(),
                source,
            })
    }

    /// Decodes a completion for scoring: special tokens (the final EOS) are skipped.
    pub fn completion_text(&self, completion: &[u32]) -> Result<String, ModelComputeError> {
        self.tokenizer
            .decode(completion, true)
            .map_err(|source| ModelComputeError::Tokenizer {
                problem: String::new(),
                source,
            })
    }

    /// Builds a model on this base's device and dtype from a full weight set (validated
    /// against the config: every expected tensor present with the right shape).
    pub fn build_model(
        &self,
        weights: &WeightSet,
        origin: &str,
    ) -> Result<Model, ModelComputeError> {
        let tensors: HashMap<String, candle_core::Tensor> = weights
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let opts = LoadOptions {
            device: self.device.clone(),
            dtype: self.dtype,
        };
        let loaded = LoadedModel::from_parts(
            tensors,
            self.config.to_hf_json(),
            self.tokenizer.inner().clone(),
            None,
            origin,
            &opts,
        )
        .map_err(|source| ModelComputeError::Build {
            origin: origin.to_string(),
            source: Box::new(source),
        })?;
        Ok(loaded.model)
    }

    /// The base weights as a checkpoint (digest computed here), e.g. for the first window
    /// before a publisher announced anything, and for tests.
    pub fn base_checkpoint(
        &self,
        sampling: messages::SamplingSpec,
    ) -> Result<ActiveCheckpoint, ModelComputeError> {
        checkpoint_from_weights(self.base_weights.clone(), sampling, 0, 0)
    }

    /// The base weights by HF name (CPU; f32, or the dtype checkpoints are published in).
    pub fn base_weights(&self) -> &WeightSet {
        &self.base_weights
    }
}

/// An [`ActiveCheckpoint`] for a weight set, with its canonical digest.
pub fn checkpoint_from_weights(
    weights: WeightSet,
    sampling: messages::SamplingSpec,
    seq: u64,
    valid_from_window: u64,
) -> Result<ActiveCheckpoint, ModelComputeError> {
    let digest =
        policy::checkpoint::digest(&weights).map_err(|source| ModelComputeError::Weights {
            origin: "weight set".into(),
            source: Box::new(source),
        })?;
    Ok(ActiveCheckpoint {
        digest: messages::FixedBytes(digest),
        seq,
        valid_from_window,
        sampling,
        weights: SharedWeights(std::sync::Arc::new(weights)),
    })
}
