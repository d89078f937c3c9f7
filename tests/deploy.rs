//! The deployment artefacts under deploy/ agree with the repository they deploy: every YAML
//! and JSON file parses; compose and Kubernetes run one weir service per node of
//! topology.yaml, with the variables the topology reads; the committed ConfigMap and
//! KafkaTopics are what their generators produce now; alerts and the dashboard only use
//! metrics docs/observability.md documents. Management stays private: no Service and no
//! published Compose port reaches the admin port, and the secrets (the admin token, the
//! webhook's app secret) come from a Kubernetes Secret or Compose's env file, never from the
//! manifests. No network, no Docker: files and the binary.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_weir");
/// The read-only port every weir container listens on (health, readiness, metrics).
const METRICS_PORT: u64 = 9464;
/// The management port (produce, tail, /stats): on the container's loopback, never exposed.
const ADMIN_PORT: u64 = 9465;
/// Variables that hold secrets: they must come from a Secret (Kubernetes) or the env file
/// (Compose), never be written into a manifest.
const SECRET_VARIABLES: &[&str] = &[
    "WEIR_ADMIN_TOKEN",
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_VERIFY_TOKEN",
    "OPENAI_API_KEY",
    "WHATSAPP_TOKEN",
];

fn path(rel: &str) -> PathBuf {
    Path::new(ROOT).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml_docs(rel: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml_doc(rel: &str) -> Value {
    let mut docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "{rel}: expected one YAML document");
    docs.remove(0)
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {v}"))
}

fn map_of<'a>(v: &'a Value, what: &str) -> &'a serde_json::Map<String, Value> {
    v.as_object()
        .unwrap_or_else(|| panic!("{what}: expected a map, got {v}"))
}

fn list_of<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: expected a list, got {v}"))
}

/// What the deploy files must agree with, read from topology.yaml as written (its `${…}`
/// references are plain YAML strings, so no substitution is needed to read the structure).
struct Topology {
    yaml: Value,
    nodes: BTreeMap<String, BTreeSet<String>>,
    /// topic → partitions (default 1).
    topics: BTreeMap<String, u64>,
    /// Environment variables a deployment may set: those the file substitutes (`${NAME`)
    /// and those stages read by name (`*_env: NAME`).
    variables: BTreeSet<String>,
}

fn topology() -> Topology {
    let text = read("topology.yaml");
    let yaml: Value = serde_saphyr::from_str(&text).expect("topology.yaml parses as YAML");
    let nodes = map_of(&yaml["nodes"], "nodes")
        .iter()
        .map(|(node, members)| {
            let members = list_of(members, node)
                .iter()
                .map(|m| str_of(m, node).to_string())
                .collect();
            (node.clone(), members)
        })
        .collect();
    let topics = map_of(&yaml["topics"], "topics")
        .iter()
        .map(|(name, t)| {
            (
                name.clone(),
                t.get("partitions")
                    .map_or(1, |p| p.as_u64().expect("partitions")),
            )
        })
        .collect();
    let mut variables: BTreeSet<String> = text
        .split("${")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    collect_env_names(&yaml, &mut variables);
    Topology {
        yaml,
        nodes,
        topics,
        variables,
    }
}

fn collect_env_names(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match v.as_str() {
                    Some(name) if k.ends_with("_env") => {
                        out.insert(name.to_string());
                    }
                    _ => collect_env_names(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_env_names(v, out)),
        _ => {}
    }
}

impl Topology {
    /// The nodes that run an ingress listener (they need WEIR_LISTEN and the HTTP port).
    fn ingress_nodes(&self) -> BTreeSet<String> {
        let ingress: BTreeSet<&String> = self.yaml["ingress"]
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        self.nodes
            .iter()
            .filter(|(_, members)| members.iter().any(|m| ingress.contains(m)))
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn node_names(&self) -> BTreeSet<String> {
        self.nodes.keys().cloned().collect()
    }
}

/// Variables the `weir` command itself reads, besides the topology's.
const RUNTIME_VARIABLES: &[&str] = &[
    "WEIR_TOPOLOGY",
    "WEIR_NODE",
    "WEIR_DATA_DIR",
    "WEIR_INSTANCE",
    "WEIR_LOG",
    "RUST_LOG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "WEIR_ADMIN_TOKEN",
];

fn assert_known_variables(names: &BTreeSet<String>, topology: &Topology, what: &str) {
    let unknown: Vec<&String> = names
        .iter()
        .filter(|n| !topology.variables.contains(*n) && !RUNTIME_VARIABLES.contains(&n.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "{what} sets {unknown:?}, which neither topology.yaml nor weir reads (topology reads {:?})",
        topology.variables
    );
}

/// The node a container runs: the value after `--node` in its arguments.
fn node_argument(args: &[Value], what: &str) -> String {
    let args: Vec<&str> = args.iter().map(|a| str_of(a, what)).collect();
    let at = args
        .iter()
        .position(|a| *a == "--node")
        .unwrap_or_else(|| panic!("{what}: no --node in {args:?}"));
    assert_eq!(
        args.first(),
        Some(&"run"),
        "{what}: the command must be `run` (the image's entrypoint is weir)"
    );
    args.get(at + 1)
        .unwrap_or_else(|| panic!("{what}: --node without a value"))
        .to_string()
}

// ---------------------------------------------------------------------------------------
// Metric names (docs/observability.md)

/// name → type, from the metric table of docs/observability.md.
fn documented_metrics() -> BTreeMap<String, String> {
    let docs = read("docs/observability.md");
    let metrics: BTreeMap<String, String> = docs
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // "| `name` | type | labels | meaning |" splits into ["", name, type, …].
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            name.starts_with("weir_").then(|| {
                (
                    name.to_string(),
                    cells.get(2).copied().unwrap_or("").to_string(),
                )
            })
        })
        .collect();
    assert!(
        metrics.len() >= 10,
        "docs/observability.md: metric table not found or changed shape: {metrics:?}"
    );
    metrics
}

