//! What happens to one record inside a stage: payload check, rate limit, the kind's
//! `handle` with retries, then its outputs — or the dead-letter topic.
//!
//! Protections, in order around each attempt: the stage's circuit breaker (records wait
//! while it is open), its rate limit (shared by all its partitions in this node), its
//! concurrency, and its per-attempt `timeout` innermost, so each attempt gets its own
//! deadline.
//!
//! Failure classes: a `Transient` error is retried with the stage's backoff (or the
//! service's `Retry-After`, when longer, capped at `retry.max`) while the record's key
//! lane and offset wait; after the last attempt the record is dead-lettered as
//! `transient`. Failures while the breaker is open do not spend attempts. A `Permanent` error, a payload that does not match its topic, or an
//! invalid output dead-letters at once. A record the stage panicked on is retried through
//! stage restarts and dead-lettered as `panic` once it reached the attempt limit, so one
//! poison record cannot keep a stage restarting forever.

use super::circuit_breaker::{CircuitBreaker, CircuitState};
use super::producer::{Acks, OutputProducer, SendError};
use super::stats::StageStats;
use crate::envelope::Record;
use crate::stages::payload::PayloadChecks;
use crate::stages::{Stage, StageContext, StageError};
use crate::topology::plan::{RetryPolicy, StagePlan};
use dashmap::DashMap;
use futures::FutureExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// Tells long waits (backoff, backpressure) that the node is shutting down.
#[derive(Clone)]
pub struct Stopping(watch::Receiver<bool>);

impl Stopping {
    pub fn pair() -> (watch::Sender<bool>, Stopping) {
        let (tx, rx) = watch::channel(false);
        (tx, Stopping(rx))
    }

    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once stopping began.
    pub async fn stopped(&self) {
        let mut rx = self.0.clone();
        // An error means the sender is gone: the node is going away, so stop too.
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Sleeps for `d`; returns true if stopping began first.
    pub async fn sleep_or_stop(&self, d: Duration) -> bool {
        let mut rx = self.0.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => self.is_stopped(),
            _ = rx.wait_for(|s| *s) => true,
        }
    }
}

/// Closed when a partition's records may no longer produce: its revocation reached the
/// drain deadline (or its consumer stopped). A record checks it right before its outputs
/// are queued, so nothing of a given-up partition is queued after the member let go of it;
/// cancellable kinds are also interrupted while in `handle`. It also counts the records
/// past that check whose outputs are not accepted yet: those are what the partition still
/// waits for after closing it (records still in `handle` can no longer produce).
#[derive(Clone)]
pub struct PartitionFence(Arc<FenceState>);

struct FenceState {
    closed: watch::Sender<bool>,
    sending: std::sync::atomic::AtomicUsize,
}

impl Default for PartitionFence {
    fn default() -> Self {
        PartitionFence(Arc::new(FenceState { closed: watch::channel(false).0, sending: Default::default() }))
    }
}

impl PartitionFence {
    pub fn close(&self) {
        self.0.closed.send_replace(true);
    }

    pub fn is_closed(&self) -> bool {
        *self.0.closed.borrow()
    }

