//! Checkpoint publisher: the only role that announces checkpoints.
//!
//! * At start it replays its own announcements (a [`CheckpointBook`] trusting only itself), so
//!   a restart continues the sequence; if nothing was ever announced it publishes seq 0, a full
//!   checkpoint of the base weights, valid from window 0.
//! * It then consumes trainer candidates on a durable consumer: the trainer's signature (a
//!   trusted trainer hotkey), the staged object's byte digest and the weight digest are checked;
//!   the new weights are published as a delta against the previous checkpoint, or as a full
//!   anchor every `anchor_every` checkpoints, valid from the current window + `lead_windows`.
//!   From the second delta after an anchor on, it also stores a catch-up delta (anchor → this
//!   checkpoint) when that is smaller than the chain, named in the announcement's `catch_up`.
//! * A candidate whose weight digest was already announced is acknowledged without a second
//!   announcement (restart between announce and ack), and announcements carry a
//!   `Nats-Msg-Id` per weight digest, so retries collapse too.
//! * Retention: the objects of checkpoints older than the `keep_anchors`-th newest anchor are
//!   deleted (each kept delta depends only on a kept anchor), and consumed staging objects go.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use messages::subjects as subj;
use messages::{
    CatchUpDelta, CheckpointAnnounce, CheckpointCandidate, CheckpointKind, Hash32, SamplingSpec,
    WIRE_VERSION,
};
use policy::checkpoint::{digest, to_safetensors_bytes, WeightSet};
use policy::delta::encode_delta;

use crate::bus::{now_ms, MsgMeta};
use crate::checkpoints::load::decode_full;
use crate::checkpoints::{get_bytes, put_bytes, BookConfig, CheckpointBook, CheckpointStore};
use crate::role::{RoleCtx, RoleFuture, RoleLoop};
use crate::shutdown::ShutdownSignal;
use crate::task::OwnedTask;
use crate::windows::{follow_clock, WindowBook};

#[derive(Clone, Debug)]
pub struct PublisherConfig {
    /// Every `anchor_every`-th checkpoint is full; the others are deltas on the previous one.
    pub anchor_every: u64,
    /// Full anchors (and the deltas after them) whose objects are kept in the store.
    pub keep_anchors: usize,
    /// A checkpoint announced during window `w` governs windows from `w + lead_windows`.
    pub lead_windows: u64,
    /// SS58 addresses of trainers whose candidates are published.
    pub trusted_trainers: Vec<String>,
    /// How long a candidate may stay unacked before it is redelivered.
    pub ack_wait: Duration,
    /// Largest staged object accepted.
    pub max_object_bytes: u64,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        Self {
            anchor_every: 10,
            keep_anchors: 2,
            lead_windows: 1,
            trusted_trainers: Vec::new(),
            ack_wait: Duration::from_secs(300),
            max_object_bytes: 256 << 30,
        }
    }
}

/// What the publisher needs besides its config: where objects go and what seq 0 is.
pub struct PublisherSetup {
    pub cfg: PublisherConfig,
    pub store: Arc<dyn CheckpointStore>,
    /// The base model's weights (announced as seq 0 when nothing was announced yet).
    pub base: Arc<WeightSet>,
    pub sampling: SamplingSpec,
}

struct Pipeline {
    cfg: PublisherConfig,
    base: Arc<WeightSet>,
    sampling: SamplingSpec,
    book: CheckpointBook,
    /// The newest anchor's (seq, weights): the base of every catch-up delta until the next one.
    anchor: std::sync::Mutex<Option<(u64, Arc<WeightSet>)>>,
}

pub struct Publisher {
    ctx: RoleCtx,
    /// None: liveness only (no base weights configured).
    pipeline: Option<Arc<Pipeline>>,
}

impl Publisher {
    /// A publisher that only heartbeats (clusters without a model).
    pub fn new(ctx: RoleCtx) -> Self {
        Self {
            ctx,
            pipeline: None,
        }
    }

