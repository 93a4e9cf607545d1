//! The process-wide shutdown signal: one token every task watches.

use tokio_util::sync::CancellationToken;

/// A token cancelled on SIGINT or SIGTERM.
///
/// Must be called inside a tokio runtime: it spawns the task that waits for the signals.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        cancel.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(error) => {
            // Without a SIGTERM handler we can still stop on Ctrl-C.
            tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the service");
            ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    ctrl_c().await;
}

async fn ctrl_c() {
    if let Err(error) = tokio::signal::ctrl_c().await {
        tracing::warn!(%error, "cannot listen for SIGINT");
        // Never resolve: a failed signal handler must not look like a shutdown request.
        std::future::pending::<()>().await;
    }
}
