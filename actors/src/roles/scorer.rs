//! Scorer: turns group verdicts into per-miner window verdicts and weights.
//!
//! Verifiers share the groups of a window, so no single verifier sees all of a miner's
//! groups; the scorer does. It rebuilds its tallies from the verdict stream on every start
//! (an ordered consumer from the beginning: nothing to ack, nothing lost on a crash), counts
//! each (window, miner, group) once however often it was redelivered, and finalises window W
//! once window W+1 has closed — a full window of grace for verification. Before publishing a
//! window it asks the streams whether that window (or some of its miner verdicts) was published
//! already (`scorer_record`), so a restart never publishes a window twice; the last finalised
//! window in KV is a shortcut for the replay.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use bytes::Bytes;
use futures::StreamExt;
use messages::envelope::payload_digest;
use messages::subjects as subj;
use messages::{
    GroupVerdict, MinerWindowVerdict, SignedMessage, WeightEntry, Weights, WIRE_VERSION,
};
use messages::{RejectCode, Severity};
use protocol::checks::SoftThresholds;
use protocol::scoring::{miner_score, weights, weights_to_u16_sum, ScoringParams, WindowOutcome};

use crate::bus::MsgMeta;
use crate::role::{RoleCtx, RoleFuture, RoleLoop};
use crate::shutdown::ShutdownSignal;
use crate::task::OwnedTask;
use crate::windows::{follow_clock, WindowBook};

use super::scorer_record;

#[derive(Default, Debug, Clone)]
pub struct MinerTally {
    /// group index → verdict (first verdict wins: redeliveries carry the same one).
    pub groups: BTreeMap<u32, GroupVerdict>,
}

impl MinerTally {
    /// By each reject code's severity (decided once, [`RejectCode::severity`]): one hard
    /// rejection fails the miner for the window; soft ones fail it above their threshold share
    /// of its groups (`soft`, from `[scoring]`); discarded groups are simply not credited.
    pub fn outcome(&self, soft: &SoftThresholds) -> (bool, Option<RejectCode>, WindowOutcome) {
        let total = self.groups.len().max(1) as f64;
        let mut soft_counts: BTreeMap<RejectCode, u32> = BTreeMap::new();
        for v in self.groups.values().filter(|v| !v.accepted) {
            // A rejection always carries its code (the field checks refuse one without).
            let code = v.reason.unwrap_or(RejectCode::TooManySoftFindings);
            match code.severity() {
                Severity::Discard => continue,
                Severity::Soft => {
                    let n = soft_counts.entry(code).or_default();
                    *n += 1;
                    if *n as f64 / total > soft.max_fraction(code) {
                        return (false, Some(code), WindowOutcome::Failed);
                    }
                }
                Severity::Hard => return (false, Some(code), WindowOutcome::Failed),
            }
        }
        let mut signal = 0;
        let mut no_signal = 0;
        for v in self.groups.values().filter(|v| v.accepted) {
            if v.learning_signal {
                signal += v.unique_rollouts;
            } else {
                no_signal += v.unique_rollouts;
            }
        }
        (
            true,
            None,
            WindowOutcome::Credited {
                signal_rollouts: signal,
                no_signal_rollouts: no_signal,
            },
        )
    }
}

/// Pure scoring state: tallies per window, outcome history per miner.
#[derive(Default)]
pub struct ScoreBook {
    pub tallies: BTreeMap<u64, HashMap<String, MinerTally>>,
    pub history: HashMap<String, Vec<(u64, WindowOutcome)>>,
    /// Highest window finalised so far: a verdict arriving later for it must not reopen it
    /// (that would push a second outcome for the same window into the history).
    pub finalised_upto: u64,
}

/// What closing one window produced.
pub struct Finalised {
    /// The window's per-miner tallies (one miner verdict each).
    pub tallies: Vec<(String, MinerTally)>,
    /// Weights over every miner still remembered, sorted by key.
    pub weights: Vec<WeightEntry>,
    /// Keys listed before and forgotten now (their weight gauges go too).
    pub forgotten: Vec<String>,
}

