//! Verifier checks. Every check is a pure function returning `Result<_, RejectReason>`; the window
//! verdict ([`WindowVerdictBuilder`]) folds them: one HARD reason fails the miner for the window (and
//! the scoring lookback), SOFT reasons fail it only above a per-reason fraction of checked rollouts,
//! DISCARD reasons drop the submission without penalty. Classification and thresholds with their
//! reasons: `docs/PROTOCOL.md` §5.

mod copy;
mod grpo;
mod ledger;
mod proof;
mod structure;
mod verdict;

pub use copy::{CopyDetector, CopyFinding, DEFAULT_COPY_THRESHOLD};
pub use grpo::{
    check_advantages, check_reward, grpo_advantages, unique_completions, GroupAdvantages,
    RewardTolerance, ZERO_VARIANCE_STD,
};
pub use ledger::{
    check_ordinal, claim, earlier_holder, judge_copies, late_copies, Admission, Claim, CopyRules,
    GroupClaims, LateCopy, LedgerReject, WindowLedger,
};
pub use proof::{
    check_logprob_deviation, check_sampling_replay, check_sketches, logprob_deviations,
    SamplingReplay, SketchReport,
};
pub use structure::{
    check_deadline, check_group_count, check_group_shape, check_problem_seed, check_termination,
    check_termination_shape, check_unique_group_indices, check_unique_nonces, check_window, Limits,
    RolloutClaim, MIN_EOS_PROBABILITY,
};
pub use verdict::{SoftThresholds, WindowVerdict, WindowVerdictBuilder};

use serde::{Deserialize, Serialize};

use crate::sampling::SamplingViolation;

/// A proof check either rejects the miner or finds the verifier's own inputs inconsistent (wrong
/// row count or width: a wiring bug on the verifier side that must never be blamed on the miner).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Rejected(#[from] RejectReason),
    #[error("verifier input error (not the miner's fault): {0}")]
    VerifierInput(String),
}

pub use messages::{RejectCode, Severity};

/// Every reason a verifier rejects (part of) a submission. Serialised as
/// `{"reason": "<snake_case name>", ...fields}`; the names are stable protocol vocabulary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum RejectReason {
    #[error("group has {actual} rollouts; the protocol requires exactly {expected}")]
    GroupSizeMismatch { expected: u32, actual: u32 },
    #[error("window submission has {actual} groups; the limit is {max}")]
    TooManyGroups { max: u32, actual: u32 },
    #[error("rollout {rollout} has an empty completion")]
    EmptyCompletion { rollout: u32 },
    #[error("rollout {rollout} completion has {length} tokens; the limit is max_new_tokens={max}")]
    CompletionTooLong { rollout: u32, length: u32, max: u32 },
    #[error("rollout {rollout} token {token} at completion position {position} is outside the vocabulary (size {vocab})")]
    TokenOutOfVocab {
        rollout: u32,
        position: u32,
        token: u32,
        vocab: u32,
    },
    #[error("rollout {rollout} field `{field}` has {actual} entries but the completion has {expected} tokens")]
    LengthMismatch {
        rollout: u32,
        field: String,
        expected: u32,
        actual: u32,
    },
    #[error("rollout {rollout} field `{field}` is not a finite number")]
    NonFiniteValue { rollout: u32, field: String },
    #[error("rollout {rollout} sketch {value} at completion position {position} is not below the sketch prime")]
    SketchOutOfRange {
        rollout: u32,
        position: u32,
        value: u32,
    },
    #[error("rollout {rollout}: {failed} challenged sketches outside tolerance (allowed {allowed}); worst at completion position {worst_position}: distance {worst_distance} > tolerance {tolerance}")]
    SketchMismatch {
        rollout: u32,
        failed: u32,
        allowed: u32,
        worst_position: u32,
        worst_distance: u32,
        tolerance: u32,
    },
    #[error("rollout {rollout}: median log-prob deviation {median:.4} exceeds epsilon {epsilon}")]
    LogprobDeviation {
        rollout: u32,
        median: f64,
        epsilon: f64,
    },
    #[error("rollout {rollout}: token at completion position {position} is not the replayed sample: {violation}")]
    SamplingMismatch {
        rollout: u32,
        position: u32,
        violation: SamplingViolation,
    },
    #[error("rollout {rollout}: completion of {length} tokens neither ends with EOS nor reaches max_new_tokens={max}")]
    MissingEos { rollout: u32, length: u32, max: u32 },
    #[error("rollout {rollout}: EOS at completion position {position} before the end")]
    EosBeforeEnd { rollout: u32, position: u32 },
    #[error("rollout {rollout}: final EOS had probability {probability:.5} < minimum {minimum}")]
    LowEosProbability {
        rollout: u32,
        probability: f64,
        minimum: f64,
    },
    #[error("rollout {rollout}: claimed reward {claimed} differs from recomputed {recomputed}")]
    RewardMismatch {
        rollout: u32,
        claimed: f32,
        recomputed: f32,
    },
    #[error("rollout {rollout}: claimed advantage {claimed} differs from recomputed {expected}")]
    AdvantageMismatch {
        rollout: u32,
        claimed: f32,
        expected: f32,
    },
    #[error("{shared} completions ({ratio:.3} of the smaller set) were first published by miner {original}; this miner published them later")]
    CopiedCompletions {
        original: String,
        shared: u32,
        ratio: f64,
    },
    #[error("submission arrived at server time {server_timestamp_ms} ms, after the deadline {deadline_ms} ms")]
    LateSubmission {
        server_timestamp_ms: u64,
        deadline_ms: u64,
    },
    #[error(
        "submission is signed for window {signed} but the current window is {current} (replay)"
    )]
    WrongWindow { signed: u64, current: u64 },
    #[error("group {group}: problem seed {claimed} does not re-derive (expected {expected}) (replay or seed grinding)")]
    ProblemSeedMismatch {
        group: u32,
        claimed: u64,
        expected: u64,
    },
    #[error(
        "group names checkpoint {claimed} but the checkpoint valid for its window is {expected}"
    )]
    CheckpointMismatch { claimed: String, expected: String },
    #[error("group {field} does not match the problem re-derived from its seed: {detail}")]
    PromptMismatch { field: String, detail: String },
    #[error("nonce {nonce} used twice by the same miner in one window")]
    DuplicateNonce { nonce: u64 },
    #[error("group index {group} submitted twice by the same miner in one window")]
    DuplicateGroupIndex { group: u32 },
    #[error("{count} of {checked} checked rollouts had soft finding `{finding}` (allowed fraction {max_fraction})")]
    TooManySoftFindings {
        finding: String,
        count: u32,
        checked: u32,
        max_fraction: f64,
    },
}

