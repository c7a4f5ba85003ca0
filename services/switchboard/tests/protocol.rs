//! The protocol suite: every behaviour of `docs/PROTOCOL.md`, driven through real
//! WebSockets. Each test takes a [`Cluster`] and puts callers on side A and
//! callees on side B, so the same suite runs against every topology (see the
//! `topology!` invocations at the bottom).

mod harness;

use std::collections::HashSet;

use futures_util::future::join_all;
use harness::cluster::Side::{A, B};
use harness::{Client, Cluster, candidate, room, sdp};
use switchboard_proto::{
    ClientFrame, ClientMessage, CloseReason, ErrorCode, OfferId, Req, RoomId, ServerMessage,
};
use tokio_tungstenite::tungstenite::Message;

async fn full_call_with_offer_published_before_the_callee_joins(c: &Cluster) {
    let lobby = room("lobby");
    let mut caller = c.client(A).await;
    assert!(caller.join(&lobby).await.is_empty());
    let offer_sdp = sdp("offer", 4500);
    let offer_id = caller.offer(&lobby, offer_sdp.clone(), None).await;
    for n in 0..2 {
        let reply = caller.candidate(offer_id, candidate(n)).await;
        assert!(matches!(reply, ServerMessage::Ok { .. }), "{reply:?}");
    }

    let mut callee = c.client(B).await;
    let offers = callee.join(&lobby).await;
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].offer_id, offer_id);
    assert_eq!(offers[0].from, caller.peer_id);
    assert_eq!(offers[0].sdp, offer_sdp);
    assert_eq!(offers[0].candidates, vec![candidate(0), candidate(1)]);

    // A candidate trickled after the callee saw the offer but before the answer
    // is buffered too, and handed over with `answered`.
    caller.candidate(offer_id, candidate(2)).await;
    let answer_sdp = sdp("answer", 3600);
    match callee.answer(offer_id, answer_sdp.clone()).await {
        ServerMessage::Answered {
            offer_id: id,
            candidates,
            ..
        } => {
            assert_eq!(id, offer_id);
            assert_eq!(candidates, vec![candidate(0), candidate(1), candidate(2)]);
        }
        other => panic!("answer failed: {other:?}"),
    }
    caller
        .expect(ServerMessage::Answer {
            offer_id,
            from: callee.peer_id,
            sdp: answer_sdp,
        })
        .await;

    // From now on candidates are relayed both ways, in order, end-of-candidates included.
    for n in 10..13 {
        callee
            .send(ClientMessage::Candidate {
                offer_id,
                candidate: candidate(n),
            })
            .await;
    }
    let mut end = candidate(0);
    end.candidate.clear();
    callee
        .send(ClientMessage::Candidate {
            offer_id,
            candidate: end.clone(),
        })
        .await;
    for expected in [candidate(10), candidate(11), candidate(12), end] {
        let got = caller
            .next_where(|m| matches!(m, ServerMessage::Candidate { .. }))
            .await;
        assert_eq!(
            got,
            ServerMessage::Candidate {
                offer_id,
                from: callee.peer_id,
                candidate: expected
            }
        );
    }
    caller.candidate(offer_id, candidate(20)).await;
    callee
        .expect(ServerMessage::Candidate {
            offer_id,
            from: caller.peer_id,
            candidate: candidate(20),
        })
        .await;
}

async fn offers_reach_members_already_in_the_room_but_never_their_caller(c: &Cluster) {
    let lobby = room("lobby");
    let mut callee = c.client(B).await;
    callee.join(&lobby).await;
    let mut caller = c.client(A).await;
    caller.join(&lobby).await;
    let offer_id = caller.offer(&lobby, sdp("offer", 200), None).await;
    let event = callee
        .next_where(|m| matches!(m, ServerMessage::Offer { .. }))
        .await;
    let ServerMessage::Offer {
        offer_id: id,
        room: r,
        from,
        candidates,
        ..
    } = event
    else {
        unreachable!()
    };
    assert_eq!((id, r, from), (offer_id, lobby.clone(), caller.peer_id));
    assert!(candidates.is_empty());
    caller
        .assert_none("own offer", |m| matches!(m, ServerMessage::Offer { .. }))
        .await;
    // The caller is not shown its own offer when it joins again either.
    assert!(caller.join(&lobby).await.is_empty());
}

