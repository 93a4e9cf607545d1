//! The wire contract between Meerkat services and between DCs: exchange and queue names,
//! routing keys, AMQP header names and the JSON events. Another implementation that follows
//! this crate (documented in `docs/protocol.md`) interoperates.

pub mod data;
pub mod envelope;
pub mod event;
pub mod fanout;
pub mod federation;
pub mod handover;
pub mod headers;
pub mod health;
pub mod inter;
pub mod kind;
pub mod topology;
pub mod version;

pub use event::{ControlEvent, SessionEvent, SessionEventKind, SessionInfo};
pub use health::{DcState, Heartbeat};
pub use inter::{InterControl, ReplicatedEvent};
pub use kind::{RouteKind, UnknownKind};
pub use version::{VersionError, WireVersion};

/// The major wire version, as the JSON events' `v` field carries it. The `x-meerkat-wire`
/// header carries the whole version ([`version::CURRENT`]); receivers check that.
pub const WIRE_VERSION: u32 = version::CURRENT.major as u32;
