//! The stage consumer actor: a stage's membership in its consumer group on this node. It
//! turns the group's assignment events into partition consumer actors — one per assigned
//! partition — and drains them before a revocation is acknowledged, so a partition never
//! has two owners and late acknowledgements of a lost partition are never committed.
//!
//! Exactly-once stages (with a transaction) checkpoint every commit interval, and before
//! any revocation or shutdown: every partition quiesces (no record half done), the
//! transaction commits outputs and offsets together, then the partitions resume.
//!
//! A checkpoint that fails (the broker aborted the transaction at its timeout, another
//! instance fenced this one, or the partitions did not quiesce within `drain_timeout`)
//! aborts the transaction, which discards its recorded offsets. The consumer then stops
//! consuming (the partitions stay quiesced, nothing more is produced or recorded) and asks
//! the supervisor for a restart: the new incarnation rejoins the group with a fresh
//! transaction and re-reads every partition from the group's committed offsets, so the
//! aborted records are processed again.
//!
//! Every wait before a revocation is acknowledged is bounded: the partitions' drain by
//! `drain_timeout` + [`FENCE_GRACE`] (after which nothing of theirs is queued any more),
//! and this actor's whole handling by [`revoke_bound`] on top, also when an actor is dead
//! or wedged.

use super::partition_consumer::{Drain, PartitionConsumer, PartitionExited, PartitionSettings, Quiesce, Resume, FENCE_GRACE};
use super::processing::PartitionFence;
use super::stage_actor::{StageActor, StageFailed};
use super::stats::StageStats;
use crate::envelope::TopicPartition;
use crate::transport::{AssignedPartition, GroupEvent, GroupMember, Transaction, Transport, TransportError};
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// The longest a revocation waits before it is acknowledged: the partitions' drain
/// (`drain_timeout` + [`FENCE_GRACE`]) with a margin for the checkpoint and messages.
fn revoke_bound(drain_timeout: Duration) -> Duration {
    drain_timeout * 2 + FENCE_GRACE + Duration::from_secs(1)
}

#[derive(Message)]
#[rtype(result = "()")]
struct Assign(Vec<AssignedPartition>);

#[derive(Message)]
#[rtype(result = "()")]
struct Revoke(Vec<TopicPartition>);

#[derive(Message)]
#[rtype(result = "()")]
struct MemberFailed(String);

/// Drain every partition, leave the group, stop. Replies when done.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopConsumer;

pub struct StageConsumer {
    stage: String,
    generation: u64,
    group: String,
    topics: Vec<String>,
    member_id: String,
    transport: Arc<dyn Transport>,
    stage_actor: Addr<StageActor>,
    settings: Arc<PartitionSettings>,
    partitions: HashMap<TopicPartition, Addr<PartitionConsumer>>,
    leave: Option<oneshot::Sender<oneshot::Sender<()>>>,
    supervisor: Recipient<StageFailed>,
    stats: Arc<StageStats>,
    failed: bool,
    stopping: bool,
    transaction: Option<Arc<dyn Transaction>>,
    /// A periodic exactly-once checkpoint is running: the next tick skips instead of
    /// queueing a second one behind it (two checkpoints back to back would let the first
    /// one's `Resume` release records while the second one commits).
    checkpointing: bool,
    /// A checkpoint failed and the transaction was aborted: nothing is resumed, recorded
    /// or committed any more; the supervisor restarts the stage.
    aborted: bool,
    /// The fence of each assigned partition, shared with the membership task, which
    /// closes a revoked partition's fence right before acknowledging, on every path.
    fences: Fences,
}

type Fences = Arc<Mutex<HashMap<TopicPartition, PartitionFence>>>;

fn lock(fences: &Fences) -> std::sync::MutexGuard<'_, HashMap<TopicPartition, PartitionFence>> {
    fences.lock().unwrap_or_else(|p| p.into_inner())
}

