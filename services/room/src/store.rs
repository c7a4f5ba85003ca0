//! The store: where pending offers, their buffered candidates and answered calls
//! live. Every operation maps onto one Redis command, transaction or script (named
//! on each method) so the Redis backend is a translation, not a second design; the
//! rules (who may do what) stay in [`crate::Session`].

use std::future::Future;
use std::time::Duration;

use switchboard_proto::{Candidate, OfferId, PeerId, RoomId, Sdp};
use switchboard_telemetry::TraceContext;

use crate::error::BackendError;

pub mod memory;
pub mod redis;

/// A pending offer or, once answered, the call it became.
#[derive(Debug, Clone, PartialEq)]
pub struct OfferRecord {
    pub id: OfferId,
    pub room: RoomId,
    pub caller: PeerId,
    /// Only this peer may see and answer the offer.
    pub to: Option<PeerId>,
    pub sdp: Sdp,
    /// `None` while pending.
    pub answerer: Option<PeerId>,
    /// The trace of the request that made the offer (the call's trace), when
    /// tracing is on. Kept for listings.
    pub trace: TraceContext,
}

impl OfferRecord {
    /// The record as [`Store::offer`] and [`Store::remove_offer`] return it:
    /// its parties and state, without the SDP (a bare `v=0`) and trace that
    /// only listings need (reading a 4.5 KB SDP back per lookup is most of a
    /// Redis script's cost).
    pub fn summary(self) -> Self {
        Self {
            sdp: no_sdp(),
            trace: TraceContext::default(),
            ..self
        }
    }

    pub fn is_pending(&self) -> bool {
        self.answerer.is_none()
    }

    pub fn parties(&self) -> Parties {
        Parties {
            caller: self.caller,
            answerer: self.answerer,
        }
    }

    /// The other party of an answered call, if `peer` is one of its two parties.
    pub fn counterpart(&self, peer: &PeerId) -> Option<PeerId> {
        self.parties().counterpart(peer)
    }
}

/// The SDP of a record read without one.
pub(crate) fn no_sdp() -> Sdp {
    Sdp::parse("v=0").expect("`v=0` is a valid SDP")
}

/// Who an offer or call belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parties {
    pub caller: PeerId,
    /// `None` while the offer is pending.
    pub answerer: Option<PeerId>,
}

impl Parties {
    /// The other party of an answered call, if `peer` is one of its two parties.
    pub fn counterpart(&self, peer: &PeerId) -> Option<PeerId> {
        let answerer = self.answerer?;
        match *peer {
            p if p == self.caller => Some(answerer),
            p if p == answerer => Some(self.caller),
            _ => None,
        }
    }
}

/// Outcome of [`Store::add_candidates`].
#[derive(Debug, Clone, PartialEq)]
pub enum AddCandidates {
    /// The first `n` candidates (all of them, or as many as fit) were appended
    /// to the pending offer's buffer; the rest did not fit.
    Buffered(usize),
    /// Not buffered: the offer is answered or `from` is not its caller. Its
    /// parties let the caller of this method decide what to do instead.
    NotBuffered(Parties),
    NotFound,
}

/// Who claims an offer: the peer, and the rooms it is in. The guard a claim
/// checks atomically with taking the offer (see [`Store::claim`]) is the
/// protocol's rule for answering, stated by the session.
#[derive(Debug, Clone, Copy)]
pub struct Answerer<'a> {
    pub peer: PeerId,
    /// Only an offer of one of these rooms may be answered.
    pub rooms: &'a [RoomId],
}

/// Outcome of [`Store::claim`], in the order the claim checks them.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "returned once per answer and matched at once, never stored"
)]
pub enum Claim {
    /// No such live offer or call.
    NotFound,
    /// The answerer made the offer.
    OwnOffer,
    /// The offer is addressed (`to`) to another peer.
    AddressedElsewhere,
    /// The offer is in a room the answerer is not in.
    NotInRoom,
    /// Someone answered it first.
    Taken,
    /// This answerer won: the call (its summary, answerer set), the caller's
    /// buffered candidates in order, and how long the offer had been pending.
    Won {
        record: OfferRecord,
        candidates: Vec<Candidate>,
        waited: Duration,
    },
}

