//! The [`CheckpointBook`]: a role's verified view of the announced checkpoints.
//!
//! It replays `grail.checkpoint.<seq>` from the stream start, keeps only announcements signed
//! by a trusted publisher, and loads the newest few: object fetched and its digest checked,
//! weights reconstructed (a full anchor, or the previous checkpoint plus a delta, or an anchor
//! plus the delta chain after it) and their canonical digest checked against the announcement.
//! Loaded weight sets are shared (`Arc`) and only the newest `cache` are kept. See the
//! [module docs](super) for what an unavailable checkpoint means for miners and verifiers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use futures::StreamExt;
use messages::subjects::{self as subj, Subject};
use messages::{CheckpointAnnounce, CheckpointKind, Hash32};
use policy::checkpoint::WeightSet;
use tokio::sync::Notify;

use super::active::{ActiveCheckpoint, SharedWeights};
use super::load::{decode_full, fetch_verified, LoadError};
use super::store::CheckpointStore;
use crate::bus::{now_ms, Bus};
use crate::metrics::Metrics;

/// How often transient load failures are retried while no announcement arrives.
const RETRY_TICK: Duration = Duration::from_secs(2);

mod catch_up;
mod chain;

pub use catch_up::LoadPath;

#[derive(Clone, Debug)]
pub struct BookConfig {
    /// SS58 addresses whose announcements are accepted (the publisher hotkey(s)).
    pub trusted_publishers: Vec<String>,
    /// Reconstructed weight sets kept in memory (the newest ones).
    pub cache: usize,
    /// Largest object this role downloads.
    pub max_object_bytes: u64,
    /// Attempts for a load that fails for a transient reason (store unreachable).
    pub max_attempts: u32,
}

impl BookConfig {
    /// Loaded weight sets a role keeps by default (the governing one and two spares).
    pub const DEFAULT_CACHE: usize = 3;

    pub fn trusting<S: Into<String>>(publishers: impl IntoIterator<Item = S>) -> Self {
        Self {
            trusted_publishers: publishers.into_iter().map(Into::into).collect(),
            cache: Self::DEFAULT_CACHE,
            max_object_bytes: 256 << 30,
            max_attempts: 5,
        }
    }
}

/// What the book can say about the checkpoint governing a window.
#[derive(Clone, Debug)]
pub enum CheckpointStatus {
    /// Still replaying the announcement stream: the answer is not known yet.
    Syncing,
    /// No announcement is valid for the window.
    NotAnnounced,
    /// Announced; its weights are being fetched or reconstructed.
    Loading {
        seq: u64,
    },
    Ready(ActiveCheckpoint),
    /// Announced but not loadable (object missing or corrupt, broken chain, evicted).
    Unavailable {
        seq: u64,
        reason: String,
    },
}

#[derive(Clone)]
enum Loaded {
    Pending {
        attempts: u32,
    },
    Ready(SharedWeights),
    /// Loaded once, dropped from the cache.
    Evicted,
    /// Superseded before anyone needed it (older than the newest `cache` on replay).
    Skipped,
    Failed {
        reason: &'static str,
    },
}

struct Entry {
    announce: CheckpointAnnounce,
    loaded: Loaded,
    /// Arrived after the replay caught up: its hand-over latency is meaningful.
    live: bool,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<u64, Entry>,
    caught_up: bool,
}

impl State {
    fn by_digest(&self, digest: &Hash32, before: u64) -> Option<&Entry> {
        self.entries
            .range(..before)
            .rev()
            .map(|(_, e)| e)
            .find(|e| e.announce.checkpoint == *digest)
    }

    fn active(e: &Entry) -> Option<ActiveCheckpoint> {
        match &e.loaded {
            Loaded::Ready(w) => Some(ActiveCheckpoint {
                digest: e.announce.checkpoint,
                seq: e.announce.seq,
                valid_from_window: e.announce.valid_from_window,
                sampling: e.announce.sampling.clone(),
                weights: w.clone(),
            }),
            _ => None,
        }
    }

    /// Keep the newest `cache` loaded weight sets.
    fn evict(&mut self, cache: usize) {
        let mut kept = 0;
        for e in self.entries.values_mut().rev() {
            if matches!(e.loaded, Loaded::Ready(_)) {
                kept += 1;
                if kept > cache.max(1) {
                    e.loaded = Loaded::Evicted;
                }
            }
        }
    }
}

