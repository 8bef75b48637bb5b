//! Model-backed proof costs and calibration on the tiny model (`arith`), printed as tables:
//!
//! 1. generation vs verification time per group (cheap checks only, deep checks, amortised);
//! 2. proof bytes per completion token on the wire;
//! 3. per-position distributions of sketch distance, log-prob deviation (`exp|Δ| − 1`) and
//!    `max |Δ raw logit|`, plus sampling-replay and rollout pass rates, for honest drift (miner
//!    threads, verifier batch composition / padded length) and for wrong models (another seed,
//!    one GRPO step at two learning rates, own-randomness sampling).
//!
//! `cargo run --release -p grail-actors --example proof_costs [groups_per_case]`

#[path = "../tests/model_support/mod.rs"]
mod model_support;

use std::collections::HashMap;
use std::time::Instant;

use grail_actors::compute::model::deep::{group_positions, recompute, DeepContext, Recomputed};
use grail_actors::compute::model::{
    checkpoint_from_weights, sampling_params, ModelVerifier, SeededSampler, VerifierOptions,
};
use grail_actors::compute::ActiveCheckpoint;
use grail_actors::roles::verifier::VerifierCompute;
use messages::{PackedF32, PackedU32, RolloutGroup, Ss58Address};
use model_support::*;
use policy::generate::{generate_group, GroupRequest, RandomSampler, TokenSampler};
use policy::grpo::{GrpoConfig, GrpoSample, GrpoTrainer};
use policy::optim::AdamWConfig;
use protocol::randomness::sampling_key;
use protocol::sampling::{check_sampled_token, token_logprob, unmasked_logprob};
use protocol::sketch::{sketch, sketch_distance, SketchCoefficients};

const MAX_NEW: u32 = 64;
const CHILD: &str = "GRAIL_PROOF_COSTS_CHILD_OUT";

fn main() -> anyhow::Result<()> {
    let groups: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(6);
    let w = World::new(11, sampling(MAX_NEW));
    if let Ok(out) = std::env::var(CHILD) {
        let mined: Vec<RolloutGroup> = (0..groups).map(|g| w.mine(&identity(1), 2, g)).collect();
        std::fs::write(out, messages::encode(&mined))?;
        return Ok(());
    }
    costs(&w, groups, "tiny model", MAX_NEW)?;
    calibration(&w, groups)?;
    // Optional: costs on a real model (HF directory or .gguf), e.g. SmolLM2-135M.
    if let Ok(path) = std::env::var("GRAIL_PROOF_COSTS_MODEL") {
        let max_new = std::env::var("GRAIL_PROOF_COSTS_MAX_NEW")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(MAX_NEW);
        let real = World::from_model(std::path::Path::new(&path), sampling(max_new));
        let name = format!(
            "{path}, vocab {}, hidden {}",
            real.base.config.vocab_size, real.base.config.hidden_size
        );
        costs(&real, 2, &name, max_new)?;
    }
    Ok(())
}

