//! Python code-generation environments (`mbpp`, `humaneval`) scored in the [`crate::sandbox`].
//!
//! # Reward
//! The code is [`crate::parse::extract_code`] of the completion (last ```python block, or the
//! `<SOLUTION>` content, or the raw text). Tests: MBPP: each `assert` of `test_list`, after
//! `test_setup_code`; HumanEval: each assert-bearing statement of `check(candidate)` (trivially
//! true `assert True` lines excluded), each with its own time budget (`test_timeout_s`).
//! * `tests` (0.9): fraction of tests passed.
//! * `format` (0.1): the code was in a fenced block or `<SOLUTION>` tag.
//!
//! `success` = every test passed. Anything else scores the tests it passed, with a typed
//! [`CodeFailure`] (its text is `Reward::reason`): code over 256 KiB (not run), syntax error,
//! crash or timeout while loading, missing entry point, a test failing ([`TestOutcome`]: false
//! assert, exception, timeout, non-plain result, broken channel), the run cut short, or a sandbox
//! infrastructure failure (`sandbox error`, cannot spawn python).
//!
//! # What is trusted, and why a completion cannot forge a pass
//! Verifiers recompute these rewards, so the reward must depend only on what the completion's
//! functions *return*, never on what its code does to the process judging it. Each scoring run
//! is two sandboxed processes ([`crate::sandbox::Sandbox::run_pair`]):
//!
//! * The **trusted harness** (`sandbox/harness.py`) runs only dataset code: the tests, MBPP's
//!   setup, HumanEval's stub (whose helpers, e.g. `poly`, the tests use) and `check`. It alone
//!   reports results, as `<nonce> test <i> <outcome>` lines on a descriptor only the parent
//!   reads; the nonce is fresh per run and reaches it on stdin. It is sandboxed like the
//!   candidate (it runs dataset code, which is not ours either).
//! * The **candidate** (`sandbox/candidate.py`) runs the completion (after the HumanEval stub) and
//!   nothing else. It never sees a test, an expected value, the nonce or the result channel; its
//!   only link is a pipe pair to the harness, and what it prints goes to captured, ignored output.
//! * Every name the tests read that the completion defines (the entry point, plus names no trusted
//!   source binds and that are neither builtins nor standard-library modules, e.g. MBPP's `Pair`
//!   and `Node` classes) is a **proxy** in the harness: calling it sends the arguments as plain
//!   data, the candidate calls its function and replies with the result as plain data. Builtins
//!   and modules the tests use are the harness's own, so redefining `len` or `math` in the
//!   completion changes nothing.
//! * **Plain data** (`sandbox/codec.py`, hand-written, no pickle/marshal/eval/json): `None`,
//!   `bool`, `int`, `float`, `complex`, `str`, `bytes`, and `list`/`tuple`/`dict`/`set`/
//!   `frozenset` of them, of those exact types, at most 4 MiB, 64 levels and 2^20 values per
//!   reply; a few builtin types by name (a test passing `int`). The harness decodes into fresh
//!   builtin objects, so always-equal objects, `int`/`str`/`list`/`dict` subclasses with rigged
//!   `__eq__`/`__hash__`/`__repr__`, generators and objects that change between reads cannot
//!   exist on the trusted side: such results fail the test (`not_plain_data`). The candidate
//!   encodes exactly `collections.Counter`/`OrderedDict`/`defaultdict` as the dict they hold
//!   (honest solutions return them; compared with a dict literal they behave the same).
//! * Instances of a completion-defined class (MBPP 601's `Pair`, 367's and 927's `Node`) stay in
//!   the candidate; the harness holds opaque handles that can be passed back as arguments or have
//!   attributes set and read (forwarded, the values again plain data or handles). A handle equals
//!   only itself and has no truth value, so it can never stand in for an expected value.
//! * Timeouts: the candidate bounds each call with its own timer and answers `timeout`; if it
//!   does not answer within the test's budget plus 0.5 s (timer disabled, stuck in C code) it is
//!   `candidate_unresponsive` and every later test fails. Exiting, crashing, or writing anything
//!   but well-formed replies breaks the channel (`candidate_exited`, `channel_corrupt`): 0 for
//!   that test and all later ones. The parent kills the candidate once the harness is done.
//!
//! Measured on the datasets (`cargo run --release -p grail-envs --example bench_envs`): every
//! MBPP (974/974) and HumanEval (164/164) reference solution still earns full reward.

