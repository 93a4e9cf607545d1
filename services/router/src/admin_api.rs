//! The router's own admin routes, beside `/healthz`, `/readyz` and `/metrics`:
//! `GET /directory`, the in-memory session directory as JSON (for `meerkatctl sessions`).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::Json;
use meerkat_wire::SessionInfo;
use serde::Serialize;

use crate::Ctx;

/// What `GET /directory` answers.
#[derive(Serialize)]
struct DirectoryView {
    /// The DC this router serves.
    dc: String,
    /// The router instance that answered.
    instance: String,
    /// Every live session it knows, local and remote, by DC then full JID.
    sessions: Vec<SessionInfo>,
}

pub fn routes(ctx: Arc<Ctx>) -> axum::Router {
    axum::Router::new()
        .route("/directory", get(directory))
        .with_state(ctx)
}

async fn directory(State(ctx): State<Arc<Ctx>>) -> Json<DirectoryView> {
    let mut sessions: Vec<SessionInfo> = ctx.sessions.read().all().cloned().collect();
    sessions.sort_by(|a, b| a.dc.cmp(&b.dc).then_with(|| a.jid.cmp(&b.jid)));
    Json(DirectoryView {
        dc: ctx.config.dc.clone(),
        instance: ctx.instance.clone(),
        sessions,
    })
}
