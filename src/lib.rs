//! weir — an actor-based stream-processing runtime.
//!
//! Where things are:
//! - [`topology`]: the description (`topology.yaml`): parse, validate, plan. Pure.
//! - [`transport`]: where records live — the embedded in-process log or Kafka — behind one trait.
//! - [`actors`]: the running machinery: supervisor, partition consumers, stage actors, producer.
//! - [`stages`]: generic stage kinds, one module each, and the registry that names them.
//!   Stage kinds never import [`actors`]; what they send outside `handle` goes through
//!   [`stages::emitter::Emitter`].
//! - [`ingress`]: HTTP listeners that publish requests into topics.
//! - [`connectors`]: clients of outside services that several kinds or apps use (LLM
//!   providers, embedders, HTTP, the WhatsApp Cloud API webhook and sender).
//! - [`apps`]: applications built on the runtime (Skeji), one module each. Nothing outside
//!   `apps` imports it; the binary's `main` adds them with `Registry::with_apps()`.
//! - [`runtime`]: builds a node from a plan and runs it until shutdown.
//! - [`cli`]: the `weir` command.
//!
//! A record enters at a partition stream (`transport`), is handled in
//! `actors::partition_consumer` → `actors::stage_actor`, leaves through `actors::producer`,
//! and its offset is committed back in `actors::partition_consumer` once every output was
//! accepted.

pub mod topology;
pub mod envelope;
pub mod transport;
pub mod stages;
pub mod ingress;
pub mod net;
pub mod actors;
pub mod runtime;
pub mod telemetry;
pub mod cli;
pub mod connectors;
pub mod apps;
