//! k groups decoded one at a time vs in one decode batch (the miner's `mine_batched`),
//! interleaved repetitions; prints every repetition and the medians.
//!
//! `cargo run --release -p grail-policy --example generation_bench -- [tiny|small|smollm2-shape|MODEL]
//!  [--groups K] [--reps N] [--group G] [--prompt-len N] [--new-tokens N]`

use grail_policy::bench::BenchOptions;
use grail_policy::bench_generation::compare_generation;

fn main() {
    grail_policy::allocator::retain_freed_memory();
    let mut opts = BenchOptions::default();
    let (mut model, mut groups, mut reps) = ("tiny".to_string(), 4, 3);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        let number = |v: String| -> usize {
            v.parse()
                .unwrap_or_else(|_| panic!("{arg} needs a number, got {v:?}"))
        };
        match arg.as_str() {
            "--prompt-len" => opts.prompt_len = number(value()),
            "--new-tokens" => opts.max_new_tokens = number(value()),
            "--group" => opts.group_size = number(value()),
            "--groups" => groups = number(value()),
            "--reps" => reps = number(value()),
            other => model = other.to_string(),
        }
    }
    let model_spec = model.parse().expect("infallible");
    match compare_generation(model_spec, &opts, groups, reps) {
        Ok(c) => {
            println!(
                "{} ({} threads): {groups} groups × {} rows, prompt {}, {} new",
                c.model, c.threads, opts.group_size, opts.prompt_len, opts.max_new_tokens
            );
            let list = |v: &[f64]| {
                v.iter()
                    .map(|x| format!("{x:.0}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            println!(
                "per group: {} tok/s (median {:.0})",
                list(&c.per_group),
                c.median_per_group()
            );
            println!(
                "batched:   {} tok/s (median {:.0})",
                list(&c.batched),
                c.median_batched()
            );
            println!(
                "batched / per group: {:.2}×",
                c.median_batched() / c.median_per_group()
            );
        }
        Err(e) => {
            eprintln!("generation bench failed: {e}");
            std::process::exit(1);
        }
    }
}
