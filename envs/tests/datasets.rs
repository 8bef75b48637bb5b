//! gsm8k / math / mbpp / humaneval against the real data in `../shared/datasets`: digests,
//! determinism, references score full reward, wrong answers score zero. The mbpp/humaneval tests
//! fail when the data is absent (they guard the code rewards); gsm8k/math ones still skip.

mod common;

use common::{blake2b256_file, data_dir_or_fail, data_file, spread};
use grail_envs::{build, EnvSpec, Environment};
use std::sync::Arc;

fn load(id: &str, dir: &std::path::Path, params: &[(&str, &str)]) -> Arc<dyn Environment> {
    let mut spec = EnvSpec::new(id).with_data_dir(dir);
    for (key, value) in params {
        spec = spec.with_param(key, *value);
    }
    build(&spec).unwrap_or_else(|error| panic!("{id}: {error}"))
}

fn assert_deterministic(env: &dyn Environment) {
    let n = env.num_problems().unwrap();
    assert_eq!(env.problem(5), env.problem(5));
    assert_eq!(
        env.problem(5),
        env.problem(5 + n),
        "seed mod N picks the row"
    );
    assert_ne!(env.problem(5).id, env.problem(6).id);
    assert_ne!(env.problem(5).messages, env.problem(6).messages);
}

#[test]
fn gsm8k_references_score_full_and_wrong_answers_zero() {
    let Some(dir) = data_file("gsm8k/test.jsonl") else {
        return;
    };
    for split in ["test", "train"] {
        let env = load("gsm8k", &dir, &[("split", split)]);
        assert_eq!(
            env.data_digest(),
            Some(blake2b256_file(&dir.join(format!("gsm8k/{split}.jsonl"))))
        );
        assert_deterministic(env.as_ref());
        let n = env.num_problems().unwrap();
        assert_eq!(n, if split == "test" { 1319 } else { 7473 });
        for seed in 0..n {
            let problem = env.problem(seed);
            let reference = env.reference_completion(&problem).unwrap();
            let reward = env.score(&problem, &reference);
            assert!(
                reward.success && (reward.total - 1.0).abs() < 1e-6,
                "{}: {reward:?}",
                problem.id
            );
            let gold: f64 = problem.target["answer"].as_str().unwrap().parse().unwrap();
            for wrong in [format!("{}", gold + 1.0), "no idea".to_string()] {
                let reward = env.score(&problem, &wrong);
                assert_eq!(reward.total, 0.0, "{}: {wrong}", problem.id);
            }
            let reward = env.score(&problem, &format!("So the total is \\boxed{{{gold}}}."));
            assert!(reward.success, "{}", problem.id);
        }
    }
}

#[test]
fn math_references_score_full_on_every_split() {
    let Some(dir) = data_file("math/math500_test.jsonl") else {
        return;
    };
    for (split, expected) in [("math500", 500), ("train", 4500), ("test", 5000)] {
        let env = load("math", &dir, &[("split", split)]);
        assert_eq!(env.num_problems(), Some(expected), "{split}");
        assert_deterministic(env.as_ref());
        let mut failures = Vec::new();
        for seed in 0..expected {
            let problem = env.problem(seed);
            let reference = env.reference_completion(&problem).unwrap();
            let reward = env.score(&problem, &reference);
            if !(reward.success && (reward.total - 1.0).abs() < 1e-6) {
                failures.push(problem.id.clone());
            }
        }
        println!(
            "math/{split}: {}/{expected} references score 1.0",
            expected - failures.len() as u64
        );
        assert!(failures.is_empty(), "{split}: {failures:?}");
    }
    let subset = dir.join("math/math500_test.jsonl");
    let env = load("math", &dir, &[("split", "math500")]);
    assert_eq!(env.data_digest(), Some(blake2b256_file(&subset)));
}

#[test]
fn math500_answers_match_reformatted_versions_of_themselves() {
    let Some(dir) = data_file("math/math500_test.jsonl") else {
        return;
    };
    let env = load("math", &dir, &[("split", "math500")]);
    for seed in 0..500 {
        let problem = env.problem(seed);
        let answer = problem.target["answer"].as_str().unwrap().to_string();
        // Spacing, delimiter sizing and fraction style must not matter.
        let variant = answer
            .replace(',', ", ")
            .replace("\\frac", "\\dfrac")
            .replace('(', "\\left(")
            .replace(')', "\\right)");
        for completion in [
            format!("Thus the answer is $\\boxed{{{answer}}}$."),
            format!("<SOLUTION>{variant}</SOLUTION>"),
            format!("\\boxed{{ {variant} }}"),
        ] {
            let reward = env.score(&problem, &completion);
            assert!(reward.success, "{}: {completion} -> {reward:?}", problem.id);
        }
        let wrong = env.score(&problem, "\\boxed{\\text{I do not know}}");
        assert_eq!(wrong.component("correct"), Some(0.0), "{}", problem.id);
        assert_eq!(env.score(&problem, "").total, 0.0);
    }
}

