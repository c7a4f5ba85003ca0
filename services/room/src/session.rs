//! [`Session`]: one connected peer and the rules of the protocol, i.e. who may do
//! what. Each method turns one client request into store operations and bus
//! events, and returns the direct [`Reply`].
//!
//! A session remembers only what it needs to clean up after its peer (its rooms,
//! the offers it made, the offers it answered) and, to spare the store a lookup
//! per candidate, the other party of each of its calls ([`routes`]); everything
//! shared lives in the store, so any process can serve any peer.

mod routes;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use switchboard_proto::{
    Candidate, ClientMessage, CloseReason, OfferId, PeerId, PendingOffer, Req, RoomId, Sdp,
    ServerMessage,
};

use switchboard_telemetry::{Origin, TraceContext, metrics};

use crate::api::{Goodbye, PartlyHandled, RoomSession};
use crate::bus::Bus;
use crate::error::RoomError;
use crate::event::{Event, Topic, offer_visible_to};
use crate::hub::Attachment;
use crate::outbox::Outbox;
use crate::room::Room;
use crate::store::{AddCandidates, Answerer, Claim, OfferRecord, Store};
use routes::CallRoutes;

/// The direct result of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Joined {
        room: RoomId,
        offers: Vec<PendingOffer>,
        /// Each listed offer's trace (same order), for the edge to continue.
        traces: Vec<TraceContext>,
    },
    OfferCreated {
        offer_id: OfferId,
    },
    Answered {
        offer_id: OfferId,
        candidates: Vec<Candidate>,
    },
    Pong,
    /// Done, nothing to report (`ok` when the request had a `req`).
    Done,
}

impl Reply {
    /// The reply frame for a request tagged `req`; `None` when there is nothing to
    /// send (a bare `ok` is only sent to requests that carry a `req`).
    pub fn into_message(self, req: Option<Req>) -> Option<ServerMessage> {
        Some(match self {
            Reply::Joined { room, offers, .. } => ServerMessage::Joined { req, room, offers },
            Reply::OfferCreated { offer_id } => ServerMessage::OfferCreated { req, offer_id },
            Reply::Answered {
                offer_id,
                candidates,
            } => ServerMessage::Answered {
                req,
                offer_id,
                candidates,
            },
            Reply::Pong => ServerMessage::Pong { req },
            Reply::Done => ServerMessage::Ok { req: req? },
        })
    }
}

/// Roughly how many bytes of offers one `joined` reply lists at most.
pub const JOINED_BUDGET_BYTES: usize = 128 * 1024;

/// An offer's approximate size on the wire.
fn approx_size(offer: &PendingOffer) -> usize {
    let candidates: usize = offer
        .candidates
        .iter()
        .map(|c| c.candidate.len() + 96)
        .sum();
    offer.sdp.as_str().len() + candidates + 128
}

/// What a session must remember to clean up after its peer. The edge keeps a
/// copy (from the replies it relays) so that a session can move to another room
/// replica and carry on; see [`crate::Room::resume`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionState {
    pub rooms: Vec<RoomId>,
    pub made: Vec<OfferId>,
    pub answered: Vec<OfferId>,
}

impl SessionState {
    /// Offers remembered per list, at most (older ones are long gone or pruned).
    const MAX_OFFERS: usize = 64;

    /// Updates the state after `msg` got `reply`.
    pub fn record(&mut self, msg: &ClientMessage, reply: &Reply) {
        fn remember(list: &mut Vec<OfferId>, id: OfferId) {
            if list.len() >= SessionState::MAX_OFFERS {
                list.remove(0);
            }
            list.push(id);
        }
        match (msg, reply) {
            (_, Reply::Joined { room, .. }) if !self.rooms.contains(room) => {
                self.rooms.push(room.clone())
            }
            (ClientMessage::Leave { room }, Reply::Done) => self.rooms.retain(|r| r != room),
            (_, Reply::OfferCreated { offer_id }) => remember(&mut self.made, *offer_id),
            (_, Reply::Answered { offer_id, .. }) => remember(&mut self.answered, *offer_id),
            (ClientMessage::Hangup { offer_id }, Reply::Done) => {
                self.made.retain(|id| id != offer_id);
                self.answered.retain(|id| id != offer_id);
            }
            _ => {}
        }
    }
}

