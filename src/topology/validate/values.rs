//! Values that must parse or stay in range: durations, sizes, counts, schemas, listen
//! addresses and transport settings. `plan` relies on these having been checked here.

use super::{hint, list, Cx};
use crate::topology::plan::RetryPolicy;
use crate::topology::spec::{Backoff, CircuitBreakerSpec, CommitSpec, RetrySpec, TransportKind};
use crate::topology::units::{parse_bytes, parse_duration};
use std::collections::BTreeMap;
use std::time::Duration;

const PROTOCOLS: &[&str] = &["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"];
const MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

pub(super) fn check(cx: &mut Cx<'_>) {
    topics(cx);
    stages(cx);
    ingress(cx);
    transport(cx);
    tracing(cx);
}

fn tracing(cx: &mut Cx<'_>) {
    let t = &cx.spec.tracing;
    if let Some(s) = t.sampling {
        if !(0.0..=1.0).contains(&s) {
            cx.at_value(&["tracing", "sampling"], format!("`sampling` must be between 0.0 and 1.0, not {s}"));
        }
    }
    if let Some(e) = t.endpoint.as_deref().filter(|e| !e.trim().is_empty()) {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            cx.at_value(
                &["tracing", "endpoint"],
                format!("`endpoint` must be an http:// or https:// URL (OTLP/HTTP, e.g. http://127.0.0.1:4318), not `{e}`"),
            );
        }
    }
}

fn topics(cx: &mut Cx<'_>) {
    let spec = cx.spec;
    let types = cx.catalog.payload_type_names();
    for (name, t) in &spec.topics {
        let name = name.as_str();
        at_least_one(cx, &["topics", name, "partitions"], Some(t.partitions));
        at_least_one(cx, &["topics", name, "replication_factor"], t.replication_factor.map(u32::from));
        duration(cx, &["topics", name, "retention"], t.retention.as_deref());
        if let Some(ty) = &t.payload_type {
            if t.schema.is_some() {
                cx.at_key(
                    &["topics", name, "payload_type"],
                    "topic sets both `schema` and `payload_type`: keep one of them".to_string(),
                );
            }
            if cx.catalog.payload_type_fields(ty).is_none() {
                cx.at_value(
                    &["topics", name, "payload_type"],
                    format!(
                        "unknown payload type `{ty}`{}; registered types: {}",
                        hint(ty, types.iter().map(String::as_str)),
                        list(types.iter().map(String::as_str))
                    ),
                );
            }
        }
        if let Some(schema) = &t.schema {
            if let Err(e) = jsonschema::validator_for(schema) {
                cx.at_key(
                    &["topics", name, "schema"],
                    format!("`schema` is not a valid JSON Schema: {e}; fix it or remove it"),
                );
            }
        }
    }
}

fn stages(cx: &mut Cx<'_>) {
    let spec = cx.spec;
    let d = &spec.defaults;
    at_least_one(cx, &["defaults", "concurrency"], d.concurrency);
    at_least_one(cx, &["defaults", "max_in_flight"], d.max_in_flight);
    retry(cx, &["defaults", "retry"], d.retry.as_ref());
    commit(cx, &["defaults", "commit"], d.commit.as_ref());
    duration(cx, &["defaults", "drain_timeout"], d.drain_timeout.as_deref());
    positive_duration(cx, &["defaults", "timeout"], d.timeout.as_deref());
    for (name, s) in &spec.stages {
        let name = name.as_str();
        at_least_one(cx, &["stages", name, "concurrency"], s.concurrency);
        at_least_one(cx, &["stages", name, "max_in_flight"], s.max_in_flight);
        retry(cx, &["stages", name, "retry"], s.retry.as_ref());
        commit(cx, &["stages", name, "commit"], s.commit.as_ref());
        duration(cx, &["stages", name, "drain_timeout"], s.drain_timeout.as_deref());
        positive_duration(cx, &["stages", name, "timeout"], s.timeout.as_deref());
        if let Some(r) = &s.rate_limit {
            at_least_one(cx, &["stages", name, "rate_limit", "per_second"], Some(r.per_second));
            at_least_one(cx, &["stages", name, "rate_limit", "burst"], r.burst);
        }
        if let Some(b) = &s.circuit_breaker {
            circuit_breaker(cx, &["stages", name, "circuit_breaker"], b);
        }
    }
}