/// Where offers and calls are kept.
pub trait Store: Send + Sync + 'static {
    /// Whether the store answers. Redis: `PING`.
    fn ping(&self) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Stores a new pending offer for `ttl` and indexes it under its room.
    /// Redis: one transaction: `HSET offer sdp`, `PEXPIRE`, then a Lua script
    /// (`HSET` of the other fields, `SADD room-offers`, `ZADD expiries`,
    /// deadlines from Redis's clock).
    fn insert_offer(
        &self,
        offer: &OfferRecord,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// A live offer or call, as its [`OfferRecord::summary`] (parties and
    /// state; only [`Store::room_offers`] lists SDPs). Redis: one Lua script
    /// (`HMGET`).
    fn offer(
        &self,
        id: &OfferId,
    ) -> impl Future<Output = Result<Option<OfferRecord>, BackendError>> + Send;

    /// A room's pending offers with their buffered candidates, oldest first.
    /// Redis: `SMEMBERS room-offers`, then `HMGET` + `LRANGE` pipelined.
    fn room_offers(
        &self,
        room: &RoomId,
    ) -> impl Future<Output = Result<Vec<(OfferRecord, Vec<Candidate>)>, BackendError>> + Send;

    /// Appends `candidates`, in order, to the buffer of a pending offer if
    /// `from` is its caller, as many as fit under `max` in all (a browser
    /// trickles candidates in bursts: one round trip for a burst). Candidates
    /// already buffered stay, even past a lower `max`. An empty burst buffers
    /// nothing and checks nothing. Redis: one Lua script (`RPUSH`, `LTRIM`
    /// when over).
    fn add_candidates(
        &self,
        id: &OfferId,
        from: &PeerId,
        candidates: &[Candidate],
        max: usize,
    ) -> impl Future<Output = Result<AddCandidates, BackendError>> + Send;

    /// Atomically checks that `answerer` may answer the offer (the checks of
    /// [`Claim`], in order; a refusal changes nothing), then turns it into a
    /// call answered by `answerer`, kept for `call_ttl`, and takes its buffered
    /// candidates. Exactly one claim wins. One round trip: no lookup first.
    /// Redis: one Lua script (`HMGET`, `HSET answerer`, `PEXPIRE`, `SREM`,
    /// `ZREM`, `LRANGE`+`DEL`).
    fn claim(
        &self,
        id: &OfferId,
        answerer: Answerer<'_>,
        call_ttl: Duration,
    ) -> impl Future<Output = Result<Claim, BackendError>> + Send;

    /// Removes an offer or call of `room`; returns its
    /// [`OfferRecord::summary`] if it was live, so that of two concurrent
    /// removals exactly one sees it. Redis: one Lua script.
    fn remove_offer(
        &self,
        id: &OfferId,
        room: &RoomId,
    ) -> impl Future<Output = Result<Option<OfferRecord>, BackendError>> + Send;

    /// How many offers are pending, and the time left until the soonest
    /// deadline among them (zero if already past; `None` when there are none).
    /// Redis: one Lua script (`ZCARD`, `ZRANGE 0 0 WITHSCORES` on the expiry set).
    fn pending(
        &self,
    ) -> impl Future<Output = Result<(usize, Option<Duration>), BackendError>> + Send;

    /// Removes up to `max` pending offers whose TTL has passed and returns them
    /// (each to exactly one caller, however many replicas sweep). Answered calls
    /// past their TTL are dropped silently. Redis: one Lua script over the
    /// expiry sorted set.
    fn take_expired(
        &self,
        max: usize,
    ) -> impl Future<Output = Result<Vec<OfferRecord>, BackendError>> + Send;
}