async fn twenty_concurrent_answers_exactly_one_wins(c: &Cluster) {
    let lobby = room("race");
    let mut caller = c.client(A).await;
    caller.join(&lobby).await;
    let offer_id = caller.offer(&lobby, sdp("offer", 500), None).await;
    let mut callees = Vec::new();
    for i in 0..20 {
        let mut callee = c.client(if i % 2 == 0 { A } else { B }).await;
        assert_eq!(callee.join(&lobby).await.len(), 1);
        callees.push(callee);
    }
    let replies = join_all(
        callees
            .iter_mut()
            .map(|callee| callee.answer(offer_id, sdp("answer", 300))),
    )
    .await;
    let won: Vec<_> = replies
        .iter()
        .filter(|r| matches!(r, ServerMessage::Answered { .. }))
        .collect();
    let taken = replies
        .iter()
        .filter(|r| {
            matches!(
                r,
                ServerMessage::Error {
                    code: ErrorCode::OfferTaken,
                    ..
                }
            )
        })
        .count();
    assert_eq!((won.len(), taken), (1, 19), "{replies:?}");
    let winner = replies
        .iter()
        .position(|r| matches!(r, ServerMessage::Answered { .. }))
        .expect("a winner");
    let answer = caller
        .next_where(|m| matches!(m, ServerMessage::Answer { .. }))
        .await;
    let ServerMessage::Answer { from, .. } = answer else {
        unreachable!()
    };
    assert_eq!(from, callees[winner].peer_id);
    // Everyone else who was shown the offer learns it is gone.
    for (_, callee) in callees.iter_mut().enumerate().filter(|(i, _)| *i != winner) {
        callee
            .expect(ServerMessage::OfferClosed {
                offer_id,
                room: lobby.clone(),
                reason: CloseReason::Answered,
            })
            .await;
    }
}

async fn targeted_offers_are_shown_and_answerable_only_by_their_target(c: &Cluster) {
    let lobby = room("targeted");
    let mut caller = c.client(A).await;
    let mut bystander = c.client(B).await;
    let target = c.client(B).await;
    caller.join(&lobby).await;
    bystander.join(&lobby).await;
    let offer_id = caller
        .offer(&lobby, sdp("offer", 200), Some(target.peer_id))
        .await;
    // The target is not in the room yet: it is shown the offer when it joins.
    let mut target = target;
    let offers = target.join(&lobby).await;
    assert_eq!(
        offers.iter().map(|o| o.offer_id).collect::<Vec<_>>(),
        vec![offer_id]
    );
    assert!(
        bystander.join(&lobby).await.is_empty(),
        "a bystander never sees it"
    );
    bystander
        .assert_none("targeted offer", |m| {
            matches!(m, ServerMessage::Offer { .. })
        })
        .await;
    bystander
        .expect_error(
            ClientMessage::Answer {
                offer_id,
                sdp: sdp("a", 100),
            },
            ErrorCode::NotAllowed,
        )
        .await;
    assert!(matches!(
        target.answer(offer_id, sdp("answer", 100)).await,
        ServerMessage::Answered { .. }
    ));

    // A targeted offer to a peer already in the room arrives as an event.
    let offer2 = caller
        .offer(&lobby, sdp("offer2", 200), Some(target.peer_id))
        .await;
    let event = target
        .next_where(|m| matches!(m, ServerMessage::Offer { .. }))
        .await;
    assert!(matches!(event, ServerMessage::Offer { offer_id, .. } if offer_id == offer2));
    bystander
        .assert_none("targeted offer", |m| {
            matches!(m, ServerMessage::Offer { .. })
        })
        .await;
}

