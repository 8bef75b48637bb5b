//! `mbpp`: Mostly Basic Python Problems (Austin et al. 2021), `mbpp/mbpp.jsonl`.
//!
//! Parameter `split` by `task_id` (the paper's convention): `train` (601–974, default), `test`
//! (11–510), `validation` (511–600), `prompt` (1–10), `all`. Plus the sandbox parameters of
//! [`super`]. Digest = BLAKE2b-256 of `mbpp.jsonl`; problem id `mbpp/<task_id>`.
//!
//! # Split
//! The paper's split (Austin et al. 2021, §2.1, and the HF `mbpp` "full" config): task ids 1–10
//! are few-shot prompts, 11–510 test, 511–600 validation, 601–974 train. Train = the `split`
//! parameter (default `train`, 374 tasks); eval = `test` (500 tasks, `eval_problem(i)` = the
//! `i mod 500`-th by task id). `split = "test"` or `"all"` trains on eval tasks
//! ([`crate::Environment::train_overlaps_eval`]).
//!
//! Prompt: the task text, the tested function's signature (the `def` line of the reference
//! solution) and the first test as an example. Tests: `test_setup_code` as setup, then every
//! `test_list` assert separately, in the trusted harness (see [`super`]); the entry point (the
//! signature's function, which may shadow a builtin: task 126's `sum`) and every other name the
//! tests take from the solution (task 601's `Pair`, 367's and 927's `Node`) are proxies to it.

use super::{code_env, CodeEnv, CodeTask, SandboxSettings, SANDBOX_PARAMS};
use crate::data::{self, parse_jsonl, resolve};
use crate::params::Params;
use crate::EnvError;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::path::Path;

#[derive(Deserialize)]
struct Row {
    task_id: u64,
    text: String,
    code: String,
    #[serde(default)]
    test_setup_code: String,
    test_list: Vec<String>,
}

/// Loads the MBPP environment.
pub fn load(data_dir: Option<&Path>, raw: &Map<String, Value>) -> Result<CodeEnv, EnvError> {
    let mut allowed = vec!["split"];
    allowed.extend(SANDBOX_PARAMS);
    let params = Params::new("mbpp", raw, &allowed)?;
    let split = params.choice(
        "split",
        "train",
        &["train", "test", "validation", "prompt", "all"],
    )?;
    let range = match split.as_str() {
        "test" => EVAL_TASK_IDS,
        "validation" => 511..=600,
        "prompt" => 1..=10,
        "all" => 0..=u64::MAX,
        _ => 601..=974,
    };
    let path = resolve("mbpp", data_dir, "mbpp/mbpp.jsonl")?;
    let bytes = data::read_bytes(&path)?;
    let rows: Vec<Row> = parse_jsonl(&path, &bytes)?;
    let tasks = tasks_in(&rows, &range, &path)?;
    if tasks.is_empty() {
        return Err(EnvError::EmptyDataset {
            path,
            detail: format!(" for split `{split}`"),
        });
    }
    let eval_tasks = tasks_in(&rows, &EVAL_TASK_IDS, &path)?;
    let overlaps_eval =
        range.start() <= EVAL_TASK_IDS.end() && EVAL_TASK_IDS.start() <= range.end();
    let settings = SandboxSettings::from_params(&params, raw)?;
    Ok(code_env(
        "mbpp",
        tasks,
        Some(eval_tasks),
        overlaps_eval,
        data::blake2b256(&[&bytes]),
        settings,
    ))
}

/// The eval split's task ids (the paper's test split).
pub const EVAL_TASK_IDS: std::ops::RangeInclusive<u64> = 11..=510;

/// The tasks whose id is in `range`, in file order.
fn tasks_in(
    rows: &[Row],
    range: &std::ops::RangeInclusive<u64>,
    path: &Path,
) -> Result<Vec<CodeTask>, EnvError> {
    let mut tasks = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        if !range.contains(&row.task_id) {
            continue;
        }
        let code = row.code.replace("\r\n", "\n");
        let signature =
            tested_signature(&code, &row.test_list).ok_or_else(|| EnvError::DataRow {
                path: path.to_path_buf(),
                line: index + 1,
                message: "the reference `code` has no `def` line".to_string(),
            })?;
        let entry_point = signature
            .strip_prefix("def ")
            .and_then(|rest| rest.split('(').next())
            .map(str::trim)
            .unwrap_or_default()
            .to_string();
        let example = row.test_list.first().cloned().unwrap_or_default();
        tasks.push(CodeTask {
            id: format!("mbpp/{}", row.task_id),
            user_prompt: format!(
                "{}\n\nWrite it as a Python function with this signature:\n```python\n{signature}\n```\nIt must pass tests such as:\n```python\n{example}\n```",
                row.text.trim()
            ),
            target: json!({
                "task_id": row.task_id,
                "asserts": row.test_list,
                "setup": row.test_setup_code.replace("\r\n", "\n"),
                "entry_point": entry_point,
            }),
            reference: format!("```python\n{code}\n```"),
        });
    }
    Ok(tasks)
}

/// The `def` line of the function the first test calls (`f(` or `f (`), else the first `def`.
fn tested_signature(code: &str, tests: &[String]) -> Option<String> {
    let first_test = tests.first()?;
    let defs: Vec<(&str, &str)> = code
        .lines()
        .filter_map(|line| {
            let name = line.strip_prefix("def ")?.split('(').next()?.trim();
            Some((name, line.trim_end()))
        })
        .collect();
    let called = |name: &str| {
        first_test.match_indices(name).any(|(position, _)| {
            let before_ok = first_test[..position]
                .chars()
                .last()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            let after = first_test[position + name.len()..].trim_start();
            before_ok && after.starts_with('(')
        })
    };
    defs.iter()
        .find(|(name, _)| called(name))
        .or(defs.first())
        .map(|(_, line)| line.to_string())
}
