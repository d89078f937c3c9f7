//! The embedded log on disk: what makes a restart (even after SIGKILL) resume where the
//! node stopped.
//!
//! Layout, per partition: `<root>/log/<topic>/<partition>/`
//! - `<base offset, 20 digits>.seg`: append-only segments, each named by the offset of its
//!   first record. A segment rolls once it reaches `segment_bytes`.
//! - `offsets.json`: the committed offset of every group, replaced atomically (tmp file,
//!   fsync, rename, fsync of the directory).
//!
//! A record on disk is `len: u32 LE | crc32(body): u32 LE | body`, the body being
//! `offset i64 | timestamp i64 | key (i32 len, -1 = none) | header count u32 |
//! (name u16 len, name, value u32 len, value)* | payload u32 len, payload`, all little
//! endian. Opening a partition reads its segments in order and cuts the file at the first
//! record that is short, fails its CRC or does not carry the next offset: that is the torn
//! tail a crash leaves behind.
//!
//! Writes go through a buffered writer; the caller decides when the buffer reaches the OS
//! (before a record is acknowledged) and when the OS reaches the platter (the sync timer).

use super::log::Stored;
use crate::envelope::Headers;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

const SEGMENT_SUFFIX: &str = "seg";
const OFFSETS_FILE: &str = "offsets.json";
const RECORD_HEADER: usize = 8;
/// A record larger than this is corruption, not data (the ingress caps bodies far below).
const MAX_RECORD: usize = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct DiskError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> DiskError + '_ {
    move |source| DiskError { path: path.to_path_buf(), source }
}

struct Segment {
    base: i64,
    path: PathBuf,
}

/// One partition's files. Not thread-safe by itself: it lives inside the partition's lock.
pub(crate) struct PartitionDisk {
    dir: PathBuf,
    /// Oldest first; the last one is being written.
    segments: VecDeque<Segment>,
    writer: BufWriter<File>,
    active_bytes: u64,
    segment_bytes: u64,
    scratch: Vec<u8>,
}

/// What a partition's files held when it was opened.
pub(crate) struct Recovered {
    /// Every record still on disk, in offset order.
    pub records: Vec<(i64, Stored)>,
    /// The offset the next record gets.
    pub end: i64,
    pub committed: HashMap<String, i64>,
}

fn segment_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.{SEGMENT_SUFFIX}"))
}

