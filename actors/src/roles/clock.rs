//! Clock: opens and closes windows on a fixed schedule and reveals hash-chain randomness.
//!
//! Any number of clocks may run; exactly one leads, by holding a lease in KV
//! (`grail_clock/leader`) renewed with compare-and-set. If the leader dies its lease expires
//! and another clock takes over. The schedule (genesis, window length) and the chain anchor
//! live in KV (`grail_clock/chain`), written once by the first clock, so a takeover continues
//! the same windows and the same committed chain (all clocks share the chain seed file).
//! Re-published phases collapse through `Nats-Msg-Id`.
//!
//! A clock that gains the lease first reads what the stream already holds and publishes
//! every open and close its predecessor left out (up to [`MAX_CATCH_UP`] windows back), so a
//! takeover slower than a window skips no window number and leaves no window unclosed
//! (groups of an unclosed window would never be verified).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use messages::subjects as subj;
use messages::{Hash32, WindowClose, WindowOpen, WIRE_VERSION};
use protocol::randomness::{close_randomness, open_randomness, HashChain};
use serde::{Deserialize, Serialize};

use crate::bus::{now_ms, MsgMeta};
use crate::role::{RoleCtx, RoleFuture, RoleLoop};
use crate::shutdown::ShutdownSignal;
use crate::windows::ChainInfo;

