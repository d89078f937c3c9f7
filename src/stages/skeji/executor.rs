//! (placeholder: being written)
use crate::stages::Registry;

/// Registers this module's kinds.
pub fn register(_: &mut Registry) {}