impl PartitionDisk {
    /// Opens (or creates) the partition in `dir`, cutting a torn tail.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(PartitionDisk, Recovered), DiskError> {
        std::fs::create_dir_all(dir).map_err(at(dir))?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(at(dir))? {
            let path = entry.map_err(at(dir))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_SUFFIX) {
                continue;
            }
            if let Some(base) = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<i64>().ok()) {
                bases.push(base);
            }
        }
        bases.sort_unstable();

        let mut records = Vec::new();
        let mut segments = VecDeque::new();
        let mut end: Option<i64> = None;
        let mut cut = false;
        for base in bases {
            let path = segment_path(dir, base);
            if cut {
                // Everything after a torn record is unreachable: its offsets would repeat.
                tracing::warn!(path = %path.display(), "removing a segment that follows a torn record");
                std::fs::remove_file(&path).map_err(at(&path))?;
                continue;
            }
            let expected = end.unwrap_or(base);
            if base != expected {
                tracing::warn!(path = %path.display(), expected, "segment does not continue the log; removing it and what follows");
                std::fs::remove_file(&path).map_err(at(&path))?;
                cut = true;
                continue;
            }
            let bytes = std::fs::read(&path).map_err(at(&path))?;
            let (good, next) = decode_segment(&bytes, base, &mut records);
            if good < bytes.len() {
                tracing::warn!(path = %path.display(), kept = good, dropped = bytes.len() - good,
                    "torn tail in the embedded log: cutting it (records after the last sync)");
                let f = OpenOptions::new().write(true).open(&path).map_err(at(&path))?;
                f.set_len(good as u64).map_err(at(&path))?;
                f.sync_all().map_err(at(&path))?;
                cut = true;
            }
            segments.push_back(Segment { base, path });
            end = Some(next);
        }
        let end = end.unwrap_or(0);
        let active_bytes;
        let file = match segments.back() {
            Some(s) => {
                let f = OpenOptions::new().append(true).open(&s.path).map_err(at(&s.path))?;
                active_bytes = f.metadata().map_err(at(&s.path))?.len();
                f
            }
            None => {
                let path = segment_path(dir, end);
                let f = OpenOptions::new().create(true).append(true).open(&path).map_err(at(&path))?;
                segments.push_back(Segment { base: end, path });
                active_bytes = 0;
                f
            }
        };
        let committed = read_offsets(dir)?;
        let disk = PartitionDisk {
            dir: dir.to_path_buf(),
            segments,
            writer: BufWriter::with_capacity(64 * 1024, file),
            active_bytes,
            segment_bytes: segment_bytes.max(1),
            scratch: Vec::new(),
        };
        Ok((disk, Recovered { records, end, committed }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Buffers one record (it reaches the OS at the next [`flush`](Self::flush)).
    pub fn append(&mut self, offset: i64, s: &Stored) -> io::Result<()> {
        if self.active_bytes >= self.segment_bytes {
            self.roll(offset)?;
        }
        self.scratch.clear();
        encode(&mut self.scratch, offset, s);
        self.writer.write_all(&self.scratch)?;
        self.active_bytes += self.scratch.len() as u64;
        Ok(())
    }

    /// Starts a new segment at `next_offset`; the finished one is synced now, as the sync
    /// timer only knows the active file.
    fn roll(&mut self, next_offset: i64) -> io::Result<()> {
        self.writer.flush()?;
        self.writer.get_ref().sync_data()?;
        let path = segment_path(&self.dir, next_offset);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        self.writer = BufWriter::with_capacity(64 * 1024, file);
        self.segments.push_back(Segment { base: next_offset, path });
        self.active_bytes = 0;
        Ok(())
    }

    /// Hands the buffered records to the OS: from here they survive a process kill.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }

    /// A handle on the active segment to fsync without holding the partition's lock.
    pub fn sync_handle(&self) -> io::Result<File> {
        self.writer.get_ref().try_clone()
    }

    /// Deletes the segments whose every record is below `earliest` (retention already let
    /// them go in memory). The active segment always stays.
    pub fn delete_below(&mut self, earliest: i64) -> io::Result<()> {
        while self.segments.len() > 1 && self.segments.get(1).is_some_and(|next| next.base <= earliest) {
            if let Some(old) = self.segments.pop_front() {
                std::fs::remove_file(&old.path)?;
            }
        }
        Ok(())
    }
}

impl Drop for PartitionDisk {
    fn drop(&mut self) {
        // A clean close leaves nothing in user space; the fsync is the transport's job.
        if let Err(e) = self.writer.flush() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "flushing the embedded log on close failed");
        }
    }
}