impl StageConsumer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        stage: &str,
        generation: u64,
        group: &str,
        topics: Vec<String>,
        member_id: String,
        transport: Arc<dyn Transport>,
        stage_actor: Addr<StageActor>,
        settings: Arc<PartitionSettings>,
        supervisor: Recipient<StageFailed>,
        stats: Arc<StageStats>,
        transaction: Option<Arc<dyn Transaction>>,
    ) -> Self {
        StageConsumer {
            stage: stage.to_string(),
            generation,
            group: group.to_string(),
            topics,
            member_id,
            transport,
            stage_actor,
            settings,
            partitions: HashMap::new(),
            leave: None,
            supervisor,
            stats,
            failed: false,
            stopping: false,
            transaction,
            checkpointing: false,
            aborted: false,
            fences: Arc::default(),
        }
    }

    /// Exactly-once checkpoint: quiesce every partition, commit the transaction; the caller
    /// resumes the partitions afterwards. Without a transaction: nothing.
    ///
    /// The quiesce is sent when the future first runs, not when it is built: a checkpoint
    /// queued behind another must quiesce again after the first one's `Resume`, or it would
    /// commit while records run and their outputs would land in a transaction without
    /// their offsets (duplicates after a crash).
    ///
    /// Partitions that do not quiesce within `drain_timeout` (a record slower than that)
    /// abort the transaction: committing would publish outputs without their offsets.
    fn barrier(&self) -> impl std::future::Future<Output = Result<(), TransportError>> {
        let txn = if self.aborted { None } else { self.transaction.clone() };
        let partitions: Vec<Addr<PartitionConsumer>> =
            if txn.is_some() { self.partitions.values().cloned().collect() } else { Vec::new() };
        let within = self.settings.drain_timeout;
        async move {
            let Some(txn) = txn else { return Ok(()) };
            let waits = partitions.iter().map(|addr| {
                let (tx, rx) = oneshot::channel();
                addr.do_send(Quiesce(tx));
                rx
            });
            let quiesced = futures::future::join_all(waits.collect::<Vec<_>>());
            if tokio::time::timeout(within, quiesced).await.is_err() {
                let reason = format!("records still running after {within:?}; cannot checkpoint");
                txn.abort(&reason).await;
                return Err(TransportError::TransactionAborted(reason));
            }
            txn.commit().await
        }
    }

    /// A checkpoint failed: its transaction is aborted and its offsets are discarded.
    /// Stop here (the partitions stay quiesced) and let the supervisor restart the stage,
    /// which re-reads every partition from the group's committed offsets.
    fn on_aborted(&mut self, when: &str, e: &TransportError) {
        StageStats::add(&self.stats.transaction_aborts, 1);
        if matches!(e, TransportError::Fenced(_)) {
            StageStats::add(&self.stats.transactions_fenced, 1);
        }
        self.aborted = true;
        tracing::warn!(stage = %self.stage, error = %e, "{when}: transaction aborted; re-reading from the committed offsets");
        self.escalate(format!("{when}: {e}"));
    }

    fn resume_all(&self) {
        if self.aborted {
            return; // nothing may run into a transaction that is gone
        }
        for addr in self.partitions.values() {
            addr.do_send(Resume);
        }
    }

    fn escalate(&mut self, cause: String) {
        if self.failed {
            return;
        }
        self.failed = true;
        self.supervisor.do_send(StageFailed { stage: self.stage.clone(), generation: self.generation, cause });
    }

    fn drain(&mut self, tps: &[TopicPartition]) -> impl std::future::Future<Output = ()> {
        let waits: Vec<_> = tps
            .iter()
            .filter_map(|tp| self.partitions.remove(tp))
            .map(|addr| {
                let (tx, rx) = oneshot::channel();
                addr.do_send(Drain(tx));
                rx
            })
            .collect();
        let (bound, stage) = (self.settings.drain_timeout + FENCE_GRACE + Duration::from_secs(1), self.stage.clone());
        async move {
            // An error means the actor is already gone: drained either way. A partition that
            // does not answer in time is wedged; its fence is closed by its own deadline.
            if tokio::time::timeout(bound, futures::future::join_all(waits)).await.is_err() {
                tracing::warn!(%stage, ?bound, "partitions did not finish draining in time; letting go of them");
            }
        }
    }
}