impl ScoreBook {
    pub fn record(&mut self, v: GroupVerdict) -> bool {
        if v.window <= self.finalised_upto {
            return false;
        }
        let tally = self
            .tallies
            .entry(v.window)
            .or_default()
            .entry(v.miner.clone())
            .or_default();
        if tally.groups.contains_key(&v.group_index) {
            return false;
        }
        tally.groups.insert(v.group_index, v);
        true
    }

    /// Close `window`: per-miner verdicts, then weights over every miner still remembered.
    ///
    /// Memory and the weights follow the active miners, not every key ever seen: a key with
    /// no window in the last `forget_after_windows` is forgotten (its score is exactly 0 by
    /// then: scores are sums over a sliding window, not a decaying average), and above
    /// `max_miners` keys the lowest-ranked are dropped — by score, then most recent window,
    /// then key — so a flood of keys can only displace a miner by out-scoring it with
    /// verified work of its own.
    pub fn finalise(&mut self, window: u64, cfg: &ScorerConfig) -> Finalised {
        let params = &cfg.params;
        self.finalised_upto = self.finalised_upto.max(window);
        let before: Vec<String> = self.history.keys().cloned().collect();
        let tallies: Vec<(String, MinerTally)> = self
            .tallies
            .remove(&window)
            .unwrap_or_default()
            .into_iter()
            .collect();
        for (miner, tally) in &tallies {
            let (_, _, outcome) = tally.outcome(&cfg.soft);
            self.history
                .entry(miner.clone())
                .or_default()
                .push((window, outcome));
        }
        let keep = cfg.forget_after_windows();
        self.history.retain(|_, h| {
            h.retain(|(w, _)| w.saturating_add(keep) > window);
            !h.is_empty()
        });
        let mut ranked: Vec<(String, f64, u64)> = self
            .history
            .iter()
            .map(|(m, h)| {
                let last = h.iter().map(|(w, _)| *w).max().unwrap_or(0);
                (m.clone(), miner_score(h, window, params), last)
            })
            .collect();
        if ranked.len() > cfg.max_miners {
            ranked.sort_by(|a, b| {
                b.1.total_cmp(&a.1)
                    .then(b.2.cmp(&a.2))
                    .then_with(|| a.0.cmp(&b.0))
            });
            for (m, _, _) in ranked.drain(cfg.max_miners..) {
                self.history.remove(&m);
            }
        }
        ranked.sort_by(|a, b| a.0.cmp(&b.0));
        let scores: Vec<f64> = ranked.iter().map(|r| r.1).collect();
        let w = weights(&scores, params.exponent);
        let w16 = weights_to_u16_sum(&w);
        let weights = ranked
            .into_iter()
            .enumerate()
            .map(|(i, (miner, score, _))| WeightEntry {
                miner,
                score,
                weight: w[i] as f32,
                weight_u16: w16[i],
            })
            .collect();
        let forgotten = before
            .into_iter()
            .filter(|m| !self.history.contains_key(m))
            .collect();
        Finalised {
            tallies,
            weights,
            forgotten,
        }
    }
}

/// What the scorer decides with (`[scoring]` in cluster.toml).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScorerConfig {
    pub params: ScoringParams,
    /// Largest tolerated share of a miner's groups per soft reject code.
    pub soft: SoftThresholds,
    /// Forget a key with no window in this many windows; `None`: the scoring horizon
    /// (`max(score_windows, failure_lookback_windows)`), the fewest that change no score.
    pub forget_after_windows: Option<u64>,
    /// Most keys remembered (and listed in `Weights`); the lowest-ranked go first.
    pub max_miners: usize,
}

