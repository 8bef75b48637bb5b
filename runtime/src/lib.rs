//! grail-runtime: the `grail` binary's library half — CLI plumbing, cluster.toml, NATS wiring,
//! the embedded nats-server and the /metrics endpoint. Integration tests use it directly.

pub mod auth;
pub mod cluster;
pub mod compute;
pub mod config;
pub mod datasets;
pub mod eval;
pub mod export;
pub mod join;
pub mod keys;
pub mod metrics_server;
pub mod nats_server;
pub mod network;
pub mod process;
pub mod progress;
pub mod published;
pub mod streams;
pub mod up;
