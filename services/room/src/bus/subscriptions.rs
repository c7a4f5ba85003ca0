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
//!   any other waits for the batch that carries its change, and that batch's
//!   own result (not whatever happens later) answers it.
//! - A batch is computed from the net change (count > 0 against live), so a
//!   channel subscribed and left between two batches costs no command.
//! - A subscriber whose `SUBSCRIBE` failed, or who stopped waiting, is taken
//!   back out of the count. The two commands of a batch succeed or fail
//!   independently.
//! - A command that failed may still have run (a timeout), so its channels are
//!   **in doubt**, never live: the next batch sends whichever command the count
//!   asks for (both are idempotent in Redis), so a failed `UNSUBSCRIBE` is
//!   retried and a subscriber arriving meanwhile subscribes again.
//! - Each live channel carries the batch that confirmed it (its
//!   [`Confirmation`]); a channel that stops being live and comes back gets a
//!   later one. Two equal readings mean Redis had it subscribed all along in
//!   between, which is what lets the bus count its own connection out of
//!   `PUBSUB NUMSUB` (see [`crate::bus::redis`]).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// What the subscriber connection listens to. Plain data: the bus holds it
/// behind a mutex and does the I/O.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    counts: HashMap<String, usize>,
    /// Channels whose count crossed zero since the last batch was taken.
    dirty: HashSet<String>,
    /// Channels Redis confirmed, minus those a batch is unsubscribing.
    live: HashMap<String, Live>,
    /// Channels whose last command failed: Redis may or may not have them.
    in_doubt: HashSet<String>,
    /// Subscribers waiting for the next batch, with where to send its result.
    waiting: Vec<Waiter>,
    /// Batches taken so far; a change made now goes out with batch `taken + 1`.
    taken: u64,
    /// Batches finished so far (batches finish in the order they are taken).
    finished: u64,
}

type Waiter = (String, oneshot::Sender<Result<(), String>>);

/// Which batch confirmed a live channel. A channel that stops being live and
/// becomes live again gets a later one, so two equal readings mean it stayed
/// subscribed in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Confirmation(u64);

#[cfg(test)]
impl Confirmation {
    pub fn new(batch: u64) -> Self {
        Confirmation(batch)
    }
}

/// What is known of a live channel.
#[derive(Debug, Clone, Copy)]
struct Live {
    confirmation: Confirmation,
    /// When another process was last seen subscribed to it.
    others_seen: Option<Instant>,
}

/// The batch a change goes out with: wait until it [`is_done`](Subscriptions::is_done).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) struct Ticket(u64);

/// A subscriber's wait: flush through `ticket`, then `result` holds the answer.
#[derive(Debug)]
pub(crate) struct Pending {
    pub ticket: Ticket,
    pub result: oneshot::Receiver<Result<(), String>>,
}

/// Changes taken together: one `SUBSCRIBE` and one `UNSUBSCRIBE` (either may be empty).
#[derive(Debug)]
pub(crate) struct Batch {
    number: u64,
    pub subscribe: Vec<String>,
    pub unsubscribe: Vec<String>,
    waiters: Vec<Waiter>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.unsubscribe.is_empty()
    }
}

