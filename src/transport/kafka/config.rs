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
//! - consumer `queued.max.messages.kbytes` / `queued.min.messages`: bounded prefetch, so a
//!   lagging topic cannot fill memory. weir reads each partition from its own queue, and
//!   librdkafka then applies both per partition: the bound (weir's default, or the value
//!   set under `kafka.consumer`) is the consumer's total, split across every partition of
//!   the topics it reads — the most it can be assigned.
//! - consumer `isolation.level=read_committed`: outputs of aborted transactions
//!   (exactly-once stages) are never read.

use crate::topology::spec::KafkaSpec;
use rdkafka::ClientConfig;
use std::time::Duration;

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

/// The prefetch budget of one consumer, in KiB, unless `kafka.consumer` sets its own.
const PREFETCH_KBYTES: u64 = 16 * 1024;
/// The prefetch budget of one consumer, in messages (librdkafka's per-partition default).
const PREFETCH_MESSAGES: u64 = 100_000;

/// One partition's share of a consumer's `total` prefetch bound over `partitions`
/// partitions: never above the total when summed, and at least 1 (librdkafka's minimum).
pub fn per_partition(total: u64, partitions: usize) -> u64 {
    let partitions = u64::try_from(partitions.max(1)).unwrap_or(u64::MAX);
    (total / partitions).max(1)
}

/// `partitions`: the partitions of every topic the consumer reads.
pub fn consumer(
    spec: &KafkaSpec,
    client_id: &str,
    group: &str,
    commit_interval: Duration,
    partitions: usize,
) -> ClientConfig {
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
        .set("isolation.level", "read_committed");
    for (k, v) in &spec.consumer {
        c.set(k, v);
    }
    for (key, default) in [("queued.max.messages.kbytes", PREFETCH_KBYTES), ("queued.min.messages", PREFETCH_MESSAGES)] {
        // A value that is not a number is left for librdkafka to refuse with its own error.
        let total = match spec.consumer.get(key) {
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) => n,
                Err(_) => continue,
            },
            None => default,
        };
        c.set(key, per_partition(total, partitions).to_string());
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

/// The configuration as `key=value` pairs with secrets masked, for logs. Any property
/// named like a secret is masked ([`KafkaSpec::is_secret_property`]), including
/// pass-through keys weir does not set itself.
pub fn redacted(c: &ClientConfig) -> Vec<String> {
    let mut pairs: Vec<String> = c
        .config_map()
        .iter()
        .map(|(k, v)| if KafkaSpec::is_secret_property(k) { format!("{k}=***") } else { format!("{k}={v}") })
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

    /// Issue 9: the prefetch bound applied per partition, so 72 partitions could prefetch
    /// 72 × the budget.
    #[test]
    fn the_prefetch_budget_is_split_across_partitions() {
        let spec = KafkaSpec::default();
        let get = |c: &ClientConfig, k: &str| c.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let one = consumer(&spec, "weir", "g", Duration::from_millis(500), 1);
        assert_eq!((get(&one, "queued.max.messages.kbytes"), get(&one, "queued.min.messages")), (16384, 100_000));
        let many = consumer(&spec, "weir", "g", Duration::from_millis(500), 72);
        let (kbytes, messages) = (get(&many, "queued.max.messages.kbytes"), get(&many, "queued.min.messages"));
        assert_eq!((kbytes, messages), (227, 1388));
        assert!(kbytes * 72 <= 16384 && messages * 72 <= 100_000);

        // An operator's bound is the consumer's total too.
        let mut spec = KafkaSpec::default();
        spec.consumer.insert("queued.max.messages.kbytes".into(), "65536".into());
        let c = consumer(&spec, "weir", "g", Duration::from_millis(500), 8);
        assert_eq!(get(&c, "queued.max.messages.kbytes"), 8192);
        assert_eq!((per_partition(10, 0), per_partition(10, 100)), (10, 1));
    }

    /// Issue 9: pass-through keys outside a fixed list (`ssl.key.pem`,
    /// `sasl.oauthbearer.config`, …) were logged in clear.
    #[test]
    fn every_secret_like_pass_through_key_is_masked() {
        let mut spec = KafkaSpec::default();
        let secrets = [
            ("ssl.key.pem", "PEM-KEY-VALUE"),
            ("ssl.certificate.pem", "PEM-CERT-VALUE"),
            ("sasl.oauthbearer.config", "OAUTH-CONFIG-VALUE"),
            ("sasl.oauthbearer.client.secret", "OAUTH-SECRET-VALUE"),
            ("ssl.keystore.password", "KEYSTORE-VALUE"),
            ("ssl.key.password", "KEY-PASSWORD-VALUE"),
        ];
        for (k, v) in secrets {
            spec.consumer.insert(k.into(), v.into());
        }
        let shown = redacted(&consumer(&spec, "weir", "g", Duration::from_millis(500), 1)).join(" ");
        for (k, v) in secrets {
            assert!(!shown.contains(v), "{k} shown in clear: {shown}");
            assert!(shown.contains(&format!("{k}=***")), "{k} missing: {shown}");
        }
        assert!(shown.contains("group.id=g"), "{shown}");
    }
}