pub mod humaneval;
pub mod mbpp;

use crate::params::Params;
use crate::parse::extract_code;
use crate::sandbox::{Exit, PairProgram, Sandbox, SandboxConfig};
use crate::{ChatMessage, EnvError, Environment, Problem, Reward, Split};
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
/// The trusted harness and the candidate runner, each appended to the shared plain-data codec.
const HARNESS: &str = concat!(
    include_str!("../sandbox/codec.py"),
    include_str!("../sandbox/harness.py")
);
const CANDIDATE: &str = concat!(
    include_str!("../sandbox/codec.py"),
    include_str!("../sandbox/candidate.py")
);

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
    /// The held-out tasks (`None`: `tasks` are the eval tasks, as for HumanEval).
    eval_tasks: Option<Vec<CodeTask>>,
    overlaps_eval: bool,
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
        self.task_problem(&self.tasks[row], row, Split::Train)
    }

    fn eval_problem(&self, index: u64) -> Problem {
        let tasks = self.eval_tasks();
        let row = crate::data::row_for_seed(index, tasks.len());
        self.task_problem(&tasks[row], row, Split::Eval)
    }

    fn eval_len(&self) -> Option<u64> {
        Some(self.eval_tasks().len() as u64)
    }

    fn train_overlaps_eval(&self) -> bool {
        self.overlaps_eval
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
            &run_tests(
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
        let tasks = match problem.target.get("split").and_then(Value::as_str) {
            Some("eval") => self.eval_tasks(),
            _ => &self.tasks,
        };
        tasks.get(row).map(|task| task.reference.clone())
    }
}

impl CodeEnv {
    fn eval_tasks(&self) -> &[CodeTask] {
        self.eval_tasks.as_deref().unwrap_or(&self.tasks)
    }

    fn task_problem(&self, task: &CodeTask, row: usize, split: Split) -> Problem {
        let mut target = task.target.clone();
        if let Some(object) = target.as_object_mut() {
            object.insert("row".to_string(), json!(row));
            if split == Split::Eval {
                object.insert("split".to_string(), json!("eval"));
            }
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
}

fn reward(report: &TestReport, format: f32) -> Reward {
    let fraction = if report.total == 0 {
        0.0
    } else {
        report.passed as f32 / report.total as f32
    };
    Reward::from_components(
        vec![("tests", WEIGHT_TESTS * fraction), ("format", format)],
        report.success(),
        report.reason(),
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
    let tests = PythonTests {
        setup,
        asserts,
        ..PythonTests::default()
    };
    reward(
        &run_python_tests(sandbox, test_timeout_s, &tests, &extracted.code),
        format,
    )
}

/// The tests of one code task, as the trusted harness runs them. MBPP style: `asserts` (each a
/// test) after `setup`; HumanEval style: `check_source` defining `check(candidate)` (each
/// assert-bearing statement a test), with `prompt` (the stub, whose helpers the tests may use)
/// and `entry_point` (the function bound to `candidate`). `entry_point` also names the function
/// the completion must define when the tests call it by a builtin's name (MBPP's `sum`).
#[derive(Debug, Clone, Copy, Default)]
pub struct PythonTests<'a> {
    pub setup: &'a str,
    pub asserts: &'a [&'a str],
    pub prompt: &'a str,
    pub check_source: &'a str,
    pub entry_point: &'a str,
}

/// How one test ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestOutcome {
    Pass,
    /// The test's own (trusted) code raised, e.g. `AssertionError` from a false `assert`.
    Failed(String),
    /// The test ran past its time budget (or the candidate answered "timeout").
    Timeout,
    /// The candidate raised; the exception's type name as the candidate reported it.
    Raised(String),
    /// The candidate returned something that is not plain data (or too large, too deep).
    NotPlainData,
    /// The test passed an argument that cannot cross to the candidate (not plain data).
    BadArgument,
    /// The candidate process broke the call channel.
    Channel(ChannelFault),
}

