//! The stage actor: one per stage and node, owning the stage kind's instance (inside a
//! [`RecordProcessor`]). It lives on its stage's own arbiter (thread) with that stage's
//! partition consumers. Each [`Process`] message starts the record as a task on that same
//! thread (no thread hop) and the task reports back to the partition consumer with
//! [`RecordOutcome`] messages — the record's progress is never a future held in an actor,
//! which actix would re-poll on every wake-up.
//!
//! A panic in the kind's code is caught around the record: the actor records the poison
//! record, reports to the supervisor and refuses new records, while records already
//! running finish normally (so their offsets can still be committed); the supervisor then
//! restarts the stage.

use super::processing::{PartitionFence, Processed, RecordProcessor};
use super::stats::StageStats;
use crate::envelope::Record;
use crate::transport::TransportError;
use actix::prelude::*;
use bytes::Bytes;
use futures::FutureExt;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;

/// Handle this record; report to `reply_to`. `permit` is the partition's in-flight slot,
/// held until the record's outputs were accepted.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Process {
    pub record: Record,
    pub permit: OwnedSemaphorePermit,
    pub reply_to: Recipient<RecordOutcome>,
    /// The record's partition: closed once this member gave the partition up.
    pub fence: PartitionFence,
}

/// How a record is getting on, reported to its partition consumer.
#[derive(Message)]
#[rtype(result = "()")]
pub enum RecordOutcome {
    /// Its outputs hold their place in order: the next record of its key may start.
    Queued { offset: i64, key: Option<Bytes> },
    /// Every output was accepted (`Ok`) or one was not (`Err`).
    Accepted { offset: i64, result: Result<(), TransportError> },
    /// Shutdown interrupted it, or its partition was revoked before its outputs were
    /// queued; it stays incomplete and is delivered again later.
    Abandoned { offset: i64 },
    /// The stage panicked on it, or is restarting.
    StageFailed { offset: i64, cause: String },
}

/// Sent to the supervisor when a stage's pipeline must be restarted.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct StageFailed {
    pub stage: String,
    /// Which incarnation failed; reports from an older one are ignored.
    pub generation: u64,
    pub cause: String,
}

/// A record's task caught a panic.
#[derive(Message)]
#[rtype(result = "()")]
struct Panicked {
    id: (Arc<str>, i32, i64),
    message: String,
}

pub struct StageActor {
    name: String,
    generation: u64,
    processor: Arc<RecordProcessor>,
    stats: Arc<StageStats>,
    supervisor: Recipient<StageFailed>,
    failed: bool,
}

impl StageActor {
    pub fn new(
        name: &str,
        generation: u64,
        processor: Arc<RecordProcessor>,
        stats: Arc<StageStats>,
        supervisor: Recipient<StageFailed>,
    ) -> Self {
        StageActor { name: name.to_string(), generation, processor, stats, supervisor, failed: false }
    }
}

impl Actor for StageActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        tracing::debug!(stage = %self.name, generation = self.generation, "stage actor started");
    }
}

impl Handler<Process> for StageActor {
    type Result = ();

    fn handle(&mut self, Process { record, permit, reply_to, fence }: Process, ctx: &mut Self::Context) {
        let offset = record.offset;
        if self.failed {
            reply_to.do_send(RecordOutcome::StageFailed { offset, cause: "stage is restarting".into() });
            return;
        }
        let (id, key) = ((record.topic.clone(), record.partition, record.offset), record.key.clone());
        let (processor, me, stats) = (self.processor.clone(), ctx.address(), self.stats.clone());
        actix::spawn(async move {
            let outcome = std::panic::AssertUnwindSafe(processor.process(record, &fence)).catch_unwind().await;
            match outcome {
                Ok(Processed::Enqueued(acks)) => {
                    reply_to.do_send(RecordOutcome::Queued { offset, key });
                    let result = acks.await;
                    reply_to.do_send(RecordOutcome::Accepted { offset, result });
                }
                Ok(Processed::Abandoned) => reply_to.do_send(RecordOutcome::Abandoned { offset }),
                Ok(Processed::Fenced) => {
                    StageStats::add(&stats.fenced_records, 1);
                    reply_to.do_send(RecordOutcome::Abandoned { offset });
                }
                Ok(Processed::StageFailed(cause)) => reply_to.do_send(RecordOutcome::StageFailed { offset, cause }),
                Err(panic) => {
                    let message = panic_message(panic);
                    reply_to.do_send(RecordOutcome::StageFailed { offset, cause: message.clone() });
                    me.do_send(Panicked { id, message });
                }
            }
            drop(permit);
        });
    }
}

impl Handler<Panicked> for StageActor {
    type Result = ();

    fn handle(&mut self, Panicked { id, message }: Panicked, _: &mut Self::Context) {
        let count = self.processor.poison().note(&id, &message);
        StageStats::add(&self.stats.panics, 1);
        tracing::error!(stage = %self.name, topic = %id.0, partition = id.1, offset = id.2,
            times = count, panic = %message, "stage panicked; restarting it");
        if !self.failed {
            self.failed = true;
            self.supervisor.do_send(StageFailed {
                stage: self.name.clone(),
                generation: self.generation,
                cause: format!("panicked at {}[{}]@{}: {message}", id.0, id.1, id.2),
            });
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
