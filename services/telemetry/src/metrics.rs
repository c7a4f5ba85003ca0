//! Every metric Switchboard exports: names, help texts, label values and
//! histogram buckets, and one function per thing the services record.
//!
//! Names follow Prometheus conventions (base units in the name, `_total` on
//! counters). Histograms, not summaries, so quantiles aggregate across pods.
//! Label values come from closed sets (`&'static str` from enums), never from
//! ids. Counters with a closed label set are registered at zero when a process
//! starts ([`register`]), so `rate()` over them is never empty and dashboards
//! show zero rather than "no data".
//!
//! docs/OPERATIONS.md lists the same metrics for operators; keep both in step.

use std::time::Duration;

use ::metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use switchboard_proto::{ClientMessage, CloseReason, ErrorCode, ServerMessage};

use crate::series::{gauge_add, gauge_set, increment, record};

// ---- every process ----------------------------------------------------------
pub const BUILD_INFO: &str = "switchboard_build_info";
pub const READY: &str = "switchboard_ready";

// ---- edge side (standalone, edge) -------------------------------------------
pub const CONNECTIONS_OPEN: &str = "switchboard_connections_open";
pub const CONNECTIONS_OPENED: &str = "switchboard_connections_opened_total";
pub const CONNECTIONS_CLOSED: &str = "switchboard_connections_closed_total";
pub const CLIENT_MESSAGES: &str = "switchboard_client_messages_total";
pub const SERVER_MESSAGES: &str = "switchboard_server_messages_total";
pub const PROTOCOL_ERRORS: &str = "switchboard_protocol_errors_total";
pub const RELAY_LATENCY: &str = "switchboard_relay_latency_seconds";
pub const SESSION_SETUP: &str = "switchboard_session_setup_seconds";
pub const SLOW_CLIENT_DISCONNECTS: &str = "switchboard_slow_client_disconnects_total";
pub const OUTBOUND_QUEUE_DROPS: &str = "switchboard_outbound_queue_drops_total";
pub const ROOM_REPLICAS_SERVING: &str = "switchboard_room_replicas_serving";

// ---- room side (standalone, room) -------------------------------------------
pub const PENDING_OFFERS: &str = "switchboard_pending_offers";
pub const OLDEST_PENDING_OFFER_AGE: &str = "switchboard_oldest_pending_offer_age_seconds";
pub const OFFERS_CREATED: &str = "switchboard_offers_created_total";
pub const OFFERS_CLOSED: &str = "switchboard_offers_closed_total";
pub const OFFER_ANSWER: &str = "switchboard_offer_answer_seconds";
pub const GRPC_REQUESTS: &str = "switchboard_grpc_requests_total";
pub const GRPC_REQUEST_DURATION: &str = "switchboard_grpc_request_duration_seconds";
pub const REDIS_COMMAND_DURATION: &str = "switchboard_redis_command_duration_seconds";
pub const REDIS_ERRORS: &str = "switchboard_redis_errors_total";
pub const PUBSUB_MESSAGES: &str = "switchboard_pubsub_messages_total";
pub const PUBSUB_RECONNECTS: &str = "switchboard_pubsub_reconnects_total";
pub const PUBSUB_SUBSCRIPTIONS: &str = "switchboard_pubsub_subscriptions";

/// Buckets of the sub-second latency histograms (seconds).
pub const FAST_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Buckets of session set-up (seconds).
pub const SETUP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets of offer → answer, which waits for a person (seconds).
pub const HUMAN_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Each histogram and its buckets.
pub const HISTOGRAMS: &[(&str, &[f64])] = &[
    (RELAY_LATENCY, FAST_BUCKETS),
    (SESSION_SETUP, SETUP_BUCKETS),
    (OFFER_ANSWER, HUMAN_BUCKETS),
    (GRPC_REQUEST_DURATION, FAST_BUCKETS),
    (REDIS_COMMAND_DURATION, FAST_BUCKETS),
];

/// What a process runs, for [`register`] and `switchboard_build_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Standalone,
    Edge,
    Room,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Edge => "edge",
            Role::Room => "room",
        }
    }

    fn has_edge(self) -> bool {
        matches!(self, Role::Standalone | Role::Edge)
    }

    fn has_room(self) -> bool {
        matches!(self, Role::Standalone | Role::Room)
    }
}

