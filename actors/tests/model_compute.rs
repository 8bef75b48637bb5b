//! Model-backed miner and verifier on the tiny model and the `arith` environment: honest groups
//! pass across thread counts, batch compositions and sampling specs; every model-backed attack
//! is rejected with its protocol reason code.

mod model_support;

use std::process::Command;

use grail_actors::compute::model::{ModelVerifier, VerifierOptions};
use grail_actors::roles::verifier::VerifierCompute;
use messages::{PackedU32, RolloutGroup, SamplingSpec};
use model_support::*;
use policy::generate::{generate_group, GroupRequest, RandomSampler, SamplingParams};
use protocol::randomness::{challenged_positions, checked_rollouts};
use protocol::sketch::SKETCH_PRIME;

const MAX_NEW: u32 = 48;
const CHILD_DIR: &str = "GRAIL_MODEL_COMPUTE_CHILD_OUT";

fn world() -> World {
    World::new(11, sampling(MAX_NEW))
}

/// A spec with every filter on, so replay under masks and the penalty is exercised too.
fn filtered_spec() -> SamplingSpec {
    SamplingSpec {
        temperature: 0.7,
        top_k: 40,
        top_p: 0.9,
        repetition_penalty: 1.1,
        max_new_tokens: MAX_NEW,
    }
}

/// The groups of the honest run: (window, group index, spec) for `part` of the miners.
fn honest_jobs(part: u8) -> Vec<(u8, u64, u32, SamplingSpec)> {
    let mut jobs = Vec::new();
    for g in 0..6u32 {
        let spec = if g % 2 == 0 {
            sampling(MAX_NEW)
        } else {
            filtered_spec()
        };
        jobs.push((part, 2 + u64::from(g % 3), g, spec));
    }
    jobs
}

fn mine_honest(w: &World, part: u8) -> Vec<RolloutGroup> {
    let mut miner = w.miner();
    honest_jobs(part)
        .into_iter()
        .map(|(who, window, g, spec)| {
            w.mine_with(
                &mut miner,
                &identity(who),
                window,
                g,
                &w.with_sampling(spec),
            )
        })
        .collect()
}

#[test]
#[ignore = "child process of honest_groups_pass_across_threads_batches_and_specs"]
fn mine_honest_child() {
    let Ok(out) = std::env::var(CHILD_DIR) else {
        return;
    };
    let part: u8 = std::env::var("GRAIL_CHILD_PART").unwrap().parse().unwrap();
    let groups = mine_honest(&world(), part);
    std::fs::write(out, messages::encode(&groups)).unwrap();
}

fn mine_in_child(threads: &str, part: u8) -> Vec<RolloutGroup> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("groups.msgpack");
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "mine_honest_child",
            "--ignored",
            "--test-threads=1",
        ])
        .env("RAYON_NUM_THREADS", threads)
        .env("GRAIL_CHILD_PART", part.to_string())
        .env(CHILD_DIR, &out)
        .status()
        .unwrap();
    assert!(status.success(), "child miner failed");
    messages::decode(&std::fs::read(out).unwrap(), usize::MAX, "groups").unwrap()
}

fn challenged_count(w: &World, group: &RolloutGroup) -> usize {
    let miner = messages::Ss58Address::parse(&group.miner).unwrap().public;
    group
        .rollouts
        .iter()
        .enumerate()
        .map(|(r, rollout)| {
            challenged_positions(
                &w.close(group.window).randomness.0,
                &miner,
                group.group_index,
                r as u32,
                rollout.completion().len() as u32,
                32,
            )
            .len()
        })
        .sum()
}

#[test]
fn honest_groups_pass_across_threads_batches_and_specs() {
    let w = world();
    // Miners on 1 and 3 gemm threads (child processes) and on this process's default.
    let mut groups = mine_in_child("1", 1);
    groups.extend(mine_in_child("3", 2));
    groups.extend(mine_honest(&w, 3));
    groups.extend(mine_honest(&w, 4));
    let positions: usize = groups.iter().map(|g| challenged_count(&w, g)).sum();
    assert!(positions >= 10_000, "only {positions} challenged positions");
    // Verifier batches differ from the miner's (16 rows): 5 rows (different padded lengths
    // and batch-mates) and 1 row (no padding at all).
    for batch_rows in [16, 5, 1] {
        let mut verifier = w.verifier(VerifierOptions {
            batch_rows,
            ..deep_all()
        });
        for group in &groups {
            let spec = if group.group_index % 2 == 0 {
                sampling(MAX_NEW)
            } else {
                filtered_spec()
            };
            let job = w.job(group, &w.with_sampling(spec));
            let outcome = verifier.verify(&job).unwrap();
            if !(outcome.accepted && outcome.deep_checked) {
                let detail = w.verifier(deep_all()).judge(&job).unwrap();
                panic!(
                    "batch_rows {batch_rows}, group {} of {}: {outcome:?}: {detail:?}",
                    group.group_index, group.miner
                );
            }
            assert!(outcome.unique_rollouts >= 1);
        }
    }
    println!(
        "{} honest groups, {positions} challenged positions per verifier, 3 verifier batch layouts: 0 rejects",
        groups.len()
    );
}

