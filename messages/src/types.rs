//! Wire messages. Every struct that crosses NATS carries `version` ([`crate::WIRE_VERSION`]).
//!
//! Addresses are SS58 strings (prefix 42) so a person reading a stream sees the same hotkey
//! names as on chain; digests and randomness are 32-byte `bin` values.

use serde::{Deserialize, Serialize};

pub use crate::packed::{FixedBytes, Hash32, Signature64};
use crate::packed::{PackedF32, PackedU32};
use crate::reject::RejectCode;

/// Clock: a window starts. `randomness` (the open value) drives problem selection, sketch
/// coefficients and the sampling noise; it is a hash-chain value the clock committed to in advance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowOpen {
    pub version: u16,
    pub window: u64,
    pub randomness: Hash32,
    /// The clock's hash-chain commitment, and the revealed chain value `randomness` derives
    /// from (`x[window]`), so anyone can check it against the anchor.
    pub chain_anchor: Hash32,
    pub chain_position: u64,
    pub chain_value: Hash32,
    /// Unix milliseconds. Groups whose JetStream server timestamp is later than `deadline_ms` are late.
    pub opened_at_ms: u64,
    pub deadline_ms: u64,
}

/// Clock: the submission deadline passed; `randomness` (the close value) now decides which
/// positions and groups are checked. Nobody could know it while mining.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowClose {
    pub version: u16,
    pub window: u64,
    pub randomness: Hash32,
    pub chain_anchor: Hash32,
    /// `x[window + 1]`: revealing it is what makes the close randomness public.
    pub chain_position: u64,
    pub chain_value: Hash32,
    pub closed_at_ms: u64,
}

/// Sampling settings published with a checkpoint; miners must sample with exactly these.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingSpec {
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub repetition_penalty: f32,
    pub max_new_tokens: u32,
}

impl Default for SamplingSpec {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            max_new_tokens: 64,
        }
    }
}

/// One completion of a group, with its per-token proof data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Prompt followed by completion token ids.
    pub tokens: PackedU32,
    pub prompt_len: u32,
    /// One sketch commitment per completion token (the hidden state at that token's position).
    pub sketches: PackedU32,
    /// Log-probability of each completion token under the model (raw distribution); len = completion length.
    pub logprobs: PackedF32,
    pub reward: f32,
    pub advantage: f32,
    pub success: bool,
}

impl Rollout {
    pub fn completion(&self) -> &[u32] {
        let start = (self.prompt_len as usize).min(self.tokens.0.len());
        &self.tokens.0[start..]
    }
}

/// Miner: one GRPO group (G completions of one problem). Published once, on JetStream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutGroup {
    pub version: u16,
    pub window: u64,
    /// SS58 address of the miner; must equal the envelope signer and the subject's miner.
    pub miner: String,
    pub group_index: u32,
    /// Random per group; a repeated nonce from one miner is a replay.
    pub nonce: u64,
    /// Digest of the checkpoint the miner used.
    pub checkpoint: Hash32,
    pub env: String,
    pub problem_seed: u64,
    pub problem_id: String,
    pub rollouts: Vec<Rollout>,
}

impl RolloutGroup {
    pub fn token_count(&self) -> usize {
        self.rollouts.iter().map(|r| r.tokens.len()).sum()
    }
}

/// Verifier: the outcome for one group. Idempotent: a redelivered group gets the same verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupVerdict {
    pub version: u16,
    pub window: u64,
    pub miner: String,
    pub group_index: u32,
    /// Envelope digest of the verified group.
    pub group_digest: Hash32,
    pub verifier: String,
    pub accepted: bool,
    /// Why it was rejected (None when accepted); on the wire its snake_case code.
    pub reason: Option<RejectCode>,
    /// Whether the expensive forward-pass checks ran on this group.
    pub deep_checked: bool,
    pub unique_rollouts: u32,
    /// Non-zero reward variance: the group carries GRPO signal.
    pub learning_signal: bool,
    pub mean_reward: f32,
    /// JetStream server timestamp of the group (unix ms).
    pub server_ts_ms: u64,
    /// Rollouts of the group that solved the task (`success`: exact answer, all tests pass),
    /// as the verifier re-scored them; what `grail up` reports as exact-answer success.
    /// Decodes as 0 from verdicts that predate it.
    #[serde(default)]
    pub success_rollouts: u32,
}

/// Verifier: a miner's result for a whole window (one failed hard check fails it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MinerWindowVerdict {
    pub version: u16,
    pub window: u64,
    pub miner: String,
    pub verifier: String,
    pub passed: bool,
    /// The reject code that failed the window (None when passed).
    pub reason: Option<RejectCode>,
    pub groups_seen: u32,
    pub groups_accepted: u32,
    pub unique_rollouts: u32,
    pub signal_groups: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
