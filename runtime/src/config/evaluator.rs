//! `[evaluator]`: what the optional evaluator role (`[roles.evaluator]`) scores.

use actors::roles::evaluator::EvalEvery;
use serde::Deserialize;

/// `[evaluator]`: a fixed held-out subset, the same for every checkpoint, so scores compare.
/// Temperature and max new tokens are `[sampling]`'s (what the miners sample with).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvaluatorSection {
    /// The first `problems` problems of the environment's eval split.
    pub problems: u64,
    /// Sampled completions per problem besides the greedy one (pass@k up to k = samples).
    pub samples: usize,
    /// Seed of the sampled completions (reports are reproducible with `grail eval --seed`).
    pub seed: u64,
    /// `"anchors"` (full checkpoints, and the base model) or `"checkpoints"` (every one).
    pub every: EvalEvery,
    /// When more than this many checkpoints wait, the older ones are skipped.
    pub max_backlog: usize,
}

impl Default for EvaluatorSection {
    fn default() -> Self {
        Self {
            problems: 64,
            samples: 4,
            seed: 0,
            every: EvalEvery::Anchors,
            max_backlog: 4,
        }
    }
}
