//! Which offset a partition may commit: the highest point below which every delivered
//! record is complete. Records complete out of order (different keys run concurrently);
//! the commit never passes the oldest incomplete one.
//!
//! Kafka's committed offset is the *next* offset to read, so after completing offsets
//! 0..=9 the commit is 10. Offsets may have gaps (compaction, transaction markers): the
//! tracker only knows delivered offsets and never assumes contiguity of numbers.

use std::collections::VecDeque;

#[derive(Debug, Default)]
pub struct OffsetTracker {
    /// Delivered records in offset order, with whether each is complete.
    window: VecDeque<(i64, bool)>,
    /// One past the last delivered offset.
    next: Option<i64>,
    committed: Option<i64>,
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// A record was delivered. Offsets must increase.
    pub fn begin(&mut self, offset: i64) {
        debug_assert!(self.next.is_none_or(|n| offset >= n), "offsets must increase");
        self.window.push_back((offset, false));
        self.next = Some(offset + 1);
    }

    /// A record's outputs were all accepted. Returns false for an unknown offset.
    pub fn complete(&mut self, offset: i64) -> bool {
        let Ok(i) = self.window.binary_search_by_key(&offset, |(o, _)| *o) else {
            return false;
        };
        self.window[i].1 = true;
        while self.window.front().is_some_and(|(_, done)| *done) {
            self.window.pop_front();
        }
        true
    }

    /// The offset to commit now, if it moved past the last commit.
    pub fn committable(&self) -> Option<i64> {
        let point = match self.window.front() {
            Some((oldest_incomplete, _)) => *oldest_incomplete,
            None => self.next?,
        };
        (self.committed.is_none_or(|c| point > c)).then_some(point)
    }

    pub fn mark_committed(&mut self, next_offset: i64) {
        self.committed = Some(self.committed.map_or(next_offset, |c| c.max(next_offset)));
    }

    pub fn committed(&self) -> Option<i64> {
        self.committed
    }

    /// Delivered records not yet complete.
    pub fn incomplete(&self) -> usize {
        self.window.iter().filter(|(_, d)| !d).count()
    }

    pub fn is_idle(&self) -> bool {
        self.window.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_commits_past_a_gap() {
        let mut t = OffsetTracker::new();
        for o in 0..5 {
            t.begin(o);
        }
        assert_eq!(t.committable(), Some(0));
        t.complete(1);
        t.complete(2);
        assert_eq!(t.committable(), Some(0), "0 is still running");
        t.complete(0);
        assert_eq!(t.committable(), Some(3));
        t.mark_committed(3);
        assert_eq!(t.committable(), None);
        t.complete(4);
        assert_eq!(t.committable(), None, "3 is still running");
        t.complete(3);
        assert_eq!(t.committable(), Some(5));
    }

    #[test]
    fn offsets_with_gaps_commit_one_past_the_last() {
        let mut t = OffsetTracker::new();
        t.begin(10);
        t.begin(15);
        t.complete(15);
        assert_eq!(t.committable(), Some(10));
        t.complete(10);
        assert_eq!(t.committable(), Some(16));
        assert!(!t.complete(12));
    }

    #[test]
    fn nothing_delivered_nothing_to_commit() {
        assert_eq!(OffsetTracker::new().committable(), None);
    }
}
