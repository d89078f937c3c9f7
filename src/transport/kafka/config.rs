//! librdkafka settings built from `kafka:` in the topology: connection and security first,
//! weir's defaults for at-least-once next, the topology's pass-through properties last
//! (so an operator can override anything).
//!
//! Defaults and why:
//! - producer `acks=all` + `enable.idempotence=true`: an output counts as accepted only
//!   when every in-sync replica has it, and retries never duplicate or reorder it.
//! - producer `partitioner=murmur2_random`: the Java client's key → partition mapping
//!   (librdkafka's default, `consistent_random`, differs), same as the embedded log.
//! - consumer `enable.auto.offset.store=false` with auto-commit on: librdkafka commits
//!   only offsets weir stored, and weir stores an offset only when every record below it
//!   is complete (Vector's scheme).
//! - consumer `partition.assignment.strategy=cooperative-sticky`: a rebalance moves only
//!   the partitions that must move; the others keep flowing.
//! - consumer `queued.max.messages.kbytes`: bounded prefetch, so a lagging topic cannot
//!   fill memory.
//! - consumer `isolation.level=read_committed`: outputs of aborted transactions
//!   (exactly-once stages) are never read.

use crate::topology::spec::KafkaSpec;
use rdkafka::ClientConfig;
use std::time::Duration;

/// Properties whose values are secrets: never logged.
const SECRET_KEYS: &[&str] = &["sasl.password", "ssl.key.password", "ssl.keystore.password", "sasl.oauthbearer.client.secret"];

/// The connection settings every client shares.
pub fn base(spec: &KafkaSpec, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", spec.brokers.as_deref().unwrap_or("127.0.0.1:9092"));
    c.set("client.id", spec.client_id.as_deref().unwrap_or(client_id));
    let s = &spec.security;
    if let Some(p) = &s.protocol {
        c.set("security.protocol", p);
    }
    if let Some(m) = &s.sasl_mechanism {
        c.set("sasl.mechanism", m);
    }
    if let Some(u) = &s.username {
        c.set("sasl.username", u);
    }
    if let Some(p) = &s.password {
        c.set("sasl.password", p);
    }
    if let Some(v) = &s.ca_location {
        c.set("ssl.ca.location", v);
    }
    if let Some(v) = &s.certificate_location {
        c.set("ssl.certificate.location", v);
    }
    if let Some(v) = &s.key_location {
        c.set("ssl.key.location", v);
    }
    c
}

pub fn producer(spec: &KafkaSpec, client_id: &str) -> ClientConfig {
    let mut c = base(spec, client_id);
    c.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "300000");
    for (k, v) in &spec.producer {
        c.set(k, v);
    }
    c
}

/// A transactional producer for an exactly-once stage: `transactional.id` must be stable
/// across restarts of the same instance so that a restarted instance fences its crashed
/// predecessor and aborts its open transaction at once.
pub fn transactional_producer(spec: &KafkaSpec, client_id: &str, transactional_id: &str) -> ClientConfig {
    let mut c = producer(spec, client_id);
    // A transaction of a crashed instance that no restart fences is aborted by the broker
    // after this long; read_committed readers wait behind it until then. librdkafka wants
    // every message to time out no later than its transaction.
    c.set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", "20000")
        .set("message.timeout.ms", "20000");
    for (k, v) in &spec.producer {
        c.set(k, v);
    }
    c
}

pub fn consumer(spec: &KafkaSpec, client_id: &str, group: &str, commit_interval: Duration) -> ClientConfig {
    let mut c = base(spec, client_id);
    c.set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", commit_interval.as_millis().max(100).to_string())
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "2000")
        .set("enable.partition.eof", "false")
        .set("queued.max.messages.kbytes", "16384")
        .set("isolation.level", "read_committed");
    for (k, v) in &spec.consumer {
        c.set(k, v);
    }
    c
}

/// A consumer outside any group (tail, lag queries): assigns partitions itself and never
/// commits.
pub fn reader(spec: &KafkaSpec, client_id: &str) -> ClientConfig {
    let mut c = base(spec, client_id);
    c.set("group.id", format!("weir-reader-{}", uuid::Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("isolation.level", "read_committed");
    c
}

/// The configuration as `key=value` pairs with secrets masked, for logs.
pub fn redacted(c: &ClientConfig) -> Vec<String> {
    let mut pairs: Vec<String> = c
        .config_map()
        .iter()
        .map(|(k, v)| if SECRET_KEYS.contains(&&**k) { format!("{k}=***") } else { format!("{k}={v}") })
        .collect();
    pairs.sort();
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_pass_through_wins() {
        let mut spec = KafkaSpec::default();
        spec.security.password = Some("hunter2".into());
        spec.security.sasl_mechanism = Some("SCRAM-SHA-512".into());
        spec.producer.insert("linger.ms".into(), "50".into());
        let c = producer(&spec, "weir");
        let shown = redacted(&c).join(" ");
        assert!(shown.contains("sasl.password=***"));
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("linger.ms=50"));
        assert!(shown.contains("acks=all"));
    }
}