/// One connected peer's view of the rooms.
#[derive(Debug)]
pub struct Session<S, B> {
    room: Room<S, B>,
    peer: PeerId,
    attachment: Attachment,
    rooms: HashSet<RoomId>,
    /// Offers this peer made (pending or answered), with their room.
    made: HashMap<OfferId, RoomId>,
    /// Offers this peer answered, with their room.
    answered: HashMap<OfferId, RoomId>,
    /// The other party of this peer's calls, for relaying candidates.
    routes: Arc<CallRoutes>,
    /// The origin of the request being handled, passed into what it publishes.
    origin: Origin,
}

impl<S: Store, B: Bus> Session<S, B> {
    pub(crate) async fn open(
        room: Room<S, B>,
        peer: PeerId,
        outbox: Outbox,
    ) -> Result<Self, RoomError> {
        let routes = CallRoutes::new(room.config().call_ttl);
        let attachment = room.hub().attach(peer, routes.watch(outbox));
        if let Err(err) = room.bus().subscribe(&Topic::Peer(peer)).await {
            room.hub().detach(&peer, attachment, []);
            return Err(err.into());
        }
        Ok(Self {
            room,
            peer,
            attachment,
            rooms: HashSet::new(),
            made: HashMap::new(),
            answered: HashMap::new(),
            routes,
            origin: Origin::default(),
        })
    }

    /// Re-opens a session that lived on another replica, from its `state`:
    /// subscribes its rooms again (without announcing it) and keeps the offers
    /// and calls that are still live.
    pub(crate) async fn resume(
        room: Room<S, B>,
        peer: PeerId,
        outbox: Outbox,
        state: SessionState,
    ) -> Result<Self, RoomError> {
        let mut session = Self::open(room, peer, outbox).await?;
        match session.restore(state).await {
            Ok(()) => Ok(session),
            Err(err) => {
                session.detach().await;
                Err(err)
            }
        }
    }

    /// Re-subscribes the rooms of `state` and keeps its live offers and calls.
    async fn restore(&mut self, state: SessionState) -> Result<(), RoomError> {
        for name in state.rooms {
            self.room.hub().join(&name, self.peer, self.attachment);
            if let Err(err) = self.room.bus().subscribe(&Topic::Room(name.clone())).await {
                self.room.hub().leave(&name, &self.peer, self.attachment);
                return Err(err.into());
            }
            self.rooms.insert(name);
        }
        for (ids, into_answered) in [(state.made, false), (state.answered, true)] {
            for id in ids {
                if let Some(record) = self.room.store().offer(&id).await? {
                    let map = if into_answered {
                        &mut self.answered
                    } else {
                        &mut self.made
                    };
                    map.insert(id, record.room);
                }
            }
        }
        Ok(())
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    /// Lets go of the peer *without* cleaning up after it: its offers stay
    /// pending and its calls open. For sessions whose edge vanished (the client
    /// may come back through another edge) or that move to another replica.
    pub async fn detach(self) {
        self.room
            .hub()
            .detach(&self.peer, self.attachment, self.rooms.iter().cloned());
        for room in &self.rooms {
            if let Err(err) = self
                .room
                .bus()
                .unsubscribe(&Topic::Room(room.clone()))
                .await
            {
                tracing::debug!(peer_id = %self.peer, %room, error = %err, "unsubscribe failed on detach");
            }
        }
        if let Err(err) = self.room.bus().unsubscribe(&Topic::Peer(self.peer)).await {
            tracing::debug!(peer_id = %self.peer, error = %err, "unsubscribe failed on detach");
        }
    }

    async fn join(&mut self, room: RoomId) -> Result<Reply, RoomError> {
        let topic = Topic::Room(room.clone());
        let mut announce = None;
        if !self.rooms.contains(&room) {
            if self.rooms.len() >= self.room.config().max_rooms_per_peer {
                return Err(RoomError::too_large(
                    "in too many rooms at once; leave one first",
                ));
            }
            // Subscribed before the offers are listed: an offer made after the
            // listing reaches this peer as an event.
            self.room.hub().join(&room, self.peer, self.attachment);
            if let Err(err) = self.room.bus().subscribe(&topic).await {
                self.room.hub().leave(&room, &self.peer, self.attachment);
                return Err(err.into());
            }
            self.rooms.insert(room.clone());
            announce = Some(Event::PeerJoined {
                room: room.clone(),
                peer: self.peer,
            });
        }
        // The announcement and the listing go to the store together (one round
        // trip when they share a connection).
        let announced = async {
            match announce {
                Some(event) => self.room.publish(&topic, event, &self.origin).await,
                None => Ok(()),
            }
        };
        let (announced, offers) = tokio::join!(announced, self.room.store().room_offers(&room));
        announced?;
        let offers = offers?
            .into_iter()
            .filter(|(o, _)| offer_visible_to(&self.peer, &o.caller, o.to.as_ref()))
            .map(|(o, candidates)| {
                let offer = PendingOffer {
                    offer_id: o.id,
                    from: o.caller,
                    sdp: o.sdp,
                    candidates,
                };
                (offer, o.trace)
            });
        // `joined` carries the oldest offers up to a size budget, so the reply
        // stays a reasonable frame however busy the room; the rest follow at
        // once as `offer` events (queued before the reply is sent, delivered
        // right after it).
        let mut listed = Vec::new();
        let mut traces = Vec::new();
        let mut size = 0;
        for (offer, trace) in offers {
            size += approx_size(&offer);
            if size <= JOINED_BUDGET_BYTES || listed.is_empty() {
                listed.push(offer);
                traces.push(trace);
            } else {
                let event = ServerMessage::Offer {
                    offer_id: offer.offer_id,
                    room: room.clone(),
                    from: offer.from,
                    sdp: offer.sdp,
                    candidates: offer.candidates,
                };
                let origin = Origin {
                    trace,
                    ..Origin::default()
                };
                self.room.hub().deliver(&self.peer, event, &origin);
            }
        }
        Ok(Reply::Joined {
            room,
            offers: listed,
            traces,
        })
    }

    async fn leave(&mut self, room: RoomId) -> Result<Reply, RoomError> {
        if !self.rooms.contains(&room) {
            return Err(RoomError::NotInRoom);
        }
        let ids: Vec<OfferId> = (self.made.iter().chain(&self.answered))
            .filter(|(_, r)| **r == room)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.end(&id, &room, CloseReason::OffererLeft).await?;
        }
        self.leave_room(room).await?;
        Ok(Reply::Done)
    }

