//! The shape of `topology.yaml`, as serde reads it. Every field is documented in
//! `docs/topology.md`; keep the two in step. Values here are still unvalidated text
//! (durations, rates, references): `validate` checks them with source locations and
//! `plan` turns them into the typed plan the runtime executes.
//!
//! Unknown keys are not refused here but by `source::SourceIndex::unknown_fields`, which
//! reports every one with its location and lets validation go on to the other problems.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The whole file.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct TopologySpec {
    /// A name for logs and the graph title; defaults to the file stem.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub transport: TransportKind,
    #[serde(default)]
    pub embedded: EmbeddedSpec,
    /// Reserved for the Kafka transport; accepted and validated for shape only.
    #[serde(default)]
    pub kafka: KafkaSpec,
    #[serde(default)]
    pub admin: AdminSpec,
    #[serde(default)]
    pub metrics: MetricsSpec,
    #[serde(default)]
    pub http: HttpSpec,
    #[serde(default)]
    pub tracing: TracingSpec,
    /// Defaults applied to every stage that does not set the field itself.
    #[serde(default)]
    pub defaults: StageDefaults,
    #[serde(default)]
    pub topics: BTreeMap<String, TopicSpec>,
    #[serde(default)]
    pub stages: BTreeMap<String, StageSpec>,
    #[serde(default)]
    pub ingress: BTreeMap<String, IngressSpec>,
    /// node name → the stages and ingress listeners that node runs.
    #[serde(default)]
    pub nodes: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    #[default]
    Embedded,
    Kafka,
}

/// The in-process transport: a partitioned log for one process, kept on disk under
/// `<data dir>/log/` unless `durable: false`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct EmbeddedSpec {
    /// Records kept per partition before producers wait (default 100000).
    #[serde(default)]
    pub max_records_per_partition: Option<u64>,
    /// Keep the log on disk so a restart resumes where it stopped (default true);
    /// `false`: memory only, everything unconsumed is lost when the process ends.
    #[serde(default)]
    pub durable: Option<bool>,
    /// How often the on-disk log is fsynced, e.g. `500ms` (default: the shortest commit
    /// interval of the node's stages). What a power loss can take.
    #[serde(default)]
    pub sync_interval: Option<String>,
}

/// Kafka connection settings (used by the Kafka transport). `Debug` masks the password
/// and every pass-through property that may hold a secret ([`KafkaSpec::is_secret_property`]).
#[derive(Clone, Deserialize, Default)]
pub struct KafkaSpec {
    #[serde(default)]
    pub brokers: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub security: KafkaSecuritySpec,
    #[serde(default)]
    pub auto_create_topics: bool,
    /// librdkafka properties passed through to every producer.
    #[serde(default)]
    pub producer: BTreeMap<String, String>,
    /// librdkafka properties passed through to every consumer.
    #[serde(default)]
    pub consumer: BTreeMap<String, String>,
}

#[derive(Clone, Deserialize, Default)]
pub struct KafkaSecuritySpec {
    /// PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL.
    #[serde(default)]
    pub protocol: Option<String>,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[serde(default)]
    pub sasl_mechanism: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    /// Write `${VAR}` here; the value is never logged.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub ca_location: Option<String>,
    #[serde(default)]
    pub certificate_location: Option<String>,
    #[serde(default)]
    pub key_location: Option<String>,
}

impl KafkaSpec {
    /// Whether a librdkafka property may hold a secret (`sasl.password`, `ssl.key.pem`,
    /// `sasl.oauthbearer.config`, `ssl.keystore.password`, …): by name, so that keys weir
    /// does not know are masked too. A few harmless ones (`ssl.key.location`) are masked
    /// with them; showing a secret is the mistake to avoid.
    pub fn is_secret_property(name: &str) -> bool {
        const MARKERS: &[&str] = &["password", "secret", "pem", "key", "oauthbearer"];
        let name = name.to_ascii_lowercase();
        MARKERS.iter().any(|m| name.contains(m))
    }
}

const MASK: &str = "***";

/// Pass-through properties with secret values masked.
struct MaskedProperties<'a>(&'a BTreeMap<String, String>);

impl std::fmt::Debug for MaskedProperties<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, if KafkaSpec::is_secret_property(k) { MASK } else { v.as_str() })))
            .finish()
    }
}

impl std::fmt::Debug for KafkaSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSpec")
            .field("brokers", &self.brokers)
            .field("client_id", &self.client_id)
            .field("security", &self.security)
            .field("auto_create_topics", &self.auto_create_topics)
            .field("producer", &MaskedProperties(&self.producer))
            .field("consumer", &MaskedProperties(&self.consumer))
            .finish()
    }
}

impl std::fmt::Debug for KafkaSecuritySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSecuritySpec")
            .field("protocol", &self.protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| MASK))
            .field("ca_location", &self.ca_location)
            .field("certificate_location", &self.certificate_location)
            .field("key_location", &self.key_location)
            .finish()
    }
}

