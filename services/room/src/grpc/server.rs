//! The room service's gRPC server: one [`Link`] per `Attach` stream (one per
//! edge), multiplexing that edge's sessions over the shared room logic.
//!
//! Each session's work (open, requests, close) is queued and handled in order by
//! at most one task at a time, spawned only while there is work: an idle session
//! costs a map entry, not a task. Different sessions proceed concurrently.
//!
//! Replies go back with backpressure; events are pushed without waiting, and if
//! the stream to the edge is full the whole stream is ended (the edge then
//! re-attaches its sessions) rather than buffering without bound.
//!
//! When a stream ends without the edge closing its sessions (the edge died, or
//! this replica is shutting down), the sessions are *detached*: their offers stay
//! pending in the store, so another edge or replica can carry on.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use switchboard_proto::error::FieldError;
use switchboard_proto::pb::{self, convert, rooms_server};
use switchboard_proto::{Candidate, ClientMessage, ErrorCode, OfferId, PeerId};
use switchboard_telemetry::metrics::{self, Side};
use switchboard_telemetry::{Origin, trace};
use tokio::net::TcpListener;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::convert::{burst_reply_to_pb, failure, reply_to_pb, state_from_pb};
use crate::api::{Goodbye, MAX_CANDIDATE_BURST, PartlyHandled, Readiness, RoomSession};
use crate::bus::Bus;
use crate::error::RoomError;
use crate::event::{origin_from_pb, origin_to_pb};
use crate::outbox::{Deliver, Delivery, Outbox};
use crate::room::Room;
use crate::session::{Session, SessionState};
use crate::store::Store;

/// Frames queued towards one edge, at most. The queue allocates as it fills,
/// so the bound costs nothing while idle; it is there for bursts (a big room's
/// presence storm when many members leave at once).
const STREAM_QUEUE: usize = 65_536;
/// Serves the room service (and gRPC health) on `listener` until `shutdown`.
/// The health service follows `readiness`, the process's one readiness check
/// (the same one its admin port reports).
pub async fn serve<S: Store, B: Bus>(
    listener: TcpListener,
    room: Room<S, B>,
    readiness: watch::Receiver<Readiness>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let tasks = TaskTracker::new();
    let (reporter, health) = tonic_health::server::health_reporter();
    tasks.spawn(report_health(reporter, readiness, shutdown.clone()));
    let rooms = RoomsServer {
        room,
        shutdown: shutdown.clone(),
        tasks: tasks.clone(),
    };
    let served = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .add_service(health)
        .add_service(
            rooms_server::RoomsServer::new(rooms).max_decoding_message_size(super::MAX_FRAME_BYTES),
        )
        // Our own listener: the builder's `tcp_nodelay` would not reach it.
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown.cancelled(),
        )
        .await;
    tasks.close();
    tasks.wait().await;
    served
}

