//! The closed vocabularies of cluster.toml, parsed when the file is read: a typo'd value is
//! refused at load with the accepted values, never compared as a string later.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

/// `[nats] storage`: where JetStream keeps streams, KV buckets and the object store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NatsStorage {
    /// Survives restarts (the default).
    File,
    /// Lost when the server stops; for tests.
    Memory,
}

/// `[compute] kind`: what the miners and verifiers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeKind {
    /// The policy model (the product).
    Model,
    /// Model-free completions, for transport and supervision tests.
    Structural,
}

/// `[checkpoints] store`: `"nats"` (the JetStream object store) or a directory path
/// (relative to the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointStoreKind {
    Nats,
    Dir(PathBuf),
}

impl<'de> Deserialize<'de> for CheckpointStoreKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = String::deserialize(d)?;
        match value.trim() {
            "nats" => Ok(Self::Nats),
            "" => Err(serde::de::Error::custom(
                "empty checkpoint store: use \"nats\" (the JetStream object store) or a directory path",
            )),
            _ => Ok(Self::Dir(PathBuf::from(value))),
        }
    }
}

impl std::fmt::Display for CheckpointStoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Nats => f.write_str("nats"),
            Self::Dir(dir) => write!(f, "{}", dir.display()),
        }
    }
}
