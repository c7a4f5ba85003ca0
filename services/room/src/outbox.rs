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

use std::fmt;
use std::sync::Arc;

use switchboard_proto::ServerMessage;
use switchboard_telemetry::{Origin, metrics};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

/// Something that takes a peer's messages without waiting.
pub trait Deliver: Send + Sync + fmt::Debug + 'static {
    fn deliver(&self, delivery: Arc<Delivery>);
}

/// One message for a peer, with where it came from. Shared (`Arc`) by every
/// local member a room event goes to, and one pointer wide in each queue
/// (a queue allocates its first block of slots up front, per connection).
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
    rx: mpsc::Receiver<Arc<Delivery>>,
    overflow: CancellationToken,
}

/// The peer's queue overflowed: it is too slow and must be disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("outbound queue full")]
pub struct Overflowed;

#[derive(Debug)]
struct Queue {
    tx: mpsc::Sender<Arc<Delivery>>,
    overflow: CancellationToken,
}

impl Deliver for Queue {
    fn deliver(&self, delivery: Arc<Delivery>) {
        match self.tx.try_send(delivery) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => {
                metrics::outbound_queue_drop();
                if !self.overflow.is_cancelled() {
                    tracing::warn!("outbound queue full; disconnecting slow peer");
                }
                self.overflow.cancel();
            }
        }
    }
}

impl Outbox {
    /// A local queue holding at most `capacity` messages.
    pub fn channel(capacity: usize) -> (Outbox, OutboxReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let overflow = CancellationToken::new();
        let queue = Queue {
            tx,
            overflow: overflow.clone(),
        };
        (Outbox(Arc::new(queue)), OutboxReceiver { rx, overflow })
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
    /// The next queued message, or [`Overflowed`] as soon as a push found the
    /// queue full. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Arc<Delivery>, Overflowed> {
        tokio::select! {
            biased;
            _ = self.overflow.cancelled() => Err(Overflowed),
            msg = self.rx.recv() => match msg {
                Some(msg) => Ok(msg),
                // Every sender is gone (the peer was detached): nothing more will come.
                None => std::future::pending().await,
            },
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
        outbox.push(pong());
        outbox.push(pong());
        assert!(!rx.overflow.is_cancelled());
        outbox.push(pong());
        assert!(rx.overflow.is_cancelled());
        assert_eq!(
            rx.recv().await,
            Err(Overflowed),
            "overflow is reported first"
        );
        assert_eq!(rx.rx.len(), 2, "the third message was dropped");
    }
}
