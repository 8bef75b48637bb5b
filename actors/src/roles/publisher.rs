//! Checkpoint publisher. Until the policy engine is wired in it only keeps its place in the
//! supervision tree and reports liveness; checkpoints arrive with the model-backed compute.

use std::time::Duration;

use messages::subjects as subj;
use messages::{Heartbeat, WIRE_VERSION};

use crate::bus::now_ms;
use crate::role::{RoleCtx, RoleFuture, RoleLoop};

pub struct Publisher {
    ctx: RoleCtx,
}

impl Publisher {
    pub fn new(ctx: RoleCtx) -> Self {
        Self { ctx }
    }
}

impl RoleLoop for Publisher {
    fn run(&self) -> RoleFuture {
        let ctx = self.ctx.clone();
        Box::pin(async move {
            loop {
                let beat = Heartbeat {
                    version: WIRE_VERSION,
                    role: ctx.role.to_string(),
                    instance: ctx.instance.clone(),
                    ts_ms: now_ms(),
                    status: "idle".into(),
                    in_flight: 0,
                };
                ctx.bus
                    .publish_core(
                        ctx.role,
                        subj::heartbeat(ctx.role, &ctx.instance),
                        beat,
                        &ctx.identity,
                    )
                    .await?;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        })
    }
}