/// The ways the candidate process can break the call channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelFault {
    /// It exited or closed the channel (`os._exit`, `sys.exit` while loading, a crash).
    CandidateExited,
    /// It did not answer within the call's budget plus a grace period.
    CandidateUnresponsive,
    /// It sent bytes that are not a valid frame or reply.
    ChannelCorrupt,
}

/// Why a code completion did not earn full test reward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeFailure {
    /// The extracted code is over [`MAX_CODE_BYTES`]; it was not run.
    CodeTooLarge { bytes: usize },
    /// The sandbox could not run at all (infrastructure, not the completion's fault).
    Sandbox(String),
    /// The code does not compile (as reported by the candidate process).
    SyntaxError(String),
    /// Running the code's top level raised (as reported by the candidate process).
    LoadError(String),
    /// Running the code's top level took longer than one test's budget.
    LoadTimeout,
    /// The code does not define the entry point.
    MissingFunction(String),
    /// The candidate broke the channel before the tests started.
    Channel(ChannelFault),
    /// The dataset's setup code or check function failed (with this completion's functions).
    SetupError(String),
    /// The harness could not read the task's tests.
    HarnessError(String),
    /// The first test that did not pass.
    TestFailed { index: usize, outcome: TestOutcome },
    /// The harness stopped before reporting every test (wall-clock kill, crash).
    Incomplete { exit: Exit },
}

impl std::fmt::Display for ChannelFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChannelFault::CandidateExited => "candidate_exited",
            ChannelFault::CandidateUnresponsive => "candidate_unresponsive",
            ChannelFault::ChannelCorrupt => "channel_corrupt",
        })
    }
}

impl std::fmt::Display for TestOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TestOutcome::Pass => f.write_str("pass"),
            TestOutcome::Failed(kind) => write!(f, "fail {kind}"),
            TestOutcome::Timeout => f.write_str("timeout"),
            TestOutcome::Raised(kind) => write!(f, "raised {kind}"),
            TestOutcome::NotPlainData => f.write_str("not_plain_data"),
            TestOutcome::BadArgument => f.write_str("bad_argument"),
            TestOutcome::Channel(fault) => fault.fmt(f),
        }
    }
}

impl std::fmt::Display for CodeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodeFailure::CodeTooLarge { bytes } => {
                write!(f, "code_too_large: {bytes} bytes, limit {MAX_CODE_BYTES}")
            }
            CodeFailure::Sandbox(detail) => write!(f, "sandbox error: {detail}"),
            CodeFailure::SyntaxError(detail) => write!(f, "syntax_error: {detail}"),
            CodeFailure::LoadError(detail) => write!(f, "load_error: {detail}"),
            CodeFailure::LoadTimeout => f.write_str("load_timeout"),
            CodeFailure::MissingFunction(name) => write!(f, "missing_function: {name}"),
            CodeFailure::Channel(fault) => fault.fmt(f),
            CodeFailure::SetupError(detail) => write!(f, "setup_error: {detail}"),
            CodeFailure::HarnessError(detail) => write!(f, "harness_error: {detail}"),
            CodeFailure::TestFailed { index, outcome } => write!(f, "test {index}: {outcome}"),
            CodeFailure::Incomplete { exit } => match exit {
                Exit::TimedOut => f.write_str("incomplete: killed at the wall-clock limit"),
                Exit::Signal(signal) => write!(f, "incomplete: harness killed by signal {signal}"),
                Exit::Code(code) => write!(f, "incomplete: harness exited with code {code}"),
            },
        }
    }
}

/// The result of running one completion's tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestReport {
    pub passed: usize,
    pub total: usize,
    /// Per-test outcomes in order (shorter than `total` if the run stopped early).
    pub outcomes: Vec<TestOutcome>,
    /// `None` exactly when every test passed.
    pub failure: Option<CodeFailure>,
}

impl TestReport {
    fn failed(total: usize, failure: CodeFailure) -> TestReport {
        TestReport {
            passed: 0,
            total,
            outcomes: Vec::new(),
            failure: Some(failure),
        }
    }

