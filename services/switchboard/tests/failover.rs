//! Failures of the distributed topology, on real processes: Redis restarted,
//! a room replica killed mid-call, an edge killed; and many calls across nodes
//! at once, many sessions starting together (their Redis subscriptions go out
//! in batches and are all let go when they leave), a burst of candidates
//! (one request, one Redis script), a call ended by the other party (not
//! looked up again), and room events that only cross Redis when another
//! replica follows the room (and always, when Redis refuses to say who does).

mod harness;

use ::redis::aio::PubSub;
use futures_util::StreamExt;
use futures_util::future::join_all;
use harness::cluster::Side::{A, B};
use harness::cluster::{EDGE_A, EDGE_B, REDIS, ROOM_1, Routing};
use harness::process::wait_until;
use harness::{Client, Cluster, candidate, room, sdp};
use prost::Message as _;
use switchboard_proto::pb::{BusEvent, bus_event::Kind};
use switchboard_proto::{
    ClientMessage, CloseReason, ErrorCode, OfferId, Req, RoomId, ServerMessage,
};

/// Caller publishes, callee answers, caller receives the answer.
async fn call(caller: &mut Client, callee: &mut Client, lobby: &RoomId) -> OfferId {
    let offer_id = caller.offer(lobby, sdp("offer", 300), None).await;
    let event = callee
        .next_where(|m| matches!(m, ServerMessage::Offer { offer_id: id, .. } if *id == offer_id))
        .await;
    assert!(matches!(event, ServerMessage::Offer { .. }));
    assert!(matches!(
        callee.answer(offer_id, sdp("answer", 300)).await,
        ServerMessage::Answered { .. }
    ));
    caller
        .expect(ServerMessage::Answer {
            offer_id,
            from: callee.peer_id,
            sdp: sdp("answer", 300),
        })
        .await;
    offer_id
}

