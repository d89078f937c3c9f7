//! Payload types along the wiring, with the real registry and rewires of the repository's
//! `topology.yaml`: what a kind (or an ingress) writes must be what the output topic's
//! `payload_type` declares, and what it reads what the `from` topics declare, so that a
//! topology that validates never dead-letters every record for a type mismatch.

use super::*;
use weir::stages::Registry;

#[path = "../fixtures/topology/rewire.rs"]
mod rewire;

use rewire::{audit_passthrough_and_llm_on_core, position_of, scrub_removed_gateway_to_llm_topic, TOPOLOGY_YAML};

fn parse_real(text: &str) -> Result<Topology, Diagnostics> {
    Topology::parse("topology.yaml", text, &|_| None, &Registry::with_apps())
}

fn refused(text: &str) -> Vec<Diagnostic> {
    match parse_real(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(d) => {
            println!("{d}");
            d.0
        }
    }
}

/// Where the value of the line starting with `line_start` (e.g. `    to: x`) begins.
fn value_at(text: &str, line_start: &str) -> (u32, u32) {
    let (line, column) = position_of(text, line_start);
    let key_end = line_start.find(": ").expect("a `key: value` line") + 2;
    (line, column + key_end as u32)
}

fn assert_has(d: &Diagnostic, parts: &[&str]) {
    for p in parts {
        assert!(d.message.contains(p), "expected `{p}` in: {d}");
    }
}

#[test]
fn scrub_removed_and_gateway_pointed_at_the_llm_topic_is_refused() {
    let text = scrub_removed_gateway_to_llm_topic(TOPOLOGY_YAML);
    let d = refused(&text);
    assert_eq!(d.len(), 1, "expected only the type mismatch:\n{}", Diagnostics(d.clone()));
    let d = &d[0];
    assert_eq!((d.line, d.column), value_at(&text, "    to: scrub-layer-to-llm-layer\n"), "{d}");
    assert_eq!(d.subject, "stage `gateway`", "{d}");
    assert_has(
        d,
        &[
            "output `default` of kind `skeji-gateway` writes `skeji.UserMessage`",
            "topic `scrub-layer-to-llm-layer` declares payload_type `skeji.ScrubbedMessage`",
            "point `to` at a topic with payload_type `skeji.UserMessage`, e.g. `gw-to-scrub-layer`",
            "or change the topic's payload_type",
        ],
    );
}

#[test]
fn weir_validate_and_weir_run_refuse_the_rewire_with_its_place() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("topology.yaml");
    let text = scrub_removed_gateway_to_llm_topic(TOPOLOGY_YAML);
    std::fs::write(&file, &text).expect("write");
    let (line, column) = value_at(&text, "    to: scrub-layer-to-llm-layer\n");
    let at = format!("{}:{line}:{column}: stage `gateway`: ", file.display());
    for command in ["validate", "run"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args([command, "-t"])
            .arg(&file)
            .env("WEIR_LOG", "warn")
            .env_remove("WEIR_TRANSPORT")
            .current_dir(dir.path())
            .output()
            .expect("weir runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("weir {command}: exit {:?}\n{stderr}", out.status.code());
        assert_eq!(out.status.code(), Some(1), "weir {command}: {stdout}{stderr}");
        assert!(!stdout.contains("valid"), "weir {command}: {stdout}");
        let line = stderr.lines().find(|l| l.starts_with(&at)).unwrap_or_else(|| panic!("no `{at}` in:\n{stderr}"));
        assert!(line.contains("`skeji.UserMessage`") && line.contains("`skeji.ScrubbedMessage`"), "{line}");
    }
}

#[test]
fn a_passthrough_inserted_between_topics_of_one_type_and_a_moved_stage_validate() {
    let text = audit_passthrough_and_llm_on_core(TOPOLOGY_YAML);
    let t = parse_real(&text).unwrap_or_else(|d| panic!("rejected:\n{d}"));
    let names = |node| t.plan(Some(node)).expect("plan").stages.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    assert!(names("edge").contains(&"audit".to_string()), "{:?}", names("edge"));
    assert!(names("core").contains(&"llm".to_string()), "{:?}", names("core"));
    assert!(!names("edge").contains(&"llm".to_string()), "{:?}", names("edge"));
}

