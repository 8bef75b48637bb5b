//! `arith`: a toy task a tiny randomly initialised byte-level model learns from scratch with GRPO.
//!
//! Problems are `7+5=` (mode `add`, operands in `0..=max_operand`) or `copy 4821=` (mode
//! `copy`, `digits` random digits); the answer is the digit string (`12`, `4821`). By default
//! there is no system prompt and the user message is the bare problem, so the prompt stays a
//! handful of bytes for the tiny byte-level model. A pretrained instruct model answers a bare
//! `37+45=` in prose; for it, `instruction` is appended to the user message on its own line
//! (e.g. "Answer with only the number.") and `system` adds a system message. `examples = N`
//! puts N solved problems before the question as earlier user/assistant turns (few-shot): a
//! small instruct model copies the answer format of its own earlier turns far more reliably than
//! it follows a written instruction. The demonstrations are drawn from the problem's own stream
//! after its item (deterministic), differ from the item, and are training-side items under
//! `holdout = "items"`, so no eval item is ever shown.
//!
//! # Why early policies see reward variance
//! GRPO learns only from reward differences *within* a group of 16 completions of one prompt. A
//! random byte-level policy (~260 tokens) almost never emits the exact answer, so an exact-match
//! reward would be 0 for every completion and give no gradient. The reward is therefore a sum of
//! dense components (weights in brackets) that a random policy already spreads out:
//!
//! * `digits` (0.2): share of the completion's characters that are ASCII digits. Each random byte
//!   is a digit with p ≈ 10/260, so a 16-byte completion holds Binomial(16, 0.04) digits: almost
//!   every group of 16 has completions with 0, 1 and 2 digits, i.e. variance from step one.
//!   This teaches "emit digits".
//! * `length` (0.2): `digits / (1 + |len - len(answer)|)`. Early completions run to the token
//!   limit; the few that sample the end token early score higher, which teaches stopping. It is
//!   scaled by the digit share so that an empty or junk early stop earns nothing: otherwise
//!   "end at once" (a single token away for a random policy) would beat random text and the
//!   policy could collapse onto empty completions, which have zero variance and stall GRPO.
//! * `value` (0.2): `1 / (1 + |n - answer|)` for the number `n` the completion starts with (0
//!   without a leading digit). Once digits appear this rewards being numerically close, a smooth
//!   signal towards the right magnitude before any digit is exactly right.
//! * `match` (0.4): share of answer positions whose character is right (`12` vs `15` → 0.5).
//!
//! The exact answer (and nothing else, surrounding whitespace ignored) scores 1.0 and is the only
//! `success`. Each component is monotone in "closer to the answer", so the components never pull
//! against each other.
//!
//! # Split
//! Training problem `seed` draws from the SplitMix64 stream keyed `"arith"`, eval problem `index`
//! from the stream keyed `"arith/eval"`: the two seed spaces are domain-separated, so no eval
//! index replays a training seed's draw (eval ids carry `/eval/<index>`).
//!
//! `holdout` says whether the *items* are disjoint too:
//! * `"seeds"` (default): both streams draw from the whole family, so the same sum or digit
//!   string can occur in both. The tiny from-scratch model needs this: an item it never trains
//!   on is an output it never saw rewarded (`max_operand = 9` has only 100 sums).
//! * `"items"`: every item belongs to exactly one side, by a keyed BLAKE2b hash of its canonical
//!   text (`add/37+45`, `copy/4821`): 1 in 5 items is eval-only and training never draws it (a
//!   draw that lands on the other side is redrawn from the same stream, so generation stays
//!   deterministic). Held-out pass@1 then measures generalisation to unseen items. It needs a
//!   family of at least 100 items (copy `digits >= 2`, add `max_operand >= 9`), so that both
//!   sides are non-empty (the chance that a 100-item family has no eval item is 0.8^100).
use crate::params::Params;
use crate::rng::SplitMix64;
use crate::{ChatMessage, EnvError, Environment, Problem, Reward};
use blake2::{digest::consts::U32, Blake2b, Digest};
use serde_json::{json, Map, Value};

