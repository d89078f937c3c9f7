//! The Skeji WhatsApp booking assistant, as weir stage kinds: the WhatsApp webhook
//! ingress (`crate::connectors::whatsapp::webhook`, registered here), gateway, scrub layer, LLM layer, pipeline
//! executor, the business-units / schedules / bookings domain services and the notifier.
//! `topology.yaml` at the repo root wires them; `docs/apps/skeji.md` is the contract between
//! them; `model` holds their messages and `store` their shared SQLite state.

pub mod context;
pub mod domain;
pub mod executor;
pub mod gateway;
pub mod llm;
pub mod model;
pub mod notifier;
pub mod scrub;
pub mod store;

/// Registers every Skeji kind and payload type.
pub fn register(r: &mut crate::stages::Registry) {
    model::register_payloads(r);
    crate::connectors::whatsapp::webhook::register::<model::InboundPayload>(r);
    gateway::register(r);
    scrub::register(r);
    llm::register(r);
    executor::register(r);
    domain::register(r);
    notifier::register(r);
}
