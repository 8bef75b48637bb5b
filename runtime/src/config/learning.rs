//! The cluster.toml sections that shape learning: which compute the roles run, the sampling
//! parameters published with every checkpoint, the trainer's GRPO knobs and the checkpoint
//! publisher's cadence and trust.

use serde::Deserialize;

use super::vocab::{CheckpointStoreKind, ComputeKind};

/// `[compute]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComputeSection {
    /// `"model"`: miners generate with the policy and verifiers re-run it (the product);
    /// `"structural"`: model-free completions, for transport and supervision tests.
    pub kind: ComputeKind,
    /// Fraction of groups a verifier re-runs the forward pass on (picked with the close
    /// randomness, so a miner cannot know which); cheap checks run on every group.
    pub deep_check_rate: f64,
}

impl Default for ComputeSection {
    fn default() -> Self {
        Self {
            kind: ComputeKind::Model,
            deep_check_rate: 1.0,
        }
    }
}

/// `[sampling]`: published with each checkpoint; miners sample with it, verifiers replay it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingSection {
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub repetition_penalty: f32,
    pub max_new_tokens: u32,
}

impl Default for SamplingSection {
    fn default() -> Self {
        let d = messages::SamplingSpec::default();
        Self {
            temperature: d.temperature,
            top_k: d.top_k,
            top_p: d.top_p,
            repetition_penalty: d.repetition_penalty,
            max_new_tokens: d.max_new_tokens,
        }
    }
}

impl SamplingSection {
    pub fn spec(&self) -> messages::SamplingSpec {
        messages::SamplingSpec {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            max_new_tokens: self.max_new_tokens,
        }
    }
}

/// `[trainer]`: GRPO hyper-parameters. Defaults are grail's, except where a key says.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainerSection {
    pub lr: f64,
    pub weight_decay: f64,
    /// Passes over each window's verified rollouts.
    pub epochs: u32,
    /// Rollouts per optimizer step (0: a whole window's rollouts in one step).
    pub mini_batch: usize,
    /// Rollouts per forward/backward (gradient accumulation within a step).
    pub micro_batch: usize,
    pub kl_coef: f32,
    pub entropy_coef: f32,
    pub grad_clip: f64,
    /// Groups mined on a checkpoint more than this many checkpoints behind the newest are
    /// not trained on.
    pub max_staleness: u64,
}

impl Default for TrainerSection {
    fn default() -> Self {
        let g = policy::grpo::GrpoConfig::default();
        Self {
            lr: g.optimizer.lr,
            weight_decay: g.optimizer.weight_decay,
            epochs: 1,
            mini_batch: 0,
            micro_batch: g.micro_batch_size,
            kl_coef: g.kl_coef,
            entropy_coef: g.entropy_coef,
            grad_clip: g.grad_clip,
            max_staleness: 4,
        }
    }
}

impl TrainerSection {
    pub fn grpo(&self) -> policy::grpo::GrpoConfig {
        let mut g = policy::grpo::GrpoConfig::default();
        g.optimizer.lr = self.lr;
        g.optimizer.weight_decay = self.weight_decay;
        g.micro_batch_size = self.micro_batch;
        g.kl_coef = self.kl_coef;
        g.entropy_coef = self.entropy_coef;
        g.grad_clip = self.grad_clip;
        g
    }
}

/// `[checkpoints]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointsSection {
    /// Every n-th checkpoint is stored in full (an anchor); the others as deltas.
    pub anchor_every: u64,
    /// Anchors kept in the store (with the deltas that build on them).
    pub keep_anchors: usize,
    /// A checkpoint becomes valid this many windows after the window open when announced.
    pub lead_windows: u64,
    /// Where checkpoint objects live: `"nats"` (the JetStream object store) or a directory.
    pub store: CheckpointStoreKind,
    /// SS58 address whose announcements miners and verifiers trust; empty = this cluster's
    /// own publisher key (run_dir/keys/publisher-0.json).
    pub publisher: String,
    /// SS58 address whose candidates the publisher accepts; empty = this cluster's trainer key.
    pub trainer: String,
    /// The dtype checkpoints are published, committed (digest) and loaded in: `"bf16"`,
    /// `"f32"`, or `"auto"` (bf16 for a model file, f32 for the tiny model). The trainer keeps
    /// f32 master weights either way.
    pub dtype: PublishDtype,
    /// How the trainer's f32 master weights are rounded into a bf16 checkpoint: `"dithered"`
    /// (default; updates below half a bf16 ulp still reach miners, on average) or `"nearest"`.
    pub rounding: policy::checkpoint::Rounding,
}

/// `[checkpoints] dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishDtype {
    Auto,
    Bf16,
    F32,
}

impl PublishDtype {
    /// The dtype for a network whose model is the tiny one (`tiny`) or a model file.
    pub fn resolve(self, tiny: bool) -> candle_core::DType {
        match self {
            Self::Bf16 => candle_core::DType::BF16,
            Self::F32 => candle_core::DType::F32,
            // The tiny model's lr 3e-3 learning is measured with f32 checkpoints (its bf16
            // deltas are still 37 % of full: docs/BENCHMARKS.md "Checkpoint deltas").
            Self::Auto if tiny => candle_core::DType::F32,
            Self::Auto => candle_core::DType::BF16,
        }
    }
}