    /// A publisher of checkpoints. Its book trusts only its own hotkey.
    pub fn with_checkpoints(ctx: RoleCtx, setup: PublisherSetup) -> Self {
        let mut book_cfg = BookConfig::trusting([ctx.identity.address().to_string()]);
        book_cfg.max_object_bytes = setup.cfg.max_object_bytes;
        let book = CheckpointBook::new(book_cfg, setup.store);
        Self {
            ctx,
            pipeline: Some(Arc::new(Pipeline {
                cfg: setup.cfg,
                base: setup.base,
                sampling: setup.sampling,
                book,
                anchor: Default::default(),
            })),
        }
    }

    /// The publisher's view of what it announced (for tests and status pages).
    pub fn book(&self) -> Option<CheckpointBook> {
        self.pipeline.as_ref().map(|p| p.book.clone())
    }
}

impl RoleLoop for Publisher {
    fn run(&self, _shutdown: ShutdownSignal) -> RoleFuture {
        let ctx = self.ctx.clone();
        let pipeline = self.pipeline.clone();
        Box::pin(async move {
            let Some(p) = pipeline else {
                // Nothing to publish (structural clusters): idle, heartbeating, until stopped.
                return futures::future::pending().await;
            };
            run_pipeline(&ctx, &p).await
        })
    }
}

async fn run_pipeline(ctx: &RoleCtx, p: &Pipeline) -> anyhow::Result<()> {
    let follower = p.book.spawn_follower(ctx.bus.clone(), "publisher");
    let windows = WindowBook::default();
    let clock = OwnedTask::spawn(follow_clock(ctx.bus.clone(), "publisher", windows.clone()));
    let result = async {
        anyhow::ensure!(
            p.book.wait_caught_up(Duration::from_secs(60)).await,
            "could not replay {} within 60 s",
            subj::STREAM_CHECKPOINTS
        );
        if p.book.announcements().is_empty() {
            publish_genesis(ctx, p).await?;
        }
        let consumer = candidate_consumer(&ctx.bus.js, p.cfg.ack_wait).await?;
        let _lag = OwnedTask::spawn(crate::heartbeat::consumer_gauges(
            ctx.clone(),
            consumer.clone(),
            Duration::from_secs(5),
        ));
        let mut candidates = consumer
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("pulling checkpoint candidates: {e}"))?;
        while let Some(msg) = candidates.next().await {
            anyhow::ensure!(!follower.is_finished(), "lost the checkpoint stream");
            anyhow::ensure!(!clock.is_finished(), "lost the clock stream");
            let msg = msg.map_err(|e| anyhow::anyhow!("candidate stream: {e}"))?;
            let settle = handle_candidate(ctx, p, &windows, &msg).await?;
            let acked = match settle {
                Some(kind) => msg.ack_with(kind).await,
                None => msg.double_ack().await,
            };
            if let Err(e) = acked {
                tracing::warn!(error = %e, "candidate ack lost; a redelivery is recognised as announced");
            }
        }
        anyhow::bail!("candidate stream ended")
    }
    .await;
    drop(clock);
    result
}

