//! Handles to metric series, looked up once per thread and series.
//!
//! `counter!`/`gauge!`/`histogram!` build a key (allocating its labels), hash
//! it and look it up in the recorder's registry on every call: 3–5 % of a busy
//! edge's or room's CPU in `perf` profiles, since every client frame and every
//! Redis round trip records something. [`crate::metrics`] records through
//! [`increment`], [`gauge_add`], [`gauge_set`] and [`record`] instead, which
//! keep each series' handle in a per-thread table keyed by the addresses of
//! the `&'static str`s that name it: no allocation, no lock. (The same text at
//! two addresses costs a second entry for the same series, never a wrong one.)
//!
//! Handles are only kept once the process's global recorder is installed
//! ([`recorder_installed`]): one taken before is a no-op forever. (A recorder
//! set for a scope with `metrics::with_local_recorder` would be bypassed by
//! handles cached before it; nothing here uses one.)

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::LocalKey;

use ::metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

/// Label pairs of one series, as the recording functions pass them.
pub(crate) type Labels<'a> = &'a [(&'static str, &'static str)];

/// Most label pairs a cached series has (more are recorded uncached).
const MAX_LABELS: usize = 3;

static RECORDER_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Call once the global recorder is installed: from then on handles are kept.
pub(crate) fn recorder_installed() {
    RECORDER_INSTALLED.store(true, Ordering::Release);
}

/// A series by the addresses and lengths of its name and label strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SeriesKey([(usize, usize); 1 + 2 * MAX_LABELS]);

impl SeriesKey {
    fn new(name: &'static str, labels: Labels<'_>) -> Option<Self> {
        if labels.len() > MAX_LABELS {
            return None;
        }
        let at = |s: &'static str| (s.as_ptr() as usize, s.len());
        let mut key = [(0, 0); 1 + 2 * MAX_LABELS];
        key[0] = at(name);
        for (i, (label, value)) in labels.iter().enumerate() {
            key[1 + 2 * i] = at(label);
            key[2 + 2 * i] = at(value);
        }
        Some(Self(key))
    }
}

type Table<H> = RefCell<HashMap<SeriesKey, H, foldhash::fast::FixedState>>;

thread_local! {
    static COUNTERS: Table<Counter> = RefCell::default();
    static GAUGES: Table<Gauge> = RefCell::default();
    static HISTOGRAMS: Table<Histogram> = RefCell::default();
}

/// A kind of handle, with its per-thread table and how to register one.
trait Handle: Sized + 'static {
    fn table() -> &'static LocalKey<Table<Self>>;
    fn register(name: &'static str, labels: Labels<'_>) -> Self;
}

impl Handle for Counter {
    fn table() -> &'static LocalKey<Table<Self>> {
        &COUNTERS
    }
    fn register(name: &'static str, labels: Labels<'_>) -> Self {
        counter!(name, labels)
    }
}

impl Handle for Gauge {
    fn table() -> &'static LocalKey<Table<Self>> {
        &GAUGES
    }
    fn register(name: &'static str, labels: Labels<'_>) -> Self {
        gauge!(name, labels)
    }
}

impl Handle for Histogram {
    fn table() -> &'static LocalKey<Table<Self>> {
        &HISTOGRAMS
    }
    fn register(name: &'static str, labels: Labels<'_>) -> Self {
        histogram!(name, labels)
    }
}

/// Runs `apply` on the handle of `name{labels}`: the kept one once the
/// recorder is installed, else one registered afresh.
fn with_handle<H: Handle>(name: &'static str, labels: Labels<'_>, apply: impl FnOnce(&H)) {
    let mut apply = Some(apply);
    if let Some(key) = SeriesKey::new(name, labels)
        && RECORDER_INSTALLED.load(Ordering::Acquire)
    {
        // Fails only while the thread's locals are being destroyed (a guard
        // dropped at thread exit): then uncached, below.
        let _ = H::table().try_with(|table| {
            if let Some(apply) = apply.take() {
                let mut table = table.borrow_mut();
                apply(
                    table
                        .entry(key)
                        .or_insert_with(|| H::register(name, labels)),
                );
            }
        });
    }
    if let Some(apply) = apply {
        apply(&H::register(name, labels));
    }
}

/// Adds `by` to the counter `name{labels}`.
pub(crate) fn increment(name: &'static str, labels: Labels<'_>, by: u64) {
    with_handle(name, labels, |c: &Counter| c.increment(by));
}

/// Adds `by` (negative to subtract) to the gauge `name{labels}`.
pub(crate) fn gauge_add(name: &'static str, labels: Labels<'_>, by: f64) {
    with_handle(name, labels, |g: &Gauge| g.increment(by));
}

/// Sets the gauge `name{labels}` to `value`.
pub(crate) fn gauge_set(name: &'static str, labels: Labels<'_>, value: f64) {
    with_handle(name, labels, |g: &Gauge| g.set(value));
}

/// Records `value` in the histogram `name{labels}`.
pub(crate) fn record(name: &'static str, labels: Labels<'_>, value: f64) {
    with_handle(name, labels, |h: &Histogram| h.record(value));
}

#[cfg(test)]
mod tests {
    use super::*;

    static NAME: &str = "m";
    static TYPE: &str = "type";
    static OFFER: &str = "offer";

    #[test]
    fn a_series_is_its_strings_addresses() {
        let a = SeriesKey::new(NAME, &[(TYPE, OFFER)]);
        assert!(a.is_some());
        assert_eq!(a, SeriesKey::new(NAME, &[(TYPE, OFFER)]));
        let same_text_elsewhere: &'static str = String::from("offer").leak();
        assert_ne!(a, SeriesKey::new(NAME, &[(TYPE, same_text_elsewhere)]));
        assert_ne!(a, SeriesKey::new(NAME, &[(TYPE, "answer")]));
        assert_ne!(a, SeriesKey::new(NAME, &[]));
        let four = [(TYPE, OFFER); 4];
        assert_eq!(SeriesKey::new(NAME, &four), None);
    }
}
