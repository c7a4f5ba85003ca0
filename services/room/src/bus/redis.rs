//! The Redis [`Bus`]: `PUBLISH` on a shared connection, and ONE subscriber
//! connection per process that multiplexes every channel this process needs
//! (each local peer's channel, each room with local members, its own probe
//! channel) and hands what other processes published to the local [`Hub`]
//! (each envelope names its sender; a process's own events come back from
//! Redis too, and are skipped: it delivered them locally when it published).
//! A room event is published only when Redis counts another subscriber of the
//! room's channel than this process (`RedisBus::others_follow`).
//!
//! Subscriptions are counted per channel, so a room with a thousand local
//! members is one `SUBSCRIBE`, and changes are sent in batches (see
//! [`super::subscriptions`]): sessions starting together share one
//! `SUBSCRIBE`. When the subscriber connection drops (Redis restarted, a
//! network blip), the subscriber task reconnects with backoff and subscribes
//! every channel that is still needed before it reports itself connected
//! again: no subscription is silently lost. [`Bus::ping`] proves the whole
//! path by publishing a probe on this process's own channel and waiting for it
//! to come back through the subscription; readiness is built on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use prost::Message as _;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, PubSub, PubSubSink};
use switchboard_proto::pb;
use switchboard_telemetry::metrics::{self, Direction, RedisCommand, time_redis};
use switchboard_telemetry::{Origin, trace};
use tokio::sync::{OwnedMutexGuard, oneshot};
use tokio_util::sync::CancellationToken;

use super::Bus;
use super::subscriptions::{Batch, Confirmation, Subscriptions, Ticket};
use crate::error::BackendError;
use crate::event::{Event, Topic, origin_from_pb};
use crate::hub::Hub;
use crate::keys::{Key, Keys};
use crate::store::redis::{COMMAND_TIMEOUT, backend, client};

/// How long a room channel seen with other subscribers is published to
/// without asking Redis again.
const OTHERS_HINT: Duration = Duration::from_secs(1);
/// How long a readiness probe may take to come back.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Reconnect backoff bounds of the subscriber connection.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Publish/subscribe over Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisBus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("probe", &self.inner.probe_channel)
            .finish_non_exhaustive()
    }
}

struct Inner {
    client: redis::Client,
    publisher: ConnectionManager,
    keys: Keys,
    hub: Arc<Hub>,
    /// Tags what this process publishes, so that it can skip its own events.
    sender: u64,
    probe_channel: String,
    /// Counts and batches; never held across an `.await`.
    subscriptions: Mutex<Subscriptions>,
    /// The subscriber connection's command side, `None` while it is down. Held
    /// (a tokio mutex) for a whole batch, so batches go out one at a time and
    /// in the order they were taken.
    sink: Arc<tokio::sync::Mutex<Option<PubSubSink>>>,
    probes: Mutex<HashMap<u64, oneshot::Sender<()>>>,
}

/// The subscriber connection's task; run it (spawned) for the bus to receive.
pub struct Subscriber {
    bus: RedisBus,
    first: Option<PubSub>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber").finish_non_exhaustive()
    }
}

impl RedisBus {
    /// Connects the subscriber connection; events are published on `publisher`
    /// (the store's connection: a store command and a publish issued together
    /// share a write, and Redis answers both in one). `replica` names this
    /// process (for its probe channel). Run the returned [`Subscriber`].
    pub async fn connect(
        url: &str,
        prefix: &str,
        replica: &str,
        publisher: ConnectionManager,
        hub: Arc<Hub>,
    ) -> Result<(Self, Subscriber), BackendError> {
        let client = client(url)?;
        let first = connect_pubsub(&client).await?;
        let keys = Keys::new(prefix);
        let bus = RedisBus {
            inner: Arc::new(Inner {
                client,
                publisher,
                probe_channel: keys.key(Key::ProbeChannel(replica)),
                keys,
                hub,
                sender: rand::random(),
                subscriptions: Mutex::default(),
                sink: Arc::default(),
                probes: Mutex::default(),
            }),
        };
        let subscriber = Subscriber {
            bus: bus.clone(),
            first: Some(first),
        };
        Ok((bus, subscriber))
    }

