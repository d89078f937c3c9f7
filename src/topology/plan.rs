//! The plan: what one node runs, with every value parsed and every default applied.
//! Built from a validated [`Topology`](super::Topology); the runtime reads only this.

use super::spec::{Backoff, CleanupPolicy, Guarantee, TopologySpec, TransportKind};
use super::units::{parse_bytes, parse_duration};
use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::time::Duration;

pub const DEFAULT_CONCURRENCY: u32 = 16;
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 256;
pub const DEFAULT_COMMIT_EVERY: u32 = 1000;
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
pub const DEFAULT_EMBEDDED_CAPACITY: u64 = 100_000;

#[derive(Debug, Clone)]
pub struct Plan {
    pub topology_name: String,
    /// The node this plan is for; `None` runs every stage in one process.
    pub node: Option<String>,
    pub transport: TransportKind,
    pub embedded_capacity: u64,
    /// Keep the embedded log on disk (under the node's data dir).
    pub embedded_durable: bool,
    /// How often the durable embedded log is fsynced.
    pub embedded_sync_interval: Duration,
    pub kafka: super::spec::KafkaSpec,
    /// The management port (produce, tail, `/stats`), if any.
    pub admin_listen: Option<String>,
    /// The bearer token the management port requires (redacted in `Debug`).
    pub admin_token: Option<super::spec::AdminToken>,
    /// The read-only port (`/metrics`, `/healthz`, `/readyz`), if any.
    pub metrics_listen: Option<String>,
    /// The listeners' bounds the topology sets (`http:`); unset ones keep their defaults.
    pub http: HttpPlan,
    pub tracing: super::spec::TracingSpec,
    /// Every declared topic (a node may produce to topics it does not consume).
    pub topics: BTreeMap<String, TopicPlan>,
    /// The stages this node runs.
    pub stages: Vec<StagePlan>,
    /// The ingress listeners this node runs.
    pub ingress: Vec<IngressPlan>,
}

/// `http:` of the topology, parsed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpPlan {
    pub header_timeout: Option<Duration>,
    pub body_timeout: Option<Duration>,
    pub max_concurrent_requests: Option<u32>,
    pub shutdown_grace: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct TopicPlan {
    pub name: String,
    pub partitions: i32,
    pub retention: Option<Duration>,
    pub cleanup_policy: CleanupPolicy,
    pub replication_factor: Option<u16>,
    pub compression: Option<String>,
    pub payload: PayloadDecl,
    /// Consumer groups that read this topic anywhere in the topology. The embedded log
    /// keeps a record until all of them have committed past it.
    pub reader_groups: BTreeSet<String>,
}

