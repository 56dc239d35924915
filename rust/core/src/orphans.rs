//! The bounded orphan cache: `channel_update`s whose channel is not known
//! yet, held until its `channel_announcement` is accepted.
//!
//! Bounded both in entries (Core Lightning keeps 10,000) and in bytes
//! (a `channel_update` is about 138 bytes, but a peer may pad one to 65535).
//! When either bound would be exceeded the oldest held update is evicted;
//! it keeps its final decision `orphaned` and is counted as evicted.

use std::collections::{HashMap, VecDeque};

/// Default bound on held updates (Core Lightning's limit).
pub const DEFAULT_ORPHAN_CAPACITY: usize = 10_000;
/// Default bound on held update bytes: 10,000 padded-to-400-byte updates.
pub const DEFAULT_ORPHAN_MAX_BYTES: usize = 4_000_000;
/// Archive policy bound on held updates: an archive holds updates long
/// before their announcement (the lnresearch files: 26,960 of 27,041), so
/// its outcome must not depend on file order; a million updates is several
/// full mainnet graphs of updates.
pub const ARCHIVE_ORPHAN_CAPACITY: usize = 1_000_000;
/// Archive policy bound on held update bytes: 256 MiB (a million ~140-byte
/// updates plus slack for padded ones). Only the archive policy (local
/// files the operator chose) gets this; peers are held to the live bounds.
pub const ARCHIVE_ORPHAN_MAX_BYTES: usize = 256 << 20;

/// An orphan cache of items `T` keyed by `short_channel_id`, identified by sequence number.
pub struct Orphans<T> {
    by_scid: HashMap<u64, Vec<(u64, usize, T)>>,
    fifo: VecDeque<(u64, u64)>,
    len: usize,
    bytes: usize,
    capacity: usize,
    max_bytes: usize,
}

impl<T> Orphans<T> {
    /// An empty cache holding at most `capacity` items and `max_bytes` bytes.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Orphans {
            by_scid: HashMap::new(),
            fifo: VecDeque::new(),
            len: 0,
            bytes: 0,
            capacity,
            max_bytes,
        }
    }

    /// Number of held items.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Held bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn evict_oldest(&mut self) -> Option<T> {
        while let Some((scid, seq)) = self.fifo.pop_front() {
            let Some(v) = self.by_scid.get_mut(&scid) else {
                continue;
            };
            let Some(i) = v.iter().position(|(s, _, _)| *s == seq) else {
                continue;
            };
            let (_, n, item) = v.remove(i);
            if v.is_empty() {
                self.by_scid.remove(&scid);
            }
            self.len -= 1;
            self.bytes -= n;
            return Some(item);
        }
        None
    }

    /// Hold `item` (sequence `seq`, `n` bytes) for `short_channel_id`;
    /// returns the items evicted to make room (oldest first). An item larger
    /// than the byte bound, or a cache of capacity 0, evicts the item itself.
    pub fn insert(&mut self, short_channel_id: u64, seq: u64, n: usize, item: T) -> Vec<T> {
        if self.capacity == 0 || n > self.max_bytes {
            return vec![item];
        }
        let mut evicted = Vec::new();
        while self.len >= self.capacity || self.bytes + n > self.max_bytes {
            match self.evict_oldest() {
                Some(e) => evicted.push(e),
                None => break,
            }
        }
        self.by_scid
            .entry(short_channel_id)
            .or_default()
            .push((seq, n, item));
        self.fifo.push_back((short_channel_id, seq));
        self.len += 1;
        self.bytes += n;
        if self.fifo.len() > 2 * self.capacity.max(16) {
            let by_scid = &self.by_scid;
            self.fifo.retain(|(scid, seq)| {
                by_scid
                    .get(scid)
                    .is_some_and(|v| v.iter().any(|(s, _, _)| s == seq))
            });
        }
        evicted
    }

    /// Change the bounds; returns the items evicted to fit (oldest first).
    pub fn set_limits(&mut self, capacity: usize, max_bytes: usize) -> Vec<T> {
        self.capacity = capacity;
        self.max_bytes = max_bytes;
        let mut evicted = Vec::new();
        while self.len > self.capacity || self.bytes > self.max_bytes {
            match self.evict_oldest() {
                Some(e) => evicted.push(e),
                None => break,
            }
        }
        evicted
    }

    /// Take every item held for `short_channel_id`, in arrival order.
    pub fn release(&mut self, short_channel_id: u64) -> Vec<T> {
        let v = self.by_scid.remove(&short_channel_id).unwrap_or_default();
        self.len -= v.len();
        self.bytes -= v.iter().map(|(_, n, _)| n).sum::<usize>();
        v.into_iter().map(|(_, _, t)| t).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_and_releases_in_order() {
        let mut o = Orphans::new(3, 1000);
        assert!(o.insert(7, 1, 10, "a").is_empty());
        assert!(o.insert(8, 2, 10, "b").is_empty());
        assert!(o.insert(7, 3, 10, "c").is_empty());
        assert_eq!(o.insert(9, 4, 10, "d"), vec!["a"]);
        assert_eq!(o.release(7), vec!["c"]);
        assert_eq!(o.len(), 2);
        assert_eq!(o.bytes(), 20);
        assert!(o.insert(9, 5, 10, "e").is_empty());
        assert_eq!(o.insert(9, 6, 10, "f"), vec!["b"]);
        assert_eq!(o.insert(1, 7, 2000, "huge"), vec!["huge"]);
    }
}