#[test]
fn a_passthrough_between_topics_of_different_types_is_refused_on_both_sides() {
    let text = audit_passthrough_and_llm_on_core(TOPOLOGY_YAML).replacen(
        "gw-audited: {partitions: 6, retention: 1d, payload_type: skeji.UserMessage}",
        "gw-audited: {partitions: 6, retention: 1d, payload_type: skeji.ScrubbedMessage}",
        1,
    );
    let d = refused(&text);
    assert_eq!(d.len(), 2, "{}", Diagnostics(d.clone()));
    // The scrub stage comes first in the file: it reads what it cannot decode.
    assert_eq!(d[0].subject, "stage `scrub`", "{}", d[0]);
    assert_eq!((d[0].line, d[0].column), value_at(&text, "    from: gw-audited\n"), "{}", d[0]);
    assert_has(
        &d[0],
        &[
            "kind `skeji-scrub` reads `skeji.UserMessage`",
            "`from` topic `gw-audited` declares payload_type `skeji.ScrubbedMessage`",
            "read a topic with payload_type `skeji.UserMessage`, e.g. `gw-to-scrub-layer`",
        ],
    );
    // The passthrough forwards UserMessages to a topic of ScrubbedMessages.
    assert_eq!(d[1].subject, "stage `audit`", "{}", d[1]);
    assert_eq!((d[1].line, d[1].column), value_at(&text, "    to: gw-audited\n"), "{}", d[1]);
    assert_has(
        &d[1],
        &[
            "kind `passthrough` forwards its input unchanged",
            "`from` topic `gw-to-scrub-layer` declares payload_type `skeji.UserMessage`",
            "topic `gw-audited`, which declares payload_type `skeji.ScrubbedMessage`",
            "point `to` at a topic with payload_type `skeji.UserMessage`",
        ],
    );
}

#[test]
fn a_topic_retyped_under_its_reader_is_refused_at_the_reader() {
    // The gateway's rewire made "fit" by changing the topic's type: now the LLM layer
    // would dead-letter everything it reads.
    let text = scrub_removed_gateway_to_llm_topic(TOPOLOGY_YAML).replacen(
        "scrub-layer-to-llm-layer: {partitions: 6, retention: 1d, payload_type: skeji.ScrubbedMessage}",
        "scrub-layer-to-llm-layer: {partitions: 6, retention: 1d, payload_type: skeji.UserMessage}",
        1,
    );
    let d = refused(&text);
    assert_eq!(d.len(), 1, "{}", Diagnostics(d.clone()));
    assert_eq!(d[0].subject, "stage `llm`", "{}", d[0]);
    assert_eq!((d[0].line, d[0].column), value_at(&text, "    from: scrub-layer-to-llm-layer\n"), "{}", d[0]);
    assert_has(
        &d[0],
        &["kind `skeji-llm` reads `skeji.ScrubbedMessage`", "declares payload_type `skeji.UserMessage`"],
    );
}

#[test]
fn an_ingress_writing_to_a_topic_of_another_type_is_refused() {
    let text = TOPOLOGY_YAML.replacen("    to: ingress-requests-buffer\n", "    to: gw-to-scrub-layer\n", 1);
    assert_ne!(text, TOPOLOGY_YAML);
    let d = refused(&text);
    let mismatch: Vec<_> = d.iter().filter(|d| d.message.contains("payload_type")).collect();
    assert_eq!(mismatch.len(), 1, "{}", Diagnostics(d.clone()));
    let m = mismatch[0];
    assert_eq!(m.subject, "ingress `whatsapp-webhook`", "{m}");
    assert_eq!((m.line, m.column), value_at(&text, "    to: gw-to-scrub-layer\n"), "{m}");
    assert_has(
        m,
        &[
            "ingress kind `whatsapp` writes `skeji.InboundMessage`",
            "topic `gw-to-scrub-layer` declares payload_type `skeji.UserMessage`",
            "e.g. `ingress-requests-buffer`",
        ],
    );
}

