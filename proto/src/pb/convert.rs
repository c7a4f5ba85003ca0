//! Conversions between the generated protobuf types and the client protocol
//! types. Conversions *into* the protocol types validate exactly like parsing a
//! browser's frame (same newtypes, same limits, same error codes): a frame from
//! another process is untrusted input too.

use std::str::FromStr;

use super::generated as pb;
use crate::client::ClientMessage;
use crate::error::{ErrorCode, FieldError};
use crate::ids::{InvalidId, OfferId, PeerId, RoomId};
use crate::payload::{Candidate, Sdp};
use crate::server::{CloseReason, PendingOffer, ServerMessage};

/// Parses an id or room name, reporting a bad one with `code`.
fn parse<T: FromStr<Err = InvalidId>>(s: &str, code: ErrorCode) -> Result<T, FieldError> {
    s.parse()
        .map_err(|e: InvalidId| FieldError::new(code, e.to_string()))
}

pub fn room(s: &str) -> Result<RoomId, FieldError> {
    parse(s, ErrorCode::InvalidRoom)
}

pub fn peer(s: &str) -> Result<PeerId, FieldError> {
    parse(s, ErrorCode::BadMessage)
}

pub fn offer_id(s: &str) -> Result<OfferId, FieldError> {
    parse(s, ErrorCode::OfferNotFound)
}

/// A required message field that was absent.
pub fn missing(what: &str) -> FieldError {
    FieldError::new(ErrorCode::BadMessage, format!("missing {what}"))
}

impl From<&Candidate> for pb::Candidate {
    fn from(c: &Candidate) -> Self {
        Self {
            candidate: c.candidate.clone(),
            sdp_mid: c.sdp_mid.clone(),
            sdp_m_line_index: c.sdp_m_line_index.map(u32::from),
            username_fragment: c.username_fragment.clone(),
        }
    }
}

impl TryFrom<pb::Candidate> for Candidate {
    type Error = FieldError;

    fn try_from(c: pb::Candidate) -> Result<Self, FieldError> {
        let index = c
            .sdp_m_line_index
            .map(u16::try_from)
            .transpose()
            .map_err(|_| FieldError::new(ErrorCode::BadMessage, "sdpMLineIndex out of range"))?;
        Candidate::new(c.candidate, c.sdp_mid, index, c.username_fragment)
    }
}

fn candidates(list: Vec<pb::Candidate>) -> Result<Vec<Candidate>, FieldError> {
    list.into_iter().map(Candidate::try_from).collect()
}

