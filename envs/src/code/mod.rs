//! Python code-generation environments (`mbpp`, `humaneval`) scored in the [`crate::sandbox`].
//!
//! # Reward
//! The code is [`crate::parse::extract_code`] of the completion (last ```python block, or the
//! `<SOLUTION>` content, or the raw text). One sandboxed process runs it, then every test
//! separately (MBPP: each `assert` of `test_list`; HumanEval: each assert-bearing statement of
//! `check(candidate)`, trivially true `assert True` lines excluded), each with its own timeout.
//! * `tests` (0.9): fraction of tests passed.
//! * `format` (0.1): the code was in a fenced block or `<SOLUTION>` tag.
//!
//! `success` = every test passed. Syntax errors, crashes while loading, timeouts, and code larger
//! than 256 KiB pass no test (reason given). A sandbox infrastructure failure (cannot spawn
//! python) also scores 0 with a reason starting `sandbox error`.

pub mod humaneval;
pub mod mbpp;

use crate::params::Params;
use crate::parse::extract_code;
use crate::sandbox::{Exit, Sandbox, SandboxConfig};
use crate::{ChatMessage, EnvError, Environment, Problem, Reward};
use serde_json::{json, Map, Value};
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const COMPONENTS: [&str; 2] = ["tests", "format"];
const WEIGHT_TESTS: f32 = 0.9;
const WEIGHT_FORMAT: f32 = 0.1;
/// Longer extracted code is rejected without running it.
pub const MAX_CODE_BYTES: usize = 256 << 10;
const HARNESS: &str = include_str!("../sandbox/harness.py");

const SYSTEM_PROMPT: &str = "You are an expert Python programmer. Reply with the complete solution in a single ```python code block.";

/// Sandbox parameters shared by the code environments: `test_timeout_s` (per test, default
/// 3.0), `memory_mb` (default 1024), `python` (interpreter, default `python3`).
pub(crate) const SANDBOX_PARAMS: [&str; 3] = ["test_timeout_s", "memory_mb", "python"];

pub(crate) struct SandboxSettings {
    sandbox: Arc<Sandbox>,
    test_timeout_s: f64,
}

impl SandboxSettings {
    pub(crate) fn from_params(
        params: &Params<'_>,
        raw: &Map<String, Value>,
    ) -> Result<SandboxSettings, EnvError> {
        let test_timeout_s = params.f64_in("test_timeout_s", 3.0, 0.1, 60.0)?;
        let memory_mb = params.u64_in("memory_mb", 1024, 64, 1 << 20)?;
        let python = match raw.get("python") {
            None => PathBuf::from("python3"),
            Some(Value::String(path)) => PathBuf::from(path),
            Some(other) => {
                return Err(EnvError::BadParam {
                    env: "code".to_string(),
                    key: "python".to_string(),
                    message: format!("must be a path string, got {other}"),
                })
            }
        };
        let sandbox = Sandbox::new(SandboxConfig {
            python,
            memory_bytes: memory_mb << 20,
            ..SandboxConfig::default()
        })?;
        Ok(SandboxSettings {
            sandbox: Arc::new(sandbox),
            test_timeout_s,
        })
    }
}

/// One code task: the prompt and the self-contained scoring target.
pub(crate) struct CodeTask {
    pub id: String,
    pub user_prompt: String,
    pub target: Value,
    pub reference: String,
}

/// A code environment over a list of tasks.
pub struct CodeEnv {
    id: &'static str,
    tasks: Vec<CodeTask>,
    digest: [u8; 32],
    settings: SandboxSettings,
}

impl CodeEnv {
    /// The sandbox completions run in (capabilities, interpreter).
    pub fn sandbox(&self) -> &Sandbox {
        &self.settings.sandbox
    }
}

impl Environment for CodeEnv {
    fn id(&self) -> &str {
        self.id
    }

    fn problem(&self, seed: u64) -> Problem {
        let row = crate::data::row_for_seed(seed, self.tasks.len());
        let task = &self.tasks[row];
        let mut target = task.target.clone();
        if let Some(object) = target.as_object_mut() {
            object.insert("row".to_string(), json!(row));
        }
        Problem {
            env: self.id.to_string(),
            id: task.id.clone(),
            messages: vec![
                ChatMessage::system(SYSTEM_PROMPT),
                ChatMessage::user(task.user_prompt.clone()),
            ],
            target,
        }
    }

    fn score(&self, problem: &Problem, completion: &str) -> Reward {
        let extracted = extract_code(completion);
        let format = if extracted.marked { WEIGHT_FORMAT } else { 0.0 };
        let program = match self.id {
            "humaneval" => humaneval::program(&problem.target, &extracted.code),
            _ => Some(extracted.code),
        };
        let Some(program) = program else {
            return Reward::zero(
                &COMPONENTS,
                "problem target is missing the task's prompt or tests",
            );
        };
        reward(
            run_tests(
                &self.settings.sandbox,
                self.settings.test_timeout_s,
                &problem.target,
                &program,
            ),
            format,
        )
    }

    fn data_digest(&self) -> Option<[u8; 32]> {
        Some(self.digest)
    }

    fn num_problems(&self) -> Option<u64> {
        Some(self.tasks.len() as u64)
    }

    fn reference_completion(&self, problem: &Problem) -> Option<String> {
        let row = problem.target.get("row")?.as_u64()? as usize;
        self.tasks.get(row).map(|task| task.reference.clone())
    }
}

