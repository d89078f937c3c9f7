//! Whole files: the complete valid fixture, the repository's demo topology with the real
//! registry, and a file with many different errors.

use super::*;

const VALID: &str = include_str!("../fixtures/topology/valid.yaml");
const MANY_ERRORS: &str = include_str!("../fixtures/topology/many_errors.yaml");

#[test]
fn complete_valid_topology_passes_and_plans_per_node() {
    let t = assert_valid(VALID);
    assert_eq!(t.name(), "skeji");
    let core = t.plan(Some("core")).unwrap();
    let names: Vec<_> = core.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["bookings", "executor", "scrub"]);
    assert!(core.ingress.is_empty());
    let edge = t.plan(Some("edge")).unwrap();
    assert_eq!(edge.ingress[0].max_body, 256 * 1024);
    assert_eq!(edge.admin_listen.as_deref(), Some("127.0.0.1:9464"));
}

#[test]
fn environment_overrides_defaults_in_the_fixture() {
    let env = |name: &str| (name == "GATEWAY_LISTEN").then(|| "0.0.0.0:80".to_string());
    let t = parse_with(VALID, &env).unwrap();
    assert_eq!(t.spec().ingress["gateway-api"].listen, "0.0.0.0:80");
}

#[test]
fn repository_demo_topology_passes_with_the_builtin_registry() {
    let text = include_str!("../../topology.yaml");
    let registry = weir::stages::Registry::with_apps();
    if let Err(d) = Topology::parse("topology.yaml", text, &|_| None, &registry) {
        panic!("demo topology rejected:\n{d}");
    }
}

#[test]
fn every_error_of_a_file_is_reported() {
    let d = errors(MANY_ERRORS);
    let y = MANY_ERRORS;
    let summary: Vec<_> = d.iter().map(|d| (d.line, d.subject.as_str())).collect();
    assert_eq!(
        summary,
        vec![
            (2, "topic `in`"),
            (3, "topic `out`"),
            (6, "stage `first`"),
            (7, "stage `first`"),
            (12, "stage `second`"),
            (13, "stage `second`"),
            (17, "ingress `api`"),
            (18, "ingress `api`"),
        ],
        "{}",
        Diagnostics(d.clone())
    );
    assert_at(&d[0], y, 2, "0", "topic `in`", "`partitions` must be at least 1");
    assert_at(&d[1], y, 3, "forever", "topic `out`", "not a duration");
    assert_at(&d[2], y, 6, "pasthrough", "stage `first`", "(did you mean `passthrough`?)");
    assert_at(&d[3], y, 7, "inn", "stage `first`", "from topic `inn` is not declared in `topics` (did you mean `in`?)");
    assert_at(&d[4], y, 12, "maybe", "stage `second`", "kind `filter` has no output `maybe`");
    assert_at(&d[5], y, 13, "0", "stage `second`", "`attempts` must be at least 1");
    assert_at(&d[6], y, 17, "nowhere", "ingress `api`", "is not a host:port address");
    assert_at(&d[7], y, 18, "api", "ingress `api`", "must start with `/`");
    // One line per finding, each starting with file:line:column.
    let text = Diagnostics(d).to_string();
    assert_eq!(text.lines().count(), 8);
    assert!(text.lines().all(|l| l.starts_with("topology.yaml:")), "{text}");
}

#[test]
fn graph_of_the_fixture_is_deterministic_and_complete() {
    let t = assert_valid(VALID);
    let mermaid = t.graph(weir::topology::GraphFormat::Mermaid);
    assert_eq!(mermaid, t.graph(weir::topology::GraphFormat::Mermaid));
    for needle in [
        "flowchart LR",
        "subgraph n_core[\"node core\"]",
        "t_pipeline_executor_to_bookings[(\"pipeline-executor-to-bookings\")]",
        "s_scrub -.->|\"dlq\"| t_dlq",
        "s_executor -->|\"bookings · key booking_id\"| t_pipeline_executor_to_bookings",
        "i_gateway_api>\"gateway-api<br/>http-json 127.0.0.1:8080/requests\"]",
    ] {
        assert!(mermaid.contains(needle), "`{needle}` missing from:\n{mermaid}");
    }
    let dot = t.graph(weir::topology::GraphFormat::Dot);
    for needle in
        ["digraph \"skeji\" {", "subgraph cluster_n_edge {", "s_scrub -> t_dlq [label=\"dlq\", style=dashed];"]
    {
        assert!(dot.contains(needle), "`{needle}` missing from:\n{dot}");
    }
}
