//! The evaluator role's worker: builds the model for a checkpoint and runs the fixed held-out
//! [`EvalPlan`] on it ([`super::evaluate`]).

use std::sync::Arc;

use envs::Environment;

use super::evaluate::{evaluate, EvalPlan, Evaluation};
use super::{LoadedCheckpoint, ModelBase, ModelComputeError};
use crate::compute::ActiveCheckpoint;
use crate::worker_pool::Worker;

/// One evaluator worker thread (it owns the model it last built).
pub struct ModelEvaluator {
    base: Arc<ModelBase>,
    env: Arc<dyn Environment>,
    plan: EvalPlan,
    loaded: LoadedCheckpoint,
}

impl ModelEvaluator {
    pub fn new(base: Arc<ModelBase>, env: Arc<dyn Environment>, plan: EvalPlan) -> Self {
        Self {
            base,
            env,
            plan,
            loaded: LoadedCheckpoint::default(),
        }
    }
}

impl Worker for ModelEvaluator {
    type Job = ActiveCheckpoint;
    type Output = Evaluation;
    type Error = ModelComputeError;

    fn run(&mut self, checkpoint: &ActiveCheckpoint) -> Result<Evaluation, ModelComputeError> {
        let model = self.loaded.ensure(&self.base, checkpoint)?;
        evaluate(
            &self.base,
            model,
            self.env.as_ref(),
            &self.plan,
            &mut |_| {},
        )
    }
}
