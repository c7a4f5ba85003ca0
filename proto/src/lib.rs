//! Switchboard wire types: the only place they are defined.
//!
//! * [`ids`]: the `PeerId`, `OfferId`, `RoomId` and `Req` newtypes, validated on parse.
//! * [`payload`]: what peers exchange through us (`Sdp`, `Candidate`) and `IceServer`.
//! * [`error`]: the protocol error codes.
//! * [`client`]: browser → server messages, and the parser that turns a text frame
//!   into a typed [`client::ClientFrame`] or a typed error.
//! * [`server`]: server → browser messages.
//! * [`pb`]: the edge ↔ room gRPC and room ↔ room bus types (protobuf), with
//!   conversions to and from the types above.
//!
//! The edge, the room logic, the tests and the load tester all speak these types;
//! nobody builds protocol JSON by hand.

pub mod client;
pub mod error;
pub mod ids;
pub mod payload;
pub mod pb;
pub mod server;

pub use client::{ClientFrame, ClientMessage, ParseError};
pub use error::ErrorCode;
pub use ids::{OfferId, PeerId, Req, RoomId};
pub use payload::{Candidate, IceServer, Sdp};
pub use server::{CloseReason, PendingOffer, ServerMessage};
