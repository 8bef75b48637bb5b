//! The benchmark runs end to end on the tiny model and reports every measure (values are
//! timings, so only their presence and sign are checked).

use grail_policy::bench::{run_policy_bench, BenchModel, BenchOptions};
use grail_policy::DeviceSpec;

#[test]
fn bench_reports_every_measure_on_the_tiny_model() {
    let opts = BenchOptions {
        model: BenchModel::Tiny,
        group_size: 4,
        prompt_len: 16,
        max_new_tokens: 8,
        train_steps: 1,
        challenged_positions: 4,
        ..Default::default()
    };
    let report = run_policy_bench(&opts).unwrap();
    for name in [
        "generation",
        "generation, k groups batched",
        "proof forward, miner",
        "proof forward, verifier",
        "proof forward + log-probs",
        "proof fwd + log-probs, unshared",
        "proof (miner) / generation",
        "proof (verifier) / generation",
        "trunk compute (decoder layers)",
        "proof compute, miner",
        "proof compute, verifier",
        "proof compute, unshared + log-probs",
        "gemm peak (2048³ F32 matmul)",
        "GRPO training",
    ] {
        let v = report.get(name).unwrap_or_else(|| panic!("missing {name}"));
        assert!(v.is_finite() && v > 0.0, "{name} = {v}");
    }
    let table = report.to_string();
    assert!(
        table.contains("| generation") && table.contains("tok/s"),
        "{table}"
    );
}

#[test]
fn bench_refuses_an_unknown_device_with_a_clear_error() {
    // Device strings are parsed before a bench starts (`grail bench --device`).
    let e = "tpu:0".parse::<DeviceSpec>().unwrap_err();
    assert!(e.to_string().contains("not recognised"), "{e}");
    if !grail_policy::device::CUDA_COMPILED {
        let opts = BenchOptions {
            device: DeviceSpec::Cuda(0),
            ..Default::default()
        };
        let e = run_policy_bench(&opts).unwrap_err();
        assert!(e.to_string().contains("build-cuda.sh"), "{e}");
    }
}