impl From<&PendingOffer> for pb::PendingOffer {
    fn from(o: &PendingOffer) -> Self {
        Self {
            offer_id: o.offer_id.to_string(),
            from: o.from.to_string(),
            sdp: o.sdp.as_str().to_owned(),
            candidates: o.candidates.iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::PendingOffer> for PendingOffer {
    type Error = FieldError;

    fn try_from(o: pb::PendingOffer) -> Result<Self, FieldError> {
        Ok(Self {
            offer_id: offer_id(&o.offer_id)?,
            from: peer(&o.from)?,
            sdp: Sdp::parse(&o.sdp)?,
            candidates: candidates(o.candidates)?,
        })
    }
}

impl From<CloseReason> for pb::CloseReason {
    fn from(r: CloseReason) -> Self {
        match r {
            CloseReason::Answered => Self::Answered,
            CloseReason::Withdrawn => Self::Withdrawn,
            CloseReason::Expired => Self::Expired,
            CloseReason::OffererLeft => Self::OffererLeft,
        }
    }
}

/// The close reason carried as its enum number.
pub fn close_reason(n: i32) -> Result<CloseReason, FieldError> {
    match pb::CloseReason::try_from(n) {
        Ok(pb::CloseReason::Answered) => Ok(CloseReason::Answered),
        Ok(pb::CloseReason::Withdrawn) => Ok(CloseReason::Withdrawn),
        Ok(pb::CloseReason::Expired) => Ok(CloseReason::Expired),
        Ok(pb::CloseReason::OffererLeft) => Ok(CloseReason::OffererLeft),
        _ => Err(FieldError::new(
            ErrorCode::BadMessage,
            "unknown close reason",
        )),
    }
}

impl From<ErrorCode> for pb::ErrorCode {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::BadMessage => Self::BadMessage,
            ErrorCode::UnknownType => Self::UnknownType,
            ErrorCode::TooLarge => Self::TooLarge,
            ErrorCode::InvalidSdp => Self::InvalidSdp,
            ErrorCode::InvalidRoom => Self::InvalidRoom,
            ErrorCode::NotInRoom => Self::NotInRoom,
            ErrorCode::OfferNotFound => Self::OfferNotFound,
            ErrorCode::OfferTaken => Self::OfferTaken,
            ErrorCode::NotAllowed => Self::NotAllowed,
            ErrorCode::RateLimited => Self::RateLimited,
            ErrorCode::Unauthorized => Self::Unauthorized,
            ErrorCode::Unavailable => Self::Unavailable,
            ErrorCode::Internal => Self::Internal,
        }
    }
}

/// The error code carried as its enum number; unknown numbers are `internal`.
pub fn error_code(n: i32) -> ErrorCode {
    let code = pb::ErrorCode::try_from(n).unwrap_or(pb::ErrorCode::Unspecified);
    ErrorCode::ALL
        .into_iter()
        .find(|c| pb::ErrorCode::from(*c) == code)
        .unwrap_or(ErrorCode::Internal)
}

impl ClientMessage {
    /// The gRPC request body for a message the room handles (`None` for `ping`,
    /// which the edge answers itself).
    pub fn to_request(&self) -> Option<pb::request::Body> {
        use pb::request::Body;
        Some(match self {
            ClientMessage::Join { room } => Body::Join(pb::Join {
                room: room.to_string(),
            }),
            ClientMessage::Leave { room } => Body::Leave(pb::Leave {
                room: room.to_string(),
            }),
            ClientMessage::Offer { room, sdp, to } => Body::Offer(pb::Offer {
                room: room.to_string(),
                sdp: sdp.as_str().to_owned(),
                to: to.map(|p| p.to_string()),
            }),
            ClientMessage::Candidate {
                offer_id,
                candidate,
            } => Body::Candidate(pb::AddCandidate {
                offer_id: offer_id.to_string(),
                candidate: Some(candidate.into()),
            }),
            ClientMessage::Answer { offer_id, sdp } => Body::Answer(pb::Answer {
                offer_id: offer_id.to_string(),
                sdp: sdp.as_str().to_owned(),
            }),
            ClientMessage::Hangup { offer_id } => Body::Hangup(pb::Hangup {
                offer_id: offer_id.to_string(),
            }),
            ClientMessage::Ping => return None,
        })
    }
}

impl TryFrom<pb::request::Body> for ClientMessage {
    type Error = FieldError;

