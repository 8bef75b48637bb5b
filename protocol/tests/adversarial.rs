//! End-to-end adversarial scenarios over a synthetic deterministic "model": an honest miner's group
//! passes the full verifier pipeline; each attack is caught with the expected reason.

use grail_protocol::checks::{
    check_advantages, check_deadline, check_group_shape, check_logprob_deviation,
    check_problem_seed, check_reward, check_sampling_replay, check_sketches, check_termination,
    check_window, grpo_advantages, CheckError, Limits, RejectReason, RewardTolerance, RolloutClaim,
    SamplingReplay, WindowVerdict, WindowVerdictBuilder, MIN_EOS_PROBABILITY,
};
use grail_protocol::randomness::{
    challenged_positions, completion_digest, problem_seed, sampling_key,
};
use grail_protocol::rng::SplitMix64;
use grail_protocol::sampling::{choose, process_logits, token_logprob, SamplingParams};
use grail_protocol::sketch::{
    coefficients, sketch, SketchCoefficients, SketchParams, SketchTolerance, SKETCH_PRIME,
};
use grail_protocol::synthetic::{lm_logits, perturb, SyntheticModel};

const VOCAB: usize = 256;
const DIM: usize = 128;
const EOS: u32 = 0;
const GROUP: usize = 16;
const MAX_NEW: u32 = 48;
const K: u32 = 32;

/// A deterministic fake LM: hidden state and logits are pure functions of the prefix.
struct Model {
    seed: u64,
    shape: SyntheticModel,
}

impl Model {
    fn new(seed: u64) -> Self {
        Self {
            seed,
            shape: SyntheticModel::new(DIM, seed),
        }
    }

    /// (hidden row at the last position, logits predicting the next token).
    fn forward(&self, prefix: &[u32]) -> (Vec<f32>, Vec<f32>) {
        let digest = completion_digest(prefix);
        let prefix_seed = u64::from_le_bytes(digest[..8].try_into().unwrap());
        let mut rng = SplitMix64::new(prefix_seed ^ self.seed);
        let hidden = self.shape.hidden_state(&mut rng);
        let mut logits = lm_logits(&mut rng, VOCAB, 6, 8.0);
        logits[EOS as usize] += -4.0 + 0.25 * prefix.len() as f32; // EOS grows likelier with length
        (hidden, logits)
    }
}

struct Ctx {
    open: [u8; 32],
    close: [u8; 32],
    miner: [u8; 32],
    window: u64,
    group_index: u32,
    params: SamplingParams,
    coeffs: SketchCoefficients,
    limits: Limits,
}

fn ctx() -> Ctx {
    let open = [0x11; 32];
    Ctx {
        open,
        close: [0x22; 32],
        miner: [0x33; 32],
        window: 9,
        group_index: 4,
        params: SamplingParams {
            temperature: 0.9,
            ..Default::default()
        },
        coeffs: coefficients(&open, DIM as u32),
        limits: Limits {
            max_new_tokens: MAX_NEW,
            group_size: GROUP as u32,
            max_groups_per_window: 8,
            vocab_size: VOCAB as u32,
        },
    }
}

#[derive(Clone)]
struct Rollout {
    completion: Vec<u32>,
    sketches: Vec<u32>,
    logprobs: Vec<f32>,
    reward: f32,
    advantage: f32,
}

#[derive(Clone)]
struct Group {
    window: u64,
    seed: u64,
    prompt: Vec<u32>,
    rollouts: Vec<Rollout>,
}

fn prompt_for(seed: u64) -> Vec<u32> {
    let mut rng = SplitMix64::new(seed);
    (0..6)
        .map(|_| 1 + rng.below(VOCAB as u64 - 1) as u32)
        .collect()
}

fn reward(completion: &[u32]) -> f32 {
    let even = completion.iter().filter(|&&t| t % 2 == 0).count();
    if even * 2 >= completion.len() {
        1.0
    } else {
        0.0
    }
}

