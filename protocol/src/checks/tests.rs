use super::*;
use crate::randomness::{challenged_positions, problem_seed, sampling_key};
use crate::rng::SplitMix64;
use crate::sampling::{choose, process_logits, token_logprob, SamplingParams};
use crate::sketch::{coefficients, sketch, SketchParams, SketchTolerance};
use crate::synthetic::{lm_logits, SyntheticModel};

fn claim<'a>(completion: &'a [u32], sketches: &'a [u32], logprobs: &'a [f32]) -> RolloutClaim<'a> {
    RolloutClaim {
        completion,
        sketches,
        logprobs,
        reward: 1.0,
        advantage: 0.0,
    }
}

#[test]
fn reasons_have_stable_snake_case_tags_and_severities() {
    let reason = RejectReason::WrongWindow {
        signed: 4,
        current: 5,
    };
    let json = serde_json::to_string(&reason).unwrap();
    assert_eq!(json, r#"{"reason":"wrong_window","signed":4,"current":5}"#);
    assert_eq!(serde_json::from_str::<RejectReason>(&json).unwrap(), reason);
    assert_eq!(reason.code(), "wrong_window");
    assert!(reason.to_string().contains("replay"));
    assert_eq!(reason.severity(), Severity::Hard);
    let soft = RejectReason::RewardMismatch {
        rollout: 0,
        claimed: 1.0,
        recomputed: 0.0,
    };
    assert_eq!(soft.severity(), Severity::Soft);
    let late = RejectReason::LateSubmission {
        server_timestamp_ms: 2,
        deadline_ms: 1,
    };
    assert_eq!(late.severity(), Severity::Discard);
    // code() agrees with the serde tag for every variant we can build cheaply.
    for r in [
        soft,
        late,
        RejectReason::DuplicateNonce { nonce: 1 },
        RejectReason::EmptyCompletion { rollout: 0 },
        RejectReason::CheckpointMismatch {
            claimed: "aa".into(),
            expected: "bb".into(),
        },
        RejectReason::PromptMismatch {
            field: "prompt".into(),
            detail: "x".into(),
        },
    ] {
        let value: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(value["reason"], r.code().as_str());
    }
}

#[test]
fn group_shape_limits() {
    let limits = Limits {
        max_new_tokens: 4,
        group_size: 2,
        max_groups_per_window: 3,
        vocab_size: 10,
    };
    let ok = claim(&[1, 2], &[0, 0], &[-0.1, -0.2]);
    assert!(check_group_shape(&[ok, ok], &limits).is_ok());
    assert!(matches!(
        check_group_shape(&[ok, ok, ok], &limits),
        Err(RejectReason::GroupSizeMismatch {
            expected: 2,
            actual: 3
        })
    ));
    let cases: Vec<(RolloutClaim, &str)> = vec![
        (claim(&[], &[], &[]), "empty_completion"),
        (
            claim(&[1, 2, 3, 4, 5], &[0; 5], &[-1.0; 5]),
            "completion_too_long",
        ),
        (
            claim(&[1, 10], &[0, 0], &[-1.0, -1.0]),
            "token_out_of_vocab",
        ),
        (claim(&[1, 2], &[0], &[-1.0, -1.0]), "length_mismatch"),
        (
            claim(&[1, 2], &[0, u32::MAX], &[-1.0, -1.0]),
            "sketch_out_of_range",
        ),
        (
            claim(&[1, 2], &[0, 0], &[-1.0, f32::NAN]),
            "non_finite_value",
        ),
        (claim(&[1, 2], &[0, 0], &[-1.0, 0.5]), "non_finite_value"),
        (
            RolloutClaim {
                reward: f32::INFINITY,
                ..ok
            },
            "non_finite_value",
        ),
    ];
    for (bad, code) in cases {
        assert_eq!(
            check_group_shape(&[ok, bad], &limits).unwrap_err().code(),
            code
        );
    }
    assert!(check_group_count(3, &limits).is_ok());
    assert_eq!(
        check_group_count(4, &limits).unwrap_err().code(),
        "too_many_groups"
    );
}

#[test]
fn replay_duplicates_and_deadline() {
    let open = [1; 32];
    let miner = [2; 32];
    assert!(check_window(7, 7).is_ok());
    assert_eq!(check_window(6, 7).unwrap_err().code(), "wrong_window");
    let seed = problem_seed(&open, &miner, 3);
    assert!(check_problem_seed(seed, &open, &miner, 3).is_ok());
    // A group replayed from an earlier window carries that window's seed.
    assert_eq!(
        check_problem_seed(seed, &[0; 32], &miner, 3)
            .unwrap_err()
            .code(),
        "problem_seed_mismatch"
    );
    assert_eq!(
        check_problem_seed(seed, &open, &miner, 4)
            .unwrap_err()
            .code(),
        "problem_seed_mismatch"
    );
    assert!(check_unique_nonces(&[3, 1, 2]).is_ok());
    assert_eq!(
        check_unique_nonces(&[3, 1, 3]),
        Err(RejectReason::DuplicateNonce { nonce: 3 })
    );
    assert_eq!(
        check_unique_group_indices(&[0, 5, 5]),
        Err(RejectReason::DuplicateGroupIndex { group: 5 })
    );
    assert!(check_deadline(100, 100).is_ok());
    assert_eq!(
        check_deadline(101, 100).unwrap_err().code(),
        "late_submission"
    );
}

#[test]
fn termination_rules() {
    let params = SamplingParams::default();
    let eos = [7u32, 8];
    let likely_eos = {
        let mut row = vec![0.0f32; 10];
        row[7] = 5.0;
        row
    };
    let unlikely_eos = {
        let mut row = vec![0.0f32; 10];
        row[7] = -5.0;
        row
    };
    let run = |completion: &[u32], row: &[f32]| {
        check_termination(0, completion, &eos, 4, row, &[], &params, 0.02)
    };
    assert!(run(&[1, 2, 7], &likely_eos).is_ok());
    assert!(run(&[1, 2, 3, 4], &likely_eos).is_ok()); // exactly max_new_tokens
                                                      // The token-only part agrees and reports whether the completion ends with EOS.
    assert_eq!(check_termination_shape(0, &[1, 2, 7], &eos, 4), Ok(true));
    assert_eq!(
        check_termination_shape(0, &[1, 2, 3, 4], &eos, 4),
        Ok(false)
    );
    assert_eq!(
        check_termination_shape(0, &[1, 2, 3], &eos, 4)
            .unwrap_err()
            .code(),
        "missing_eos"
    );
    assert_eq!(
        run(&[1, 2, 3], &likely_eos).unwrap_err().code(),
        "missing_eos"
    );
    assert_eq!(
        run(&[1, 8, 3, 7], &likely_eos).unwrap_err().code(),
        "eos_before_end"
    );
    assert_eq!(
        run(&[1, 2, 7], &unlikely_eos).unwrap_err().code(),
        "low_eos_probability"
    );
    assert_eq!(
        run(&[], &likely_eos).unwrap_err().code(),
        "empty_completion"
    );
}

#[test]
fn sketch_check_counts_failures_and_reports_worst() {
    let model = SyntheticModel::new(64, 1);
    let coeffs = coefficients(&[3; 32], 64);
    let params = SketchParams::default();
    let mut rng = SplitMix64::new(4);
    let rows: Vec<Vec<f32>> = (0..4).map(|_| model.hidden_state(&mut rng)).collect();
    let honest: Vec<u32> = rows
        .iter()
        .map(|r| sketch(r, &coeffs, &params).unwrap())
        .collect();
    let flat: Vec<f32> = rows.concat();
    let positions = [0u32, 1, 2, 3];
    let tolerance = SketchTolerance {
        base: 10,
        growth: 0.0,
        max_failed_positions: 1,
    };
    let report = check_sketches(
        0, 5, &positions, &honest, &flat, &coeffs, &params, &tolerance,
    )
    .unwrap();
    assert_eq!((report.distances, report.failed), (vec![0; 4], 0));
    let mut one_off = honest.clone();
    one_off[2] = (one_off[2] + 1000) % crate::sketch::SKETCH_PRIME;
    assert_eq!(
        check_sketches(0, 5, &positions, &one_off, &flat, &coeffs, &params, &tolerance)
            .unwrap()
            .failed,
        1
    );
    one_off[0] = (one_off[0] + 500) % crate::sketch::SKETCH_PRIME;
    let err = check_sketches(
        9, 5, &positions, &one_off, &flat, &coeffs, &params, &tolerance,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        CheckError::Rejected(RejectReason::SketchMismatch {
            rollout: 9,
            failed: 2,
            worst_position: 2,
            worst_distance: 1000,
            ..
        })
    ));
    assert!(matches!(
        check_sketches(
            0,
            5,
            &positions,
            &honest,
            &flat[1..],
            &coeffs,
            &params,
            &tolerance
        ),
        Err(CheckError::VerifierInput(_))
    ));
    assert!(matches!(
        check_sketches(
            0,
            5,
            &[9],
            &honest,
            &flat[..64],
            &coeffs,
            &params,
            &tolerance
        ),
        Err(CheckError::VerifierInput(_))
    ));
}

