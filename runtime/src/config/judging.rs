//! `[verifier]` and `[scoring]`: the tolerances a verifier judges groups with and the rules the
//! scorer turns verdicts into weights with. Every verifier of a network should use the same
//! `[verifier]` values (a stricter one rejects what the others accept).

use protocol::checks::{RewardTolerance, SoftThresholds};
use protocol::scoring::ScoringParams;
use protocol::sketch::SketchTolerance;
use serde::Deserialize;

/// `[verifier]` (defaults: the protocol's, PROTOCOL.md §5).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifierSection {
    /// Challenged completion positions per rollout (K).
    pub challenge_k: u32,
    /// Rollouts of a deep-checked group whose forward pass is recomputed, drawn from the close
    /// randomness; 0 (default) = all. PROTOCOL.md §2.7 gives the detection probability.
    pub rollouts_checked: u32,
    /// Bound on |miner raw logit − verifier raw logit| (D).
    pub logit_drift: f64,
    /// Median `exp|Δlogp| − 1` bound (ε).
    pub logprob_epsilon: f64,
    /// Minimum probability of a final EOS (soft `low_eos_probability`); 0 = off.
    pub min_eos_probability: f64,
    /// Sketch distance tolerance `base + growth·√position`, failed positions allowed.
    pub sketch: SketchTolerance,
    /// Claimed vs recomputed reward and advantage tolerance.
    pub reward: RewardTolerance,
    /// Re-score every group (true) or only the deep-checked ones (expensive environments).
    pub rescore_every_group: bool,
}

impl Default for VerifierSection {
    fn default() -> Self {
        let d = actors::compute::model::VerifierOptions::default();
        Self {
            challenge_k: d.challenge_k,
            rollouts_checked: d.rollouts_checked,
            logit_drift: d.logit_drift,
            logprob_epsilon: d.logprob_epsilon,
            min_eos_probability: d.min_eos_probability,
            sketch: d.tolerance,
            reward: d.reward,
            rescore_every_group: d.rescore_every_group,
        }
    }
}

/// `[scoring]`: [`ScoringParams`] plus `[scoring.soft]`, the largest tolerated share of a
/// miner's groups per soft reject code (used by the verifier per group and the scorer per
/// window).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoringSection {
    pub exponent: f64,
    pub window_cap: f64,
    pub no_signal_weight: f64,
    pub score_windows: u64,
    pub failure_lookback_windows: u64,
    /// Forget a miner key with no window in this many windows (unset: the scoring horizon,
    /// `max(score_windows, failure_lookback_windows)`; never less).
    pub forget_after_windows: Option<u64>,
    /// Most miner keys the scorer remembers and lists in `Weights` (lowest scores go first).
    pub max_miners: usize,
    pub soft: SoftThresholds,
}

impl Default for ScoringSection {
    fn default() -> Self {
        let p = ScoringParams::default();
        Self {
            exponent: p.exponent,
            window_cap: p.window_cap,
            no_signal_weight: p.no_signal_weight,
            score_windows: p.score_windows,
            failure_lookback_windows: p.failure_lookback_windows,
            forget_after_windows: None,
            max_miners: actors::roles::scorer::ScorerConfig::DEFAULT_MAX_MINERS,
            soft: SoftThresholds::default(),
        }
    }
}

impl ScoringSection {
    pub fn params(&self) -> ScoringParams {
        ScoringParams {
            exponent: self.exponent,
            window_cap: self.window_cap,
            no_signal_weight: self.no_signal_weight,
            score_windows: self.score_windows,
            failure_lookback_windows: self.failure_lookback_windows,
        }
    }
}

type Invalid = (&'static str, String, &'static str);

/// Range checks; `(key, problem, fix)` on the first failure.
pub fn validate(v: &VerifierSection, s: &ScoringSection) -> Result<(), Invalid> {
    let positive = |key, x: f64, fix| {
        if x.is_finite() && x > 0.0 {
            Ok(())
        } else {
            Err((key, format!("{x} is not a positive number"), fix))
        }
    };
    let fraction = |key, x: f64| {
        if (0.0..=1.0).contains(&x) {
            Ok(())
        } else {
            Err((
                key,
                format!("{x} is not in 0..=1"),
                "use a share between 0 and 1",
            ))
        }
    };
    if v.challenge_k == 0 {
        return Err((
            "verifier.challenge_k",
            "is 0".into(),
            "challenge at least 1 position per rollout (default 32)",
        ));
    }
    positive("verifier.logit_drift", v.logit_drift, "default 0.001")?;
    positive(
        "verifier.logprob_epsilon",
        v.logprob_epsilon,
        "default 0.10",
    )?;
    fraction("verifier.min_eos_probability", v.min_eos_probability)?;
    positive("scoring.exponent", s.exponent, "default 4.0")?;
    positive("scoring.window_cap", s.window_cap, "default 5000")?;
    fraction("scoring.no_signal_weight", s.no_signal_weight)?;
    if s.score_windows == 0 {
        return Err((
            "scoring.score_windows",
            "is 0".into(),
            "sum at least 1 window (default 12)",
        ));
    }
    let horizon = s.score_windows.max(s.failure_lookback_windows);
    if let Some(n) = s.forget_after_windows.filter(|n| *n < horizon) {
        return Err((
            "scoring.forget_after_windows",
            format!("{n} is under the scoring horizon of {horizon} windows (forgetting sooner would change scores)"),
            "use at least max(score_windows, failure_lookback_windows), or delete the key",
        ));
    }
    if s.max_miners == 0 {
        return Err((
            "scoring.max_miners",
            "is 0".into(),
            "remember at least 1 miner (default 4096)",
        ));
    }
    fraction("scoring.soft.reward_mismatch", s.soft.reward_mismatch)?;
    fraction(
        "scoring.soft.low_eos_probability",
        s.soft.low_eos_probability,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgetting_under_the_scoring_horizon_or_remembering_no_miner_is_refused() {
        let v = VerifierSection::default();
        let ok = ScoringSection::default();
        assert!(validate(&v, &ok).is_ok());
        let early = ScoringSection {
            forget_after_windows: Some(13),
            ..ScoringSection::default()
        };
        let (key, problem, _) = validate(&v, &early).unwrap_err();
        assert_eq!(key, "scoring.forget_after_windows");
        assert!(problem.contains("horizon of 14"), "{problem}");
        let late = ScoringSection {
            forget_after_windows: Some(14),
            ..ScoringSection::default()
        };
        assert!(validate(&v, &late).is_ok());
        let none = ScoringSection {
            max_miners: 0,
            ..ScoringSection::default()
        };
        assert_eq!(validate(&v, &none).unwrap_err().0, "scoring.max_miners");
    }
}
