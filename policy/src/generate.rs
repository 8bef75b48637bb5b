//! Group generation for the miner: G completions of one prompt, batched over a preallocated KV
//! cache. The prompt is prefilled once (batch 1) and the cache is then expanded to G rows;
//! finished rows are dropped from the batch. Token choice is delegated to a [`TokenSampler`] so
//! the proof protocol can plug in replayable seeded sampling.

use candle_core::{DType, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::error::{PolicyError, PolicyResult};
use crate::model::{KvCache, Model};

/// Chooses the next token of one row.
pub trait TokenSampler {
    /// `position` is the absolute index of the token being chosen, `context` the prompt plus
    /// the tokens generated so far for this row, `logits` the raw f32 logits over the full
    /// vocabulary. Must return an id below `logits.len()`.
    fn choose(&mut self, row: usize, position: usize, context: &[u32], logits: &[f32]) -> u32;
}

/// Arg-max (lowest id on ties).
#[derive(Clone, Copy, Debug, Default)]
pub struct Greedy;

fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

impl TokenSampler for Greedy {
    fn choose(&mut self, _row: usize, _position: usize, _context: &[u32], logits: &[f32]) -> u32 {
        argmax(logits)
    }
}

/// HF-style sampling knobs, applied in HF's order: repetition penalty, temperature, top-k,
/// top-p.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplingParams {
    /// `<= 0` means greedy.
    pub temperature: f32,
    /// `0` disables top-k.
    pub top_k: usize,
    /// `>= 1` disables top-p.
    pub top_p: f32,
    /// `1` disables the penalty.
    pub repetition_penalty: f32,
}

impl Default for SamplingParams {
    /// grail's published generation defaults: temperature 0.7, top-p 0.9, top-k 50.
    fn default() -> Self {
        Self {
            temperature: 0.7,
            top_k: 50,
            top_p: 0.9,
            repetition_penalty: 1.0,
        }
    }
}

/// Seeded random sampling with [`SamplingParams`].
#[derive(Clone, Debug)]
pub struct RandomSampler {
    pub params: SamplingParams,
    rng: StdRng,
}

impl RandomSampler {
    pub fn new(params: SamplingParams, seed: u64) -> Self {
        Self {
            params,
            rng: StdRng::seed_from_u64(seed),
        }
    }
}

/// Applies the HF repetition penalty in place: seen tokens' positive logits are divided by
/// `penalty`, negative ones multiplied.
pub fn apply_repetition_penalty(logits: &mut [f32], context: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut seen = vec![false; logits.len()];
    for &t in context {
        let t = t as usize;
        if t < logits.len() && !seen[t] {
            seen[t] = true;
            let l = &mut logits[t];
            *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
        }
    }
}

impl TokenSampler for RandomSampler {
    fn choose(&mut self, _row: usize, _position: usize, context: &[u32], logits: &[f32]) -> u32 {
        let p = &self.params;
        let mut work = logits.to_vec();
        apply_repetition_penalty(&mut work, context, p.repetition_penalty);
        if p.temperature <= 0.0 {
            return argmax(&work);
        }
        // Candidates sorted by logit, descending (ties by id), truncated to top-k.
        let mut order: Vec<u32> = (0..work.len() as u32).collect();
        let by_logit = |a: &u32, b: &u32| {
            work[*b as usize]
                .total_cmp(&work[*a as usize])
                .then(a.cmp(b))
        };
        if p.top_k > 0 && p.top_k < order.len() {
            order.select_nth_unstable_by(p.top_k - 1, by_logit);
            order.truncate(p.top_k);
        }
        order.sort_unstable_by(by_logit);
        let max = work[order[0] as usize] / p.temperature;
        let mut probs: Vec<f64> = order
            .iter()
            .map(|&t| ((work[t as usize] / p.temperature - max) as f64).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        if p.top_p < 1.0 {
            // Keep the smallest prefix whose mass reaches top_p (at least one token).
            let mut cum = 0.0;
            let mut keep = probs.len();
            for (i, q) in probs.iter().enumerate() {
                cum += q / total;
                if cum >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let mut u = self.rng.random::<f64>() * total;
        for (i, q) in probs.iter().enumerate() {
            if u < *q {
                return order[i];
            }
            u -= q;
        }
        order[probs.len() - 1]
    }
}

/// One group to generate.
#[derive(Clone, Debug)]
pub struct GroupRequest<'a> {
    pub prompt: &'a [u32],
    /// Number of completions (G, 16 in grail).
    pub group_size: usize,
    pub max_new_tokens: usize,
    /// Generation of a row stops after any of these is produced (it is kept in the output).
    pub eos_ids: &'a [u32],
}

/// One completed row.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratedSequence {
    /// Prompt + completion ids.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    pub completion_len: usize,
    /// The last completion token is an eos id (false: stopped at `max_new_tokens`).
    pub ended_with_eos: bool,
    /// f32 log-probability of each completion token under the raw (untempered, unfiltered)
    /// model distribution; `completion_len` entries.
    pub logprobs: Vec<f32>,
}

impl GeneratedSequence {
    pub fn completion(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }
}

/// `log_softmax(logits)[token]` in f32 with an f64 accumulator for the normaliser.
pub fn raw_logprob(logits: &[f32], token: u32) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    logits[token as usize] - max - sum.ln() as f32
}

