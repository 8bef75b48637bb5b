//! Trainer: consumes the accepted groups of closed windows only. It follows the scorer's
//! per-miner window verdicts; for each miner that passed, it reads that miner's groups of the
//! window from the rollout stream and hands them to its training compute (a worker thread).
//! A miner that failed the window contributes nothing.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use futures::StreamExt;
use messages::subjects as subj;
use messages::{MinerWindowVerdict, RolloutGroup};

use crate::compute::{ActiveCheckpoint, SharedWeights};
use crate::role::{RoleCtx, RoleFuture, RoleLoop};
use crate::worker_pool::{Worker, WorkerPool};

/// A batch of verified groups from one window.
#[derive(Clone, Debug)]
pub struct TrainJob {
    pub window: u64,
    pub groups: Vec<RolloutGroup>,
    /// The latest published checkpoint: the trainer (re)starts from it when its own
    /// weights are not a descendant of it (first job, or after a crash).
    pub base: Option<ActiveCheckpoint>,
}

#[derive(Clone, Debug, Default)]
pub struct TrainReport {
    pub steps: u32,
    pub loss: f32,
    pub kl: f32,
    pub grad_norm: f32,
    pub mean_reward: f32,
    /// The weights after this job's steps (None: nothing was trained).
    pub weights: Option<SharedWeights>,
    /// Digest of the checkpoint the trained weights descend from.
    pub trained_from: Option<messages::Hash32>,
}

pub trait TrainerCompute: Send {
    fn train(&mut self, job: &TrainJob) -> anyhow::Result<TrainReport>;
}

pub struct TrainerWorker(pub Box<dyn TrainerCompute>);

impl Worker for TrainerWorker {
    type Job = TrainJob;
    type Output = TrainReport;
    fn run(&mut self, job: &TrainJob) -> anyhow::Result<TrainReport> {
        self.0.train(job)
    }
}

/// Counts groups and reports their mean reward: the trainer without a model.
pub struct CountingTrainer;

impl TrainerCompute for CountingTrainer {
    fn train(&mut self, job: &TrainJob) -> anyhow::Result<TrainReport> {
        let rewards: Vec<f32> = job
            .groups
            .iter()
            .flat_map(|g| g.rollouts.iter().map(|r| r.reward))
            .collect();
        Ok(TrainReport {
            mean_reward: rewards.iter().sum::<f32>() / rewards.len().max(1) as f32,
            ..Default::default()
        })
    }
}

pub struct Trainer {
    ctx: RoleCtx,
    pool: Arc<WorkerPool<TrainerWorker>>,
}

impl Trainer {
    pub fn new(ctx: RoleCtx, pool: Arc<WorkerPool<TrainerWorker>>) -> Self {
        Self { ctx, pool }
    }
}

/// Every group `miner` published in `window`, read back from the rollout stream.
pub async fn groups_of(
    ctx: &RoleCtx,
    window: u64,
    miner: &str,
) -> anyhow::Result<Vec<RolloutGroup>> {
    let subject = subj::rollout(window, miner);
    let mut messages = ctx
        .bus
        .replay(subj::STREAM_ROLLOUTS, &subject, DeliverPolicy::All)
        .await?;
    let mut groups = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(300), messages.next()).await {
            Ok(Some(Ok(msg))) => {
                if let Ok((env, _)) = ctx.bus.open::<RolloutGroup>("trainer", &msg.payload) {
                    groups.push(env.payload);
                }
                if msg.info().map(|i| i.pending == 0).unwrap_or(false) {
                    break;
                }
            }
            Ok(Some(Err(e))) => anyhow::bail!("reading {subject}: {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    Ok(groups)
}

impl RoleLoop for Trainer {
    fn run(&self) -> RoleFuture {
        let ctx = self.ctx.clone();
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut verdicts = ctx
                .bus
                .replay(
                    subj::STREAM_VERDICTS,
                    subj::VERDICT_MINER_ALL,
                    DeliverPolicy::New,
                )
                .await?;
            while let Some(msg) = verdicts.next().await {
                let msg = msg.map_err(|e| anyhow::anyhow!("miner verdicts: {e}"))?;
                let Ok((env, _)) = ctx.bus.open::<MinerWindowVerdict>("trainer", &msg.payload)
                else {
                    continue;
                };
                let v = env.payload;
                if !v.passed {
                    tracing::info!(window = v.window, miner = %v.miner, reason = ?v.reason, "miner failed the window; its groups are not trained on");
                    continue;
                }
                let groups = groups_of(&ctx, v.window, &v.miner).await?;
                if groups.is_empty() {
                    continue;
                }
                let report = pool
                    .run(TrainJob {
                        window: v.window,
                        groups,
                        base: None,
                    })
                    .await?;
                let m = ctx.metrics();
                m.reward_mean
                    .with_label_values(&["trainer"])
                    .set(report.mean_reward as f64);
                m.train_steps.inc_by(report.steps as u64);
                m.train_loss.set(report.loss as f64);
                m.train_kl.set(report.kl as f64);
                m.train_grad_norm.set(report.grad_norm as f64);
                m.window
                    .with_label_values(&["trainer"])
                    .set(v.window as i64);
            }
            anyhow::bail!("miner-verdict stream ended")
        })
    }
}