impl ScorerConfig {
    /// Default [`ScorerConfig::max_miners`]: far above an honest farm's miner count and far
    /// under the 65,536 entries a `Weights` message may carry.
    pub const DEFAULT_MAX_MINERS: usize = 4096;

    /// Windows a key is remembered without a new one (never under the scoring horizon).
    pub fn forget_after_windows(&self) -> u64 {
        let horizon = self
            .params
            .score_windows
            .max(self.params.failure_lookback_windows);
        self.forget_after_windows.unwrap_or(horizon).max(horizon)
    }
}

impl Default for ScorerConfig {
    fn default() -> Self {
        Self {
            params: ScoringParams::default(),
            soft: SoftThresholds::default(),
            forget_after_windows: None,
            max_miners: Self::DEFAULT_MAX_MINERS,
        }
    }
}

pub struct Scorer {
    ctx: RoleCtx,
    cfg: ScorerConfig,
}

impl Scorer {
    pub fn new(ctx: RoleCtx, cfg: ScorerConfig) -> Self {
        Self { ctx, cfg }
    }
}

/// The last finalised window (a shortcut; the streams are the record, see `scorer_record`).
const LAST_KEY: &str = messages::bus_permissions::KV_SCORER_LAST_WINDOW;

impl RoleLoop for Scorer {
    fn run(&self, _shutdown: ShutdownSignal) -> RoleFuture {
        let ctx = self.ctx.clone();
        let cfg = self.cfg;
        Box::pin(async move {
            let book = WindowBook::default();
            let follower = OwnedTask::spawn(follow_clock(ctx.bus.clone(), "scorer", book.clone()));
            let kv = ctx
                .bus
                .js
                .get_key_value(subj::KV_STATE)
                .await
                .map_err(|e| anyhow::anyhow!("KV {}: {e} (run `grail streams`)", subj::KV_STATE))?;
            let mut last_final: u64 = kv
                .get(LAST_KEY)
                .await
                .ok()
                .flatten()
                .and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok())
                .unwrap_or(0);
            // A record ahead of the clock (written by someone else) would silence the scorer
            // until that window: ignore it.
            if let Some(current) = ctx.bus.trust.record_ahead_of_schedule(last_final) {
                tracing::error!(
                    recorded = last_final,
                    current,
                    "{}/{LAST_KEY} is ahead of the clock; ignoring it",
                    subj::KV_STATE
                );
                last_final = 0;
            }
            let mut verdicts = ctx
                .bus
                .replay(
                    subj::STREAM_VERDICTS,
                    subj::VERDICT_GROUP_ALL,
                    DeliverPolicy::All,
                )
                .await?;
            let mut scores = ScoreBook::default();
            // Until the replay has once reached the head of the verdict stream the tallies
            // are partial (the clock's record replays faster): finalising then would publish
            // a window short of stored verdicts, a second, different count when the restart
            // lost its `last_window` record (a failed KV write during a NATS failover).
            let mut replayed = false;
            // Stream sequence of the last verdict read (see `verdicts_read_upto`).
            let mut read_upto = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                if follower.is_finished() {
                    anyhow::bail!("lost the clock stream");
                }
                tokio::select! {
                    msg = verdicts.next() => {
                        let msg = msg.ok_or_else(|| anyhow::anyhow!("verdict stream ended"))?
                            .map_err(|e| anyhow::anyhow!("verdict stream: {e}"))?;
                        replayed |= msg.info().is_ok_and(|i| i.pending == 0);
                        read_upto = msg.info().map_or(read_upto, |i| i.stream_sequence);
                        if let Ok((env, _)) = ctx.bus.open::<GroupVerdict>("scorer", &msg.payload) {
                            let current = book.current(ctx.bus.trust.schedule().as_ref());
                            let v = env.payload;
                            match ctx.bus.trust.check_window(GroupVerdict::KIND, &env.signer, v.window, current) {
                                // Windows finalised before a restart still rebuild the history.
                                Ok(()) => {
                                    scores.record(v);
                                }
                                Err(r) => ctx.bus.refused("scorer", &r),
                            }
                        }
                    }
                    _ = tick.tick() => {}
                }
                let Some(closed) = book.latest_closed().filter(|_| replayed) else {
                    continue;
                };
                // Finalise every window W whose successor has closed.
                let ready: Vec<u64> = scores
                    .tallies
                    .keys()
                    .copied()
                    .filter(|w| *w < closed)
                    .collect();
                for window in ready {
                    if window > last_final && !verdicts_read(&ctx.bus.js, window, read_upto).await {
                        break; // the later windows wait too: they finalise in order
                    }
                    // The streams, not the KV record, say what was published (see
                    // `scorer_record`); unreadable now: wait, as for the verdicts.
                    let stored = if window > last_final {
                        match scorer_record::stored(&ctx.bus, window).await {
                            Some(stored) => Some(stored),
                            None => break,
                        }
                    } else {
                        None
                    };
                    let done = scores.finalise(window, &cfg);
                    let Some(stored) = stored else {
                        continue; // published before a restart; history rebuilt, nothing to send
                    };
                    if stored.weights {
                        tracing::warn!(
                            window,
                            "window {window}'s weights are already stored (a restart lost the `{LAST_KEY}` record): not publishing it again"
                        );
                    } else {
                        publish_window(&ctx, &cfg, window, done, &stored.miner_verdicts).await?;
                    }
                    kv.put(LAST_KEY, Bytes::from(window.to_string()))
                        .await
                        .map_err(|e| anyhow::anyhow!("saving {LAST_KEY}: {e}"))?;
                    last_final = window;
                }
            }
        })
    }
}

