//! Compute behind the roles, run on worker threads (never inside an actor).
//!
//! * [`mine`], [`verify`], [`train`]: each role's unit of compute (job, outcome, the trait
//!   a compute implements, its worker); the roles hand jobs to worker pools and never the
//!   other way round (`compute` imports nothing from `roles`).
//! * [`error`]: [`ComputeError`], what every compute trait returns: a job error goes back to
//!   the caller, a fault (device, model) rebuilds the worker.
//! * [`structural`]: model-free mining and verification that exercises the whole wire
//!   protocol (problem seeds, group shape, GRPO advantages, deadlines) without a model.
//!   It is what the transport tests and `compute = "structural"` clusters run.
//!
//! Jobs carry the [`ActiveCheckpoint`] valid for their window: the role (async, IO) fetches,
//! verifies and reconstructs checkpoints; the compute (a worker thread) only swaps weights
//! when the digest changes.

pub mod error;
pub mod mine;
pub mod model;
pub mod structural;
pub mod train;
pub mod trainer;
pub mod verify;

pub use error::ComputeError;

// Checkpoint types live with the checkpoints (below compute); jobs carry them.
pub use crate::checkpoints::{ActiveCheckpoint, SharedWeights};