#[derive(Clone, Debug)]
pub struct ClockConfig {
    pub length_ms: u64,
    pub submit_ms: u64,
    pub chain_len: u64,
    /// Secret chain seed shared by all clocks of a deployment.
    pub seed: [u8; 32],
    pub lease_ttl_ms: u64,
    pub tick_ms: u64,
    /// The manifest's genesis: every clock of the network opens windows on it (None: the
    /// first clock's start time, recorded in KV).
    pub genesis_ms: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Lease {
    holder: String,
    until_ms: u64,
}

pub use super::clock_schedule::MAX_CATCH_UP;
use super::clock_schedule::{ClockState, Phase};

pub struct Clock {
    ctx: RoleCtx,
    cfg: ClockConfig,
    chain: Arc<HashChain>,
    /// Lease holder name: unique per clock, even for two processes started from the same
    /// config (same instance name and key file), which would otherwise both "hold" it.
    holder: String,
}

impl Clock {
    pub fn new(ctx: RoleCtx, cfg: ClockConfig) -> Self {
        let chain = Arc::new(HashChain::new(cfg.seed, cfg.chain_len));
        let holder = format!(
            "{}:{}:{:016x}",
            ctx.instance,
            ctx.identity.address(),
            rand::random::<u64>()
        );
        Self {
            ctx,
            cfg,
            chain,
            holder,
        }
    }
}

/// The highest window whose `phase` ("open" or "close") the clock stream holds (0: none),
/// believed only when that message is a clock message the manifest trusts for a window not
/// ahead of the schedule: anyone who can write the stream could otherwise make a new leader
/// skip every window up to a huge number. A message that fails gives 0, so the leader
/// re-publishes the last [`MAX_CATCH_UP`] windows (their ids collapse with the stored ones).
async fn last_published(ctx: &RoleCtx, phase: &str, info: &ChainInfo) -> anyhow::Result<u64> {
    let stream = ctx.bus.js.get_stream(subj::STREAM_CLOCK).await?;
    let subject = format!("{}.clock.*.{phase}", subj::ROOT);
    let Some(msg) = crate::bus::last_on_subject(&stream, &subject).await? else {
        return Ok(0);
    };
    let window = match subj::parse(&msg.subject) {
        Ok(subj::Subject::WindowOpen { .. }) => ctx
            .bus
            .open::<WindowOpen>("clock", &msg.payload)
            .map(|(env, _)| env.payload.window),
        Ok(subj::Subject::WindowClose { .. }) => ctx
            .bus
            .open::<WindowClose>("clock", &msg.payload)
            .map(|(env, _)| env.payload.window),
        _ => return Ok(0),
    };
    Ok(window
        .ok()
        .filter(|w| *w <= info.window_at(now_ms()))
        .unwrap_or(0))
}

/// Read the deployment's schedule, creating it if this is the first clock ever.
async fn chain_info(
    store: &kv::Store,
    cfg: &ClockConfig,
    anchor: Hash32,
) -> anyhow::Result<ChainInfo> {
    let proposed = ChainInfo {
        anchor,
        chain_len: cfg.chain_len,
        genesis_ms: cfg.genesis_ms.unwrap_or_else(now_ms),
        length_ms: cfg.length_ms,
        submit_ms: cfg.submit_ms,
    };
    let _ = store
        .create("chain", Bytes::from(serde_json::to_vec(&proposed)?))
        .await;
    let stored = store
        .get("chain")
        .await
        .map_err(|e| anyhow::anyhow!("reading {}/chain: {e}", subj::KV_CLOCK))?
        .ok_or_else(|| anyhow::anyhow!("{}/chain vanished", subj::KV_CLOCK))?;
    let info: ChainInfo = serde_json::from_slice(&stored)?;
    anyhow::ensure!(
        info.anchor == anchor,
        "this clock's chain seed gives anchor {} but the deployment committed to {}: all clocks must share the same seed file",
        anchor.short(),
        info.anchor.short()
    );
    let schedule = (cfg.length_ms, cfg.submit_ms);
    anyhow::ensure!(
        cfg.genesis_ms.is_none_or(|g| g == info.genesis_ms)
            && schedule == (info.length_ms, info.submit_ms),
        "{}/chain records genesis {} and windows of {}/{} ms, but the manifest says genesis {:?} and {}/{} ms: a network's schedule never changes (start a new network id, or delete the bucket of a test deployment)",
        subj::KV_CLOCK,
        info.genesis_ms,
        info.length_ms,
        info.submit_ms,
        cfg.genesis_ms,
        cfg.length_ms,
        cfg.submit_ms
    );
    Ok(info)
}

/// Try to hold the leader lease for another TTL. Returns whether we lead.
async fn hold_lease(store: &kv::Store, me: &str, ttl_ms: u64) -> bool {
    let now = now_ms();
    let value = Bytes::from(
        serde_json::to_vec(&Lease {
            holder: me.to_string(),
            until_ms: now + ttl_ms,
        })
        .expect("lease json"),
    );
    match store.entry("leader").await {
        Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
            let current: Option<Lease> = serde_json::from_slice(&entry.value).ok();
            // A lease further ahead than any clock writes one is bogus (someone else wrote
            // the key): treat it as free rather than never lead again.
            let bogus = |l: &Lease| l.until_ms > now.saturating_add(ttl_ms.saturating_mul(10));
            let free = current
                .map(|l| l.holder == me || l.until_ms < now || bogus(&l))
                .unwrap_or(true);
            free && store.update("leader", value, entry.revision).await.is_ok()
        }
        Ok(_) => store.create("leader", value).await.is_ok(),
        Err(_) => false,
    }
}

