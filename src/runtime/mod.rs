//! Runs one node: the plan's stages under a supervisor, its ingress listeners, its
//! metrics port and its admin port, on an actix system of its own thread, until it is
//! asked to stop or its supervisor gives up. The CLI and the tests start nodes the same way.

pub mod admin;
mod drain;
pub mod metrics;

use crate::actors::stats::{NodeStats, StageStats};
use crate::telemetry::metrics::BuildInfo;
use crate::actors::supervisor::{
    Health, NodeExit, NodeSupervisor, RestartBackoff, RestartBudget, Shutdown, SupervisorConfig,
};
use crate::ingress::listener::HttpLimits;
use crate::ingress::server::{bind_all, IngressError};
use crate::stages::payload::PayloadChecks;
use crate::stages::Registry;
use crate::topology::plan::Plan;
use crate::topology::spec::TransportKind;
use crate::transport::embedded::EmbeddedTransport;
use crate::transport::{Transport, TransportError};
use actix::Actor;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

pub struct NodeOptions {
    pub plan: Plan,
    pub registry: Arc<Registry>,
    /// Use this transport instead of creating one from the plan (tests share one).
    pub transport: Option<Arc<dyn Transport>>,
    pub data_dir: PathBuf,
    /// The topology file's directory (relative paths in stage configs start here).
    pub config_dir: PathBuf,
    pub budget: RestartBudget,
    pub restart_backoff: RestartBackoff,
    /// Bound on the whole shutdown: draining, final commits, producer flush.
    pub shutdown_timeout: Duration,
    /// Worker threads of the node's runtime (default: one per core).
    pub worker_threads: Option<usize>,
    /// This process's stable identity for transactions (`WEIR_INSTANCE`); default
    /// `<hostname>-<pid>`, unique but not stable across restarts.
    pub instance: String,
    /// Timeouts and bounds of every listener (ingress, metrics, admin); from the
    /// topology's `http:`, defaults for the rest.
    pub http_limits: HttpLimits,
}

impl NodeOptions {
    pub fn new(plan: Plan, registry: Arc<Registry>) -> Self {
        let http_limits = HttpLimits::default().with_plan(&plan.http);
        NodeOptions {
            plan,
            registry,
            transport: None,
            data_dir: PathBuf::from("data"),
            config_dir: PathBuf::from("."),
            budget: RestartBudget::default(),
            restart_backoff: RestartBackoff::default(),
            shutdown_timeout: Duration::from_secs(30),
            worker_threads: None,
            instance: default_instance(),
            http_limits,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Ingress(#[from] IngressError),
    #[error("payload declarations: {0}")]
    Payload(String),
    #[error("admin port {addr}: {source}")]
    Admin { addr: String, source: std::io::Error },
    #[error(
        "admin port {addr} is not a loopback address and no admin.token is set: anyone who reaches it could \
         write to and read every topic. Set `admin.token` (in topology.yaml: `token: ${{WEIR_ADMIN_TOKEN:-}}`, \
         so export WEIR_ADMIN_TOKEN) or listen on 127.0.0.1"
    )]
    AdminWithoutToken { addr: String },
    #[error("metrics port {addr}: {source}")]
    Metrics { addr: String, source: std::io::Error },
    #[error("data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("cannot start the node's runtime: {0}")]
    Start(String),
    #[error("transport `{0}` is not available in this build")]
    Unsupported(String),
}

fn default_instance() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let host = if host.is_empty() { "host".to_string() } else { host };
    format!("{host}-{}", std::process::id())
}

/// The transport a plan asks for.
pub fn connect(plan: &Plan) -> Result<Arc<dyn Transport>, RuntimeError> {
    match plan.transport {
        TransportKind::Embedded => Ok(Arc::new(EmbeddedTransport::new(plan.embedded_capacity))),
        TransportKind::Kafka => {
            let client_id = format!("weir-{}-{}", plan.topology_name, plan.node.as_deref().unwrap_or("all"));
            Ok(Arc::new(crate::transport::kafka::KafkaTransport::connect(&plan.kafka, &client_id)?))
        }
    }
}

