//! A GRPO optimizer step as grail's trainer does it (grail-pipeline.md §1.6–1.7): DAPO
//! token-level aggregation, asymmetric clipping (0.2 / 0.28), a sequence-level importance
//! ratio against the miner's behaviour log-probs (clamped log-ratio, ceiling), optional k2 KL
//! to a frozen reference, an entropy bonus, micro-batches with gradient accumulation, global
//! grad-norm clipping and a fused AdamW. Steps with non-finite gradients are skipped.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::error::{PolicyError, PolicyResult};
use crate::model::{token_logprob_entropy, Model};
use crate::optim::{sorted_vars, AdamWConfig, FusedAdamW};

/// One rollout to learn from.
#[derive(Clone, Debug, PartialEq)]
pub struct GrpoSample {
    /// Prompt + completion ids.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    /// Already group-normalised by the caller.
    pub advantage: f32,
    /// Behaviour log-probs: one per completion token, or (grail's layout) one per token of
    /// `tokens` with the completion part at `[prompt_len..]`.
    pub behaviour_logprobs: Vec<f32>,
}

/// Where the importance ratio is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportanceLevel {
    /// GSPO-style: exp(mean per-token log-ratio) per sequence (grail default).
    Sequence,
    Token,
}

/// How token losses are aggregated in a micro-batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossVariant {
    /// Σ masked / completion tokens of the micro-batch (grail default).
    Dapo,
    /// Per-sequence token mean, then batch mean.
    Grpo,
    /// Σ masked / Σ mask.
    Bnpo,
    /// Σ masked / (batch × longest completion).
    DrGrpo,
}

/// Trainer knobs with grail's defaults (`GRAIL_TRAINER_*`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GrpoConfig {
    pub optimizer: AdamWConfig,
    /// Global grad-norm clip (0 disables).
    pub grad_clip: f64,
    pub micro_batch_size: usize,
    pub max_length: usize,
    pub clip_eps_lower: f32,
    pub clip_eps_upper: f32,
    pub is_ratio_max: f32,
    pub logratio_clamp: f32,
    /// > 0 needs a reference model.
    pub kl_coef: f32,
    pub entropy_coef: f32,
    /// Advantages are clamped to ±quantile(|A|, p/100) per micro-batch (≥ 100 disables).
    pub adv_clip_percentile: f32,
    pub use_importance_sampling: bool,
    pub importance_level: ImportanceLevel,
    pub loss_variant: LossVariant,
}

impl Default for GrpoConfig {
    fn default() -> Self {
        Self {
            optimizer: AdamWConfig::default(),
            grad_clip: 0.5,
            micro_batch_size: 16,
            max_length: 12_288,
            clip_eps_lower: 0.2,
            clip_eps_upper: 0.28,
            is_ratio_max: 10.0,
            logratio_clamp: 5.0,
            kl_coef: 0.02,
            entropy_coef: 0.001,
            adv_clip_percentile: 99.0,
            use_importance_sampling: true,
            importance_level: ImportanceLevel::Sequence,
            loss_variant: LossVariant::Dapo,
        }
    }
}

/// What one optimizer step did. Loss terms are averaged over micro-batches.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GrpoStepStats {
    pub loss: f64,
    pub pg_loss: f64,
    pub kl: f64,
    pub entropy: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Fraction of completion tokens whose clipped objective was the active branch.
    pub clip_fraction: f64,
    pub mean_ratio: f64,
    pub completion_tokens: usize,
    pub sequences: usize,
    pub micro_batches: usize,
    /// Micro-batches whose loss was non-finite (left out of the gradient).
    pub nonfinite_micro_batches: usize,
    /// True when the step was skipped (non-finite gradient norm): weights untouched.
    pub skipped: bool,
}

/// Linear-interpolated quantile (numpy's default) of `values` at `q` in [0, 1].
pub fn quantile(values: &[f32], q: f32) -> f32 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f32;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f32)
}

/// A micro-batch laid out for the loss: rows right-padded to a common length.
struct Layout {
    ids: Tensor,
    /// First hidden position scored (min prompt length − 1).
    start: usize,
    /// Number of scored positions.
    width: usize,
    /// Per row: completion tokens after truncation.
    completion: Vec<usize>,
    mask: Vec<f32>,
    old: Vec<f32>,
    advantages: Vec<f32>,
}

