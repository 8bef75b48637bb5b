//! Group generation: KV-cache decoding agrees with the stateless forward, stops per row,
//! and reports raw log-probs.

use grail_policy::generate::{
    generate_group, Greedy, GroupRequest, RandomSampler, SamplingParams, TokenSampler,
};
use grail_policy::proof::{proof_forward, ProofInput, ProofOptions};
use grail_policy::tiny::TINY_EOS_ID;
use grail_policy::{load_model, write_tiny_model, Arch, LoadOptions, LoadedModel};

fn tiny(arch: Arch) -> (tempfile::TempDir, LoadedModel) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path(), arch, 3).unwrap();
    let m = load_model(dir.path(), &LoadOptions::default()).unwrap();
    (dir, m)
}

#[test]
fn cached_decoding_matches_the_stateless_forward() {
    for arch in [Arch::Qwen2, Arch::Llama] {
        let (_d, m) = tiny(arch);
        let prompt = m
            .tokenizer
            .encode("<|im_start|>user\nadd 2 and 3<|im_end|>\n")
            .unwrap();
        let req = GroupRequest {
            prompt: &prompt,
            group_size: 4,
            max_new_tokens: 24,
            eos_ids: &[],
        };
        let rows = generate_group(
            &m.model,
            &req,
            &mut RandomSampler::new(
                SamplingParams {
                    temperature: 1.0,
                    top_k: 0,
                    top_p: 1.0,
                    repetition_penalty: 1.0,
                },
                5,
            ),
        )
        .unwrap();
        let inputs: Vec<ProofInput> = rows
            .iter()
            .map(|r| ProofInput {
                tokens: &r.tokens,
                logit_positions: &[],
            })
            .collect();
        let proofs = proof_forward(&m.model, &inputs, &ProofOptions::default()).unwrap();
        let mut max_diff = 0f32;
        for (row, proof) in rows.iter().zip(&proofs) {
            assert_eq!(row.completion_len, 24);
            assert!(!row.ended_with_eos);
            assert_eq!(row.logprobs.len(), row.completion_len);
            for (k, lp) in row.logprobs.iter().enumerate() {
                let reference = proof.next_token_logprobs[row.prompt_len - 1 + k];
                max_diff = max_diff.max((lp - reference).abs());
            }
        }
        assert!(
            max_diff < 1e-4,
            "{arch:?}: cached vs stateless log-prob max |Δ| = {max_diff}"
        );
        // Sampling at temperature 1 with 4 rows should not give 4 identical completions.
        assert!(rows.iter().any(|r| r.tokens != rows[0].tokens));
    }
}

#[test]
fn greedy_rows_are_identical_and_follow_the_argmax() {
    let (_d, m) = tiny(Arch::Qwen2);
    let prompt = m.tokenizer.encode("abc").unwrap();
    let req = GroupRequest {
        prompt: &prompt,
        group_size: 3,
        max_new_tokens: 10,
        eos_ids: &[],
    };
    let rows = generate_group(&m.model, &req, &mut Greedy).unwrap();
    assert!(rows.iter().all(|r| r.tokens == rows[0].tokens));
    let proof = &proof_forward(
        &m.model,
        &[ProofInput {
            tokens: &rows[0].tokens,
            logit_positions: &[2, 5],
        }],
        &ProofOptions::default(),
    )
    .unwrap()[0];
    for (p, logits) in &proof.logits {
        let best = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(rows[0].tokens[p + 1] as usize, best, "position {p}");
    }
}

/// Emits eos for row r at completion step r + 1, otherwise token 'x'.
struct StopAtRow;
impl TokenSampler for StopAtRow {
    fn choose(&mut self, row: usize, position: usize, context: &[u32], _logits: &[f32]) -> u32 {
        assert_eq!(context.len(), position);
        if position - 2 == row {
            TINY_EOS_ID
        } else {
            b'x' as u32
        }
    }
}

#[test]
fn rows_stop_independently_at_eos_or_the_budget() {
    let (_d, m) = tiny(Arch::Llama);
    let prompt = [b'h' as u32, b'i' as u32];
    let req = GroupRequest {
        prompt: &prompt,
        group_size: 5,
        max_new_tokens: 3,
        eos_ids: &m.eos_ids,
    };
    let rows = generate_group(&m.model, &req, &mut StopAtRow).unwrap();
    for (r, row) in rows.iter().enumerate() {
        if r < 3 {
            assert_eq!(row.completion_len, r + 1);
            assert!(row.ended_with_eos);
            assert_eq!(*row.completion().last().unwrap(), TINY_EOS_ID);
        } else {
            assert_eq!(row.completion_len, 3);
            assert!(!row.ended_with_eos);
        }
        assert!(row.logprobs.iter().all(|l| l.is_finite() && *l <= 0.0));
    }
}

#[test]
fn seeded_sampling_is_reproducible_and_rejects_bad_prompts() {
    let (_d, m) = tiny(Arch::Qwen2);
    let prompt = m.tokenizer.encode("hello").unwrap();
    let req = GroupRequest {
        prompt: &prompt,
        group_size: 4,
        max_new_tokens: 12,
        eos_ids: &m.eos_ids,
    };
    let run = |seed| {
        generate_group(
            &m.model,
            &req,
            &mut RandomSampler::new(SamplingParams::default(), seed),
        )
        .unwrap()
    };
    assert_eq!(run(9), run(9));
    let bad = [1u32, 100_000];
    let err = generate_group(
        &m.model,
        &GroupRequest {
            prompt: &bad,
            ..req.clone()
        },
        &mut Greedy,
    )
    .unwrap_err();
    assert!(err.to_string().contains("100000"), "{err}");
    assert!(generate_group(&m.model, &GroupRequest { prompt: &[], ..req }, &mut Greedy).is_err());
}
