//! `math`: Hendrycks MATH and MATH-500 with `\boxed{}` answers.
//!
//! Data (`math/` under the datasets root): `test.jsonl` (5000 problems, `problem`, `solution`,
//! `level`, `type`) and `math500_test.jsonl` (the MATH-500 subset, with `answer`). Parameter
//! `split`:
//! * `train` (default): the 4500 problems of `test.jsonl` not in MATH-500 (the PRM800K
//!   convention, since the 7.5k training split is not shipped); digest over `test.jsonl` then
//!   `math500_test.jsonl` (both decide the rows).
//! * `math500`: the 500 MATH-500 problems, gold = `answer`; digest of `math500_test.jsonl`.
//! * `test`: all 5000; digest of `test.jsonl`.
//!
//! Gold for `train`/`test` rows is the last `\boxed{}` of the reference solution (for MATH-500
//! that equals its `answer` field on every row). Problem for seed `s` = row `s mod N`; id
//! `math/<split>/<row>`.
//!
//! # Split
//! Train = the default `split = "train"` (MATH minus MATH-500); eval = MATH-500 (ids
//! `math/math500/<row>`, `eval_problem(i)` = row `i mod 500`): the standard held-out set
//! since "Let's Verify Step by Step" (PRM800K). `math500_test.jsonl` is always loaded; `split`
//! `math500` or `test` trains on eval rows ([`Environment::train_overlaps_eval`]).
//!
//! # Reward
//! * `correct` (0.9): the final answer ([`crate::parse::final_answer`]: `\boxed{}`,
//!   `<SOLUTION>`, ...) is [`normalize::equivalent`] to the gold answer (`success`).
//! * `format` (0.1): the answer was marked with `\boxed{}` or `<SOLUTION>`.

pub mod normalize;

use crate::data::{self, parse_jsonl, resolve};
use crate::params::Params;
use crate::parse::{final_answer, last_boxed, AnswerMarker};
use crate::{ChatMessage, EnvError, Environment, Problem, Reward};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::path::Path;

const COMPONENTS: [&str; 2] = ["correct", "format"];
const WEIGHT_CORRECT: f32 = 0.9;
const WEIGHT_FORMAT: f32 = 0.1;
const SYSTEM_PROMPT: &str =
    "Solve the math problem step by step. Write the final answer as \\boxed{answer}.";

#[derive(Clone, Deserialize)]
struct Row {
    problem: String,
    solution: String,
    #[serde(default)]
    answer: Option<String>,
    #[serde(default)]
    level: Option<Value>,
    #[serde(default, alias = "type")]
    subject: Option<String>,
}

struct Item {
    problem: String,
    solution: String,
    gold: String,
    level: Value,
    subject: String,
}

/// The MATH environment.
pub struct MathEnv {
    split: String,
    items: Vec<Item>,
    /// MATH-500, the eval split.
    eval_items: Vec<Item>,
    overlaps_eval: bool,
    digest: [u8; 32],
}

/// Items with their gold answers: `answer` if present, else the solution's last `\boxed{}`.
fn items_from_rows(rows: Vec<Row>, path: &Path) -> Result<Vec<Item>, EnvError> {
    let mut items = Vec::with_capacity(rows.len());
    for (index, row) in rows.into_iter().enumerate() {
        let gold = match row.answer {
            Some(answer) => answer,
            None => last_boxed(&row.solution)
                .map(str::to_string)
                .ok_or_else(|| EnvError::DataRow {
                    path: path.to_path_buf(),
                    line: index + 1,
                    message: "`solution` has no \\boxed{} answer and there is no `answer` field"
                        .to_string(),
                })?,
        };
        items.push(Item {
            problem: row.problem,
            solution: row.solution,
            gold,
            level: row.level.unwrap_or(Value::Null),
            subject: row.subject.unwrap_or_default(),
        });
    }
    Ok(items)
}

fn item_problem(item: &Item, split: &str, row: usize) -> Problem {
    Problem {
        env: "math".to_string(),
        id: format!("math/{split}/{row}"),
        messages: vec![
            ChatMessage::system(SYSTEM_PROMPT),
            ChatMessage::user(item.problem.clone()),
        ],
        target: json!({
            "answer": item.gold,
            "row": row,
            "split": split,
            "level": item.level,
            "subject": item.subject,
        }),
    }
}

