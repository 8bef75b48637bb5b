//! `sat`: random satisfiable 3-SAT instances generated from the seed.
//!
//! Sizes follow grail's ranges: 3–10 variables, 5–20 clauses of 3 distinct variables. A hidden
//! assignment is drawn first and every clause it would falsify gets one literal flipped, so the
//! instance is satisfiable by construction (the planted assignment is kept in the target for
//! [`Environment::reference_completion`]). Generation uses the in-crate SplitMix64, not CPython's
//! Mersenne Twister, so instances differ from Python grail's for the same seed.
//!
//! # Reward
//! The answer is the final marked answer (`<SOLUTION>…</SOLUTION>`, `\boxed{…}`, ...) or, if
//! unmarked, the last non-empty line; the assignment is its `N` standalone 0/1 values (`1 0 1`,
//! `101` and `x1=1 x2=0 x3=1` all parse).
//! * `format` (0.1): marked answer consisting of exactly `N` space-separated bits.
//! * `clauses` (0.5): fraction of clauses the assignment satisfies (0 if it does not have exactly
//!   `N` values). A uniformly random assignment satisfies 7/8 of the clauses in expectation, so
//!   this is a shaping signal, not a measure of progress.
//! * `solved` (0.4): every clause satisfied; this alone is `success`.
//!
//! # Split
//! Training problem `seed` is generated from the SplitMix64 stream keyed `"sat"` (id
//! `sat/<seed>`), eval problem `index` from the stream keyed `"sat/eval"` (id
//! `sat/eval/<index>`): domain-separated seed spaces. With ≥ 5 clauses over ≥ 3 variables
//! the instance space is far larger than any run draws, so held-out instances are new
//! instances (the split test checks 20 000 of each side share none).

use crate::params::Params;
use crate::parse::{after_thinking, final_answer, AnswerMarker};
use crate::rng::SplitMix64;
use crate::{ChatMessage, EnvError, Environment, Problem, Reward};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::LazyLock;

const COMPONENTS: [&str; 3] = ["format", "clauses", "solved"];
const WEIGHT_FORMAT: f32 = 0.1;
const WEIGHT_CLAUSES: f32 = 0.5;
const WEIGHT_SOLVED: f32 = 0.4;

const SYSTEM_PROMPT: &str = "Solve the Boolean satisfiability problem. Give the value (0 or 1) of every variable, x1 first, space-separated, inside <SOLUTION></SOLUTION>, e.g. <SOLUTION>1 0 1</SOLUTION>.";

/// A 3-SAT instance: literals are `±v` for variable `v` in `1..=num_vars` (negative = NOT).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SatInstance {
    pub num_vars: usize,
    pub clauses: Vec<[i32; 3]>,
    /// The planted satisfying assignment (`planted[i]` is x(i+1)).
    pub planted: Vec<bool>,
}

impl SatInstance {
    /// Generates the instance for `seed` with `num_vars` in `vars` and clause count in `clauses`.
    pub fn generate(seed: u64, vars: (u64, u64), clauses: (u64, u64)) -> SatInstance {
        SatInstance::generate_from(SplitMix64::keyed("sat", seed), vars, clauses)
    }

    /// The eval-split instance `index` (stream keyed `"sat/eval"`).
    pub fn generate_eval(index: u64, vars: (u64, u64), clauses: (u64, u64)) -> SatInstance {
        SatInstance::generate_from(SplitMix64::keyed("sat/eval", index), vars, clauses)
    }

    fn generate_from(mut rng: SplitMix64, vars: (u64, u64), clauses: (u64, u64)) -> SatInstance {
        let num_vars = rng.range_inclusive(vars.0, vars.1) as usize;
        let num_clauses = rng.range_inclusive(clauses.0, clauses.1) as usize;
        let planted: Vec<bool> = (0..num_vars).map(|_| rng.coin()).collect();
        let mut all = Vec::with_capacity(num_clauses);
        for _ in 0..num_clauses {
            let chosen = rng.distinct(num_vars as u64, 3);
            let mut clause = [0i32; 3];
            for (slot, variable) in clause.iter_mut().zip(chosen) {
                let literal = variable as i32 + 1;
                *slot = if rng.coin() { -literal } else { literal };
            }
            if !clause_satisfied(&clause, &planted) {
                let flip = rng.below(3) as usize;
                clause[flip] = -clause[flip];
            }
            all.push(clause);
        }
        SatInstance {
            num_vars,
            clauses: all,
            planted,
        }
    }

    /// Number of clauses `assignment` satisfies (`assignment.len()` must be `num_vars`).
    pub fn satisfied_count(&self, assignment: &[bool]) -> usize {
        self.clauses
            .iter()
            .filter(|clause| clause_satisfied(clause.as_slice(), assignment))
            .count()
    }

    fn prompt(&self) -> String {
        let mut text = format!(
            "Variables: x1..x{}\nClauses (all must be true):\n",
            self.num_vars
        );
        for clause in &self.clauses {
            let literals: Vec<String> = clause
                .iter()
                .map(|literal| {
                    if *literal < 0 {
                        format!("NOT x{}", -literal)
                    } else {
                        format!("x{literal}")
                    }
                })
                .collect();
            text.push_str(&format!("({})\n", literals.join(" OR ")));
        }
        text.push_str(&format!("Answer with {} values.", self.num_vars));
        text
    }
}

