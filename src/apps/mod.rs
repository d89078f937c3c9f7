//! Applications built on weir: each one's stage kinds, payload types and models, in
//! `src/apps/<app>/`. The runtime never imports this module; the composition root (the
//! `weir` binary's `main`) asks for [`Registry::with_apps`], which adds every app here to the
//! generic kinds.

pub mod skeji;

use crate::stages::Registry;

/// Registers every app's kinds and payload types.
pub fn register_all(r: &mut Registry) {
    skeji::register(r);
}

impl Registry {
    /// The generic built-in kinds ([`Registry::builtin`]) and every app's: what `weir` runs.
    pub fn with_apps() -> Self {
        let mut r = Registry::builtin();
        register_all(&mut r);
        r
    }
}
