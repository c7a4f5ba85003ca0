//! [`CallRoutes`]: the other party of each call a session's peer is in, so its
//! candidates after the answer are relayed without asking the store who may
//! send them (most of a call's candidates come after the answer).
//!
//! A route is learnt where the call is made: by the answerer when its claim
//! wins, by the caller when the answer is delivered to it (the outbox is
//! wrapped in [`Watch`]). It is forgotten when the peer ends the call itself,
//! and shortly before the call's record expires in the store; a candidate
//! without a route takes the store's word, as before.
//!
//! A `hangup` that reaches the peer replaces the route with a mark that the
//! other party ended the call, which it does only once the store no longer
//! holds the call: the peer's own clean-up (leaving, disconnecting) then skips
//! the store for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use switchboard_proto::{OfferId, PeerId, ServerMessage};
use tokio::time::Instant;

use crate::outbox::{Deliver, Delivery, Outbox};

/// A route is trusted until this long before its call's record expires.
const MARGIN: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct CallRoutes {
    calls: Mutex<HashMap<OfferId, Call>>,
    call_ttl: Duration,
}

/// What is known here of one of the peer's calls.
#[derive(Debug, Clone, Copy)]
enum Call {
    /// Live, with the other party, trusted until `until`.
    Routed { other: PeerId, until: Instant },
    /// The other party ended it: the store holds nothing more of it.
    Ended,
}

impl CallRoutes {
    /// Calls remembered at most: a peer in more calls than this asks the store.
    pub(crate) const MAX: usize = 64;

    pub(crate) fn new(call_ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            calls: Mutex::default(),
            call_ttl,
        })
    }

    fn calls(&self) -> MutexGuard<'_, HashMap<OfferId, Call>> {
        // Every update is one insert or remove: a poisoned map is still whole.
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers `call` for `offer` if there is room (making room by dropping
    /// routes that expired and ended calls, which only save a store lookup).
    fn remember(&self, offer: OfferId, call: Call) {
        let mut calls = self.calls();
        if calls.len() >= Self::MAX {
            let now = Instant::now();
            calls.retain(|_, call| matches!(call, Call::Routed { until, .. } if *until > now));
        }
        if calls.len() < Self::MAX || calls.contains_key(&offer) {
            calls.insert(offer, call);
        }
    }

    /// The call `offer` was answered just now; `other` is the other party.
    pub(crate) fn learn(&self, offer: OfferId, other: PeerId) {
        let Some(life) = self.call_ttl.checked_sub(MARGIN).filter(|l| !l.is_zero()) else {
            return;
        };
        let until = Instant::now() + life;
        self.remember(offer, Call::Routed { other, until });
    }

    /// The other party of the live call `offer`, if known here.
    pub(crate) fn other(&self, offer: &OfferId) -> Option<PeerId> {
        let mut calls = self.calls();
        match *calls.get(offer)? {
            Call::Routed { other, until } if until > Instant::now() => Some(other),
            Call::Routed { .. } => {
                calls.remove(offer);
                None
            }
            Call::Ended => None,
        }
    }

    /// The peer ends the call itself.
    pub(crate) fn forget(&self, offer: &OfferId) {
        self.calls().remove(offer);
    }

    /// The other party ended the call `offer` (its `hangup` reached the peer).
    fn hung_up(&self, offer: OfferId) {
        self.remember(offer, Call::Ended);
    }

    /// Whether the other party ended the call `offer`: the store holds
    /// nothing more of it.
    pub(crate) fn ended_by_other(&self, offer: &OfferId) -> bool {
        matches!(self.calls().get(offer), Some(Call::Ended))
    }

    /// `outbox`, watched for the answers and hang-ups it carries to the peer.
    pub(crate) fn watch(self: &Arc<Self>, outbox: Outbox) -> Outbox {
        Outbox::new(Watch {
            routes: Arc::clone(self),
            outbox,
        })
    }
}

/// An outbox that keeps [`CallRoutes`] up to date with what it delivers.
#[derive(Debug)]
struct Watch {
    routes: Arc<CallRoutes>,
    outbox: Outbox,
}

impl Deliver for Watch {
    fn deliver(&self, delivery: Arc<Delivery>) {
        match &delivery.msg {
            ServerMessage::Answer { offer_id, from, .. } => self.routes.learn(*offer_id, *from),
            ServerMessage::Hangup { offer_id, .. } => self.routes.hung_up(*offer_id),
            _ => {}
        }
        self.outbox.push(delivery)
    }
}

#[cfg(test)]
mod tests {
    use switchboard_proto::Sdp;
    use switchboard_telemetry::Origin;

    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn answer(offer_id: OfferId, from: PeerId) -> Arc<Delivery> {
        let sdp = Sdp::parse("v=0\r\n").expect("sdp");
        Delivery::new(
            ServerMessage::Answer {
                offer_id,
                from,
                sdp,
            },
            Origin::default(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_route_lasts_until_just_before_the_call_expires() {
        let routes = CallRoutes::new(TTL);
        let (offer, other) = (OfferId::random(), PeerId::random());
        routes.learn(offer, other);
        assert_eq!(routes.other(&offer), Some(other));
        tokio::time::advance(TTL - MARGIN - Duration::from_millis(1)).await;
        assert_eq!(routes.other(&offer), Some(other));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(routes.other(&offer), None, "the store decides from here on");
    }

    #[tokio::test]
    async fn delivered_answers_teach_routes_and_hangups_end_them() {
        let routes = CallRoutes::new(TTL);
        let (outbox, mut rx) = Outbox::channel(8);
        let watched = routes.watch(outbox);
        let (offer, answerer) = (OfferId::random(), PeerId::random());
        watched.push(answer(offer, answerer));
        assert_eq!(routes.other(&offer), Some(answerer));
        let hangup = ServerMessage::Hangup {
            offer_id: offer,
            from: answerer,
        };
        watched.push(Delivery::new(hangup.clone(), Origin::default()));
        assert_eq!(routes.other(&offer), None);
        assert!(
            routes.ended_by_other(&offer),
            "the hangup says the call is over"
        );
        assert!(matches!(
            rx.recv().await.map(|d| d.msg.clone()),
            Ok(ServerMessage::Answer { .. })
        ));
        assert_eq!(
            rx.recv().await.map(|d| d.msg.clone()),
            Ok(hangup),
            "both delivered"
        );
    }

    #[test]
    fn routes_are_bounded() {
        let routes = CallRoutes::new(TTL);
        let offers: Vec<OfferId> = (0..=CallRoutes::MAX).map(|_| OfferId::random()).collect();
        for offer in &offers {
            routes.learn(*offer, PeerId::random());
        }
        assert_eq!(routes.calls().len(), CallRoutes::MAX);
        assert_eq!(
            routes.other(&offers[CallRoutes::MAX]),
            None,
            "not remembered"
        );
        // Ended calls count against the same bound.
        let ended = CallRoutes::new(TTL);
        for offer in &offers {
            ended.hung_up(*offer);
            assert!(ended.calls().len() <= CallRoutes::MAX);
        }
        assert!(ended.ended_by_other(&offers[CallRoutes::MAX]));
    }

    #[test]
    fn a_call_too_short_to_trust_is_never_routed() {
        let routes = CallRoutes::new(MARGIN);
        let offer = OfferId::random();
        routes.learn(offer, PeerId::random());
        assert_eq!(routes.other(&offer), None);
    }
}
