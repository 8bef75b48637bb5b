//! The miner's replayable sampler (PROTOCOL.md §4): every token is the Gumbel-max choice over
//! the processed logits with noise keyed by `sampling_key(open, miner, group, rollout, step)`,
//! so a verifier holding the same logits replays it and the miner has no choice to make.

use policy::generate::TokenSampler;
use protocol::randomness::{sampling_key, Randomness};
use protocol::sampling::{choose, process_logits, token_logprob, SamplingParams};

/// Seeded Gumbel-max sampling for one group; also records each token's policy log-prob
/// (`token_logprob(raw, token, T)`, §4.5) as seen during generation.
pub struct SeededSampler {
    open: Randomness,
    miner_pubkey: [u8; 32],
    group_index: u32,
    prompt_len: usize,
    params: SamplingParams,
    /// `logprobs[row]`: one entry per generated token of rollout `row`.
    logprobs: Vec<Vec<f32>>,
    /// The first row whose logits left nothing to sample (NaN/-inf everywhere).
    failure: Option<String>,
    fallback_token: u32,
}

impl SeededSampler {
    /// `fallback_token` is returned (and the failure recorded) if a logits row has no finite
    /// entry; the miner then refuses to publish the group.
    pub fn new(
        open: Randomness,
        miner_pubkey: [u8; 32],
        group_index: u32,
        prompt_len: usize,
        params: SamplingParams,
        group_size: usize,
        fallback_token: u32,
    ) -> Self {
        Self {
            open,
            miner_pubkey,
            group_index,
            prompt_len,
            params,
            logprobs: vec![Vec::new(); group_size],
            failure: None,
            fallback_token,
        }
    }

    /// The recorded log-probs per rollout, or why sampling failed.
    pub fn finish(self) -> Result<Vec<Vec<f32>>, String> {
        match self.failure {
            Some(failure) => Err(failure),
            None => Ok(self.logprobs),
        }
    }
}

impl TokenSampler for SeededSampler {
    fn choose(&mut self, row: usize, position: usize, context: &[u32], logits: &[f32]) -> u32 {
        let step = position.saturating_sub(self.prompt_len) as u32;
        let key = sampling_key(
            &self.open,
            &self.miner_pubkey,
            self.group_index,
            row as u32,
            step,
        );
        let processed = process_logits(logits, context, &self.params);
        let token = match choose(&processed, &key) {
            Some(token) => token,
            None => {
                self.failure.get_or_insert_with(|| {
                    format!("rollout {row} step {step}: no finite logit to sample from")
                });
                self.fallback_token
            }
        };
        if let Some(out) = self.logprobs.get_mut(row) {
            out.push(token_logprob(logits, token, self.params.temperature));
        }
        token
    }
}