/// The durable consumer of trainer candidates.
pub async fn candidate_consumer(
    js: &jetstream::Context,
    ack_wait: Duration,
) -> anyhow::Result<jetstream::consumer::Consumer<pull::Config>> {
    let stream = crate::bus::get_stream(js, subj::STREAM_CHECKPOINTS).await?;
    stream
        .get_or_create_consumer(
            subj::CONSUMER_PUBLISHER,
            pull::Config {
                durable_name: Some(subj::CONSUMER_PUBLISHER.to_string()),
                filter_subject: subj::CHECKPOINT_CANDIDATE_ALL.to_string(),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                ack_wait,
                max_deliver: 20,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("consumer {}: {e}", subj::CONSUMER_PUBLISHER))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}

async fn publish_genesis(ctx: &RoleCtx, p: &Pipeline) -> anyhow::Result<()> {
    let base = p.base.clone();
    let (bytes, weight_digest) =
        blocking(move || Ok((to_safetensors_bytes(&base)?, Hash32::from(digest(&base)?)))).await?;
    let object = subj::checkpoint_object(0, &weight_digest.to_string());
    let stored = put_bytes(p.book.store().as_ref(), &object, bytes).await?;
    let announce = CheckpointAnnounce {
        version: WIRE_VERSION,
        checkpoint: weight_digest,
        seq: 0,
        valid_from_window: 0,
        kind: CheckpointKind::Full,
        object,
        bytes: stored.bytes,
        object_digest: stored.digest,
        catch_up: None,
        sampling: p.sampling.clone(),
        created_at_ms: now_ms(),
    };
    *p.anchor.lock().expect("anchor lock") = Some((0, p.base.clone()));
    announce_and_record(ctx, p, announce, p.base.clone(), Instant::now()).await
}

async fn announce_and_record(
    ctx: &RoleCtx,
    p: &Pipeline,
    announce: CheckpointAnnounce,
    weights: Arc<WeightSet>,
    started: Instant,
) -> anyhow::Result<()> {
    let meta = MsgMeta {
        window: Some(announce.valid_from_window),
        msg_id: Some(subj::checkpoint_msg_id(&announce.checkpoint.to_string())),
        ..Default::default()
    };
    ctx.bus
        .publish_durable(
            "publisher",
            subj::checkpoint(announce.seq),
            announce.clone(),
            &ctx.identity,
            meta,
            Duration::from_secs(60),
        )
        .await?;
    let m = ctx.metrics();
    let kind = match announce.kind {
        CheckpointKind::Full => "full",
        CheckpointKind::Delta { .. } => "delta",
    };
    m.checkpoint_bytes
        .with_label_values(&[kind])
        .set(announce.bytes as i64);
    if let Some(c) = &announce.catch_up {
        m.checkpoint_bytes
            .with_label_values(&["catch_up"])
            .set(c.bytes as i64);
    }
    m.checkpoint_publish_seconds
        .observe(started.elapsed().as_secs_f64());
    m.checkpoint_seq
        .with_label_values(&["publisher"])
        .set(announce.seq as i64);
    tracing::info!(seq = announce.seq, kind, bytes = announce.bytes, valid_from = announce.valid_from_window, digest = %announce.checkpoint.short(), "checkpoint announced");
    p.book.record_own(announce, weights);
    Ok(())
}

/// Refuse a candidate for good: count it and drop it (and its staging object).
async fn refuse(
    ctx: &RoleCtx,
    p: &Pipeline,
    reason: &str,
    object: Option<&str>,
) -> Option<AckKind> {
    ctx.metrics().reject("publisher", reason);
    if let Some(object) = object {
        let _ = p.book.store().delete(object).await;
    }
    Some(AckKind::Term)
}

/// Handle one candidate. Returns how to settle it (None: ack). Err only for bus failures
/// that need the role restarted.
async fn handle_candidate(
    ctx: &RoleCtx,
    p: &Pipeline,
    windows: &WindowBook,
    msg: &jetstream::Message,
) -> anyhow::Result<Option<AckKind>> {
    let started = Instant::now();
    let Ok((env, _)) = ctx
        .bus
        .open::<CheckpointCandidate>("publisher", &msg.payload)
    else {
        return Ok(Some(AckKind::Term));
    };
    let cand = env.payload;
    if !p.cfg.trusted_trainers.contains(&env.signer) {
        tracing::warn!(signer = %env.signer, "candidate from an untrusted trainer refused");
        return Ok(refuse(ctx, p, "candidate_untrusted_signer", None).await);
    }
    if p.book.seq_of(&cand.checkpoint).is_some() {
        tracing::info!(digest = %cand.checkpoint.short(), "candidate already announced");
        let _ = p.book.store().delete(&cand.object).await;
        return Ok(None);
    }
    if p.book.seq_of(&cand.trained_from).is_none() {
        tracing::warn!(from = %cand.trained_from.short(), "candidate trained from an unannounced checkpoint");
        return Ok(refuse(ctx, p, "candidate_unknown_base", Some(&cand.object)).await);
    }
    let Some(previous) = p.book.announcements().pop() else {
        return Ok(Some(AckKind::Nak(Some(Duration::from_secs(1)))));
    };
    // The previous checkpoint's weights (for the delta); wait briefly if still loading.
    let mut prev_weights = None;
    for _ in 0..20 {
        match p.book.latest() {
            Some(c) if c.seq == previous.seq => {
                prev_weights = Some(c.weights.0);
                break;
            }
            _ => p.book.changed(Duration::from_millis(500)).await,
        }
    }
    let store = p.book.store().clone();
    let staged = match get_bytes(store.as_ref(), &cand.object, p.cfg.max_object_bytes).await {
        Ok((bytes, digest)) if digest == cand.object_digest => bytes,
        Ok(_) => {
            return Ok(refuse(
                ctx,
                p,
                "candidate_object_digest_mismatch",
                Some(&cand.object),
            )
            .await)
        }
        Err(e) if e.reason() == "store_error" => {
            tracing::warn!(error = %e, "staging object unreadable; retrying later");
            return Ok(Some(AckKind::Nak(Some(Duration::from_secs(2)))));
        }
        Err(e) => {
            tracing::warn!(error = %e, "staging object unusable");
            return Ok(refuse(ctx, p, "candidate_object_missing", Some(&cand.object)).await);
        }
    };
    let seq = previous.seq + 1;
    let weights = match decode_full(seq, cand.object.clone(), staged.clone(), cand.checkpoint).await
    {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "candidate weights do not verify");
            return Ok(refuse(ctx, p, "candidate_weights_invalid", Some(&cand.object)).await);
        }
    };
    let last_anchor = p
        .book
        .announcements()
        .iter()
        .rev()
        .find(|a| a.kind == CheckpointKind::Full)
        .map(|a| a.seq);
    let anchor_due = last_anchor.is_none_or(|a| seq - a >= p.cfg.anchor_every.max(1));
    let delta = match (&prev_weights, anchor_due) {
        (Some(prev), false) => {
            let (prev, new) = (prev.clone(), weights.clone());
            match blocking(move || Ok(encode_delta(&prev, &new)?)).await {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    tracing::warn!(error = %e, "delta not encodable; publishing a full checkpoint");
                    None
                }
            }
        }
        _ => None,
    };
    let hex = cand.checkpoint.to_string();
    let object = subj::checkpoint_object(seq, &hex);
    let (kind, body) = match (delta, last_anchor) {
        (Some(bytes), Some(anchor_seq)) => {
            let anchor = p
                .book
                .announcements()
                .into_iter()
                .find(|a| a.seq == anchor_seq)
                .map(|a| a.checkpoint)
                .unwrap_or_default();
            let base = previous.checkpoint;
            (CheckpointKind::Delta { base, anchor }, bytes)
        }
        // The staged bytes are a verified safetensors of exactly these weights.
        _ => (CheckpointKind::Full, staged),
    };
    let stored = put_bytes(store.as_ref(), &object, body).await?;
    let catch_up = match (&kind, last_anchor) {
        (CheckpointKind::Delta { .. }, Some(anchor_seq)) if seq - anchor_seq >= 2 => {
            let chain_bytes = stored.bytes + chain_bytes_after(&p.book.announcements(), anchor_seq);
            publish_catch_up(p, anchor_seq, seq, &hex, &weights, chain_bytes).await
        }
        _ => None,
    };
    if kind == CheckpointKind::Full {
        *p.anchor.lock().expect("anchor lock") = Some((seq, weights.clone()));
    }
    let current = windows.latest_open().map(|o| o.window).unwrap_or(0);
    let announce = CheckpointAnnounce {
        version: WIRE_VERSION,
        checkpoint: cand.checkpoint,
        seq,
        valid_from_window: (current + p.cfg.lead_windows).max(previous.valid_from_window),
        kind,
        object,
        bytes: stored.bytes,
        object_digest: stored.digest,
        catch_up,
        sampling: p.sampling.clone(),
        created_at_ms: now_ms(),
    };
    announce_and_record(ctx, p, announce, weights, started).await?;
    let _ = store.delete(&cand.object).await;
    for object in retention_plan(&p.book.announcements(), p.cfg.keep_anchors) {
        if let Err(e) = store.delete(&object).await {
            tracing::warn!(%object, error = %e, "retention: object not deleted");
        }
    }
    Ok(None)
}