impl Default for CheckpointsSection {
    fn default() -> Self {
        Self {
            anchor_every: 10,
            keep_anchors: 2,
            lead_windows: 1,
            store: CheckpointStoreKind::Nats,
            publisher: String::new(),
            trainer: String::new(),
            dtype: PublishDtype::Auto,
            rounding: Default::default(),
        }
    }
}

/// A problem with one learning key: (key, problem, fix).
pub type KeyProblem = (&'static str, String, &'static str);

/// Checks the learning sections; the caller turns the first problem into a `ConfigError`.
pub fn validate(
    compute: &ComputeSection,
    sampling: &SamplingSection,
    trainer: &TrainerSection,
    checkpoints: &CheckpointsSection,
) -> Result<(), KeyProblem> {
    if !(0.0..=1.0).contains(&compute.deep_check_rate) {
        return Err((
            "compute.deep_check_rate",
            format!("is {}", compute.deep_check_rate),
            "use a fraction in [0, 1] (1 = every group gets the forward-pass checks)",
        ));
    }
    if !(sampling.temperature.is_finite() && sampling.temperature > 0.0) {
        return Err((
            "sampling.temperature",
            format!("is {}", sampling.temperature),
            "use a positive temperature (e.g. 1.0); seeded sampling needs noise",
        ));
    }
    if !(sampling.top_p > 0.0 && sampling.top_p <= 1.0) {
        return Err((
            "sampling.top_p",
            format!("is {}", sampling.top_p),
            "use a value in (0, 1] (1 disables top-p)",
        ));
    }
    if !(sampling.repetition_penalty.is_finite() && sampling.repetition_penalty > 0.0) {
        return Err((
            "sampling.repetition_penalty",
            format!("is {}", sampling.repetition_penalty),
            "use a positive value (1 disables the penalty)",
        ));
    }
    if sampling.max_new_tokens == 0 {
        return Err(("sampling.max_new_tokens", "is 0".into(), "use at least 1"));
    }
    if !(trainer.lr.is_finite() && trainer.lr > 0.0) {
        return Err((
            "trainer.lr",
            format!("is {}", trainer.lr),
            "use a positive learning rate (e.g. 1e-6 for real models, 3e-3 for the tiny one)",
        ));
    }
    if trainer.micro_batch == 0 || trainer.epochs == 0 {
        return Err((
            "trainer.micro_batch / trainer.epochs",
            "is 0".into(),
            "use at least 1",
        ));
    }
    if checkpoints.anchor_every == 0 || checkpoints.keep_anchors == 0 {
        return Err((
            "checkpoints.anchor_every / checkpoints.keep_anchors",
            "is 0".into(),
            "use at least 1 (anchor_every = 1 stores every checkpoint in full)",
        ));
    }
    for (key, value) in [
        ("checkpoints.publisher", &checkpoints.publisher),
        ("checkpoints.trainer", &checkpoints.trainer),
    ] {
        if !value.is_empty() && messages::Ss58Address::parse(value).is_err() {
            return Err((
                key,
                format!("{value:?} is not an SS58 address"),
                "give the hotkey address (`grail keys show FILE`), or leave it empty to trust this cluster's own key",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::{ClusterConfig, ConfigError};
    use std::path::Path;

    fn problem(text: &str) -> String {
        match ClusterConfig::parse(text, Path::new("x/cluster.toml")) {
            Err(e @ ConfigError::Invalid { .. }) => e.to_string(),
            other => panic!("expected an invalid-key error, got {other:?}"),
        }
    }

    #[test]
    fn learning_sections_default_and_parse() {
        let c = ClusterConfig::parse(
            "[sampling]\nmax_new_tokens = 8\n[trainer]\nlr = 0.003\n[checkpoints]\nanchor_every = 4\n",
            Path::new("x/cluster.toml"),
        )
        .unwrap();
        assert_eq!(c.sampling.spec().max_new_tokens, 8);
        assert_eq!(c.trainer.grpo().optimizer.lr, 0.003);
        assert_eq!(c.checkpoints.anchor_every, 4);
        assert_eq!(c.compute.kind, super::ComputeKind::Model);
    }

    #[test]
    fn checkpoint_dtype_defaults_to_auto_and_parses() {
        use candle_core::DType;
        let c = ClusterConfig::parse("", Path::new("x/cluster.toml")).unwrap();
        assert_eq!(c.checkpoints.dtype, super::PublishDtype::Auto);
        assert_eq!(c.checkpoints.dtype.resolve(true), DType::F32);
        assert_eq!(c.checkpoints.dtype.resolve(false), DType::BF16);
        let c = ClusterConfig::parse("[checkpoints]\ndtype = \"f32\"\n", Path::new("x/c.toml"))
            .unwrap();
        assert_eq!(c.checkpoints.dtype.resolve(false), DType::F32);
        let e = ClusterConfig::parse("[checkpoints]\ndtype = \"fp8\"\n", Path::new("x/c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("fp8") && e.contains("bf16"), "{e}");
    }

    #[test]
    fn bad_learning_keys_are_named_with_a_fix() {
        let e = problem("[sampling]\ntemperature = 0.0\n");
        assert!(e.contains("`sampling.temperature`"), "{e}");
        let e = problem("[checkpoints]\npublisher = \"not-an-address\"\n");
        assert!(e.contains("`checkpoints.publisher`"), "{e}");
        let e = problem("[trainer]\nlr = -1.0\n");
        assert!(e.contains("`trainer.lr`"), "{e}");
    }
}
