//! Per-key ordering inside a partition: at most one record per key is being handled; the
//! next record of a busy key waits in that key's lane. Records without a key share one
//! lane, so a partition without keys keeps its order.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};

#[derive(Debug)]
pub struct KeyLanes<T> {
    lanes: HashMap<Option<Bytes>, VecDeque<T>>,
    queued: usize,
}

impl<T> Default for KeyLanes<T> {
    fn default() -> Self {
        KeyLanes { lanes: HashMap::new(), queued: 0 }
    }
}

impl<T> KeyLanes<T> {
    /// Returns the item back if its key was free (run it now; the key is busy until
    /// `release`), or queues it behind the running one and returns `None`.
    pub fn admit(&mut self, key: Option<Bytes>, item: T) -> Option<T> {
        match self.lanes.get_mut(&key) {
            Some(q) => {
                q.push_back(item);
                self.queued += 1;
                None
            }
            None => {
                self.lanes.insert(key, VecDeque::new());
                Some(item)
            }
        }
    }

    /// The running item of `key` is done: returns the next one of that key to run (the key
    /// stays busy), or frees the key.
    pub fn release(&mut self, key: &Option<Bytes>) -> Option<T> {
        let q = self.lanes.get_mut(key)?;
        match q.pop_front() {
            Some(next) => {
                self.queued -= 1;
                Some(next)
            }
            None => {
                self.lanes.remove(key);
                None
            }
        }
    }

    /// Items waiting behind a running one.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Drops every waiting item (they were never started).
    pub fn clear(&mut self) {
        self.lanes.clear();
        self.queued = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_waits_other_keys_run() {
        let mut l = KeyLanes::default();
        let a = Some(Bytes::from_static(b"a"));
        let b = Some(Bytes::from_static(b"b"));
        assert_eq!(l.admit(a.clone(), 1), Some(1));
        assert_eq!(l.admit(a.clone(), 2), None);
        assert_eq!(l.admit(b.clone(), 3), Some(3));
        assert_eq!(l.admit(a.clone(), 4), None);
        assert_eq!(l.queued(), 2);
        assert_eq!(l.release(&a), Some(2));
        assert_eq!(l.release(&a), Some(4));
        assert_eq!(l.release(&a), None);
        assert_eq!(l.admit(a, 5), Some(5), "key is free again");
        assert_eq!(l.release(&b), None);
    }
}
