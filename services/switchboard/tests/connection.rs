//! Connection-level behaviour of the edge: welcome, frame limits, heartbeat,
//! slow clients, rate limits, graceful shutdown, the HTTP endpoints, and a
//! handshake that completes while the room is slow to accept the session.

mod harness;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use harness::cluster::Side::{A, B};
use harness::cluster::{edge_config, room_config};
use harness::raw::{http_get, read_until_closed, silent_websocket};
use harness::{Client, Cluster, room, sdp};
use switchboard_edge::EdgeConfig;
use switchboard_proto::{ClientMessage, ErrorCode, IceServer, PeerId, ServerMessage};
use switchboard_room::{MemoryBus, MemoryStore, Outbox, Readiness, Room, RoomError, RoomService};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

async fn cluster_with(edge: EdgeConfig) -> Cluster {
    Cluster::standalone_with(edge, room_config()).await
}

#[tokio::test]
async fn welcome_describes_the_connection() {
    let ice = IceServer {
        urls: "turn:turn.example.com:3478".into(),
        username: Some("u".into()),
        credential: Some("p".into()),
    };
    let c = cluster_with(EdgeConfig {
        ice_servers: vec![ice.clone()],
        max_message_bytes: 4096,
        heartbeat: Duration::from_secs(12),
        ..edge_config()
    })
    .await;
    let client = c.client(A).await;
    let ServerMessage::Welcome {
        peer_id,
        ice_servers,
        max_message_bytes,
        heartbeat_ms,
    } = client.welcome.clone()
    else {
        unreachable!()
    };
    assert_eq!(peer_id, client.peer_id);
    assert_eq!(ice_servers, vec![ice]);
    assert_eq!((max_message_bytes, heartbeat_ms), (4096, 12_000));
    let other = c.client(A).await;
    assert_ne!(
        other.peer_id, client.peer_id,
        "every connection is a new peer"
    );
    c.stop().await;
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009_and_hurts_nobody_else() {
    let c = cluster_with(EdgeConfig {
        max_message_bytes: 2048,
        ..edge_config()
    })
    .await;
    let mut bystander = c.client(A).await;
    let mut big = c.client(A).await;
    let frame = format!(r#"{{"type":"join","room":"{}"}}"#, "a".repeat(3000));
    big.send_raw(Message::text(frame)).await;
    let close = big.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1009);
    // Just under the limit is fine.
    let padding = "x".repeat(1900);
    let ok = format!(r#"{{"type":"ping","req":1,"pad":"{padding}"}}"#);
    bystander.send_raw(Message::text(ok)).await;
    assert!(matches!(bystander.recv().await, ServerMessage::Pong { .. }));
    c.stop().await;
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_the_heartbeat() {
    let c = cluster_with(EdgeConfig {
        heartbeat: Duration::from_millis(300),
        ..edge_config()
    })
    .await;
    let mut silent = silent_websocket(c.addr(A)).await;
    assert_eq!(read_until_closed(&mut silent).await, Some(1000));
    c.stop().await;
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected() {
    let c = cluster_with(EdgeConfig {
        heartbeat: Duration::from_millis(300),
        ..edge_config()
    })
    .await;
    let mut client = c.client(A).await;
    // Read (and so answer, as browsers do) six server pings: two heartbeats.
    let mut pings = 0;
    while pings < 6 {
        let frame = tokio::time::timeout(harness::DEADLINE, client.ws().next())
            .await
            .expect("a frame in time")
            .expect("still open")
            .expect("no error");
        if matches!(frame, Message::Ping(_)) {
            pings += 1;
        }
    }
    assert!(matches!(
        client.request(ClientMessage::Ping).await,
        ServerMessage::Pong { .. }
    ));
    c.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_not_buffered() {
    let c = cluster_with(EdgeConfig {
        outbound_queue: 8,
        write_timeout: Duration::from_millis(500),
        max_messages_per_sec: 0,
        ..edge_config()
    })
    .await;
    let lobby = room("slow");
    let mut slow = c.client(A).await;
    slow.join(&lobby).await;
    let slow_id = slow.peer_id;
    let mut flooder = c.client(A).await;
    flooder.join(&lobby).await;
    // Publish large offers (each shown to `slow`) until the server gives up on it.
    let big = sdp("flood", 30_000);
    let mut sent = 0;
    loop {
        let offer_id = flooder.offer(&lobby, big.clone(), None).await;
        flooder.request(ClientMessage::Hangup { offer_id }).await;
        sent += 1;
        let gone =
            flooder.drain().await.into_iter().any(
                |m| matches!(m, ServerMessage::PeerLeft { peer_id, .. } if peer_id == slow_id),
            );
        if gone {
            break;
        }
        assert!(sent < 5_000, "the slow client was never disconnected");
    }
    // What the slow client finally reads ends in a close (1008) or a dropped socket.
    if let Some(close) = slow.closed().await {
        assert_eq!(u16::from(close.code), 1008);
    }
    c.stop().await;
}

#[tokio::test]
async fn rate_limits_answer_with_errors_then_close_abusers() {
    let c = cluster_with(EdgeConfig {
        max_messages_per_sec: 5,
        ..edge_config()
    })
    .await;
    let mut client = c.client(A).await;
    for _ in 0..30 {
        client.send(ClientMessage::Ping).await;
    }
    let limited = client
        .next_where(|m| {
            matches!(
                m,
                ServerMessage::Error {
                    code: ErrorCode::RateLimited,
                    ..
                }
            )
        })
        .await;
    assert!(matches!(limited, ServerMessage::Error { req: None, .. }));
    // Keep going far past the limit: the server closes with 1008.
    let frame = r#"{"type":"ping"}"#;
    let flood = futures_util::stream::iter((0..400).map(|_| Ok(Message::text(frame))));
    let _ = client.ws().send_all(&mut flood.boxed()).await;
    let close = client.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
    c.stop().await;
}

#[tokio::test]
async fn shutdown_closes_sessions_with_1001_and_stops_accepting() {
    let c = Cluster::standalone().await;
    let addr = c.addr(A);
    let mut caller = c.client(A).await;
    let mut viewer = c.client(B).await;
    caller.join(&room("bye")).await;
    viewer.join(&room("bye")).await;
    c.begin_shutdown();
    for client in [caller, viewer] {
        let close = client.closed().await.expect("a close frame");
        assert_eq!(u16::from(close.code), 1001);
    }
    c.stop().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn health_readiness_and_the_demo_page_are_served() {
    let c = Cluster::standalone().await;
    assert_eq!(http_get(c.addr(A), "/healthz").await.0, 200);
    assert_eq!(http_get(c.addr(A), "/readyz").await.0, 200);
    let (status, page) = http_get(c.addr(A), "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("<video"), "the demo page has videos");
    assert!(page.contains("app.js"));
    let (status, script) = http_get(c.addr(A), "/app.js").await;
    assert_eq!(status, 200);
    assert!(script.contains("RTCPeerConnection"));
    assert_eq!(http_get(c.addr(A), "/nope").await.0, 404);
    // A plain GET on /ws is not an upgrade.
    assert_ne!(http_get(c.addr(A), "/ws").await.0, 101);
    let _ = Client::connect(&c.ws_url(A)).await;
    c.stop().await;
}

#[tokio::test]
async fn floods_of_malformed_frames_count_against_the_rate_limit() {
    let c = cluster_with(EdgeConfig {
        max_messages_per_sec: 5,
        ..edge_config()
    })
    .await;
    let mut client = c.client(A).await;
    let garbage = futures_util::stream::iter((0..400).map(|_| Ok(Message::text("not json"))));
    let _ = client.ws().send_all(&mut garbage.boxed()).await;
    let limited = client
        .next_where(|m| {
            matches!(
                m,
                ServerMessage::Error {
                    code: ErrorCode::RateLimited,
                    ..
                }
            )
        })
        .await;
    assert!(matches!(limited, ServerMessage::Error { .. }));
    let close = client.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
    c.stop().await;
}

/// The in-memory room behind a gate: `connect` waits until the test opens it,
/// as a room replica that is slow to accept a session would.
#[derive(Clone)]
struct GatedRooms {
    room: Room<MemoryStore, MemoryBus>,
    open: watch::Receiver<bool>,
}

impl RoomService for GatedRooms {
    type Session = <Room<MemoryStore, MemoryBus> as RoomService>::Session;

    async fn connect(&self, peer: PeerId, outbox: Outbox) -> Result<Self::Session, RoomError> {
        let _ = self.open.clone().wait_for(|open| *open).await;
        self.room.connect(peer, outbox).await
    }

    async fn readiness(&self) -> Readiness {
        self.room.readiness().await
    }
}

#[tokio::test]
async fn a_slow_room_does_not_hold_the_handshake_back() {
    let (gate, open) = watch::channel(false);
    let rooms = GatedRooms {
        room: Room::in_memory(room_config()),
        open,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(switchboard_edge::serve(
        listener,
        rooms,
        edge_config(),
        shutdown.clone(),
    ));
    // The room has not accepted the session, yet the handshake completes: the
    // edge releases its `101` with a ping rather than wait for the welcome.
    let (mut ws, _) = timeout(harness::DEADLINE, connect_async(format!("ws://{addr}/ws")))
        .await
        .expect("the handshake completes while the room is slow")
        .expect("upgraded");
    let first = timeout(harness::DEADLINE, ws.next())
        .await
        .expect("a frame");
    assert!(
        matches!(first, Some(Ok(Message::Ping(_)))),
        "a ping comes before the welcome: {first:?}"
    );
    gate.send_replace(true);
    let welcome = timeout(harness::DEADLINE, ws.next())
        .await
        .expect("a frame");
    let Some(Ok(Message::Text(welcome))) = welcome else {
        panic!("the welcome follows once the room answers: {welcome:?}");
    };
    let welcome: ServerMessage = serde_json::from_str(&welcome).expect("a server message");
    assert!(matches!(welcome, ServerMessage::Welcome { .. }));
    drop(ws);
    shutdown.cancel();
    server.await.expect("joined").expect("served");
}
