//! A stage's circuit breaker (`circuit_breaker:`): one per stage and node, shared by all
//! of the stage's partitions. Every attempt first asks it for an [`Admission`]; how the
//! attempt ended is reported back on that admission.
//!
//! - Closed: attempts pass. Transient failures and other outcomes are counted over a
//!   sliding `window`; once it holds at least `min_calls` attempts and the failed share
//!   reaches `failure_ratio`, it opens.
//! - Open: attempts wait (the records keep their key lanes and offsets, so the stage's
//!   partitions stop at their in-flight bound: paused, with nothing dead-lettered, lost,
//!   or spent of a record's retry budget). After `open_for` it goes half-open.
//! - Half-open: one probe attempt at a time passes; a success closes it (the window starts
//!   empty), a transient failure opens it again for `open_for`.
//!
//! What counts as a failure is the caller's call (failsafe's predicate): a transient error
//! or a timeout does; a permanent error means the service answered, so it does not.

use super::stats::StageStats;
use crate::topology::plan::CircuitBreakerPolicy;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The state, as the `weir_circuit_state` gauge shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl CircuitState {
    pub fn from_gauge(v: i64) -> Option<CircuitState> {
        match v {
            0 => Some(CircuitState::Closed),
            1 => Some(CircuitState::Open),
            2 => Some(CircuitState::HalfOpen),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        }
    }
}

/// Buckets the window is split into: memory stays bounded at any call rate.
const BUCKETS: u32 = 10;

pub struct CircuitBreaker {
    stage: String,
    policy: CircuitBreakerPolicy,
    bucket_width: Duration,
    inner: Mutex<Inner>,
    /// Bumped on every change a waiting attempt may care about (a transition, a freed
    /// probe slot), so waiters wake on the event rather than by polling.
    changed: watch::Sender<u64>,
    stats: Arc<StageStats>,
}

struct Inner {
    state: State,
    buckets: VecDeque<Bucket>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

struct Bucket {
    start: Instant,
    calls: u32,
    failures: u32,
}

/// Permission for one attempt. Report its end with [`Admission::finish`]; an admission
/// dropped unreported (the record was abandoned or fenced mid-attempt) frees its probe slot.
pub struct Admission<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    reported: bool,
}

impl CircuitBreaker {
    pub fn new(stage: &str, policy: CircuitBreakerPolicy, stats: Arc<StageStats>) -> CircuitBreaker {
        let bucket_width = (policy.window / BUCKETS).max(Duration::from_millis(1));
        let breaker = CircuitBreaker {
            stage: stage.to_string(),
            policy,
            bucket_width,
            inner: Mutex::new(Inner { state: State::Closed, buckets: VecDeque::new() }),
            changed: watch::channel(0).0,
            stats,
        };
        breaker.publish(CircuitState::Closed);
        breaker
    }

    pub fn state(&self) -> CircuitState {
        visible(self.lock().state)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state stays consistent under every panic point (plain field writes).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until an attempt may run: at once while closed; while open until `open_for`
    /// passed; while half-open until the probe slot is free. Cancel-safe.
    pub async fn admit(&self) -> Admission<'_> {
        loop {
            // Subscribed before looking, so a change after the look wakes this waiter.
            let mut rx = self.changed.subscribe();
            let open_until = {
                let mut inner = self.lock();
                match inner.state {
                    State::Closed => return Admission { breaker: self, probe: false, reported: false },
                    State::HalfOpen { probing: false } => {
                        inner.state = State::HalfOpen { probing: true };
                        return Admission { breaker: self, probe: true, reported: false };
                    }
                    State::HalfOpen { probing: true } => None,
                    State::Open { until } if Instant::now() >= until => {
                        inner.state = State::HalfOpen { probing: true };
                        drop(inner);
                        tracing::info!(stage = %self.stage, "circuit breaker half-open: letting a probe attempt through");
                        self.publish(CircuitState::HalfOpen);
                        return Admission { breaker: self, probe: true, reported: false };
                    }
                    State::Open { until } => Some(until),
                }
            };
            match open_until {
                Some(until) => tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = rx.changed() => {}
                },
                // The sender lives in `self`, so this only returns on a change.
                None => {
                    let _ = rx.changed().await;
                }
            }
        }
    }

    fn publish(&self, state: CircuitState) {
        self.stats.circuit_state.store(state as i64, std::sync::atomic::Ordering::Relaxed);
        if state == CircuitState::Open {
            StageStats::add(&self.stats.circuit_opens, 1);
        }
        self.stats.circuit_notify.notify_waiters();
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn open(&self, inner: &mut Inner, now: Instant, why: &str) {
        inner.state = State::Open { until: now + self.policy.open_for };
        inner.buckets.clear();
        tracing::warn!(stage = %self.stage, open_for = ?self.policy.open_for, why,
            "circuit breaker open: the stage's records wait instead of being attempted");
    }

    /// Counts one closed-state attempt; true when the window now calls for opening.
    fn count(&self, inner: &mut Inner, now: Instant, failed: bool) -> bool {
        let window = self.policy.window;
        while inner.buckets.front().is_some_and(|b| now.duration_since(b.start) >= window) {
            inner.buckets.pop_front();
        }
        match inner.buckets.back_mut() {
            Some(b) if now.duration_since(b.start) < self.bucket_width => {
                b.calls += 1;
                b.failures += u32::from(failed);
            }
            _ => inner.buckets.push_back(Bucket { start: now, calls: 1, failures: u32::from(failed) }),
        }
        let (calls, failures) = inner.buckets.iter().fold((0u64, 0u64), |(c, f), b| (c + u64::from(b.calls), f + u64::from(b.failures)));
        failed && calls >= u64::from(self.policy.min_calls) && failures as f64 >= self.policy.failure_ratio * calls as f64
    }
}

