//! The allowed range of every numeric argument of the API, each in one
//! place with its reason. The binding checks `Pipeline(...)`, `process`,
//! `prune`, `set_now`, the graph queries and `verify_batch` against them;
//! it exposes them to Python as `lngossip._core.LIMITS` (name to
//! `(min, max)`), from which the pure-Python engine and the CLI check theirs.
//!
//! An argument outside its range is a mistake of the caller (a unit error,
//! a negative number, `threads=100000` creating threads until the process
//! is killed), reported at once rather than turned into a resource
//! exhaustion later.

/// An inclusive range of integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// Smallest allowed value.
    pub min: u64,
    /// Largest allowed value.
    pub max: u64,
}

impl Bound {
    /// `value` as a `u64` when `min <= value <= max`.
    ///
    /// # Errors
    /// A message naming `argument` and the range, for a value outside it.
    pub fn check(&self, argument: &str, value: i128) -> Result<u64, String> {
        match u64::try_from(value) {
            Ok(v) if (self.min..=self.max).contains(&v) => Ok(v),
            _ => Err(self.message(argument, &value.to_string())),
        }
    }

    /// The error message for `argument` given `value` (as text: the binding
    /// uses it for integers too large to convert).
    pub fn message(&self, argument: &str, value: &str) -> String {
        format!(
            "{argument} must be between {} and {}, got {value}",
            self.min, self.max
        )
    }
}

/// Verification threads (`Pipeline(threads=)`, `verify_batch(threads=)`,
/// `--threads`). More threads than cores only cost memory (a stack each,
/// 2 MiB reserved); 1,024 covers any machine this runs on.
pub const THREADS: Bound = Bound { min: 1, max: 1024 };

/// Bytes the queue may hold (`max_queue_bytes`, `per_peer_bytes`). At
/// least one byte (an empty queue admits any message anyway); at most
/// 16 GiB, far beyond the 32 MiB default: more is a unit mistake.
pub const QUEUE_BYTES: Bound = Bound {
    min: 1,
    max: 16 << 30,
};

/// Messages the queue may hold (`max_queue_messages`,
/// `per_peer_messages`): at most 2^26, 671 times the 100,000 default.
pub const QUEUE_MESSAGES: Bound = Bound {
    min: 1,
    max: 1 << 26,
};

/// Messages one `process` call takes (`process(max_messages)`, `--batch`).
/// Zero would take nothing, and a caller looping `while queued: process()`
/// would spin for ever; the queue never holds more than [`QUEUE_MESSAGES`].
pub const BATCH: Bound = Bound {
    min: 1,
    max: 1 << 26,
};

/// `channel_update`s the orphan cache holds (`orphan_capacity`): from one
/// to 2^26 (the archive default is 1,000,000).
pub const ORPHAN_CAPACITY: Bound = Bound {
    min: 1,
    max: 1 << 26,
};

/// Bytes the orphan cache holds (`orphan_max_bytes`): at least one (an
/// orphan bigger than the bound is not kept); at most 16 GiB (the archive
/// default is 256 MiB).
pub const ORPHAN_BYTES: Bound = Bound {
    min: 1,
    max: 16 << 30,
};

/// Message hashes the seen-set remembers (`seen_capacity`): two
/// generations of at least one each; at most 2^30 (about 20 GiB at 16 bytes
/// and the hash table's overhead per entry; the default 2^21 is 42 MB).
pub const SEEN_CAPACITY: Bound = Bound {
    min: 2,
    max: 1 << 30,
};

/// Parsed public keys cached (`pubkey_cache_capacity`): at most 2^24
/// (the default is 2^16; mainnet has about 17,000 nodes).
pub const PUBKEY_CACHE_CAPACITY: Bound = Bound {
    min: 1,
    max: 1 << 24,
};

/// Milliseconds between `fdatasync`s of the store
/// (`store_sync_interval_ms`): 0 syncs after every write; at most one hour,
/// since the interval is what a power loss can cost.
pub const STORE_SYNC_INTERVAL_MS: Bound = Bound {
    min: 0,
    max: 3_600_000,
};

/// "Now" in seconds since the epoch (`now`, `set_now`, `prune(now)`):
/// BOLT #7 timestamps are 32-bit seconds, so a "now" past 2106 is a unit
/// mistake (milliseconds).
pub const NOW: Bound = Bound {
    min: 0,
    max: u32::MAX as u64,
};

