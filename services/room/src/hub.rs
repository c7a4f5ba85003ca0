//! The process-local fan-out: which peers are connected to *this* process, which
//! local peers are in which room, and delivery of bus events into their outboxes.
//!
//! The hub is the only owner of this state (one lock, never held across an
//! `.await`; delivery never blocks because [`Outbox::push`] never waits).
//! [`crate::Room`] dispatches what this process publishes as it publishes it;
//! the bus dispatches what other processes published.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use switchboard_proto::{PeerId, RoomId, ServerMessage};
use switchboard_telemetry::Origin;

use crate::event::{Event, Topic};
use crate::outbox::{Delivery, Outbox};

/// Local peers and room memberships.
#[derive(Debug, Default)]
pub struct Hub {
    state: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    peers: HashMap<PeerId, (Attachment, Outbox)>,
    rooms: HashMap<RoomId, HashSet<PeerId>>,
    next: u64,
}

/// One registration of a peer. A peer can be registered again (its session
/// resumed here after a failover) while its old session is still winding down;
/// changes made through a stale attachment are ignored, so the old session's
/// clean-up never undoes the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attachment(u64);

impl Hub {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Registers a connected peer; events for it now reach `outbox`.
    pub(crate) fn attach(&self, peer: PeerId, outbox: Outbox) -> Attachment {
        let mut state = self.write();
        state.next += 1;
        let attachment = Attachment(state.next);
        state.peers.insert(peer, (attachment, outbox));
        attachment
    }

    /// Forgets a peer and its room memberships.
    pub(crate) fn detach(
        &self,
        peer: &PeerId,
        attachment: Attachment,
        rooms: impl IntoIterator<Item = RoomId>,
    ) {
        let mut state = self.write();
        if !state.is_current(peer, attachment) {
            return;
        }
        state.peers.remove(peer);
        for room in rooms {
            state.remove_member(&room, peer);
        }
    }

    /// Adds a local member to a room.
    pub(crate) fn join(&self, room: &RoomId, peer: PeerId, attachment: Attachment) {
        let mut state = self.write();
        if state.is_current(&peer, attachment) {
            state.rooms.entry(room.clone()).or_default().insert(peer);
        }
    }

    /// Removes a local member from a room.
    pub(crate) fn leave(&self, room: &RoomId, peer: &PeerId, attachment: Attachment) {
        let mut state = self.write();
        if state.is_current(peer, attachment) {
            state.remove_member(room, peer);
        }
    }

    /// Queues a message for one local peer directly (not through the bus).
    pub(crate) fn deliver(&self, peer: &PeerId, msg: ServerMessage, origin: &Origin) {
        if let Some((_, outbox)) = self.read().peers.get(peer) {
            outbox.push(Delivery::new(msg, origin.clone()));
        }
    }

    /// Number of peers connected to this process.
    pub fn peer_count(&self) -> usize {
        self.read().peers.len()
    }

    /// Delivers one event to the local peers it concerns. Returns true when
    /// it was for one peer and that peer is here (nobody else needs it).
    pub fn dispatch(&self, topic: &Topic, event: &Event, origin: &Origin) -> bool {
        let state = self.read();
        match topic {
            Topic::Peer(peer) => match state.peers.get(peer) {
                Some((_, outbox)) => {
                    outbox.push(Delivery::new(event.to_message(), origin.clone()));
                    true
                }
                None => false,
            },
            Topic::Room(room) => {
                let Some(members) = state.rooms.get(room) else {
                    return false;
                };
                let mut message = None;
                for member in members.iter().filter(|m| event.visible_to(m)) {
                    if let Some((_, outbox)) = state.peers.get(member) {
                        let delivery = message.get_or_insert_with(|| {
                            Delivery::new(event.to_message(), origin.clone())
                        });
                        outbox.push(Arc::clone(delivery));
                    }
                }
                false
            }
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated in a way
        // that matters (every update is a single map operation), so recover.
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn is_current(&self, peer: &PeerId, attachment: Attachment) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|(current, _)| *current == attachment)
    }

    fn remove_member(&mut self, room: &RoomId, peer: &PeerId) {
        if let Some(members) = self.rooms.get_mut(room) {
            members.remove(peer);
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
    }
}