/// The `weir_*` metric names a PromQL expression mentions.
fn metric_refs(expr: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("weir_") {
        // Only where an identifier starts (not inside `my_weir_x` or a label value "a_weir_b").
        let starts_identifier = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'));
        let ident: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        if starts_identifier {
            refs.insert(ident.clone());
        }
        rest = &rest[at + ident.len()..];
    }
    refs
}

/// The names in `expr` that are not documented: a histogram is documented by its base
/// name and queried as `_bucket`, `_sum`, `_count`.
fn undocumented(expr: &str, documented: &BTreeMap<String, String>) -> Vec<String> {
    metric_refs(expr)
        .into_iter()
        .filter(|name| {
            let histogram_series = ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| documented.get(base).is_some_and(|t| t == "histogram"))
            });
            !documented.contains_key(name) && !histogram_series
        })
        .collect()
}

#[test]
fn the_metric_check_catches_undocumented_names() {
    let documented = documented_metrics();
    assert!(undocumented("rate(weir_records_consumed_total[5m])", &documented).is_empty());
    assert!(undocumented(
        "rate(weir_stage_processing_seconds_bucket[5m])",
        &documented
    )
    .is_empty());
    assert_eq!(
        undocumented("rate(weir_records_consumd_total[5m])", &documented),
        vec!["weir_records_consumd_total"]
    );
    // A gauge has no buckets.
    assert_eq!(
        undocumented("weir_consumer_lag_bucket", &documented),
        vec!["weir_consumer_lag_bucket"]
    );
    assert_eq!(
        metric_refs(r#"up{job="not_weir_x"} + my_weir_y"#),
        BTreeSet::new()
    );
}

// ---------------------------------------------------------------------------------------

/// Every file under deploy/, relative to the repository root.
fn deploy_files() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = entry.expect("dir entry").path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&path("deploy"), &mut files);
    let mut rel: Vec<String> = files
        .iter()
        .map(|p| {
            p.strip_prefix(ROOT)
                .expect("under the root")
                .to_string_lossy()
                .trim_start_matches('/')
                .to_string()
        })
        .collect();
    rel.sort();
    rel
}