/// Why a WebSocket connection ended (`switchboard_connections_closed_total`).
pub const CLOSE_REASONS: [&str; 8] = [
    "client_closed",
    "shutdown",
    "slow_client",
    "too_large",
    "abuse",
    "protocol_error",
    "heartbeat_timeout",
    "room_unavailable",
];

/// Client frames that are not a valid message count as this `type`.
pub const INVALID_MESSAGE: &str = "invalid";

/// Which end of the edge → room gRPC link measured a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }
}

/// The room requests an edge makes over gRPC, besides the client messages.
pub const GRPC_SESSION_METHODS: [&str; 2] = ["open", "close"];

/// A Redis round trip the room makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisCommand {
    Ping,
    InsertOffer,
    GetOffer,
    RoomOffers,
    AddCandidate,
    Claim,
    RemoveOffer,
    TakeExpired,
    PendingStats,
    Publish,
    Followers,
    Subscribe,
    Unsubscribe,
}

impl RedisCommand {
    pub const ALL: [RedisCommand; 13] = [
        Self::Ping,
        Self::InsertOffer,
        Self::GetOffer,
        Self::RoomOffers,
        Self::AddCandidate,
        Self::Claim,
        Self::RemoveOffer,
        Self::TakeExpired,
        Self::PendingStats,
        Self::Publish,
        Self::Followers,
        Self::Subscribe,
        Self::Unsubscribe,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::InsertOffer => "insert_offer",
            Self::GetOffer => "get_offer",
            Self::RoomOffers => "room_offers",
            Self::AddCandidate => "add_candidate",
            Self::Claim => "claim",
            Self::RemoveOffer => "remove_offer",
            Self::TakeExpired => "take_expired",
            Self::PendingStats => "pending_stats",
            Self::Publish => "publish",
            Self::Followers => "followers",
            Self::Subscribe => "subscribe",
            Self::Unsubscribe => "unsubscribe",
        }
    }
}

/// Which way a pub/sub message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Published,
    Received,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Published => "published",
            Direction::Received => "received",
        }
    }
}

fn close_reason(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::Answered => "answered",
        CloseReason::Withdrawn => "withdrawn",
        CloseReason::Expired => "expired",
        CloseReason::OffererLeft => "offerer_left",
    }
}

const OFFER_CLOSE_REASONS: [CloseReason; 4] = [
    CloseReason::Answered,
    CloseReason::Withdrawn,
    CloseReason::Expired,
    CloseReason::OffererLeft,
];

/// Describes every metric of `role` and registers its counters at zero. Call
/// once, after the recorder is installed.
pub fn register(role: Role) {
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels say which version runs in which role."
    );
    describe_gauge!(
        READY,
        "1 when the process is ready for traffic (as /readyz reports), else 0."
    );
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "role" => role.as_str()).set(1.0);
    gauge!(READY).set(0.0);
    if role.has_edge() {
        register_edge();
    }
    if role.has_room() {
        register_room();
    }
    if role == Role::Edge {
        describe_gauge!(
            ROOM_REPLICAS_SERVING,
            "Room service replicas this edge is attached to and that report serving."
        );
        gauge!(ROOM_REPLICAS_SERVING).set(0.0);
        register_grpc(Side::Client);
    }
    if role == Role::Room {
        register_grpc(Side::Server);
    }
}