    fn probes(&self) -> MutexGuard<'_, HashMap<u64, oneshot::Sender<()>>> {
        self.inner.probes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn subscriptions(&self) -> MutexGuard<'_, Subscriptions> {
        self.inner
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Returns once the batch of `ticket` has gone through Redis: flushes it
    /// unless a flush already took it (group commit: whoever gets the sink
    /// first sends every change pending by then).
    async fn flush_through(&self, ticket: Ticket) {
        if self.subscriptions().is_done(ticket) {
            return;
        }
        let sink = self.inner.sink.clone().lock_owned().await;
        if self.subscriptions().is_done(ticket) {
            return;
        }
        // A task of its own: a batch once taken is always finished, even if
        // the session that started it is dropped meanwhile.
        let bus = self.clone();
        if let Err(err) = tokio::spawn(async move { bus.flush(sink).await }).await {
            tracing::error!(error = %err, "redis subscription batch task failed");
        }
    }

    async fn flush(&self, mut sink: OwnedMutexGuard<Option<PubSubSink>>) {
        let batch = self.subscriptions().take();
        let (subscribed, unsubscribed) = match sink.as_mut() {
            _ if batch.is_empty() => (Ok(()), Ok(())),
            Some(sink) => send_batch(sink, &batch).await,
            // Nothing is subscribed without a connection: nothing to unsubscribe.
            None => (
                Err("redis subscriber connection is down".to_owned()),
                Ok(()),
            ),
        };
        for (command, result) in [("SUBSCRIBE", &subscribed), ("UNSUBSCRIBE", &unsubscribed)] {
            if let Err(err) = result {
                tracing::warn!(command, error = %err, "redis subscription batch failed");
            }
        }
        self.subscriptions().finish(batch, subscribed, unsubscribed);
    }

    async fn publish_bytes(&self, channel: String, payload: Vec<u8>) -> Result<(), BackendError> {
        let mut conn = self.inner.publisher.clone();
        let _: i64 = time_redis(RedisCommand::Publish, conn.publish(channel, payload))
            .await
            .map_err(backend)?;
        metrics::pubsub_message(Direction::Published);
        Ok(())
    }

    /// Whether a process other than this one may be subscribed to `channel`
    /// now; a room event that nobody else follows is not published (its
    /// echo would cost Redis a write and this process a wake-up, for
    /// nothing). Asked *after* the store change the event reports, so a
    /// process that subscribes after this answer lists the store after the
    /// change and loses nothing.
    ///
    /// `PUBSUB NUMSUB` counts subscriber connections, ours included when it
    /// is there; the count on our probe channel (only our connection
    /// subscribes it) says whether it is. We count ourselves out only when
    /// `channel` was confirmed on our connection before the question and
    /// stayed so until the answer (no `UNSUBSCRIBE` taken, no reconnect);
    /// when in doubt another process follows, and so it does when Redis
    /// refuses the question (but not when Redis is unreachable: the publish
    /// would fail too). A channel seen with other
    /// subscribers is taken to have them for [`OTHERS_HINT`] without asking
    /// (publishing to nobody costs only the publish).
    async fn others_follow(&self, channel: &str) -> Result<bool, BackendError> {
        let now = Instant::now();
        let before = {
            let subscriptions = self.subscriptions();
            if subscriptions.others_seen(channel, now, OTHERS_HINT) {
                return Ok(true);
            }
            subscriptions.confirmation(channel)
        };
        let mut numsub = redis::cmd("PUBSUB");
        numsub
            .arg("NUMSUB")
            .arg(channel)
            .arg(&self.inner.probe_channel);
        let mut conn = self.inner.publisher.clone();
        // A map (RESP3) or flat pairs (RESP2), by channel.
        let counts: HashMap<String, u64> =
            match time_redis(RedisCommand::Followers, numsub.query_async(&mut conn)).await {
                Ok(counts) => counts,
                Err(err)
                    if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() =>
                {
                    return Err(backend(err));
                }
                // Redis refused the question (an ACL without `PUBSUB`, say):
                // publish, as before there was one.
                Err(err) => {
                    tracing::debug!(%channel, error = %err, "PUBSUB NUMSUB refused; publishing");
                    return Ok(true);
                }
            };
        let (Some(&on_channel), Some(&on_probe)) =
            (counts.get(channel), counts.get(&self.inner.probe_channel))
        else {
            return Ok(true); // Not the reply asked for: publish.
        };
        let mut subscriptions = self.subscriptions();
        let after = subscriptions.confirmation(channel);
        let others = others_subscribed(on_channel, on_probe, before, after);
        if others {
            subscriptions.saw_others(channel, now);
        }
        Ok(others)
    }

