//! Verifier: all verifiers share one durable JetStream consumer, so each group is verified
//! once; a crashed verifier's unacked groups are redelivered to another. A group is checked
//! only after its window's close randomness is revealed (so the miner could not know the
//! challenged positions), the verdict is published with a de-duplication id (a redelivered
//! group yields the same verdict, counted once), and only then is the group acked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use messages::subjects::{self as subj, Subject};
use messages::{GroupVerdict, RolloutGroup, SignedMessage, WIRE_VERSION};

use crate::bus::{server_timestamp_ms, MsgMeta};
use crate::checkpoints::{CheckpointBook, CheckpointStatus};
use crate::ledger::BusLedger;
use crate::metrics::InFlight;
use crate::role::{RoleCtx, RoleFuture, RoleLoop};
use crate::roles::verifier_disposition::{
    ahead_of_view, while_waiting_for_close, with_checkpoint, Ahead, CheckpointView, Disposition,
    WhileWaiting,
};
use crate::roles::verifier_ledger::{self, LedgerStep};
use crate::shutdown::ShutdownSignal;
use crate::task::OwnedTask;
use crate::windows::{follow_clock, WindowBook};
use crate::worker_pool::WorkerPool;

use crate::compute::verify::counted_digests;
pub use crate::compute::verify::{VerifierCompute, VerifierWorker, VerifyJob, VerifyOutcome};

#[derive(Clone, Debug)]
pub struct VerifierConfig {
    /// Groups handled concurrently by this instance.
    pub concurrency: usize,
    /// How long a delivered group may stay unacked before JetStream redelivers it.
    pub ack_wait: Duration,
}

pub struct Verifier {
    ctx: RoleCtx,
    cfg: VerifierConfig,
    pool: Arc<WorkerPool<VerifierWorker>>,
    /// None: verify without checkpoints (model-free compute).
    checkpoints: Option<CheckpointBook>,
}

impl Verifier {
    pub fn new(ctx: RoleCtx, cfg: VerifierConfig, pool: Arc<WorkerPool<VerifierWorker>>) -> Self {
        Self {
            ctx,
            cfg,
            pool,
            checkpoints: None,
        }
    }

    /// Follow `book` and verify each group against the checkpoint governing its window
    /// (naked while it loads; an explicit `checkpoint_unavailable` rejection if it cannot).
    pub fn with_checkpoints(mut self, book: CheckpointBook) -> Self {
        self.checkpoints = Some(book);
        self
    }
}

