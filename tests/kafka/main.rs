//! weir on a real Apache Kafka broker: counts of lost, duplicated and out-of-order
//! records through pipelines, crashes, rebalances and outages. Each test prints its counts.

mod support;

mod core_crash;
mod crash;
mod jaeger;
mod rebalance;
mod skeji;
mod throughput;
