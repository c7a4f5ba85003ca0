//! The subscriber connection's bookkeeping: how many local subscribers each
//! channel has, which channels Redis has confirmed, and the **batches** that
//! bring Redis in line with the counts.
//!
//! A `SUBSCRIBE` is a round trip to Redis, and every session subscribes its peer
//! channel and its rooms' channels, so issuing one command per change would
//! serialize every session's start and end behind the previous one's round
//! trip. Instead changes are *group-committed*: a change marks its channel
//! dirty and gets a [`Ticket`] for the next batch; whoever flushes next
//! ([`crate::bus::redis`], one flush at a time) [`take`](Subscriptions::take)s
//! every dirty channel at once and sends one `SUBSCRIBE` (and one `UNSUBSCRIBE`)
//! for all of them. While one batch is on the wire the next one fills up.
//!
//! Invariants:
//! - A channel is **live** only once Redis confirmed it and until a batch takes
//!   its last unsubscribe: a subscriber that finds it live returns at once,
//!   any other waits for a batch taken after its change.
//! - A batch is computed from the net change (count > 0 against live), so a
//!   channel subscribed and left between two batches costs no command.
//! - A subscribe whose batch failed is undone: its count is taken back and the
//!   caller gets the error.

use std::collections::{HashMap, HashSet};

/// What the subscriber connection listens to. Plain data: the bus holds it
/// behind a mutex and does the I/O.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    counts: HashMap<String, usize>,
    /// Channels whose count crossed zero since the last batch was taken.
    dirty: HashSet<String>,
    /// Channels Redis confirmed, minus those a batch is unsubscribing.
    live: HashSet<String>,
    /// Batches taken so far; a change made now goes out with batch `taken + 1`.
    taken: u64,
    /// Batches finished so far (batches finish in the order they are taken).
    finished: u64,
    /// The last failed batch and why.
    failure: Option<(u64, String)>,
}

/// The batch a change goes out with: wait until it [`is_done`](Subscriptions::is_done).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) struct Ticket(u64);

/// Changes taken together: one `SUBSCRIBE` and one `UNSUBSCRIBE` (either may be empty).
#[derive(Debug)]
pub(crate) struct Batch {
    number: u64,
    pub subscribe: Vec<String>,
    pub unsubscribe: Vec<String>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.unsubscribe.is_empty()
    }
}

impl Subscriptions {
    /// Counts a subscriber of `channel`; `None` if the channel is live already,
    /// else the batch to wait for (then ask [`Self::outcome`]).
    pub fn add(&mut self, channel: &str) -> Option<Ticket> {
        *self.counts.entry(channel.to_owned()).or_default() += 1;
        if self.live.contains(channel) {
            return None;
        }
        self.dirty.insert(channel.to_owned());
        Some(self.next_ticket())
    }

    /// Takes one subscriber of `channel` away; when it was the last, the batch
    /// that unsubscribes it.
    pub fn remove(&mut self, channel: &str) -> Option<Ticket> {
        let count = self.counts.get_mut(channel)?;
        *count -= 1;
        if *count > 0 {
            return None;
        }
        self.counts.remove(channel);
        self.dirty.insert(channel.to_owned());
        Some(self.next_ticket())
    }

    fn next_ticket(&self) -> Ticket {
        Ticket(self.taken + 1)
    }

    /// Whether the batch of `ticket` (or a later one) has finished.
    pub fn is_done(&self, ticket: Ticket) -> bool {
        self.finished >= ticket.0
    }

