//! The dc-health binary: telemetry, config, then the library does the work.

use dc_health::{Config, DcHealth};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _telemetry = meerkat_runtime::telemetry::init("dc-health");
    let config: Config = meerkat_runtime::config::load_or_exit();
    if let Err(e) = config.validate() {
        eprintln!("meerkat: {e}");
        std::process::exit(2);
    }
    let shutdown = meerkat_runtime::shutdown::on_signal();
    let health = match DcHealth::build(config, shutdown).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("dc-health: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match health.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dc-health: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
