//! What travels on the bus: [`Topic`]s and [`Event`]s, and the visibility rules
//! that decide which local peer sees which room event.
//!
//! A peer topic carries messages for exactly one peer (an answer, a relayed
//! candidate, a hangup). A room topic carries what every member may see, and each
//! receiving process filters per member with [`Event::visible_to`]: a caller never
//! sees its own offer, a targeted offer is seen only by its target, nobody is told
//! about their own arrival. The same rule decides what `joined.offers` lists.

use switchboard_proto::error::FieldError;
use switchboard_proto::pb::{self, bus_event::Kind, convert};
use switchboard_proto::{CloseReason, OfferId, PeerId, PendingOffer, RoomId, ServerMessage};
use switchboard_telemetry::{Origin, TraceContext};

/// Where an event is published.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Everything addressed to one peer.
    Peer(PeerId),
    /// Everything the members of a room may see.
    Room(RoomId),
}

/// One published event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// For one peer, delivered as is.
    Direct(ServerMessage),
    /// A new pending offer.
    Offer {
        room: RoomId,
        to: Option<PeerId>,
        offer: PendingOffer,
    },
    /// A pending offer is no longer pending.
    OfferClosed {
        offer_id: OfferId,
        room: RoomId,
        caller: PeerId,
        to: Option<PeerId>,
        answerer: Option<PeerId>,
        reason: CloseReason,
    },
    PeerJoined {
        room: RoomId,
        peer: PeerId,
    },
    PeerLeft {
        room: RoomId,
        peer: PeerId,
    },
}

/// Whether `viewer` may be shown a pending offer from `caller`, optionally
/// addressed only `to` one peer.
pub fn offer_visible_to(viewer: &PeerId, caller: &PeerId, to: Option<&PeerId>) -> bool {
    viewer != caller && to.is_none_or(|to| to == viewer)
}

impl Event {
    /// Whether `viewer`, a member of the event's room, is shown this event.
    pub fn visible_to(&self, viewer: &PeerId) -> bool {
        match self {
            Event::Direct(_) => true,
            Event::Offer { to, offer, .. } => offer_visible_to(viewer, &offer.from, to.as_ref()),
            Event::OfferClosed {
                caller,
                to,
                answerer,
                reason,
                ..
            } => {
                let shown = offer_visible_to(viewer, caller, to.as_ref());
                let own_expired = viewer == caller && *reason == CloseReason::Expired;
                (shown || own_expired) && answerer.as_ref() != Some(viewer)
            }
            Event::PeerJoined { peer, .. } | Event::PeerLeft { peer, .. } => peer != viewer,
        }
    }

    /// The message members are sent.
    pub fn to_message(&self) -> ServerMessage {
        match self {
            Event::Direct(msg) => msg.clone(),
            Event::Offer { room, offer, .. } => ServerMessage::Offer {
                offer_id: offer.offer_id,
                room: room.clone(),
                from: offer.from,
                sdp: offer.sdp.clone(),
                candidates: offer.candidates.clone(),
            },
            Event::OfferClosed {
                offer_id,
                room,
                reason,
                ..
            } => ServerMessage::OfferClosed {
                offer_id: *offer_id,
                room: room.clone(),
                reason: *reason,
            },
            Event::PeerJoined { room, peer } => ServerMessage::PeerJoined {
                room: room.clone(),
                peer_id: *peer,
            },
            Event::PeerLeft { room, peer } => ServerMessage::PeerLeft {
                room: room.clone(),
                peer_id: *peer,
            },
        }
    }
}

impl Event {
    /// The protobuf form published on a Redis channel.
    pub fn to_pb(&self, origin: &Origin) -> pb::BusEvent {
        let presence = |room: &RoomId, peer: &PeerId| pb::Presence {
            room: room.to_string(),
            peer_id: peer.to_string(),
        };
        let kind = match self {
            Event::Direct(msg) => Kind::Direct(msg.to_event().unwrap_or_default()),
            Event::Offer { room, to, offer } => Kind::Offer(pb::RoomOffer {
                room: room.to_string(),
                to: to.map(|p| p.to_string()),
                offer: Some(offer.into()),
            }),
            Event::OfferClosed {
                offer_id,
                room,
                caller,
                to,
                answerer,
                reason,
            } => Kind::OfferClosed(pb::RoomOfferClosed {
                offer_id: offer_id.to_string(),
                room: room.to_string(),
                caller: caller.to_string(),
                to: to.map(|p| p.to_string()),
                answerer: answerer.map(|p| p.to_string()),
                reason: pb::CloseReason::from(*reason).into(),
            }),
            Event::PeerJoined { room, peer } => Kind::PeerJoined(presence(room, peer)),
            Event::PeerLeft { room, peer } => Kind::PeerLeft(presence(room, peer)),
        };
        pb::BusEvent {
            kind: Some(kind),
            origin: Some(origin_to_pb(origin)),
            sender: 0,
        }
    }

