//! GRPO trainer: gradients are correct (finite differences in f64) and reach every tensor, the
//! step is skipped on non-finite input, and training raises a verifiable reward.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use grail_policy::generate::{generate_group, GroupRequest, RandomSampler, SamplingParams};
use grail_policy::grpo::{micro_batch_loss, GrpoConfig, GrpoSample, GrpoTrainer};
use grail_policy::model::{init_seeded, SplitMix64};
use grail_policy::optim::{sorted_vars, AdamWConfig};
use grail_policy::tiny::{tiny_config, TINY_EOS_ID, TINY_PAD_ID};
use grail_policy::{Arch, Model};

fn seeded_model(arch: Arch, dtype: DType, seed: u64) -> (Model, VarMap) {
    let varmap = VarMap::new();
    let model = Model::new(
        &tiny_config(arch),
        VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu),
    )
    .unwrap();
    init_seeded(&varmap, seed).unwrap();
    (model, varmap)
}

/// Samples whose behaviour log-probs are the current ones plus noise, so importance ratios
/// sit strictly inside the clip range (away from the loss's kinks).
fn samples(model: &Model) -> Vec<GrpoSample> {
    let mut rng = SplitMix64::new(99);
    let mut out = Vec::new();
    for (r, (p, c)) in [(5usize, 7usize), (9, 3), (5, 12)].into_iter().enumerate() {
        let tokens: Vec<u32> = (0..p + c).map(|_| (rng.next_u64() % 259) as u32).collect();
        let ids = Tensor::from_slice(&tokens, (1, p + c), &Device::Cpu).unwrap();
        let hidden = model.forward_hidden(&ids).unwrap();
        let lp = model
            .next_token_logprobs(&hidden, &ids)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let behaviour = lp[p - 1..]
            .iter()
            .map(|l| l + 0.1 * (rng.next_unit_f32() - 0.5))
            .collect();
        out.push(GrpoSample {
            tokens,
            prompt_len: p,
            advantage: [1.0, -0.5, -0.7][r],
            behaviour_logprobs: behaviour,
        });
    }
    out
}

fn loss_value(model: &Model, reference: &Model, batch: &[&GrpoSample], cfg: &GrpoConfig) -> f64 {
    micro_batch_loss(model, Some(reference), batch, cfg, TINY_PAD_ID)
        .unwrap()
        .0
        .to_scalar::<f64>()
        .unwrap()
}

#[test]
fn gradients_match_finite_differences_in_f64_and_reach_every_tensor() {
    for arch in [Arch::Qwen2, Arch::Llama] {
        let (model, varmap) = seeded_model(arch, DType::F64, 1);
        let (reference, _ref_vars) = seeded_model(arch, DType::F64, 2);
        let data = samples(&model);
        let batch: Vec<&GrpoSample> = data.iter().collect();
        let cfg = GrpoConfig {
            kl_coef: 0.5,
            entropy_coef: 0.01,
            ..Default::default()
        };
        let (loss, stats) =
            micro_batch_loss(&model, Some(&reference), &batch, &cfg, TINY_PAD_ID).unwrap();
        assert_eq!(
            stats.clipped_tokens, 0.0,
            "setup must stay inside the clip range"
        );
        let grads = loss.backward().unwrap();
        let vars = sorted_vars(&varmap).unwrap();
        assert_eq!(vars.len(), tiny_config(arch).expected_tensors().len());
        let mut rng = SplitMix64::new(5);
        let mut worst = 0f64;
        for (name, var) in &vars {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{arch:?}: no gradient for {name}"));
            let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            assert!(
                g.iter().any(|&x| x != 0.0),
                "{arch:?}: zero gradient for {name}"
            );
            let original = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            for _ in 0..3 {
                let i = (rng.next_u64() % original.len() as u64) as usize;
                let h = 1e-5;
                let eval = |delta: f64| {
                    let mut p = original.clone();
                    p[i] += delta;
                    var.set(&Tensor::from_vec(p, var.shape(), &Device::Cpu).unwrap())
                        .unwrap();
                    loss_value(&model, &reference, &batch, &cfg)
                };
                let numeric = (eval(h) - eval(-h)) / (2.0 * h);
                var.set(&Tensor::from_vec(original.clone(), var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                let err = (numeric - g[i]).abs() / (numeric.abs().max(g[i].abs()).max(1e-4));
                worst = worst.max(err);
                assert!(
                    err < 1e-4,
                    "{arch:?} {name}[{i}]: analytic {} vs numeric {numeric}",
                    g[i]
                );
            }
        }
        println!("{arch:?}: worst relative gradient error {worst:.2e}");
    }
}

#[test]
fn non_finite_steps_are_skipped_and_weights_untouched() {
    let (model, varmap) = seeded_model(Arch::Qwen2, DType::F32, 3);
    let mut data = samples(&model);
    let mut trainer = GrpoTrainer::new(
        model,
        varmap,
        None,
        GrpoConfig {
            kl_coef: 0.0,
            ..Default::default()
        },
        TINY_PAD_ID,
    )
    .unwrap();
    let snapshot = |t: &GrpoTrainer| -> Vec<(String, Vec<f32>)> {
        let mut w: Vec<_> = t
            .weights()
            .into_iter()
            .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1().unwrap()))
            .collect();
        w.sort_by(|a, b| a.0.cmp(&b.0));
        w
    };
    let before = snapshot(&trainer);
    data.iter_mut()
        .for_each(|s| s.behaviour_logprobs[0] = f32::NAN);
    let stats = trainer.step(&data).unwrap();
    assert!(
        stats.skipped && stats.nonfinite_micro_batches == 1,
        "{stats:?}"
    );
    assert_eq!(trainer.steps(), 0);
    assert!(
        before == snapshot(&trainer),
        "a skipped step changed the weights"
    );
    // A finite batch does update.
    let (m2, _) = seeded_model(Arch::Qwen2, DType::F32, 3);
    let stats = trainer.step(&samples(&m2)).unwrap();
    assert!(!stats.skipped && stats.grad_norm > 0.0, "{stats:?}");
    assert_eq!(trainer.steps(), 1);
}

