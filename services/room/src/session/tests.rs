//! Unit tests of the room rules over the in-memory backends, with tokio's clock
//! paused so TTLs can be crossed instantly.

use std::time::Duration;

use switchboard_proto::{
    Candidate, ClientMessage, CloseReason, OfferId, PeerId, Req, RoomId, Sdp, ServerMessage,
};

use switchboard_telemetry::Origin;

use crate::api::{Goodbye, RoomService, RoomSession};
use crate::bus::memory::MemoryBus;
use crate::config::RoomConfig;
use crate::error::RoomError;
use crate::outbox::{Outbox, OutboxReceiver};
use crate::room::Room;
use crate::session::{Reply, Session};
use crate::store::memory::MemoryStore;

type Memory = Session<MemoryStore, MemoryBus>;

struct Peer {
    session: Memory,
    events: OutboxReceiver,
}

impl Peer {
    async fn connect(room: &Room<MemoryStore, MemoryBus>) -> Self {
        let (outbox, events) = Outbox::channel(64);
        let session = room
            .connect(PeerId::random(), outbox)
            .await
            .expect("connect");
        Self { session, events }
    }

    fn id(&self) -> PeerId {
        self.session.peer_id()
    }

    async fn send(&mut self, msg: ClientMessage) -> Result<Reply, RoomError> {
        self.session.handle(msg, Origin::default()).await
    }

    async fn join(&mut self, room: &RoomId) {
        self.send(ClientMessage::Join { room: room.clone() })
            .await
            .expect("join");
    }

    async fn offer(&mut self, room: &RoomId) -> OfferId {
        let msg = ClientMessage::Offer {
            room: room.clone(),
            sdp: sdp(),
            to: None,
        };
        match self.send(msg).await.expect("offer") {
            Reply::OfferCreated { offer_id } => offer_id,
            other => panic!("{other:?}"),
        }
    }

    async fn candidate(&mut self, offer_id: OfferId, n: u32) -> Result<Reply, RoomError> {
        let candidate = candidate(n);
        self.send(ClientMessage::Candidate {
            offer_id,
            candidate,
        })
        .await
    }

    async fn answer(&mut self, offer_id: OfferId) -> Result<Reply, RoomError> {
        self.send(ClientMessage::Answer {
            offer_id,
            sdp: sdp(),
        })
        .await
    }

    /// Every event queued so far (delivery is synchronous in memory).
    fn events(&mut self) -> Vec<ServerMessage> {
        let mut out = Vec::new();
        while let Some(Ok(delivery)) = futures_now(self.events.recv()) {
            out.push(delivery.msg.clone());
        }
        out
    }
}

/// Polls a future once.
fn futures_now<F: std::future::Future>(f: F) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

fn sdp() -> Sdp {
    Sdp::parse("v=0\r\n").expect("sdp")
}

fn candidate(n: u32) -> Candidate {
    Candidate {
        candidate: format!("candidate:{n}"),
        sdp_mid: None,
        sdp_m_line_index: Some(0),
        username_fragment: None,
    }
}

fn lobby() -> RoomId {
    "lobby".parse().expect("room")
}