/// Reads group events and forwards them to the actor; leaves the group when asked.
async fn run_membership(
    mut member: Box<dyn GroupMember>,
    addr: Addr<StageConsumer>,
    mut leave: oneshot::Receiver<oneshot::Sender<()>>,
    stats: Arc<StageStats>,
    revoke_within: Duration,
    fences: Fences,
    transaction: Option<Arc<dyn Transaction>>,
) {
    loop {
        tokio::select! {
            event = member.next_event() => match event {
                Ok(GroupEvent::Assigned(parts)) => {
                    if addr.send(Assign(parts)).await.is_err() { break; }
                }
                Ok(GroupEvent::Revoked { partitions, done }) => {
                    // Acknowledge only after the partitions' actors have committed and
                    // stopped, or once the bound ran out (the fences are closed by then).
                    let revoked = partitions.clone();
                    if tokio::time::timeout(revoke_within, addr.send(Revoke(partitions))).await.is_err() {
                        tracing::warn!(partitions = ?revoked.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                            ?revoke_within, "revocation not handled in time; acknowledging it anyway");
                        // Not ours to commit any more (at worst their outputs repeat).
                        if let Some(txn) = &transaction {
                            txn.forget(&revoked);
                        }
                    }
                    // Whatever happened above: nothing of these is queued after the ack.
                    {
                        let mut fences = lock(&fences);
                        for tp in &revoked {
                            if let Some(fence) = fences.remove(tp) {
                                fence.close();
                            }
                        }
                    }
                    stats.note_revoked(&revoked, crate::envelope::now_ms());
                    done.ack();
                }
                Err(e) => {
                    addr.do_send(MemberFailed(e.to_string()));
                    break;
                }
            },
            asked = &mut leave => {
                if let Err(e) = member.leave().await {
                    tracing::warn!(error = %e, "leaving the consumer group failed");
                }
                if let Ok(reply) = asked {
                    let _ = reply.send(());
                }
                return;
            }
        }
    }
    // The member failed or the actor is gone: still leave, so the group reassigns at once.
    let _ = member.leave().await;
}

impl Actor for StageConsumer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let (leave_tx, leave_rx) = oneshot::channel();
        self.leave = Some(leave_tx);
        let (transport, group, topics, member_id) =
            (self.transport.clone(), self.group.clone(), self.topics.clone(), self.member_id.clone());
        let transaction = self.transaction.clone();
        if self.transaction.is_some() {
            ctx.run_interval(self.settings.commit.interval, |act, ctx| {
                // Stopping: `StopConsumer` makes the final checkpoint; a periodic one would
                // resume partitions it is draining.
                if act.checkpointing || act.stopping || act.aborted {
                    return;
                }
                act.checkpointing = true;
                // `wait`: no assignment change may interleave with a checkpoint.
                let checkpoint = act.barrier();
                ctx.wait(checkpoint.into_actor(act).map(|result, act, _| {
                    act.checkpointing = false;
                    if let Err(e) = result {
                        act.on_aborted("committing the transaction failed", &e);
                    }
                    act.resume_all();
                }));
            });
        }
        let addr = ctx.address();
        let stats = self.stats.clone();
        let revoke_within = revoke_bound(self.settings.drain_timeout);
        let fences = self.fences.clone();
        tokio::spawn(async move {
            match transport.join(&group, &topics, &member_id, transaction.clone()).await {
                Ok(member) => {
                    stats.joined.store(true, Ordering::Relaxed);
                    run_membership(member, addr, leave_rx, stats, revoke_within, fences, transaction).await
                }
                Err(e) => addr.do_send(MemberFailed(format!("joining group `{group}` failed: {e}"))),
            }
        });
        tracing::info!(stage = %self.stage, group = %self.group, topics = ?self.topics, member = %self.member_id,
            "stage consumer joined its group");
    }
}

