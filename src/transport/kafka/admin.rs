//! Topics from the topology (`weir topics apply|status`, and `weir run` with
//! `auto_create_topics: true`): create what is missing as declared, raise partition counts
//! that are lower than declared, and report every other difference without touching it
//! (shrinking partitions or changing retention on a live topic is a decision for a person).

use super::config;
use crate::topology::plan::TopicPlan;
use crate::topology::spec::{CleanupPolicy, KafkaSpec};
use crate::transport::TransportError;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use std::collections::HashMap;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

/// What `apply` did and found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub created: Vec<String>,
    /// (topic, from, to)
    pub raised: Vec<(String, i32, i32)>,
    /// Differences left alone: (topic, what, actual, declared).
    pub drift: Vec<(String, String, String, String)>,
    pub unchanged: Vec<String>,
}

impl std::fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for t in &self.created {
            writeln!(f, "created  {t}")?;
        }
        for (t, from, to) in &self.raised {
            writeln!(f, "raised   {t}: partitions {from} → {to}")?;
        }
        for (t, what, actual, declared) in &self.drift {
            writeln!(f, "drift    {t}: {what} is {actual}, declared {declared} (left as is)")?;
        }
        write!(
            f,
            "{} created, {} raised, {} unchanged, {} with drift",
            self.created.len(),
            self.raised.len(),
            self.unchanged.len(),
            self.drift.len()
        )
    }
}

fn unavailable(e: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable(e.to_string())
}

/// The declared topic configs to create with and compare against.
fn declared_configs(t: &TopicPlan) -> Vec<(&'static str, String)> {
    let mut c = vec![(
        "cleanup.policy",
        match t.cleanup_policy {
            CleanupPolicy::Delete => "delete".to_string(),
            CleanupPolicy::Compact => "compact".to_string(),
        },
    )];
    if let Some(r) = t.retention {
        c.push(("retention.ms", r.as_millis().to_string()));
    }
    if let Some(comp) = &t.compression {
        c.push(("compression.type", comp.clone()));
    }
    c
}

/// Current partition counts of the given topics (absent ones are missing).
pub async fn partition_counts(spec: &KafkaSpec, topics: Vec<String>) -> Result<HashMap<String, i32>, TransportError> {
    let meta: BaseConsumer = config::reader(spec, "weir-admin").create().map_err(unavailable)?;
    tokio::task::spawn_blocking(move || {
        let md = meta.fetch_metadata(None, TIMEOUT).map_err(unavailable)?;
        Ok(md
            .topics()
            .iter()
            .filter(|t| topics.iter().any(|n| n == t.name()) && t.error().is_none())
            .map(|t| (t.name().to_string(), t.partitions().len() as i32))
            .collect())
    })
    .await
    .map_err(unavailable)?
}

