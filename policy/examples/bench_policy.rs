//! Prints the policy benchmark table.
//!
//! `cargo run --release -p grail-policy --example bench_policy -- [tiny|small|MODEL_PATH]
//!  [--prompt-len N] [--new-tokens N] [--group N] [--device cpu|cuda:N] [--dtype f32|bf16]
//!  [--micro-batch N]`

use grail_policy::bench::{run_policy_bench, BenchOptions};
use grail_policy::device::parse_dtype;

fn main() {
    grail_policy::allocator::retain_freed_memory();
    let mut opts = BenchOptions::default();
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
            "--device" => opts.device = value().parse().unwrap_or_else(|e| panic!("{e}")),
            "--micro-batch" => opts.train_micro_batch = number(value()),
            "--dtype" => {
                let name = value();
                opts.dtype = Some(parse_dtype(&name).unwrap_or_else(|| panic!("--dtype {name}")));
            }
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
