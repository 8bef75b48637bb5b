//! `grail bench policy`: generation, proof-forward and GRPO-training throughput of a model,
//! with peak memory and achieved GFLOP/s against a measured f32 gemm peak.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::config::{Arch, ModelConfig};
use crate::device::{DeviceError, DeviceSpec};
use crate::error::{LoadError, PolicyError};
use crate::generate::{generate_group, GroupRequest, RandomSampler, SamplingParams, TokenSampler};
use crate::generate_batch::generate_groups;
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
    /// SmolLM2-135M's exact architecture (vocab 49152, hidden 576, 30 layers, 9 heads, 3 kv
    /// heads, ffn 1536, tied) with seeded weights: the real model's throughput without its file.
    Smollm2Shape,
    /// An HF model directory or GGUF file.
    Path(PathBuf),
}

impl std::str::FromStr for BenchModel {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "tiny" => BenchModel::Tiny,
            "small" => BenchModel::Small,
            "smollm2-shape" => BenchModel::Smollm2Shape,
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
    /// `cpu` or `cuda:N`.
    pub device: DeviceSpec,
    /// Weight dtype; `None` = the device's default (f32 on CPU, bf16 on CUDA).
    pub dtype: Option<DType>,
    /// Challenged positions per sequence whose logits the verifier's proof forward computes.
    pub challenged_positions: usize,
    /// Sequences per GRPO micro-batch (activation memory grows with it: full-vocabulary
    /// logits of every position are kept for the backward pass).
    pub train_micro_batch: usize,
    /// Groups in the "generation, k groups batched" row (one decode batch over k × G rows,
    /// as the miner's `mine_batched`); below 2 skips the row.
    pub decode_groups: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            model: BenchModel::Tiny,
            group_size: 16,
            prompt_len: 128,
            max_new_tokens: 128,
            train_steps: 2,
            device: DeviceSpec::Cpu,
            dtype: None,
            challenged_positions: 32,
            train_micro_batch: 8,
            decode_groups: 4,
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
    /// Device and weight dtype, e.g. `cpu f32`, `cuda:0 bf16`.
    pub device: String,
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
            "policy bench: {} ({:.2}M params) on {}, {} CPU threads",
            self.model,
            self.parameters as f64 / 1e6,
            self.device,
            self.threads
        )?;
        writeln!(
            f,
            "| {:<36} | {:>12} | {:<9} | note",
            "measure", "value", "unit"
        )?;
        writeln!(f, "|{:-<38}|{:-<14}|{:-<11}|------", "", "", "")?;
        for r in &self.rows {
            writeln!(
                f,
                "| {:<36} | {:>12.2} | {:<9} | {}",
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
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// Peak resident set size in MiB (`VmHWM`), if /proc is available.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Measured GFLOP/s of an `n × n × n` matmul of random `dtype` matrices on `device` (best of
/// 5 after one warm-up): the gemm peak the model's products are compared with.
pub fn gemm_peak_gflops(device: &Device, n: usize, dtype: DType) -> candle_core::Result<f64> {
    let a = Tensor::randn(0f32, 1.0, (n, n), device)?.to_dtype(dtype)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), device)?.to_dtype(dtype)?;
    a.matmul(&b)?;
    device.synchronize()?;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let c = a.matmul(&b)?;
        device.synchronize()?;
        best = best.min(t.elapsed().as_secs_f64());
        drop(c);
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

/// SmolLM2-135M-Instruct's config (as rebuilt from its GGUF).
fn smollm2_config() -> ModelConfig {
    ModelConfig {
        hidden_size: 576,
        num_hidden_layers: 30,
        num_attention_heads: 9,
        num_key_value_heads: 3,
        vocab_size: 49_152,
        rms_norm_eps: 1e-5,
        rope_theta: 100_000.0,
        max_position_embeddings: 8192,
        ..small_config()
    }
}

/// Forward FLOPs of one sequence of `len` tokens: 2 × (non-embedding params incl. the LM
/// head) per token plus the full `len × len` attention products we compute.
pub fn forward_flops(cfg: &ModelConfig, len: usize) -> f64 {
    trunk_flops(cfg, len) + lm_head_flops(cfg, len)
}

/// Decoder-layer FLOPs of `queries` new tokens attending to `keys` keys each (the full
/// `queries × keys` products we compute): 2 × non-embedding parameters per token, plus q·k and
/// p·v over every head and layer per (query, key) pair.
fn decoder_flops(cfg: &ModelConfig, queries: usize, keys: usize) -> f64 {
    let embed = cfg.vocab_size * cfg.hidden_size;
    let untied_head = if cfg.tie_word_embeddings { 0 } else { embed };
    let layers = cfg.parameter_count() - embed - untied_head;
    let per_pair = 4 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim;
    2.0 * layers as f64 * queries as f64 + (per_pair * queries * keys) as f64
}

/// Forward FLOPs of the decoder layers alone (no LM head) for one sequence of `len` tokens.
pub fn trunk_flops(cfg: &ModelConfig, len: usize) -> f64 {
    decoder_flops(cfg, len, len)
}

/// Trunk FLOPs of `rows` sequences that share their first `prefix` tokens (run once) and
/// have `own` tokens each after it, attending to the prefix's cached keys/values.
pub fn shared_trunk_flops(cfg: &ModelConfig, prefix: usize, rows: usize, own: usize) -> f64 {
    trunk_flops(cfg, prefix) + rows as f64 * decoder_flops(cfg, own, prefix + own)
}

/// FLOPs of the LM head over `positions` rows.
pub fn lm_head_flops(cfg: &ModelConfig, positions: usize) -> f64 {
    2.0 * (cfg.vocab_size * cfg.hidden_size) as f64 * positions as f64
}

/// Runs `f` twice and returns the shorter wall time with the last result: the first call at a
/// new shape also pays for growing the heap (and on CUDA for allocating device memory).
fn best_of_two<T>(mut f: impl FnMut() -> Result<T, BenchError>) -> Result<(f64, T), BenchError> {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..2 {
        let t = Instant::now();
        let value = f()?;
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(value);
    }
    Ok((best, out.expect("ran twice")))
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

/// The model under test, its pad id and its weights (to seed the trainer).
pub(crate) type BenchSubject = (String, Model, u32, HashMap<String, Tensor>);

pub(crate) fn load_subject(
    opts: &BenchOptions,
    device: &Device,
    dtype: DType,
) -> Result<BenchSubject, BenchError> {
    if let BenchModel::Path(p) = &opts.model {
        let load = LoadOptions {
            device: device.clone(),
            dtype,
        };
        let m = load_model(p, &load)?;
        return Ok((p.display().to_string(), m.model, m.pad_id, m.weights));
    }
    let (label, cfg) = match opts.model {
        BenchModel::Small => ("small (seeded, Llama-style)", small_config()),
        BenchModel::Smollm2Shape => ("SmolLM2-135M shape (seeded)", smollm2_config()),
        _ => ("tiny (seeded, Qwen2)", tiny_config(Arch::Qwen2)),
    };
    let weights = seeded_weights(&cfg, 0, &Device::Cpu)?
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(dtype)?.to_device(device)?)))
        .collect::<candle_core::Result<HashMap<_, _>>>()?;
    let vb = VarBuilder::from_tensors(weights.clone(), dtype, device);
    Ok((label.to_string(), Model::new(&cfg, vb)?, 0, weights))
}

