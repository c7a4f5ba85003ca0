//! The store contract: the in-memory store and the Redis store (against a real
//! `redis-server` this test starts) behave the same, operation by operation.
//! The room logic relies on exactly these guarantees.

mod harness;

use std::time::Duration;

use futures_util::future::join_all;
use harness::process;
use harness::{candidate, room, sdp};
use switchboard_proto::{OfferId, PeerId};
use switchboard_room::Store;
use switchboard_room::store::memory::MemoryStore;
use switchboard_room::store::redis::RedisStore;
use switchboard_room::store::{AddCandidates, Answerer, Claim, OfferRecord, Parties};
use switchboard_telemetry::TraceContext;

const TTL: Duration = Duration::from_secs(60);
const CALL_TTL: Duration = Duration::from_secs(600);

/// `peer`, in `offer`'s room only.
fn answerer<'a>(peer: &PeerId, offer: &'a OfferRecord) -> Answerer<'a> {
    Answerer {
        peer: *peer,
        rooms: std::slice::from_ref(&offer.room),
    }
}

/// Claims `offer` for `peer`, which must win, and returns the candidates it took.
async fn won_candidates(
    store: &impl Store,
    offer: &OfferRecord,
    peer: &PeerId,
) -> Vec<switchboard_proto::Candidate> {
    let claim = store
        .claim(&offer.id, answerer(peer, offer), CALL_TTL)
        .await
        .expect("claim");
    let Claim::Won { candidates, .. } = claim else {
        panic!("the claim should win, got {claim:?}");
    };
    candidates
}

fn record(room_name: &str, caller: PeerId) -> OfferRecord {
    OfferRecord {
        id: OfferId::random(),
        room: room(room_name),
        caller,
        to: None,
        sdp: sdp("offer", 300),
        answerer: None,
        trace: TraceContext::default(),
    }
}

async fn offers_are_listed_with_their_candidates_in_order(store: &impl Store) {
    let caller = PeerId::random();
    let first = record("listing", caller);
    let mut second = record("listing", caller);
    second.to = Some(PeerId::random());
    store.insert_offer(&first, TTL).await.expect("insert");
    store.insert_offer(&second, TTL).await.expect("insert");
    store
        .insert_offer(&record("elsewhere", caller), TTL)
        .await
        .expect("insert");
    for n in 0..3 {
        let added = store
            .add_candidates(&first.id, &caller, &[candidate(n)], 10)
            .await
            .expect("add");
        assert_eq!(added, AddCandidates::Buffered(1));
    }
    assert_eq!(
        store.offer(&second.id).await.expect("get"),
        Some(second.clone().summary())
    );
    let listed = store.room_offers(&room("listing")).await.expect("list");
    assert_eq!(
        listed,
        vec![(first, (0..3).map(candidate).collect()), (second, vec![])]
    );
}

async fn only_the_caller_buffers_and_only_up_to_the_limit(store: &impl Store) {
    let caller = PeerId::random();
    let offer = record("buffer", caller);
    store.insert_offer(&offer, TTL).await.expect("insert");
    let stranger = PeerId::random();
    let added = store
        .add_candidates(&offer.id, &stranger, &[candidate(1)], 2)
        .await
        .expect("add");
    assert_eq!(
        added,
        AddCandidates::NotBuffered(Parties {
            caller,
            answerer: None
        })
    );
    for n in 0..2 {
        assert_eq!(
            store
                .add_candidates(&offer.id, &caller, &[candidate(n)], 2)
                .await
                .expect("add"),
            AddCandidates::Buffered(1)
        );
    }
    assert_eq!(
        store
            .add_candidates(&offer.id, &caller, &[candidate(3)], 2)
            .await
            .expect("add"),
        AddCandidates::Buffered(0)
    );
    assert_eq!(
        won_candidates(store, &offer, &stranger).await,
        vec![candidate(0), candidate(1)],
        "a refused candidate is not buffered"
    );
    let unknown = OfferId::random();
    assert_eq!(
        store
            .add_candidates(&unknown, &caller, &[candidate(1)], 2)
            .await
            .expect("add"),
        AddCandidates::NotFound
    );
}

