//! Deterministic, platform-independent randomness for problem generation.
//!
//! SplitMix64 (Steele, Lea, Flood 2014) is tiny, fully specified and passes BigCrush; it is all
//! problem generation needs. Keyed by `(environment salt, seed)` so the same seed gives
//! independent streams in different environments.

/// SplitMix64 generator.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// A generator for `seed` in the stream named `salt` (e.g. the environment id).
    pub fn keyed(salt: &str, seed: u64) -> SplitMix64 {
        // FNV-1a over the salt, then one SplitMix step to decorrelate nearby seeds.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in salt.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        let mut mixer = SplitMix64::new(hash);
        SplitMix64::new(mixer.next_u64() ^ seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` without modulo bias (rejection sampling); `bound` must be > 0.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "SplitMix64::below needs a positive bound");
        let zone = u64::MAX - (u64::MAX % bound);
        loop {
            let value = self.next_u64();
            if value < zone {
                return value % bound;
            }
        }
    }

    /// Uniform in `low..=high`.
    pub fn range_inclusive(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "SplitMix64::range_inclusive needs low <= high");
        match (high - low).checked_add(1) {
            Some(span) => low + self.below(span),
            None => self.next_u64(),
        }
    }

    pub fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }

    /// `count` distinct values from `0..n`, in random order (partial Fisher-Yates).
    pub fn distinct(&mut self, n: u64, count: usize) -> Vec<u64> {
        let mut pool: Vec<u64> = (0..n).collect();
        let count = count.min(pool.len());
        for index in 0..count {
            let pick = index + self.below((pool.len() - index) as u64) as usize;
            pool.swap(index, pick);
        }
        pool.truncate(count);
        pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_splitmix64_sequence() {
        // Reference values of SplitMix64 seeded with 1234567 (from the published C code).
        let mut rng = SplitMix64::new(1_234_567);
        let expected = [
            6_457_827_717_110_365_317u64,
            3_203_168_211_198_807_973,
            9_817_491_932_198_370_423,
            4_593_380_528_125_082_431,
            16_408_922_859_458_223_821,
        ];
        for value in expected {
            assert_eq!(rng.next_u64(), value);
        }
    }

    #[test]
    fn bounded_draws_stay_in_range_and_cover_it() {
        let mut rng = SplitMix64::keyed("test", 7);
        let mut seen = [false; 6];
        for _ in 0..1000 {
            let value = rng.range_inclusive(3, 8);
            assert!((3..=8).contains(&value));
            seen[(value - 3) as usize] = true;
        }
        assert!(seen.iter().all(|hit| *hit));
        let picks = rng.distinct(10, 3);
        assert_eq!(picks.len(), 3);
        assert!(picks[0] != picks[1] && picks[1] != picks[2] && picks[0] != picks[2]);
    }

    #[test]
    fn salts_give_different_streams() {
        assert_ne!(
            SplitMix64::keyed("a", 1).next_u64(),
            SplitMix64::keyed("b", 1).next_u64()
        );
    }
}