fn layout(
    batch: &[&GrpoSample],
    cfg: &GrpoConfig,
    pad_id: u32,
    vocab: usize,
    device: &Device,
) -> PolicyResult<Layout> {
    let mut prompts = Vec::with_capacity(batch.len());
    let mut completion = Vec::with_capacity(batch.len());
    for (i, s) in batch.iter().enumerate() {
        if s.prompt_len == 0 || s.prompt_len > s.tokens.len() {
            return Err(PolicyError::InvalidInput(format!(
                "sample {i}: prompt_len {} must be in 1..={}",
                s.prompt_len,
                s.tokens.len()
            )));
        }
        crate::error::check_token_range(&s.tokens, vocab)?;
        let p = s.prompt_len.min(cfg.max_length);
        let c = (s.tokens.len() - s.prompt_len).min(cfg.max_length.saturating_sub(p));
        let n_old = s.behaviour_logprobs.len();
        if n_old < c {
            return Err(PolicyError::InvalidInput(format!(
                "sample {i}: {n_old} behaviour log-probs for {c} completion tokens"
            )));
        }
        prompts.push(p);
        completion.push(c);
    }
    let len = prompts
        .iter()
        .zip(&completion)
        .map(|(p, c)| p + c)
        .max()
        .unwrap_or(1);
    let start = prompts.iter().min().copied().unwrap_or(1) - 1;
    let width = len.saturating_sub(1 + start).max(1);
    let rows = batch.len();
    let mut ids = vec![pad_id; rows * (start + width + 1)];
    let mut mask = vec![0f32; rows * width];
    let mut old = vec![0f32; rows * width];
    let row_len = start + width + 1;
    for (r, s) in batch.iter().enumerate() {
        let (p, c) = (prompts[r], completion[r]);
        ids[r * row_len..r * row_len + p + c].copy_from_slice(&s.tokens[..p + c]);
        // grail: a full-length list holds the completion at [P', P'+C'), else it is
        // completion-only.
        let behaviour = if s.behaviour_logprobs.len() >= p + c {
            &s.behaviour_logprobs[p..p + c]
        } else {
            &s.behaviour_logprobs[..c]
        };
        for (k, &lp) in behaviour.iter().enumerate() {
            let j = p - 1 + k - start;
            mask[r * width + j] = 1.0;
            old[r * width + j] = lp;
        }
    }
    let mut advantages: Vec<f32> = batch.iter().map(|s| s.advantage).collect();
    if cfg.adv_clip_percentile < 100.0 {
        let abs: Vec<f32> = advantages.iter().map(|a| a.abs()).collect();
        let bound = quantile(&abs, cfg.adv_clip_percentile / 100.0);
        advantages
            .iter_mut()
            .for_each(|a| *a = a.clamp(-bound, bound));
    }
    Ok(Layout {
        ids: Tensor::from_vec(ids, (rows, row_len), device)?,
        start,
        width,
        completion,
        mask,
        old,
        advantages,
    })
}

/// Per-token log-probs `[b, width]` of the scored positions and, if asked, entropies.
fn scored_logprobs(
    model: &Model,
    l: &Layout,
    with_entropy: bool,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let hidden = model.forward_hidden(&l.ids)?;
    let logits = model.logits(&hidden.narrow(1, l.start, l.width)?)?;
    let targets = l.ids.narrow(1, l.start + 1, l.width)?;
    let (picked, entropy) = token_logprob_entropy(&logits, &targets)?;
    Ok((picked, with_entropy.then_some(entropy)))
}

/// Host-side numbers of one micro-batch loss.
#[derive(Clone, Debug, Default)]
pub struct MicroBatchStats {
    pub pg_loss: f64,
    pub kl: f64,
    pub entropy: f64,
    pub clipped_tokens: f64,
    pub ratio_sum: f64,
    pub completion_tokens: usize,
}

