//! The verifier's knobs, shared by the cheap checks ([`super::verifier`]) and the forward-pass
//! checks ([`super::deep`]).

use std::sync::Arc;

use protocol::checks::{Limits, RewardTolerance, SoftThresholds};
use protocol::sketch::{SketchParams, SketchTolerance};

use super::registry::WindowRegistry;

/// Verifier knobs: protocol parameters shared with miners (`group_size`, `challenge_k`,
/// `sketch`) and calibrated tolerances (PROTOCOL.md §10).
#[derive(Clone, Debug)]
pub struct VerifierOptions {
    pub group_size: u32,
    pub max_groups_per_window: u32,
    /// Share of groups that get the forward-pass checks, in parts per million of the close
    /// randomness draw (PROTOCOL.md §2.7). 1_000_000 checks every group. Default 5 %: a deep
    /// check costs about as much as the miner's own proof forward (§10.4), so 5 % keeps the
    /// amortised verification under 1/20 of generation.
    pub deep_check_rate_ppm: u32,
    /// Challenged positions per rollout (K).
    pub challenge_k: u32,
    /// Rollouts of a deep-checked group whose forward pass is recomputed, drawn from the close
    /// randomness (PROTOCOL.md §2.7); 0 = all. Fewer cost proportionally less and let a group
    /// with `m` forged rollouts pass with probability `C(16−m, k)/C(16, k)`.
    pub rollouts_checked: u32,
    pub sketch: SketchParams,
    pub tolerance: SketchTolerance,
    /// Bound on |miner raw logit − verifier raw logit| (D, §4.4).
    pub logit_drift: f64,
    /// Median `exp|Δlogp| − 1` bound (ε, §5.1 check 8).
    pub logprob_epsilon: f64,
    /// Minimum probability of a final EOS (soft `low_eos_probability`). Default 0 (off): the
    /// final token is always challenged and replayed, so an EOS the seeded noise chose is
    /// honest whatever its probability, and an untrained model (p(EOS) ≈ 1/vocab) would trip
    /// the protocol's 0.02 on every EOS (PROTOCOL.md §10.4). Set it to
    /// `protocol::checks::MIN_EOS_PROBABILITY` to keep the v1 rule.
    pub min_eos_probability: f64,
    pub reward: RewardTolerance,
    pub soft: SoftThresholds,
    /// Recompute rewards on every group (true) or only on deep-checked ones (for expensive
    /// environments such as sandboxed code).
    pub rescore_every_group: bool,
    /// Rollouts per verifier forward batch.
    pub batch_rows: usize,
    /// Shared by every worker of one verifier process (clone the options, not the registry).
    pub registry: Arc<WindowRegistry>,
}

impl Default for VerifierOptions {
    fn default() -> Self {
        Self {
            group_size: 16,
            max_groups_per_window: Limits::default().max_groups_per_window,
            deep_check_rate_ppm: 50_000,
            challenge_k: 32,
            rollouts_checked: 0,
            sketch: SketchParams::default(),
            tolerance: SketchTolerance::default(),
            logit_drift: 1e-3,
            logprob_epsilon: 0.10,
            min_eos_probability: 0.0,
            reward: RewardTolerance::default(),
            soft: SoftThresholds::default(),
            rescore_every_group: true,
            batch_rows: 16,
            registry: Arc::new(WindowRegistry::default()),
        }
    }
}
