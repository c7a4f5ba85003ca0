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

/// Largest frame either side accepts. Frames are far smaller (a `joined` reply
/// is budgeted to ~128 KiB); this is a guard, not a working limit.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// The name the health service reports this service under.
pub const SERVICE_NAME: &str = "switchboard.v1.Rooms";