/// The GRPO loss of one micro-batch (before the accumulation scale), differentiable w.r.t.
/// `model`'s vars. Public for gradient checks.
pub fn micro_batch_loss(
    model: &Model,
    reference: Option<&Model>,
    batch: &[&GrpoSample],
    cfg: &GrpoConfig,
    pad_id: u32,
) -> PolicyResult<(Tensor, MicroBatchStats)> {
    let device = model.device();
    let cd = model.compute_dtype();
    let l = layout(batch, cfg, pad_id, model.config().vocab_size, device)?;
    let rows = batch.len();
    let shape = (rows, l.width);
    let with_entropy = cfg.entropy_coef != 0.0;
    let (logp, entropy) = scored_logprobs(model, &l, with_entropy)?;
    let mask = Tensor::from_slice(&l.mask, shape, device)?.to_dtype(cd)?;
    let old = Tensor::from_slice(&l.old, shape, device)?.to_dtype(cd)?;
    let adv = Tensor::from_slice(&l.advantages, (rows, 1), device)?.to_dtype(cd)?;
    let tokens: usize = l.completion.iter().sum();
    let per_row_count: Vec<f32> = l.completion.iter().map(|&c| c.max(1) as f32).collect();
    let row_count = Tensor::from_slice(&per_row_count, (rows, 1), device)?.to_dtype(cd)?;
    let total = tokens.max(1) as f64;
    let (lo, hi) = (
        1.0 - cfg.clip_eps_lower as f64,
        1.0 + cfg.clip_eps_upper as f64,
    );
    let clamp_log = cfg.logratio_clamp as f64;
    let const_like = |t: &Tensor, v: f64| t.ones_like()?.affine(v, 0.0);

    // Token losses [b, width] (masked later) and the ratio used, for stats.
    let (token_loss, ratio) = if cfg.use_importance_sampling {
        let log_ratio = ((&logp - &old)? * &mask)?;
        let log_ratio = match cfg.importance_level {
            ImportanceLevel::Sequence => log_ratio.sum_keepdim(1)?.broadcast_div(&row_count)?,
            ImportanceLevel::Token => log_ratio,
        };
        let log_ratio = log_ratio
            .maximum(&const_like(&log_ratio, -clamp_log)?)?
            .minimum(&const_like(&log_ratio, clamp_log)?)?;
        let ratio = log_ratio.exp()?;
        let ratio = ratio.minimum(&const_like(&ratio, cfg.is_ratio_max as f64)?)?;
        let clipped = ratio
            .maximum(&const_like(&ratio, lo)?)?
            .minimum(&const_like(&ratio, hi)?)?;
        let unclipped_obj = ratio.broadcast_mul(&adv)?;
        let clipped_obj = clipped.broadcast_mul(&adv)?;
        let loss = unclipped_obj.minimum(&clipped_obj)?.neg()?;
        (
            loss.broadcast_as(shape)?.contiguous()?,
            Some(ratio.broadcast_as(shape)?),
        )
    } else {
        // −mean_i(A_i Σ_t logπ): expressed per token, normalised below by the row count.
        let per_token = logp.broadcast_mul(&adv)?.neg()?;
        (per_token, None)
    };
    let masked = (&token_loss * &mask)?;
    let pg_loss = if !cfg.use_importance_sampling {
        (masked.sum_all()? / rows as f64)?
    } else {
        match cfg.loss_variant {
            LossVariant::Dapo | LossVariant::Bnpo => (masked.sum_all()? / total)?,
            LossVariant::Grpo => {
                (masked
                    .sum_keepdim(1)?
                    .broadcast_div(&row_count)?
                    .sum_all()?
                    / rows as f64)?
            }
            LossVariant::DrGrpo => {
                let longest = l.completion.iter().max().copied().unwrap_or(1).max(1);
                (masked.sum_all()? / (rows * longest) as f64)?
            }
        }
    };
    let mut loss = pg_loss.clone();
    let mut stats = MicroBatchStats {
        completion_tokens: tokens,
        ..Default::default()
    };
    if let (Some(reference), true) = (reference, cfg.kl_coef != 0.0) {
        let (ref_logp, _) = scored_logprobs(reference, &l, false)?;
        let diff = (&logp - ref_logp.detach())?;
        let kl = ((diff.sqr()? * 0.5)? * &mask)?
            .sum_all()?
            .affine(1.0 / total, 0.0)?;
        stats.kl = kl.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        loss = (loss + kl.affine(cfg.kl_coef as f64, 0.0)?)?;
    }
    if let Some(entropy) = entropy {
        let per_seq = (entropy * &mask)?
            .sum_keepdim(1)?
            .broadcast_div(&row_count)?;
        let mean = (per_seq.sum_all()? / rows as f64)?;
        stats.entropy = mean.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        loss = (loss - mean.affine(cfg.entropy_coef as f64, 0.0)?)?;
    }
    stats.pg_loss = pg_loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    if let Some(ratio) = ratio {
        let ratio = ratio
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for (j, (&r, &m)) in ratio.iter().zip(&l.mask).enumerate() {
            if m > 0.0 {
                let a = l.advantages[j / l.width];
                let clipped = (a > 0.0 && r as f64 > hi) || (a < 0.0 && (r as f64) < lo);
                stats.clipped_tokens += clipped as u8 as f64;
                stats.ratio_sum += r as f64;
            }
        }
    }
    Ok((loss, stats))
}

/// The trainer: a trainable model over a `VarMap`, an optional frozen reference and AdamW.
pub struct GrpoTrainer {
    model: Model,
    varmap: VarMap,
    reference: Option<Model>,
    optimizer: FusedAdamW,
    pub config: GrpoConfig,
    pad_id: u32,
}

