//! How a transport talks to the room logic: [`RoomService`] opens a
//! [`RoomSession`] per connected peer. The edge is written against these traits
//! only, so it works the same with the room in-process (standalone mode) or
//! behind gRPC (distributed mode).

use std::future::Future;

use switchboard_proto::{Candidate, ClientMessage, OfferId, PeerId};
use switchboard_telemetry::Origin;

use crate::error::RoomError;
use crate::outbox::Outbox;
use crate::session::Reply;

/// The room logic as seen by a transport.
pub trait RoomService: Clone + Send + Sync + 'static {
    type Session: RoomSession;

    /// Registers peer `peer`, whose events are pushed into `outbox` from now on.
    fn connect(
        &self,
        peer: PeerId,
        outbox: Outbox,
    ) -> impl Future<Output = Result<Self::Session, RoomError>> + Send;

    /// Whether requests can currently be served (readiness), with a short
    /// human-readable explanation for `/readyz`.
    fn readiness(&self) -> impl Future<Output = Readiness> + Send;
}

/// The answer of [`RoomService::readiness`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub detail: String,
}

/// One connected peer's conversation with the room logic. Requests are handled
/// one at a time, in order.
pub trait RoomSession: Send + 'static {
    /// Handles one request; `origin` says when the edge received it and in
    /// which trace (it travels on with whatever the request publishes).
    fn handle(
        &mut self,
        msg: ClientMessage,
        origin: Origin,
    ) -> impl Future<Output = Result<Reply, RoomError>> + Send;

    /// Handles candidates for one offer that arrived together (a browser
    /// trickles them in bursts) as [`Self::handle`] would one by one, but in one
    /// request and one store operation. `Ok` when all were handled.
    fn candidates(
        &mut self,
        offer_id: OfferId,
        candidates: Vec<Candidate>,
        origin: Origin,
    ) -> impl Future<Output = Result<(), PartlyHandled>> + Send;

    /// The peer is gone: withdraw its pending offers and leave its rooms; end
    /// its calls too unless it is only [`Goodbye::Moving`].
    fn close(self, how: Goodbye) -> impl Future<Output = ()> + Send;
}

/// Candidates in one burst ([`RoomSession::candidates`]), at most: what one
/// request and one store round trip take. Edges gather no more; a room
/// replica refuses longer bursts over gRPC.
pub const MAX_CANDIDATE_BURST: usize = 32;

/// A burst of candidates ([`RoomSession::candidates`]) of which only the first
/// `handled` were handled: `error` is why the others were not, and the answer to
/// each of them.
#[derive(Debug, Clone)]
pub struct PartlyHandled {
    pub handled: usize,
    pub error: RoomError,
}

/// How a peer's session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goodbye {
    /// The client left or was disconnected: its calls end too (the other
    /// party is sent `hangup`).
    Left,
    /// Its edge is shutting down and the client will reconnect elsewhere as a
    /// new peer: its answered calls carry on untouched (media flows peer to
    /// peer), so draining an edge drops no call.
    Moving,
}