fn secs(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

fn costs(w: &World, groups: u32, name: &str, max_new: u32) -> anyhow::Result<()> {
    let me = identity(1);
    let mut miner = w.miner();
    let _ = w.mine_with(&mut miner, &me, 1, 99, &w.checkpoint); // load weights once
    let mut mined = Vec::new();
    let mine_s = secs(|| {
        for g in 0..groups {
            mined.push(w.mine_with(&mut miner, &me, 2, g, &w.checkpoint));
        }
    }) / f64::from(groups);
    let time_verify = |opts: VerifierOptions| {
        let mut v = w.verifier(opts);
        let _ = v.verify(&w.job(&w.mine(&me, 1, 98), &w.checkpoint)); // load weights once
        secs(|| {
            for g in &mined {
                assert!(w.verify(&mut v, g).accepted);
            }
        }) / f64::from(groups)
    };
    let cheap_s = time_verify(never_deep());
    let deep_s = time_verify(deep_all());
    let tokens: usize = mined
        .iter()
        .flat_map(|g| &g.rollouts)
        .map(|r| r.completion().len())
        .sum();
    println!("## Costs per group ({name}, G = 16, max_new_tokens = {}, {groups} groups, {:.1} completion tokens/rollout)\n", max_new, tokens as f64 / (16.0 * f64::from(groups)));
    println!("| step | time per group | ÷ generation |");
    println!("|---|---|---|");
    println!(
        "| mine (generate + proof forward + sketches + rewards) | {:.2} ms | 1 |",
        mine_s * 1e3
    );
    println!(
        "| verify, cheap checks only | {:.3} ms | 1/{:.0} |",
        cheap_s * 1e3,
        mine_s / cheap_s
    );
    println!(
        "| verify, deep (forward + 32 positions × 16 rollouts) | {:.2} ms | 1/{:.1} |",
        deep_s * 1e3,
        mine_s / deep_s
    );
    // A close-drawn subset of each group's rollouts (PROTOCOL.md §2.7), and what a group
    // with one forged rollout then escapes with.
    for k in [8u32, 4] {
        let subset_s = time_verify(VerifierOptions {
            rollouts_checked: k,
            ..deep_all()
        });
        println!(
            "| verify, deep on {k} of 16 rollouts (one forged rollout escapes {:.0} %) | {:.2} ms | 1/{:.1} |",
            100.0 * protocol::randomness::subset_escape_probability(16, k, 1),
            subset_s * 1e3,
            mine_s / subset_s
        );
    }
    for rate in [0.05, 0.10, 0.25] {
        let amortised = cheap_s + rate * (deep_s - cheap_s);
        println!(
            "| verify amortised, deep rate {:.0} % | {:.3} ms | 1/{:.1} |",
            rate * 100.0,
            amortised * 1e3,
            mine_s / amortised
        );
    }
    let group = &mined[0];
    let full = messages::encode(group).len();
    let mut bare = group.clone();
    for r in &mut bare.rollouts {
        r.sketches = PackedU32(Vec::new());
        r.logprobs = PackedF32(Vec::new());
    }
    let proof = full - messages::encode(&bare).len();
    let completion: usize = group.rollouts.iter().map(|r| r.completion().len()).sum();
    let all: usize = group.rollouts.iter().map(|r| r.tokens.0.len()).sum();
    println!("\n## Wire size (msgpack group, unsigned)\n");
    println!("| quantity | bytes |");
    println!("|---|---|");
    println!(
        "| proof (sketch + log-prob) per completion token | {:.2} |",
        proof as f64 / completion as f64
    );
    println!(
        "| whole group per completion token (ids incl. prompt, rewards, names) | {:.2} |",
        full as f64 / completion as f64
    );
    println!(
        "| whole group per token (prompt + completion) | {:.2} |\n",
        full as f64 / all as f64
    );
    Ok(())
}

/// Per-position evidence of one case.
#[derive(Default)]
struct Evidence {
    sketch: Vec<f64>,
    logprob: Vec<f64>,
    logit: Vec<f64>,
    sampling_pass: usize,
    sketch_pass: usize,
    positions: usize,
    rollouts: usize,
    rollouts_pass: usize,
    eos_total: usize,
    eos_low: usize,
}

fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

/// Raw logits the miner saw, by (rollout, absolute position).
type DecodeLogits = HashMap<(usize, usize), Vec<f32>>;

/// Records the raw logits the miner saw at each (row, absolute position) while sampling.
struct Recording<'a> {
    inner: SeededSampler,
    logits: &'a mut DecodeLogits,
}

impl TokenSampler for Recording<'_> {
    fn choose(&mut self, row: usize, position: usize, context: &[u32], logits: &[f32]) -> u32 {
        self.logits.insert((row, position), logits.to_vec());
        self.inner.choose(row, position, context, logits)
    }
}