    /// Resolves once closed.
    pub async fn closed(&self) {
        let mut rx = self.0.closed.subscribe();
        // The sender lives in `self`, so `wait_for` only returns once the fence closed.
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// Records past the check whose outputs are queued or being queued, not yet accepted.
    pub fn sending(&self) -> usize {
        self.0.sending.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// `None` once closed; otherwise the record may queue its outputs, and counts as
    /// sending until the guard is dropped (when its outputs were accepted or refused).
    fn begin_send(&self) -> Option<SendGuard> {
        if self.is_closed() {
            return None;
        }
        self.0.sending.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Some(SendGuard(self.0.clone()))
    }
}

struct SendGuard(Arc<FenceState>);

impl Drop for SendGuard {
    fn drop(&mut self) {
        self.0.sending.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

pub enum Processed {
    /// The outputs (or the dead letter) are queued in order; `Acks` resolve on acceptance.
    Enqueued(Acks),
    /// Shutdown interrupted the record; it is not complete and will be delivered again.
    Abandoned,
    /// Its partition was revoked before its outputs were queued: nothing was queued, and
    /// the partition's next owner handles it.
    Fenced,
    /// The stage panicked on the record; the stage must be restarted.
    StageFailed(String),
}

/// Records a stage panicked on, by (topic, partition, offset): how often and the last
/// message. Outlives stage restarts.
#[derive(Debug, Default)]
pub struct PoisonLog(DashMap<(Arc<str>, i32, i64), (u32, String)>);

impl PoisonLog {
    pub fn note(&self, record: &(Arc<str>, i32, i64), message: &str) -> u32 {
        let mut e = self.0.entry(record.clone()).or_insert((0, String::new()));
        e.0 += 1;
        e.1 = message.to_string();
        e.0
    }

    fn get(&self, r: &Record) -> Option<(u32, String)> {
        self.0.get(&(r.topic.clone(), r.partition, r.offset)).map(|e| e.clone())
    }

    fn forget(&self, r: &Record) {
        self.0.remove(&(r.topic.clone(), r.partition, r.offset));
    }
}

pub struct RecordProcessor {
    plan: Arc<StagePlan>,
    stage: Arc<dyn Stage>,
    out: Arc<OutputProducer>,
    checks: PayloadChecks,
    limiter: Option<DefaultDirectRateLimiter>,
    concurrency: Semaphore,
    /// One per stage and node: every partition's records pass the same breaker.
    breaker: Option<CircuitBreaker>,
    poison: Arc<PoisonLog>,
    stats: Arc<StageStats>,
    stopping: Stopping,
}

impl RecordProcessor {
    pub fn new(
        plan: Arc<StagePlan>,
        stage: Arc<dyn Stage>,
        out: Arc<OutputProducer>,
        checks: PayloadChecks,
        poison: Arc<PoisonLog>,
        stats: Arc<StageStats>,
        stopping: Stopping,
    ) -> Self {
        let limiter = plan
            .rate_limit
            .map(|r| RateLimiter::direct(Quota::per_second(r.per_second).allow_burst(r.burst)));
        let concurrency = Semaphore::new(plan.concurrency);
        let breaker = plan.circuit_breaker.map(|policy| CircuitBreaker::new(&plan.name, policy, stats.clone()));
        RecordProcessor { plan, stage, out, checks, limiter, concurrency, breaker, poison, stats, stopping }
    }

    pub fn poison(&self) -> &PoisonLog {
        &self.poison
    }

    pub async fn process(&self, record: Record, fence: &PartitionFence) -> Processed {
        StageStats::add(&self.stats.consumed, 1);
        StageStats::add_by_topic(&self.stats.consumed_by_topic, &record.topic, 1);
        // One boxed future either way: the record path's state machine is large, and
        // keeping two inline copies (traced and not) made every spawn move twice as much.
        let span = if crate::telemetry::trace::enabled() {
            crate::telemetry::spans::record_span(&self.plan, &record)
        } else {
            None
        };
        let work = Box::pin(self.process_record(record, fence));
        match span {
            Some(span) => {
                let processed = tracing::Instrument::instrument(work, span.clone()).await;
                crate::telemetry::spans::record_outcome(&span, &processed);
                processed
            }
            None => work.await,
        }
    }

    async fn process_record(&self, record: Record, fence: &PartitionFence) -> Processed {
        let started = std::time::Instant::now();
        if let Some((count, message)) = self.poison.get(&record) {
            if count >= self.plan.retry.attempts {
                self.poison.forget(&record);
                let reason = format!("stage panicked {count} times on this record: {message}");
                return self.dead_letter(&record, "panic", &reason, count, fence).await;
            }
        }
        if self.checks.declares(&record.topic) {
            if let Err(reason) = self.checks.check_bytes(&record.topic, &record.payload) {
                return self.dead_letter(&record, "permanent", &reason, 0, fence).await;
            }
        }
        let mut attempt = 1;
        loop {
            // Waits at the breaker before every attempt: during an outage records queue
            // here, keeping their attempts (see `circuit_breaker`).
            let admission = match &self.breaker {
                Some(breaker) => tokio::select! {
                    a = breaker.admit() => Some(a),
                    _ = self.stopping.stopped() => return Processed::Abandoned,
                    _ = fence.closed() => return Processed::Fenced,
                },
                None => None,
            };
            if let Some(limiter) = &self.limiter {
                let waiting = std::time::Instant::now();
                tokio::select! {
                    _ = limiter.until_ready() => {}
                    _ = self.stopping.stopped() => return Processed::Abandoned,
                    _ = fence.closed() => return Processed::Fenced,
                }
                StageStats::add(&self.stats.rate_limit_wait_ns, waiting.elapsed().as_nanos() as u64);
            }
            let result = {
                let Ok(_permit) = self.concurrency.acquire().await else {
                    return Processed::Abandoned;
                };
                // Checked again right before the call (no await in between): an attempt
                // admitted while closed that waited for its turn must not call a service
                // the breaker opened on meanwhile.
                if admission.as_ref().is_some_and(|a| a.lapsed()) {
                    continue;
                }
                let cx = StageContext { stage: &self.plan.name, attempt };
                let call = self.attempt(&record, &cx);
                if self.stage.cancel_on_shutdown() {
                    tokio::select! {
                        r = call => r,
                        _ = self.stopping.stopped() => return Processed::Abandoned,
                        _ = fence.closed() => return Processed::Fenced,
                    }
                } else {
                    call.await
                }
            };
            match &result {
                Err(StageError::Permanent(_)) => StageStats::add(&self.stats.failures.permanent, 1),
                Err(_) => StageStats::add(&self.stats.failures.transient, 1),
                Ok(_) => {}
            }
            let failed = result.as_ref().err().is_some_and(StageError::is_transient);
            // A failure while the breaker is (or just went) open is the outage's, not the
            // record's: the attempt is not spent and the record waits at the breaker.
            let outage = admission.map(|a| a.finish(failed)).is_some_and(|s| s != CircuitState::Closed);
            match result {
                Ok(outputs) => return self.emit(&record, outputs, attempt, started, fence).await,
                Err(e) if e.is_transient() && outage => {
                    StageStats::add(&self.stats.retried, 1);
                    tracing::debug!(stage = %self.plan.name, topic = %record.topic, partition = record.partition,
                        offset = record.offset, attempt, reason = %e, "transient failure while the circuit breaker is open; the record waits");
                }
                Err(e) if e.is_transient() && attempt < self.plan.retry.attempts => {
                    StageStats::add(&self.stats.retried, 1);
                    let wait = retry_wait(&self.plan.retry, attempt, e.retry_after());
                    tracing::warn!(stage = %self.plan.name, topic = %record.topic, partition = record.partition,
                        offset = record.offset, attempt, ?wait, reason = %e, "transient failure; retrying");
                    tokio::select! {
                        stopped = self.stopping.sleep_or_stop(wait) => if stopped { return Processed::Abandoned },
                        _ = fence.closed() => return Processed::Fenced,
                    }
                    attempt += 1;
                }
                Err(e) if e.is_transient() => {
                    let reason = match self.plan.retry.backoff {
                        crate::topology::spec::Backoff::None => format!("no retry (`retry.backoff: none`): {e}"),
                        _ => format!("gave up after {attempt} attempts: {e}"),
                    };
                    return self.dead_letter(&record, "transient", &reason, attempt, fence).await;
                }
                Err(e) => {
                    return self.dead_letter(&record, "permanent", &e.to_string(), attempt, fence).await;
                }
            }
        }
    }

    /// One attempt of the kind's `handle`, bounded by the stage's `timeout`: on expiry the
    /// call's future is dropped (cancelling what it was waiting on) and the attempt is a
    /// transient failure.
    async fn attempt(&self, record: &Record, cx: &StageContext<'_>) -> Result<Vec<crate::stages::Output>, StageError> {
        let Some(limit) = self.plan.timeout else {
            return self.stage.handle(record, cx).await;
        };
        match tokio::time::timeout(limit, self.stage.handle(record, cx)).await {
            Ok(r) => r,
            Err(_) => {
                StageStats::add(&self.stats.timeouts, 1);
                Err(StageError::Transient(format!(
                    "attempt {} timed out after {} (the stage's `timeout`)",
                    cx.attempt,
                    humantime::format_duration(limit)
                )))
            }
        }
    }

    async fn emit(
        &self,
        record: &Record,
        outputs: Vec<crate::stages::Output>,
        attempt: u32,
        started: std::time::Instant,
        fence: &PartitionFence,
    ) -> Processed {
        let business = outputs.iter().filter(|o| o.business.is_some()).count() as u64;
        let mut records = match self.out.prepare(record, outputs, attempt) {
            Ok(r) => r,
            Err(reason) => {
                return self.dead_letter(record, "permanent", &format!("invalid output: {reason}"), attempt, fence).await
            }
        };
        if crate::telemetry::trace::enabled() {
            // The outputs continue the trace under this stage's span, not its parent's.
            let span = tracing::Span::current();
            if !span.is_none() {
                for r in &mut records {
                    crate::telemetry::trace::inject(&span, &mut r.headers);
                }
            }
        }
        // Checked right before queueing, with no await in between: once the partition's
        // revocation passed its drain deadline, none of its outputs is queued any more.
        let Some(sending) = fence.begin_send() else {
            return Processed::Fenced;
        };
        let n = records.len() as u64;
        for r in &records {
            StageStats::add_by_topic(&self.stats.produced_by_topic, &r.topic, 1);
        }
        match self.out.send_all(records, &self.stopping).await {
            Ok(acks) => {
                crate::telemetry::spans::note_outcome(if business > 0 { "business" } else { "produced" }, attempt, None);
                StageStats::add(&self.stats.produced, n);
                StageStats::add(&self.stats.business, business);
                let stats = self.stats.clone();
                let origin_ms = crate::envelope::origin_ms(&record.headers);
                Processed::Enqueued(
                    acks.map(move |accepted| {
                        drop(sending);
                        if accepted.is_ok() {
                            stats.processing.observe(started.elapsed().as_secs_f64());
                            if let Some(origin) = origin_ms {
                                let ms = crate::envelope::now_ms().saturating_sub(origin).max(0);
                                stats.end_to_end.observe(ms as f64 / 1000.0);
                            }
                        }
                        accepted
                    })
                    .boxed(),
                )
            }
            Err(SendError::Stopped) => Processed::Abandoned,
            Err(SendError::TransactionGone(e)) => {
                tracing::debug!(stage = %self.plan.name, topic = %record.topic, partition = record.partition,
                    offset = record.offset, error = %e, "outputs refused by the stage's transaction; the record is processed again");
                Processed::Abandoned
            }
            Err(SendError::Refused(e)) => {
                drop(sending);
                self.dead_letter(record, "permanent", &e.to_string(), attempt, fence).await
            }
        }
    }

    async fn dead_letter(
        &self,
        record: &Record,
        class: &str,
        reason: &str,
        attempts: u32,
        fence: &PartitionFence,
    ) -> Processed {
        let Some(sending) = fence.begin_send() else {
            return Processed::Fenced;
        };
        let Some(dead) = self.out.dead_letter(record, class, reason, attempts) else {
            // No DLQ configured: say loudly what is skipped, so it can be found and replayed.
            StageStats::add(&self.stats.dropped, 1);
            tracing::error!(stage = %self.plan.name, topic = %record.topic, partition = record.partition,
                offset = record.offset, class, %reason, payload = %String::from_utf8_lossy(&record.payload),
                "record failed and the stage has no `dlq`; skipping it");
            return Processed::Enqueued(futures::future::ready(Ok(())).boxed());
        };
        tracing::warn!(stage = %self.plan.name, topic = %record.topic, partition = record.partition,
            offset = record.offset, class, %reason, "dead-lettering record");
        crate::telemetry::spans::note_outcome("dead_lettered", attempts, Some(class));
        let dlq_topic = dead.topic.clone();
        match self.out.send_all(vec![dead], &self.stopping).await {
            Ok(acks) => {
                StageStats::add(&self.stats.dead_lettered, 1);
                StageStats::add_by_topic(&self.stats.dead_lettered_by_topic, &dlq_topic, 1);
                Processed::Enqueued(
                    acks.map(move |accepted| {
                        drop(sending);
                        accepted
                    })
                    .boxed(),
                )
            }
            Err(SendError::Stopped | SendError::TransactionGone(_)) => Processed::Abandoned,
            // The DLQ itself refused the record: fail the partition rather than lose it.
            Err(SendError::Refused(e)) => Processed::Enqueued(futures::future::ready(Err(e)).boxed()),
        }
    }
}

/// The wait before the attempt after `attempt`: the stage's backoff, or longer when the
/// service asked for it (`Retry-After`), never beyond `retry.max`.
fn retry_wait(retry: &RetryPolicy, attempt: u32, hint: Option<Duration>) -> Duration {
    retry.delay(attempt).max(hint.unwrap_or_default()).min(retry.max)
}

#[cfg(test)]
mod tests {
    use super::{retry_wait, PartitionFence};
    use crate::topology::plan::RetryPolicy;
    use crate::topology::spec::Backoff;
    use std::time::Duration;

    #[test]
    fn the_retry_wait_is_the_longer_of_backoff_and_retry_after_capped_at_max() {
        let retry = RetryPolicy {
            attempts: 5,
            backoff: Backoff::Exponential,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        };
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(retry_wait(&retry, 3, None)), 400, "no hint: the backoff");
        assert_eq!(ms(retry_wait(&retry, 1, Some(Duration::from_secs(1)))), 1000, "a longer hint wins");
        assert_eq!(ms(retry_wait(&retry, 3, Some(Duration::from_millis(10)))), 400, "a shorter hint does not shorten");
        assert_eq!(ms(retry_wait(&retry, 1, Some(Duration::from_secs(120)))), 5000, "capped at retry.max");
    }

    #[tokio::test]
    async fn a_closed_fence_admits_no_send_and_counts_the_ones_in_flight() {
        let fence = PartitionFence::default();
        let first = fence.begin_send().expect("open: may send");
        let second = fence.begin_send().expect("open: may send");
        assert_eq!(fence.sending(), 2);
        fence.close();
        assert!(fence.begin_send().is_none(), "closed: nothing more is queued");
        assert_eq!(fence.sending(), 2, "the two already sending are still waited for");
        drop(first);
        drop(second);
        assert_eq!(fence.sending(), 0);
        // `closed` resolves at once for a closed fence (bounded, so a bug fails instead of hanging).
        tokio::time::timeout(std::time::Duration::from_secs(5), fence.closed()).await.expect("closed resolves");
    }
}
