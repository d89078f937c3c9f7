//! `skeji-executor`: runs the pipelines the LLM layer plans. One kind, two stages in
//! `topology.yaml`: `executor` starts pipelines (`PipelineRequest`s) and
//! `executor-replies` continues them (domain services' `Reply`s and `StepDeadline`
//! markers coming back from the step timer on the topic named by `deadline_topic`).
//!
//! Nothing about a pipeline lives only in memory: its state travels in the `RoutingSlip`
//! on each command and reply, so any instance continues any pipeline. For each step the
//! executor emits the command (output named after the service) and a deadline marker
//! (`deadlines`, due at the slip's `step_deadline`); the step ends with whichever of the
//! reply and the marker comes back first ([`ledger`]). How a pipeline ends goes to
//! `notifier` as a `PipelineResult`.

pub mod ledger;
pub mod resolve;

use crate::envelope::{now_ms, Record};
use crate::apps::skeji::model::{
    types, BusinessError, Command, PipelineRequest, PipelineResult, Reply, RoutingSlip, StepDeadline,
};
use crate::apps::skeji::store::{Db, DbError};
use crate::stages::{decode, BuildEnv, BuildError, Output, Registry, Stage, StageContext, StageError, StageKind};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Services a step may name; each is also the output its commands go to.
pub const SERVICES: [&str; 3] = ["business-units", "schedules", "bookings"];
const PRUNE_EVERY_MS: i64 = 60 * 60 * 1000;

/// Registers this module's kinds.
pub fn register(r: &mut Registry) {
    r.register_stage::<Executor>();
}

pub struct Executor;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorConfig {
    /// How long a domain service has to answer one step, e.g. `10s`.
    #[serde(default = "default_step_timeout")]
    pub step_timeout: String,
    /// The topic deadline markers come back on (records from it are `StepDeadline`s).
    #[serde(default)]
    pub deadline_topic: Option<String>,
}

fn default_step_timeout() -> String {
    "10s".to_string()
}

fn step_timeout(c: &ExecutorConfig) -> Result<Duration, String> {
    let d = crate::topology::units::parse_duration(&c.step_timeout)?;
    if d.is_zero() {
        return Err("`step_timeout` must be more than zero".into());
    }
    Ok(d)
}

impl StageKind for Executor {
    const NAME: &'static str = "skeji-executor";
    type Config = ExecutorConfig;
    // Requests start pipelines; replies and deadline markers continue them.
    const INPUT_TYPES: &'static [&'static str] = &[types::PIPELINE_REQUEST, types::REPLY, types::STEP_DEADLINE];
    const OUTPUT_TYPES: &'static [(&'static str, &'static str)] = &[
        ("business-units", types::COMMAND),
        ("schedules", types::COMMAND),
        ("bookings", types::COMMAND),
        ("deadlines", types::STEP_DEADLINE),
        ("notifier", types::PIPELINE_RESULT),
    ];

    fn outputs() -> Vec<&'static str> {
        let mut o = SERVICES.to_vec();
        o.extend(["deadlines", "notifier"]);
        o
    }
    fn required_outputs() -> Vec<&'static str> {
        Self::outputs()
    }
    fn output_fields(output: &str) -> Option<Vec<&'static str>> {
        match output {
            "deadlines" => Some(vec!["correlation_id", "command_id", "service", "action", "due_at", "slip"]),
            "notifier" => Some(vec![
                "correlation_id",
                "conversation_id",
                "user_phone",
                "message_id",
                "intent",
                "language",
                "outcome",
                "results",
                "error",
                "reply",
            ]),
            s if SERVICES.contains(&s) => {
                Some(vec!["command_id", "correlation_id", "action", "params", "user_phone", "slip"])
            }
            _ => None,
        }
    }
    fn check(c: &ExecutorConfig) -> Result<(), String> {
        step_timeout(c).map(|_| ())
    }

    fn build(config: ExecutorConfig, env: &BuildEnv<'_>) -> Result<Arc<dyn Stage>, BuildError> {
        let timeout = step_timeout(&config).map_err(|e| BuildError::new(env, e))?;
        std::fs::create_dir_all(&env.data_dir)
            .map_err(|e| BuildError::new(env, format!("cannot create data dir {}: {e}", env.data_dir.display())))?;
        let db = Db::open(&env.data_dir).map_err(|e| BuildError::new(env, e))?;
        db.migrate(ledger::SCHEMA).map_err(|e| BuildError::new(env, e))?;
        ledger::migrate_winner(&db).map_err(|e| BuildError::new(env, e))?;
        Ok(Arc::new(ExecutorStage {
            db,
            step_timeout_ms: i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX),
            deadline_topic: config.deadline_topic,
            last_prune_ms: AtomicI64::new(now_ms()),
        }))
    }
}

