//! Numerical drift of the proof forward across devices and dtypes, on the same token sequences.
//!
//! `cargo run --release -p grail-policy --example proof_drift -- MODEL [--configs
//!  cpu:f32,cuda:f32,cuda:bf16] [--rows 16] [--prompt-len 64] [--new-tokens 192] [--one-prompt]
//!  [--json FILE]`
//!
//! A config ending in `+unshared` runs the proof forward with `share_prefix: false` (every row
//! whole); `--one-prompt` makes all rows one group of the first question (so the default
//! configs share its prompt), e.g. `--one-prompt --configs cpu:f32+unshared,cpu:f32` measures
//! what running a group's prompt once changes.
//!
//! MODEL is an HF directory or a .gguf file. The first config is the reference: it generates
//! the sequences (chat prompts, seeded sampling, eos ignored so every row is full length) and
//! every config then runs the proof forward on exactly those tokens. For each other config it
//! prints, over the completion positions: max/median/p99 |Δ| of the final-norm hidden states and
//! of the next-token log-probs, how many of the top-16 |h| coordinates change, how many bucket
//! values flip, and the resulting grail/v1 sketch distance against the default tolerance.

use std::time::Instant;

use candle_core::DType;
use grail_policy::device::{parse_device, parse_dtype};
use grail_policy::generate::{generate_group, GroupRequest, RandomSampler, SamplingParams};
use grail_policy::proof::{proof_forward, ProofInput, ProofOptions, ProofOutput};
use grail_policy::tokenizer::{render_chatml, ChatMessage};
use grail_policy::{load_model, LoadOptions, LoadedModel};
use protocol::sketch::{
    bucket, coefficients, sketch, sketch_distance, top_k_indices, SketchParams, SketchTolerance,
};

const QUESTIONS: [&str; 4] = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?",
    "Write a Python function that returns the n-th Fibonacci number.",
    "Explain why the sky is blue in two sentences.",
    "A train travels 60 km in 45 minutes. What is its average speed in km/h?",
];

struct Args {
    model: String,
    /// (device, dtype, share_prefix)
    configs: Vec<(String, DType, bool)>,
    rows: usize,
    one_prompt: bool,
    prompt_len: usize,
    new_tokens: usize,
    json: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        model: String::new(),
        configs: Vec::new(),
        rows: 16,
        one_prompt: false,
        prompt_len: 64,
        new_tokens: 192,
        json: None,
    };
    let mut configs = "cpu:f32,cuda:f32,cuda:bf16".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--configs" => configs = value(),
            "--rows" => a.rows = value().parse().expect("--rows N"),
            "--prompt-len" => a.prompt_len = value().parse().expect("--prompt-len N"),
            "--new-tokens" => a.new_tokens = value().parse().expect("--new-tokens N"),
            "--json" => a.json = Some(value()),
            "--one-prompt" => a.one_prompt = true,
            model => a.model = model.to_string(),
        }
    }
    assert!(
        !a.model.is_empty(),
        "usage: proof_drift MODEL [--configs ...]"
    );
    for c in configs.split(',') {
        // `cuda:0:bf16` or `cpu:f32[+unshared]`: the dtype is after the last colon.
        let (c, share) = match c.strip_suffix("+unshared") {
            Some(c) => (c, false),
            None => (c, true),
        };
        let (device, dtype) = c.rsplit_once(':').expect("config DEVICE:DTYPE");
        let dtype = parse_dtype(dtype).unwrap_or_else(|| panic!("dtype in {c}"));
        a.configs.push((device.to_string(), dtype, share));
    }
    a
}

fn load(args: &Args, device: &str, dtype: DType) -> LoadedModel {
    let opts = LoadOptions {
        device: parse_device(device).unwrap_or_else(|e| panic!("{e}")),
        dtype,
    };
    load_model(std::path::Path::new(&args.model), &opts).unwrap_or_else(|e| panic!("{e}"))
}

