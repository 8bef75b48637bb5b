//! `grail bench policy`: generation, proof-forward and GRPO-training throughput of a model,
//! with peak memory and achieved GFLOP/s against a measured f32 gemm peak.

use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::config::{Arch, ModelConfig};
use crate::error::{LoadError, PolicyError};
use crate::generate::{generate_group, GroupRequest, RandomSampler, SamplingParams, TokenSampler};
use crate::grpo::{micro_batch_loss, GrpoConfig, GrpoSample, GrpoTrainer};
use crate::loader::{load_model, LoadOptions};
use crate::model::{seeded_weights, KvCache, Model};
use crate::proof::{proof_forward, ProofInput, ProofOptions};
use crate::tiny::tiny_config;

/// Which model to measure.
#[derive(Clone, Debug)]
pub enum BenchModel {
    /// The tiny test model (hidden 64, 2 layers).
    Tiny,
    /// A seeded ~48M-parameter Llama-style model (vocab 32000, hidden 512, 10 layers, 8 heads,
    /// 4 kv heads, ffn 1536, tied), the size stack.md §6.3 measured.
    Small,
    /// An HF model directory or GGUF file.
    Path(PathBuf),
}

impl std::str::FromStr for BenchModel {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "tiny" => BenchModel::Tiny,
            "small" => BenchModel::Small,
            path => BenchModel::Path(PathBuf::from(path)),
        })
    }
}

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub model: BenchModel,
    pub group_size: usize,
    pub prompt_len: usize,
    pub max_new_tokens: usize,
    /// Optimizer steps to average the training measurement over.
    pub train_steps: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            model: BenchModel::Tiny,
            group_size: 16,
            prompt_len: 128,
            max_new_tokens: 128,
            train_steps: 2,
        }
    }
}

/// One measured quantity.
#[derive(Clone, Debug)]
pub struct BenchRow {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub note: String,
}

/// The measurements, printable as a table.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub model: String,
    pub parameters: usize,
    pub threads: usize,
    pub rows: Vec<BenchRow>,
}

impl BenchReport {
    pub fn get(&self, name: &str) -> Option<f64> {
        self.rows.iter().find(|r| r.name == name).map(|r| r.value)
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "policy bench: {} ({:.2}M params), {} threads",
            self.model,
            self.parameters as f64 / 1e6,
            self.threads
        )?;
        writeln!(
            f,
            "| {:<34} | {:>12} | {:<9} | note",
            "measure", "value", "unit"
        )?;
        writeln!(f, "|{:-<36}|{:-<14}|{:-<11}|------", "", "", "")?;
        for r in &self.rows {
            writeln!(
                f,
                "| {:<34} | {:>12.2} | {:<9} | {}",
                r.name, r.value, r.unit, r.note
            )?;
        }
        Ok(())
    }
}

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Peak resident set size in MiB (`VmHWM`), if /proc is available.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Measured f32 GFLOP/s of a 1024² matmul on `device` (best of 5).
pub fn gemm_peak_gflops(device: &Device) -> candle_core::Result<f64> {
    let n = 1024;
    let a = Tensor::ones((n, n), DType::F32, device)?;
    let b = Tensor::ones((n, n), DType::F32, device)?;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let c = a.matmul(&b)?;
        c.device().synchronize()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(2.0 * (n * n * n) as f64 / best / 1e9)
}

fn small_config() -> ModelConfig {
    ModelConfig {
        arch: Arch::Llama,
        hidden_size: 512,
        intermediate_size: 1536,
        num_hidden_layers: 10,
        num_attention_heads: 8,
        num_key_value_heads: 4,
        head_dim: 64,
        vocab_size: 32_000,
        max_position_embeddings: 4096,
        tie_word_embeddings: true,
        qkv_bias: false,
        ..tiny_config(Arch::Llama)
    }
}

