//! The node supervisor: starts one pipeline (stage actor + stage consumer) per stage this
//! node runs, restarts a pipeline whose stage panicked or whose consumer failed, and runs
//! the orderly shutdown.
//!
//! Restarts back off exponentially per stage (default 100 ms doubling to 30 s) and count against
//! a node-wide budget (default 10 in 60 s). Past the budget the node is unhealthy: it
//! shuts down and exits non-zero instead of spinning. A restarted pipeline rejoins its
//! group, so every partition resumes from its last committed offset: records that were in
//! flight are delivered again (at-least-once), none is skipped.

use super::partition_consumer::PartitionSettings;
use super::processing::{PoisonLog, RecordProcessor, Stopping};
use super::producer::OutputProducer;
use super::stage_actor::{StageActor, StageFailed};
use super::stage_consumer::{StageConsumer, StopConsumer};
use super::stats::{NodeStats, StageStats};
use crate::stages::payload::PayloadChecks;
use crate::stages::{BuildEnv, Registry};
use crate::topology::plan::{RetryPolicy, StagePlan};
use crate::topology::spec::Guarantee;
use crate::transport::Transport;
use actix::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// How many restarts a node tolerates in a window before it gives up.
#[derive(Debug, Clone, Copy)]
pub struct RestartBudget {
    pub max_restarts: u32,
    pub window: Duration,
}

impl Default for RestartBudget {
    fn default() -> Self {
        RestartBudget { max_restarts: 10, window: Duration::from_secs(60) }
    }
}

/// The wait before restarting a failed stage: `initial`, doubling per consecutive
/// failure, capped at `max`.
#[derive(Debug, Clone, Copy)]
pub struct RestartBackoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RestartBackoff {
    fn default() -> Self {
        RestartBackoff { initial: Duration::from_millis(100), max: Duration::from_secs(30) }
    }
}

/// How the node ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeExit {
    pub code: i32,
    pub reason: String,
}

/// Liveness as the supervisor sees it.
#[derive(Debug, Default)]
pub struct Health {
    unhealthy: AtomicBool,
}

impl Health {
    pub fn is_healthy(&self) -> bool {
        !self.unhealthy.load(Ordering::Relaxed)
    }
}

/// Everything a supervisor needs to build pipelines.
pub struct SupervisorConfig {
    pub node: Option<String>,
    pub stages: Vec<StagePlan>,
    pub registry: Arc<Registry>,
    pub transport: Arc<dyn Transport>,
    pub checks: PayloadChecks,
    pub data_dir: PathBuf,
    pub config_dir: PathBuf,
    pub budget: RestartBudget,
    pub backoff: RestartBackoff,
    /// Names this process's transactions (exactly-once stages); stable across restarts
    /// of the same instance so a restart fences its crashed predecessor.
    pub instance: String,
    pub topology: String,
    pub stats: Arc<NodeStats>,
    pub health: Arc<Health>,
    /// Receives how the node ended when the supervisor ends it (budget exhausted).
    pub exit: oneshot::Sender<NodeExit>,
}

/// Stop every pipeline in order and reply with the exit.
#[derive(Message)]
#[rtype(result = "NodeExit")]
pub struct Shutdown {
    pub timeout: Duration,
}

#[derive(Message)]
#[rtype(result = "()")]
struct StartStage(String);

#[derive(Message)]
#[rtype(result = "()")]
struct StopStageActor;

