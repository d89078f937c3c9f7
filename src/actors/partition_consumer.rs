//! The partition consumer actor: one per assigned (topic, partition) of a stage. This is
//! where records enter a stage and where their offsets are committed.
//!
//! - **Pull**: reads the partition in order, holding one in-flight permit per record until
//!   the record's outputs are accepted; with `max_in_flight` permits out, it stops reading
//!   (backpressure: a slow stage or transport slows the read, memory stays bounded).
//! - **Order**: records go through [`KeyLanes`]: one record per key at a time, different
//!   keys concurrently. A key's next record starts once the previous one's outputs are
//!   queued in order (not yet accepted), which keeps per-key output order.
//! - **Commit**: only the highest offset below which every record's outputs were all
//!   accepted ([`OffsetTracker`]), every `commit.every` records or `commit.interval`, and
//!   on drain. A refused commit (the partition moved to another member) stops the actor.
//! - **Drain** (revocation, shutdown, restart): stop reading, let delivered records
//!   finish until `drain_timeout`, commit what is complete, stop. What did not finish is
//!   read again by the next owner from the committed offset: nothing is lost.
//!   At the deadline the partition's [`PartitionFence`] closes: a record still running
//!   never queues its outputs (a cancellable kind is interrupted), so nothing of this
//!   partition is produced after the revocation is acknowledged — the new owner's outputs
//!   of a key are never interleaved with ours. Records whose outputs were already queued
//!   get [`FENCE_GRACE`] more to be accepted; the wait ends then whatever is left.
//! - **Quiesce** (exactly-once checkpoints): hold records read from now on back (not
//!   begun), let every begun record finish — also those waiting in a key lane, so the
//!   recorded offset covers every record whose outputs are in the transaction — record
//!   the offset, reply; `Resume` lets the held records go. (Holding lane records instead
//!   would commit outputs of later records of other keys past the recorded offset: their
//!   next owner, or a restart, would produce them again.)

use super::key_lanes::KeyLanes;
use super::offsets::OffsetTracker;
use super::processing::PartitionFence;
use super::stage_actor::{Process, RecordOutcome, StageActor};
use super::stats::StageStats;
use crate::envelope::{Record, TopicPartition};
use crate::topology::plan::CommitPolicy;
use crate::transport::{Committer, PartitionStream, TransportError};
use actix::prelude::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// After the drain deadline closed the fence: how long records whose outputs are already
/// queued get to be accepted before the partition stops anyway. The whole drain is thus
/// bounded by `drain_timeout + FENCE_GRACE`.
pub const FENCE_GRACE: Duration = Duration::from_secs(2);

/// Stop reading, finish, commit, stop. Replies when the actor has stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain(pub oneshot::Sender<()>);

/// Hold records read from now on back, let every begun record finish, record the offset, then reply.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Quiesce(pub oneshot::Sender<()>);

/// Let the records held back by [`Quiesce`] go.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resume;

/// Sent to the owner when the actor stopped; `failure` says why if it was not asked to.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PartitionExited {
    pub tp: TopicPartition,
    pub failure: Option<String>,
}

pub struct PartitionSettings {
    pub stage: String,
    pub max_in_flight: usize,
    pub commit: CommitPolicy,
    pub drain_timeout: Duration,
}

pub struct PartitionConsumer {
    tp: TopicPartition,
    settings: Arc<PartitionSettings>,
    stage: Addr<StageActor>,
    committer: Arc<dyn Committer>,
    stream: Option<Box<dyn PartitionStream>>,
    pull: Option<SpawnHandle>,
    in_flight: Arc<Semaphore>,
    tracker: OffsetTracker,
    lanes: KeyLanes<(Record, OwnedSemaphorePermit)>,
    /// Records sent to the stage whose outcome (acceptance or abandonment) is pending.
    running: usize,
    since_commit: u32,
    commit_running: bool,
    draining: Vec<oneshot::Sender<()>>,
    /// Exactly-once checkpoint in progress: records wait in `held`.
    quiescing: Vec<oneshot::Sender<()>>,
    quiesced: bool,
    held: std::collections::VecDeque<(Record, OwnedSemaphorePermit)>,
    finishing: bool,
    failure: Option<String>,
    owner: Recipient<PartitionExited>,
    stats: Arc<StageStats>,
    gauges: Arc<super::stats::PartitionGauges>,
    /// Closed at the drain deadline and when the actor stops.
    fence: PartitionFence,
    /// The drain deadline passed and the fence is closed: only records whose outputs are
    /// queued are waited for.
    fenced: bool,
}

impl PartitionConsumer {
    pub fn new(
        stream: Box<dyn PartitionStream>,
        committer: Arc<dyn Committer>,
        stage: Addr<StageActor>,
        settings: Arc<PartitionSettings>,
        owner: Recipient<PartitionExited>,
        stats: Arc<StageStats>,
        fence: PartitionFence,
    ) -> Self {
        let tp = stream.topic_partition().clone();
        PartitionConsumer {
            gauges: stats.partition(&tp),
            tp,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            settings,
            stage,
            committer,
            stream: Some(stream),
            pull: None,
            tracker: OffsetTracker::new(),
            lanes: KeyLanes::default(),
            running: 0,
            since_commit: 0,
            commit_running: false,
            draining: Vec::new(),
            quiescing: Vec::new(),
            quiesced: false,
            held: std::collections::VecDeque::new(),
            finishing: false,
            failure: None,
            owner,
            stats,
            fence,
            fenced: false,
        }
    }

