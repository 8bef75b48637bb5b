//! grail-actors: one module per role, plus the machinery they share.
//!
//! Each role is a [`role::RoleLoop`] (an async loop on the bus) run by the [`supervisor`]:
//! restarted with backoff when it fails, stopped (drained where it holds work) on
//! [`shutdown`]; the tasks a loop spawns are [`task::OwnedTask`]s that end with it. Compute
//! runs on [`worker_pool`] threads, never inside a loop.

pub mod bus;
pub mod bus_auth;
pub mod checkpoints;
pub mod compute;
pub mod heartbeat;
pub mod ledger;
pub mod metrics;
pub mod role;
pub mod roles;
pub mod shutdown;
pub mod supervisor;
pub mod task;
pub mod time;
pub mod trust;
pub mod windows;
pub mod worker_pool;
