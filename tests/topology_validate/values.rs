//! Durations, sizes, counts, payload declarations, listeners and transport settings.

use super::*;

#[test]
fn invalid_durations_everywhere() {
    let yaml = "\
defaults:
  retry: {initial: soon}
  commit: {interval: 1 fortnight}
  drain_timeout: 10 secs later
topics:
  in: {retention: forever}
  out: {}
stages:
  work:
    kind: passthrough
    from: in
    to: out
    retry: {max: lots}
    commit: {interval: 0s}
    drain_timeout: x
";
    let d = errors(yaml);
    let found: Vec<_> = d.iter().map(|d| (d.line, d.subject.as_str())).collect();
    assert_eq!(
        found,
        vec![
            (2, ""),
            (3, ""),
            (4, ""),
            (6, "topic `in`"),
            (13, "stage `work`"),
            (14, "stage `work`"),
            (15, "stage `work`")
        ],
        "{}",
        Diagnostics(d.clone())
    );
    assert_at(&d[0], yaml, 2, "soon", "", "`initial`: `soon` is not a duration");
    assert_at(&d[1], yaml, 3, "1 fortnight", "", "`interval`: `1 fortnight` is not a duration");
    assert_at(&d[2], yaml, 4, "10 secs", "", "`drain_timeout`:");
    assert_at(&d[3], yaml, 6, "forever", "topic `in`", "`retention`: `forever` is not a duration");
    assert_at(&d[4], yaml, 13, "lots", "stage `work`", "`max`: `lots` is not a duration");
    assert_at(&d[5], yaml, 14, "0s", "stage `work`", "`commit.interval` must be longer than zero");
    assert_at(&d[6], yaml, 15, "x", "stage `work`", "`drain_timeout`: `x` is not a duration");
}

#[test]
fn invalid_max_body() {
    let yaml = "\
topics:
  in: {}
ingress:
  api: {kind: http-json, listen: '127.0.0.1:1', to: in, max_body: 2 parsecs}
";
    let d = only(yaml);
    assert_at(&d, yaml, 4, "2 parsecs", "ingress `api`", "`max_body`: `parsecs` is not a size unit");
}

const STAGE: &str = "\
topics:
  in: {partitions: 3}
  out: {}
stages:
  work:
    kind: passthrough
    from: in
    to: out
";

fn with(extra: &str) -> String {
    format!("{STAGE}{extra}")
}

#[test]
fn rate_limit_below_one() {
    let yaml = with("    rate_limit: {per_second: 0, burst: 0}\n");
    let d = errors(&yaml);
    assert_eq!(d.len(), 2, "{}", Diagnostics(d.clone()));
    assert_at(&d[0], &yaml, 9, "0,", "stage `work`", "`per_second` must be at least 1");
    assert_at(&d[1], &yaml, 9, "0}", "stage `work`", "`burst` must be at least 1");
}

#[test]
fn circuit_breaker_values_out_of_range() {
    let yaml = with(
        "    circuit_breaker:\n      failure_ratio: 0\n      min_calls: 0\n      window: 0s\n      open_for: whenever\n",
    );
    let d = errors(&yaml);
    assert_eq!(d.len(), 4, "{}", Diagnostics(d.clone()));
    assert_at(&d[0], &yaml, 10, "0", "stage `work`", "`failure_ratio` must be above 0 and at most 1");
    assert_at(&d[1], &yaml, 11, "0", "stage `work`", "`min_calls` must be at least 1");
    assert_at(&d[2], &yaml, 12, "0s", "stage `work`", "`window` must be longer than zero");
    assert_at(&d[3], &yaml, 13, "whenever", "stage `work`", "`open_for`: `whenever` is not a duration");
    // Above 1 is out of range too.
    let yaml = with("    circuit_breaker: {failure_ratio: 1.5}\n");
    let d = only(&yaml);
    assert_at(&d, &yaml, 9, "1.5", "stage `work`", "`failure_ratio` must be above 0 and at most 1");
}

#[test]
fn circuit_breaker_unknown_field_is_named_with_a_hint() {
    let yaml = with("    circuit_breaker: {failure_ratio: 0.5, open_fro: 5s}\n");
    let d = only(&yaml);
    assert_at(&d, &yaml, 9, "open_fro", "stage `work`", "unknown field `open_fro` in `circuit_breaker` of stage `work`");
    assert!(d.message.contains("open_for"), "{d}");
}

#[test]
fn circuit_breaker_within_range_is_accepted() {
    let yaml = with("    circuit_breaker: {failure_ratio: 1, min_calls: 1, window: 1s, open_for: 100ms}\n    timeout: 2s\n");
    let plan = parse_with(&yaml, &|_| None).unwrap_or_else(|d| panic!("{d}")).plan(None).expect("plan");
    let b = plan.stages[0].circuit_breaker.expect("a breaker");
    assert_eq!((b.failure_ratio, b.min_calls), (1.0, 1));
    assert_eq!((b.window, b.open_for), (std::time::Duration::from_secs(1), std::time::Duration::from_millis(100)));
    assert_eq!(plan.stages[0].timeout, Some(std::time::Duration::from_secs(2)));
}

