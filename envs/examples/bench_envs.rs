//! Environment benchmark: problem generation rate, scoring latency, sandbox overhead, and the
//! share of reference solutions that earn full reward.
//!
//! `cargo run --release -p grail-envs --example bench_envs [-- [--data DIR] [--quick]]`
//! (`--quick`: 50 code references per dataset instead of all of them). Data: `--data`, else
//! `$GRAIL_DATASETS`, else the repository's `run/datasets` (`grail data fetch ...`).

use grail_envs::sandbox::{Sandbox, SandboxConfig};
use grail_envs::{build, EnvSpec, Environment};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Row {
    name: String,
    problems_per_s: f64,
    p50: Duration,
    p95: Duration,
    full: usize,
    checked: usize,
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn bench(name: &str, env: &Arc<dyn Environment>, reference_limit: Option<u64>) -> Row {
    let generate = 2000u64;
    let started = Instant::now();
    for seed in 0..generate {
        std::hint::black_box(env.problem(seed));
    }
    let problems_per_s = generate as f64 / started.elapsed().as_secs_f64();

    let count = match (env.num_problems(), reference_limit) {
        (Some(n), Some(limit)) => n.min(limit),
        (Some(n), None) => n,
        (None, _) => 500,
    };
    let n = env.num_problems().unwrap_or(count).max(1);
    let seeds: Vec<u64> = (0..count).map(|i| i * n / count.max(1)).collect();
    let mut latencies = Vec::with_capacity(seeds.len());
    let mut full = 0;
    for seed in &seeds {
        let problem = env.problem(*seed);
        let Some(reference) = env.reference_completion(&problem) else {
            continue;
        };
        let started = Instant::now();
        let reward = env.score(&problem, &reference);
        latencies.push(started.elapsed());
        if reward.success && (reward.total - 1.0).abs() < 1e-6 {
            full += 1;
        }
    }
    latencies.sort();
    Row {
        name: name.to_string(),
        problems_per_s,
        p50: percentile(&latencies, 0.5),
        p95: percentile(&latencies, 0.95),
        full,
        checked: latencies.len(),
    }
}

fn sandbox_overhead() -> Option<(Duration, Duration, Duration)> {
    let sandbox = Sandbox::new(SandboxConfig::default()).ok()?;
    println!(
        "sandbox: python {} capabilities {:?}",
        sandbox.python().display(),
        sandbox.capabilities()
    );
    let runs = 40;
    let mut bare = Vec::new();
    let mut boxed = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let status = std::process::Command::new(sandbox.python())
            .args(["-s", "-S", "-B", "-c", "pass"])
            .status()
            .ok()?;
        assert!(status.success());
        bare.push(started.elapsed());
        let started = Instant::now();
        sandbox.run("pass\n", &[], b"").ok()?;
        boxed.push(started.elapsed());
    }
    bare.sort();
    boxed.sort();
    let bare_p50 = percentile(&bare, 0.5);
    Some((bare_p50, percentile(&boxed, 0.5), percentile(&boxed, 0.95)))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|arg| arg == "--quick");
    let data_dir = args
        .iter()
        .position(|arg| arg == "--data")
        .and_then(|index| args.get(index + 1))
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("GRAIL_DATASETS").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../run/datasets"));
    let code_limit = quick.then_some(50);

    let specs: Vec<(&str, EnvSpec, Option<u64>)> = vec![
        ("arith (add)", EnvSpec::new("arith"), None),
        (
            "arith (copy)",
            EnvSpec::new("arith").with_param("mode", "copy"),
            None,
        ),
        ("sat", EnvSpec::new("sat"), None),
        (
            "gsm8k/train",
            EnvSpec::new("gsm8k").with_data_dir(&data_dir),
            None,
        ),
        (
            "gsm8k/test",
            EnvSpec::new("gsm8k")
                .with_data_dir(&data_dir)
                .with_param("split", "test"),
            None,
        ),
        (
            "math/train",
            EnvSpec::new("math").with_data_dir(&data_dir),
            None,
        ),
        (
            "math/math500",
            EnvSpec::new("math")
                .with_data_dir(&data_dir)
                .with_param("split", "math500"),
            None,
        ),
        (
            "math/test",
            EnvSpec::new("math")
                .with_data_dir(&data_dir)
                .with_param("split", "test"),
            None,
        ),
        (
            "mbpp/all",
            EnvSpec::new("mbpp")
                .with_data_dir(&data_dir)
                .with_param("split", "all"),
            code_limit,
        ),
        (
            "humaneval",
            EnvSpec::new("humaneval").with_data_dir(&data_dir),
            code_limit,
        ),
    ];
    let mut rows = Vec::new();
    for (name, spec, limit) in specs {
        let started = Instant::now();
        match build(&spec) {
            Ok(env) => {
                let load = started.elapsed();
                let row = bench(name, &env, limit);
                eprintln!(
                    "{name}: loaded in {load:.2?}, digest {:?}",
                    env.data_digest().map(hex::encode)
                );
                rows.push(row);
            }
            Err(error) => eprintln!("{name}: skipped ({error})"),
        }
    }
    println!();
    println!("| env | problems/s | score p50 | score p95 | references at full reward |");
    println!("|---|---:|---:|---:|---:|");
    for row in &rows {
        println!(
            "| {} | {:.0} | {:.1?} | {:.1?} | {}/{} ({:.1}%) |",
            row.name,
            row.problems_per_s,
            row.p50,
            row.p95,
            row.full,
            row.checked,
            100.0 * row.full as f64 / row.checked.max(1) as f64
        );
    }
    if let Some((bare, p50, p95)) = sandbox_overhead() {
        println!();
        println!("| sandbox (`pass`) | p50 | p95 |");
        println!("|---|---:|---:|");
        println!("| bare `python3 -s -S -B -c pass` | {bare:.1?} | |");
        println!("| sandboxed run (tempdir, rlimits, netns, landlock, seccomp) | {p50:.1?} | {p95:.1?} |");
        println!("| overhead vs bare | {:.1?} | |", p50.saturating_sub(bare));
    }
}