fn rejected_with(w: &World, verifier: &mut ModelVerifier, group: &RolloutGroup, code: &str) {
    let outcome = w.verify(verifier, group);
    assert!(!outcome.accepted, "expected {code}, got accepted");
    assert_eq!(
        outcome.reason.map(|c| c.as_str()),
        Some(code),
        "{outcome:?}"
    );
}

#[test]
fn wrong_checkpoint_is_rejected() {
    let w = world();
    let foreign = w.foreign_checkpoint(99);
    // The miner used other weights and says so: not the checkpoint valid for the window.
    let group = w.mine_with(&mut w.miner(), &identity(1), 2, 0, &foreign);
    rejected_with(
        &w,
        &mut w.verifier(never_deep()),
        &group,
        "checkpoint_mismatch",
    );
    // The miner used other weights but names the right checkpoint: the forward pass differs.
    let mut lying = group.clone();
    lying.checkpoint = w.checkpoint.digest;
    rejected_with(&w, &mut w.verifier(deep_all()), &lying, "sketch_mismatch");
}

#[test]
fn tokens_of_another_model_honestly_sketched_fail_the_replay() {
    let w = world();
    let mut group = w.mine_with(
        &mut w.miner(),
        &identity(1),
        2,
        0,
        &w.foreign_checkpoint(99),
    );
    group.checkpoint = w.checkpoint.digest;
    w.reprove(&mut group, &w.checkpoint);
    rejected_with(&w, &mut w.verifier(deep_all()), &group, "sampling_mismatch");
}

#[test]
fn cherry_picked_samples_fail_the_replay() {
    let w = world();
    let mut group = w.mine(&identity(1), 2, 0);
    // Sample with the miner's own randomness instead of the seeded noise, proofs honest.
    let model = w
        .base
        .build_model(&w.checkpoint.weights.0, "cheater")
        .unwrap();
    let prompt = group.rollouts[0].tokens.0[..group.rollouts[0].prompt_len as usize].to_vec();
    let params = SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        repetition_penalty: 1.0,
    };
    let own = generate_group(
        &model,
        &GroupRequest {
            prompt: &prompt,
            group_size: 16,
            max_new_tokens: MAX_NEW as usize,
            eos_ids: &w.base.eos_ids,
        },
        &mut RandomSampler::new(params, 12345),
    )
    .unwrap();
    for (rollout, sequence) in group.rollouts.iter_mut().zip(own) {
        rollout.tokens = PackedU32(sequence.tokens);
    }
    w.reprove(&mut group, &w.checkpoint);
    rejected_with(&w, &mut w.verifier(deep_all()), &group, "sampling_mismatch");
}

#[test]
fn forged_sketches_are_rejected() {
    let w = world();
    let group = w.mine(&identity(1), 2, 0);
    let mut zero = group.clone();
    for r in &mut zero.rollouts {
        r.sketches.0.iter_mut().for_each(|s| *s = 0);
    }
    rejected_with(&w, &mut w.verifier(deep_all()), &zero, "sketch_mismatch");
    let mut random = group.clone();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for r in &mut random.rollouts {
        for s in r.sketches.0.iter_mut() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *s = ((state >> 33) as u32) % SKETCH_PRIME;
        }
    }
    rejected_with(&w, &mut w.verifier(deep_all()), &random, "sketch_mismatch");
}

/// With `rollouts_checked = 4` only the close-drawn 4 of 16 rollouts get the forward pass:
/// one forged rollout is caught exactly when it is drawn (the attacker's best case: it cannot
/// know the draw before the close), and with the default every rollout is checked.
#[test]
fn a_forged_rollout_is_caught_exactly_when_the_close_draws_it() {
    let w = world();
    let group = w.mine(&identity(1), 2, 0);
    let miner = messages::Ss58Address::parse(&group.miner).unwrap().public;
    let drawn = checked_rollouts(
        &w.close(group.window).randomness.0,
        &miner,
        group.group_index,
        16,
        4,
    );
    assert_eq!(drawn.len(), 4);
    // Fresh options per verifier: each has its own window registry (replays are refused).
    let subset = || VerifierOptions {
        rollouts_checked: 4,
        ..deep_all()
    };
    let (mut caught, mut missed) = (0, 0);
    for forged in 0..16u32 {
        let mut bad = group.clone();
        bad.rollouts[forged as usize]
            .sketches
            .0
            .iter_mut()
            .for_each(|s| *s = 0);
        if drawn.contains(&forged) {
            rejected_with(&w, &mut w.verifier(subset()), &bad, "sketch_mismatch");
            caught += 1;
        } else {
            let outcome = w.verify(&mut w.verifier(subset()), &bad);
            assert!(
                outcome.accepted,
                "rollout {forged} is not drawn: {outcome:?}"
            );
            missed += 1;
        }
        rejected_with(&w, &mut w.verifier(deep_all()), &bad, "sketch_mismatch");
    }
    assert_eq!((caught, missed), (4, 12));
    // The honest group passes the subset check too.
    assert!(w.verify(&mut w.verifier(subset()), &group).accepted);
}

