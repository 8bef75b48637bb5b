//! The miner's unit of compute: a [`MineJob`] in, a [`RolloutGroup`] out, on a worker thread.

use messages::{Hash32, RolloutGroup};

use crate::checkpoints::ActiveCheckpoint;
use crate::compute::ComputeError;
use crate::worker_pool::Worker;

/// Everything a compute worker needs to mine one group.
#[derive(Clone, Debug)]
pub struct MineJob {
    pub window: u64,
    pub open_randomness: [u8; 32],
    pub deadline_ms: u64,
    pub group_index: u32,
    pub miner: String,
    pub miner_pubkey: [u8; 32],
    /// The checkpoint valid for `window` (None: no checkpoint announced yet; model-free
    /// compute ignores it, model compute refuses the job).
    pub checkpoint: Option<ActiveCheckpoint>,
}

/// The compute behind a miner (model generation + proofs). Runs on a worker thread.
pub trait MinerCompute: Send {
    /// Produce the (unsigned) group for `job`.
    fn mine(&mut self, job: &MineJob) -> Result<RolloutGroup, ComputeError>;
    /// The groups for `jobs`, in order (`[miner] batch_groups` at a time). One at a time by
    /// default; model compute decodes them in one batch, so each weight read serves all rows.
    fn mine_batch(&mut self, jobs: &[MineJob]) -> Result<Vec<RolloutGroup>, ComputeError> {
        jobs.iter().map(|job| self.mine(job)).collect()
    }
    /// Digest of the checkpoint currently loaded (for logs).
    fn checkpoint(&self) -> Hash32;
}

pub struct MinerWorker(pub Box<dyn MinerCompute>);

/// A worker's job is a batch of groups of one window (usually one group).
impl Worker for MinerWorker {
    type Job = Vec<MineJob>;
    type Output = Vec<RolloutGroup>;
    type Error = ComputeError;
    fn run(&mut self, jobs: &Vec<MineJob>) -> Result<Vec<RolloutGroup>, ComputeError> {
        self.0.mine_batch(jobs)
    }
}
