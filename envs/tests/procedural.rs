//! `arith` and `sat`: determinism, reference answers, and SAT checked against brute force.

use grail_envs::sat::{SatEnv, SatInstance};
use grail_envs::{build, EnvSpec, Environment};
use std::collections::HashSet;

fn env(id: &str) -> std::sync::Arc<dyn Environment> {
    build(&EnvSpec::new(id)).expect("procedural env builds without data")
}

#[test]
fn problems_are_deterministic_and_vary_with_the_seed() {
    for id in ["arith", "sat"] {
        let env = env(id);
        for seed in [0u64, 1, 42, u64::MAX] {
            assert_eq!(env.problem(seed), env.problem(seed), "{id} seed {seed}");
        }
        let distinct: HashSet<String> = (0..200u64)
            .map(|seed| serde_json::to_string(&env.problem(seed)).unwrap())
            .collect();
        assert!(
            distinct.len() > 50,
            "{id}: only {} distinct problems in 200 seeds",
            distinct.len()
        );
        assert_eq!(env.data_digest(), None);
    }
}

#[test]
fn arith_reference_scores_one_and_junk_scores_zero() {
    for params in [
        EnvSpec::new("arith"),
        EnvSpec::new("arith").with_param("max_operand", 99),
        EnvSpec::new("arith")
            .with_param("mode", "copy")
            .with_param("digits", 4),
    ] {
        let env = build(&params).unwrap();
        for seed in 0..100 {
            let problem = env.problem(seed);
            let prompt = &problem.messages.last().unwrap().content;
            assert!(
                prompt.len() <= 16,
                "prompt too long for a tiny model: {prompt:?}"
            );
            let reference = env.reference_completion(&problem).unwrap();
            let reward = env.score(&problem, &reference);
            assert!(
                reward.success && (reward.total - 1.0).abs() < 1e-6,
                "{reward:?}"
            );
            for junk in ["", "abc", "<|im_end|>", "\u{fffd}\u{fffd}"] {
                let reward = env.score(&problem, junk);
                assert_eq!(reward.total, 0.0, "{junk:?}: {reward:?}");
                assert!(!reward.success && reward.reason.is_some());
            }
        }
    }
}

#[test]
fn arith_add_answers_are_sums() {
    let env = env("arith");
    for seed in 0..50 {
        let problem = env.problem(seed);
        let prompt = problem.messages[0]
            .content
            .trim_end_matches('=')
            .to_string();
        let (a, b) = prompt.split_once('+').unwrap();
        let sum: u64 = a.parse::<u64>().unwrap() + b.parse::<u64>().unwrap();
        assert!(env.score(&problem, &sum.to_string()).success);
        assert!(!env.score(&problem, &(sum + 1).to_string()).success);
    }
}

#[test]
fn arith_rejects_bad_params() {
    let error = build(&EnvSpec::new("arith").with_param("mode", "mul"))
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("params.mode"), "{error}");
    let error = build(&EnvSpec::new("arith").with_param("max_operandd", 5))
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("max_operandd") && error.contains("max_operand"),
        "{error}"
    );
}

/// Independent evaluation: clause `c` holds under bit-vector `bits` (bit i = x(i+1)).
fn holds(clause: &[i32; 3], bits: u32) -> bool {
    clause.iter().any(|&literal| {
        let value = bits >> (literal.unsigned_abs() - 1) & 1 == 1;
        if literal > 0 {
            value
        } else {
            !value
        }
    })
}

fn brute_force_solutions(instance: &SatInstance) -> Vec<u32> {
    (0..1u32 << instance.num_vars)
        .filter(|bits| instance.clauses.iter().all(|clause| holds(clause, *bits)))
        .collect()
}