impl GrpoTrainer {
    /// Wraps a model built from `varmap` (`Model::new(cfg, VarBuilder::from_varmap(..))`).
    pub fn new(
        model: Model,
        varmap: VarMap,
        reference: Option<Model>,
        config: GrpoConfig,
        pad_id: u32,
    ) -> PolicyResult<Self> {
        let optimizer = FusedAdamW::new(sorted_vars(&varmap)?, config.optimizer.clone())?;
        Ok(Self {
            model,
            varmap,
            reference,
            optimizer,
            config,
            pad_id,
        })
    }

    /// A trainer initialised from HF-named weights (e.g. `LoadedModel::weights`). The
    /// reference model (built when `kl_coef > 0`) is a deep copy of the same weights.
    pub fn from_weights(
        cfg: &ModelConfig,
        weights: &HashMap<String, Tensor>,
        config: GrpoConfig,
        pad_id: u32,
        dtype: DType,
        device: &Device,
    ) -> PolicyResult<Self> {
        let varmap = VarMap::new();
        let model = Model::new(cfg, VarBuilder::from_varmap(&varmap, dtype, device))?;
        let mut owned = HashMap::new();
        for (name, _) in cfg.expected_tensors() {
            let t = weights.get(&name).ok_or_else(|| {
                PolicyError::InvalidInput(format!("weights lack tensor `{name}`"))
            })?;
            owned.insert(name, t.to_dtype(dtype)?.to_device(device)?.copy()?);
        }
        {
            let data = varmap
                .data()
                .lock()
                .map_err(|_| PolicyError::InvalidInput("varmap mutex poisoned".into()))?;
            for (name, var) in data.iter() {
                var.set(&owned[name])?;
            }
        }
        let reference = if config.kl_coef != 0.0 {
            Some(Model::new(
                cfg,
                VarBuilder::from_tensors(owned, dtype, device),
            )?)
        } else {
            None
        };
        Self::new(model, varmap, reference, config, pad_id)
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Optimizer steps applied so far (skipped steps not counted).
    pub fn steps(&self) -> u64 {
        self.optimizer.steps()
    }

    /// The optimizer (its state is what [`crate::train_state`] persists).
    pub fn optimizer(&self) -> &FusedAdamW {
        &self.optimizer
    }

    pub fn optimizer_mut(&mut self) -> &mut FusedAdamW {
        &mut self.optimizer
    }

    /// Sets the learning rate (for a schedule).
    pub fn set_lr(&mut self, lr: f64) {
        self.optimizer.config.lr = lr;
    }

    /// The current weights by HF name (sharing storage with the vars: copy before mutating).
    pub fn weights(&self) -> HashMap<String, Tensor> {
        self.optimizer
            .vars()
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect()
    }

    /// One optimizer step over `samples` (a mini-batch), in micro-batches of
    /// `config.micro_batch_size` with gradient accumulation.
    pub fn step(&mut self, samples: &[GrpoSample]) -> PolicyResult<GrpoStepStats> {
        let mut stats = GrpoStepStats {
            sequences: samples.len(),
            ..Default::default()
        };
        if samples.is_empty() {
            stats.skipped = true;
            return Ok(stats);
        }
        let vars = self.optimizer.vars().to_vec();
        let mut grads = self.optimizer.grad_accumulator()?;
        let mb = self.config.micro_batch_size.max(1);
        let (mut ratio_sum, mut clipped) = (0.0, 0.0);
        for chunk in samples.chunks(mb) {
            let batch: Vec<&GrpoSample> = chunk.iter().collect();
            let (loss, s) = micro_batch_loss(
                &self.model,
                self.reference.as_ref(),
                &batch,
                &self.config,
                self.pad_id,
            )?;
            stats.micro_batches += 1;
            let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() {
                stats.nonfinite_micro_batches += 1;
                continue;
            }
            let scaled = loss.affine(chunk.len() as f64 / samples.len() as f64, 0.0)?;
            grads.add(&vars, &scaled.backward()?)?;
            stats.loss += value;
            stats.pg_loss += s.pg_loss;
            stats.kl += s.kl;
            stats.entropy += s.entropy;
            stats.completion_tokens += s.completion_tokens;
            ratio_sum += s.ratio_sum;
            clipped += s.clipped_tokens;
        }
        let finite = (stats.micro_batches - stats.nonfinite_micro_batches).max(1) as f64;
        stats.loss /= finite;
        stats.pg_loss /= finite;
        stats.kl /= finite;
        stats.entropy /= finite;
        let tokens = stats.completion_tokens.max(1) as f64;
        stats.clip_fraction = clipped / tokens;
        stats.mean_ratio = ratio_sum / tokens;
        stats.grad_norm = grads.clip_global_norm(self.config.grad_clip)?;
        if !stats.grad_norm.is_finite() || stats.nonfinite_micro_batches == stats.micro_batches {
            stats.skipped = true;
            return Ok(stats);
        }
        self.optimizer.step(&grads)?;
        Ok(stats)
    }
}