    /// After an [`Self::add`]'s ticket is done: `Ok` if the channel is live;
    /// otherwise the subscriber is taken back and the batch's error returned.
    pub fn outcome(&mut self, channel: &str) -> Result<(), String> {
        if self.live.contains(channel) {
            return Ok(());
        }
        if let Some(count) = self.counts.get_mut(channel) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(channel);
            }
        }
        Err(self.failure_message())
    }

    /// After a [`Self::remove`]'s ticket is done: the error if its batch (or a
    /// later one) failed.
    pub fn removal_outcome(&self, ticket: Ticket) -> Result<(), String> {
        match &self.failure {
            Some((batch, _)) if *batch >= ticket.0 => Err(self.failure_message()),
            _ => Ok(()),
        }
    }

    fn failure_message(&self) -> String {
        match &self.failure {
            Some((_, message)) => message.clone(),
            None => "redis subscriber connection is down".to_owned(),
        }
    }

    /// Every pending change as one batch. Channels it unsubscribes stop being
    /// live now (a subscriber arriving meanwhile waits for the next batch).
    pub fn take(&mut self) -> Batch {
        self.taken += 1;
        let mut batch = Batch {
            number: self.taken,
            subscribe: Vec::new(),
            unsubscribe: Vec::new(),
        };
        for channel in self.dirty.drain() {
            let wanted = self.counts.contains_key(&channel);
            let live = self.live.contains(&channel);
            if wanted && !live {
                batch.subscribe.push(channel);
            } else if !wanted && live {
                self.live.remove(&channel);
                batch.unsubscribe.push(channel);
            }
        }
        batch
    }

    /// A fresh connection: a batch subscribing every counted channel (nothing
    /// is live on it yet).
    pub fn take_all(&mut self) -> Batch {
        self.live.clear();
        self.dirty.clear();
        self.taken += 1;
        Batch {
            number: self.taken,
            subscribe: self.counts.keys().cloned().collect(),
            unsubscribe: Vec::new(),
        }
    }

    /// Records how `batch` went. Subscribed channels become live; one whose
    /// last subscriber left meanwhile is marked for the next batch to drop.
    pub fn finish(&mut self, batch: Batch, result: Result<(), String>) {
        self.finished = batch.number;
        match result {
            Ok(()) => {
                for channel in batch.subscribe {
                    if !self.counts.contains_key(&channel) {
                        self.dirty.insert(channel.clone());
                    }
                    self.live.insert(channel);
                }
            }
            Err(message) => self.failure = Some((batch.number, message)),
        }
    }

    /// The connection is gone: nothing is live until the next one subscribes.
    pub fn disconnected(&mut self) {
        self.live.clear();
    }

    /// Channels with at least one local subscriber.
    pub fn len(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut channels: Vec<String>) -> Vec<String> {
        channels.sort();
        channels
    }

    /// Takes a batch and reports it went through.
    fn flush(subs: &mut Subscriptions) -> (Vec<String>, Vec<String>) {
        let batch = subs.take();
        let changes = (
            sorted(batch.subscribe.clone()),
            sorted(batch.unsubscribe.clone()),
        );
        subs.finish(batch, Ok(()));
        changes
    }

    #[test]
    fn changes_made_together_go_out_in_one_batch() {
        let mut subs = Subscriptions::default();
        let a = subs.add("a").expect("not live yet");
        let b = subs.add("b").expect("not live yet");
        assert_eq!(a, b, "both wait for the same batch");
        assert!(!subs.is_done(a));
        assert_eq!(flush(&mut subs), (vec!["a".into(), "b".into()], vec![]));
        assert!(subs.is_done(a));
        assert_eq!(subs.outcome("a"), Ok(()));
        assert_eq!(subs.outcome("b"), Ok(()));
        assert_eq!(subs.len(), 2);
    }

    #[test]
    fn a_live_channel_needs_no_batch_until_its_last_subscriber_leaves() {
        let mut subs = Subscriptions::default();
        let _ = subs.add("a");
        flush(&mut subs);
        assert_eq!(subs.add("a"), None, "live already");
        assert_eq!(subs.remove("a"), None, "one subscriber left");
        let last = subs.remove("a").expect("the last one leaves");
        assert_eq!(flush(&mut subs), (vec![], vec!["a".into()]));
        assert!(subs.is_done(last));
        assert_eq!(subs.removal_outcome(last), Ok(()));
        assert_eq!(subs.len(), 0);
        assert_eq!(subs.remove("a"), None, "unknown channels are ignored");
    }

    #[test]
    fn a_channel_joined_and_left_between_batches_costs_nothing() {
        let mut subs = Subscriptions::default();
        let _ = subs.add("brief");
        let _ = subs.remove("brief");
        assert!(flush(&mut subs) == (vec![], vec![]));

        let _ = subs.add("kept");
        flush(&mut subs);
        let _ = subs.remove("kept");
        assert_eq!(
            subs.add("kept"),
            None,
            "still live: its unsubscribe was not taken"
        );
        assert!(flush(&mut subs) == (vec![], vec![]), "net: no change");
        assert_eq!(subs.outcome("kept"), Ok(()));
    }

    #[test]
    fn a_subscriber_during_an_unsubscribe_on_the_wire_resubscribes_after_it() {
        let mut subs = Subscriptions::default();
        let _ = subs.add("a");
        flush(&mut subs);
        let _ = subs.remove("a");
        let unsubscribing = subs.take();
        assert_eq!(unsubscribing.unsubscribe, vec!["a".to_owned()]);
        let ticket = subs.add("a").expect("not live: it is being unsubscribed");
        subs.finish(unsubscribing, Ok(()));
        assert!(!subs.is_done(ticket), "waits for the batch after");
        assert_eq!(flush(&mut subs), (vec!["a".into()], vec![]));
        assert!(subs.is_done(ticket));
        assert_eq!(subs.outcome("a"), Ok(()));
    }

    #[test]
    fn a_second_subscriber_waits_for_the_first_ones_confirmation() {
        let mut subs = Subscriptions::default();
        let _ = subs.add("a");
        let on_the_wire = subs.take();
        let second = subs.add("a").expect("not confirmed yet");
        subs.finish(on_the_wire, Ok(()));
        assert!(!subs.is_done(second));
        assert_eq!(flush(&mut subs), (vec![], vec![]), "confirmed meanwhile");
        assert_eq!(subs.outcome("a"), Ok(()));
    }

    #[test]
    fn a_channel_left_while_its_subscribe_is_on_the_wire_is_dropped_next() {
        let mut subs = Subscriptions::default();
        let _ = subs.add("a");
        let on_the_wire = subs.take();
        let ticket = subs.remove("a").expect("last subscriber");
        subs.finish(on_the_wire, Ok(()));
        assert!(!subs.is_done(ticket));
        assert_eq!(flush(&mut subs), (vec![], vec!["a".into()]));
        assert!(subs.is_done(ticket));
    }

    #[test]
    fn a_failed_batch_fails_its_subscribers_and_takes_their_counts_back() {
        let mut subs = Subscriptions::default();
        let ticket = subs.add("a").expect("new");
        let batch = subs.take();
        subs.finish(batch, Err("timed out: SUBSCRIBE".into()));
        assert!(subs.is_done(ticket));
        assert_eq!(subs.outcome("a"), Err("timed out: SUBSCRIBE".into()));
        assert_eq!(subs.len(), 0);
        // The next attempt is a new subscribe.
        let _ = subs.add("a").expect("still not live");
        assert_eq!(flush(&mut subs), (vec!["a".into()], vec![]));
    }

    #[test]
    fn a_failed_unsubscribe_is_reported_to_its_own_batch_only() {
        let mut subs = Subscriptions::default();
        let _ = subs.add("a");
        let _ = subs.add("b");
        flush(&mut subs);
        let a = subs.remove("a").expect("last");
        let batch = subs.take();
        subs.finish(batch, Err("connection reset".into()));
        assert_eq!(subs.removal_outcome(a), Err("connection reset".into()));
        let b = subs.remove("b").expect("last");
        flush(&mut subs);
        assert_eq!(subs.removal_outcome(b), Ok(()));
    }

    #[test]
    fn a_new_connection_subscribes_everything_counted() {
        let mut subs = Subscriptions::default();
        let _ = subs.add("a");
        let _ = subs.add("b");
        flush(&mut subs);
        subs.disconnected();
        let ticket = subs.add("c").expect("nothing is live while down");
        let all = subs.take_all();
        assert_eq!(sorted(all.subscribe.clone()), vec!["a", "b", "c"]);
        subs.finish(all, Ok(()));
        assert!(subs.is_done(ticket));
        assert_eq!(subs.outcome("c"), Ok(()));
        assert_eq!(subs.add("a"), None, "live again");
    }
}
