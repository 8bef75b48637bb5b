//! A loaded, verified checkpoint as roles and compute workers share it.

use std::fmt;
use std::sync::Arc;

use messages::{Hash32, SamplingSpec};
use policy::checkpoint::WeightSet;

/// A full weight set shared read-only between roles and workers (CPU tensors by HF name).
#[derive(Clone)]
pub struct SharedWeights(pub Arc<WeightSet>);

impl fmt::Debug for SharedWeights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedWeights({} tensors)", self.0.len())
    }
}

/// A checkpoint whose object digest, weight digest and publisher signature were verified
/// and whose weights were reconstructed (full, or anchor + deltas).
#[derive(Clone, Debug)]
pub struct ActiveCheckpoint {
    /// Canonical weight digest (`policy::checkpoint` digest), what groups name.
    pub digest: Hash32,
    pub seq: u64,
    pub valid_from_window: u64,
    /// The sampling parameters published with the checkpoint (miners sample with them,
    /// verifiers replay them).
    pub sampling: SamplingSpec,
    pub weights: SharedWeights,
}