async fn hangup_withdraws_a_pending_offer(c: &Cluster) {
    let (lobby, mut caller, mut viewer) = pair(c, "withdraw").await;
    let offer_id = caller.offer(&lobby, sdp("offer", 200), None).await;
    viewer
        .next_where(|m| matches!(m, ServerMessage::Offer { .. }))
        .await;
    viewer
        .expect_error(ClientMessage::Hangup { offer_id }, ErrorCode::NotAllowed)
        .await;
    assert!(matches!(
        caller.request(ClientMessage::Hangup { offer_id }).await,
        ServerMessage::Ok { .. }
    ));
    viewer
        .expect(ServerMessage::OfferClosed {
            offer_id,
            room: lobby.clone(),
            reason: CloseReason::Withdrawn,
        })
        .await;
    viewer
        .expect_error(
            ClientMessage::Answer {
                offer_id,
                sdp: sdp("a", 100),
            },
            ErrorCode::OfferNotFound,
        )
        .await;
    assert!(viewer.join(&lobby).await.is_empty());
}

/// A room with one member on side A and one on side B.
async fn pair(c: &Cluster, name: &str) -> (RoomId, Client, Client) {
    let lobby = room(name);
    let mut a = c.client(A).await;
    let mut b = c.client(B).await;
    a.join(&lobby).await;
    b.join(&lobby).await;
    (lobby, a, b)
}

/// Sets up an answered call between a caller on A and a callee on B.
async fn answered_call(c: &Cluster, name: &str) -> (Client, Client, switchboard_proto::OfferId) {
    let lobby = room(name);
    let mut caller = c.client(A).await;
    let mut callee = c.client(B).await;
    caller.join(&lobby).await;
    callee.join(&lobby).await;
    let offer_id = caller.offer(&lobby, sdp("offer", 200), None).await;
    assert!(matches!(
        callee.answer(offer_id, sdp("answer", 200)).await,
        ServerMessage::Answered { .. }
    ));
    caller
        .next_where(|m| matches!(m, ServerMessage::Answer { .. }))
        .await;
    (caller, callee, offer_id)
}

async fn hangup_ends_an_answered_call_for_both_sides(c: &Cluster) {
    let (mut caller, mut callee, offer_id) = answered_call(c, "hangup").await;
    let mut third = c.client(A).await;
    third.join(&room("hangup")).await;
    third
        .expect_error(ClientMessage::Hangup { offer_id }, ErrorCode::NotAllowed)
        .await;
    assert!(matches!(
        callee.request(ClientMessage::Hangup { offer_id }).await,
        ServerMessage::Ok { .. }
    ));
    caller
        .expect(ServerMessage::Hangup {
            offer_id,
            from: callee.peer_id,
        })
        .await;
    caller
        .expect_error(
            ClientMessage::Candidate {
                offer_id,
                candidate: candidate(1),
            },
            ErrorCode::OfferNotFound,
        )
        .await;
}

async fn disconnecting_withdraws_offers_and_hangs_up_calls(c: &Cluster) {
    let lobby = room("cleanup");
    let (caller, mut callee, call_id) = answered_call(c, "cleanup").await;
    let mut caller = caller;
    let pending_id = caller.offer(&lobby, sdp("second", 200), None).await;
    callee
        .next_where(
            |m| matches!(m, ServerMessage::Offer { offer_id, .. } if *offer_id == pending_id),
        )
        .await;
    let caller_id = caller.peer_id;
    caller.disconnect().await;
    callee
        .expect(ServerMessage::Hangup {
            offer_id: call_id,
            from: caller_id,
        })
        .await;
    callee
        .expect(ServerMessage::OfferClosed {
            offer_id: pending_id,
            room: lobby.clone(),
            reason: CloseReason::OffererLeft,
        })
        .await;
    callee
        .expect(ServerMessage::PeerLeft {
            room: lobby.clone(),
            peer_id: caller_id,
        })
        .await;
    assert!(callee.join(&lobby).await.is_empty());
}

async fn leaving_a_room_withdraws_offers_there(c: &Cluster) {
    let (lobby, mut caller, mut viewer) = pair(c, "leave").await;
    let offer_id = caller.offer(&lobby, sdp("offer", 200), None).await;
    assert!(matches!(
        caller
            .request(ClientMessage::Leave {
                room: lobby.clone()
            })
            .await,
        ServerMessage::Ok { .. }
    ));
    viewer
        .expect(ServerMessage::OfferClosed {
            offer_id,
            room: lobby.clone(),
            reason: CloseReason::OffererLeft,
        })
        .await;
    viewer
        .expect(ServerMessage::PeerLeft {
            room: lobby.clone(),
            peer_id: caller.peer_id,
        })
        .await;
    caller
        .expect_error(
            ClientMessage::Offer {
                room: lobby.clone(),
                sdp: sdp("o", 100),
                to: None,
            },
            ErrorCode::NotInRoom,
        )
        .await;
    caller
        .expect_error(
            ClientMessage::Leave {
                room: lobby.clone(),
            },
            ErrorCode::NotInRoom,
        )
        .await;
}