const COMPONENTS: [&str; 4] = ["digits", "length", "value", "match"];
const WEIGHT_DIGITS: f32 = 0.2;
const WEIGHT_LENGTH: f32 = 0.2;
const WEIGHT_VALUE: f32 = 0.2;
const WEIGHT_MATCH: f32 = 0.4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithMode {
    /// `a+b=` with `a, b` in `0..=max_operand`.
    Add { max_operand: u64 },
    /// `copy d…d=` with `digits` random digits.
    Copy { digits: usize },
}

/// Whether eval items are disjoint from training items (see the module docs, "Split").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holdout {
    /// Disjoint seed streams over one shared item family.
    Seeds,
    /// Disjoint items: 1 in [`EVAL_ITEM_SHARE`] items is eval-only.
    Items,
}

/// With `holdout = "items"`, one item in this many is eval-only.
pub const EVAL_ITEM_SHARE: u64 = 5;
/// The most few-shot demonstrations `examples` accepts.
const MAX_EXAMPLES: u64 = 8;
/// The smallest family `holdout = "items"` accepts.
const MIN_ITEMS_FOR_ITEM_HOLDOUT: u128 = 100;

/// The toy arithmetic/copy environment.
#[derive(Debug, Clone)]
pub struct ArithEnv {
    mode: ArithMode,
    holdout: Holdout,
    /// Appended to the user message on a new line when non-empty.
    instruction: String,
    /// A system message when non-empty (else the model's template default, if any).
    system: String,
    /// Solved demonstrations before the question (few-shot turns).
    examples: usize,
}

impl ArithEnv {
    pub fn new(mode: ArithMode) -> ArithEnv {
        ArithEnv {
            mode,
            holdout: Holdout::Seeds,
            instruction: String::new(),
            system: String::new(),
            examples: 0,
        }
    }

    /// Parameters: `mode` (`"add"` default, or `"copy"`), `max_operand` (add; default 9, 1..=10^9),
    /// `digits` (copy; default 3, 1..=12), `holdout` (`"seeds"` default, or `"items"`; see the
    /// module docs), `instruction` and `system` (default empty, at most 1000 characters each),
    /// `examples` (few-shot demonstrations, default 0, at most 8).
    pub fn from_params(params: &Map<String, Value>) -> Result<ArithEnv, EnvError> {
        let params = Params::new(
            "arith",
            params,
            &[
                "mode",
                "max_operand",
                "digits",
                "holdout",
                "instruction",
                "system",
                "examples",
            ],
        )?;
        let mode = match params.choice("mode", "add", &["add", "copy"])?.as_str() {
            "copy" => ArithMode::Copy {
                digits: params.u64_in("digits", 3, 1, 12)? as usize,
            },
            _ => ArithMode::Add {
                max_operand: params.u64_in("max_operand", 9, 1, 1_000_000_000)?,
            },
        };
        let holdout = match params
            .choice("holdout", "seeds", &["seeds", "items"])?
            .as_str()
        {
            "items" => Holdout::Items,
            _ => Holdout::Seeds,
        };
        if holdout == Holdout::Items && family_size(mode) < MIN_ITEMS_FOR_ITEM_HOLDOUT {
            return Err(params.bad(
                "holdout",
                format!(
                    "\"items\" needs a family of at least {MIN_ITEMS_FOR_ITEM_HOLDOUT} items, {mode:?} \
                     has {}: raise `digits`/`max_operand` or use holdout = \"seeds\"",
                    family_size(mode)
                ),
            ));
        }
        Ok(ArithEnv {
            mode,
            holdout,
            instruction: params.string("instruction", "", 1000)?,
            system: params.string("system", "", 1000)?,
            examples: params.u64_in("examples", 0, 0, MAX_EXAMPLES)? as usize,
        })
    }

    pub fn mode(&self) -> ArithMode {
        self.mode
    }

    pub fn holdout(&self) -> Holdout {
        self.holdout
    }
}

/// How many distinct items `mode` has.
fn family_size(mode: ArithMode) -> u128 {
    match mode {
        ArithMode::Add { max_operand } => (u128::from(max_operand) + 1).pow(2),
        ArithMode::Copy { digits } => 10u128.pow(digits as u32),
    }
}

/// Whether the item with canonical text `item` (`add/37+45`, `copy/4821`) is eval-only under
/// `holdout = "items"`.
pub fn is_eval_item(item: &str) -> bool {
    let digest = Blake2b::<U32>::new()
        .chain_update(b"grail/arith/holdout/v1\0")
        .chain_update(item.as_bytes())
        .finalize();
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(head) % EVAL_ITEM_SHARE == 0
}