    /// Hands one received message to the hub (or to a waiting probe).
    fn on_message(&self, msg: &redis::Msg) {
        metrics::pubsub_message(Direction::Received);
        let channel = msg.get_channel_name();
        let payload = msg.get_payload_bytes();
        if is_own_event(payload, self.inner.sender) {
            // Delivered to our own peers when we published it.
            return;
        }
        let mut event = match pb::BusEvent::decode(payload) {
            Ok(event) => event,
            Err(err) => {
                tracing::warn!(%channel, error = %err, "undecodable bus message dropped");
                return;
            }
        };
        if let Some(pb::bus_event::Kind::Probe(nonce)) = event.kind {
            if let Some(waiter) = self.probes().remove(&nonce) {
                let _ = waiter.send(());
            }
            return;
        }
        if event.sender == self.inner.sender {
            // Only a payload no prost encoder writes (a probe field, then an
            // event) gets past the header check as ours.
            return;
        }
        let Some(topic) = self.inner.keys.topic(channel) else {
            return;
        };
        let origin = origin_from_pb(event.origin.take());
        let span = match origin.trace.is_empty() {
            true => tracing::Span::none(),
            false => tracing::info_span!(
                parent: None,
                "bus.receive",
                otel.kind = "consumer",
                trace_id = tracing::field::Empty
            ),
        };
        origin.trace.continue_in(&span);
        trace::record_trace_id(&span);
        let _entered = span.enter();
        match Event::from_pb(event) {
            Ok(Some(event)) => {
                self.inner
                    .hub
                    .dispatch(&topic, &event, &origin.in_current_span());
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(%channel, error = %err, "invalid bus message dropped"),
        }
    }
}

async fn connect_pubsub(client: &redis::Client) -> Result<PubSub, BackendError> {
    tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| BackendError("timed out connecting to redis".into()))?
        .map_err(backend)
}