fn circuit_breaker(cx: &mut Cx<'_>, base: &[&str], b: &CircuitBreakerSpec) {
    let path = |field: &'static str| [base, &[field]].concat();
    if let Some(r) = b.failure_ratio {
        if !(r > 0.0 && r <= 1.0) {
            cx.at_value(
                &path("failure_ratio"),
                format!("`failure_ratio` must be above 0 and at most 1 (a share of failed attempts, e.g. 0.5), not {r}"),
            );
        }
    }
    at_least_one(cx, &path("min_calls"), b.min_calls);
    positive_duration(cx, &path("window"), b.window.as_deref());
    positive_duration(cx, &path("open_for"), b.open_for.as_deref());
}

/// A duration that must parse and be longer than zero.
fn positive_duration(cx: &mut Cx<'_>, path: &[&str], v: Option<&str>) {
    if let Some(Some(d)) = duration(cx, path, v) {
        if d.is_zero() {
            let field = path.last().copied().unwrap_or_default();
            cx.at_value(path, format!("`{field}` must be longer than zero, e.g. `5s`"));
        }
    }
}

fn retry(cx: &mut Cx<'_>, base: &[&str], r: Option<&RetrySpec>) {
    let Some(r) = r else { return };
    let path = |field: &'static str| [base, &[field]].concat();
    at_least_one(cx, &path("attempts"), r.attempts);
    let initial = duration(cx, &path("initial"), r.initial.as_deref());
    let max = duration(cx, &path("max"), r.max.as_deref());
    if r.backoff == Some(Backoff::None) {
        no_retry(cx, base, r);
        return;
    }
    let defaults = RetryPolicy::default();
    if let (Some(i), Some(m)) = (initial, max) {
        let (i, m) = (i.unwrap_or(defaults.initial), m.unwrap_or(defaults.max));
        if i > m {
            let which = if r.max.is_none() { ", the default" } else { "" };
            cx.at_value(
                &path("initial"),
                format!(
                    "`retry.initial` ({}) is longer than `retry.max` ({}{which}): raise `max` or lower `initial`",
                    humantime::format_duration(i),
                    humantime::format_duration(m)
                ),
            );
        }
    }
}

/// `backoff: none` dead-letters at the first failure, so settings that only shape retries
/// would be silently ignored: say so at each of them.
fn no_retry(cx: &mut Cx<'_>, base: &[&str], r: &RetrySpec) {
    let path = |field: &'static str| [base, &[field]].concat();
    if let Some(n) = r.attempts.filter(|n| *n > 1) {
        cx.at_value(
            &path("attempts"),
            format!(
                "`retry.attempts: {n}` is never reached with `retry.backoff: none`, which dead-letters a record at \
                 its first failure (no retry): remove `attempts` (or set it to 1), or pick `fixed`, `linear` or \
                 `exponential` to retry up to {n} times"
            ),
        );
    }
    for (field, value) in [("initial", &r.initial), ("max", &r.max)] {
        if value.is_some() {
            cx.at_key(
                &path(field),
                format!(
                    "`retry.{field}` shapes the wait between retries, and `retry.backoff: none` never retries: \
                     remove `{field}`, or pick `fixed`, `linear` or `exponential`"
                ),
            );
        }
    }
}

fn commit(cx: &mut Cx<'_>, base: &[&str], c: Option<&CommitSpec>) {
    let Some(c) = c else { return };
    at_least_one(cx, &[base, &["every"]].concat(), c.every);
    let interval = [base, &["interval"]].concat();
    if let Some(Some(d)) = duration(cx, &interval, c.interval.as_deref()) {
        if d.is_zero() {
            cx.at_value(&interval, "`commit.interval` must be longer than zero, e.g. `1s`".to_string());
        }
    }
}

fn ingress(cx: &mut Cx<'_>) {
    let spec = cx.spec;
    let mut first_at: BTreeMap<(&str, Option<&str>), &str> = BTreeMap::new();
    for (name, i) in cx.in_file_order("ingress", &spec.ingress) {
        listen(cx, &["ingress", name, "listen"], &i.listen);
        if let Some(p) = i.path.as_deref().filter(|p| !p.starts_with('/')) {
            cx.at_value(&["ingress", name, "path"], format!("`path` `{p}` must start with `/`, e.g. `/{p}`"));
        }
        if let Some(b) = &i.max_body {
            if let Err(e) = parse_bytes(b) {
                cx.at_value(&["ingress", name, "max_body"], format!("`max_body`: {e}"));
            }
        }
        let route = (i.listen.as_str(), i.path.as_deref());
        match first_at.get(&route) {
            Some(other) => cx.at_value(
                &["ingress", name, "path"],
                format!(
                    "ingress `{other}` already serves `{}` on `{}`: give this one another `path` or `listen`",
                    i.path.as_deref().unwrap_or("(default path)"),
                    i.listen
                ),
            ),
            None => {
                first_at.insert(route, name);
            }
        }
    }
}

