//! `GET /status` on the admin port: the health service's view as JSON (what
//! `meerkatctl dc status` shows).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use meerkat_wire::DcState;
use serde::Serialize;

use crate::gateways::{millis, GatewayStatus};
use crate::links::LinkView;
use crate::Ctx;

#[derive(Debug, Serialize)]
pub struct Status {
    pub dc: String,
    pub instance: String,
    /// This health service's epoch (what the other DCs see in its heartbeats).
    pub epoch: String,
    pub suspect_after_ms: u64,
    pub down_after_ms: u64,
    pub detection_bound_ms: u64,
    pub peers: Vec<PeerStatus>,
    pub gateways: Vec<GatewayStatus>,
    /// Absent when no management URL is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub links: Option<LinkView>,
}

#[derive(Debug, Serialize)]
pub struct PeerStatus {
    pub dc: String,
    pub state: DcState,
    /// The epoch of its last heartbeat (none heard since this service started).
    pub epoch: Option<String>,
    /// Milliseconds since its last heartbeat arrived (or since this service started).
    pub age_ms: u64,
    /// When the current state began, in milliseconds since the Unix epoch.
    pub since: u64,
}

pub fn routes(ctx: Arc<Ctx>) -> Router {
    Router::new().route("/status", get(status)).with_state(ctx)
}

async fn status(State(ctx): State<Arc<Ctx>>) -> Json<Status> {
    Json(snapshot(&ctx))
}

pub fn snapshot(ctx: &Ctx) -> Status {
    let now = Instant::now();
    let wall = meerkat_bus::heartbeat::now_ms();
    let peers = ctx
        .detector
        .lock()
        .peers()
        .map(|(dc, v)| PeerStatus {
            dc: dc.clone(),
            state: v.state,
            epoch: v.epoch.clone(),
            age_ms: millis(now.saturating_duration_since(v.last_heard)),
            since: wall.saturating_sub(millis(now.saturating_duration_since(v.since))),
        })
        .collect();
    let gateways = ctx.gateways.lock().status(now);
    let links = (!ctx.config.management_url.is_empty()).then(|| ctx.links.lock().clone());
    Status {
        dc: ctx.config.dc.clone(),
        instance: ctx.instance.clone(),
        epoch: ctx.epoch.clone(),
        suspect_after_ms: ctx.config.suspect_after_ms,
        down_after_ms: ctx.config.down_after_ms,
        detection_bound_ms: ctx.config.detection_bound_ms,
        peers,
        gateways,
        links,
    }
}
