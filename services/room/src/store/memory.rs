//! The in-memory [`Store`], for the embedded mode and a single room replica.
//!
//! One mutex over plain maps (never held across an `.await`, so every operation is
//! atomic just as its Redis counterpart is). Time comes from `tokio::time`, so tests
//! can pause the clock and jump past a TTL.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use switchboard_proto::{Candidate, OfferId, PeerId, RoomId};
use tokio::time::Instant;

use super::{AddCandidates, Answerer, Claim, OfferRecord, Store};
use crate::error::BackendError;

/// Offers and calls in process memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    offers: HashMap<OfferId, Entry>,
    /// Pending offers per room.
    rooms: HashMap<RoomId, HashSet<OfferId>>,
    /// When each offer or call expires.
    deadlines: BTreeSet<(Instant, OfferId)>,
    /// Insertion counter, to list a room's offers oldest first.
    next_seq: u64,
}

#[derive(Debug)]
struct Entry {
    record: OfferRecord,
    candidates: Vec<Candidate>,
    deadline: Instant,
    created: Instant,
    seq: u64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update below leaves the maps consistent before it can panic.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    /// The entry, unless it has expired (expired entries wait for the sweeper).
    fn live(&mut self, id: &OfferId) -> Option<&mut Entry> {
        let now = Instant::now();
        self.offers.get_mut(id).filter(|e| e.deadline > now)
    }

    fn remove(&mut self, id: &OfferId) -> Option<Entry> {
        let entry = self.offers.remove(id)?;
        self.deadlines.remove(&(entry.deadline, *id));
        self.unindex(&entry.record.room, id);
        Some(entry)
    }

    /// Drops `id` from its room's pending offers.
    fn unindex(&mut self, room: &RoomId, id: &OfferId) {
        if let Some(offers) = self.rooms.get_mut(room) {
            offers.remove(id);
            if offers.is_empty() {
                self.rooms.remove(room);
            }
        }
    }
}

impl Store for MemoryStore {
    async fn ping(&self) -> Result<(), BackendError> {
        Ok(())
    }

    async fn insert_offer(&self, offer: &OfferRecord, ttl: Duration) -> Result<(), BackendError> {
        let mut state = self.state();
        let created = Instant::now();
        let deadline = created + ttl;
        let seq = state.next_seq;
        state.next_seq += 1;
        state.deadlines.insert((deadline, offer.id));
        state
            .rooms
            .entry(offer.room.clone())
            .or_default()
            .insert(offer.id);
        let entry = Entry {
            record: offer.clone(),
            candidates: Vec::new(),
            deadline,
            created,
            seq,
        };
        state.offers.insert(offer.id, entry);
        Ok(())
    }

    async fn offer(&self, id: &OfferId) -> Result<Option<OfferRecord>, BackendError> {
        Ok(self.state().live(id).map(|e| e.record.clone().summary()))
    }

    async fn room_offers(
        &self,
        room: &RoomId,
    ) -> Result<Vec<(OfferRecord, Vec<Candidate>)>, BackendError> {
        let state = self.state();
        let now = Instant::now();
        let mut offers: Vec<&Entry> = state
            .rooms
            .get(room)
            .into_iter()
            .flatten()
            .filter_map(|id| state.offers.get(id))
            .filter(|e| e.deadline > now)
            .collect();
        offers.sort_by_key(|e| e.seq);
        Ok(offers
            .into_iter()
            .map(|e| (e.record.clone(), e.candidates.clone()))
            .collect())
    }

    async fn add_candidates(
        &self,
        id: &OfferId,
        from: &PeerId,
        candidates: &[Candidate],
        max: usize,
    ) -> Result<AddCandidates, BackendError> {
        if candidates.is_empty() {
            return Ok(AddCandidates::Buffered(0));
        }
        let mut state = self.state();
        let Some(entry) = state.live(id) else {
            return Ok(AddCandidates::NotFound);
        };
        if !entry.record.is_pending() || entry.record.caller != *from {
            return Ok(AddCandidates::NotBuffered(entry.record.parties()));
        }
        let room = max.saturating_sub(entry.candidates.len());
        let taken = &candidates[..candidates.len().min(room)];
        entry.candidates.extend_from_slice(taken);
        Ok(AddCandidates::Buffered(taken.len()))
    }

    async fn claim(
        &self,
        id: &OfferId,
        answerer: Answerer<'_>,
        call_ttl: Duration,
    ) -> Result<Claim, BackendError> {
        let mut state = self.state();
        let Some(entry) = state.live(id) else {
            return Ok(Claim::NotFound);
        };
        let record = &entry.record;
        if record.caller == answerer.peer {
            return Ok(Claim::OwnOffer);
        }
        if record.to.is_some_and(|to| to != answerer.peer) {
            return Ok(Claim::AddressedElsewhere);
        }
        if !answerer.rooms.contains(&record.room) {
            return Ok(Claim::NotInRoom);
        }
        if !record.is_pending() {
            return Ok(Claim::Taken);
        }
        entry.record.answerer = Some(answerer.peer);
        let record = entry.record.clone().summary();
        let candidates = std::mem::take(&mut entry.candidates);
        let old_deadline = entry.deadline;
        let now = Instant::now();
        let waited = now.saturating_duration_since(entry.created);
        entry.deadline = now + call_ttl;
        let new_deadline = entry.deadline;
        state.deadlines.remove(&(old_deadline, *id));
        state.deadlines.insert((new_deadline, *id));
        state.unindex(&record.room, id);
        Ok(Claim::Won {
            record,
            candidates,
            waited,
        })
    }

    async fn remove_offer(
        &self,
        id: &OfferId,
        _room: &RoomId,
    ) -> Result<Option<OfferRecord>, BackendError> {
        let mut state = self.state();
        if state.live(id).is_none() {
            return Ok(None);
        }
        Ok(state.remove(id).map(|e| e.record.summary()))
    }

    async fn pending(&self) -> Result<(usize, Option<Duration>), BackendError> {
        let state = self.state();
        let count = state.rooms.values().map(HashSet::len).sum();
        let soonest = state
            .deadlines
            .iter()
            .find(|(_, id)| state.offers.get(id).is_some_and(|e| e.record.is_pending()));
        let left = soonest.map(|(deadline, _)| deadline.saturating_duration_since(Instant::now()));
        Ok((count, left))
    }

    async fn take_expired(&self, max: usize) -> Result<Vec<OfferRecord>, BackendError> {
        let mut state = self.state();
        let now = Instant::now();
        let mut expired = Vec::new();
        while expired.len() < max {
            let Some(&(deadline, id)) = state.deadlines.first() else {
                break;
            };
            if deadline > now {
                break;
            }
            state.deadlines.pop_first();
            if let Some(entry) = state.remove(&id) {
                if entry.record.is_pending() {
                    expired.push(entry.record);
                }
            }
        }
        Ok(expired)
    }
}
