//! Measurements behind the design notes in `docs/ARCHITECTURE.md` (not timed
//! tests: they assert nothing about speed, they print what they measure). Run:
//!
//! ```text
//! cargo test --release -p switchboard --test measure -- --ignored --nocapture
//! ```

#![allow(clippy::print_stdout)] // printing the figures is the point

mod harness;

use std::time::{Duration, Instant};

use harness::cluster::Side::{A, B};
use harness::cluster::{EDGE_A, ROOM_1, Routing};
use harness::{Cluster, candidate, room, sdp};
use switchboard_proto::{ClientMessage, ServerMessage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run by hand"]
async fn idle_session_memory_and_relay_throughput() {
    const IDLE: usize = 2000;
    let mut c =
        Cluster::distributed_opts(Routing::Split, &[], &["--max-messages-per-sec", "0"]).await;
    // Each idle client is alone in its own room (a shared room would make the
    // mass disconnect at the end a presence storm that measures something else).
    let mut n = 0;
    let mut own_room = || {
        n += 1;
        room(&format!("idle-{n}"))
    };
    // Warm up allocators and connection pools with a few sessions first.
    let mut warm = Vec::new();
    for _ in 0..50 {
        let mut client = c.client(A).await;
        client.join(&own_room()).await;
        warm.push(client);
    }
    let (edge0, room0) = (c.process(EDGE_A).rss_kib(), c.process(ROOM_1).rss_kib());
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        let mut client = c.client(A).await;
        client.join(&own_room()).await;
        idle.push(client);
    }
    let (edge1, room1) = (c.process(EDGE_A).rss_kib(), c.process(ROOM_1).rss_kib());
    let per =
        |before: u64, after: u64| (after.saturating_sub(before)) as f64 * 1024.0 / IDLE as f64;
    println!(
        "idle sessions (joined one room): edge {:.0} B/session, room {:.0} B/session",
        per(edge0, edge1),
        per(room0, room1)
    );
    drop(idle);
    drop(warm);

    // Relay throughput: one call, the callee streams candidates to the caller.
    let mut caller = c.client(A).await;
    let mut callee = c.client(B).await;
    let calls = room("throughput");
    caller.join(&calls).await;
    callee.join(&calls).await;
    let offer_id = caller.offer(&calls, sdp("offer", 4500), None).await;
    callee.answer(offer_id, sdp("answer", 3600)).await;
    caller
        .next_where(|m| matches!(m, ServerMessage::Answer { .. }))
        .await;
    // In windows of 100, so the caller's outbound queue (256) never overflows.
    const N: u32 = 20_000;
    const WINDOW: u32 = 100;
    let start = Instant::now();
    for batch in 0..N / WINDOW {
        for n in 0..WINDOW {
            let candidate = candidate(batch * WINDOW + n);
            callee
                .send(ClientMessage::Candidate {
                    offer_id,
                    candidate,
                })
                .await;
        }
        for _ in 0..WINDOW {
            caller
                .next_where(|m| matches!(m, ServerMessage::Candidate { .. }))
                .await;
        }
    }
    let took = start.elapsed().max(Duration::from_millis(1));
    println!(
        "relay: {N} candidates edge B -> room 2 -> redis -> room 1 -> edge A in {took:?}: {:.0} messages/s",
        f64::from(N) / took.as_secs_f64()
    );
    c.stop().await;
}