impl RejectReason {
    /// The wire code (the serde tag is its snake_case name).
    pub fn code(&self) -> RejectCode {
        use RejectReason::*;
        match self {
            GroupSizeMismatch { .. } => RejectCode::GroupSizeMismatch,
            TooManyGroups { .. } => RejectCode::TooManyGroups,
            EmptyCompletion { .. } => RejectCode::EmptyCompletion,
            CompletionTooLong { .. } => RejectCode::CompletionTooLong,
            TokenOutOfVocab { .. } => RejectCode::TokenOutOfVocab,
            LengthMismatch { .. } => RejectCode::LengthMismatch,
            NonFiniteValue { .. } => RejectCode::NonFiniteValue,
            SketchOutOfRange { .. } => RejectCode::SketchOutOfRange,
            SketchMismatch { .. } => RejectCode::SketchMismatch,
            LogprobDeviation { .. } => RejectCode::LogprobDeviation,
            SamplingMismatch { .. } => RejectCode::SamplingMismatch,
            MissingEos { .. } => RejectCode::MissingEos,
            EosBeforeEnd { .. } => RejectCode::EosBeforeEnd,
            LowEosProbability { .. } => RejectCode::LowEosProbability,
            RewardMismatch { .. } => RejectCode::RewardMismatch,
            AdvantageMismatch { .. } => RejectCode::AdvantageMismatch,
            CopiedCompletions { .. } => RejectCode::CopiedCompletions,
            LateSubmission { .. } => RejectCode::LateSubmission,
            WrongWindow { .. } => RejectCode::WrongWindow,
            ProblemSeedMismatch { .. } => RejectCode::ProblemSeedMismatch,
            CheckpointMismatch { .. } => RejectCode::CheckpointMismatch,
            PromptMismatch { .. } => RejectCode::PromptMismatch,
            DuplicateNonce { .. } => RejectCode::DuplicateNonce,
            DuplicateGroupIndex { .. } => RejectCode::DuplicateGroupIndex,
            TooManySoftFindings { .. } => RejectCode::TooManySoftFindings,
        }
    }

    /// Hard / soft / discard: the code's ([`RejectCode::severity`], PROTOCOL.md §5.2).
    pub fn severity(&self) -> Severity {
        self.code().severity()
    }
}

#[cfg(test)]
mod tests;
