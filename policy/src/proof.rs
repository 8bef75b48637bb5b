//! The proof forward (miner and verifier): one prefill over full sequences returning, for every
//! position, the last-layer hidden state after the final norm and the log-probability of the
//! next token, plus full raw logit rows at chosen positions.
//!
//! # Reproducibility
//! On CPU the result is a pure function of (weights, batch composition, padded length, dtype,
//! CPU kernel selection); `logprob_chunk` does not change a bit (each chunk is one 2-D head
//! product whose rows do not interact; tested):
//! * **bit-identical** across processes, repeated calls and `RAYON_NUM_THREADS` values
//!   (candle's gemm splits work over M and N, never over the K reduction), tested in
//!   `tests/proof.rs`;
//! * **not bit-identical when the padded length changes** (a longer batch-mate, or `pad_to`):
//!   the attention `probs · V` product reduces over the padded key length, so gemm blocks the
//!   sum differently. The difference is at f32 rounding level: on the tiny models, padding
//!   one 40-token row to 41, 57 or 256 changed hidden states by at most 2.4e-6 and next-token
//!   log-probs by at most 9.5e-7 (`padded_length_changes_results_only_at_rounding_level`
//!   prints the numbers). A verifier should recompute with the miner's padded length or
//!   compare with a tolerance;
//! * **not bit-identical when the shared prefix changes**: with `share_prefix` (the default)
//!   the leading tokens common to every row of the batch (a group's prompt, plus any
//!   completion tokens all rows happen to start with) run once, and the rest of each row runs
//!   against their cached keys/values. The prefix length is a function of the batch
//!   composition, so the same batch gives the same bits; against the full-sequence forward
//!   (`share_prefix: false`, or a batch whose rows share nothing) the difference is at f32
//!   rounding level (`shared_prefix_matches_the_full_sequence_forward` prints ≤ 3e-6 on the
//!   tiny models; on SmolLM2-135M, 16 × (64 + 192), it measured bit-identical: docs/BENCHMARKS.md);
//! * different dtypes (bf16 vs f32) differ at the bf16 level (~1e-2 relative), different
//!   devices (CUDA vs CPU) and different CPU ISAs (AVX2 vs AVX-512 gemm kernels) at rounding
//!   level; all of these need a tolerance.

use candle_core::{DType, Tensor};

use crate::error::{PolicyError, PolicyResult};
use crate::model::{token_logprobs, KvCache, Model};

/// One sequence to run: prompt + completion ids and the positions whose full logit rows are
/// wanted (e.g. the challenged positions).
#[derive(Clone, Debug)]
pub struct ProofInput<'a> {
    pub tokens: &'a [u32],
    pub logit_positions: &'a [usize],
}

/// Per-sequence results, unpadded.
#[derive(Clone, Debug, PartialEq)]
pub struct ProofOutput {
    /// Number of tokens (= rows of `hidden`).
    pub len: usize,
    pub hidden_size: usize,
    /// Final-norm hidden states, f32, row-major `[len × hidden_size]`.
    pub hidden: Vec<f32>,
    /// `len - 1` entries: entry `t` is `log p(tokens[t + 1] | tokens[..=t])`, f32 log-softmax
    /// of the f32 LM head (untempered).
    pub next_token_logprobs: Vec<f32>,
    /// `(position, raw f32 logits over the full vocabulary)` for each requested position.
    pub logits: Vec<(usize, Vec<f32>)>,
    /// Leading tokens that ran once for the whole batch (0: every row ran whole). Part of
    /// what fixes the last bits of the results (module notes).
    pub shared_prefix: usize,
}

impl ProofOutput {
    /// The hidden state at `position`.
    pub fn hidden_at(&self, position: usize) -> &[f32] {
        &self.hidden[position * self.hidden_size..(position + 1) * self.hidden_size]
    }
}

/// Batch layout knobs. `pad_to` changes results at rounding level; `logprob_chunk` only
/// bounds memory.
#[derive(Clone, Debug)]
pub struct ProofOptions {
    /// Right-pad every row to this length (default: the longest row).
    pub pad_to: Option<usize>,
    /// The padding token (its value never affects real positions under the causal mask).
    pub pad_id: u32,
    /// Positions per LM-head chunk: bounds the `[batch, chunk, vocab]` f32 logits buffer
    /// (16 × 64 × 49,152 = 201 MB for SmolLM2); larger chunks are not faster.
    pub logprob_chunk: usize,
    /// Compute `next_token_logprobs` (the miner's behaviour log-probs). When false (the
    /// verifier, which only needs hidden states and logits at the challenged positions), the
    /// LM head runs only on the `logit_positions` rows and `next_token_logprobs` is empty:
    /// the full-vocabulary head and log-softmax over every position are skipped.
    pub next_token_logprobs: bool,
    /// Run the leading tokens that every sequence of the batch shares (a GRPO group's prompt)
    /// once instead of once per row: at 16 × (128 + 128) the trunk does ~1.9× less work. The
    /// same function of the weights and tokens, at rounding level (see the module notes).
    pub share_prefix: bool,
}