pub struct ExecutorStage {
    db: Db,
    step_timeout_ms: i64,
    deadline_topic: Option<String>,
    last_prune_ms: AtomicI64,
}

fn permanent(what: &str, record: &Record, e: impl std::fmt::Display) -> StageError {
    StageError::Permanent(format!(
        "{what} from {}[{}]@{} is not valid: {e}",
        record.topic, record.partition, record.offset
    ))
}

/// The correlation id of the pipeline for a request: a UUID derived from the user and
/// the message, so a redelivered request continues the same pipeline (same command ids,
/// which the services and the ledger deduplicate) instead of running it twice. A request
/// without a message id gets a random one.
pub fn correlation_id(req: &PipelineRequest) -> String {
    if req.message_id.trim().is_empty() {
        return uuid::Uuid::new_v4().to_string();
    }
    let seed = format!("skeji-pipeline\u{0}{}\u{0}{}", req.user_phone, req.message_id);
    let digest = ring::digest::digest(&ring::digest::SHA256, seed.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string()
}

fn result_of(slip: &RoutingSlip, outcome: &str, results: Vec<Value>, error: Option<BusinessError>) -> PipelineResult {
    PipelineResult {
        correlation_id: slip.correlation_id.clone(),
        conversation_id: slip.conversation_id.clone(),
        user_phone: slip.user_phone.clone(),
        message_id: slip.message_id.clone(),
        intent: slip.intent.clone(),
        language: slip.language.clone(),
        outcome: outcome.to_string(),
        results,
        error,
        reply: None,
    }
}

impl ExecutorStage {
    /// The command for the slip's current step and its deadline marker.
    fn dispatch(&self, mut slip: RoutingSlip, now: i64) -> Result<Vec<Output>, StageError> {
        let step = slip.steps.get(slip.current).cloned().ok_or_else(|| {
            StageError::Permanent(format!("pipeline {} has no step {}", slip.correlation_id, slip.current))
        })?;
        let Some(service) = SERVICES.iter().find(|s| **s == step.service) else {
            return Err(StageError::Permanent(format!(
                "pipeline {} step {}: unknown service `{}` (known: {})",
                slip.correlation_id,
                slip.current,
                step.service,
                SERVICES.join(", ")
            )));
        };
        let params = resolve::resolve_params(&step.params, slip.results.last()).map_err(|e| {
            StageError::Permanent(format!(
                "pipeline {} step {} ({}.{}): {e}",
                slip.correlation_id, slip.current, step.service, step.action
            ))
        })?;
        slip.step_deadline = now.saturating_add(self.step_timeout_ms);
        let command_id = format!("{}:{}", slip.correlation_id, slip.current);
        let deadline = StepDeadline {
            correlation_id: slip.correlation_id.clone(),
            command_id: command_id.clone(),
            service: step.service.clone(),
            action: step.action.clone(),
            due_at: slip.step_deadline,
            slip: slip.clone(),
        };
        let command = Command {
            command_id,
            correlation_id: slip.correlation_id.clone(),
            action: step.action,
            params,
            user_phone: slip.user_phone.clone(),
            slip,
        };
        tracing::debug!(command_id = %command.command_id, service, action = %command.action, "step dispatched");
        Ok(vec![Output::json(*service, &command)?, Output::json("deadlines", &deadline)?])
    }

    fn on_request(&self, req: PipelineRequest, now: i64) -> Result<Vec<Output>, StageError> {
        let slip = RoutingSlip {
            correlation_id: correlation_id(&req),
            conversation_id: req.conversation_id,
            user_phone: req.user_phone,
            message_id: req.message_id,
            intent: req.intent,
            language: req.language,
            steps: req.pipeline,
            current: 0,
            results: Vec::new(),
            step_deadline: 0,
        };
        if slip.steps.is_empty() {
            let result = PipelineResult { reply: req.reply, ..result_of(&slip, "reply", Vec::new(), None) };
            tracing::debug!(correlation_id = %slip.correlation_id, intent = %slip.intent, "nothing to run: reply");
            return Ok(vec![Output::json("notifier", &result)?]);
        }
        let (cid, steps) = (&slip.correlation_id, slip.steps.len());
        tracing::debug!(correlation_id = %cid, intent = %slip.intent, steps, "pipeline started");
        self.dispatch(slip, now)
    }

    /// What a reply leads to: the next step, or the pipeline's result.
    fn after_reply(&self, reply: Reply, now: i64) -> Result<Vec<Output>, StageError> {
        let mut slip = reply.slip;
        match reply.status.as_str() {
            "ok" => {
                let mut results = std::mem::take(&mut slip.results);
                results.push(reply.result);
                if slip.current + 1 < slip.steps.len() {
                    slip.results = results;
                    slip.current += 1;
                    self.dispatch(slip, now)
                } else {
                    tracing::debug!(correlation_id = %slip.correlation_id, "pipeline completed");
                    Ok(vec![Output::json("notifier", &result_of(&slip, "completed", results, None))?])
                }
            }
            "business_error" => {
                let error = reply.error.unwrap_or_else(|| BusinessError {
                    code: "invalid".into(),
                    message: format!("{}.{} failed", reply.service, reply.action),
                    details: Value::Null,
                });
                tracing::debug!(correlation_id = %slip.correlation_id, code = %error.code, "pipeline ended: business error");
                let results = std::mem::take(&mut slip.results);
                let out = Output::json("notifier", &result_of(&slip, "business_error", results, Some(error.clone())))?;
                Ok(vec![out.business(error.code)])
            }
            "deadline" => Ok(vec![self.timeout(&slip)?]),
            other => Err(StageError::Permanent(format!("reply {} has unknown status `{other}`", reply.command_id))),
        }
    }

    fn timeout(&self, slip: &RoutingSlip) -> Result<Output, StageError> {
        let (service, action) =
            slip.steps.get(slip.current).map(|s| (s.service.as_str(), s.action.as_str())).unwrap_or(("?", "?"));
        let error = BusinessError {
            code: "timeout".into(),
            message: format!("{service}.{action} did not answer in time"),
            details: json!({
                "step": slip.current, "service": service, "action": action, "step_deadline": slip.step_deadline
            }),
        };
        tracing::info!(correlation_id = %slip.correlation_id, step = slip.current, service, action, "step timed out");
        Ok(Output::json("notifier", &result_of(slip, "timeout", slip.results.clone(), Some(error)))?
            .business("timeout"))
    }

    /// Ends `slip`'s current step with `outcome` if nothing ended it before; the outputs
    /// are computed first, so a step whose continuation cannot be built (a bad reference)
    /// is still claimed — its deadline must not also report a timeout.
    async fn finish_step(
        &self,
        record: &Record,
        slip: &RoutingSlip,
        outcome: &str,
        outputs: Result<Vec<Output>, StageError>,
        now: i64,
    ) -> Result<Vec<Output>, StageError> {
        // The same record delivered again has the same message id (or, without one, the
        // same place in its partition).
        let winner = match record.headers.get_str(crate::envelope::header::MESSAGE_ID) {
            Some(id) => id.to_string(),
            None => format!("{}[{}]@{}", record.topic, record.partition, record.offset),
        };
        let claim = ledger::claim(&self.db, &slip.correlation_id, slip.current, outcome, &winner, now)
            .await
            .map_err(DbError::into_stage_error)?;
        let cid = &slip.correlation_id;
        match claim {
            ledger::Claim::Won => outputs,
            ledger::Claim::Redelivered => {
                tracing::info!(correlation_id = %cid, step = slip.current, outcome, "step's winner delivered again: emitting its outputs again");
                outputs
            }
            ledger::Claim::Lost => {
                tracing::debug!(correlation_id = %cid, step = slip.current, outcome, "step already ended: dropped");
                Ok(Vec::new())
            }
        }
    }

    async fn maybe_prune(&self, now: i64) {
        let last = self.last_prune_ms.load(Ordering::Relaxed);
        if now - last < PRUNE_EVERY_MS
            || self.last_prune_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        match ledger::prune(&self.db, now).await {
            Ok(n) => tracing::debug!(rows = n, "pruned old pipeline step claims"),
            // The next prune tries again; not worth failing a record over.
            Err(e) => tracing::warn!(error = %e, "cannot prune old pipeline step claims"),
        }
    }
}

#[async_trait]
impl Stage for ExecutorStage {
    async fn handle(&self, record: &Record, _: &StageContext<'_>) -> Result<Vec<Output>, StageError> {
        let now = now_ms();
        let out = if self.deadline_topic.as_deref() == Some(&*record.topic) {
            let marker: StepDeadline = decode(record)?;
            let outputs = self.timeout(&marker.slip).map(|o| vec![o]);
            self.finish_step(record, &marker.slip, "deadline", outputs, now).await?
        } else {
            // Requests and replies are told apart by shape: only a request has `pipeline`.
            let v: Value = decode(record)?;
            if v.get("pipeline").is_some() {
                let req: PipelineRequest =
                    serde_json::from_value(v).map_err(|e| permanent("pipeline request", record, e))?;
                self.on_request(req, now)?
            } else {
                let reply: Reply = serde_json::from_value(v).map_err(|e| permanent("reply", record, e))?;
                let slip = reply.slip.clone();
                let outcome = reply.status.clone();
                let outputs = self.after_reply(reply, now);
                self.finish_step(record, &slip, &outcome, outputs, now).await?
            }
        };
        self.maybe_prune(now).await;
        Ok(out)
    }
}