#[test]
fn tampered_rewards_advantages_and_logprobs_are_rejected() {
    let w = world();
    let group = w.mine(&identity(1), 2, 0);
    // Inflating every reward keeps the advantages (shift invariant) but the environment disagrees
    // on all 16 rollouts: far above the 10 % soft allowance.
    let mut inflated = group.clone();
    inflated.rollouts.iter_mut().for_each(|r| r.reward += 0.5);
    rejected_with(
        &w,
        &mut w.verifier(never_deep()),
        &inflated,
        "too_many_soft_findings",
    );
    // One reward changed without touching the advantages: internally inconsistent.
    let mut one = group.clone();
    one.rollouts[3].reward += 0.25;
    rejected_with(
        &w,
        &mut w.verifier(never_deep()),
        &one,
        "advantage_mismatch",
    );
    let mut advantage = group.clone();
    advantage.rollouts[0].advantage += 0.5;
    rejected_with(
        &w,
        &mut w.verifier(never_deep()),
        &advantage,
        "advantage_mismatch",
    );
    // Log-probs shifted by one nat (still ≤ 0) only show up in the forward pass.
    let mut logprobs = group.clone();
    for lp in logprobs.rollouts[5].logprobs.0.iter_mut() {
        *lp -= 1.0;
    }
    assert!(w.verify(&mut w.verifier(never_deep()), &logprobs).accepted);
    rejected_with(
        &w,
        &mut w.verifier(deep_all()),
        &logprobs,
        "logprob_deviation",
    );
}

#[test]
fn malformed_groups_are_rejected_without_a_forward_pass() {
    let w = world();
    let group = w.mine(&identity(1), 2, 0);
    // Truncated completion without EOS (proof fields truncated consistently).
    let mut truncated = group.clone();
    let r = &mut truncated.rollouts[2];
    let cut = r.completion().len() / 2;
    r.tokens.0.truncate(r.prompt_len as usize + cut);
    r.sketches.0.truncate(cut);
    r.logprobs.0.truncate(cut);
    assert!(!w.base.eos_ids.contains(r.tokens.0.last().unwrap()));
    rejected_with(&w, &mut w.verifier(never_deep()), &truncated, "missing_eos");
    let mut oov = group.clone();
    let last = oov.rollouts[0].tokens.0.len() - 2;
    oov.rollouts[0].tokens.0[last] = w.base.config.vocab_size as u32 + 40;
    rejected_with(
        &w,
        &mut w.verifier(never_deep()),
        &oov,
        "token_out_of_vocab",
    );
    let mut oversized = group.clone();
    oversized.rollouts.push(group.rollouts[0].clone());
    rejected_with(
        &w,
        &mut w.verifier(never_deep()),
        &oversized,
        "group_size_mismatch",
    );
    let mut prompt = group.clone();
    prompt.rollouts[4].tokens.0[1] ^= 1;
    rejected_with(
        &w,
        &mut w.verifier(never_deep()),
        &prompt,
        "prompt_mismatch",
    );
}

#[test]
fn replays_and_late_submissions_are_rejected() {
    let w = world();
    let group = w.mine(&identity(1), 2, 0);
    let mut verifier = w.verifier(never_deep());
    // Republished unchanged in a later window: judged against window 2, arriving too late.
    let late = w.job_at(&group, &w.checkpoint, 2, 4 * WINDOW_MS + 100);
    let outcome = verifier.verify(&late).unwrap();
    assert_eq!(outcome.reason.map(|c| c.as_str()), Some("late_submission"));
    // Re-signed for window 4: the problem seed does not re-derive from open(4).
    let mut moved = group.clone();
    moved.window = 4;
    rejected_with(&w, &mut verifier, &moved, "problem_seed_mismatch");
    // A role that paired the group with another window's randomness.
    let wrong = w.job_at(&group, &w.checkpoint, 3, 3 * WINDOW_MS + 100);
    let outcome = w.verifier(never_deep()).verify(&wrong).unwrap();
    assert_eq!(outcome.reason.map(|c| c.as_str()), Some("wrong_window"));
    // Late by server time in its own window.
    let after_deadline = w.job_at(&group, &w.checkpoint, 2, w.open(2).deadline_ms + 1);
    let outcome = w.verifier(never_deep()).verify(&after_deadline).unwrap();
    assert_eq!(outcome.reason.map(|c| c.as_str()), Some("late_submission"));
}