impl TopicPlan {
    /// A topic with `partitions` and nothing else declared: no retention, compression,
    /// payload type or reading groups (tests, benches, tools that make their own topics).
    pub fn bare(name: &str, partitions: i32) -> TopicPlan {
        TopicPlan {
            name: name.into(),
            partitions,
            retention: None,
            cleanup_policy: CleanupPolicy::default(),
            replication_factor: None,
            compression: None,
            payload: PayloadDecl::Any,
            reader_groups: BTreeSet::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PayloadDecl {
    Any,
    Schema(serde_json::Value),
    Type(String),
}

#[derive(Debug, Clone)]
pub struct StagePlan {
    pub name: String,
    pub kind: String,
    pub from: Vec<String>,
    pub group: String,
    /// output name → where it goes.
    pub outputs: BTreeMap<String, OutputPlan>,
    pub concurrency: usize,
    pub max_in_flight: usize,
    pub retry: RetryPolicy,
    pub dlq: Option<String>,
    pub rate_limit: Option<RateLimit>,
    pub commit: CommitPolicy,
    pub drain_timeout: Duration,
    /// Per-attempt bound on `handle`; `None` waits as long as the kind does.
    pub timeout: Option<Duration>,
    pub circuit_breaker: Option<CircuitBreakerPolicy>,
    pub guarantee: Guarantee,
    pub config: serde_json::Value,
}

/// `circuit_breaker:` of a stage, with its defaults applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CircuitBreakerPolicy {
    /// Opens at this share of transient failures, in (0, 1].
    pub failure_ratio: f64,
    /// Attempts the window must hold before the ratio counts.
    pub min_calls: u32,
    pub window: Duration,
    pub open_for: Duration,
}

impl Default for CircuitBreakerPolicy {
    fn default() -> Self {
        CircuitBreakerPolicy {
            failure_ratio: 0.5,
            min_calls: 10,
            window: Duration::from_secs(30),
            open_for: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone)]
pub struct OutputPlan {
    pub topic: String,
    /// The payload field (or envelope field) whose value keys records on this output;
    /// `None` keeps the input record's key.
    pub key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts including the first one.
    pub attempts: u32,
    pub backoff: Backoff,
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            backoff: Backoff::Exponential,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`, where `attempt` (1-based) just failed.
    pub fn delay(&self, attempt: u32) -> Duration {
        let n = attempt.max(1);
        let d = match self.backoff {
            Backoff::Fixed => self.initial,
            Backoff::Linear => self.initial.saturating_mul(n),
            Backoff::Exponential => self.initial.saturating_mul(1u32 << (n - 1).min(20)),
            Backoff::None => Duration::ZERO,
        };
        d.min(self.max)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitPolicy {
    pub every: u32,
    pub interval: Duration,
}

#[derive(Debug, Clone)]
pub struct IngressPlan {
    pub name: String,
    pub kind: String,
    pub listen: String,
    pub path: Option<String>,
    pub topic: String,
    pub key: Option<String>,
    pub max_body: usize,
    pub config: serde_json::Value,
}

/// Why a plan could not be made. Validation reports these with locations first;
/// reaching one here means the plan was asked for a node the file does not declare.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("node `{node}` is not declared in `nodes` (declared: {declared})")]
    UnknownNode { node: String, declared: String },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
}

pub(crate) fn build(
    spec: &TopologySpec,
    default_name: &str,
    node: Option<&str>,
) -> Result<Plan, PlanError> {
    let members: Option<BTreeSet<&str>> = match node {
        None => None,
        Some(n) => match spec.nodes.get(n) {
            Some(list) => Some(list.iter().map(String::as_str).collect()),
            None => {
                return Err(PlanError::UnknownNode {
                    node: n.to_string(),
                    declared: spec.nodes.keys().cloned().collect::<Vec<_>>().join(", "),
                })
            }
        },
    };
    let runs = |name: &str| members.as_ref().is_none_or(|m| m.contains(name));

    let mut topics = BTreeMap::new();
    for (name, t) in &spec.topics {
        let payload = match (&t.schema, &t.payload_type) {
            (Some(s), _) => PayloadDecl::Schema(s.clone()),
            (None, Some(ty)) => PayloadDecl::Type(ty.clone()),
            (None, None) => PayloadDecl::Any,
        };
        topics.insert(
            name.clone(),
            TopicPlan {
                name: name.clone(),
                partitions: i32::try_from(t.partitions).map_err(|_| invalid(name, "partitions", "too large"))?,
                retention: opt_duration(&t.retention, name, "retention")?,
                cleanup_policy: t.cleanup_policy,
                replication_factor: t.replication_factor,
                compression: t.compression.clone(),
                payload,
                reader_groups: BTreeSet::new(),
            },
        );
    }

    let d = &spec.defaults;
    let mut stages = Vec::new();
    for (name, s) in &spec.stages {
        let group = stage_group(name, s.group.as_deref());
        for topic in s.from.to_vec() {
            if let Some(t) = topics.get_mut(&topic) {
                t.reader_groups.insert(group.clone());
            }
        }
        if !runs(name) {
            continue;
        }
        let outputs = s
            .to
            .to_map()
            .into_iter()
            .map(|(out, topic)| {
                let key = s.key.as_ref().and_then(|k| k.for_output(&out)).map(str::to_string);
                (out, OutputPlan { topic, key })
            })
            .collect();
        let retry_spec = s.retry.as_ref().or(d.retry.as_ref());
        let mut retry = RetryPolicy::default();
        if let Some(r) = retry_spec {
            retry.attempts = r.attempts.unwrap_or(retry.attempts).max(1);
            retry.backoff = r.backoff.unwrap_or(retry.backoff);
            retry.initial = opt_duration(&r.initial, name, "retry.initial")?.unwrap_or(retry.initial);
            retry.max = opt_duration(&r.max, name, "retry.max")?.unwrap_or(retry.max);
        }
        if retry.backoff == Backoff::None {
            // No retry: the first failure is the last attempt, whatever `attempts` says
            // (validation refuses an `attempts` above 1 next to `backoff: none`).
            retry.attempts = 1;
        }
        let rate_limit = match &s.rate_limit {
            None => None,
            Some(r) => {
                let per_second = NonZeroU32::new(r.per_second)
                    .ok_or_else(|| invalid(name, "rate_limit.per_second", "must be at least 1"))?;
                let burst = match r.burst {
                    None => per_second,
                    Some(b) => NonZeroU32::new(b)
                        .ok_or_else(|| invalid(name, "rate_limit.burst", "must be at least 1"))?,
                };
                Some(RateLimit { per_second, burst })
            }
        };
        let commit_spec = s.commit.as_ref().or(d.commit.as_ref());
        let commit = CommitPolicy {
            every: commit_spec.and_then(|c| c.every).unwrap_or(DEFAULT_COMMIT_EVERY).max(1),
            interval: match commit_spec {
                Some(c) => opt_duration(&c.interval, name, "commit.interval")?,
                None => None,
            }
            .unwrap_or(DEFAULT_COMMIT_INTERVAL),
        };
        let drain = s.drain_timeout.as_ref().or(d.drain_timeout.as_ref()).cloned();
        let timeout = s.timeout.as_ref().or(d.timeout.as_ref()).cloned();
        let circuit_breaker = match &s.circuit_breaker {
            None => None,
            Some(b) => {
                let defaults = CircuitBreakerPolicy::default();
                Some(CircuitBreakerPolicy {
                    failure_ratio: b.failure_ratio.unwrap_or(defaults.failure_ratio),
                    min_calls: b.min_calls.unwrap_or(defaults.min_calls).max(1),
                    window: opt_duration(&b.window, name, "circuit_breaker.window")?.unwrap_or(defaults.window),
                    open_for: opt_duration(&b.open_for, name, "circuit_breaker.open_for")?.unwrap_or(defaults.open_for),
                })
            }
        };
        stages.push(StagePlan {
            name: name.clone(),
            kind: s.kind.clone(),
            from: s.from.to_vec(),
            group,
            outputs,
            concurrency: s.concurrency.or(d.concurrency).unwrap_or(DEFAULT_CONCURRENCY).max(1) as usize,
            max_in_flight: s.max_in_flight.or(d.max_in_flight).unwrap_or(DEFAULT_MAX_IN_FLIGHT).max(1)
                as usize,
            retry,
            dlq: s.dlq.clone(),
            rate_limit,
            commit,
            drain_timeout: opt_duration(&drain, name, "drain_timeout")?.unwrap_or(DEFAULT_DRAIN_TIMEOUT),
            timeout: opt_duration(&timeout, name, "timeout")?,
            circuit_breaker,
            guarantee: s.guarantee,
            config: serde_json::Value::Object(s.config.clone()),
        });
    }

    let mut ingress = Vec::new();
    for (name, i) in &spec.ingress {
        if !runs(name) {
            continue;
        }
        let max_body = match &i.max_body {
            None => DEFAULT_MAX_BODY,
            Some(s) => parse_bytes(s).map_err(|e| invalid(name, "max_body", &e))?,
        };
        ingress.push(IngressPlan {
            name: name.clone(),
            kind: i.kind.clone(),
            listen: i.listen.clone(),
            path: i.path.clone(),
            topic: i.to.clone(),
            key: i.key.clone(),
            max_body,
            config: serde_json::Value::Object(i.config.clone()),
        });
    }

    // Synced at each commit interval: a commit is then on disk one interval later at most.
    let embedded_sync_interval = match opt_duration(&spec.embedded.sync_interval, "embedded", "sync_interval")? {
        Some(d) => d,
        None => stages.iter().map(|s| s.commit.interval).min().unwrap_or(DEFAULT_COMMIT_INTERVAL),
    };
    Ok(Plan {
        topology_name: spec.name.clone().unwrap_or_else(|| default_name.to_string()),
        node: node.map(str::to_string),
        transport: spec.transport,
        embedded_capacity: spec.embedded.max_records_per_partition.unwrap_or(DEFAULT_EMBEDDED_CAPACITY).max(1),
        embedded_durable: spec.embedded.durable.unwrap_or(true),
        embedded_sync_interval,
        kafka: spec.kafka.clone(),
        admin_listen: spec.admin.listen.clone(),
        admin_token: spec.admin.token.clone(),
        metrics_listen: spec.metrics.listen.clone(),
        http: HttpPlan {
            header_timeout: opt_duration(&spec.http.header_timeout, "http", "header_timeout")?,
            body_timeout: opt_duration(&spec.http.body_timeout, "http", "body_timeout")?,
            max_concurrent_requests: spec.http.max_concurrent_requests,
            shutdown_grace: opt_duration(&spec.http.shutdown_grace, "http", "shutdown_grace")?,
        },
        tracing: spec.tracing.clone(),
        topics,
        stages,
        ingress,
    })
}

/// The consumer group of a stage: the declared one, else `weir.<stage>`.
pub fn stage_group(stage: &str, declared: Option<&str>) -> String {
    declared.map_or_else(|| format!("weir.{stage}"), str::to_string)
}

fn opt_duration(v: &Option<String>, owner: &str, field: &str) -> Result<Option<Duration>, PlanError> {
    v.as_deref()
        .map(|s| parse_duration(s).map_err(|e| invalid(owner, field, &e)))
        .transpose()
}

fn invalid(owner: &str, field: &str, reason: &str) -> PlanError {
    PlanError::Invalid { what: format!("`{owner}`.{field}"), reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_doubles_and_caps() {
        let p = RetryPolicy {
            attempts: 10,
            backoff: Backoff::Exponential,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
        };
        let delays: Vec<_> = (1..=5).map(|a| p.delay(a).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 500, 500]);
    }

    #[test]
    fn linear_and_fixed_backoff() {
        let mut p = RetryPolicy { backoff: Backoff::Linear, ..RetryPolicy::default() };
        assert_eq!(p.delay(3), Duration::from_millis(300));
        p.backoff = Backoff::Fixed;
        assert_eq!(p.delay(7), Duration::from_millis(100));
    }
}
