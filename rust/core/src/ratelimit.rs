//! Spam limits: a token bucket per `channel_update` direction and per
//! `node_announcement` signer (live policy only).
//!
//! Anchors: lnd lets a channel direction update once a minute with a burst
//! of 10; Core Lightning rate-limits per channel too. A token is spent only
//! when a message has verified and would be stored, so a forger cannot
//! drain a real channel's bucket; [`RateLimiter::allows`] lets `submit`
//! turn away an over-limit message before paying for its signature check.

use std::collections::HashMap;

/// Bucket size and refill of the spam limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Messages a key may send in a burst.
    pub burst: u32,
    /// Seconds to earn one more message.
    pub refill_s: u32,
}

/// lnd's limit: one update a minute, a burst of 10.
pub const DEFAULT_RATE_LIMIT: RateLimit = RateLimit {
    burst: 10,
    refill_s: 60,
};

/// A key of a bucket: a channel direction (`short_channel_id`, `direction`)
/// or a node (`node_id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// `channel_update` of one direction.
    Direction(u64, u8),
    /// `node_announcement` of one node.
    Node([u8; 33]),
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: u32,
    /// Seconds since the epoch when the next token is earned from.
    since: u64,
}

/// Token buckets by [`Key`]; one entry per key that has spent a token, so
/// it holds at most one per stored channel direction and node.
pub struct RateLimiter {
    limit: RateLimit,
    buckets: HashMap<Key, Bucket>,
}

impl RateLimiter {
    /// Buckets of `limit`.
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit,
            buckets: HashMap::new(),
        }
    }

    fn refilled(&self, b: Bucket, now: u64) -> Bucket {
        let refill = u64::from(self.limit.refill_s.max(1));
        let earned = now.saturating_sub(b.since) / refill;
        let tokens = (u64::from(b.tokens) + earned).min(u64::from(self.limit.burst));
        Bucket {
            tokens: tokens as u32,
            since: if tokens >= u64::from(self.limit.burst) {
                now
            } else {
                b.since + earned * refill
            },
        }
    }

    /// Whether `key` has a token at `now` (seconds), without spending it.
    pub fn allows(&self, key: &Key, now: u64) -> bool {
        self.buckets
            .get(key)
            .is_none_or(|b| self.refilled(*b, now).tokens > 0)
    }

    /// Spend a token of `key` at `now`; false when it has none.
    pub fn spend(&mut self, key: Key, now: u64) -> bool {
        let full = Bucket {
            tokens: self.limit.burst,
            since: now,
        };
        let b = self.buckets.get(&key).copied().unwrap_or(full);
        let mut b = self.refilled(b, now);
        if b.tokens == 0 {
            self.buckets.insert(key, b);
            return false;
        }
        b.tokens -= 1;
        self.buckets.insert(key, b);
        true
    }

    /// Forget keys `keep` rejects (pruned channels and nodes).
    pub fn retain(&mut self, mut keep: impl FnMut(&Key) -> bool) {
        self.buckets.retain(|k, _| keep(k));
    }

    /// Keys with a bucket.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key has a bucket.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_one_per_refill() {
        let mut r = RateLimiter::new(RateLimit {
            burst: 3,
            refill_s: 60,
        });
        let k = Key::Direction(7, 0);
        for _ in 0..3 {
            assert!(r.allows(&k, 1000));
            assert!(r.spend(k, 1000));
        }
        assert!(!r.allows(&k, 1000));
        assert!(!r.spend(k, 1030));
        assert!(r.spend(k, 1060));
        assert!(!r.spend(k, 1061));
        // a long silence refills to the burst, not beyond
        for _ in 0..3 {
            assert!(r.spend(k, 100_000));
        }
        assert!(!r.spend(k, 100_000));
        assert!(r.spend(Key::Direction(7, 1), 1000));
    }
}