#[test]
fn duplicates_are_rejected_or_counted_once_and_verdicts_are_idempotent() {
    let w = world();
    let me = identity(1);
    let first = w.mine(&me, 2, 0);
    let mut verifier = w.verifier(never_deep());
    let accepted = w.verify(&mut verifier, &first);
    assert!(accepted.accepted, "{accepted:?}");
    // Redelivery of the same envelope: the same verdict, not a duplicate.
    assert_eq!(w.verify(&mut verifier, &first), accepted);
    // Another group reusing the nonce.
    let mut second = w.mine(&me, 2, 1);
    second.nonce = first.nonce;
    rejected_with(&w, &mut verifier, &second, "duplicate_nonce");
    // The same group index submitted again with different content.
    let mut again = first.clone();
    again.rollouts.swap(0, 1);
    again.nonce ^= 1;
    fix_advantages(&mut again);
    rejected_with(&w, &mut verifier, &again, "duplicate_group_index");
    // Duplicate completions inside a group: counted once when not deep-checked, and caught by
    // the replay (rollout index is in the sampling key) when deep-checked.
    let mut dup = w.mine(&me, 3, 0);
    dup.rollouts[1] = dup.rollouts[0].clone();
    fix_advantages(&mut dup);
    let outcome = w.verify(&mut w.verifier(never_deep()), &dup);
    assert!(outcome.accepted, "{outcome:?}");
    let distinct = {
        let mut c: Vec<&[u32]> = dup.rollouts.iter().map(|r| r.completion()).collect();
        c.sort();
        c.dedup();
        c.len() as u32
    };
    assert_eq!(outcome.unique_rollouts, distinct);
    assert!(distinct < 16);
    rejected_with(&w, &mut w.verifier(deep_all()), &dup, "sampling_mismatch");
}

#[test]
fn a_copy_of_another_miners_group_is_rejected() {
    let w = world();
    let (victim, copier) = (identity(1), identity(2));
    let original = w.mine(&victim, 2, 0);
    let mut verifier = w.verifier(never_deep());
    assert!(w.verify(&mut verifier, &original).accepted);
    // The copier keeps its own (valid) seed and prompt but pastes the victim's completions
    // and proofs, with rewards and advantages recomputed for its own problem.
    let mut copy = w.mine(&copier, 2, 0);
    for (mine, theirs) in copy.rollouts.iter_mut().zip(&original.rollouts) {
        let prompt = mine.tokens.0[..mine.prompt_len as usize].to_vec();
        mine.tokens = PackedU32([prompt, theirs.completion().to_vec()].concat());
        mine.sketches = theirs.sketches.clone();
        mine.logprobs = theirs.logprobs.clone();
    }
    let problem = w.env.problem(copy.problem_seed);
    for r in &mut copy.rollouts {
        let reward = w
            .env
            .score(&problem, &w.base.completion_text(r.completion()).unwrap());
        r.reward = reward.total;
        r.success = reward.success;
    }
    fix_advantages(&mut copy);
    let job = w.job_at(&copy, &w.checkpoint, 2, 2 * WINDOW_MS + 200);
    let outcome = verifier.verify(&job).unwrap();
    assert_eq!(
        outcome.reason.map(|c| c.as_str()),
        Some("copied_completions"),
        "{outcome:?}"
    );
    // A deep check catches it too, without the registry (the replay keys include the miner).
    let outcome = w.verifier(deep_all()).verify(&job).unwrap();
    assert!(!outcome.accepted, "{outcome:?}");
}

#[test]
fn weights_swap_when_the_checkpoint_changes() {
    let w = world();
    let foreign = w.foreign_checkpoint(99);
    let me = identity(1);
    let mut miner = w.miner();
    let a = w.mine_with(&mut miner, &me, 2, 0, &w.checkpoint);
    let b = w.mine_with(&mut miner, &me, 2, 1, &foreign);
    assert_eq!(a.checkpoint, w.checkpoint.digest);
    assert_eq!(b.checkpoint, foreign.digest);
    assert_ne!(a.rollouts[0].sketches, b.rollouts[0].sketches);
    // Back to the first checkpoint: the same group as before (mining is deterministic).
    assert_eq!(w.mine_with(&mut miner, &me, 2, 0, &w.checkpoint), a);
    let mut verifier = w.verifier(deep_all());
    let job_b = w.job(&b, &foreign);
    assert!(verifier.verify(&job_b).unwrap().accepted);
    assert!(w.verify(&mut verifier, &a).accepted);
}
