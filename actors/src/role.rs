//! What a role is: a [`RoleCtx`] (bus, signing identity, names) and a [`RoleLoop`], its
//! long-running async loop. [`crate::supervisor`] runs loops, restarts failed ones with backoff
//! and stops them on shutdown. Compute never runs in a loop: roles hand it to a
//! [`crate::worker_pool::WorkerPool`].

use std::future::Future;
use std::pin::Pin;

use messages::Identity;

use crate::bus::Bus;
use crate::shutdown::ShutdownSignal;

/// What every role instance has: the bus, its signing identity and its name.
#[derive(Clone)]
pub struct RoleCtx {
    pub bus: Bus,
    pub identity: Identity,
    pub role: &'static str,
    pub instance: String,
}

impl RoleCtx {
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.bus.metrics
    }
}

pub type RoleFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>>>>;

/// A role's long-running loop. `run` is called again after every restart, so anything that
/// must survive a restart lives behind `Arc`s inside the implementor or in NATS. Tasks the
/// loop spawns are owned by it ([`crate::task::OwnedTask`]) and end with it.
pub trait RoleLoop: 'static {
    /// Run until an error (the supervisor restarts it) or, for a role that [`drains`], until
    /// `shutdown` is requested and its in-flight work is settled.
    ///
    /// [`drains`]: RoleLoop::drains
    fn run(&self, shutdown: ShutdownSignal) -> RoleFuture;

    /// Whether the loop watches `shutdown` and returns once its in-flight work is finished or
    /// handed back (the verifier: stop pulling, nak what waits). Loops that do not are dropped
    /// as soon as shutdown is requested: their state is durable in NATS anyway.
    fn drains(&self) -> bool {
        false
    }
}