impl Handler<Assign> for StageConsumer {
    type Result = ();

    fn handle(&mut self, Assign(parts): Assign, ctx: &mut Self::Context) {
        if self.stopping {
            return; // leaving the group hands these to the other members
        }
        for AssignedPartition { stream, committer } in parts {
            let tp = stream.topic_partition().clone();
            let fence = PartitionFence::default();
            lock(&self.fences).insert(tp.clone(), fence.clone());
            let consumer = PartitionConsumer::new(
                stream,
                committer,
                self.stage_actor.clone(),
                self.settings.clone(),
                ctx.address().recipient(),
                self.stats.clone(),
                fence.clone(),
            );
            tracing::info!(stage = %self.stage, partition = %tp, "partition assigned");
            self.partitions.insert(tp, consumer.start());
        }
    }
}

impl Handler<Revoke> for StageConsumer {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, Revoke(tps): Revoke, _: &mut Self::Context) -> Self::Result {
        tracing::info!(stage = %self.stage, partitions = ?tps.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            "partitions revoked; draining");
        // Exactly-once: commit everything (all partitions quiesced) before any goes, or
        // abort it; either way nothing of the revoked partitions stays in the transaction.
        let checkpoint = self.barrier();
        AtomicResponse::new(Box::pin(checkpoint.into_actor(self).then(move |result, act, _| {
            if let Err(e) = result {
                act.on_aborted("committing the transaction before a revocation failed", &e);
            }
            let drained = act.drain(&tps);
            act.resume_all();
            let txn = act.transaction.clone();
            async move {
                drained.await;
                // Whatever a drained partition recorded after the checkpoint is not ours
                // to commit any more.
                if let Some(txn) = txn {
                    txn.forget(&tps);
                }
            }
            .into_actor(act)
        })))
    }
}

impl Handler<PartitionExited> for StageConsumer {
    type Result = ();

    fn handle(&mut self, msg: PartitionExited, _: &mut Self::Context) {
        self.partitions.remove(&msg.tp);
        if let Some(cause) = msg.failure {
            self.escalate(format!("{}: {cause}", msg.tp));
        }
    }
}

impl Handler<MemberFailed> for StageConsumer {
    type Result = ();

    fn handle(&mut self, MemberFailed(cause): MemberFailed, _: &mut Self::Context) {
        self.escalate(format!("consumer group membership failed: {cause}"));
    }
}

impl Handler<StopConsumer> for StageConsumer {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: StopConsumer, _: &mut Self::Context) -> Self::Result {
        self.stopping = true;
        let all: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
        // After an abort `barrier` is a no-op: nothing more is committed.
        let checkpoint = self.barrier();
        let drained = self.drain(&all);
        let leave = self.leave.take();
        let (stage, stats) = (self.stage.clone(), self.stats.clone());
        Box::pin(
            async move {
                if let Err(e) = checkpoint.await {
                    StageStats::add(&stats.transaction_aborts, 1);
                    if matches!(e, TransportError::Fenced(_)) {
                        StageStats::add(&stats.transactions_fenced, 1);
                    }
                    tracing::error!(%stage, error = %e, "final transaction commit failed; its records will be processed again");
                }
                drained.await;
                if let Some(leave) = leave {
                    let (tx, rx) = oneshot::channel();
                    if leave.send(tx).is_ok() {
                        let _ = rx.await;
                    }
                }
                tracing::info!(%stage, "stage consumer stopped");
            }
            .into_actor(self)
            .map(|(), _, ctx| ctx.stop()),
        )
    }
}
