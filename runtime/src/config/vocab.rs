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

/// `[checkpoints] store`: `"nats"` (the JetStream object store), an S3 bucket
/// (`"s3://bucket/prefix?endpoint=…&region=…"`, credentials from `AWS_*` env vars; see
/// `actors::checkpoints::s3`) or a directory path (relative to the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointStoreKind {
    Nats,
    S3(String),
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
            url if url.starts_with("s3://") => {
                // Syntax checked at load; credentials are read when the store opens.
                actors::checkpoints::S3Config::from_url_with_env(url, |_| None)
                    .map_err(serde::de::Error::custom)?;
                Ok(Self::S3(url.to_string()))
            }
            _ => Ok(Self::Dir(PathBuf::from(value))),
        }
    }
}

impl std::fmt::Display for CheckpointStoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Nats => f.write_str("nats"),
            Self::S3(url) => f.write_str(url),
            Self::Dir(dir) => write!(f, "{}", dir.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CheckpointStoreKind;

    #[derive(serde::Deserialize)]
    struct Checkpoints {
        store: CheckpointStoreKind,
    }

    #[test]
    fn s3_store_urls_are_checked_at_load() {
        let url = "s3://ckpts/run?endpoint=http://127.0.0.1:9000";
        let c: Checkpoints = toml::from_str(&format!("store = {url:?}")).unwrap();
        assert_eq!(c.store, CheckpointStoreKind::S3(url.into()));
        assert_eq!(c.store.to_string(), url);
        let e = toml::from_str::<Checkpoints>("store = \"s3://b/p?part_mib=1\"")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("at least 5"), "{e}");
    }
}
