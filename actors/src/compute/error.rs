//! The error every compute trait returns, split the way a worker pool must treat it: a job
//! error goes back to the caller and the worker keeps serving; a fault (device, model,
//! inconsistent state) drops the worker, which the pool rebuilds before retrying the job.

use policy::PolicyError;

use crate::worker_pool::{BoxError, WorkerFault};

#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// This job cannot be done as given (bad input, a refused job such as one without a
    /// checkpoint): a rebuilt worker would fail it the same way.
    #[error(transparent)]
    Job(BoxError),
    /// The worker's state is suspect (a device or model fault): rebuild it, retry the job.
    #[error(transparent)]
    Fault(BoxError),
}

impl ComputeError {
    pub fn job(e: impl Into<BoxError>) -> Self {
        ComputeError::Job(e.into())
    }

    pub fn fault(e: impl Into<BoxError>) -> Self {
        ComputeError::Fault(e.into())
    }

    /// Sorted by the error's own [`WorkerFault`] judgement.
    pub fn classify(e: impl WorkerFault) -> Self {
        if e.rebuilds_worker() {
            ComputeError::Fault(Box::new(e))
        } else {
            ComputeError::Job(Box::new(e))
        }
    }

    /// The typed cause (e.g. a [`crate::compute::model::ModelComputeError`] to downcast).
    pub fn cause(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        match self {
            ComputeError::Job(e) | ComputeError::Fault(e) => e.as_ref(),
        }
    }
}

impl WorkerFault for ComputeError {
    fn rebuilds_worker(&self) -> bool {
        matches!(self, ComputeError::Fault(_))
    }

    /// The cause itself: the wrapper is only the classification.
    fn into_boxed(self) -> BoxError {
        match self {
            ComputeError::Job(e) | ComputeError::Fault(e) => e,
        }
    }
}

/// candle failures are the device's or the model's: a fault.
impl WorkerFault for PolicyError {
    fn rebuilds_worker(&self) -> bool {
        match self {
            PolicyError::Candle(_) => true,
            PolicyError::InvalidInput(_) | PolicyError::TokenOutOfRange { .. } => false,
        }
    }
}

impl From<PolicyError> for ComputeError {
    fn from(e: PolicyError) -> Self {
        ComputeError::classify(e)
    }
}

impl From<candle_core::Error> for ComputeError {
    fn from(e: candle_core::Error) -> Self {
        ComputeError::classify(PolicyError::Candle(e))
    }
}
