//! Protocol randomness: a domain-separated PRF, the clock's hash chain, per-window OPEN/CLOSE values
//! and everything derived from them (problem seeds, sampling keys, challenged positions, deep-check
//! selection). Byte layouts are specified in `docs/PROTOCOL.md` §2 and frozen by test vectors.

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};

type Blake2b256 = Blake2b<U32>;

/// 32 bytes of protocol randomness (a PRF output or a chain value).
pub type Randomness = [u8; 32];

/// Domain tags. Every PRF call in the protocol uses exactly one of these.
pub mod domain {
    pub const CHAIN_SEED: &str = "grail/v1/chain-seed";
    pub const CHAIN_STEP: &str = "grail/v1/chain-step";
    pub const OPEN: &str = "grail/v1/open";
    pub const CLOSE: &str = "grail/v1/close";
    pub const PROBLEM_SEED: &str = "grail/v1/problem-seed";
    pub const SAMPLING_KEY: &str = "grail/v1/sampling-key";
    pub const CHALLENGE: &str = "grail/v1/challenge";
    pub const STREAM: &str = "grail/v1/stream";
    pub const DEEP_CHECK: &str = "grail/v1/deep-check";
    pub const CHECKED_ROLLOUTS: &str = "grail/v1/checked-rollouts";
    pub const SKETCH_COEFFICIENTS: &str = "grail/v1/sketch-coefficients";
    pub const COMPLETION_DIGEST: &str = "grail/v1/completion-digest";
}