async fn a_burst_is_buffered_in_order_as_far_as_it_fits(store: &impl Store) {
    let caller = PeerId::random();
    let offer = record("burst", caller);
    store.insert_offer(&offer, TTL).await.expect("insert");
    let burst = |from: u32, to: u32| (from..to).map(candidate).collect::<Vec<_>>();
    let mut results = Vec::new();
    for (candidates, max) in [
        (burst(0, 3), 5),
        (burst(3, 6), 5),
        (burst(6, 8), 5),
        (vec![], 5),
    ] {
        let added = store
            .add_candidates(&offer.id, &caller, &candidates, max)
            .await
            .expect("add");
        results.push(added);
    }
    assert_eq!(
        results,
        [3, 2, 0, 0].map(AddCandidates::Buffered),
        "all of the first burst, as many of the next as fit, none once full"
    );
    assert_eq!(
        won_candidates(store, &offer, &PeerId::random()).await,
        burst(0, 5),
        "in order, without those past the limit"
    );
    let added = store
        .add_candidates(&OfferId::random(), &caller, &burst(0, 2), 5)
        .await
        .expect("add");
    assert_eq!(added, AddCandidates::NotFound);

    // A limit of 0 buffers nothing; a limit lowered below what is buffered
    // takes no more but keeps what was taken.
    let offer = record("burst", caller);
    store.insert_offer(&offer, TTL).await.expect("insert");
    let mut results = Vec::new();
    for (candidates, max) in [(burst(0, 2), 0), (burst(0, 4), 10), (burst(4, 6), 2)] {
        let added = store
            .add_candidates(&offer.id, &caller, &candidates, max)
            .await
            .expect("add");
        results.push(added);
    }
    assert_eq!(results, [0, 4, 0].map(AddCandidates::Buffered));
    let listed = store.room_offers(&room("burst")).await.expect("list");
    assert_eq!(
        listed,
        vec![(offer, burst(0, 4))],
        "nothing taken is dropped"
    );
}

async fn exactly_one_of_many_concurrent_claims_wins(store: &impl Store) {
    let caller = PeerId::random();
    let offer = record("claim", caller);
    store.insert_offer(&offer, TTL).await.expect("insert");
    store
        .add_candidates(&offer.id, &caller, &[candidate(1)], 10)
        .await
        .expect("add");
    let answerers: Vec<PeerId> = (0..16).map(|_| PeerId::random()).collect();
    let claims = join_all(
        answerers
            .iter()
            .map(|a| store.claim(&offer.id, answerer(a, &offer), CALL_TTL)),
    )
    .await;
    let won: Vec<usize> = (0..claims.len())
        .filter(|i| matches!(claims[*i], Ok(Claim::Won { .. })))
        .collect();
    assert_eq!(won.len(), 1, "{claims:?}");
    assert!(
        claims
            .iter()
            .all(|c| matches!(c, Ok(Claim::Won { .. } | Claim::Taken)))
    );
    let Ok(Claim::Won {
        record: call,
        candidates,
        waited,
    }) = &claims[won[0]]
    else {
        unreachable!("filtered above")
    };
    assert_eq!(candidates, &vec![candidate(1)]);
    let mut expected = offer.clone().summary();
    expected.answerer = Some(answerers[won[0]]);
    assert_eq!(call, &expected, "the won call's summary");
    assert!(*waited < TTL, "pending for {waited:?}");
    let winner = answerers[won[0]];
    // Now a call: no longer listed, candidates are not buffered any more.
    assert!(
        store
            .room_offers(&room("claim"))
            .await
            .expect("list")
            .is_empty()
    );
    let added = store
        .add_candidates(&offer.id, &caller, &[candidate(2)], 10)
        .await
        .expect("add");
    assert_eq!(
        added,
        AddCandidates::NotBuffered(Parties {
            caller,
            answerer: Some(winner)
        })
    );
    let call = store
        .offer(&offer.id)
        .await
        .expect("get")
        .expect("live call");
    assert_eq!((call.caller, call.answerer), (caller, Some(winner)));
    assert_eq!(
        store
            .claim(&OfferId::random(), answerer(&winner, &offer), CALL_TTL)
            .await
            .expect("claim"),
        Claim::NotFound
    );
}

