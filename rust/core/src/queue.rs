//! The bounded admission queue: a global cap in bytes and in messages, a
//! per-peer share of both, and round-robin draining between peers.
//!
//! Admission never blocks: when a cap would be exceeded the item is handed
//! back (`Err(item)`), like tokio's `try_send` returning `TrySendError::Full`.
//! The caller then stops reading that peer until its share frees up (DESIGN.md,
//! "Data flow"); other peers keep their own share, so one flooding peer cannot
//! starve the rest (Core Lightning #7972).

use std::collections::{HashMap, VecDeque};

/// Limits of a [`Queue`].
#[derive(Clone, Copy, Debug)]
pub struct QueueLimits {
    /// Global cap on queued message bytes.
    pub max_bytes: usize,
    /// Global cap on queued messages.
    pub max_messages: usize,
    /// Cap on the bytes one peer may have queued.
    pub per_peer_bytes: usize,
    /// Cap on the messages one peer may have queued.
    pub per_peer_messages: usize,
}

/// Default global byte cap: 32 MiB, a few seconds of verification work.
pub const DEFAULT_MAX_QUEUE_BYTES: usize = 32 << 20;
/// Default global message cap.
pub const DEFAULT_MAX_QUEUE_MESSAGES: usize = 100_000;
/// Default per-peer share: a quarter of each global cap, so a single
/// flooding peer leaves three quarters of the queue to the others.
pub const DEFAULT_PEER_SHARE_DIVISOR: usize = 4;

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits::with_defaults(None, None, None, None)
    }
}

impl QueueLimits {
    /// The limits given, the others by default: the global caps
    /// [`DEFAULT_MAX_QUEUE_BYTES`] and [`DEFAULT_MAX_QUEUE_MESSAGES`], each
    /// per-peer share a [`DEFAULT_PEER_SHARE_DIVISOR`]th of its global cap
    /// (at least 1). The API's bounds on each value are in [`crate::limits`].
    pub fn with_defaults(
        max_bytes: Option<usize>,
        max_messages: Option<usize>,
        per_peer_bytes: Option<usize>,
        per_peer_messages: Option<usize>,
    ) -> Self {
        let max_bytes = max_bytes.unwrap_or(DEFAULT_MAX_QUEUE_BYTES);
        let max_messages = max_messages.unwrap_or(DEFAULT_MAX_QUEUE_MESSAGES);
        QueueLimits {
            max_bytes,
            max_messages,
            per_peer_bytes: per_peer_bytes
                .unwrap_or((max_bytes / DEFAULT_PEER_SHARE_DIVISOR).max(1)),
            per_peer_messages: per_peer_messages
                .unwrap_or((max_messages / DEFAULT_PEER_SHARE_DIVISOR).max(1)),
        }
    }
}

#[derive(Default)]
struct PeerQueue<T> {
    items: VecDeque<(usize, T)>,
    bytes: usize,
}

/// A bounded multi-peer FIFO with fair (round-robin) draining.
pub struct Queue<T> {
    limits: QueueLimits,
    peers: HashMap<u64, PeerQueue<T>>,
    /// Peers with queued items, in round-robin order.
    ring: VecDeque<u64>,
    bytes: usize,
    messages: usize,
    high_water_bytes: usize,
}

impl<T> Queue<T> {
    /// An empty queue with `limits`.
    pub fn new(limits: QueueLimits) -> Self {
        Queue {
            limits,
            peers: HashMap::new(),
            ring: VecDeque::new(),
            bytes: 0,
            messages: 0,
            high_water_bytes: 0,
        }
    }

    /// Whether an item of `len` bytes from `peer` would be admitted now.
    ///
    /// An empty queue admits any item, so one larger than a byte cap (a
    /// 65,535-byte message against a small share) still gets through once
    /// the queue drains instead of being refused forever; the caps are then
    /// exceeded by that one item at most.
    pub fn has_room(&self, peer: u64, len: usize) -> bool {
        if self.messages == 0 {
            return true;
        }
        let (pb, pm) = self
            .peers
            .get(&peer)
            .map_or((0, 0), |p| (p.bytes, p.items.len()));
        self.bytes + len <= self.limits.max_bytes
            && self.messages < self.limits.max_messages
            && pb + len <= self.limits.per_peer_bytes
            && pm < self.limits.per_peer_messages
    }

    /// Queue `item` (of `len` bytes) for `peer`.
    ///
    /// # Errors
    /// Hands `item` back when the global or the peer's cap would be exceeded.
    pub fn push(&mut self, peer: u64, len: usize, item: T) -> Result<(), T> {
        if !self.has_room(peer, len) {
            return Err(item);
        }
        let p = self.peers.entry(peer).or_insert_with(|| PeerQueue {
            items: VecDeque::new(),
            bytes: 0,
        });
        if p.items.is_empty() {
            self.ring.push_back(peer);
        }
        p.items.push_back((len, item));
        p.bytes += len;
        self.bytes += len;
        self.messages += 1;
        self.high_water_bytes = self.high_water_bytes.max(self.bytes);
        Ok(())
    }

    /// Take one item from the next peer in round-robin order.
    pub fn pop(&mut self) -> Option<(u64, T)> {
        let peer = self.ring.pop_front()?;
        let p = self.peers.get_mut(&peer)?;
        let (len, item) = p.items.pop_front()?;
        p.bytes -= len;
        self.bytes -= len;
        self.messages -= 1;
        if p.items.is_empty() {
            self.peers.remove(&peer);
        } else {
            self.ring.push_back(peer);
        }
        Some((peer, item))
    }

    /// Queued bytes now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    /// Queued messages now.
    pub fn len(&self) -> usize {
        self.messages
    }
    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }
    /// Highest queued byte count ever reached.
    pub fn high_water_bytes(&self) -> usize {
        self.high_water_bytes
    }
    /// Bytes `peer` has queued now.
    pub fn peer_bytes(&self, peer: u64) -> usize {
        self.peers.get(&peer).map_or(0, |p| p.bytes)
    }
    /// The limits this queue enforces.
    pub fn limits(&self) -> QueueLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_round_robin() {
        let mut q = Queue::new(QueueLimits {
            max_bytes: 100,
            max_messages: 10,
            per_peer_bytes: 40,
            per_peer_messages: 10,
        });
        for i in 0..4 {
            assert!(q.push(1, 10, i).is_ok());
        }
        assert_eq!(q.push(1, 10, 99), Err(99));
        assert!(q.push(2, 10, 100).is_ok());
        assert!(q.push(2, 10, 101).is_ok());
        assert_eq!(q.bytes(), 60);
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            order,
            vec![(1, 0), (2, 100), (1, 1), (2, 101), (1, 2), (1, 3)]
        );
        assert_eq!(q.bytes(), 0);
        assert_eq!(q.high_water_bytes(), 60);
    }

    #[test]
    fn an_item_larger_than_a_cap_waits_for_an_empty_queue() {
        let mut q = Queue::new(QueueLimits {
            max_bytes: 100,
            max_messages: 10,
            per_peer_bytes: 40,
            per_peer_messages: 10,
        });
        assert!(q.push(2, 10, 0).is_ok());
        // over the peer's share and the global cap: refused while anything is queued
        assert_eq!(q.push(1, 150, 1), Err(1));
        assert_eq!(q.pop(), Some((2, 0)));
        // once the queue is empty it gets in, and nothing else after it
        assert!(q.push(1, 150, 1).is_ok());
        assert_eq!(q.push(2, 1, 2), Err(2));
        assert_eq!(q.high_water_bytes(), 150);
    }
}
