//! Fast, protocol-free GRPO loop on the tiny model and the `arith` env, to choose the default
//! cluster's model size and trainer schedule (docs/BENCHMARKS.md "Learning"). Each "window"
//! samples `GROUPS` groups of 16 with the current policy, scores them, and takes optimizer steps
//! as the cluster's trainer does; every `EVAL_EVERY` windows it prints held-out greedy pass@1.
//!
//! Knobs are environment variables (defaults = the default cluster.toml), e.g.
//! `HIDDEN=128 LAYERS=2 TIED=1 MODE=copy DIGITS=1 TOKENS=2 GROUPS=4 MINI=0 EPOCHS=1 LR=3e-3
//!  WINDOWS=100 cargo run --release -p grail-actors --example tiny_learning`

use std::time::Instant;

use candle_core::{DType, Device};
use envs::Environment;
use policy::generate::{generate_group, GroupRequest, RandomSampler, SamplingParams};
use policy::grpo::{GrpoConfig, GrpoSample, GrpoTrainer};
use policy::tiny::{tiny_config, TINY_EOS_ID, TINY_PAD_ID};
use policy::Arch;

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Byte-level ids of the ChatML prompt (the tiny tokenizer maps byte b to id b).
fn prompt_ids(problem: &envs::Problem) -> Vec<u32> {
    let mut ids = Vec::new();
    for m in &problem.messages {
        ids.push(257);
        ids.extend(format!("{}\n{}", m.role, m.content).bytes().map(u32::from));
        ids.push(TINY_EOS_ID);
        ids.push(u32::from(b'\n'));
    }
    ids.push(257);
    ids.extend("assistant\n".bytes().map(u32::from));
    ids
}

fn text(ids: &[u32]) -> String {
    ids.iter()
        .filter(|&&t| t < 256)
        .map(|&t| char::from(t as u8))
        .collect()
}

fn main() -> anyhow::Result<()> {
    let tied: u32 = knob("TIED", 0);
    let mut cfg = tiny_config(if tied == 1 { Arch::Llama } else { Arch::Qwen2 });
    cfg.hidden_size = knob("HIDDEN", 64);
    cfg.num_hidden_layers = knob("LAYERS", 2);
    cfg.num_attention_heads = knob("HEADS", 4);
    cfg.num_key_value_heads = knob("KV", 2);
    cfg.head_dim = cfg.hidden_size / cfg.num_attention_heads;
    cfg.intermediate_size = knob("FFN", 4 * cfg.hidden_size);
    let seed: u64 = knob("SEED", 7);
    let mode: String = knob("MODE", "add".to_string());
    let params = if mode == "copy" {
        serde_json::json!({"mode": "copy", "digits": knob("DIGITS", 1u64)})
    } else {
        serde_json::json!({"mode": "add", "max_operand": knob("MAXOP", 9u64)})
    };
    let env = envs::arith::ArithEnv::from_params(params.as_object().expect("object"))?;
    let (tokens, groups, windows): (usize, usize, u64) =
        (knob("TOKENS", 8), knob("GROUPS", 4), knob("WINDOWS", 100));
    let (mini, epochs, eval_every): (usize, u32, u64) =
        (knob("MINI", 0), knob("EPOCHS", 1), knob("EVAL_EVERY", 10));
    let mut grpo = GrpoConfig::default();
    grpo.optimizer.lr = knob("LR", 3e-3);
    grpo.optimizer.weight_decay = 0.0;
    grpo.kl_coef = 0.0;
    grpo.entropy_coef = knob("ENTROPY", 0.0);
    grpo.grad_clip = 1.0;
    let weights = policy::model::seeded_weights(&cfg, seed, &Device::Cpu)?;
    let mut trainer =
        GrpoTrainer::from_weights(&cfg, &weights, grpo, TINY_PAD_ID, DType::F32, &Device::Cpu)?;
    let sampling = SamplingParams {
        temperature: knob("TEMP", 1.0),
        top_k: 0,
        top_p: 1.0,
        repetition_penalty: 1.0,
    };
    let mut sampler = RandomSampler::new(sampling, seed);
    let eos = [TINY_EOS_ID];
    let started = Instant::now();
    let (mut rollouts, mut successes) = (0usize, 0usize);
    for window in 0..=windows {
        if window % eval_every == 0 {
            let mut right = 0;
            let mut answers = std::collections::BTreeMap::<String, usize>::new();
            for index in 0..64 {
                let problem = env.eval_problem(index);
                let req = GroupRequest {
                    prompt: &prompt_ids(&problem),
                    group_size: 1,
                    max_new_tokens: tokens,
                    eos_ids: &eos,
                };
                let row = generate_group(trainer.model(), &req, &mut policy::generate::Greedy)?;
                let answer = text(row[0].completion());
                right += usize::from(env.score(&problem, &answer).success);
                *answers.entry(answer).or_default() += 1;
            }
            println!(
                "window {window:4} t {:6.1}s greedy pass@1 {:.3} train success {}/{} distinct answers {} top {:?}",
                started.elapsed().as_secs_f64(),
                right as f64 / 64.0,
                successes,
                rollouts,
                answers.len(),
                answers.iter().max_by_key(|(_, n)| **n).map(|(a, _)| a.clone())
            );
            (rollouts, successes) = (0, 0);
        }
        let mut samples = Vec::new();
        for g in 0..groups {
            let problem = env.problem(window * 1000 + g as u64);
            let prompt = prompt_ids(&problem);
            let req = GroupRequest {
                prompt: &prompt,
                group_size: 16,
                max_new_tokens: tokens,
                eos_ids: &eos,
            };
            let rows = generate_group(trainer.model(), &req, &mut sampler)?;
            let rewards: Vec<f32> = rows
                .iter()
                .map(|r| env.score(&problem, &text(r.completion())))
                .inspect(|r| successes += usize::from(r.success))
                .map(|r| r.total)
                .collect();
            rollouts += rows.len();
            let adv = protocol::checks::grpo_advantages(&rewards);
            if !adv.has_learning_signal {
                continue;
            }
            for (row, a) in rows.iter().zip(adv.advantages) {
                samples.push(GrpoSample {
                    tokens: row.tokens.clone(),
                    prompt_len: row.prompt_len,
                    advantage: a,
                    behaviour_logprobs: row.logprobs.clone(),
                });
            }
        }
        if samples.is_empty() {
            continue;
        }
        let per_step = if mini == 0 { samples.len() } else { mini };
        for _ in 0..epochs {
            for batch in samples.chunks(per_step) {
                trainer.step(batch)?;
            }
        }
    }
    Ok(())
}