impl MathEnv {
    /// Loads the split's rows; parameters: `split` (`train`|`math500`|`test`).
    pub fn load(data_dir: Option<&Path>, params: &Map<String, Value>) -> Result<MathEnv, EnvError> {
        let params = Params::new("math", params, &["split"])?;
        let split = params.choice("split", "train", &["train", "math500", "test"])?;
        let full_path = resolve("math", data_dir, "math/test.jsonl");
        let subset_path = resolve("math", data_dir, "math/math500_test.jsonl")?;
        let subset_bytes = data::read_bytes(&subset_path)?;
        let subset_rows = parse_jsonl::<Row>(&subset_path, &subset_bytes)?;
        let (rows, digest, path) = match split.as_str() {
            "test" => {
                let path = full_path?;
                let bytes = data::read_bytes(&path)?;
                (
                    parse_jsonl::<Row>(&path, &bytes)?,
                    data::blake2b256(&[&bytes]),
                    path,
                )
            }
            "math500" => (
                subset_rows.clone(),
                data::blake2b256(&[&subset_bytes]),
                subset_path.clone(),
            ),
            _ => {
                let path = full_path?;
                let bytes = data::read_bytes(&path)?;
                let held_out: HashSet<&str> =
                    subset_rows.iter().map(|row| row.problem.as_str()).collect();
                let rows = parse_jsonl::<Row>(&path, &bytes)?
                    .into_iter()
                    .filter(|row| !held_out.contains(row.problem.as_str()))
                    .collect();
                (rows, data::blake2b256(&[&bytes, &subset_bytes]), path)
            }
        };
        let items = items_from_rows(rows, &path)?;
        let eval_items = items_from_rows(subset_rows, &subset_path)?;
        if items.is_empty() {
            return Err(EnvError::EmptyDataset {
                path,
                detail: format!(" for split `{split}`"),
            });
        }
        Ok(MathEnv {
            overlaps_eval: split != "train",
            split,
            items,
            eval_items,
            digest,
        })
    }

    pub fn split(&self) -> &str {
        &self.split
    }
}

impl Environment for MathEnv {
    fn id(&self) -> &str {
        "math"
    }

    fn problem(&self, seed: u64) -> Problem {
        let row = data::row_for_seed(seed, self.items.len());
        item_problem(&self.items[row], &self.split, row)
    }

    fn eval_problem(&self, index: u64) -> Problem {
        let row = data::row_for_seed(index, self.eval_items.len());
        item_problem(&self.eval_items[row], "math500", row)
    }

    fn eval_len(&self) -> Option<u64> {
        Some(self.eval_items.len() as u64)
    }

    fn train_overlaps_eval(&self) -> bool {
        self.overlaps_eval
    }

    fn score(&self, problem: &Problem, completion: &str) -> Reward {
        match problem.target.get("answer").and_then(Value::as_str) {
            Some(gold) => score_latex(gold, completion),
            None => Reward::zero(&COMPONENTS, "problem target has no `answer` string"),
        }
    }

    fn data_digest(&self) -> Option<[u8; 32]> {
        Some(self.digest)
    }

    fn num_problems(&self) -> Option<u64> {
        Some(self.items.len() as u64)
    }

    fn reference_completion(&self, problem: &Problem) -> Option<String> {
        let row = problem.target.get("row")?.as_u64()? as usize;
        let items = match problem.target.get("split").and_then(Value::as_str) {
            Some(split) if split != self.split => &self.eval_items,
            _ => &self.items,
        };
        items.get(row).map(|item| item.solution.clone())
    }
}

/// Scores a completion whose final answer must be equivalent to the LaTeX `gold`.
pub fn score_latex(gold: &str, completion: &str) -> Reward {
    let Some(answer) = final_answer(completion) else {
        return Reward::zero(&COMPONENTS, "no final answer (expected \\boxed{...})");
    };
    let format = match answer.marker {
        AnswerMarker::Boxed | AnswerMarker::SolutionTag => WEIGHT_FORMAT,
        AnswerMarker::Hashes | AnswerMarker::Phrase => 0.0,
    };
    let correct = normalize::equivalent(&answer.text, gold);
    let reason = (!correct).then(|| {
        let shown: String = answer.text.chars().take(80).collect();
        format!("answer {shown:?} is not equivalent to {gold:?}")
    });
    Reward::from_components(
        vec![
            ("correct", if correct { WEIGHT_CORRECT } else { 0.0 }),
            ("format", format),
        ],
        correct,
        reason,
    )
}