/// The miner's decode-time logits for an honest group (replays its generation exactly).
fn miner_logits(w: &World, group: &RolloutGroup) -> DecodeLogits {
    let model = w
        .base
        .build_model(&w.checkpoint.weights.0, "replay")
        .unwrap();
    let miner = Ss58Address::parse(&group.miner).unwrap().public;
    let prompt = &group.rollouts[0].tokens.0[..group.rollouts[0].prompt_len as usize];
    let mut logits = HashMap::new();
    let inner = SeededSampler::new(
        w.open(group.window).randomness.0,
        miner,
        group.group_index,
        prompt.len(),
        sampling_params(&w.checkpoint.sampling).unwrap(),
        16,
        0,
    );
    let request = GroupRequest {
        prompt,
        group_size: 16,
        max_new_tokens: MAX_NEW as usize,
        eos_ids: &w.base.eos_ids,
    };
    let replayed = generate_group(
        &model,
        &request,
        &mut Recording {
            inner,
            logits: &mut logits,
        },
    )
    .unwrap();
    assert_eq!(
        replayed[0].tokens, group.rollouts[0].tokens.0,
        "replay diverged"
    );
    logits
}

/// Judges `groups` (claims made by whoever mined them) against the verifier's model `verifier`.
fn evidence(
    w: &World,
    groups: &[RolloutGroup],
    verifier: &ActiveCheckpoint,
    batch_rows: usize,
    decode_logits: Option<&[DecodeLogits]>,
) -> Evidence {
    let model = w.base.build_model(&verifier.weights.0, "verifier").unwrap();
    let opts = VerifierOptions::default();
    let params = sampling_params(&verifier.sampling).unwrap();
    let mut ev = Evidence::default();
    for (gi, group) in groups.iter().enumerate() {
        let open = w.open(group.window).randomness.0;
        let close = w.close(group.window).randomness.0;
        let miner = Ss58Address::parse(&group.miner).unwrap().public;
        let coefficients = SketchCoefficients::derive(&open, w.base.config.hidden_size as u32);
        let ctx = DeepContext {
            open: &open,
            close: &close,
            miner_pubkey: &miner,
            params: &params,
            coefficients: &coefficients,
            eos_ids: &w.base.eos_ids,
            max_new_tokens: MAX_NEW,
            opts: &opts,
        };
        let positions = group_positions(&ctx, group);
        let rollouts: Vec<_> = group.rollouts.iter().collect();
        let rows: Vec<Recomputed> =
            recompute(&model, &rollouts, &positions, batch_rows, w.base.pad_id).unwrap();
        for (r, (rollout, rows)) in rollouts.iter().zip(&rows).enumerate() {
            let prompt_len = rollout.prompt_len as usize;
            let completion = rollout.completion();
            let mut failed = 0;
            for (i, &p) in rows.positions.iter().enumerate() {
                let hidden = &rows.hidden_rows
                    [i * coefficients.hidden_dim()..(i + 1) * coefficients.hidden_dim()];
                let d = sketch_distance(
                    rollout.sketches.0[p as usize],
                    sketch(hidden, &coefficients, &opts.sketch).unwrap(),
                );
                let pass = d <= opts.tolerance.at(rollout.prompt_len + p);
                ev.sketch_pass += usize::from(pass);
                failed += usize::from(!pass);
                ev.sketch.push(f64::from(d));
                let row = rows.logits_row(i);
                let lp = token_logprob(row, completion[p as usize], params.temperature);
                ev.logprob.push(
                    (f64::from(rollout.logprobs.0[p as usize]) - f64::from(lp))
                        .abs()
                        .exp_m1(),
                );
                let absolute = prompt_len + p as usize;
                let key = sampling_key(&open, &miner, group.group_index, r as u32, p);
                let ok = check_sampled_token(
                    row,
                    &rollout.tokens.0[..absolute],
                    &params,
                    &key,
                    completion[p as usize],
                    opts.logit_drift,
                )
                .is_ok();
                ev.sampling_pass += usize::from(ok);
                if let Some(decoded) = decode_logits.and_then(|d| d[gi].get(&(r, absolute))) {
                    let max = decoded
                        .iter()
                        .zip(row)
                        .map(|(a, b)| f64::from((a - b).abs()))
                        .fold(0.0, f64::max);
                    ev.logit.push(max);
                }
                ev.positions += 1;
            }
            ev.rollouts += 1;
            ev.rollouts_pass += usize::from(failed <= opts.tolerance.max_failed_positions as usize);
            if let Some(&last) = completion.last() {
                if w.base.eos_ids.contains(&last) {
                    let row = rows.logits_row(rows.positions.len() - 1);
                    let p = unmasked_logprob(
                        row,
                        &rollout.tokens.0[..rollout.tokens.0.len() - 1],
                        &params,
                        last,
                    )
                    .exp();
                    ev.eos_total += 1;
                    ev.eos_low += usize::from(p < 0.02);
                }
            }
        }
    }
    ev
}