/// Whether some literal of `clause` is true under `assignment` (variables out of range: false).
pub fn clause_satisfied(clause: &[i32], assignment: &[bool]) -> bool {
    clause.iter().any(|literal| {
        let index = literal.unsigned_abs() as usize;
        index >= 1
            && assignment
                .get(index - 1)
                .is_some_and(|value| *value == (*literal > 0))
    })
}

/// The procedural 3-SAT environment.
#[derive(Debug, Clone)]
pub struct SatEnv {
    vars: (u64, u64),
    clauses: (u64, u64),
}

impl SatEnv {
    /// Parameters: `min_vars`/`max_vars` (default 3/10, within 3..=16) and
    /// `min_clauses`/`max_clauses` (default 5/20, within 1..=100).
    pub fn from_params(params: &Map<String, Value>) -> Result<SatEnv, EnvError> {
        let params = Params::new(
            "sat",
            params,
            &["min_vars", "max_vars", "min_clauses", "max_clauses"],
        )?;
        let min_vars = params.u64_in("min_vars", 3, 3, 16)?;
        let max_vars = params.u64_in("max_vars", 10, min_vars, 16)?;
        let min_clauses = params.u64_in("min_clauses", 5, 1, 100)?;
        let max_clauses = params.u64_in("max_clauses", 20, min_clauses, 100)?;
        Ok(SatEnv {
            vars: (min_vars, max_vars),
            clauses: (min_clauses, max_clauses),
        })
    }

    /// The instance behind `seed`.
    pub fn instance(&self, seed: u64) -> SatInstance {
        SatInstance::generate(seed, self.vars, self.clauses)
    }
}

impl Default for SatEnv {
    fn default() -> SatEnv {
        SatEnv {
            vars: (3, 10),
            clauses: (5, 20),
        }
    }
}

impl Environment for SatEnv {
    fn id(&self) -> &str {
        "sat"
    }

    fn problem(&self, seed: u64) -> Problem {
        sat_problem(self.instance(seed), format!("sat/{seed}"))
    }

    fn eval_problem(&self, index: u64) -> Problem {
        let instance = SatInstance::generate_eval(index, self.vars, self.clauses);
        sat_problem(instance, format!("sat/eval/{index}"))
    }

    fn eval_len(&self) -> Option<u64> {
        None
    }

    fn score(&self, problem: &Problem, completion: &str) -> Reward {
        match serde_json::from_value::<SatInstance>(problem.target.clone()) {
            Ok(instance) => score_assignment(&instance, completion),
            Err(error) => Reward::zero(
                &COMPONENTS,
                format!("problem target is not a SAT instance: {error}"),
            ),
        }
    }

    fn data_digest(&self) -> Option<[u8; 32]> {
        None
    }

    fn reference_completion(&self, problem: &Problem) -> Option<String> {
        let instance: SatInstance = serde_json::from_value(problem.target.clone()).ok()?;
        let bits: Vec<&str> = instance
            .planted
            .iter()
            .map(|value| if *value { "1" } else { "0" })
            .collect();
        Some(format!("<SOLUTION>{}</SOLUTION>", bits.join(" ")))
    }
}

fn sat_problem(instance: SatInstance, id: String) -> Problem {
    Problem {
        env: "sat".to_string(),
        id,
        messages: vec![
            ChatMessage::system(SYSTEM_PROMPT),
            ChatMessage::user(instance.prompt()),
        ],
        target: serde_json::to_value(&instance).unwrap_or(Value::Null),
    }
}

/// Scores a completion against an instance; see the module docs.
pub fn score_assignment(instance: &SatInstance, completion: &str) -> Reward {
    static STRICT: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^[01]( [01])*$").expect("valid regex"));
    static BIT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b[01]\b").expect("valid regex"));

    let marked = final_answer(completion).filter(|answer| answer.marker != AnswerMarker::Phrase);
    let answer_text = match &marked {
        Some(answer) => answer.text.clone(),
        None => after_thinking(completion)
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string(),
    };
    let bits: Vec<bool> =
        if !answer_text.is_empty() && answer_text.bytes().all(|b| b == b'0' || b == b'1') {
            answer_text.bytes().map(|b| b == b'1').collect()
        } else {
            BIT.find_iter(&answer_text)
                .map(|bit| bit.as_str() == "1")
                .collect()
        };
    let strict =
        marked.is_some() && STRICT.is_match(&answer_text) && bits.len() == instance.num_vars;
    let format = if strict { WEIGHT_FORMAT } else { 0.0 };

    if bits.len() != instance.num_vars {
        return Reward::from_components(
            vec![("format", format), ("clauses", 0.0), ("solved", 0.0)],
            false,
            Some(format!(
                "expected {} values, found {}",
                instance.num_vars,
                bits.len()
            )),
        );
    }
    let satisfied = instance.satisfied_count(&bits);
    let total = instance.clauses.len().max(1);
    let solved = satisfied == instance.clauses.len();
    Reward::from_components(
        vec![
            ("format", format),
            ("clauses", WEIGHT_CLAUSES * satisfied as f32 / total as f32),
            ("solved", if solved { WEIGHT_SOLVED } else { 0.0 }),
        ],
        solved,
        (!solved).then(|| {
            format!(
                "{satisfied} of {} clauses satisfied",
                instance.clauses.len()
            )
        }),
    )
}