impl GeneratedSequence {
    /// Appends the sampled `token` (with its raw log-prob under `logits`); whether the row
    /// decodes on (no EOS, under `max_new_tokens`). A token outside the vocabulary is an error.
    pub(crate) fn push(
        &mut self,
        token: u32,
        logits: &[f32],
        vocab: usize,
        req: &GroupRequest,
    ) -> PolicyResult<bool> {
        if token as usize >= vocab {
            return Err(PolicyError::TokenOutOfRange {
                token,
                index: self.tokens.len(),
                vocab,
            });
        }
        self.logprobs.push(raw_logprob(logits, token));
        self.tokens.push(token);
        self.completion_len += 1;
        if req.eos_ids.contains(&token) {
            self.ended_with_eos = true;
            return Ok(false);
        }
        Ok(self.completion_len < req.max_new_tokens)
    }
}

/// Generates `req.group_size` completions of `req.prompt`.
pub fn generate_group(
    model: &Model,
    req: &GroupRequest,
    sampler: &mut dyn TokenSampler,
) -> PolicyResult<Vec<GeneratedSequence>> {
    let vocab = model.config().vocab_size;
    let prompt_len = req.prompt.len();
    if prompt_len == 0 {
        return Err(PolicyError::InvalidInput("empty prompt".into()));
    }
    crate::error::check_token_range(req.prompt, vocab)?;
    let mut rows: Vec<GeneratedSequence> = (0..req.group_size)
        .map(|_| GeneratedSequence {
            tokens: req.prompt.to_vec(),
            prompt_len,
            completion_len: 0,
            ended_with_eos: false,
            logprobs: Vec::with_capacity(req.max_new_tokens),
        })
        .collect();
    if req.group_size == 0 || req.max_new_tokens == 0 {
        return Ok(rows);
    }
    let device = model.device();
    let capacity = prompt_len + req.max_new_tokens;
    let mut prefill_cache = KvCache::new(model, 1, capacity)?;
    let ids = Tensor::from_slice(req.prompt, (1, prompt_len), device)?;
    let hidden = model.forward_cached(&ids, &mut prefill_cache)?;
    let last = model.logits(&hidden.narrow(1, prompt_len - 1, 1)?)?;
    let first_logits = last.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut cache = prefill_cache.select_rows(&vec![0; req.group_size])?;
    drop(prefill_cache);

    // `active[i]` is the group row held in batch slot i of the cache.
    let mut active: Vec<usize> = (0..req.group_size).collect();
    let mut logits: Vec<Vec<f32>> = vec![first_logits; req.group_size];
    loop {
        let position = rows[active[0]].tokens.len();
        let mut keep = Vec::with_capacity(active.len());
        let mut next_ids = Vec::with_capacity(active.len());
        for (slot, &row) in active.iter().enumerate() {
            let seq = &mut rows[row];
            let token = sampler.choose(row, position, &seq.tokens, &logits[slot]);
            if seq.push(token, &logits[slot], vocab, req)? {
                keep.push(slot);
                next_ids.push(token);
            }
        }
        if keep.is_empty() {
            break;
        }
        if keep.len() < active.len() {
            cache = cache.select_rows(&keep)?;
            active = keep.iter().map(|&slot| active[slot]).collect();
        }
        let ids = Tensor::from_vec(next_ids, (active.len(), 1), device)?;
        let hidden = model.forward_cached(&ids, &mut cache)?;
        logits = model
            .logits(&hidden)?
            .to_dtype(DType::F32)?
            .squeeze(1)?
            .to_vec2::<f32>()?;
    }
    Ok(rows)
}