    fn pull_next(&mut self, ctx: &mut Context<Self>) {
        if !self.draining.is_empty() || self.failure.is_some() || self.quiesced || self.pull.is_some() {
            return;
        }
        let Some(mut stream) = self.stream.take() else { return };
        let permits = self.in_flight.clone();
        let read = async move {
            let permit = permits.acquire_owned().await;
            let record = stream.next().await;
            (stream, permit, record)
        };
        self.pull = Some(ctx.spawn(read.into_actor(self).map(|(stream, permit, record), act, ctx| {
            act.pull = None;
            act.stream = Some(stream);
            match (permit, record) {
                (Ok(permit), Ok(record)) => {
                    act.on_record(record, permit, ctx);
                    act.pull_next(ctx); // not while quiesced: `Resume` restarts it
                }
                (_, Err(e)) => {
                    StageStats::add(&act.stats.failures.consume_errors, 1);
                    act.fail(ctx, format!("reading {} failed: {e}", act.tp));
                }
                (Err(_), Ok(_)) => act.fail(ctx, "in-flight limiter closed".into()),
            }
        })));
    }

    fn on_record(&mut self, record: Record, permit: OwnedSemaphorePermit, ctx: &mut Context<Self>) {
        if self.quiesced {
            // Not begun: the checkpoint's offset stays below it, and so do its outputs.
            self.held.push_back((record, permit));
            return;
        }
        self.tracker.begin(record.offset);
        self.gauges.in_flight.fetch_add(1, Ordering::Relaxed);
        if let Some((record, permit)) = self.lanes.admit(record.key.clone(), (record, permit)) {
            self.dispatch(record, permit, ctx);
        }
    }

    fn dispatch(&mut self, record: Record, permit: OwnedSemaphorePermit, ctx: &mut Context<Self>) {
        if !self.stage.connected() {
            self.fail(ctx, format!("stage `{}` stopped", self.settings.stage));
            return;
        }
        self.running += 1;
        self.stage.do_send(Process { record, permit, reply_to: ctx.address().recipient(), fence: self.fence.clone() });
    }

    fn on_accepted(&mut self, offset: i64, accepted: Result<(), TransportError>, ctx: &mut Context<Self>) {
        self.running -= 1;
        if let Err(e) = accepted {
            StageStats::add(&self.stats.failures.delivery_errors, 1);
            self.fail(ctx, format!("an output of {}@{offset} was not accepted: {e}", self.tp));
            return;
        }
        self.tracker.complete(offset);
        self.gauges.in_flight.fetch_sub(1, Ordering::Relaxed);
        StageStats::add(&self.stats.completed, 1);
        self.since_commit += 1;
        if self.since_commit >= self.settings.commit.every {
            self.commit(ctx);
        }
        self.check_drained(ctx);
    }

    fn commit(&mut self, ctx: &mut Context<Self>) {
        if self.commit_running {
            return;
        }
        let Some(offset) = self.tracker.committable() else {
            return;
        };
        self.commit_running = true;
        self.since_commit = 0;
        let (committer, tp) = (self.committer.clone(), self.tp.clone());
        let commit = async move { committer.commit(&tp, offset).await };
        ctx.spawn(commit.into_actor(self).map(move |result, act, ctx| {
            act.commit_running = false;
            match result {
                Ok(()) => {
                    act.tracker.mark_committed(offset);
                    act.gauges.committed.store(offset, Ordering::Relaxed);
                    act.stats.set_committed(&act.tp.to_string(), offset);
                }
                Err(TransportError::NotOwner(_)) => {
                    tracing::warn!(partition = %act.tp, offset, "commit refused: partition reassigned; stopping");
                    act.finishing = true;
                    ctx.stop();
                    return;
                }
                Err(e) => {
                    StageStats::add(&act.stats.failures.commit_errors, 1);
                    tracing::warn!(partition = %act.tp, offset, error = %e, "commit failed");
                    if act.finishing {
                        // The final commit failed: stop anyway; the next owner re-reads
                        // from the last committed offset (duplicates, never losses).
                        ctx.stop();
                        return;
                    }
                }
            }
            if act.finishing {
                act.finish(ctx);
            }
            act.check_quiesced(ctx);
        }));
    }

    /// Replies to a pending `Quiesce` once nothing runs and the offset is recorded.
    fn check_quiesced(&mut self, ctx: &mut Context<Self>) {
        if self.quiescing.is_empty() || self.running > 0 || self.commit_running {
            return;
        }
        if self.tracker.committable().is_some() {
            self.commit(ctx); // calls back here when recorded
            return;
        }
        tracing::trace!(partition = %self.tp, committed = ?self.tracker.committed(), "quiesced");
        for reply in self.quiescing.drain(..) {
            let _ = reply.send(());
        }
    }

