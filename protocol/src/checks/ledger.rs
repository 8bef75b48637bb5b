//! The window ledger: what a window's groups have claimed so far, applied one group at a time.
//! Nonces and group indices are first-come claims per miner (a *different* envelope reusing
//! either is a replay; the same envelope again is a redelivery and gets the same answer),
//! distinct group indices are numbered in claim order (the `max_groups_per_window + 1`-th is
//! rejected), and each completion digest remembers its earliest publisher by server time
//! (§5.5: only the later publisher is gated).
//!
//! Pure and incremental: the verifier keeps one in memory (its fast path) and mirrors every
//! step onto a bus key-value bucket with the same rules ([`claim`], [`judge_copies`],
//! [`earlier_holder`]), so verifier instances sharing a consumer share the ledger too.

use std::collections::HashMap;

use super::{Limits, RejectReason, DEFAULT_COPY_THRESHOLD};

type Digest = [u8; 32];

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

/// What one group claims in its window.
#[derive(Clone, Copy, Debug)]
pub struct GroupClaims<'a> {
    pub miner: &'a str,
    pub nonce: u64,
    pub group_index: u32,
    /// Digest of the signed envelope: tells a redelivery from a replay.
    pub envelope: Digest,
    /// The broker's timestamp of the group (never the miner's clock).
    pub server_ts_ms: u64,
    /// Distinct completion digests long enough to count ([`CopyRules::min_tokens`]).
    pub completions: &'a [Digest],
}

/// A group the ledger lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Nothing of it was claimed before.
    New,
    /// The same envelope was applied before (a redelivery): same answer as then.
    Repeat,
}

/// Why the ledger refuses a group (each maps to one hard [`RejectReason`]).
#[derive(Clone, Debug, PartialEq)]
pub enum LedgerReject {
    DuplicateNonce {
        nonce: u64,
    },
    DuplicateGroupIndex {
        group: u32,
    },
    /// The group index was the `ordinal`-th distinct one of this miner.
    TooManyGroups {
        max: u32,
        ordinal: u32,
    },
    Copied {
        original: String,
        shared: u32,
        ratio: f64,
    },
}

impl LedgerReject {
    pub fn reason(&self) -> RejectReason {
        match self {
            LedgerReject::DuplicateNonce { nonce } => {
                RejectReason::DuplicateNonce { nonce: *nonce }
            }
            LedgerReject::DuplicateGroupIndex { group } => {
                RejectReason::DuplicateGroupIndex { group: *group }
            }
            LedgerReject::TooManyGroups { max, ordinal } => RejectReason::TooManyGroups {
                max: *max,
                actual: *ordinal,
            },
            LedgerReject::Copied {
                original,
                shared,
                ratio,
            } => RejectReason::CopiedCompletions {
                original: original.clone(),
                shared: *shared,
                ratio: *ratio,
            },
        }
    }
}

/// A copy found only when its original was recorded: the copy was judged first (verifiers
/// judge groups in any order), so its verdict already stands; the verifier counts and logs
/// it, and the copier's later groups with those completions are refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LateCopy {
    pub copier: String,
    pub original: String,
    pub shared: u32,
}

/// The answer to a first-come claim of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Nobody held it: it is ours now.
    Won,
    /// We held it already (the same envelope).
    Ours,
    /// Another envelope holds it.
    Taken,
}

/// `held_before`: the envelope that held the key when `mine` tried to create it.
pub fn claim(held_before: Option<&Digest>, mine: &Digest) -> Claim {
    match held_before {
        None => Claim::Won,
        Some(d) if d == mine => Claim::Ours,
        Some(_) => Claim::Taken,
    }
}

/// Whether `candidate` (miner, server time) published a digest strictly before `holder`:
/// equal times keep the holder (no victim is ever displaced by a tie).
pub fn earlier_holder(holder: (&str, u64), candidate: (&str, u64)) -> bool {
    candidate.1 < holder.1
}

