//! Scores and weights.
//!
//! Per window, a passing miner earns `credit = min(cap, U_signal + λ · U_flat)` where `U_signal` are
//! verified unique rollouts in groups with reward variance (GRPO learns from them) and `U_flat` those
//! in zero-variance groups (no gradient; λ = 0.1 keeps a little credit for honest work on too-easy or
//! too-hard problems without rewarding volume). A miner's score is the sum of credits over the last
//! `score_windows` windows, or 0 if any window in the last `failure_lookback_windows` failed.
//! Weights are `score^p / Σ score^p` with `p = 4`: splitting a score `S` over `k` hotkeys yields
//! `k · (S/k)^4 = S^4 / k^3`, so Sybils lose weight (`docs/PROTOCOL.md` §6).

use serde::{Deserialize, Serialize};

/// Scoring constants (config).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoringParams {
    /// Superlinear exponent `p`.
    pub exponent: f64,
    /// Per-window credit cap (rollouts the trainer can use per miner and window).
    pub window_cap: f64,
    /// Credit per unique rollout of a zero-variance group, relative to a signal-carrying one.
    pub no_signal_weight: f64,
    /// Windows summed into a score.
    pub score_windows: u64,
    /// A failed window zeroes the score while it is this recent.
    pub failure_lookback_windows: u64,
}

impl Default for ScoringParams {
    fn default() -> Self {
        Self {
            exponent: 4.0,
            window_cap: 5000.0,
            no_signal_weight: 0.1,
            score_windows: 12,
            failure_lookback_windows: 14,
        }
    }
}

/// What one miner achieved in one window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum WindowOutcome {
    /// The window verdict passed; counts of verified unique rollouts by group kind.
    Credited {
        signal_rollouts: u32,
        no_signal_rollouts: u32,
    },
    /// A hard failure (or too many soft findings).
    Failed,
}

/// `min(cap, U_signal + λ · U_flat)`.
pub fn window_credit(signal_rollouts: u32, no_signal_rollouts: u32, params: &ScoringParams) -> f64 {
    let raw = f64::from(signal_rollouts)
        + params.no_signal_weight.max(0.0) * f64::from(no_signal_rollouts);
    raw.min(params.window_cap.max(0.0))
}

/// Score of one miner at `current_window` from its `(window, outcome)` history (any order; windows
/// after `current_window` are ignored).
pub fn miner_score(
    history: &[(u64, WindowOutcome)],
    current_window: u64,
    params: &ScoringParams,
) -> f64 {
    let age = |window: u64| current_window.checked_sub(window);
    let failed_recently = history.iter().any(|&(window, outcome)| {
        outcome == WindowOutcome::Failed
            && age(window).is_some_and(|a| a < params.failure_lookback_windows)
    });
    if failed_recently {
        return 0.0;
    }
    history
        .iter()
        .filter(|&&(window, _)| age(window).is_some_and(|a| a < params.score_windows))
        .map(|&(_, outcome)| match outcome {
            WindowOutcome::Credited {
                signal_rollouts,
                no_signal_rollouts,
            } => window_credit(signal_rollouts, no_signal_rollouts, params),
            WindowOutcome::Failed => 0.0,
        })
        .sum()
}

/// `w_i = s_i^p / Σ_j s_j^p` (computed as `(s_i / max)^p` for range safety). Non-finite or negative
/// scores count as 0; all-zero scores give all-zero weights (the caller decides where emission goes).
pub fn weights(scores: &[f64], exponent: f64) -> Vec<f64> {
    let clean: Vec<f64> = scores
        .iter()
        .map(|&s| if s.is_finite() && s > 0.0 { s } else { 0.0 })
        .collect();
    let max = clean.iter().copied().fold(0.0, f64::max);
    if max <= 0.0 {
        return vec![0.0; scores.len()];
    }
    let powered: Vec<f64> = clean.iter().map(|&s| (s / max).powf(exponent)).collect();
    let total: f64 = powered.iter().sum();
    powered.iter().map(|&p| p / total).collect()
}

/// Weights as u16 summing to exactly 65535 (largest remainder; ties to the lower index).
/// All-zero input gives all zeros.
pub fn weights_to_u16_sum(weights: &[f64]) -> Vec<u16> {
    const TOTAL: u64 = u16::MAX as u64;
    let clean: Vec<f64> = weights
        .iter()
        .map(|&w| if w.is_finite() && w > 0.0 { w } else { 0.0 })
        .collect();
    let sum: f64 = clean.iter().sum();
    if sum <= 0.0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<f64> = clean.iter().map(|&w| w / sum * TOTAL as f64).collect();
    let mut out: Vec<u64> = exact.iter().map(|&e| e.floor() as u64).collect();
    let assigned: u64 = out.iter().sum();
    let mut order: Vec<usize> = (0..exact.len()).collect();
    order.sort_by(|&a, &b| {
        (exact[b] - exact[b].floor())
            .total_cmp(&(exact[a] - exact[a].floor()))
            .then(a.cmp(&b))
    });
    for &i in order.iter().take(TOTAL.saturating_sub(assigned) as usize) {
        out[i] += 1;
    }
    out.into_iter().map(|w| w.min(TOTAL) as u16).collect()
}