#[cfg(test)]
mod kafka_spec_tests {
    use super::*;

    #[test]
    fn debug_masks_the_password_and_secret_pass_through_properties() {
        let mut spec = KafkaSpec::default();
        spec.security.password = Some("hunter2".into());
        spec.security.username = Some("weir".into());
        spec.producer.insert("ssl.key.pem".into(), "-----BEGIN PRIVATE KEY-----abc".into());
        spec.consumer.insert("sasl.oauthbearer.config".into(), "principal=x secret=oauth-s3cret".into());
        spec.consumer.insert("fetch.min.bytes".into(), "4096".into());
        let shown = format!("{spec:?}");
        for secret in ["hunter2", "PRIVATE KEY", "oauth-s3cret"] {
            assert!(!shown.contains(secret), "`{secret}` shown: {shown}");
        }
        assert!(shown.contains("\"weir\"") && shown.contains("\"4096\""), "{shown}");
        assert!(shown.contains("password: Some(\"***\")"), "{shown}");
    }

    #[test]
    fn secret_properties_are_known_by_name() {
        for k in ["sasl.password", "ssl.key.pem", "ssl.keystore.password", "sasl.oauthbearer.config",
            "sasl.oauthbearer.client.secret", "ssl.certificate.pem", "SSL.KEY.PASSWORD", "ssl_key"] {
            assert!(KafkaSpec::is_secret_property(k), "{k}");
        }
        for k in ["bootstrap.servers", "linger.ms", "sasl.username", "security.protocol", "fetch.min.bytes"] {
            assert!(!KafkaSpec::is_secret_property(k), "{k}");
        }
    }
}

/// The management port: produce, tail and `/stats` (what `weir produce` and `weir tail`
/// use). Off unless `listen` is set. Every request needs `Authorization: Bearer <token>`
/// when a token is set; a non-loopback `listen` without a token refuses to start.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct AdminSpec {
    #[serde(default)]
    pub listen: Option<String>,
    /// The bearer token management requests must carry; write `${WEIR_ADMIN_TOKEN:-}`.
    #[serde(default, deserialize_with = "admin_token")]
    pub token: Option<AdminToken>,
}

/// The read-only port: `/metrics`, `/healthz`, `/readyz`, safe to scrape without
/// credentials. Off unless `listen` is set.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct MetricsSpec {
    #[serde(default)]
    pub listen: Option<String>,
}

/// Bounds of every HTTP listener of a node: ingress, metrics and admin (docs/admin.md).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct HttpSpec {
    /// Longest wait for a request's complete headers (default 10s).
    #[serde(default)]
    pub header_timeout: Option<String>,
    /// Longest wait for a request's whole body (default 30s); 408 after.
    #[serde(default)]
    pub body_timeout: Option<String>,
    /// Requests served at once per listener (default 512); 503 beyond.
    #[serde(default)]
    pub max_concurrent_requests: Option<u32>,
    /// After stop, how long requests in flight may still run (default 3s).
    #[serde(default)]
    pub shutdown_grace: Option<String>,
}

/// The admin bearer token. A secret: its `Debug` never shows it, and nothing logs it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    pub fn new(token: impl Into<String>) -> Self {
        AdminToken(token.into())
    }

    /// The token itself, for comparing a request's credentials or sending them.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// A token written as text or, after `${VAR}` substitution of an all-digit value, as a
/// number; empty or null means no token.
fn admin_token<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<AdminToken>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        S(String),
        U(u64),
        I(i64),
        F(f64),
        B(bool),
    }
    let text = match Option::<Text>::deserialize(d)? {
        None => return Ok(None),
        Some(Text::S(s)) => s,
        Some(Text::U(n)) => n.to_string(),
        Some(Text::I(n)) => n.to_string(),
        Some(Text::F(n)) => n.to_string(),
        Some(Text::B(b)) => b.to_string(),
    };
    let text = text.trim();
    Ok((!text.is_empty()).then(|| AdminToken(text.to_string())))
}

