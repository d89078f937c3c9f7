//! The stage actor: one per stage and node, owning the stage kind's instance (inside a
//! [`RecordProcessor`]). Partition consumers send it [`Process`] messages; each record
//! runs as its own task so a stage uses every core, and a panic in the kind's code is
//! caught at the task boundary: the actor records the poison record, reports to the
//! supervisor and refuses new records, while records already running finish normally (so
//! their offsets can still be committed); the supervisor then stops and restarts it.

use super::processing::{Processed, RecordProcessor};
use super::stats::StageStats;
use crate::envelope::Record;
use actix::prelude::*;
use std::sync::Arc;

#[derive(Message)]
#[rtype(result = "Processed")]
pub struct Process(pub Record);

/// Sent to the supervisor when a stage's pipeline must be restarted.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct StageFailed {
    pub stage: String,
    /// Which incarnation failed; reports from an older one are ignored.
    pub generation: u64,
    pub cause: String,
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

    fn started(&mut self, ctx: &mut Self::Context) {
        // Partition consumers bound their own in-flight records; the mailbox only needs to
        // absorb a burst of sends from all of them.
        ctx.set_mailbox_capacity(1024);
        tracing::debug!(stage = %self.name, generation = self.generation, "stage actor started");
    }
}

impl Handler<Process> for StageActor {
    type Result = ResponseActFuture<Self, Processed>;

    fn handle(&mut self, Process(record): Process, _: &mut Self::Context) -> Self::Result {
        if self.failed {
            return Box::pin(fut::ready(Processed::StageFailed("stage is restarting".into())));
        }
        let id = (record.topic.clone(), record.partition, record.offset);
        let processor = self.processor.clone();
        let task = tokio::spawn(async move { processor.process(record).await });
        Box::pin(task.into_actor(self).map(move |joined, act, _| match joined {
            Ok(processed) => processed,
            Err(e) if e.is_panic() => {
                let message = panic_message(e.into_panic());
                let count = act.processor.poison().note(&id, &message);
                StageStats::add(&act.stats.panics, 1);
                tracing::error!(stage = %act.name, topic = %id.0, partition = id.1, offset = id.2,
                    times = count, panic = %message, "stage panicked; restarting it");
                if !act.failed {
                    act.failed = true;
                    act.supervisor.do_send(StageFailed {
                        stage: act.name.clone(),
                        generation: act.generation,
                        cause: format!("panicked at {}[{}]@{}: {message}", id.0, id.1, id.2),
                    });
                }
                Processed::StageFailed(message)
            }
            Err(_) => Processed::Abandoned,
        }))
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