fn register_edge() {
    describe_gauge!(CONNECTIONS_OPEN, "WebSocket connections open now.");
    describe_counter!(CONNECTIONS_OPENED, "WebSocket connections accepted.");
    describe_counter!(
        CONNECTIONS_CLOSED,
        "WebSocket connections ended, by reason."
    );
    describe_counter!(CLIENT_MESSAGES, "Client frames received, by type.");
    describe_counter!(SERVER_MESSAGES, "Frames sent to clients, by type.");
    describe_counter!(PROTOCOL_ERRORS, "`error` frames sent to clients, by code.");
    describe_histogram!(
        RELAY_LATENCY,
        Unit::Seconds,
        "From an edge receiving a client's frame to the counterpart's edge writing the resulting frame, by type."
    );
    describe_histogram!(
        SESSION_SETUP,
        Unit::Seconds,
        "From the WebSocket upgrade to the room session open and `welcome` written."
    );
    describe_counter!(
        SLOW_CLIENT_DISCONNECTS,
        "Clients disconnected because they did not read their messages fast enough."
    );
    describe_counter!(
        OUTBOUND_QUEUE_DROPS,
        "Messages dropped because a peer's outbound queue (or a room-to-edge stream) was full."
    );
    gauge!(CONNECTIONS_OPEN).set(0.0);
    counter!(CONNECTIONS_OPENED).absolute(0);
    for reason in CLOSE_REASONS {
        counter!(CONNECTIONS_CLOSED, "reason" => reason).absolute(0);
    }
    for kind in ClientMessage::KINDS.into_iter().chain([INVALID_MESSAGE]) {
        counter!(CLIENT_MESSAGES, "type" => kind).absolute(0);
    }
    for kind in ServerMessage::KINDS {
        counter!(SERVER_MESSAGES, "type" => kind).absolute(0);
    }
    for code in ErrorCode::ALL {
        counter!(PROTOCOL_ERRORS, "code" => code.as_str()).absolute(0);
    }
    counter!(SLOW_CLIENT_DISCONNECTS).absolute(0);
    counter!(OUTBOUND_QUEUE_DROPS).absolute(0);
}

fn register_room() {
    describe_gauge!(
        PENDING_OFFERS,
        "Pending offers in the store (the deployment's, as sampled by this process: aggregate with max)."
    );
    describe_gauge!(
        OLDEST_PENDING_OFFER_AGE,
        Unit::Seconds,
        "Age of the oldest pending offer in the store (0 when none)."
    );
    describe_counter!(OFFERS_CREATED, "Offers created.");
    describe_counter!(
        OFFERS_CLOSED,
        "Pending offers that stopped being pending, by reason."
    );
    describe_histogram!(
        OFFER_ANSWER,
        Unit::Seconds,
        "From an offer's creation to the winning answer's claim."
    );
    describe_histogram!(
        REDIS_COMMAND_DURATION,
        Unit::Seconds,
        "Redis round trips, by store or bus operation."
    );
    describe_counter!(
        REDIS_ERRORS,
        "Redis round trips that failed or timed out, by operation."
    );
    describe_counter!(PUBSUB_MESSAGES, "Pub/sub messages, by direction.");
    describe_counter!(
        PUBSUB_RECONNECTS,
        "Times the pub/sub subscriber connection was re-established after a loss."
    );
    describe_gauge!(
        PUBSUB_SUBSCRIPTIONS,
        "Redis channels this process is subscribed to."
    );
    gauge!(PENDING_OFFERS).set(0.0);
    gauge!(OLDEST_PENDING_OFFER_AGE).set(0.0);
    counter!(OFFERS_CREATED).absolute(0);
    for reason in OFFER_CLOSE_REASONS {
        counter!(OFFERS_CLOSED, "reason" => close_reason(reason)).absolute(0);
    }
}

/// Pre-registers the Redis and pub/sub series (room processes using Redis).
pub fn register_redis() {
    for command in RedisCommand::ALL {
        counter!(REDIS_ERRORS, "command" => command.as_str()).absolute(0);
    }
    for direction in [Direction::Published, Direction::Received] {
        counter!(PUBSUB_MESSAGES, "direction" => direction.as_str()).absolute(0);
    }
    counter!(PUBSUB_RECONNECTS).absolute(0);
    gauge!(PUBSUB_SUBSCRIPTIONS).set(0.0);
}

fn register_grpc(side: Side) {
    describe_counter!(
        GRPC_REQUESTS,
        "Room requests over gRPC, by side, method and status (ok or an error code)."
    );
    describe_histogram!(
        GRPC_REQUEST_DURATION,
        Unit::Seconds,
        "Durations of room requests over gRPC, by side and method."
    );
    for method in ClientMessage::KINDS
        .into_iter()
        .filter(|m| *m != "ping")
        .chain(GRPC_SESSION_METHODS)
    {
        counter!(GRPC_REQUESTS, "side" => side.as_str(), "method" => method, "status" => "ok")
            .absolute(0);
    }
}

// ---- recording ---------------------------------------------------------------

pub fn set_ready(ready: bool) {
    gauge_set(READY, &[], if ready { 1.0 } else { 0.0 });
}