impl Default for ProofOptions {
    fn default() -> Self {
        Self {
            pad_to: None,
            pad_id: 0,
            logprob_chunk: 64,
            next_token_logprobs: true,
            share_prefix: true,
        }
    }
}

fn validate(model: &Model, inputs: &[ProofInput], padded: usize) -> PolicyResult<()> {
    let vocab = model.config().vocab_size;
    for (row, input) in inputs.iter().enumerate() {
        if input.tokens.is_empty() {
            return Err(PolicyError::InvalidInput(format!(
                "sequence {row} is empty"
            )));
        }
        if input.tokens.len() > padded {
            return Err(PolicyError::InvalidInput(format!(
                "sequence {row} has {} tokens, more than pad_to = {padded}",
                input.tokens.len()
            )));
        }
        crate::error::check_token_range(input.tokens, vocab)?;
        if let Some(&p) = input
            .logit_positions
            .iter()
            .find(|&&p| p >= input.tokens.len())
        {
            return Err(PolicyError::InvalidInput(format!(
                "sequence {row}: logit position {p} is past its {} tokens",
                input.tokens.len()
            )));
        }
    }
    Ok(())
}

/// Runs the proof forward over `inputs` as one right-padded batch.
pub fn proof_forward(
    model: &Model,
    inputs: &[ProofInput],
    opts: &ProofOptions,
) -> PolicyResult<Vec<ProofOutput>> {
    if inputs.is_empty() {
        return Ok(Vec::new());
    }
    let longest = inputs.iter().map(|i| i.tokens.len()).max().unwrap_or(0);
    let padded = opts.pad_to.unwrap_or(longest);
    validate(model, inputs, padded)?;
    let batch = inputs.len();
    let device = model.device();

    let mut id_rows = Vec::with_capacity(batch * padded);
    for input in inputs {
        id_rows.extend_from_slice(input.tokens);
        id_rows.extend(std::iter::repeat_n(
            opts.pad_id,
            padded - input.tokens.len(),
        ));
    }
    let ids = Tensor::from_slice(&id_rows, (batch, padded), device)?;
    let shared = if opts.share_prefix {
        shared_prefix_len(inputs)
    } else {
        0
    };
    let hidden = if shared > 0 {
        shared_prefix_hidden(model, &ids, shared)?
    } else {
        model.infer_hidden(&ids)? // [b, padded, h]
    };
    let hidden_size = model.config().hidden_size;
    let hidden_f32 = hidden.to_dtype(DType::F32)?.to_vec3::<f32>()?;

    let mut outputs: Vec<ProofOutput> = inputs
        .iter()
        .zip(hidden_f32)
        .map(|(input, rows)| ProofOutput {
            len: input.tokens.len(),
            hidden_size,
            hidden: rows
                .into_iter()
                .take(input.tokens.len())
                .flatten()
                .collect(),
            next_token_logprobs: Vec::with_capacity(input.tokens.len() - 1),
            logits: Vec::new(),
            shared_prefix: shared,
        })
        .collect();

    if opts.next_token_logprobs {
        // Next-token target per padded position (the last position's target is a dummy 0).
        let next: Vec<u32> = id_rows
            .chunks(padded)
            .flat_map(|row| row[1..].iter().copied().chain(std::iter::once(0)))
            .collect();
        let next = Tensor::from_vec(next, (batch, padded), device)?;
        let chunk = opts.logprob_chunk.max(1);
        // Positions before the prefix's last one predict prefix tokens: the same for every
        // row, so the head runs on row 0 only. From the prefix's last position on (it
        // predicts each row's own first suffix token) it runs on the whole batch.
        let first_own = shared.saturating_sub(1);
        if first_own > 0 {
            let rows = chunked_logprobs(
                model,
                &hidden.narrow(0, 0, 1)?,
                &next.narrow(0, 0, 1)?,
                0,
                first_own,
                chunk,
            )?;
            for out in &mut outputs {
                out.next_token_logprobs.extend_from_slice(&rows[0]);
            }
        }
        let rows = chunked_logprobs(model, &hidden, &next, first_own, padded, chunk)?;
        for (out, row) in outputs.iter_mut().zip(rows) {
            let scored = out.len - 1 - out.next_token_logprobs.len();
            out.next_token_logprobs.extend_from_slice(&row[..scored]);
        }
    }
    // Challenged rows through one small head product (not copied out of the chunks one row
    // at a time, which costs a device round trip per row on CUDA); identical in both modes.
    selected_logits(model, &hidden, inputs, padded, &mut outputs)?;
    Ok(outputs)
}