fn check_code_references(
    id: &str,
    dir: &std::path::Path,
    params: &[(&str, &str)],
    seeds: &[u64],
) -> (usize, Vec<String>) {
    let env = load(id, dir, params);
    let mut failures = Vec::new();
    for seed in seeds {
        let problem = env.problem(*seed);
        let reference = env.reference_completion(&problem).unwrap();
        let reward = env.score(&problem, &reference);
        if !(reward.success && (reward.total - 1.0).abs() < 1e-6) {
            failures.push(format!("{}: {:?}", problem.id, reward.reason));
        }
    }
    (seeds.len() - failures.len(), failures)
}

#[test]
fn mbpp_sample_of_canonical_solutions_pass_in_the_sandbox() {
    let dir = data_dir_or_fail("mbpp/mbpp.jsonl");
    let env = load("mbpp", &dir, &[("split", "test")]);
    assert_eq!(env.num_problems(), Some(500));
    assert_eq!(
        env.data_digest(),
        Some(blake2b256_file(&dir.join("mbpp/mbpp.jsonl")))
    );
    assert_deterministic(env.as_ref());
    let (passed, failures) =
        check_code_references("mbpp", &dir, &[("split", "test")], &spread(500, 20));
    assert!(failures.is_empty(), "{passed}/20 passed; {failures:?}");
    let problem = env.problem(0);
    for bad in [
        "",
        "```python\ndef nothing():\n    return None\n```",
        "I don't know",
    ] {
        let reward = env.score(&problem, bad);
        assert_eq!(reward.component("tests"), Some(0.0), "{bad:?}");
        assert!(!reward.success && reward.reason.is_some());
    }
    assert_eq!(env.score(&problem, "I don't know").total, 0.0);
}

#[test]
fn humaneval_sample_of_canonical_solutions_pass_in_the_sandbox() {
    let dir = data_dir_or_fail("humaneval/HumanEval.jsonl.gz");
    let env = load("humaneval", &dir, &[]);
    assert_eq!(env.num_problems(), Some(164));
    assert_eq!(
        env.data_digest(),
        Some(blake2b256_file(&dir.join("humaneval/HumanEval.jsonl.gz")))
    );
    assert_deterministic(env.as_ref());
    let (passed, failures) = check_code_references("humaneval", &dir, &[], &spread(164, 20));
    assert!(failures.is_empty(), "{passed}/20 passed; {failures:?}");
    // A body-only continuation (base-model style) is completed onto the stub.
    let problem = env.problem(0);
    let body = "    for i, a in enumerate(numbers):\n        for j, b in enumerate(numbers):\n            if i != j and abs(a - b) < threshold:\n                return True\n    return False\n";
    let reward = env.score(&problem, body);
    assert!(
        reward.success && reward.component("format") == Some(0.0),
        "{reward:?}"
    );
    // A wrong function passes only some tests.
    let wrong = env.score(
        &problem,
        "```python\ndef has_close_elements(numbers, threshold):\n    return True\n```",
    );
    let tests = wrong.component("tests").unwrap();
    assert!(!wrong.success && tests > 0.0 && tests < 0.9, "{wrong:?}");
}

#[test]
#[ignore = "runs every MBPP and HumanEval canonical solution (~1 min); reports the fraction"]
fn all_canonical_solutions_pass() {
    let dir = data_dir_or_fail("mbpp/mbpp.jsonl");
    data_dir_or_fail("humaneval/HumanEval.jsonl.gz");
    let seeds: Vec<u64> = (0..974).collect();
    let (passed, failures) = check_code_references("mbpp", &dir, &[("split", "all")], &seeds);
    println!("mbpp: {passed}/974 canonical solutions pass; failures: {failures:#?}");
    let seeds: Vec<u64> = (0..164).collect();
    let (he_passed, he_failures) = check_code_references("humaneval", &dir, &[], &seeds);
    println!("humaneval: {he_passed}/164 canonical solutions pass; failures: {he_failures:#?}");
    // Measured 974/974 and 164/164 before and after the trusted-harness split (issue 18).
    assert!(passed == 974 && he_passed == 164);
}
