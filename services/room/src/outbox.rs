//! Where a peer's events go: its [`Outbox`].
//!
//! The room (through the [`crate::Hub`]) pushes messages without ever waiting.
//! An outbox is either a local bounded queue (the peer's WebSocket task drains
//! it) or any other [`Deliver`] implementation, such as a gRPC stream to the
//! peer's edge. Either way a full queue is never grown: the local queue marks
//! its peer as overflowed (too slow, to be disconnected) and drops the message.
//!
//! Each message travels with its [`Origin`] (when the client frame behind it
//! arrived, and its trace), for the edge that finally writes it.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use switchboard_proto::ServerMessage;
use switchboard_telemetry::{Origin, metrics};
use tokio::sync::Notify;

/// Something that takes a peer's messages without waiting.
pub trait Deliver: Send + Sync + fmt::Debug + 'static {
    fn deliver(&self, delivery: Arc<Delivery>);
}

/// One message for a peer, with where it came from. Shared (`Arc`) by every
/// local member a room event goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub msg: ServerMessage,
    pub origin: Origin,
}

impl Delivery {
    pub fn new(msg: ServerMessage, origin: Origin) -> Arc<Self> {
        Arc::new(Self { msg, origin })
    }
}

/// The sending side, held by the hub for one connected peer.
#[derive(Debug, Clone)]
pub struct Outbox(Arc<dyn Deliver>);

/// The receiving side of a local queue, owned by the peer's session task.
#[derive(Debug)]
pub struct OutboxReceiver {
    queue: Arc<Queue>,
}

/// The peer's queue overflowed: it is too slow and must be disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("outbound queue full")]
pub struct Overflowed;

/// A local queue: a deque under a lock and a wake-up for its one reader. Every
/// connection has one, so it is kept small while empty (a bounded channel with
/// its first block of slots and a cancellation token cost ~1 KiB up front).
#[derive(Debug)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Notify,
    capacity: usize,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Arc<Delivery>>,
    overflowed: bool,
}

impl Queue {
    fn state(&self) -> MutexGuard<'_, QueueState> {
        // Every update is a single push, pop or flag: a panic cannot leave the
        // state half-changed, so a poisoned lock is safe to reuse.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Deliver for Queue {
    fn deliver(&self, delivery: Arc<Delivery>) {
        let mut state = self.state();
        if state.overflowed {
            drop(state);
            metrics::outbound_queue_drop();
            return;
        }
        if state.items.len() >= self.capacity {
            state.overflowed = true;
            drop(state);
            metrics::outbound_queue_drop();
            // The peer's edge logs the disconnection, with the peer's id.
            tracing::debug!("outbound queue full; disconnecting slow peer");
        } else {
            state.items.push_back(delivery);
            drop(state);
        }
        self.ready.notify_one();
    }
}

impl Outbox {
    /// A local queue holding at most `capacity` messages.
    pub fn channel(capacity: usize) -> (Outbox, OutboxReceiver) {
        let queue = Arc::new(Queue {
            state: Mutex::default(),
            ready: Notify::new(),
            capacity: capacity.max(1),
        });
        (
            Outbox(Arc::clone(&queue) as Arc<dyn Deliver>),
            OutboxReceiver { queue },
        )
    }

    /// An outbox over any other delivery.
    pub fn new(deliver: impl Deliver) -> Self {
        Self(Arc::new(deliver))
    }

    /// Hands `msg` over; never waits.
    pub fn push(&self, delivery: Arc<Delivery>) {
        self.0.deliver(delivery)
    }
}

impl OutboxReceiver {
    /// Whether a message (or an overflow) is waiting: [`Self::recv`] would
    /// return at once.
    pub fn is_ready(&self) -> bool {
        let state = self.queue.state();
        state.overflowed || !state.items.is_empty()
    }

    /// The next queued message, or [`Overflowed`] as soon as a push found the
    /// queue full. Cancel-safe: a message is only taken by the poll that
    /// returns it.
    pub async fn recv(&mut self) -> Result<Arc<Delivery>, Overflowed> {
        loop {
            {
                let mut state = self.queue.state();
                if state.overflowed {
                    return Err(Overflowed);
                }
                if let Some(delivery) = state.items.pop_front() {
                    return Ok(delivery);
                }
            }
            // A push since the check left a permit: this returns at once.
            self.queue.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pong() -> Arc<Delivery> {
        Delivery::new(ServerMessage::Pong { req: None }, Origin::default())
    }

    #[tokio::test]
    async fn a_full_queue_flags_overflow_instead_of_growing() {
        let (outbox, mut rx) = Outbox::channel(2);
        assert!(!rx.is_ready());
        outbox.push(pong());
        assert!(rx.is_ready());
        outbox.push(pong());
        assert!(!rx.queue.state().overflowed);
        outbox.push(pong());
        assert!(rx.queue.state().overflowed);
        assert_eq!(
            rx.recv().await,
            Err(Overflowed),
            "overflow is reported first"
        );
        assert_eq!(
            rx.queue.state().items.len(),
            2,
            "the third message was dropped"
        );
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_for_a_push_in_order() {
        let (outbox, mut rx) = Outbox::channel(8);
        let reader = tokio::spawn(async move {
            let first = rx.recv().await;
            let second = rx.recv().await;
            (first, second)
        });
        tokio::task::yield_now().await;
        let first = Delivery::new(
            ServerMessage::Pong {
                req: switchboard_proto::Req::new(1),
            },
            Origin::default(),
        );
        outbox.push(Arc::clone(&first));
        outbox.push(pong());
        let (got_first, got_second) = reader.await.expect("reader");
        assert_eq!(got_first, Ok(first));
        assert_eq!(got_second, Ok(pong()));
    }
}