    fn check_drained(&mut self, ctx: &mut Context<Self>) {
        self.check_quiesced(ctx);
        let stopping = !self.draining.is_empty() || self.failure.is_some();
        // Once fenced, records still in `handle` can no longer produce: not waited for.
        let settled = self.running == 0 || (self.fenced && self.fence.sending() == 0);
        if stopping && settled && !self.finishing {
            self.finish(ctx);
        }
    }

    /// Final commit of what is complete, then stop.
    fn finish(&mut self, ctx: &mut Context<Self>) {
        self.finishing = true;
        if self.commit_running {
            return; // the running commit calls finish again when it returns
        }
        match self.tracker.committable() {
            Some(_) => self.commit(ctx),
            None => ctx.stop(),
        }
    }

    fn stop_reading(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.pull.take() {
            ctx.cancel_future(h);
        }
        self.stream = None;
    }

    /// Stops reading, lets the records already running finish (bounded by the drain
    /// timeout) so their offsets can be committed, then stops and reports `cause`.
    fn fail(&mut self, ctx: &mut Context<Self>, cause: String) {
        if self.failure.is_none() {
            tracing::error!(stage = %self.settings.stage, partition = %self.tp, %cause, "partition consumer failed");
            self.failure = Some(cause);
            self.stop_reading(ctx);
            self.lanes.clear();
            self.finish_by_deadline(ctx);
        }
        // Called again for each running record that reports the same failure.
        self.check_drained(ctx);
    }

    fn finish_by_deadline(&mut self, ctx: &mut Context<Self>) {
        ctx.run_later(self.settings.drain_timeout, |act, ctx| {
            if act.finishing {
                return;
            }
            // From here on no record of this partition queues an output.
            act.fence.close();
            act.fenced = true;
            act.lanes.clear();
            tracing::warn!(partition = %act.tp, incomplete = act.tracker.incomplete(), running = act.running,
                sending = act.fence.sending(), "drain timed out; fenced the running records");
            act.check_drained(ctx);
            if act.finishing {
                return;
            }
            ctx.run_later(FENCE_GRACE, |act, ctx| {
                if !act.finishing {
                    tracing::warn!(partition = %act.tp, sending = act.fence.sending(),
                        "outputs still not accepted after the fence grace; committing what is complete");
                    act.finish(ctx);
                }
            });
        });
    }
}

impl Actor for PartitionConsumer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::debug!(stage = %self.settings.stage, partition = %self.tp, "partition consumer started");
        ctx.run_interval(self.settings.commit.interval, |act, ctx| act.commit(ctx));
        self.pull_next(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // Whatever stopped it, records still running must not produce for this partition.
        self.fence.close();
        self.stats.release_partition(&self.tp, &self.gauges);
        tracing::debug!(stage = %self.settings.stage, partition = %self.tp,
            committed = ?self.tracker.committed(), "partition consumer stopped");
        for reply in self.draining.drain(..) {
            let _ = reply.send(());
        }
        self.owner.do_send(PartitionExited { tp: self.tp.clone(), failure: self.failure.take() });
    }
}

impl Handler<RecordOutcome> for PartitionConsumer {
    type Result = ();

    fn handle(&mut self, outcome: RecordOutcome, ctx: &mut Self::Context) {
        match outcome {
            RecordOutcome::Queued { key, .. } => {
                // The outputs hold their place in order: the key's next record may start.
                if self.failure.is_none() {
                    if let Some((next, permit)) = self.lanes.release(&key) {
                        self.dispatch(next, permit, ctx);
                    }
                }
            }
            RecordOutcome::Accepted { offset, result } => self.on_accepted(offset, result, ctx),
            // Shutdown interrupted it: leave it incomplete (and its key blocked).
            RecordOutcome::Abandoned { .. } => {
                self.running -= 1;
                self.check_drained(ctx);
            }
            RecordOutcome::StageFailed { cause, .. } => {
                self.running -= 1;
                self.fail(ctx, cause);
            }
        }
    }
}

impl Handler<Quiesce> for PartitionConsumer {
    type Result = ();

    fn handle(&mut self, Quiesce(reply): Quiesce, ctx: &mut Self::Context) {
        self.quiesced = true;
        self.quiescing.push(reply);
        self.check_quiesced(ctx);
    }
}

impl Handler<Resume> for PartitionConsumer {
    type Result = ();

    fn handle(&mut self, _: Resume, ctx: &mut Self::Context) {
        tracing::trace!(partition = %self.tp, held = self.held.len(), "resumed");
        self.quiesced = false;
        while let Some((record, permit)) = self.held.pop_front() {
            self.on_record(record, permit, ctx);
        }
        self.pull_next(ctx);
    }
}

impl Handler<Drain> for PartitionConsumer {
    type Result = ();

    fn handle(&mut self, Drain(reply): Drain, ctx: &mut Self::Context) {
        self.draining.push(reply);
        if self.draining.len() > 1 {
            return;
        }
        self.stop_reading(ctx);
        if self.failure.is_none() {
            self.finish_by_deadline(ctx);
        }
        self.check_drained(ctx);
    }
}
