//! Starting the roles a cluster.toml describes, inside the current actix System.
//!
//! `[compute] kind = "model"` (the product) gives miners and verifiers the policy engine,
//! the trainer GRPO, and the publisher the checkpoint pipeline; every model-backed role
//! follows the checkpoint book. `"structural"` runs the model-free compute used by the
//! transport tests.

use std::sync::Arc;
use std::time::Duration;

use actors::bus::Bus;
use actors::checkpoints::{BookConfig, CheckpointBook};
use actors::compute::model::evaluate::EvalPlan;
use actors::compute::model::ModelEvaluator;
use actors::compute::model::{
    MinerOptions, ModelBase, ModelMiner, ModelVerifier, VerifierOptions, WindowRegistry,
};
use actors::compute::structural::{StructuralMiner, StructuralVerifier};
use actors::compute::trainer::{GrpoTrainerCompute, TrainerOptions};
use actors::role::{RoleCtx, RoleLoop};
use actors::roles::clock::{Clock, ClockConfig};
use actors::roles::evaluator::{Evaluator, EvaluatorConfig};
use actors::roles::miner::{Miner, MinerConfig, MinerWorker};
use actors::roles::publisher::{Publisher, PublisherConfig, PublisherSetup};
use actors::roles::scorer::{Scorer, ScorerConfig};
use actors::roles::trainer::{CountingTrainer, Trainer, TrainerConfig, TrainerWorker};
use actors::roles::verifier::{Verifier, VerifierConfig, VerifierWorker};
use actors::shutdown::ShutdownSignal;
use actors::supervisor::{self, RestartPolicy, RoleHandle};
use actors::worker_pool::{PoolConfig, WorkerPool};
use messages::Hash32;
use policy::DeviceSpec;

use crate::compute::{key_path, SharedCompute};
use crate::config::{ClusterConfig, Role, RoleSection};
use crate::keys;

/// The supervised role instances of this process, kept so they can be stopped.
pub struct RunningRoles {
    pub roles: Vec<RoleHandle>,
}

/// Start every role of `cfg` (or only `only`) under the supervisor, each on its bus; they run
/// until `shutdown` is requested.
pub async fn start_roles(
    cfg: &ClusterConfig,
    shared: &Arc<SharedCompute>,
    buses: &crate::auth::RoleBuses,
    only: Option<Role>,
    shutdown: &ShutdownSignal,
) -> anyhow::Result<RunningRoles> {
    let mut actors = Vec::new();
    for role in Role::ALL {
        if only.is_some_and(|o| o != role) {
            continue;
        }
        let Some(section) = cfg.roles.get(role) else {
            continue;
        };
        if let Some(n) = section.only_instance.filter(|n| *n >= section.instances) {
            anyhow::bail!(
                "--instance {n}: {} has [roles.{role}] instances = {} (instances are 0..{}): pick one of those, or raise `instances`",
                cfg.source.display(),
                section.instances,
                section.instances
            );
        }
        for i in 0..section.instances {
            if section.only_instance.is_some_and(|only| only != i) {
                continue;
            }
            let identity = keys::load_or_create(&key_path(cfg, role, Some(section), i))?;
            let instance = format!("{role}-{i}");
            let ctx = RoleCtx {
                // Each role identity on its own connection and credentials.
                bus: buses.bus(role, &identity).await?,
                identity,
                role: role.as_str(),
                instance: instance.clone(),
            };
            let body = build_role(cfg, shared, role, section, ctx.clone()).await?;
            tracing::info!(role = role.as_str(), instance = %instance, address = %ctx.identity.address(), "starting");
            let handle =
                supervisor::start_with(&ctx, body, shutdown.clone(), RestartPolicy::default());
            actors.push(handle);
        }
    }
    Ok(RunningRoles { roles: actors })
}

fn pool_config(role: Role, section: &RoleSection) -> PoolConfig {
    PoolConfig::new(role.as_str(), section.workers)
}

/// The trainer's private f32 master weights and optimizer state (run_dir/trainer/).
fn trainer_state_path(cfg: &ClusterConfig) -> anyhow::Result<std::path::PathBuf> {
    let dir = cfg.run_dir().join("trainer");
    std::fs::create_dir_all(&dir).map_err(|e| {
        anyhow::anyhow!(
            "creating the trainer state directory {}: {e}",
            dir.display()
        )
    })?;
    Ok(dir.join("state.safetensors"))
}

/// The device of worker `w` (devices are cycled over the workers).
fn worker_device(section: &RoleSection, w: usize) -> DeviceSpec {
    section.devices[w % section.devices.len()]
}

