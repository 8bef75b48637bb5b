//! The trainer's unit of compute: a [`TrainJob`] (one window's verified groups) in, a
//! [`TrainReport`] out, on a worker thread.

use messages::RolloutGroup;

use crate::checkpoints::{ActiveCheckpoint, SharedWeights};
use crate::compute::ComputeError;
use crate::worker_pool::Worker;

/// A batch of verified groups from one window.
#[derive(Clone, Debug)]
pub struct TrainJob {
    pub window: u64,
    pub groups: Vec<RolloutGroup>,
    /// The latest published checkpoint: the trainer (re)starts from it when its own
    /// weights are not a descendant of it (first job, or after a crash).
    pub base: Option<ActiveCheckpoint>,
}

impl TrainJob {
    /// Mean reward over every rollout of the job's groups (0 for none).
    pub fn mean_reward(&self) -> f32 {
        let (sum, n) = self
            .groups
            .iter()
            .flat_map(|g| g.rollouts.iter().map(|r| r.reward))
            .fold((0.0f32, 0usize), |(s, n), r| (s + r, n + 1));
        sum / n.max(1) as f32
    }
}

#[derive(Clone, Debug, Default)]
pub struct TrainReport {
    pub steps: u32,
    pub loss: f32,
    pub kl: f32,
    pub grad_norm: f32,
    pub mean_reward: f32,
    /// The weights after this job's steps (None: nothing was trained).
    pub weights: Option<SharedWeights>,
    /// Digest of the checkpoint the trained weights descend from.
    pub trained_from: Option<messages::Hash32>,
}

pub trait TrainerCompute: Send {
    fn train(&mut self, job: &TrainJob) -> Result<TrainReport, ComputeError>;
}

pub struct TrainerWorker(pub Box<dyn TrainerCompute>);

impl Worker for TrainerWorker {
    type Job = TrainJob;
    type Output = TrainReport;
    type Error = ComputeError;
    fn run(&mut self, job: &TrainJob) -> Result<TrainReport, ComputeError> {
        self.0.train(job)
    }
}

/// Counts groups and reports their mean reward: the trainer without a model.
pub struct CountingTrainer;

impl TrainerCompute for CountingTrainer {
    fn train(&mut self, job: &TrainJob) -> Result<TrainReport, ComputeError> {
        Ok(TrainReport {
            mean_reward: job.mean_reward(),
            ..Default::default()
        })
    }
}
