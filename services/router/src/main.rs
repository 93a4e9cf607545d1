//! The router binary: telemetry, config, then the library does the work.

use router::{Config, Router};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _telemetry = meerkat_runtime::telemetry::init("router");
    let config: Config = meerkat_runtime::config::load_or_exit();
    if let Err(e) = config.validate() {
        eprintln!("meerkat: {e}");
        std::process::exit(2);
    }
    let shutdown = meerkat_runtime::shutdown::on_signal();
    let router = match Router::build(config, shutdown).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("router: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match router.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("router: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
