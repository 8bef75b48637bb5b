//! The trainer's decisions about what to train on, as a pure state machine fed with the
//! verdict stream (tested without NATS).
//!
//! A group is trained on only when a trusted verifier **accepted that group** (identified by
//! its envelope digest: a different group under the same index, or a re-signed copy, does not
//! match) and the trusted scorer **passed its miner** for the window. Late groups, groups a
//! verifier rejected or never saw, and groups of failed miners are never trained on. Every
//! input here has already crossed the trust boundary (signer role and fields checked).

use std::collections::{BTreeMap, HashMap, HashSet};

use messages::{GroupVerdict, Hash32, MinerWindowVerdict};

/// The first verdict per (miner, group index) wins, as the scorer counts them.
#[derive(Default, Debug)]
struct WindowState {
    groups: HashMap<String, HashMap<u32, Option<Hash32>>>,
    passed: Vec<String>,
    scored: bool,
}

/// What one window's training may use: per passed miner, the digests of its accepted groups.
#[derive(Debug, PartialEq)]
pub struct TrainableWindow {
    pub window: u64,
    pub groups: BTreeMap<String, HashSet<Hash32>>,
}

impl TrainableWindow {
    pub fn group_count(&self) -> usize {
        self.groups.values().map(HashSet::len).sum()
    }
}

#[derive(Debug, Default)]
pub struct TrainBatcher {
    windows: BTreeMap<u64, WindowState>,
    /// Windows at or below this were trained (or skipped) already.
    pub last_trained: u64,
}

/// Windows of verdicts kept while waiting for the scorer (bounded memory).
const KEEP_WINDOWS: usize = 64;

impl TrainBatcher {
    pub fn new(last_trained: u64) -> Self {
        Self {
            windows: BTreeMap::new(),
            last_trained,
        }
    }

    pub fn group_verdict(&mut self, v: GroupVerdict) {
        if v.window <= self.last_trained {
            return;
        }
        let accepted = v.accepted.then_some(v.group_digest);
        self.window(v.window)
            .groups
            .entry(v.miner)
            .or_default()
            .entry(v.group_index)
            .or_insert(accepted);
    }

    /// Record the scorer's verdict on a miner. Returns the windows now due for training:
    /// every scored window before `v.window` (the scorer finalises windows in order, so
    /// a verdict for a later window means the earlier one is complete).
    pub fn miner_verdict(&mut self, v: MinerWindowVerdict) -> Vec<TrainableWindow> {
        if v.window <= self.last_trained {
            return Vec::new();
        }
        let window = v.window;
        let w = self.window(window);
        w.scored = true;
        if v.passed && !w.passed.contains(&v.miner) {
            w.passed.push(v.miner);
        }
        self.due_before(window)
    }

    /// The stream went quiet: every scored window is complete.
    pub fn idle(&mut self) -> Vec<TrainableWindow> {
        self.due_before(u64::MAX)
    }

    fn due_before(&mut self, window: u64) -> Vec<TrainableWindow> {
        let due: Vec<u64> = self
            .windows
            .iter()
            .filter(|(w, s)| **w < window && s.scored)
            .map(|(w, _)| *w)
            .collect();
        let mut out = Vec::new();
        for w in due {
            let state = self.windows.remove(&w).expect("listed above");
            // Unscored windows before a scored one will never be scored: drop them.
            self.windows.retain(|k, _| *k > w);
            self.last_trained = self.last_trained.max(w);
            let groups = state
                .passed
                .into_iter()
                .map(|miner| {
                    let accepted = state
                        .groups
                        .get(&miner)
                        .map(|g| g.values().flatten().copied().collect())
                        .unwrap_or_default();
                    (miner, accepted)
                })
                .collect();
            out.push(TrainableWindow { window: w, groups });
        }
        out
    }

    fn window(&mut self, window: u64) -> &mut WindowState {
        while self.windows.len() >= KEEP_WINDOWS && !self.windows.contains_key(&window) {
            let oldest = *self.windows.keys().next().expect("non-empty");
            self.windows.remove(&oldest);
        }
        self.windows.entry(window).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use messages::WIRE_VERSION;

    fn gv(window: u64, miner: &str, index: u32, digest: u8, accepted: bool) -> GroupVerdict {
        GroupVerdict {
            version: WIRE_VERSION,
            window,
            miner: miner.into(),
            group_index: index,
            group_digest: Hash32::from([digest; 32]),
            verifier: "v".into(),
            accepted,
            reason: (!accepted).then_some(messages::RejectCode::LateSubmission),
            deep_checked: true,
            unique_rollouts: 16,
            learning_signal: true,
            mean_reward: 0.5,
            server_ts_ms: 0,
            success_rollouts: 0,
        }
    }

    fn mv(window: u64, miner: &str, passed: bool) -> MinerWindowVerdict {
        MinerWindowVerdict {
            version: WIRE_VERSION,
            window,
            miner: miner.into(),
            verifier: "s".into(),
            passed,
            reason: None,
            groups_seen: 2,
            groups_accepted: 1,
            unique_rollouts: 16,
            signal_groups: 1,
        }
    }

    #[test]
    fn only_accepted_groups_of_passed_miners_are_trained() {
        let mut b = TrainBatcher::new(0);
        b.group_verdict(gv(1, "a", 0, 1, true));
        b.group_verdict(gv(1, "a", 1, 2, false)); // late: discarded, miner still passes
        b.group_verdict(gv(1, "a", 0, 9, true)); // a second verdict for the group: ignored
        b.group_verdict(gv(1, "b", 0, 3, true));
        assert!(b.miner_verdict(mv(1, "a", true)).is_empty());
        assert!(b.miner_verdict(mv(1, "b", false)).is_empty());
        // A miner the verifiers never saw but the scorer passed contributes nothing.
        assert!(b.miner_verdict(mv(1, "ghost", true)).is_empty());
        let due = b.miner_verdict(mv(2, "a", true));
        assert_eq!(due.len(), 1);
        let w = &due[0];
        assert_eq!(w.window, 1);
        assert_eq!(w.groups["a"], HashSet::from([Hash32::from([1; 32])]));
        assert!(!w.groups.contains_key("b"), "failed miner");
        assert!(w.groups["ghost"].is_empty());
        assert_eq!(w.group_count(), 1);
        assert_eq!(b.last_trained, 1);
        // Replayed verdicts of a trained window change nothing.
        b.group_verdict(gv(1, "a", 5, 7, true));
        assert!(b.miner_verdict(mv(1, "a", true)).is_empty());
        assert_eq!(
            b.idle().len(),
            1,
            "window 2 is complete once the stream is quiet"
        );
        assert!(b.idle().is_empty());
    }

    #[test]
    fn memory_is_bounded_under_verdicts_for_many_windows() {
        let mut b = TrainBatcher::new(0);
        for w in 1..10_000 {
            b.group_verdict(gv(w, "a", 0, 1, true));
        }
        assert!(b.windows.len() <= KEEP_WINDOWS);
    }
}