/// The honest miner: seeded sampling, sketches of every completion position, policy log-probs.
fn honest_group(c: &Ctx, model: &Model) -> Group {
    let seed = problem_seed(&c.open, &c.miner, c.group_index);
    let prompt = prompt_for(seed);
    let mut rollouts = Vec::new();
    for r in 0..GROUP as u32 {
        let mut sequence = prompt.clone();
        let (mut completion, mut sketches, mut logprobs) = (vec![], vec![], vec![]);
        let (_, mut logits) = model.forward(&sequence);
        for step in 0..MAX_NEW {
            let key = sampling_key(&c.open, &c.miner, c.group_index, r, step);
            let token = choose(&process_logits(&logits, &sequence, &c.params), &key).unwrap();
            logprobs.push(token_logprob(&logits, token, c.params.temperature));
            sequence.push(token);
            completion.push(token);
            let (hidden, next) = model.forward(&sequence);
            sketches.push(sketch(&hidden, &c.coeffs, &SketchParams::default()).unwrap());
            logits = next;
            if token == EOS {
                break;
            }
        }
        let reward = reward(&completion);
        rollouts.push(Rollout {
            completion,
            sketches,
            logprobs,
            reward,
            advantage: 0.0,
        });
    }
    let rewards: Vec<f32> = rollouts.iter().map(|r| r.reward).collect();
    for (rollout, a) in rollouts
        .iter_mut()
        .zip(grpo_advantages(&rewards).advantages)
    {
        rollout.advantage = a;
    }
    Group {
        window: c.window,
        seed,
        prompt,
        rollouts,
    }
}

/// Reference verifier pipeline for one deep-checked group (order of `docs/PROTOCOL.md` §5.3).
fn verify(c: &Ctx, model: &Model, group: &Group, server_time: u64, deadline: u64) -> WindowVerdict {
    let mut verdict = WindowVerdictBuilder::new();
    verdict.record(check_deadline(server_time, deadline));
    verdict.record(check_window(group.window, c.window));
    verdict.record(check_problem_seed(
        group.seed,
        &c.open,
        &c.miner,
        c.group_index,
    ));
    let claims: Vec<RolloutClaim> = group
        .rollouts
        .iter()
        .map(|r| RolloutClaim {
            completion: &r.completion,
            sketches: &r.sketches,
            logprobs: &r.logprobs,
            reward: r.reward,
            advantage: r.advantage,
        })
        .collect();
    if !verdict.record(check_group_shape(&claims, &c.limits)) {
        return verdict.finish(&Default::default());
    }
    let prompt_len = group.prompt.len() as u32;
    for (index, r) in group.rollouts.iter().enumerate() {
        let index = index as u32;
        verdict.rollout_checked();
        let len = r.completion.len() as u32;
        let positions = challenged_positions(&c.close, &c.miner, c.group_index, index, len, K);
        let sequence: Vec<u32> = group.prompt.iter().chain(&r.completion).copied().collect();
        let (mut hidden, mut logits, mut recomputed_lp) = (vec![], vec![], vec![]);
        for &p in &positions {
            let abs = (prompt_len + p) as usize;
            hidden.extend(model.forward(&sequence[..=abs]).0);
            let row = model.forward(&sequence[..abs]).1;
            recomputed_lp.push(token_logprob(&row, sequence[abs], c.params.temperature));
            logits.extend(row);
        }
        let proof = [
            check_sketches(
                index,
                prompt_len,
                &positions,
                &r.sketches,
                &hidden,
                &c.coeffs,
                &SketchParams::default(),
                &SketchTolerance::default(),
            )
            .map(|_| ()),
            check_logprob_deviation(index, &positions, &r.logprobs, &recomputed_lp, 0.10)
                .map(|_| ()),
            check_sampling_replay(
                &SamplingReplay {
                    open: &c.open,
                    miner_pubkey: &c.miner,
                    group_index: c.group_index,
                    rollout_index: index,
                    params: &c.params,
                    logit_drift: 1e-3,
                },
                &sequence,
                prompt_len,
                &positions,
                &logits,
            ),
        ];
        for result in proof {
            match result {
                Err(CheckError::VerifierInput(e)) => panic!("verifier bug: {e}"),
                other => {
                    verdict.record(other.map_err(|e| match e {
                        CheckError::Rejected(reason) => reason,
                        CheckError::VerifierInput(_) => unreachable!(),
                    }));
                }
            }
        }
        let last = sequence.len() - 1;
        let final_row = model.forward(&sequence[..last]).1;
        verdict.record(check_termination(
            index,
            &r.completion,
            &[EOS],
            MAX_NEW,
            &final_row,
            &sequence[..last],
            &c.params,
            MIN_EOS_PROBABILITY,
        ));
        verdict.record(check_reward(
            index,
            r.reward,
            reward(&r.completion),
            &RewardTolerance::default(),
        ));
    }
    // Advantages must be consistent with the CLAIMED rewards (hard); claimed rewards are compared to
    // recomputed ones above (soft), so a flaky environment cannot hard-fail an honest miner.
    let rewards: Vec<f32> = group.rollouts.iter().map(|r| r.reward).collect();
    let claimed: Vec<f32> = group.rollouts.iter().map(|r| r.advantage).collect();
    verdict.record(check_advantages(
        &claimed,
        &rewards,
        &RewardTolerance::default(),
    ));
    verdict.finish(&Default::default())
}

