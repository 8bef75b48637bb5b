//! Synthetic hidden states and logits for tests, property checks, calibration and benchmarks.
//! They imitate the shapes that matter (post-RMSNorm rows with a few massive-activation dimensions;
//! LM logits with a peaked head and a long tail) but are not model outputs: model-backed calibration
//! replaces these numbers (`docs/PROTOCOL.md`, "Calibration").

use crate::rng::SplitMix64;

/// A fake "model": per-dimension output scales (like an RMSNorm weight) and a few massive dimensions.
#[derive(Clone, Debug)]
pub struct SyntheticModel {
    pub scales: Vec<f32>,
    pub massive: Vec<(usize, f32)>,
}

impl SyntheticModel {
    /// Scales are log-normal around 1.5 (σ = 0.5 in log space); 3 massive dimensions with magnitudes
    /// 40–400, the pattern seen in Qwen/Llama last-layer states.
    pub fn new(hidden_dim: usize, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let scales = (0..hidden_dim)
            .map(|_| (1.5 * (0.5 * rng.normal()).exp()) as f32)
            .collect();
        let massive = (0..3.min(hidden_dim))
            .map(|i| {
                (
                    rng.below(hidden_dim as u64) as usize,
                    [400.0, 120.0, 40.0][i],
                )
            })
            .collect();
        Self { scales, massive }
    }

    pub fn hidden_dim(&self) -> usize {
        self.scales.len()
    }

    /// One hidden row: `scale_j · N(0,1)`, massive dimensions at `±magnitude · (1 + 0.1·N(0,1))`.
    pub fn hidden_state(&self, rng: &mut SplitMix64) -> Vec<f32> {
        let mut row: Vec<f32> = self
            .scales
            .iter()
            .map(|&s| s * rng.normal() as f32)
            .collect();
        for &(dim, magnitude) in &self.massive {
            row[dim] = magnitude * (1.0 + 0.1 * rng.normal() as f32);
        }
        row
    }
}

/// Multiplies every entry by `1 + relative · N(0,1)`: thread-count/batch-shape float drift.
pub fn perturb(row: &[f32], relative: f64, rng: &mut SplitMix64) -> Vec<f32> {
    row.iter()
        .map(|&x| (f64::from(x) * (1.0 + relative * rng.normal())) as f32)
        .collect()
}

/// Adds `N(0, absolute²)` to every entry: logit drift between miner and verifier.
pub fn jitter(row: &[f32], absolute: f64, rng: &mut SplitMix64) -> Vec<f32> {
    row.iter()
        .map(|&x| (f64::from(x) + absolute * rng.normal()) as f32)
        .collect()
}

/// LM-like logits: a Gaussian background (σ = 2) plus `head` boosted tokens with random boosts up to
/// `peak` nats, so entropy ranges from near-deterministic to flat.
pub fn lm_logits(rng: &mut SplitMix64, vocab: usize, head: usize, peak: f64) -> Vec<f32> {
    let mut logits: Vec<f32> = (0..vocab).map(|_| (2.0 * rng.normal()) as f32).collect();
    for _ in 0..head {
        let token = rng.below(vocab as u64) as usize;
        logits[token] += (peak * rng.next_f64()) as f32;
    }
    logits
}