async fn a_claim_checks_who_may_answer_and_a_refusal_changes_nothing(store: &impl Store) {
    let caller = PeerId::random();
    let addressee = PeerId::random();
    let mut offer = record("guard", caller);
    offer.to = Some(addressee);
    store.insert_offer(&offer, TTL).await.expect("insert");
    let elsewhere = [room("elsewhere")];
    let refusals = [
        (answerer(&caller, &offer), Claim::OwnOffer),
        (
            answerer(&PeerId::random(), &offer),
            Claim::AddressedElsewhere,
        ),
        (
            Answerer {
                peer: addressee,
                rooms: &elsewhere,
            },
            Claim::NotInRoom,
        ),
    ];
    for (who, expected) in refusals {
        let claim = store.claim(&offer.id, who, CALL_TTL).await.expect("claim");
        assert_eq!(claim, expected);
    }
    assert_eq!(
        store.room_offers(&room("guard")).await.expect("list").len(),
        1,
        "still pending after the refusals"
    );
    // In several rooms, one of them the offer's: the claim wins.
    let rooms = [room("elsewhere"), room("guard")];
    let who = Answerer {
        peer: addressee,
        rooms: &rooms,
    };
    let claim = store.claim(&offer.id, who, CALL_TTL).await.expect("claim");
    assert!(matches!(claim, Claim::Won { .. }), "{claim:?}");
    assert!(
        store
            .room_offers(&room("guard"))
            .await
            .expect("list")
            .is_empty(),
        "unlisted from its own room"
    );
    let claim = store.claim(&offer.id, who, CALL_TTL).await.expect("claim");
    assert_eq!(claim, Claim::Taken);
}

async fn a_removal_is_seen_by_exactly_one_remover(store: &impl Store) {
    let offer = record("remove", PeerId::random());
    store.insert_offer(&offer, TTL).await.expect("insert");
    let removals = join_all((0..8).map(|_| store.remove_offer(&offer.id, &offer.room))).await;
    let seen: Vec<_> = removals
        .into_iter()
        .filter_map(|r| r.expect("remove"))
        .collect();
    assert_eq!(seen, vec![offer.clone().summary()]);
    assert_eq!(store.offer(&offer.id).await.expect("get"), None);
    assert!(
        store
            .room_offers(&room("remove"))
            .await
            .expect("list")
            .is_empty()
    );
}