    async fn leave_room(&mut self, room: RoomId) -> Result<(), RoomError> {
        self.rooms.remove(&room);
        self.room.hub().leave(&room, &self.peer, self.attachment);
        let topic = Topic::Room(room.clone());
        let event = Event::PeerLeft {
            room,
            peer: self.peer,
        };
        // Unsubscribe even when the announcement fails, or the subscription leaks.
        let announced = self.room.publish(&topic, event, &self.origin).await;
        self.room.bus().unsubscribe(&topic).await?;
        Ok(announced?)
    }

    async fn offer(
        &mut self,
        room: RoomId,
        sdp: Sdp,
        to: Option<PeerId>,
    ) -> Result<Reply, RoomError> {
        if !self.rooms.contains(&room) {
            return Err(RoomError::NotInRoom);
        }
        if to == Some(self.peer) {
            return Err(RoomError::not_allowed(
                "you cannot address an offer to yourself",
            ));
        }
        let max = self.room.config().max_offers_per_peer;
        if self.made.len() >= max {
            prune(&self.room, &mut self.made).await?;
            if self.made.len() >= max {
                return Err(RoomError::too_large(
                    "too many live offers; hang up one first",
                ));
            }
        }
        let record = OfferRecord {
            id: OfferId::random(),
            room: room.clone(),
            caller: self.peer,
            to,
            sdp,
            answerer: None,
            // The call's trace starts with the request that made the offer.
            trace: TraceContext::current(),
        };
        let ttl = self.room.config().offer_ttl;
        self.room.store().insert_offer(&record, ttl).await?;
        metrics::offer_created();
        self.made.insert(record.id, room.clone());
        let offer_id = record.id;
        let event = Event::Offer {
            room: room.clone(),
            to,
            offer: PendingOffer {
                offer_id,
                from: self.peer,
                sdp: record.sdp,
                candidates: Vec::new(),
            },
        };
        let topic = Topic::Room(room);
        self.room.publish(&topic, event, &self.origin).await?;
        Ok(Reply::OfferCreated { offer_id })
    }

