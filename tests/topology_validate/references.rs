//! Kinds, topic references, outputs, nodes and consumer groups.

use super::*;

#[test]
fn unknown_stage_kind() {
    let yaml = "\
topics:
  a: {}
  b: {}
stages:
  s:
    kind: pasthrough
    from: a
    to: b
";
    let d = only(yaml);
    assert_at(&d, yaml, 6, "pasthrough", "stage `s`", "unknown stage kind `pasthrough` (did you mean `passthrough`?)");
}

#[test]
fn unknown_ingress_kind() {
    let yaml = "\
topics:
  a: {}
ingress:
  api: {kind: http-jsn, listen: '0.0.0.0:8080', to: a}
";
    let d = only(yaml);
    assert_at(&d, yaml, 4, "http-jsn", "ingress `api`", "unknown ingress kind `http-jsn` (did you mean `http-json`?)");
}

#[test]
fn config_error_is_reported_at_config() {
    let yaml = "\
topics:
  a: {}
  b: {}
stages:
  r:
    kind: router
    from: a
    to: {x: b}
    config:
      feild: type
";
    let d = only(yaml);
    assert_at(&d, yaml, 9, "config", "stage `r`", "invalid `config` for kind `router`: missing field `field`");
}

#[test]
fn config_error_without_config_is_reported_at_kind() {
    let yaml = "\
topics:
  a: {}
  b: {}
stages:
  r: {kind: router, from: a, to: {x: b}}
ingress:
  api: {kind: http-json, listen: '0.0.0.0:1', to: a, config: {batch: 1, limit: 2}}
";
    let d = errors(yaml);
    assert_eq!(d.len(), 2, "{}", Diagnostics(d.clone()));
    assert_at(&d[0], yaml, 5, "router", "stage `r`", "missing field `field`");
    assert_at(&d[1], yaml, 7, "config", "ingress `api`", "unknown field `limit`");
}

#[test]
fn from_topic_not_declared() {
    let yaml = "\
topics:
  gw-to-scrub-layer: {}
  out: {}
stages:
  scrub:
    kind: passthrough
    from: [out, gw-to-scrub]
    to: out
";
    // Reading and writing `out` is a cycle too; only the reference matters here.
    let d = errors(yaml);
    let d = d.iter().find(|d| d.message.contains("not declared")).unwrap();
    assert_at(
        d,
        yaml,
        7,
        "gw-to-scrub]",
        "stage `scrub`",
        "from topic `gw-to-scrub` is not declared in `topics` (did you mean `gw-to-scrub-layer`?)",
    );
}

#[test]
fn to_topic_not_declared() {
    let yaml = "\
topics:
  in: {}
  orders: {}
stages:
  route:
    kind: router
    from: in
    to: {orders: orders, refunds: refunds}
    config: {field: type}
";
    let d = only(yaml);
    assert_at(
        &d,
        yaml,
        8,
        "refunds}",
        "stage `route`",
        "to topic `refunds` (output `refunds`) is not declared in `topics`: declare it",
    );
}

#[test]
fn dlq_topic_not_declared() {
    let yaml = "\
topics:
  in: {}
  out: {}
  dlq-work: {}
stages:
  work:
    kind: passthrough
    from: in
    to: out
    dlq: dlq-wrk
";
    let d = only(yaml);
    assert_at(
        &d,
        yaml,
        10,
        "dlq-wrk",
        "stage `work`",
        "dlq topic `dlq-wrk` is not declared in `topics` (did you mean `dlq-work`?)",
    );
}

#[test]
fn ingress_topic_not_declared() {
    let yaml = "\
topics:
  events: {}
ingress:
  api:
    kind: http-json
    listen: 127.0.0.1:8080
    to: event
";
    let d = only(yaml);
    assert_at(
        &d,
        yaml,
        7,
        "event",
        "ingress `api`",
        "to topic `event` is not declared in `topics` (did you mean `events`?)",
    );
}

#[test]
fn output_the_kind_does_not_emit() {
    let yaml = "\
topics:
  in: {}
  ok: {}
  bad: {}
stages:
  f:
    kind: filter
    from: in
    to:
      default: ok
      rejectd: bad
";
    let d = only(yaml);
    assert_at(&d, yaml, 11, "rejectd", "stage `f`", "kind `filter` has no output `rejectd` (did you mean `rejected`?)");
}

#[test]
fn required_output_not_wired() {
    let yaml = "\
topics:
  in: {}
  bad: {}
stages:
  f:
    kind: filter
    from: in
    to: {rejected: bad}
  p:
    kind: passthrough
    from: in
";
    let d = errors(yaml);
    assert_eq!(d.len(), 2, "{}", Diagnostics(d.clone()));
    assert_at(&d[0], yaml, 8, "to", "stage `f`", "required output `default` of kind `filter` is not wired");
    assert_at(&d[1], yaml, 9, "p", "stage `p`", "required output `default` of kind `passthrough` is not wired");
}

const NODES: &str = "\
topics:
  in: {}
  out: {}
stages:
  a: {kind: passthrough, from: in, to: out}
  b: {kind: passthrough, from: in, to: out}
ingress:
  api: {kind: http-json, listen: '127.0.0.1:8080', to: in}
nodes:
  edge: [api, a]
";

#[test]
fn stage_run_by_no_node() {
    let d = only(NODES);
    assert_at(&d, NODES, 6, "b", "stage `b`", "stage `b` is run by no node: add it to a list under `nodes`");
}

#[test]
fn ingress_run_by_no_node() {
    let yaml = NODES.replace("  edge: [api, a]", "  edge: [a, b]");
    let d = only(&yaml);
    assert_at(&d, &yaml, 8, "api", "ingress `api`", "ingress `api` is run by no node");
}

#[test]
fn node_member_that_does_not_exist() {
    let yaml = NODES.replace("  edge: [api, a]", "  edge: [api, a, bb]\n  core: [b]");
    let d = only(&yaml);
    assert_at(&d, &yaml, 10, "bb", "node `edge`", "`bb` is neither a stage nor an ingress (did you mean `b`?)");
}

#[test]
fn node_with_an_empty_list() {
    let yaml = NODES.replace("  edge: [api, a]", "  edge: [api, a, b]\n  spare: []");
    let d = only(&yaml);
    assert_at(&d, &yaml, 11, "spare", "node `spare`", "node `spare` runs nothing");
}

#[test]
fn no_nodes_means_no_assignment_check() {
    let yaml = NODES.replace("nodes:\n  edge: [api, a]\n", "");
    assert_valid(&yaml);
}

#[test]
fn duplicate_consumer_group_is_reported_after_the_first() {
    let yaml = "\
topics:
  in: {}
  out: {}
stages:
  zeta: {kind: passthrough, from: in, to: out, group: shared}
  alpha:
    kind: passthrough
    from: in
    to: out
    group: shared
  gamma: {kind: passthrough, from: in, to: out, group: weir.beta}
  beta: {kind: passthrough, from: in, to: out}
";
    let d = errors(yaml);
    assert_eq!(d.len(), 2, "{}", Diagnostics(d.clone()));
    // File order decides which one is first, not the name.
    assert_at(&d[0], yaml, 10, "shared", "stage `alpha`", "consumer group `shared` is also used by stage `zeta`");
    // Without `group:` the finding points at the stage's name.
    assert_at(&d[1], yaml, 12, "beta", "stage `beta`", "consumer group `weir.beta` is also used by stage `gamma`");
}
