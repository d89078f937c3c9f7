//! Stage kinds whose behaviour the test records script through payload fields:
//! - `"fail": "transient:N"` fails transiently on the first N attempts, then succeeds;
//! - `"fail": "transient"` always fails transiently; `"fail": "permanent"` fails permanently;
//! - `"fail": "panic"` panics;
//! - `"block": "<gate>"` waits until the test opens that gate.
//!
//! - `"slow_once_ms": N` takes N ms the first time this process handles that id (a record
//!   slower than a transaction timeout once; its redelivery is quick).
//!
//! Config `jitter_ms` adds a pseudo-random delay (derived from the id) to every record;
//! `sleep_ms` makes every record take that long (the workload of a slow stage); `tag`
//! marks every output with headers `weir-test-member` (the tag) and `weir-test-from`
//! (`topic[partition]` of the input), so a test can tell which member produced what.

use async_trait::async_trait;
use dashmap::DashMap;
use serde::Deserialize;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::watch;
use weir::envelope::Record;
use weir::stages::{decode, BuildEnv, BuildError, Output, Stage, StageContext, StageError, StageKind};

static GATES: LazyLock<DashMap<String, watch::Sender<bool>>> = LazyLock::new(DashMap::new);
/// Ids already slowed down by `slow_once_ms` (process-wide: outlives stage restarts).
static SLOWED: LazyLock<DashMap<u64, ()>> = LazyLock::new(DashMap::new);

pub const MEMBER_HEADER: &str = "weir-test-member";
pub const FROM_HEADER: &str = "weir-test-from";

fn gate(name: &str) -> watch::Sender<bool> {
    GATES.entry(name.to_string()).or_insert_with(|| watch::channel(false).0).clone()
}

pub fn open_gate(name: &str) {
    gate(name).send_replace(true);
}

pub struct Scripted {
    jitter_ms: u64,
    sleep_ms: u64,
    tag: Option<String>,
    attempts: DashMap<u64, u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedConfig {
    #[serde(default)]
    pub jitter_ms: u64,
    #[serde(default)]
    pub sleep_ms: u64,
    #[serde(default)]
    pub tag: Option<String>,
}

impl StageKind for Scripted {
    const NAME: &'static str = "scripted";
    type Config = ScriptedConfig;

    fn build(c: ScriptedConfig, _: &BuildEnv<'_>) -> Result<Arc<dyn Stage>, BuildError> {
        Ok(Arc::new(Scripted { jitter_ms: c.jitter_ms, sleep_ms: c.sleep_ms, tag: c.tag, attempts: DashMap::new() }))
    }
}

#[async_trait]
impl Stage for Scripted {
    async fn handle(&self, record: &Record, _: &StageContext<'_>) -> Result<Vec<Output>, StageError> {
        let v: serde_json::Value = decode(record)?;
        let id = v["id"].as_u64().unwrap_or(0);
        if self.jitter_ms > 0 {
            // xorshift of the id: deterministic, spread over 0..jitter_ms
            let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            tokio::time::sleep(Duration::from_micros(x % (self.jitter_ms * 1000))).await;
        }
        if self.sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.sleep_ms)).await;
        }
        if let Some(ms) = v["slow_once_ms"].as_u64() {
            if SLOWED.insert(id, ()).is_none() {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        if let Some(name) = v["block"].as_str() {
            let mut rx = gate(name).subscribe();
            let _ = rx.wait_for(|open| *open).await;
        }
        let attempt = {
            let mut a = self.attempts.entry(id).or_insert(0);
            *a += 1;
            *a
        };
        match v["fail"].as_str() {
            Some("permanent") => return Err(StageError::Permanent(format!("record {id} is scripted to fail"))),
            Some("panic") => panic!("record {id} is scripted to panic"),
            Some("transient") => return Err(StageError::Transient(format!("record {id}: dependency busy"))),
            Some(s) if s.starts_with("transient:") => {
                let n: u32 = s["transient:".len()..].parse().unwrap_or(0);
                if attempt <= n {
                    return Err(StageError::Transient(format!("record {id}: attempt {attempt} of {n} failing")));
                }
            }
            _ => {}
        }
        let mut out = Output::forward("default", record);
        if let Some(tag) = &self.tag {
            out.headers.push((MEMBER_HEADER.to_string(), tag.clone()));
            out.headers.push((FROM_HEADER.to_string(), format!("{}[{}]", record.topic, record.partition)));
        }
        Ok(vec![out])
    }
}

/// A kind whose stages can never be built (for restart-budget tests).
pub struct BuildFails;

#[derive(Deserialize)]
pub struct NoConfig {}

impl StageKind for BuildFails {
    const NAME: &'static str = "build-fails";
    type Config = NoConfig;

    fn build(_: NoConfig, env: &BuildEnv<'_>) -> Result<Arc<dyn Stage>, BuildError> {
        Err(BuildError::new(env, "the database is unreachable (scripted)"))
    }
}
