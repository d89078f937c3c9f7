//! The in-memory partitioned log: one [`PartitionLog`] per partition, each a bounded
//! queue of records with Kafka offsets, the committed offset of every group that read it,
//! and a high-watermark channel readers wait on.
//!
//! Retention: a partition holds at most `capacity` records. A record may be dropped only
//! once every group that reads the topic (from the topology) has committed past it; until
//! then a producer to a full partition waits (backpressure). Topics no group reads (DLQs
//! kept for people to inspect) drop their oldest records instead, like size retention.
//!
//! Durable partitions (see [`super::disk`]) also write every record to their segment
//! files. Memory stays the read path: the disk is a copy that is only read when the
//! partition is opened again. A record is handed to the OS before its delivery resolves
//! ([`PartitionLog::ensure_written`]), so a process kill loses nothing acknowledged;
//! [`PartitionLog::take_offsets`] and [`PartitionLog::prepare_data_sync`] are the fsync
//! round, on the transport's timer.

use super::disk::{DiskError, PartitionDisk};
use crate::envelope::{Headers, Record, TopicPartition};
use crate::transport::{PartitionStream, TransportError};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{watch, Notify};

#[derive(Debug)]
pub(crate) struct Stored {
    pub key: Option<Bytes>,
    pub headers: Headers,
    pub payload: Bytes,
    pub timestamp_ms: i64,
}

pub(crate) struct PartitionLog {
    pub tp: TopicPartition,
    state: Mutex<LogState>,
    /// The next offset to be written (Kafka's log end offset).
    end: watch::Sender<i64>,
    space: Notify,
}

struct LogState {
    base: i64,
    records: VecDeque<Arc<Stored>>,
    committed: HashMap<String, i64>,
    retaining_groups: BTreeSet<String>,
    capacity: usize,
    disk: Option<DiskState>,
}

struct DiskState {
    files: PartitionDisk,
    /// Records below this offset were handed to the OS.
    written: i64,
    /// Committed offsets changed since they were last written.
    offsets_dirty: bool,
    /// The end offset at the last sync round: an idle partition is not synced again.
    synced: i64,
    /// Set by the first failed write: the file may hold half a record, so nothing more is
    /// appended (a producer gets the error, and the node's restart reopens the log).
    failed: Option<String>,
}

/// The fsync of one partition's data, done outside the partition's lock.
pub(crate) struct DataSync {
    dir: PathBuf,
    file: File,
}

impl DataSync {
    pub fn run(&self) -> Result<(), DiskError> {
        self.file.sync_data().map_err(|source| DiskError { path: self.dir.clone(), source })
    }
}

/// Committed offsets to write once the data they cover is synced.
pub(crate) struct OffsetsWrite {
    dir: PathBuf,
    offsets: HashMap<String, i64>,
}

impl OffsetsWrite {
    pub fn run(&self) -> Result<(), DiskError> {
        super::disk::write_offsets(&self.dir, &self.offsets)
    }
}

impl PartitionLog {
    pub fn new(tp: TopicPartition, capacity: usize, retaining_groups: BTreeSet<String>) -> Self {
        let (end, _) = watch::channel(0);
        PartitionLog {
            tp,
            state: Mutex::new(LogState {
                base: 0,
                records: VecDeque::new(),
                committed: HashMap::new(),
                retaining_groups,
                capacity: capacity.max(1),
                disk: None,
            }),
            end,
            space: Notify::new(),
        }
    }