/// The transport a plan asks for, with the embedded log kept under `data_dir` unless the
/// topology says `embedded: {durable: false}`.
pub fn connect_in(plan: &Plan, data_dir: &std::path::Path) -> Result<Arc<dyn Transport>, RuntimeError> {
    if plan.transport != TransportKind::Embedded || !plan.embedded_durable {
        return connect(plan);
    }
    let options = crate::transport::embedded::DurableOptions {
        sync_interval: plan.embedded_sync_interval,
        ..Default::default()
    };
    EmbeddedTransport::open(data_dir, plan.embedded_capacity, options)
        .map(|t| Arc::new(t) as Arc<dyn Transport>)
        .map_err(|e| RuntimeError::DataDir { path: e.path, source: e.source })
}

/// A running node.
pub struct NodeHandle {
    stop: Option<oneshot::Sender<()>>,
    exit: Option<oneshot::Receiver<NodeExit>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub transport: Arc<dyn Transport>,
    pub stats: Arc<NodeStats>,
    pub health: Arc<Health>,
    /// Where each ingress listener is bound (the port, if `:0` was asked).
    pub ingress: Vec<(Vec<String>, SocketAddr)>,
    /// The management port (produce, tail, `/stats`), if the plan has one.
    pub admin: Option<SocketAddr>,
    /// The read-only port (`/metrics`, `/healthz`, `/readyz`), if the plan has one.
    pub metrics: Option<SocketAddr>,
}

impl NodeHandle {
    /// Asks the node to stop (stop ingress, drain, commit, flush) and waits for it.
    pub async fn shutdown(mut self) -> NodeExit {
        self.request_stop();
        self.wait().await
    }

    /// Asks the node to stop without waiting.
    pub fn request_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits until the node ends (after a stop request, or when its supervisor gives up).
    /// Cancel-safe: a `wait` dropped early can be called again.
    pub async fn wait(&mut self) -> NodeExit {
        let exit = match self.exit.as_mut() {
            Some(rx) => rx.await.unwrap_or(NodeExit { code: 1, reason: "node thread ended unexpectedly".into() }),
            None => NodeExit { code: 1, reason: "already waited".into() },
        };
        self.exit = None;
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        exit
    }

    /// The ingress address of the listener that serves `name`.
    pub fn ingress_addr(&self, name: &str) -> Option<SocketAddr> {
        self.ingress.iter().find(|(names, _)| names.iter().any(|n| n == name)).map(|(_, a)| *a)
    }
}

struct Started {
    ingress: Vec<(Vec<String>, SocketAddr)>,
    admin: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
}

/// Starts a node and returns once its listeners are bound and its supervisor started.
pub async fn start(opts: NodeOptions) -> Result<NodeHandle, RuntimeError> {
    let transport = match &opts.transport {
        Some(t) => t.clone(),
        None => connect_in(&opts.plan, &opts.data_dir)?,
    };
    crate::telemetry::spans::set_messaging_system(transport.kind());
    std::fs::create_dir_all(&opts.data_dir)
        .map_err(|source| RuntimeError::DataDir { path: opts.data_dir.clone(), source })?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("weir-worker");
    if let Some(n) = opts.worker_threads {
        builder.worker_threads(n.max(1));
    }
    let rt = builder.build().map_err(|e| RuntimeError::Start(e.to_string()))?;
    let stats = Arc::new(NodeStats::default());
    let health = Arc::new(Health::default());
    let (ready_tx, ready_rx) = oneshot::channel::<Result<Started, RuntimeError>>();
    let (stop_tx, stop_rx) = oneshot::channel();
    let (exit_tx, exit_rx) = oneshot::channel();
    let (t, s, h) = (transport.clone(), stats.clone(), health.clone());
    let thread = std::thread::Builder::new()
        .name("weir-node".into())
        .spawn(move || {
            let system = actix_rt::System::with_tokio_rt(move || rt);
            system.block_on(run_node(opts, t, s, h, ready_tx, stop_rx, exit_tx));
        })
        .map_err(|e| RuntimeError::Start(e.to_string()))?;
    match ready_rx.await {
        Ok(Ok(started)) => Ok(NodeHandle {
            stop: Some(stop_tx),
            exit: Some(exit_rx),
            thread: Some(thread),
            transport,
            stats,
            health,
            ingress: started.ingress,
            admin: started.admin,
            metrics: started.metrics,
        }),
        Ok(Err(e)) => {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            Err(e)
        }
        Err(_) => Err(RuntimeError::Start("the node thread ended during start".into())),
    }
}

