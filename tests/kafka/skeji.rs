//! The Skeji end-to-end suite on Kafka: the repo's `topology.yaml` with `edge` and `core`
//! as two `weir run` processes, driven through the WhatsApp webhook of the edge process
//! and observed on `notifications-sent` and the shared outbox. The flows and their
//! assertions are the embedded suite's (tests/skeji_e2e/flows.rs).

#[path = "../skeji_e2e/flows.rs"]
pub(crate) mod flows;

use crate::support::*;
use async_trait::async_trait;
use flows::Deployment;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use weir::stages::Registry;
use weir::topology::Topology;
use weir::transport::Transport;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The longest a user may wait for an answer on Kafka (two processes, consumer groups,
/// read_committed readers); the embedded default answers within 2 s.
const ANSWER_BOUND: Duration = Duration::from_secs(10);

/// Characters of a topic name, group name or relative file path in the topology text.
fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

/// Replaces every whole token of `text` found in `map` (tokens are maximal runs of
/// [`token_char`]s), and the top-level `name:` line with `name`.
fn rewrite(text: &str, map: &BTreeMap<String, String>, name: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for line in text.split_inclusive('\n') {
        if line.starts_with("name:") {
            out.push_str(&format!("name: {name}\n"));
            continue;
        }
        let mut token = String::new();
        for c in line.chars() {
            if token_char(c) {
                token.push(c);
                continue;
            }
            out.push_str(map.get(&token).map_or(token.as_str(), String::as_str));
            token.clear();
            out.push(c);
        }
        out.push_str(map.get(&token).map_or(token.as_str(), String::as_str));
    }
    out
}

/// Relative paths among a config's string values that name a file of the repo.
fn file_refs(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::String(s) if !s.is_empty() && Path::new(s).is_relative() && Path::new(ROOT).join(s).is_file() => {
            out.insert(s.clone());
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| file_refs(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| file_refs(v, out)),
        _ => {}
    }
}

/// The repo's topology.yaml made this test's own: every declared topic and consumer
/// group prefixed with `prefix`, the topology named `prefix` (client and transactional
/// ids derive from it), and file references in stage and ingress configs made absolute (the copy
/// lives in a temp dir, and relative paths resolve against the topology's directory).
/// Returns the text and the topic name map.
pub(crate) fn own_topology(prefix: &str) -> (String, BTreeMap<String, String>) {
    let file = format!("{ROOT}/topology.yaml");
    let text = std::fs::read_to_string(&file).expect("read topology.yaml");
    let registry = Registry::with_apps();
    let original = Topology::parse(&file, &text, &|_| None, &registry).expect("topology.yaml is valid");
    let spec = original.spec();

    let topics: BTreeMap<String, String> = spec.topics.keys().map(|t| (t.clone(), format!("{prefix}-{t}"))).collect();
    let groups: BTreeSet<String> =
        spec.stages.iter().map(|(name, s)| weir::topology::plan::stage_group(name, s.group.as_deref())).collect();
    let undeclared: Vec<_> = spec.stages.iter().filter(|(_, s)| s.group.is_none()).map(|(n, _)| n.clone()).collect();
    assert!(
        undeclared.is_empty(),
        "stages {undeclared:?} have no `group:`; their default group `weir.<stage>` cannot be made unique by renaming"
    );
    let mut refs = BTreeSet::new();
    let configs = spec.stages.values().map(|s| &s.config).chain(spec.ingress.values().map(|i| &i.config));
    configs.flat_map(|c| c.values()).for_each(|v| file_refs(v, &mut refs));

    let mut map = topics.clone();
    for g in &groups {
        assert!(!map.contains_key(g), "group `{g}` is also a topic name");
        map.insert(g.clone(), format!("{prefix}-{g}"));
    }
    for r in &refs {
        map.insert(r.clone(), format!("{ROOT}/{r}"));
    }
    let own = rewrite(&text, &map, prefix);

    // The copy declares exactly the prefixed topics and groups, and nothing else changed
    // shape: same stages, nodes, ingress.
    let copy = Topology::parse("skeji-kafka.yaml", &own, &|_| None, &registry).expect("the rewritten topology is valid");
    let c = copy.spec();
    assert_eq!(c.name.as_deref(), Some(prefix));
    assert_eq!(c.topics.keys().cloned().collect::<BTreeSet<_>>(), topics.values().cloned().collect::<BTreeSet<_>>());
    assert_eq!(c.stages.keys().collect::<Vec<_>>(), spec.stages.keys().collect::<Vec<_>>());
    assert_eq!(c.nodes, spec.nodes);
    assert_eq!(c.ingress.keys().collect::<Vec<_>>(), spec.ingress.keys().collect::<Vec<_>>());
    for (name, s) in &c.stages {
        let g = s.group.as_deref().unwrap_or_default();
        assert!(g.starts_with(&format!("{prefix}-")), "stage `{name}` group `{g}` is not this test's own");
    }
    for r in &refs {
        assert!(!own.contains(&format!(": {r}")), "`{r}` is still relative");
    }
    println!("  topology {prefix}: {} topics, {} groups, files {refs:?}", topics.len(), groups.len());
    (own, topics)
}

/// A free TCP port on 127.0.0.1 (bound, then released for the worker to take).
pub(crate) fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").to_string()
}