/// Items in one page of a graph query (`limit` of `short_channel_ids`,
/// `node_ids`, `short_channel_ids_in_blocks`; `max_messages` of
/// `gossip_after`). Zero returns nothing and a pager would never advance;
/// 2^20 bounds the list built while the pipeline is locked (8 MiB of ids).
pub const PAGE: Bound = Bound {
    min: 1,
    max: 1 << 20,
};

/// Rapid Gossip Sync format versions (`rgs_snapshot(version=)`, `--version`):
/// the `lightning-rapid-gossip-sync` crate 0.2 reads 1 and 2.
pub const RGS_VERSION: Bound = Bound { min: 1, max: 2 };

/// The Rapid Gossip Sync snapshot grid in seconds (`interval`): at least
/// a minute (a finer grid only multiplies cached snapshots), at most a week
/// (LDK refuses snapshots more than two weeks old).
pub const RGS_INTERVAL_S: Bound = Bound {
    min: 60,
    max: 7 * 86_400,
};

/// Every bound by the name Python sees it under (`lngossip._core.LIMITS`).
pub const ALL: [(&str, Bound); 13] = [
    ("threads", THREADS),
    ("queue_bytes", QUEUE_BYTES),
    ("queue_messages", QUEUE_MESSAGES),
    ("batch", BATCH),
    ("orphan_capacity", ORPHAN_CAPACITY),
    ("orphan_bytes", ORPHAN_BYTES),
    ("seen_capacity", SEEN_CAPACITY),
    ("pubkey_cache_capacity", PUBKEY_CACHE_CAPACITY),
    ("store_sync_interval_ms", STORE_SYNC_INTERVAL_MS),
    ("now", NOW),
    ("page", PAGE),
    ("rgs_version", RGS_VERSION),
    ("rgs_interval", RGS_INTERVAL_S),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_the_argument_and_the_range() {
        assert_eq!(THREADS.check("threads", 4), Ok(4));
        assert_eq!(THREADS.check("threads", 1024), Ok(1024));
        for bad in [0, -1, 1025, 100_000, i128::MAX] {
            let e = THREADS.check("threads", bad).unwrap_err();
            assert_eq!(e, format!("threads must be between 1 and 1024, got {bad}"));
        }
        assert_eq!(STORE_SYNC_INTERVAL_MS.check("x", 0), Ok(0));
        assert!(NOW.check("now", 1 << 32).is_err());
        let mut names: Vec<&str> = ALL.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "a name twice in ALL");
        for (_, b) in ALL {
            assert!(b.min <= b.max);
        }
    }

    #[test]
    fn every_default_lies_in_its_bound() {
        use crate::orphans::{
            ARCHIVE_ORPHAN_CAPACITY, ARCHIVE_ORPHAN_MAX_BYTES, DEFAULT_ORPHAN_CAPACITY,
            DEFAULT_ORPHAN_MAX_BYTES,
        };
        use crate::queue::{DEFAULT_MAX_QUEUE_BYTES, DEFAULT_MAX_QUEUE_MESSAGES};
        use crate::seen::DEFAULT_SEEN_CAPACITY;
        use crate::store::DEFAULT_SYNC_INTERVAL_MS;
        use crate::verify::DEFAULT_PUBKEY_CACHE_CAPACITY;
        let pairs = [
            (QUEUE_BYTES, DEFAULT_MAX_QUEUE_BYTES as u64),
            (QUEUE_MESSAGES, DEFAULT_MAX_QUEUE_MESSAGES as u64),
            (ORPHAN_CAPACITY, DEFAULT_ORPHAN_CAPACITY as u64),
            (ORPHAN_CAPACITY, ARCHIVE_ORPHAN_CAPACITY as u64),
            (ORPHAN_BYTES, DEFAULT_ORPHAN_MAX_BYTES as u64),
            (ORPHAN_BYTES, ARCHIVE_ORPHAN_MAX_BYTES as u64),
            (SEEN_CAPACITY, DEFAULT_SEEN_CAPACITY as u64),
            (PUBKEY_CACHE_CAPACITY, DEFAULT_PUBKEY_CACHE_CAPACITY as u64),
            (STORE_SYNC_INTERVAL_MS, DEFAULT_SYNC_INTERVAL_MS),
        ];
        for (b, v) in pairs {
            assert!((b.min..=b.max).contains(&v), "{v} outside {b:?}");
        }
    }
}
