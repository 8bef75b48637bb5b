//! Trainer: consumes the accepted groups of closed windows only. It follows the scorer's
//! per-miner window verdicts; for each miner that passed, it reads that miner's groups of the
//! window from the rollout stream and hands them to its training compute (a worker thread).
//! A miner that failed the window contributes nothing.
//!
//! The scorer publishes a window's verdicts in one burst, so the trainer trains a window once a
//! later window's verdict arrives or the stream is quiet for `batch_idle`. With a
//! [`CheckpointBook`] it starts every job from the latest announced checkpoint, skips groups
//! mined on a checkpoint more than `max_staleness_seqs` behind it, and hands new weights to the
//! publisher: a staging object plus a signed [`CheckpointCandidate`].
//!
//! Resuming after a crash: the last trained window is kept in KV `grail_state`
//! (`trainer.last_window`, compare-and-set), and the newest candidate this trainer signed also
//! counts, so a crash between publishing a candidate and saving the window neither re-trains
//! the window nor publishes twice.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::StreamExt;
use messages::subjects::{self as subj, Subject};
use messages::{
    CheckpointCandidate, GroupVerdict, Hash32, MinerWindowVerdict, RolloutGroup, SignedMessage,
    WIRE_VERSION,
};

use crate::bus::{now_ms, MsgMeta};
use crate::checkpoints::{put_bytes, CheckpointBook};
use crate::compute::SharedWeights;
use crate::role::{RoleCtx, RoleFuture, RoleLoop};
use crate::roles::trainer_batch::{TrainBatcher, TrainableWindow};
use crate::shutdown::ShutdownSignal;
use crate::task::OwnedTask;
use crate::windows::{follow_clock, WindowBook};
use crate::worker_pool::WorkerPool;

pub use crate::compute::train::{
    CountingTrainer, TrainJob, TrainReport, TrainerCompute, TrainerWorker,
};

#[derive(Clone, Debug)]
pub struct TrainerConfig {
    /// Groups naming a checkpoint more than this many seqs behind the latest are skipped.
    pub max_staleness_seqs: u64,
    /// Quiet time after which the window being collected is trained.
    pub batch_idle: Duration,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self {
            max_staleness_seqs: 2,
            batch_idle: Duration::from_secs(2),
        }
    }
}

pub struct Trainer {
    ctx: RoleCtx,
    pool: Arc<WorkerPool<TrainerWorker>>,
    cfg: TrainerConfig,
    /// None: train without checkpoints (model-free clusters); nothing is published.
    book: Option<CheckpointBook>,
}

impl Trainer {
    pub fn new(ctx: RoleCtx, pool: Arc<WorkerPool<TrainerWorker>>) -> Self {
        Self {
            ctx,
            pool,
            cfg: TrainerConfig::default(),
            book: None,
        }
    }

    /// Follow `book` (trusting the publisher), start jobs from its latest checkpoint and
    /// publish candidates through its store.
    pub fn with_checkpoints(mut self, book: CheckpointBook, cfg: TrainerConfig) -> Self {
        self.book = Some(book);
        self.cfg = cfg;
        self
    }
}

