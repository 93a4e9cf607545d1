//! The session-replicator binary: telemetry, config, then the library does the work.

use session_replicator::{Config, SessionReplicator};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _telemetry = meerkat_runtime::telemetry::init("session-replicator");
    let config: Config = meerkat_runtime::config::load_or_exit();
    let shutdown = meerkat_runtime::shutdown::on_signal();
    let replicator = match SessionReplicator::build(config, shutdown).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("session-replicator: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match replicator.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("session-replicator: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
