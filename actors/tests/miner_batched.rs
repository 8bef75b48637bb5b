//! Groups mined in one decode batch (`ModelMiner::mine_batched`) are the groups `mine` gives
//! one at a time, and the model-backed verifier deep-checks and accepts every one of them.

mod model_support;

use grail_actors::roles::miner::{MineJob, MinerCompute};
use grail_actors::roles::verifier::VerifierCompute;
use messages::{RolloutGroup, SamplingSpec};
use model_support::*;

const MAX_NEW: u32 = 40;

fn jobs(w: &World, who: u8, window: u64, groups: u32, spec: &SamplingSpec) -> Vec<MineJob> {
    let open = w.open(window);
    let checkpoint = w.with_sampling(spec.clone());
    (0..groups)
        .map(|group_index| MineJob {
            window,
            open_randomness: open.randomness.0,
            deadline_ms: open.deadline_ms,
            group_index,
            miner: identity(who).address().to_string(),
            miner_pubkey: identity(who).public(),
            checkpoint: Some(checkpoint.clone()),
        })
        .collect()
}

#[test]
fn batched_groups_equal_single_groups_and_pass_the_verifier() {
    let w = World::new(11, sampling(MAX_NEW));
    let filtered = SamplingSpec {
        temperature: 0.7,
        top_k: 40,
        top_p: 0.9,
        repetition_penalty: 1.1,
        max_new_tokens: MAX_NEW,
    };
    let mut checked = 0;
    for (window, spec) in [(2, sampling(MAX_NEW)), (3, filtered)] {
        let jobs = jobs(&w, 1, window, 6, &spec);
        let batched = w.miner().mine_batched(&jobs).unwrap();
        // The role's entry point (`[roles.miner] batch_groups`) decodes them in one batch too.
        let via_trait = MinerCompute::mine_batch(&mut w.miner(), &jobs).unwrap();
        assert_eq!(via_trait, batched, "mine_batch is mine_batched");
        assert_eq!(batched.len(), jobs.len());
        let mut single_miner = w.miner();
        let mut max_diff = 0f32;
        // The tiny world's arith prompts share one length; mixed prompt lengths in one batch
        // are covered by policy/tests/generate_batch.rs.
        for (job, group) in jobs.iter().zip(&batched) {
            let single: RolloutGroup = single_miner.mine(job).unwrap();
            assert_eq!(group.group_index, job.group_index);
            for (r, (b, s)) in group.rollouts.iter().zip(&single.rollouts).enumerate() {
                let at = format!("window {window} group {} rollout {r}", job.group_index);
                assert_eq!(b.tokens, s.tokens, "{at}: tokens");
                assert_eq!(b.sketches, s.sketches, "{at}: sketches");
                assert_eq!(b.reward, s.reward, "{at}: reward");
                for (x, y) in b.logprobs.0.iter().zip(&s.logprobs.0) {
                    max_diff = max_diff.max((x - y).abs());
                }
            }
            let spec_checkpoint = w.with_sampling(spec.clone());
            let outcome = w
                .verifier(deep_all())
                .verify(&w.job(group, &spec_checkpoint))
                .unwrap();
            assert!(
                outcome.accepted && outcome.deep_checked,
                "window {window} group {}: {outcome:?}",
                job.group_index
            );
            checked += 1;
        }
        assert!(
            max_diff < 1e-4,
            "batched vs single log-prob max |Δ| = {max_diff}"
        );
        println!("window {window}: batched vs single log-prob max |Δ| = {max_diff:e}");
    }
    assert_eq!(checked, 12);
}

#[test]
fn a_batch_across_checkpoints_is_refused() {
    let w = World::new(11, sampling(8));
    let mut jobs = jobs(&w, 1, 2, 2, &sampling(8));
    jobs[1].checkpoint = Some(w.foreign_checkpoint(99));
    let err = w.miner().mine_batched(&jobs).unwrap_err();
    assert!(err.to_string().contains("spans checkpoints"), "{err}");
}