/// Miner verdicts awaiting their PubAck at once while a window is published.
const MINER_VERDICTS_IN_FLIGHT: usize = 64;

/// Whether every group verdict of `window` the stream holds was read (`read_upto`: the
/// stream sequence of the last one read). The clock and the verdicts come through separate
/// readers: after a NATS node died the verdict reader can lag (its consumer rebuilt
/// elsewhere) while closes keep coming, and finalising then would leave stored verdicts out
/// of their window for good. Unknown (the stream unreachable for now): not yet.
async fn verdicts_read(js: &async_nats::jetstream::Context, window: u64, read_upto: u64) -> bool {
    let Ok(stream) = js.get_stream(subj::STREAM_VERDICTS).await else {
        return false;
    };
    let subject = format!(
        "{}{window}.>",
        subj::VERDICT_GROUP_ALL.trim_end_matches('>')
    );
    match crate::bus::last_on_subject(&stream, &subject).await {
        Ok(last) => last.is_none_or(|m| m.sequence <= read_upto),
        Err(_) => false,
    }
}

async fn publish_window(
    ctx: &RoleCtx,
    cfg: &ScorerConfig,
    window: u64,
    closed: Finalised,
    already_stored: &HashSet<String>,
) -> anyhow::Result<()> {
    let Finalised {
        tallies,
        weights: entries,
        forgotten,
    } = closed;
    let me = ctx.identity.address().to_string();
    let m = ctx.metrics();
    let scoring_started = std::time::Instant::now();
    let me = &me;
    if !already_stored.is_empty() {
        tracing::warn!(
            window,
            stored = already_stored.len(),
            "window {window} was partly published before a restart: its stored miner verdicts are not sent again"
        );
    }
    let publishes = tallies
        .into_iter()
        .filter(|(miner, _)| !already_stored.contains(miner))
        .map(|(miner, tally)| {
            let (passed, reason, _) = tally.outcome(&cfg.soft);
            let result = if passed { "passed" } else { "failed" };
            m.miner_verdicts
                .with_label_values(&[result, reason.map_or("none", |c| c.as_str())])
                .inc();
            let verdict = MinerWindowVerdict {
                version: WIRE_VERSION,
                window,
                miner: miner.clone(),
                verifier: me.clone(),
                passed,
                reason,
                groups_seen: tally.groups.len() as u32,
                groups_accepted: tally.groups.values().filter(|v| v.accepted).count() as u32,
                unique_rollouts: tally.groups.values().map(|v| v.unique_rollouts).sum(),
                signal_groups: tally.groups.values().filter(|v| v.learning_signal).count() as u32,
            };
            let meta = MsgMeta {
                window: Some(window),
                miner: Some(miner.clone()),
                msg_id: Some(subj::content_msg_id(
                    MinerWindowVerdict::KIND,
                    &payload_digest(&verdict),
                )),
            };
            async move {
                ctx.bus
                    .publish_durable(
                        "scorer",
                        subj::miner_verdict(window, &miner),
                        verdict,
                        &ctx.identity,
                        meta,
                        Duration::from_secs(30),
                    )
                    .await
            }
        });
    // Many acks outstanding at once: one at a time made the fold cost a round trip per miner
    // (~0.4 ms on one node, ~1 ms on R3: 3 s a window for 3,000 keys, docs/BENCHMARKS.md).
    // Weights still go out only after every miner verdict is stored.
    let mut acks = futures::stream::iter(publishes).buffer_unordered(MINER_VERDICTS_IN_FLIGHT);
    while let Some(stored) = acks.next().await {
        stored?;
    }
    for e in &entries {
        m.miner_weight
            .with_label_values(&[&e.miner])
            .set(e.weight as f64);
    }
    // One series per key ever listed would grow without bound under a key flood.
    for miner in &forgotten {
        let _ = m.miner_weight.remove_label_values(&[miner]);
    }
    let weights = Weights {
        version: WIRE_VERSION,
        window,
        entries,
    };
    let meta = MsgMeta {
        window: Some(window),
        msg_id: Some(subj::content_msg_id(
            Weights::KIND,
            &payload_digest(&weights),
        )),
        ..Default::default()
    };
    ctx.bus
        .publish_durable(
            "scorer",
            subj::weights(window),
            weights,
            &ctx.identity,
            meta,
            Duration::from_secs(30),
        )
        .await?;
    m.window_phase_seconds
        .with_label_values(&["scoring"])
        .observe(scoring_started.elapsed().as_secs_f64());
    m.window.with_label_values(&["scorer"]).set(window as i64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(window: u64, miner: &str, group_index: u32, accepted: bool) -> GroupVerdict {
        GroupVerdict {
            version: WIRE_VERSION,
            window,
            miner: miner.into(),
            group_index,
            group_digest: Default::default(),
            verifier: "v".into(),
            accepted,
            reason: (!accepted).then_some(RejectCode::SketchMismatch),
            deep_checked: true,
            unique_rollouts: 16,
            learning_signal: true,
            mean_reward: 0.5,
            server_ts_ms: 0,
            success_rollouts: 0,
        }
    }

    #[test]
    fn redelivered_and_late_verdicts_are_counted_once() {
        let mut book = ScoreBook::default();
        let cfg = ScorerConfig::default();
        assert!(book.record(verdict(1, "a", 0, true)));
        assert!(!book.record(verdict(1, "a", 0, true)), "redelivery");
        let w = book.finalise(1, &cfg).weights;
        assert_eq!(w.len(), 1);
        assert!(
            !book.record(verdict(1, "a", 1, true)),
            "late verdict for a finalised window"
        );
        assert_eq!(book.history["a"].len(), 1);
        assert!(book.tallies.is_empty());
    }

    #[test]
    fn verifier_side_late_and_soft_findings_fail_only_above_their_share() {
        use RejectCode::*;
        let soft = SoftThresholds::default();
        let with = |reasons: &[RejectCode]| {
            let mut t = MinerTally::default();
            for i in 0..16u32 {
                let r = reasons.get(i as usize).copied();
                let mut v = verdict(1, "a", i, r.is_none());
                v.reason = r;
                t.groups.insert(i, v);
            }
            t.outcome(&soft)
        };
        assert!(with(&[]).0);
        assert!(with(&[CheckpointUnavailable]).0, "the verifier's problem");
        let (passed, _, outcome) = with(&[LateSubmission]);
        assert!(passed, "lateness is discarded, not punished");
        assert_eq!(
            outcome,
            WindowOutcome::Credited {
                signal_rollouts: 15 * 16,
                no_signal_rollouts: 0
            }
        );
        assert!(with(&[RewardMismatch]).0, "1/16 is under the 10% share");
        let (passed, reason, _) = with(&[RewardMismatch, RewardMismatch]);
        assert!(!passed && reason == Some(RewardMismatch));
        assert!(!with(&[SketchMismatch]).0, "hard");
        // Thresholds come from config: a tolerant network passes what the default fails.
        let mut t = MinerTally::default();
        for i in 0..16u32 {
            let mut v = verdict(1, "a", i, i >= 2);
            v.reason = (i < 2).then_some(RewardMismatch);
            t.groups.insert(i, v);
        }
        let tolerant = SoftThresholds {
            reward_mismatch: 0.2,
            ..soft
        };
        assert!(!t.outcome(&soft).0 && t.outcome(&tolerant).0);
    }

    /// Keys seen once leave the history (and the weights) once no window of theirs can
    /// change a score: memory and the weights follow the active miners.
    #[test]
    fn miners_without_recent_windows_leave_the_history_and_the_weights() {
        let mut book = ScoreBook::default();
        let cfg = ScorerConfig::default();
        let p = cfg.params;
        book.record(verdict(1, "once", 0, true));
        let horizon = p.score_windows.max(p.failure_lookback_windows);
        for w in 1..=horizon + 1 {
            book.record(verdict(w, "steady", 0, true));
            let weights = book.finalise(w, &cfg).weights;
            let listed = weights.iter().any(|e| e.miner == "once");
            assert_eq!(listed, w < 1 + horizon, "window {w}");
        }
        assert!(!book.history.contains_key("once"));
        assert!(book.history["steady"].len() as u64 <= horizon);
    }

    #[test]
    fn one_rejected_group_fails_the_miner_and_zeroes_its_weight() {
        let mut book = ScoreBook::default();
        let cfg = ScorerConfig::default();
        book.record(verdict(1, "honest", 0, true));
        book.record(verdict(1, "cheat", 0, true));
        book.record(verdict(1, "cheat", 1, false));
        let Finalised {
            tallies, weights, ..
        } = book.finalise(1, &cfg);
        let cheat = tallies.iter().find(|(m, _)| m == "cheat").unwrap();
        assert!(!cheat.1.outcome(&cfg.soft).0);
        let w = |m: &str| weights.iter().find(|e| e.miner == m).unwrap().weight;
        assert_eq!(w("cheat"), 0.0);
        assert!((w("honest") - 1.0).abs() < 1e-6);
    }

    /// `n` keys that each submit one group of `unique` rollouts in `window`.
    fn flood(book: &mut ScoreBook, window: u64, n: usize, accepted: bool, unique: u32) {
        for i in 0..n {
            let mut v = verdict(window, &format!("flood{i:04}"), 0, accepted);
            v.unique_rollouts = unique;
            book.record(v);
        }
    }

    fn honest(book: &mut ScoreBook, window: u64) {
        for m in ["honest-a", "honest-b"] {
            for g in 0..4 {
                book.record(verdict(window, m, g, true));
            }
        }
    }

    /// The issue-14 flood: 2,000 keys once, then only the two honest miners. Every key of the
    /// flood is listed while it may still change a score, and none once
    /// `forget_after_windows` windows have passed: the state and `Weights` shrink back to 2.
    #[test]
    fn a_2000_key_flood_leaves_the_state_and_the_weights_after_forget_after_windows() {
        let cfg = ScorerConfig {
            forget_after_windows: Some(20),
            ..ScorerConfig::default()
        };
        assert_eq!(cfg.forget_after_windows(), 20);
        let mut book = ScoreBook::default();
        honest(&mut book, 1);
        flood(&mut book, 1, 2000, true, 16);
        let first = book.finalise(1, &cfg);
        assert_eq!(first.weights.len(), 2002);
        for w in 2..=25 {
            honest(&mut book, w);
            let out = book.finalise(w, &cfg);
            let expected = if w < 21 { 2002 } else { 2 };
            assert_eq!(out.weights.len(), expected, "window {w}");
            assert_eq!(book.history.len(), expected, "window {w}");
            assert_eq!(out.forgotten.len(), if w == 21 { 2000 } else { 0 });
        }
        // Under the scoring horizon is never used: forgetting there would change scores.
        let short = ScorerConfig {
            forget_after_windows: Some(1),
            ..ScorerConfig::default()
        };
        assert_eq!(short.forget_after_windows(), 14);
    }

    /// A sustained flood (2,000 fresh keys every window) keeps at most `max_miners` keys, and
    /// neither failing keys nor keys with less verified work than the honest miners displace
    /// them: the honest miners keep their full score and nearly all the weight.
    #[test]
    fn a_key_flood_cannot_evict_honest_active_miners() {
        let cfg = ScorerConfig {
            max_miners: 256,
            ..ScorerConfig::default()
        };
        for (accepted, unique) in [(false, 0), (true, 16), (true, 1)] {
            let mut book = ScoreBook::default();
            let mut calm = ScoreBook::default();
            for w in 1..=30 {
                honest(&mut book, w);
                honest(&mut calm, w);
                for i in 0..2000 {
                    let mut v = verdict(w, &format!("flood{w}-{i}"), 0, accepted);
                    v.unique_rollouts = unique;
                    book.record(v);
                }
                let out = book.finalise(w, &cfg);
                let baseline = calm.finalise(w, &cfg).weights;
                assert!(
                    out.weights.len() <= 256,
                    "window {w}: {}",
                    out.weights.len()
                );
                assert!(book.history.len() <= 256);
                let mut honest_weight = 0.0;
                for h in &baseline {
                    let e = out.weights.iter().find(|e| e.miner == h.miner);
                    let e = e.unwrap_or_else(|| panic!("{} evicted in window {w}", h.miner));
                    assert_eq!(e.score, h.score, "{} in window {w}", h.miner);
                    honest_weight += e.weight;
                }
                // One-window keys weigh ever less against miners with a growing history
                // (score^4: 254 keys × 16^4 against 2 × (64·w)^4).
                let floor = if w < 3 { 0.6 } else { 0.98 };
                assert!(honest_weight > floor, "window {w}: {honest_weight}");
            }
        }
    }

    /// Ranking when over the cap: score first, so a key that out-scores a miner with
    /// verified work of its own may take its place, and nothing else may.
    #[test]
    fn over_the_cap_the_lowest_scores_go_first() {
        let cfg = ScorerConfig {
            max_miners: 3,
            ..ScorerConfig::default()
        };
        let mut book = ScoreBook::default();
        for (m, groups) in [("a", 1u32), ("b", 2), ("c", 3), ("d", 4)] {
            for g in 0..groups {
                book.record(verdict(1, m, g, true));
            }
        }
        let out = book.finalise(1, &cfg);
        let kept: Vec<&str> = out.weights.iter().map(|e| e.miner.as_str()).collect();
        assert_eq!(kept, ["b", "c", "d"]);
        assert_eq!(out.forgotten, Vec::<String>::new(), "a was never listed");
        assert!(!book.history.contains_key("a"));
    }
}
