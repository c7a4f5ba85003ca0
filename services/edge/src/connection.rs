//! One browser connection: a single task running one `select!` loop over the
//! client's frames, the peer's outbox (room events), the heartbeat and shutdown.
//!
//! Requests are handled one at a time, in the order sent; a reply is written
//! before any event queued while the request ran. Every failure a client can
//! cause ends in an `error` frame (the connection survives) or, for what cannot
//! be survived, a close frame with a code that says why:
//!
//! | close | why |
//! |---|---|
//! | 1001 | the server is shutting down: reconnect (to another node); answered calls carry on |
//! | 1002 | the client broke the WebSocket protocol |
//! | 1008 | too slow to read its messages, or sustained rate-limit abuse |
//! | 1009 | a frame larger than `max_message_bytes` |
//! | 1011 | the room service could not take the session (retry later) |
//! | 1000 | silent past the heartbeat |
//!
//! Every client request is handled in its own `request` span; a request about
//! an offer (candidate, answer, hangup) continues the trace of that offer, so
//! one call is one trace across edges and room replicas (when traces are
//! exported). A connection has no span of its own: with a log subscriber one
//! costs ~340 bytes per idle connection. Its log lines name its `peer_id`.
//! Every frame in and out is counted; events are timed from the moment the
//! edge that received their client frame got it (relay latency).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{FutureExt, SinkExt};
use governor::clock::MonotonicClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use switchboard_proto::{
    Candidate, ClientFrame, ClientMessage, ErrorCode, OfferId, PeerId, Req, ServerMessage, client,
};
use switchboard_room::{
    Delivery, Goodbye, MAX_CANDIDATE_BURST, Outbox, OutboxReceiver, Overflowed, PartlyHandled,
    Reply, RoomError, RoomService, RoomSession,
};
use switchboard_telemetry::{Origin, TraceContext, metrics, trace};
use tokio::time::error::Elapsed;
use tokio::time::{Instant, MissedTickBehavior, interval_at, timeout};
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::EdgeConfig;

type Limiter =
    RateLimiter<NotKeyed, InMemoryState, MonotonicClock, NoOpMiddleware<std::time::Instant>>;

/// Rate-limited messages in a row after which a client counts as abusive.
const ABUSE_AFTER: u32 = 200;
/// How long a close frame may take to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the upgrade response may wait for the welcome (see `socket`): a
/// room slower than this to take the session gets the client a ping first.
const UPGRADE_HELD_AT_MOST: Duration = Duration::from_millis(100);

/// Why a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client closed or the socket dropped.
    ClientGone,
    Shutdown,
    SlowClient,
    TooLarge,
    Abuse,
    ProtocolViolation,
    HeartbeatTimeout,
    RoomUnavailable,
}

impl End {
    /// The `reason` label of `switchboard_connections_closed_total`.
    fn label(self) -> &'static str {
        match self {
            End::ClientGone => "client_closed",
            End::Shutdown => "shutdown",
            End::SlowClient => "slow_client",
            End::TooLarge => "too_large",
            End::Abuse => "abuse",
            End::ProtocolViolation => "protocol_error",
            End::HeartbeatTimeout => "heartbeat_timeout",
            End::RoomUnavailable => "room_unavailable",
        }
    }

    /// The close frame to send, if one can still be sent.
    fn close_frame(self) -> Option<(u16, &'static str)> {
        Some(match self {
            End::ClientGone => return None,
            End::Shutdown => (1001, "server shutting down; reconnect"),
            End::SlowClient => (1008, "too slow: outbound queue full"),
            End::TooLarge => (1009, "message too big"),
            End::Abuse => (1008, "rate limit exceeded"),
            End::ProtocolViolation => (1002, "websocket protocol error"),
            End::HeartbeatTimeout => (1000, "heartbeat timeout"),
            End::RoomUnavailable => (1011, "service unavailable; retry later"),
        })
    }
}