/// Forward FLOPs of one sequence of `len` tokens: 2 × (non-embedding params incl. the LM
/// head) per token plus the full `len × len` attention products we compute.
pub fn forward_flops(cfg: &ModelConfig, len: usize) -> f64 {
    let embed = cfg.vocab_size * cfg.hidden_size;
    let dense = cfg.parameter_count() - if cfg.tie_word_embeddings { 0 } else { embed };
    let attn = 4 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * len * len;
    2.0 * dense as f64 * len as f64 + attn as f64
}

/// Counts the time spent choosing tokens.
struct TimedSampler<S> {
    inner: S,
    seconds: f64,
}

impl<S: TokenSampler> TokenSampler for TimedSampler<S> {
    fn choose(&mut self, row: usize, position: usize, context: &[u32], logits: &[f32]) -> u32 {
        let t = Instant::now();
        let token = self.inner.choose(row, position, context, logits);
        self.seconds += t.elapsed().as_secs_f64();
        token
    }
}

fn row(name: &str, value: f64, unit: &str, note: impl Into<String>) -> BenchRow {
    BenchRow {
        name: name.into(),
        value,
        unit: unit.into(),
        note: note.into(),
    }
}

/// Runs the benchmark on CPU in f32.
pub fn run_policy_bench(opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    let device = Device::Cpu;
    let (label, model, pad, weights) = match &opts.model {
        BenchModel::Path(p) => {
            let m = load_model(p, &LoadOptions::default())?;
            (p.display().to_string(), m.model, m.pad_id, m.weights)
        }
        preset => {
            let (label, cfg) = match preset {
                BenchModel::Small => ("small (seeded, Llama-style)", small_config()),
                _ => ("tiny (seeded, Qwen2)", tiny_config(Arch::Qwen2)),
            };
            let weights = seeded_weights(&cfg, 0, &device)?;
            let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &device);
            (label.to_string(), Model::new(&cfg, vb)?, 0, weights)
        }
    };
    let cfg = model.config().clone();
    let vocab = cfg.vocab_size as u32;
    let prompt: Vec<u32> = (0..opts.prompt_len as u32)
        .map(|i| (i * 7919 + 13) % vocab)
        .collect();
    let mut rows = Vec::new();

    // Generation: one group, no eos so every row runs the full budget.
    let t = Instant::now();
    let mut cache = KvCache::new(&model, 1, opts.prompt_len)?;
    model.forward_cached(
        &Tensor::from_slice(&prompt, (1, prompt.len()), &device)?,
        &mut cache,
    )?;
    let prefill_s = t.elapsed().as_secs_f64();
    let req = GroupRequest {
        prompt: &prompt,
        group_size: opts.group_size,
        max_new_tokens: opts.max_new_tokens,
        eos_ids: &[],
    };
    let params = SamplingParams::default();
    let mut sampler = TimedSampler {
        inner: RandomSampler::new(params, 1),
        seconds: 0.0,
    };
    let t = Instant::now();
    let group = generate_group(&model, &req, &mut sampler)?;
    let gen_s = t.elapsed().as_secs_f64();
    let generated: usize = group.iter().map(|g| g.completion_len).sum();
    let gen_tps = generated as f64 / gen_s;
    let decode_s = (gen_s - prefill_s - sampler.seconds).max(0.0);
    rows.push(row("generation", gen_tps, "tok/s", format!(
        "group of {}, prompt {}, {} new each; prefill {:.0} ms, decode {:.1} ms/step, sampling {:.0}%",
        opts.group_size, opts.prompt_len, opts.max_new_tokens, prefill_s * 1e3,
        decode_s * 1e3 / opts.max_new_tokens.max(1) as f64, 100.0 * sampler.seconds / gen_s
    )));

    // Proof forward over the group's full sequences.
    let inputs: Vec<ProofInput> = group
        .iter()
        .map(|g| ProofInput {
            tokens: &g.tokens,
            logit_positions: &[],
        })
        .collect();
    let proof_opts = ProofOptions {
        pad_id: pad,
        ..Default::default()
    };
    let len = prompt.len() + opts.max_new_tokens;
    let ids: Vec<u32> = group
        .iter()
        .flat_map(|g| g.tokens.iter().copied())
        .collect();
    let ids = Tensor::from_vec(ids, (group.len(), len), &device)?;
    let t = Instant::now();
    model.forward_hidden(&ids)?;
    let hidden_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    proof_forward(&model, &inputs, &proof_opts)?;
    let proof_s = t.elapsed().as_secs_f64();
    let proof_tokens = (group.len() * len) as f64;
    let proof_tps = proof_tokens / proof_s;
    rows.push(row(
        "proof forward",
        proof_tps,
        "tok/s",
        format!(
            "{} × {len} tokens; trunk {:.0}%, LM head + log-softmax {:.0}%",
            group.len(),
            100.0 * hidden_s / proof_s,
            100.0 * (1.0 - hidden_s / proof_s)
        ),
    ));
    rows.push(row(
        "proof / generation speed",
        proof_tps / gen_tps,
        "×",
        "goal ≥ 10×",
    ));
    let flops = forward_flops(&cfg, len) * group.len() as f64;
    let achieved = flops / proof_s / 1e9;
    let peak = gemm_peak_gflops(&device)?;
    rows.push(row(
        "prefill (proof) compute",
        achieved,
        "GFLOP/s",
        format!("{:.0}% of the measured gemm peak", 100.0 * achieved / peak),
    ));
    rows.push(row("gemm peak (1024² f32 matmul)", peak, "GFLOP/s", ""));

    // GRPO training on the same group (behaviour log-probs from generation).
    let grpo = GrpoConfig {
        kl_coef: 0.0,
        micro_batch_size: 8,
        ..Default::default()
    };
    let samples: Vec<GrpoSample> = group
        .iter()
        .enumerate()
        .map(|(i, g)| GrpoSample {
            tokens: g.tokens.clone(),
            prompt_len: g.prompt_len,
            advantage: if i % 2 == 0 { 1.0 } else { -1.0 },
            behaviour_logprobs: g.logprobs.clone(),
        })
        .collect();
    let mut trainer =
        GrpoTrainer::from_weights(&cfg, &weights, grpo.clone(), pad, DType::F32, &device)?;
    let micro: Vec<&GrpoSample> = samples.iter().take(grpo.micro_batch_size).collect();
    let t = Instant::now();
    let (loss, _) = micro_batch_loss(trainer.model(), None, &micro, &grpo, pad)?;
    let fwd_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    loss.backward()?;
    let bwd_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut completion_tokens = 0;
    for _ in 0..opts.train_steps.max(1) {
        completion_tokens += trainer.step(&samples)?.completion_tokens;
    }
    let train_s = t.elapsed().as_secs_f64() / opts.train_steps.max(1) as f64;
    let micro_batches = samples.len().div_ceil(grpo.micro_batch_size) as f64;
    let optim_s = (train_s - micro_batches * (fwd_s + bwd_s)).max(0.0);
    let total_tokens = proof_tokens / train_s;
    rows.push(row("GRPO training", total_tokens, "tok/s", format!(
        "{} sequences/step ({} completion tok), {:.0} ms/step: fwd+loss {:.0}%, backward {:.0}%, clip+AdamW {:.0}%",
        samples.len(), completion_tokens / opts.train_steps.max(1), train_s * 1e3,
        100.0 * micro_batches * fwd_s / train_s, 100.0 * micro_batches * bwd_s / train_s,
        100.0 * optim_s / train_s
    )));
    if let Some(rss) = peak_rss_mib() {
        rows.push(row("peak RSS (VmHWM)", rss, "MiB", "whole process"));
    }
    Ok(BenchReport {
        model: label,
        parameters: cfg.parameter_count(),
        threads: candle_core::utils::get_num_threads(),
        rows,
    })
}