    /// Every test passed (and there was at least one).
    pub fn success(&self) -> bool {
        self.failure.is_none() && self.total > 0 && self.passed == self.total
    }

    /// The `Reward::reason` text: `None` on success.
    pub fn reason(&self) -> Option<String> {
        self.failure
            .as_ref()
            .map(|failure| format!("{}/{} tests passed; {failure}", self.passed, self.total))
    }
}

/// Runs `program` (the completion's code, already extracted) against `tests`: the tests run in
/// a trusted harness process, the program in a separate sandboxed candidate process that the
/// harness calls with plain data (see the module docs).
pub fn run_python_tests(
    sandbox: &Sandbox,
    test_timeout_s: f64,
    tests: &PythonTests<'_>,
    program: &str,
) -> TestReport {
    let target = json!({
        "asserts": tests.asserts,
        "setup": tests.setup,
        "prompt": tests.prompt,
        "check_source": tests.check_source,
        "entry_point": tests.entry_point,
    });
    run_tests(sandbox, test_timeout_s, &target, program)
}

/// Runs `program` against the tests in `target` (the keys of [`PythonTests`]).
fn run_tests(sandbox: &Sandbox, test_timeout_s: f64, target: &Value, program: &str) -> TestReport {
    let expected_total = target
        .get("asserts")
        .and_then(Value::as_array)
        .map(Vec::len)
        .filter(|count| *count > 0);
    if program.len() > MAX_CODE_BYTES {
        return TestReport::failed(
            expected_total.unwrap_or(0),
            CodeFailure::CodeTooLarge {
                bytes: program.len(),
            },
        );
    }
    let text = |key: &str| target.get(key).and_then(Value::as_str).unwrap_or("");
    let spec = json!({
        "asserts": target.get("asserts").cloned().unwrap_or(json!([])),
        "setup": text("setup"),
        "prompt": text("prompt"),
        "check_source": text("check_source"),
        "entry_point": text("entry_point"),
        "test_timeout_s": test_timeout_s,
        // Landlock already closes the harness's /proc entries to the candidate; without it the
        // harness makes itself non-dumpable (costs a ctypes import).
        "landlock": sandbox.capabilities().landlock_abi.is_some(),
    });
    let approx_tests =
        expected_total.unwrap_or_else(|| text("check_source").matches("assert").count().max(1));
    // Loading, setup and every test may each use the per-test budget; then 3 s for the two
    // interpreters' start-up and the per-call grace.
    let wall = (test_timeout_s * (approx_tests as f64 + 2.0) + 3.0).min(180.0);
    let mut config = sandbox.config().clone();
    config.wall_timeout = Duration::from_secs_f64(wall);
    let nonce = format!(
        "{:016x}{:016x}",
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish(),
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    );
    let mut stdin = format!("{nonce}\n").into_bytes();
    encode_plain(&spec, &mut stdin);
    // The candidate loads the code as soon as it starts, within one test's budget.
    let candidate_script = format!("_LOAD_BUDGET_S = {test_timeout_s:?}\n{CANDIDATE}");
    let output = sandbox.run_pair(
        &config,
        &PairProgram {
            script: HARNESS,
            files: &[],
        },
        &stdin,
        &PairProgram {
            script: &candidate_script,
            files: &[("solution.py", program.as_bytes())],
        },
    );
    let output = match output {
        Ok(output) => output,
        Err(error) => {
            return TestReport::failed(
                expected_total.unwrap_or(0),
                CodeFailure::Sandbox(error.to_string()),
            )
        }
    };
    parse_results(
        &nonce,
        &output.trusted.results,
        expected_total,
        output.trusted.exit,
    )
}

