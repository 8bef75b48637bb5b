//! Compute behind the roles, run on worker threads (never inside an actor).
//!
//! * [`structural`]: model-free mining and verification that exercises the whole wire
//!   protocol (problem seeds, group shape, GRPO advantages, deadlines) without a model.
//!   It is what the transport tests and `compute = "structural"` clusters run.

pub mod structural;
