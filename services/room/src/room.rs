//! [`Room`]: the shared half of the room logic (backends, hub, config), the offer
//! expiry sweeper, and how an offer or call is retired. Per-peer rules live in
//! [`crate::Session`].

use std::sync::Arc;

use switchboard_proto::{CloseReason, PeerId, ServerMessage};
use switchboard_telemetry::{Origin, metrics};
use tokio_util::sync::CancellationToken;

use crate::api::{Readiness, RoomService};
use crate::bus::{Bus, memory::MemoryBus};
use crate::config::RoomConfig;
use crate::error::{BackendError, RoomError};
use crate::event::{Event, Topic};
use crate::hub::Hub;
use crate::outbox::Outbox;
use crate::session::{Session, SessionState};
use crate::store::{OfferRecord, Store, memory::MemoryStore};

/// Expired offers retired per sweep, at most (the next sweep takes the rest).
const SWEEP_BATCH: usize = 512;

/// The room logic over a store and a bus. Cheap to clone.
#[derive(Debug)]
pub struct Room<S, B> {
    inner: Arc<Inner<S, B>>,
}

#[derive(Debug)]
struct Inner<S, B> {
    store: S,
    bus: B,
    hub: Arc<Hub>,
    config: RoomConfig,
}

impl<S, B> Clone for Room<S, B> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl Room<MemoryStore, MemoryBus> {
    /// The embedded room: in-memory store, in-process bus.
    pub fn in_memory(config: RoomConfig) -> Self {
        let hub = Hub::new();
        Self::new(MemoryStore::new(), MemoryBus, hub, config)
    }
}

impl<S: Store, B: Bus> Room<S, B> {
    /// `bus` must deliver what it receives to `hub`.
    pub fn new(store: S, bus: B, hub: Arc<Hub>, config: RoomConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                bus,
                hub,
                config,
            }),
        }
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }

    pub fn config(&self) -> &RoomConfig {
        &self.inner.config
    }

    pub(crate) fn store(&self) -> &S {
        &self.inner.store
    }

    pub(crate) fn bus(&self) -> &B {
        &self.inner.bus
    }

    /// Opens a new session for `peer`.
    pub async fn connect_session(
        &self,
        peer: PeerId,
        outbox: Outbox,
    ) -> Result<Session<S, B>, RoomError> {
        Session::open(self.clone(), peer, outbox).await
    }

    /// Re-opens, on this replica, a session that lived on another one.
    pub async fn resume(
        &self,
        peer: PeerId,
        outbox: Outbox,
        state: SessionState,
    ) -> Result<Session<S, B>, RoomError> {
        Session::resume(self.clone(), peer, outbox, state).await
    }

    /// Whether both backends answer (readiness).
    pub async fn ready(&self) -> bool {
        self.store().ping().await.is_ok() && self.bus().ping().await.is_ok()
    }

    /// Sends `event` to whoever `topic` reaches: this process's own peers at
    /// once, through the hub, and the other processes through the bus. A peer
    /// topic whose peer is here reaches nobody else, so it skips the bus. Local
    /// first keeps this process's messages in the order it sent them, whatever
    /// the bus does, and spares Redis a round trip per relay between two peers
    /// on the same replica.
    pub(crate) async fn publish(
        &self,
        topic: &Topic,
        event: Event,
        origin: &Origin,
    ) -> Result<(), BackendError> {
        let origin = origin.in_current_span();
        let reached_peer = self.hub().dispatch(topic, &event, &origin);
        if reached_peer {
            return Ok(());
        }
        self.bus().publish(topic, event, &origin).await
    }

    /// Sends a message to one peer, wherever it is connected.
    pub(crate) async fn send_to(
        &self,
        peer: PeerId,
        msg: ServerMessage,
        origin: &Origin,
    ) -> Result<(), RoomError> {
        let topic = Topic::Peer(peer);
        Ok(self.publish(&topic, Event::Direct(msg), origin).await?)
    }

    /// Tells whoever must know that `record` is gone: the members shown a pending
    /// offer get `offer_closed`; the other party of a call ended by `ended_by`
    /// gets `hangup`.
    pub(crate) async fn retire(
        &self,
        record: OfferRecord,
        ended_by: Option<PeerId>,
        reason: CloseReason,
        origin: &Origin,
    ) -> Result<(), RoomError> {
        if record.is_pending() {
            metrics::offer_closed(reason);
            let topic = Topic::Room(record.room.clone());
            let event = Event::OfferClosed {
                offer_id: record.id,
                room: record.room,
                caller: record.caller,
                to: record.to,
                answerer: None,
                reason,
            };
            self.publish(&topic, event, origin).await?;
        } else if let Some(by) = ended_by {
            if let Some(other) = record.counterpart(&by) {
                let hangup = ServerMessage::Hangup {
                    offer_id: record.id,
                    from: by,
                };
                self.send_to(other, hangup, origin).await?;
            }
        }
        Ok(())
    }

    /// Retires every pending offer whose TTL has passed; returns how many.
    pub async fn sweep_expired(&self) -> Result<usize, RoomError> {
        let expired = self.store().take_expired(SWEEP_BATCH).await?;
        let count = expired.len();
        for record in expired {
            let (offer_id, room) = (record.id, record.room.clone());
            tracing::debug!(%offer_id, %room, "offer expired");
            // Each expired offer is announced on its own: one failure must not
            // silence the rest of the batch (they are already out of the store).
            let expired = CloseReason::Expired;
            if let Err(err) = self.retire(record, None, expired, &Origin::default()).await {
                tracing::warn!(%offer_id, %room, error = %err, "could not announce an expired offer");
            }
        }
        Ok(count)
    }

    /// Samples the store's pending offers into the metrics.
    pub async fn sample_pending(&self) -> Result<(), RoomError> {
        let (count, left) = self.store().pending().await?;
        let oldest = match (count, left) {
            (0, _) | (_, None) => std::time::Duration::ZERO,
            (_, Some(left)) => self.config().offer_ttl.saturating_sub(left),
        };
        metrics::pending_offers(count, oldest);
        Ok(())
    }

    /// Sweeps expired offers (and samples the pending ones) every
    /// `sweep_interval` until `shutdown`.
    pub async fn run_expiry(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.config().sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            loop {
                match self.sweep_expired().await {
                    Ok(n) if n == SWEEP_BATCH => continue,
                    Ok(_) => break,
                    Err(err) => {
                        tracing::warn!(error = %err, "expiry sweep failed; retrying next tick");
                        break;
                    }
                }
            }
            if let Err(err) = self.sample_pending().await {
                tracing::debug!(error = %err, "could not sample pending offers");
            }
        }
    }
}

impl<S: Store, B: Bus> RoomService for Room<S, B> {
    type Session = Session<S, B>;

    async fn connect(&self, peer: PeerId, outbox: Outbox) -> Result<Session<S, B>, RoomError> {
        self.connect_session(peer, outbox).await
    }

    async fn readiness(&self) -> Readiness {
        let ready = Room::ready(self).await;
        let detail = match ready {
            true => "room logic ready",
            false => "room backend (store or pub/sub) unavailable",
        };
        Readiness {
            ready,
            detail: detail.into(),
        }
    }
}
