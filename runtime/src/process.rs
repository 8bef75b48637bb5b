//! Per-process overrides of a shared cluster.toml, so any number of role processes can run
//! from one config on one host: each its own `/metrics` port, run directory and instance.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::ClusterConfig;

/// What one process changes of the config it shares (`--metrics-listen`, `--run-dir`,
/// `--instance` on the command line).
#[derive(Clone, Debug, Default)]
pub struct ProcessOverrides {
    /// Run only instance N of each role this process runs (0-based).
    pub instance: Option<usize>,
    /// `/metrics` address instead of `[metrics] listen`; "" turns it off.
    pub metrics_listen: Option<String>,
    /// Run directory instead of `[cluster] run_dir` (relative to the working directory).
    pub run_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    #[error("--metrics-listen {0:?} is not HOST:PORT: use e.g. 127.0.0.1:9465 (one port per process), or \"\" to turn /metrics off")]
    Listen(String),
    #[error("--run-dir {path}: {source}")]
    RunDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Apply `o` to `cfg`. The instance is checked against `[roles.<role>] instances` when the
/// roles start ([`crate::cluster::start_roles`]), where the role is known.
pub fn apply(cfg: &mut ClusterConfig, o: &ProcessOverrides) -> Result<(), OverrideError> {
    if let Some(listen) = &o.metrics_listen {
        cfg.metrics.listen = match listen.as_str() {
            "" => None,
            l if l.parse::<SocketAddr>().is_ok() => Some(l.to_string()),
            l => return Err(OverrideError::Listen(l.to_string())),
        };
    }
    if let Some(dir) = &o.run_dir {
        // Relative to where the command runs, not to the config file.
        cfg.cluster.run_dir = std::path::absolute(dir).map_err(|source| OverrideError::RunDir {
            path: dir.clone(),
            source,
        })?;
    }
    if let Some(i) = o.instance {
        let r = &mut cfg.roles;
        for section in [
            &mut r.clock,
            &mut r.miner,
            &mut r.verifier,
            &mut r.trainer,
            &mut r.publisher,
            &mut r.scorer,
            &mut r.evaluator,
        ]
        .into_iter()
        .flatten()
        {
            section.only_instance = Some(i);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_the_shared_settings() {
        let mut cfg = ClusterConfig::parse("", std::path::Path::new("/tmp/c.toml")).unwrap();
        apply(
            &mut cfg,
            &ProcessOverrides {
                instance: Some(1),
                metrics_listen: Some("127.0.0.1:9470".into()),
                run_dir: Some("/tmp/run-v1".into()),
            },
        )
        .unwrap();
        assert_eq!(cfg.metrics.listen.as_deref(), Some("127.0.0.1:9470"));
        assert_eq!(cfg.run_dir(), PathBuf::from("/tmp/run-v1"));
        assert_eq!(cfg.roles.verifier.as_ref().unwrap().only_instance, Some(1));
        apply(
            &mut cfg,
            &ProcessOverrides {
                metrics_listen: Some(String::new()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(cfg.metrics.listen, None);
        let err = apply(
            &mut cfg,
            &ProcessOverrides {
                metrics_listen: Some("9470".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("--metrics-listen \"9470\""),
            "{err}"
        );
    }
}
