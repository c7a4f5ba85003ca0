//! The room service over gRPC (`proto/switchboard/v1/room.proto`).
//!
//! * [`server`]: serves [`crate::Room`] to edges: one `Attach` stream per edge,
//!   multiplexing that edge's sessions, plus the standard gRPC health service.
//! * [`client`]: [`RemoteRooms`], the edge's [`crate::RoomService`] over those
//!   streams: spreads sessions over replicas, moves them when one dies.
//! * `convert`: replies, errors and session state to and from protobuf.

pub mod client;
mod convert;
pub mod server;

pub use client::{RemoteRooms, RemoteSession};
pub use server::serve;

/// The name the health service reports this service under.
pub const SERVICE_NAME: &str = "switchboard.v1.Rooms";