impl Environment for ArithEnv {
    fn id(&self) -> &str {
        "arith"
    }

    fn problem(&self, seed: u64) -> Problem {
        self.generate(SplitMix64::keyed("arith", seed), "arith", false)
    }

    fn eval_problem(&self, index: u64) -> Problem {
        self.generate(
            SplitMix64::keyed(EVAL_SALT, index),
            &format!("arith/eval/{index}"),
            true,
        )
    }

    fn eval_len(&self) -> Option<u64> {
        None
    }

    fn score(&self, problem: &Problem, completion: &str) -> Reward {
        match problem.target.get("answer").and_then(Value::as_str) {
            Some(answer) if !answer.is_empty() => score_digits(answer, completion),
            _ => Reward::zero(&COMPONENTS, "problem target has no `answer` string"),
        }
    }

    fn data_digest(&self) -> Option<[u8; 32]> {
        None
    }

    fn reference_completion(&self, problem: &Problem) -> Option<String> {
        problem.target.get("answer")?.as_str().map(str::to_string)
    }
}

/// The RNG salt of the eval stream (training uses `"arith"`).
const EVAL_SALT: &str = "arith/eval";

impl ArithEnv {
    /// One problem from `rng`; ids start with `prefix` (`arith` or `arith/eval/<index>`). With
    /// `holdout = "items"`, draws from the other side of the split are redrawn.
    fn generate(&self, mut rng: SplitMix64, prefix: &str, eval: bool) -> Problem {
        let (item, prompt, answer) = loop {
            let drawn = self.draw(&mut rng);
            if self.holdout == Holdout::Seeds || is_eval_item(&drawn.0) == eval {
                break drawn;
            }
        };
        let id = format!("{prefix}/{item}");
        let mut messages = Vec::new();
        if !self.system.is_empty() {
            messages.push(ChatMessage::system(self.system.clone()));
        }
        let mut shown = 0;
        while shown < self.examples {
            let (example, example_prompt, example_answer) = self.draw(&mut rng);
            // Never the question itself, never an eval item (the family has >= 10 items, and
            // under item holdout >= 100, so a fitting draw comes quickly).
            if example == item || (self.holdout == Holdout::Items && is_eval_item(&example)) {
                continue;
            }
            messages.push(ChatMessage::user(self.user_text(example_prompt)));
            messages.push(ChatMessage::new("assistant", example_answer));
            shown += 1;
        }
        messages.push(ChatMessage::user(self.user_text(prompt)));
        Problem {
            env: "arith".to_string(),
            id,
            messages,
            target: json!({ "answer": answer }),
        }
    }

    /// The user turn for `prompt`: the bare problem, or it plus the instruction on a new line.
    fn user_text(&self, prompt: String) -> String {
        if self.instruction.is_empty() {
            prompt
        } else {
            format!("{prompt}\n{}", self.instruction)
        }
    }

    /// One item from `rng`: (canonical text, prompt, answer).
    fn draw(&self, rng: &mut SplitMix64) -> (String, String, String) {
        match self.mode {
            ArithMode::Add { max_operand } => {
                let a = rng.range_inclusive(0, max_operand);
                let b = rng.range_inclusive(0, max_operand);
                (
                    format!("add/{a}+{b}"),
                    format!("{a}+{b}="),
                    (a + b).to_string(),
                )
            }
            ArithMode::Copy { digits } => {
                let text: String = (0..digits)
                    .map(|_| char::from(b'0' + rng.below(10) as u8))
                    .collect();
                (format!("copy/{text}"), format!("copy {text}="), text)
            }
        }
    }
}