    /// A durable partition in `dir`: records, end offset and committed offsets come back
    /// from the files. Memory holds what a group still needs (from the lowest committed
    /// offset of the reading groups; the last `capacity` records of a topic nobody reads).
    pub fn open(
        tp: TopicPartition,
        capacity: usize,
        retaining_groups: BTreeSet<String>,
        dir: &Path,
        segment_bytes: u64,
    ) -> Result<Self, DiskError> {
        let (files, recovered) = PartitionDisk::open(dir, segment_bytes)?;
        let capacity = capacity.max(1);
        let end = recovered.end;
        let first_on_disk = recovered.records.first().map_or(end, |(o, _)| *o);
        let floor = if retaining_groups.is_empty() {
            end.saturating_sub(capacity as i64)
        } else {
            retaining_groups.iter().map(|g| recovered.committed.get(g).copied().unwrap_or(first_on_disk)).min().unwrap_or(first_on_disk)
        };
        let base = floor.clamp(first_on_disk, end);
        let records: VecDeque<Arc<Stored>> =
            recovered.records.into_iter().filter(|(o, _)| *o >= base).map(|(_, s)| Arc::new(s)).collect();
        tracing::debug!(partition = %tp, base, end, kept = records.len(), "embedded log partition reopened");
        let (end_tx, _) = watch::channel(end);
        Ok(PartitionLog {
            tp,
            state: Mutex::new(LogState {
                base,
                records,
                committed: recovered.committed,
                retaining_groups,
                capacity,
                disk: Some(DiskState { files, written: end, offsets_dirty: false, synced: end, failed: None }),
            }),
            end: end_tx,
            space: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        // A poisoned lock only means another thread panicked while holding it; the state
        // itself is always consistent between statements, so keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends, waiting while the partition is full of records a group still needs.
    /// A durable partition buffers the record for its file; see [`Self::ensure_written`].
    pub async fn append(&self, stored: Stored) -> Result<i64, TransportError> {
        let stored = Arc::new(stored);
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                st.evict(&self.tp);
                if st.records.len() < st.capacity {
                    let offset = st.base + st.records.len() as i64;
                    if let Some(d) = st.disk.as_mut() {
                        if let Some(f) = &d.failed {
                            return Err(TransportError::Unavailable(format!("embedded log of {}: {f}", self.tp)));
                        }
                        if let Err(e) = d.files.append(offset, &stored) {
                            let msg = format!("writing {}: {e}", d.files.dir().display());
                            tracing::error!(partition = %self.tp, error = %msg, "embedded log write failed");
                            d.failed = Some(msg.clone());
                            return Err(TransportError::Unavailable(msg));
                        }
                    }
                    st.records.push_back(stored);
                    drop(st);
                    self.end.send_replace(offset + 1);
                    return Ok(offset);
                }
            }
            notified.await;
        }
    }

    /// Makes sure the record at `offset` reached the OS (a no-op in memory). One call
    /// writes every record buffered so far, so concurrent producers share the syscall.
    pub fn ensure_written(&self, offset: i64) -> Result<(), TransportError> {
        let mut st = self.lock();
        let end = st.base + st.records.len() as i64;
        let Some(d) = st.disk.as_mut() else { return Ok(()) };
        if d.written > offset {
            return Ok(());
        }
        if let Some(f) = &d.failed {
            return Err(TransportError::Unavailable(format!("embedded log of {}: {f}", self.tp)));
        }
        match d.files.flush() {
            Ok(()) => {
                d.written = end;
                Ok(())
            }
            Err(e) => {
                let msg = format!("writing {}: {e}", d.files.dir().display());
                tracing::error!(partition = %self.tp, error = %msg, "embedded log write failed");
                d.failed = Some(msg.clone());
                Err(TransportError::Unavailable(msg))
            }
        }
    }

    /// The committed offsets, if they changed since they were last taken. A sync round
    /// takes every partition's offsets before it syncs any data, so each offset taken is
    /// covered by the data synced after it (outputs are written before their commit).
    pub fn take_offsets(&self) -> Option<OffsetsWrite> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let d = st.disk.as_mut()?;
        if !std::mem::take(&mut d.offsets_dirty) {
            return None;
        }
        Some(OffsetsWrite { dir: d.files.dir().to_path_buf(), offsets: st.committed.clone() })
    }

    /// Flushes the partition's buffer and returns a handle to fsync; `None` in memory and
    /// when nothing was appended since the last round.
    pub fn prepare_data_sync(&self) -> Option<Result<DataSync, DiskError>> {
        let mut st = self.lock();
        let end = st.base + st.records.len() as i64;
        let d = st.disk.as_mut()?;
        if d.synced == end {
            return None;
        }
        let dir = d.files.dir().to_path_buf();
        Some(match d.files.flush().and_then(|()| d.files.sync_handle()) {
            Ok(file) => {
                d.written = end;
                d.synced = end;
                Ok(DataSync { dir, file })
            }
            Err(source) => Err(DiskError { path: dir, source }),
        })
    }

    /// After a failed sync round: data and offsets are synced again next time.
    pub fn mark_unsynced(&self) {
        if let Some(d) = self.lock().disk.as_mut() {
            d.offsets_dirty = true;
            d.synced = -1;
        }
    }

    pub fn commit(&self, group: &str, next_offset: i64) {
        let mut st = self.lock();
        st.committed.insert(group.to_string(), next_offset);
        if let Some(d) = st.disk.as_mut() {
            d.offsets_dirty = true;
        }
        let frees_space = st.retaining_groups.contains(group);
        drop(st);
        if frees_space {
            self.space.notify_waiters();
        }
    }

    pub fn committed(&self, group: &str) -> Option<i64> {
        self.lock().committed.get(group).copied()
    }

    pub fn end_offset(&self) -> i64 {
        *self.end.borrow()
    }

    pub fn earliest(&self) -> i64 {
        self.lock().base
    }

    /// A reader starting at `offset` (clamped to what is retained).
    pub fn stream(self: &Arc<Self>, offset: i64) -> EmbeddedPartitionStream {
        EmbeddedPartitionStream { log: self.clone(), position: offset, end: self.end.subscribe() }
    }