fn print_row(name: &str, ev: &mut Evidence) {
    let q = |v: &mut Vec<f64>| {
        format!(
            "{:.3} / {:.3} / {:.3}",
            quantile(v, 0.5),
            quantile(v, 0.99),
            quantile(v, 1.0)
        )
    };
    let sk = {
        let v = &mut ev.sketch;
        format!(
            "{:.0} / {:.0} / {:.0}",
            quantile(v, 0.5),
            quantile(v, 0.99),
            quantile(v, 1.0)
        )
    };
    let logit = if ev.logit.is_empty() {
        "—".to_string()
    } else {
        let v = &mut ev.logit;
        format!("{:.1e} / {:.1e}", quantile(v, 0.99), quantile(v, 1.0))
    };
    let n = ev.positions as f64;
    println!(
        "| {name} | {} | {sk} | {:.4} | {} | {logit} | {:.4} | {}/{} |",
        ev.positions,
        ev.sketch_pass as f64 / n,
        q(&mut ev.logprob),
        ev.sampling_pass as f64 / n,
        ev.rollouts_pass,
        ev.rollouts,
    );
}

fn mine_all(w: &World, checkpoint: &ActiveCheckpoint, groups: u32) -> Vec<RolloutGroup> {
    let mut miner = w.miner();
    (0..groups)
        .map(|g| w.mine_with(&mut miner, &identity(1), 2, g, checkpoint))
        .collect()
}

/// The checkpoint after one GRPO optimizer step at `lr` on `groups` (a real update's size).
fn grpo_stepped(w: &World, groups: &[RolloutGroup], lr: f64) -> ActiveCheckpoint {
    let weights: HashMap<String, candle_core::Tensor> = w
        .checkpoint
        .weights
        .0
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let config = GrpoConfig {
        optimizer: AdamWConfig {
            lr,
            ..Default::default()
        },
        kl_coef: 0.0,
        ..Default::default()
    };
    let mut trainer = GrpoTrainer::from_weights(
        &w.base.config,
        &weights,
        config,
        w.base.pad_id,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let samples: Vec<GrpoSample> = groups
        .iter()
        .flat_map(|g| &g.rollouts)
        .map(|r| GrpoSample {
            tokens: r.tokens.0.clone(),
            prompt_len: r.prompt_len as usize,
            advantage: r.advantage,
            behaviour_logprobs: r.logprobs.0.clone(),
        })
        .collect();
    trainer.step(&samples).unwrap();
    let stepped = trainer.weights().into_iter().collect();
    checkpoint_from_weights(stepped, w.checkpoint.sampling.clone(), 1, 0).unwrap()
}

fn mine_in_child(threads: &str, groups: u32) -> Vec<RolloutGroup> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("groups.msgpack");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .arg(groups.to_string())
        .env("RAYON_NUM_THREADS", threads)
        .env(CHILD, &out)
        .status()
        .unwrap();
    assert!(status.success());
    messages::decode(&std::fs::read(out).unwrap(), usize::MAX, "groups").unwrap()
}