impl Handler<StopStageActor> for StageActor {
    type Result = ();
    fn handle(&mut self, _: StopStageActor, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// One stage's running parts, all on the stage's own arbiter (thread): the stage actor,
/// the stage consumer and the partition consumers it starts.
struct Pipeline {
    generation: u64,
    stage: Addr<StageActor>,
    consumer: Addr<StageConsumer>,
    arbiter: Arbiter,
}

impl Pipeline {
    /// Drains (commits what is complete, leaves the group), then stops the thread.
    async fn stop(self) {
        let _ = self.consumer.send(StopConsumer).await;
        self.stage.do_send(StopStageActor);
        self.arbiter.stop();
    }
}

pub struct NodeSupervisor {
    cfg: SupervisorConfig,
    exit: Option<oneshot::Sender<NodeExit>>,
    plans: HashMap<String, Arc<StagePlan>>,
    pipelines: HashMap<String, Pipeline>,
    poison: HashMap<String, Arc<PoisonLog>>,
    consecutive: HashMap<String, (u32, Instant)>,
    restart_times: VecDeque<Instant>,
    generation: u64,
    stop_tx: watch::Sender<bool>,
    stopping: Stopping,
    shutting_down: bool,
}

impl NodeSupervisor {
    pub fn new(mut cfg: SupervisorConfig) -> Self {
        let (stop_tx, stopping) = Stopping::pair();
        let (placeholder, _) = oneshot::channel();
        let exit = Some(std::mem::replace(&mut cfg.exit, placeholder));
        let plans = cfg.stages.iter().map(|s| (s.name.clone(), Arc::new(s.clone()))).collect();
        NodeSupervisor {
            cfg,
            exit,
            plans,
            pipelines: HashMap::new(),
            poison: HashMap::new(),
            consecutive: HashMap::new(),
            restart_times: VecDeque::new(),
            generation: 0,
            stop_tx,
            stopping,
            shutting_down: false,
        }
    }

    fn start_stage(&mut self, name: &str, ctx: &mut Context<Self>) {
        let Some(plan) = self.plans.get(name).cloned() else { return };
        self.generation += 1;
        let generation = self.generation;
        match self.build_pipeline(&plan, generation, ctx) {
            Ok(p) => {
                self.pipelines.insert(name.to_string(), p);
            }
            Err(cause) => {
                tracing::error!(stage = %name, %cause, "cannot start stage");
                self.restart(name.to_string(), None, cause, ctx);
            }
        }
    }

    fn build_pipeline(&mut self, plan: &Arc<StagePlan>, generation: u64, ctx: &mut Context<Self>) -> Result<Pipeline, String> {
        let factory = self
            .cfg
            .registry
            .stage_factory(&plan.kind)
            .ok_or_else(|| format!("unknown stage kind `{}`", plan.kind))?;
        let stats: Arc<StageStats> = self.cfg.stats.stage(&plan.name);
        let _ = stats.group.set(plan.group.clone());
        let transaction = match plan.guarantee {
            Guarantee::ExactlyOnce => {
                let id = format!("weir-{}-{}-{}", self.cfg.topology, plan.name, self.cfg.instance);
                let txn = self.cfg.transport.transaction(&id).map_err(|e| e.to_string())?;
                if txn.is_none() {
                    tracing::info!(stage = %plan.name, transport = self.cfg.transport.kind(),
                        "exactly-once has no effect on this transport; running at-least-once");
                }
                txn
            }
            Guarantee::AtLeastOnce => None,
        };
        let producer = match &transaction {
            Some(t) => t.producer(),
            None => self.cfg.transport.producer(),
        };
        let out = Arc::new(OutputProducer::new(
            &plan.name,
            plan.outputs.clone(),
            plan.dlq.clone(),
            producer,
            self.cfg.checks.clone(),
            RetryPolicy { attempts: u32::MAX, ..plan.retry },
            stats.clone(),
        ));
        let env = BuildEnv {
            stage: plan,
            node: self.cfg.node.as_deref(),
            data_dir: self.cfg.data_dir.clone(),
            config_dir: self.cfg.config_dir.clone(),
            emitter: Some(super::producer::emitter(out.clone(), self.stopping.clone())),
        };
        let stage = factory.build(&plan.config, &env).map_err(|e| e.to_string())?;
        let poison = self.poison.entry(plan.name.clone()).or_default().clone();
        let processor = Arc::new(RecordProcessor::new(
            plan.clone(),
            stage,
            out,
            self.cfg.checks.clone(),
            poison,
            stats.clone(),
            self.stopping.clone(),
        ));
        let supervisor: Recipient<StageFailed> = ctx.address().recipient();
        let arbiter = Arbiter::new();
        let (name, sup) = (plan.name.clone(), supervisor.clone());
        let actor_stats = stats.clone();
        let stage_actor = StageActor::start_in_arbiter(&arbiter.handle(), move |_| {
            StageActor::new(&name, generation, processor, actor_stats, sup)
        });
        let settings = Arc::new(PartitionSettings {
            stage: plan.name.clone(),
            max_in_flight: plan.max_in_flight,
            commit: plan.commit,
            drain_timeout: plan.drain_timeout,
        });
        let member_id = format!(
            "{}-{}-{}-{generation}",
            self.cfg.node.as_deref().unwrap_or("weir"),
            plan.name,
            std::process::id()
        );
        let (name, group, from) = (plan.name.clone(), plan.group.clone(), plan.from.clone());
        let (transport, stage_addr) = (self.cfg.transport.clone(), stage_actor.clone());
        let consumer = StageConsumer::start_in_arbiter(&arbiter.handle(), move |_| {
            StageConsumer::new(
                &name, generation, &group, from, member_id, transport, stage_addr, settings, supervisor, stats, transaction,
            )
        });
        Ok(Pipeline { generation, stage: stage_actor, consumer, arbiter })
    }

    /// Records a restart; false when the budget is spent.
    fn spend_budget(&mut self) -> bool {
        let now = Instant::now();
        while self.restart_times.front().is_some_and(|t| now.duration_since(*t) > self.cfg.budget.window) {
            self.restart_times.pop_front();
        }
        self.restart_times.push_back(now);
        self.restart_times.len() <= self.cfg.budget.max_restarts as usize
    }

    fn backoff(&mut self, stage: &str) -> Duration {
        let now = Instant::now();
        let window = self.cfg.budget.window;
        let entry = self.consecutive.entry(stage.to_string()).or_insert((0, now));
        if now.duration_since(entry.1) > window {
            entry.0 = 0; // it ran fine for a whole window: start the backoff over
        }
        let b = self.cfg.backoff;
        let wait = b.initial.saturating_mul(1u32 << entry.0.min(16)).min(b.max);
        entry.0 += 1;
        entry.1 = now;
        wait
    }

    fn stop_all(&mut self, timeout: Duration) -> impl std::future::Future<Output = ()> {
        let _ = self.stop_tx.send(true);
        let pipelines: Vec<Pipeline> = self.pipelines.drain().map(|(_, p)| p).collect();
        let producer = self.cfg.transport.producer();
        async move {
            let stops = pipelines.into_iter().map(Pipeline::stop);
            if tokio::time::timeout(timeout, futures::future::join_all(stops)).await.is_err() {
                tracing::warn!(?timeout, "shutdown timed out waiting for stages to drain");
            }
            if let Err(e) = producer.flush(timeout).await {
                tracing::warn!(error = %e, "flushing the producer at shutdown failed");
            }
        }
    }
}

impl Actor for NodeSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let names: Vec<String> = self.cfg.stages.iter().map(|s| s.name.clone()).collect();
        for name in names {
            self.start_stage(&name, ctx);
        }
        tracing::info!(node = ?self.cfg.node, stages = self.pipelines.len(), "node supervisor started");
    }
}

