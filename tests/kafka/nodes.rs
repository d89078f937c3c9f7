//! weir nodes inside the test process, on the real broker, with the scripted test kinds
//! (tests/common/kinds.rs) registered — for tests that read a node's counters.

use std::sync::Arc;
use std::time::Duration;
use weir::runtime::{self, NodeHandle, NodeOptions};
use weir::stages::Registry;
use weir::topology::Topology;

pub fn registry() -> Registry {
    let mut r = Registry::with_apps();
    r.register_stage::<crate::kinds::Scripted>();
    r
}

/// Starts a node for `yaml` as transactional instance `instance`.
pub async fn start(yaml: &str, instance: &str) -> NodeHandle {
    if let Ok(filter) = std::env::var("WEIR_TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(filter)).with_test_writer().try_init();
    }
    let env = |_: &str| None;
    let registry = registry();
    let topology = match Topology::parse("test.yaml", yaml, &env, &registry) {
        Ok(t) => t,
        Err(d) => panic!("test topology is invalid:\n{d}"),
    };
    let mut opts = NodeOptions::new(topology.plan(None).expect("plan"), Arc::new(registry));
    opts.data_dir = std::env::temp_dir().join(format!("weir-kafka-test-{instance}"));
    opts.instance = instance.to_string();
    opts.worker_threads = Some(2);
    opts.shutdown_timeout = Duration::from_secs(30);
    runtime::start(opts).await.expect("node starts")
}
