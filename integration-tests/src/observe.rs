//! What the streams hold, read back for assertions: groups the server acknowledged, verdicts
//! per group, a per-window summary for failure messages.

use std::collections::{BTreeMap, BTreeSet};

use actors::bus::Bus;
use actors::compute::structural::StructuralMiner;
use actors::roles::miner::MinerCompute;
use actors::windows::{follow_clock, WindowBook};
use messages::subjects as subj;
use messages::{GroupVerdict, Hash32, RolloutGroup, Weights};

use crate::{stream_messages, stream_raw};

/// Window length of the failure tests: short, so a test sees several windows.
pub const WINDOW_MS: u64 = 2500;

/// (window, miner, group index): what identifies a group everywhere.
pub type GroupKey = (u64, String, u32);

pub fn structural() -> Box<dyn MinerCompute> {
    Box::new(StructuralMiner {
        checkpoint: Hash32::default(),
    })
}

pub fn follow_windows(bus: &Bus) -> WindowBook {
    let book = WindowBook::default();
    actix_rt::spawn(follow_clock(bus.clone(), "test", book.clone()));
    book
}

/// Groups the rollouts stream holds (what the server acknowledged), by key.
pub async fn stored_groups(bus: &Bus) -> BTreeSet<GroupKey> {
    stream_messages::<RolloutGroup>(bus, subj::STREAM_ROLLOUTS, "grail.rollout.")
        .await
        .into_iter()
        .map(|g| (g.window, g.miner, g.group_index))
        .collect()
}

/// Every group verdict message the verdict stream holds, by group.
pub async fn stored_verdicts(bus: &Bus) -> BTreeMap<GroupKey, Vec<GroupVerdict>> {
    let mut out: BTreeMap<GroupKey, Vec<GroupVerdict>> = BTreeMap::new();
    for v in
        stream_messages::<GroupVerdict>(bus, subj::STREAM_VERDICTS, "grail.verdict.group.").await
    {
        out.entry((v.window, v.miner.clone(), v.group_index))
            .or_default()
            .push(v);
    }
    out
}

/// True once every stored group of windows `..=upto` has a verdict.
pub async fn all_verified_upto(bus: &Bus, upto: u64) -> bool {
    let verdicts = stored_verdicts(bus).await;
    stored_groups(bus)
        .await
        .iter()
        .filter(|k| k.0 <= upto)
        .all(|k| verdicts.contains_key(k))
}

/// The groups of windows `..=upto` each have exactly one verdict message, and it accepts.
pub fn assert_one_accepting_verdict_each(
    groups: &BTreeSet<GroupKey>,
    verdicts: &BTreeMap<GroupKey, Vec<GroupVerdict>>,
    upto: u64,
) {
    for key in groups.iter().filter(|k| k.0 <= upto) {
        let v = verdicts
            .get(key)
            .unwrap_or_else(|| panic!("group {key:?} was acked but never got a verdict"));
        assert_eq!(v.len(), 1, "group {key:?} has {} verdict messages", v.len());
        assert!(
            v[0].accepted,
            "honest group {key:?} rejected: {:?}",
            v[0].reason
        );
    }
}

/// Per window: opened/closed, groups stored, verdicts, weights (for failure messages).
pub async fn summary(bus: &Bus) -> String {
    let clock = stream_raw(bus, subj::STREAM_CLOCK, "grail.clock.").await;
    let groups = stored_groups(bus).await;
    let verdicts = stored_verdicts(bus).await;
    let weights = stream_messages::<Weights>(bus, subj::STREAM_WEIGHTS, "grail.weights.").await;
    let last = groups
        .iter()
        .map(|k| k.0)
        .chain(weights.iter().map(|w| w.window))
        .max()
        .unwrap_or(0)
        + 2;
    let mut out = String::new();
    for w in 1..=last {
        let has = |phase: &str| {
            clock
                .iter()
                .any(|(s, _)| s == &format!("grail.clock.{w}.{phase}"))
        };
        out += &format!(
            "\n  window {w}: open {} close {} groups {} verdicts {} weights {}",
            has("open"),
            has("close"),
            groups.iter().filter(|k| k.0 == w).count(),
            verdicts.keys().filter(|k| k.0 == w).count(),
            weights.iter().any(|x| x.window == w)
        );
    }
    let m = &bus.metrics;
    for role in ["clock", "miner", "verifier", "scorer"] {
        out += &format!(
            "\n  {role} actor restarts {}",
            m.actor_restarts.with_label_values(&[role]).get()
        );
    }
    out
}

pub fn published(bus: &Bus, miner: &str) -> u64 {
    bus.metrics
        .groups_published
        .with_label_values(&[miner])
        .get()
}

/// The clock stream checked as every role checks it: each open and close must verify
/// against the hash chain (a [`WindowBook`] accepts it), no window may be opened with two
/// different randomness values, and windows `1..=upto` must all be opened and closed.
/// Returns the highest window opened.
pub async fn assert_clock_record_complete(bus: &Bus, upto: u64) -> u64 {
    use messages::{WindowClose, WindowOpen};
    let book = WindowBook::default();
    let mut opens: BTreeMap<u64, BTreeSet<[u8; 32]>> = BTreeMap::new();
    let mut closes: BTreeSet<u64> = BTreeSet::new();
    for (subject, payload) in stream_raw(bus, subj::STREAM_CLOCK, "grail.clock.").await {
        match subj::parse(&subject) {
            Ok(subj::Subject::WindowOpen { window }) => {
                let (env, _) = messages::Envelope::<WindowOpen>::open(&payload, 1 << 20)
                    .unwrap_or_else(|e| panic!("{subject}: {e}"));
                let open = env.payload;
                assert_eq!(open.window, window, "{subject}");
                opens.entry(window).or_default().insert(open.randomness.0);
                assert!(book.record_open(open), "{subject} fails the chain check");
            }
            Ok(subj::Subject::WindowClose { window }) => {
                let (env, _) = messages::Envelope::<WindowClose>::open(&payload, 1 << 20)
                    .unwrap_or_else(|e| panic!("{subject}: {e}"));
                assert_eq!(env.payload.window, window, "{subject}");
                assert!(
                    book.record_close(env.payload),
                    "{subject} fails the chain check"
                );
                closes.insert(window);
            }
            other => panic!("unexpected subject {subject} in the clock stream: {other:?}"),
        }
    }
    for (w, values) in &opens {
        assert_eq!(
            values.len(),
            1,
            "window {w} opened with {} randomness values",
            values.len()
        );
    }
    let opened: Vec<u64> = opens.keys().copied().collect();
    let last = opened.last().copied().unwrap_or(0);
    assert_eq!(
        opened,
        (1..=last).collect::<Vec<_>>(),
        "a window number was skipped"
    );
    assert!(last >= upto, "only {last} windows opened, expected {upto}");
    let missing: Vec<u64> = (1..=upto).filter(|w| !closes.contains(w)).collect();
    assert!(missing.is_empty(), "windows never closed: {missing:?}");
    last
}
