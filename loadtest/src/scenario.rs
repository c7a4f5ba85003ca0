//! The scenarios: closed loop, open loop, step-to-SLO, idle hold and churn.
//! Each runs for a bounded time and returns what it recorded; nothing here
//! prints except the progress bar.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::peer::{Failure, Peer};
use crate::report::Recorder;
use crate::session;

/// Where and how to reach the service.
#[derive(Debug, Clone)]
pub struct Target {
    pub edges: Vec<String>,
    /// Longest any single wait may take.
    pub deadline: Duration,
    next: Arc<AtomicU64>,
}

impl Target {
    pub fn new(edges: Vec<String>, deadline: Duration) -> Self {
        // Session ids (and so room names) differ from run to run.
        let base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Self {
            edges,
            deadline,
            next: Arc::new(AtomicU64::new(base)),
        }
    }

    /// One session, caller and callee on different edges when there are several.
    async fn session(&self) -> Result<session::Outcome, Failure> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.edges.len() as u64;
        let caller = &self.edges[(id % n) as usize];
        let callee = &self.edges[((id + 1) % n) as usize];
        session::run(id, caller, callee, self.deadline).await
    }

    fn edge(&self, i: u64) -> &str {
        &self.edges[(i % self.edges.len() as u64) as usize]
    }
}

type Shared = Arc<Mutex<Recorder>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Recorder> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// A progress bar showing sessions so far, ticking until dropped.
fn progress(what: &str, shared: &Shared, total: Duration) -> ProgressBar {
    let bar = ProgressBar::new(total.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {elapsed}/{duration} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(what.to_owned());
    let (ticker, shared) = (bar.clone(), Arc::clone(shared));
    let start = Instant::now();
    tokio::spawn(async move {
        while !ticker.is_finished() {
            let (ok, failed) = {
                let r = lock(&shared);
                (r.ok, r.failed())
            };
            ticker.set_position(start.elapsed().as_millis() as u64);
            ticker.set_message(format!("{ok} ok, {failed} failed"));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    bar
}

/// `concurrency` workers run sessions back to back for `duration`.
pub async fn closed_loop(
    target: &Target,
    concurrency: usize,
    duration: Duration,
) -> (Recorder, Duration) {
    let shared = Shared::default();
    let bar = progress("closed loop", &shared, duration);
    let start = Instant::now();
    let end = start + duration;
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (target, shared) = (target.clone(), Arc::clone(&shared));
        workers.spawn(async move {
            while Instant::now() < end {
                let result = target.session().await;
                lock(&shared).record(result);
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let took = start.elapsed();
    bar.finish_and_clear();
    (take(shared), took)
}

/// Starts `rate` sessions per second for `duration`, whatever their latency.
pub async fn open_loop(target: &Target, rate: f64, duration: Duration) -> (Recorder, Duration) {
    let shared = Shared::default();
    let bar = progress(&format!("open loop {rate}/s"), &shared, duration);
    let recorder = open_loop_into(target, rate, duration, &shared).await;
    bar.finish_and_clear();
    recorder
}

async fn open_loop_into(
    target: &Target,
    rate: f64,
    duration: Duration,
    shared: &Shared,
) -> (Recorder, Duration) {
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sessions = JoinSet::new();
    while start.elapsed() < duration {
        tick.tick().await;
        let (target, shared) = (target.clone(), Arc::clone(shared));
        sessions.spawn(async move {
            let result = target.session().await;
            lock(&shared).record(result);
        });
    }
    while sessions.join_next().await.is_some() {}
    let took = start.elapsed();
    (std::mem::take(&mut *lock(shared)), took)
}

/// One step of a step-to-SLO run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub rate: f64,
    pub sessions_per_second: f64,
    pub p99_ms: f64,
    pub failed: u64,
    pub held: bool,
}

/// Raises the open-loop rate by `step` every `step_duration` until p99 session
/// time exceeds `slo` (or sessions fail); returns every step.
pub async fn step_to_slo(
    target: &Target,
    start_rate: f64,
    step: f64,
    step_duration: Duration,
    slo: Duration,
    max_steps: usize,
) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut rate = start_rate;
    for _ in 0..max_steps {
        let shared = Shared::default();
        let bar = progress(&format!("step {rate}/s"), &shared, step_duration);
        let (recorder, took) = open_loop_into(target, rate, step_duration, &shared).await;
        bar.finish_and_clear();
        let p99 = recorder.session_p99();
        let held = p99 <= slo && recorder.failed() == 0 && recorder.ok > 0;
        steps.push(Step {
            rate,
            sessions_per_second: recorder.ok as f64 / took.as_secs_f64(),
            p99_ms: p99.as_secs_f64() * 1000.0,
            failed: recorder.failed(),
            held,
        });
        if !held {
            break;
        }
        rate += step;
    }
    steps
}

/// Opens `count` connections (spread over the edges), keeps them alive for
/// `hold`, then closes them. Returns the recorder (failures) and the number
/// that stayed connected for the whole hold.
pub async fn idle(
    target: &Target,
    count: usize,
    hold: Duration,
    measure: impl FnOnce(),
) -> (Recorder, usize) {
    let shared = Shared::default();
    let bar = ProgressBar::new(count as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} opening idle connections [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut peers = Vec::with_capacity(count);
    let mut opening = JoinSet::new();
    let parallel = 64;
    for i in 0..count {
        if opening.len() >= parallel {
            if let Some(Ok(result)) = opening.join_next().await {
                keep(&mut peers, &shared, result);
                bar.inc(1);
            }
        }
        let (url, deadline) = (target.edge(i as u64).to_owned(), target.deadline);
        opening.spawn(async move { Peer::connect(&url, deadline).await });
    }
    while let Some(Ok(result)) = opening.join_next().await {
        keep(&mut peers, &shared, result);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut alive = JoinSet::new();
    for peer in peers {
        alive.spawn(peer.idle());
    }
    // Connections that end during the hold are failures.
    let ended = tokio::time::timeout(hold, async {
        let mut ended = 0;
        while alive.join_next().await.is_some() {
            ended += 1;
        }
        ended
    })
    .await
    .unwrap_or(0);
    measure();
    let held = alive.len();
    if ended > 0 {
        lock(&shared).errors.insert("dropped".into(), ended as u64);
    }
    alive.shutdown().await;
    (take(shared), held)
}

fn keep(peers: &mut Vec<Peer>, shared: &Shared, result: Result<Peer, Failure>) {
    match result {
        Ok(peer) => peers.push(peer),
        Err(failure) => lock(shared).fail(&failure),
    }
}

/// Connects and disconnects `rate` times per second for `duration`.
pub async fn churn(target: &Target, rate: f64, duration: Duration) -> (Recorder, Duration) {
    let shared = Shared::default();
    let bar = progress(&format!("churn {rate}/s"), &shared, duration);
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    let mut connections = JoinSet::new();
    let mut i = 0u64;
    while start.elapsed() < duration {
        tick.tick().await;
        let (url, deadline, shared) = (
            target.edge(i).to_owned(),
            target.deadline,
            Arc::clone(&shared),
        );
        i += 1;
        connections.spawn(async move {
            match Peer::connect(&url, deadline).await {
                Ok(peer) => {
                    peer.close().await;
                    lock(&shared).ok += 1;
                }
                Err(failure) => lock(&shared).fail(&failure),
            }
        });
    }
    while connections.join_next().await.is_some() {}
    let took = start.elapsed();
    bar.finish_and_clear();
    (take(shared), took)
}

fn take(shared: Shared) -> Recorder {
    std::mem::take(&mut *lock(&shared))
}