impl RoleLoop for Clock {
    fn run(&self, _shutdown: ShutdownSignal) -> RoleFuture {
        let ctx = self.ctx.clone();
        let cfg = self.cfg.clone();
        let chain = self.chain.clone();
        let holder = self.holder.clone();
        Box::pin(async move {
            let store = ctx
                .bus
                .js
                .get_key_value(subj::KV_CLOCK)
                .await
                .map_err(|e| {
                    anyhow::anyhow!("KV bucket {}: {e} (run `grail streams`)", subj::KV_CLOCK)
                })?;
            let anchor = Hash32::from(chain.anchor());
            let info = chain_info(&store, &cfg, anchor).await?;
            let mut state = ClockState::default();
            loop {
                let lead = hold_lease(&store, &holder, cfg.lease_ttl_ms).await;
                if lead && !state.leading {
                    // Resume from what the stream holds, not from what this clock published
                    // before (another clock may have led since).
                    match (
                        last_published(&ctx, "open", &info).await,
                        last_published(&ctx, "close", &info).await,
                    ) {
                        (Ok(open), Ok(close)) => state.take_over(open, close),
                        (Err(e), _) | (_, Err(e)) => {
                            tracing::warn!(error = %format!("{e:#}"), "cannot read the clock stream; not leading this tick");
                            tokio::time::sleep(Duration::from_millis(cfg.tick_ms)).await;
                            continue;
                        }
                    }
                    tracing::info!(instance = %ctx.instance, open = state.published_open, close = state.published_close, "clock took the lead");
                } else if !lead && state.leading {
                    state.step_down();
                    tracing::info!(instance = %ctx.instance, "clock lost the lead");
                }
                let now = now_ms();
                if state.leading {
                    ctx.metrics()
                        .window
                        .with_label_values(&["clock"])
                        .set(info.window_at(now) as i64);
                }
                for phase in state.due(now, &info)? {
                    match phase {
                        Phase::Open(w) => publish_open(&ctx, &chain, &info, w).await?,
                        Phase::Close(w) => {
                            publish_close(&ctx, &chain, &info, w).await?;
                            ctx.metrics()
                                .window_phase_seconds
                                .with_label_values(&["submission"])
                                .observe(info.submit_ms as f64 / 1000.0);
                        }
                    }
                    state.published(phase);
                }
                tokio::time::sleep(Duration::from_millis(cfg.tick_ms)).await;
            }
        })
    }
}

async fn publish_open(
    ctx: &RoleCtx,
    chain: &HashChain,
    info: &ChainInfo,
    window: u64,
) -> anyhow::Result<()> {
    let value = chain
        .value(window)
        .ok_or_else(|| anyhow::anyhow!("chain has no value {window}"))?;
    let msg = WindowOpen {
        version: WIRE_VERSION,
        window,
        randomness: open_randomness(window, &value).into(),
        chain_anchor: info.anchor,
        chain_position: window,
        chain_value: value.into(),
        opened_at_ms: info.start_ms(window),
        deadline_ms: info.deadline_ms(window),
    };
    publish_phase(
        ctx,
        window,
        "open",
        subj::window_open(window),
        msg,
        value.into(),
    )
    .await?;
    tracing::info!(window, "window opened");
    Ok(())
}

async fn publish_close(
    ctx: &RoleCtx,
    chain: &HashChain,
    info: &ChainInfo,
    window: u64,
) -> anyhow::Result<()> {
    let value = chain
        .value(window + 1)
        .ok_or_else(|| anyhow::anyhow!("chain has no value {}", window + 1))?;
    let msg = WindowClose {
        version: WIRE_VERSION,
        window,
        randomness: close_randomness(window, &value).into(),
        chain_anchor: info.anchor,
        chain_position: window + 1,
        chain_value: value.into(),
        closed_at_ms: now_ms(),
    };
    publish_phase(
        ctx,
        window,
        "close",
        subj::window_close(window),
        msg,
        value.into(),
    )
    .await?;
    tracing::info!(window, "window closed");
    Ok(())
}

/// Publish one clock message durably, de-duplicated per (window, phase, revealed chain value)
/// so a new leader re-publishing a phase the old one already sent is dropped by JetStream,
/// while nobody can take the id before the chain value is revealed.
async fn publish_phase<T: messages::SignedMessage>(
    ctx: &RoleCtx,
    window: u64,
    phase: &str,
    subject: String,
    msg: T,
    chain_value: Hash32,
) -> anyhow::Result<()> {
    let meta = MsgMeta {
        window: Some(window),
        msg_id: Some(subj::clock_msg_id(window, phase, &chain_value)),
        ..Default::default()
    };
    ctx.bus
        .publish_durable(
            "clock",
            subject,
            msg,
            &ctx.identity,
            meta,
            Duration::from_secs(30),
        )
        .await?;
    Ok(())
}
