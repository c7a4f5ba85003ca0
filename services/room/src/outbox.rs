//! A peer's bounded outbound queue.
//!
//! The room (through the [`crate::Hub`]) pushes messages without ever waiting: a
//! peer whose queue is full is too slow to keep up, so instead of buffering without
//! limit the outbox flags it as overflowed and the session that owns the receiving
//! end disconnects it. Messages are shared (`Arc`) because one event often goes to
//! several peers.

use std::sync::Arc;

use switchboard_proto::ServerMessage;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

/// The sending side, held by the hub for one connected peer.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Arc<ServerMessage>>,
    overflow: CancellationToken,
}

/// The receiving side, owned by the peer's session task.
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: mpsc::Receiver<Arc<ServerMessage>>,
    overflow: CancellationToken,
}

impl Outbox {
    /// A queue holding at most `capacity` messages.
    pub fn channel(capacity: usize) -> (Outbox, OutboxReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let overflow = CancellationToken::new();
        (
            Outbox {
                tx,
                overflow: overflow.clone(),
            },
            OutboxReceiver { rx, overflow },
        )
    }

    /// Queues `msg`; when the queue is full the peer is marked overflowed and the
    /// message dropped (the peer is about to be disconnected). Never waits.
    pub fn push(&self, msg: Arc<ServerMessage>) {
        match self.tx.try_send(msg) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => {
                if !self.overflow.is_cancelled() {
                    tracing::warn!("outbound queue full; disconnecting slow peer");
                }
                self.overflow.cancel();
            }
        }
    }
}

/// The peer's queue overflowed: it is too slow and must be disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("outbound queue full")]
pub struct Overflowed;

impl OutboxReceiver {
    /// The next queued message, or [`Overflowed`] as soon as a push found the
    /// queue full. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Arc<ServerMessage>, Overflowed> {
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

    fn pong() -> Arc<ServerMessage> {
        Arc::new(ServerMessage::Pong { req: None })
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
