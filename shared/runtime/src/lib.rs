//! What every Meerkat service needs before it does its own work: typed layered config
//! ([`config`]) with the settings every service shares ([`common`]), secrets that never reach
//! a log ([`secret`]), durations ([`duration`]), logs and traces ([`telemetry`]), the admin
//! HTTP port with health, readiness and metrics ([`admin`]), the shutdown signal
//! ([`shutdown`]), and the skeleton that starts, serves and drains a service ([`service`]).

pub mod admin;
pub mod common;
pub mod config;
pub mod duration;
pub mod peers;
pub mod secret;
pub mod service;
pub mod shutdown;
pub mod telemetry;

pub use common::{Common, Database};
pub use secret::{Secret, SecretUrl};