async fn expired_offers_are_taken_once_and_are_gone_meanwhile(store: &impl Store) {
    let offer = record("expiry", PeerId::random());
    store
        .insert_offer(&offer, Duration::from_millis(200))
        .await
        .expect("insert");
    let claimed = record("expiry", PeerId::random());
    store
        .insert_offer(&claimed, Duration::from_millis(200))
        .await
        .expect("insert");
    store
        .claim(&claimed.id, answerer(&PeerId::random(), &claimed), CALL_TTL)
        .await
        .expect("claim");
    let deadline = tokio::time::Instant::now() + harness::DEADLINE;
    let taken = loop {
        let taken = store.take_expired(100).await.expect("take");
        if !taken.is_empty() {
            break taken;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the offer never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(taken, vec![offer.clone()], "only the pending offer expires");
    assert!(
        store.take_expired(100).await.expect("take").is_empty(),
        "taken once"
    );
    assert_eq!(store.offer(&offer.id).await.expect("get"), None);
    assert!(
        store
            .claim(&offer.id, answerer(&PeerId::random(), &offer), CALL_TTL)
            .await
            .expect("claim")
            == Claim::NotFound
    );
    assert!(
        store.offer(&claimed.id).await.expect("get").is_some(),
        "the call lives on"
    );
}

async fn pending_offers_are_counted_with_the_soonest_deadline(store: &impl Store) {
    assert_eq!(store.pending().await.expect("pending"), (0, None));
    let (later, sooner) = (
        record("count", PeerId::random()),
        record("count", PeerId::random()),
    );
    store.insert_offer(&later, TTL).await.expect("insert");
    store.insert_offer(&sooner, TTL / 2).await.expect("insert");
    let (count, left) = store.pending().await.expect("pending");
    assert_eq!(count, 2);
    let left = left.expect("a deadline");
    assert!(
        left <= TTL / 2 && left > TTL / 2 - Duration::from_secs(10),
        "{left:?}"
    );

    store
        .claim(&sooner.id, answerer(&PeerId::random(), &sooner), CALL_TTL)
        .await
        .expect("claim");
    let (count, left) = store.pending().await.expect("pending");
    assert_eq!(count, 1, "a call is no longer pending");
    assert!(
        left.expect("a deadline") > TTL / 2,
        "the later offer's deadline"
    );

    store
        .remove_offer(&later.id, &later.room)
        .await
        .expect("remove");
    assert_eq!(store.pending().await.expect("pending"), (0, None));
}

/// A Redis store on a `redis-server` of its own, and a plain connection to
/// that server to look behind the store's back (keep the process alive).
async fn redis_store() -> (
    process::Process,
    RedisStore,
    ::redis::aio::MultiplexedConnection,
) {
    let dir = process::log_dir("store");
    let server = process::redis(&dir).await;
    let url = format!("redis://{}/", server.addr);
    let store = RedisStore::connect(&url, "contract:")
        .await
        .expect("connect");
    let conn = ::redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    (server, store, conn)
}

/// Redis only: a pending offer's candidate buffer expires with the offer, so
/// nothing is left behind by an offer nobody answers.
#[tokio::test]
async fn a_candidate_buffer_expires_with_its_offer_in_redis() {
    let (_server, store, mut conn) = redis_store().await;
    let caller = PeerId::random();
    let offer = record("expiry", caller);
    store.insert_offer(&offer, TTL).await.expect("insert");
    // The first burst creates the buffer (and sets its expiry), then singles.
    let first = [candidate(0), candidate(1)];
    let added = store
        .add_candidates(&offer.id, &caller, &first, 8)
        .await
        .expect("add");
    assert_eq!(added, AddCandidates::Buffered(2));
    let added = store
        .add_candidates(&offer.id, &caller, &[candidate(2)], 8)
        .await
        .expect("add");
    assert_eq!(added, AddCandidates::Buffered(1));
    let mut pttl = async |key: String| -> i64 {
        ::redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("pttl")
    };
    let offer_ms = pttl(format!("contract:offer:{}", offer.id)).await;
    let buffer_ms = pttl(format!("contract:offer:{}:candidates", offer.id)).await;
    assert!(offer_ms > 0, "the offer expires ({offer_ms})");
    assert!(
        (offer_ms - buffer_ms).abs() < 1000,
        "the buffer expires with the offer: offer in {offer_ms} ms, buffer in {buffer_ms} ms"
    );
}

/// Redis only: an offer is stored whole (SDP and expiry included) even when
/// Redis has lost its script cache, as after a restart.
#[tokio::test]
async fn an_offer_is_stored_whole_after_redis_loses_its_scripts() {
    let (_server, store, mut conn) = redis_store().await;
    let caller = PeerId::random();
    let before = record("flushed", caller);
    store.insert_offer(&before, TTL).await.expect("insert");
    let () = ::redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .expect("script flush");
    let after = record("flushed", caller);
    store
        .insert_offer(&after, TTL)
        .await
        .expect("insert after the flush");
    let listed = store.room_offers(&room("flushed")).await.expect("list");
    let listed: Vec<_> = listed.into_iter().map(|(offer, _)| offer).collect();
    assert_eq!(listed, vec![before, after.clone()]);
    let offer_ms: i64 = ::redis::cmd("PTTL")
        .arg(format!("contract:offer:{}", after.id))
        .query_async(&mut conn)
        .await
        .expect("pttl");
    assert!(
        offer_ms > TTL.as_millis() as i64,
        "the offer outlives its TTL by the grace period ({offer_ms} ms)"
    );
}

macro_rules! contract {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(&super::MemoryStore::new()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $test() {
                    let dir = super::process::log_dir("store");
                    let server = super::process::redis(&dir).await;
                    let url = format!("redis://{}/", server.addr);
                    let store = super::RedisStore::connect(&url, "contract:").await.expect("connect");
                    super::$test(&store).await;
                }
            )*
        }
    };
}

contract!(
    offers_are_listed_with_their_candidates_in_order,
    only_the_caller_buffers_and_only_up_to_the_limit,
    a_burst_is_buffered_in_order_as_far_as_it_fits,
    exactly_one_of_many_concurrent_claims_wins,
    a_claim_checks_who_may_answer_and_a_refusal_changes_nothing,
    a_removal_is_seen_by_exactly_one_remover,
    expired_offers_are_taken_once_and_are_gone_meanwhile,
    pending_offers_are_counted_with_the_soonest_deadline,
);