/// Scores `completion` against the digit string `answer`; see the module docs.
pub fn score_digits(answer: &str, completion: &str) -> Reward {
    let trimmed = strip_end_markers(completion).trim();
    let chars: Vec<char> = trimmed.chars().collect();
    let answer_chars: Vec<char> = answer.chars().collect();

    let digit_count = chars.iter().filter(|c| c.is_ascii_digit()).count();
    let digits = if chars.is_empty() {
        0.0
    } else {
        digit_count as f32 / chars.len() as f32
    };
    // Weighted by the digit share: stopping early only pays when the output is digits, so
    // "emit the end token at once" (easy for a random policy) is not a reward-earning shortcut.
    let length = digits / (1.0 + chars.len().abs_diff(answer_chars.len()) as f32);
    let value = leading_number(&chars)
        .zip(answer.parse::<u128>().ok())
        .map_or(0.0, |(number, target)| {
            1.0 / (1.0 + number.abs_diff(target) as f32)
        });
    let matched = answer_chars
        .iter()
        .zip(chars.iter())
        .filter(|(expected, got)| expected == got)
        .count();
    let matching = matched as f32 / answer_chars.len() as f32;

    let success = trimmed == answer;
    let reason = (!success).then(|| {
        let shown: String = trimmed.chars().take(40).collect();
        format!("expected {answer:?}, got {shown:?}")
    });
    Reward::from_components(
        vec![
            ("digits", WEIGHT_DIGITS * digits),
            ("length", WEIGHT_LENGTH * length),
            ("value", WEIGHT_VALUE * value),
            ("match", WEIGHT_MATCH * matching),
        ],
        success,
        reason,
    )
}

/// Drops end-of-turn markers a decoder may leave in the text.
fn strip_end_markers(text: &str) -> &str {
    let mut text = text;
    for marker in ["<|im_end|>", "<|endoftext|>", "</s>"] {
        if let Some(position) = text.find(marker) {
            text = &text[..position];
        }
    }
    text
}

