//! Several groups decoded as one batch: the miner mines many groups per window, and at decode
//! time each weight read then serves `k × G` rows instead of `G`.
//!
//! Each group's prompt is prefilled alone (batch 1), then the prefill caches are laid side by
//! side in one cache, each prompt right-aligned at a common slot `width` and the slots before it
//! masked ([`KvCache::left_padded`]); every decode step writes all rows at the same slot while
//! each row keeps its own RoPE position ([`Model::forward_shifted`]). A row therefore attends to
//! exactly the keys it would in its own group's cache; only the summation order of the padded
//! products may differ (f32 rounding level). Finished rows are dropped from the batch.

use candle_core::{DType, Tensor};

use crate::error::{PolicyError, PolicyResult};
use crate::generate::{GeneratedSequence, GroupRequest, TokenSampler};
use crate::model::{KvCache, Model};

/// Generates every request's group in one decode batch. `samplers[i]` chooses the tokens of
/// `requests[i]` (its `row` argument is the row within that group, as in
/// [`crate::generate::generate_group`]). Returns one `Vec` of rows per request.
pub fn generate_groups<S: TokenSampler>(
    model: &Model,
    requests: &[GroupRequest],
    samplers: &mut [S],
) -> PolicyResult<Vec<Vec<GeneratedSequence>>> {
    if samplers.len() != requests.len() {
        return Err(PolicyError::InvalidInput(format!(
            "{} requests but {} samplers (one sampler per group)",
            requests.len(),
            samplers.len()
        )));
    }
    let vocab = model.config().vocab_size;
    let mut groups = Vec::with_capacity(requests.len());
    for req in requests {
        if req.prompt.is_empty() {
            return Err(PolicyError::InvalidInput("empty prompt".into()));
        }
        crate::error::check_token_range(req.prompt, vocab)?;
        groups.push(
            (0..req.group_size)
                .map(|_| GeneratedSequence {
                    tokens: req.prompt.to_vec(),
                    prompt_len: req.prompt.len(),
                    completion_len: 0,
                    ended_with_eos: false,
                    logprobs: Vec::with_capacity(req.max_new_tokens),
                })
                .collect::<Vec<_>>(),
        );
    }
    // Groups that generate nothing take no part in the batch.
    let live: Vec<usize> = (0..requests.len())
        .filter(|&g| requests[g].group_size > 0 && requests[g].max_new_tokens > 0)
        .collect();
    if live.is_empty() {
        return Ok(groups);
    }
    let width = live
        .iter()
        .map(|&g| requests[g].prompt.len())
        .max()
        .unwrap_or(0);
    let longest = live
        .iter()
        .map(|&g| requests[g].max_new_tokens)
        .max()
        .unwrap_or(0);
    let device = model.device();

    let mut prefills = Vec::with_capacity(live.len());
    // Batch slot → (group, row in group, slot shift); filled group by group.
    let mut active: Vec<(usize, usize, usize)> = Vec::new();
    let mut logits: Vec<Vec<f32>> = Vec::new();
    for &g in &live {
        let req = &requests[g];
        let len = req.prompt.len();
        let mut cache = KvCache::new(model, 1, len)?;
        let ids = Tensor::from_slice(req.prompt, (1, len), device)?;
        let hidden = model.forward_cached(&ids, &mut cache)?;
        let last = model.logits(&hidden.narrow(1, len - 1, 1)?)?;
        let first = last.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        for row in 0..req.group_size {
            active.push((g, row, width - len));
            logits.push(first.clone());
        }
        prefills.push((cache, req.group_size));
    }
    let parts: Vec<(&KvCache, usize)> = prefills.iter().map(|(c, r)| (c, *r)).collect();
    let mut cache = KvCache::left_padded(&parts, width, width + longest)?;
    drop(parts);
    drop(prefills);

    loop {
        let mut keep = Vec::with_capacity(active.len());
        let mut next_ids = Vec::with_capacity(active.len());
        for (slot, &(g, row, _)) in active.iter().enumerate() {
            let req = &requests[g];
            let seq = &mut groups[g][row];
            let position = seq.tokens.len();
            let token = samplers[g].choose(row, position, &seq.tokens, &logits[slot]);
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
        let shifts: Vec<usize> = active.iter().map(|&(_, _, shift)| shift).collect();
        let ids = Tensor::from_vec(next_ids, (active.len(), 1), device)?;
        let hidden = model.forward_shifted(&ids, &mut cache, &shifts)?;
        logits = model
            .logits(&hidden)?
            .to_dtype(DType::F32)?
            .squeeze(1)?
            .to_vec2::<f32>()?;
    }
    Ok(groups)
}