/// A chat prompt cut or padded (by repeating the question) to exactly `len` tokens.
fn prompt_tokens(m: &LoadedModel, question: &str, len: usize) -> Vec<u32> {
    let chat = render_chatml(&[ChatMessage::new("user", question)], true);
    let mut ids = m.tokenizer.encode(&chat).expect("encode");
    let body = m.tokenizer.encode(question).expect("encode");
    while ids.len() < len {
        ids.splice(0..0, body.iter().copied());
    }
    ids.split_off(ids.len() - len)
}

fn sequences(m: &LoadedModel, args: &Args) -> Vec<Vec<u32>> {
    let questions = if args.one_prompt {
        &QUESTIONS[..1]
    } else {
        &QUESTIONS[..]
    };
    let per_question = args.rows.div_ceil(questions.len());
    let mut out = Vec::new();
    for (q, question) in questions.iter().enumerate() {
        let prompt = prompt_tokens(m, question, args.prompt_len);
        let req = GroupRequest {
            prompt: &prompt,
            group_size: per_question,
            max_new_tokens: args.new_tokens,
            eos_ids: &[],
        };
        let mut sampler = RandomSampler::new(SamplingParams::default(), 1000 + q as u64);
        let group = generate_group(&m.model, &req, &mut sampler).expect("generation");
        out.extend(group.into_iter().map(|g| g.tokens));
    }
    out.truncate(args.rows);
    out
}

fn proof(m: &LoadedModel, seqs: &[Vec<u32>], share_prefix: bool) -> (Vec<ProofOutput>, f64) {
    let inputs: Vec<ProofInput> = seqs
        .iter()
        .map(|s| ProofInput {
            tokens: s,
            logit_positions: &[],
        })
        .collect();
    let opts = ProofOptions {
        pad_id: m.pad_id,
        share_prefix,
        ..Default::default()
    };
    proof_forward(&m.model, &inputs, &opts).expect("warm-up");
    let t = Instant::now();
    let out = proof_forward(&m.model, &inputs, &opts).expect("proof forward");
    (out, t.elapsed().as_secs_f64())
}