/// Appends `value` in the plain-data format of `sandbox/codec.py` (how the harness gets its
/// spec: no JSON parser to import in the harness).
fn encode_plain(value: &Value, out: &mut Vec<u8>) {
    let length = |out: &mut Vec<u8>, count: usize| {
        out.extend_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_be_bytes());
    };
    match value {
        Value::Null => out.push(b'N'),
        Value::Bool(true) => out.push(b'T'),
        Value::Bool(false) => out.push(b'F'),
        Value::Number(number) => match number.as_i64() {
            Some(integer) => {
                out.push(b'i');
                length(out, 8);
                out.extend_from_slice(&integer.to_be_bytes());
            }
            None => {
                out.push(b'f');
                out.extend_from_slice(&number.as_f64().unwrap_or(0.0).to_be_bytes());
            }
        },
        Value::String(text) => {
            out.push(b's');
            length(out, text.len());
            out.extend_from_slice(text.as_bytes());
        }
        Value::Array(items) => {
            out.push(b'l');
            length(out, items.len());
            for item in items {
                encode_plain(item, out);
            }
        }
        Value::Object(map) => {
            out.push(b'd');
            length(out, map.len());
            for (key, item) in map {
                encode_plain(&Value::String(key.clone()), out);
                encode_plain(item, out);
            }
        }
    }
}

/// Reads the trusted harness's result channel (lines `<nonce> <message>`; others ignored).
fn parse_results(
    nonce: &str,
    results: &[u8],
    expected_total: Option<usize>,
    exit: Exit,
) -> TestReport {
    let results = String::from_utf8_lossy(results);
    let mut total = expected_total;
    let mut outcomes: Vec<TestOutcome> = Vec::new();
    let mut fatal: Option<CodeFailure> = None;
    let mut done = false;
    for line in results.lines() {
        let Some(message) = line
            .strip_prefix(nonce)
            .and_then(|rest| rest.strip_prefix(' '))
        else {
            continue;
        };
        let (kind, rest) = message.split_once(' ').unwrap_or((message, ""));
        match kind {
            "total" if total.is_none() => total = rest.parse().ok(),
            "test" => {
                let (index, outcome) = rest.split_once(' ').unwrap_or((rest, ""));
                // Results arrive in order; anything else is a harness bug, never a pass.
                if index.parse::<usize>().ok() != Some(outcomes.len()) {
                    fatal.get_or_insert(CodeFailure::HarnessError(format!(
                        "out-of-order result {message:?}"
                    )));
                    continue;
                }
                outcomes.push(parse_outcome(outcome));
            }
            "fatal" => {
                fatal.get_or_insert_with(|| parse_fatal(rest));
            }
            "done" => done = true,
            _ => {}
        }
    }
    let total = total.unwrap_or(0);
    outcomes.truncate(total);
    let passed = outcomes
        .iter()
        .filter(|outcome| **outcome == TestOutcome::Pass)
        .count();
    let failure = fatal
        .or_else(|| {
            outcomes
                .iter()
                .position(|outcome| *outcome != TestOutcome::Pass)
                .map(|index| CodeFailure::TestFailed {
                    index,
                    outcome: outcomes[index].clone(),
                })
        })
        .or_else(|| {
            (!done || outcomes.len() < total || total == 0)
                .then_some(CodeFailure::Incomplete { exit })
        });
    TestReport {
        passed,
        total,
        outcomes,
        failure,
    }
}

fn parse_outcome(text: &str) -> TestOutcome {
    let (kind, detail) = text.split_once(' ').unwrap_or((text, ""));
    let detail: String = detail.chars().take(80).collect();
    match kind {
        "pass" => TestOutcome::Pass,
        "fail" => TestOutcome::Failed(detail),
        "timeout" => TestOutcome::Timeout,
        "raised" => TestOutcome::Raised(detail),
        "not_plain_data" => TestOutcome::NotPlainData,
        "bad_argument" => TestOutcome::BadArgument,
        "candidate_exited" => TestOutcome::Channel(ChannelFault::CandidateExited),
        "candidate_unresponsive" => TestOutcome::Channel(ChannelFault::CandidateUnresponsive),
        "channel_corrupt" => TestOutcome::Channel(ChannelFault::ChannelCorrupt),
        other => TestOutcome::Failed(format!("unknown outcome {other:?}")),
    }
}