#[test]
fn every_yaml_and_json_file_under_deploy_parses() {
    let files = deploy_files();
    let mut parsed = 0;
    for rel in &files {
        if rel.ends_with(".yaml") || rel.ends_with(".yml") {
            let docs = yaml_docs(rel);
            assert!(!docs.is_empty(), "{rel}: no YAML document");
            assert!(
                docs.iter().all(|d| d.is_object()),
                "{rel}: every document must be a map"
            );
            parsed += 1;
        } else if rel.ends_with(".json") {
            serde_json::from_str::<Value>(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
            parsed += 1;
        }
    }
    for expected in [
        "deploy/docker-compose.yml",
        "deploy/prometheus/prometheus.yml",
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/dashboards/weir.json",
        "deploy/kubernetes/kustomization.yaml",
        "deploy/kubernetes/configmap.yaml",
        "deploy/kubernetes/kafkatopics.yaml",
    ] {
        assert!(files.iter().any(|f| f == expected), "{expected} is missing");
    }
    assert!(
        parsed >= 13,
        "only {parsed} YAML/JSON files under deploy/: {files:?}"
    );
}

fn compose() -> Value {
    yaml_doc("deploy/docker-compose.yml")
}

/// Compose services built from deploy/Dockerfile: service name → service.
fn weir_services(compose: &Value) -> BTreeMap<String, Value> {
    map_of(&compose["services"], "services")
        .iter()
        .filter(|(_, s)| s["build"]["dockerfile"] == "deploy/Dockerfile")
        .map(|(name, s)| (name.clone(), s.clone()))
        .collect()
}

#[test]
fn compose_runs_the_platform_and_one_weir_service_per_topology_node() {
    let topology = topology();
    let compose = compose();
    let services = map_of(&compose["services"], "services");
    for (name, image_prefix) in [
        ("kafka", "apache/kafka:4.1.1"),
        ("jaeger", "jaegertracing/jaeger:2."),
        ("prometheus", "prom/prometheus:"),
        ("grafana", "grafana/grafana:"),
        ("kafka-ui", "provectuslabs/kafka-ui:"),
    ] {
        let service = services
            .get(name)
            .unwrap_or_else(|| panic!("compose has no `{name}` service"));
        let image = str_of(&service["image"], name);
        assert!(
            image.starts_with(image_prefix),
            "{name}: image {image}, expected {image_prefix}…"
        );
    }
    let kafka_env = &services["kafka"]["environment"];
    assert_eq!(
        kafka_env["KAFKA_PROCESS_ROLES"], "broker,controller",
        "Kafka runs in KRaft mode"
    );
    let jaeger_ports: Vec<&str> = list_of(&services["jaeger"]["ports"], "jaeger ports")
        .iter()
        .map(|p| str_of(p, "port"))
        .collect();
    for port in ["4317:4317", "4318:4318", "16686:16686"] {
        assert!(
            jaeger_ports.contains(&port),
            "jaeger does not publish {port}: {jaeger_ports:?}"
        );
    }

    let weir = weir_services(&compose);
    let mut nodes = BTreeSet::new();
    for (name, service) in &weir {
        let node = node_argument(list_of(&service["command"], name), name);
        assert!(
            topology.nodes.contains_key(&node),
            "{name} runs node `{node}`, not in topology.yaml {:?}",
            topology.nodes.keys()
        );
        assert!(
            nodes.insert(node.clone()),
            "two compose services run node `{node}`"
        );

        let env = map_of(&service["environment"], name);
        let expect = |var: &str, value: &str| {
            assert_eq!(env.get(var), Some(&Value::from(value)), "{name}: {var}")
        };
        expect("WEIR_TRANSPORT", "kafka");
        expect("KAFKA_BROKERS", "kafka:9092");
        expect("WEIR_METRICS_LISTEN", &format!("0.0.0.0:{METRICS_PORT}"));
        expect("WEIR_ADMIN_LISTEN", &format!("127.0.0.1:{ADMIN_PORT}"));
        // weir's span exporter speaks OTLP/HTTP: Jaeger's 4318, not the gRPC 4317.
        expect("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4318");
        expect("OTEL_SERVICE_NAME", &format!("weir-{node}"));
        if topology.ingress_nodes().contains(&node) {
            expect("WEIR_LISTEN", "0.0.0.0:8080");
        }
        assert_known_variables(&env.keys().cloned().collect(), &topology, name);
        // The compose file sits in deploy/, so the build context `..` is the repository.
        assert_eq!(service["build"]["context"], "..", "{name}: build context");
    }
    assert_eq!(
        nodes,
        topology.node_names(),
        "compose must run every node of topology.yaml exactly once"
    );

    // Bind mounts name files that exist (relative to deploy/).
    for (name, service) in services {
        for volume in service
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let source = str_of(volume, name).split(':').next().unwrap_or("");
            if let Some(rel) = source.strip_prefix("./") {
                assert!(
                    path("deploy").join(rel).exists(),
                    "{name}: mounts {source}, which does not exist"
                );
            }
        }
    }
}

/// The container side of a Compose port entry (`"8080"`, `"9464:9464"`,
/// `"127.0.0.1:9474:9464/tcp"`, or the long form's `target`).
fn container_port(entry: &Value, what: &str) -> u64 {
    let text = match entry {
        Value::Object(m) => m.get("target").map(|t| t.to_string()).unwrap_or_default(),
        other => str_of(other, what).to_string(),
    };
    let last = text.trim_matches('"').rsplit(':').next().unwrap_or("");
    let port = last.split('/').next().unwrap_or("");
    port.parse().unwrap_or_else(|_| panic!("{what}: cannot read the container port of {entry}"))
}

#[test]
fn compose_publishes_no_management_port_and_takes_secrets_from_the_env_file() {
    let compose = compose();
    let services = map_of(&compose["services"], "services");
    let mut published = Vec::new();
    for (name, service) in services {
        for entry in service.get("ports").and_then(Value::as_array).into_iter().flatten() {
            let port = container_port(entry, name);
            assert_ne!(port, ADMIN_PORT, "{name} publishes the management port: {entry}");
            published.push(format!("{name}:{port}"));
        }
        for entry in service.get("expose").and_then(Value::as_array).into_iter().flatten() {
            assert_ne!(container_port(entry, name), ADMIN_PORT, "{name} exposes the management port");
        }
    }
    let weir = weir_services(&compose);
    for (name, service) in &weir {
        let ports: BTreeSet<u64> = list_of(&service["ports"], name).iter().map(|p| container_port(p, name)).collect();
        assert!(ports.contains(&METRICS_PORT), "{name}: the metrics port is published for the host");
        assert!(ports.iter().all(|p| *p == METRICS_PORT || *p == 8080), "{name} publishes {ports:?}");

        let env = map_of(&service["environment"], name);
        for secret in SECRET_VARIABLES {
            assert!(!env.contains_key(*secret), "{name}: {secret} is written in the compose file; it belongs in secrets.env");
        }
        let env_files: Vec<&str> = list_of(&service["env_file"], name)
            .iter()
            .map(|f| f.get("path").map_or_else(|| str_of(f, name), |p| str_of(p, name)))
            .collect();
        assert!(env_files.contains(&"secrets.env"), "{name}: secrets come from secrets.env: {env_files:?}");
    }
    // The env file is the operator's: an example is committed, the real one is ignored.
    let example = read("deploy/secrets.env.example");
    let declared: BTreeSet<String> = example
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .map(|l| l.split('=').next().unwrap_or("").to_string())
        .collect();
    for required in ["WEIR_ADMIN_TOKEN", "WHATSAPP_APP_SECRET"] {
        assert!(declared.contains(required), "secrets.env.example does not name {required}: {declared:?}");
    }
    assert!(
        example.lines().filter(|l| !l.starts_with('#')).all(|l| l.split_once('=').is_none_or(|(_, v)| v.trim().is_empty())),
        "the example holds no values"
    );
    assert_known_variables(&declared, &topology(), "secrets.env.example");
    assert!(read("deploy/.gitignore").lines().any(|l| l.trim() == "secrets.env"), "deploy/secrets.env is not ignored");
    println!("compose publishes {published:?}; management port {ADMIN_PORT} published by none; secrets from secrets.env");
}