impl Admission<'_> {
    /// Whether the breaker left `Closed` since this (non-probe) admission: the attempt
    /// should go back and wait rather than call a service the breaker now shields.
    pub fn lapsed(&self) -> bool {
        !self.probe && !matches!(self.breaker.lock().state, State::Closed)
    }

    /// Reports how the attempt ended (`failed`: it counts against the service) and returns
    /// the breaker's state afterwards.
    pub fn finish(mut self, failed: bool) -> CircuitState {
        self.reported = true;
        let b = self.breaker;
        let now = Instant::now();
        let mut inner = b.lock();
        let changed = match (inner.state, self.probe) {
            (State::HalfOpen { .. }, true) if failed => {
                b.open(&mut inner, now, "the half-open probe failed");
                Some(CircuitState::Open)
            }
            (State::HalfOpen { .. }, true) => {
                inner.state = State::Closed;
                inner.buckets.clear();
                tracing::info!(stage = %b.stage, "circuit breaker closed: the probe attempt succeeded");
                Some(CircuitState::Closed)
            }
            (State::Closed, false) if b.count(&mut inner, now, failed) => {
                b.open(&mut inner, now, "the failure ratio over the window reached `failure_ratio`");
                Some(CircuitState::Open)
            }
            // An attempt admitted before the breaker left `Closed`: its outcome belongs to
            // a window that is gone.
            _ => None,
        };
        let after = visible(inner.state);
        drop(inner);
        if let Some(state) = changed {
            b.publish(state);
        }
        after
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.reported || !self.probe {
            return;
        }
        let b = self.breaker;
        let mut inner = b.lock();
        if let State::HalfOpen { probing: true } = inner.state {
            inner.state = State::HalfOpen { probing: false };
            drop(inner);
            b.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

fn visible(state: State) -> CircuitState {
    match state {
        State::Closed => CircuitState::Closed,
        State::Open { .. } => CircuitState::Open,
        State::HalfOpen { .. } => CircuitState::HalfOpen,
    }
}

#[cfg(test)]
mod tests {
    //! On the wall clock (the crate's tokio has no paused time): short windows and
    //! `open_for`s pass in real time; every wait for the breaker is bounded.
    use super::*;
    use std::sync::atomic::Ordering;

    const LONG: Duration = Duration::from_secs(60);
    const SAFETY: Duration = Duration::from_secs(10);

    fn breaker(min_calls: u32, window: Duration, open_for: Duration) -> CircuitBreaker {
        let policy = CircuitBreakerPolicy { failure_ratio: 0.5, min_calls, window, open_for };
        CircuitBreaker::new("s", policy, Arc::new(StageStats::default()))
    }

    async fn attempt(b: &CircuitBreaker, failed: bool) -> CircuitState {
        b.admit().await.finish(failed)
    }

    /// Whether `admit` passes now (polled once, without waiting).
    fn admits_now(b: &CircuitBreaker) -> bool {
        use futures::FutureExt;
        b.admit().now_or_never().is_some()
    }

    async fn admit_bounded(b: &CircuitBreaker) -> Admission<'_> {
        tokio::time::timeout(SAFETY, b.admit()).await.expect("admitted after open_for")
    }

    #[tokio::test]
    async fn opens_at_the_ratio_once_min_calls_ended_and_not_before() {
        let b = breaker(4, LONG, LONG);
        assert_eq!(attempt(&b, true).await, CircuitState::Closed);
        assert_eq!(attempt(&b, true).await, CircuitState::Closed);
        assert_eq!(attempt(&b, true).await, CircuitState::Closed, "3 of min_calls 4: still closed");
        assert_eq!(attempt(&b, true).await, CircuitState::Open);
        assert_eq!(b.stats.circuit_state.load(Ordering::Relaxed), 1, "the gauge says open");
        assert_eq!(b.stats.circuit_opens.load(Ordering::Relaxed), 1);
        assert!(!admits_now(&b), "open: attempts wait");
    }

    #[tokio::test]
    async fn stays_closed_below_the_ratio_and_permanent_errors_do_not_count() {
        let b = breaker(4, LONG, LONG);
        for failed in [false, false, true, false, false, true, false, false] {
            assert_eq!(attempt(&b, failed).await, CircuitState::Closed);
        }
        assert!(admits_now(&b));
        assert_eq!(b.stats.circuit_state.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn failures_that_slid_out_of_the_window_do_not_count() {
        let window = Duration::from_millis(200);
        let b = breaker(3, window, LONG);
        assert_eq!(attempt(&b, true).await, CircuitState::Closed);
        assert_eq!(attempt(&b, true).await, CircuitState::Closed);
        tokio::time::sleep(window + Duration::from_millis(50)).await;
        assert_eq!(attempt(&b, true).await, CircuitState::Closed, "the two older failures left the window");
        assert_eq!(attempt(&b, true).await, CircuitState::Closed);
        assert_eq!(attempt(&b, true).await, CircuitState::Open, "3 of 3 in the window");
    }

    #[tokio::test]
    async fn half_open_lets_one_probe_through_and_its_success_closes() {
        let b = breaker(1, LONG, Duration::from_millis(100));
        assert_eq!(attempt(&b, true).await, CircuitState::Open);
        let probe = admit_bounded(&b).await;
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert_eq!(b.stats.circuit_state.load(Ordering::Relaxed), 2);
        assert!(!admits_now(&b), "one probe at a time");
        assert_eq!(probe.finish(false), CircuitState::Closed);
        assert!(admits_now(&b));
        assert_eq!(b.stats.circuit_state.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_waiting_attempt_goes_through_once_the_probe_closed_it() {
        let b = Arc::new(breaker(1, LONG, Duration::from_millis(100)));
        assert_eq!(attempt(&b, true).await, CircuitState::Open);
        let probe = admit_bounded(&b).await;
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { tokio::time::timeout(SAFETY, b.admit()).await.map(|a| a.finish(false)) })
        };
        assert_eq!(probe.finish(false), CircuitState::Closed);
        assert_eq!(waiter.await.expect("task").expect("woken by the closing"), CircuitState::Closed);
    }

    #[tokio::test]
    async fn a_failed_probe_reopens_and_an_abandoned_one_frees_its_slot() {
        let b = breaker(1, LONG, Duration::from_millis(100));
        assert_eq!(attempt(&b, true).await, CircuitState::Open);
        assert_eq!(admit_bounded(&b).await.finish(true), CircuitState::Open);
        assert_eq!(b.stats.circuit_opens.load(Ordering::Relaxed), 2);
        drop(admit_bounded(&b).await);
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert!(admits_now(&b), "the abandoned probe's slot went to the next attempt");
    }

    #[tokio::test]
    async fn an_outcome_from_before_the_opening_changes_nothing() {
        let b = breaker(1, LONG, LONG);
        let early = b.admit().await;
        assert!(!early.lapsed());
        assert_eq!(attempt(&b, true).await, CircuitState::Open);
        assert!(early.lapsed(), "admitted while closed, now open: it should wait again");
        assert_eq!(early.finish(false), CircuitState::Open, "a late success does not close it");
    }
}