    fn read(&self, position: &mut i64) -> Option<Record> {
        let st = self.lock();
        if *position < st.base {
            tracing::warn!(partition = %self.tp, from = *position, to = st.base,
                "records were dropped by retention before this reader reached them");
            *position = st.base;
        }
        let idx = usize::try_from(*position - st.base).ok()?;
        let s = st.records.get(idx)?.clone();
        drop(st);
        let offset = *position;
        *position += 1;
        Some(Record {
            topic: self.tp.topic.clone(),
            partition: self.tp.partition,
            offset,
            key: s.key.clone(),
            headers: s.headers.clone(),
            payload: s.payload.clone(),
            timestamp_ms: s.timestamp_ms,
        })
    }
}

impl LogState {
    fn evict(&mut self, tp: &TopicPartition) {
        let before = self.base;
        self.evict_memory();
        if self.base != before {
            if let Some(d) = self.disk.as_mut() {
                if let Err(e) = d.files.delete_below(self.base) {
                    tracing::warn!(partition = %tp, error = %e, "deleting an old segment of the embedded log failed");
                }
            }
        }
    }

    fn evict_memory(&mut self) {
        let floor = if self.retaining_groups.is_empty() {
            None
        } else {
            // A reading group that never committed holds everything.
            Some(
                self.retaining_groups
                    .iter()
                    .map(|g| self.committed.get(g).copied().unwrap_or(self.base))
                    .min()
                    .unwrap_or(self.base),
            )
        };
        while self.records.len() >= self.capacity {
            if floor.is_some_and(|f| self.base >= f) {
                break;
            }
            self.records.pop_front();
            self.base += 1;
        }
    }
}

pub(crate) struct EmbeddedPartitionStream {
    log: Arc<PartitionLog>,
    position: i64,
    end: watch::Receiver<i64>,
}

#[async_trait]
impl PartitionStream for EmbeddedPartitionStream {
    fn topic_partition(&self) -> &TopicPartition {
        &self.log.tp
    }