#[test]
fn timeout_zero_or_unparsable() {
    let yaml = format!("defaults:\n  timeout: 0s\n{}", with("    timeout: soonish\n"));
    let d = errors(&yaml);
    assert_eq!(d.len(), 2, "{}", Diagnostics(d.clone()));
    assert_at(&d[0], &yaml, 2, "0s", "", "`timeout` must be longer than zero");
    assert_at(&d[1], &yaml, 11, "soonish", "stage `work`", "`timeout`: `soonish` is not a duration");
}

#[test]
fn retry_attempts_below_one() {
    let yaml = with("    retry:\n      attempts: 0\n");
    let d = only(&yaml);
    assert_at(&d, &yaml, 10, "0", "stage `work`", "`attempts` must be at least 1");
}

#[test]
fn retry_initial_longer_than_max() {
    let yaml = with("    retry: {initial: 2s, max: 1s}\n");
    let d = only(&yaml);
    assert_at(&d, &yaml, 9, "2s", "stage `work`", "`retry.initial` (2s) is longer than `retry.max` (1s)");
    // Against the default max (10s) too.
    let yaml = with("    retry: {initial: 1m}\n");
    let d = only(&yaml);
    assert_at(&d, &yaml, 9, "1m", "stage `work`", "(1m) is longer than `retry.max` (10s, the default)");
}

#[test]
fn partitions_below_one() {
    let yaml = STAGE.replace("{partitions: 3}", "{partitions: 0}");
    let d = only(&yaml);
    assert_at(&d, &yaml, 2, "0", "topic `in`", "`partitions` must be at least 1");
}

#[test]
fn concurrency_and_in_flight_below_one() {
    let yaml = format!("defaults: {{max_in_flight: 0}}\n{}", with("    concurrency: 0\n"));
    let d = errors(&yaml);
    assert_eq!(d.len(), 2, "{}", Diagnostics(d.clone()));
    assert_at(&d[0], &yaml, 1, "0", "", "`max_in_flight` must be at least 1");
    assert_at(&d[1], &yaml, 10, "0", "stage `work`", "`concurrency` must be at least 1");
}

#[test]
fn commit_every_below_one() {
    let yaml = with("    commit: {every: 0, interval: 1s}\n");
    let d = only(&yaml);
    assert_at(&d, &yaml, 9, "0", "stage `work`", "`every` must be at least 1");
}

#[test]
fn exactly_once_on_embedded_is_accepted() {
    let t = assert_valid(&with("    guarantee: exactly-once\n"));
    assert_eq!(t.plan(None).unwrap().stages[0].guarantee, weir::topology::spec::Guarantee::ExactlyOnce);
}

#[test]
fn schema_and_payload_type_together() {
    let yaml = "\
topics:
  t:
    schema: {type: object}
    payload_type: Order
";
    let d = only(yaml);
    assert_at(&d, yaml, 4, "payload_type", "topic `t`", "topic sets both `schema` and `payload_type`");
}

#[test]
fn unknown_payload_type() {
    let yaml = "\
topics:
  t: {payload_type: Bookin}
";
    let d = only(yaml);
    assert_at(&d, yaml, 2, "Bookin", "topic `t`", "unknown payload type `Bookin` (did you mean `Booking`?)");
}

#[test]
fn invalid_inline_schema() {
    let yaml = "\
topics:
  t:
    partitions: 2
    schema:
      type: objekt
";
    let d = only(yaml);
    assert_at(&d, yaml, 4, "schema", "topic `t`", "`schema` is not a valid JSON Schema");
}

#[test]
fn listen_that_is_not_host_port() {
    let yaml = "\
topics:
  in: {}
admin: {listen: 'localhost:9464'}
ingress:
  a: {kind: http-json, listen: '8080', to: in}
  b: {kind: http-json, listen: 'host:99999', to: in}
  c: {kind: http-json, listen: '[::1]:8080', to: in}
";
    let d = errors(yaml);
    assert_eq!(d.len(), 2, "{}", Diagnostics(d.clone()));
    assert_at(&d[0], yaml, 5, "'8080'", "ingress `a`", "`listen` `8080` is not a host:port address");
    assert_at(&d[1], yaml, 6, "'host:99999'", "ingress `b`", "`listen` `host:99999`");
}

#[test]
fn two_ingress_on_one_listen_address_and_path() {
    let yaml = "\
topics:
  in: {}
ingress:
  zz: {kind: http-json, listen: '0.0.0.0:8080', path: /in, to: in}
  b: {kind: http-json, listen: '0.0.0.0:8080', path: /other, to: in}
  a: {kind: http-json, listen: '0.0.0.0:8080', path: /in, to: in}
";
    // The later one in the file is at fault, whatever the names.
    let d = only(yaml);
    assert_at(&d, yaml, 6, "/in", "ingress `a`", "ingress `zz` already serves `/in` on `0.0.0.0:8080`");
}

