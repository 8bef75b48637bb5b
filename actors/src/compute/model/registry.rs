//! What one verifier process remembers about recent windows, shared by all of its workers:
//! a [`WindowLedger`] per window (nonces, group indices, group count, completion digests with
//! their server timestamps) and the verdict per group envelope digest (a redelivered group
//! gets the same verdict).
//!
//! **Scope: one verifier instance.** This is the in-process fast path. Verifiers share one
//! durable consumer, so each instance sees only part of a window; the verifier role mirrors
//! the same ledger onto the bus (`crate::ledger::BusLedger`, KV bucket `grail_ledger`) so a
//! duplicate or copy whose counterpart went to another instance is found there.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use messages::Hash32;
pub use protocol::checks::CopyRules;
use protocol::checks::{GroupClaims, Limits, RejectReason, WindowLedger};
use protocol::randomness::Randomness;

use crate::compute::verify::VerifyOutcome;

#[derive(Default)]
struct WindowState {
    verdicts: HashMap<Hash32, VerifyOutcome>,
    ledger: WindowLedger,
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
        let copy = self.copy;
        f(state.entry(window).or_insert_with(|| WindowState {
            verdicts: HashMap::new(),
            ledger: WindowLedger::new(copy),
        }))
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

    /// Claims the group's nonce and index for its miner (a different envelope reusing either
    /// is a replay) and its rank among the miner's distinct group indices.
    pub fn claim(
        &self,
        window: u64,
        miner: &str,
        group_index: u32,
        nonce: u64,
        digest: Hash32,
        limits: &Limits,
    ) -> Result<(), RejectReason> {
        let claims = GroupClaims {
            miner,
            nonce,
            group_index,
            envelope: digest.0,
            server_ts_ms: 0,
            completions: &[],
        };
        self.with_window(window, |w| w.ledger.admit(&claims, limits))
            .map(|_| ())
            .map_err(|r| r.reason())
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
        self.with_window(window, |w| {
            w.ledger.check_copies(miner, server_ts_ms, digests)
        })
        .map_err(|r| r.reason())
    }

    /// Remembers an accepted group's completions (earliest server timestamp per digest).
    pub fn register_completions(
        &self,
        window: u64,
        miner: &str,
        server_ts_ms: u64,
        digests: &[Randomness],
    ) {
        let late = self.with_window(window, |w| w.ledger.record(miner, server_ts_ms, digests));
        for copy in late {
            tracing::warn!(window, copier = %copy.copier, original = %copy.original, shared = copy.shared, "copy found after it was judged (its original was verified later)");
        }
    }
}