    async fn next(&mut self) -> Result<Record, TransportError> {
        loop {
            if let Some(r) = self.log.read(&mut self.position) {
                return Ok(r);
            }
            let pos = self.position;
            self.end.wait_for(|end| *end > pos).await.map_err(|_| TransportError::Closed)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(n: u8) -> Stored {
        Stored { key: None, headers: Headers::new(), payload: Bytes::from(vec![n]), timestamp_ms: 0 }
    }

    #[tokio::test]
    async fn full_partition_waits_for_the_reading_group_to_commit() {
        let log = Arc::new(PartitionLog::new(TopicPartition::new("t", 0), 2, BTreeSet::from(["g".to_string()])));
        assert_eq!(log.append(stored(0)).await, Ok(0));
        assert_eq!(log.append(stored(1)).await, Ok(1));
        let l2 = log.clone();
        let third = tokio::spawn(async move { l2.append(stored(2)).await });
        // Let the producer run until it blocks: it must wait, nothing was committed.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!third.is_finished());
        assert_eq!(log.end_offset(), 2);
        log.commit("g", 1);
        assert_eq!(third.await.ok(), Some(Ok(2)));
        assert_eq!(log.earliest(), 1);
    }

    #[tokio::test]
    async fn unread_topic_drops_oldest() {
        let log = Arc::new(PartitionLog::new(TopicPartition::new("dlq", 0), 2, BTreeSet::new()));
        for n in 0..5 {
            assert!(log.append(stored(n)).await.is_ok());
        }
        assert_eq!(log.earliest(), 3);
        let mut s = log.stream(0);
        let r = s.next().await.map(|r| r.offset);
        assert_eq!(r, Ok(3));
    }

    fn open(dir: &Path, groups: &[&str], capacity: usize, segment_bytes: u64) -> Arc<PartitionLog> {
        let groups = groups.iter().map(|g| g.to_string()).collect();
        Arc::new(PartitionLog::open(TopicPartition::new("t", 0), capacity, groups, dir, segment_bytes).expect("opens"))
    }

    fn keyed(n: u8) -> Stored {
        let mut headers = Headers::new();
        headers.push("weir-message-id", Bytes::from(format!("m{n}")));
        Stored { key: Some(Bytes::from(vec![b'k', n])), headers, payload: Bytes::from(vec![n; 10]), timestamp_ms: i64::from(n) }
    }

    async fn read_all(log: &Arc<PartitionLog>) -> Vec<Record> {
        let mut s = log.stream(log.earliest());
        let mut out = Vec::new();
        while s.position < log.end_offset() {
            out.push(s.next().await.expect("record"));
        }
        out
    }

    fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn reopen_restores_records_end_and_committed_offsets() {
        let tmp = tempfile::tempdir().expect("tmp");
        {
            let log = open(tmp.path(), &["g"], 100, 1 << 20);
            for n in 0..5 {
                let o = log.append(keyed(n)).await.expect("append");
                log.ensure_written(o).expect("written");
            }
            log.commit("g", 2);
            let offsets = log.take_offsets().expect("offsets changed");
            log.prepare_data_sync().expect("data changed").expect("prepared").run().expect("sync");
            offsets.run().expect("offsets");
            assert!(log.take_offsets().is_none() && log.prepare_data_sync().is_none(), "nothing left to sync");
        }
        let log = open(tmp.path(), &["g"], 100, 1 << 20);
        assert_eq!(log.end_offset(), 5);
        assert_eq!(log.committed("g"), Some(2));
        // Memory holds what the group still needs: from its committed offset on.
        assert_eq!(log.earliest(), 2);
        let records = read_all(&log).await;
        assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(records[0].key.as_deref(), Some(&[b'k', 2][..]));
        assert_eq!(records[0].headers.get_str("weir-message-id"), Some("m2"));
        assert_eq!(records[0].payload.as_ref(), &[2u8; 10][..]);
        assert_eq!(records[0].timestamp_ms, 2);
        // Appending continues the offsets.
        assert_eq!(log.append(keyed(5)).await, Ok(5));
    }

    #[tokio::test]
    async fn offsets_not_synced_are_not_restored() {
        let tmp = tempfile::tempdir().expect("tmp");
        {
            let log = open(tmp.path(), &["g"], 100, 1 << 20);
            for n in 0..3 {
                let o = log.append(keyed(n)).await.expect("append");
                log.ensure_written(o).expect("written");
            }
            // Committed in memory, never synced: the records are processed again.
            log.commit("g", 3);
        }
        let log = open(tmp.path(), &["g"], 100, 1 << 20);
        assert_eq!((log.committed("g"), log.end_offset(), log.earliest()), (None, 3, 0));
    }

    #[tokio::test]
    async fn a_torn_tail_is_detected_and_cut() {
        let tmp = tempfile::tempdir().expect("tmp");
        {
            let log = open(tmp.path(), &["g"], 100, 1 << 20);
            for n in 0..4 {
                let o = log.append(keyed(n)).await.expect("append");
                log.ensure_written(o).expect("written");
            }
        }
        let seg = segments(tmp.path()).pop().expect("a segment");
        let len = std::fs::metadata(&seg).expect("meta").len();
        // Cut the last record in half, as a crash mid-write leaves it.
        std::fs::OpenOptions::new().write(true).open(&seg).expect("open").set_len(len - 7).expect("truncate");
        let log = open(tmp.path(), &["g"], 100, 1 << 20);
        assert_eq!(log.end_offset(), 3);
        assert_eq!(read_all(&log).await.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![0, 1, 2]);
        let cut_len = std::fs::metadata(&seg).expect("meta").len();
        assert!(cut_len < len - 7, "the half record is gone from the file");
        // The next record takes the torn one's offset and survives another reopen.
        let o = log.append(keyed(9)).await.expect("append");
        assert_eq!(o, 3);
        log.ensure_written(o).expect("written");
        drop(log);
        let log = open(tmp.path(), &["g"], 100, 1 << 20);
        let records = read_all(&log).await;
        assert_eq!(records.len(), 4);
        assert_eq!(records[3].payload.as_ref(), &[9u8; 10][..]);
    }

    #[tokio::test]
    async fn retention_deletes_only_segments_every_group_committed_past() {
        let tmp = tempfile::tempdir().expect("tmp");
        // Tiny segments (one record each) and room for 4 records in memory.
        let log = open(tmp.path(), &["a", "b"], 4, 1);
        for n in 0..4 {
            log.append(keyed(n)).await.expect("append");
        }
        assert_eq!(segments(tmp.path()).len(), 4);
        // `a` is done with everything, `b` with the first two only.
        log.commit("a", 4);
        log.commit("b", 2);
        for n in 4..6 {
            log.append(keyed(n)).await.expect("append");
        }
        let left = segments(tmp.path());
        let first = left.first().and_then(|p| p.file_stem()).and_then(|s| s.to_str()).and_then(|s| s.parse::<i64>().ok());
        assert_eq!(first, Some(2), "records 0 and 1 are deleted, 2 and 3 are kept for `b`: {left:?}");
        assert_eq!(log.earliest(), 2);
        // Full of what `b` still needs: the next producer waits, nothing more is deleted.
        let l2 = log.clone();
        let blocked = tokio::spawn(async move { l2.append(keyed(6)).await });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!blocked.is_finished());
        assert_eq!(segments(tmp.path()).len(), 4);
        log.commit("b", 3);
        assert_eq!(blocked.await.ok(), Some(Ok(6)));
        assert_eq!(log.earliest(), 3);
    }
}
