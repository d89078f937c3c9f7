//! Skeji end to end on the embedded default: the repo's `topology.yaml` in one process,
//! driven through the WhatsApp webhook, observed on `notifications-sent` and the outbox.
//! The same flows run on Kafka with edge and core as two processes (tests/kafka/skeji.rs).

mod flows;
mod rewire;

use async_trait::async_trait;
use flows::Deployment;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use weir::runtime::{self, NodeHandle, NodeOptions};
use weir::stages::Registry;
use weir::topology::Topology;
use weir::transport::Transport;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

struct EmbeddedSkeji {
    node: NodeHandle,
    data: tempfile::TempDir,
    answer_bound: Duration,
}

impl EmbeddedSkeji {
    /// The repository's `topology.yaml`, with `overrides` for its variables.
    async fn start(overrides: &[(&str, &str)]) -> EmbeddedSkeji {
        let text = std::fs::read_to_string(format!("{ROOT}/topology.yaml")).expect("topology.yaml");
        // The brief: an answer within 2 s on the embedded default.
        EmbeddedSkeji::start_text(&text, overrides, Duration::from_secs(2)).await
    }

    /// `text` in place of `topology.yaml` (rewired variants), on free ports.
    async fn start_text(text: &str, overrides: &[(&str, &str)], answer_bound: Duration) -> EmbeddedSkeji {
        let mut vars: HashMap<String, String> =
            [("WEIR_LISTEN", "127.0.0.1:0"), ("WEIR_ADMIN_LISTEN", "127.0.0.1:0"), ("WEIR_METRICS_LISTEN", "127.0.0.1:0")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        vars.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let env = move |name: &str| vars.get(name).cloned();
        let file = format!("{ROOT}/topology.yaml");
        let registry = Registry::with_apps();
        let topology = Topology::parse(&file, text, &env, &registry).unwrap_or_else(|d| panic!("the topology is refused:\n{d}"));
        let data = tempfile::tempdir().expect("tmp");
        let mut opts = NodeOptions::new(topology.plan(None).expect("plan"), Arc::new(registry));
        opts.data_dir = data.path().to_path_buf();
        opts.config_dir = PathBuf::from(ROOT);
        opts.shutdown_timeout = Duration::from_secs(20);
        EmbeddedSkeji { node: runtime::start(opts).await.expect("skeji starts"), data, answer_bound }
    }
}

#[async_trait]
impl Deployment for EmbeddedSkeji {
    fn webhook(&self) -> String {
        let addr = self.node.ingress_addr("whatsapp-webhook").expect("webhook listener");
        format!("http://{addr}/webhooks/whatsapp")
    }
    fn data_dir(&self) -> PathBuf {
        self.data.path().to_path_buf()
    }
    fn transport(&self) -> Arc<dyn Transport> {
        self.node.transport.clone()
    }
    fn answer_bound(&self) -> Duration {
        self.answer_bound
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_booking_cancel_and_rebook() {
    let skeji = EmbeddedSkeji::start(&[]).await;
    flows::booking_cancel_rebook(&skeji, "972501234567", "972507654321").await;
    assert_eq!(skeji.node.shutdown().await.code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_redelivered_whatsapp_message_gets_one_reply() {
    let skeji = EmbeddedSkeji::start(&[]).await;
    flows::redelivered_message_gets_one_reply(&skeji, "972521112233").await;
    assert_eq!(skeji.node.shutdown().await.code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_invalid_llm_output_is_dead_lettered_with_an_apology() {
    let (base_url, stub) = flows::llm_stub().await;
    // The openai provider reads its key from the process environment at build time (the
    // topology names only the variable). Nothing else in this test binary reads it.
    std::env::set_var("OPENAI_API_KEY", "stub-key");
    let skeji = EmbeddedSkeji::start(&[
        ("SKEJI_LLM_PROVIDER", "openai"),
        ("OPENAI_BASE_URL", base_url.as_str()),
    ])
    .await;
    flows::invalid_llm_output_is_dead_lettered_with_an_apology(&skeji, "972531112233").await;
    assert_eq!(skeji.node.shutdown().await.code, 0);
    stub.abort();
}