/// `BLAKE2b-256(le64(|domain|) ‖ domain ‖ le64(|p1|) ‖ p1 ‖ … ‖ le64(|pn|) ‖ pn)`.
///
/// BLAKE2b with a 32-byte digest length in the parameter block (not a truncated BLAKE2b-512), no key,
/// salt or personalisation. Every field is length-prefixed, so distinct part lists never collide.
pub fn prf(domain: &str, parts: &[&[u8]]) -> Randomness {
    let mut hasher = Blake2b256::new();
    hasher.update((domain.len() as u64).to_le_bytes());
    hasher.update(domain.as_bytes());
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// The clock's hash chain. `x[len] = prf(CHAIN_SEED, [seed])`, `x[i-1] = prf(CHAIN_STEP, [le64(i), x[i]])`.
/// `x[0]` is the anchor published in advance; `x[1], x[2], …` are revealed in that order, one per window,
/// so each revealed value is checkable against the anchor (or the previous reveal) and nobody, the
/// clock included, can change a future value once the anchor is out.
#[derive(Clone)]
pub struct HashChain {
    /// `values[i] = x[i]` for `i` in `0..=len`.
    values: Vec<Randomness>,
}

impl std::fmt::Debug for HashChain {
    // Never print chain values: they are the clock's future secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashChain")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// One step down the chain: `x[index-1]` from `x[index]`.
pub fn chain_step(index: u64, value: &Randomness) -> Randomness {
    prf(domain::CHAIN_STEP, &[&index.to_le_bytes(), value])
}

impl HashChain {
    /// Builds the whole chain (`len` hashes). `len` is the number of revealable values.
    pub fn new(seed: Randomness, len: u64) -> Self {
        let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
        let mut values = vec![[0u8; 32]; len_usize.saturating_add(1)];
        values[len_usize] = prf(domain::CHAIN_SEED, &[&seed]);
        for index in (1..=len_usize).rev() {
            values[index - 1] = chain_step(index as u64, &values[index]);
        }
        Self { values }
    }

    /// Number of revealable values (`x[1]..=x[len]`).
    pub fn len(&self) -> u64 {
        (self.values.len() - 1) as u64
    }

    /// Whether the chain has no revealable value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `x[0]`, the commitment published before any window.
    pub fn anchor(&self) -> Randomness {
        self.values[0]
    }

    /// `x[index]` for `1 <= index <= len`; `None` outside the chain.
    pub fn value(&self, index: u64) -> Option<Randomness> {
        if index == 0 {
            return None;
        }
        usize::try_from(index)
            .ok()
            .and_then(|i| self.values.get(i).copied())
    }
}

/// Whether `value` is `x[index]` of the chain committed to by `anchor` (`index` hashes; `index >= 1`).
pub fn verify_reveal(anchor: &Randomness, index: u64, value: &Randomness) -> bool {
    index >= 1 && verify_against_previous(0, anchor, index, value)
}

/// Whether `value` is `x[index]` given an already-trusted `x[previous_index]` (`index - previous_index`
/// hashes, one in the usual case of consecutive windows).
pub fn verify_against_previous(
    previous_index: u64,
    previous_value: &Randomness,
    index: u64,
    value: &Randomness,
) -> bool {
    if index <= previous_index {
        return false;
    }
    let mut current = *value;
    for step in ((previous_index + 1)..=index).rev() {
        current = chain_step(step, &current);
    }
    current == *previous_value
}

/// OPEN randomness of window `window` (= chain index): `prf(OPEN, [le64(window), x[window]])`.
/// Known from the window's start; drives problem seeds, sampling keys and sketch coefficients.
pub fn open_randomness(window: u64, chain_value: &Randomness) -> Randomness {
    prf(domain::OPEN, &[&window.to_le_bytes(), chain_value])
}

/// CLOSE randomness of window `window`: `prf(CLOSE, [le64(window), x[window+1]])`. It only exists once
/// the clock reveals the NEXT chain value, which it does after window `window`'s submission deadline;
/// it drives challenged positions and deep-check selection.
pub fn close_randomness(window: u64, next_chain_value: &Randomness) -> Randomness {
    prf(domain::CLOSE, &[&window.to_le_bytes(), next_chain_value])
}

/// Environment seed for `(miner, group_index)` in a window: first 8 bytes (LE) of
/// `prf(PROBLEM_SEED, [open, miner_pubkey, le32(group_index)])`.
pub fn problem_seed(open: &Randomness, miner_pubkey: &[u8; 32], group_index: u32) -> u64 {
    let digest = prf(
        domain::PROBLEM_SEED,
        &[open, miner_pubkey, &group_index.to_le_bytes()],
    );
    le_u64(&digest[..8])
}

/// Gumbel-noise key of one generation step: `prf(SAMPLING_KEY, [open, miner, le32(group),
/// le32(rollout), le32(step)])`, where `step` is the completion-relative index (0 = first generated token).
pub fn sampling_key(
    open: &Randomness,
    miner_pubkey: &[u8; 32],
    group_index: u32,
    rollout_index: u32,
    step: u32,
) -> Randomness {
    prf(
        domain::SAMPLING_KEY,
        &[
            open,
            miner_pubkey,
            &group_index.to_le_bytes(),
            &rollout_index.to_le_bytes(),
            &step.to_le_bytes(),
        ],
    )
}

/// Deterministic stream of u64 words: block `b` is `prf(STREAM, [seed, le64(b)])` read as four LE u64.
pub struct PrfStream {
    seed: Randomness,
    block_index: u64,
    block: [u64; 4],
    used: usize,
}

impl PrfStream {
    pub fn new(seed: Randomness) -> Self {
        Self {
            seed,
            block_index: 0,
            block: [0; 4],
            used: 4,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        if self.used == 4 {
            let bytes = prf(
                domain::STREAM,
                &[&self.seed, &self.block_index.to_le_bytes()],
            );
            for (word, chunk) in self.block.iter_mut().zip(bytes.chunks_exact(8)) {
                *word = le_u64(chunk);
            }
            self.block_index += 1;
            self.used = 0;
        }
        let word = self.block[self.used];
        self.used += 1;
        word
    }

    /// Unbiased integer in `0..bound` (`bound >= 1`): rejects words `>= 2^64 - (2^64 mod bound)`.
    pub fn below(&mut self, bound: u64) -> u64 {
        debug_assert!(bound >= 1);
        let bound = bound.max(1);
        let rejected_tail = (u64::MAX % bound + 1) % bound; // 2^64 mod bound
        loop {
            let word = self.next_u64();
            if word <= u64::MAX - rejected_tail {
                return word % bound;
            }
        }
    }
}

/// Completion-relative positions challenged in one rollout, sorted ascending.
///
/// The final position `len - 1` is always included (it carries EOS or the length cut-off); the other
/// `min(k, len) - 1` positions are distinct uniform draws from `0..len-1` using
/// `PrfStream(prf(CHALLENGE, [close, miner, le32(group), le32(rollout)]))`: draw `below(len - 1)`,
/// redraw on duplicates. A completion with `len <= k` is checked at every position.
pub fn challenged_positions(
    close: &Randomness,
    miner_pubkey: &[u8; 32],
    group_index: u32,
    rollout_index: u32,
    completion_len: u32,
    k: u32,
) -> Vec<u32> {
    if completion_len == 0 || k == 0 {
        return Vec::new();
    }
    if completion_len <= k {
        return (0..completion_len).collect();
    }
    let seed = prf(
        domain::CHALLENGE,
        &[
            close,
            miner_pubkey,
            &group_index.to_le_bytes(),
            &rollout_index.to_le_bytes(),
        ],
    );
    let mut stream = PrfStream::new(seed);
    let mut chosen: Vec<u32> = Vec::with_capacity(k as usize);
    while chosen.len() + 1 < k as usize {
        let candidate = stream.below(u64::from(completion_len - 1)) as u32;
        if !chosen.contains(&candidate) {
            chosen.push(candidate);
        }
    }
    chosen.sort_unstable();
    chosen.push(completion_len - 1);
    chosen
}

/// Parts-per-million denominator of the deep-check rate.
pub const PPM: u64 = 1_000_000;

/// The deep-check draw of one group: `le64(prf(DEEP_CHECK, [close, miner, le32(group)])[..8]) mod 10^6`.
pub fn deep_check_draw(close: &Randomness, miner_pubkey: &[u8; 32], group_index: u32) -> u32 {
    let digest = prf(
        domain::DEEP_CHECK,
        &[close, miner_pubkey, &group_index.to_le_bytes()],
    );
    (le_u64(&digest[..8]) % PPM) as u32
}

/// The rollouts of a deep-checked group whose forward pass the verifier recomputes: a
/// uniformly random `k`-subset of `0..n` drawn from the close randomness (unknown until every
/// group of the window is in), sorted. `k == 0` or `k ≥ n`: all of them. A group with `m`
/// forged rollouts escapes with probability `C(n−m, k) / C(n, k)` (PROTOCOL.md §2.7).
pub fn checked_rollouts(
    close: &Randomness,
    miner_pubkey: &[u8; 32],
    group_index: u32,
    n: u32,
    k: u32,
) -> Vec<u32> {
    if k == 0 || k >= n {
        return (0..n).collect();
    }
    let seed = prf(
        domain::CHECKED_ROLLOUTS,
        &[close, miner_pubkey, &group_index.to_le_bytes()],
    );
    let mut stream = PrfStream::new(seed);
    // The first k steps of a Fisher–Yates shuffle: every k-subset equally likely.
    let mut order: Vec<u32> = (0..n).collect();
    for i in 0..k as usize {
        let j = i + stream.below((order.len() - i) as u64) as usize;
        order.swap(i, j);
    }
    order.truncate(k as usize);
    order.sort_unstable();
    order
}

/// The probability that a group with `forged` of its `n` rollouts forged passes a deep check
/// that recomputes `k` of them: `C(n−forged, k) / C(n, k)`.
pub fn subset_escape_probability(n: u32, k: u32, forged: u32) -> f64 {
    let k = if k == 0 { n } else { k.min(n) };
    let forged = forged.min(n);
    // Π_{i<k} (n − forged − i) / (n − i): draw the k checked rollouts one at a time.
    (0..k).fold(1.0, |p, i| {
        let honest_left = f64::from(n - forged) - f64::from(i);
        p * (honest_left.max(0.0) / (f64::from(n) - f64::from(i)))
    })
}

/// Groups that get the expensive forward-pass checks: every group whose draw is `< rate_ppm`, topped up
/// to `min_groups` (when the miner has that many) with the smallest `(draw, group_index)`. Sorted.
pub fn select_deep_checks(
    close: &Randomness,
    miner_pubkey: &[u8; 32],
    group_indices: &[u32],
    rate_ppm: u32,
    min_groups: usize,
) -> Vec<u32> {
    let mut ranked: Vec<(u32, u32)> = group_indices
        .iter()
        .map(|&group| (deep_check_draw(close, miner_pubkey, group), group))
        .collect();
    ranked.sort_unstable();
    ranked.dedup_by_key(|&mut (_, group)| group);
    let by_rate = ranked.iter().filter(|&&(draw, _)| draw < rate_ppm).count();
    let take = by_rate.max(min_groups.min(ranked.len()));
    let mut selected: Vec<u32> = ranked[..take].iter().map(|&(_, group)| group).collect();
    selected.sort_unstable();
    selected
}

/// `prf(COMPLETION_DIGEST, [le32(t0) ‖ le32(t1) ‖ …])`: identity of a completion for duplicate and
/// copy detection.
pub fn completion_digest(completion: &[u32]) -> Randomness {
    let bytes: Vec<u8> = completion.iter().flat_map(|t| t.to_le_bytes()).collect();
    prf(domain::COMPLETION_DIGEST, &[&bytes])
}

pub(crate) fn le_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prf_separates_domains_and_part_boundaries() {
        let base = prf("d", &[b"ab", b"c"]);
        assert_ne!(base, prf("d", &[b"a", b"bc"]));
        assert_ne!(base, prf("d", &[b"abc"]));
        assert_ne!(base, prf("e", &[b"ab", b"c"]));
        assert_ne!(prf("d", &[]), prf("d", &[b""]));
        assert_eq!(base, prf("d", &[b"ab", b"c"]));
    }

    #[test]
    fn chain_reveals_verify_against_anchor_and_previous() {
        let chain = HashChain::new([7; 32], 20);
        assert_eq!(chain.len(), 20);
        let anchor = chain.anchor();
        for index in 1..=20 {
            let value = chain.value(index).unwrap();
            assert!(verify_reveal(&anchor, index, &value));
            assert!(!verify_reveal(&anchor, index + 1, &value));
            let previous = if index == 1 {
                anchor
            } else {
                chain.value(index - 1).unwrap()
            };
            assert!(verify_against_previous(index - 1, &previous, index, &value));
        }
        assert!(chain.value(0).is_none() && chain.value(21).is_none());
        assert!(!verify_reveal(&anchor, 0, &anchor));
        let mut forged = chain.value(5).unwrap();
        forged[0] ^= 1;
        assert!(!verify_reveal(&anchor, 5, &forged));
    }

    #[test]
    fn open_and_close_differ_and_close_needs_next_value() {
        let chain = HashChain::new([1; 32], 4);
        let x2 = chain.value(2).unwrap();
        let x3 = chain.value(3).unwrap();
        assert_ne!(open_randomness(2, &x2), close_randomness(2, &x2));
        assert_ne!(close_randomness(2, &x3), open_randomness(3, &x3));
    }

    #[test]
    fn checked_rollouts_are_a_fair_distinct_sorted_subset() {
        let (close, miner) = ([3; 32], [4; 32]);
        assert_eq!(
            checked_rollouts(&close, &miner, 0, 16, 0),
            (0..16).collect::<Vec<_>>()
        );
        assert_eq!(
            checked_rollouts(&close, &miner, 0, 16, 16),
            (0..16).collect::<Vec<_>>()
        );
        assert_eq!(checked_rollouts(&close, &miner, 0, 4, 9), vec![0, 1, 2, 3]);
        let mut hits = [0u32; 16];
        for group in 0..4000 {
            let subset = checked_rollouts(&close, &miner, group, 16, 4);
            assert_eq!(subset.len(), 4);
            assert!(subset.windows(2).all(|w| w[0] < w[1]) && subset[3] < 16);
            for r in subset {
                hits[r as usize] += 1;
            }
        }
        // 4000 groups × 4/16 = 1000 expected per rollout; a biased draw misses by far more.
        assert!(hits.iter().all(|&h| (900..1100).contains(&h)), "{hits:?}");
        // Bound to the close randomness and the miner: another close or key, another subset.
        let a = checked_rollouts(&close, &miner, 7, 16, 4);
        assert_ne!(a, checked_rollouts(&[9; 32], &miner, 7, 16, 4));
        assert_ne!(a, checked_rollouts(&close, &[8; 32], 7, 16, 4));
    }

    #[test]
    fn the_escape_probability_is_the_hypergeometric_tail() {
        assert_eq!(subset_escape_probability(16, 16, 1), 0.0);
        assert_eq!(
            subset_escape_probability(16, 0, 1),
            0.0,
            "0 = every rollout"
        );
        assert_eq!(subset_escape_probability(16, 8, 0), 1.0);
        assert!((subset_escape_probability(16, 8, 1) - 0.5).abs() < 1e-12);
        assert!((subset_escape_probability(16, 4, 1) - 0.75).abs() < 1e-12);
        // C(12,4)/C(16,4) = 495/1820.
        assert!((subset_escape_probability(16, 4, 4) - 495.0 / 1820.0).abs() < 1e-12);
        assert_eq!(
            subset_escape_probability(16, 8, 9),
            0.0,
            "more forged than unchecked"
        );
    }

    #[test]
    fn challenged_positions_are_distinct_sorted_and_include_the_end() {
        let close = [3; 32];
        let miner = [4; 32];
        for len in [1u32, 2, 5, 31, 32, 33, 40, 100, 5000] {
            let positions = challenged_positions(&close, &miner, 1, 2, len, 32);
            assert_eq!(positions.len(), len.min(32) as usize);
            assert!(positions.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(*positions.last().unwrap(), len - 1);
        }
        assert!(challenged_positions(&close, &miner, 1, 2, 0, 32).is_empty());
        let a = challenged_positions(&close, &miner, 1, 2, 1000, 32);
        let b = challenged_positions(&close, &miner, 1, 3, 1000, 32);
        assert_ne!(a, b);
    }

    #[test]
    fn challenged_positions_cover_the_range_uniformly() {
        let close = [9; 32];
        let miner = [2; 32];
        let mut hits = [0u32; 10];
        for rollout in 0..2000 {
            for p in challenged_positions(&close, &miner, 0, rollout, 101, 11) {
                if p < 100 {
                    hits[(p / 10) as usize] += 1;
                }
            }
        }
        // 2000 rollouts x 10 random positions over 10 deciles: expect 2000 per decile.
        assert!(hits.iter().all(|&h| (1800..2200).contains(&h)), "{hits:?}");
    }

    #[test]
    fn below_is_in_range() {
        let mut stream = PrfStream::new([5; 32]);
        for bound in [1u64, 2, 3, 7, 1 << 40, u64::MAX] {
            for _ in 0..50 {
                assert!(stream.below(bound) < bound);
            }
        }
    }

    #[test]
    fn deep_check_rate_and_minimum() {
        let close = [8; 32];
        let miner = [6; 32];
        let groups: Vec<u32> = (0..20_000).collect();
        let picked = select_deep_checks(&close, &miner, &groups, 50_000, 0);
        let rate = picked.len() as f64 / groups.len() as f64;
        assert!((rate - 0.05).abs() < 0.01, "{rate}");
        let few = select_deep_checks(&close, &miner, &[1, 2, 3], 0, 2);
        assert_eq!(few.len(), 2);
        assert_eq!(
            select_deep_checks(&close, &miner, &[1, 2, 3], 1_000_000, 0),
            vec![1, 2, 3]
        );
        assert_eq!(select_deep_checks(&close, &miner, &[4, 4], 0, 5), vec![4]);
        assert_eq!(few, select_deep_checks(&close, &miner, &[3, 1, 2], 0, 2));
    }

    #[test]
    fn seeds_and_keys_depend_on_every_input() {
        let open = [1; 32];
        let miner = [2; 32];
        let seed = problem_seed(&open, &miner, 0);
        assert_ne!(seed, problem_seed(&open, &miner, 1));
        assert_ne!(seed, problem_seed(&open, &[3; 32], 0));
        assert_ne!(seed, problem_seed(&[0; 32], &miner, 0));
        let key = sampling_key(&open, &miner, 0, 0, 0);
        assert_ne!(key, sampling_key(&open, &miner, 0, 0, 1));
        assert_ne!(key, sampling_key(&open, &miner, 0, 1, 0));
        assert_ne!(key, sampling_key(&open, &miner, 1, 0, 0));
        assert_ne!(completion_digest(&[1, 2]), completion_digest(&[2, 1]));
        assert_ne!(completion_digest(&[]), completion_digest(&[0]));
    }
}
