//! The c2s gateway binary: telemetry, config, then the library does the work.

use c2s_gateway::{Config, Gateway};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _telemetry = meerkat_runtime::telemetry::init("c2s-gateway");
    let config: Config = meerkat_runtime::config::load_or_exit();
    let shutdown = meerkat_runtime::shutdown::on_signal();
    let gateway = match Gateway::build(config, shutdown).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("c2s-gateway: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match gateway.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("c2s-gateway: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
