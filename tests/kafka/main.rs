//! weir on a real Apache Kafka broker: counts of lost, duplicated and out-of-order
//! records through pipelines, crashes, rebalances and outages. Each test prints its counts.

mod support;

#[path = "../common/kinds.rs"]
#[allow(dead_code)]
mod kinds;
mod nodes;

mod core_crash;
mod crash;
mod jaeger;
mod rebalance;
mod revocation;
mod skeji;
mod throughput;
mod txn_abort;
