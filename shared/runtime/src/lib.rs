//! What every Meerkat service needs before it does its own work: typed layered config
//! ([`config`]), logs and traces ([`telemetry`]), the admin HTTP port with health, readiness and
//! metrics ([`admin`]), and the shutdown signal ([`shutdown`]).

pub mod admin;
pub mod config;
pub mod peers;
pub mod shutdown;
pub mod telemetry;
