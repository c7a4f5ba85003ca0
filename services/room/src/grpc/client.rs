//! [`RemoteRooms`]: the room service as an edge sees it, over gRPC.
//!
//! The edge keeps one `Attach` stream per room replica (a [`Replica`] task that
//! connects, reconnects with backoff, and watches the replica's gRPC health).
//! Replicas are discovered: every `--room` URL's host is resolved now and every
//! few seconds, and each address behind it is a replica. A Kubernetes headless
//! Service name thus reaches every room pod, and pods that come and go are
//! attached and let go without restarting the edge.
//! New sessions are spread round-robin over the replicas that are up and
//! serving. When a replica's stream breaks, its sessions' requests in flight fail
//! with `unavailable`, and the sessions move to a live replica: they are opened
//! there again with the [`SessionState`] the edge kept from the replies it
//! relayed, so their rooms, offers and calls carry on. Nothing here outlives the
//! sockets it serves.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use switchboard_proto::pb::convert::candidate_burst;
use switchboard_proto::pb::{self, rooms_client::RoomsClient};
use switchboard_proto::{Candidate, ClientMessage, ErrorCode, OfferId, PeerId, ServerMessage};
use switchboard_telemetry::Origin;
use switchboard_telemetry::metrics::{self, Side};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::{Channel, Endpoint};

use super::convert::{burst_reply_from_pb, error, reply_from_pb, state_to_pb};
use crate::api::{Goodbye, PartlyHandled, Readiness, RoomService, RoomSession};
use crate::error::RoomError;
use crate::event::{origin_from_pb, origin_to_pb};
use crate::outbox::{Delivery, Outbox};
use crate::session::{Reply, SessionState};

/// How long one request may wait for its reply.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames queued towards one replica, at most (senders wait beyond).
const STREAM_QUEUE: usize = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// How often each room URL's host is resolved again.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(5);

/// The room service behind one or more replicas. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RemoteRooms {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Every replica ever discovered; an index stays valid for the edge's
    /// life (a replica that disappears is deactivated, never removed).
    replicas: RwLock<Vec<Arc<Replica>>>,
    /// The addresses each `--room` URL resolved to last.
    resolved: Mutex<Vec<BTreeSet<String>>>,
    /// Every session of this edge, by its edge-local number. Boxed: a hash
    /// table keeps up to twice as many slots as entries, and an empty slot of
    /// a ~190-byte entry costs an idle connection more than the pointer does.
    sessions: Mutex<HashMap<u64, Box<Entry>>>,
    next_session: AtomicU64,
    next_call: AtomicU64,
    next_replica: AtomicUsize,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// One room replica and the stream to it, when it is up.
#[derive(Debug)]
struct Replica {
    url: String,
    link: Mutex<Option<mpsc::Sender<pb::EdgeFrame>>>,
    serving: AtomicBool,
    /// Set while the replica is wanted (its address is resolved); cancelling
    /// it lets the replica go.
    active: Mutex<Option<CancellationToken>>,
}

/// What the edge knows of one session.
#[derive(Debug)]
struct Entry {
    peer: PeerId,
    outbox: Outbox,
    state: SessionState,
    /// The replica serving the session; `None` while it waits for one.
    replica: Option<usize>,
    opening: Option<oneshot::Sender<Result<(), RoomError>>>,
    /// Requests waiting for their reply, with their call number: handed the
    /// reply's raw result (each request reads its own kind of reply). A list:
    /// a session has one request in flight, rarely more.
    calls: Vec<(u64, ReplyWaiter)>,
    /// The client left while no replica could take its `CloseSession`: the
    /// session is opened on the next live replica only to be closed there, so
    /// its offers are withdrawn and its counterparts told.
    closing: Option<Goodbye>,
}

/// Where the raw result of one request's reply goes.
type ReplyWaiter = oneshot::Sender<Result<Option<pb::reply::Result>, RoomError>>;

impl Entry {
    /// The waiter of request `call`, no longer waiting.
    fn take_call(&mut self, call: u64) -> Option<ReplyWaiter> {
        let at = self.calls.iter().position(|(id, _)| *id == call)?;
        let waiter = self.calls.swap_remove(at).1;
        if self.calls.is_empty() {
            // An idle session keeps no buffer.
            self.calls = Vec::new();
        }
        Some(waiter)
    }
}

