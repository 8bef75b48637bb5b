//! Reward, GRPO advantage and duplicate-completion rules.

use serde::{Deserialize, Serialize};

use super::RejectReason;
use crate::randomness::completion_digest;

/// A group whose population std of rewards is below this has no learning signal: every advantage
/// is exactly 0. Rewards are O(1) (typically in [0, 1]); 1e-6 is far above f32 rounding of a mean
/// (~6e-8) and far below any real reward difference.
pub const ZERO_VARIANCE_STD: f64 = 1e-6;

/// Group-normalised advantages.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupAdvantages {
    pub advantages: Vec<f32>,
    /// False when all rewards are (numerically) equal: the group teaches GRPO nothing.
    pub has_learning_signal: bool,
}

/// `a_i = (r_i − mean) / std` with the POPULATION std (divide by n), computed in f64; groups with
/// `std < ZERO_VARIANCE_STD` (or fewer than 2 rollouts) get all-zero advantages and no signal.
/// Non-finite rewards give no signal (the shape check rejects them first).
pub fn grpo_advantages(rewards: &[f32]) -> GroupAdvantages {
    let n = rewards.len();
    let zeros = GroupAdvantages {
        advantages: vec![0.0; n],
        has_learning_signal: false,
    };
    if n < 2 || rewards.iter().any(|r| !r.is_finite()) {
        return zeros;
    }
    let mean = rewards.iter().map(|&r| f64::from(r)).sum::<f64>() / n as f64;
    let variance = rewards
        .iter()
        .map(|&r| (f64::from(r) - mean).powi(2))
        .sum::<f64>()
        / n as f64;
    let std = variance.sqrt();
    if std < ZERO_VARIANCE_STD {
        return zeros;
    }
    GroupAdvantages {
        advantages: rewards
            .iter()
            .map(|&r| ((f64::from(r) - mean) / std) as f32)
            .collect(),
        has_learning_signal: true,
    }
}

/// `|claimed − recomputed| ≤ absolute + relative · |recomputed|`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardTolerance {
    pub absolute: f64,
    pub relative: f64,
    /// Allowed |claimed − recomputed| per advantage (advantages are O(1) and recomputed from the
    /// verified rewards, so only f32 rounding and reward tolerance propagate into them).
    pub advantage: f64,
}

impl Default for RewardTolerance {
    fn default() -> Self {
        Self {
            absolute: 1e-6,
            relative: 1e-5,
            advantage: 1e-3,
        }
    }
}

/// The environment's recomputed reward must match the claim.
pub fn check_reward(
    rollout: u32,
    claimed: f32,
    recomputed: f32,
    tolerance: &RewardTolerance,
) -> Result<(), RejectReason> {
    let (c, r) = (f64::from(claimed), f64::from(recomputed));
    if (c - r).abs() <= tolerance.absolute + tolerance.relative * r.abs() {
        Ok(())
    } else {
        Err(RejectReason::RewardMismatch {
            rollout,
            claimed,
            recomputed,
        })
    }
}

/// Claimed advantages must equal [`grpo_advantages`] of the (verified) rewards within tolerance.
pub fn check_advantages(
    claimed: &[f32],
    rewards: &[f32],
    tolerance: &RewardTolerance,
) -> Result<GroupAdvantages, RejectReason> {
    let expected = grpo_advantages(rewards);
    if claimed.len() != rewards.len() {
        return Err(RejectReason::LengthMismatch {
            rollout: 0,
            field: "advantages".into(),
            expected: u32::try_from(rewards.len()).unwrap_or(u32::MAX),
            actual: u32::try_from(claimed.len()).unwrap_or(u32::MAX),
        });
    }
    for (rollout, (&c, &e)) in claimed.iter().zip(&expected.advantages).enumerate() {
        let diff = (f64::from(c) - f64::from(e)).abs();
        if diff.is_nan() || diff > tolerance.advantage {
            return Err(RejectReason::AdvantageMismatch {
                rollout: rollout as u32,
                claimed: c,
                expected: e,
            });
        }
    }
    Ok(expected)
}

/// Indices of the first occurrence of each distinct completion (by [`completion_digest`]), in order.
/// Duplicates inside a group count once for scoring.
pub fn unique_completions(completions: &[&[u32]]) -> Vec<usize> {
    let mut seen = std::collections::HashSet::with_capacity(completions.len());
    (0..completions.len())
        .filter(|&i| seen.insert(completion_digest(completions[i])))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advantages_use_population_std() {
        let result = grpo_advantages(&[1.0, 0.0, 1.0, 0.0]);
        assert!(result.has_learning_signal);
        assert_eq!(result.advantages, vec![1.0, -1.0, 1.0, -1.0]);
        let skewed = grpo_advantages(&[1.0, 0.0, 0.0, 0.0]);
        // mean 0.25, population std sqrt(0.1875) = 0.4330
        assert!((skewed.advantages[0] - 1.732_050_8).abs() < 1e-6);
        assert!((skewed.advantages[1] + 0.577_350_3).abs() < 1e-6);
        let sum: f32 = skewed.advantages.iter().sum();
        assert!(sum.abs() < 1e-6);
    }

    #[test]
    fn zero_variance_groups_have_no_signal() {
        for rewards in [
            vec![0.5f32; 16],
            vec![0.5, 0.5 + 1e-8],
            vec![1.0],
            vec![],
            vec![f32::NAN, 1.0],
        ] {
            let result = grpo_advantages(&rewards);
            assert!(!result.has_learning_signal);
            assert!(result.advantages.iter().all(|&a| a == 0.0));
            assert_eq!(result.advantages.len(), rewards.len());
        }
    }

    #[test]
    fn reward_and_advantage_tolerances() {
        let tol = RewardTolerance::default();
        assert!(check_reward(0, 1.0, 1.0, &tol).is_ok());
        assert!(check_reward(0, 1.000_001, 1.0, &tol).is_ok());
        assert!(check_reward(3, 1.0, 0.0, &tol).is_err());
        assert!(check_reward(3, f32::NAN, 0.0, &tol).is_err());
        let rewards = [1.0f32, 0.0, 0.5, 0.0];
        let good = grpo_advantages(&rewards).advantages;
        assert!(check_advantages(&good, &rewards, &tol).is_ok());
        let mut tampered = good.clone();
        tampered[2] += 0.1;
        assert!(matches!(
            check_advantages(&tampered, &rewards, &tol),
            Err(RejectReason::AdvantageMismatch { rollout: 2, .. })
        ));
        assert!(check_advantages(&good[..3], &rewards, &tol).is_err());
    }

    #[test]
    fn duplicates_count_once() {
        let a = [1u32, 2, 3];
        let b = [1u32, 2];
        assert_eq!(unique_completions(&[&a, &b, &a, &b, &[]]), vec![0, 1, 4]);
        assert!(unique_completions(&[]).is_empty());
    }
}
