//! The wire contract between Meerkat services and between DCs: exchange and queue names,
//! routing keys, AMQP header names and the JSON events. Another implementation that follows
//! this crate (documented in `docs/protocol.md`) interoperates.

pub mod data;
pub mod event;
pub mod headers;
pub mod health;
pub mod inter;
pub mod topology;

pub use event::{ControlEvent, SessionEvent, SessionEventKind, SessionInfo};
pub use health::{DcState, Heartbeat};
pub use inter::{InterControl, ReplicatedEvent};

/// Version of the wire format; carried in the `x-meerkat-wire` header of every message.
/// Receivers accept any message whose major version they know.
pub const WIRE_VERSION: u32 = 1;