impl Subscriptions {
    /// Counts a subscriber of `channel`; `None` if the channel is live already,
    /// else what to wait for.
    pub fn add(&mut self, channel: &str) -> Option<Pending> {
        *self.counts.entry(channel.to_owned()).or_default() += 1;
        if self.live.contains_key(channel) {
            return None;
        }
        self.dirty.insert(channel.to_owned());
        let (tx, rx) = oneshot::channel();
        self.waiting.push((channel.to_owned(), tx));
        Some(Pending {
            ticket: self.next_ticket(),
            result: rx,
        })
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

    /// Every pending change as one batch. Channels it unsubscribes stop being
    /// live now (a subscriber arriving meanwhile waits for the next batch).
    pub fn take(&mut self) -> Batch {
        self.taken += 1;
        let mut batch = Batch {
            number: self.taken,
            subscribe: Vec::new(),
            unsubscribe: Vec::new(),
            waiters: std::mem::take(&mut self.waiting),
        };
        for channel in self.dirty.drain() {
            let wanted = self.counts.contains_key(&channel);
            let live = self.live.contains_key(&channel);
            let in_doubt = self.in_doubt.remove(&channel);
            if wanted && !live {
                batch.subscribe.push(channel);
            } else if !wanted && (live || in_doubt) {
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
        self.in_doubt.clear();
        self.dirty.clear();
        self.taken += 1;
        Batch {
            number: self.taken,
            subscribe: self.counts.keys().cloned().collect(),
            unsubscribe: Vec::new(),
            waiters: std::mem::take(&mut self.waiting),
        }
    }

    /// Records how `batch`'s two commands went and answers its subscribers.
    /// Subscribed channels become live (one whose last subscriber left
    /// meanwhile is marked for the next batch to drop); the channels of a
    /// command that failed are in doubt and marked for the next batch.
    pub fn finish(
        &mut self,
        batch: Batch,
        subscribed: Result<(), String>,
        unsubscribed: Result<(), String>,
    ) {
        self.finished = batch.number;
        for channel in &batch.subscribe {
            if subscribed.is_ok() {
                let live = Live {
                    confirmation: Confirmation(batch.number),
                    others_seen: None,
                };
                self.live.insert(channel.clone(), live);
                if self.counts.contains_key(channel) {
                    continue;
                }
            } else {
                self.in_doubt.insert(channel.clone());
            }
            self.dirty.insert(channel.clone());
        }
        if unsubscribed.is_err() {
            for channel in batch.unsubscribe {
                self.in_doubt.insert(channel.clone());
                self.dirty.insert(channel);
            }
        }
        for (channel, tx) in batch.waiters {
            // A waiter whose channel was not in this batch's SUBSCRIBE found
            // it live when the batch was taken.
            let result = match &subscribed {
                Err(message) if batch.subscribe.contains(&channel) => Err(message.clone()),
                _ => Ok(()),
            };
            let failed = result.is_err();
            let delivered = tx.send(result).is_ok();
            if failed || !delivered {
                self.release(&channel);
            }
        }
    }

    /// Takes back the count of a subscriber that failed or stopped waiting.
    pub fn release(&mut self, channel: &str) {
        // If it was the last, the channel is dirty: the next batch drops it.
        let _ = self.remove(channel);
    }

    /// The connection is gone: nothing is live until the next one subscribes.
    pub fn disconnected(&mut self) {
        self.live.clear();
        self.in_doubt.clear();
    }

    /// Whether Redis has confirmed `channel` (and no batch has taken it away
    /// since), and by which batch.
    pub fn confirmation(&self, channel: &str) -> Option<Confirmation> {
        self.live.get(channel).map(|live| live.confirmation)
    }

    /// Notes that another process was subscribed to live `channel` at `now`.
    pub fn saw_others(&mut self, channel: &str, now: Instant) {
        if let Some(live) = self.live.get_mut(channel) {
            live.others_seen = Some(now);
        }
    }

    /// Whether another process was seen subscribed to live `channel` at most
    /// `within` before `now`. Forgotten when the channel stops being live.
    pub fn others_seen(&self, channel: &str, now: Instant, within: Duration) -> bool {
        let seen = self.live.get(channel).and_then(|live| live.others_seen);
        seen.is_some_and(|at| now.saturating_duration_since(at) <= within)
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
        subs.finish(batch, Ok(()), Ok(()));
        changes
    }

    /// `channel` subscribed and confirmed, then left by its one subscriber
    /// (whose wait is returned, kept so its count is not taken back): its
    /// `UNSUBSCRIBE` is pending, not yet taken.
    fn confirmed_then_left(channel: &str) -> (Subscriptions, Pending) {
        let mut subs = Subscriptions::default();
        let pending = subs.add(channel).expect("new");
        flush(&mut subs);
        let _ = subs.remove(channel);
        (subs, pending)
    }

    fn answer(pending: &mut Pending) -> Result<(), String> {
        pending.result.try_recv().expect("answered")
    }

    fn unanswered(pending: &mut Pending) -> bool {
        matches!(
            pending.result.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        )
    }

    #[test]
    fn changes_made_together_go_out_in_one_batch() {
        let mut subs = Subscriptions::default();
        let mut a = subs.add("a").expect("not live yet");
        let mut b = subs.add("b").expect("not live yet");
        assert_eq!(a.ticket, b.ticket, "both wait for the same batch");
        assert!(!subs.is_done(a.ticket));
        assert!(unanswered(&mut a));
        assert_eq!(flush(&mut subs), (vec!["a".into(), "b".into()], vec![]));
        assert!(subs.is_done(a.ticket));
        assert_eq!(answer(&mut a), Ok(()));
        assert_eq!(answer(&mut b), Ok(()));
        assert_eq!(subs.len(), 2);
    }

    #[test]
    fn a_live_channel_needs_no_batch_until_its_last_subscriber_leaves() {
        let mut subs = Subscriptions::default();
        let _a = subs.add("a");
        flush(&mut subs);
        assert!(subs.add("a").is_none(), "live already");
        assert_eq!(subs.remove("a"), None, "one subscriber left");
        let last = subs.remove("a").expect("the last one leaves");
        assert_eq!(flush(&mut subs), (vec![], vec!["a".into()]));
        assert!(subs.is_done(last));
        assert_eq!(subs.len(), 0);
        assert_eq!(subs.remove("a"), None, "unknown channels are ignored");
    }

    #[test]
    fn a_channel_joined_and_left_between_batches_costs_nothing() {
        let mut subs = Subscriptions::default();
        let _brief = subs.add("brief");
        let _ = subs.remove("brief");
        assert!(flush(&mut subs) == (vec![], vec![]));

        let _kept = subs.add("kept");
        flush(&mut subs);
        let _ = subs.remove("kept");
        assert!(
            subs.add("kept").is_none(),
            "still live: its unsubscribe was not taken"
        );
        assert!(flush(&mut subs) == (vec![], vec![]), "net: no change");
    }

    #[test]
    fn a_subscriber_during_an_unsubscribe_on_the_wire_resubscribes_after_it() {
        let (mut subs, _a) = confirmed_then_left("a");
        let unsubscribing = subs.take();
        assert_eq!(unsubscribing.unsubscribe, vec!["a".to_owned()]);
        let mut back = subs.add("a").expect("not live: it is being unsubscribed");
        subs.finish(unsubscribing, Ok(()), Ok(()));
        assert!(!subs.is_done(back.ticket), "waits for the batch after");
        assert!(unanswered(&mut back));
        assert_eq!(flush(&mut subs), (vec!["a".into()], vec![]));
        assert_eq!(answer(&mut back), Ok(()));
    }

    #[test]
    fn a_second_subscriber_waits_for_the_first_ones_confirmation() {
        let mut subs = Subscriptions::default();
        let mut first = subs.add("a").expect("new");
        let on_the_wire = subs.take();
        let mut second = subs.add("a").expect("not confirmed yet");
        subs.finish(on_the_wire, Ok(()), Ok(()));
        assert_eq!(answer(&mut first), Ok(()));
        assert!(unanswered(&mut second), "its own batch answers it");
        assert_eq!(flush(&mut subs), (vec![], vec![]), "confirmed meanwhile");
        assert_eq!(answer(&mut second), Ok(()));
        assert_eq!(subs.len(), 1);
    }

    #[test]
    fn a_channel_left_while_its_subscribe_is_on_the_wire_is_dropped_next() {
        let mut subs = Subscriptions::default();
        let _a = subs.add("a");
        let on_the_wire = subs.take();
        let ticket = subs.remove("a").expect("last subscriber");
        subs.finish(on_the_wire, Ok(()), Ok(()));
        assert!(!subs.is_done(ticket));
        assert_eq!(flush(&mut subs), (vec![], vec!["a".into()]));
        assert!(subs.is_done(ticket));
    }

    #[test]
    fn a_failed_subscribe_fails_its_own_subscribers_and_takes_their_counts_back() {
        let mut subs = Subscriptions::default();
        let mut first = subs.add("a").expect("new");
        let on_the_wire = subs.take();
        let mut second = subs.add("a").expect("not confirmed yet");
        let mut other = subs.add("b").expect("new");
        subs.finish(on_the_wire, Ok(()), Ok(()));
        let batch = subs.take();
        assert_eq!(batch.subscribe, vec!["b".to_owned()], "a is live by now");
        subs.finish(batch, Err("timed out: SUBSCRIBE".into()), Ok(()));
        assert_eq!(answer(&mut first), Ok(()));
        assert_eq!(
            answer(&mut second),
            Ok(()),
            "a was not in the failed command"
        );
        assert_eq!(answer(&mut other), Err("timed out: SUBSCRIBE".into()));
        assert_eq!(subs.len(), 1, "only the failed subscriber is taken back");
        // The next attempt is a new subscribe.
        let _again = subs.add("b").expect("still not live");
        assert_eq!(flush(&mut subs), (vec!["b".into()], vec![]));
    }

    #[test]
    fn a_later_failure_does_not_touch_an_earlier_answer() {
        let mut subs = Subscriptions::default();
        let mut a = subs.add("a").expect("new");
        flush(&mut subs);
        let _b = subs.add("b").expect("new");
        let failing = subs.take();
        subs.finish(failing, Err("connection reset".into()), Ok(()));
        subs.disconnected();
        assert_eq!(answer(&mut a), Ok(()), "its own batch succeeded");
        assert_eq!(
            subs.len(),
            1,
            "a is still counted (resubscribed on reconnect)"
        );
        assert_eq!(sorted(subs.take_all().subscribe), vec!["a"]);
    }

    #[test]
    fn a_failed_unsubscribe_is_retried_with_the_next_batch() {
        let (mut subs, _a) = confirmed_then_left("a");
        let mut b = subs.add("b").expect("new");
        let batch = subs.take();
        subs.finish(batch, Ok(()), Err("timed out: UNSUBSCRIBE".into()));
        assert_eq!(answer(&mut b), Ok(()), "the SUBSCRIBE went through");
        assert_eq!(flush(&mut subs), (vec![], vec!["a".into()]), "retried");
    }

    #[test]
    fn a_failed_subscribe_with_nobody_left_is_unsubscribed_in_case_it_ran() {
        let mut subs = Subscriptions::default();
        let mut a = subs.add("a").expect("new");
        let batch = subs.take();
        subs.finish(batch, Err("timed out: SUBSCRIBE".into()), Ok(()));
        assert!(answer(&mut a).is_err());
        assert_eq!(subs.confirmation("a"), None, "in doubt is not live");
        assert_eq!(flush(&mut subs), (vec![], vec!["a".into()]));
        assert_eq!(flush(&mut subs), (vec![], vec![]), "once");
    }

    #[test]
    fn a_subscriber_after_a_failed_unsubscribe_subscribes_again() {
        let (mut subs, _a) = confirmed_then_left("a");
        let batch = subs.take();
        subs.finish(batch, Ok(()), Err("timed out: UNSUBSCRIBE".into()));
        // The UNSUBSCRIBE may have run: the channel is not live.
        assert_eq!(subs.confirmation("a"), None);
        let mut again = subs.add("a").expect("in doubt, so not live");
        assert_eq!(flush(&mut subs), (vec!["a".into()], vec![]));
        assert_eq!(answer(&mut again), Ok(()));
        assert!(subs.confirmation("a").is_some());
    }

    #[test]
    fn a_confirmation_holds_exactly_while_the_channel_stays_subscribed() {
        let mut subs = Subscriptions::default();
        assert_eq!(subs.confirmation("a"), None, "never subscribed");
        let _a = subs.add("a");
        assert_eq!(subs.confirmation("a"), None, "not confirmed yet");
        flush(&mut subs);
        let first = subs.confirmation("a").expect("confirmed");
        // More subscribers and other channels' batches change nothing.
        assert!(subs.add("a").is_none());
        let _b = subs.add("b");
        flush(&mut subs);
        let _ = subs.remove("a");
        flush(&mut subs);
        assert_eq!(subs.confirmation("a"), Some(first));

        // Its UNSUBSCRIBE taken: not live from then on, whatever follows.
        let _ = subs.remove("a");
        let unsubscribing = subs.take();
        assert_eq!(subs.confirmation("a"), None, "unsubscribe on the wire");
        let _back = subs.add("a").expect("not live");
        subs.finish(unsubscribing, Ok(()), Ok(()));
        flush(&mut subs);
        let second = subs.confirmation("a").expect("subscribed again");
        assert_ne!(second, first, "a later confirmation");

        subs.disconnected();
        assert_eq!(subs.confirmation("a"), None, "no connection");
        let all = subs.take_all();
        subs.finish(all, Ok(()), Ok(()));
        let third = subs.confirmation("a").expect("resubscribed");
        assert!(third != first && third != second);
    }

    #[test]
    fn others_are_remembered_for_a_while_and_only_on_a_live_channel() {
        let mut subs = Subscriptions::default();
        let now = Instant::now();
        let hint = Duration::from_secs(1);
        subs.saw_others("a", now);
        assert!(!subs.others_seen("a", now, hint), "not live: not kept");
        let _a = subs.add("a");
        flush(&mut subs);
        assert!(!subs.others_seen("a", now, hint));
        subs.saw_others("a", now);
        assert!(subs.others_seen("a", now + hint, hint));
        assert!(!subs.others_seen("a", now + hint * 2, hint), "stale");
        let _ = subs.remove("a");
        flush(&mut subs);
        let _a = subs.add("a");
        flush(&mut subs);
        assert!(!subs.others_seen("a", now, hint), "forgotten when it left");
    }

    #[test]
    fn a_subscriber_that_stopped_waiting_is_taken_back() {
        let mut subs = Subscriptions::default();
        let gone = subs.add("a").expect("new");
        drop(gone);
        assert_eq!(flush(&mut subs), (vec!["a".into()], vec![]));
        assert_eq!(subs.len(), 0, "its count is released");
        assert_eq!(
            flush(&mut subs),
            (vec![], vec!["a".into()]),
            "and the channel dropped"
        );
    }

    #[test]
    fn a_new_connection_subscribes_everything_counted() {
        let mut subs = Subscriptions::default();
        let _a = subs.add("a");
        let _b = subs.add("b");
        flush(&mut subs);
        subs.disconnected();
        let mut c = subs.add("c").expect("nothing is live while down");
        let all = subs.take_all();
        assert_eq!(sorted(all.subscribe.clone()), vec!["a", "b", "c"]);
        subs.finish(all, Ok(()), Ok(()));
        assert!(subs.is_done(c.ticket));
        assert_eq!(answer(&mut c), Ok(()));
        assert!(subs.add("a").is_none(), "live again");
    }
}
