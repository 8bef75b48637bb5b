//! Environment specs as written in `cluster.toml` and the factory that builds them.
//!
//! ```toml
//! [[envs]]
//! id = "gsm8k"
//! data_dir = "../shared/datasets"   # datasets root, or the dataset's own folder
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