async fn presence_is_announced_to_the_other_members(c: &Cluster) {
    let lobby = room("presence");
    let mut first = c.client(A).await;
    first.join(&lobby).await;
    let mut second = c.client(B).await;
    second.join(&lobby).await;
    first
        .expect(ServerMessage::PeerJoined {
            room: lobby.clone(),
            peer_id: second.peer_id,
        })
        .await;
    second
        .assert_none("own presence", |m| {
            matches!(m, ServerMessage::PeerJoined { .. })
        })
        .await;
    // Joining twice is harmless and announced once.
    second.join(&lobby).await;
    first
        .assert_none("second peer_joined", |m| {
            matches!(m, ServerMessage::PeerJoined { .. })
        })
        .await;
    second
        .request(ClientMessage::Leave {
            room: lobby.clone(),
        })
        .await;
    first
        .expect(ServerMessage::PeerLeft {
            room: lobby.clone(),
            peer_id: second.peer_id,
        })
        .await;
    // Other rooms hear nothing.
    let mut elsewhere = c.client(A).await;
    elsewhere.join(&room("elsewhere")).await;
    second.join(&lobby).await;
    elsewhere
        .assert_none("presence of another room", |m| {
            matches!(m, ServerMessage::PeerJoined { .. })
        })
        .await;
}

async fn who_may_send_candidates(c: &Cluster) {
    let (lobby, mut caller, mut other) = pair(c, "candidates").await;
    let offer_id = caller.offer(&lobby, sdp("offer", 200), None).await;
    // Before the answer only the caller may send candidates.
    other
        .expect_error(
            ClientMessage::Candidate {
                offer_id,
                candidate: candidate(1),
            },
            ErrorCode::NotAllowed,
        )
        .await;
    // After it, only the two parties.
    let mut callee = c.client(B).await;
    callee.join(&lobby).await;
    callee.answer(offer_id, sdp("answer", 200)).await;
    other
        .expect_error(
            ClientMessage::Candidate {
                offer_id,
                candidate: candidate(1),
            },
            ErrorCode::NotAllowed,
        )
        .await;
    let unknown = switchboard_proto::OfferId::random();
    other
        .expect_error(
            ClientMessage::Candidate {
                offer_id: unknown,
                candidate: candidate(1),
            },
            ErrorCode::OfferNotFound,
        )
        .await;
}

async fn answering_is_refused_where_it_must_be(c: &Cluster) {
    let lobby = room("answers");
    let mut caller = c.client(A).await;
    caller.join(&lobby).await;
    let offer_id = caller.offer(&lobby, sdp("offer", 200), None).await;
    caller
        .expect_error(
            ClientMessage::Answer {
                offer_id,
                sdp: sdp("a", 100),
            },
            ErrorCode::NotAllowed,
        )
        .await;
    let mut outsider = c.client(B).await;
    outsider
        .expect_error(
            ClientMessage::Answer {
                offer_id,
                sdp: sdp("a", 100),
            },
            ErrorCode::NotInRoom,
        )
        .await;
    let mut first = c.client(B).await;
    first.join(&lobby).await;
    assert!(matches!(
        first.answer(offer_id, sdp("a", 100)).await,
        ServerMessage::Answered { .. }
    ));
    let mut second = c.client(B).await;
    second.join(&lobby).await;
    second
        .expect_error(
            ClientMessage::Answer {
                offer_id,
                sdp: sdp("a", 100),
            },
            ErrorCode::OfferTaken,
        )
        .await;
    second
        .expect_error(
            ClientMessage::Answer {
                offer_id: switchboard_proto::OfferId::random(),
                sdp: sdp("a", 100),
            },
            ErrorCode::OfferNotFound,
        )
        .await;
}