impl Handler<StartStage> for NodeSupervisor {
    type Result = ();
    fn handle(&mut self, StartStage(name): StartStage, ctx: &mut Self::Context) {
        if !self.shutting_down {
            self.start_stage(&name, ctx);
        }
    }
}

impl Handler<StageFailed> for NodeSupervisor {
    type Result = ();

    fn handle(&mut self, failed: StageFailed, ctx: &mut Self::Context) {
        if self.shutting_down {
            return;
        }
        // Only the running incarnation's failure counts: its stage actor, consumer and
        // partitions all report the same failure, and a stopped one may report late.
        match self.pipelines.get(&failed.stage) {
            Some(p) if p.generation == failed.generation => {}
            _ => return,
        }
        let old = self.pipelines.remove(&failed.stage);
        self.restart(failed.stage, old, failed.cause, ctx);
    }
}

impl NodeSupervisor {
    /// Stops what is left of a failed pipeline and starts a new one after the backoff,
    /// or gives up when the restart budget is spent.
    fn restart(&mut self, stage: String, old: Option<Pipeline>, cause: String, ctx: &mut Context<Self>) {
        self.cfg.stats.restarts.fetch_add(1, Ordering::Relaxed);
        self.cfg.stats.stage(&stage).restarts.fetch_add(1, Ordering::Relaxed);
        if !self.spend_budget() {
            let reason = format!(
                "restart budget exhausted ({} restarts in {:?}); last: stage `{stage}`: {cause}",
                self.cfg.budget.max_restarts, self.cfg.budget.window
            );
            tracing::error!(%reason, "node is unhealthy; shutting down");
            self.cfg.health.unhealthy.store(true, Ordering::Relaxed);
            self.shutting_down = true;
            if let Some(p) = old {
                self.pipelines.insert(stage, p);
            }
            let stop = self.stop_all(Duration::from_secs(10));
            let exit = self.exit.take();
            ctx.spawn(
                async move {
                    stop.await;
                    if let Some(exit) = exit {
                        let _ = exit.send(NodeExit { code: 1, reason });
                    }
                }
                .into_actor(self),
            );
            return;
        }
        let wait = self.backoff(&stage);
        tracing::error!(%stage, %cause, restart_in = ?wait, "stage failed; restarting");
        let addr = ctx.address();
        ctx.spawn(
            async move {
                if let Some(p) = old {
                    // Commit what is complete and leave the group before the new incarnation joins.
                    p.stop().await;
                }
                tokio::time::sleep(wait).await;
                addr.do_send(StartStage(stage));
            }
            .into_actor(self),
        );
    }
}

impl Handler<Shutdown> for NodeSupervisor {
    type Result = ResponseActFuture<Self, NodeExit>;

    fn handle(&mut self, msg: Shutdown, _: &mut Self::Context) -> Self::Result {
        self.shutting_down = true;
        let stop = self.stop_all(msg.timeout);
        Box::pin(async move {
            stop.await;
            NodeExit { code: 0, reason: "shut down".into() }
        }.into_actor(self).map(|exit, _, ctx| {
            ctx.stop();
            exit
        }))
    }
}