#[test]
fn topics_without_a_payload_type_are_not_checked() {
    // Untyped, the gateway's topic accepts anything, and the passthrough reading it cannot
    // be judged: nothing to refuse.
    let text = audit_passthrough_and_llm_on_core(TOPOLOGY_YAML).replacen(
        "gw-to-scrub-layer: {partitions: 6, retention: 1d, payload_type: skeji.UserMessage}",
        "gw-to-scrub-layer: {partitions: 6, retention: 1d}",
        1,
    );
    if let Err(d) = parse_real(&text) {
        panic!("rejected:\n{d}");
    }
}

#[test]
fn every_declared_type_is_registered_and_names_an_output_of_its_kind() {
    let r = Registry::with_apps();
    let types = r.payload_type_names();
    let mut declared = 0;
    for kind in r.stage_kind_names() {
        let info = r.stage_kind(&kind).expect("listed kind");
        for (out, ty) in &info.output_types {
            assert!(types.iter().any(|t| t == ty), "kind `{kind}` output `{out}`: `{ty}` is not registered");
            assert!(info.outputs.is_empty() || info.outputs.contains(out), "kind `{kind}` has no output `{out}`");
            declared += 1;
        }
        for ty in &info.input_types {
            assert!(types.iter().any(|t| t == ty), "kind `{kind}` reads `{ty}`, which is not registered");
        }
    }
    for kind in r.ingress_kind_names() {
        let info = r.ingress_kind(&kind).expect("listed kind");
        for ty in info.output_types.values() {
            assert!(types.iter().any(|t| t == ty), "ingress kind `{kind}`: `{ty}` is not registered");
        }
    }
    // Every Skeji stage kind declares every output it has.
    for kind in ["skeji-gateway", "skeji-scrub", "skeji-llm", "skeji-executor", "skeji-business-units", "skeji-schedules", "skeji-bookings", "skeji-notifier"] {
        let info = r.stage_kind(kind).expect("registered");
        let outputs: Vec<&str> = if info.outputs.is_empty() { vec!["default"] } else { info.outputs.clone() };
        for out in outputs {
            assert!(info.output_types.contains_key(out), "kind `{kind}` does not declare the type of output `{out}`");
        }
        assert!(!info.input_types.is_empty(), "kind `{kind}` does not declare what it reads");
    }
    assert_eq!(r.ingress_kind("whatsapp").expect("registered").output_types.get("default"), Some(&"skeji.InboundMessage"));
    println!("{declared} typed outputs declared");
}

#[test]
fn a_router_forwarding_two_typed_topics_is_checked_per_output_and_input() {
    let yaml = "\
topics:
  users: {payload_type: skeji.UserMessage}
  rejections: {payload_type: skeji.Rejection}
  more-users: {payload_type: skeji.UserMessage}
  anything: {}
stages:
  route:
    kind: router
    from: [users, rejections]
    to: {typed: more-users, loose: anything}
    config: {field: text, routes: {hi: typed}, default: loose}
";
    let d = refused(yaml);
    // `loose` goes to an untyped topic: fine. `typed` would get the Rejections too.
    assert_eq!(d.len(), 1, "{}", Diagnostics(d.clone()));
    assert_eq!(d[0].subject, "stage `route`", "{}", d[0]);
    let (line, column) = position_of(yaml, "more-users, loose");
    assert_eq!((d[0].line, d[0].column), (line, column), "{}", d[0]);
    assert_has(
        &d[0],
        &[
            "kind `router` forwards its input unchanged, and `from` topic `rejections` declares payload_type `skeji.Rejection`",
            "output `typed` goes to topic `more-users`",
            "point `to.typed` at a topic with payload_type `skeji.Rejection`",
        ],
    );
    // Reading only the users, the same wiring is valid.
    let only_users = yaml.replacen("from: [users, rejections]", "from: [users]", 1);
    if let Err(d) = parse_real(&only_users) {
        panic!("rejected:\n{d}");
    }
}
