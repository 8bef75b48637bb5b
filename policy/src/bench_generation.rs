//! Generation throughput of k groups decoded one at a time against the same k groups in one
//! decode batch ([`generate_groups`]): the miner's gain from mining a window's groups together.
//! The two are run interleaved, `reps` times each, so machine load hits both alike.

use std::time::Instant;

use crate::bench::{load_subject, warm_up, BenchError, BenchModel, BenchOptions};
use crate::generate::{generate_group, GroupRequest, RandomSampler, SamplingParams};
use crate::generate_batch::generate_groups;

/// Tokens per second of each repetition, in run order.
#[derive(Clone, Debug)]
pub struct GenerationComparison {
    pub model: String,
    pub threads: usize,
    /// k groups, one `generate_group` call each.
    pub per_group: Vec<f64>,
    /// The same k groups in one `generate_groups` call.
    pub batched: Vec<f64>,
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

impl GenerationComparison {
    pub fn median_per_group(&self) -> f64 {
        median(&self.per_group)
    }
    pub fn median_batched(&self) -> f64 {
        median(&self.batched)
    }
}

/// Runs `reps` interleaved pairs (per-group, batched) of `groups` groups of
/// `opts.group_size` rows; prompts of `opts.prompt_len` ids (a different one per group), no
/// eos, grail's default sampling (T 0.7, top-k 50, top-p 0.9), as `scripts/torch_bench.py`.
pub fn compare_generation(
    model: BenchModel,
    opts: &BenchOptions,
    groups: usize,
    reps: usize,
) -> Result<GenerationComparison, BenchError> {
    let opts = BenchOptions {
        model,
        ..opts.clone()
    };
    let device = opts.device.open()?;
    let dtype = opts.dtype.unwrap_or(opts.device.dtype());
    let (label, model, pad, weights) = load_subject(&opts, &device, dtype)?;
    drop(weights);
    warm_up(&model, pad)?;
    let vocab = model.config().vocab_size as u32;
    let prompts: Vec<Vec<u32>> = (0..groups as u32)
        .map(|g| {
            (0..opts.prompt_len as u32)
                .map(|i| (i * 7919 + 13 + g) % vocab)
                .collect()
        })
        .collect();
    let requests: Vec<GroupRequest> = prompts
        .iter()
        .map(|p| GroupRequest {
            prompt: p,
            group_size: opts.group_size,
            max_new_tokens: opts.max_new_tokens,
            eos_ids: &[],
        })
        .collect();
    let tokens = (groups * opts.group_size * opts.max_new_tokens) as f64;
    let sampler = |g: usize| RandomSampler::new(SamplingParams::default(), g as u64);
    let mut out = GenerationComparison {
        model: label,
        threads: candle_core::utils::get_num_threads(),
        per_group: Vec::new(),
        batched: Vec::new(),
    };
    for rep in 0..reps.max(1) {
        let t = Instant::now();
        for (g, req) in requests.iter().enumerate() {
            generate_group(&model, req, &mut sampler(g))?;
        }
        out.per_group.push(tokens / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut samplers: Vec<RandomSampler> = (0..groups).map(sampler).collect();
        generate_groups(&model, &requests, &mut samplers)?;
        out.batched.push(tokens / t.elapsed().as_secs_f64());
        eprintln!(
            "rep {rep}: per group {:.0} tok/s, batched {:.0} tok/s",
            out.per_group[rep], out.batched[rep]
        );
    }
    Ok(out)
}