/// Every group `miner` published in `window` that crosses the trust boundary, with its
/// payload digest, read back from the rollout stream.
pub async fn groups_of(
    ctx: &RoleCtx,
    window: u64,
    miner: &str,
) -> anyhow::Result<Vec<(RolloutGroup, Hash32)>> {
    let subject = subj::rollout(window, miner);
    let mut messages = ctx
        .bus
        .replay(subj::STREAM_ROLLOUTS, &subject, DeliverPolicy::All)
        .await?;
    let mut groups = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(300), messages.next()).await {
            Ok(Some(Ok(msg))) => {
                if let Ok((env, digest)) = ctx.bus.open::<RolloutGroup>("trainer", &msg.payload) {
                    groups.push((env.payload, digest));
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

/// Where a restarted trainer resumes: the KV record, or the newest candidate it signed.
struct Progress {
    kv: kv::Store,
    last_window: u64,
    revision: Option<u64>,
}

impl Progress {
    async fn load(ctx: &RoleCtx) -> anyhow::Result<Self> {
        let kv = ctx
            .bus
            .js
            .get_key_value(subj::KV_STATE)
            .await
            .map_err(|e| {
                anyhow::anyhow!("KV bucket {}: {e} (run `grail streams`)", subj::KV_STATE)
            })?;
        let (mut last_window, revision) = match kv.entry(subj::KV_TRAINER_LAST_WINDOW).await {
            Ok(Some(e)) if e.operation == kv::Operation::Put => {
                let w: u64 = serde_json::from_slice(&e.value).map_err(|err| {
                    anyhow::anyhow!(
                        "{}/{} holds {:?}, not a window number: {err} (delete the key to retrain from the stream start)",
                        subj::KV_STATE,
                        subj::KV_TRAINER_LAST_WINDOW,
                        String::from_utf8_lossy(&e.value)
                    )
                })?;
                (w, Some(e.revision))
            }
            Ok(_) => (0, None),
            Err(e) => anyhow::bail!(
                "reading {}/{}: {e}",
                subj::KV_STATE,
                subj::KV_TRAINER_LAST_WINDOW
            ),
        };
        if let Some(w) = last_candidate_window(ctx).await? {
            last_window = last_window.max(w);
        }
        Ok(Self {
            kv,
            last_window,
            revision,
        })
    }

    /// Record `window` as trained (compare-and-set: a second trainer writing meanwhile makes
    /// this one restart and re-read instead of both going on).
    async fn save(&mut self, window: u64) -> anyhow::Result<()> {
        let value = Bytes::from(serde_json::to_vec(&window)?);
        let key = subj::KV_TRAINER_LAST_WINDOW;
        let revision = match self.revision {
            Some(r) => self.kv.update(key, value, r).await.map_err(|e| {
                anyhow::anyhow!(
                    "{}/{key} changed under this trainer (another trainer running?): {e}",
                    subj::KV_STATE
                )
            })?,
            None => self.kv.create(key, value).await.map_err(|e| {
                anyhow::anyhow!(
                    "{}/{key} was created by someone else meanwhile: {e}",
                    subj::KV_STATE
                )
            })?,
        };
        self.revision = Some(revision);
        self.last_window = window;
        Ok(())
    }
}

/// The newest window this trainer published a candidate for (signature checked, so a
/// forged candidate cannot make it skip windows).
async fn last_candidate_window(ctx: &RoleCtx) -> anyhow::Result<Option<u64>> {
    let js = &ctx.bus.js;
    let stream = crate::bus::get_stream(js, subj::STREAM_CHECKPOINTS).await?;
    let counts =
        crate::bus::subject_counts(js, subj::STREAM_CHECKPOINTS, subj::CHECKPOINT_CANDIDATE_ALL)
            .await?;
    let mut windows: Vec<(u64, String)> = counts
        .into_iter()
        .filter_map(|(subject, _)| match subj::parse(&subject) {
            Ok(subj::Subject::CheckpointCandidate { window }) => Some((window, subject)),
            _ => None,
        })
        .collect();
    windows.sort_unstable();
    let me = ctx.identity.address();
    for (window, subject) in windows.into_iter().rev() {
        let Ok(raw) = stream.get_last_raw_message_by_subject(&subject).await else {
            continue;
        };
        let opened = CheckpointCandidateEnvelope::open(&raw.payload, ctx.bus.max_message_bytes);
        if opened.is_ok_and(|(env, _)| env.signer == me) {
            return Ok(Some(window));
        }
    }
    Ok(None)
}

type CheckpointCandidateEnvelope = messages::Envelope<CheckpointCandidate>;

impl RoleLoop for Trainer {
    fn run(&self, _shutdown: ShutdownSignal) -> RoleFuture {
        let ctx = self.ctx.clone();
        let pool = self.pool.clone();
        let cfg = self.cfg.clone();
        let book = self.book.clone();
        Box::pin(async move {
            let _follower = match &book {
                Some(b) => {
                    let f = b.spawn_follower(ctx.bus.clone(), "trainer");
                    anyhow::ensure!(
                        b.wait_caught_up(Duration::from_secs(60)).await,
                        "could not replay {} within 60 s",
                        subj::STREAM_CHECKPOINTS
                    );
                    Some(f)
                }
                None => None,
            };
            train_loop(&ctx, &pool, &cfg, book.as_ref()).await
        })
    }
}

async fn train_loop(
    ctx: &RoleCtx,
    pool: &WorkerPool<TrainerWorker>,
    cfg: &TrainerConfig,
    book: Option<&CheckpointBook>,
) -> anyhow::Result<()> {
    let mut progress = Progress::load(ctx).await?;
    if let Some(current) = ctx.bus.trust.record_ahead_of_schedule(progress.last_window) {
        tracing::error!(
            recorded = progress.last_window,
            current,
            "{}/{} is ahead of the clock; ignoring it and resuming from the candidates this trainer signed",
            subj::KV_STATE,
            subj::KV_TRAINER_LAST_WINDOW
        );
        progress.last_window = last_candidate_window(ctx).await?.unwrap_or(0);
    }
    tracing::info!(last_window = progress.last_window, "trainer resuming");
    let mut verdicts = ctx
        .bus
        .replay(subj::STREAM_VERDICTS, subj::VERDICT_ALL, DeliverPolicy::All)
        .await?;
    let mut batcher = TrainBatcher::new(progress.last_window);
    let clock = WindowBook::default();
    // Owned: the follower ends with this loop (the role restarts both).
    let _follower = OwnedTask::spawn(follow_clock(ctx.bus.clone(), "trainer", clock.clone()));
    loop {
        let next = tokio::time::timeout(cfg.batch_idle, verdicts.next()).await;
        let due = match next {
            Err(_) => batcher.idle(),
            Ok(None) => anyhow::bail!("verdict stream ended"),
            Ok(Some(Err(e))) => anyhow::bail!("verdicts: {e}"),
            Ok(Some(Ok(msg))) => match subj::parse(&msg.subject) {
                Ok(Subject::GroupVerdict { .. }) => {
                    if let Ok((env, _)) = ctx.bus.open::<GroupVerdict>("trainer", &msg.payload) {
                        // Far-future windows would evict the real ones still being collected.
                        let current = clock.current(ctx.bus.trust.schedule().as_ref());
                        let (kind, window) = (GroupVerdict::KIND, env.payload.window);
                        match ctx
                            .bus
                            .trust
                            .check_window(kind, &env.signer, window, current)
                        {
                            Ok(()) => batcher.group_verdict(env.payload),
                            Err(r) => ctx.bus.refused("trainer", &r),
                        }
                    }
                    continue;
                }
                Ok(Subject::MinerVerdict { .. }) => {
                    let Ok((env, _)) = ctx.bus.open::<MinerWindowVerdict>("trainer", &msg.payload)
                    else {
                        continue;
                    };
                    let v = env.payload;
                    // A window far ahead of the clock would be recorded as trained and make
                    // this trainer skip every real window until then.
                    let current = clock.current(ctx.bus.trust.schedule().as_ref());
                    let kind = MinerWindowVerdict::KIND;
                    if let Err(r) = ctx
                        .bus
                        .trust
                        .check_window(kind, &env.signer, v.window, current)
                    {
                        ctx.bus.refused("trainer", &r);
                        continue;
                    }
                    if !v.passed {
                        tracing::info!(window = v.window, miner = %v.miner, reason = ?v.reason, "miner failed the window; its groups are not trained on");
                    }
                    batcher.miner_verdict(v)
                }
                _ => {
                    ctx.metrics().reject("trainer", "bad_subject");
                    continue;
                }
            },
        };
        for window in due {
            train_window(ctx, pool, cfg, book, window).await?;
            progress
                .save(batcher.last_trained.max(progress.last_window))
                .await?;
        }
    }
}

/// Train on the accepted groups of the miners that passed the window; publish a candidate
/// when the compute produced new weights.
async fn train_window(
    ctx: &RoleCtx,
    pool: &WorkerPool<TrainerWorker>,
    cfg: &TrainerConfig,
    book: Option<&CheckpointBook>,
    trainable: TrainableWindow,
) -> anyhow::Result<()> {
    let window = trainable.window;
    let mut groups = Vec::new();
    for (miner, accepted) in &trainable.groups {
        if accepted.is_empty() {
            continue;
        }
        let mut accepted = accepted.clone();
        for (group, digest) in groups_of(ctx, window, miner).await? {
            // Only the exact envelope a trusted verifier accepted (not another group the
            // miner published under the same index, or after the deadline), and only once:
            // identical copies re-published under other ids are not trained again.
            if accepted.remove(&digest) {
                groups.push(group);
            } else {
                ctx.metrics().reject("trainer", "not_accepted");
            }
        }
    }
    if let Some(book) = book {
        let latest = book.announcements().last().map(|a| a.seq).unwrap_or(0);
        let before = groups.len();
        groups.retain(|g| {
            book.seq_of(&g.checkpoint)
                .is_some_and(|s| latest.saturating_sub(s) <= cfg.max_staleness_seqs)
        });
        for _ in groups.len()..before {
            ctx.metrics().reject("trainer", "stale_checkpoint");
        }
    }
    if groups.is_empty() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let _working = crate::metrics::InFlight::enter(
        ctx.metrics()
            .in_flight
            .with_label_values(&[ctx.role, &ctx.instance]),
    );
    let base = match book {
        Some(b) => b.settled_latest(Duration::from_secs(120)).await,
        None => None,
    };
    let report = pool
        .run(TrainJob {
            window,
            groups,
            base,
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
    m.window.with_label_values(&["trainer"]).set(window as i64);
    m.window_phase_seconds
        .with_label_values(&["training"])
        .observe(started.elapsed().as_secs_f64());
    if let (Some(book), Some(weights), Some(from)) = (book, report.weights, report.trained_from) {
        publish_candidate(ctx, book, window, weights, from, report.steps).await?;
    }
    Ok(())
}

async fn publish_candidate(
    ctx: &RoleCtx,
    book: &CheckpointBook,
    window: u64,
    weights: SharedWeights,
    trained_from: Hash32,
    steps: u32,
) -> anyhow::Result<()> {
    let (bytes, checkpoint) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        Ok((
            policy::checkpoint::to_safetensors_bytes(&weights.0)?,
            Hash32::from(policy::checkpoint::digest(&weights.0)?),
        ))
    })
    .await??;
    if book.seq_of(&checkpoint).is_some() {
        tracing::info!(window, digest = %checkpoint.short(), "trained weights equal an announced checkpoint; no candidate");
        return Ok(());
    }
    let hex = checkpoint.to_string();
    let object = subj::staging_object(&hex);
    let stored = put_bytes(book.store().as_ref(), &object, bytes).await?;
    let trainer = ctx.identity.address().to_string();
    let candidate = CheckpointCandidate {
        version: WIRE_VERSION,
        trainer,
        checkpoint,
        trained_from,
        object,
        bytes: stored.bytes,
        object_digest: stored.digest,
        last_window: window,
        steps: steps as u64,
        created_at_ms: now_ms(),
    };
    let meta = MsgMeta {
        window: Some(window),
        msg_id: Some(subj::candidate_msg_id(&hex)),
        ..Default::default()
    };
    ctx.bus
        .publish_durable(
            "trainer",
            subj::checkpoint_candidate(window),
            candidate,
            &ctx.identity,
            meta,
            Duration::from_secs(60),
        )
        .await?;
    tracing::info!(window, digest = %checkpoint.short(), bytes = stored.bytes, "checkpoint candidate published");
    Ok(())
}
