//! Environment specs as written in `cluster.toml` and the factory that builds them.
//!
//! ```toml
//! [env]
//! id = "gsm8k"
//! data_dir = "run/datasets"   # datasets root (`grail data fetch gsm8k`), or the dataset's own folder
//! params = { split = "train" }
//! ```

use crate::{arith, code, gsm8k, math, sat, EnvError, Environment};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// Environment ids [`build`] knows.
pub const KNOWN_ENVS: &[&str] = &["arith", "sat", "gsm8k", "math", "mbpp", "humaneval"];

/// One environment entry of the cluster configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSpec {
    pub id: String,
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Environment-specific parameters; unknown keys are rejected by [`build`].
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
}

impl EnvSpec {
    /// A spec with no data directory and default parameters.
    pub fn new(id: &str) -> EnvSpec {
        EnvSpec {
            id: id.to_string(),
            ..EnvSpec::default()
        }
    }

    pub fn with_data_dir(mut self, data_dir: impl Into<PathBuf>) -> EnvSpec {
        self.data_dir = Some(data_dir.into());
        self
    }

    pub fn with_param(mut self, key: &str, value: impl Into<serde_json::Value>) -> EnvSpec {
        self.params.insert(key.to_string(), value.into());
        self
    }
}

/// Builds the environment `spec` describes, loading (and digesting) its data files.
pub fn build(spec: &EnvSpec) -> Result<Arc<dyn Environment>, EnvError> {
    let data_dir = spec.data_dir.as_deref();
    Ok(match spec.id.as_str() {
        "arith" => Arc::new(arith::ArithEnv::from_params(&spec.params)?),
        "sat" => Arc::new(sat::SatEnv::from_params(&spec.params)?),
        "gsm8k" => Arc::new(gsm8k::Gsm8kEnv::load(data_dir, &spec.params)?),
        "math" => Arc::new(math::MathEnv::load(data_dir, &spec.params)?),
        "mbpp" => Arc::new(code::mbpp::load(data_dir, &spec.params)?),
        "humaneval" => Arc::new(code::humaneval::load(data_dir, &spec.params)?),
        other => {
            return Err(EnvError::UnknownEnv {
                id: other.to_string(),
                known: KNOWN_ENVS.join(", "),
            })
        }
    })
}

/// Why a spec's training draw ([`Environment::problem`]) would include eval problems: the
/// offending key (`id` or `params.<key>`), what is wrong and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainsOnEval {
    pub key: &'static str,
    pub problem: String,
    pub fix: String,
}

/// Whether `spec` trains on its eval split, decided from the id and params alone so a config
/// can be refused before any data is loaded. Agrees with [`Environment::train_overlaps_eval`]
/// (checked against the loaded envs in `tests/splits.rs`).
pub fn trains_on_eval(spec: &EnvSpec) -> Option<TrainsOnEval> {
    let split = spec.params.get("split").and_then(|value| value.as_str());
    let eval_splits: &[&str] = match spec.id.as_str() {
        "gsm8k" => &["test"],
        "math" => &["math500", "test"],
        "mbpp" => &["test", "all"],
        "humaneval" => {
            return Some(TrainsOnEval {
                key: "id",
                problem: "is \"humaneval\", an evaluation-only set (no train split)".into(),
                fix: "train on `mbpp` (its train split, task ids 601-974) and score HumanEval with `grail eval --env humaneval`".into(),
            })
        }
        _ => return None,
    };
    let split = split.filter(|split| eval_splits.contains(split))?;
    Some(TrainsOnEval {
        key: "params.split",
        problem: format!(
            "is {split:?}, which holds `{}`'s eval problems (held out for `grail eval`)",
            spec.id
        ),
        fix: "use split = \"train\" (the default)".into(),
    })
}