fn calibration(w: &World, groups: u32) -> anyhow::Result<()> {
    let honest = mine_all(w, &w.checkpoint, groups);
    let decode: Vec<_> = honest.iter().map(|g| miner_logits(w, g)).collect();
    let tol = VerifierOptions::default().tolerance;
    println!("## Calibration: claims vs the verifier's forward pass at challenged positions\n");
    println!(
        "Sketch tolerance base {} + {}·sqrt(pos), ≤ {} failed positions per rollout; drift D = {}.",
        tol.base,
        tol.growth,
        tol.max_failed_positions,
        VerifierOptions::default().logit_drift
    );
    println!("Distances and deviations as p50 / p99 / max; `max|Δlogit|` (miner decode vs verifier prefill) as p99 / max.\n");
    println!("| case | positions | sketch distance | sketch pass | exp|Δlogp|−1 | max|Δlogit| | replay pass | rollouts passing sketch |");
    println!("|---|---|---|---|---|---|---|---|");
    print_row(
        "honest, verifier batch 16 (miner's layout)",
        &mut evidence(w, &honest, &w.checkpoint, 16, Some(&decode)),
    );
    print_row(
        "honest, verifier batch 5 (other batch-mates, padded length)",
        &mut evidence(w, &honest, &w.checkpoint, 5, Some(&decode)),
    );
    print_row(
        "honest, verifier batch 1 (no padding)",
        &mut evidence(w, &honest, &w.checkpoint, 1, Some(&decode)),
    );
    print_row(
        "honest, miner on 1 gemm thread",
        &mut evidence(w, &mine_in_child("1", groups), &w.checkpoint, 16, None),
    );
    print_row(
        "honest, miner on 3 gemm threads",
        &mut evidence(w, &mine_in_child("3", groups), &w.checkpoint, 16, None),
    );
    for lr in [1e-6, 1e-4, 1e-3] {
        let stepped = grpo_stepped(w, &honest, lr);
        let mut claimed = mine_all(w, &stepped, groups);
        for g in &mut claimed {
            g.checkpoint = w.checkpoint.digest;
        }
        print_row(
            &format!("one GRPO step, lr {lr:.0e} (stale checkpoint)"),
            &mut evidence(w, &claimed, &w.checkpoint, 16, None),
        );
    }
    let other = w.foreign_checkpoint(99);
    print_row(
        "another-seed tiny model",
        &mut evidence(w, &mine_all(w, &other, groups), &w.checkpoint, 16, None),
    );
    let mut own = honest.clone();
    let model = w
        .base
        .build_model(&w.checkpoint.weights.0, "cheater")
        .unwrap();
    for (i, g) in own.iter_mut().enumerate() {
        let prompt = g.rollouts[0].tokens.0[..g.rollouts[0].prompt_len as usize].to_vec();
        let request = GroupRequest {
            prompt: &prompt,
            group_size: 16,
            max_new_tokens: MAX_NEW as usize,
            eos_ids: &w.base.eos_ids,
        };
        let params = policy::generate::SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
        };
        let seqs = generate_group(
            &model,
            &request,
            &mut RandomSampler::new(params, 7 + i as u64),
        )
        .unwrap();
        for (r, s) in g.rollouts.iter_mut().zip(seqs) {
            r.tokens = PackedU32(s.tokens);
        }
        w.reprove(g, &w.checkpoint);
    }
    print_row(
        "own randomness (cherry-picking), honest proofs",
        &mut evidence(w, &own, &w.checkpoint, 16, None),
    );
    let ev = evidence(w, &honest, &w.checkpoint, 16, None);
    println!(
        "\nHonest EOS draws with unmasked p(EOS) < 0.02: {} of {} EOS-terminated rollouts.",
        ev.eos_low, ev.eos_total
    );
    let mut v: ModelVerifier = w.verifier(deep_all());
    let rejected = honest
        .iter()
        .filter(|g| !w.verify(&mut v, g).accepted)
        .count();
    println!(
        "Honest groups rejected by the full verifier (deep checks on all): {rejected} of {}.",
        honest.len()
    );
    Ok(())
}