#[test]
fn logprob_deviation_uses_the_median() {
    let positions = [0u32, 1, 2, 3];
    let claimed = [-1.0f32, -2.0, -3.0, -4.0];
    // Two wild positions out of four: median = mean of the middle two deviations.
    let recomputed = [-1.0f32, -2.0, -9.0, -9.0];
    let err = check_logprob_deviation(0, &positions, &claimed, &recomputed, 0.1).unwrap_err();
    assert!(matches!(
        err,
        CheckError::Rejected(RejectReason::LogprobDeviation { .. })
    ));
    let one_wild = [-1.0f32, -2.0, -3.05, -9.0];
    let median = check_logprob_deviation(0, &positions, &claimed, &one_wild, 0.1).unwrap();
    assert!((median - (0.05f64.exp_m1()) / 2.0).abs() < 1e-6, "{median}");
    assert!(check_logprob_deviation(0, &positions, &claimed, &[-1.0; 3], 0.1).is_err());
    assert_eq!(
        check_logprob_deviation(0, &[], &claimed, &[], 0.1).unwrap(),
        0.0
    );
}

#[test]
fn sampling_replay_end_to_end() {
    let open = [5u8; 32];
    let miner = [6u8; 32];
    let params = SamplingParams {
        temperature: 0.8,
        ..Default::default()
    };
    let vocab = 300;
    let mut rng = SplitMix64::new(8);
    let prompt: Vec<u32> = vec![1, 2, 3];
    let mut sequence = prompt.clone();
    let mut rows: Vec<Vec<f32>> = Vec::new();
    for step in 0..40u32 {
        let logits = lm_logits(&mut rng, vocab, 6, 8.0);
        let key = sampling_key(&open, &miner, 0, 1, step);
        let token = choose(&process_logits(&logits, &sequence, &params), &key).unwrap();
        rows.push(logits);
        sequence.push(token);
    }
    let positions = challenged_positions(&[7; 32], &miner, 0, 1, 40, 8);
    let flat: Vec<f32> = positions
        .iter()
        .flat_map(|&p| rows[p as usize].clone())
        .collect();
    let replay = SamplingReplay {
        open: &open,
        miner_pubkey: &miner,
        group_index: 0,
        rollout_index: 1,
        params: &params,
        logit_drift: 0.0,
    };
    assert!(check_sampling_replay(&replay, &sequence, 3, &positions, &flat).is_ok());
    // Wrong rollout index means wrong keys: rejected.
    let other = SamplingReplay {
        rollout_index: 2,
        ..replay
    };
    assert!(check_sampling_replay(&other, &sequence, 3, &positions, &flat).is_err());
    assert!(matches!(
        check_sampling_replay(&replay, &sequence, 0, &positions, &flat),
        Err(CheckError::VerifierInput(_))
    ));
    assert!(matches!(
        check_sampling_replay(&replay, &sequence, 3, &positions, &flat[1..]),
        Err(CheckError::VerifierInput(_))
    ));
    let _ = token_logprob(&rows[0], sequence[3], 0.8);
}

