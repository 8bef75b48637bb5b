//! The supervision tree's middle layer: every role instance is a [`RoleActor`] started under
//! an actix `Supervisor`. The actor runs its role's async loop; when the loop ends with an
//! error (lost subscription, consumer deleted, ...) the actor stops, the supervisor restarts it
//! with backoff, and the loop resumes from durable state (JetStream consumers, KV). Compute
//! never runs here: roles hand it to a [`crate::worker_pool::WorkerPool`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use messages::Identity;

use crate::bus::Bus;

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
/// must survive a restart lives behind `Arc`s inside the implementor or in NATS.
pub trait RoleLoop: 'static {
    fn run(&self) -> RoleFuture;
}

pub struct RoleActor {
    ctx: RoleCtx,
    body: Arc<dyn RoleLoop>,
    restarts: Arc<AtomicU32>,
    /// The actor's own address. An actix `Supervisor` restarts a stopped actor only while
    /// some `Addr` to it is alive, so without this a caller that drops the `Addr` returned
    /// by [`RoleActor::start`] would get a role that silently dies at its first failure.
    /// A role runs until its actix System stops.
    _keep_alive: Option<Addr<RoleActor>>,
}

impl RoleActor {
    pub fn start(ctx: RoleCtx, body: Arc<dyn RoleLoop>) -> Addr<RoleActor> {
        // Zero-valued series from the start, so an alert on restarts sees 0, not nothing.
        ctx.metrics().actor_restarts.with_label_values(&[ctx.role]);
        let restarts = Arc::new(AtomicU32::new(0));
        Supervisor::start(move |actor_ctx: &mut Context<RoleActor>| RoleActor {
            ctx,
            body,
            restarts,
            _keep_alive: Some(actor_ctx.address()),
        })
    }
}

impl Actor for RoleActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let labels = [self.ctx.role];
        self.ctx
            .metrics()
            .roles_alive
            .with_label_values(&labels)
            .inc();
        let restarts = self.restarts.load(Ordering::SeqCst);
        // Back off after repeated failures so a broken dependency is not hammered.
        let delay =
            Duration::from_millis((100u64 << restarts.min(6)).min(5_000) * (restarts > 0) as u64);
        let body = self.body.clone();
        let fut = async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            body.run().await
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            match result {
                Ok(()) => tracing::info!(role = act.ctx.role, instance = %act.ctx.instance, "role loop finished"),
                Err(e) => tracing::error!(role = act.ctx.role, instance = %act.ctx.instance, error = %format!("{e:#}"), "role loop failed; restarting"),
            }
            ctx.stop();
        }));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.ctx
            .metrics()
            .roles_alive
            .with_label_values(&[self.ctx.role])
            .dec();
    }
}

impl Supervised for RoleActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.restarts.fetch_add(1, Ordering::SeqCst);
        self.ctx
            .metrics()
            .actor_restarts
            .with_label_values(&[self.ctx.role])
            .inc();
    }
}
