//! Cost table of the protocol primitives on this CPU (single thread).
//! Run: `cargo run --release -p grail-protocol --example bench_protocol`

use std::hint::black_box;
use std::time::{Duration, Instant};

use grail_protocol::checks::{check_sketches, CopyDetector};
use grail_protocol::randomness::{
    challenged_positions, completion_digest, sampling_key, select_deep_checks,
};
use grail_protocol::rng::SplitMix64;
use grail_protocol::sampling::{check_sampled_token, choose, process_logits, SamplingParams};
use grail_protocol::sketch::{coefficients, sketch, SketchParams, SketchTolerance};
use grail_protocol::synthetic::{lm_logits, SyntheticModel};

/// On-CPU time of this thread (Linux `/proc/thread-self/schedstat`, ns), so numbers stay honest on a
/// shared, oversubscribed machine; falls back to wall time elsewhere.
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// Mean on-CPU time per call of `f`, repeated until at least 0.3 s of wall time have elapsed.
fn time_per_call(mut f: impl FnMut()) -> Duration {
    f(); // warm-up
    let start = Instant::now();
    let cpu_start = thread_cpu_ns();
    let mut calls = 0u32;
    while start.elapsed() < Duration::from_millis(300) {
        f();
        calls += 1;
    }
    match (cpu_start, thread_cpu_ns()) {
        (Some(a), Some(b)) => Duration::from_nanos((b - a) / u64::from(calls)),
        _ => start.elapsed() / calls,
    }
}

fn row(name: &str, unit: &str, time: Duration) {
    let ns = time.as_nanos();
    let pretty = if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.2} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    };
    println!("| {name:<58} | {unit:<12} | {pretty:>10} |");
}

fn main() {
    const VOCAB: usize = 49_152;
    let mut rng = SplitMix64::new(1);
    let open = [7u8; 32];
    let miner = [9u8; 32];
    let clock = if thread_cpu_ns().is_some() {
        "thread CPU time"
    } else {
        "wall time"
    };
    println!("single thread, {clock} per call\n");
    println!("| operation | per | time |\n|---|---|---|");

    for dim in [576usize, 896] {
        let model = SyntheticModel::new(dim, 3);
        let coeffs = coefficients(&open, dim as u32);
        let rows: Vec<Vec<f32>> = (0..64).map(|_| model.hidden_state(&mut rng)).collect();
        let params = SketchParams::default();
        let mut i = 0;
        row(
            &format!("sketch (d={dim}, top_k=16)"),
            "token",
            time_per_call(|| {
                i = (i + 1) % rows.len();
                black_box(sketch(&rows[i], &coeffs, &params).unwrap());
            }),
        );
        row(
            &format!("coefficients (d={dim})"),
            "window",
            time_per_call(|| {
                black_box(coefficients(&open, dim as u32));
            }),
        );
    }

    let logits: Vec<Vec<f32>> = (0..8)
        .map(|_| lm_logits(&mut rng, VOCAB, 40, 12.0))
        .collect();
    let context: Vec<u32> = (0..512).map(|_| rng.below(VOCAB as u64) as u32).collect();
    let configs = [
        ("T=1 (default)", SamplingParams::default()),
        (
            "T=0.7, top_p=0.9",
            SamplingParams {
                temperature: 0.7,
                top_p: 0.9,
                ..Default::default()
            },
        ),
        (
            "T=0.8, top_k=50, top_p=0.95, rep=1.1 (ctx 512)",
            SamplingParams {
                temperature: 0.8,
                top_k: 50,
                top_p: 0.95,
                repetition_penalty: 1.1,
            },
        ),
        ("greedy", SamplingParams::greedy()),
    ];
    for (label, params) in configs {
        let mut i = 0;
        row(
            &format!("process_logits V=49152 {label}"),
            "token",
            time_per_call(|| {
                i = (i + 1) % logits.len();
                black_box(process_logits(&logits[i], &context, &params));
            }),
        );
        let processed: Vec<Vec<f32>> = logits
            .iter()
            .map(|l| process_logits(l, &context, &params))
            .collect();
        let keys: Vec<[u8; 32]> = (0..64).map(|_| rng.bytes32()).collect();
        let mut j = 0;
        row(
            &format!("choose (Gumbel-max) V=49152 {label}"),
            "token",
            time_per_call(|| {
                j = (j + 1) % keys.len();
                black_box(choose(&processed[j % processed.len()], &keys[j]));
            }),
        );
        let claimed: Vec<u32> = (0..64)
            .map(|k| choose(&processed[k % processed.len()], &keys[k]).unwrap())
            .collect();
        let mut k = 0;
        row(
            &format!("check_sampled_token V=49152 {label}"),
            "position",
            time_per_call(|| {
                k = (k + 1) % keys.len();
                let result = check_sampled_token(
                    &logits[k % logits.len()],
                    &context,
                    &params,
                    &keys[k],
                    claimed[k],
                    0.02,
                );
                assert!(result.is_ok());
            }),
        );
    }

    let model = SyntheticModel::new(896, 3);
    let coeffs = coefficients(&open, 896);
    let params = SketchParams::default();
    let hidden: Vec<f32> = (0..32).flat_map(|_| model.hidden_state(&mut rng)).collect();
    let claimed: Vec<u32> = hidden
        .chunks(896)
        .map(|r| sketch(r, &coeffs, &params).unwrap())
        .collect();
    let positions: Vec<u32> = (0..32).collect();
    row(
        "check_sketches (32 positions, d=896)",
        "rollout",
        time_per_call(|| {
            black_box(
                check_sketches(
                    0,
                    100,
                    &positions,
                    &claimed,
                    &hidden,
                    &coeffs,
                    &params,
                    &SketchTolerance::default(),
                )
                .unwrap(),
            );
        }),
    );
    let close = [3u8; 32];
    let mut r = 0;
    row(
        "challenged_positions (K=32 of 1024)",
        "rollout",
        time_per_call(|| {
            r += 1;
            black_box(challenged_positions(&close, &miner, 0, r, 1024, 32));
        }),
    );
    row(
        "sampling_key",
        "token",
        time_per_call(|| {
            r += 1;
            black_box(sampling_key(&open, &miner, 0, 1, r));
        }),
    );
    let tokens: Vec<u32> = (0..1024).collect();
    row(
        "completion_digest (1024 tokens)",
        "rollout",
        time_per_call(|| {
            black_box(completion_digest(&tokens));
        }),
    );
    let groups: Vec<u32> = (0..1000).collect();
    row(
        "select_deep_checks (1000 groups, 2 %)",
        "miner",
        time_per_call(|| {
            black_box(select_deep_checks(&close, &miner, &groups, 20_000, 1));
        }),
    );
    let submissions: Vec<([u8; 32], Vec<[u8; 32]>)> = (0..64u8)
        .map(|m| ([m; 32], (0..1600).map(|_| rng.bytes32()).collect()))
        .collect();
    row(
        "CopyDetector (64 miners x 1600 digests)",
        "window",
        time_per_call(|| {
            let mut detector = CopyDetector::default();
            for (t, (m, d)) in submissions.iter().enumerate() {
                detector.add(*m, t as u64, d);
            }
            black_box(detector.gated_miners());
        }),
    );
}
