//! Consumer groups of the embedded transport: membership, assignment and rebalancing.
//!
//! Rebalancing is eager, like Kafka's classic protocol: every member is told to give up its
//! partitions and the coordinator waits for each acknowledgement (or the member's death)
//! before handing out the new assignment, so two members never own a partition at once.
//! Each assignment has a generation; a committer from an older generation is refused, so a
//! late commit cannot move an offset the new owner already moved.

use super::log::PartitionLog;
use crate::envelope::TopicPartition;
use crate::transport::{
    AssignedPartition, Committer, GroupEvent, GroupMember, RevokeAck, TransportError,
};
use async_trait::async_trait;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Mutex};

/// How long a rebalance waits for a member to hand back its partitions before it treats
/// the member as dead.
pub(crate) const REVOKE_TIMEOUT: Duration = Duration::from_secs(60);

/// Looks up partition logs by topic; implemented by the transport.
pub(crate) trait Logs: Send + Sync {
    fn partitions(&self, topic: &str) -> Result<Vec<Arc<PartitionLog>>, TransportError>;
}

pub(crate) struct GroupCoordinator {
    name: String,
    /// Shared with committers so they can tell whether their assignment is still current.
    generation: Arc<AtomicU64>,
    members: Mutex<Vec<Member>>,
    logs: Weak<dyn Logs>,
}

struct Member {
    id: String,
    topics: Vec<String>,
    events: mpsc::UnboundedSender<GroupEvent>,
    owned: Vec<TopicPartition>,
}

impl GroupCoordinator {
    pub fn new(name: &str, logs: Weak<dyn Logs>) -> Arc<Self> {
        Arc::new(GroupCoordinator {
            name: name.to_string(),
            generation: Arc::new(AtomicU64::new(0)),
            members: Mutex::new(Vec::new()),
            logs,
        })
    }

    pub async fn join(
        self: &Arc<Self>,
        member_id: &str,
        topics: &[String],
    ) -> Result<EmbeddedMember, TransportError> {
        let logs = self.logs.upgrade().ok_or(TransportError::Closed)?;
        for t in topics {
            logs.partitions(t)?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut members = self.members.lock().await;
        members.retain(|m| m.id != member_id);
        members.push(Member { id: member_id.to_string(), topics: topics.to_vec(), events: tx, owned: Vec::new() });
        self.rebalance(&mut members).await?;
        drop(members);
        Ok(EmbeddedMember { id: member_id.to_string(), events: rx, coordinator: self.clone() })
    }

    async fn leave(&self, member_id: &str) -> Result<(), TransportError> {
        let mut members = self.members.lock().await;
        let before = members.len();
        members.retain(|m| m.id != member_id);
        if members.len() != before {
            self.rebalance(&mut members).await?;
        }
        Ok(())
    }

    async fn rebalance(&self, members: &mut Vec<Member>) -> Result<(), TransportError> {
        // 1. Take every partition back and wait until each owner let go.
        let mut waits = Vec::new();
        for m in members.iter_mut() {
            if m.owned.is_empty() {
                continue;
            }
            let (tx, rx) = oneshot::channel();
            let partitions = std::mem::take(&mut m.owned);
            if m.events.send(GroupEvent::Revoked { partitions, done: RevokeAck::new(tx) }).is_ok() {
                waits.push((m.id.clone(), rx));
            }
        }
        for (id, rx) in waits {
            if tokio::time::timeout(REVOKE_TIMEOUT, rx).await.is_err() {
                tracing::warn!(group = %self.name, member = %id, "member did not hand back its partitions in time");
            }
        }
        members.retain(|m| !m.events.is_closed());
        members.sort_by(|a, b| a.id.cmp(&b.id));

        // 2. New generation: spread each topic's partitions over the members that read it.
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let logs = self.logs.upgrade().ok_or(TransportError::Closed)?;
        let mut topics: Vec<&String> = members.iter().flat_map(|m| m.topics.iter()).collect();
        topics.sort();
        topics.dedup();
        let mut assignment: Vec<Vec<Arc<PartitionLog>>> = vec![Vec::new(); members.len()];
        for topic in topics {
            let readers: Vec<usize> =
                (0..members.len()).filter(|&i| members[i].topics.iter().any(|t| t == topic)).collect();
            for (n, log) in logs.partitions(topic)?.into_iter().enumerate() {
                assignment[readers[n % readers.len()]].push(log);
            }
        }
        for (m, logs) in members.iter_mut().zip(assignment) {
            if logs.is_empty() {
                continue;
            }
            m.owned = logs.iter().map(|l| l.tp.clone()).collect();
            let parts = logs
                .into_iter()
                .map(|log| {
                    let start = log.committed(&self.name).unwrap_or_else(|| log.earliest());
                    AssignedPartition {
                        stream: Box::new(log.stream(start)),
                        committer: Arc::new(EmbeddedCommitter {
                            log,
                            group: self.name.clone(),
                            generation,
                            current: self.generation.clone(),
                        }),
                    }
                })
                .collect();
            // A member that died since step 1 is dropped at the next rebalance.
            let _ = m.events.send(GroupEvent::Assigned(parts));
        }
        tracing::debug!(group = %self.name, generation, members = members.len(), "group rebalanced");
        Ok(())
    }

}

pub(crate) struct EmbeddedMember {
    id: String,
    events: mpsc::UnboundedReceiver<GroupEvent>,
    coordinator: Arc<GroupCoordinator>,
}

#[async_trait]
impl GroupMember for EmbeddedMember {
    async fn next_event(&mut self) -> Result<GroupEvent, TransportError> {
        self.events.recv().await.ok_or(TransportError::Closed)
    }

    async fn leave(self: Box<Self>) -> Result<(), TransportError> {
        let EmbeddedMember { id, events, coordinator } = *self;
        // Closing our end first lets the rebalance skip us instead of waiting for an ack.
        drop(events);
        coordinator.leave(&id).await
    }
}

struct EmbeddedCommitter {
    log: Arc<PartitionLog>,
    group: String,
    generation: u64,
    current: Arc<AtomicU64>,
}

#[async_trait]
impl Committer for EmbeddedCommitter {
    async fn commit(&self, tp: &TopicPartition, next_offset: i64) -> Result<(), TransportError> {
        if self.current.load(Ordering::SeqCst) != self.generation {
            return Err(TransportError::NotOwner(tp.to_string()));
        }
        self.log.commit(&self.group, next_offset);
        Ok(())
    }
}
