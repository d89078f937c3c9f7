//! [`Emitter`]: how a stage sends records on its outputs outside `handle`, for work it does
//! on its own schedule (a reminder that falls due). It lives here, not in `actors`, so
//! stage kinds can hold one without depending on the running machinery; the actors supply
//! what sends ([`EmitOutput`]).

use super::{Output, StageError};
use async_trait::async_trait;
use std::sync::Arc;

/// What actually sends an emitted output: the actors' output producer. Keyed, checked and
/// stamped like `handle`'s outputs; returns once the transport accepted the record.
#[async_trait]
pub trait EmitOutput: Send + Sync + 'static {
    async fn emit(&self, out: Output) -> Result<(), StageError>;
}

/// A stage's handle for sending on its outputs outside `handle`.
#[derive(Clone)]
pub struct Emitter(Arc<dyn EmitOutput>);

impl Emitter {
    pub fn new(sender: Arc<dyn EmitOutput>) -> Self {
        Emitter(sender)
    }

    /// Returns once the transport accepted the record.
    pub async fn emit(&self, out: Output) -> Result<(), StageError> {
        self.0.emit(out).await
    }
}
