//! Drain to empty: on shutdown of an embedded node, after the ingress stopped and before
//! the stages are told to stop, the pipeline keeps running until every partition a stage
//! of this node reads is consumed and committed by that stage's group (lag 0), so what the
//! ingress acknowledged has gone all the way through (a booking stored also has its
//! confirmation sent).
//!
//! Bounded by the longest `drain_timeout` of the node's stages; when the bound is hit,
//! what remained is logged per stage and partition (a durable log keeps it for the next
//! start). Kafka keeps unconsumed records itself, so there this is a no-op.
//!
//! Stages that hold records until a due time (`delay`: step deadlines) are not waited
//! for: their deadlines may be far beyond the bound, and the durable log keeps them.

use crate::envelope::TopicPartition;
use crate::topology::plan::{Plan, StagePlan};
use crate::transport::{Transport, TransportError};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Kinds whose records wait for a due time instead of being worked on.
const HOLDING_KINDS: &[&str] = &["delay"];

/// How often lag is looked at while draining.
const POLL: Duration = Duration::from_millis(20);

fn holds(stage: &StagePlan) -> bool {
    HOLDING_KINDS.contains(&stage.kind.as_str())
}

struct Target {
    stage: String,
    group: String,
    tp: TopicPartition,
}

struct Remaining<'a> {
    target: &'a Target,
    lag: i64,
}

/// Waits until the node's stages consumed and committed everything on their inputs, or
/// the bound passed.
pub(crate) async fn until_consumed(plan: &Plan, transport: &Arc<dyn Transport>) {
    if transport.kind() != "embedded" {
        return;
    }
    let bound = plan.stages.iter().filter(|s| !holds(s)).map(|s| s.drain_timeout).max().unwrap_or(Duration::ZERO);
    let targets = match targets(plan, transport.as_ref()).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list what to drain; stopping without draining");
            return;
        }
    };
    if targets.is_empty() {
        return;
    }
    let started = Instant::now();
    let deadline = started + bound;
    tracing::info!(partitions = targets.len(), ?bound, "draining: waiting until every input is consumed and committed");
    loop {
        match remaining(&targets, transport.as_ref()).await {
            Ok(left) if left.is_empty() => {
                tracing::info!(elapsed = ?started.elapsed(), "drained: every input of this node is consumed and committed");
                return;
            }
            Ok(left) if Instant::now() >= deadline => {
                for r in &left {
                    tracing::warn!(stage = %r.target.stage, group = %r.target.group, partition = %r.target.tp,
                        records = r.lag, "drain bound reached with records not yet consumed and committed");
                }
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading lag while draining failed; stopping the drain");
                return;
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn targets(plan: &Plan, transport: &dyn Transport) -> Result<Vec<Target>, TransportError> {
    let mut out: Vec<Target> = Vec::new();
    for stage in plan.stages.iter().filter(|s| !holds(s)) {
        for topic in &stage.from {
            for p in 0..transport.partition_count(topic).await? {
                let tp = TopicPartition::new(topic, p);
                if !out.iter().any(|t| t.group == stage.group && t.tp == tp) {
                    out.push(Target { stage: stage.name.clone(), group: stage.group.clone(), tp });
                }
            }
        }
    }
    Ok(out)
}

/// Lag of every target. Empty only if, in one pass, every committed offset reached the
/// end offset read before it, and no end moved during the pass: a record still being
/// worked on is uncommitted, and an output appended to a partition already looked at
/// moves that partition's end.
async fn remaining<'a>(targets: &'a [Target], transport: &dyn Transport) -> Result<Vec<Remaining<'a>>, TransportError> {
    let mut ends = Vec::with_capacity(targets.len());
    for t in targets {
        ends.push(transport.watermarks(&t.tp).await?);
    }
    let mut left = Vec::new();
    for (t, (earliest, end)) in targets.iter().zip(&ends) {
        let committed = transport.committed(&t.group, &t.tp).await?.unwrap_or(*earliest);
        if committed < *end {
            left.push(Remaining { target: t, lag: end - committed });
        }
    }
    if left.is_empty() {
        for (t, (_, end)) in targets.iter().zip(&ends) {
            let now = transport.end_offset(&t.tp).await?;
            if now != *end {
                left.push(Remaining { target: t, lag: now - end });
            }
        }
    }
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::OutgoingRecord;
    use crate::stages::Registry;
    use crate::topology::Topology;
    use crate::transport::embedded::EmbeddedTransport;

    fn plan(yaml: &str) -> Plan {
        let registry = Registry::builtin();
        let topology = Topology::parse("t.yaml", yaml, &|_: &str| None, &registry).expect("valid");
        topology.plan(None).expect("plan")
    }

    fn record(topic: &str, partition: Option<i32>, payload: Vec<u8>) -> OutgoingRecord {
        OutgoingRecord {
            topic: topic.to_string(),
            partition,
            key: None,
            headers: crate::envelope::Headers::new(),
            payload: bytes::Bytes::from(payload),
        }
    }

    const YAML: &str = r#"
topics:
  in: {partitions: 2}
  out: {partitions: 1}
  deadlines: {partitions: 1}
stages:
  work: {kind: passthrough, from: in, to: out, group: g-work, drain_timeout: 300ms}
  timer: {kind: delay, from: deadlines, to: out, group: g-timer, config: {after: 1h}}
"#;

    #[tokio::test]
    async fn lag_counts_uncommitted_records_and_ignores_holding_stages() {
        let plan = plan(YAML);
        let t = EmbeddedTransport::new(100);
        let topics: Vec<_> = plan.topics.values().cloned().collect();
        t.ensure_topics(&topics).await.expect("topics");
        let transport: Arc<dyn Transport> = Arc::new(t);
        let producer = transport.producer();
        for n in 0..3 {
            producer.send(record("in", Some(0), vec![n])).await.expect("send");
        }
        producer.send(record("deadlines", None, Vec::new())).await.expect("send");
        let targets = targets(&plan, transport.as_ref()).await.expect("targets");
        // The delay stage's input is not a target.
        assert_eq!(targets.len(), 2);
        assert!(targets.iter().all(|t| t.group == "g-work"));
        let left = remaining(&targets, transport.as_ref()).await.expect("lag");
        assert_eq!(left.iter().map(|r| (r.target.tp.partition, r.lag)).collect::<Vec<_>>(), vec![(0, 3)]);

        // Bounded: nobody consumes, so the drain gives up at `work`'s drain_timeout (the
        // delay stage's longer default does not count).
        tokio::time::timeout(Duration::from_secs(5), until_consumed(&plan, &transport)).await.expect("bounded");
    }
}
