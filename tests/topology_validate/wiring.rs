//! Cycles in the stage graph and `key` fields.

use super::*;

const SKEJI: &str = "\
topics:
  requests: {}
  pipeline-executor-to-bookings: {}
  bookings-to-pipeline-executor: {}
stages:
  executor:
    kind: router
    from: [requests, bookings-to-pipeline-executor]
    to: {bookings: pipeline-executor-to-bookings}
    config: {field: step}
    allow_cycle: true
  bookings:
    kind: passthrough
    from: pipeline-executor-to-bookings
    to: bookings-to-pipeline-executor
";

#[test]
fn declared_loop_passes() {
    assert_valid(SKEJI);
}

#[test]
fn undeclared_loop_is_reported_once_with_its_path() {
    let yaml = SKEJI.replace("    allow_cycle: true\n", "");
    let d = only(&yaml);
    assert_at(
        &d,
        &yaml,
        6,
        "executor",
        "stage `executor`",
        "stage `executor` → topic `pipeline-executor-to-bookings` → stage `bookings` → topic `bookings-to-pipeline-executor` → stage `executor`",
    );
    assert!(d.message.contains("set `allow_cycle: true` on one stage"), "{d}");
}

#[test]
fn a_second_loop_through_an_allowed_stage_is_still_reported() {
    // executor ⇄ bookings is declared; bookings ⇄ audit is not.
    let yaml = format!(
        "{SKEJI}  audit:\n    kind: passthrough\n    from: bookings-to-pipeline-executor\n    to: pipeline-executor-to-bookings\n"
    );
    let d = only(&yaml);
    assert_at(&d, &yaml, 12, "bookings", "stage `bookings`", "stage `bookings` → topic `bookings-to-pipeline-executor` → stage `audit` → topic `pipeline-executor-to-bookings` → stage `bookings`");
}

#[test]
fn reading_your_own_dlq_is_a_loop() {
    let yaml = "\
topics:
  in: {}
  out: {}
stages:
  work: {kind: passthrough, from: [in, out], to: in, dlq: out}
";
    let d = errors(yaml);
    assert_eq!(d.len(), 1, "{}", Diagnostics(d.clone()));
    assert_at(&d[0], yaml, 5, "work", "stage `work`", "stage `work` → topic `in` / `out` → stage `work`");
}

#[test]
fn allow_cycle_on_no_cycle_is_an_error() {
    let yaml = "\
topics:
  in: {}
  out: {}
stages:
  work:
    kind: passthrough
    from: in
    to: out
    allow_cycle: true
";
    let d = only(yaml);
    assert_at(&d, yaml, 9, "true", "stage `work`", "stage `work` sets `allow_cycle: true` but is on no cycle");
}

const KEYS: &str = "\
topics:
  in: {}
  bookings: {payload_type: Booking}
  audit:
    schema:
      type: object
      properties: {event: {type: string}, at: {type: string}}
  free: {}
stages:
  typed: {kind: passthrough, from: in, to: bookings, key: booking_id}
  schemed: {kind: passthrough, from: in, to: audit, key: event}
  enriched: {kind: enricher, from: in, to: free, key: customer.id}
  anything: {kind: passthrough, from: in, to: free, key: whatever}
  envelope: {kind: passthrough, from: in, to: bookings, key: correlation_id}
";

#[test]
fn keys_that_exist_or_cannot_be_known_pass() {
    assert_valid(KEYS);
}

#[test]
fn key_not_in_payload_type() {
    let yaml = KEYS.replace("key: booking_id", "key: bookingid");
    let d = only(&yaml);
    assert_at(&d, &yaml, 10, "bookingid", "stage `typed`", "key `bookingid` is not a field of the payload on output `default` (topic `bookings`, fields from payload type `Booking`) (did you mean `booking_id`?)");
}

#[test]
fn key_not_in_schema_properties() {
    let yaml = KEYS.replace("key: event}", "key: evnt.kind}");
    let d = only(&yaml);
    assert_at(&d, &yaml, 11, "evnt", "stage `schemed`", "key `evnt.kind` is not a field of the payload on output `default` (topic `audit`, fields from the topic's `schema`) (did you mean `event`?)");
}

#[test]
fn key_not_in_what_the_kind_writes() {
    let yaml = KEYS.replace("key: customer.id", "key: client");
    let d = only(&yaml);
    assert_at(&d, &yaml, 12, "client", "stage `enriched`", "fields from what the stage kind writes");
}

#[test]
fn per_output_key_checks_each_output_and_its_name() {
    let yaml = "\
topics:
  in: {}
  ok: {payload_type: Order}
  rejected: {}
stages:
  f:
    kind: filter
    from: in
    to: {default: ok, rejected: rejected}
    key:
      default: amount
      rejectd: message_id
";
    let d = errors(yaml);
    assert_eq!(d.len(), 1, "{}", Diagnostics(d.clone()));
    assert_at(
        &d[0],
        yaml,
        12,
        "rejectd",
        "stage `f`",
        "`key` names output `rejectd`, which is not wired in `to` (did you mean `rejected`?)",
    );

    let yaml = yaml.replace("default: amount", "default: total");
    let d = errors(&yaml);
    assert_eq!(d.len(), 2, "{}", Diagnostics(d.clone()));
    assert_at(
        &d[0],
        &yaml,
        11,
        "total",
        "stage `f`",
        "key `total` is not a field of the payload on output `default` (topic `ok`, fields from payload type `Order`)",
    );
}

#[test]
fn ingress_key_is_checked_against_its_topic() {
    let yaml = "\
topics:
  orders: {payload_type: Order}
ingress:
  api: {kind: http-json, listen: '127.0.0.1:8080', to: orders, key: order}
";
    let d = only(yaml);
    assert_at(&d, yaml, 4, "order}", "ingress `api`", "key `order` is not a field of the payload of topic `orders` (fields from payload type `Order`) (did you mean `order_id`?)");
}
