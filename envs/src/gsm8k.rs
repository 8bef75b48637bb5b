//! `gsm8k`: grade-school math word problems (openai/grade-school-math).
//!
//! Data: `gsm8k/{train,test}.jsonl` (`question`, `answer`; the answer's last line is
//! `#### <number>`). Parameter `split` = `"train"` (default, 7473 rows) or `"test"` (1319).
//! Problem for seed `s` = row `s mod N`; id `gsm8k/<split>/<row>`; digest = BLAKE2b-256 of the
//! split's file.
//!
//! # Split
//! Train = `train.jsonl` (the default `split`); eval = `test.jsonl` (1319 rows, ids
//! `gsm8k/test/<row>`, `eval_problem(i)` = row `i mod 1319`), the standard GSM8K split. Both
//! files are loaded. `split = "test"` trains on the eval rows ([`Environment::train_overlaps_eval`]).
//!
//! # Reward
//! The predicted answer is the explicitly marked final answer (`\boxed{}`, `####`,
//! `<SOLUTION>`, "the answer is"), else the last number of the completion. Both sides are reduced
//! to a number ([`parse_number`]: commas, `$`, `%`, units and LaTeX decorations dropped, `18.0` =
//! `18`, fractions `a/b` evaluated) and compared up to float noise ([`numbers_equal`]).
//! * `correct` (0.9): the numbers agree (`success`).
//! * `format` (0.1): the answer was marked with `\boxed{}`, `####` or `<SOLUTION>`.

use crate::data::{self, parse_jsonl, resolve};
use crate::params::Params;
use crate::parse::{after_thinking, final_answer, last_number, numbers, AnswerMarker};
use crate::{ChatMessage, EnvError, Environment, Problem, Reward};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::path::Path;

const COMPONENTS: [&str; 2] = ["correct", "format"];
const WEIGHT_CORRECT: f32 = 0.9;
const WEIGHT_FORMAT: f32 = 0.1;
const SYSTEM_PROMPT: &str =
    "Solve the math word problem step by step. Write the final numeric answer as \\boxed{answer}.";

#[derive(Deserialize)]
struct Row {
    question: String,
    answer: String,
}

struct Item {
    question: String,
    solution: String,
    gold: String,
}

/// The GSM8K environment.
pub struct Gsm8kEnv {
    split: String,
    items: Vec<Item>,
    /// The test rows when training reads `train.jsonl` (`None`: `items` are the test rows).
    eval_items: Option<Vec<Item>>,
    digest: [u8; 32],
}

/// Parses a GSM8K file's rows; the gold answer is the number after `####`.
fn load_items(path: &Path, bytes: &[u8]) -> Result<Vec<Item>, EnvError> {
    let rows: Vec<Row> = parse_jsonl(path, bytes)?;
    let mut items = Vec::with_capacity(rows.len());
    for (index, row) in rows.into_iter().enumerate() {
        let gold = row
            .answer
            .rsplit("####")
            .next()
            .filter(|_| row.answer.contains("####"))
            .map(|text| text.trim().replace(',', ""))
            .filter(|gold| parse_number(gold).is_some())
            .ok_or_else(|| EnvError::DataRow {
                path: path.to_path_buf(),
                line: index + 1,
                message: "`answer` does not end in `#### <number>`".to_string(),
            })?;
        items.push(Item {
            question: row.question,
            solution: row.answer,
            gold,
        });
    }
    Ok(items)
}

fn item_problem(item: &Item, split: &str, row: usize) -> Problem {
    Problem {
        env: "gsm8k".to_string(),
        id: format!("gsm8k/{split}/{row}"),
        messages: vec![
            ChatMessage::system(SYSTEM_PROMPT),
            ChatMessage::user(item.question.clone()),
        ],
        target: json!({ "answer": item.gold, "row": row, "split": split }),
    }
}

impl Gsm8kEnv {
    /// Loads `gsm8k/<split>.jsonl` from `data_dir`. Parameters: `split` (`train`|`test`).
    pub fn load(
        data_dir: Option<&Path>,
        params: &Map<String, Value>,
    ) -> Result<Gsm8kEnv, EnvError> {
        let params = Params::new("gsm8k", params, &["split"])?;
        let split = params.choice("split", "train", &["train", "test"])?;
        let path = resolve("gsm8k", data_dir, &format!("gsm8k/{split}.jsonl"))?;
        let bytes = data::read_bytes(&path)?;
        let items = load_items(&path, &bytes)?;
        let eval_items = if split == "test" {
            None
        } else {
            let eval_path = resolve("gsm8k", data_dir, "gsm8k/test.jsonl")?;
            Some(load_items(&eval_path, &data::read_bytes(&eval_path)?)?)
        };
        Ok(Gsm8kEnv {
            split,
            items,
            eval_items,
            digest: data::blake2b256(&[&bytes]),
        })
    }

    pub fn split(&self) -> &str {
        &self.split
    }

    fn eval_items(&self) -> &[Item] {
        self.eval_items.as_deref().unwrap_or(&self.items)
    }
}

impl Environment for Gsm8kEnv {
    fn id(&self) -> &str {
        "gsm8k"
    }

