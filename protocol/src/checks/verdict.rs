//! Folding check results into one verdict per miner and window.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{RejectCode, RejectReason, Severity};

/// Largest tolerated fraction of checked rollouts per soft finding.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SoftThresholds {
    /// Environment flakiness (sandbox timeouts); deterministic environments could use 0.
    pub reward_mismatch: f64,
    /// Honest seeded samples pick EOS below 2 % probability only rarely (the final step is replayed
    /// anyway); a miner that truncates systematically exceeds 10 % quickly.
    pub low_eos_probability: f64,
}

impl Default for SoftThresholds {
    fn default() -> Self {
        Self {
            reward_mismatch: 0.10,
            low_eos_probability: 0.10,
        }
    }
}

impl SoftThresholds {
    /// The largest tolerated share of `code`, a soft code (0 for any other: not tolerated).
    pub fn max_fraction(&self, code: RejectCode) -> f64 {
        match code {
            RejectCode::RewardMismatch => self.reward_mismatch,
            RejectCode::LowEosProbability => self.low_eos_probability,
            _ => 0.0,
        }
    }
}

/// The outcome for one miner in one window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum WindowVerdict {
    /// Credited; soft findings stayed under their thresholds.
    Passed { checked: u32, soft_findings: u32 },
    /// Zero for this window and the failure lookback.
    Failed { reason: RejectReason },
    /// Ignored without penalty (e.g. late).
    Discarded { reason: RejectReason },
}

impl WindowVerdict {
    pub fn is_failure(&self) -> bool {
        matches!(self, WindowVerdict::Failed { .. })
    }
}

/// Collects results; the first hard reason decides, soft ones are counted per code.
#[derive(Clone, Debug, Default)]
pub struct WindowVerdictBuilder {
    checked: u32,
    hard: Option<RejectReason>,
    discard: Option<RejectReason>,
    soft: BTreeMap<RejectCode, u32>,
}

impl WindowVerdictBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one rollout as checked (the denominator of soft fractions).
    pub fn rollout_checked(&mut self) {
        self.checked = self.checked.saturating_add(1);
    }

    /// Records a reason by its severity.
    pub fn reject(&mut self, reason: RejectReason) {
        match reason.severity() {
            Severity::Hard => {
                self.hard.get_or_insert(reason);
            }
            Severity::Soft => *self.soft.entry(reason.code()).or_default() += 1,
            Severity::Discard => {
                self.discard.get_or_insert(reason);
            }
        }
    }

    /// Records a check result; returns whether it passed.
    pub fn record<T>(&mut self, result: Result<T, RejectReason>) -> bool {
        match result {
            Ok(_) => true,
            Err(reason) => {
                self.reject(reason);
                false
            }
        }
    }

    /// Whether a hard reason was already recorded (the verifier may stop early).
    pub fn has_failed(&self) -> bool {
        self.hard.is_some()
    }

    /// Discard beats everything (a late submission is not judged); then the first hard reason; then
    /// soft counts above `floor(fraction · checked)`.
    pub fn finish(self, thresholds: &SoftThresholds) -> WindowVerdict {
        if let Some(reason) = self.discard {
            return WindowVerdict::Discarded { reason };
        }
        if let Some(reason) = self.hard {
            return WindowVerdict::Failed { reason };
        }
        for (&code, &count) in &self.soft {
            let max_fraction = thresholds.max_fraction(code);
            let allowed = (max_fraction * f64::from(self.checked)).floor();
            if f64::from(count) > allowed {
                return WindowVerdict::Failed {
                    reason: RejectReason::TooManySoftFindings {
                        finding: code.to_string(),
                        count,
                        checked: self.checked,
                        max_fraction,
                    },
                };
            }
        }
        WindowVerdict::Passed {
            checked: self.checked,
            soft_findings: self.soft.values().sum(),
        }
    }
}
