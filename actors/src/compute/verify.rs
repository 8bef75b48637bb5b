//! The verifier's unit of compute: a [`VerifyJob`] in, a [`VerifyOutcome`] out, on a worker
//! thread.

use messages::{Hash32, RolloutGroup, WindowClose, WindowOpen};
use protocol::checks::unique_completions;
use protocol::randomness::completion_digest;

use crate::checkpoints::ActiveCheckpoint;
use crate::compute::ComputeError;
use crate::worker_pool::Worker;

#[derive(Clone, Debug)]
pub struct VerifyJob {
    pub group: RolloutGroup,
    pub digest: Hash32,
    pub server_ts_ms: u64,
    pub open: WindowOpen,
    pub close: WindowClose,
    /// The checkpoint valid for the group's window (None: model-free compute only).
    pub checkpoint: Option<ActiveCheckpoint>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VerifyOutcome {
    pub accepted: bool,
    /// The reject code when rejected (the verifier logs the reason's fields).
    pub reason: Option<messages::RejectCode>,
    pub deep_checked: bool,
    pub unique_rollouts: u32,
    pub learning_signal: bool,
    pub mean_reward: f32,
}

/// The compute behind a verifier (forward pass at challenged positions, re-scoring).
pub trait VerifierCompute: Send {
    fn verify(&mut self, job: &VerifyJob) -> Result<VerifyOutcome, ComputeError>;
}

pub struct VerifierWorker(pub Box<dyn VerifierCompute>);

impl Worker for VerifierWorker {
    type Job = VerifyJob;
    type Output = VerifyOutcome;
    type Error = ComputeError;
    fn run(&mut self, job: &VerifyJob) -> Result<VerifyOutcome, ComputeError> {
        self.0.verify(job)
    }
}

/// Distinct completion digests long enough to count for copy detection (§5.5).
pub fn counted_digests(group: &RolloutGroup, min_tokens: usize) -> Vec<[u8; 32]> {
    let completions: Vec<&[u32]> = group.rollouts.iter().map(|r| r.completion()).collect();
    unique_completions(&completions)
        .into_iter()
        .map(|i| completions[i])
        .filter(|c| c.len() >= min_tokens)
        .map(completion_digest)
        .collect()
}
