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
//! | 1001 | the server is shutting down: reconnect (to another node) |
//! | 1002 | the client broke the WebSocket protocol |
//! | 1008 | too slow to read its messages, or sustained rate-limit abuse |
//! | 1009 | a frame larger than `max_message_bytes` |
//! | 1011 | the room service could not take the session (retry later) |
//! | 1000 | silent past the heartbeat |

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use governor::clock::MonotonicClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use switchboard_proto::{ClientMessage, ErrorCode, PeerId, Req, ServerMessage, client};
use switchboard_room::{
    Outbox, OutboxReceiver, Overflowed, Reply, RoomError, RoomService, RoomSession,
};
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
pub(crate) async fn run<R: RoomService>(
    socket: WebSocket,
    rooms: R,
    config: Arc<EdgeConfig>,
    shutdown: CancellationToken,
) {
    let peer = PeerId::random();
    let span = tracing::info_span!("session", peer_id = %peer);
    async move {
        let mut conn = Connection::new(socket, config);
        let (outbox, mut events) = Outbox::channel(conn.config.outbound_queue);
        let mut session = match rooms.connect(peer, outbox).await {
            Ok(session) => session,
            Err(err) => {
                tracing::warn!(error = %err, "room service refused the session");
                conn.close(End::RoomUnavailable).await;
                return;
            }
        };
        tracing::debug!("connected");
        let end = conn.pump(peer, &mut session, &mut events, &shutdown).await;
        tracing::debug!(reason = ?end, "disconnected");
        // The close handshake may linger up to a second; clean up meanwhile.
        tokio::join!(conn.close(end), session.close());
    }
    .instrument(span)
    .await
}

struct Connection {
    socket: WebSocket,
    config: Arc<EdgeConfig>,
    limiter: Option<Limiter>,
    limited_in_a_row: u32,
    last_seen: Instant,
}

impl Connection {
    fn new(socket: WebSocket, config: Arc<EdgeConfig>) -> Self {
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
            limiter,
            limited_in_a_row: 0,
            last_seen: Instant::now(),
        }
    }

    /// The session loop; returns why it ended.
    async fn pump<S: RoomSession>(
        &mut self,
        peer: PeerId,
        session: &mut S,
        events: &mut OutboxReceiver,
        shutdown: &CancellationToken,
    ) -> End {
        let welcome = ServerMessage::Welcome {
            peer_id: peer,
            ice_servers: self.config.ice_servers.clone(),
            max_message_bytes: self.config.max_message_bytes,
            heartbeat_ms: u64::try_from(self.config.heartbeat.as_millis()).unwrap_or(u64::MAX),
        };
        if let Err(end) = self.send(&welcome).await {
            return end;
        }
        let every = self.config.ping_interval();
        let mut ping = interval_at(Instant::now() + every, every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Err(End::Shutdown),
                // Drain what is owed to the client before reading more from it.
                event = events.recv() => match event {
                    Ok(msg) => self.send(&msg).await,
                    Err(Overflowed) => Err(End::SlowClient),
                },
                frame = self.socket.recv() => self.on_frame(frame, session).await,
                _ = ping.tick() => self.heartbeat().await,
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn on_frame<S: RoomSession>(
        &mut self,
        frame: Option<Result<Message, axum::Error>>,
        session: &mut S,
    ) -> Result<(), End> {
        let msg = match frame {
            None => return Err(End::ClientGone),
            Some(Err(err)) => return Err(read_error(&err)),
            Some(Ok(msg)) => msg,
        };
        self.last_seen = Instant::now();
        match msg {
            Message::Text(text) => self.on_text(text.as_str(), session).await,
            Message::Binary(_) => {
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

    async fn on_text<S: RoomSession>(&mut self, text: &str, session: &mut S) -> Result<(), End> {
        // Every frame counts against the limit, malformed ones included.
        let admitted = self.admit()?;
        let frame = match client::parse(text) {
            Ok(frame) => frame,
            Err(err) if !admitted => return self.rate_limited(err.req).await,
            Err(err) => return self.send_error(err.req, err.code, err.message).await,
        };
        let req = frame.req;
        if !admitted {
            return self.rate_limited(req).await;
        }
        let result = match frame.message {
            // Liveness of this connection: answered here, without the room.
            ClientMessage::Ping => Ok(Reply::Pong),
            // Boxed: the room's request futures are large and an idle
            // connection's task would otherwise carry their size all along.
            message => Box::pin(session.handle(message)).await,
        };
        match result {
            Ok(reply) => match reply.into_message(req) {
                Some(msg) => self.send(&msg).await,
                None => Ok(()),
            },
            Err(err) => {
                match &err {
                    RoomError::Unavailable(cause) => {
                        tracing::warn!(error = %cause, "request failed")
                    }
                    _ => tracing::debug!(code = %err.code(), "request refused"),
                }
                self.send_error(req, err.code(), err.to_string()).await
            }
        }
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
        self.write(Message::Text(msg.to_json().into())).await
    }

    /// Writes one frame; a client that cannot take it in time is gone.
    async fn write(&mut self, msg: Message) -> Result<(), End> {
        match timeout(self.config.write_timeout, self.socket.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::ClientGone),
            Err(_) => Err(End::SlowClient),
        }
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
