//! The exact-duplicate seen-set, checked before any signature verification.
//!
//! Each message is reduced to a 128-bit keyed hash (two SipHash-1-3 states
//! with random keys from [`std::collections::hash_map::RandomState`], so a
//! peer cannot aim collisions at a real message). The set is generational:
//! inserts go to the current generation; when it holds `capacity / 2`
//! hashes it becomes the previous generation and the old previous one is
//! dropped. Memory is therefore bounded by `capacity` hashes (16 bytes each
//! plus hash-table overhead, about 20 bytes per hash: 2^21 hashes ≈ 42 MB),
//! and a hash is remembered for at least `capacity / 2` later inserts.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::BuildHasher;

/// Default bound on remembered hashes (both generations together).
///
/// 2^21 is twelve times the full mainnet graph (about 170k messages), so an
/// initial sync from many peers never forgets a message it verified.
pub const DEFAULT_SEEN_CAPACITY: usize = 1 << 21;

/// A bounded set of 128-bit message hashes.
pub struct SeenSet {
    k1: RandomState,
    k2: RandomState,
    current: HashSet<u128>,
    previous: HashSet<u128>,
    half: usize,
}

impl SeenSet {
    /// A set remembering at most `capacity` hashes (at least 2).
    pub fn new(capacity: usize) -> Self {
        let half = (capacity / 2).max(1);
        SeenSet {
            k1: RandomState::new(),
            k2: RandomState::new(),
            current: HashSet::new(),
            previous: HashSet::new(),
            half,
        }
    }

    /// The keyed 128-bit hash of a whole message.
    pub fn hash(&self, msg: &[u8]) -> u128 {
        ((self.k1.hash_one(msg) as u128) << 64) | self.k2.hash_one(msg) as u128
    }

    /// Whether `h` was inserted and not yet forgotten.
    pub fn contains(&self, h: u128) -> bool {
        self.current.contains(&h) || self.previous.contains(&h)
    }

    /// Remember `h`, rotating generations when the current one is full.
    pub fn insert(&mut self, h: u128) {
        if self.current.len() >= self.half {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(h);
    }

    /// Forget `h` (a message whose decision was not final for its bytes).
    pub fn remove(&mut self, h: u128) {
        self.current.remove(&h);
        self.previous.remove(&h);
    }

    /// Number of hashes remembered now (at most the capacity).
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_remembers_recent() {
        let mut s = SeenSet::new(100);
        for i in 0u32..1000 {
            let h = s.hash(&i.to_be_bytes());
            assert!(!s.contains(h));
            s.insert(h);
            assert!(s.contains(h));
            assert!(s.len() <= 100);
        }
        // the last 50 are always remembered
        for i in 950u32..1000 {
            assert!(s.contains(s.hash(&i.to_be_bytes())));
        }
        assert!(!s.contains(s.hash(&0u32.to_be_bytes())));
    }
}