    fn try_from(body: pb::request::Body) -> Result<Self, FieldError> {
        use pb::request::Body;
        Ok(match body {
            Body::Join(j) => ClientMessage::Join {
                room: room(&j.room)?,
            },
            Body::Leave(l) => ClientMessage::Leave {
                room: room(&l.room)?,
            },
            Body::Offer(o) => ClientMessage::Offer {
                room: room(&o.room)?,
                sdp: Sdp::parse(&o.sdp)?,
                to: o.to.as_deref().map(peer).transpose()?,
            },
            Body::Candidate(c) => ClientMessage::Candidate {
                offer_id: offer_id(&c.offer_id)?,
                candidate: c
                    .candidate
                    .ok_or_else(|| missing("candidate"))?
                    .try_into()?,
            },
            Body::Answer(a) => ClientMessage::Answer {
                offer_id: offer_id(&a.offer_id)?,
                sdp: Sdp::parse(&a.sdp)?,
            },
            Body::Hangup(h) => ClientMessage::Hangup {
                offer_id: offer_id(&h.offer_id)?,
            },
            Body::CandidateBurst(_) => {
                return Err(FieldError::new(
                    ErrorCode::BadMessage,
                    "a candidate burst is several messages, not one",
                ));
            }
        })
    }
}

impl ServerMessage {
    /// The protobuf form of an event (`None` for replies, which have their own).
    pub fn to_event(&self) -> Option<pb::ServerEvent> {
        use pb::server_event::Kind;
        let kind = match self {
            ServerMessage::Offer {
                offer_id,
                room,
                from,
                sdp,
                candidates,
            } => Kind::Offer(pb::OfferEvent {
                room: room.to_string(),
                offer: Some(pb::PendingOffer {
                    offer_id: offer_id.to_string(),
                    from: from.to_string(),
                    sdp: sdp.as_str().to_owned(),
                    candidates: candidates.iter().map(Into::into).collect(),
                }),
            }),
            ServerMessage::Answer {
                offer_id,
                from,
                sdp,
            } => Kind::Answer(pb::AnswerEvent {
                offer_id: offer_id.to_string(),
                from: from.to_string(),
                sdp: sdp.as_str().to_owned(),
            }),
            ServerMessage::Candidate {
                offer_id,
                from,
                candidate,
            } => Kind::Candidate(pb::CandidateEvent {
                offer_id: offer_id.to_string(),
                from: from.to_string(),
                candidate: Some(candidate.into()),
            }),
            ServerMessage::OfferClosed {
                offer_id,
                room,
                reason,
            } => Kind::OfferClosed(pb::OfferClosedEvent {
                offer_id: offer_id.to_string(),
                room: room.to_string(),
                reason: pb::CloseReason::from(*reason).into(),
            }),
            ServerMessage::Hangup { offer_id, from } => Kind::Hangup(pb::HangupEvent {
                offer_id: offer_id.to_string(),
                from: from.to_string(),
            }),
            ServerMessage::PeerJoined { room, peer_id } => {
                Kind::PeerJoined(presence(room, peer_id))
            }
            ServerMessage::PeerLeft { room, peer_id } => Kind::PeerLeft(presence(room, peer_id)),
            _ => return None,
        };
        Some(pb::ServerEvent { kind: Some(kind) })
    }
}

fn presence(room: &RoomId, peer: &PeerId) -> pb::Presence {
    pb::Presence {
        room: room.to_string(),
        peer_id: peer.to_string(),
    }
}

impl TryFrom<pb::ServerEvent> for ServerMessage {
    type Error = FieldError;