/// The base model for each worker, by its device (shared between workers on one device).
fn worker_bases(
    shared: &SharedCompute,
    section: &RoleSection,
) -> anyhow::Result<Vec<Arc<ModelBase>>> {
    (0..section.workers)
        .map(|w| shared.base(worker_device(section, w)))
        .collect()
}

/// A checkpoint book trusting `[checkpoints] publisher` (or this cluster's publisher key)
/// and every publisher key of the installed manifest (an outside miner's only source).
async fn book(shared: &SharedCompute, bus: &Bus) -> anyhow::Result<CheckpointBook> {
    book_keeping(shared, bus, BookConfig::DEFAULT_CACHE).await
}

/// [`book`] keeping at most `cache` loaded weight sets (the evaluator needs only the one it
/// scores: it loads anchors itself with `load_seq`, not the newest few deltas).
async fn book_keeping(
    shared: &SharedCompute,
    bus: &Bus,
    cache: usize,
) -> anyhow::Result<CheckpointBook> {
    let mut trusted = vec![shared.trusted(Role::Publisher)?];
    if let Some(m) = bus.trust.manifest() {
        trusted.extend(m.roles.publisher.iter().cloned());
    }
    let mut cfg = BookConfig::trusting(trusted);
    cfg.cache = cache;
    Ok(CheckpointBook::new(cfg, shared.store(bus).await?))
}

