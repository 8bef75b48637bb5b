//! Train and eval splits never overlap: procedural envs draw eval problems from a
//! domain-separated seed space, data envs from held-out rows (checked by problem id and by the
//! prompt text itself). The data-backed tests fail (never skip) without `../shared/datasets`.

mod common;

use common::data_dir_or_fail;
use grail_envs::{build, EnvSpec, Environment, Problem, Split};
use std::collections::HashSet;
use std::sync::Arc;

fn load(id: &str, dir: Option<&std::path::Path>, params: &[(&str, &str)]) -> Arc<dyn Environment> {
    let mut spec = EnvSpec::new(id);
    if let Some(dir) = dir {
        spec = spec.with_data_dir(dir);
    }
    for (key, value) in params {
        spec = spec.with_param(key, *value);
    }
    build(&spec).unwrap_or_else(|error| panic!("{id}: {error}"))
}

/// The user message: the part of a problem that makes it the same task.
fn prompt(problem: &Problem) -> String {
    problem
        .messages
        .iter()
        .filter(|message| message.role == "user")
        .map(|message| message.content.clone())
        .collect()
}

/// Every training row (`seed mod N` visits each once) and every eval row.
fn all_problems(env: &dyn Environment) -> (Vec<Problem>, Vec<Problem>) {
    let train_len = env.num_problems().expect("data env");
    let eval_len = env.eval_len().expect("data env");
    (
        (0..train_len).map(|seed| env.problem(seed)).collect(),
        (0..eval_len).map(|index| env.eval_problem(index)).collect(),
    )
}

/// Asserts the two splits share no problem id and no prompt; returns their sizes.
fn assert_disjoint(env: &dyn Environment) -> (usize, usize) {
    assert!(!env.train_overlaps_eval(), "{}: default split", env.id());
    let (train, eval) = all_problems(env);
    let train_ids: HashSet<&str> = train.iter().map(|p| p.id.as_str()).collect();
    let train_prompts: HashSet<String> = train.iter().map(prompt).collect();
    let eval_ids: HashSet<&str> = eval.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        eval_ids.len(),
        eval.len(),
        "{}: eval ids are unique",
        env.id()
    );
    for problem in &eval {
        assert!(
            !train_ids.contains(problem.id.as_str()),
            "{}: eval id {} is also a training id",
            env.id(),
            problem.id
        );
        assert!(
            !train_prompts.contains(&prompt(problem)),
            "{}: eval problem {} has the prompt of a training problem",
            env.id(),
            problem.id
        );
    }
    (train.len(), eval.len())
}

#[test]
fn split_parses_and_names_the_fix() {
    assert_eq!("train".parse::<Split>().unwrap(), Split::Train);
    assert_eq!("eval".parse::<Split>().unwrap(), Split::Eval);
    let error = "test".parse::<Split>().unwrap_err().to_string();
    assert!(
        error.contains("`test`") && error.contains("`eval`"),
        "{error}"
    );
    assert_eq!(Split::Eval.to_string(), "eval");
}

#[test]
fn procedural_eval_streams_are_domain_separated_and_deterministic() {
    for id in ["arith", "sat"] {
        let env = load(id, None, &[]);
        assert_eq!(env.eval_len(), None, "{id} is procedural");
        assert!(!env.train_overlaps_eval());
        assert_eq!(env.eval_problem(3), env.eval_problem(3));
        assert_eq!(env.split_problem(Split::Eval, 3), env.eval_problem(3));
        assert_eq!(env.split_problem(Split::Train, 3), env.problem(3));
        assert!(
            env.eval_problem(3).id.starts_with(&format!("{id}/eval/3/"))
                || env.eval_problem(3).id == format!("{id}/eval/3")
        );
        // Same number, different stream: eval index n never replays training seed n.
        let differing = (0..200)
            .filter(|n| prompt(&env.problem(*n)) != prompt(&env.eval_problem(*n)))
            .count();
        assert!(differing > 150, "{id}: only {differing}/200 differ");
    }
}

#[test]
fn sat_eval_instances_are_never_training_instances() {
    let env = load("sat", None, &[]);
    let train: HashSet<String> = (0..20_000u64)
        .map(|seed| prompt(&env.problem(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))))
        .collect();
    let eval: HashSet<String> = (0..20_000).map(|i| prompt(&env.eval_problem(i))).collect();
    assert!(train.len() > 19_000 && eval.len() > 19_000);
    assert_eq!(train.intersection(&eval).count(), 0);
}

