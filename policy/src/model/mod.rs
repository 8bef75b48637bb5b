//! Decoder-only Qwen2/Qwen2.5 and Llama (SmolLM2) model with HF weight names.
//!
//! * [`Model::forward_hidden`] is stateless (`&self`) and differentiable end to end: training
//!   uses it (on CPU through the hand-written kernels of `kernels`, each one graph node with
//!   its own backward). [`Model::infer_hidden`] is the same forward on candle's fused
//!   inference kernels: the proof forward.
//! * [`Model::forward_cached`] writes keys/values into a preallocated [`KvCache`] for
//!   generation (no per-step concatenation of the whole cache).
//! * Weights may be f32 (CPU), f64 (gradient checks) or bf16/f16 (CUDA); norms, RoPE tables,
//!   attention softmax, the LM head and everything after it run in f32 (f64 for f64 weights).

mod init;
mod kernels;
mod kv_cache;
mod layers;

pub use init::{init_seeded, seeded_weights, SplitMix64};
pub use kernels::{token_logprob_entropy, token_logprobs};
pub use kv_cache::KvCache;
pub use layers::{causal_mask, compute_dtype, Ops, RmsNorm, RopeTables};

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use layers::{DecoderLayer, KvSource};

use crate::config::ModelConfig;

/// The causal language model.
#[derive(Clone, Debug)]
pub struct Model {
    cfg: ModelConfig,
    embed_tokens: candle_nn::Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Tensor,
    dtype: DType,
    device: Device,
}

impl Model {
    /// Builds the model from a `VarBuilder` (a `VarMap` for training, mmaped safetensors or a
    /// `HashMap<String, Tensor>` for inference). Tied embeddings share `model.embed_tokens`.
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let m = vb.pp("model");
        let embed_tokens =
            candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, m.pp("embed_tokens"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, m.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, m.pp("norm"))?;
        let lm_head = if cfg.tie_word_embeddings {
            embed_tokens.embeddings().clone()
        } else {
            vb.pp("lm_head")
                .get((cfg.vocab_size, cfg.hidden_size), "weight")?
        };
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The dtype of hidden states, logits and log-probs (f32 unless the weights are f64).
    pub fn compute_dtype(&self) -> DType {
        compute_dtype(self.dtype)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Final-norm hidden states `[b, len, hidden]` in the compute dtype for right-padded token
    /// ids `[b, len]` (u32). Stateless and differentiable.
    pub fn forward_hidden(&self, ids: &Tensor) -> Result<Tensor> {
        self.forward_stateless(ids, Ops::Differentiable)
    }

    /// [`Self::forward_hidden`] with the fused inference kernels (no backward pass): the proof
    /// forward. Differs from it at f32 rounding level only.
    pub fn infer_hidden(&self, ids: &Tensor) -> Result<Tensor> {
        self.forward_stateless(ids, Ops::Fused)
    }

    fn forward_stateless(&self, ids: &Tensor, ops: Ops) -> Result<Tensor> {
        let (_, len) = ids.dims2()?;
        let rope = RopeTables::new(&self.cfg, 0, len, self.dtype, &self.device)?;
        let mask = causal_mask(len, 0, self.compute_dtype(), &self.device)?;
        let mut x = self.embed_tokens.forward(ids)?;
        for layer in &self.layers {
            x = layer.forward(&x, &rope, Some(&mask), KvSource::Fresh, ops)?;
        }
        self.norm.forward_compute(&x, ops)
    }

    /// Runs `ids: [b, len]` at positions `cache.len()..` for every row, writing keys and
    /// values into `cache`, and returns the final-norm hidden states of the new positions.
    /// Inference only (fused kernels, as [`Self::infer_hidden`]).
    pub fn forward_cached(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (b, len) = ids.dims2()?;
        let offset = cache.len();
        if b != cache.batch() || offset + len > cache.capacity() {
            candle_core::bail!(
                "kv cache holds {} rows × {} positions; asked for {b} rows at {offset}..{}",
                cache.batch(),
                cache.capacity(),
                offset + len
            );
        }
        let rope = RopeTables::new(&self.cfg, offset, len, self.dtype, &self.device)?;
        let mask = if len > 1 {
            Some(causal_mask(
                len,
                offset,
                self.compute_dtype(),
                &self.device,
            )?)
        } else {
            None
        };
        let mut x = self.embed_tokens.forward(ids)?;
        for (layer, (k, v)) in self.layers.iter().zip(cache.layers()) {
            let kv = KvSource::Cache { k, v, offset };
            x = layer.forward(&x, &rope, mask.as_ref(), kv, Ops::Fused)?;
        }
        cache.advance(len);
        self.norm.forward_compute(&x, Ops::Fused)
    }

    /// One decode step for a batch whose rows start at different cache slots (a
    /// [`KvCache::left_padded`] cache): `ids: [b, 1]`, row `r` at absolute position
    /// `cache.len() - shifts[r]`, its slots `..shifts[r]` masked out. Returns `[b, 1, hidden]`.
    pub fn forward_shifted(
        &self,
        ids: &Tensor,
        cache: &mut KvCache,
        shifts: &[usize],
    ) -> Result<Tensor> {
        let (b, len) = ids.dims2()?;
        let offset = cache.len();
        if len != 1 || b != cache.batch() || b != shifts.len() || offset >= cache.capacity() {
            candle_core::bail!(
                "shifted decode: {b} rows × {len} tokens, {} shifts, cache {} rows at {offset} of {}",
                shifts.len(),
                cache.batch(),
                cache.capacity()
            );
        }
        let positions: Vec<usize> = shifts.iter().map(|&s| offset - s).collect();
        let rope = RopeTables::per_row(&self.cfg, &positions, self.dtype, &self.device)?;
        let keys = offset + 1;
        let mask: Vec<f32> = shifts
            .iter()
            .flat_map(|&s| (0..keys).map(move |j| if j < s { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (b, 1, 1, 1, keys), &self.device)?
            .to_dtype(self.compute_dtype())?;
        let mut x = self.embed_tokens.forward(ids)?;
        for (layer, (k, v)) in self.layers.iter().zip(cache.layers()) {
            let kv = KvSource::Cache { k, v, offset };
            x = layer.forward(&x, &rope, Some(&mask), kv, Ops::Fused)?;
        }
        cache.advance(1);
        self.norm.forward_compute(&x, Ops::Fused)
    }

    /// Logits `[.., vocab]` in the compute dtype from final-norm hidden states `[.., hidden]`.
    /// One 2-D product: a batched product against the broadcast head would re-pack the
    /// `[hidden, vocab]` matrix for every batch row.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let w = self.lm_head.to_dtype(self.compute_dtype())?;
        if kernels::has_cpu_kernel(hidden) {
            // The same product as one graph node: its backward writes the (vocab-sized)
            // weight gradient in place of a transposed copy.
            return kernels::linear(hidden, &w);
        }
        layers::on_rows(hidden, |rows| rows.matmul(&w.t()?))
    }

    /// Log-probability of each next token: for `ids: [b, len]` returns `[b, len - 1]` where
    /// entry `t` is `log p(ids[t + 1] | ids[..=t])`. Differentiable; compute dtype.
    pub fn next_token_logprobs(&self, hidden: &Tensor, ids: &Tensor) -> Result<Tensor> {
        let (_, len) = ids.dims2()?;
        let logits = self.logits(&hidden.narrow(1, 0, len - 1)?)?;
        Ok(token_logprob_entropy(&logits, &ids.narrow(1, 1, len - 1)?)?.0)
    }
}
