//! Tunables of the room logic, with the defaults documented in `docs/OPERATIONS.md`.

use std::time::Duration;

/// Limits and timings of the room logic. Every field has a sane default.
#[derive(Debug, Clone)]
pub struct RoomConfig {
    /// How long an unanswered offer stays pending.
    pub offer_ttl: Duration,
    /// How long an answered call stays known (for relaying candidates and hangups).
    pub call_ttl: Duration,
    /// How often expired offers are looked for (expiry notices arrive within this).
    pub sweep_interval: Duration,
    /// Candidates buffered with one pending offer, at most.
    pub max_buffered_candidates: usize,
    /// Live offers (pending or answered) one peer may have made, at most.
    pub max_offers_per_peer: usize,
    /// Rooms one peer may be in at once, at most.
    pub max_rooms_per_peer: usize,
}

impl Default for RoomConfig {
    fn default() -> Self {
        Self {
            offer_ttl: Duration::from_secs(120),
            call_ttl: Duration::from_secs(6 * 3600),
            sweep_interval: Duration::from_secs(1),
            max_buffered_candidates: 64,
            max_offers_per_peer: 16,
            max_rooms_per_peer: 16,
        }
    }
}
