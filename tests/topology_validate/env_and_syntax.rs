//! `${VAR}` substitution, YAML syntax, unknown fields and serde type errors.

use super::*;

const WITH_VARS: &str = "\
topics:
  in: {partitions: 1}
  out: {partitions: 1}
admin:
  listen: ${ADMIN:-127.0.0.1:9464}
stages:
  work: {kind: passthrough, from: in, to: out, drain_timeout: ${DRAIN}}
";

#[test]
fn variables_and_defaults_are_substituted() {
    let env = |name: &str| (name == "DRAIN").then(|| "3s".to_string());
    let t = parse_with(WITH_VARS, &env).unwrap();
    assert_eq!(t.spec().admin.listen.as_deref(), Some("127.0.0.1:9464"));
    assert_eq!(t.spec().stages["work"].drain_timeout.as_deref(), Some("3s"));
}

#[test]
fn unset_variable_without_default() {
    let d = only(WITH_VARS);
    assert_at(&d, WITH_VARS, 7, "${DRAIN}", "variable `DRAIN`", "`DRAIN` is not set");
}

#[test]
fn value_with_a_line_break_is_refused() {
    let env = |name: &str| (name == "DRAIN").then(|| "3s\nkind: evil".to_string());
    let d = parse_with(WITH_VARS, &env).unwrap_err().0;
    assert_eq!(d.len(), 1);
    assert_at(&d[0], WITH_VARS, 7, "${DRAIN}", "variable `DRAIN`", "line break");
}

#[test]
fn unterminated_and_empty_references_are_all_reported() {
    let yaml = "\
# ${IGNORED} in a comment
topics:
  in: {partitions: 1, retention: ${RETENTION
  out: {partitions: ${}}
  x: $${NOT_A_VAR}
";
    let d = errors(yaml);
    assert_eq!(d.len(), 2, "{}", Diagnostics(d.clone()));
    assert_at(&d[0], yaml, 3, "${RETENTION", "", "unterminated `${`");
    assert_at(&d[1], yaml, 4, "${}", "", "empty variable name");
}

#[test]
fn unknown_field_with_suggestion() {
    let yaml = "\
topics:
  orders: {partitons: 4}
";
    let d = only(yaml);
    assert_at(
        &d,
        yaml,
        2,
        "partitons",
        "topic `orders`",
        "unknown field `partitons` in topic `orders` (did you mean `partitions`?)",
    );
}

#[test]
fn every_unknown_field_is_reported_but_free_maps_are_not() {
    let yaml = "\
topics:
  in: {partitions: 1}
  out: {partitions: 1}
stages:
  work:
    kind: passthrough
    from: in
    to: out
    retry: {atempts: 2}
    rate_limit: {per_second: 5, brust: 10}
    config: {anything: goes}
ingress:
  api: {kind: http-json, listen: '127.0.0.1:1', to: in, max_bdy: 1KiB}
kafka:
  producer: {linger.ms: '5'}
  security: {protocl: SSL}
stagez: {}
";
    let d = errors(yaml);
    let found: Vec<_> = d.iter().map(|d| (d.line, d.subject.as_str())).collect();
    assert_eq!(found, vec![(9, "stage `work`"), (10, "stage `work`"), (13, "ingress `api`"), (16, ""), (17, "")]);
    assert_at(
        &d[0],
        yaml,
        9,
        "atempts",
        "stage `work`",
        "unknown field `atempts` in `retry` of stage `work` (did you mean `attempts`?)",
    );
    assert_at(&d[1], yaml, 10, "brust", "stage `work`", "(did you mean `burst`?)");
    assert_at(&d[2], yaml, 13, "max_bdy", "ingress `api`", "(did you mean `max_body`?)");
    assert_at(&d[3], yaml, 16, "protocl", "", "in `kafka.security` (did you mean `protocol`?)");
    assert_at(&d[4], yaml, 17, "stagez", "", "at the top level (did you mean `stages`?)");
}

#[test]
fn yaml_syntax_error_has_a_location() {
    let yaml = "\
topics:
  in: {partitions: 1
stages: {}
";
    let d = only(yaml);
    assert!(d.line >= 2 && d.line <= 3, "{d}");
    assert!(d.column > 0, "{d}");
    assert!(d.message.starts_with("this is not valid YAML"), "{d}");
}

#[test]
fn type_error_names_the_subject() {
    let yaml = "\
topics:
  in: {partitions: 1}
  out:
    partitions: many
";
    let d = only(yaml);
    assert_at(&d, yaml, 4, "many", "topic `out`", "`partitions`: expected a whole number");
}

#[test]
fn shape_error_in_from_is_explained() {
    let yaml = "\
topics:
  in: {partitions: 1}
stages:
  work:
    kind: passthrough
    from: {a: b}
    to: in
";
    let d = only(yaml);
    assert_eq!(d.line, 6, "{d}");
    assert_eq!(d.subject, "stage `work`", "{d}");
    assert!(d.message.contains("`from` must be a topic name or a list"), "{d}");
}

#[test]
fn missing_field_points_at_the_stage() {
    let yaml = "\
topics:
  in: {}
stages:
  work:
    kind: passthrough
    to: in
";
    let d = only(yaml);
    assert_at(&d, yaml, 4, "work", "stage `work`", "required field `from` is missing");
}

#[test]
fn file_that_is_not_a_mapping() {
    let d = only("- topics\n- stages\n");
    assert_eq!((d.line, d.column), (1, 1));
    assert!(d.message.contains("the file must be a mapping of sections"), "{d}");
}