fn closed(events: &[ServerMessage]) -> Vec<(OfferId, CloseReason)> {
    events
        .iter()
        .filter_map(|m| match m {
            ServerMessage::OfferClosed {
                offer_id, reason, ..
            } => Some((*offer_id, *reason)),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn pending_offers_expire_after_their_ttl_and_both_sides_hear_of_it() {
    let room = Room::in_memory(RoomConfig::default());
    let (mut caller, mut viewer) = (Peer::connect(&room).await, Peer::connect(&room).await);
    caller.join(&lobby()).await;
    viewer.join(&lobby()).await;
    let offer_id = caller.offer(&lobby()).await;
    viewer.events();

    tokio::time::advance(Duration::from_secs(119)).await;
    assert_eq!(room.sweep_expired().await.expect("sweep"), 0, "not yet");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(room.sweep_expired().await.expect("sweep"), 1);
    assert_eq!(
        closed(&viewer.events()),
        vec![(offer_id, CloseReason::Expired)]
    );
    assert_eq!(
        closed(&caller.events()),
        vec![(offer_id, CloseReason::Expired)]
    );
    let answer = viewer.answer(offer_id).await;
    assert!(matches!(answer, Err(RoomError::OfferNotFound)));
}

#[tokio::test(start_paused = true)]
async fn an_expired_offer_is_gone_even_before_the_sweep() {
    let room = Room::in_memory(RoomConfig::default());
    let mut caller = Peer::connect(&room).await;
    caller.join(&lobby()).await;
    let offer_id = caller.offer(&lobby()).await;
    tokio::time::advance(Duration::from_secs(121)).await;
    let mut late = Peer::connect(&room).await;
    let joined = late
        .send(ClientMessage::Join { room: lobby() })
        .await
        .expect("join");
    assert_eq!(
        joined,
        Reply::Joined {
            room: lobby(),
            offers: vec![],
            traces: vec![],
        }
    );
    let err = caller
        .send(ClientMessage::Candidate {
            offer_id,
            candidate: candidate(1),
        })
        .await;
    assert!(matches!(err, Err(RoomError::OfferNotFound)));
}

#[tokio::test(start_paused = true)]
async fn the_expiry_task_sweeps_on_its_own() {
    let config = RoomConfig {
        offer_ttl: Duration::from_secs(5),
        ..RoomConfig::default()
    };
    let room = Room::in_memory(config);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let sweeper = tokio::spawn(room.clone().run_expiry(shutdown.clone()));
    let (mut caller, mut viewer) = (Peer::connect(&room).await, Peer::connect(&room).await);
    caller.join(&lobby()).await;
    viewer.join(&lobby()).await;
    let offer_id = caller.offer(&lobby()).await;
    viewer.events();
    // The paused clock jumps straight to the sweep that finds the offer expired.
    let event = tokio::time::timeout(Duration::from_secs(10), viewer.events.recv())
        .await
        .expect("expiry notice within a sweep of the TTL")
        .expect("not overflowed");
    assert!(
        matches!(event.msg, ServerMessage::OfferClosed { offer_id: id, reason: CloseReason::Expired, .. } if id == offer_id)
    );
    shutdown.cancel();
    sweeper.await.expect("sweeper stops");
}

#[tokio::test]
async fn buffered_candidates_go_to_the_winner_then_candidates_are_relayed() {
    let room = Room::in_memory(RoomConfig::default());
    let (mut caller, mut callee) = (Peer::connect(&room).await, Peer::connect(&room).await);
    caller.join(&lobby()).await;
    callee.join(&lobby()).await;
    let offer_id = caller.offer(&lobby()).await;
    for n in 0..3 {
        let r = caller
            .send(ClientMessage::Candidate {
                offer_id,
                candidate: candidate(n),
            })
            .await;
        assert_eq!(r.expect("buffered"), Reply::Done);
    }
    let won = callee.answer(offer_id).await.expect("answer");
    assert_eq!(
        won,
        Reply::Answered {
            offer_id,
            candidates: (0..3).map(candidate).collect()
        }
    );
    caller.events();
    caller
        .send(ClientMessage::Candidate {
            offer_id,
            candidate: candidate(9),
        })
        .await
        .expect("relay");
    let relayed = callee
        .events()
        .into_iter()
        .find(|m| matches!(m, ServerMessage::Candidate { .. }));
    assert_eq!(
        relayed,
        Some(ServerMessage::Candidate {
            offer_id,
            from: caller.id(),
            candidate: candidate(9)
        })
    );
}

#[tokio::test]
async fn only_the_first_answer_wins() {
    let room = Room::in_memory(RoomConfig::default());
    let mut caller = Peer::connect(&room).await;
    caller.join(&lobby()).await;
    let offer_id = caller.offer(&lobby()).await;
    let mut callees = Vec::new();
    for _ in 0..8 {
        let mut p = Peer::connect(&room).await;
        p.join(&lobby()).await;
        callees.push(p);
    }
    let mut answers = Vec::new();
    for p in &mut callees {
        answers.push(p.answer(offer_id).await);
    }
    let wins = answers
        .iter()
        .filter(|r| matches!(r, Ok(Reply::Answered { .. })))
        .count();
    let taken = answers
        .iter()
        .filter(|r| matches!(r, Err(RoomError::OfferTaken)))
        .count();
    assert_eq!((wins, taken), (1, 7));
}

/// A caller with an answered call (to the callee) and another pending offer,
/// both in the lobby; the callee's events read.
async fn answered_call_and_pending_offer()
-> (Room<MemoryStore, MemoryBus>, Peer, Peer, OfferId, OfferId) {
    let room = Room::in_memory(RoomConfig::default());
    let (mut caller, mut callee) = (Peer::connect(&room).await, Peer::connect(&room).await);
    caller.join(&lobby()).await;
    callee.join(&lobby()).await;
    let call = caller.offer(&lobby()).await;
    callee.answer(call).await.expect("answer");
    let pending = caller.offer(&lobby()).await;
    callee.events();
    (room, caller, callee, call, pending)
}

#[tokio::test]
async fn disconnect_withdraws_pending_offers_and_hangs_up_calls() {
    let (room, caller, mut callee, call, pending) = answered_call_and_pending_offer().await;
    let caller_id = caller.id();
    caller.session.close(Goodbye::Left).await;
    let events = callee.events();
    assert!(
        events.contains(&ServerMessage::Hangup {
            offer_id: call,
            from: caller_id
        }),
        "{events:?}"
    );
    assert_eq!(closed(&events), vec![(pending, CloseReason::OffererLeft)]);
    assert!(events.contains(&ServerMessage::PeerLeft {
        room: lobby(),
        peer_id: caller_id
    }));
    assert_eq!(room.hub().peer_count(), 1);
}

#[tokio::test]
async fn a_peer_moving_off_a_draining_edge_keeps_its_calls_but_withdraws_its_offers() {
    let (_room, caller, mut callee, call, pending) = answered_call_and_pending_offer().await;
    let caller_id = caller.id();
    caller.session.close(Goodbye::Moving).await;
    let events = callee.events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ServerMessage::Hangup { .. })),
        "the call carries on: {events:?}"
    );
    assert_eq!(closed(&events), vec![(pending, CloseReason::OffererLeft)]);
    assert!(events.contains(&ServerMessage::PeerLeft {
        room: lobby(),
        peer_id: caller_id
    }));
    // The callee can still end the call (its counterpart is simply gone).
    callee
        .send(ClientMessage::Hangup { offer_id: call })
        .await
        .expect("hangup");
}

