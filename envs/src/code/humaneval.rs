//! `humaneval`: OpenAI HumanEval, `humaneval/HumanEval.jsonl.gz` (164 tasks, one split).
//!
//! Digest = BLAKE2b-256 of the `.gz` file as stored; problem id `HumanEval/<n>`. Prompt: the
//! function stub (signature + docstring) to complete. The program run is the stub followed by
//! the extracted code: a completion that re-defines the function replaces the stub (helpers the
//! stub defines stay available), one that only continues the body completes it. Tests: each
//! assert-bearing statement of `check(candidate)`, with `candidate` bound to a proxy of the
//! entry point; they run in the trusted harness (see [`super`]), with the stub's own helpers
//! (e.g. `poly`, `encode_cyclic`), never the completion's.
//!
//! # Split
//! HumanEval is an evaluation set only: `eval_problem(i)` is task `i mod 164`. It has no train
//! split; `problem(seed)` still returns its tasks (for reference checks and tests), and
//! [`crate::Environment::train_overlaps_eval`] is `true` so nobody trains on it unawares.

use super::{code_env, CodeEnv, CodeTask, SandboxSettings, SANDBOX_PARAMS};
use crate::data::{self, parse_jsonl, resolve};
use crate::params::Params;
use crate::EnvError;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::path::Path;

#[derive(Deserialize)]
struct Row {
    task_id: String,
    prompt: String,
    entry_point: String,
    canonical_solution: String,
    test: String,
}

/// Loads the HumanEval environment (parameters: the sandbox parameters of [`super`]).
pub fn load(data_dir: Option<&Path>, raw: &Map<String, Value>) -> Result<CodeEnv, EnvError> {
    let params = Params::new("humaneval", raw, &SANDBOX_PARAMS)?;
    let path = resolve("humaneval", data_dir, "humaneval/HumanEval.jsonl.gz")?;
    let bytes = data::read_bytes(&path)?;
    let rows: Vec<Row> = parse_jsonl(&path, &data::gunzip(&path, &bytes)?)?;
    let tasks = rows
        .into_iter()
        .map(|row| CodeTask {
            id: row.task_id.clone(),
            user_prompt: format!(
                "Complete the following Python function. Reply with the complete function (signature included) in a ```python code block.\n\n```python\n{}```",
                row.prompt
            ),
            reference: format!("```python\n{}{}```", row.prompt, row.canonical_solution),
            target: json!({
                "task_id": row.task_id,
                "prompt": row.prompt,
                "entry_point": row.entry_point,
                "check_source": row.test,
            }),
        })
        .collect();
    let settings = SandboxSettings::from_params(&params, raw)?;
    Ok(code_env(
        "humaneval",
        tasks,
        None,
        true,
        data::blake2b256(&[&bytes]),
        settings,
    ))
}

/// The program to run for `code` (see the module docs); `None` if the target lacks the stub.
pub(crate) fn program(target: &Value, code: &str) -> Option<String> {
    let prompt = target.get("prompt")?.as_str()?;
    let entry_point = target.get("entry_point")?.as_str()?;
    let defines_entry_point = code.contains(&format!("def {entry_point}("));
    Some(if defines_entry_point {
        format!("{prompt}\n    pass\n\n{code}")
    } else {
        format!("{prompt}{code}")
    })
}
