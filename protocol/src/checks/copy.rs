//! Cross-miner copy detection: completions (by digest) that two miners both published. The broker's
//! server timestamps decide who was first; only the later publisher is gated, so a victim is never
//! punished for being copied.

use std::collections::BTreeMap;

use super::RejectReason;

/// Default gate: more than 5 % of the smaller miner's distinct completions shared.
pub const DEFAULT_COPY_THRESHOLD: f64 = 0.05;

type Miner = [u8; 32];
type Digest = [u8; 32];

/// Evidence that `copier` republished `original`'s completions.
#[derive(Clone, Debug, PartialEq)]
pub struct CopyFinding {
    pub copier: Miner,
    pub original: Miner,
    /// Distinct completions both published.
    pub shared: u32,
    /// `shared / min(distinct completions of either)`.
    pub ratio: f64,
}

impl CopyFinding {
    /// The hard reject for the copier.
    pub fn reason(&self) -> RejectReason {
        RejectReason::CopiedCompletions {
            original: self.original.iter().map(|b| format!("{b:02x}")).collect(),
            shared: self.shared,
            ratio: self.ratio,
        }
    }
}

/// Accumulates `(miner, server timestamp, completion digests)` for one window.
#[derive(Clone, Debug)]
pub struct CopyDetector {
    threshold: f64,
    /// Earliest server timestamp at which each miner published each digest.
    first_seen: BTreeMap<Miner, BTreeMap<Digest, u64>>,
}

#[derive(Default)]
struct PairTally {
    shared: u32,
    /// Shared digests the lower-keyed / higher-keyed miner published strictly later.
    low_later: u32,
    high_later: u32,
}

impl CopyDetector {
    pub fn new(threshold: f64) -> Self {
        Self {
            threshold,
            first_seen: BTreeMap::new(),
        }
    }

    /// Records one message; calls for the same miner accumulate (earliest timestamp per digest wins).
    pub fn add(&mut self, miner: Miner, server_timestamp_ms: u64, digests: &[Digest]) {
        let seen = self.first_seen.entry(miner).or_default();
        for digest in digests {
            seen.entry(*digest)
                .and_modify(|t| *t = (*t).min(server_timestamp_ms))
                .or_insert(server_timestamp_ms);
        }
    }

    /// All pairs above the threshold with a clear direction (the copier is later on more shared
    /// completions than the original; equal counts gate nobody). Deterministic order.
    pub fn findings(&self) -> Vec<CopyFinding> {
        let mut holders: BTreeMap<&Digest, Vec<(&Miner, u64)>> = BTreeMap::new();
        for (miner, digests) in &self.first_seen {
            for (digest, &time) in digests {
                holders.entry(digest).or_default().push((miner, time));
            }
        }
        let mut pairs: BTreeMap<(&Miner, &Miner), PairTally> = BTreeMap::new();
        for list in holders.values().filter(|l| l.len() > 1) {
            for (i, &(low, low_time)) in list.iter().enumerate() {
                for &(high, high_time) in &list[i + 1..] {
                    let tally = pairs.entry((low, high)).or_default();
                    tally.shared += 1;
                    tally.low_later += u32::from(low_time > high_time);
                    tally.high_later += u32::from(high_time > low_time);
                }
            }
        }
        let mut findings = Vec::new();
        for ((low, high), tally) in pairs {
            let smaller = self.first_seen[low].len().min(self.first_seen[high].len());
            let ratio = f64::from(tally.shared) / smaller as f64;
            if ratio <= self.threshold || tally.low_later == tally.high_later {
                continue;
            }
            let (copier, original) = if tally.low_later > tally.high_later {
                (low, high)
            } else {
                (high, low)
            };
            findings.push(CopyFinding {
                copier: *copier,
                original: *original,
                shared: tally.shared,
                ratio,
            });
        }
        findings
    }

    /// Miners gated for copying, sorted and deduplicated.
    pub fn gated_miners(&self) -> Vec<Miner> {
        let mut gated: Vec<Miner> = self.findings().into_iter().map(|f| f.copier).collect();
        gated.sort_unstable();
        gated.dedup();
        gated
    }
}

impl Default for CopyDetector {
    fn default() -> Self {
        Self::new(DEFAULT_COPY_THRESHOLD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests(range: std::ops::Range<u8>) -> Vec<Digest> {
        range.map(|i| [i; 32]).collect()
    }

    #[test]
    fn later_publisher_is_gated_regardless_of_insertion_order() {
        let (victim, copier) = ([1u8; 32], [2u8; 32]);
        for victim_first_in_calls in [true, false] {
            let mut detector = CopyDetector::default();
            let calls = [
                (victim, 1_000, digests(0..100)),
                (copier, 2_000, digests(0..20)),
            ];
            let order: Vec<_> = if victim_first_in_calls {
                calls.to_vec()
            } else {
                calls.iter().rev().cloned().collect()
            };
            for (miner, time, d) in order {
                detector.add(miner, time, &d);
            }
            // The copier's own 80 fresh completions do not hide the copied 20.
            detector.add(copier, 2_500, &digests(100..180));
            assert_eq!(detector.gated_miners(), vec![copier]);
            let finding = &detector.findings()[0];
            assert_eq!((finding.original, finding.shared), (victim, 20));
            assert!((finding.ratio - 0.2).abs() < 1e-12);
            assert_eq!(finding.reason().code(), "copied_completions");
        }
    }

    #[test]
    fn the_victim_is_never_gated_even_with_a_smaller_set() {
        // Tiny victim (10 completions) fully copied by a big miner later: the copier is gated.
        let mut detector = CopyDetector::default();
        detector.add([9; 32], 5, &digests(0..10));
        detector.add([3; 32], 6, &digests(0..200));
        assert_eq!(detector.gated_miners(), vec![[3; 32]]);
    }

    #[test]
    fn natural_overlap_and_ties_gate_nobody() {
        let mut detector = CopyDetector::default();
        detector.add([1; 32], 10, &digests(0..100));
        detector.add([2; 32], 20, &digests(96..196)); // 4 % overlap < 5 %
        assert!(detector.gated_miners().is_empty());
        let mut tie = CopyDetector::default();
        tie.add([1; 32], 10, &digests(0..50));
        tie.add([2; 32], 10, &digests(0..50));
        assert!(tie.gated_miners().is_empty());
    }

    #[test]
    fn earliest_timestamp_per_digest_counts() {
        let mut detector = CopyDetector::default();
        detector.add([1; 32], 100, &digests(0..10));
        detector.add([2; 32], 50, &digests(0..10)); // miner 2 published first
        detector.add([1; 32], 10, &digests(50..60)); // unrelated earlier message of miner 1
        assert_eq!(detector.gated_miners(), vec![[1; 32]]);
    }
}