fn failed_with(verdict: &WindowVerdict) -> &str {
    match verdict {
        WindowVerdict::Failed { reason } | WindowVerdict::Discarded { reason } => {
            reason.code().as_str()
        }
        WindowVerdict::Passed { .. } => "passed",
    }
}

#[test]
fn honest_group_passes_and_has_signal() {
    let c = ctx();
    let model = Model::new(1);
    let group = honest_group(&c, &model);
    assert!(matches!(
        verify(&c, &model, &group, 10, 20),
        WindowVerdict::Passed { checked: 16, .. }
    ));
    let rewards: Vec<f32> = group.rollouts.iter().map(|r| r.reward).collect();
    assert!(grpo_advantages(&rewards).has_learning_signal, "{rewards:?}");
}

#[test]
fn wrong_model_is_rejected() {
    let c = ctx();
    let cheap = Model::new(2);
    let group = honest_group(&c, &cheap);
    let verdict = verify(&c, &Model::new(1), &group, 10, 20);
    assert!(
        matches!(
            failed_with(&verdict),
            "sketch_mismatch" | "logprob_deviation" | "sampling_mismatch"
        ),
        "{verdict:?}"
    );
}

#[test]
fn forged_sketches_are_rejected() {
    let c = ctx();
    let model = Model::new(1);
    let mut rng = SplitMix64::new(3);
    for forge in ["zero", "random", "shifted"] {
        let mut group = honest_group(&c, &model);
        for s in group.rollouts[5].sketches.iter_mut() {
            *s = match forge {
                "zero" => 0,
                "random" => rng.below(u64::from(SKETCH_PRIME)) as u32,
                _ => (*s + 5000) % SKETCH_PRIME,
            };
        }
        assert_eq!(
            failed_with(&verify(&c, &model, &group, 10, 20)),
            "sketch_mismatch",
            "{forge}"
        );
    }
}