/// Span export over OTLP/HTTP. Off unless an endpoint is set here or in
/// `OTEL_EXPORTER_OTLP_ENDPOINT`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct TracingSpec {
    /// OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318` (`/v1/traces` is appended).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Fraction of new traces recorded, 0.0..=1.0 (default 1.0). Stages follow the
    /// decision made at ingress, so a trace is whole or absent.
    #[serde(default)]
    pub sampling: Option<f64>,
    /// `service.name`; default `weir-<node>` (or `weir` when one process runs everything).
    #[serde(default)]
    pub service_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct StageDefaults {
    #[serde(default)]
    pub concurrency: Option<u32>,
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    #[serde(default)]
    pub retry: Option<RetrySpec>,
    #[serde(default)]
    pub commit: Option<CommitSpec>,
    #[serde(default)]
    pub drain_timeout: Option<String>,
    /// Per-attempt bound on a stage's `handle` (e.g. `5s`); on expiry the attempt is
    /// cancelled and counts as a transient failure.
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TopicSpec {
    #[serde(default = "one")]
    pub partitions: u32,
    /// How long records are kept (Kafka `retention.ms`), e.g. `7d`.
    #[serde(default)]
    pub retention: Option<String>,
    #[serde(default)]
    pub cleanup_policy: CleanupPolicy,
    #[serde(default)]
    pub replication_factor: Option<u16>,
    /// Kafka topic compression.type (e.g. `zstd`, `lz4`, `producer`).
    #[serde(default)]
    pub compression: Option<String>,
    /// An inline JSON Schema every payload on this topic must satisfy.
    #[serde(default)]
    pub schema: Option<serde_json::Value>,
    /// The name of a registered Rust payload type every payload must decode into.
    #[serde(default)]
    pub payload_type: Option<String>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CleanupPolicy {
    #[default]
    Delete,
    Compact,
}

/// A stage: a consumer group reading `from`, a kind's behaviour, named outputs.
#[derive(Debug, Clone, Deserialize)]
pub struct StageSpec {
    pub kind: String,
    pub from: OneOrMany,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub to: Outputs,
    #[serde(default)]
    pub key: Option<KeySpec>,
    #[serde(default)]
    pub concurrency: Option<u32>,
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    #[serde(default)]
    pub retry: Option<RetrySpec>,
    #[serde(default)]
    pub dlq: Option<String>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitSpec>,
    #[serde(default)]
    pub commit: Option<CommitSpec>,
    #[serde(default)]
    pub drain_timeout: Option<String>,
    /// Per-attempt bound on `handle`; overrides `defaults.timeout`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Pauses the stage while its attempts keep failing transiently (an outage).
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerSpec>,
    /// Declares that this stage closes a loop on purpose (e.g. executor ⇄ domain services).
    #[serde(default)]
    pub allow_cycle: bool,
    #[serde(default)]
    pub guarantee: Guarantee,
    /// Free settings for the stage kind; the kind's config struct checks them.
    #[serde(default)]
    pub config: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// `to: topic` is short for `to: {default: topic}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Outputs {
    Default(String),
    Named(BTreeMap<String, String>),
}

impl Default for Outputs {
    fn default() -> Self {
        Outputs::Named(BTreeMap::new())
    }
}

impl Outputs {
    /// output name → topic.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        match self {
            Outputs::Default(t) => BTreeMap::from([("default".to_string(), t.clone())]),
            Outputs::Named(m) => m.clone(),
        }
    }
}

/// `key: field` keys every output by that field; a map sets it per output name.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum KeySpec {
    All(String),
    PerOutput(BTreeMap<String, String>),
}

impl KeySpec {
    pub fn for_output(&self, output: &str) -> Option<&str> {
        match self {
            KeySpec::All(f) => Some(f),
            KeySpec::PerOutput(m) => m.get(output).map(String::as_str),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct RetrySpec {
    #[serde(default)]
    pub attempts: Option<u32>,
    #[serde(default)]
    pub backoff: Option<Backoff>,
    #[serde(default)]
    pub initial: Option<String>,
    #[serde(default)]
    pub max: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    #[default]
    Exponential,
    Fixed,
    Linear,
    /// No retry: a failed record is dead-lettered at its first failure.
    None,
}

/// `circuit_breaker:` of a stage. Every field has a default (see `plan`).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct CircuitBreakerSpec {
    /// Opens when this share of the window's attempts failed transiently, in (0, 1].
    #[serde(default)]
    pub failure_ratio: Option<f64>,
    /// ... and at least this many attempts ended in the window.
    #[serde(default)]
    pub min_calls: Option<u32>,
    /// The sliding window the ratio is computed over, e.g. `30s`.
    #[serde(default)]
    pub window: Option<String>,
    /// How long it stays open before letting a probe through, e.g. `5s`.
    #[serde(default)]
    pub open_for: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSpec {
    pub per_second: u32,
    #[serde(default)]
    pub burst: Option<u32>,
}

/// When a partition consumer commits: after `every` completed records or `interval`,
/// whichever comes first, and always on revocation and shutdown.
#[derive(Debug, Clone, Deserialize)]
pub struct CommitSpec {
    #[serde(default)]
    pub every: Option<u32>,
    #[serde(default)]
    pub interval: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Guarantee {
    #[default]
    AtLeastOnce,
    ExactlyOnce,
}

/// An HTTP listener that publishes requests into a topic.
#[derive(Debug, Clone, Deserialize)]
pub struct IngressSpec {
    pub kind: String,
    pub listen: String,
    #[serde(default)]
    pub path: Option<String>,
    pub to: String,
    #[serde(default)]
    pub key: Option<String>,
    /// Largest accepted request body, e.g. `256KiB` (default 1MiB).
    #[serde(default)]
    pub max_body: Option<String>,
    #[serde(default)]
    pub config: serde_json::Map<String, serde_json::Value>,
}