impl RemoteRooms {
    /// Starts discovering and connecting to the replicas behind `urls`
    /// (`http://host:port`, the host a name or an address); the connections
    /// live until `shutdown` and are tracked by `tasks`.
    pub fn connect(urls: Vec<String>, tasks: &TaskTracker, shutdown: CancellationToken) -> Self {
        let shared = Arc::new(Shared {
            replicas: RwLock::default(),
            resolved: Mutex::new(vec![BTreeSet::new(); urls.len()]),
            sessions: Mutex::default(),
            next_session: AtomicU64::new(1),
            next_call: AtomicU64::new(1),
            next_replica: AtomicUsize::new(0),
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
        });
        for (target, url) in urls.into_iter().enumerate() {
            tasks.spawn(Arc::clone(&shared).discover(target, url));
        }
        Self { shared }
    }

    /// Replicas currently connected and serving.
    pub fn live_replicas(&self) -> usize {
        self.shared.live_replicas()
    }
}

impl Shared {
    fn replica(&self, index: usize) -> Arc<Replica> {
        let replicas = self.replicas.read().unwrap_or_else(|p| p.into_inner());
        Arc::clone(&replicas[index])
    }

    fn replica_count(&self) -> usize {
        self.replicas
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Replicas currently wanted (resolved), connected or not.
    fn wanted_replicas(&self) -> usize {
        let replicas = self.replicas.read().unwrap_or_else(|p| p.into_inner());
        replicas.iter().filter(|r| r.is_active()).count()
    }

    fn live_replicas(&self) -> usize {
        (0..self.replica_count())
            .filter(|i| self.live(*i).is_some())
            .count()
    }

    /// Resolves room URL number `target` every [`DISCOVERY_INTERVAL`] until
    /// shutdown, keeping one replica per address it resolves to. A failed
    /// lookup keeps the previous addresses (a DNS blip must not drop rooms).
    async fn discover(self: Arc<Self>, target: usize, url: String) {
        let authority = url
            .split_once("://")
            .map_or(url.as_str(), |(_, rest)| rest)
            .trim_end_matches('/')
            .to_owned();
        let mut failing = false;
        loop {
            match tokio::net::lookup_host(authority.as_str()).await {
                Ok(addrs) => {
                    failing = false;
                    let urls = addrs.map(|a| format!("http://{a}")).collect();
                    self.resolved(target, urls);
                }
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!(room = %url, error = %err, "cannot resolve room service; retrying");
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(DISCOVERY_INTERVAL) => {}
            }
        }
    }

    /// Room URL `target` now resolves to `urls`: starts a replica for each new
    /// address and lets go of those no URL resolves to any more.
    fn resolved(self: &Arc<Self>, target: usize, urls: BTreeSet<String>) {
        let wanted: BTreeSet<String> = {
            let mut resolved = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
            if resolved[target] == urls {
                return;
            }
            resolved[target] = urls;
            resolved.iter().flatten().cloned().collect()
        };
        let mut replicas = self.replicas.write().unwrap_or_else(|p| p.into_inner());
        for (index, replica) in replicas.iter().enumerate() {
            let active = replica.is_active();
            if active && !wanted.contains(&replica.url) {
                tracing::info!(replica = %replica.url, "room replica no longer resolved; letting it go");
                replica.deactivate();
            } else if !active && wanted.contains(&replica.url) {
                self.start(index, replica);
            }
        }
        for url in wanted {
            if replicas.iter().all(|r| r.url != url) {
                let replica = Arc::new(Replica {
                    url,
                    link: Mutex::new(None),
                    serving: AtomicBool::new(false),
                    active: Mutex::new(None),
                });
                replicas.push(Arc::clone(&replica));
                self.start(replicas.len() - 1, &replica);
            }
        }
    }

    /// Starts the task that keeps replica `index` attached while it is wanted.
    fn start(self: &Arc<Self>, index: usize, replica: &Replica) {
        tracing::info!(replica = %replica.url, "room replica discovered");
        let stop = self.shutdown.child_token();
        *replica.active.lock().unwrap_or_else(|p| p.into_inner()) = Some(stop.clone());
        self.tasks.spawn(Arc::clone(self).maintain(index, stop));
    }

    /// Updates the replicas-serving gauge.
    fn report_serving(&self) {
        metrics::room_replicas_serving(self.live_replicas());
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<u64, Box<Entry>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stream to replica `index`, if it is up and serving.
    fn live(&self, index: usize) -> Option<mpsc::Sender<pb::EdgeFrame>> {
        let replica = self.replica(index);
        if !replica.serving.load(Ordering::Relaxed) {
            return None;
        }
        replica
            .link
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The next live replica, round-robin.
    fn pick(&self) -> Option<(usize, mpsc::Sender<pb::EdgeFrame>)> {
        let n = self.replica_count();
        if n == 0 {
            return None;
        }
        let start = self.next_replica.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| (start + i) % n)
            .find_map(|i| self.live(i).map(|tx| (i, tx)))
    }

    /// Keeps the stream to one replica up until `shutdown` (the edge's, or the
    /// replica's own when it is no longer resolved).
    async fn maintain(self: Arc<Self>, index: usize, shutdown: CancellationToken) {
        let mut backoff = MIN_BACKOFF;
        loop {
            match self.attach(index, &shutdown).await {
                Ok(()) => backoff = MIN_BACKOFF,
                Err(err) => {
                    tracing::warn!(replica = %self.replica(index).url, error = %err, retry_in = ?backoff, "room replica unreachable")
                }
            }
            self.lose(index);
            if shutdown.is_cancelled() {
                return;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One life of the stream to replica `index`: connect, adopt waiting
    /// sessions, relay frames until the stream ends.
    async fn attach(
        &self,
        index: usize,
        shutdown: &CancellationToken,
    ) -> Result<(), tonic::Status> {
        let replica = self.replica(index);
        let endpoint = Endpoint::from_shared(replica.url.clone())
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let mut inbound = RoomsClient::new(channel.clone())
            .max_decoding_message_size(super::MAX_FRAME_BYTES)
            .attach(ReceiverStream::new(rx))
            .await?
            .into_inner();
        *replica.link.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        tracing::info!(replica = %replica.url, "attached to room replica");
        let health = self.watch_health(index, channel, shutdown);
        tokio::pin!(health);
        self.adopt_waiting();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = &mut health => return Ok(()),
                frame = inbound.message() => match frame? {
                    Some(frame) => self.on_frame(frame),
                    None => return Ok(()),
                },
            }
        }
    }

    fn on_frame(&self, frame: pb::RoomFrame) {
        use pb::room_frame::Frame;
        let mut sessions = self.sessions();
        match frame.frame {
            Some(Frame::Opened(opened)) => {
                let result = match opened.error {
                    Some(failure) => Err(error(failure)),
                    None => Ok(()),
                };
                if let Some(entry) = sessions.get_mut(&opened.session) {
                    match entry.opening.take() {
                        Some(waiter) => {
                            let _ = waiter.send(result);
                        }
                        None if result.is_err() => {
                            // Left without a replica, it is placed again on the
                            // next replica that comes up or turns healthy.
                            tracing::warn!(peer_id = %entry.peer, "session could not move to another replica");
                            entry.replica = None;
                        }
                        None => {}
                    }
                }
            }
            Some(Frame::Reply(reply)) => {
                let waiter = sessions
                    .get_mut(&reply.session)
                    .and_then(|e| e.take_call(reply.call));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(Ok(reply.result));
                }
            }
            Some(Frame::Event(event)) => {
                let Some(entry) = sessions.get(&event.session) else {
                    return;
                };
                match event.body.map(ServerMessage::try_from) {
                    Some(Ok(msg)) => entry
                        .outbox
                        .push(Delivery::new(msg, origin_from_pb(event.origin))),
                    other => tracing::warn!(?other, "invalid event from room replica dropped"),
                }
            }
            None => {}
        }
    }

    /// Polls replica `index`'s gRPC health until its channel fails; sessions
    /// waiting for a replica are adopted as soon as it serves.
    async fn watch_health(&self, index: usize, channel: Channel, shutdown: &CancellationToken) {
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let replica = self.replica(index);
        let serving = &replica.serving;
        loop {
            let request = tonic_health::pb::HealthCheckRequest {
                service: super::SERVICE_NAME.into(),
            };
            let up = match tokio::time::timeout(HEALTH_INTERVAL * 2, client.check(request)).await {
                Ok(Ok(response)) => {
                    let status = response.into_inner().status;
                    status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                }
                Ok(Err(status)) if status.code() == tonic::Code::Unavailable => return,
                _ => false,
            };
            if serving.swap(up, Ordering::Relaxed) != up {
                self.report_serving();
                tracing::info!(replica = %replica.url, serving = up, "room replica health changed");
                if up {
                    self.adopt_waiting();
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(HEALTH_INTERVAL) => {}
            }
        }
    }

    /// Replica `index` is gone: fail its requests in flight and move its
    /// sessions to live replicas.
    fn lose(&self, index: usize) {
        let replica = self.replica(index);
        replica.serving.store(false, Ordering::Relaxed);
        let was_up = replica
            .link
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .is_some();
        self.report_serving();
        let mut moved = 0;
        {
            let mut sessions = self.sessions();
            for entry in sessions.values_mut().filter(|e| e.replica == Some(index)) {
                entry.replica = None;
                for (_, waiter) in entry.calls.drain(..) {
                    let _ = waiter.send(Err(RoomError::unavailable("room replica lost; retry")));
                }
                if let Some(waiter) = entry.opening.take() {
                    let _ = waiter.send(Err(RoomError::unavailable("room replica lost; retry")));
                }
                moved += 1;
            }
        }
        if was_up {
            tracing::warn!(replica = %replica.url, sessions = moved, "lost room replica; moving its sessions");
        }
        self.adopt_waiting();
    }

    /// Opens every session that has no replica on a live one.
    fn adopt_waiting(&self) {
        let mut sessions = self.sessions();
        let mut closed = Vec::new();
        for (id, entry) in sessions
            .iter_mut()
            .filter(|(_, e)| e.replica.is_none() && e.opening.is_none())
        {
            let Some((index, tx)) = self.pick() else {
                break;
            };
            if tx
                .try_send(open_frame(*id, entry.peer, &entry.state))
                .is_err()
            {
                continue;
            }
            entry.replica = Some(index);
            let closed_there = entry
                .closing
                .is_some_and(|how| tx.try_send(close_frame(*id, how)).is_ok());
            if closed_there {
                closed.push(*id);
            }
        }
        for id in closed {
            sessions.remove(&id);
        }
    }
}

impl Replica {
    fn is_active(&self) -> bool {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Stops wanting this replica: its task ends and its sessions move.
    fn deactivate(&self) {
        if let Some(stop) = self.active.lock().unwrap_or_else(|p| p.into_inner()).take() {
            stop.cancel();
        }
    }
}

fn open_frame(session: u64, peer: PeerId, state: &SessionState) -> pb::EdgeFrame {
    pb::EdgeFrame {
        frame: Some(pb::edge_frame::Frame::Open(pb::OpenSession {
            session,
            peer_id: peer.to_string(),
            resume: Some(state_to_pb(state)),
        })),
    }
}

fn close_frame(session: u64, how: Goodbye) -> pb::EdgeFrame {
    pb::EdgeFrame {
        frame: Some(pb::edge_frame::Frame::Close(pb::CloseSession {
            session,
            keep_calls: how == Goodbye::Moving,
        })),
    }
}

/// One session of this edge, served by some replica.
#[derive(Debug)]
pub struct RemoteSession {
    shared: Arc<Shared>,
    id: u64,
}

impl RoomService for RemoteRooms {
    type Session = RemoteSession;

    async fn connect(&self, peer: PeerId, outbox: Outbox) -> Result<RemoteSession, RoomError> {
        let started = Instant::now();
        let opened = self.open(peer, outbox).await;
        let status = opened.as_ref().map_or_else(|e| e.code().as_str(), |_| "ok");
        metrics::grpc_request(Side::Client, "open", status, started.elapsed());
        opened
    }

    async fn readiness(&self) -> Readiness {
        let live = self.live_replicas();
        Readiness {
            ready: live > 0,
            detail: format!(
                "{live} of {} room replicas serving",
                self.shared.wanted_replicas()
            ),
        }
    }
}

impl RemoteRooms {
    /// Opens a session on a live replica and waits until it is open there.
    async fn open(&self, peer: PeerId, outbox: Outbox) -> Result<RemoteSession, RoomError> {
        let shared = &self.shared;
        let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
        let (index, tx) = shared
            .pick()
            .ok_or_else(|| RoomError::unavailable("no room replica is available"))?;
        let (opened_tx, opened_rx) = oneshot::channel();
        let entry = Entry {
            peer,
            outbox,
            state: SessionState::default(),
            replica: Some(index),
            opening: Some(opened_tx),
            calls: Vec::new(),
            closing: None,
        };
        shared.sessions().insert(id, Box::new(entry));
        let session = RemoteSession {
            shared: Arc::clone(shared),
            id,
        };
        let opened = match tx
            .send(open_frame(id, peer, &SessionState::default()))
            .await
        {
            Ok(()) => match tokio::time::timeout(REQUEST_TIMEOUT, opened_rx).await {
                Ok(Ok(result)) => result,
                _ => Err(RoomError::unavailable(
                    "room replica did not open the session",
                )),
            },
            Err(_) => Err(RoomError::unavailable("room replica lost; retry")),
        };
        match opened {
            Ok(()) => Ok(session),
            Err(err) => {
                // Forget the session here and, if the replica opened it after
                // all, there too: nothing may outlive the socket that asked.
                session.close(Goodbye::Left).await;
                Err(err)
            }
        }
    }
}

impl RoomSession for RemoteSession {
    async fn handle(&mut self, msg: ClientMessage, origin: Origin) -> Result<Reply, RoomError> {
        let Some(body) = msg.to_request() else {
            return Ok(Reply::Pong);
        };
        let started = Instant::now();
        let result = self.call(body, &origin).await.and_then(reply_from_pb);
        if let Ok(reply) = &result {
            if let Some(entry) = self.shared.sessions().get_mut(&self.id) {
                entry.state.record(&msg, reply);
            }
        }
        let status = result.as_ref().map_or_else(|e| e.code().as_str(), |_| "ok");
        metrics::grpc_request(Side::Client, msg.kind(), status, started.elapsed());
        result
    }

    async fn candidates(
        &mut self,
        offer_id: OfferId,
        candidates: Vec<Candidate>,
        origin: Origin,
    ) -> Result<(), PartlyHandled> {
        if candidates.len() == 1 {
            return self.one_by_one(offer_id, candidates, origin).await;
        }
        let started = Instant::now();
        let burst = candidate_burst(&offer_id, &candidates);
        let result = match self.call(burst, &origin).await {
            Ok(reply) => burst_reply_from_pb(reply),
            Err(error) => Err(PartlyHandled { handled: 0, error }),
        };
        match result {
            // A replica from before bursts reads none (the body is unknown
            // to it: `bad_message`, nothing handled); it takes them singly,
            // and they are counted as such.
            Err(PartlyHandled { handled: 0, error }) if error.code() == ErrorCode::BadMessage => {
                tracing::debug!(session = self.id, %offer_id, "room replica takes no such candidate burst; sending them singly");
                self.one_by_one(offer_id, candidates, origin).await
            }
            result => {
                let status = result
                    .as_ref()
                    .map_or_else(|e| e.error.code().as_str(), |_| "ok");
                metrics::grpc_request(Side::Client, "candidate", status, started.elapsed());
                result
            }
        }
    }

    async fn close(self, how: Goodbye) {
        let started = Instant::now();
        self.send_close(how).await;
        metrics::grpc_request(Side::Client, "close", "ok", started.elapsed());
    }
}

impl RemoteSession {
    /// Candidates as one request each (what any replica understands).
    async fn one_by_one(
        &mut self,
        offer_id: OfferId,
        candidates: Vec<Candidate>,
        origin: Origin,
    ) -> Result<(), PartlyHandled> {
        for (handled, candidate) in candidates.into_iter().enumerate() {
            let msg = ClientMessage::Candidate {
                offer_id,
                candidate,
            };
            self.handle(msg, origin.clone())
                .await
                .map_err(|error| PartlyHandled { handled, error })?;
        }
        Ok(())
    }

    /// Sends one request to the session's replica and waits for its reply.
    async fn call(
        &mut self,
        body: pb::request::Body,
        origin: &Origin,
    ) -> Result<Option<pb::reply::Result>, RoomError> {
        let call = self.shared.next_call.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply_rx) = oneshot::channel();
        let tx = {
            let mut sessions = self.shared.sessions();
            let entry = sessions
                .get_mut(&self.id)
                .ok_or_else(|| RoomError::unavailable("session lost"))?;
            let index = entry
                .replica
                .ok_or_else(|| RoomError::unavailable("no room replica is available"))?;
            let tx = self
                .shared
                .replica(index)
                .link
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let tx = tx.ok_or_else(|| RoomError::unavailable("room replica lost; retry"))?;
            entry.calls.push((call, reply_tx));
            tx
        };
        let frame = pb::EdgeFrame {
            frame: Some(pb::edge_frame::Frame::Request(pb::Request {
                session: self.id,
                call,
                body: Some(body),
                // The edge set the trace to its request span already.
                origin: Some(origin_to_pb(origin)),
            })),
        };
        let result = match tx.send(frame).await {
            Ok(()) => match tokio::time::timeout(REQUEST_TIMEOUT, reply_rx).await {
                Ok(Ok(result)) => result,
                _ => Err(RoomError::unavailable(
                    "the room service did not answer in time",
                )),
            },
            Err(_) => Err(RoomError::unavailable("room replica lost; retry")),
        };
        if let Some(entry) = self.shared.sessions().get_mut(&self.id) {
            entry.take_call(call);
        }
        result
    }

    /// Tells the replica the client is gone (or, without one, the next replica).
    async fn send_close(self, how: Goodbye) {
        let tx = {
            let mut sessions = self.shared.sessions();
            let Some(entry) = sessions.get_mut(&self.id) else {
                return;
            };
            let link = entry.replica.and_then(|index| {
                let replica = self.shared.replica(index);
                let link = replica.link.lock();
                link.unwrap_or_else(|p| p.into_inner()).clone()
            });
            match link {
                Some(tx) => {
                    sessions.remove(&self.id);
                    tx
                }
                None => {
                    // No replica to tell now: the next one that comes up will.
                    entry.closing = Some(how);
                    entry.replica = None;
                    return;
                }
            }
        };
        let _ = tx.send(close_frame(self.id, how)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(targets: usize) -> Arc<Shared> {
        Arc::new(Shared {
            replicas: RwLock::default(),
            resolved: Mutex::new(vec![BTreeSet::new(); targets]),
            sessions: Mutex::default(),
            next_session: AtomicU64::new(1),
            next_call: AtomicU64::new(1),
            next_replica: AtomicUsize::new(0),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        })
    }

    fn urls(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|u| (*u).to_owned()).collect()
    }

    fn active(shared: &Shared) -> Vec<(String, bool)> {
        let replicas = shared.replicas.read().expect("lock");
        replicas
            .iter()
            .map(|r| (r.url.clone(), r.is_active()))
            .collect()
    }

    /// A room replica as it was before candidate bursts: it reads a burst's
    /// body as none (`bad_message`) and takes single candidates, recording them.
    struct OldReplica {
        candidates: Arc<Mutex<Vec<String>>>,
        bursts: Arc<AtomicUsize>,
    }

    #[tonic::async_trait]
    impl pb::rooms_server::Rooms for OldReplica {
        type AttachStream = ReceiverStream<Result<pb::RoomFrame, tonic::Status>>;

        async fn attach(
            &self,
            request: tonic::Request<tonic::Streaming<pb::EdgeFrame>>,
        ) -> Result<tonic::Response<Self::AttachStream>, tonic::Status> {
            use pb::edge_frame::Frame;
            use pb::request::Body;
            use pb::room_frame::Frame as Out;
            let mut inbound = request.into_inner();
            let (tx, rx) = mpsc::channel(16);
            let candidates = Arc::clone(&self.candidates);
            let bursts = Arc::clone(&self.bursts);
            tokio::spawn(async move {
                while let Ok(Some(frame)) = inbound.message().await {
                    let out = match frame.frame {
                        Some(Frame::Open(open)) => Out::Opened(pb::SessionOpened {
                            session: open.session,
                            error: None,
                        }),
                        Some(Frame::Request(req)) => {
                            let result = match req.body {
                                Some(Body::Candidate(c)) => {
                                    let c = c.candidate.map(|c| c.candidate).unwrap_or_default();
                                    candidates.lock().expect("lock").push(c);
                                    pb::reply::Result::Done(pb::Done {})
                                }
                                body => {
                                    if matches!(body, Some(Body::CandidateBurst(_))) {
                                        bursts.fetch_add(1, Ordering::Relaxed);
                                    }
                                    pb::reply::Result::Error(pb::Failure {
                                        code: pb::ErrorCode::from(ErrorCode::BadMessage).into(),
                                        message: "missing request body".into(),
                                    })
                                }
                            };
                            Out::Reply(pb::Reply {
                                session: req.session,
                                call: req.call,
                                result: Some(result),
                            })
                        }
                        _ => continue,
                    };
                    let frame = pb::RoomFrame { frame: Some(out) };
                    if tx.send(Ok(frame)).await.is_err() {
                        break;
                    }
                }
            });
            Ok(tonic::Response::new(ReceiverStream::new(rx)))
        }
    }

    #[tokio::test]
    async fn a_replica_that_takes_no_bursts_is_sent_the_candidates_singly() {
        let received = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status(
                super::super::SERVICE_NAME,
                tonic_health::ServingStatus::Serving,
            )
            .await;
        let shutdown = CancellationToken::new();
        let bursts = Arc::new(AtomicUsize::new(0));
        let old = pb::rooms_server::RoomsServer::new(OldReplica {
            candidates: Arc::clone(&received),
            bursts: Arc::clone(&bursts),
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .add_service(old)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    shutdown.clone().cancelled_owned(),
                ),
        );
        let tasks = TaskTracker::new();
        let rooms = RemoteRooms::connect(vec![format!("http://{addr}")], &tasks, shutdown.clone());
        tokio::time::timeout(Duration::from_secs(10), async {
            while rooms.live_replicas() == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the replica serves in time");

        let (outbox, _events) = Outbox::channel(16);
        let mut session = rooms.connect(PeerId::random(), outbox).await.expect("open");
        let candidates: Vec<Candidate> = (0..3)
            .map(|n| {
                let line = format!("candidate:{n} 1 udp 1 127.0.0.1 9 typ host");
                Candidate::new(line, Some("0".into()), Some(0), None).expect("valid")
            })
            .collect();
        session
            .candidates(OfferId::random(), candidates.clone(), Origin::default())
            .await
            .expect("every candidate handled");
        let expected: Vec<String> = candidates.into_iter().map(|c| c.candidate).collect();
        assert_eq!(bursts.load(Ordering::Relaxed), 1, "a burst was tried first");
        assert_eq!(
            *received.lock().expect("lock"),
            expected,
            "singly, in order"
        );

        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
    }

    #[tokio::test]
    async fn resolved_addresses_come_and_go_as_replicas() {
        // Nothing listens on these ports: the replicas are wanted but down.
        let (a, b) = ("http://127.0.0.1:7", "http://127.0.0.1:9");
        let shared = shared(2);
        shared.resolved(0, urls(&[a, b]));
        assert_eq!(shared.wanted_replicas(), 2);

        shared.resolved(0, urls(&[b]));
        assert_eq!(
            active(&shared),
            [(a.to_owned(), false), (b.to_owned(), true)],
            "the address no longer resolved is let go, the other kept"
        );

        shared.resolved(1, urls(&[a]));
        assert_eq!(
            active(&shared),
            [(a.to_owned(), true), (b.to_owned(), true)],
            "an address coming back reuses its replica"
        );

        shared.resolved(0, urls(&[]));
        assert_eq!(
            active(&shared),
            [(a.to_owned(), true), (b.to_owned(), false)],
            "another URL still resolving to an address keeps it"
        );
        assert_eq!(shared.live_replicas(), 0);
        shared.shutdown.cancel();
        shared.tasks.close();
        shared.tasks.wait().await;
    }
}