pub(crate) struct KafkaSkeji {
    edge: Worker,
    core: Worker,
    webhook: String,
    topics: BTreeMap<String, String>,
    transport: Arc<dyn Transport>,
    data: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

impl KafkaSkeji {
    /// Starts `--node edge` and `--node core` on this test's own copy of topology.yaml;
    /// `edge_env` is extra environment for the edge process (the LLM provider).
    async fn start(edge_env: &[(&str, &str)]) -> KafkaSkeji {
        Self::start_with(edge_env, &[]).await
    }

    /// As [`KafkaSkeji::start`], with `both_env` given to both processes (trace export).
    pub(crate) async fn start_with(edge_env: &[(&str, &str)], both_env: &[(&str, &str)]) -> KafkaSkeji {
        let prefix = unique("skeji");
        let (text, topics) = own_topology(&prefix);
        let dir = tempfile::tempdir().expect("tmp");
        let file = write_topology(dir.path(), &text);
        let data = tempfile::tempdir().expect("tmp");
        let data_dir = data.path().to_str().expect("utf-8 temp path").to_string();
        let brokers = brokers();
        // The webhook listens on the edge process at a port found free here; the admin
        // ports (and core's unused ingress listen address) take any free port at bind time.
        let edge_listen = free_addr();
        let common = |listen: &str| -> Vec<(String, String)> {
            vec![
                ("WEIR_TRANSPORT".into(), "kafka".into()),
                ("KAFKA_BROKERS".into(), brokers.clone()),
                ("WEIR_LISTEN".into(), listen.into()),
                ("WEIR_ADMIN_LISTEN".into(), "127.0.0.1:0".into()),
                ("WEIR_METRICS_LISTEN".into(), "127.0.0.1:0".into()),
            ]
        };
        let mut edge_vars = common(&edge_listen);
        edge_vars.extend(edge_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut core_vars = common("127.0.0.1:0");
        for vars in [&mut edge_vars, &mut core_vars] {
            vars.extend(both_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        }
        let started = std::time::Instant::now();
        let start = |node: &'static str, vars: &Vec<(String, String)>| {
            let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let instance = format!("{prefix}-{node}");
            Worker::start(node, &file, &["--node", node, "--data-dir", &data_dir, "--instance", &instance], &env)
        };
        let (edge, core) = tokio::task::block_in_place(|| {
            std::thread::scope(|s| {
                let edge = s.spawn(|| start("edge", &edge_vars));
                let core = s.spawn(|| start("core", &core_vars));
                (edge.join().expect("edge starts"), core.join().expect("core starts"))
            })
        });
        println!("  edge (pid {}) and core (pid {}) running after {} ms", edge.pid(), core.pid(), started.elapsed().as_millis());
        KafkaSkeji {
            edge,
            core,
            webhook: format!("http://{edge_listen}/webhooks/whatsapp"),
            topics,
            transport: transport(),
            data,
            _dir: dir,
        }
    }

    /// SIGTERM to both processes; both must exit 0.
    pub(crate) fn stop(mut self) {
        let (edge, core) = tokio::task::block_in_place(|| {
            std::thread::scope(|s| {
                let edge = s.spawn(|| self.edge.stop());
                let core = s.spawn(|| self.core.stop());
                (edge.join().expect("edge stop"), core.join().expect("core stop"))
            })
        });
        assert!(edge.is_some_and(|s| s.success()), "edge exits 0 on SIGTERM: {edge:?}");
        assert!(core.is_some_and(|s| s.success()), "core exits 0 on SIGTERM: {core:?}");
    }
}

#[async_trait]
impl Deployment for KafkaSkeji {
    fn webhook(&self) -> String {
        self.webhook.clone()
    }
    fn data_dir(&self) -> PathBuf {
        self.data.path().to_path_buf()
    }
    fn transport(&self) -> Arc<dyn Transport> {
        self.transport.clone()
    }
    fn topic(&self, name: &str) -> String {
        self.topics.get(name).cloned().unwrap_or_else(|| panic!("`{name}` is not a topic of topology.yaml"))
    }
    fn answer_bound(&self) -> Duration {
        ANSWER_BOUND
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skeji_kafka_booking_cancel_and_rebook() {
    let skeji = KafkaSkeji::start(&[]).await;
    flows::booking_cancel_rebook(&skeji, "972501234567", "972507654321").await;
    skeji.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skeji_kafka_redelivered_whatsapp_message_gets_one_reply() {
    let skeji = KafkaSkeji::start(&[]).await;
    flows::redelivered_message_gets_one_reply(&skeji, "972521112233").await;
    skeji.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skeji_kafka_invalid_llm_output_is_dead_lettered_with_an_apology() {
    let (base_url, stub) = flows::llm_stub().await;
    let skeji =
        KafkaSkeji::start(&[("SKEJI_LLM_PROVIDER", "openai"), ("OPENAI_BASE_URL", base_url.as_str()), ("OPENAI_API_KEY", "stub-key")])
            .await;
    flows::invalid_llm_output_is_dead_lettered_with_an_apology(&skeji, "972531112233").await;
    skeji.stop();
    stub.abort();
}
