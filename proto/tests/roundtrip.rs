//! Property test: every client and server message survives a trip through its
//! JSON encoding unchanged, for arbitrary valid field values.

use proptest::prelude::*;
use switchboard_proto::{
    Candidate, ClientFrame, ClientMessage, CloseReason, ErrorCode, IceServer, OfferId, PeerId,
    PendingOffer, Req, RoomId, Sdp, ServerMessage, client,
};

fn peer() -> impl Strategy<Value = PeerId> {
    any::<u8>().prop_map(|_| PeerId::random())
}

fn offer_id() -> impl Strategy<Value = OfferId> {
    any::<u8>().prop_map(|_| OfferId::random())
}

fn room() -> impl Strategy<Value = RoomId> {
    "[A-Za-z0-9_.~-]{1,128}".prop_map(|s| s.parse().expect("valid room"))
}

fn req() -> impl Strategy<Value = Option<Req>> {
    proptest::option::of((0..=Req::MAX).prop_map(|n| Req::new(n).expect("in range")))
}

fn sdp() -> impl Strategy<Value = Sdp> {
    "(\\PC|\r\n){0,300}".prop_map(|body| Sdp::parse(&format!("v=0\r\n{body}")).expect("valid sdp"))
}

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("\\PC{{0,{max}}}")).expect("regex")
}

fn candidate() -> impl Strategy<Value = Candidate> {
    (
        text(200),
        proptest::option::of(text(8)),
        proptest::option::of(any::<u16>()),
        proptest::option::of(text(16)),
    )
        .prop_map(
            |(candidate, sdp_mid, sdp_m_line_index, username_fragment)| Candidate {
                candidate,
                sdp_mid,
                sdp_m_line_index,
                username_fragment,
            },
        )
}

fn pending_offer() -> impl Strategy<Value = PendingOffer> {
    (
        offer_id(),
        peer(),
        sdp(),
        proptest::collection::vec(candidate(), 0..4),
    )
        .prop_map(|(offer_id, from, sdp, candidates)| PendingOffer {
            offer_id,
            from,
            sdp,
            candidates,
        })
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        room().prop_map(|room| ClientMessage::Join { room }),
        room().prop_map(|room| ClientMessage::Leave { room }),
        (room(), sdp(), proptest::option::of(peer()))
            .prop_map(|(room, sdp, to)| ClientMessage::Offer { room, sdp, to }),
        (offer_id(), candidate()).prop_map(|(offer_id, candidate)| ClientMessage::Candidate {
            offer_id,
            candidate
        }),
        (offer_id(), sdp()).prop_map(|(offer_id, sdp)| ClientMessage::Answer { offer_id, sdp }),
        offer_id().prop_map(|offer_id| ClientMessage::Hangup { offer_id }),
        Just(ClientMessage::Ping),
    ]
}

fn close_reason() -> impl Strategy<Value = CloseReason> {
    prop_oneof![
        Just(CloseReason::Answered),
        Just(CloseReason::Withdrawn),
        Just(CloseReason::Expired),
        Just(CloseReason::OffererLeft),
    ]
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    let ice = (
        text(40),
        proptest::option::of(text(8)),
        proptest::option::of(text(8)),
    )
        .prop_map(|(urls, username, credential)| IceServer {
            urls,
            username,
            credential,
        });
    prop_oneof![
        (
            peer(),
            proptest::collection::vec(ice, 0..3),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(peer_id, ice_servers, m, h)| {
                ServerMessage::Welcome {
                    peer_id,
                    ice_servers,
                    max_message_bytes: m as usize,
                    heartbeat_ms: h.into(),
                }
            }),
        (
            req(),
            room(),
            proptest::collection::vec(pending_offer(), 0..3)
        )
            .prop_map(|(req, room, offers)| ServerMessage::Joined { req, room, offers }),
        (req(), offer_id())
            .prop_map(|(req, offer_id)| ServerMessage::OfferCreated { req, offer_id }),
        (room(), pending_offer()).prop_map(|(room, o)| ServerMessage::Offer {
            offer_id: o.offer_id,
            room,
            from: o.from,
            sdp: o.sdp,
            candidates: o.candidates
        }),
        (
            req(),
            offer_id(),
            proptest::collection::vec(candidate(), 0..4)
        )
            .prop_map(|(req, offer_id, candidates)| ServerMessage::Answered {
                req,
                offer_id,
                candidates
            }),
        (offer_id(), peer(), sdp()).prop_map(|(offer_id, from, sdp)| ServerMessage::Answer {
            offer_id,
            from,
            sdp
        }),
        (offer_id(), peer(), candidate()).prop_map(|(offer_id, from, candidate)| {
            ServerMessage::Candidate {
                offer_id,
                from,
                candidate,
            }
        }),
        (offer_id(), room(), close_reason()).prop_map(|(offer_id, room, reason)| {
            ServerMessage::OfferClosed {
                offer_id,
                room,
                reason,
            }
        }),
        (offer_id(), peer()).prop_map(|(offer_id, from)| ServerMessage::Hangup { offer_id, from }),
        (room(), peer()).prop_map(|(room, peer_id)| ServerMessage::PeerJoined { room, peer_id }),
        (room(), peer()).prop_map(|(room, peer_id)| ServerMessage::PeerLeft { room, peer_id }),
        req().prop_map(|req| ServerMessage::Pong { req }),
        req().prop_filter_map("ok needs a req", |req| req
            .map(|req| ServerMessage::Ok { req })),
        (
            req(),
            proptest::sample::select(ErrorCode::ALL.to_vec()),
            text(60)
        )
            .prop_map(|(req, code, message)| ServerMessage::Error { req, code, message }),
    ]
}

proptest! {
    #[test]
    fn client_frames_round_trip(req in req(), message in client_message()) {
        let frame = ClientFrame::new(req, message);
        let json = serde_json::to_string(&frame).expect("serialize");
        prop_assert_eq!(client::parse(&json).expect("parse"), frame);
    }

    #[test]
    fn server_messages_round_trip(message in server_message()) {
        let json = message.to_json();
        let back: ServerMessage = serde_json::from_str(&json).expect("parse");
        prop_assert_eq!(back, message);
    }

    #[test]
    fn parsing_arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = client::parse(&text);
    }
}
