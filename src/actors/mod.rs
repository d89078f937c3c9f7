//! The running machinery (actix actors). Reading order:
//! [`supervisor`] starts a pipeline per stage → [`stage_consumer`] joins the stage's
//! consumer group and starts a [`partition_consumer`] per assigned partition (records
//! enter and offsets are committed there) → [`stage_actor`] runs the kind's code through
//! [`processing`] → [`producer`] sends the outputs (records leave there).

pub mod circuit_breaker;
pub mod key_lanes;
pub mod offsets;
pub mod partition_consumer;
pub mod processing;
pub mod producer;
pub mod stage_actor;
pub mod stage_consumer;
pub mod stats;
pub mod supervisor;