fn transport(cx: &mut Cx<'_>) {
    let spec = cx.spec;
    if let Some(l) = &spec.admin.listen {
        listen(cx, &["admin", "listen"], l);
    }
    if let Some(l) = &spec.metrics.listen {
        listen(cx, &["metrics", "listen"], l);
    }
    let h = &spec.http;
    duration(cx, &["http", "header_timeout"], h.header_timeout.as_deref());
    duration(cx, &["http", "body_timeout"], h.body_timeout.as_deref());
    duration(cx, &["http", "shutdown_grace"], h.shutdown_grace.as_deref());
    if h.max_concurrent_requests == Some(0) {
        cx.at_value(&["http", "max_concurrent_requests"], "`max_concurrent_requests` must be at least 1".to_string());
    }
    if spec.embedded.max_records_per_partition == Some(0) {
        cx.at_value(
            &["embedded", "max_records_per_partition"],
            "`max_records_per_partition` must be at least 1".to_string(),
        );
    }
    duration(cx, &["embedded", "sync_interval"], spec.embedded.sync_interval.as_deref());
    let k = &spec.kafka;
    if spec.transport == TransportKind::Kafka && k.brokers.as_deref().is_none_or(|b| b.trim().is_empty()) {
        cx.at_value(
            &["transport"],
            "transport `kafka` needs `kafka.brokers`, e.g. `brokers: ${KAFKA_BROKERS:-127.0.0.1:9092}`".to_string(),
        );
    }
    let sec = &k.security;
    if let Some(p) = sec.protocol.as_deref().filter(|p| !PROTOCOLS.contains(p)) {
        cx.at_value(
            &["kafka", "security", "protocol"],
            format!(
                "unknown security protocol `{p}`{}; use one of {}",
                hint(p, PROTOCOLS.iter().copied()),
                list(PROTOCOLS.iter().copied())
            ),
        );
    }
    if let Some(m) = sec.sasl_mechanism.as_deref().filter(|m| !MECHANISMS.contains(m)) {
        cx.at_value(
            &["kafka", "security", "sasl_mechanism"],
            format!(
                "unknown SASL mechanism `{m}`{}; use one of {}",
                hint(m, MECHANISMS.iter().copied()),
                list(MECHANISMS.iter().copied())
            ),
        );
    }
    if matches!(sec.protocol.as_deref(), Some("SASL_PLAINTEXT" | "SASL_SSL")) {
        for (field, value) in [("username", &sec.username), ("password", &sec.password)] {
            if value.as_deref().is_none_or(str::is_empty) {
                cx.at_value(
                    &["kafka", "security", "protocol"],
                    format!(
                        "protocol `{}` needs `kafka.security.{field}` (write `${{VAR}}` for secrets)",
                        sec.protocol.as_deref().unwrap_or_default()
                    ),
                );
            }
        }
    }
}

/// Reports a value below 1.
fn at_least_one(cx: &mut Cx<'_>, path: &[&str], v: Option<u32>) {
    if v == Some(0) {
        let field = path.last().copied().unwrap_or_default();
        cx.at_value(path, format!("`{field}` must be at least 1"));
    }
}

/// The parsed duration (`Some(None)` when absent), or `None` after reporting it.
fn duration(cx: &mut Cx<'_>, path: &[&str], v: Option<&str>) -> Option<Option<Duration>> {
    let Some(text) = v else { return Some(None) };
    match parse_duration(text) {
        Ok(d) => Some(Some(d)),
        Err(e) => {
            let field = path.last().copied().unwrap_or_default();
            cx.at_value(path, format!("`{field}`: {e}"));
            None
        }
    }
}

/// `host:port`, as the listener binds it (a name is resolved then, so any host name goes).
fn listen(cx: &mut Cx<'_>, path: &[&str], addr: &str) {
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return;
    }
    let ok = addr.rsplit_once(':').is_some_and(|(host, port)| {
        port.parse::<u16>().is_ok()
            && !host.is_empty()
            && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    });
    if !ok {
        cx.at_value(
            path,
            format!("`listen` `{addr}` is not a host:port address, e.g. `0.0.0.0:8080` or `localhost:8080`"),
        );
    }
}