/// Weights scaled so the largest is 65535 (what Bittensor's weight emission does before the chain
/// renormalises); rounding half away from zero.
pub fn weights_to_u16_max(weights: &[f64]) -> Vec<u16> {
    let max = weights
        .iter()
        .copied()
        .filter(|w| w.is_finite())
        .fold(0.0, f64::max);
    if max <= 0.0 {
        return vec![0; weights.len()];
    }
    weights
        .iter()
        .map(|&w| {
            if w.is_finite() && w > 0.0 {
                (w / max * f64::from(u16::MAX)).round() as u16
            } else {
                0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credited(signal: u32, flat: u32) -> WindowOutcome {
        WindowOutcome::Credited {
            signal_rollouts: signal,
            no_signal_rollouts: flat,
        }
    }

    #[test]
    fn credit_prefers_signal_and_is_capped() {
        let p = ScoringParams::default();
        assert_eq!(window_credit(100, 0, &p), 100.0);
        assert_eq!(window_credit(0, 100, &p), 10.0);
        assert!(window_credit(100, 0, &p) > window_credit(50, 400, &p));
        assert_eq!(window_credit(9000, 0, &p), 5000.0);
    }

    #[test]
    fn score_sums_recent_windows_and_failures_zero_it() {
        let p = ScoringParams::default();
        let history = [
            (100, credited(10, 0)),
            (95, credited(5, 0)),
            (80, credited(1000, 0)),
        ];
        assert_eq!(miner_score(&history, 100, &p), 15.0); // window 80 is 20 old
        assert_eq!(miner_score(&history, 90, &p), 1000.0); // future windows ignored
        let failed = [(100, credited(10, 0)), (87, WindowOutcome::Failed)];
        assert_eq!(miner_score(&failed, 100, &p), 0.0); // 13 windows ago, lookback 14
        assert_eq!(miner_score(&failed, 101, &p), 10.0); // 14 ago: expired
    }

    #[test]
    fn score_is_monotone_in_verified_work() {
        let p = ScoringParams::default();
        let mut previous = -1.0;
        for n in [0u32, 1, 10, 100, 1000, 4999, 5000] {
            let s = miner_score(&[(1, credited(n, 0))], 1, &p);
            assert!(s > previous);
            previous = s;
        }
        assert_eq!(miner_score(&[(1, credited(6000, 0))], 1, &p), previous); // capped
        let w = weights(&[1.0, 2.0, 3.0], 4.0);
        assert!(w[0] < w[1] && w[1] < w[2]);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn splitting_into_hotkeys_loses_weight() {
        // An operator with score 1200 next to an honest 1000-score miner, split over k hotkeys.
        for k in 1..=8usize {
            let mut scores = vec![1000.0];
            scores.extend(std::iter::repeat_n(1200.0 / k as f64, k));
            let w = weights(&scores, 4.0);
            let operator: f64 = w[1..].iter().sum();
            let expected =
                1.2f64.powi(4) / k.pow(3) as f64 / (1.0 + 1.2f64.powi(4) / k.pow(3) as f64);
            assert!((operator - expected).abs() < 1e-12, "k={k}");
            if k > 1 {
                let single = weights(&[1000.0, 1200.0], 4.0)[1];
                assert!(operator < single);
            }
        }
    }

    #[test]
    fn u16_conversions() {
        let w = weights(&[1.0, 1.0, 1.0], 4.0);
        let sum = weights_to_u16_sum(&w);
        assert_eq!(sum.iter().map(|&x| u32::from(x)).sum::<u32>(), 65535);
        assert_eq!(sum, vec![21845, 21845, 21845]);
        let uneven = weights_to_u16_sum(&[0.5, 0.25, 0.25, 0.0]);
        assert_eq!(uneven.iter().map(|&x| u32::from(x)).sum::<u32>(), 65535);
        assert_eq!(uneven, vec![32767, 16384, 16384, 0]);
        assert_eq!(weights_to_u16_sum(&[0.0, f64::NAN]), vec![0, 0]);
        assert_eq!(weights_to_u16_max(&[0.5, 0.25, 0.0]), vec![65535, 32768, 0]);
        assert_eq!(weights(&[0.0, -1.0, f64::NAN], 4.0), vec![0.0, 0.0, 0.0]);
    }
}