#[test]
fn prometheus_scrapes_every_weir_service_and_loads_the_alert_rules() {
    let compose = compose();
    let config = yaml_doc("deploy/prometheus/prometheus.yml");
    let jobs = list_of(&config["scrape_configs"], "scrape_configs");
    let weir_job = jobs
        .iter()
        .find(|j| j["job_name"] == "weir")
        .expect("a scrape job named weir (the target-down alert selects it)");
    assert_eq!(
        weir_job
            .get("metrics_path")
            .map_or("/metrics", |p| str_of(p, "metrics_path")),
        "/metrics"
    );
    let targets: BTreeSet<String> = list_of(&weir_job["static_configs"], "static_configs")
        .iter()
        .flat_map(|c| {
            list_of(&c["targets"], "targets")
                .iter()
                .map(|t| str_of(t, "target").to_string())
        })
        .collect();
    let expected: BTreeSet<String> = weir_services(&compose)
        .keys()
        .map(|s| format!("{s}:{METRICS_PORT}"))
        .collect();
    assert_eq!(targets, expected);

    let rule_files: Vec<&str> = list_of(&config["rule_files"], "rule_files")
        .iter()
        .map(|r| str_of(r, "rule file"))
        .collect();
    let mounts: Vec<&str> = list_of(
        &compose["services"]["prometheus"]["volumes"],
        "prometheus volumes",
    )
    .iter()
    .map(|v| str_of(v, "volume"))
    .collect();
    for rule_file in rule_files {
        assert!(
            mounts.iter().any(|m| m.starts_with("./prometheus/alerts.yml:") && m.contains(&format!(":{rule_file}"))),
            "rule file {rule_file} is not deploy/prometheus/alerts.yml mounted by compose ({mounts:?})"
        );
    }
}