/// §5.5 for one group: `earliest[i]` is the earliest (miner, server time) known for the
/// group's `i`-th counted completion. Shared = held strictly earlier by one other miner.
pub fn judge_copies<'a>(
    miner: &str,
    server_ts_ms: u64,
    earliest: impl IntoIterator<Item = Option<(&'a str, u64)>>,
    counted: usize,
    rules: &CopyRules,
) -> Result<(), LedgerReject> {
    let mut shared: HashMap<&str, u32> = HashMap::new();
    for (holder, ts) in earliest.into_iter().flatten() {
        if holder != miner && earlier_holder((miner, server_ts_ms), (holder, ts)) {
            *shared.entry(holder).or_default() += 1;
        }
    }
    let worst = shared
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)));
    match worst {
        Some((original, count)) if counted > 0 => {
            let ratio = f64::from(count) / counted as f64;
            if count >= rules.min_shared && ratio > rules.threshold {
                return Err(LedgerReject::Copied {
                    original: original.to_string(),
                    shared: count,
                    ratio,
                });
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `ordinal`: 1-based rank of a group index among the miner's distinct ones.
pub fn check_ordinal(ordinal: u32, limits: &Limits) -> Result<(), LedgerReject> {
    if ordinal > limits.max_groups_per_window {
        return Err(LedgerReject::TooManyGroups {
            max: limits.max_groups_per_window,
            ordinal,
        });
    }
    Ok(())
}

#[derive(Clone, Debug, Default)]
struct MinerClaims {
    nonces: HashMap<u64, Digest>,
    /// group index → (envelope, ordinal).
    groups: HashMap<u32, (Digest, u32)>,
}

/// One window's ledger (see module docs).
#[derive(Clone, Debug, Default)]
pub struct WindowLedger {
    rules: CopyRules,
    miners: HashMap<String, MinerClaims>,
    /// completion digest → earliest (miner, server time) recorded.
    earliest: HashMap<Digest, (String, u64)>,
}

impl WindowLedger {
    pub fn new(rules: CopyRules) -> Self {
        Self {
            rules,
            ..Self::default()
        }
    }

    pub fn rules(&self) -> &CopyRules {
        &self.rules
    }

    /// Applies the group's nonce, group index and count claims, then judges its completions
    /// against those recorded so far. Claims are kept even when a later step refuses the group
    /// (exactly what the bus version can do), so a redelivery gets the same answer.
    pub fn admit(
        &mut self,
        g: &GroupClaims<'_>,
        limits: &Limits,
    ) -> Result<Admission, LedgerReject> {
        let m = self.miners.entry(g.miner.to_string()).or_default();
        let nonce = claim(m.nonces.get(&g.nonce), &g.envelope);
        if nonce == Claim::Taken {
            return Err(LedgerReject::DuplicateNonce { nonce: g.nonce });
        }
        m.nonces.entry(g.nonce).or_insert(g.envelope);
        let held = m.groups.get(&g.group_index).map(|(d, _)| d);
        let group = claim(held, &g.envelope);
        if group == Claim::Taken {
            return Err(LedgerReject::DuplicateGroupIndex {
                group: g.group_index,
            });
        }
        let next = u32::try_from(m.groups.len() + 1).unwrap_or(u32::MAX);
        let ordinal = m
            .groups
            .entry(g.group_index)
            .or_insert((g.envelope, next))
            .1;
        check_ordinal(ordinal, limits)?;
        self.check_copies(g.miner, g.server_ts_ms, g.completions)?;
        Ok(if (nonce, group) == (Claim::Ours, Claim::Ours) {
            Admission::Repeat
        } else {
            Admission::New
        })
    }

    /// §5.5 against the completions recorded so far (read-only).
    pub fn check_copies(
        &self,
        miner: &str,
        server_ts_ms: u64,
        completions: &[Digest],
    ) -> Result<(), LedgerReject> {
        let earliest = completions
            .iter()
            .map(|d| self.earliest.get(d).map(|(m, t)| (m.as_str(), *t)));
        judge_copies(
            miner,
            server_ts_ms,
            earliest,
            completions.len(),
            &self.rules,
        )
    }

    /// Records an accepted group's completions (earliest server time per digest wins) and
    /// returns the copies this reveals among groups recorded before (see [`LateCopy`]).
    pub fn record(
        &mut self,
        miner: &str,
        server_ts_ms: u64,
        completions: &[Digest],
    ) -> Vec<LateCopy> {
        let mut displaced: HashMap<String, u32> = HashMap::new();
        for digest in completions {
            match self.earliest.get_mut(digest) {
                None => {
                    self.earliest
                        .insert(*digest, (miner.to_string(), server_ts_ms));
                }
                Some(held) => {
                    if earlier_holder((held.0.as_str(), held.1), (miner, server_ts_ms)) {
                        if held.0 != miner {
                            *displaced.entry(held.0.clone()).or_default() += 1;
                        }
                        *held = (miner.to_string(), server_ts_ms);
                    }
                }
            }
        }
        late_copies(miner, displaced, completions.len(), &self.rules)
    }
}

/// The displaced holders that shared enough of `original`'s completions to count as copies.
pub fn late_copies(
    original: &str,
    displaced: HashMap<String, u32>,
    counted: usize,
    rules: &CopyRules,
) -> Vec<LateCopy> {
    let mut found: Vec<LateCopy> = displaced
        .into_iter()
        .filter(|(_, shared)| {
            *shared >= rules.min_shared
                && f64::from(*shared) / counted.max(1) as f64 > rules.threshold
        })
        .map(|(copier, shared)| LateCopy {
            copier,
            original: original.to_string(),
            shared,
        })
        .collect();
    found.sort_by(|a, b| a.copier.cmp(&b.copier));
    found
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