async fn run_node(
    opts: NodeOptions,
    transport: Arc<dyn Transport>,
    stats: Arc<NodeStats>,
    health: Arc<Health>,
    ready: oneshot::Sender<Result<Started, RuntimeError>>,
    stop: oneshot::Receiver<()>,
    exit: oneshot::Sender<NodeExit>,
) {
    let prepared = prepare(&opts, &transport, &stats, &health).await;
    let Prepared { ingress, admin, metrics, checks, http_stop_tx, http_stop } = match prepared {
        Ok(p) => p,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let limits = opts.http_limits;
    let mut started = Started { ingress: Vec::new(), admin: None, metrics: None };
    let mut servers = Vec::new();
    for bound in ingress {
        started.ingress.push((bound.names.clone(), bound.addr));
        servers.push(tokio::spawn(bound.serve(limits, http_stop.clone())));
    }
    let mut own_servers = Vec::new();
    if let Some(m) = metrics {
        started.metrics = Some(m.addr);
        own_servers.push(tokio::spawn(m.serve(limits, http_stop.clone())));
    }
    if let Some(a) = admin {
        started.admin = Some(a.addr);
        own_servers.push(tokio::spawn(a.serve(limits, http_stop.clone())));
    }

    let stats_at_stop = stats.clone();
    let (gave_up_tx, gave_up) = oneshot::channel();
    let supervisor = NodeSupervisor::new(SupervisorConfig {
        node: opts.plan.node.clone(),
        stages: opts.plan.stages.clone(),
        registry: opts.registry.clone(),
        transport: transport.clone(),
        checks,
        data_dir: opts.data_dir.clone(),
        config_dir: opts.config_dir.clone(),
        budget: opts.budget,
        backoff: opts.restart_backoff,
        instance: opts.instance.clone(),
        topology: opts.plan.topology_name.clone(),
        stats,
        health,
        exit: gave_up_tx,
    })
    .start();
    let _ = ready.send(Ok(started));

    let result = tokio::select! {
        _ = stop => {
            tracing::info!("shutting down: closing ingress, draining stages");
            // Stop taking requests first, so everything accepted is also processed.
            let _ = http_stop_tx.send(true);
            for s in servers.drain(..) {
                let _ = s.await;
            }
            // Embedded: let the pipeline consume what the ingress accepted (bounded).
            drain::until_consumed(&opts.plan, &transport).await;
            // Every wait of the shutdown has its own bound; this one is the last line of
            // defence should one of them not hold: the drain and the producer flush each get
            // `shutdown_timeout`, plus a margin.
            let hard = opts.shutdown_timeout.saturating_mul(2) + HARD_SHUTDOWN_MARGIN;
            match tokio::time::timeout(hard, supervisor.send(Shutdown { timeout: opts.shutdown_timeout })).await {
                Ok(Ok(exit)) => exit,
                Ok(Err(_)) => NodeExit { code: 1, reason: "supervisor stopped during shutdown".into() },
                Err(_) => {
                    log_unfinished(&stats_at_stop);
                    NodeExit { code: 1, reason: format!("shutdown did not finish within {hard:?}") }
                }
            }
        }
        gave_up = gave_up => gave_up.unwrap_or(NodeExit { code: 1, reason: "supervisor stopped".into() }),
    };
    let _ = http_stop_tx.send(true);
    for s in servers.into_iter().chain(own_servers) {
        let _ = s.await;
    }
    tracing::info!(code = result.code, reason = %result.reason, "node stopped");
    let _ = exit.send(result);
    actix_rt::System::current().stop();
}

/// Beyond the bounded drain and flush, how long a shutdown may still take before the node
/// gives up on it.
const HARD_SHUTDOWN_MARGIN: Duration = Duration::from_secs(5);

/// What was still running when the shutdown gave up, per stage.
fn log_unfinished(stats: &NodeStats) {
    for e in stats.stages.iter() {
        let st = e.value();
        let consumed = StageStats::get(&st.consumed);
        let completed =
            StageStats::get(&st.completed) + StageStats::get(&st.dead_lettered) + StageStats::get(&st.dropped);
        if consumed > completed {
            tracing::error!(stage = %e.key(), consumed, completed, "stage still had records in flight when the shutdown gave up");
        }
    }
}

struct Prepared {
    ingress: Vec<crate::ingress::server::BoundIngress>,
    admin: Option<admin::BoundAdmin>,
    metrics: Option<metrics::BoundMetrics>,
    checks: PayloadChecks,
    /// Turns true when the node stops: listeners stop, open tails and slow bodies end.
    http_stop_tx: watch::Sender<bool>,
    http_stop: watch::Receiver<bool>,
}

async fn prepare(
    opts: &NodeOptions,
    transport: &Arc<dyn Transport>,
    stats: &Arc<NodeStats>,
    health: &Arc<Health>,
) -> Result<Prepared, RuntimeError> {
    if let Some(addr) = &opts.plan.admin_listen {
        check_admin_exposure(addr, opts.plan.admin_token.is_some()).await?;
    }
    let topics: Vec<_> = opts.plan.topics.values().cloned().collect();
    transport.ensure_topics(&topics).await?;
    let checks =
        PayloadChecks::build(opts.plan.topics.values(), opts.registry.payloads()).map_err(RuntimeError::Payload)?;
    let (http_stop_tx, http_stop) = watch::channel(false);
    let ingress = bind_all(
        &opts.plan.ingress,
        &opts.registry,
        transport.producer(),
        &checks,
        &opts.data_dir,
        &opts.config_dir,
        stats.clone(),
        http_stop.clone(),
    )
    .await?;
    let metrics = match &opts.plan.metrics_listen {
        Some(addr) => Some(
            metrics::bind(
                addr,
                transport.clone(),
                stats.clone(),
                health.clone(),
                BuildInfo {
                    node: opts.plan.node.clone().unwrap_or_else(|| "all".into()),
                    transport: transport.kind().to_string(),
                },
                opts.plan.topics.keys().next().cloned(),
            )
            .await
            .map_err(|source| RuntimeError::Metrics { addr: addr.clone(), source })?,
        ),
        None => None,
    };
    let admin = match &opts.plan.admin_listen {
        Some(addr) => Some(
            admin::bind(
                addr,
                opts.plan.admin_token.clone(),
                transport.clone(),
                checks.clone(),
                stats.clone(),
                http_stop.clone(),
            )
            .await
            .map_err(|source| RuntimeError::Admin { addr: addr.clone(), source })?,
        ),
        None => None,
    };
    Ok(Prepared { ingress, admin, metrics, checks, http_stop_tx, http_stop })
}

/// Management without a token is allowed on loopback only (with a warning): there, only
/// this host's users reach it. Anywhere else the node refuses to start.
async fn check_admin_exposure(addr: &str, has_token: bool) -> Result<(), RuntimeError> {
    if has_token {
        return Ok(());
    }
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|source| RuntimeError::Admin { addr: addr.to_string(), source })?
        .collect();
    if resolved.is_empty() || !resolved.iter().all(|a| a.ip().is_loopback()) {
        return Err(RuntimeError::AdminWithoutToken { addr: addr.to_string() });
    }
    tracing::warn!(
        addr,
        "admin port has no token: any local user can write to and read every topic; set admin.token (WEIR_ADMIN_TOKEN)"
    );
    Ok(())
}
