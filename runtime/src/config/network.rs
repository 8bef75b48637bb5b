//! `[network]` of cluster.toml: the network id, the pinned owner, limits and operator keys
//! on other hosts (the manifest `grail up` signs is built from it; see docs/SECURITY.md).

use std::path::PathBuf;

use serde::Deserialize;

/// `[network]`: the identity of the network and who may act in it (see docs/SECURITY.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSection {
    /// Network id (1-64 of `[A-Za-z0-9_-]`); defaults to `cluster.name`.
    pub id: Option<String>,
    /// The owner address every role pins: only manifests it signed are accepted. Empty: the
    /// owner key in `owner_key_file` (created by `grail up` when missing) is used.
    pub owner: String,
    /// The owner's key file; only the process that signs the manifest (`grail up`) reads it.
    pub owner_key_file: Option<PathBuf>,
    /// Groups one miner key may publish per window (also enforced by the rollout stream).
    pub max_groups_per_window: u32,
    /// Groups for windows further ahead of the clock than this are refused.
    pub max_future_windows: u64,
    /// Operator keys on other hosts, by role (`verifier = ["5F…"]`), added to the keys of
    /// this cluster's own `[roles]` in the manifest.
    pub keys: ExtraKeys,
}

impl Default for NetworkSection {
    fn default() -> Self {
        let limits = messages::manifest::NetworkLimits::default();
        Self {
            id: None,
            owner: String::new(),
            owner_key_file: None,
            max_groups_per_window: limits.max_groups_per_window,
            max_future_windows: limits.max_future_windows,
            keys: ExtraKeys::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtraKeys {
    pub clock: Vec<String>,
    pub verifier: Vec<String>,
    pub scorer: Vec<String>,
    pub trainer: Vec<String>,
    pub publisher: Vec<String>,
    pub evaluator: Vec<String>,
}