fn reward((passed, total, reason): (usize, usize, Option<String>), format: f32) -> Reward {
    let fraction = if total == 0 {
        0.0
    } else {
        passed as f32 / total as f32
    };
    let success = total > 0 && passed == total;
    Reward::from_components(
        vec![("tests", WEIGHT_TESTS * fraction), ("format", format)],
        success,
        reason,
    )
}

/// Scores a completion against plain `assert` lines (run after `setup`), exactly like `mbpp`
/// does; for custom code tasks and tests.
pub fn score_python(
    sandbox: &Sandbox,
    test_timeout_s: f64,
    setup: &str,
    asserts: &[&str],
    completion: &str,
) -> Reward {
    let extracted = extract_code(completion);
    let format = if extracted.marked { WEIGHT_FORMAT } else { 0.0 };
    let target = json!({ "asserts": asserts, "setup": setup });
    reward(
        run_tests(sandbox, test_timeout_s, &target, &extracted.code),
        format,
    )
}

/// Runs `program` against the tests in `target`; returns (passed, total, reason).
fn run_tests(
    sandbox: &Sandbox,
    test_timeout_s: f64,
    target: &Value,
    program: &str,
) -> (usize, usize, Option<String>) {
    let expected_total = target
        .get("asserts")
        .and_then(Value::as_array)
        .map(Vec::len);
    if program.len() > MAX_CODE_BYTES {
        return (
            0,
            expected_total.unwrap_or(0),
            Some(format!(
                "code is {} bytes, limit {MAX_CODE_BYTES}",
                program.len()
            )),
        );
    }
    let spec = json!({
        "asserts": target.get("asserts").cloned().unwrap_or(json!([])),
        "setup": target.get("setup").cloned().unwrap_or(json!("")),
        "check_source": target.get("check_source").cloned().unwrap_or(Value::Null),
        "entry_point": target.get("entry_point").cloned().unwrap_or(Value::Null),
        "test_timeout_s": test_timeout_s,
    });
    let approx_tests = expected_total.unwrap_or_else(|| {
        target
            .get("check_source")
            .and_then(Value::as_str)
            .map_or(1, |source| source.matches("assert").count())
    });
    // Loading + every test may each use the per-test budget; then 2 s for interpreter start-up.
    let wall = (test_timeout_s * (approx_tests as f64 + 1.0) + 2.0).min(120.0);
    let mut config_sandbox = sandbox.config().clone();
    config_sandbox.wall_timeout = Duration::from_secs_f64(wall);
    let nonce = format!(
        "{:016x}",
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    );
    let spec_bytes = spec.to_string().into_bytes();
    let output = sandbox.run_with(
        &config_sandbox,
        HARNESS,
        &[
            ("solution.py", program.as_bytes()),
            ("spec.json", &spec_bytes),
        ],
        format!("{nonce}\n").as_bytes(),
    );
    let output = match output {
        Ok(output) => output,
        Err(error) => {
            return (
                0,
                expected_total.unwrap_or(0),
                Some(format!("sandbox error: {error}")),
            )
        }
    };
    let results = String::from_utf8_lossy(&output.results);
    let mut total = expected_total;
    let mut passed = std::collections::BTreeSet::new();
    let mut first_problem: Option<String> = None;
    let mut done = false;
    for line in results.lines() {
        let Some(message) = line
            .strip_prefix(nonce.as_str())
            .and_then(|rest| rest.strip_prefix(' '))
        else {
            continue;
        };
        let mut words = message.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("total"), Some(count), _) if total.is_none() => total = count.parse().ok(),
            (Some("test"), Some(index), Some(outcome)) => {
                let Ok(index) = index.parse::<usize>() else {
                    continue;
                };
                if outcome == "pass" {
                    passed.insert(index);
                } else if first_problem.is_none() {
                    first_problem = Some(format!("test {index}: {outcome}"));
                }
            }
            (Some("done"), _, _) => done = true,
            (Some(kind), _, _) if kind.ends_with("_error") => {
                first_problem.get_or_insert_with(|| message.chars().take(240).collect());
            }
            _ => {}
        }
    }
    let total = total.unwrap_or(0);
    let passed = passed.into_iter().filter(|index| *index < total).count();
    let reason = if passed == total && total > 0 && done {
        None
    } else {
        let exit = match output.exit {
            Exit::TimedOut => format!("; killed after the {wall:.1} s wall-clock limit"),
            Exit::Signal(signal) => format!("; killed by signal {signal}"),
            Exit::Code(0) => String::new(),
            Exit::Code(code) => format!("; exit code {code}"),
        };
        let detail = first_problem.unwrap_or_else(|| {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: String = stderr
                .lines()
                .last()
                .unwrap_or("no result")
                .chars()
                .take(200)
                .collect();
            format!("harness reported nothing ({tail})")
        });
        Some(format!("{passed}/{total} tests passed; {detail}{exit}"))
    };
    (passed, total, reason)
}

/// Shared loader pieces.
pub(crate) fn code_env(
    id: &'static str,
    tasks: Vec<CodeTask>,
    digest: [u8; 32],
    settings: SandboxSettings,
) -> CodeEnv {
    CodeEnv {
        id,
        tasks,
        digest,
        settings,
    }
}