/// Keeps the health service's answer in step with the room's readiness.
async fn report_health(
    reporter: tonic_health::server::HealthReporter,
    mut readiness: watch::Receiver<Readiness>,
    shutdown: CancellationToken,
) {
    let mut was_ready = None;
    loop {
        let ready = readiness.borrow_and_update().ready && !shutdown.is_cancelled();
        if was_ready != Some(ready) {
            let status = match ready {
                true => tonic_health::ServingStatus::Serving,
                false => tonic_health::ServingStatus::NotServing,
            };
            reporter.set_service_status("", status).await;
            reporter
                .set_service_status(super::SERVICE_NAME, status)
                .await;
            was_ready = Some(ready);
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
                return;
            }
            changed = readiness.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

struct RoomsServer<S, B> {
    room: Room<S, B>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<pb::RoomFrame, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Store, B: Bus> rooms_server::Rooms for RoomsServer<S, B> {
    type AttachStream = FrameStream;

    async fn attach(
        &self,
        request: Request<Streaming<pb::EdgeFrame>>,
    ) -> Result<Response<FrameStream>, Status> {
        let remote = request.remote_addr();
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let ended = CancellationToken::new();
        let link = Arc::new(Link {
            room: self.room.clone(),
            tx,
            ended: ended.clone(),
            tasks: self.tasks.clone(),
            slots: Mutex::default(),
        });
        tracing::info!(edge = ?remote, "edge attached");
        self.tasks.spawn(link.run(inbound, self.shutdown.clone()));
        let frames = ReceiverStream::new(rx).take_until(ended.cancelled_owned());
        Ok(Response::new(Box::pin(frames)))
    }
}

/// One edge's stream and the sessions on it.
struct Link<S, B> {
    room: Room<S, B>,
    tx: mpsc::Sender<Result<pb::RoomFrame, Status>>,
    /// Cancelled when the stream is over (either side) or overflowed.
    ended: CancellationToken,
    tasks: TaskTracker,
    /// Boxed: the map keeps spare capacity, and a slot is a few hundred bytes.
    slots: Mutex<HashMap<u64, Box<Slot<S, B>>>>,
}

/// One session's queue of work and, between work items, its state.
struct Slot<S, B> {
    queue: VecDeque<Work>,
    session: Option<Session<S, B>>,
    running: bool,
}

/// Whether a session's work is over (it was closed or detached).
enum Ended {
    Yes,
    No,
}

enum Work {
    Open(PeerId, SessionState, Instant),
    Request(Call),
    Close(Goodbye),
    Detach,
}

/// One request as it arrived.
struct Call {
    id: u64,
    body: Result<Ask, FieldError>,
    origin: Origin,
    arrived: Instant,
}

/// What a request asks of its session.
enum Ask {
    Message(ClientMessage),
    /// Candidates for one offer that the client sent together.
    Burst(OfferId, Vec<Candidate>),
}

impl Ask {
    fn from_pb(body: Option<pb::request::Body>) -> Result<Self, FieldError> {
        match body.ok_or_else(|| convert::missing("request body"))? {
            pb::request::Body::CandidateBurst(burst) => {
                if burst.candidates.len() > MAX_CANDIDATE_BURST {
                    // The edge then sends them singly.
                    let why = format!("at most {MAX_CANDIDATE_BURST} candidates in a burst");
                    return Err(FieldError::new(ErrorCode::BadMessage, why));
                }
                let (offer_id, candidates) = convert::from_candidate_burst(burst)?;
                Ok(Ask::Burst(offer_id, candidates))
            }
            body => ClientMessage::try_from(body).map(Ask::Message),
        }
    }
}

/// How a request went.
enum Outcome {
    Message(Result<crate::Reply, RoomError>),
    Burst(Result<(), PartlyHandled>),
}

impl Outcome {
    fn error(&self) -> Option<&RoomError> {
        match self {
            Outcome::Message(result) => result.as_ref().err(),
            Outcome::Burst(result) => result.as_ref().err().map(|partly| &partly.error),
        }
    }

    fn into_pb(self) -> pb::reply::Result {
        match self {
            Outcome::Message(result) => reply_to_pb(result),
            Outcome::Burst(result) => burst_reply_to_pb(result),
        }
    }
}

impl<S: Store, B: Bus> Link<S, B> {
    fn slots(&self) -> MutexGuard<'_, HashMap<u64, Box<Slot<S, B>>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn run(
        self: Arc<Self>,
        mut inbound: Streaming<pb::EdgeFrame>,
        shutdown: CancellationToken,
    ) {
        loop {
            let frame = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.ended.cancelled() => break,
                frame = inbound.message() => frame,
            };
            match frame {
                Ok(Some(frame)) => self.on_frame(frame).await,
                Ok(None) => break,
                Err(status) => {
                    tracing::info!(error = %status, "edge stream failed");
                    break;
                }
            }
        }
        let ids: Vec<u64> = self.slots().keys().copied().collect();
        tracing::info!(
            sessions = ids.len(),
            "edge stream over; detaching its sessions"
        );
        for id in ids {
            self.enqueue(id, Work::Detach);
        }
        self.ended.cancel();
    }

    async fn on_frame(self: &Arc<Self>, frame: pb::EdgeFrame) {
        use pb::edge_frame::Frame;
        match frame.frame {
            Some(Frame::Open(open)) => {
                let peer = match convert::peer(&open.peer_id) {
                    Ok(peer) => peer,
                    Err(err) => {
                        let err = RoomError::Remote {
                            code: err.code,
                            message: err.message,
                        };
                        return self.send(opened(open.session, Some(&err))).await;
                    }
                };
                let state = state_from_pb(open.resume.unwrap_or_default());
                let fresh = Slot {
                    queue: VecDeque::new(),
                    session: None,
                    running: false,
                };
                if self.slots().insert(open.session, Box::new(fresh)).is_some() {
                    tracing::warn!(session = open.session, "edge reopened a live session");
                }
                self.enqueue(open.session, Work::Open(peer, state, Instant::now()));
            }
            Some(Frame::Request(req)) => {
                let call = Call {
                    id: req.call,
                    body: Ask::from_pb(req.body),
                    origin: origin_from_pb(req.origin),
                    arrived: Instant::now(),
                };
                if !self.enqueue(req.session, Work::Request(call)) {
                    let err = RoomError::unavailable("unknown session; open it again");
                    self.send(reply(req.session, req.call, reply_to_pb(Err(err))))
                        .await;
                }
            }
            Some(Frame::Close(close)) => {
                let how = match close.keep_calls {
                    true => Goodbye::Moving,
                    false => Goodbye::Left,
                };
                self.enqueue(close.session, Work::Close(how));
            }
            None => {}
        }
    }

    /// Queues work for a session and makes sure a task handles it. Returns
    /// false when the session does not exist.
    fn enqueue(self: &Arc<Self>, id: u64, work: Work) -> bool {
        let mut slots = self.slots();
        let Some(slot) = slots.get_mut(&id) else {
            return false;
        };
        slot.queue.push_back(work);
        if !slot.running {
            slot.running = true;
            let session = slot.session.take();
            self.tasks.spawn(Arc::clone(self).work(id, session));
        }
        true
    }

    /// Handles a session's queued work in order, then parks the session. Each
    /// item is handled in its own boxed future: this task is spawned for every
    /// burst of work, and with an item's futures inline it weighed ~3.7 KiB
    /// (a thousand sessions opening at once: megabytes).
    async fn work(self: Arc<Self>, id: u64, mut session: Option<Session<S, B>>) {
        loop {
            let next = {
                let mut slots = self.slots();
                let Some(slot) = slots.get_mut(&id) else {
                    return;
                };
                match slot.queue.pop_front() {
                    Some(work) => work,
                    None => {
                        slot.session = session;
                        slot.running = false;
                        // An idle session keeps no buffer.
                        slot.queue = VecDeque::new();
                        return;
                    }
                }
            };
            if let Ended::Yes = Box::pin(self.work_on(id, next, &mut session)).await {
                return;
            }
        }
    }

    /// Handles one item of session `id`'s work.
    async fn work_on(&self, id: u64, next: Work, session: &mut Option<Session<S, B>>) -> Ended {
        match next {
            Work::Open(peer, state, arrived) => {
                let outbox = Outbox::new(StreamOutbox {
                    session: id,
                    tx: self.tx.clone(),
                    ended: self.ended.clone(),
                });
                let opening = match state == SessionState::default() {
                    true => self.room.connect_session(peer, outbox).await,
                    false => self.room.resume(peer, outbox, state).await,
                };
                if let Err(err) = &opening {
                    tracing::warn!(%peer, error = ?err, "could not open session");
                }
                let status = opening
                    .as_ref()
                    .map_or_else(|e| e.code().as_str(), |_| "ok");
                metrics::grpc_request(Side::Server, "open", status, arrived.elapsed());
                self.send(opened(id, opening.as_ref().err())).await;
                *session = opening.ok();
                Ended::No
            }
            Work::Request(call) => {
                let call_id = call.id;
                let outcome = handle(session.as_mut(), call).await;
                if let Some(RoomError::Unavailable(cause)) = outcome.error() {
                    tracing::warn!(error = %cause, "request failed");
                }
                self.send(reply(id, call_id, outcome.into_pb())).await;
                Ended::No
            }
            Work::Close(_) | Work::Detach => {
                let started = Instant::now();
                if let Some(session) = session.take() {
                    match next {
                        Work::Close(how) => session.close(how).await,
                        _ => session.detach().await,
                    }
                }
                if matches!(next, Work::Close(_)) {
                    metrics::grpc_request(Side::Server, "close", "ok", started.elapsed());
                }
                self.slots().remove(&id);
                Ended::Yes
            }
        }
    }

    async fn send(&self, frame: pb::room_frame::Frame) {
        // A closed stream is noticed by `run`; nothing to do here.
        let _ = self.tx.send(Ok(pb::RoomFrame { frame: Some(frame) })).await;
    }
}

/// Handles one request of a session, in its own span (continuing the edge's
/// trace) and measured from its arrival.
async fn handle<S: Store, B: Bus>(session: Option<&mut Session<S, B>>, call: Call) -> Outcome {
    let Call {
        body,
        origin,
        arrived,
        ..
    } = call;
    // A refusal of a burst is its first candidate's (none was handled).
    let refused = |err| Outcome::Message(Err(err));
    let (ask, session) = match (body, session) {
        (Err(err), _) => {
            return refused(RoomError::Remote {
                code: err.code,
                message: err.message,
            });
        }
        (Ok(_), None) => return refused(RoomError::unavailable("the session failed to open")),
        (Ok(ask), Some(session)) => (ask, session),
    };
    let peer = session.peer_id();
    let (method, outcome) = match ask {
        Ask::Message(msg) => {
            let method = msg.kind();
            let span = trace::request_span("room.request", "server", &peer, &msg);
            origin.trace.continue_in(&span);
            trace::record_trace_id(&span);
            let result = session.handle(msg, origin).instrument(span).await;
            (method, Outcome::Message(result))
        }
        Ask::Burst(offer_id, candidates) => {
            let span =
                trace::burst_span("room.request", "server", &peer, &offer_id, candidates.len());
            origin.trace.continue_in(&span);
            trace::record_trace_id(&span);
            let result = session
                .candidates(offer_id, candidates, origin)
                .instrument(span)
                .await;
            ("candidate", Outcome::Burst(result))
        }
    };
    let status = outcome.error().map_or("ok", |e| e.code().as_str());
    metrics::grpc_request(Side::Server, method, status, arrived.elapsed());
    outcome
}

fn opened(session: u64, error: Option<&RoomError>) -> pb::room_frame::Frame {
    pb::room_frame::Frame::Opened(pb::SessionOpened {
        session,
        error: error.map(failure),
    })
}

fn reply(session: u64, call: u64, result: pb::reply::Result) -> pb::room_frame::Frame {
    pb::room_frame::Frame::Reply(pb::Reply {
        session,
        call,
        result: Some(result),
    })
}

/// A remote session's outbox: events go onto its edge's stream, tagged.
#[derive(Debug)]
struct StreamOutbox {
    session: u64,
    tx: mpsc::Sender<Result<pb::RoomFrame, Status>>,
    ended: CancellationToken,
}

impl Deliver for StreamOutbox {
    fn deliver(&self, delivery: Arc<Delivery>) {
        let Some(body) = delivery.msg.to_event() else {
            return;
        };
        let frame = pb::room_frame::Frame::Event(pb::Event {
            session: self.session,
            body: Some(body),
            origin: Some(origin_to_pb(&delivery.origin)),
        });
        match self.tx.try_send(Ok(pb::RoomFrame { frame: Some(frame) })) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => {
                metrics::outbound_queue_drop();
                if !self.ended.is_cancelled() {
                    tracing::warn!("stream to edge is full; ending it so the edge re-attaches");
                }
                self.ended.cancel();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_longer_than_the_limit_is_refused_for_the_edge_to_send_it_singly() {
        let burst = |n: usize| {
            let candidate = pb::Candidate {
                candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
                sdp_mid: Some("0".into()),
                ..Default::default()
            };
            Some(pb::request::Body::CandidateBurst(pb::CandidateBurst {
                offer_id: OfferId::random().to_string(),
                candidates: vec![candidate; n],
            }))
        };
        let Ok(Ask::Burst(_, taken)) = Ask::from_pb(burst(MAX_CANDIDATE_BURST)) else {
            panic!("a burst at the limit is taken");
        };
        assert_eq!(taken.len(), MAX_CANDIDATE_BURST);
        let Err(refused) = Ask::from_pb(burst(MAX_CANDIDATE_BURST + 1)) else {
            panic!("a longer burst is refused");
        };
        assert_eq!(refused.code, ErrorCode::BadMessage);
    }
}
