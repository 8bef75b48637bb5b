//! Frozen test vectors: the same table appears in `docs/PROTOCOL.md` §9. Any change to a derivation
//! makes this test fail; regenerate only with a protocol version bump
//! (`GRAIL_PRINT_VECTORS=1 cargo test -p grail-protocol --test vectors -- --nocapture` prints them).

use grail_protocol::checks::grpo_advantages;
use grail_protocol::randomness::{
    challenged_positions, checked_rollouts, close_randomness, completion_digest, deep_check_draw,
    open_randomness, prf, problem_seed, sampling_key, select_deep_checks, HashChain,
};
use grail_protocol::sampling::{choose, gumbel_noise, noise_bits, process_logits, SamplingParams};
use grail_protocol::scoring::{weights, weights_to_u16_sum};
use grail_protocol::sketch::{bucket, coefficients, sketch, SketchParams};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn list<T: std::fmt::Display>(values: impl IntoIterator<Item = T>) -> String {
    values
        .into_iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Fixed inputs: chain seed = bytes 0x00..=0x1f, miner key = bytes 0x20..=0x3f.
fn compute() -> Vec<(&'static str, String)> {
    let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
    let miner: [u8; 32] = std::array::from_fn(|i| 0x20 + i as u8);
    let chain = HashChain::new(seed, 4);
    let x1 = chain.value(1).unwrap();
    let x2 = chain.value(2).unwrap();
    let open = open_randomness(1, &x1);
    let close = close_randomness(1, &x2);
    let key = sampling_key(&open, &miner, 3, 5, 11);
    let hidden: Vec<f32> = (0..32)
        .map(|j| ((j * 37 % 101) as f32 - 50.0) / 4.0)
        .collect();
    let raw: Vec<f32> = vec![2.0, 1.5, -0.5, 3.0, 0.0, 2.5, -1.0, 1.0];
    let params = SamplingParams {
        temperature: 0.7,
        top_k: 5,
        top_p: 0.9,
        repetition_penalty: 1.2,
    };
    let processed = process_logits(&raw, &[0, 3, 3], &params);
    vec![
        (
            "prf(\"grail/v1/test\", [])",
            hex(&prf("grail/v1/test", &[])),
        ),
        (
            "prf(\"grail/v1/test\", [\"abc\", \"\"])",
            hex(&prf("grail/v1/test", &[b"abc", b""])),
        ),
        ("chain anchor x[0] (len 4)", hex(&chain.anchor())),
        ("chain x[1]", hex(&x1)),
        ("chain x[4]", hex(&chain.value(4).unwrap())),
        ("open(1) = open_randomness(1, x[1])", hex(&open)),
        ("close(1) = close_randomness(1, x[2])", hex(&close)),
        (
            "problem_seed(open, miner, 0)",
            problem_seed(&open, &miner, 0).to_string(),
        ),
        (
            "problem_seed(open, miner, 7)",
            problem_seed(&open, &miner, 7).to_string(),
        ),
        ("sampling_key(open, miner, 3, 5, 11)", hex(&key)),
        (
            "challenged_positions(close, miner, 3, 5, 1000, 32)",
            list(challenged_positions(&close, &miner, 3, 5, 1000, 32)),
        ),
        (
            "challenged_positions(close, miner, 3, 5, 40, 8)",
            list(challenged_positions(&close, &miner, 3, 5, 40, 8)),
        ),
        (
            "deep_check_draw(close, miner, 0..4)",
            list((0..4).map(|g| deep_check_draw(&close, &miner, g))),
        ),
        (
            "select_deep_checks(close, miner, 0..10, 250000, 1)",
            list(select_deep_checks(
                &close,
                &miner,
                &(0..10).collect::<Vec<_>>(),
                250_000,
                1,
            )),
        ),
        (
            "checked_rollouts(close, miner, 3, 16, 4)",
            list(checked_rollouts(&close, &miner, 3, 16, 4)),
        ),
        (
            "coefficients(open, 16)",
            list(coefficients(&open, 16).values().iter()),
        ),
        (
            "coefficients(open, 896)[888..896]",
            list(coefficients(&open, 896).values()[888..].iter()),
        ),
        (
            "bucket([0, 0.99, 1, -3, 7, 1e9, -inf, nan])",
            list([0.0, 0.99, 1.0, -3.0, 7.0, 1e9, f32::NEG_INFINITY, f32::NAN].map(bucket)),
        ),
        (
            "sketch(h32, coefficients(open, 32), top_k 16)",
            sketch(&hidden, &coefficients(&open, 32), &SketchParams::default())
                .unwrap()
                .to_string(),
        ),
        (
            "noise_bits(key, 0)",
            format!("{:016x}", noise_bits(&key, 0)),
        ),
        (
            "gumbel_noise(key, 0..3)",
            list((0..3).map(|v| format!("{:.12}", gumbel_noise(&key, v)))),
        ),
        (
            "process_logits(raw8, [0,3,3], T0.7 k5 p0.9 rp1.2)",
            list(processed.iter().map(|v| format!("{v:.6}"))),
        ),
        (
            "choose(processed, key)",
            choose(&processed, &key).unwrap().to_string(),
        ),
        (
            "completion_digest([1,2,3])",
            hex(&completion_digest(&[1, 2, 3])),
        ),
        (
            "grpo_advantages([1,0,0.5,0])",
            list(
                grpo_advantages(&[1.0, 0.0, 0.5, 0.0])
                    .advantages
                    .iter()
                    .map(|a| format!("{a:.6}")),
            ),
        ),
        (
            "weights_to_u16_sum(weights([1,2,3], 4))",
            list(weights_to_u16_sum(&weights(&[1.0, 2.0, 3.0], 4.0))),
        ),
    ]
}

/// Frozen values (generated once by `compute()`).
const EXPECTED: &[(&str, &str)] = &[
    ("prf(\"grail/v1/test\", [])", "add0416fc9a38f2d8b642baf0f106dd81b13b8e5618a87c8ee725ac25ccfe5be"),
    ("prf(\"grail/v1/test\", [\"abc\", \"\"])", "fdb5b9033ee3a11e9a91b98380995b4e6c2f5c6ef0cb1c13e2cea254fb073934"),
    ("chain anchor x[0] (len 4)", "968725fe39340297f0d9b989957ddcbd6ca68c4fe5270f48abaaa490093193eb"),
    ("chain x[1]", "06096ebc91542e905f072d3d4f4a5c112d90bdcfd8cf603f203f8cf5e031ddff"),
    ("chain x[4]", "5406fedda07765e0263ee455fc9222ff72f6d2efcec9f8d51d2a4812b47747ce"),
    ("open(1) = open_randomness(1, x[1])", "d18a046d07551c7e197b9a9da167c5e630fe37f2c075ee55cefbe7f77bc66189"),
    ("close(1) = close_randomness(1, x[2])", "b9a83297d8cccf5fc4e244a2538df2e4f7c5fbb94689e15a5bf062ee21133532"),
    ("problem_seed(open, miner, 0)", "13555337280599060144"),
    ("problem_seed(open, miner, 7)", "808244420612625742"),
    ("sampling_key(open, miner, 3, 5, 11)", "8070a755a667edfb02506c5493013392072274a53edde1519dac645693c9db66"),
    ("challenged_positions(close, miner, 3, 5, 1000, 32)", "6,41,76,179,205,256,266,379,395,430,485,486,496,507,524,544,557,564,585,599,609,613,661,714,720,741,744,846,875,928,939,999"),
    ("challenged_positions(close, miner, 3, 5, 40, 8)", "0,5,12,15,24,28,37,39"),
    ("deep_check_draw(close, miner, 0..4)", "112847,376524,809036,249371"),
    ("select_deep_checks(close, miner, 0..10, 250000, 1)", "0,3"),
    ("checked_rollouts(close, miner, 3, 16, 4)", "0,2,11,13"),
    ("coefficients(open, 16)", "121,121,56,-28,36,-32,-24,-111,-10,49,-63,-51,-57,2,-41,71"),
    ("coefficients(open, 896)[888..896]", "-73,-75,-102,24,-8,106,57,120"),
    ("bucket([0, 0.99, 1, -3, 7, 1e9, -inf, nan])", "1,1,2,-3,4,15,-15,0"),
    ("sketch(h32, coefficients(open, 32), top_k 16)", "768"),
    ("noise_bits(key, 0)", "07a54a1e019a0e30"),
    ("gumbel_noise(key, 0..3)", "-1.255912002677,0.996637075811,1.276785278641"),
    ("process_logits(raw8, [0,3,3], T0.7 k5 p0.9 rp1.2)", "-2.124107,-2.362202,-inf,-0.933631,-inf,-0.933630,-inf,-inf"),
    ("choose(processed, key)", "3"),
    ("completion_digest([1,2,3])", "c0e202805718433404ca2e822de5fed426b42803c2dcb7c96dc4fee2e9cd3b68"),
    ("grpo_advantages([1,0,0.5,0])", "1.507557,-0.904534,0.301511,-0.904534"),
    ("weights_to_u16_sum(weights([1,2,3], 4))", "669,10699,54167"),
];

#[test]
fn test_vectors_are_frozen() {
    let actual = compute();
    if std::env::var_os("GRAIL_PRINT_VECTORS").is_some() {
        for (name, value) in &actual {
            println!("| `{name}` | `{value}` |");
        }
        for (name, value) in &actual {
            println!("    ({name:?}, {value:?}),");
        }
    }
    assert_eq!(actual.len(), EXPECTED.len(), "vector count changed");
    for ((name, value), (expected_name, expected_value)) in actual.iter().zip(EXPECTED) {
        assert_eq!(name, expected_name);
        assert_eq!(value, expected_value, "test vector `{name}` changed");
    }
}
