//! Starting the roles a cluster.toml describes, inside the current actix System.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actors::bus::Bus;
use actors::compute::structural::{StructuralMiner, StructuralVerifier};
use actors::role::{RoleActor, RoleCtx, RoleLoop};
use actors::roles::clock::{Clock, ClockConfig};
use actors::roles::miner::{Miner, MinerConfig, MinerWorker};
use actors::roles::scorer::Scorer;
use actors::roles::trainer::{CountingTrainer, Trainer, TrainerWorker};
use actors::roles::verifier::{Verifier, VerifierConfig, VerifierWorker};
use actors::worker_pool::{PoolConfig, WorkerPool};
use messages::Hash32;

use crate::config::{ClusterConfig, RoleSection, ROLE_NAMES};
use crate::keys;

/// The role actors of this process, kept so the tree can be inspected and shut down.
pub struct RunningRoles {
    pub actors: Vec<(&'static str, String, Addr<RoleActor>)>,
}

fn key_path(cfg: &ClusterConfig, role: &str, section: &RoleSection, i: usize) -> PathBuf {
    section
        .key_files
        .get(i)
        .map(|p| cfg.resolve(p))
        .unwrap_or_else(|| cfg.run_dir().join("keys").join(format!("{role}-{i}.json")))
}

/// Start every role of `cfg` (or only `only`) as supervised actors on `bus`.
pub fn start_roles(
    cfg: &ClusterConfig,
    bus: &Bus,
    only: Option<&str>,
) -> anyhow::Result<RunningRoles> {
    let mut actors = Vec::new();
    for role in ROLE_NAMES {
        if only.is_some_and(|o| o != role) {
            continue;
        }
        let Some(section) = cfg.roles.get(role) else {
            continue;
        };
        for i in 0..section.instances {
            let identity = keys::load_or_create(&key_path(cfg, role, section, i))?;
            let instance = format!("{role}-{i}");
            let ctx = RoleCtx {
                bus: bus.clone(),
                identity,
                role,
                instance: instance.clone(),
            };
            let body = build_role(cfg, role, section, ctx.clone())?;
            tracing::info!(role, instance = %instance, address = %ctx.identity.address(), "starting");
            actors.push((role, instance, RoleActor::start(ctx, body)));
        }
    }
    Ok(RunningRoles { actors })
}

fn pool_config(role: &str, section: &RoleSection) -> PoolConfig {
    PoolConfig::new(role, section.workers)
}

fn build_role(
    cfg: &ClusterConfig,
    role: &'static str,
    section: &RoleSection,
    ctx: RoleCtx,
) -> anyhow::Result<Arc<dyn RoleLoop>> {
    let metrics = ctx.bus.metrics.clone();
    Ok(match role {
        "clock" => {
            let length_ms = (cfg.window.length_secs * 1000.0) as u64;
            let seed =
                keys::load_or_create_secret(&cfg.run_dir().join("keys").join("clock-chain.seed"))?;
            Arc::new(Clock::new(
                ctx,
                ClockConfig {
                    length_ms,
                    submit_ms: (length_ms as f64 * cfg.window.submit_fraction) as u64,
                    chain_len: cfg.window.chain_length,
                    seed,
                    lease_ttl_ms: 2_000,
                    tick_ms: 100,
                },
            ))
        }
        "miner" => {
            let pool = WorkerPool::start(
                pool_config(role, section),
                Arc::new(|_| {
                    Ok(MinerWorker(Box::new(StructuralMiner {
                        checkpoint: Hash32::default(),
                    })))
                }),
                metrics,
            );
            Arc::new(Miner::new(
                ctx,
                MinerConfig {
                    groups_per_window: section.groups_per_window as u32,
                },
                Arc::new(pool),
            ))
        }
        "verifier" => {
            let pool = WorkerPool::start(
                pool_config(role, section),
                Arc::new(|_| Ok(VerifierWorker(Box::new(StructuralVerifier)))),
                metrics,
            );
            Arc::new(Verifier::new(
                ctx,
                VerifierConfig {
                    concurrency: section.workers * 2,
                    ack_wait: Duration::from_secs(30),
                },
                Arc::new(pool),
            ))
        }
        "trainer" => {
            let pool = WorkerPool::start(
                pool_config(role, section),
                Arc::new(|_| Ok(TrainerWorker(Box::new(CountingTrainer)))),
                metrics,
            );
            Arc::new(Trainer::new(ctx, Arc::new(pool)))
        }
        "scorer" => Arc::new(Scorer::new(ctx, Default::default())),
        "publisher" => Arc::new(actors::roles::publisher::Publisher::new(ctx)),
        other => anyhow::bail!("unknown role {other}"),
    })
}