#[test]
fn cherry_picked_completion_is_rejected() {
    // The miner keeps the first rollout's prefix but replaces its tail with the most likely tokens
    // (ignoring the seeded noise), then recomputes everything else honestly.
    let c = ctx();
    let model = Model::new(1);
    let mut group = honest_group(&c, &model);
    let r = &mut group.rollouts[0];
    let mut sequence: Vec<u32> = group
        .prompt
        .iter()
        .chain(&r.completion[..2])
        .copied()
        .collect();
    r.completion.truncate(2);
    r.sketches.truncate(2);
    r.logprobs.truncate(2);
    while r.completion.len() < MAX_NEW as usize {
        let logits = model.forward(&sequence).1;
        let processed = process_logits(&logits, &sequence, &c.params);
        let token = (0..VOCAB as u32)
            .filter(|&t| t != EOS)
            .max_by(|&a, &b| processed[a as usize].total_cmp(&processed[b as usize]))
            .unwrap();
        r.logprobs
            .push(token_logprob(&logits, token, c.params.temperature));
        sequence.push(token);
        r.completion.push(token);
        r.sketches.push(
            sketch(
                &model.forward(&sequence).0,
                &c.coeffs,
                &SketchParams::default(),
            )
            .unwrap(),
        );
    }
    r.reward = reward(&r.completion);
    let rewards: Vec<f32> = group.rollouts.iter().map(|r| r.reward).collect();
    for (rollout, a) in group
        .rollouts
        .iter_mut()
        .zip(grpo_advantages(&rewards).advantages)
    {
        rollout.advantage = a;
    }
    assert_eq!(
        failed_with(&verify(&c, &model, &group, 10, 20)),
        "sampling_mismatch"
    );
}

#[test]
fn tampered_fields_are_rejected() {
    let c = ctx();
    let model = Model::new(1);
    let honest = honest_group(&c, &model);
    type Tamper = Box<dyn Fn(&mut Group)>;
    let cases: Vec<(&str, Tamper)> = vec![
        (
            "advantage_mismatch",
            Box::new(|g: &mut Group| g.rollouts[3].advantage += 0.5),
        ),
        (
            "logprob_deviation",
            Box::new(|g: &mut Group| g.rollouts[2].logprobs.iter_mut().for_each(|l| *l *= 0.5)),
        ),
        (
            "token_out_of_vocab",
            Box::new(|g: &mut Group| g.rollouts[1].completion[0] = VOCAB as u32),
        ),
        (
            "group_size_mismatch",
            Box::new(|g: &mut Group| {
                let extra = g.rollouts[0].clone();
                g.rollouts.push(extra)
            }),
        ),
        ("wrong_window", Box::new(|g: &mut Group| g.window -= 1)),
        (
            "problem_seed_mismatch",
            Box::new(|g: &mut Group| g.seed ^= 1),
        ),
    ];
    for (code, tamper) in cases {
        let mut group = honest.clone();
        tamper(&mut group);
        assert_eq!(failed_with(&verify(&c, &model, &group, 10, 20)), code);
    }
}

#[test]
fn inflated_rewards_are_soft_and_gate_above_the_threshold() {
    let c = ctx();
    let model = Model::new(1);
    let inflate = |count: usize| {
        let mut group = honest_group(&c, &model);
        for r in group
            .rollouts
            .iter_mut()
            .filter(|r| r.reward == 0.0)
            .take(count)
        {
            r.reward = 1.0;
        }
        let rewards: Vec<f32> = group.rollouts.iter().map(|r| r.reward).collect();
        for (r, a) in group
            .rollouts
            .iter_mut()
            .zip(grpo_advantages(&rewards).advantages)
        {
            r.advantage = a;
        }
        verify(&c, &model, &group, 10, 20)
    };
    let zero_rewards = honest_group(&c, &model)
        .rollouts
        .iter()
        .filter(|r| r.reward == 0.0)
        .count();
    assert!(
        zero_rewards >= 2,
        "need two zero-reward rollouts, got {zero_rewards}"
    );
    // 1 of 16 checked (≤ floor(0.10 · 16) = 1): tolerated as a soft finding.
    assert!(matches!(
        inflate(1),
        WindowVerdict::Passed {
            soft_findings: 1,
            ..
        }
    ));
    assert!(matches!(
        inflate(2),
        WindowVerdict::Failed {
            reason: RejectReason::TooManySoftFindings {
                count: 2,
                checked: 16,
                ..
            }
        }
    ));
    // Advantages that do not follow the claimed rewards are a hard failure.
    let mut group = honest_group(&c, &model);
    group.rollouts[zero_rewards.min(3)].advantage += 0.5;
    assert_eq!(
        failed_with(&verify(&c, &model, &group, 10, 20)),
        "advantage_mismatch"
    );
}