/// Loads kernels (CUDA modules are JIT-compiled on first use) and touches every code path once
/// with small shapes, so first-call costs stay out of the measurements.
pub(crate) fn warm_up(model: &Model, pad: u32) -> Result<(), BenchError> {
    let vocab = model.config().vocab_size as u32;
    let prompt: Vec<u32> = (0..8).map(|i| (i * 31 + 5) % vocab).collect();
    let req = GroupRequest {
        prompt: &prompt,
        group_size: 2,
        max_new_tokens: 4,
        eos_ids: &[],
    };
    let group = generate_group(model, &req, &mut RandomSampler::new(Default::default(), 0))?;
    let inputs: Vec<ProofInput> = group
        .iter()
        .map(|g| ProofInput {
            tokens: &g.tokens,
            logit_positions: &[1, 3],
        })
        .collect();
    for next_token_logprobs in [true, false] {
        let opts = ProofOptions {
            pad_id: pad,
            next_token_logprobs,
            ..Default::default()
        };
        proof_forward(model, &inputs, &opts)?;
    }
    Ok(())
}

/// Progress on stderr, so a run that is cut off still shows how far it got.
fn progress(phase: &str, started: Instant) {
    eprintln!("bench: {phase} ({:.1} s)", started.elapsed().as_secs_f64());
}