/// The shared durable consumer every verifier pulls from.
pub async fn verifier_consumer(
    js: &jetstream::Context,
    ack_wait: Duration,
) -> anyhow::Result<jetstream::consumer::Consumer<pull::Config>> {
    let stream = crate::bus::get_stream(js, subj::STREAM_ROLLOUTS).await?;
    stream
        .get_or_create_consumer(
            subj::CONSUMER_VERIFIERS,
            pull::Config {
                durable_name: Some(subj::CONSUMER_VERIFIERS.to_string()),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                ack_wait,
                max_deliver: 20,
                max_ack_pending: 10_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("consumer {}: {e}", subj::CONSUMER_VERIFIERS))
}

impl RoleLoop for Verifier {
    /// On shutdown: stop pulling, finish the groups being verified, nak the ones still
    /// waiting for their window's close (another verifier takes them at once).
    fn drains(&self) -> bool {
        true
    }

    fn run(&self, shutdown: ShutdownSignal) -> RoleFuture {
        let ctx = self.ctx.clone();
        let cfg = self.cfg.clone();
        let pool = self.pool.clone();
        let checkpoints = self.checkpoints.clone();
        Box::pin(async move {
            let book = WindowBook::default();
            let follower =
                OwnedTask::spawn(follow_clock(ctx.bus.clone(), "verifier", book.clone()));
            let _ckpt_follower = checkpoints
                .as_ref()
                .map(|b| b.spawn_follower(ctx.bus.clone(), "verifier"));
            let consumer = verifier_consumer(&ctx.bus.js, cfg.ack_wait).await?;
            // Nonces, group indices, group counts and copies across all verifier instances.
            let ledger = Arc::new(BusLedger::open(&ctx.bus.js, Default::default()).await?);
            ctx.metrics()
                .ledger_events
                .with_label_values(&["bus_error"]);
            // Exported from the start: "no redeliveries" is 0, not a missing series.
            ctx.metrics().redeliveries.with_label_values(&["verifier"]);
            let _lag = OwnedTask::spawn(crate::heartbeat::consumer_gauges(
                ctx.clone(),
                consumer.clone(),
                Duration::from_secs(5),
            ));
            let messages = consumer
                .stream()
                .max_messages_per_batch(cfg.concurrency.max(1))
                .messages()
                .await
                .map_err(|e| anyhow::anyhow!("pulling groups: {e}"))?;
            let stop = shutdown.clone();
            messages
                .take_until(async move { stop.requested().await })
                .take_while(|_| futures::future::ready(!follower.is_finished()))
                .for_each_concurrent(cfg.concurrency.max(1), |msg| {
                    let (ctx, pool, book, cfg) =
                        (ctx.clone(), pool.clone(), book.clone(), cfg.clone());
                    let (checkpoints, shutdown) = (checkpoints.clone(), shutdown.clone());
                    let ledger = ledger.clone();
                    async move {
                        match msg {
                            Ok(msg) => {
                                let role = Handling {
                                    ctx: &ctx,
                                    pool: &pool,
                                    book: &book,
                                    checkpoints: checkpoints.as_ref(),
                                    cfg: &cfg,
                                    shutdown: &shutdown,
                                    ledger: &ledger,
                                };
                                handle(role, msg).await
                            }
                            Err(e) => tracing::warn!(error = %e, "pull error"),
                        }
                    }
                })
                .await;
            if shutdown.is_requested() {
                tracing::info!("verifier drained");
                return Ok(());
            }
            anyhow::bail!("group stream ended")
        })
    }
}

async fn settle(msg: &jetstream::Message, kind: AckKind) {
    if let Err(e) = msg.ack_with(kind).await {
        tracing::warn!(error = %e, "ack failed; JetStream will redeliver");
    }
}

/// What handling one group needs from the verifier.
struct Handling<'a> {
    ctx: &'a RoleCtx,
    pool: &'a WorkerPool<VerifierWorker>,
    book: &'a WindowBook,
    checkpoints: Option<&'a CheckpointBook>,
    cfg: &'a VerifierConfig,
    shutdown: &'a ShutdownSignal,
    ledger: &'a BusLedger,
}