struct Inner {
    cfg: BookConfig,
    store: Arc<dyn CheckpointStore>,
    state: Mutex<State>,
    changed: Notify,
}

/// Shared, verified view of the announced checkpoints (cheap to clone).
#[derive(Clone)]
pub struct CheckpointBook {
    inner: Arc<Inner>,
}

/// A running [`CheckpointBook::follow`] task, stopped when dropped (a restarted role starts
/// a new one; the book keeps what was loaded).
pub type Follower = crate::task::OwnedTask<anyhow::Result<()>>;

impl CheckpointBook {
    pub fn new(cfg: BookConfig, store: Arc<dyn CheckpointStore>) -> Self {
        Self {
            inner: Arc::new(Inner {
                cfg,
                store,
                state: Mutex::new(State::default()),
                changed: Notify::new(),
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn CheckpointStore> {
        &self.inner.store
    }

    pub fn config(&self) -> &BookConfig {
        &self.inner.cfg
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().expect("checkpoint book lock")
    }

    fn notify(&self) {
        self.inner.changed.notify_waiters();
    }

    /// The checkpoint governing `window`: the highest seq whose `valid_from_window <= window`.
    pub fn status_for_window(&self, window: u64) -> CheckpointStatus {
        let state = self.state();
        if !state.caught_up {
            return CheckpointStatus::Syncing;
        }
        match state
            .entries
            .values()
            .rev()
            .find(|e| e.announce.valid_from_window <= window)
        {
            Some(e) => Self::status_of_entry(e),
            None => CheckpointStatus::NotAnnounced,
        }
    }

    /// The state of announcement `seq` (whichever windows it governs).
    pub fn status_of_seq(&self, seq: u64) -> CheckpointStatus {
        let state = self.state();
        match state.entries.get(&seq) {
            Some(e) => Self::status_of_entry(e),
            None if state.caught_up => CheckpointStatus::NotAnnounced,
            None => CheckpointStatus::Syncing,
        }
    }

    fn status_of_entry(e: &Entry) -> CheckpointStatus {
        let seq = e.announce.seq;
        match &e.loaded {
            Loaded::Ready(_) => CheckpointStatus::Ready(State::active(e).expect("ready")),
            Loaded::Pending { .. } => CheckpointStatus::Loading { seq },
            Loaded::Evicted => CheckpointStatus::Unavailable {
                seq,
                reason: "evicted".into(),
            },
            Loaded::Skipped => CheckpointStatus::Unavailable {
                seq,
                reason: "superseded".into(),
            },
            Loaded::Failed { reason } => CheckpointStatus::Unavailable {
                seq,
                reason: reason.to_string(),
            },
        }
    }

    /// The loaded checkpoint governing `window`, if any (never an older substitute).
    pub fn for_window(&self, window: u64) -> Option<ActiveCheckpoint> {
        match self.status_for_window(window) {
            CheckpointStatus::Ready(c) => Some(c),
            _ => None,
        }
    }

    /// The newest checkpoint that loaded (falls back past unloadable ones).
    pub fn latest(&self) -> Option<ActiveCheckpoint> {
        self.state().entries.values().rev().find_map(State::active)
    }

    /// Every accepted announcement, by seq.
    pub fn announcements(&self) -> Vec<CheckpointAnnounce> {
        self.state()
            .entries
            .values()
            .map(|e| e.announce.clone())
            .collect()
    }

    /// Seq of the newest announcement naming weight digest `digest`.
    pub fn seq_of(&self, digest: &Hash32) -> Option<u64> {
        self.state()
            .by_digest(digest, u64::MAX)
            .map(|e| e.announce.seq)
    }

    pub fn is_caught_up(&self) -> bool {
        self.state().caught_up
    }

    /// Wait until the book changes (or `timeout`).
    pub async fn changed(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.inner.changed.notified()).await;
    }

    /// Wait until the replay caught up with the stream; false on timeout.
    pub async fn wait_caught_up(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.changed.notified();
            if self.is_caught_up() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.is_caught_up();
            }
        }
    }

    /// Wait (up to `timeout`) until the newest announcement is loaded or given up on, then
    /// return [`CheckpointBook::latest`]: what a trainer must start from.
    pub async fn settled_latest(&self, timeout: Duration) -> Option<ActiveCheckpoint> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.changed.notified();
            let settled = {
                let state = self.state();
                state.caught_up
                    && !state
                        .entries
                        .values()
                        .next_back()
                        .is_some_and(|e| matches!(e.loaded, Loaded::Pending { .. }))
            };
            if settled || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.latest();
            }
        }
    }

    /// Record a checkpoint this process announced itself (the publisher): its weights are
    /// known, so the stream replay need not fetch them back.
    pub fn record_own(&self, announce: CheckpointAnnounce, weights: Arc<WeightSet>) {
        let mut state = self.state();
        let ready = Loaded::Ready(SharedWeights(weights));
        match state.entries.get_mut(&announce.seq) {
            Some(e) if e.announce == announce => e.loaded = ready,
            Some(_) => return,
            None => {
                state.entries.insert(
                    announce.seq,
                    Entry {
                        announce,
                        loaded: ready,
                        live: false,
                    },
                );
            }
        }
        state.evict(self.inner.cfg.cache);
        drop(state);
        self.notify();
    }

    /// Accept a signed announcement. Err carries the metric reason of a refusal; Ok(false)
    /// means it was already known (a replay after a restart).
    pub fn offer(
        &self,
        announce: CheckpointAnnounce,
        signer: &str,
        subject_seq: u64,
    ) -> Result<bool, &'static str> {
        if !self
            .inner
            .cfg
            .trusted_publishers
            .iter()
            .any(|p| p == signer)
        {
            return Err("checkpoint_untrusted_signer");
        }
        if announce.seq != subject_seq {
            return Err("checkpoint_subject_mismatch");
        }
        let mut state = self.state();
        if let Some(known) = state.entries.get(&announce.seq) {
            return if known.announce == announce {
                Ok(false)
            } else {
                Err("checkpoint_duplicate_seq")
            };
        }
        let live = state.caught_up;
        state.entries.insert(
            announce.seq,
            Entry {
                announce,
                loaded: Loaded::Pending { attempts: 0 },
                live,
            },
        );
        drop(state);
        self.notify();
        Ok(true)
    }

    fn set_caught_up(&self) {
        let mut state = self.state();
        if !state.caught_up {
            state.caught_up = true;
            drop(state);
            self.notify();
        }
    }

    /// Follow the announcement stream from its start, loading what is needed. Returns on a
    /// stream error (the role's loop restarts it; the book keeps what it loaded).
    pub async fn follow(self, bus: Bus, role: &'static str) -> anyhow::Result<()> {
        let expected = announcement_count(&bus).await?;
        if expected == 0 {
            self.set_caught_up();
        }
        let mut messages = bus
            .replay(
                subj::STREAM_CHECKPOINTS,
                subj::CHECKPOINT_ANNOUNCE_ALL,
                DeliverPolicy::All,
            )
            .await?;
        let mut seen = 0usize;
        loop {
            match tokio::time::timeout(RETRY_TICK, messages.next()).await {
                Err(_) => {}
                Ok(None) => anyhow::bail!("checkpoint stream ended"),
                Ok(Some(Err(e))) => anyhow::bail!("checkpoint stream: {e}"),
                Ok(Some(Ok(msg))) => {
                    seen += 1;
                    self.offer_message(&bus, role, &msg.subject, &msg.payload);
                    let pending = msg.info().map(|i| i.pending).unwrap_or(0);
                    // Read the whole backlog before loading: only the newest few are needed.
                    if pending > 0 && seen < expected {
                        continue;
                    }
                    self.set_caught_up();
                }
            }
            self.load_pending(&bus.metrics, role).await;
        }
    }

    /// Run [`CheckpointBook::follow`] on the current (actix) runtime until the returned
    /// handle is dropped.
    pub fn spawn_follower(&self, bus: Bus, role: &'static str) -> Follower {
        Follower::spawn(self.clone().follow(bus, role))
    }

    fn offer_message(&self, bus: &Bus, role: &str, subject: &str, payload: &[u8]) {
        let Ok(Subject::Checkpoint { seq }) = subj::parse(subject) else {
            bus.metrics.reject(role, "checkpoint_bad_subject");
            return;
        };
        let Ok((env, _)) = bus.open::<CheckpointAnnounce>(role, payload) else {
            return; // counted by `open`
        };
        if let Err(reason) = self.offer(env.payload, &env.signer, seq) {
            tracing::warn!(role, seq, signer = %env.signer, reason, "checkpoint announcement refused");
            bus.metrics.reject(role, reason);
        }
    }

    /// Load pending announcements among the newest `cache`, oldest first; older pending ones
    /// are skipped. Failures are counted as `checkpoint_<reason>`.
    pub async fn load_pending(&self, metrics: &Metrics, role: &str) {
        loop {
            let next = {
                let mut state = self.state();
                let newest = state.entries.keys().next_back().copied().unwrap_or(0);
                let floor = newest.saturating_sub(self.inner.cfg.cache.max(1) as u64 - 1);
                for e in state.entries.range_mut(..floor).map(|(_, e)| e) {
                    if matches!(e.loaded, Loaded::Pending { .. }) {
                        e.loaded = Loaded::Skipped;
                    }
                }
                state
                    .entries
                    .range(floor..)
                    .find(|(_, e)| matches!(e.loaded, Loaded::Pending { .. }))
                    .map(|(seq, _)| *seq)
            };
            let Some(seq) = next else { return };
            let result = self.load_one(seq).await;
            let mut state = self.state();
            let cache = self.inner.cfg.cache;
            let max_attempts = self.inner.cfg.max_attempts;
            let Some(entry) = state.entries.get_mut(&seq) else {
                return;
            };
            let retry_later = match result {
                Ok(weights) => {
                    entry.loaded = Loaded::Ready(SharedWeights(weights));
                    if entry.live {
                        let secs = now_ms().saturating_sub(entry.announce.created_at_ms) as f64;
                        metrics
                            .checkpoint_handover_seconds
                            .with_label_values(&[role])
                            .observe(secs / 1000.0);
                    }
                    metrics
                        .checkpoint_seq
                        .with_label_values(&[role])
                        .set(seq as i64);
                    tracing::info!(role, seq, digest = %entry.announce.checkpoint.short(), "checkpoint loaded");
                    false
                }
                Err(e) => {
                    let attempts = match entry.loaded {
                        Loaded::Pending { attempts } => attempts + 1,
                        _ => max_attempts,
                    };
                    metrics.reject(role, &format!("checkpoint_{}", e.reason()));
                    tracing::warn!(role, seq, error = %e, attempts, "checkpoint not loaded");
                    if e.is_transient() && attempts < max_attempts {
                        entry.loaded = Loaded::Pending { attempts };
                        true
                    } else {
                        entry.loaded = Loaded::Failed { reason: e.reason() };
                        false
                    }
                }
            };
            state.evict(cache);
            drop(state);
            self.notify();
            if retry_later {
                return;
            }
        }
    }

    /// The weights of announcement `seq`, loaded now if the cache does not hold them (and not
    /// kept): what an evaluator or `grail eval --checkpoint` needs for checkpoints older than
    /// the newest few a role keeps. Digests are checked as for every load.
    pub async fn load_seq(&self, seq: u64) -> Result<ActiveCheckpoint, LoadError> {
        if let CheckpointStatus::Ready(c) = self.status_of_seq(seq) {
            return Ok(c);
        }
        let announce = self
            .state()
            .entries
            .get(&seq)
            .map(|e| e.announce.clone())
            .ok_or(LoadError::NotAnnounced { seq })?;
        let weights = self.load_one(seq).await?;
        Ok(ActiveCheckpoint {
            digest: announce.checkpoint,
            seq,
            valid_from_window: announce.valid_from_window,
            sampling: announce.sampling,
            weights: SharedWeights(weights),
        })
    }

    async fn load_one(&self, seq: u64) -> Result<Arc<WeightSet>, LoadError> {
        let announce = self.state().entries[&seq].announce.clone();
        let store = self.inner.store.as_ref();
        let max = self.inner.cfg.max_object_bytes;
        match &announce.kind {
            CheckpointKind::Full => {
                let bytes = fetch_verified(store, &announce, max).await?;
                decode_full(seq, announce.object.clone(), bytes, announce.checkpoint).await
            }
            CheckpointKind::Delta { base, anchor } => {
                self.load_delta(&announce, *base, *anchor).await
            }
        }
    }
}

/// How many announcements the stream holds now (what the replay must read to catch up).
async fn announcement_count(bus: &Bus) -> anyhow::Result<usize> {
    let counts = crate::bus::subject_counts(
        &bus.js,
        subj::STREAM_CHECKPOINTS,
        subj::CHECKPOINT_ANNOUNCE_ALL,
    )
    .await?;
    Ok(counts.iter().map(|(_, n)| n).sum())
}