/// The number of leading tokens every input shares, when there are at least two inputs;
/// capped one short of the shortest input so every row keeps a position of its own.
fn shared_prefix_len(inputs: &[ProofInput]) -> usize {
    let [first, rest @ ..] = inputs else {
        return 0;
    };
    if rest.is_empty() {
        return 0;
    }
    let shortest = inputs.iter().map(|i| i.tokens.len()).min().unwrap_or(0);
    let mut shared = shortest.saturating_sub(1);
    for input in rest {
        shared = first.tokens[..shared]
            .iter()
            .zip(input.tokens)
            .take_while(|(a, b)| a == b)
            .count();
    }
    shared
}

/// Final-norm hidden states `[b, padded, h]` of `ids` whose rows all start with the same
/// `shared` tokens: the prefix runs once (batch 1) into a key/value cache, which is repeated
/// for every row, and only the rows' own tokens run as a batch against it. The function
/// computed is the full-sequence forward's (same causal attention, same positions); the
/// summation order, hence the last bits, differs.
fn shared_prefix_hidden(model: &Model, ids: &Tensor, shared: usize) -> PolicyResult<Tensor> {
    let (batch, padded) = ids.dims2()?;
    let mut cache = KvCache::new(model, 1, padded)?;
    let prefix = model.forward_cached(&ids.narrow(0, 0, 1)?.narrow(1, 0, shared)?, &mut cache)?;
    let mut cache = cache.select_rows(&vec![0; batch])?;
    let own = ids.narrow(1, shared, padded - shared)?.contiguous()?;
    let own = model.forward_cached(&own, &mut cache)?;
    let (_, _, hidden) = prefix.dims3()?;
    let prefix = prefix.broadcast_as((batch, shared, hidden))?;
    Ok(Tensor::cat(&[&prefix, &own], 1)?)
}

/// `log p(next[r, t])` for `t` in `start..end` of every row of `hidden: [b, padded, h]`,
/// the LM head run over at most `chunk` positions at a time.
fn chunked_logprobs(
    model: &Model,
    hidden: &Tensor,
    next: &Tensor,
    start: usize,
    end: usize,
    chunk: usize,
) -> PolicyResult<Vec<Vec<f32>>> {
    let mut rows = vec![Vec::with_capacity(end - start); hidden.dim(0)?];
    let mut at = start;
    while at < end {
        let n = chunk.min(end - at);
        let logits = model
            .logits(&hidden.narrow(1, at, n)?)?
            .to_dtype(DType::F32)?;
        let picked = token_logprobs(&logits, &next.narrow(1, at, n)?)?.to_vec2::<f32>()?;
        for (row, values) in rows.iter_mut().zip(picked) {
            row.extend(values);
        }
        at += n;
    }
    Ok(rows)
}

/// Runs the LM head only on the hidden rows at each input's `logit_positions` (caller's
/// order, duplicates kept), one `[positions, hidden] × [hidden, vocab]` product for the batch.
fn selected_logits(
    model: &Model,
    hidden: &Tensor,
    inputs: &[ProofInput],
    padded: usize,
    outputs: &mut [ProofOutput],
) -> PolicyResult<()> {
    let rows: Vec<u32> = inputs
        .iter()
        .enumerate()
        .flat_map(|(row, input)| {
            input
                .logit_positions
                .iter()
                .map(move |&p| (row * padded + p) as u32)
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    let (batch, _, hidden_size) = hidden.dims3()?;
    let index = Tensor::from_vec(rows, batch_len(inputs), hidden.device())?;
    let picked = hidden
        .reshape((batch * padded, hidden_size))?
        .index_select(&index, 0)?;
    let logits = model
        .logits(&picked)?
        .to_dtype(DType::F32)?
        .to_vec2::<f32>()?;
    let mut logits = logits.into_iter();
    for (input, out) in inputs.iter().zip(outputs.iter_mut()) {
        out.logits = input
            .logit_positions
            .iter()
            .map(|&p| (p, logits.next().unwrap_or_default()))
            .collect();
    }
    Ok(())
}

fn batch_len(inputs: &[ProofInput]) -> usize {
    inputs.iter().map(|i| i.logit_positions.len()).sum()
}
