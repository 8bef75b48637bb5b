//! The trainer's private state (f32 master weights + AdamW moments) survives a restart
//! bit-exactly, which restarting from the bf16-published checkpoint would not.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use grail_policy::checkpoint::{cast_floats, WeightSet};
use grail_policy::grpo::{GrpoConfig, GrpoSample, GrpoTrainer};
use grail_policy::model::{seeded_weights, SplitMix64};
use grail_policy::optim::AdamWConfig;
use grail_policy::tiny::{tiny_config, TINY_PAD_ID};
use grail_policy::train_state::{load_train_state, save_train_state, train_state_head};
use grail_policy::Arch;

fn config() -> GrpoConfig {
    GrpoConfig {
        kl_coef: 0.0,
        optimizer: AdamWConfig {
            lr: 1e-3,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn batch(seed: u64) -> Vec<GrpoSample> {
    let mut rng = SplitMix64::new(seed);
    (0..4)
        .map(|r| {
            let tokens: Vec<u32> = (0..12).map(|_| (rng.next_u64() % 259) as u32).collect();
            GrpoSample {
                tokens,
                prompt_len: 5,
                advantage: [1.0, -1.0, 0.5, -0.5][r],
                behaviour_logprobs: vec![-5.5; 7],
            }
        })
        .collect()
}

fn bits(trainer: &GrpoTrainer) -> Vec<(String, Vec<u32>)> {
    let mut out: Vec<(String, Vec<u32>)> = trainer
        .weights()
        .into_iter()
        .map(|(k, t)| {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            (k, v.iter().map(|x| x.to_bits()).collect())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_resumed_trainer_continues_bit_exactly_and_a_bf16_restart_does_not() {
    let cfg = tiny_config(Arch::Qwen2);
    let cpu = Device::Cpu;
    let weights = seeded_weights(&cfg, 3, &cpu).unwrap();
    let mut live =
        GrpoTrainer::from_weights(&cfg, &weights, config(), TINY_PAD_ID, DType::F32, &cpu).unwrap();
    for s in 0..2 {
        assert!(!live.step(&batch(s)).unwrap().skipped);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trainer-state.safetensors");
    assert_eq!(train_state_head(&path).unwrap(), None, "no state yet");
    let head = [7u8; 32];
    save_train_state(&live, &head, &path).unwrap();
    assert_eq!(train_state_head(&path).unwrap(), Some(head));

    // "Crash": a new trainer from the file, and one from the bf16-published weights.
    let (mut resumed, found) =
        load_train_state(&path, &cfg, config(), TINY_PAD_ID, DType::F32, &cpu).unwrap();
    assert_eq!(found, head);
    assert_eq!(resumed.steps(), 2);
    assert_eq!(
        bits(&resumed),
        bits(&live),
        "master weights restored exactly"
    );
    let published: WeightSet =
        cast_floats(&live.weights().into_iter().collect(), DType::BF16).unwrap();
    let published: HashMap<String, Tensor> = published.into_iter().collect();
    let mut from_bf16 =
        GrpoTrainer::from_weights(&cfg, &published, config(), TINY_PAD_ID, DType::F32, &cpu)
            .unwrap();

    for s in 2..4 {
        live.step(&batch(s)).unwrap();
        resumed.step(&batch(s)).unwrap();
        from_bf16.step(&batch(s)).unwrap();
    }
    assert_eq!(
        bits(&resumed),
        bits(&live),
        "moments restored: same next steps"
    );
    assert_ne!(
        bits(&from_bf16),
        bits(&live),
        "a bf16 restart loses the low bits"
    );

    // A damaged state names the file and the fix.
    std::fs::write(&path, b"not safetensors").unwrap();
    let e = load_train_state(&path, &cfg, config(), TINY_PAD_ID, DType::F32, &cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("trainer-state.safetensors") && e.contains("delete"),
        "{e}"
    );
}