/// CreateTopics returns once the controller has the topic; the broker that answers
/// metadata may learn of it a moment later. Callers (a worker about to join a group, a
/// test about to read) need it visible with all its partitions, and Kafka offers no event
/// for that, so poll metadata until it is, within a bound.
async fn await_metadata(spec: &KafkaSpec, topics: &[(String, i32)]) -> Result<(), TransportError> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let counts = partition_counts(spec, topics.iter().map(|(n, _)| n.clone()).collect()).await?;
        let pending: Vec<&str> = topics
            .iter()
            .filter(|(n, want)| counts.get(n).is_none_or(|have| have < want))
            .map(|(n, _)| n.as_str())
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TransportError::Unavailable(format!(
                "topics not visible in metadata {TIMEOUT:?} after creation: {}",
                pending.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// CreateTopics' replication factor for "the broker's `default.replication.factor`"
/// (KIP-464, Kafka 2.4+): a topic without `replication_factor` gets what the cluster's
/// operator configured, not a single copy.
const BROKER_DEFAULT_REPLICATION: i32 = -1;

/// The replication factor a missing topic is created with.
fn replication_of(t: &TopicPlan) -> TopicReplication<'static> {
    TopicReplication::Fixed(t.replication_factor.map_or(BROKER_DEFAULT_REPLICATION, i32::from))
}

pub async fn apply(spec: &KafkaSpec, topics: &[TopicPlan]) -> Result<ApplyReport, TransportError> {
    let admin: AdminClient<DefaultClientContext> = config::base(spec, "weir-admin").create().map_err(unavailable)?;
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let existing = partition_counts(spec, topics.iter().map(|t| t.name.clone()).collect()).await?;
    let mut report = ApplyReport::default();

    let missing: Vec<&TopicPlan> = topics.iter().filter(|t| !existing.contains_key(&t.name)).collect();
    let configs: Vec<Vec<(&'static str, String)>> = missing.iter().map(|t| declared_configs(t)).collect();
    let new_topics: Vec<NewTopic<'_>> = missing
        .iter()
        .zip(&configs)
        .map(|(t, cfg)| {
            cfg.iter().fold(NewTopic::new(&t.name, t.partitions, replication_of(t)), |n, (k, v)| n.set(k, v))
        })
        .collect();
    if !new_topics.is_empty() {
        for r in admin.create_topics(&new_topics, &opts).await.map_err(unavailable)? {
            match r {
                Ok(name) => report.created.push(name),
                // Another node created it between our look and our create: fine.
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => report.unchanged.push(name),
                Err((name, code)) => return Err(TransportError::Rejected(format!("creating topic `{name}`: {code}"))),
            }
        }
    }

    let lower: Vec<(&TopicPlan, i32)> = topics
        .iter()
        .filter_map(|t| existing.get(&t.name).map(|n| (t, *n)))
        .filter(|(t, n)| *n < t.partitions)
        .collect();
    let raises: Vec<NewPartitions<'_>> =
        lower.iter().map(|(t, _)| NewPartitions::new(&t.name, t.partitions.max(1) as usize)).collect();
    if !raises.is_empty() {
        for r in admin.create_partitions(&raises, &opts).await.map_err(unavailable)? {
            if let Err((name, code)) = r {
                return Err(TransportError::Rejected(format!("raising partitions of `{name}`: {code}")));
            }
        }
        report.raised = lower.iter().map(|(t, n)| (t.name.clone(), *n, t.partitions)).collect();
    }
    if !report.created.is_empty() || !report.raised.is_empty() {
        let changed: Vec<(String, i32)> = topics
            .iter()
            .filter(|t| report.created.contains(&t.name) || report.raised.iter().any(|(n, _, _)| n == &t.name))
            .map(|t| (t.name.clone(), t.partitions))
            .collect();
        await_metadata(spec, &changed).await?;
    }

    let present: Vec<&TopicPlan> = topics.iter().filter(|t| existing.contains_key(&t.name)).collect();
    let specifiers: Vec<ResourceSpecifier<'_>> = present.iter().map(|t| ResourceSpecifier::Topic(&t.name)).collect();
    let described = if specifiers.is_empty() {
        Vec::new()
    } else {
        admin.describe_configs(&specifiers, &opts).await.map_err(unavailable)?
    };
    for (t, res) in present.iter().zip(described) {
        let actual_partitions = existing.get(&t.name).copied().unwrap_or(0);
        let mut drifted = false;
        if actual_partitions > t.partitions {
            report.drift.push((t.name.clone(), "partitions".into(), actual_partitions.to_string(), t.partitions.to_string()));
            drifted = true;
        }
        if let Ok(resource) = res {
            let entries = resource.entry_map();
            for (key, want) in declared_configs(t) {
                let have = entries.get(key).and_then(|e| e.value.clone()).unwrap_or_default();
                if have != want {
                    report.drift.push((t.name.clone(), key.to_string(), have, want));
                    drifted = true;
                }
            }
        }
        if !drifted && !report.raised.iter().any(|(n, _, _)| n == &t.name) {
            report.unchanged.push(t.name.clone());
        }
    }
    Ok(report)
}

/// Committed offset, end offset and lag of one group on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub committed: Option<i64>,
    pub end: i64,
    pub lag: i64,
}

/// Lag of `group` on every partition of `topics`.
pub async fn lag(spec: &KafkaSpec, group: &str, topics: &[String]) -> Result<Vec<PartitionLag>, TransportError> {
    let counts = partition_counts(spec, topics.to_vec()).await?;
    let mut cfg = config::reader(spec, "weir-admin");
    cfg.set("group.id", group);
    let consumer: BaseConsumer = cfg.create().map_err(unavailable)?;
    let (group, topics) = (group.to_string(), topics.to_vec());
    tokio::task::spawn_blocking(move || {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for t in &topics {
            for p in 0..counts.get(t).copied().unwrap_or(0) {
                tpl.add_partition(t, p);
            }
        }
        let committed = consumer.committed_offsets(tpl, TIMEOUT).map_err(unavailable)?;
        let mut out = Vec::new();
        for e in committed.elements() {
            let (_, end) = consumer.fetch_watermarks(e.topic(), e.partition(), TIMEOUT).map_err(unavailable)?;
            let committed = e.offset().to_raw().filter(|o| *o >= 0);
            out.push(PartitionLag {
                group: group.clone(),
                topic: e.topic().to_string(),
                partition: e.partition(),
                committed,
                end,
                lag: end - committed.unwrap_or(0),
            });
        }
        Ok(out)
    })
    .await
    .map_err(unavailable)?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The topics of a topology, as the runtime plans them.
    fn topics(yaml: &str) -> Vec<TopicPlan> {
        let registry = crate::stages::Registry::builtin();
        let topology = crate::topology::Topology::parse("t.yaml", yaml, &|_| None, &registry)
            .unwrap_or_else(|d| panic!("{d}"));
        topology.plan(None).expect("plan").topics.into_values().collect()
    }

    fn factor(r: TopicReplication<'_>) -> Option<i32> {
        match r {
            TopicReplication::Fixed(n) => Some(n),
            TopicReplication::Variable(_) => None,
        }
    }

    /// Issue 9: an undeclared factor created topics with a single replica.
    #[test]
    fn an_undeclared_replication_factor_is_the_brokers_default() {
        let t = topics("topics:\n  a: {partitions: 3}\n  b: {partitions: 3, replication_factor: 3}\n");
        let factors: Vec<_> = t.iter().map(|t| (t.name.as_str(), factor(replication_of(t)))).collect();
        assert_eq!(factors, vec![("a", Some(-1)), ("b", Some(3))]);
    }
}
