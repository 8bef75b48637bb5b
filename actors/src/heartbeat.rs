//! What every role instance says about itself while it runs: a signed [`Heartbeat`] on
//! `grail.heartbeat.<role>.<instance>` every few seconds (with the work it holds), and, for roles
//! on a durable consumer, that consumer's lag as gauges.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, Consumer};
use messages::subjects as subj;
use messages::{Heartbeat, WIRE_VERSION};

use crate::bus::now_ms;
use crate::role::RoleCtx;

/// Publish a heartbeat for `ctx`'s instance every `every` until dropped. A failed publish
/// (the connection is down) is logged and retried at the next beat.
pub async fn heartbeats(ctx: RoleCtx, every: Duration) {
    let in_flight = ctx
        .metrics()
        .in_flight
        .with_label_values(&[ctx.role, &ctx.instance]);
    loop {
        let beat = Heartbeat {
            version: WIRE_VERSION,
            role: ctx.role.to_string(),
            instance: ctx.instance.clone(),
            ts_ms: now_ms(),
            status: "running".into(),
            in_flight: in_flight.get().max(0) as u32,
        };
        let subject = subj::heartbeat(ctx.role, &ctx.instance);
        if let Err(e) = ctx
            .bus
            .publish_core(ctx.role, subject, beat, &ctx.identity)
            .await
        {
            tracing::debug!(role = ctx.role, error = %e, "heartbeat not published");
        }
        tokio::time::sleep(every).await;
    }
}

/// Export `consumer`'s lag (`grail_consumer_pending`, `_ack_pending`, `_redelivered`) every
/// `every` until dropped.
pub async fn consumer_gauges(ctx: RoleCtx, mut consumer: Consumer<pull::Config>, every: Duration) {
    loop {
        match consumer.info().await {
            Ok(info) => {
                let labels = [info.stream_name.as_str(), info.name.as_str()];
                let m = ctx.metrics();
                m.consumer_pending
                    .with_label_values(&labels)
                    .set(info.num_pending as i64);
                m.consumer_ack_pending
                    .with_label_values(&labels)
                    .set(info.num_ack_pending as i64);
                m.consumer_redelivered
                    .with_label_values(&labels)
                    .set(info.num_redelivered as i64);
            }
            Err(e) => tracing::debug!(role = ctx.role, error = %e, "consumer info unavailable"),
        }
        tokio::time::sleep(every).await;
    }
}