#[test]
fn gsm8k_train_and_test_are_disjoint() {
    let dir = data_dir_or_fail("gsm8k/test.jsonl");
    let env = load("gsm8k", Some(&dir), &[]);
    assert_eq!(assert_disjoint(env.as_ref()), (7473, 1319));
    assert!(env.eval_problem(0).id.starts_with("gsm8k/test/"));
    let reference = env.reference_completion(&env.eval_problem(7)).unwrap();
    assert!(env.score(&env.eval_problem(7), &reference).success);
    assert!(load("gsm8k", Some(&dir), &[("split", "test")]).train_overlaps_eval());
}

#[test]
fn math_train_excludes_math500() {
    let dir = data_dir_or_fail("math/math500_test.jsonl");
    let env = load("math", Some(&dir), &[]);
    assert_eq!(assert_disjoint(env.as_ref()), (4500, 500));
    assert!(env.eval_problem(0).id.starts_with("math/math500/"));
    let reference = env.reference_completion(&env.eval_problem(11)).unwrap();
    assert!(env.score(&env.eval_problem(11), &reference).success);
    for split in ["math500", "test"] {
        assert!(load("math", Some(&dir), &[("split", split)]).train_overlaps_eval());
    }
}

#[test]
fn mbpp_train_601_974_and_test_11_510_are_disjoint() {
    let dir = data_dir_or_fail("mbpp/mbpp.jsonl");
    let env = load("mbpp", Some(&dir), &[]);
    assert_eq!(assert_disjoint(env.as_ref()), (374, 500));
    let task_id = |p: &Problem| p.target["task_id"].as_u64().unwrap();
    let (train, eval) = all_problems(env.as_ref());
    assert!(train.iter().all(|p| (601..=974).contains(&task_id(p))));
    assert!(eval.iter().all(|p| (11..=510).contains(&task_id(p))));
    for split in ["test", "all"] {
        assert!(load("mbpp", Some(&dir), &[("split", split)]).train_overlaps_eval());
    }
    for split in ["validation", "prompt"] {
        assert!(!load("mbpp", Some(&dir), &[("split", split)]).train_overlaps_eval());
    }
}

#[test]
fn humaneval_is_eval_only() {
    let dir = data_dir_or_fail("humaneval/HumanEval.jsonl.gz");
    let env = load("humaneval", Some(&dir), &[]);
    assert_eq!(env.eval_len(), Some(164));
    assert!(env.train_overlaps_eval(), "humaneval has no train split");
    let ids: HashSet<String> = (0..164).map(|i| env.eval_problem(i).id).collect();
    assert_eq!(ids.len(), 164);
}

/// The config-time check (`trains_on_eval`, from id and params, no data) agrees with the
/// loaded envs' `train_overlaps_eval` for every split of every data env, and of the procedural ones.
#[test]
fn the_config_check_agrees_with_the_loaded_envs() {
    let dir = data_dir_or_fail("humaneval/HumanEval.jsonl.gz");
    let cases: &[(&str, &[&str])] = &[
        ("gsm8k", &["train", "test"]),
        ("math", &["train", "math500", "test"]),
        ("mbpp", &["train", "test", "validation", "prompt", "all"]),
        ("humaneval", &[]),
        ("arith", &[]),
        ("sat", &[]),
    ];
    let mut refused = 0;
    for (id, splits) in cases {
        let mut params: Vec<Vec<(&str, &str)>> =
            splits.iter().map(|s| vec![("split", *s)]).collect();
        params.push(vec![]);
        for params in params {
            let env = load(id, Some(&dir), &params);
            let mut spec = EnvSpec::new(id);
            for (key, value) in &params {
                spec = spec.with_param(key, *value);
            }
            let check = grail_envs::trains_on_eval(&spec);
            assert_eq!(
                check.is_some(),
                env.train_overlaps_eval(),
                "{id} {params:?}: {check:?}"
            );
            refused += usize::from(check.is_some());
        }
    }
    assert_eq!(
        refused, 6,
        "gsm8k test, math math500/test, mbpp test/all, humaneval"
    );
}
