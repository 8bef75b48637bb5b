//! grail-envs: the environments miners sample problems from and verifiers score completions with.
//!
//! Every environment is a pure function pair: [`Environment::problem`] maps a `u64` seed to the
//! same [`Problem`] on every machine (in-crate SplitMix64, never `rand`'s unspecified algorithms,
//! dataset rows picked by `seed mod N`), and [`Environment::score`] maps a completion to a
//! [`Reward`] deterministically. Code environments run the completion in a sandboxed `python3`
//! subprocess ([`sandbox`]) that the tests, in a second sandboxed process, can only call with
//! plain data ([`code`] says what is trusted and why); everything else is plain string work.
//!
//! Environments: `arith` (toy task a tiny random model learns from scratch), `sat` (planted
//! 3-SAT), `gsm8k`, `math` (MATH / MATH-500), `mbpp`, `humaneval`. Build one from a
//! [`EnvSpec`] (deserialisable from `cluster.toml`) with [`build`].
//!
//! # Train and eval splits
//! Training and evaluation never draw from the same data ([`Split`]): [`Environment::problem`]
//! is the training draw (its meaning is unchanged, so the proof protocol's problem seeds are
//! too) and [`Environment::eval_problem`] enumerates the held-out split (`grail eval`):
//!
//! | env | train (`problem(seed)`) | eval (`eval_problem(index)`) |
//! |---|---|---|
//! | `arith`, `sat` | generator stream keyed `"<id>"` | generator stream keyed `"<id>/eval"` (see each module) |
//! | `gsm8k` | `train.jsonl` (7473) | `test.jsonl` (1319) |
//! | `math` | MATH `test.jsonl` minus MATH-500 (4500) | MATH-500 (500) |
//! | `mbpp` | task ids 601–974 (374) | task ids 11–510 (500) |
//! | `humaneval` | none (eval only) | all 164 tasks |
//!
//! The data envs' `split` parameter still selects other rows for `problem(seed)` (reference
//! checks and benchmarks read the test rows that way); [`Environment::train_overlaps_eval`]
//! says when such a configuration would train on the eval split.

pub mod arith;
pub mod catalog;
pub mod chat;
pub mod code;
mod data;
mod error;
pub mod gsm8k;
pub mod math;
mod params;
pub mod parse;
pub mod rng;
pub mod sandbox;
pub mod sat;
mod spec;

pub use chat::{render_chat, ChatMessage};
pub use error::EnvError;
pub use spec::{build, trains_on_eval, EnvSpec, TrainsOnEval, KNOWN_ENVS};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which side of the train/eval split a problem comes from. Closed: there is no third split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// What miners sample and the trainer learns from ([`Environment::problem`]).
    Train,
    /// The held-out problems `grail eval` scores ([`Environment::eval_problem`]).
    Eval,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Eval => "eval",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = EnvError;

    fn from_str(text: &str) -> Result<Split, EnvError> {
        match text {
            "train" => Ok(Split::Train),
            "eval" => Ok(Split::Eval),
            other => Err(EnvError::BadSplit {
                given: other.to_string(),
            }),
        }
    }
}

/// One single-turn task: the chat to send to the policy and what the scorer needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// Environment id (`"gsm8k"`, ...), the same as [`Environment::id`].
    pub env: String,
    /// Stable identifier of the underlying task, e.g. `"gsm8k/train/123"`.
    pub id: String,
    pub messages: Vec<ChatMessage>,
    /// Environment-specific data the scorer needs (gold answer, tests, clauses, ...).
    pub target: serde_json::Value,
}

/// The score of one completion. `total` is the weighted sum of `components` (weights are part of
/// each component's value, so `total == components.iter().map(|c| c.1).sum()`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reward {
    pub total: f32,
    pub components: Vec<(String, f32)>,
    /// The task is solved (exact answer, satisfying assignment, all tests pass).
    pub success: bool,
    /// Why the completion lost reward, when there is something useful to say.
    pub reason: Option<String>,
}

impl Reward {
    /// Builds a reward from already-weighted components; `total` is their sum.
    pub fn from_components(
        components: Vec<(&str, f32)>,
        success: bool,
        reason: Option<String>,
    ) -> Reward {
        let components: Vec<(String, f32)> = components
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        let total = components.iter().map(|(_, value)| value).sum();
        Reward {
            total,
            components,
            success,
            reason,
        }
    }

    /// Zero reward (every listed component 0) with a reason.
    pub fn zero(component_names: &[&str], reason: impl Into<String>) -> Reward {
        Reward::from_components(
            component_names.iter().map(|name| (*name, 0.0)).collect(),
            false,
            Some(reason.into()),
        )
    }

    /// The value of one component, if present.
    pub fn component(&self, name: &str) -> Option<f32> {
        self.components
            .iter()
            .find(|(component, _)| component == name)
            .map(|(_, value)| *value)
    }
}

/// A task family. Implementations are immutable after construction and shared across worker
/// threads; `score` may block (code environments wait for the sandbox).
pub trait Environment: Send + Sync {
    /// The environment id, e.g. `"gsm8k"`.
    fn id(&self) -> &str;
    /// The training problem for `seed` ([`Split::Train`]); the same on every machine holding
    /// the same data. Miners and verifiers derive `seed` from the window randomness.
    fn problem(&self, seed: u64) -> Problem;
    /// Held-out evaluation problem number `index` ([`Split::Eval`]), never a training problem
    /// (see the crate docs for each environment's split). Data envs take `index mod`
    /// [`Environment::eval_len`], so `0..eval_len` visits every eval problem once.
    fn eval_problem(&self, index: u64) -> Problem;
    /// Number of eval problems; `None` for procedural envs (every index is a fresh draw).
    fn eval_len(&self) -> Option<u64>;
    /// Whether the configured training rows intersect the eval split (e.g. `gsm8k` with
    /// `split = "test"`, or `humaneval`, which has no training split). Roles should not train
    /// on such an environment; `grail eval` reports it.
    fn train_overlaps_eval(&self) -> bool {
        false
    }
    /// The problem `n` of `split`: [`Environment::problem`] or [`Environment::eval_problem`].
    fn split_problem(&self, split: Split, n: u64) -> Problem {
        match split {
            Split::Train => self.problem(n),
            Split::Eval => self.eval_problem(n),
        }
    }
    /// Scores a completion (the assistant text only, without the prompt).
    fn score(&self, problem: &Problem, completion: &str) -> Reward;
    /// BLAKE2b-256 of the data file(s) the problems come from (`None` for procedural envs), so
    /// miners and verifiers can check they hold the same data. For several files it is the hash
    /// of their concatenated bytes, in a fixed order documented by each environment.
    fn data_digest(&self) -> Option<[u8; 32]>;
    /// Number of distinct underlying tasks (`seed mod N` picks the row), `None` if procedural.
    fn num_problems(&self) -> Option<u64> {
        None
    }
    /// A completion known to earn full reward (gold answer / canonical solution), used by tests,
    /// benchmarks and "perfect miner" integration tests.
    fn reference_completion(&self, _problem: &Problem) -> Option<String> {
        None
    }
}