fn reward(completion: &[u32], target: u32) -> f32 {
    completion.iter().filter(|&&t| t == target).count() as f32 / completion.len().max(1) as f32
}

#[test]
fn grpo_raises_a_verifiable_reward() {
    let (model, varmap) = seeded_model(Arch::Qwen2, DType::F32, 4);
    let cfg = GrpoConfig {
        optimizer: AdamWConfig {
            lr: 3e-3,
            weight_decay: 0.0,
            ..Default::default()
        },
        grad_clip: 1.0,
        kl_coef: 0.0,
        entropy_coef: 0.0,
        ..Default::default()
    };
    let mut trainer = GrpoTrainer::new(model, varmap, None, cfg, TINY_PAD_ID).unwrap();
    let target = b'a' as u32;
    let prompt: Vec<u32> = "<say a>".bytes().map(u32::from).collect();
    let sampling = SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        repetition_penalty: 1.0,
    };
    let req = GroupRequest {
        prompt: &prompt,
        group_size: 16,
        max_new_tokens: 12,
        eos_ids: &[TINY_EOS_ID],
    };
    let mut history = Vec::new();
    for step in 0..40u64 {
        let rows = generate_group(
            trainer.model(),
            &req,
            &mut RandomSampler::new(sampling.clone(), step),
        )
        .unwrap();
        let rewards: Vec<f32> = rows
            .iter()
            .map(|r| reward(r.completion(), target))
            .collect();
        let mean = rewards.iter().sum::<f32>() / rewards.len() as f32;
        history.push(mean);
        let std =
            (rewards.iter().map(|r| (r - mean).powi(2)).sum::<f32>() / rewards.len() as f32).sqrt();
        if std == 0.0 {
            continue;
        }
        let batch: Vec<GrpoSample> = rows
            .iter()
            .zip(&rewards)
            .map(|(r, &rw)| GrpoSample {
                tokens: r.tokens.clone(),
                prompt_len: r.prompt_len,
                advantage: (rw - mean) / std.max(1e-8),
                behaviour_logprobs: r.logprobs.clone(),
            })
            .collect();
        let stats = trainer.step(&batch).unwrap();
        assert!(!stats.skipped);
    }
    let first = history[..5].iter().sum::<f32>() / 5.0;
    let last = history[history.len() - 5..].iter().sum::<f32>() / 5.0;
    println!("mean reward: first 5 steps {first:.3}, last 5 steps {last:.3}");
    assert!(
        last > first + 0.2 && last > 0.3,
        "reward did not rise: {history:?}"
    );
}