    /// Candidates for `offer_id`, in order: buffered with its pending offer
    /// (one store operation for the whole burst) or, in a call, relayed to the
    /// other party.
    async fn trickle(
        &mut self,
        offer_id: OfferId,
        candidates: Vec<Candidate>,
    ) -> Result<(), PartlyHandled> {
        let none_handled = |error: RoomError| PartlyHandled { handled: 0, error };
        // A call this peer is known to be in needs no word from the store.
        let other = match self.routes.other(&offer_id) {
            Some(other) => other,
            None => {
                let max = self.room.config().max_buffered_candidates;
                let added = self
                    .room
                    .store()
                    .add_candidates(&offer_id, &self.peer, &candidates, max)
                    .await
                    .map_err(|err| none_handled(err.into()))?;
                match added {
                    AddCandidates::Buffered(n) if n >= candidates.len() => return Ok(()),
                    AddCandidates::Buffered(handled) => {
                        return Err(PartlyHandled {
                            handled,
                            error: RoomError::too_large(
                                "this offer already holds the most candidates it can buffer",
                            ),
                        });
                    }
                    AddCandidates::NotFound => return Err(none_handled(RoomError::OfferNotFound)),
                    AddCandidates::NotBuffered(parties) => {
                        parties.counterpart(&self.peer).ok_or_else(|| {
                            none_handled(RoomError::not_allowed(
                                "only the caller may send candidates for a pending offer, and only the two parties once it is answered",
                            ))
                        })?
                    }
                }
            }
        };
        for (handled, candidate) in candidates.into_iter().enumerate() {
            let relay = ServerMessage::Candidate {
                offer_id,
                from: self.peer,
                candidate,
            };
            self.room
                .send_to(other, relay, &self.origin)
                .await
                .map_err(|error| PartlyHandled { handled, error })?;
        }
        Ok(())
    }

    async fn answer(&mut self, offer_id: OfferId, sdp: Sdp) -> Result<Reply, RoomError> {
        if self.answered.len() >= 4 * self.room.config().max_offers_per_peer {
            prune(&self.room, &mut self.answered).await?;
        }
        // Who may answer is checked by the claim itself, atomically: one round
        // trip to the store, not a lookup and then a claim.
        let rooms: Vec<RoomId> = self.rooms.iter().cloned().collect();
        let answerer = Answerer {
            peer: self.peer,
            rooms: &rooms,
        };
        let call_ttl = self.room.config().call_ttl;
        let (record, candidates) = match self
            .room
            .store()
            .claim(&offer_id, answerer, call_ttl)
            .await?
        {
            Claim::Won {
                record,
                candidates,
                waited,
            } => {
                metrics::offer_answered(waited);
                (record, candidates)
            }
            Claim::NotFound => return Err(RoomError::OfferNotFound),
            Claim::OwnOffer => {
                return Err(RoomError::not_allowed("you cannot answer your own offer"));
            }
            Claim::AddressedElsewhere => {
                return Err(RoomError::not_allowed(
                    "this offer is addressed to another peer",
                ));
            }
            Claim::NotInRoom => return Err(RoomError::NotInRoom),
            Claim::Taken => return Err(RoomError::OfferTaken),
        };
        self.answered.insert(offer_id, record.room.clone());
        self.routes.learn(offer_id, record.caller);
        // The claim is won: from here on nothing may turn it into an error, or
        // the answerer would retry into `offer_taken`. Announcements are best
        // effort (the caller's edge sees a failure as a dead peer anyway).
        let answer = ServerMessage::Answer {
            offer_id,
            from: self.peer,
            sdp,
        };
        let closed = Event::OfferClosed {
            offer_id,
            room: record.room.clone(),
            caller: record.caller,
            to: record.to,
            answerer: Some(self.peer),
            reason: CloseReason::Answered,
        };
        let topic = Topic::Room(record.room);
        let (relayed, announced) = tokio::join!(
            self.room.send_to(record.caller, answer, &self.origin),
            self.room.publish(&topic, closed, &self.origin),
        );
        if let Err(err) = relayed {
            tracing::warn!(peer_id = %self.peer, %offer_id, error = %err, "could not relay an answer");
        }
        if let Err(err) = announced {
            tracing::warn!(peer_id = %self.peer, %offer_id, error = %err, "could not announce an answered offer");
        }
        Ok(Reply::Answered {
            offer_id,
            candidates,
        })
    }

    async fn hangup(&mut self, offer_id: OfferId) -> Result<Reply, RoomError> {
        let record = self.live_offer(&offer_id).await?;
        let allowed = match record.is_pending() {
            true => record.caller == self.peer,
            false => record.counterpart(&self.peer).is_some(),
        };
        if !allowed {
            return Err(RoomError::not_allowed(
                "only the caller may withdraw a pending offer, and only the two parties may end a call",
            ));
        }
        self.end(&offer_id, &record.room, CloseReason::Withdrawn)
            .await?;
        Ok(Reply::Done)
    }

    /// A live offer or call, or `offer_not_found`.
    async fn live_offer(&self, offer_id: &OfferId) -> Result<OfferRecord, RoomError> {
        self.room
            .store()
            .offer(offer_id)
            .await?
            .ok_or(RoomError::OfferNotFound)
    }