    fn problem(&self, seed: u64) -> Problem {
        let row = data::row_for_seed(seed, self.items.len());
        item_problem(&self.items[row], &self.split, row)
    }

    fn eval_problem(&self, index: u64) -> Problem {
        let items = self.eval_items();
        let row = data::row_for_seed(index, items.len());
        item_problem(&items[row], "test", row)
    }

    fn eval_len(&self) -> Option<u64> {
        Some(self.eval_items().len() as u64)
    }

    fn train_overlaps_eval(&self) -> bool {
        self.eval_items.is_none()
    }

    fn score(&self, problem: &Problem, completion: &str) -> Reward {
        match problem.target.get("answer").and_then(Value::as_str) {
            Some(gold) => score_numeric(gold, completion),
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
            Some("test") => self.eval_items(),
            _ => &self.items,
        };
        items.get(row).map(|item| item.solution.clone())
    }
}

/// Scores a completion whose final answer must equal the number `gold`.
pub fn score_numeric(gold: &str, completion: &str) -> Reward {
    let Some(gold_value) = parse_number(gold) else {
        return Reward::zero(&COMPONENTS, format!("gold answer {gold:?} is not a number"));
    };
    let marked = final_answer(completion);
    let format = match &marked {
        Some(answer) if answer.marker != AnswerMarker::Phrase => WEIGHT_FORMAT,
        _ => 0.0,
    };
    let predicted = match &marked {
        Some(answer) => parse_number(&answer.text),
        None => last_number(after_thinking(completion)).and_then(parse_number),
    };
    let correct = predicted.is_some_and(|value| numbers_equal(value, gold_value));
    let reason = (!correct).then(|| match predicted {
        Some(value) => format!("answer {value} != {gold}"),
        None => "no numeric answer found".to_string(),
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

/// Equal up to float noise: absolute 1e-6, or relative 1e-9 for large values (so 1450001 is not
/// "equal" to 1450000).
pub fn numbers_equal(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6_f64.max(1e-9 * a.abs().max(b.abs()))
}

/// Reads the number an answer states: drops LaTeX decorations (`\$`, `\%`, `\text{…}`,
/// `\!`), currency and percent signs, thousands separators and units, then takes the first
/// number; `a/b` and `\frac{a}{b}` are evaluated.
pub fn parse_number(text: &str) -> Option<f64> {
    let mut cleaned = text
        .replace("\\!", "")
        .replace("\\,", "")
        .replace("\\$", "")
        .replace("\\%", "");
    for frac in ["\\dfrac", "\\tfrac", "\\frac"] {
        cleaned = cleaned.replace(frac, "\\frac");
    }
    if let Some(value) = latex_fraction(&cleaned) {
        return Some(value);
    }
    let cleaned: String = cleaned.chars().filter(|c| *c != '$').collect();
    let first = *numbers(&cleaned).first()?;
    let mut value: f64 = first.replace(',', "").parse().ok()?;
    // `a/b` right after the first number.
    let rest = &cleaned[cleaned.find(first)? + first.len()..];
    if let Some(denominator) = rest.trim_start().strip_prefix('/') {
        if let Some(den) = numbers(denominator.trim_start()).first() {
            let den: f64 = den.replace(',', "").parse().ok()?;
            if den != 0.0
                && denominator
                    .trim_start()
                    .starts_with(|c: char| c.is_ascii_digit())
            {
                value /= den;
            }
        }
    }
    value.is_finite().then_some(value)
}

/// `[-]\frac{a}{b}` with numeric `a`, `b`.
fn latex_fraction(text: &str) -> Option<f64> {
    let trimmed = text.trim();
    let (negative, body) = match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, trimmed),
    };
    let body = body.strip_prefix("\\frac{")?;
    let numerator = crate::parse::balanced_prefix(body)?;
    let rest = body[numerator.len() + 1..].strip_prefix('{')?;
    let denominator = crate::parse::balanced_prefix(rest)?;
    let a: f64 = numerator.trim().parse().ok()?;
    let b: f64 = denominator.trim().parse().ok()?;
    if b == 0.0 {
        return None;
    }
    Some(if negative { -a / b } else { a / b })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decorated_numbers() {
        for (text, expected) in [
            ("$1,234", 1234.0),
            ("18.0", 18.0),
            ("\\$5.50", 5.5),
            ("75\\%", 75.0),
            ("12 dollars", 12.0),
            ("-3", -3.0),
            ("\\frac{3}{4}", 0.75),
            ("3/4", 0.75),
            ("\\text{20 apples}", 20.0),
        ] {
            assert_eq!(parse_number(text), Some(expected), "{text}");
        }
        assert_eq!(parse_number("none"), None);
    }

    #[test]
    fn scores_correct_marked_and_unmarked_answers() {
        let boxed = score_numeric("18", "so she makes \\boxed{\\$18}");
        assert!((boxed.total - 1.0).abs() < 1e-6 && boxed.success);
        let bare = score_numeric("18", "she makes 18 dollars");
        assert!((bare.total - 0.9).abs() < 1e-6 && bare.success);
        let wrong = score_numeric("18", "\\boxed{17}");
        assert!(!wrong.success && wrong.total < 0.2);
        let nothing = score_numeric("18", "");
        assert_eq!(nothing.total, 0.0);
    }
}