#[test]
fn verdict_folding() {
    let mut ok = WindowVerdictBuilder::new();
    for _ in 0..20 {
        ok.rollout_checked();
    }
    assert!(ok.record(Ok::<(), RejectReason>(())));
    ok.reject(RejectReason::RewardMismatch {
        rollout: 0,
        claimed: 1.0,
        recomputed: 0.0,
    });
    ok.reject(RejectReason::RewardMismatch {
        rollout: 1,
        claimed: 1.0,
        recomputed: 0.0,
    });
    assert_eq!(
        ok.clone().finish(&SoftThresholds::default()),
        WindowVerdict::Passed {
            checked: 20,
            soft_findings: 2
        }
    );
    ok.reject(RejectReason::RewardMismatch {
        rollout: 2,
        claimed: 1.0,
        recomputed: 0.0,
    });
    let too_many = ok.clone().finish(&SoftThresholds::default());
    assert!(too_many.is_failure());
    assert!(matches!(
        too_many,
        WindowVerdict::Failed {
            reason: RejectReason::TooManySoftFindings {
                count: 3,
                checked: 20,
                ..
            }
        }
    ));
    let mut hard = WindowVerdictBuilder::new();
    hard.rollout_checked();
    assert!(!hard.record(Err::<(), _>(RejectReason::DuplicateNonce { nonce: 1 })));
    hard.reject(RejectReason::WrongWindow {
        signed: 1,
        current: 2,
    });
    assert!(hard.has_failed());
    assert_eq!(
        hard.clone().finish(&SoftThresholds::default()),
        WindowVerdict::Failed {
            reason: RejectReason::DuplicateNonce { nonce: 1 }
        }
    );
    hard.reject(RejectReason::LateSubmission {
        server_timestamp_ms: 2,
        deadline_ms: 1,
    });
    assert!(matches!(
        hard.finish(&SoftThresholds::default()),
        WindowVerdict::Discarded { .. }
    ));
}
