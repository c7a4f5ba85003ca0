//! The Switchboard edge: browsers' WebSocket sessions, the demo page and the
//! health endpoints.
//!
//! * [`config`]: what an operator tunes (ICE servers, limits, heartbeat…).
//! * [`http`]: the axum router and [`serve`], which runs until shutdown and then
//!   drains the sessions.
//! * `connection`: one task per WebSocket, one `select!` loop: client frames in,
//!   room events out, heartbeat, shutdown.
//! * `socket`: the client sockets under hyper and the WebSocket: reads that
//!   take all that is waiting, the upgrade response sent with the welcome.
//!
//! The edge holds connections, not state: it is written against the room's
//! [`switchboard_room::RoomService`] trait, so the same code serves the room logic
//! in-process (standalone) or over gRPC (distributed).

pub mod config;
mod connection;
pub mod http;
mod socket;

pub use config::EdgeConfig;
pub use http::serve;