// Externally tagged on purpose: internally tagged enums are buffered by serde in a
// human-readable intermediate form, which would turn `bin` digests into hex strings.
#[serde(rename_all = "snake_case")]
pub enum CheckpointKind {
    Full,
    /// Applies on top of `base`; `anchor` is the last full checkpoint of the chain.
    Delta {
        base: Hash32,
        anchor: Hash32,
    },
}

/// Publisher: a checkpoint is stored and becomes valid from `valid_from_window`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointAnnounce {
    pub version: u16,
    /// Digest of the full weight set this checkpoint reconstructs to.
    pub checkpoint: Hash32,
    pub seq: u64,
    pub valid_from_window: u64,
    pub kind: CheckpointKind,
    /// Object-store name of the stored bytes.
    pub object: String,
    pub bytes: u64,
    /// BLAKE2b-256 of the stored bytes.
    pub object_digest: Hash32,
    /// A delta's catch-up: one delta from its anchor straight to this checkpoint, for a role
    /// that holds neither the base nor the chain (a late joiner). `None` for full checkpoints
    /// and the first delta after an anchor (whose own delta is already that).
    pub catch_up: Option<CatchUpDelta>,
    pub sampling: SamplingSpec,
    pub created_at_ms: u64,
}

/// A cumulative delta `anchor → checkpoint` stored next to a delta checkpoint. Its base is the
/// announcement's `anchor` (the delta header must say so); it reconstructs the same weight
/// digest as the chain, so a loader may take whichever path is cheaper.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CatchUpDelta {
    /// Object-store name of the stored bytes.
    pub object: String,
    pub bytes: u64,
    /// BLAKE2b-256 of the stored bytes.
    pub object_digest: Hash32,
}

/// Trainer → publisher: new weights are staged in the checkpoint object store and ready to be
/// announced. Only the publisher acts on it (after checking the trainer's signature, the
/// object's byte digest and the weight digest); miners and verifiers never load staging objects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointCandidate {
    pub version: u16,
    /// SS58 address of the trainer; must equal the envelope signer.
    pub trainer: String,
    /// Canonical digest of the trained weight set.
    pub checkpoint: Hash32,
    /// Digest of the announced checkpoint the training started from.
    pub trained_from: Hash32,
    /// Object-store name of the staged full weights (safetensors).
    pub object: String,
    pub bytes: u64,
    /// BLAKE2b-256 of the staged bytes.
    pub object_digest: Hash32,
    /// Last window whose verified groups were trained on.
    pub last_window: u64,
    /// Optimizer steps since `trained_from`.
    pub steps: u64,
    pub created_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightEntry {
    pub miner: String,
    pub score: f64,
    pub weight: f32,
    /// Normalised to 65535 as Bittensor's set_weights expects.
    pub weight_u16: u16,
}

/// Scorer: the weights computed after a window's verdicts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    pub version: u16,
    pub window: u64,
    pub entries: Vec<WeightEntry>,
}

/// Which part of an environment's data a score is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSplit {
    Train,
    /// Held out: never drawn for training (`envs::Split::Eval`).
    Eval,
}

impl DataSplit {
    pub fn as_str(&self) -> &'static str {
        match self {
            DataSplit::Train => "train",
            DataSplit::Eval => "eval",
        }
    }
}

/// Success and reward over one kind of completion (greedy or sampled) of an evaluation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalScores {
    pub completions: u32,
    /// Completions with `success` (exact answer / every test passes).
    pub successes: u32,
    pub mean_reward: f32,
    pub mean_completion_tokens: f32,
}

impl EvalScores {
    /// pass@1: the share of completions that succeed.
    pub fn pass_at_1(&self) -> f64 {
        f64::from(self.successes) / f64::from(self.completions.max(1))
    }
}

/// Evaluator → anyone: one checkpoint (seq 0: the base model) scored on a fixed subset of the
/// environment's held-out split. Deterministic in (weights, env, problems, samples, seed), so
/// anyone can re-run it with `grail eval --checkpoint` and compare.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub version: u16,
    /// SS58 address of the evaluator; must equal the envelope signer.
    pub evaluator: String,
    /// Weight digest of what was evaluated.
    pub checkpoint: Hash32,
    /// Its announcement seq (0 = the manifest's base model, before any announcement).
    pub seq: u64,
    pub env: String,
    pub split: DataSplit,
    /// The first `problems` problems of the split.
    pub problems: u32,
    /// Sampled completions per problem (0: greedy only).
    pub samples: u32,
    pub seed: u64,
    pub max_new_tokens: u32,
    pub temperature: f32,
    pub greedy: EvalScores,
    pub sampled: Option<EvalScores>,
    /// Unbiased pass@k over the sampled completions: (k, value).
    pub pass_at_k: Vec<(u32, f32)>,
    pub created_at_ms: u64,
}

/// Any role, periodically: liveness for dashboards and `grail tail`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub version: u16,
    pub role: String,
    pub instance: String,
    pub ts_ms: u64,
    pub status: String,
    pub in_flight: u32,
}
