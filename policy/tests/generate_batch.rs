//! Batched decoding of several groups (prompts of different lengths, left-padded in one
//! cache) gives each group what decoding it alone gives.

use grail_policy::generate::{generate_group, GroupRequest, RandomSampler, SamplingParams};
use grail_policy::generate_batch::generate_groups;
use grail_policy::{load_model, write_tiny_model, Arch, LoadOptions};

fn params() -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        repetition_penalty: 1.0,
    }
}

#[test]
fn batched_groups_match_groups_decoded_alone() {
    for arch in [Arch::Qwen2, Arch::Llama] {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_model(dir.path(), arch, 3).unwrap();
        let m = load_model(dir.path(), &LoadOptions::default()).unwrap();
        let texts = [
            "<|im_start|>user\nadd 2 and 3<|im_end|>\n",
            "hi",
            "<|im_start|>user\nwhat is 17 times 23? think step by step<|im_end|>\n",
        ];
        let prompts: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| m.tokenizer.encode(t).unwrap())
            .collect();
        assert!(prompts[0].len() != prompts[1].len() && prompts[1].len() != prompts[2].len());
        // Different group sizes and budgets, and eos on: rows leave the batch at different steps.
        let requests: Vec<GroupRequest> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| GroupRequest {
                prompt: p,
                group_size: 3 + i,
                max_new_tokens: 20 + 6 * i,
                eos_ids: &m.eos_ids,
            })
            .collect();
        let alone: Vec<_> = requests
            .iter()
            .enumerate()
            .map(|(i, r)| {
                generate_group(&m.model, r, &mut RandomSampler::new(params(), i as u64)).unwrap()
            })
            .collect();
        let mut samplers: Vec<RandomSampler> = (0..requests.len())
            .map(|i| RandomSampler::new(params(), i as u64))
            .collect();
        let batched = generate_groups(&m.model, &requests, &mut samplers).unwrap();
        assert_eq!(batched.len(), alone.len());
        let mut max_diff = 0f32;
        for (g, (b, a)) in batched.iter().zip(&alone).enumerate() {
            assert_eq!(b.len(), requests[g].group_size);
            for (row, (rb, ra)) in b.iter().zip(a).enumerate() {
                assert_eq!(
                    rb.tokens, ra.tokens,
                    "{arch:?} group {g} row {row}: tokens differ"
                );
                assert_eq!(rb.ended_with_eos, ra.ended_with_eos);
                for (x, y) in rb.logprobs.iter().zip(&ra.logprobs) {
                    max_diff = max_diff.max((x - y).abs());
                }
            }
        }
        assert!(
            max_diff < 1e-4,
            "{arch:?}: batched vs alone log-prob max |Δ| = {max_diff}"
        );
        eprintln!("{arch:?}: batched vs alone log-prob max |Δ| = {max_diff:e}");
    }
}
