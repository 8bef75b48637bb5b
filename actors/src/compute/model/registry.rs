//! What one verifier process remembers about recent windows, shared by all of its workers:
//! nonces and group indices per miner (duplicates), completion digests per miner with their
//! server timestamps (cross-miner copies), and the verdict per group envelope digest (a
//! redelivered group gets the same verdict).
//!
//! **Scope: one verifier instance.** Verifiers share one durable consumer, so each instance
//! sees only part of a window; a duplicate or copy whose counterpart went to another instance
//! is not found here, and a copy verified *before* its original is not gated (its original is
//! not known yet). The forward-pass checks still catch a copy on a deep-checked group (the
//! sampling keys include the miner's key), and the scorer sees all verdicts; this registry is
//! the cheap first line, not the complete window-level `CopyDetector` of PROTOCOL.md §5.5.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use messages::Hash32;
use protocol::checks::{Limits, RejectReason, DEFAULT_COPY_THRESHOLD};
use protocol::randomness::Randomness;

use crate::compute::verify::VerifyOutcome;

/// When a group counts as a copy of another miner's completions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CopyRules {
    /// Gate when `shared / (group's distinct counted completions)` exceeds this (§5.5: 0.05).
    pub threshold: f64,
    /// ...and at least this many distinct completions are shared: low-entropy completions of
    /// colliding prompts (a trained model answering `12<eos>` to the same `7+5=` two miners
    /// drew) overlap naturally; a copied group shares most of its 16.
    pub min_shared: u32,
    /// Completions shorter than this many tokens are never counted (natural overlap again).
    pub min_tokens: usize,
}

impl Default for CopyRules {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_COPY_THRESHOLD,
            min_shared: 4,
            min_tokens: 4,
        }
    }
}

#[derive(Default)]
struct MinerState {
    nonces: HashMap<u64, Hash32>,
    groups: HashMap<u32, Hash32>,
}

#[derive(Default)]
struct WindowState {
    verdicts: HashMap<Hash32, VerifyOutcome>,
    miners: HashMap<String, MinerState>,
    /// completion digest → (miner → earliest server timestamp).
    completions: HashMap<Randomness, HashMap<String, u64>>,
}

/// Window-level memory of one verifier process (see module docs). Cheap to share: wrap it in
/// an `Arc` and hand the same one to every worker.
pub struct WindowRegistry {
    state: Mutex<BTreeMap<u64, WindowState>>,
    /// Windows older than `newest − keep_windows` are forgotten.
    keep_windows: u64,
    pub copy: CopyRules,
}

impl Default for WindowRegistry {
    fn default() -> Self {
        Self::new(4, CopyRules::default())
    }
}

impl std::fmt::Debug for WindowRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowRegistry")
            .field("keep_windows", &self.keep_windows)
            .field("copy", &self.copy)
            .finish()
    }
}

impl WindowRegistry {
    pub fn new(keep_windows: u64, copy: CopyRules) -> Self {
        Self {
            state: Mutex::new(BTreeMap::new()),
            keep_windows,
            copy,
        }
    }

    fn with_window<T>(&self, window: u64, f: impl FnOnce(&mut WindowState) -> T) -> T {
        // A worker that panicked while holding the lock leaves consistent maps behind (every
        // update is a single insert), so a poisoned lock is still usable.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let newest = state
            .keys()
            .next_back()
            .copied()
            .unwrap_or(window)
            .max(window);
        let oldest_kept = newest.saturating_sub(self.keep_windows);
        state.retain(|&w, _| w >= oldest_kept);
        f(state.entry(window).or_default())
    }

    /// The verdict already given to this exact group envelope, if any.
    pub fn cached(&self, window: u64, digest: &Hash32) -> Option<VerifyOutcome> {
        self.with_window(window, |w| w.verdicts.get(digest).cloned())
    }

    pub fn remember(&self, window: u64, digest: Hash32, outcome: &VerifyOutcome) {
        self.with_window(window, |w| {
            w.verdicts.entry(digest).or_insert_with(|| outcome.clone());
        });
    }

    /// Records the group's nonce and index for its miner; a different envelope reusing either
    /// is a replay. Also enforces `max_groups_per_window` on distinct group indices.
    pub fn claim(
        &self,
        window: u64,
        miner: &str,
        group_index: u32,
        nonce: u64,
        digest: Hash32,
        limits: &Limits,
    ) -> Result<(), RejectReason> {
        self.with_window(window, |w| {
            let m = w.miners.entry(miner.to_string()).or_default();
            if m.nonces.get(&nonce).is_some_and(|d| *d != digest) {
                return Err(RejectReason::DuplicateNonce { nonce });
            }
            if m.groups.get(&group_index).is_some_and(|d| *d != digest) {
                return Err(RejectReason::DuplicateGroupIndex { group: group_index });
            }
            if !m.groups.contains_key(&group_index)
                && m.groups.len() >= limits.max_groups_per_window as usize
            {
                return Err(RejectReason::TooManyGroups {
                    max: limits.max_groups_per_window,
                    actual: u32::try_from(m.groups.len() + 1).unwrap_or(u32::MAX),
                });
            }
            m.nonces.insert(nonce, digest);
            m.groups.insert(group_index, digest);
            Ok(())
        })
    }

    /// Rejects the group if too many of its (distinct, long enough) completions were
    /// published earlier, by server time, by one other miner.
    pub fn check_copies(
        &self,
        window: u64,
        miner: &str,
        server_ts_ms: u64,
        digests: &[Randomness],
    ) -> Result<(), RejectReason> {
        if digests.is_empty() {
            return Ok(());
        }
        let rules = self.copy;
        self.with_window(window, |w| {
            let mut shared: HashMap<&str, u32> = HashMap::new();
            for digest in digests {
                let Some(holders) = w.completions.get(digest) else {
                    continue;
                };
                for (other, &ts) in holders {
                    if other != miner && ts < server_ts_ms {
                        *shared.entry(other.as_str()).or_default() += 1;
                    }
                }
            }
            let worst = shared
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)));
            match worst {
                Some((original, count)) => {
                    let ratio = f64::from(count) / digests.len() as f64;
                    if count >= rules.min_shared && ratio > rules.threshold {
                        Err(RejectReason::CopiedCompletions {
                            original: original.to_string(),
                            shared: count,
                            ratio,
                        })
                    } else {
                        Ok(())
                    }
                }
                None => Ok(()),
            }
        })
    }

    /// Remembers an accepted group's completions (earliest server timestamp per miner).
    pub fn register_completions(
        &self,
        window: u64,
        miner: &str,
        server_ts_ms: u64,
        digests: &[Randomness],
    ) {
        self.with_window(window, |w| {
            for digest in digests {
                let ts = w
                    .completions
                    .entry(*digest)
                    .or_default()
                    .entry(miner.to_string())
                    .or_insert(server_ts_ms);
                *ts = (*ts).min(server_ts_ms);
            }
        });
    }
}
