//! Clock: opens and closes windows on a fixed schedule and reveals hash-chain randomness.
//!
//! Any number of clocks may run; exactly one leads, by holding a lease in KV
//! (`grail_clock/leader`) renewed with compare-and-set. If the leader dies its lease expires
//! and another clock takes over. The schedule (genesis, window length) and the chain anchor
//! live in KV (`grail_clock/chain`), written once by the first clock, so a takeover continues
//! the same windows and the same committed chain (all clocks share the chain seed file).
//! Re-published phases collapse through `Nats-Msg-Id`.

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
}

#[derive(Serialize, Deserialize)]
struct Lease {
    holder: String,
    until_ms: u64,
}

pub struct Clock {
    ctx: RoleCtx,
    cfg: ClockConfig,
    chain: Arc<HashChain>,
}

impl Clock {
    pub fn new(ctx: RoleCtx, cfg: ClockConfig) -> Self {
        let chain = Arc::new(HashChain::new(cfg.seed, cfg.chain_len));
        Self { ctx, cfg, chain }
    }
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
        genesis_ms: now_ms(),
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
            let free = current
                .map(|l| l.holder == me || l.until_ms < now)
                .unwrap_or(true);
            free && store.update("leader", value, entry.revision).await.is_ok()
        }
        Ok(_) => store.create("leader", value).await.is_ok(),
        Err(_) => false,
    }
}

impl RoleLoop for Clock {
    fn run(&self) -> RoleFuture {
        let ctx = self.ctx.clone();
        let cfg = self.cfg.clone();
        let chain = self.chain.clone();
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
            let me = format!("{}:{}", ctx.instance, ctx.identity.address());
            let mut published_open = 0u64;
            let mut published_close = 0u64;
            let mut leading = false;
            loop {
                let lead = hold_lease(&store, &me, cfg.lease_ttl_ms).await;
                if lead != leading {
                    tracing::info!(instance = %ctx.instance, lead, "clock leadership changed");
                    leading = lead;
                }
                if lead {
                    let now = now_ms();
                    let window = info.window_at(now);
                    anyhow::ensure!(
                        window < info.chain_len,
                        "hash chain exhausted at window {window}: start a new deployment with a fresh seed"
                    );
                    ctx.metrics()
                        .window
                        .with_label_values(&["clock"])
                        .set(window as i64);
                    if published_open < window {
                        publish_open(&ctx, &chain, &info, window).await?;
                        published_open = window;
                    }
                    // The previous window's close is due once its deadline passed; this
                    // window's once its own deadline passes.
                    for w in [window.saturating_sub(1), window] {
                        if w >= 1 && w > published_close && now >= info.deadline_ms(w) {
                            publish_close(&ctx, &chain, &info, w).await?;
                            ctx.metrics()
                                .window_phase_seconds
                                .with_label_values(&["submission"])
                                .observe(info.submit_ms as f64 / 1000.0);
                            published_close = w;
                        }
                    }
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
    let meta = MsgMeta {
        window: Some(window),
        msg_id: Some(subj::clock_msg_id(window, "open")),
        ..Default::default()
    };
    ctx.bus
        .publish_durable(
            "clock",
            subj::window_open(window),
            msg,
            &ctx.identity,
            meta,
            Duration::from_secs(30),
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
    let meta = MsgMeta {
        window: Some(window),
        msg_id: Some(subj::clock_msg_id(window, "close")),
        ..Default::default()
    };
    ctx.bus
        .publish_durable(
            "clock",
            subj::window_close(window),
            msg,
            &ctx.identity,
            meta,
            Duration::from_secs(30),
        )
        .await?;
    tracing::info!(window, "window closed");
    Ok(())
}
