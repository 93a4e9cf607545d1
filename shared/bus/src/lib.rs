//! AMQP plumbing over lapin: one supervised connection per service that reconnects by itself,
//! a confirming publisher that retries across reconnects (at-least-once), supervised
//! consumers that re-declare their topology and resume after a broker restart, header
//! helpers, de-duplication by envelope id, the origin check of what comes from another DC, and
//! the heartbeat a process sends to say it lives.

pub mod connection;
pub mod consumer;
pub mod dedup;
pub mod headers;
pub mod heartbeat;
pub mod origin;
pub mod publisher;
pub mod topology;

pub use connection::Bus;
pub use consumer::{consume_until, spawn_consumer, ConsumerSpec};
pub use dedup::Dedup;
pub use headers::{control_event_properties, HeaderExt, Headers};
pub use lapin;
pub use publisher::{PublishError, Publisher};
