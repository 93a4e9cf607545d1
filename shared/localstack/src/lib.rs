//! Local RabbitMQ nodes and PostgreSQL clusters for `cargo xtask` and the test kit: installing
//! them when missing, starting our own instances on loopback in directories we own, stopping
//! and killing them, creating vhosts and databases. No Docker needed.

pub mod closed_pipe;
pub mod federation;
pub mod install;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod rabbit;
pub mod rabbit_api;
pub mod test_infra;

pub use closed_pipe::exit_quietly_on_closed_pipe;
pub use install::ensure_installed;
pub use ports::{free_port, free_ports, port_open};
pub use postgres::{PgCluster, PgConfig, PgEndpoint};
pub use rabbit::{RabbitConfig, RabbitNode};
pub use rabbit_api::RabbitEndpoint;
pub use test_infra::{
    free_rabbit_config, unique_dir, unique_node_name, InfraSpec, LocalInfra, TEST_INFRA_ENV,
};
