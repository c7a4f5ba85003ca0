//! Shared harness of the integration tests: real servers on `127.0.0.1:0`, and
//! a WebSocket test client that speaks `switchboard-proto` types.
//!
//! Every wait has a deadline ([`DEADLINE`]); nothing sleeps to synchronise.

#![allow(dead_code, unused_imports)] // each test binary uses its own part of the harness

pub mod client;
pub mod cluster;
pub mod process;
pub mod raw;

pub use client::Client;
pub use cluster::Cluster;

use std::time::Duration;

/// The longest any single expected event may take.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A syntactically valid SDP of roughly `len` bytes.
pub fn sdp(label: &str, len: usize) -> switchboard_proto::Sdp {
    let mut text = format!("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns={label}\r\n");
    while text.len() < len {
        text.push_str("a=x-padding:0123456789abcdef0123456789abcdef\r\n");
    }
    switchboard_proto::Sdp::parse(&text).expect("valid sdp")
}

/// A host candidate whose line carries `n`, so tests can tell candidates apart.
pub fn candidate(n: u32) -> switchboard_proto::Candidate {
    switchboard_proto::Candidate {
        candidate: format!(
            "candidate:{n} 1 udp 2122260223 127.0.0.1 {} typ host",
            40000 + n
        ),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: Some("ufrag".into()),
    }
}

/// Candidates `ns` for `offer_id` as frames to send together (a browser's
/// trickle burst): only the last carries a `req`, `last`.
pub fn candidate_burst(
    offer_id: switchboard_proto::OfferId,
    ns: std::ops::Range<u32>,
    last: switchboard_proto::Req,
) -> Vec<switchboard_proto::ClientFrame> {
    let end = ns.end;
    ns.map(|n| {
        let message = switchboard_proto::ClientMessage::Candidate {
            offer_id,
            candidate: candidate(n),
        };
        switchboard_proto::ClientFrame::new((n + 1 == end).then_some(last), message)
    })
    .collect()
}

/// `join` as a message.
pub fn room(name: &str) -> switchboard_proto::RoomId {
    name.parse().expect("valid room name")
}

/// One complete call between two connected clients: the caller joins, offers
/// and buffers a candidate; the callee joins after that, answers; candidates
/// both ways; the caller hangs up. Returns the offer id.
pub async fn full_call(
    caller: &mut Client,
    callee: &mut Client,
    room: &switchboard_proto::RoomId,
) -> switchboard_proto::OfferId {
    use switchboard_proto::{ClientMessage, ServerMessage};
    caller.join(room).await;
    let offer_id = caller.offer(room, sdp("caller", 300), None).await;
    caller.candidate(offer_id, candidate(1)).await;
    let listed = callee.join(room).await;
    assert!(listed.iter().any(|o| o.offer_id == offer_id));
    let answered = callee.answer(offer_id, sdp("callee", 300)).await;
    assert!(matches!(answered, ServerMessage::Answered { .. }));
    caller
        .next_where(|m| matches!(m, ServerMessage::Answer { .. }))
        .await;
    callee.candidate(offer_id, candidate(2)).await;
    caller
        .next_where(|m| matches!(m, ServerMessage::Candidate { .. }))
        .await;
    caller.candidate(offer_id, candidate(3)).await;
    callee
        .next_where(|m| matches!(m, ServerMessage::Candidate { .. }))
        .await;
    caller.request(ClientMessage::Hangup { offer_id }).await;
    callee
        .next_where(|m| matches!(m, ServerMessage::Hangup { .. }))
        .await;
    offer_id
}