#[test]
fn truncated_completion_without_eos_is_rejected() {
    let c = ctx();
    let model = Model::new(1);
    let mut group = honest_group(&c, &model);
    let r = group
        .rollouts
        .iter_mut()
        .find(|r| r.completion.len() > 3)
        .unwrap();
    let keep = r.completion.len() - 2;
    r.completion.truncate(keep);
    r.sketches.truncate(keep);
    r.logprobs.truncate(keep);
    assert_eq!(
        failed_with(&verify(&c, &model, &group, 10, 20)),
        "missing_eos"
    );
}

#[test]
fn late_submission_is_discarded_not_failed() {
    let c = ctx();
    let model = Model::new(1);
    let group = honest_group(&c, &model);
    let verdict = verify(&c, &model, &group, 21, 20);
    assert!(matches!(
        verdict,
        WindowVerdict::Discarded {
            reason: RejectReason::LateSubmission { .. }
        }
    ));
}

#[test]
fn replay_from_an_earlier_window_is_rejected() {
    // The same miner re-submits last window's group: window, seed and keys all belong to window 8.
    let earlier = Ctx {
        open: [0x10; 32],
        window: 8,
        ..ctx()
    };
    let model = Model::new(1);
    let old = honest_group(
        &Ctx {
            coeffs: coefficients(&earlier.open, DIM as u32),
            ..earlier
        },
        &model,
    );
    let c = ctx();
    assert_eq!(
        failed_with(&verify(&c, &model, &old, 10, 20)),
        "wrong_window"
    );
    let relabelled = Group {
        window: c.window,
        ..old
    };
    assert_eq!(
        failed_with(&verify(&c, &model, &relabelled, 10, 20)),
        "problem_seed_mismatch"
    );
}

#[test]
fn sketch_false_accept_rates_on_synthetic_states() {
    // Per rollout: 32 challenged positions, default tolerance. Honest rows with 1e-5 relative drift
    // always pass; all-zero, uniformly random and wrong-state sketches never do.
    let model = SyntheticModel::new(896, 5);
    let coeffs = coefficients(&[0x44; 32], 896);
    let params = SketchParams::default();
    let tolerance = SketchTolerance::default();
    let mut rng = SplitMix64::new(6);
    let positions: Vec<u32> = (0..K).collect();
    let trials = 150;
    let mut accepted = [0u32; 4]; // honest, zero, random, wrong state
    for _ in 0..trials {
        let rows: Vec<Vec<f32>> = (0..K).map(|_| model.hidden_state(&mut rng)).collect();
        let verifier_rows: Vec<f32> = rows
            .iter()
            .flat_map(|r| perturb(r, 1e-5, &mut rng))
            .collect();
        let honest: Vec<u32> = rows
            .iter()
            .map(|r| sketch(r, &coeffs, &params).unwrap())
            .collect();
        let zero = vec![0u32; K as usize];
        let random: Vec<u32> = (0..K)
            .map(|_| rng.below(u64::from(SKETCH_PRIME)) as u32)
            .collect();
        let wrong: Vec<u32> = (0..K)
            .map(|_| sketch(&model.hidden_state(&mut rng), &coeffs, &params).unwrap())
            .collect();
        for (slot, claimed) in accepted.iter_mut().zip([&honest, &zero, &random, &wrong]) {
            if check_sketches(
                0,
                100,
                &positions,
                claimed,
                &verifier_rows,
                &coeffs,
                &params,
                &tolerance,
            )
            .is_ok()
            {
                *slot += 1;
            }
        }
    }
    assert_eq!(accepted, [trials, 0, 0, 0]);
}
