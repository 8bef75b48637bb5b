//! Miner: for every window, mine `groups_per_window` GRPO groups on its compute workers, sign
//! them with its hotkey and publish each once on JetStream (retried with the same
//! `Nats-Msg-Id` until acked). Work that cannot finish before the deadline is not started.

use std::sync::Arc;
use std::time::Duration;

use messages::subjects as subj;
use messages::RolloutGroup;

use crate::bus::{now_ms, MsgMeta};
use crate::checkpoints::CheckpointBook;
use crate::role::{RoleCtx, RoleFuture, RoleLoop};
use crate::shutdown::ShutdownSignal;
use crate::task::OwnedTask;
use crate::windows::{follow_clock, WindowBook};
use crate::worker_pool::WorkerPool;

pub use crate::compute::mine::{MineJob, MinerCompute, MinerWorker};

#[derive(Clone, Debug)]
pub struct MinerConfig {
    pub groups_per_window: u32,
    /// Groups mined in one decode batch on one worker (`[roles.miner] batch_groups`): each
    /// weight read serves all their rows. 1 = one group per job.
    pub batch_groups: u32,
}

impl MinerConfig {
    /// `groups_per_window` groups, one per job.
    pub fn groups(groups_per_window: u32) -> Self {
        Self {
            groups_per_window,
            batch_groups: 1,
        }
    }
}

pub struct Miner {
    ctx: RoleCtx,
    cfg: MinerConfig,
    pool: Arc<WorkerPool<MinerWorker>>,
    /// None: mine without checkpoints (model-free compute).
    book: Option<CheckpointBook>,
}

impl Miner {
    pub fn new(ctx: RoleCtx, cfg: MinerConfig, pool: Arc<WorkerPool<MinerWorker>>) -> Self {
        Self {
            ctx,
            cfg,
            pool,
            book: None,
        }
    }

    /// Follow `book` and mine each window with the checkpoint governing it; windows without
    /// a loaded checkpoint are skipped.
    pub fn with_checkpoints(mut self, book: CheckpointBook) -> Self {
        self.book = Some(book);
        self
    }
}

impl RoleLoop for Miner {
    fn run(&self, _shutdown: ShutdownSignal) -> RoleFuture {
        let ctx = self.ctx.clone();
        let cfg = self.cfg.clone();
        let pool = self.pool.clone();
        let checkpoints = self.book.clone();
        Box::pin(async move {
            let book = WindowBook::default();
            let follower = OwnedTask::spawn(follow_clock(ctx.bus.clone(), "miner", book.clone()));
            let ckpt_follower = checkpoints
                .as_ref()
                .map(|b| b.spawn_follower(ctx.bus.clone(), "miner"));
            // Groups being mined: owned by this loop (a restart or shutdown aborts them).
            let mut in_flight = tokio::task::JoinSet::new();
            let mut last_mined = 0u64;
            let mut last_skipped = 0u64;
            loop {
                if follower.is_finished() {
                    anyhow::bail!("lost the clock stream");
                }
                if ckpt_follower.as_ref().is_some_and(|f| f.is_finished()) {
                    anyhow::bail!("lost the checkpoint stream");
                }
                while in_flight.try_join_next().is_some() {}
                book.changed(Duration::from_millis(500)).await;
                let Some(open) = book.latest_open() else {
                    continue;
                };
                if open.window <= last_mined || now_ms() >= open.deadline_ms {
                    continue;
                }
                let checkpoint = checkpoints.as_ref().and_then(|b| b.for_window(open.window));
                if checkpoints.is_some() && checkpoint.is_none() {
                    // Retried until the deadline: the checkpoint may still be loading.
                    if last_skipped < open.window {
                        last_skipped = open.window;
                        ctx.metrics().reject("miner", "checkpoint_unavailable");
                        tracing::info!(
                            window = open.window,
                            "no checkpoint loaded for the window; not mining it yet"
                        );
                    }
                    continue;
                }
                last_mined = open.window;
                ctx.metrics()
                    .window
                    .with_label_values(&["miner"])
                    .set(open.window as i64);
                let jobs: Vec<MineJob> = (0..cfg.groups_per_window)
                    .map(|g| MineJob {
                        window: open.window,
                        open_randomness: open.randomness.0,
                        deadline_ms: open.deadline_ms,
                        group_index: g,
                        miner: ctx.identity.address().to_string(),
                        miner_pubkey: ctx.identity.public(),
                        checkpoint: checkpoint.clone(),
                    })
                    .collect();
                for batch in jobs.chunks(cfg.batch_groups.max(1) as usize) {
                    let (ctx, pool, batch) = (ctx.clone(), pool.clone(), batch.to_vec());
                    in_flight.spawn_local(async move {
                        if let Err(e) = mine_and_publish(&ctx, &pool, batch).await {
                            tracing::warn!(error = %format!("{e:#}"), "group not published");
                        }
                    });
                }
            }
        })
    }
}

/// Mines `batch` on one worker, then publishes each of its groups.
async fn mine_and_publish(
    ctx: &RoleCtx,
    pool: &WorkerPool<MinerWorker>,
    batch: Vec<MineJob>,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let _working = crate::metrics::InFlight::enter(
        ctx.metrics()
            .in_flight
            .with_label_values(&[ctx.role, &ctx.instance]),
    );
    let Some(first) = batch.first() else {
        return Ok(());
    };
    let (window, deadline) = (first.window, first.deadline_ms);
    let groups = pool.run(batch).await?;
    let secs = started.elapsed().as_secs_f64();
    let tokens: usize = groups
        .iter()
        .flat_map(|g| &g.rollouts)
        .map(|r| r.completion().len())
        .sum();
    if secs > 0.0 {
        ctx.metrics()
            .generation_tokens_per_second
            .set(tokens as f64 / secs);
    }
    // A batch's groups share its time: each is charged its share (the histogram is per group).
    let per_group = secs / groups.len().max(1) as f64;
    let mut failed = None;
    for group in groups {
        if let Err(e) = publish_group(ctx, window, deadline, group, per_group).await {
            failed = Some(e);
        }
    }
    failed.map_or(Ok(()), Err)
}

async fn publish_group(
    ctx: &RoleCtx,
    window: u64,
    deadline: u64,
    group: RolloutGroup,
    secs: f64,
) -> anyhow::Result<()> {
    let group_index = group.group_index;
    if now_ms() > deadline {
        ctx.metrics().reject("miner", "mined_after_deadline");
        anyhow::bail!(
            "group {group_index} of window {window} finished after the deadline; not published"
        );
    }
    let tokens: usize = group.rollouts.iter().map(|r| r.completion().len()).sum();
    let me = ctx.identity.address().to_string();
    let meta = MsgMeta {
        window: Some(window),
        miner: Some(me.clone()),
        msg_id: Some(subj::rollout_msg_id(&messages::envelope::payload_digest(
            &group,
        ))),
    };
    let retry_for = Duration::from_millis(deadline.saturating_sub(now_ms()) + 2_000);
    ctx.bus
        .publish_durable(
            "miner",
            subj::rollout(window, &me),
            group,
            &ctx.identity,
            meta,
            retry_for,
        )
        .await?;
    let m = ctx.metrics();
    m.groups_published.with_label_values(&[&me]).inc();
    m.tokens_generated.inc_by(tokens as u64);
    m.handle_seconds
        .with_label_values(&["miner", "mine_group"])
        .observe(secs);
    tracing::debug!(window, group_index, tokens, secs, "group published");
    Ok(())
}