/// Serves one upgraded WebSocket until it ends, then cleans up after the peer.
/// `upgraded` is when the upgrade request arrived (session set-up time).
///
/// The returned future is what an idle connection costs, so it is kept small:
/// the connection is built before it (the socket is not held twice), and
pub(crate) fn run<R: RoomService>(
    socket: WebSocket,
    rooms: R,
    config: Arc<EdgeConfig>,
    shutdown: CancellationToken,
    upgraded: Instant,
) -> impl Future<Output = ()> {
    let peer = PeerId::random();
    let mut conn = Connection::new(socket, config, peer);
    let (outbox, mut events) = Outbox::channel(conn.config.outbound_queue);
    async move {
        let _open = metrics::connection_opened();
        // what it does once (connect, clean up) or per message is boxed: an
        // idle connection's task holds only the waiting loop, not the largest
        // future it could ever await (4.4 KiB per connection, all unboxed).
        let mut session = match Box::pin(conn.connect(rooms, peer, outbox)).await {
            Ok(session) => session,
            Err(err) => {
                let cause = std::error::Error::source(&err).map(ToString::to_string);
                tracing::warn!(peer_id = %peer, error = %err, cause, "room service refused the session");
                metrics::connection_closed(End::RoomUnavailable.label());
                Box::pin(conn.close(End::RoomUnavailable)).await;
                return;
            }
        };
        tracing::debug!(peer_id = %peer, "connected");
        let end = conn
            .pump(&mut session, &mut events, &shutdown, upgraded)
            .await;
        match end {
            End::SlowClient => tracing::warn!(
                peer_id = %peer,
                "client too slow (outbound queue full or a write timed out); disconnected"
            ),
            _ => tracing::debug!(peer_id = %peer, reason = ?end, "disconnected"),
        }
        metrics::connection_closed(end.label());
        // A client sent away by a draining edge reconnects elsewhere; its
        // calls carry on. Otherwise its calls end with it.
        let how = match end {
            End::Shutdown => Goodbye::Moving,
            _ => Goodbye::Left,
        };
        // The close handshake may linger up to a second; clean up meanwhile.
        Box::pin(async { tokio::join!(conn.close(end), session.close(how)) }).await;
    }
}

struct Connection {
    socket: WebSocket,
    config: Arc<EdgeConfig>,
    peer: PeerId,
    limiter: Option<Limiter>,
    limited_in_a_row: u32,
    last_seen: Instant,
    /// Frames were written since the last flush.
    unflushed: bool,
    calls: CallTraces,
    /// A frame read ahead while gathering a burst of candidates, that did not
    /// belong to it, with when it arrived: the next one to handle. Boxed: an
    /// idle connection pays a pointer for it.
    held: Option<Box<(Frame, Origin)>>,
}

impl Connection {
    fn new(socket: WebSocket, config: Arc<EdgeConfig>, peer: PeerId) -> Self {
        let limiter = std::num::NonZeroU32::new(config.max_messages_per_sec).map(|rate| {
            let burst = rate.saturating_mul(std::num::NonZeroU32::MIN.saturating_add(1));
            RateLimiter::direct_with_clock(
                Quota::per_second(rate).allow_burst(burst),
                MonotonicClock,
            )
        });
        Self {
            socket,
            config,
            peer,
            limiter,
            limited_in_a_row: 0,
            last_seen: Instant::now(),
            unflushed: false,
            calls: CallTraces::default(),
            held: None,
        }
    }

    /// Opens the peer's session with the room. The upgrade response waits for
    /// the connection's first frame, normally the welcome, which waits for
    /// this: if the room takes long, a ping goes out so that the client's
    /// handshake completes meanwhile.
    async fn connect<R: RoomService>(
        &mut self,
        rooms: R,
        peer: PeerId,
        outbox: Outbox,
    ) -> Result<R::Session, RoomError> {
        let mut connecting = std::pin::pin!(rooms.connect(peer, outbox));
        if let Ok(connected) = timeout(UPGRADE_HELD_AT_MOST, &mut connecting).await {
            return connected;
        }
        // A client that cannot take the ping is found out by the loop.
        if self.write(Message::Ping(Default::default())).await.is_ok() {
            let _ = self.flush().await;
        }
        connecting.await
    }

