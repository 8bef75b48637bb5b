//! Why a verifier rejected a group: one closed vocabulary from the protocol's checks through
//! the wire (`GroupVerdict.reason`, serialised as its snake_case code) to the scorer, with the
//! severity of each code decided here and nowhere else.

use serde::{Deserialize, Serialize};

/// How a rejection counts against a miner (PROTOCOL.md §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Fails the miner's window.
    Hard,
    /// Honest miners trip it occasionally: fails the window only above a threshold share.
    Soft,
    /// Says nothing bad about the miner: the group is not credited, nothing is failed.
    Discard,
}

macro_rules! reject_codes {
    ($($variant:ident => $code:literal: $severity:ident,)*) => {
        /// A verifier's reject code: the stable name of a protocol check (the fields that
        /// explain it stay in the verifier's log; `protocol::checks::RejectReason` has them).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum RejectCode {
            $($variant,)*
        }

        impl RejectCode {
            pub const ALL: &'static [RejectCode] = &[$(RejectCode::$variant,)*];

            /// The snake_case code (metrics labels, logs, the wire).
            pub fn as_str(&self) -> &'static str {
                match self {
                    $(RejectCode::$variant => $code,)*
                }
            }

            pub fn severity(&self) -> Severity {
                match self {
                    $(RejectCode::$variant => Severity::$severity,)*
                }
            }
        }
    };
}

reject_codes! {
    GroupSizeMismatch => "group_size_mismatch": Hard,
    TooManyGroups => "too_many_groups": Hard,
    EmptyCompletion => "empty_completion": Hard,
    CompletionTooLong => "completion_too_long": Hard,
    TokenOutOfVocab => "token_out_of_vocab": Hard,
    LengthMismatch => "length_mismatch": Hard,
    NonFiniteValue => "non_finite_value": Hard,
    SketchOutOfRange => "sketch_out_of_range": Hard,
    SketchMismatch => "sketch_mismatch": Hard,
    LogprobDeviation => "logprob_deviation": Hard,
    SamplingMismatch => "sampling_mismatch": Hard,
    MissingEos => "missing_eos": Hard,
    EosBeforeEnd => "eos_before_end": Hard,
    // An honest seeded sample can pick EOS at low probability.
    LowEosProbability => "low_eos_probability": Soft,
    // Environment flakiness (sandbox timeouts).
    RewardMismatch => "reward_mismatch": Soft,
    AdvantageMismatch => "advantage_mismatch": Hard,
    CopiedCompletions => "copied_completions": Hard,
    // Lateness proves nothing bad: ignored, not punished.
    LateSubmission => "late_submission": Discard,
    WrongWindow => "wrong_window": Hard,
    ProblemSeedMismatch => "problem_seed_mismatch": Hard,
    CheckpointMismatch => "checkpoint_mismatch": Hard,
    PromptMismatch => "prompt_mismatch": Hard,
    DuplicateNonce => "duplicate_nonce": Hard,
    DuplicateGroupIndex => "duplicate_group_index": Hard,
    TooManySoftFindings => "too_many_soft_findings": Hard,
    // The verifier could not load the checkpoint the window runs on: not the miner's fault.
    CheckpointUnavailable => "checkpoint_unavailable": Discard,
}

impl std::fmt::Display for RejectCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for RejectCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialise_as_their_snake_case_name_and_round_trip() {
        for code in RejectCode::ALL {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: RejectCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, *code);
            let packed = rmp_serde::to_vec_named(code).unwrap();
            assert_eq!(rmp_serde::from_slice::<RejectCode>(&packed).unwrap(), *code);
        }
        assert!(serde_json::from_str::<RejectCode>("\"group_size\"").is_err());
    }

    #[test]
    fn severity_is_decided_here() {
        assert_eq!(RejectCode::SketchMismatch.severity(), Severity::Hard);
        assert_eq!(RejectCode::RewardMismatch.severity(), Severity::Soft);
        assert_eq!(RejectCode::LateSubmission.severity(), Severity::Discard);
        assert_eq!(
            RejectCode::CheckpointUnavailable.severity(),
            Severity::Discard
        );
    }
}