async fn build_role(
    cfg: &ClusterConfig,
    shared: &Arc<SharedCompute>,
    role: Role,
    section: &RoleSection,
    ctx: RoleCtx,
) -> anyhow::Result<Arc<dyn RoleLoop>> {
    let metrics = ctx.bus.metrics.clone();
    let model = shared.uses_model();
    Ok(match role {
        Role::Clock => {
            let length_ms = (cfg.window.length_secs * 1000.0) as u64;
            let seed =
                keys::load_or_create_secret(&cfg.run_dir().join("keys").join("clock-chain.seed"))?;
            let mut clock = ClockConfig {
                length_ms,
                submit_ms: (length_ms as f64 * cfg.window.submit_fraction) as u64,
                chain_len: cfg.window.chain_length,
                seed,
                lease_ttl_ms: 2_000,
                tick_ms: 100,
                genesis_ms: None,
            };
            // The manifest's schedule is the network's: every role checks clock messages
            // against it, so the clock follows it exactly.
            if let Some(s) = ctx.bus.trust.schedule() {
                (clock.length_ms, clock.submit_ms, clock.chain_len) =
                    (s.length_ms, s.submit_ms, s.chain_len);
                clock.genesis_ms = Some(s.genesis_ms);
            }
            Arc::new(Clock::new(ctx, clock))
        }
        Role::Miner => {
            let miner_cfg = MinerConfig {
                groups_per_window: section.groups_per_window as u32,
                batch_groups: section.batch_groups as u32,
            };
            if model {
                let env = shared.env()?;
                let bases = worker_bases(shared, section)?;
                let pool = WorkerPool::start(
                    pool_config(role, section),
                    Arc::new(move |w| {
                        Ok(MinerWorker(Box::new(ModelMiner::new(
                            bases[w % bases.len()].clone(),
                            env.clone(),
                            MinerOptions::default(),
                        ))))
                    }),
                    metrics,
                );
                let book = book(shared, &ctx.bus).await?;
                Arc::new(Miner::new(ctx, miner_cfg, Arc::new(pool)).with_checkpoints(book))
            } else {
                let pool = WorkerPool::start(
                    pool_config(role, section),
                    Arc::new(|_| {
                        Ok(MinerWorker(Box::new(StructuralMiner {
                            checkpoint: Hash32::default(),
                        })))
                    }),
                    metrics,
                );
                Arc::new(Miner::new(ctx, miner_cfg, Arc::new(pool)))
            }
        }
        Role::Verifier => {
            let verifier_cfg = VerifierConfig {
                concurrency: section.workers * 2,
                ack_wait: Duration::from_secs(30),
            };
            if model {
                let env = shared.env()?;
                let bases = worker_bases(shared, section)?;
                // One window registry per verifier instance, shared by its workers.
                let v = &cfg.verifier;
                let opts = VerifierOptions {
                    deep_check_rate_ppm: (cfg.compute.deep_check_rate * 1e6).round() as u32,
                    challenge_k: v.challenge_k,
                    rollouts_checked: v.rollouts_checked,
                    logit_drift: v.logit_drift,
                    logprob_epsilon: v.logprob_epsilon,
                    min_eos_probability: v.min_eos_probability,
                    tolerance: v.sketch,
                    reward: v.reward,
                    rescore_every_group: v.rescore_every_group,
                    soft: cfg.scoring.soft,
                    // The manifest's limit, as the shared bus ledger applies it.
                    max_groups_per_window: ctx.bus.trust.limits_max_groups(),
                    registry: Arc::new(WindowRegistry::default()),
                    ..Default::default()
                };
                let pool = WorkerPool::start(
                    pool_config(role, section),
                    Arc::new(move |w| {
                        Ok(VerifierWorker(Box::new(ModelVerifier::new(
                            bases[w % bases.len()].clone(),
                            env.clone(),
                            opts.clone(),
                        ))))
                    }),
                    metrics,
                );
                let book = book(shared, &ctx.bus).await?;
                Arc::new(Verifier::new(ctx, verifier_cfg, Arc::new(pool)).with_checkpoints(book))
            } else {
                let pool = WorkerPool::start(
                    pool_config(role, section),
                    Arc::new(|_| Ok(VerifierWorker(Box::new(StructuralVerifier)))),
                    metrics,
                );
                Arc::new(Verifier::new(ctx, verifier_cfg, Arc::new(pool)))
            }
        }
        Role::Trainer => {
            if model {
                let base = shared.base(worker_device(section, 0))?;
                let t = &cfg.trainer;
                let opts = TrainerOptions {
                    grpo: t.grpo(),
                    epochs: t.epochs,
                    mini_batch: t.mini_batch,
                    dtype: base.dtype,
                    device: base.device.clone(),
                    state_path: Some(trainer_state_path(cfg)?),
                    rounding: cfg.checkpoints.rounding,
                };
                let pool = WorkerPool::start(
                    // One trainer thread: the optimizer state is not shared between workers.
                    PoolConfig::new(role.as_str(), 1),
                    Arc::new(move |_| {
                        Ok(TrainerWorker(Box::new(GrpoTrainerCompute::new(
                            base.config.clone(),
                            base.pad_id,
                            opts.clone(),
                        ))))
                    }),
                    metrics,
                );
                let book = book(shared, &ctx.bus).await?;
                let trainer_cfg = TrainerConfig {
                    max_staleness_seqs: t.max_staleness,
                    ..Default::default()
                };
                Arc::new(Trainer::new(ctx, Arc::new(pool)).with_checkpoints(book, trainer_cfg))
            } else {
                let pool = WorkerPool::start(
                    pool_config(role, section),
                    Arc::new(|_| Ok(TrainerWorker(Box::new(CountingTrainer)))),
                    metrics,
                );
                Arc::new(Trainer::new(ctx, Arc::new(pool)))
            }
        }
        Role::Scorer => Arc::new(Scorer::new(
            ctx,
            ScorerConfig {
                params: cfg.scoring.params(),
                soft: cfg.scoring.soft,
                forget_after_windows: cfg.scoring.forget_after_windows,
                max_miners: cfg.scoring.max_miners,
            },
        )),
        Role::Publisher => {
            if model {
                let base = shared.base(DeviceSpec::Cpu)?;
                let c = &cfg.checkpoints;
                let setup = PublisherSetup {
                    cfg: PublisherConfig {
                        anchor_every: c.anchor_every,
                        keep_anchors: c.keep_anchors,
                        lead_windows: c.lead_windows,
                        trusted_trainers: vec![shared.trusted(Role::Trainer)?],
                        ..Default::default()
                    },
                    store: shared.store(&ctx.bus).await?,
                    base: Arc::new(base.base_weights().clone()),
                    sampling: cfg.sampling.spec(),
                };
                Arc::new(Publisher::with_checkpoints(ctx, setup))
            } else {
                Arc::new(Publisher::new(ctx))
            }
        }
        Role::Evaluator => {
            anyhow::ensure!(
                model,
                "[roles.evaluator] needs [compute] kind = \"model\" (it scores the model); delete the section for structural clusters"
            );
            let env = shared.env()?;
            let e = &cfg.evaluator;
            let plan = EvalPlan {
                problems: match env.eval_len() {
                    Some(len) => e.problems.min(len),
                    None => e.problems,
                },
                samples: e.samples,
                seed: e.seed,
                max_new_tokens: cfg.sampling.max_new_tokens as usize,
                temperature: cfg.sampling.temperature,
            };
            let eval_cfg = EvaluatorConfig {
                every: e.every,
                env: env.id().to_string(),
                plan: plan.clone(),
                max_backlog: e.max_backlog,
            };
            let bases = worker_bases(shared, section)?;
            let pool = WorkerPool::start(
                pool_config(role, section),
                Arc::new(move |w| {
                    Ok(ModelEvaluator::new(
                        bases[w % bases.len()].clone(),
                        env.clone(),
                        plan.clone(),
                    ))
                }),
                metrics,
            );
            let book = book_keeping(shared, &ctx.bus, 1).await?;
            Arc::new(Evaluator::new(ctx, eval_cfg, Arc::new(pool), book))
        }
    })
}