/// Repeats `join` until the session is served again (after a failover).
async fn rejoin(client: &mut Client, lobby: &RoomId) {
    let deadline = tokio::time::Instant::now() + harness::DEADLINE;
    loop {
        match client
            .request(ClientMessage::Join {
                room: lobby.clone(),
            })
            .await
        {
            ServerMessage::Joined { .. } => return,
            ServerMessage::Error {
                code: ErrorCode::Unavailable,
                ..
            } => {
                assert!(tokio::time::Instant::now() < deadline, "never served again");
                tokio::task::yield_now().await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_gives_unavailable_then_service_resumes_with_subscriptions_restored() {
    let mut c = Cluster::distributed().await;
    let lobby = room("redis-restart");
    let mut caller = c.client(A).await;
    let mut callee = c.client(B).await;
    caller.join(&lobby).await;
    callee.join(&lobby).await;
    call(&mut caller, &mut callee, &lobby).await;

    c.process(REDIS).kill().await;
    // Requests fail fast and clearly; nothing hangs, nothing crashes.
    let failed = caller
        .request(ClientMessage::Offer {
            room: lobby.clone(),
            sdp: sdp("o", 100),
            to: None,
        })
        .await;
    assert!(
        matches!(
            failed,
            ServerMessage::Error {
                code: ErrorCode::Unavailable,
                ..
            }
        ),
        "{failed:?}"
    );
    wait_until("edges to report not ready", || async {
        !c.is_ready(A).await && !c.is_ready(B).await
    })
    .await;
    assert!(c.readyz(A).await.1.contains("0 of 1"));

    c.process(REDIS).restart().await;
    wait_until("edges to be ready again", || async {
        c.is_ready(A).await && c.is_ready(B).await
    })
    .await;
    // The same sessions work again: their peer and room subscriptions were
    // restored on the new Redis connection (the offer event and the answer
    // travel through them).
    call(&mut caller, &mut callee, &lobby).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_room_replica_moves_its_sessions_and_loses_no_offer() {
    let mut c = Cluster::distributed_with(Routing::Spread, &[]).await;
    for side in [A, B] {
        wait_until("both replicas serving", || async {
            c.readyz(side).await.1.contains("2 of 2")
        })
        .await;
    }
    let lobby = room("failover");
    // Round-robin puts these two callers on different replicas.
    let mut callers = vec![c.client(A).await, c.client(A).await];
    let mut offers = Vec::new();
    for caller in &mut callers {
        caller.join(&lobby).await;
        offers.push(caller.offer(&lobby, sdp("offer", 300), None).await);
    }
    c.process(ROOM_1).kill().await;

    // The offers live in Redis: a callee joining now sees both.
    let mut callee = c.client(B).await;
    let listed: Vec<OfferId> = {
        let deadline = tokio::time::Instant::now() + harness::DEADLINE;
        loop {
            match callee
                .request(ClientMessage::Join {
                    room: lobby.clone(),
                })
                .await
            {
                ServerMessage::Joined { offers, .. } => {
                    break offers.into_iter().map(|o| o.offer_id).collect();
                }
                other => assert!(tokio::time::Instant::now() < deadline, "{other:?}"),
            }
        }
    };
    assert_eq!(listed.len(), 2, "{listed:?}");
    for caller in &mut callers {
        rejoin(caller, &lobby).await;
    }
    // Answers after the failover reach both callers, wherever they now are.
    for (caller, offer_id) in callers.iter_mut().zip(&offers) {
        assert!(matches!(
            callee.answer(*offer_id, sdp("answer", 300)).await,
            ServerMessage::Answered { .. }
        ));
        let answer = caller
            .next_where(|m| matches!(m, ServerMessage::Answer { .. }))
            .await;
        assert!(matches!(answer, ServerMessage::Answer { offer_id: id, .. } if id == *offer_id));
        caller.candidate(*offer_id, candidate(7)).await;
        let relayed = callee
            .next_where(|m| matches!(m, ServerMessage::Candidate { .. }))
            .await;
        assert!(
            matches!(relayed, ServerMessage::Candidate { offer_id: id, .. } if id == *offer_id)
        );
    }
    assert!(c.readyz(A).await.1.contains("1 of 2"));
    c.stop_without(ROOM_1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_of_a_killed_edge_stay_pending_until_they_expire() {
    let mut c = Cluster::distributed_with(Routing::Split, &["--offer-ttl", "2s"]).await;
    let lobby = room("edge-killed");
    let mut caller = c.client(A).await;
    caller.join(&lobby).await;
    let offer_id = caller.offer(&lobby, sdp("offer", 300), None).await;
    caller.candidate(offer_id, candidate(1)).await;
    c.process(EDGE_A).kill().await;

    let mut callee = c.client(B).await;
    let offers = callee.join(&lobby).await;
    assert_eq!(offers.len(), 1, "still pending after its edge died");
    assert_eq!(
        (offers[0].offer_id, offers[0].candidates.clone()),
        (offer_id, vec![candidate(1)])
    );
    callee
        .expect(ServerMessage::OfferClosed {
            offer_id,
            room: lobby.clone(),
            reason: CloseReason::Expired,
        })
        .await;
    // Clients of the dead edge reconnect elsewhere.
    let mut back = c.client(B).await;
    assert!(back.join(&lobby).await.is_empty());
    c.stop_without(EDGE_A).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_calls_across_nodes_lose_and_misroute_nothing() {
    let c = Cluster::distributed().await;
    let calls = (0..200u32).map(|i| {
        let c = &c;
        async move {
            let lobby = room(&format!("calls-{}", i % 20));
            let mut caller = c.client(A).await;
            let mut callee = c.client(B).await;
            caller.join(&lobby).await;
            let offer_sdp = sdp(&format!("offer-{i}"), 1000);
            let offer_id = caller.offer(&lobby, offer_sdp.clone(), None).await;
            caller.candidate(offer_id, candidate(i)).await;
            let offers = callee.join(&lobby).await;
            let mine = offers
                .iter()
                .find(|o| o.offer_id == offer_id)
                .expect("own offer listed");
            assert_eq!(
                (&mine.sdp, &mine.candidates, mine.from),
                (&offer_sdp, &vec![candidate(i)], caller.peer_id)
            );
            let answer_sdp = sdp(&format!("answer-{i}"), 1000);
            match callee.answer(offer_id, answer_sdp.clone()).await {
                ServerMessage::Answered { candidates, .. } => {
                    assert_eq!(candidates, vec![candidate(i)])
                }
                other => panic!("call {i}: {other:?}"),
            }
            caller
                .expect(ServerMessage::Answer {
                    offer_id,
                    from: callee.peer_id,
                    sdp: answer_sdp,
                })
                .await;
            for n in 0..4 {
                callee
                    .send(ClientMessage::Candidate {
                        offer_id,
                        candidate: candidate(1000 * i + n),
                    })
                    .await;
            }
            let sent = (0..4).map(|n| candidate(1000 * i + n));
            caller
                .expect_candidates(offer_id, callee.peer_id, sent)
                .await;
            // Nothing from any other call reached this caller.
            for msg in caller.drain().await {
                if let ServerMessage::Answer { offer_id: id, .. }
                | ServerMessage::Candidate { offer_id: id, .. } = msg
                {
                    panic!("call {i} got a message of {id}");
                }
            }
        }
    });
    join_all(calls).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_while_its_replica_is_down_is_cleaned_up_when_one_returns() {
    let mut c = Cluster::distributed().await;
    let lobby = room("late-cleanup");
    let mut caller = c.client(A).await;
    let mut viewer = c.client(B).await;
    caller.join(&lobby).await;
    viewer.join(&lobby).await;
    let offer_id = caller.offer(&lobby, sdp("offer", 300), None).await;
    viewer
        .next_where(|m| matches!(m, ServerMessage::Offer { .. }))
        .await;
    // Edge A's only replica dies; then the caller leaves.
    c.process(ROOM_1).kill().await;
    wait_until("edge A to notice", || async { !c.is_ready(A).await }).await;
    let caller_id = caller.peer_id;
    caller.disconnect().await;
    c.process(ROOM_1).restart().await;
    // Once a replica is back, the departure is carried out in full.
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
            peer_id: caller_id,
        })
        .await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_finds_room_replicas_behind_a_host_name() {
    let dir = harness::process::log_dir("discovery");
    let redis = harness::process::redis(&dir).await;
    let room_args = vec!["--redis".to_owned(), format!("redis://{}/", redis.addr)];
    let replica = harness::process::switchboard(&dir, "room", "room", &room_args).await;
    // A name, as a Kubernetes headless Service would be given.
    let by_name = format!("http://localhost:{}", replica.addr.port());
    let edge_args = vec![
        "--room".to_owned(),
        by_name,
        "--ice-server".into(),
        "none".into(),
    ];
    let edge = harness::process::switchboard(&dir, "edge", "edge", &edge_args).await;
    let addr = edge.addr;
    let ready = || async move {
        let (status, body) = harness::raw::http_get(addr, "/readyz").await;
        status == 200 && body.contains("room replicas serving")
    };
    wait_until("the edge to attach to the room found by name", ready).await;
    let url = format!("ws://{addr}/ws");
    let (mut caller, mut callee) = (Client::connect(&url).await, Client::connect(&url).await);
    let lobby = room("by-name");
    caller.join(&lobby).await;
    callee.join(&lobby).await;
    call(&mut caller, &mut callee, &lobby).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_an_edge_keeps_answered_calls_and_withdraws_pending_offers() {
    let mut c = Cluster::distributed().await;
    let lobby = room("drain");
    let (mut caller, mut callee) = (c.client(A).await, c.client(B).await);
    caller.join(&lobby).await;
    callee.join(&lobby).await;
    let call_id = call(&mut caller, &mut callee, &lobby).await;
    let pending = caller.offer(&lobby, sdp("pending", 300), None).await;
    callee
        .next_where(|m| matches!(m, ServerMessage::Offer { offer_id, .. } if *offer_id == pending))
        .await;

    let status = c.process(EDGE_A).terminate().await;
    assert!(status.success(), "edge A drains and exits cleanly");
    let closed = callee
        .next_where(
            |m| matches!(m, ServerMessage::OfferClosed { offer_id, .. } if *offer_id == pending),
        )
        .await;
    assert!(
        matches!(
            closed,
            ServerMessage::OfferClosed {
                reason: CloseReason::OffererLeft,
                ..
            }
        ),
        "the pending offer is withdrawn: {closed:?}"
    );
    callee
        .next_where(|m| matches!(m, ServerMessage::PeerLeft { .. }))
        .await;
    callee
        .assert_none("a hangup of the answered call", |m| {
            matches!(m, ServerMessage::Hangup { .. })
        })
        .await;
    // The call is still there for the callee to end.
    let ended = callee
        .request(ClientMessage::Hangup { offer_id: call_id })
        .await;
    assert!(matches!(ended, ServerMessage::Ok { .. }), "{ended:?}");
    c.stop_without(EDGE_A).await;
}

/// A replica delivers what it publishes to its own peers at once and skips the
/// copy Redis sends back: each event reaches a peer exactly once. The barrier
/// is a witness on the other replica joining last: Redis hands its event to the
/// first replica after the echoes of everything that replica published before
/// (each published before its request was answered), so by the time a peer
/// sees the witness, any duplicate would have been delivered ahead of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_delivers_its_own_events_exactly_once() {
    let c = Cluster::distributed().await;
    let lobby = room("once");
    // Caller and callee share room replica 1 (side A); the witness is on 2.
    let mut caller = c.client(A).await;
    let mut callee = c.client(A).await;
    caller.join(&lobby).await;
    callee.join(&lobby).await;
    let offer_id = caller.offer(&lobby, sdp("offer", 300), None).await;
    let answered = callee.answer(offer_id, sdp("answer", 300)).await;
    assert!(
        matches!(answered, ServerMessage::Answered { .. }),
        "{answered:?}"
    );
    let relayed = callee.candidate(offer_id, candidate(1)).await;
    assert!(matches!(relayed, ServerMessage::Ok { .. }), "{relayed:?}");

    let mut witness = c.client(B).await;
    witness.join(&lobby).await;
    let witness_id = witness.peer_id;
    for (who, client) in [("caller", &mut caller), ("callee", &mut callee)] {
        client
            .next_where(
                |m| matches!(m, ServerMessage::PeerJoined { peer_id, .. } if *peer_id == witness_id),
            )
            .await;
        let seen = client.drain().await;
        for (i, msg) in seen.iter().enumerate() {
            assert!(
                !seen[i + 1..].contains(msg),
                "the {who} got {msg:?} twice: {seen:?}"
            );
        }
        let kinds: Vec<&str> = seen.iter().map(ServerMessage::kind).collect();
        let expected: &[&str] = match who {
            "caller" => &["peer_joined", "answer", "candidate"],
            _ => &["offer"],
        };
        for kind in expected {
            assert!(kinds.contains(kind), "the {who} never got {kind}: {seen:?}");
        }
    }
    c.stop().await;
}

/// A room event that no other replica follows is not published (Redis would
/// only hand it back to its publisher); once another replica follows the
/// room, its events are. The watcher is a pattern subscription: it sees what
/// crosses Redis on the room's channel without counting as a follower
/// (`PUBSUB NUMSUB` leaves patterns out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_events_cross_redis_only_when_another_replica_follows_the_room() {
    let mut c = Cluster::distributed().await;
    let lobby = room("followed");
    let mut watcher = room_watcher(&mut c, &lobby).await;

    // Only replica 1 (side A) follows the room: its peers get its events
    // from it directly.
    let (mut caller, _callee, first) = offer_on_one_replica(&c, &lobby).await;

    // Replica 2 follows it from the witness's join on, and is told.
    let mut witness = c.client(B).await;
    let shown = witness.join(&lobby).await;
    assert_eq!(
        shown.iter().map(|o| o.offer_id).collect::<Vec<_>>(),
        vec![first],
        "the store lists what was not published"
    );
    let second = caller.offer(&lobby, sdp("offer", 100), None).await;
    witness
        .next_where(|m| matches!(m, ServerMessage::Offer { offer_id, .. } if *offer_id == second))
        .await;

    // What crossed Redis, in order: nothing before the witness came.
    match next_event(&mut watcher).await {
        Kind::PeerJoined(p) => assert_eq!(p.peer_id, witness.peer_id.to_string()),
        other => panic!("the first event on the room's channel: {other:?}"),
    }
    match next_event(&mut watcher).await {
        Kind::Offer(o) => assert_eq!(o.offer.expect("offer").offer_id, second.to_string()),
        other => panic!("the second event on the room's channel: {other:?}"),
    }
    c.stop().await;
}

/// A Redis whose ACL refuses `PUBSUB NUMSUB` (an operator's least-privilege
/// user): the replica cannot ask who follows a room, so it publishes every
/// room event, as before it asked, and requests go on succeeding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_events_are_published_when_redis_refuses_the_followers_question() {
    let mut c = Cluster::distributed().await;
    let mut redis = redis_of(&mut c).await;
    // Applies at once to every connection of the user, the replicas' included.
    let () = ::redis::cmd("ACL")
        .arg(&["SETUSER", "default", "-pubsub|numsub"])
        .query_async(&mut redis)
        .await
        .expect("restrict the default user");
    let refused: ::redis::RedisResult<Vec<::redis::Value>> = ::redis::cmd("PUBSUB")
        .arg(&["NUMSUB", "t:probe"])
        .query_async(&mut redis)
        .await;
    assert!(
        refused.is_err(),
        "the ACL refuses the question: {refused:?}"
    );

    let lobby = room("refused");
    let mut watcher = room_watcher(&mut c, &lobby).await;
    // Only replica 1 (side A) follows the room, yet its events cross Redis.
    let (caller, callee, offer_id) = offer_on_one_replica(&c, &lobby).await;
    let mut crossed = Vec::new();
    for _ in 0..3 {
        crossed.push(next_event(&mut watcher).await);
    }
    assert!(
        matches!(&crossed[..], [Kind::PeerJoined(a), Kind::PeerJoined(b), Kind::Offer(o)]
            if a.peer_id == caller.peer_id.to_string()
                && b.peer_id == callee.peer_id.to_string()
                && o.offer.as_ref().is_some_and(|o| o.offer_id == offer_id.to_string())),
        "{crossed:?}"
    );
    c.stop().await;
}

/// Sessions starting together on one replica share `SUBSCRIBE` commands (a
/// batch per round trip, not a command per channel); every subscription is
/// live (an offer published on the other replica reaches each of them through
/// Redis); and when they leave, the replica unsubscribes all their channels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_starting_together_share_subscribe_commands_and_leave_nothing_subscribed() {
    const N: usize = 40;
    let mut c = Cluster::distributed().await;
    let mut redis = redis_of(&mut c).await;
    let () = ::redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut redis)
        .await
        .expect("reset stats");

    // N peers on replica 1 (side A), each in a room of its own: 2N channels.
    let rooms: Vec<RoomId> = (0..N).map(|i| room(&format!("batched-{i}"))).collect();
    let mut peers = join_all(rooms.iter().map(|lobby| {
        let c = &c;
        async move {
            let mut peer = c.client(A).await;
            peer.join(lobby).await;
            peer
        }
    }))
    .await;
    let channels: Vec<String> = peers
        .iter()
        .map(|p| format!("t:peer:{}", p.peer_id))
        .chain(rooms.iter().map(|r| format!("t:room:{r}")))
        .collect();
    let subscribes = command_calls(&mut redis, "subscribe").await;
    assert!(subscribes > 0, "SUBSCRIBE was called");
    assert!(
        subscribes < channels.len(),
        "{subscribes} SUBSCRIBE commands for {} channels",
        channels.len()
    );
    let numsub = async |redis: &mut ::redis::aio::MultiplexedConnection| -> Vec<usize> {
        let pairs: Vec<(String, usize)> = ::redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channels)
            .query_async(redis)
            .await
            .expect("numsub");
        pairs.into_iter().map(|(_, n)| n).collect()
    };
    assert_eq!(
        numsub(&mut redis).await,
        vec![1; 2 * N],
        "one subscriber each"
    );

    // Live: an offer made on replica 2 reaches each peer through Redis.
    let mut caller = c.client(B).await;
    for (lobby, peer) in rooms.iter().zip(&mut peers) {
        caller.join(lobby).await;
        let offer_id = caller.offer(lobby, sdp("offer", 100), None).await;
        peer.next_where(
            |m| matches!(m, ServerMessage::Offer { offer_id: id, .. } if *id == offer_id),
        )
        .await;
        let left = caller
            .request(ClientMessage::Leave {
                room: lobby.clone(),
            })
            .await;
        assert!(matches!(left, ServerMessage::Ok { .. }), "{left:?}");
    }

    // Leaving together: replica 1 lets go of every channel.
    join_all(peers.into_iter().map(Client::disconnect)).await;
    let expected = vec![0; 2 * N];
    wait_until("replica 1 to unsubscribe every channel", || {
        let (mut redis, numsub, expected) = (redis.clone(), &numsub, &expected);
        async move { numsub(&mut redis).await == *expected }
    })
    .await;
    c.stop().await;
}

/// Candidates a client sends together cross from edge to replica as one
/// request and are buffered by one Redis script (one `RPUSH`), not one each;
/// the callee is shown all of them, in order. In the call, the callee's burst
/// is one request too, and the caller gets all of it, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_candidates_is_one_request_and_one_script() {
    const N: u32 = 6;
    let mut c = Cluster::distributed().await;
    let mut redis = redis_of(&mut c).await;
    let lobby = room("burst");
    let mut caller = c.client(A).await;
    caller.join(&lobby).await;
    let offer_id = caller.offer(&lobby, sdp("offer", 100), None).await;

    // Counted by its `RPUSH` (the expiry sweeper runs scripts of its own).
    let pushes_before = command_calls(&mut redis, "rpush").await;
    let last = Req::new(1).expect("req");
    caller
        .send_together(&harness::candidate_burst(offer_id, 0..N, last))
        .await;
    let reply = caller.reply_to(last).await;
    assert!(matches!(reply, ServerMessage::Ok { .. }), "{reply:?}");
    assert_eq!(
        command_calls(&mut redis, "rpush").await - pushes_before,
        1,
        "{N} candidates sent together, buffered by one script"
    );

    let mut callee = c.client(B).await;
    let offers = callee.join(&lobby).await;
    assert_eq!(offers.len(), 1);
    assert_eq!(
        offers[0].candidates,
        (0..N).map(candidate).collect::<Vec<_>>()
    );

    let answered = callee.answer(offer_id, sdp("answer", 100)).await;
    assert!(
        matches!(answered, ServerMessage::Answered { .. }),
        "{answered:?}"
    );
    let edge_b = c.process(EDGE_B).admin_addr().await;
    let requests_before = candidate_requests(edge_b).await;
    callee
        .send_together(&harness::candidate_burst(offer_id, 100..100 + N, last))
        .await;
    let reply = callee.reply_to(last).await;
    assert!(matches!(reply, ServerMessage::Ok { .. }), "{reply:?}");
    assert_eq!(
        candidate_requests(edge_b).await - requests_before,
        1,
        "{N} candidates sent together in a call, relayed by one request"
    );
    let sent = (100..100 + N).map(candidate);
    caller
        .expect_candidates(offer_id, callee.peer_id, sent)
        .await;
    c.stop().await;
}

/// The `candidate` requests an edge has had answered by its room replicas.
async fn candidate_requests(admin: std::net::SocketAddr) -> u64 {
    let (status, metrics) = harness::raw::http_get(admin, "/metrics").await;
    assert_eq!(status, 200, "GET /metrics");
    metrics
        .lines()
        .filter(|l| l.starts_with("switchboard_grpc_requests_total{"))
        .filter(|l| {
            ["side=\"client\"", "method=\"candidate\"", "status=\"ok\""]
                .iter()
                .all(|label| l.contains(label))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A call the other party ended (its `hangup` reached this peer's replica) is
/// gone from the store: the peer's clean-up does not ask Redis about it again,
/// whether it answered the call or made it, and whether it disconnects or
/// leaves the room. Counted by `HMGET`, which every script that looks at an
/// offer runs first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_other_party_ended_is_not_looked_up_again_at_clean_up() {
    let mut c = Cluster::distributed().await;
    let mut redis = redis_of(&mut c).await;

    // The caller hangs up; the callee disconnects.
    let lobby = room("over");
    let mut caller = c.client(A).await;
    let mut callee = c.client(B).await;
    // Ends with the caller's hangup delivered to the callee.
    harness::full_call(&mut caller, &mut callee, &lobby).await;
    let reads_before = command_calls(&mut redis, "hmget").await;
    let callee_id = callee.peer_id;
    callee.disconnect().await;
    // Published once the callee's clean-up has been through its calls.
    caller
        .next_where(
            |m| matches!(m, ServerMessage::PeerLeft { peer_id, .. } if *peer_id == callee_id),
        )
        .await;
    assert_eq!(
        command_calls(&mut redis, "hmget").await - reads_before,
        0,
        "the callee's replica knew the call was over"
    );

    // The callee hangs up; the caller leaves the room.
    let lobby = room("over-again");
    let mut caller = c.client(A).await;
    let mut callee = c.client(B).await;
    caller.join(&lobby).await;
    callee.join(&lobby).await;
    let offer_id = call(&mut caller, &mut callee, &lobby).await;
    callee.request(ClientMessage::Hangup { offer_id }).await;
    caller
        .next_where(|m| matches!(m, ServerMessage::Hangup { .. }))
        .await;
    let reads_before = command_calls(&mut redis, "hmget").await;
    // Replied to once the caller's calls in the room are dealt with.
    let left = caller
        .request(ClientMessage::Leave {
            room: lobby.clone(),
        })
        .await;
    assert!(matches!(left, ServerMessage::Ok { .. }), "{left:?}");
    assert_eq!(
        command_calls(&mut redis, "hmget").await - reads_before,
        0,
        "the caller's replica knew the call was over"
    );
    c.stop().await;
}

/// A client of the cluster's Redis.
fn redis_client(c: &mut Cluster) -> ::redis::Client {
    ::redis::Client::open(format!("redis://{}/", c.process(REDIS).addr)).expect("url")
}

/// Two peers on replica 1 (side A) join `lobby`; the first makes an offer,
/// which the second is shown. Returns the caller, the callee and the offer.
async fn offer_on_one_replica(c: &Cluster, lobby: &RoomId) -> (Client, Client, OfferId) {
    let mut caller = c.client(A).await;
    let mut callee = c.client(A).await;
    caller.join(lobby).await;
    callee.join(lobby).await;
    let offer_id = caller.offer(lobby, sdp("offer", 100), None).await;
    callee
        .next_where(|m| matches!(m, ServerMessage::Offer { offer_id: id, .. } if *id == offer_id))
        .await;
    (caller, callee, offer_id)
}

/// A pattern subscriber (not counted by `PUBSUB NUMSUB`) watching what
/// crosses Redis on `room`'s channel.
async fn room_watcher(c: &mut Cluster, room: &RoomId) -> PubSub {
    let mut watcher = redis_client(c).get_async_pubsub().await.expect("connect");
    watcher
        .psubscribe(format!("t:room:{room}"))
        .await
        .expect("psubscribe");
    watcher
}

/// The next room event the watcher sees, decoded.
async fn next_event(watcher: &mut PubSub) -> Kind {
    let mut messages = watcher.on_message();
    let msg = tokio::time::timeout(harness::DEADLINE, messages.next())
        .await
        .expect("a room event crossed redis")
        .expect("the watcher is connected");
    let event = BusEvent::decode(msg.get_payload_bytes()).expect("a bus event");
    event.kind.expect("an event")
}

/// A connection to the cluster's Redis.
async fn redis_of(c: &mut Cluster) -> ::redis::aio::MultiplexedConnection {
    redis_client(c)
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis")
}

/// How many times Redis has run `command` (lower case) since its statistics
/// were last reset.
async fn command_calls(redis: &mut ::redis::aio::MultiplexedConnection, command: &str) -> usize {
    let stats: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query_async(redis)
        .await
        .expect("info");
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