impl Subscriber {
    /// Receives until `shutdown`, reconnecting and resubscribing after failures.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let bus = self.bus;
        let mut backoff = MIN_BACKOFF;
        loop {
            let pubsub = match self.first.take() {
                Some(pubsub) => Ok(pubsub),
                None => connect_pubsub(&bus.inner.client).await,
            };
            let connected = match pubsub {
                Ok(pubsub) => resubscribe(&bus, pubsub).await,
                Err(err) => Err(err),
            };
            match connected {
                Ok(mut stream) => {
                    backoff = MIN_BACKOFF;
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            msg = stream.next() => match msg {
                                Some(msg) => bus.on_message(&msg),
                                None => break,
                            },
                        }
                    }
                    *bus.inner.sink.lock().await = None;
                    bus.subscriptions().disconnected();
                    metrics::pubsub_reconnect();
                    tracing::warn!("redis subscriber connection lost; reconnecting");
                }
                Err(err) => {
                    tracing::warn!(error = %err, retry_in = ?backoff, "redis subscriber cannot connect")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Subscribes a fresh connection to every channel still needed, then makes it
/// the one new subscriptions go to (holding the sink lock throughout, so no
/// batch can slip between the two).
async fn resubscribe(
    bus: &RedisBus,
    pubsub: PubSub,
) -> Result<redis::aio::PubSubStream, BackendError> {
    let (mut sink, stream) = pubsub.split();
    let mut current = bus.inner.sink.lock().await;
    let batch = bus.subscriptions().take_all();
    let count = batch.subscribe.len();
    let mut channels = batch.subscribe.clone();
    channels.push(bus.inner.probe_channel.clone());
    let result = timed(RedisCommand::Subscribe, sink.subscribe(channels)).await;
    let mut subs = bus.subscriptions();
    subs.finish(batch, result.clone().map_err(|err| err.0), Ok(()));
    result?;
    *current = Some(sink);
    metrics::pubsub_subscriptions(subs.len());
    drop(subs);
    tracing::info!(channels = count, "redis subscriber connected");
    Ok(stream)
}

/// One batch's commands, sent together (one round trip); each has its own result.
async fn send_batch(
    sink: &mut PubSubSink,
    batch: &Batch,
) -> (Result<(), String>, Result<(), String>) {
    let mut other = sink.clone();
    let subscribe = async {
        match batch.subscribe.is_empty() {
            true => Ok(()),
            false => timed(RedisCommand::Subscribe, sink.subscribe(&batch.subscribe)).await,
        }
    };
    let unsubscribe = async {
        match batch.unsubscribe.is_empty() {
            true => Ok(()),
            false => {
                timed(
                    RedisCommand::Unsubscribe,
                    other.unsubscribe(&batch.unsubscribe),
                )
                .await
            }
        }
    };
    let (subscribed, unsubscribed) = tokio::join!(subscribe, unsubscribe);
    (subscribed.map_err(|e| e.0), unsubscribed.map_err(|e| e.0))
}

/// One subscriber-connection command, bounded in time and measured.
async fn timed(
    command: RedisCommand,
    op: impl Future<Output = redis::RedisResult<()>>,
) -> Result<(), BackendError> {
    let bounded = async {
        match tokio::time::timeout(COMMAND_TIMEOUT, op).await {
            Ok(result) => result.map_err(backend),
            Err(_) => Err(BackendError(format!("timed out: {}", command.as_str()))),
        }
    };
    time_redis(command, bounded).await
}

/// Whether a connection other than ours was among the `on_channel`
/// subscribers `PUBSUB NUMSUB` counted, `on_probe` being its count on our
/// probe channel and `before`/`after` what we knew of the channel around the
/// question: ours was counted only if it was there (`on_probe == 1`) and the
/// channel was confirmed on it before and stayed so until after.
fn others_subscribed(
    on_channel: u64,
    on_probe: u64,
    before: Option<Confirmation>,
    after: Option<Confirmation>,
) -> bool {
    let ours_counted = on_probe == 1 && before.is_some() && after == before;
    on_channel > u64::from(ours_counted)
}

/// Whether `payload` is an event `sender` published, other than a probe:
/// read from its header alone, without decoding the rest.
fn is_own_event(payload: &[u8], sender: u64) -> bool {
    match pb::BusEventHeader::decode(payload) {
        Ok(header) => header.sender == sender && header.probe.is_none(),
        Err(_) => false,
    }
}

impl Bus for RedisBus {
    async fn ping(&self) -> Result<(), BackendError> {
        let nonce: u64 = rand::random();
        let (tx, rx) = oneshot::channel();
        self.probes().insert(nonce, tx);
        let probe = pb::BusEvent {
            kind: Some(pb::bus_event::Kind::Probe(nonce)),
            origin: None,
            sender: self.inner.sender,
        };
        let sent = self
            .publish_bytes(self.inner.probe_channel.clone(), probe.encode_to_vec())
            .await;
        let came_back = match sent {
            Ok(()) => matches!(tokio::time::timeout(PROBE_TIMEOUT, rx).await, Ok(Ok(()))),
            Err(_) => false,
        };
        self.probes().remove(&nonce);
        match came_back {
            true => Ok(()),
            false => Err(BackendError("the pub/sub probe did not come back".into())),
        }
    }

    async fn subscribe(&self, topic: &Topic) -> Result<(), BackendError> {
        let channel = self.inner.keys.channel(topic);
        let pending = self.subscriptions().add(&channel);
        let result = match pending {
            None => Ok(()),
            Some(pending) => {
                self.flush_through(pending.ticket).await;
                match pending.result.await {
                    Ok(result) => result.map_err(BackendError),
                    // The batch task died before answering: take our count back.
                    Err(_) => {
                        self.subscriptions().release(&channel);
                        Err(BackendError("redis subscription batch failed".into()))
                    }
                }
            }
        };
        metrics::pubsub_subscriptions(self.subscriptions().len());
        result
    }

    /// Always succeeds once its batch is through: an `UNSUBSCRIBE` that failed
    /// is retried with the next batch, and without a connection there is
    /// nothing to unsubscribe (the next connection subscribes only what is
    /// still counted).
    async fn unsubscribe(&self, topic: &Topic) -> Result<(), BackendError> {
        let channel = self.inner.keys.channel(topic);
        let Some(ticket) = self.subscriptions().remove(&channel) else {
            return Ok(());
        };
        metrics::pubsub_subscriptions(self.subscriptions().len());
        self.flush_through(ticket).await;
        Ok(())
    }

    async fn publish(
        &self,
        topic: &Topic,
        event: Event,
        origin: &Origin,
    ) -> Result<(), BackendError> {
        let channel = self.inner.keys.channel(topic);
        if matches!(topic, Topic::Room(_)) && !self.others_follow(&channel).await? {
            return Ok(());
        }
        let mut envelope = event.to_pb(origin);
        envelope.sender = self.inner.sender;
        let encoded = envelope.encode_to_vec();
        self.publish_bytes(channel, encoded).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(kind: pb::bus_event::Kind, sender: u64) -> Vec<u8> {
        let origin = Some(pb::Origin::default());
        pb::BusEvent {
            kind: Some(kind),
            origin,
            sender,
        }
        .encode_to_vec()
    }

    #[test]
    fn our_connection_is_counted_out_only_when_it_surely_was_counted() {
        let (first, later) = (Some(Confirmation::new(3)), Some(Confirmation::new(5)));
        // Nobody, or only us.
        assert!(!others_subscribed(0, 1, first, first));
        assert!(!others_subscribed(0, 0, None, None));
        assert!(!others_subscribed(1, 1, first, first));
        // Someone besides us.
        assert!(others_subscribed(2, 1, first, first));
        // Not confirmed before the question: the one counted may be another.
        assert!(others_subscribed(1, 1, None, first));
        assert!(others_subscribed(1, 1, None, None));
        // Unsubscribed or resubscribed meanwhile: it may not have been us.
        assert!(others_subscribed(1, 1, first, None));
        assert!(others_subscribed(1, 1, first, later));
        // Our connection is gone (Redis dropped it before we noticed).
        assert!(others_subscribed(1, 0, first, first));
    }

    #[test]
    fn own_events_are_told_from_their_header() {
        let offer = pb::bus_event::Kind::Offer(pb::RoomOffer {
            room: "lobby".into(),
            to: Some("bob".into()),
            offer: Some(pb::PendingOffer {
                offer_id: "o1".into(),
                from: "alice".into(),
                sdp: "v=0\r\n".repeat(900),
                candidates: vec![pb::Candidate::default(); 4],
            }),
        });
        let mine = envelope(offer.clone(), 7);
        assert!(is_own_event(&mine, 7));
        assert!(!is_own_event(&mine, 8), "another replica's event");
        let probe = envelope(pb::bus_event::Kind::Probe(42), 7);
        assert!(!is_own_event(&probe, 7), "own probes are kept");
        assert!(
            !is_own_event(&[0xff, 0xff, 0xff], 7),
            "garbage is left to the decoder"
        );
        assert!(!is_own_event(&envelope(offer, 0), 7));
    }
}
