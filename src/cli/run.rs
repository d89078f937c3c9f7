//! `weir run`: start the node and stop it cleanly on SIGINT/SIGTERM.

use super::{load, CliError, TopologyArg};
use crate::runtime::{self, NodeOptions};
use crate::stages::Registry;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    topology: TopologyArg,
    /// Run only this node's stages and ingress (from `nodes:`); default: everything.
    #[arg(long, env = "WEIR_NODE")]
    node: Option<String>,
    /// Where stages keep their files (SQLite databases, outbox).
    #[arg(long, env = "WEIR_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// A stable name for this process (e.g. the pod name), so exactly-once stages fence
    /// their own crashed predecessor on restart; default `<hostname>-<pid>`.
    #[arg(long, env = "WEIR_INSTANCE")]
    instance: Option<String>,
    /// Longest time a shutdown may take (drain, final commits, flush).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    shutdown_timeout: std::time::Duration,
}

pub fn run(args: RunArgs, registry: Registry) -> Result<(), CliError> {
    let loaded = load::load(&args.topology.file, &registry);
    if loaded.is_err() {
        let _ = super::init_logging(None);
    }
    let topology = loaded?;
    let plan = topology.plan(args.node.as_deref())?;
    let spans = span_export(&plan.tracing, args.node.as_deref(), |k| std::env::var(k).ok());
    let _spans = super::init_logging(spans.as_ref())?;
    if let Some(s) = &spans {
        tracing::info!(endpoint = %s.endpoint, service = %s.service_name, sampling = s.sampling, "exporting spans");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start: {e}")))?;
    rt.block_on(async move {
        let stages: Vec<String> = plan.stages.iter().map(|s| s.name.clone()).collect();
        let mut opts = NodeOptions::new(plan, Arc::new(registry));
        opts.data_dir = args.data_dir;
        opts.config_dir = match args.topology.file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        opts.shutdown_timeout = args.shutdown_timeout;
        if let Some(instance) = args.instance {
            opts.instance = instance;
        }
        let mut node = runtime::start(opts).await?;
        tracing::info!(topology = %topology.name(), node = ?args.node, transport = node.transport.kind(),
            ?stages, "weir is running; Ctrl-C to stop");
        let exit = tokio::select! {
            _ = shutdown_signal() => None,
            exit = node.wait() => Some(exit),
        };
        let exit = match exit {
            Some(exit) => exit,
            None => node.shutdown().await,
        };
        if exit.code == 0 {
            Ok(())
        } else {
            Err(CliError::Failed(format!("node stopped: {}", exit.reason)))
        }
    })
}

/// Where spans go, if anywhere: the topology's `tracing.endpoint`, else
/// `OTEL_EXPORTER_OTLP_ENDPOINT`; service name from the topology, else `OTEL_SERVICE_NAME`,
/// else `weir-<node>`.
fn span_export(
    spec: &crate::topology::spec::TracingSpec,
    node: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Option<crate::telemetry::trace::TracingSettings> {
    let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let endpoint = non_empty(spec.endpoint.clone()).or_else(|| non_empty(env("OTEL_EXPORTER_OTLP_ENDPOINT")))?;
    let service_name = non_empty(spec.service_name.clone())
        .or_else(|| non_empty(env("OTEL_SERVICE_NAME")))
        .unwrap_or_else(|| node.map_or_else(|| "weir".to_string(), |n| format!("weir-{n}")));
    Some(crate::telemetry::trace::TracingSettings { endpoint, service_name, sampling: spec.sampling.unwrap_or(1.0) })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("signal received; shutting down");
}