#[tokio::test(start_paused = true)]
async fn answered_calls_are_forgotten_silently_after_the_call_ttl() {
    let room = Room::in_memory(RoomConfig::default());
    let (mut caller, mut callee) = (Peer::connect(&room).await, Peer::connect(&room).await);
    caller.join(&lobby()).await;
    callee.join(&lobby()).await;
    let call = caller.offer(&lobby()).await;
    callee.answer(call).await.expect("answer");
    caller.events();
    tokio::time::advance(RoomConfig::default().offer_ttl * 2).await;
    assert_eq!(
        room.sweep_expired().await.expect("sweep"),
        0,
        "a call is not an expiring offer"
    );
    caller
        .send(ClientMessage::Candidate {
            offer_id: call,
            candidate: candidate(1),
        })
        .await
        .expect("still relayed");
    tokio::time::advance(RoomConfig::default().call_ttl).await;
    assert_eq!(room.sweep_expired().await.expect("sweep"), 0);
    assert!(closed(&caller.events()).is_empty() && closed(&callee.events()).is_empty());
    for side in [&mut caller, &mut callee] {
        let late = side.candidate(call, 2).await;
        assert!(
            matches!(late, Err(RoomError::OfferNotFound)),
            "an expired call relays nothing: {late:?}"
        );
    }
    let gone = caller.send(ClientMessage::Hangup { offer_id: call }).await;
    assert!(matches!(gone, Err(RoomError::OfferNotFound)));
}

/// Candidates after the answer are relayed from what each session learnt of
/// the call; a hang-up by either side ends that at once for both.
#[tokio::test]
async fn once_either_side_hangs_up_neither_relays_candidates() {
    let room = Room::in_memory(RoomConfig::default());
    let (mut caller, mut callee) = (Peer::connect(&room).await, Peer::connect(&room).await);
    caller.join(&lobby()).await;
    callee.join(&lobby()).await;
    for caller_hangs_up in [true, false] {
        let call = caller.offer(&lobby()).await;
        callee.answer(call).await.expect("answer");
        // Each side knows the other without asking the store.
        assert_eq!(callee.session.routes.other(&call), Some(caller.id()));
        assert_eq!(caller.session.routes.other(&call), Some(callee.id()));
        for side in [&mut caller, &mut callee] {
            assert_eq!(side.candidate(call, 1).await.expect("relayed"), Reply::Done);
        }
        let (ends, other) = match caller_hangs_up {
            true => (&mut caller, &mut callee),
            false => (&mut callee, &mut caller),
        };
        ends.send(ClientMessage::Hangup { offer_id: call })
            .await
            .expect("hangup");
        assert!(
            other
                .events()
                .iter()
                .any(|m| matches!(m, ServerMessage::Hangup { offer_id, .. } if *offer_id == call))
        );
        for side in [ends, other] {
            let late = side.candidate(call, 2).await;
            assert!(
                matches!(late, Err(RoomError::OfferNotFound)),
                "caller hung up: {caller_hangs_up}, got {late:?}"
            );
        }
        caller.events();
        callee.events();
    }
}

#[test]
fn replies_carry_req_and_bare_ok_is_not_sent() {
    let req = Req::new(4);
    assert_eq!(
        Reply::Done.into_message(req),
        req.map(|req| ServerMessage::Ok { req })
    );
    assert_eq!(Reply::Done.into_message(None), None);
    assert_eq!(
        Reply::Pong.into_message(None),
        Some(ServerMessage::Pong { req: None })
    );
}
