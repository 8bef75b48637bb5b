//! Full vs delta checkpoint sizes and codec speed on a ~10M-parameter weight set.
//!
//! Run: `cargo run --release -p grail-policy --example checkpoint_bench`
//!
//! f32 cases (a)-(c) apply a small AdamW-like step (`w -= lr * (±(0.5..1.5) + wd·w)`, lr 1e-6)
//! to a chosen fraction of the weights; in f32 every touched weight changes bits. bf16 cases
//! (a)-(c) move the chosen fraction by the smallest possible step (one bf16 ulp). In the
//! realistic bf16 cases (d) every weight gets the AdamW step, but most updates are below half
//! an ulp of the weight and round away, so only a few percent of the values change.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use grail_policy::checkpoint::{digest, to_safetensors_bytes, WeightSet};
use grail_policy::delta::{apply_delta, encode_delta_with, DeltaOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const HIDDEN: usize = 512;
const FFN: usize = 1024;
const VOCAB: usize = 4096;
const LAYERS: usize = 3;

fn normal(rng: &mut StdRng) -> f32 {
    // Box-Muller; rand 0.9 has no normal distribution without rand_distr.
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

fn shapes() -> Vec<(String, Vec<usize>)> {
    let mut out = vec![
        ("model.embed_tokens.weight".to_string(), vec![VOCAB, HIDDEN]),
        ("model.norm.weight".to_string(), vec![HIDDEN]),
    ];
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        for proj in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            out.push((format!("{p}.self_attn.{proj}.weight"), vec![HIDDEN, HIDDEN]));
        }
        out.push((format!("{p}.mlp.gate_proj.weight"), vec![FFN, HIDDEN]));
        out.push((format!("{p}.mlp.up_proj.weight"), vec![FFN, HIDDEN]));
        out.push((format!("{p}.mlp.down_proj.weight"), vec![HIDDEN, FFN]));
        out.push((format!("{p}.input_layernorm.weight"), vec![HIDDEN]));
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![HIDDEN]));
    }
    out
}

/// Master weights in f32: N(0, 0.02) matrices, norms near 1.
fn initial_weights(rng: &mut StdRng) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    shapes()
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let values = if shape.len() == 1 {
                (0..n).map(|_| 1.0 + 0.05 * normal(rng)).collect()
            } else {
                (0..n).map(|_| 0.02 * normal(rng)).collect()
            };
            (name, shape, values)
        })
        .collect()
}

/// One AdamW-like step on a random `fraction` of the values (first step: m/sqrt(v) ≈ ±1).
fn adamw_step(rng: &mut StdRng, values: &[f32], fraction: f64, lr: f32) -> Vec<f32> {
    values
        .iter()
        .map(|&w| {
            if rng.random_bool(fraction) {
                let g = normal(rng);
                let adam = g / (g.abs() + 1e-8) * (0.5 + rng.random::<f32>());
                w - lr * (adam + 0.1 * w)
            } else {
                w
            }
        })
        .collect()
}

/// Moves a `fraction` of the bf16 values up or down by one ulp (the smallest real change).
fn nudge_by_one_ulp(rng: &mut StdRng, set: &WeightSet, fraction: f64) -> WeightSet {
    set.iter()
        .map(|(name, t)| {
            let values: Vec<half::bf16> = t.flatten_all().unwrap().to_vec1().unwrap();
            let nudged: Vec<half::bf16> = values
                .into_iter()
                .map(|v| {
                    if !rng.random_bool(fraction) {
                        return v;
                    }
                    let bits = v.to_bits();
                    let magnitude = bits & 0x7fff;
                    let step_up = magnitude == 0 || rng.random_bool(0.5);
                    half::bf16::from_bits(if step_up { bits + 1 } else { bits - 1 })
                })
                .collect();
            (
                name.clone(),
                Tensor::from_vec(nudged, t.dims(), &Device::Cpu).unwrap(),
            )
        })
        .collect()
}