    fn try_from(event: pb::ServerEvent) -> Result<Self, FieldError> {
        use pb::server_event::Kind;
        Ok(match event.kind.ok_or_else(|| missing("event"))? {
            Kind::Offer(o) => {
                let offer = PendingOffer::try_from(o.offer.ok_or_else(|| missing("offer"))?)?;
                ServerMessage::Offer {
                    offer_id: offer.offer_id,
                    room: room(&o.room)?,
                    from: offer.from,
                    sdp: offer.sdp,
                    candidates: offer.candidates,
                }
            }
            Kind::Answer(a) => ServerMessage::Answer {
                offer_id: offer_id(&a.offer_id)?,
                from: peer(&a.from)?,
                sdp: Sdp::parse(&a.sdp)?,
            },
            Kind::Candidate(c) => ServerMessage::Candidate {
                offer_id: offer_id(&c.offer_id)?,
                from: peer(&c.from)?,
                candidate: c
                    .candidate
                    .ok_or_else(|| missing("candidate"))?
                    .try_into()?,
            },
            Kind::OfferClosed(c) => ServerMessage::OfferClosed {
                offer_id: offer_id(&c.offer_id)?,
                room: room(&c.room)?,
                reason: close_reason(c.reason)?,
            },
            Kind::Hangup(h) => ServerMessage::Hangup {
                offer_id: offer_id(&h.offer_id)?,
                from: peer(&h.from)?,
            },
            Kind::PeerJoined(p) => ServerMessage::PeerJoined {
                room: room(&p.room)?,
                peer_id: peer(&p.peer_id)?,
            },
            Kind::PeerLeft(p) => ServerMessage::PeerLeft {
                room: room(&p.room)?,
                peer_id: peer(&p.peer_id)?,
            },
        })
    }
}

/// Candidates of a reply or record, validated.
pub fn candidate_list(list: Vec<pb::Candidate>) -> Result<Vec<Candidate>, FieldError> {
    candidates(list)
}

/// The gRPC request body for candidates for one offer that a client sent
/// together.
pub fn candidate_burst(offer_id: &OfferId, list: &[Candidate]) -> pb::request::Body {
    pb::request::Body::CandidateBurst(pb::CandidateBurst {
        offer_id: offer_id.to_string(),
        candidates: list.iter().map(Into::into).collect(),
    })
}

/// The offer and candidates of a [`candidate_burst`] body.
pub fn from_candidate_burst(
    burst: pb::CandidateBurst,
) -> Result<(OfferId, Vec<Candidate>), FieldError> {
    Ok((offer_id(&burst.offer_id)?, candidates(burst.candidates)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate() -> Candidate {
        Candidate::new(
            "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
            Some("0".into()),
            Some(0),
            None,
        )
        .expect("valid")
    }

    #[test]
    fn requests_round_trip() {
        let room: RoomId = "lobby".parse().expect("room");
        let sdp = Sdp::parse("v=0\r\n").expect("sdp");
        let offer = OfferId::random();
        let messages = [
            ClientMessage::Join { room: room.clone() },
            ClientMessage::Leave { room: room.clone() },
            ClientMessage::Offer {
                room: room.clone(),
                sdp: sdp.clone(),
                to: Some(PeerId::random()),
            },
            ClientMessage::Offer {
                room,
                sdp: sdp.clone(),
                to: None,
            },
            ClientMessage::Candidate {
                offer_id: offer,
                candidate: candidate(),
            },
            ClientMessage::Answer {
                offer_id: offer,
                sdp,
            },
            ClientMessage::Hangup { offer_id: offer },
        ];
        for msg in messages {
            let body = msg.to_request().expect("a room request");
            assert_eq!(ClientMessage::try_from(body).expect("valid"), msg);
        }
        assert!(ClientMessage::Ping.to_request().is_none());
    }

    #[test]
    fn candidate_bursts_round_trip_and_are_not_one_message() {
        let offer = OfferId::random();
        let mut second = candidate();
        second.candidate = "candidate:2 1 udp 1 127.0.0.1 10 typ host".into();
        let list = vec![candidate(), second];
        let pb::request::Body::CandidateBurst(burst) = candidate_burst(&offer, &list) else {
            panic!("a burst body");
        };
        assert_eq!(
            from_candidate_burst(burst.clone()).expect("valid"),
            (offer, list)
        );
        let err = ClientMessage::try_from(pb::request::Body::CandidateBurst(burst))
            .expect_err("a burst is not one client message");
        assert_eq!(err.code, ErrorCode::BadMessage);
    }

    #[test]
    fn events_round_trip() {
        let room: RoomId = "lobby".parse().expect("room");
        let (offer_id, from) = (OfferId::random(), PeerId::random());
        let sdp = Sdp::parse("v=0\r\n").expect("sdp");
        let events = [
            ServerMessage::Offer {
                offer_id,
                room: room.clone(),
                from,
                sdp: sdp.clone(),
                candidates: vec![candidate()],
            },
            ServerMessage::Answer {
                offer_id,
                from,
                sdp,
            },
            ServerMessage::Candidate {
                offer_id,
                from,
                candidate: candidate(),
            },
            ServerMessage::OfferClosed {
                offer_id,
                room: room.clone(),
                reason: CloseReason::OffererLeft,
            },
            ServerMessage::Hangup { offer_id, from },
            ServerMessage::PeerJoined {
                room: room.clone(),
                peer_id: from,
            },
            ServerMessage::PeerLeft {
                room,
                peer_id: from,
            },
        ];
        for msg in events {
            let event = msg.to_event().expect("an event");
            assert_eq!(ServerMessage::try_from(event).expect("valid"), msg);
        }
        assert!(ServerMessage::Pong { req: None }.to_event().is_none());
    }

    #[test]
    fn invalid_input_from_the_wire_is_rejected_with_its_code() {
        use pb::request::Body;
        let bad_room = Body::Join(pb::Join {
            room: "no spaces".into(),
        });
        assert_eq!(
            ClientMessage::try_from(bad_room).map_err(|e| e.code),
            Err(ErrorCode::InvalidRoom)
        );
        let bad_sdp = Body::Answer(pb::Answer {
            offer_id: OfferId::random().to_string(),
            sdp: "x".into(),
        });
        assert_eq!(
            ClientMessage::try_from(bad_sdp).map_err(|e| e.code),
            Err(ErrorCode::InvalidSdp)
        );
        for code in ErrorCode::ALL {
            assert_eq!(error_code(pb::ErrorCode::from(code).into()), code);
        }
        assert_eq!(error_code(999), ErrorCode::Internal);
    }
}
