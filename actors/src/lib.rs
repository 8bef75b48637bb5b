//! grail-actors: one module per role, plus the machinery they share.
//!
//! Roles are actix actors; their compute runs on [`worker_pool`] threads, never inside an
//! async actor. Each role actor is started under an actix `Supervisor` (restarted when it
//! stops), and the [`supervisor`] module ties roles into one tree per process.

pub mod bus;
pub mod bus_auth;
pub mod checkpoints;
pub mod compute;
pub mod metrics;
pub mod role;
pub mod roles;
pub mod trust;
pub mod windows;
pub mod worker_pool;
