//! The session workload, validated end to end:
//!
//! 1. the caller connects, joins a room of its own, publishes a ~4.5 KB offer
//!    and trickles 4 candidates (the last with a `req`, so all are buffered);
//! 2. the callee connects (to the other edge when there are several), joins,
//!    and must be shown exactly that offer with exactly those candidates;
//! 3. the callee answers (~3.6 KB) and must get the 4 candidates back in
//!    `answered`; then it trickles 4 candidates of its own;
//! 4. the caller must receive exactly that answer and those 4 candidates, in
//!    order, from the callee; then both leave.
//!
//! Anything else (a wrong id, payload, count or order) is a failure, never a
//! success. Session time runs from the caller's connect until it holds the
//! answer and every callee candidate; relay latency from just before the callee
//! sends its answer until the caller receives it.

use std::sync::OnceLock;
use std::time::Duration;

use switchboard_proto::{ClientMessage, RoomId, ServerMessage};
use tokio::time::Instant;

use crate::payload;
use crate::peer::{Failure, Peer};

/// Candidates each side trickles.
const CANDIDATES: u32 = 4;

/// What one successful session measured.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub session_time: Duration,
    pub relay: Duration,
}

/// Runs session number `id` with the caller on `caller_url` and the callee on
/// `callee_url`.
pub async fn run(
    id: u64,
    caller_url: &str,
    callee_url: &str,
    deadline: Duration,
) -> Result<Outcome, Failure> {
    let start = Instant::now();
    let room: RoomId = format!("lt-{id}")
        .parse()
        .map_err(|_| Failure::Invalid("room"))?;
    let mut caller = Peer::connect(caller_url, deadline).await?;
    expect_joined(&mut caller, &room).await?;
    let offer_id = match caller
        .request(ClientMessage::Offer {
            room: room.clone(),
            sdp: payload::offer(id),
            to: None,
        })
        .await?
    {
        ServerMessage::OfferCreated { offer_id, .. } => offer_id,
        _ => return Err(Failure::Invalid("offer reply")),
    };
    let caller_candidates: Vec<_> = (0..CANDIDATES)
        .map(|n| payload::candidate(id, "caller", n))
        .collect();
    for (n, candidate) in caller_candidates.iter().enumerate() {
        let last = n + 1 == caller_candidates.len();
        let message = ClientMessage::Candidate {
            offer_id,
            candidate: candidate.clone(),
        };
        caller.send(message, last).await?;
    }
    if !matches!(caller.recv().await?, ServerMessage::Ok { .. }) {
        return Err(Failure::Invalid("candidate reply"));
    }

    let mut callee = Peer::connect(callee_url, deadline).await?;
    let offers = expect_joined(&mut callee, &room).await?;
    let [shown] = offers.as_slice() else {
        return Err(Failure::Invalid("offer count"));
    };
    if shown.offer_id != offer_id || shown.from != caller.id || shown.sdp != payload::offer(id) {
        return Err(Failure::Invalid("pending offer"));
    }
    if shown.candidates != caller_candidates {
        return Err(Failure::Invalid("buffered candidates"));
    }

    let answer_sent = OnceLock::new();
    let callee_id = callee.id;
    let callee_side = async {
        answer_sent.get_or_init(Instant::now);
        let reply = callee
            .request(ClientMessage::Answer {
                offer_id,
                sdp: payload::answer(id),
            })
            .await?;
        match reply {
            ServerMessage::Answered {
                offer_id: got,
                candidates,
                ..
            } if got == offer_id => {
                if candidates != caller_candidates {
                    return Err(Failure::Invalid("answered candidates"));
                }
            }
            _ => return Err(Failure::Invalid("answer reply")),
        }
        for n in 0..CANDIDATES {
            let candidate = payload::candidate(id, "callee", n);
            callee
                .send(
                    ClientMessage::Candidate {
                        offer_id,
                        candidate,
                    },
                    false,
                )
                .await?;
        }
        Ok(())
    };
    let caller_side = async {
        let relay = loop {
            match caller.recv().await? {
                ServerMessage::Answer {
                    offer_id: got,
                    from,
                    sdp,
                } => {
                    let at = Instant::now();
                    if got != offer_id || from != callee_id || sdp != payload::answer(id) {
                        return Err(Failure::Invalid("answer"));
                    }
                    break at.duration_since(
                        *answer_sent.get().ok_or(Failure::Invalid("answer order"))?,
                    );
                }
                ServerMessage::PeerJoined { .. } => continue,
                _ => return Err(Failure::Invalid("unexpected message before the answer")),
            }
        };
        for n in 0..CANDIDATES {
            match caller.recv().await? {
                ServerMessage::Candidate {
                    offer_id: got,
                    from,
                    candidate,
                } if got == offer_id
                    && from == callee_id
                    && candidate == payload::candidate(id, "callee", n) => {}
                _ => return Err(Failure::Invalid("relayed candidate")),
            }
        }
        Ok((relay, start.elapsed()))
    };
    let ((), (relay, session_time)) = tokio::try_join!(callee_side, caller_side)?;
    tokio::join!(caller.close(), callee.close());
    Ok(Outcome {
        session_time,
        relay,
    })
}

async fn expect_joined(
    peer: &mut Peer,
    room: &RoomId,
) -> Result<Vec<switchboard_proto::PendingOffer>, Failure> {
    match peer
        .request(ClientMessage::Join { room: room.clone() })
        .await?
    {
        ServerMessage::Joined {
            room: got, offers, ..
        } if &got == room => Ok(offers),
        _ => Err(Failure::Invalid("join reply")),
    }
}