    /// The session loop; returns why it ended.
    async fn pump<S: RoomSession>(
        &mut self,
        session: &mut S,
        events: &mut OutboxReceiver,
        shutdown: &CancellationToken,
        upgraded: Instant,
    ) -> End {
        let welcome = ServerMessage::Welcome {
            peer_id: self.peer,
            ice_servers: self.config.ice_servers.clone(),
            max_message_bytes: self.config.max_message_bytes,
            heartbeat_ms: u64::try_from(self.config.heartbeat.as_millis()).unwrap_or(u64::MAX),
        };
        if let Err(end) = Box::pin(self.send(&welcome)).await {
            return end;
        }
        metrics::session_setup(upgraded.elapsed());
        let every = self.config.ping_interval();
        let mut ping = interval_at(Instant::now() + every, every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            // Frames are buffered as they are written and go out together once
            // nothing more is owed: an answer and the candidates queued behind
            // it leave in one write.
            if self.unflushed && !events.is_ready() {
                if let Err(end) = Box::pin(self.flush()).await {
                    return end;
                }
            }
            let step = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Err(End::Shutdown),
                // Drain what is owed to the client before reading more from it.
                event = events.recv() => match event {
                    Ok(delivery) => Box::pin(self.deliver(delivery)).await,
                    Err(Overflowed) => Err(End::SlowClient),
                },
                (frame, arrived) = next_frame(&mut self.held, &mut self.socket) => {
                    Box::pin(self.on_frame(frame, arrived, session)).await
                }
                _ = ping.tick() => Box::pin(self.heartbeat()).await,
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Handles one client frame that arrived at `arrived` (its origin).
    async fn on_frame<S: RoomSession>(
        &mut self,
        frame: Frame,
        arrived: Origin,
        session: &mut S,
    ) -> Result<(), End> {
        let msg = match frame {
            None => return Err(End::ClientGone),
            Some(Err(err)) => return Err(read_error(&err)),
            Some(Ok(msg)) => msg,
        };
        self.last_seen = Instant::now();
        match msg {
            Message::Text(text) => self.on_text(text.as_str(), arrived, session).await,
            Message::Binary(_) => {
                metrics::client_message(metrics::INVALID_MESSAGE);
                if !self.admit()? {
                    return self.rate_limited(None).await;
                }
                let message = "binary frames are not supported; send JSON text frames".to_owned();
                self.send_error(None, ErrorCode::BadMessage, message).await
            }
            // tungstenite answers pings itself; any frame proves liveness.
            Message::Ping(_) | Message::Pong(_) => Ok(()),
            Message::Close(_) => Err(End::ClientGone),
        }
    }

    /// Counts one client frame against the rate limit: `Ok(true)` when it may
    /// be handled, `Ok(false)` when it must be refused, `Err` for abuse.
    fn admit(&mut self) -> Result<bool, End> {
        if self.limiter.as_ref().is_none_or(|l| l.check().is_ok()) {
            self.limited_in_a_row = 0;
            return Ok(true);
        }
        self.limited_in_a_row += 1;
        match self.limited_in_a_row >= ABUSE_AFTER {
            true => Err(End::Abuse),
            false => Ok(false),
        }
    }

    async fn rate_limited(&mut self, req: Option<Req>) -> Result<(), End> {
        let message = format!(
            "at most {} messages per second",
            self.config.max_messages_per_sec
        );
        self.send_error(req, ErrorCode::RateLimited, message).await
    }

    async fn on_text<S: RoomSession>(
        &mut self,
        text: &str,
        origin: Origin,
        session: &mut S,
    ) -> Result<(), End> {
        // Every frame counts against the limit, malformed ones included.
        let admitted = self.admit()?;
        let frame = match client::parse(text) {
            Ok(frame) => frame,
            Err(err) => {
                metrics::client_message(metrics::INVALID_MESSAGE);
                return match admitted {
                    false => self.rate_limited(err.req).await,
                    true => self.send_error(err.req, err.code, err.message).await,
                };
            }
        };
        metrics::client_message(frame.message.kind());
        let req = frame.req;
        if !admitted {
            return self.rate_limited(req).await;
        }
        let message = frame.message;
        if message == ClientMessage::Ping {
            // Liveness of this connection: answered here, without the room.
            return self.send(&ServerMessage::Pong { req }).await;
        }
        let message = match message {
            ClientMessage::Candidate {
                offer_id,
                candidate,
            } => {
                let (more, cut) = self.gather_burst(offer_id);
                if !more.is_empty() || cut.is_some() {
                    let frames = std::iter::once((req, candidate)).chain(more).collect();
                    let burst = Burst {
                        offer_id,
                        frames,
                        cut,
                    };
                    return Box::pin(self.on_burst(burst, origin, session)).await;
                }
                ClientMessage::Candidate {
                    offer_id,
                    candidate,
                }
            }
            message => message,
        };
        let span = trace::request_span("ws.request", "server", &self.peer, &message);
        if let Some(call) = message_offer(&message).and_then(|id| self.calls.get(id)) {
            call.continue_in(&span);
        }
        trace::record_trace_id(&span);
        let origin = origin.in_span(&span);
        // Boxed: the room's request futures are large and an idle connection's
        // task would otherwise carry their size all along.
        let handled = Box::pin(
            session
                .handle(message, origin.clone())
                .instrument(span.clone()),
        );
        match handled.await {
            Ok(reply) => {
                match &reply {
                    // The offer's request starts the call's trace.
                    Reply::OfferCreated { offer_id } => {
                        self.calls.remember(*offer_id, &origin.trace)
                    }
                    Reply::Joined { offers, traces, .. } => {
                        for (offer, trace) in offers.iter().zip(traces) {
                            self.calls.remember(offer.offer_id, trace);
                        }
                    }
                    _ => {}
                }
                match reply.into_message(req) {
                    Some(msg) => self.send(&msg).await,
                    None => Ok(()),
                }
            }
            Err(err) => {
                log_refusal(&span, &self.peer, &err);
                self.send_error(req, err.code(), err.to_string()).await
            }
        }
    }

    /// Takes the candidates for `offer_id` that the client sent right behind
    /// one (already read: they wait in the socket's buffer), up to
    /// [`MAX_CANDIDATE_BURST`], and says what cut the burst short if not its
    /// end. A frame that is not one of them is held for the next turn of the
    /// loop, where it is parsed again (rare: it must have come in the same
    /// read; keeping the raw frame keeps one path for every frame). (A close
    /// frame read ahead makes tungstenite refuse to send the
    /// burst's answers: the client is leaving and will not read them.)
    fn gather_burst(&mut self, offer_id: OfferId) -> (Vec<(Option<Req>, Candidate)>, Option<Cut>) {
        let mut more = Vec::new();
        while more.len() + 1 < MAX_CANDIDATE_BURST {
            let Some(frame) = self.socket.recv().now_or_never() else {
                break;
            };
            let next = match &frame {
                Some(Ok(Message::Text(text))) => match client::parse(text.as_str()) {
                    Ok(ClientFrame {
                        req,
                        message:
                            ClientMessage::Candidate {
                                offer_id: id,
                                candidate,
                            },
                    }) if id == offer_id => Some((req, candidate)),
                    _ => None,
                },
                _ => None,
            };
            let Some((req, candidate)) = next else {
                self.held = Some(Box::new((frame, Origin::received_now())));
                break;
            };
            self.last_seen = Instant::now();
            metrics::client_message("candidate");
            match self.admit() {
                Ok(true) => more.push((req, candidate)),
                Ok(false) => return (more, Some(Cut::RateLimited(req))),
                Err(end) => return (more, Some(Cut::End(end))),
            }
        }
        (more, None)
    }

    /// Handles a burst of candidates as one request and answers each as if it
    /// had been handled alone.
    async fn on_burst<S: RoomSession>(
        &mut self,
        burst: Burst,
        origin: Origin,
        session: &mut S,
    ) -> Result<(), End> {
        let Burst {
            offer_id,
            frames,
            cut,
        } = burst;
        let (reqs, candidates): (Vec<_>, Vec<_>) = frames.into_iter().unzip();
        let span = trace::burst_span("ws.request", "server", &self.peer, &offer_id, reqs.len());
        if let Some(call) = self.calls.get(&offer_id) {
            call.continue_in(&span);
        }
        trace::record_trace_id(&span);
        let origin = origin.in_span(&span);
        let handled = session
            .candidates(offer_id, candidates, origin)
            .instrument(span.clone())
            .await;
        let (handled, error) = match handled {
            Ok(()) => (reqs.len(), None),
            Err(PartlyHandled { handled, error }) => (handled, Some(error)),
        };
        if let Some(err) = &error {
            log_refusal(&span, &self.peer, err);
        }
        for (n, req) in reqs.into_iter().enumerate() {
            match (&error, n < handled) {
                (Some(err), false) => self.send_error(req, err.code(), err.to_string()).await?,
                _ => {
                    if let Some(ok) = Reply::Done.into_message(req) {
                        self.send(&ok).await?;
                    }
                }
            }
        }
        match cut {
            None => Ok(()),
            Some(Cut::RateLimited(req)) => self.rate_limited(req).await,
            Some(Cut::End(end)) => Err(end),
        }
    }

    /// Writes an event from the room: measured from when its client frame
    /// arrived at an edge, and traced as part of its call.
    async fn deliver(&mut self, delivery: Arc<Delivery>) -> Result<(), End> {
        let Delivery { msg, origin } = &*delivery;
        let span = match origin.trace.is_empty() {
            true => tracing::Span::none(),
            false => {
                let offer_id = event_offer(msg);
                if let Some(offer_id) = offer_id {
                    self.calls.remember(*offer_id, &origin.trace);
                }
                let span = tracing::info_span!(
                    parent: None,
                    "deliver",
                    otel.name = "ws.deliver",
                    r#type = msg.kind(),
                    peer_id = %self.peer,
                    offer_id = offer_id.map(|id| id.to_string()),
                    trace_id = tracing::field::Empty,
                );
                origin.trace.continue_in(&span);
                trace::record_trace_id(&span);
                span
            }
        };
        self.send(msg).instrument(span).await?;
        if let Some(elapsed) = origin.elapsed() {
            metrics::relay_latency(msg.kind(), elapsed);
        }
        Ok(())
    }

    async fn heartbeat(&mut self) -> Result<(), End> {
        if self.last_seen.elapsed() > self.config.heartbeat {
            return Err(End::HeartbeatTimeout);
        }
        self.write(Message::Ping(Default::default())).await
    }

    async fn send_error(
        &mut self,
        req: Option<Req>,
        code: ErrorCode,
        message: String,
    ) -> Result<(), End> {
        self.send(&ServerMessage::Error { req, code, message })
            .await
    }

    async fn send(&mut self, msg: &ServerMessage) -> Result<(), End> {
        self.write(Message::Text(msg.to_json().into())).await?;
        metrics::server_message(msg);
        Ok(())
    }

    /// Buffers one frame for the next [`Self::flush`] (it is written at once
    /// if the buffer is full); a client that cannot take it in time is gone.
    async fn write(&mut self, msg: Message) -> Result<(), End> {
        self.unflushed = true;
        written(timeout(self.config.write_timeout, self.socket.feed(msg)).await)
    }

    /// Writes out every buffered frame.
    async fn flush(&mut self) -> Result<(), End> {
        self.unflushed = false;
        written(timeout(self.config.write_timeout, self.socket.flush()).await)
    }

    /// Sends the close frame `end` calls for, then lingers (reading and
    /// discarding) until the client answers with its own close: closing a socket
    /// with unread input resets it, and the client would never see our reason.
    /// Bounded in time.
    async fn close(&mut self, end: End) {
        let Some((code, reason)) = end.close_frame() else {
            // Flushes tungstenite's automatic reply to a client's close.
            let _ = timeout(CLOSE_TIMEOUT, self.socket.send(Message::Close(None))).await;
            return;
        };
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = timeout(CLOSE_TIMEOUT, async {
            self.socket.send(Message::Close(Some(frame))).await?;
            while let Some(Ok(_)) = self.socket.recv().await {}
            Ok::<_, axum::Error>(())
        })
        .await;
    }
}

/// The trace of each call this connection takes part in, by offer, so that
/// requests about an offer continue its trace. Bounded: the oldest is
/// forgotten first (a forgotten call's requests start traces of their own).
/// Empty while tracing is off.
#[derive(Debug, Default)]
struct CallTraces {
    traces: HashMap<OfferId, TraceContext>,
    order: VecDeque<OfferId>,
}

impl CallTraces {
    const MAX: usize = 64;

    fn get(&self, offer: &OfferId) -> Option<&TraceContext> {
        self.traces.get(offer)
    }

    fn remember(&mut self, offer: OfferId, trace: &TraceContext) {
        if trace.is_empty() || self.traces.contains_key(&offer) {
            return;
        }
        if self.order.len() >= Self::MAX {
            if let Some(oldest) = self.order.pop_front() {
                self.traces.remove(&oldest);
            }
        }
        self.order.push_back(offer);
        self.traces.insert(offer, trace.clone());
    }
}

/// The offer a request is about.
fn message_offer(msg: &ClientMessage) -> Option<&OfferId> {
    match msg {
        ClientMessage::Candidate { offer_id, .. }
        | ClientMessage::Answer { offer_id, .. }
        | ClientMessage::Hangup { offer_id } => Some(offer_id),
        _ => None,
    }
}

/// The offer an event is about.
fn event_offer(msg: &ServerMessage) -> Option<&OfferId> {
    match msg {
        ServerMessage::Offer { offer_id, .. }
        | ServerMessage::Answer { offer_id, .. }
        | ServerMessage::Candidate { offer_id, .. }
        | ServerMessage::OfferClosed { offer_id, .. }
        | ServerMessage::Hangup { offer_id, .. } => Some(offer_id),
        _ => None,
    }
}

/// A candidate and those the client sent right behind it for the same offer,
/// each with its frame's `req`, in order.
struct Burst {
    offer_id: OfferId,
    frames: Vec<(Option<Req>, Candidate)>,
    cut: Option<Cut>,
}

/// Why a burst of candidates ended before the frames did.
enum Cut {
    /// This candidate was over the rate limit: it is refused after the burst.
    RateLimited(Option<Req>),
    /// The connection must end once the burst is answered.
    End(End),
}

/// A client frame as read: `None` once the socket has ended.
type Frame = Option<Result<Message, axum::Error>>;

/// The next client frame and when it arrived: the one held back while
/// gathering a burst, if any, else the next from the socket.
async fn next_frame(
    held: &mut Option<Box<(Frame, Origin)>>,
    socket: &mut WebSocket,
) -> (Frame, Origin) {
    match held.take() {
        Some(held) => *held,
        None => {
            let frame = socket.recv().await;
            (frame, Origin::received_now())
        }
    }
}

/// Logs why `peer`'s request was refused, in its span: a failing backend is
/// a warning, a refusal the client caused is routine.
fn log_refusal(span: &tracing::Span, peer: &PeerId, err: &RoomError) {
    span.in_scope(|| match err {
        RoomError::Unavailable(cause) => {
            tracing::warn!(peer_id = %peer, error = %cause, "request failed");
        }
        _ => tracing::debug!(peer_id = %peer, code = %err.code(), "request refused"),
    });
}

/// What a timed write means for the connection.
fn written(result: Result<Result<(), axum::Error>, Elapsed>) -> Result<(), End> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::ClientGone),
        Err(_) => Err(End::SlowClient),
    }
}

/// What a failed read means for the connection.
fn read_error(err: &axum::Error) -> End {
    let cause = std::error::Error::source(err).and_then(|e| e.downcast_ref::<tungstenite::Error>());
    match cause {
        Some(tungstenite::Error::Capacity(_)) => End::TooLarge,
        Some(tungstenite::Error::Protocol(_) | tungstenite::Error::Utf8(_)) => {
            End::ProtocolViolation
        }
        _ => End::ClientGone,
    }
}
