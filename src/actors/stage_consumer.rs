//! The stage consumer actor: a stage's membership in its consumer group on this node. It
//! turns the group's assignment events into partition consumer actors — one per assigned
//! partition — and drains them before a revocation is acknowledged, so a partition never
//! has two owners and late acknowledgements of a lost partition are never committed.
//!
//! Exactly-once stages (with a transaction) checkpoint every commit interval, and before
//! any revocation or shutdown: every partition quiesces (no record half done), the
//! transaction commits outputs and offsets together, then the partitions resume.

use super::partition_consumer::{Drain, PartitionConsumer, PartitionExited, PartitionSettings, Quiesce, Resume};
use super::stage_actor::{StageActor, StageFailed};
use super::stats::StageStats;
use crate::envelope::TopicPartition;
use crate::transport::{AssignedPartition, GroupEvent, GroupMember, Transaction, Transport, TransportError};
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::oneshot;

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
        }
    }

    /// Exactly-once checkpoint: quiesce every partition, commit the transaction; the caller
    /// resumes the partitions afterwards. Without a transaction: nothing.
    ///
    /// The quiesce is sent when the future first runs, not when it is built: a checkpoint
    /// queued behind another must quiesce again after the first one's `Resume`, or it would
    /// commit while records run and their outputs would land in a transaction without
    /// their offsets (duplicates after a crash).
    fn barrier(&self) -> impl std::future::Future<Output = Result<(), TransportError>> {
        let txn = self.transaction.clone();
        let partitions: Vec<Addr<PartitionConsumer>> =
            if txn.is_some() { self.partitions.values().cloned().collect() } else { Vec::new() };
        async move {
            let Some(txn) = txn else { return Ok(()) };
            let waits = partitions.iter().map(|addr| {
                let (tx, rx) = oneshot::channel();
                addr.do_send(Quiesce(tx));
                rx
            });
            futures::future::join_all(waits.collect::<Vec<_>>()).await;
            txn.commit().await
        }
    }

    fn resume_all(&self) {
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
        async move {
            // An error means the actor is already gone: drained either way.
            futures::future::join_all(waits).await;
        }
    }
}

/// Reads group events and forwards them to the actor; leaves the group when asked.
async fn run_membership(
    mut member: Box<dyn GroupMember>,
    addr: Addr<StageConsumer>,
    mut leave: oneshot::Receiver<oneshot::Sender<()>>,
) {
    loop {
        tokio::select! {
            event = member.next_event() => match event {
                Ok(GroupEvent::Assigned(parts)) => {
                    if addr.send(Assign(parts)).await.is_err() { break; }
                }
                Ok(GroupEvent::Revoked { partitions, done }) => {
                    // Acknowledge only after the partitions' actors have committed and stopped.
                    let _ = addr.send(Revoke(partitions)).await;
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
                if act.checkpointing {
                    return;
                }
                act.checkpointing = true;
                // `wait`: no assignment change may interleave with a checkpoint.
                let checkpoint = act.barrier();
                ctx.wait(checkpoint.into_actor(act).map(|result, act, _| {
                    act.checkpointing = false;
                    act.resume_all();
                    if let Err(e) = result {
                        act.escalate(format!("committing the transaction failed: {e}"));
                    }
                }));
            });
        }
        let addr = ctx.address();
        let stats = self.stats.clone();
        tokio::spawn(async move {
            match transport.join(&group, &topics, &member_id, transaction).await {
                Ok(member) => {
                    stats.joined.store(true, std::sync::atomic::Ordering::Relaxed);
                    run_membership(member, addr, leave_rx).await
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
            let consumer = PartitionConsumer::new(
                stream,
                committer,
                self.stage_actor.clone(),
                self.settings.clone(),
                ctx.address().recipient(),
                self.stats.clone(),
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
        // Exactly-once: commit everything (all partitions quiesced) before any goes.
        let checkpoint = self.barrier();
        AtomicResponse::new(Box::pin(checkpoint.into_actor(self).then(move |result, act, _| {
            if let Err(e) = result {
                act.escalate(format!("committing the transaction before a revocation failed: {e}"));
            }
            let drained = act.drain(&tps);
            act.resume_all();
            drained.into_actor(act)
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
        let checkpoint = self.barrier();
        let drained = self.drain(&all);
        let leave = self.leave.take();
        let stage = self.stage.clone();
        Box::pin(
            async move {
                if let Err(e) = checkpoint.await {
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
