//! Runtime behaviour on the embedded transport, counted: ordering, failures, supervision,
//! dead letters, shutdown, rewiring. Each test prints its counts.

#[path = "../common/mod.rs"]
mod common;

mod failures;
mod ordering;
mod rewire;
mod shutdown;