fn bits_text(bits: u32, n: usize) -> String {
    (0..n)
        .map(|i| if bits >> i & 1 == 1 { "1" } else { "0" })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn sat_instances_are_in_range_satisfiable_and_scored_like_brute_force() {
    let env = SatEnv::default();
    let mut rng_state = 0x1234_5678u64;
    let mut unsatisfying_seen = 0;
    for seed in 0..300u64 {
        let instance = env.instance(seed);
        assert!((3..=10).contains(&instance.num_vars), "seed {seed}");
        assert!((5..=20).contains(&instance.clauses.len()), "seed {seed}");
        for clause in &instance.clauses {
            let vars: HashSet<u32> = clause.iter().map(|l| l.unsigned_abs()).collect();
            assert_eq!(vars.len(), 3, "clause variables must be distinct");
            assert!(vars
                .iter()
                .all(|v| (1..=instance.num_vars as u32).contains(v)));
        }
        let solutions = brute_force_solutions(&instance);
        assert!(!solutions.is_empty(), "seed {seed} unsatisfiable");

        let problem = env.problem(seed);
        let reference = env.reference_completion(&problem).unwrap();
        let reward = env.score(&problem, &reference);
        assert!(
            reward.success && (reward.total - 1.0).abs() < 1e-6,
            "{reward:?}"
        );
        // Any brute-force solution is accepted, not just the planted one.
        let other = solutions[solutions.len() / 2];
        assert!(
            env.score(
                &problem,
                &format!(
                    "<SOLUTION>{}</SOLUTION>",
                    bits_text(other, instance.num_vars)
                )
            )
            .success
        );

        for _ in 0..8 {
            rng_state = rng_state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let bits = (rng_state >> 33) as u32 & ((1 << instance.num_vars) - 1);
            let completion = format!(
                "<SOLUTION>{}</SOLUTION>",
                bits_text(bits, instance.num_vars)
            );
            let reward = env.score(&problem, &completion);
            let satisfied = instance
                .clauses
                .iter()
                .filter(|clause| holds(clause, bits))
                .count();
            let expected_solved = satisfied == instance.clauses.len();
            assert_eq!(reward.success, expected_solved, "seed {seed} bits {bits:b}");
            assert_eq!(reward.success, solutions.contains(&bits));
            let clause_credit = reward.component("clauses").unwrap();
            assert!(
                (clause_credit - 0.5 * satisfied as f32 / instance.clauses.len() as f32).abs()
                    < 1e-6
            );
            unsatisfying_seen += usize::from(!expected_solved);
        }
    }
    assert!(
        unsatisfying_seen > 100,
        "random assignments should often fail"
    );
}

#[test]
fn sat_bad_answers_score_zero() {
    let env = SatEnv::default();
    let problem = env.problem(7);
    for bad in [
        "",
        "I cannot solve this.",
        "<SOLUTION>1 0</SOLUTION>",
        "<SOLUTION>2 2 2 2 2 2 2 2 2 2 2</SOLUTION>",
    ] {
        let reward = env.score(&problem, bad);
        assert_eq!(reward.total, 0.0, "{bad:?}: {reward:?}");
        assert!(reward.reason.is_some());
    }
    // Unmarked but parseable answers count, without format credit.
    let reference = env.reference_completion(&problem).unwrap();
    let bare = reference
        .trim_start_matches("<SOLUTION>")
        .trim_end_matches("</SOLUTION>");
    let reward = env.score(&problem, &format!("Here it is:\n{bare}"));
    assert!(reward.success && reward.component("format") == Some(0.0));
}

#[test]
fn env_spec_deserialises_from_toml() {
    let text = r#"
        [[envs]]
        id = "arith"
        params = { mode = "copy", digits = 2 }

        [[envs]]
        id = "gsm8k"
        data_dir = "/data"
        params = { split = "test" }
    "#;
    #[derive(serde::Deserialize)]
    struct Config {
        envs: Vec<EnvSpec>,
    }
    let config: Config = toml::from_str(text).unwrap();
    assert_eq!(
        config.envs[0],
        EnvSpec::new("arith")
            .with_param("mode", "copy")
            .with_param("digits", 2)
    );
    assert_eq!(
        config.envs[1].data_dir.as_deref(),
        Some(std::path::Path::new("/data"))
    );
    let env = build(&config.envs[0]).unwrap();
    assert!(env.problem(3).messages[0].content.starts_with("copy "));
    let error = build(&config.envs[1]).err().unwrap().to_string();
    assert!(error.contains("gsm8k/test.jsonl"), "{error}");
    let error = build(&EnvSpec::new("chess")).err().unwrap().to_string();
    assert!(
        error.contains("chess") && error.contains("gsm8k"),
        "{error}"
    );
}

/// A uniformly random byte-level policy (256 bytes + end token, at most 16 tokens) must already
/// see reward differences inside most groups of 16, or GRPO would have no signal at step 0.
#[test]
fn arith_random_policy_groups_have_reward_variance() {
    use grail_envs::rng::SplitMix64;
    for spec in [
        EnvSpec::new("arith"),
        EnvSpec::new("arith").with_param("mode", "copy"),
    ] {
        let env = build(&spec).unwrap();
        let mut rng = SplitMix64::new(99);
        let groups = 300;
        let mut with_variance = 0;
        let mut mean = 0.0f32;
        for seed in 0..groups {
            let problem = env.problem(seed);
            let rewards: Vec<f32> = (0..16)
                .map(|_| {
                    let mut bytes = Vec::new();
                    for _ in 0..16 {
                        let token = rng.below(257);
                        if token == 256 {
                            break; // end of turn
                        }
                        bytes.push(token as u8);
                    }
                    env.score(&problem, &String::from_utf8_lossy(&bytes)).total
                })
                .collect();
            mean += rewards.iter().sum::<f32>() / 16.0;
            if rewards.iter().any(|reward| *reward != rewards[0]) {
                with_variance += 1;
            }
        }
        let share = with_variance as f64 / groups as f64;
        println!(
            "{:?}: {:.1}% of random groups have reward variance, mean reward {:.4}",
            spec.params,
            100.0 * share,
            mean / groups as f32
        );
        assert!(
            share > 0.9,
            "only {:.1}% of groups have variance",
            100.0 * share
        );
    }
}
