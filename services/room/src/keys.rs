//! The Redis key schema, built by one function ([`Keys::key`]) so that every
//! key and channel name the service uses is visible in one place:
//!
//! | key | type | holds | expires |
//! |---|---|---|---|
//! | `{p}offer:{offer_id}` | hash | `room`, `caller`, `to`, `sdp`, `deadline` (ms), `answerer` once answered | offer TTL + grace; call TTL once answered |
//! | `{p}offer:{offer_id}:candidates` | list | the caller's buffered candidates (JSON) | with the offer; deleted by the claim |
//! | `{p}room:{room}:offers` | set | ids of the room's pending offers (an index: stale ids are pruned on read) | offer TTL + grace after the last insert |
//! | `{p}expiries` | sorted set | pending offer ids scored by deadline (ms) | never (entries are taken by the sweeper) |
//! | channel `{p}peer:{peer_id}` | pub/sub | events for one peer | |
//! | channel `{p}room:{room}` | pub/sub | events for a room's members | |
//! | channel `{p}probe:{replica}` | pub/sub | a replica's readiness probe | |
//!
//! `{p}` is the configurable prefix (default `switchboard:`). The service needs a
//! single Redis (or a primary with replicas), not Redis Cluster: its scripts
//! touch several keys at once.

use switchboard_proto::{OfferId, PeerId, RoomId};

use crate::event::Topic;

/// Everything that has a name in Redis.
#[derive(Debug, Clone, Copy)]
pub enum Key<'a> {
    Offer(&'a OfferId),
    Candidates(&'a OfferId),
    RoomOffers(&'a RoomId),
    Expiries,
    PeerChannel(&'a PeerId),
    RoomChannel(&'a RoomId),
    ProbeChannel(&'a str),
}

/// Builds names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The one function that names things in Redis.
    pub fn key(&self, key: Key<'_>) -> String {
        // Joined from their parts with one allocation of the exact length
        // (`format!` grows its buffer as it goes: a room replica names a few
        // keys per request).
        let p = self.prefix.as_str();
        match key {
            Key::Offer(id) => [p, "offer:", id.as_str()].concat(),
            Key::Candidates(id) => [p, "offer:", id.as_str(), ":candidates"].concat(),
            Key::RoomOffers(room) => [p, "room:", room.as_str(), ":offers"].concat(),
            Key::Expiries => [p, "expiries"].concat(),
            Key::PeerChannel(peer) => [p, "peer:", peer.as_str()].concat(),
            Key::RoomChannel(room) => [p, "room:", room.as_str()].concat(),
            Key::ProbeChannel(replica) => [p, "probe:", replica].concat(),
        }
    }

    /// The pub/sub channel of a bus topic.
    pub fn channel(&self, topic: &Topic) -> String {
        match topic {
            Topic::Peer(peer) => self.key(Key::PeerChannel(peer)),
            Topic::Room(room) => self.key(Key::RoomChannel(room)),
        }
    }

    /// The bus topic of a channel name, if it is one of ours.
    pub fn topic(&self, channel: &str) -> Option<Topic> {
        let rest = channel.strip_prefix(&self.prefix)?;
        if let Some(peer) = rest.strip_prefix("peer:") {
            return peer.parse().ok().map(Topic::Peer);
        }
        rest.strip_prefix("room:")?.parse().ok().map(Topic::Room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_carries_the_prefix_and_channels_map_back_to_topics() {
        let keys = Keys::new("sb:");
        let (offer, peer, room) = (
            OfferId::random(),
            PeerId::random(),
            "lobby".parse::<RoomId>().expect("room"),
        );
        assert_eq!(keys.key(Key::Offer(&offer)), format!("sb:offer:{offer}"));
        assert_eq!(
            keys.key(Key::Candidates(&offer)),
            format!("sb:offer:{offer}:candidates")
        );
        assert_eq!(keys.key(Key::RoomOffers(&room)), "sb:room:lobby:offers");
        assert_eq!(keys.key(Key::Expiries), "sb:expiries");
        for topic in [Topic::Peer(peer), Topic::Room(room)] {
            assert_eq!(keys.topic(&keys.channel(&topic)), Some(topic));
        }
        assert_eq!(keys.topic("other:room:lobby"), None);
        assert_eq!(keys.topic(&keys.key(Key::ProbeChannel("r1"))), None);
    }
}