#[test]
fn alert_rules_use_documented_metrics_and_the_guide_thresholds() {
    let documented = documented_metrics();
    let alerts = yaml_doc("deploy/prometheus/alerts.yml");
    let mut exprs = Vec::new();
    for group in list_of(&alerts["groups"], "groups") {
        for rule in list_of(&group["rules"], "rules") {
            let name = str_of(&rule["alert"], "alert");
            let expr = str_of(&rule["expr"], name);
            assert!(rule["for"].is_string(), "{name}: no `for:`");
            let severity = str_of(&rule["labels"]["severity"], name);
            assert!(
                ["warning", "critical"].contains(&severity),
                "{name}: severity {severity}"
            );
            for annotation in ["summary", "description"] {
                assert!(
                    !str_of(&rule["annotations"][annotation], name)
                        .trim()
                        .is_empty(),
                    "{name}: {annotation}"
                );
            }
            assert_eq!(
                undocumented(expr, &documented),
                Vec::<String>::new(),
                "{name}: undocumented metrics in {expr}"
            );
            exprs.push(expr.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    // The Skeji guide's thresholds, plus a node that is unhealthy or cannot be scraped.
    let has = |parts: &[&str]| exprs.iter().any(|e| parts.iter().all(|p| e.contains(p)));
    assert!(
        has(&["weir_consumer_lag", "> 10000"]),
        "lag > 10,000: {exprs:#?}"
    );
    assert!(
        has(&[
            "weir_records_dead_lettered_total",
            "/",
            "weir_records_consumed_total",
            "> 0.01"
        ]),
        "DLQ > 1 %: {exprs:#?}"
    );
    assert!(
        has(&[
            "histogram_quantile(0.95",
            "weir_stage_processing_seconds_bucket",
            "> 5"
        ]),
        "p95 > 5 s: {exprs:#?}"
    );
    assert!(
        has(&["weir_node_healthy == 0"]),
        "unhealthy node: {exprs:#?}"
    );
    assert!(has(&["up{job=\"weir\"} == 0"]), "target down: {exprs:#?}");
}

/// Every string under a key named `expr`, `query` or `definition` (panel targets and
/// template variable queries).
fn dashboard_queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match v.as_str() {
                    Some(s) if ["expr", "query", "definition"].contains(&k.as_str()) => {
                        out.push(s.to_string())
                    }
                    _ => dashboard_queries(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

#[test]
fn the_dashboard_uses_documented_metrics_and_covers_the_catalogue() {
    let documented = documented_metrics();
    let dashboard: Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/weir.json")).expect("dashboard JSON");
    assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());
    let panels = list_of(&dashboard["panels"], "panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        let title = str_of(&panel["title"], "panel title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "duplicate panel id at {title}"
        );
        if panel["type"] == "row" {
            continue;
        }
        let targets = list_of(&panel["targets"], title);
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = str_of(&target["expr"], title);
            assert!(
                !metric_refs(expr).is_empty(),
                "{title}: {expr} uses no weir metric"
            );
        }
    }
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    let mut used = BTreeSet::new();
    for q in &queries {
        assert_eq!(
            undocumented(q, &documented),
            Vec::<String>::new(),
            "undocumented metrics in {q}"
        );
        used.extend(metric_refs(q));
    }
    for metric in [
        "weir_records_consumed_total",
        "weir_records_produced_total",
        "weir_records_failed_total",
        "weir_records_retried_total",
        "weir_records_dead_lettered_total",
        "weir_stage_processing_seconds_bucket",
        "weir_end_to_end_seconds_bucket",
        "weir_consumer_lag",
        "weir_partition_in_flight",
        "weir_supervisor_restarts_total",
        "weir_rate_limiter_wait_seconds_total",
        "weir_transport_errors_total",
    ] {
        assert!(used.contains(metric), "no panel shows {metric}");
    }

    // Provisioning: the dashboards folder compose mounts is the one the provider reads,
    // and the data source points at the compose Prometheus.
    let provider = yaml_doc("deploy/grafana/provisioning/dashboards/dashboards.yml");
    let provider_path = str_of(
        &provider["providers"][0]["options"]["path"],
        "provider path",
    );
    let compose = compose();
    let grafana_mounts: Vec<&str> = list_of(
        &compose["services"]["grafana"]["volumes"],
        "grafana volumes",
    )
    .iter()
    .map(|v| str_of(v, "volume"))
    .collect();
    assert!(
        grafana_mounts
            .iter()
            .any(|m| m.starts_with(&format!("./grafana/dashboards:{provider_path}"))),
        "{grafana_mounts:?}"
    );
    let datasources = yaml_doc("deploy/grafana/provisioning/datasources/datasources.yml");
    let prometheus = list_of(&datasources["datasources"], "datasources")
        .iter()
        .find(|d| d["type"] == "prometheus")
        .expect("a Prometheus data source");
    assert_eq!(prometheus["url"], "http://prometheus:9090");
}

// ---------------------------------------------------------------------------------------
// Kubernetes

/// Every document of the files kustomization.yaml lists, after checking that it lists
/// exactly the manifests in deploy/kubernetes.
fn kubernetes_resources() -> Vec<Value> {
    let kustomization = yaml_doc("deploy/kubernetes/kustomization.yaml");
    let listed: BTreeSet<String> = list_of(&kustomization["resources"], "resources")
        .iter()
        .map(|r| str_of(r, "resource").to_string())
        .collect();
    let present: BTreeSet<String> = deploy_files()
        .iter()
        .filter_map(|f| f.strip_prefix("deploy/kubernetes/"))
        .filter(|f| f.ends_with(".yaml") && *f != "kustomization.yaml")
        .map(str::to_string)
        .collect();
    assert_eq!(
        listed, present,
        "kustomization.yaml must list every manifest in deploy/kubernetes"
    );
    listed
        .iter()
        .flat_map(|f| yaml_docs(&format!("deploy/kubernetes/{f}")))
        .collect()
}

fn of_kind<'a>(resources: &'a [Value], kind: &str) -> Vec<&'a Value> {
    resources.iter().filter(|r| r["kind"] == kind).collect()
}

#[test]
fn the_configmap_holds_the_repository_topology_byte_for_byte() {
    let configmap = yaml_doc("deploy/kubernetes/configmap.yaml");
    assert_eq!(configmap["kind"], "ConfigMap");
    assert!(
        configmap["data"]["topology.yaml"].as_str() == Some(read("topology.yaml").as_str()),
        "deploy/kubernetes/configmap.yaml is stale: run deploy/kubernetes/gen-configmap.sh"
    );
    // The business seed the topology names, mounted where the topology looks for it.
    let topology = topology();
    let seed = str_of(
        &topology.yaml["stages"]["business-units"]["config"]["seed"],
        "business-units seed",
    );
    assert!(
        configmap["data"]["businesses.json"].as_str() == Some(read(seed).as_str()),
        "the ConfigMap's businesses.json differs from {seed}: run deploy/kubernetes/gen-configmap.sh"
    );
}