async fn limits_on_offers_and_buffered_candidates(c: &Cluster) {
    let lobby = room("limits");
    let mut caller = c.client(A).await;
    caller.join(&lobby).await;
    let limits = harness::cluster::room_config();
    let mut offers = Vec::new();
    for _ in 0..limits.max_offers_per_peer {
        offers.push(caller.offer(&lobby, sdp("o", 100), None).await);
    }
    caller
        .expect_error(
            ClientMessage::Offer {
                room: lobby.clone(),
                sdp: sdp("o", 100),
                to: None,
            },
            ErrorCode::TooLarge,
        )
        .await;
    // Withdrawing one makes room for another.
    caller
        .request(ClientMessage::Hangup {
            offer_id: offers[0],
        })
        .await;
    let offer_id = caller.offer(&lobby, sdp("o", 100), None).await;
    for n in 0..limits.max_buffered_candidates {
        caller
            .send(ClientMessage::Candidate {
                offer_id,
                candidate: candidate(n as u32),
            })
            .await;
    }
    caller
        .expect_error(
            ClientMessage::Candidate {
                offer_id,
                candidate: candidate(999),
            },
            ErrorCode::TooLarge,
        )
        .await;
}

/// Candidates sent together (a browser's trickle burst) are handled as one
/// request but answered as if each came alone, in the order sent: buffered up
/// to the limit, the rest refused one by one; a candidate for another offer
/// or a malformed frame among them gets its own answer in its place, and a
/// request sent right behind them is answered after them.
async fn a_burst_of_candidates_is_answered_frame_by_frame(c: &Cluster) {
    let lobby = room("burst");
    let mut caller = c.client(A).await;
    caller.join(&lobby).await;
    let offer_id = caller.offer(&lobby, sdp("o", 100), None).await;
    let limit = harness::cluster::room_config().max_buffered_candidates;
    let req = |n: usize| Some(Req::new(1000 + n as u64).expect("small req"));
    let candidate_frame = |n: usize, offer_id| {
        ClientFrame::new(
            req(n),
            ClientMessage::Candidate {
                offer_id,
                candidate: candidate(n as u32),
            },
        )
    };
    // Frame 3 is about an unknown offer, frame 5 is malformed, frame 7 has no
    // `req`; the last two candidates are past the limit; then a ping.
    let unknown = OfferId::random();
    let total = limit + 4;
    let mut frames: Vec<ClientFrame> = (0..total)
        .map(|n| candidate_frame(n, if n == 3 { unknown } else { offer_id }))
        .collect();
    frames[7].req = None;
    frames.push(ClientFrame::new(req(total), ClientMessage::Ping));
    let mut texts: Vec<String> = frames
        .iter()
        .map(|f| serde_json::to_string(f).expect("serialize"))
        .collect();
    texts[5] = r#"{"type":"candidate","req":1005}"#.to_owned();
    caller.send_texts_together(&texts).await;

    let mut answers = Vec::new();
    while answers.len() < total {
        let msg = caller.recv().await;
        assert!(!matches!(msg, ServerMessage::Offer { .. }), "{msg:?}");
        answers.push(msg);
    }
    let buffered: Vec<usize> = (0..total)
        .filter(|n| ![3, 5].contains(n))
        .take(limit)
        .collect();
    let mut expected = Vec::new();
    for n in 0..total {
        expected.push(match n {
            3 => (req(n), Some(ErrorCode::OfferNotFound)),
            5 => (req(n), Some(ErrorCode::BadMessage)),
            7 => continue,
            n if buffered.contains(&n) => (req(n), None),
            n => (req(n), Some(ErrorCode::TooLarge)),
        });
    }
    expected.push((req(total), None));
    let got: Vec<(Option<Req>, Option<ErrorCode>)> = answers
        .iter()
        .map(|m| match m {
            ServerMessage::Ok { req } | ServerMessage::Pong { req: Some(req) } => {
                (Some(*req), None)
            }
            ServerMessage::Error { req, code, .. } => (*req, Some(*code)),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(got, expected, "one answer per frame, in the order sent");

    let mut callee = c.client(B).await;
    let offers = callee.join(&lobby).await;
    let shown: Vec<_> = offers
        .iter()
        .find(|o| o.offer_id == offer_id)
        .expect("the offer is listed")
        .candidates
        .clone();
    let expected: Vec<_> = buffered.iter().map(|n| candidate(*n as u32)).collect();
    assert_eq!(shown, expected, "buffered in order up to the limit");
}

/// In an answered call, candidates sent together are relayed to the other
/// party, all of them, in order.
async fn a_burst_of_candidates_in_a_call_is_relayed_in_order(c: &Cluster) {
    let (mut caller, mut callee, offer_id) = answered_call(c, "burst-call").await;
    let last = Req::new(1).expect("req");
    callee
        .send_together(&harness::candidate_burst(offer_id, 0..6, last))
        .await;
    let reply = callee.reply_to(last).await;
    assert!(matches!(reply, ServerMessage::Ok { .. }), "{reply:?}");
    let from = callee.peer_id;
    caller
        .expect_candidates(offer_id, from, (0..6).map(candidate))
        .await;
}

async fn requests_get_exactly_one_reply_and_bare_messages_no_ok(c: &Cluster) {
    let lobby = room("req");
    let mut peer = c.client(A).await;
    // Without req: results still come (untagged), `ok` never does.
    peer.send(ClientMessage::Join {
        room: lobby.clone(),
    })
    .await;
    let joined = peer
        .next_where(|m| matches!(m, ServerMessage::Joined { .. }))
        .await;
    assert!(matches!(joined, ServerMessage::Joined { req: None, .. }));
    peer.send(ClientMessage::Offer {
        room: lobby.clone(),
        sdp: sdp("o", 100),
        to: None,
    })
    .await;
    let created = peer
        .next_where(|m| matches!(m, ServerMessage::OfferCreated { .. }))
        .await;
    let ServerMessage::OfferCreated {
        req: None,
        offer_id,
    } = created
    else {
        panic!("{created:?}")
    };
    peer.send(ClientMessage::Candidate {
        offer_id,
        candidate: candidate(1),
    })
    .await;
    peer.send(ClientMessage::Ping).await;
    let pong = peer
        .next_where(|m| matches!(m, ServerMessage::Pong { .. }))
        .await;
    assert_eq!(pong, ServerMessage::Pong { req: None });
    peer.assert_none("ok without req", |m| matches!(m, ServerMessage::Ok { .. }))
        .await;
    // A failing message without req still gets its error (a candidate too).
    let unknown = switchboard_proto::OfferId::random();
    let failing = [
        ClientMessage::Hangup { offer_id: unknown },
        ClientMessage::Candidate {
            offer_id: unknown,
            candidate: candidate(2),
        },
    ];
    for msg in failing {
        peer.send(msg).await;
        assert_eq!(peer.next_error().await, (None, ErrorCode::OfferNotFound));
    }
    // Replies come back in request order.
    let reqs: Vec<_> = [
        ClientMessage::Ping,
        ClientMessage::Join {
            room: lobby.clone(),
        },
        ClientMessage::Ping,
    ]
    .into_iter()
    .collect();
    let mut kinds = Vec::new();
    for msg in reqs {
        kinds.push(peer.request(msg).await.kind());
    }
    assert_eq!(kinds, ["pong", "joined", "pong"]);
}

async fn many_calls_in_parallel_are_never_crossed(c: &Cluster) {
    let lobby = room("parallel");
    let mut pairs = Vec::new();
    for i in 0..10 {
        let mut caller = c.client(A).await;
        caller.join(&lobby).await;
        let offer_id = caller
            .offer(&lobby, sdp(&format!("offer-{i}"), 300), None)
            .await;
        pairs.push((caller, offer_id, i));
    }
    let calls = pairs
        .into_iter()
        .map(|(mut caller, offer_id, i)| async move {
            let mut callee = Client::connect(&c.ws_url(B)).await;
            let offers = callee.join(&room("parallel")).await;
            assert!(offers.iter().any(|o| o.offer_id == offer_id));
            let answer_sdp = sdp(&format!("answer-{i}"), 300);
            assert!(matches!(
                callee.answer(offer_id, answer_sdp.clone()).await,
                ServerMessage::Answered { .. }
            ));
            let got = caller
                .next_where(|m| matches!(m, ServerMessage::Answer { .. }))
                .await;
            assert_eq!(
                got,
                ServerMessage::Answer {
                    offer_id,
                    from: callee.peer_id,
                    sdp: answer_sdp
                }
            );
            callee.candidate(offer_id, candidate(i)).await;
            caller
                .expect(ServerMessage::Candidate {
                    offer_id,
                    from: callee.peer_id,
                    candidate: candidate(i),
                })
                .await;
            callee.peer_id
        });
    let callees: HashSet<_> = join_all(calls).await.into_iter().collect();
    assert_eq!(callees.len(), 10);
}

async fn every_bad_message_gets_its_error_and_the_connection_survives(c: &Cluster) {
    let mut peer = c.client(A).await;
    let offer_id = switchboard_proto::OfferId::random();
    let cases: &[(&str, ErrorCode)] = &[
        ("not json", ErrorCode::BadMessage),
        ("[1,2,3]", ErrorCode::BadMessage),
        ("\"join\"", ErrorCode::BadMessage),
        (r#"{"room":"lobby","req":1}"#, ErrorCode::BadMessage),
        (r#"{"type":42,"req":2}"#, ErrorCode::BadMessage),
        (r#"{"type":"teleport","req":3}"#, ErrorCode::UnknownType),
        (r#"{"type":"join","room":7,"req":4}"#, ErrorCode::BadMessage),
        (r#"{"type":"join","req":5}"#, ErrorCode::BadMessage),
        (
            r#"{"type":"join","room":"no spaces","req":6}"#,
            ErrorCode::InvalidRoom,
        ),
        (
            r#"{"type":"join","room":"","req":7}"#,
            ErrorCode::InvalidRoom,
        ),
        (
            r#"{"type":"offer","room":"lobby","sdp":"hello","req":8}"#,
            ErrorCode::InvalidSdp,
        ),
        (
            r#"{"type":"offer","room":"lobby","sdp":"v=0","req":9}"#,
            ErrorCode::NotInRoom,
        ),
        (
            r#"{"type":"candidate","offer_id":"o_nope","candidate":{},"req":10}"#,
            ErrorCode::OfferNotFound,
        ),
        (
            r#"{"type":"candidate","offer_id":7,"candidate":{},"req":11}"#,
            ErrorCode::BadMessage,
        ),
        (r#"{"type":"ping","req":-1}"#, ErrorCode::BadMessage),
    ];
    for (frame, code) in cases {
        peer.send_raw(Message::text(*frame)).await;
        let err = peer
            .next_where(|m| matches!(m, ServerMessage::Error { .. }))
            .await;
        let ServerMessage::Error {
            code: got,
            message,
            req,
        } = err
        else {
            unreachable!()
        };
        assert_eq!(got, *code, "{frame}: {message}");
        assert!(!message.is_empty());
        // The error carries the request's `req` whenever it had a valid one.
        if frame.contains("\"req\":") && !frame.contains("-1") {
            assert!(req.is_some(), "{frame}");
        }
    }
    let too_long = format!("v=0{}", "a".repeat(switchboard_proto::Sdp::MAX_BYTES));
    let frame = serde_json::json!({"type": "answer", "offer_id": offer_id.to_string(), "sdp": too_long, "req": 99});
    peer.send_raw(Message::text(frame.to_string())).await;
    let err = peer
        .next_where(|m| matches!(m, ServerMessage::Error { .. }))
        .await;
    assert!(
        matches!(
            err,
            ServerMessage::Error {
                code: ErrorCode::InvalidSdp,
                ..
            }
        ),
        "{err:?}"
    );
    peer.send_raw(Message::binary(vec![1u8, 2, 3])).await;
    let err = peer
        .next_where(|m| matches!(m, ServerMessage::Error { .. }))
        .await;
    assert!(
        matches!(
            err,
            ServerMessage::Error {
                code: ErrorCode::BadMessage,
                req: None,
                ..
            }
        ),
        "{err:?}"
    );
    // Still fully usable.
    assert!(peer.join(&room("after-errors")).await.is_empty());
    assert!(peer.drain().await.is_empty());
}

#[tokio::test]
async fn standalone_offers_expire_and_those_shown_them_are_told() {
    let room_config = switchboard_room::RoomConfig {
        offer_ttl: std::time::Duration::from_secs(1),
        ..harness::cluster::room_config()
    };
    let c = Cluster::standalone_with(harness::cluster::edge_config(), room_config).await;
    offers_expire_and_those_shown_them_are_told(&c).await;
    c.stop().await;
}

async fn offers_expire_and_those_shown_them_are_told(c: &Cluster) {
    let (lobby, mut caller, mut viewer) = pair(c, "expiry").await;
    let offer_id = caller.offer(&lobby, sdp("offer", 200), None).await;
    let expected = ServerMessage::OfferClosed {
        offer_id,
        room: lobby.clone(),
        reason: CloseReason::Expired,
    };
    assert_eq!(
        viewer
            .next_where(|m| matches!(m, ServerMessage::OfferClosed { .. }))
            .await,
        expected
    );
    assert_eq!(
        caller
            .next_where(|m| matches!(m, ServerMessage::OfferClosed { .. }))
            .await,
        expected
    );
    viewer
        .expect_error(
            ClientMessage::Answer {
                offer_id,
                sdp: sdp("a", 100),
            },
            ErrorCode::OfferNotFound,
        )
        .await;
    assert!(viewer.join(&lobby).await.is_empty());
}

async fn a_busy_room_is_listed_in_bounded_parts_and_nothing_is_left_out(c: &Cluster) {
    let (lobby, mut caller, _) = pair(c, "busy").await;
    let mut offered = HashSet::new();
    for i in 0..harness::cluster::room_config().max_offers_per_peer {
        offered.insert(
            caller
                .offer(&lobby, sdp(&format!("big-{i}"), 30_000), None)
                .await,
        );
    }
    let mut joiner = c.client(B).await;
    let listed = joiner.join(&lobby).await;
    assert!(
        !listed.is_empty() && listed.len() < offered.len(),
        "{} listed",
        listed.len()
    );
    let mut seen: HashSet<_> = listed.iter().map(|o| o.offer_id).collect();
    while seen.len() < offered.len() {
        let ServerMessage::Offer { offer_id, .. } = joiner
            .next_where(|m| matches!(m, ServerMessage::Offer { .. }))
            .await
        else {
            unreachable!()
        };
        seen.insert(offer_id);
    }
    assert_eq!(seen, offered);
}

/// Generates one `#[tokio::test]` per suite function for a topology.
macro_rules! topology {
    ($topology:ident, $cluster:expr, [$($test:ident),* $(,)?]) => {
        mod $topology {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let cluster = $cluster.await;
                    super::$test(&cluster).await;
                    cluster.stop().await;
                }
            )*
        }
    };
}

/// The whole suite, on every topology.
macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        topology!(standalone, crate::Cluster::standalone(), [$($test),*]);
        topology!(distributed, crate::Cluster::distributed(), [$($test),*]);
    };
}

suite!(
    full_call_with_offer_published_before_the_callee_joins,
    offers_reach_members_already_in_the_room_but_never_their_caller,
    twenty_concurrent_answers_exactly_one_wins,
    targeted_offers_are_shown_and_answerable_only_by_their_target,
    hangup_withdraws_a_pending_offer,
    hangup_ends_an_answered_call_for_both_sides,
    disconnecting_withdraws_offers_and_hangs_up_calls,
    leaving_a_room_withdraws_offers_there,
    presence_is_announced_to_the_other_members,
    who_may_send_candidates,
    answering_is_refused_where_it_must_be,
    limits_on_offers_and_buffered_candidates,
    a_burst_of_candidates_is_answered_frame_by_frame,
    a_burst_of_candidates_in_a_call_is_relayed_in_order,
    requests_get_exactly_one_reply_and_bare_messages_no_ok,
    many_calls_in_parallel_are_never_crossed,
    every_bad_message_gets_its_error_and_the_connection_survives,
    a_busy_room_is_listed_in_bounded_parts_and_nothing_is_left_out,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_offers_expire_and_those_shown_them_are_told() {
    let c =
        Cluster::distributed_with(harness::cluster::Routing::Split, &["--offer-ttl", "1s"]).await;
    offers_expire_and_those_shown_them_are_told(&c).await;
    c.stop().await;
}