/// A connection was accepted; the open-connections gauge stays raised until
/// the returned guard drops.
pub fn connection_opened() -> OpenConnection {
    increment(CONNECTIONS_OPENED, &[], 1);
    gauge_add(CONNECTIONS_OPEN, &[], 1.0);
    OpenConnection(())
}

/// Holds one connection in `switchboard_connections_open`.
#[derive(Debug)]
pub struct OpenConnection(());

impl Drop for OpenConnection {
    fn drop(&mut self) {
        gauge_add(CONNECTIONS_OPEN, &[], -1.0);
    }
}

/// A connection ended; `reason` is one of [`CLOSE_REASONS`].
pub fn connection_closed(reason: &'static str) {
    debug_assert!(CLOSE_REASONS.contains(&reason), "unknown reason {reason}");
    increment(CONNECTIONS_CLOSED, &[("reason", reason)], 1);
    if reason == "slow_client" {
        increment(SLOW_CLIENT_DISCONNECTS, &[], 1);
    }
}

/// A client frame arrived; `kind` is a client message type or [`INVALID_MESSAGE`].
pub fn client_message(kind: &'static str) {
    increment(CLIENT_MESSAGES, &[("type", kind)], 1);
}

/// A frame was written to a client.
pub fn server_message(msg: &ServerMessage) {
    increment(SERVER_MESSAGES, &[("type", msg.kind())], 1);
    if let ServerMessage::Error { code, .. } = msg {
        increment(PROTOCOL_ERRORS, &[("code", code.as_str())], 1);
    }
}

pub fn relay_latency(kind: &'static str, elapsed: Duration) {
    record(RELAY_LATENCY, &[("type", kind)], elapsed.as_secs_f64());
}

pub fn session_setup(elapsed: Duration) {
    record(SESSION_SETUP, &[], elapsed.as_secs_f64());
}

pub fn outbound_queue_drop() {
    increment(OUTBOUND_QUEUE_DROPS, &[], 1);
}

pub fn room_replicas_serving(count: usize) {
    gauge_set(ROOM_REPLICAS_SERVING, &[], count as f64);
}

/// The store's pending offers: how many, and the oldest one's age.
pub fn pending_offers(count: usize, oldest: Duration) {
    gauge_set(PENDING_OFFERS, &[], count as f64);
    gauge_set(OLDEST_PENDING_OFFER_AGE, &[], oldest.as_secs_f64());
}

pub fn offer_created() {
    increment(OFFERS_CREATED, &[], 1);
}

/// A pending offer stopped being pending.
pub fn offer_closed(reason: CloseReason) {
    increment(OFFERS_CLOSED, &[("reason", close_reason(reason))], 1);
}

/// A pending offer was answered `waited` after it was created.
pub fn offer_answered(waited: Duration) {
    offer_closed(CloseReason::Answered);
    record(OFFER_ANSWER, &[], waited.as_secs_f64());
}

/// One room request over gRPC; `status` is `ok` or an error code.
pub fn grpc_request(side: Side, method: &'static str, status: &'static str, took: Duration) {
    let side = side.as_str();
    increment(
        GRPC_REQUESTS,
        &[("side", side), ("method", method), ("status", status)],
        1,
    );
    record(
        GRPC_REQUEST_DURATION,
        &[("side", side), ("method", method)],
        took.as_secs_f64(),
    );
}

/// One Redis round trip.
pub fn redis_command(command: RedisCommand, ok: bool, took: Duration) {
    let command = command.as_str();
    record(
        REDIS_COMMAND_DURATION,
        &[("command", command)],
        took.as_secs_f64(),
    );
    if !ok {
        increment(REDIS_ERRORS, &[("command", command)], 1);
    }
}

pub fn pubsub_message(direction: Direction) {
    increment(PUBSUB_MESSAGES, &[("direction", direction.as_str())], 1);
}

pub fn pubsub_reconnect() {
    increment(PUBSUB_RECONNECTS, &[], 1);
}

pub fn pubsub_subscriptions(count: usize) {
    gauge_set(PUBSUB_SUBSCRIPTIONS, &[], count as f64);
}

/// Times `op`, a Redis round trip, and records it under `command`.
pub async fn time_redis<T, E>(
    command: RedisCommand,
    op: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let start = std::time::Instant::now();
    let result = op.await;
    redis_command(command, result.is_ok(), start.elapsed());
    result
}