    /// An event received from the bus, validated like any other input. `Ok(None)`
    /// for a bus-internal message (a readiness probe).
    pub fn from_pb(event: pb::BusEvent) -> Result<Option<Event>, FieldError> {
        let peer = |s: Option<String>| s.as_deref().map(convert::peer).transpose();
        Ok(Some(
            match event.kind.ok_or_else(|| convert::missing("event"))? {
                Kind::Direct(event) => Event::Direct(event.try_into()?),
                Kind::Offer(o) => Event::Offer {
                    room: convert::room(&o.room)?,
                    to: peer(o.to)?,
                    offer: o
                        .offer
                        .ok_or_else(|| convert::missing("offer"))?
                        .try_into()?,
                },
                Kind::OfferClosed(c) => Event::OfferClosed {
                    offer_id: convert::offer_id(&c.offer_id)?,
                    room: convert::room(&c.room)?,
                    caller: convert::peer(&c.caller)?,
                    to: peer(c.to)?,
                    answerer: peer(c.answerer)?,
                    reason: convert::close_reason(c.reason)?,
                },
                Kind::PeerJoined(p) => Event::PeerJoined {
                    room: convert::room(&p.room)?,
                    peer: convert::peer(&p.peer_id)?,
                },
                Kind::PeerLeft(p) => Event::PeerLeft {
                    room: convert::room(&p.room)?,
                    peer: convert::peer(&p.peer_id)?,
                },
                Kind::Probe(_) => return Ok(None),
            },
        ))
    }
}

/// An [`Origin`] as the gRPC and bus messages carry it.
pub(crate) fn origin_to_pb(origin: &Origin) -> pb::Origin {
    pb::Origin {
        received_at_unix_micros: origin.received_at_micros,
        trace_context: origin
            .trace
            .pairs()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    }
}

/// A received [`Origin`]; absent means unknown.
pub(crate) fn origin_from_pb(origin: Option<pb::Origin>) -> Origin {
    let origin = origin.unwrap_or_default();
    Origin {
        received_at_micros: origin.received_at_unix_micros,
        trace: TraceContext::from_pairs(origin.trace_context),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(
        caller: PeerId,
        to: Option<PeerId>,
        answerer: Option<PeerId>,
        reason: CloseReason,
    ) -> Event {
        Event::OfferClosed {
            offer_id: OfferId::random(),
            room: "r".parse().expect("room"),
            caller,
            to,
            answerer,
            reason,
        }
    }

    #[test]
    fn offers_are_hidden_from_their_caller_and_from_non_targets() {
        let [caller, target, other] = [PeerId::random(), PeerId::random(), PeerId::random()];
        assert!(!offer_visible_to(&caller, &caller, None));
        assert!(offer_visible_to(&other, &caller, None));
        assert!(offer_visible_to(&target, &caller, Some(&target)));
        assert!(!offer_visible_to(&other, &caller, Some(&target)));
    }

    #[test]
    fn offer_closed_goes_to_those_shown_the_offer_but_not_the_winner() {
        let [caller, winner, other] = [PeerId::random(), PeerId::random(), PeerId::random()];
        let answered = closed(caller, None, Some(winner), CloseReason::Answered);
        assert!(answered.visible_to(&other));
        assert!(!answered.visible_to(&winner));
        assert!(!answered.visible_to(&caller));

        let expired = closed(caller, Some(winner), None, CloseReason::Expired);
        assert!(
            expired.visible_to(&caller),
            "the caller learns its offer expired"
        );
        assert!(expired.visible_to(&winner));
        assert!(!expired.visible_to(&other), "never shown a targeted offer");

        let withdrawn = closed(caller, None, None, CloseReason::Withdrawn);
        assert!(!withdrawn.visible_to(&caller));
    }

    #[test]
    fn events_survive_the_bus_encoding() {
        let room: RoomId = "r".parse().expect("room");
        let (a, b) = (PeerId::random(), PeerId::random());
        let sdp = switchboard_proto::Sdp::parse("v=0").expect("sdp");
        let events = [
            Event::Direct(ServerMessage::Hangup {
                offer_id: OfferId::random(),
                from: a,
            }),
            Event::Offer {
                room: room.clone(),
                to: Some(b),
                offer: PendingOffer {
                    offer_id: OfferId::random(),
                    from: a,
                    sdp,
                    candidates: vec![],
                },
            },
            closed(a, None, Some(b), CloseReason::Answered),
            Event::PeerJoined {
                room: room.clone(),
                peer: a,
            },
            Event::PeerLeft { room, peer: b },
        ];
        let origin = Origin {
            received_at_micros: 1_700_000_000_000_000,
            trace: TraceContext::from_pairs([(
                "traceparent".to_owned(),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
            )]),
        };
        for event in events {
            let mut encoded = event.to_pb(&origin);
            assert_eq!(origin_from_pb(encoded.origin.take()), origin);
            assert_eq!(Event::from_pb(encoded).expect("valid"), Some(event));
        }
    }

    #[test]
    fn nobody_hears_of_their_own_presence() {
        let [me, you] = [PeerId::random(), PeerId::random()];
        let joined = Event::PeerJoined {
            room: "r".parse().expect("room"),
            peer: me,
        };
        assert!(!joined.visible_to(&me));
        assert!(joined.visible_to(&you));
    }
}