fn quantile(v: &mut [f32], q: f64) -> f32 {
    if v.is_empty() {
        return f32::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

#[derive(Default)]
struct Drift {
    hidden: Vec<f32>,
    logprob: Vec<f32>,
    top16_changed: Vec<f32>,
    bucket_flips: Vec<f32>,
    sketch: Vec<f32>,
    over_tolerance: usize,
    positions: usize,
    hidden_abs_max: f32,
}

fn compare(reference: &[ProofOutput], other: &[ProofOutput], prompt_len: usize) -> Drift {
    let params = SketchParams::default();
    let k = params.top_k as usize;
    let tolerance = SketchTolerance::default();
    let dim = reference[0].hidden_size;
    let coeffs = coefficients(&[7u8; 32], dim as u32);
    let mut d = Drift::default();
    for (r, o) in reference.iter().zip(other) {
        for pos in prompt_len..r.len {
            let (hr, ho) = (r.hidden_at(pos), o.hidden_at(pos));
            d.positions += 1;
            for (a, b) in hr.iter().zip(ho) {
                d.hidden.push((a - b).abs());
                d.hidden_abs_max = d.hidden_abs_max.max(a.abs());
            }
            let (tr, to) = (top_k_indices(hr, k), top_k_indices(ho, k));
            d.top16_changed
                .push(tr.iter().filter(|j| !to.contains(j)).count() as f32);
            d.bucket_flips.push(
                tr.iter()
                    .filter(|&&j| to.contains(&j) && bucket(hr[j]) != bucket(ho[j]))
                    .count() as f32,
            );
            let (sr, so) = (
                sketch(hr, &coeffs, &params).expect("dim"),
                sketch(ho, &coeffs, &params).expect("dim"),
            );
            let dist = sketch_distance(sr, so);
            d.sketch.push(dist as f32);
            if dist > tolerance.at(pos as u32) {
                d.over_tolerance += 1;
            }
        }
        let from = prompt_len - 1;
        for (a, b) in r.next_token_logprobs[from..]
            .iter()
            .zip(&o.next_token_logprobs[from..])
        {
            d.logprob.push((a - b).abs());
        }
    }
    d
}

fn main() {
    let args = parse_args();
    let (ref_device, ref_dtype, ref_share) = args.configs[0].clone();
    let reference_model = load(&args, &ref_device, ref_dtype);
    let t = Instant::now();
    let seqs = sequences(&reference_model, &args);
    println!(
        "model {}; {} sequences × {} tokens (prompt {}), generated on {ref_device} {ref_dtype:?} in {:.1} s",
        args.model,
        seqs.len(),
        args.prompt_len + args.new_tokens,
        args.prompt_len,
        t.elapsed().as_secs_f64()
    );
    let (reference, ref_s) = proof(&reference_model, &seqs, ref_share);
    drop(reference_model);
    println!(
        "reference {ref_device} {ref_dtype:?}{}: proof forward {:.0} ms, first {} tokens shared",
        if ref_share { "" } else { " unshared" },
        ref_s * 1e3,
        reference[0].shared_prefix
    );
    println!(
        "| vs reference | hidden max | hidden median | hidden p99 | logprob max | logprob median | logprob p99 | top-16 changed mean / max / % pos | bucket flips mean / max | sketch dist median / p99 / max | > tolerance |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut json = Vec::new();
    for (device, dtype, share) in &args.configs[1..] {
        let m = load(&args, device, *dtype);
        let (out, s) = proof(&m, &seqs, *share);
        let device = &format!("{device}{}", if *share { "" } else { " unshared" });
        drop(m);
        let mut d = compare(&reference, &out, args.prompt_len);
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
        let max = |v: &[f32]| v.iter().copied().fold(0.0, f32::max);
        let changed_pos = d.top16_changed.iter().filter(|&&c| c > 0.0).count();
        let (t_mean, t_max) = (mean(&d.top16_changed), max(&d.top16_changed));
        let (b_mean, b_max) = (mean(&d.bucket_flips), max(&d.bucket_flips));
        let (h_max, lp_max, s_max) = (max(&d.hidden), max(&d.logprob), max(&d.sketch));
        let h_med = quantile(&mut d.hidden, 0.5);
        let h_p99 = quantile(&mut d.hidden, 0.99);
        let lp_med = quantile(&mut d.logprob, 0.5);
        let lp_p99 = quantile(&mut d.logprob, 0.99);
        let s_med = quantile(&mut d.sketch, 0.5);
        let s_p99 = quantile(&mut d.sketch, 0.99);
        let pct = 100.0 * changed_pos as f64 / d.positions.max(1) as f64;
        println!(
            "| {device} {dtype:?} ({:.0} ms) | {h_max:.3e} | {h_med:.3e} | {h_p99:.3e} | {lp_max:.3e} | {lp_med:.3e} | {lp_p99:.3e} | {t_mean:.3} / {t_max} / {pct:.1}% | {b_mean:.3} / {b_max} | {s_med} / {s_p99} / {s_max} | {} of {} |",
            s * 1e3,
            d.over_tolerance,
            d.positions
        );
        json.push(format!(
            "{{\"config\":\"{device} {dtype:?}\",\"hidden_max\":{h_max},\"hidden_median\":{h_med},\"hidden_p99\":{h_p99},\"hidden_abs_max\":{},\"logprob_max\":{lp_max},\"logprob_median\":{lp_med},\"logprob_p99\":{lp_p99},\"top16_changed_mean\":{t_mean},\"top16_changed_max\":{t_max},\"positions_with_top16_change\":{changed_pos},\"bucket_flips_mean\":{b_mean},\"bucket_flips_max\":{b_max},\"sketch_median\":{s_med},\"sketch_p99\":{s_p99},\"sketch_max\":{s_max},\"over_default_tolerance\":{},\"positions\":{}}}",
            d.hidden_abs_max, d.over_tolerance, d.positions
        ));
    }
    if let Some(path) = &args.json {
        let text = format!(
            "{{\"model\":{:?},\"reference\":\"{ref_device} {ref_dtype:?}\",\"rows\":{},\"prompt_len\":{},\"new_tokens\":{},\"results\":[{}]}}\n",
            args.model,
            seqs.len(),
            args.prompt_len,
            args.new_tokens,
            json.join(",")
        );
        std::fs::write(path, text).expect("write json");
    }
}