/// The nodes that run an exactly-once stage: their pods need a stable `WEIR_INSTANCE`.
fn exactly_once_nodes(topology: &Topology) -> BTreeSet<String> {
    let is_exactly_once = |v: &Value| v.as_str().is_some_and(|g| g.replace('_', "-") == "exactly-once");
    let default = is_exactly_once(&topology.yaml["defaults"]["guarantee"]);
    let stages: BTreeSet<String> = topology.yaml["stages"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, s)| s.get("guarantee").map_or(default, is_exactly_once))
        .map(|(name, _)| name.clone())
        .collect();
    topology
        .nodes
        .iter()
        .filter(|(_, members)| members.iter().any(|m| stages.contains(m)))
        .map(|(n, _)| n.clone())
        .collect()
}

#[test]
fn workloads_run_exactly_the_topology_nodes_with_health_probes_on_the_metrics_port() {
    let topology = topology();
    let resources = kubernetes_resources();
    let configmap = of_kind(&resources, "ConfigMap");
    assert_eq!(configmap.len(), 1);
    let configmap_name = str_of(&configmap[0]["metadata"]["name"], "ConfigMap name");
    let seed = str_of(
        &topology.yaml["stages"]["business-units"]["config"]["seed"],
        "seed",
    );
    let (cluster, kafka_namespace) = strimzi_cluster(&resources);
    let claims: BTreeMap<&str, &Value> = of_kind(&resources, "PersistentVolumeClaim")
        .into_iter()
        .map(|c| (str_of(&c["metadata"]["name"], "claim"), &c["spec"]))
        .collect();

    let exactly_once = exactly_once_nodes(&topology);
    let mut nodes = BTreeSet::new();
    let mut workloads = of_kind(&resources, "Deployment");
    workloads.extend(of_kind(&resources, "StatefulSet"));
    for deployment in workloads {
        let kind = str_of(&deployment["kind"], "kind");
        let name = str_of(&deployment["metadata"]["name"], "workload name");
        let pod = &deployment["spec"]["template"];
        let containers = list_of(&pod["spec"]["containers"], name);
        assert_eq!(containers.len(), 1, "{name}: one container");
        let container = &containers[0];
        let node = node_argument(list_of(&container["args"], name), name);
        assert!(
            topology.nodes.contains_key(&node),
            "{name} runs node `{node}`, not in topology.yaml"
        );
        assert!(
            nodes.insert(node.clone()),
            "two Deployments run node `{node}`"
        );
        assert!(
            deployment["spec"]["replicas"]
                .as_u64()
                .is_some_and(|r| r >= 1),
            "{name}: replicas"
        );

        // Probes on the metrics port, by name or number; the management port is not declared.
        let ports = list_of(&container["ports"], name);
        let metrics_port_names: Vec<&str> = ports
            .iter()
            .filter(|p| p["containerPort"].as_u64() == Some(METRICS_PORT))
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(
            ports.iter().all(|p| p["containerPort"].as_u64() != Some(ADMIN_PORT)),
            "{name} declares the management port {ADMIN_PORT}"
        );
        for (probe, expected_path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]
        {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"], expected_path, "{name}: {probe} path");
            let on_metrics = get["port"].as_u64() == Some(METRICS_PORT)
                || get["port"]
                    .as_str()
                    .is_some_and(|p| metrics_port_names.contains(&p));
            assert!(
                on_metrics,
                "{name}: {probe} is not on the metrics port {METRICS_PORT}"
            );
        }
        let annotations = &pod["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{name}");
        assert_eq!(
            annotations["prometheus.io/port"],
            METRICS_PORT.to_string(),
            "{name}"
        );

        // Environment: what compose sets, brokers from the Strimzi bootstrap Service.
        let env: BTreeMap<&str, &Value> = list_of(&container["env"], name)
            .iter()
            .map(|e| (str_of(&e["name"], name), e))
            .collect();
        let value = |var: &str| {
            env.get(var)
                .and_then(|e| e["value"].as_str())
                .unwrap_or_else(|| panic!("{name}: no {var} value"))
        };
        assert_eq!(value("WEIR_TRANSPORT"), "kafka", "{name}");
        assert_eq!(value("WEIR_METRICS_LISTEN"), format!("0.0.0.0:{METRICS_PORT}"), "{name}");
        assert_eq!(
            value("WEIR_ADMIN_LISTEN"),
            format!("127.0.0.1:{ADMIN_PORT}"),
            "{name}: management on the pod's loopback only"
        );
        // Secrets from the Secret, never written here.
        for secret in SECRET_VARIABLES {
            if let Some(e) = env.get(secret) {
                assert!(e.get("value").is_none(), "{name}: {secret} is written in the manifest");
                assert!(
                    e["valueFrom"]["secretKeyRef"]["name"].is_string(),
                    "{name}: {secret} must come from a Secret (secretKeyRef)"
                );
            }
        }
        assert!(env.contains_key("WEIR_ADMIN_TOKEN"), "{name}: no admin token from the Secret");
        if topology.ingress_nodes().contains(&node) {
            assert!(env.contains_key("WHATSAPP_APP_SECRET"), "{name}: the webhook's app secret from the Secret");
        }
        // A stable instance name where exactly-once needs one: a StatefulSet's pod name.
        let instance_from_pod_name = env
            .get("WEIR_INSTANCE")
            .is_some_and(|e| e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name");
        if exactly_once.contains(&node) || node == "core" {
            assert_eq!(kind, "StatefulSet", "{name}: node `{node}` needs a stable instance name");
            assert!(instance_from_pod_name, "{name}: WEIR_INSTANCE must be the pod name");
        }
        assert_eq!(value("OTEL_SERVICE_NAME"), format!("weir-{node}"), "{name}");
        let bootstrap = format!("{cluster}-kafka-bootstrap.{kafka_namespace}.svc:9092");
        assert_eq!(
            value("KAFKA_BROKERS"),
            bootstrap,
            "{name}: brokers must be the Strimzi cluster the KafkaTopics name"
        );
        if topology.ingress_nodes().contains(&node) {
            assert_eq!(value("WEIR_LISTEN"), "0.0.0.0:8080", "{name}");
        }
        assert_known_variables(
            &env.keys().map(|k| k.to_string()).collect(),
            &topology,
            name,
        );

        // The topology (and the seed it names) mounted where the image reads it.
        let volumes: BTreeMap<&str, &Value> = list_of(&pod["spec"]["volumes"], name)
            .iter()
            .map(|v| (str_of(&v["name"], name), v))
            .collect();
        let mounts: BTreeMap<&str, &str> = list_of(&container["volumeMounts"], name)
            .iter()
            .map(|m| (str_of(&m["mountPath"], name), str_of(&m["name"], name)))
            .collect();
        let config_volume = volumes[mounts
            .get("/etc/weir")
            .unwrap_or_else(|| panic!("{name}: nothing at /etc/weir"))];
        assert_eq!(config_volume["configMap"]["name"], configmap_name, "{name}");
        let items: BTreeSet<(&str, &str)> = list_of(&config_volume["configMap"]["items"], name)
            .iter()
            .map(|i| (str_of(&i["key"], name), str_of(&i["path"], name)))
            .collect();
        assert!(
            items.contains(&("topology.yaml", "topology.yaml")),
            "{name}: {items:?}"
        );
        assert!(
            items.contains(&("businesses.json", seed)),
            "{name}: the seed must be at {seed}: {items:?}"
        );

        // The data dir: a ReadWriteOnce claim holds one pod's SQLite database, so a
        // Deployment on one must run one replica and replace it with Recreate.
        let data = volumes[mounts
            .get("/var/lib/weir")
            .unwrap_or_else(|| panic!("{name}: no data dir volume"))];
        if let Some(claim) = data["persistentVolumeClaim"]["claimName"].as_str() {
            let spec = claims
                .get(claim)
                .unwrap_or_else(|| panic!("{name}: claim {claim} is not declared"));
            assert!(list_of(&spec["accessModes"], claim).contains(&Value::from("ReadWriteOnce")));
            assert_eq!(
                deployment["spec"]["replicas"], 1,
                "{name}: one replica per ReadWriteOnce database"
            );
            // The old pod must be gone before the new one opens the database: Recreate
            // for a Deployment; a one-replica StatefulSet replaces its pod that way anyway.
            if kind == "Deployment" {
                assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate", "{name}");
            } else {
                assert_eq!(deployment["spec"]["podManagementPolicy"], "OrderedReady", "{name}");
            }
        } else {
            assert!(
                data["emptyDir"].is_object(),
                "{name}: data dir is neither a claim nor an emptyDir"
            );
        }
    }
    assert_eq!(
        nodes,
        topology.node_names(),
        "one workload per node of topology.yaml"
    );

    // Services: the ingress port of the ingress nodes and the metrics port; nothing
    // reaches the management port, by number or by name.
    let services = of_kind(&resources, "Service");
    let service_ports: Vec<u64> = services
        .iter()
        .flat_map(|s| {
            list_of(&s["spec"]["ports"], "ports")
                .iter()
                .filter_map(|p| p["port"].as_u64())
        })
        .collect();
    for service in &services {
        let sname = str_of(&service["metadata"]["name"], "Service name");
        for p in list_of(&service["spec"]["ports"], sname) {
            for field in ["port", "targetPort"] {
                assert_ne!(p[field].as_u64(), Some(ADMIN_PORT), "Service {sname} exposes the management port");
                assert_ne!(p[field].as_str(), Some("admin"), "Service {sname} targets a port named admin");
            }
        }
    }
    println!("Services expose {service_ports:?}; the management port {ADMIN_PORT} by none");
    assert!(
        service_ports.contains(&8080),
        "no Service for the ingress: {service_ports:?}"
    );
    assert!(
        service_ports.contains(&METRICS_PORT),
        "no Service for the metrics port: {service_ports:?}"
    );
}

/// The Strimzi cluster and namespace every KafkaTopic names (all the same).
fn strimzi_cluster(resources: &[Value]) -> (String, String) {
    let topics = of_kind(resources, "KafkaTopic");
    assert!(
        !topics.is_empty(),
        "no KafkaTopic among the Kubernetes resources"
    );
    let pairs: BTreeSet<(String, String)> = topics
        .iter()
        .map(|t| {
            (
                str_of(
                    &t["metadata"]["labels"]["strimzi.io/cluster"],
                    "cluster label",
                )
                .to_string(),
                str_of(&t["metadata"]["namespace"], "KafkaTopic namespace").to_string(),
            )
        })
        .collect();
    assert_eq!(
        pairs.len(),
        1,
        "KafkaTopics name several clusters: {pairs:?}"
    );
    pairs.into_iter().next().expect("one")
}

/// The arguments gen-kafkatopics.sh passes to `weir export strimzi` (its `ARGS=(…)` line).
fn gen_kafkatopics_args() -> Vec<String> {
    let script = read("deploy/kubernetes/gen-kafkatopics.sh");
    let line = script
        .lines()
        .find_map(|l| l.trim().strip_prefix("ARGS=(")?.strip_suffix(')'))
        .expect("gen-kafkatopics.sh has an ARGS=(…) line");
    line.split_whitespace().map(str::to_string).collect()
}

#[test]
fn committed_kafkatopics_are_what_weir_export_strimzi_prints_for_the_topology() {
    let topology_file = path("topology.yaml");
    let out = Command::new(BIN)
        .args(["export", "strimzi", "-t"])
        .arg(&topology_file)
        .args(gen_kafkatopics_args())
        .env("WEIR_LOG", "warn")
        .output()
        .expect("weir runs");
    assert!(
        out.status.success(),
        "weir export strimzi: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(
        exported == read("deploy/kubernetes/kafkatopics.yaml"),
        "deploy/kubernetes/kafkatopics.yaml is stale: run deploy/kubernetes/gen-kafkatopics.sh"
    );

    let topology = topology();
    let docs = yaml_docs("deploy/kubernetes/kafkatopics.yaml");
    let mut exported_topics = BTreeMap::new();
    for doc in &docs {
        assert_eq!(doc["apiVersion"], "kafka.strimzi.io/v1beta2");
        assert_eq!(doc["kind"], "KafkaTopic");
        let name = doc["spec"]
            .get("topicName")
            .unwrap_or(&doc["metadata"]["name"]);
        let name = str_of(name, "topic name").to_string();
        let partitions = doc["spec"]["partitions"].as_u64().expect("partitions");
        assert!(
            exported_topics.insert(name.clone(), partitions).is_none(),
            "topic {name} twice"
        );
    }
    assert_eq!(
        exported_topics, topology.topics,
        "KafkaTopics must be exactly topology.yaml's topics and partitions"
    );
}

#[test]
fn export_strimzi_refuses_bad_arguments_with_a_usage_error() {
    let out = Command::new(BIN)
        .args(["export", "strimzi", "-t"])
        .arg(path("topology.yaml"))
        .args(["--namespace", "Not_A_Namespace"])
        .output()
        .expect("weir runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Not_A_Namespace"));
}