fn parse_fatal(text: &str) -> CodeFailure {
    let (kind, detail) = text.split_once(' ').unwrap_or((text, ""));
    let detail: String = detail.chars().take(200).collect();
    match kind {
        "syntax_error" => CodeFailure::SyntaxError(detail),
        "load_error" => CodeFailure::LoadError(detail),
        "load_timeout" => CodeFailure::LoadTimeout,
        "missing_function" => CodeFailure::MissingFunction(detail),
        "candidate_exited" => CodeFailure::Channel(ChannelFault::CandidateExited),
        "candidate_unresponsive" => CodeFailure::Channel(ChannelFault::CandidateUnresponsive),
        "channel_corrupt" => CodeFailure::Channel(ChannelFault::ChannelCorrupt),
        "setup_error" => CodeFailure::SetupError(detail),
        _ => CodeFailure::HarnessError(format!("{kind} {detail}")),
    }
}

/// Shared loader pieces.
/// `eval_tasks`: the held-out tasks, or `None` when `tasks` are themselves the eval tasks;
/// `overlaps_eval`: the training tasks intersect the eval tasks.
pub(crate) fn code_env(
    id: &'static str,
    tasks: Vec<CodeTask>,
    eval_tasks: Option<Vec<CodeTask>>,
    overlaps_eval: bool,
    digest: [u8; 32],
    settings: SandboxSettings,
) -> CodeEnv {
    CodeEnv {
        id,
        tasks,
        eval_tasks,
        overlaps_eval,
        digest,
        settings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "0123456789abcdef0123456789abcdef";

    fn parse(lines: &[&str], exit: Exit) -> TestReport {
        let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
        parse_results(NONCE, text.as_bytes(), None, exit)
    }

    #[test]
    fn results_count_only_under_the_nonce_in_order() {
        let n = NONCE;
        let all_pass = parse(
            &[
                &format!("{n} total 2"),
                &format!("{n} loaded"),
                &format!("{n} test 0 pass"),
                &format!("{n} test 1 pass"),
                &format!("{n} done"),
            ],
            Exit::Code(0),
        );
        assert!(all_pass.success(), "{all_pass:?}");

        // Lines without the nonce (or with another one) change nothing.
        let forged = parse(
            &[
                &format!("{n} total 2"),
                "0000000000000000 test 0 pass",
                &format!("{n}x test 0 pass"),
                &format!(" {n} test 1 pass"),
                &format!("{n} test 0 fail AssertionError"),
                &format!("{n} test 1 pass"),
                &format!("{n} done"),
            ],
            Exit::Code(0),
        );
        assert_eq!((forged.passed, forged.total), (1, 2));
        assert_eq!(
            forged.failure,
            Some(CodeFailure::TestFailed {
                index: 0,
                outcome: TestOutcome::Failed("AssertionError".into())
            })
        );

        // A repeated or skipped index is a harness error, never an extra pass.
        let repeated = parse(
            &[
                &format!("{n} total 2"),
                &format!("{n} test 0 pass"),
                &format!("{n} test 0 pass"),
                &format!("{n} done"),
            ],
            Exit::Code(0),
        );
        assert_eq!(repeated.passed, 1);
        assert!(matches!(
            repeated.failure,
            Some(CodeFailure::HarnessError(_))
        ));

        // No "done": incomplete, with how the harness ended.
        let cut = parse(
            &[&format!("{n} total 2"), &format!("{n} test 0 pass")],
            Exit::TimedOut,
        );
        assert_eq!(cut.passed, 1);
        assert_eq!(
            cut.failure,
            Some(CodeFailure::Incomplete {
                exit: Exit::TimedOut
            })
        );
        assert!(!cut.success());

        // A fatal report wins over everything after it; zero tests is never a success.
        let fatal = parse(
            &[
                &format!("{n} total 3"),
                &format!("{n} fatal candidate_unresponsive"),
            ],
            Exit::Code(0),
        );
        assert_eq!(
            fatal.failure,
            Some(CodeFailure::Channel(ChannelFault::CandidateUnresponsive))
        );
        let empty = parse(
            &[&format!("{n} total 0"), &format!("{n} done")],
            Exit::Code(0),
        );
        assert!(!empty.success());
    }
}
