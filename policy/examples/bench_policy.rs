//! Prints the policy benchmark table.
//!
//! `cargo run --release -p grail-policy --example bench_policy -- [tiny|small|MODEL_PATH]
//!  [--prompt-len N] [--new-tokens N] [--group N]`

use grail_policy::bench::{run_policy_bench, BenchOptions};

fn main() {
    let mut opts = BenchOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |flag: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        match arg.as_str() {
            "--prompt-len" => opts.prompt_len = number("--prompt-len"),
            "--new-tokens" => opts.max_new_tokens = number("--new-tokens"),
            "--group" => opts.group_size = number("--group"),
            model => opts.model = model.parse().expect("infallible"),
        }
    }
    match run_policy_bench(&opts) {
        Ok(report) => print!("{report}"),
        Err(e) => {
            eprintln!("bench failed: {e}");
            std::process::exit(1);
        }
    }
}