    /// Removes one of this peer's offers or calls (in `room`) and tells the
    /// others. It is forgotten here only once the store has removed it, so a
    /// failed attempt is retried at disconnect. A call the other party already
    /// ended is only forgotten: the store holds nothing more of it.
    async fn end(
        &mut self,
        offer_id: &OfferId,
        room: &RoomId,
        reason: CloseReason,
    ) -> Result<(), RoomError> {
        let ended = self.routes.ended_by_other(offer_id);
        self.routes.forget(offer_id);
        let removed = match ended {
            true => None,
            false => self.room.store().remove_offer(offer_id, room).await?,
        };
        self.made.remove(offer_id);
        self.answered.remove(offer_id);
        if let Some(record) = removed {
            let by = Some(self.peer);
            self.room.retire(record, by, reason, &self.origin).await?;
        }
        Ok(())
    }

    /// Clean-up when the peer disconnects; best effort, every step is attempted.
    /// A peer that is only [`Goodbye::Moving`] keeps its answered calls.
    async fn disconnect(mut self, how: Goodbye) {
        self.origin = Origin::default();
        let ids: Vec<(OfferId, RoomId)> = (self.made.iter().chain(&self.answered))
            .map(|(id, room)| (*id, room.clone()))
            .collect();
        for (id, room) in ids {
            // A moving peer keeps its calls; one the other party ended is
            // over, and `end` only forgets it (no lookup needed to tell).
            let ended = self.routes.ended_by_other(&id);
            if how == Goodbye::Moving && !ended && self.is_call(&id).await {
                continue;
            }
            if let Err(err) = self.end(&id, &room, CloseReason::OffererLeft).await {
                tracing::warn!(peer_id = %self.peer, offer_id = %id, error = %err, "could not end offer on disconnect");
            }
        }
        let rooms: Vec<RoomId> = self.rooms.iter().cloned().collect();
        for room in rooms {
            if let Err(err) = self.leave_room(room.clone()).await {
                tracing::warn!(peer_id = %self.peer, %room, error = %err, "could not leave room on disconnect");
            }
        }
        self.room.hub().detach(&self.peer, self.attachment, []);
        if let Err(err) = self.room.bus().unsubscribe(&Topic::Peer(self.peer)).await {
            tracing::warn!(peer_id = %self.peer, error = %err, "could not unsubscribe on disconnect");
        }
    }
}

impl<S: Store, B: Bus> Session<S, B> {
    /// Whether `id` is an answered call (not a pending offer). When the store
    /// cannot tell, it is not: the offer is then withdrawn, as if it were
    /// pending.
    async fn is_call(&self, id: &OfferId) -> bool {
        matches!(self.room.store().offer(id).await, Ok(Some(record)) if !record.is_pending())
    }
}

/// Keeps only the entries whose offer or call is still live.
async fn prune<S: Store, B: Bus>(
    room: &Room<S, B>,
    entries: &mut HashMap<OfferId, RoomId>,
) -> Result<(), RoomError> {
    let ids: Vec<OfferId> = entries.keys().copied().collect();
    for id in ids {
        if room.store().offer(&id).await?.is_none() {
            entries.remove(&id);
        }
    }
    Ok(())
}

impl<S: Store, B: Bus> RoomSession for Session<S, B> {
    async fn handle(&mut self, msg: ClientMessage, origin: Origin) -> Result<Reply, RoomError> {
        self.origin = origin;
        match msg {
            ClientMessage::Join { room } => self.join(room).await,
            ClientMessage::Leave { room } => self.leave(room).await,
            ClientMessage::Offer { room, sdp, to } => self.offer(room, sdp, to).await,
            ClientMessage::Candidate {
                offer_id,
                candidate,
            } => match self.trickle(offer_id, vec![candidate]).await {
                Ok(()) => Ok(Reply::Done),
                Err(partly) => Err(partly.error),
            },
            ClientMessage::Answer { offer_id, sdp } => self.answer(offer_id, sdp).await,
            ClientMessage::Hangup { offer_id } => self.hangup(offer_id).await,
            ClientMessage::Ping => Ok(Reply::Pong),
        }
    }

    async fn candidates(
        &mut self,
        offer_id: OfferId,
        candidates: Vec<Candidate>,
        origin: Origin,
    ) -> Result<(), PartlyHandled> {
        self.origin = origin;
        self.trickle(offer_id, candidates).await
    }

    async fn close(self, how: Goodbye) {
        self.disconnect(how).await
    }
}

#[cfg(test)]
mod tests;