/// Bytes of the deltas announced after anchor `anchor_seq` (what a late joiner's chain costs
/// besides the anchor).
fn chain_bytes_after(announced: &[CheckpointAnnounce], anchor_seq: u64) -> u64 {
    announced
        .iter()
        .filter(|a| a.seq > anchor_seq)
        .map(|a| a.bytes)
        .sum()
}

/// Encode and store the cumulative delta anchor → `weights` for checkpoint `seq`, if it is
/// smaller than the chain it replaces (`chain_bytes`). It is optional: on any failure the
/// checkpoint is announced without one and late joiners walk the chain.
async fn publish_catch_up(
    p: &Pipeline,
    anchor_seq: u64,
    seq: u64,
    hex: &str,
    weights: &Arc<WeightSet>,
    chain_bytes: u64,
) -> Option<CatchUpDelta> {
    let known = p.anchor.lock().expect("anchor lock").clone();
    let anchor = match known {
        Some((s, w)) if s == anchor_seq => w,
        // After a restart: the anchor is loaded back from the store, digest-checked.
        _ => match p.book.load_seq(anchor_seq).await {
            Ok(c) => {
                *p.anchor.lock().expect("anchor lock") = Some((anchor_seq, c.weights.0.clone()));
                c.weights.0
            }
            Err(e) => {
                tracing::warn!(seq, anchor_seq, error = %e, "anchor not loadable; no catch-up delta");
                return None;
            }
        },
    };
    let new = weights.clone();
    let bytes = match blocking(move || Ok(encode_delta(&anchor, &new)?)).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(seq, error = %e, "catch-up delta not encodable");
            return None;
        }
    };
    if bytes.len() as u64 >= chain_bytes {
        tracing::info!(
            seq,
            bytes = bytes.len(),
            chain_bytes,
            "catch-up delta not smaller than the chain; not published"
        );
        return None;
    }
    let object = subj::catch_up_object(seq, hex);
    match put_bytes(p.book.store().as_ref(), &object, bytes).await {
        Ok(stored) => Some(CatchUpDelta {
            object,
            bytes: stored.bytes,
            object_digest: stored.digest,
        }),
        Err(e) => {
            tracing::warn!(seq, %object, error = %e, "catch-up delta not stored");
            None
        }
    }
}