/// The number formed by the leading digits (at most 30 of them, so it fits a `u128`).
fn leading_number(chars: &[char]) -> Option<u128> {
    let digits: String = chars
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .take(30)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn env_with(params: Value) -> Result<ArithEnv, EnvError> {
        ArithEnv::from_params(params.as_object().unwrap())
    }

    fn answers(env: &ArithEnv, eval: bool, count: u64) -> HashSet<String> {
        (0..count)
            .map(|n| {
                let problem = if eval {
                    env.eval_problem(n)
                } else {
                    env.problem(n)
                };
                problem.id.rsplit_once('/').unwrap().1.to_string()
            })
            .collect()
    }

    #[test]
    fn item_holdout_keeps_eval_items_out_of_training() {
        for params in [
            json!({ "mode": "copy", "digits": 3, "holdout": "items" }),
            json!({ "mode": "add", "max_operand": 9, "holdout": "items" }),
        ] {
            let env = env_with(params.clone()).unwrap();
            let train = answers(&env, false, 5_000);
            let eval = answers(&env, true, 500);
            assert!(train.is_disjoint(&eval), "{params}: shared items");
            assert!(eval.len() >= 10, "{params}: {} eval items", eval.len());
            // Every eval item is on the eval side of the partition, and the share is ~1 in 5.
            let family: u64 = train.len() as u64 + eval.len() as u64;
            assert!(
                eval.len() as u64 * 3 < family,
                "{params}: eval share too large"
            );
        }
    }

    #[test]
    fn seed_holdout_shares_the_item_family() {
        let env = env_with(json!({ "mode": "add", "max_operand": 9 })).unwrap();
        assert_eq!(env.holdout(), Holdout::Seeds);
        let train = answers(&env, false, 2_000);
        let eval = answers(&env, true, 200);
        assert!(
            !train.is_disjoint(&eval),
            "seeds holdout draws from one family"
        );
    }

    #[test]
    fn item_holdout_refuses_families_too_small_to_split() {
        let err = env_with(json!({ "mode": "copy", "digits": 1, "holdout": "items" }))
            .unwrap_err()
            .to_string();
        assert!(err.contains("holdout") && err.contains("seeds"), "{err}");
        assert!(env_with(json!({ "holdout": "everything" })).is_err());
    }

    #[test]
    fn item_holdout_is_deterministic() {
        let env = env_with(json!({ "mode": "copy", "digits": 4, "holdout": "items" })).unwrap();
        assert_eq!(env.problem(42), env.problem(42));
        assert_eq!(env.eval_problem(7), env.eval_problem(7));
    }

    #[test]
    fn exact_answer_gets_full_reward_and_partial_answers_are_ordered() {
        let full = score_digits("12", "12");
        assert!((full.total - 1.0).abs() < 1e-6 && full.success);
        let padded = score_digits("12", " 12\n<|im_end|>");
        assert!((padded.total - 1.0).abs() < 1e-6 && padded.success);
        let close = score_digits("12", "13");
        let far = score_digits("12", "97");
        let letters = score_digits("12", "ab");
        let empty = score_digits("12", "");
        assert!(close.total > far.total && far.total > letters.total);
        assert_eq!((letters.total, empty.total), (0.0, 0.0));
        assert_eq!(score_digits("12", "a").total, 0.0);
        assert!(!close.success);
        let long = score_digits("12", "12345678");
        assert!(long.total < full.total && !long.success);
    }

    #[test]
    fn instruction_and_system_shape_the_messages_only() {
        let plain = ArithEnv::from_params(&Map::new()).unwrap();
        let params = json!({"max_operand": 99, "instruction": "Answer with only the number.",
                            "system": "You are a calculator."});
        let instructed = ArithEnv::from_params(params.as_object().unwrap()).unwrap();
        let bare = plain.problem(3);
        assert_eq!(bare.messages.len(), 1, "default: the bare problem only");
        let problem = instructed.problem(3);
        assert_eq!(
            problem.messages[0],
            ChatMessage::system("You are a calculator.")
        );
        let user = &problem.messages[1];
        assert_eq!(user.role, "user");
        let (question, instruction) = user.content.split_once('\n').unwrap();
        assert!(
            question.ends_with('=') && question.contains('+'),
            "{question}"
        );
        assert_eq!(instruction, "Answer with only the number.");
        let answer = problem.target["answer"].as_str().unwrap();
        assert!(instructed.score(&problem, answer).success);
        let too_long = json!({"instruction": "x".repeat(1001)});
        let err = ArithEnv::from_params(too_long.as_object().unwrap()).unwrap_err();
        assert!(err.to_string().contains("instruction"), "{err}");
        let not_text = json!({"system": 3});
        assert!(ArithEnv::from_params(not_text.as_object().unwrap()).is_err());
    }

    #[test]
    fn examples_are_solved_earlier_turns_never_the_question_or_an_eval_item() {
        let params = json!({ "mode": "copy", "digits": 2, "holdout": "items", "examples": 3,
                             "instruction": "Answer with only the number." });
        let env = env_with(params).unwrap();
        for index in 0..200 {
            let problem = env.eval_problem(index);
            let roles: Vec<&str> = problem.messages.iter().map(|m| m.role.as_str()).collect();
            assert_eq!(
                roles,
                [
                    "user",
                    "assistant",
                    "user",
                    "assistant",
                    "user",
                    "assistant",
                    "user"
                ]
            );
            let question = problem.messages.last().unwrap();
            assert!(question
                .content
                .ends_with("=\nAnswer with only the number."));
            let answer = problem.target["answer"].as_str().unwrap();
            for pair in problem.messages[..6].chunks(2) {
                let shown = &pair[1].content;
                assert_eq!(
                    pair[0].content,
                    format!("copy {shown}=\nAnswer with only the number.")
                );
                assert_ne!(
                    shown, answer,
                    "eval {index}: the question is its own example"
                );
                assert!(
                    !is_eval_item(&format!("copy/{shown}")),
                    "eval item {shown} shown"
                );
            }
        }
        assert_eq!(env.eval_problem(5), env.eval_problem(5));
        assert_eq!(env.problem(5), env.problem(5));
        // Without `examples` the prompt is the question alone (the tiny model's default).
        let plain = env_with(json!({ "mode": "copy", "digits": 2, "holdout": "items" })).unwrap();
        assert_eq!(plain.eval_problem(5).messages.len(), 1);
        assert_eq!(plain.eval_problem(5).id, env.eval_problem(5).id);
        assert!(env_with(json!({ "examples": 9 })).is_err());
    }

    #[test]
    fn random_policies_see_variance() {
        // Completions a random byte policy might produce: no digits vs. one digit vs. early stop.
        let a = score_digits("7", "x#Qz!kLm");
        let b = score_digits("7", "x#Q3!kLm");
        let c = score_digits("7", "x3");
        assert_eq!(a.total, 0.0);
        assert!(b.total > a.total && c.total > b.total);
    }
}