/// Runs the benchmark on `opts.device` (f32 on CPU, bf16 on CUDA unless `opts.dtype` says).
pub fn run_policy_bench(opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    let device = opts.device.open()?;
    let dtype = opts.dtype.unwrap_or(opts.device.dtype());
    let started = Instant::now();
    let (label, model, pad, weights) = load_subject(opts, &device, dtype)?;
    let cfg = model.config().clone();
    progress("model loaded", started);
    warm_up(&model, pad)?;
    progress("warmed up", started);
    let vocab = cfg.vocab_size as u32;
    let prompt: Vec<u32> = (0..opts.prompt_len as u32)
        .map(|i| (i * 7919 + 13) % vocab)
        .collect();
    let mut rows = Vec::new();

    // Generation: one group, no eos so every row runs the full budget.
    let t = Instant::now();
    let mut cache = KvCache::new(&model, 1, opts.prompt_len)?;
    model
        .forward_cached(
            &Tensor::from_slice(&prompt, (1, prompt.len()), &device)?,
            &mut cache,
        )?
        .device()
        .synchronize()?;
    let prefill_s = t.elapsed().as_secs_f64();
    drop(cache);
    let req = GroupRequest {
        prompt: &prompt,
        group_size: opts.group_size,
        max_new_tokens: opts.max_new_tokens,
        eos_ids: &[],
    };
    let mut sampler = TimedSampler {
        inner: RandomSampler::new(SamplingParams::default(), 1),
        seconds: 0.0,
    };
    let t = Instant::now();
    let group = generate_group(&model, &req, &mut sampler)?;
    let gen_s = t.elapsed().as_secs_f64();
    let generated: usize = group.iter().map(|g| g.completion_len).sum();
    let gen_tps = generated as f64 / gen_s;
    let decode_s = (gen_s - prefill_s - sampler.seconds).max(0.0);
    progress("generation measured", started);
    rows.push(row("generation", gen_tps, "tok/s", format!(
        "group of {}, prompt {}, {} new each; prefill {:.0} ms, decode {:.1} ms/step, sampling {:.0}%",
        opts.group_size, opts.prompt_len, opts.max_new_tokens, prefill_s * 1e3,
        decode_s * 1e3 / opts.max_new_tokens.max(1) as f64, 100.0 * sampler.seconds / gen_s
    )));

    if opts.decode_groups > 1 {
        // k different prompts of the same length, one decode batch.
        let prompts: Vec<Vec<u32>> = (1..=opts.decode_groups as u32)
            .map(|g| prompt.iter().map(|&t| (t + g) % vocab).collect())
            .collect();
        let requests: Vec<GroupRequest> = prompts
            .iter()
            .map(|p| GroupRequest {
                prompt: p,
                ..req.clone()
            })
            .collect();
        let mut samplers: Vec<RandomSampler> = (0..requests.len())
            .map(|g| RandomSampler::new(SamplingParams::default(), 2 + g as u64))
            .collect();
        let t = Instant::now();
        let groups = generate_groups(&model, &requests, &mut samplers)?;
        let s = t.elapsed().as_secs_f64();
        let tokens: usize = groups.iter().flatten().map(|g| g.completion_len).sum();
        rows.push(row(
            "generation, k groups batched",
            tokens as f64 / s,
            "tok/s",
            format!(
                "{} groups × {} rows in one decode batch; {:.2}× the one-group row",
                opts.decode_groups,
                opts.group_size,
                tokens as f64 / s / gen_tps
            ),
        ));
        progress("batched generation measured", started);
    }

    // Proof forward over the group's full sequences, as the protocol uses it.
    let len = prompt.len() + opts.max_new_tokens;
    let k = opts.challenged_positions.min(opts.max_new_tokens);
    let challenged: Vec<usize> = (0..k)
        .map(|i| prompt.len() + i * opts.max_new_tokens / k.max(1))
        .collect();
    let inputs: Vec<ProofInput> = group
        .iter()
        .map(|g| ProofInput {
            tokens: &g.tokens,
            logit_positions: &challenged,
        })
        .collect();
    let ids: Vec<u32> = group
        .iter()
        .flat_map(|g| g.tokens.iter().copied())
        .collect();
    let ids = Tensor::from_vec(ids, (group.len(), len), &device)?;
    let sketch_inputs: Vec<ProofInput> = group
        .iter()
        .map(|g| ProofInput {
            tokens: &g.tokens,
            logit_positions: &[],
        })
        .collect();
    let (trunk_s, _) = best_of_two(|| Ok(model.infer_hidden(&ids)?.device().synchronize()?))?;
    let timed_proof = |inputs: &[ProofInput],
                       next_token_logprobs: bool,
                       share_prefix: bool|
     -> Result<(f64, usize), BenchError> {
        let proof_opts = ProofOptions {
            pad_id: pad,
            next_token_logprobs,
            share_prefix,
            ..Default::default()
        };
        let (s, out) = best_of_two(|| Ok(proof_forward(&model, inputs, &proof_opts)?))?;
        Ok((s, out.first().map_or(0, |o| o.shared_prefix)))
    };
    let (miner_s, shared) = timed_proof(&sketch_inputs, false, true)?;
    progress("miner proof forward measured", started);
    let (verifier_s, _) = timed_proof(&inputs, false, true)?;
    progress("verifier proof forward measured", started);
    let (logprobs_s, _) = timed_proof(&inputs, true, true)?;
    let (whole_s, _) = timed_proof(&inputs, true, false)?;
    progress("log-prob proof forwards measured", started);
    let proof_tokens = (group.len() * len) as f64;
    let trunk = trunk_flops(&cfg, len) * group.len() as f64;
    let shared_trunk = shared_trunk_flops(&cfg, shared, group.len(), len - shared);
    let head_all = lm_head_flops(&cfg, len) * group.len() as f64;
    let head_k = lm_head_flops(&cfg, k) * group.len() as f64;
    let rows_note = format!(
        "{} × {len} tok, the first {shared} shared (run once)",
        group.len()
    );
    rows.push(row(
        "proof forward, miner",
        proof_tokens / miner_s,
        "tok/s",
        format!("{rows_note}: hidden states for the sketches, as the miner commits them"),
    ));
    rows.push(row(
        "proof forward, verifier",
        proof_tokens / verifier_s,
        "tok/s",
        format!("{rows_note}: hidden + full logits at {k} challenged positions per sequence"),
    ));
    rows.push(row(
        "proof forward + log-probs",
        proof_tokens / logprobs_s,
        "tok/s",
        format!("{rows_note}: hidden + next-token log-probs at every position"),
    ));
    rows.push(row("proof fwd + log-probs, unshared", proof_tokens / whole_s, "tok/s", format!(
        "the same, every row run whole (one full-sequence prefill); trunk {:.0}%, LM head + token log-probs {:.0}%",
        100.0 * trunk_s / whole_s, 100.0 * (1.0 - trunk_s / whole_s).max(0.0)
    )));
    for (name, s) in [
        ("proof (miner) / generation", miner_s),
        ("proof (verifier) / generation", verifier_s),
    ] {
        rows.push(row(name, proof_tokens / s / gen_tps, "×", "goal ≥ 10×"));
    }
    let (peak_n, peak_dtype) = if device.is_cuda() {
        (8192, dtype)
    } else {
        (2048, DType::F32)
    };
    let peak = gemm_peak_gflops(&device, peak_n, peak_dtype)?;
    let achieved = |flops: f64, s: f64| flops / s / 1e9;
    for (name, flops, s) in [
        ("trunk compute (decoder layers)", trunk, trunk_s),
        ("proof compute, miner", shared_trunk, miner_s),
        ("proof compute, verifier", shared_trunk + head_k, verifier_s),
        (
            "proof compute, unshared + log-probs",
            trunk + head_all,
            whole_s,
        ),
    ] {
        let g = achieved(flops, s);
        rows.push(row(
            name,
            g,
            "GFLOP/s",
            format!("{:.0}% of the measured gemm peak", 100.0 * g / peak),
        ));
    }
    rows.push(row(
        &format!("gemm peak ({peak_n}³ {peak_dtype:?} matmul)"),
        peak,
        "GFLOP/s",
        "best of 5, random inputs",
    ));

    // GRPO training on the same group (behaviour log-probs from generation).
    let grpo = GrpoConfig {
        kl_coef: 0.0,
        micro_batch_size: opts.train_micro_batch.max(1),
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
    let mut trainer = GrpoTrainer::from_weights(&cfg, &weights, grpo.clone(), pad, dtype, &device)?;
    drop(weights);
    let micro: Vec<&GrpoSample> = samples.iter().take(grpo.micro_batch_size).collect();
    let (mut fwd_s, mut bwd_s) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..2 {
        let t = Instant::now();
        let (loss, _) = micro_batch_loss(trainer.model(), None, &micro, &grpo, pad)?;
        loss.device().synchronize()?;
        fwd_s = fwd_s.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        loss.backward()?;
        device.synchronize()?;
        bwd_s = bwd_s.min(t.elapsed().as_secs_f64());
    }
    progress("one training micro-batch measured (twice)", started);
    // Untimed warm-up step on one micro-batch: the first step allocates (and page-faults) the
    // AdamW moments, 2 × 4 bytes per parameter, which a long training run pays once. PyTorch's
    // bench (scripts/torch_bench.py) warms up the same way.
    trainer.step(&samples[..grpo.micro_batch_size.min(samples.len())])?;
    let t = Instant::now();
    let mut completion_tokens = 0;
    for _ in 0..opts.train_steps.max(1) {
        completion_tokens += trainer.step(&samples)?.completion_tokens;
    }
    let train_s = t.elapsed().as_secs_f64() / opts.train_steps.max(1) as f64;
    progress("training steps measured", started);
    let micro_batches = samples.len().div_ceil(grpo.micro_batch_size) as f64;
    let optim_s = (train_s - micro_batches * (fwd_s + bwd_s)).max(0.0);
    rows.push(row("GRPO training", proof_tokens / train_s, "tok/s", format!(
        "{} sequences/step in micro-batches of {} ({} completion tok), {:.0} ms/step: fwd+loss {:.0}%, backward {:.0}%, grad copy + clip + AdamW {:.0}%",
        samples.len(), grpo.micro_batch_size, completion_tokens / opts.train_steps.max(1), train_s * 1e3,
        100.0 * micro_batches * fwd_s / train_s, 100.0 * micro_batches * bwd_s / train_s,
        100.0 * optim_s / train_s
    )));
    if let Some(rss) = peak_rss_mib() {
        rows.push(row(
            "peak RSS (VmHWM)",
            rss,
            "MiB",
            "whole process, host memory",
        ));
    }
    Ok(BenchReport {
        model: label,
        device: format!("{} {dtype:?}", opts.device),
        parameters: cfg.parameter_count(),
        threads: candle_core::utils::get_num_threads(),
        rows,
    })
}