/// Replaces `dir/offsets.json` atomically and durably.
pub(crate) fn write_offsets(dir: &Path, committed: &HashMap<String, i64>) -> Result<(), DiskError> {
    let path = dir.join(OFFSETS_FILE);
    let tmp = dir.join(format!("{OFFSETS_FILE}.tmp"));
    let body = serde_json::to_vec(committed).map_err(|e| DiskError { path: path.clone(), source: e.into() })?;
    {
        let mut f = File::create(&tmp).map_err(at(&tmp))?;
        f.write_all(&body).map_err(at(&tmp))?;
        f.sync_data().map_err(at(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(at(&path))?;
    // The rename is durable once the directory entry is.
    File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))?;
    Ok(())
}

fn read_offsets(dir: &Path) -> Result<HashMap<String, i64>, DiskError> {
    let path = dir.join(OFFSETS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| DiskError { path, source: e.into() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(e) => Err(DiskError { path, source: e }),
    }
}

/// Appends one record, header included, to `out`.
fn encode(out: &mut Vec<u8>, offset: i64, s: &Stored) {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER]);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&s.timestamp_ms.to_le_bytes());
    match &s.key {
        Some(k) => {
            out.extend_from_slice(&(k.len() as i32).to_le_bytes());
            out.extend_from_slice(k);
        }
        None => out.extend_from_slice(&(-1i32).to_le_bytes()),
    }
    out.extend_from_slice(&(s.headers.len() as u32).to_le_bytes());
    for (name, value) in s.headers.iter() {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
    out.extend_from_slice(&(s.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&s.payload);
    let body = start + RECORD_HEADER;
    let body_len = (out.len() - body) as u32;
    let crc = crc32(&out[body..]);
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    out[start + 4..body].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the records of one segment into `out`; returns how many bytes were good and
/// the offset after the last good record.
fn decode_segment(bytes: &[u8], base: i64, out: &mut Vec<(i64, Stored)>) -> (usize, i64) {
    let mut pos = 0;
    let mut next = base;
    while pos < bytes.len() {
        let Some(header) = bytes.get(pos..pos + RECORD_HEADER) else { break };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_RECORD {
            break;
        }
        let Some(body) = bytes.get(pos + RECORD_HEADER..pos + RECORD_HEADER + len) else { break };
        if crc32(body) != crc {
            break;
        }
        match decode_body(body) {
            Some((offset, stored)) if offset == next => {
                out.push((offset, stored));
                next += 1;
                pos += RECORD_HEADER + len;
            }
            _ => break,
        }
    }
    (pos, next)
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|b| b.try_into().ok())
    }
}

fn decode_body(body: &[u8]) -> Option<(i64, Stored)> {
    let mut c = Cursor(body);
    let offset = i64::from_le_bytes(c.array()?);
    let timestamp_ms = i64::from_le_bytes(c.array()?);
    let key_len = i32::from_le_bytes(c.array()?);
    let key = if key_len < 0 { None } else { Some(Bytes::copy_from_slice(c.take(key_len as usize)?)) };
    let count = u32::from_le_bytes(c.array()?);
    let mut headers = Headers::new();
    for _ in 0..count {
        let n = u16::from_le_bytes(c.array()?) as usize;
        let name = std::str::from_utf8(c.take(n)?).ok()?;
        let v = u32::from_le_bytes(c.array()?) as usize;
        headers.push(name, Bytes::copy_from_slice(c.take(v)?));
    }
    let p = u32::from_le_bytes(c.array()?) as usize;
    let payload = Bytes::copy_from_slice(c.take(p)?);
    if !c.0.is_empty() {
        return None;
    }
    Some((offset, Stored { key, headers, payload, timestamp_ms }))
}

/// CRC-32 (IEEE 802.3, the zlib/gzip polynomial), table driven.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in bytes {
        crc = TABLE[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn records_round_trip_with_key_headers_and_payload() {
        let mut h = Headers::new();
        h.push("weir-message-id", Bytes::from_static(b"m1"));
        h.push("custom", Bytes::new());
        let s = Stored { key: Some(Bytes::from_static(b"k")), headers: h.clone(), payload: Bytes::from_static(b"{}"), timestamp_ms: 42 };
        let mut buf = Vec::new();
        encode(&mut buf, 7, &s);
        encode(&mut buf, 8, &Stored { key: None, headers: Headers::new(), payload: Bytes::new(), timestamp_ms: 1 });
        let mut out = Vec::new();
        assert_eq!(decode_segment(&buf, 7, &mut out), (buf.len(), 9));
        assert_eq!(out[0].0, 7);
        assert_eq!(out[0].1.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(out[0].1.headers, h);
        assert_eq!(out[0].1.timestamp_ms, 42);
        assert_eq!(out[1].1.key, None);
    }

    #[test]
    fn a_flipped_byte_ends_the_good_prefix() {
        let s = Stored { key: None, headers: Headers::new(), payload: Bytes::from_static(b"abc"), timestamp_ms: 0 };
        let mut buf = Vec::new();
        encode(&mut buf, 0, &s);
        let first = buf.len();
        encode(&mut buf, 1, &s);
        let last = buf.len() - 1;
        buf[last] ^= 0xFF;
        let mut out = Vec::new();
        assert_eq!(decode_segment(&buf, 0, &mut out), (first, 1));
        assert_eq!(out.len(), 1);
    }
}