/// Objects no longer needed: everything announced before the `keep_anchors`-th newest full
/// anchor (the deltas after a kept anchor only depend on that anchor and each other), with
/// their catch-up deltas.
pub fn retention_plan(announced: &[CheckpointAnnounce], keep_anchors: usize) -> Vec<String> {
    let anchors: Vec<u64> = announced
        .iter()
        .filter(|a| a.kind == CheckpointKind::Full)
        .map(|a| a.seq)
        .collect();
    if anchors.len() <= keep_anchors.max(1) {
        return Vec::new();
    }
    let oldest_kept = anchors[anchors.len() - keep_anchors.max(1)];
    announced
        .iter()
        .filter(|a| a.seq < oldest_kept)
        .flat_map(|a| {
            std::iter::once(a.object.clone()).chain(a.catch_up.as_ref().map(|c| c.object.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announce(seq: u64, full: bool) -> CheckpointAnnounce {
        CheckpointAnnounce {
            version: WIRE_VERSION,
            checkpoint: Hash32::from([seq as u8; 32]),
            seq,
            valid_from_window: seq,
            kind: if full {
                CheckpointKind::Full
            } else {
                CheckpointKind::Delta {
                    base: Hash32::from([seq as u8 - 1; 32]),
                    anchor: Hash32::default(),
                }
            },
            object: format!("o{seq}"),
            bytes: 1,
            object_digest: Hash32::default(),
            catch_up: None,
            sampling: SamplingSpec::default(),
            created_at_ms: 0,
        }
    }

    #[test]
    fn retention_keeps_the_newest_anchors_and_their_deltas() {
        // anchors at 0, 3, 6; deltas in between
        let all: Vec<_> = (0..8).map(|s| announce(s, s % 3 == 0)).collect();
        assert_eq!(retention_plan(&all, 2), vec!["o0", "o1", "o2"]);
        assert_eq!(retention_plan(&all, 3), Vec::<String>::new());
        assert_eq!(
            retention_plan(&all, 1),
            vec!["o0", "o1", "o2", "o3", "o4", "o5"]
        );
        assert!(retention_plan(&all[..3], 1).is_empty());
    }
}
