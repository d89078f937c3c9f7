//! Who holds a notifier claim, and whether it is still alive.
//!
//! Every built notifier stage is an owner: its id names the process (host, pid and a random
//! part drawn at process start, so a restarted process is a new one even when the pid comes
//! back) and the stage's generation in that process (a stage the supervisor rebuilt is a new
//! generation). A claim in `skeji.db` records its owner's id.
//!
//! Liveness is an OS file lock, not a clock: each owner holds an exclusive `flock` on
//! `<data-dir>/notifier-owners/<id>.lock` from its build until it is dropped, and the kernel
//! drops that lock when the process dies, SIGKILL included. So a claim whose owner's lock
//! can be taken belongs to a stage or process that is gone, and is taken over at once;
//! a claim whose owner still holds its lock is never taken (except after the lease, the last
//! resort for an owner that is alive but stuck). `skeji.db` is already one machine's file
//! (SQLite locking), so the lock files live beside it with the same reach.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

const DIR: &str = "notifier-owners";

/// This process: `<host>-<pid>-<random>`, drawn once.
static PROCESS: LazyLock<String> = LazyLock::new(|| {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let host: String = host.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(40).collect();
    let host = if host.is_empty() { "host".to_string() } else { host };
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &random[..8])
});

/// Stage generations in this process (each build is one).
static GENERATION: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, thiserror::Error)]
#[error("notifier owner lock {path}: {source}")]
pub struct OwnerError {
    path: PathBuf,
    source: std::io::Error,
}

/// A live owner: holds its lock file until dropped.
#[derive(Debug)]
pub struct Owner {
    id: String,
    path: PathBuf,
    _lock: File,
}

impl Owner {
    /// Registers a new owner for `stage`, locking its file under `data_dir`.
    pub fn register(data_dir: &Path, stage: &str) -> Result<Owner, OwnerError> {
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed) + 1;
        let stage: String = stage.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')).collect();
        let id = format!("{stage}.g{generation}.{}", *PROCESS);
        let dir = data_dir.join(DIR);
        let path = dir.join(format!("{id}.lock"));
        let wrap = |source| OwnerError { path: path.clone(), source };
        std::fs::create_dir_all(&dir).map_err(wrap)?;
        // Locked under a name no checker looks at, then renamed into place: a file at `path`
        // is locked from the moment it exists (else a sweep could find it unlocked, take it
        // for dead and remove it under a live owner).
        let staging = dir.join(format!("{id}.new"));
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(&staging).map_err(wrap)?;
        // The id is new (random per process, counted per build): nobody else holds it.
        if !try_lock(&lock).map_err(wrap)? {
            return Err(wrap(std::io::Error::other("already locked")));
        }
        std::fs::rename(&staging, &path).map_err(wrap)?;
        sweep(data_dir, &id);
        Ok(Owner { id, path, _lock: lock })
    }

    /// What claims record.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        // The lock goes with the file handle; removing the file first keeps the directory
        // from filling with the locks of stages long gone. A checker that opened it just
        // before still finds it unlocked: gone, which is true.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether the owner `id` (a claim's, found in `skeji.db` next to `data_dir`) is alive:
/// some process still holds its lock. A missing lock file is a clean exit (or a ledger from
/// before owners existed is not asked: it has no id). The lock file of a dead owner is
/// removed by whoever finds it dead.
pub fn is_alive(data_dir: &Path, id: &str) -> bool {
    if id.is_empty() || id.contains('/') || id.contains("..") {
        return false;
    }
    let path = data_dir.join(DIR).join(format!("{id}.lock"));
    let file = match OpenOptions::new().write(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
        Err(e) => {
            // Cannot tell: treat it as alive, so only the lease can take its claims.
            tracing::warn!(path = %path.display(), error = %e, "cannot open a notifier owner's lock file");
            return true;
        }
    };
    match try_lock(&file) {
        Ok(true) => {
            let _ = std::fs::remove_file(&path);
            false
        }
        Ok(false) => true,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot test a notifier owner's lock");
            true
        }
    }
}

/// Removes the lock files of owners that are gone (killed processes leave theirs behind),
/// so the directory holds about one file per live stage. Their claims need no file: a
/// missing lock file reads as gone.
fn sweep(data_dir: &Path, me: &str) {
    let Ok(entries) = std::fs::read_dir(data_dir.join(DIR)) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".lock")) else { continue };
        if id != me {
            // Removes the file when nobody holds it.
            is_alive(data_dir, id);
        }
    }
}

/// Takes an exclusive `flock` on `file` if no one holds one: `Ok(false)` when someone does.
/// The lock belongs to the open file and ends when it is closed (or its process dies).
/// (rustix rather than `File::try_lock`, which needs Rust 1.89; the MSRV is 1.85.)
pub(super) fn try_lock(file: &File) -> std::io::Result<bool> {
    match rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Waits for an exclusive `flock` on `file` (see [`try_lock`]).
pub(super) fn lock(file: &File) -> std::io::Result<()> {
    Ok(rustix::fs::flock(file, rustix::fs::FlockOperation::LockExclusive)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_is_alive_until_dropped_and_each_build_is_a_new_generation() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = Owner::register(dir.path(), "notifier-pipeline").expect("owner");
        let b = Owner::register(dir.path(), "notifier-pipeline").expect("owner");
        assert_ne!(a.id(), b.id());
        assert!(a.id().starts_with("notifier-pipeline.g"), "{}", a.id());
        assert!(is_alive(dir.path(), a.id()) && is_alive(dir.path(), b.id()));
        let gone = a.id().to_string();
        drop(a);
        assert!(!is_alive(dir.path(), &gone));
        assert!(is_alive(dir.path(), b.id()));
        assert!(!is_alive(dir.path(), "never-registered"));
    }

    #[test]
    fn a_lock_file_left_by_a_killed_process_reads_as_dead() {
        // A killed process leaves its file behind, unlocked (the kernel released it).
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join(DIR)).expect("dir");
        std::fs::write(dir.path().join(DIR).join("notifier-pipeline.g1.host-1-deadbeef.lock"), b"").expect("file");
        assert!(!is_alive(dir.path(), "notifier-pipeline.g1.host-1-deadbeef"));
        assert!(!dir.path().join(DIR).join("notifier-pipeline.g1.host-1-deadbeef.lock").exists(), "removed when found dead");

        // A new owner sweeps what killed ones left, and keeps the live ones.
        let live = Owner::register(dir.path(), "notifier-events").expect("owner");
        std::fs::write(dir.path().join(DIR).join("notifier-events.g7.host-2-feedbeef.lock"), b"").expect("file");
        let _new = Owner::register(dir.path(), "notifier-events").expect("owner");
        assert!(!dir.path().join(DIR).join("notifier-events.g7.host-2-feedbeef.lock").exists());
        assert!(is_alive(dir.path(), live.id()));
    }
}
