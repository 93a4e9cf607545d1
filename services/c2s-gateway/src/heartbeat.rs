//! The gateway's heartbeat to its DC's health service (`meerkat.health`, routing key
//! `gateway.<instance>`): when the beats stop, the health service ends this gateway's sessions
//! in the routers' directories and tells their contacts.

use std::sync::Arc;
use std::time::Duration;

use meerkat_bus::heartbeat::Beater;
use meerkat_wire::topology as names;

use crate::Ctx;

/// Beats until the gateway's AMQP connection closes (after its sessions ended, so a gateway
/// that stops gracefully is not taken for dead while it says goodbye).
pub async fn run(ctx: Arc<Ctx>) {
    let beater = Beater {
        exchange: names::HEALTH_EXCHANGE,
        routing_key: names::gateway_heartbeat_key(&ctx.instance),
        dc: ctx.config.dc.clone(),
        instance: ctx.instance.clone(),
        epoch: ctx.epoch.clone(),
        interval: Duration::from_millis(ctx.config.heartbeat_interval_ms),
    };
    beater
        .run(
            ctx.bus.clone(),
            ctx.publisher.clone(),
            ctx.bus.shutdown_token(),
            |_| {},
        )
        .await;
}