#[test]
fn the_dockerfile_copies_files_that_exist_and_runs_weir_unprivileged() {
    let dockerfile = read("deploy/Dockerfile");
    let instructions: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    for line in &instructions {
        if let Some(rest) = line.strip_prefix("COPY ") {
            if rest.starts_with("--from") {
                continue;
            }
            let parts: Vec<&str> = rest.split_whitespace().collect();
            for source in &parts[..parts.len() - 1] {
                if *source != "." {
                    assert!(
                        path(source).exists(),
                        "Dockerfile copies {source}, which does not exist"
                    );
                }
            }
        }
    }
    let has = |prefix: &str| instructions.iter().any(|l| l.starts_with(prefix));
    assert!(has("ENTRYPOINT [\"weir\"]"));
    assert!(has("EXPOSE 8080 9464"));
    assert!(
        instructions.iter().filter(|l| l.starts_with("EXPOSE")).all(|l| !l.contains(&ADMIN_PORT.to_string())),
        "the image must not expose the management port"
    );
    assert!(dockerfile.contains(&format!("WEIR_ADMIN_LISTEN=127.0.0.1:{ADMIN_PORT}")));
    assert!(dockerfile.contains(&format!("WEIR_METRICS_LISTEN=0.0.0.0:{METRICS_PORT}")));
    assert!(instructions
        .iter()
        .any(|l| l.starts_with("USER ") && !l.contains("root") && !l.starts_with("USER 0")));
    assert!(dockerfile.contains("WEIR_TOPOLOGY=/etc/weir/topology.yaml"));
    assert!(dockerfile.contains("WEIR_DATA_DIR=/var/lib/weir"));
    // The seed the topology names is where the topology's directory says it is.
    let seed = str_of(
        &topology().yaml["stages"]["business-units"]["config"]["seed"],
        "seed",
    )
    .to_string();
    assert!(
        dockerfile.contains(&format!("COPY {seed} /etc/weir/{seed}")),
        "the image must hold the seed at /etc/weir/{seed}"
    );
}