fn to_set(weights: &[(String, Vec<usize>, Vec<f32>)], dtype: DType) -> WeightSet {
    weights
        .iter()
        .map(|(name, shape, values)| {
            let t = Tensor::from_slice(values, shape.as_slice(), &Device::Cpu).unwrap();
            (name.clone(), t.to_dtype(dtype).unwrap())
        })
        .collect()
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let mut rng = StdRng::seed_from_u64(2024);
    let master = initial_weights(&mut rng);
    let params: usize = master.iter().map(|(_, _, v)| v.len()).sum();
    println!(
        "weight set: {} tensors, {params} parameters\n",
        master.len()
    );
    println!(
        "| case | dtype | changed | full safetensors | full+zstd | delta | full/delta | sparse/dense tensors | encode ms | apply ms | encode MB/s | apply MB/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");

    let cases: [(&str, DType, f64, f32); 8] = [
        ("(a) 1% changed", DType::F32, 0.01, 1e-6),
        ("(b) 10% changed", DType::F32, 0.10, 1e-6),
        ("(c) 100% changed", DType::F32, 1.0, 1e-6),
        ("(a) 1% changed (1 ulp)", DType::BF16, 0.01, 0.0),
        ("(b) 10% changed (1 ulp)", DType::BF16, 0.10, 0.0),
        ("(c) 100% changed (1 ulp)", DType::BF16, 1.0, 0.0),
        (
            "(d) realistic, all stepped, lr 1e-6",
            DType::BF16,
            1.0,
            1e-6,
        ),
        (
            "(d) realistic, all stepped, lr 1e-5",
            DType::BF16,
            1.0,
            1e-5,
        ),
    ];
    for (label, dtype, fraction, lr) in cases {
        let base = to_set(&master, dtype);
        let new = if lr == 0.0 {
            nudge_by_one_ulp(&mut rng, &base, fraction)
        } else {
            let updated: Vec<_> = master
                .iter()
                .map(|(n, s, v)| (n.clone(), s.clone(), adamw_step(&mut rng, v, fraction, lr)))
                .collect();
            to_set(&updated, dtype)
        };
        let full = to_safetensors_bytes(&new).unwrap();
        let full_zstd = zstd::encode_all(&full[..], 3).unwrap().len();
        let start = Instant::now();
        let (delta, stats) = encode_delta_with(&base, &new, &DeltaOptions::default()).unwrap();
        let encode_ms = ms(start);
        let start = Instant::now();
        let rebuilt = apply_delta(&base, &delta).unwrap();
        let apply_ms = ms(start);
        assert_eq!(rebuilt.len(), new.len());
        let mb = (params * dtype.size_in_bytes()) as f64 / 1e6;
        println!(
            "| {label} | {dtype:?} | {:.2}% | {:.1} MB | {:.1} MB | {:.3} MB | {:.1}x | {}/{} | {encode_ms:.0} | {apply_ms:.0} | {:.0} | {:.0} |",
            100.0 * (1.0 - stats.sparsity()),
            full.len() as f64 / 1e6,
            full_zstd as f64 / 1e6,
            delta.len() as f64 / 1e6,
            full.len() as f64 / delta.len() as f64,
            stats.tensors_sparse,
            stats.tensors_dense,
            mb / (encode_ms / 1e3),
            mb / (apply_ms / 1e3),
        );
    }

    println!("\n| digest | dtype | MB | ms | MB/s |");
    println!("|---|---|---|---|---|");
    for dtype in [DType::F32, DType::BF16] {
        let set = to_set(&master, dtype);
        let start = Instant::now();
        let d = digest(&set).unwrap();
        let t = ms(start);
        let mb = (params * dtype.size_in_bytes()) as f64 / 1e6;
        println!(
            "| blake2b-256 ({:02x}{:02x}..) | {dtype:?} | {mb:.1} | {t:.0} | {:.0} |",
            d[0],
            d[1],
            mb / (t / 1e3)
        );
    }
}