async fn handle(h: Handling<'_>, msg: jetstream::Message) {
    let Handling {
        ctx,
        pool,
        book,
        checkpoints,
        cfg,
        shutdown,
        ledger,
    } = h;
    let started = Instant::now();
    let m = ctx.metrics();
    let _working = InFlight::enter(m.in_flight.with_label_values(&[ctx.role, &ctx.instance]));
    if msg.info().is_ok_and(|i| i.delivered > 1) {
        m.redeliveries.with_label_values(&["verifier"]).inc();
    }
    let (window, miner) = match subj::parse(&msg.subject) {
        Ok(Subject::Rollout { window, miner }) => (window, miner),
        _ => {
            ctx.metrics().reject("verifier", "bad_subject");
            return settle(&msg, AckKind::Term).await;
        }
    };
    // Forged, malformed or oversized input cannot be attributed to the subject's miner:
    // count it and drop it for good.
    let Ok((env, digest)) = ctx.bus.open::<RolloutGroup>("verifier", &msg.payload) else {
        return settle(&msg, AckKind::Term).await;
    };
    let group = env.payload;
    if group.window != window || group.miner != miner {
        ctx.metrics().reject("verifier", "subject_mismatch");
        return settle(&msg, AckKind::Term).await;
    }
    // A group for a window far ahead, or one that can no longer close, would sit here
    // waiting for its close for good; one merely ahead of a lagging view waits for it.
    let trust = &ctx.bus.trust;
    let seen = book.latest_open().map(|o| o.window);
    let scheduled = book.scheduled(trust.schedule().as_ref(), crate::bus::now_ms());
    let current = seen.max(scheduled);
    let ahead = ahead_of_view(window, seen, scheduled, trust.limits_max_future());
    if let Ahead::ViewLags(after) = ahead {
        tracing::debug!(
            window,
            ?seen,
            "group ahead of a lagging clock view; handing it back"
        );
        return settle(&msg, AckKind::Nak(Some(after))).await;
    }
    let in_reach = trust
        .check_window(RolloutGroup::KIND, &miner, window, current)
        .and_then(|()| trust.check_not_stale(RolloutGroup::KIND, &miner, window, current));
    if let Err(refusal) = in_reach {
        ctx.bus.refused("verifier", &refusal);
        return settle(&msg, AckKind::Term).await;
    }
    // The server's storage time decides who published a completion first (the ledger's copy
    // rule): without it the group cannot be judged; 0 would make it everyone's "original".
    let Some(server_ts_ms) = server_timestamp_ms(&msg) else {
        tracing::warn!(window, %miner, "no server timestamp on the delivery; handing it back");
        return settle(&msg, AckKind::Nak(Some(Duration::from_secs(1)))).await;
    };
    // The close randomness is revealed after the deadline; keep the group in progress until then.
    let close = loop {
        let close = book.get(window).close;
        let waited = started.elapsed();
        match while_waiting_for_close(
            close.is_some(),
            waited,
            cfg.ack_wait,
            shutdown.is_requested(),
        ) {
            WhileWaiting::Proceed => break close.expect("known"),
            WhileWaiting::HandBack(after) => {
                return settle(&msg, AckKind::Nak(Some(after))).await;
            }
            WhileWaiting::KeepWaiting => {
                let _ = msg.ack_with(AckKind::Progress).await;
                book.changed(Duration::from_millis(500)).await;
            }
        }
    };
    let Some(open) = book.get(window).open else {
        // A window we never saw opened (e.g. retention passed): nothing to check against.
        ctx.metrics().reject("verifier", "unknown_window");
        return settle(&msg, AckKind::Term).await;
    };
    let group_index = group.group_index;
    // Claimed here, checked by the re-scoring (a wrong `success` flag rejects the group).
    let success_rollouts = group.rollouts.iter().filter(|r| r.success).count() as u32;
    let deadline_ms = open.deadline_ms;
    let status = checkpoints.map(|b| b.status_for_window(window));
    let view = match &status {
        None => CheckpointView::NotUsed,
        Some(CheckpointStatus::Ready(_)) => CheckpointView::Ready,
        Some(CheckpointStatus::Syncing | CheckpointStatus::Loading { .. }) => {
            CheckpointView::Pending
        }
        Some(_) => CheckpointView::Unavailable,
    };
    let delivered = msg.info().map_or(1, |i| i.delivered.max(0) as u64);
    let checkpoint = match with_checkpoint(view, delivered) {
        Disposition::HandBack(after) => return settle(&msg, AckKind::Nak(Some(after))).await,
        Disposition::Verify => Ok(match status {
            Some(CheckpointStatus::Ready(c)) => Some(c),
            _ => None,
        }),
        Disposition::RejectUnavailable => {
            tracing::warn!(
                window,
                miner,
                group_index,
                ?status,
                "checkpoint unavailable; rejecting the group explicitly"
            );
            Err(crate::compute::structural::reject(
                messages::RejectCode::CheckpointUnavailable,
            ))
        }
    };
    // Waiting for the close (and the checkpoint) ends here; the verification itself starts.
    m.verify_wait_seconds
        .observe(started.elapsed().as_secs_f64());
    let working = Instant::now();
    // The window ledger, shared over the bus, before any compute: a replayed nonce or group
    // index, a group over the count or a copy is refused whichever instance saw the first.
    // Hashed once: claimed now, recorded after an accepting verdict.
    let completions = counted_digests(&group, ledger.rules().min_tokens);
    let ledger_step = match &checkpoint {
        Ok(_) => {
            let max_groups = trust.limits_max_groups();
            verifier_ledger::admit(
                ledger,
                m,
                &group,
                &digest,
                server_ts_ms,
                max_groups,
                &completions,
            )
            .await
        }
        Err(_) => LedgerStep::Verify,
    };
    let checkpoint = match ledger_step {
        LedgerStep::HandBack(after) => return settle(&msg, AckKind::Nak(Some(after))).await,
        LedgerStep::Refused(outcome) => Err(outcome),
        LedgerStep::Verify => checkpoint,
    };
    let job = checkpoint.map(|checkpoint| VerifyJob {
        group,
        digest,
        server_ts_ms,
        open,
        close,
        checkpoint,
    });
    let run = match job {
        Ok(job) => {
            let run = pool.run(job).await;
            if run.as_ref().is_ok_and(|o| o.accepted) {
                let at = (window, miner.as_str(), group_index);
                let recorded =
                    verifier_ledger::record(ledger, m, at, server_ts_ms, &completions).await;
                if let Err(after) = recorded {
                    return settle(&msg, AckKind::Nak(Some(after))).await;
                }
            }
            run
        }
        Err(unavailable_or_refused) => Ok(unavailable_or_refused),
    };
    let outcome = match run {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, window, miner, group_index, "verification failed to run; redelivering");
            return settle(&msg, AckKind::Nak(Some(Duration::from_millis(500)))).await;
        }
    };
    let verdict = GroupVerdict {
        version: WIRE_VERSION,
        window,
        miner: miner.clone(),
        group_index,
        group_digest: digest,
        verifier: ctx.identity.address().to_string(),
        accepted: outcome.accepted,
        reason: outcome.reason,
        deep_checked: outcome.deep_checked,
        unique_rollouts: outcome.unique_rollouts,
        learning_signal: outcome.learning_signal,
        mean_reward: outcome.mean_reward,
        server_ts_ms,
        success_rollouts: if outcome.accepted {
            success_rollouts
        } else {
            0
        },
    };
    let meta = MsgMeta {
        window: Some(window),
        miner: Some(miner.clone()),
        msg_id: Some(subj::verdict_msg_id(&digest)),
    };
    let published = ctx
        .bus
        .publish_durable(
            "verifier",
            subj::group_verdict(window, &miner),
            verdict,
            &ctx.identity,
            meta,
            Duration::from_secs(30),
        )
        .await;
    if let Err(e) = published {
        tracing::warn!(error = %e, "verdict not published; redelivering the group");
        return settle(&msg, AckKind::Nak(Some(Duration::from_secs(1)))).await;
    }
    let (result, reason) = match outcome.reason {
        None => ("accepted", "none"),
        Some(code) => ("rejected", code.as_str()),
    };
    m.groups_verified.with_label_values(&[result, reason]).inc();
    m.miner_group_verdicts
        .with_label_values(&[m.miner_label(&miner), result, reason])
        .inc();
    m.window.with_label_values(&["verifier"]).set(window as i64);
    // Verification phase: the deadline (close reveal) to this group's verdict.
    m.window_phase_seconds
        .with_label_values(&["verification"])
        .observe(crate::bus::now_ms().saturating_sub(deadline_ms) as f64 / 1000.0);
    m.verify_seconds.observe(working.elapsed().as_secs_f64());
    m.handle_seconds
        .with_label_values(&["verifier", "rollout_group"])
        .observe(started.elapsed().as_secs_f64());
    m.reward_mean
        .with_label_values(&["verifier"])
        .set(outcome.mean_reward as f64);
    if let Err(e) = msg.double_ack().await {
        tracing::warn!(error = %e, "ack lost; the group will be redelivered and get the same verdict");
    }
}