#[test]
fn path_without_leading_slash() {
    let yaml = "\
topics:
  in: {}
ingress:
  a: {kind: http-json, listen: '0.0.0.0:8080', path: events, to: in}
";
    let d = only(yaml);
    assert_at(&d, yaml, 4, "events", "ingress `a`", "`path` `events` must start with `/`");
}

#[test]
fn kafka_without_brokers() {
    let yaml = "\
transport: kafka
topics:
  in: {}
";
    let d = only(yaml);
    assert_at(&d, yaml, 1, "kafka", "", "transport `kafka` needs `kafka.brokers`");
    assert_valid("transport: kafka\nkafka: {brokers: '127.0.0.1:9092'}\n");
}

#[test]
fn kafka_security_values() {
    let yaml = "\
kafka:
  brokers: b:9092
  security:
    protocol: SASL_SSLL
    sasl_mechanism: SCRAM-SHA-255
";
    let d = errors(yaml);
    assert_eq!(d.len(), 2, "{}", Diagnostics(d.clone()));
    assert_at(&d[0], yaml, 4, "SASL_SSLL", "", "unknown security protocol `SASL_SSLL` (did you mean `SASL_SSL`?)");
    assert_at(&d[1], yaml, 5, "SCRAM", "", "unknown SASL mechanism `SCRAM-SHA-255`");
}

#[test]
fn sasl_without_credentials() {
    let yaml = "\
kafka:
  security:
    protocol: SASL_PLAINTEXT
    sasl_mechanism: PLAIN
    username: weir
";
    let d = only(yaml);
    assert_at(&d, yaml, 3, "SASL_PLAINTEXT", "", "protocol `SASL_PLAINTEXT` needs `kafka.security.password`");
}

#[test]
fn tracing_sampling_and_endpoint_are_checked() {
    let yaml = "\
tracing:
  endpoint: 127.0.0.1:4318
  sampling: 1.5
  sevice_name: typo
topics:
  in: {}
  out: {}
stages:
  work: {kind: passthrough, from: in, to: out}
";
    let d = errors(yaml);
    let lines: Vec<u32> = d.iter().map(|d| d.line).collect();
    assert_eq!(lines, vec![2, 3, 4], "{}", Diagnostics(d.clone()));
    assert!(d[0].message.contains("http://"), "{}", d[0].message);
    assert!(d[1].message.contains("between 0.0 and 1.0"), "{}", d[1].message);
    assert!(d[2].message.contains("sevice_name"), "{}", d[2].message);
    assert_valid(
        "tracing: {endpoint: 'http://127.0.0.1:4318', sampling: 0.01, service_name: weir-x}\ntopics: {in: {}, out: {}}\nstages:\n  work: {kind: passthrough, from: in, to: out}\n",
    );
}

#[test]
fn retry_backoff_none_dead_letters_at_the_first_failure() {
    let yaml = with("    retry: {backoff: none}\n");
    let plan = parse_with(&yaml, &|_| None).unwrap_or_else(|d| panic!("{d}")).plan(None).expect("plan");
    assert_eq!(plan.stages[0].retry.attempts, 1, "no retry: one attempt");
    assert_eq!(plan.stages[0].retry.delay(1), std::time::Duration::ZERO);
    // `attempts: 1` says the same thing and is accepted.
    let yaml = with("    retry: {backoff: none, attempts: 1}\n");
    assert_valid(&yaml);
    // Under `defaults` too.
    let yaml = format!("defaults:\n  retry: {{backoff: none}}\n{STAGE}");
    let plan = parse_with(&yaml, &|_| None).unwrap_or_else(|d| panic!("{d}")).plan(None).expect("plan");
    assert_eq!(plan.stages[0].retry.attempts, 1);
}

#[test]
fn retry_backoff_none_explains_what_attempts_initial_and_max_would_not_do() {
    let yaml = with("    retry: {backoff: none, attempts: 3}\n");
    let d = only(&yaml);
    assert_at(&d, &yaml, 9, "3}", "stage `work`", "`retry.attempts: 3` is never reached with `retry.backoff: none`");
    assert!(d.message.contains("pick `fixed`, `linear` or `exponential` to retry up to 3 times"), "{d}");
    let yaml = with("    retry:\n      backoff: none\n      initial: 1s\n      max: 5s\n");
    let d = errors(&yaml);
    assert_eq!(d.len(), 2, "{}", Diagnostics(d.clone()));
    assert_at(&d[0], &yaml, 11, "initial", "stage `work`", "`retry.initial` shapes the wait between retries");
    assert_at(&d[1], &yaml, 12, "max", "stage `work`", "`retry.backoff: none` never retries");
}
