//! The room logic of Switchboard, written once.
//!
//! A [`Room`] turns client requests into store operations and bus events:
//! pending offers with their buffered candidates and a TTL, the atomic answer
//! claim, relays between the two parties of a call, presence, and clean-up when a
//! peer leaves. It runs over two backends:
//!
//! * a [`Store`] (pending offers and calls), whose operations map one-to-one onto
//!   Redis commands, and
//! * a [`Bus`] (publish to a peer's or a room's topic), which maps onto Redis
//!   pub/sub.
//!
//! Events arriving from the bus are handed to the process-local [`Hub`], which knows
//! which peers are connected *here*, applies the visibility rules and pushes
//! messages into each peer's bounded [`Outbox`]. The embedded mode uses the
//! in-memory backends ([`MemoryStore`], [`MemoryBus`]); the distributed mode swaps
//! in Redis ones. The rules never change between the two.
//!
//! Transports (the in-process edge, a gRPC server) talk to the room through the
//! [`RoomService`] / [`RoomSession`] traits.

mod api;
pub mod bus;
mod config;
mod error;
mod event;
pub mod grpc;
mod hub;
pub mod keys;
mod outbox;
mod room;
mod session;
pub mod store;

pub use api::{Goodbye, MAX_CANDIDATE_BURST, PartlyHandled, Readiness, RoomService, RoomSession};
pub use bus::{Bus, memory::MemoryBus};
pub use config::RoomConfig;
pub use error::{BackendError, RoomError};
pub use event::{Event, Topic};
pub use hub::Hub;
pub use outbox::{Deliver, Delivery, Outbox, OutboxReceiver, Overflowed};
pub use room::Room;
pub use session::{Reply, Session, SessionState};
pub use store::{Store, memory::MemoryStore};
