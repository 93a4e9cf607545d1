//! AMQP plumbing over lapin: one supervised connection per service that reconnects by itself,
//! a confirming publisher that retries across reconnects (at-least-once), supervised
//! consumers that re-declare their topology, resume after a broker restart and check the wire
//! version of what they receive, the AMQP mapping of the wire contract (props.rs, wire.rs),
//! the DC's parking queue for what a version cannot take, header helpers, de-duplication by envelope id, the origin check of what comes from another DC, and
//! the heartbeat a process sends to say it lives.

pub mod connection;
pub mod consumer;
pub mod dedup;
pub mod headers;
pub mod heartbeat;
pub mod origin;
pub mod parking;
pub mod props;
pub mod publisher;
pub mod topology;
pub mod wire;

pub use connection::Bus;
pub use consumer::{
    consume, consume_batches, consume_events, consume_lanes, requeue_after, spawn_consumer,
    ConsumerSpec, Declare,
};
pub use dedup::Dedup;
pub use headers::{HeaderExt, Headers};
pub use lapin;
pub use parking::Parker;
pub use props::{control_event_properties, Props};
pub use publisher::{PublishError, Publisher};
pub use wire::NotForUs;
