//! Rapid Gossip Sync (RGS) snapshots of the graph: the compact, unsigned
//! form of the graph that LDK wallets apply with the
//! `lightning-rapid-gossip-sync` crate (0.2.x, `src/processing.rs` defines
//! the format; versions 1 and 2).
//!
//! Layout (integers big-endian, `BigSize` as in BOLT #1):
//! `"LDK"`, version (1 byte), `chain_hash` (32), `latest_seen` (u32,
//! seconds, rounded down to [`SNAPSHOT_INTERVAL_S`]); version 2: the default
//! node feature sets (u8 count, each u16-length-prefixed); the node ids
//! (u32 count, 33 bytes each; version 2 flags node details in the first
//! byte); the channel announcements (u32 count; `features`, `BigSize`
//! `short_channel_id` delta, `BigSize` node indices); the channel updates
//! (u32 count; five default values when the count is not 0; each: `BigSize`
//! `short_channel_id` delta, a flags byte, the fields the flags name).
//!
//! What goes in follows the reference server
//! (`lightningdevkit/rapid-gossip-sync-server`, `src/serialization.rs`,
//! `src/lookup.rs`), computed from what the graph keeps:
//! - only channels with an update in both directions;
//! - a channel announcement when the channel became complete (both
//!   directions first seen) at or after `since`, and then both updates in full;
//! - an update seen at or after `since`: *incremental* (the changed fields
//!   only) when the graph still has the update the client had (the newest
//!   [`Prior`] seen before `since`) and that one was seen within
//!   [`REMINDER_AGE_S`] of the graph's clock; *full* when all five fields
//!   changed or the client's version is unknown or old;
//! - a *reminder* (flags only: the client refreshes the direction's age)
//!   for a direction unchanged since `since`, seen between 6 and 14 days
//!   before the graph's clock, in snapshots that cover more than
//!   [`REMINDER_SCOPE_S`];
//! - full updates leave out the fields equal to the defaults, the most
//!   common value of each field among them (ties: the smaller value, so the
//!   same graph gives the same bytes);
//! - node ids are listed most used first (short `BigSize` indices for
//!   the hubs), ties by `node_id`;
//! - version 2 adds the features and addresses of nodes whose
//!   `node_announcement` was seen at or after `since`, and the (up to 6)
//!   most common feature sets as defaults, and the funding amount of the
//!   channels whose amount the graph knows (Core Lightning stores carry it).
//!
//! "Seen" is [`crate::graph::Stored::seen`]; the graph's clock is the newest
//! seen of a snapshot channel's update, never the wall clock, so a snapshot
//! depends on the graph and `since` only.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

use crate::graph::{Graph, Prior, Stored};
use crate::wire::{self, NodeId, UpdateFields};

/// The format's magic: `"LDK"`.
pub const GOSSIP_PREFIX: [u8; 3] = *b"LDK";
/// The snapshot grid: `latest_seen` is rounded down to a multiple of 3 h
/// (the reference server's `SYMLINK_GRANULARITY_INTERVAL`), and clients ask
/// for snapshots since a grid point.
pub const SNAPSHOT_INTERVAL_S: u32 = 3 * 3600;
/// The widest incremental scope: a client whose last sync is older gets
/// the full snapshot (21 days, the reference server's `MAX_SNAPSHOT_SCOPE`;
/// LDK refuses snapshots more than two weeks old anyway).
pub const MAX_SCOPE_S: u32 = 21 * 86_400;
/// An update the client had, seen more than 6 days before the graph's
/// clock, may have been pruned by the client: send the new one in full
/// (the reference's `CHANNEL_REMINDER_AGE`).
pub const REMINDER_AGE_S: u32 = 6 * 86_400;
/// Directions seen more than 14 days before the graph's clock get no
/// reminder: they are stale (BOLT #7 pruning; the reference's `PRUNE_INTERVAL`).
pub const STALE_AGE_S: u32 = 14 * 86_400;
/// Snapshots covering more than 50 hours carry reminders (the reference's
/// `should_snapshot_include_reminders`).
pub const REMINDER_SCOPE_S: u32 = 50 * 3600;
/// At most this many default node feature sets (version 2; the reference's
/// `NODE_DEFAULT_FEATURE_COUNT`, the crate reads up to 6 by index).
pub const NODE_DEFAULT_FEATURE_COUNT: usize = 6;

/// Flag bits of an update's flags byte.
const INCREMENTAL: u8 = 0b1000_0000;
const CLTV_EXPIRY_DELTA: u8 = 0b0100_0000;
const HTLC_MINIMUM_MSAT: u8 = 0b0010_0000;
const FEE_BASE_MSAT: u8 = 0b0001_0000;
const FEE_PROPORTIONAL_MILLIONTHS: u8 = 0b0000_1000;
const HTLC_MAXIMUM_MSAT: u8 = 0b0000_0100;
const ALL_FIELDS: u8 = 0b0111_1100;
/// `channel_flags` bits the format carries: direction and disabled.
const STANDARD_CHANNEL_FLAGS: u8 = 0b0000_0011;

/// Why a snapshot cannot be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RgsError {
    /// Only versions 1 and 2 exist.
    UnknownVersion(u8),
    /// The snapshot interval must be at least 1 second.
    ZeroInterval,
}

impl std::fmt::Display for RgsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RgsError::UnknownVersion(v) => {
                write!(f, "unknown Rapid Gossip Sync version {v} (1 or 2)")
            }
            RgsError::ZeroInterval => write!(f, "the snapshot interval must be at least 1 s"),
        }
    }
}

impl std::error::Error for RgsError {}

/// What to write.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The `latest_seen` of the client's last snapshot (seconds; 0: a full snapshot).
    pub since: u32,
    /// Format version, 1 or 2.
    pub version: u8,
    /// The graph's `chain_hash` (32 bytes, BOLT #7 byte order).
    pub chain_hash: [u8; 32],
    /// The snapshot grid, seconds ([`SNAPSHOT_INTERVAL_S`]).
    pub interval: u32,
}

/// What a snapshot holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Its `latest_seen` (seconds, on the grid): the `since` of the next one.
    pub latest_seen: u32,
    /// Node ids listed.
    pub node_ids: u32,
    /// Nodes with details (version 2: features and addresses).
    pub node_details: u32,
    /// Default node feature sets (version 2).
    pub default_node_features: u32,
    /// Channel announcements.
    pub channel_announcements: u32,
    /// Updates in full.
    pub updates_full: u32,
    /// Incremental updates (changed fields only).
    pub updates_incremental: u32,
    /// Reminders (flags only).
    pub reminders: u32,
}

enum Update {
    Full(UpdateFields),
    Incremental(UpdateFields, u8),
    Reminder(u64, u8),
}

impl Update {
    fn short_channel_id(&self) -> u64 {
        match self {
            Update::Full(u) | Update::Incremental(u, _) => u.short_channel_id,
            Update::Reminder(s, _) => *s,
        }
    }
}

/// Append a BOLT #1 `BigSize`.
pub fn write_bigsize(out: &mut Vec<u8>, v: u64) {
    if v < 0xfd {
        out.push(v as u8);
    } else if v <= 0xffff {
        out.push(0xfd);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= 0xffff_ffff {
        out.push(0xfe);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0xff);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Fields of `new` that differ from `old`, as flag bits.
fn changed(old: &UpdateFields, new: &UpdateFields) -> u8 {
    let mut m = 0;
    if old.cltv_expiry_delta != new.cltv_expiry_delta {
        m |= CLTV_EXPIRY_DELTA;
    }
    if old.htlc_minimum_msat != new.htlc_minimum_msat {
        m |= HTLC_MINIMUM_MSAT;
    }
    if old.fee_base_msat != new.fee_base_msat {
        m |= FEE_BASE_MSAT;
    }
    if old.fee_proportional_millionths != new.fee_proportional_millionths {
        m |= FEE_PROPORTIONAL_MILLIONTHS;
    }
    if old.htlc_maximum_msat != new.htlc_maximum_msat {
        m |= HTLC_MAXIMUM_MSAT;
    }
    m
}

fn write_fields(out: &mut Vec<u8>, u: &UpdateFields, mask: u8) {
    if mask & CLTV_EXPIRY_DELTA != 0 {
        out.extend_from_slice(&u.cltv_expiry_delta.to_be_bytes());
    }
    if mask & HTLC_MINIMUM_MSAT != 0 {
        out.extend_from_slice(&u.htlc_minimum_msat.to_be_bytes());
    }
    if mask & FEE_BASE_MSAT != 0 {
        out.extend_from_slice(&u.fee_base_msat.to_be_bytes());
    }
    if mask & FEE_PROPORTIONAL_MILLIONTHS != 0 {
        out.extend_from_slice(&u.fee_proportional_millionths.to_be_bytes());
    }
    if mask & HTLC_MAXIMUM_MSAT != 0 {
        out.extend_from_slice(&u.htlc_maximum_msat.to_be_bytes());
    }
}

/// The most common value (ties: the smallest); `T::default()` when empty.
fn most_common<T: Copy + Ord + Default + std::hash::Hash>(values: impl Iterator<Item = T>) -> T {
    let mut h: HashMap<T, usize> = HashMap::new();
    for v in values {
        *h.entry(v).or_default() += 1;
    }
    h.into_iter()
        .max_by_key(|&(v, n)| (n, Reverse(v)))
        .map_or_else(T::default, |(v, _)| v)
}

/// When a direction was first seen, as far as the graph remembers.
fn first_seen(priors: &[Prior], newest: &Stored) -> u32 {
    priors
        .first()
        .map_or(newest.seen, |p| p.seen.min(newest.seen))
}

/// Write the snapshot of `graph` for a client whose last sync returned
/// `opts.since` (0: a full snapshot). Returns its bytes and what it holds.
///
/// # Errors
/// [`RgsError`] for a version other than 1 or 2, or a zero interval.
pub fn snapshot(graph: &Graph, opts: &Options) -> Result<(Vec<u8>, Summary), RgsError> {
    if !matches!(opts.version, 1 | 2) {
        return Err(RgsError::UnknownVersion(opts.version));
    }
    if opts.interval == 0 {
        return Err(RgsError::ZeroInterval);
    }
    let since = opts.since;
    let mut sum = Summary::default();

    // complete channels, and the graph's clock (newest update seen)
    let mut complete = Vec::new();
    let mut clock = 0u32;
    for (scid, c) in graph.channels() {
        let [Some(u0), Some(u1)] = &c.updates else {
            continue;
        };
        let (Ok(f0), Ok(f1), Some(ann)) = (
            wire::update_fields(&u0.msg),
            wire::update_fields(&u1.msg),
            c.announcement.as_ref(),
        ) else {
            continue;
        };
        clock = clock.max(u0.seen).max(u1.seen);
        complete.push((scid, c, ann, [(u0, f0), (u1, f1)]));
    }
    let reminders = since > 0 && clock.saturating_sub(since) > REMINDER_SCOPE_S;
    let recent = clock.saturating_sub(REMINDER_AGE_S);
    let stale = clock.saturating_sub(STALE_AGE_S);

    let mut latest_seen = 0u32;
    let mut announcements = Vec::new();
    let mut updates = Vec::new();
    for (scid, c, ann, newest) in complete {
        let completed =
            first_seen(&c.priors[0], newest[0].0).max(first_seen(&c.priors[1], newest[1].0));
        let announce = since == 0 || completed >= since;
        if announce {
            announcements.push((scid, c, ann));
        }
        for (d, (u, f)) in newest.iter().enumerate() {
            if u.seen >= since {
                latest_seen = latest_seen.max(u.seen);
            }
            let update = if announce {
                Some(Update::Full(*f))
            } else if u.seen >= since {
                match c.priors[d].iter().rev().find(|p| p.seen < since) {
                    Some(p) if p.seen > recent => {
                        let mask = changed(&p.fields, f);
                        let flags_changed = (p.fields.channel_flags ^ f.channel_flags)
                            & STANDARD_CHANNEL_FLAGS
                            != 0;
                        if mask == ALL_FIELDS {
                            Some(Update::Full(*f))
                        } else if mask != 0 || flags_changed {
                            Some(Update::Incremental(*f, mask))
                        } else {
                            None
                        }
                    }
                    _ => Some(Update::Full(*f)),
                }
            } else if reminders && u.seen <= recent && u.seen > stale {
                Some(Update::Reminder(scid, f.channel_flags))
            } else {
                None
            };
            updates.extend(update);
        }
    }
    let latest_seen = latest_seen.max(since);
    let latest_seen = latest_seen - latest_seen % opts.interval;
    sum.latest_seen = latest_seen;

    // node ids: the ends of the announcements, most used first (an index
    // below 253 is one BigSize byte, above it three: hubs get the short
    // ones), then (version 2) the other nodes with details
    let mut uses: HashMap<NodeId, u32> = HashMap::new();
    for (_, c, _) in &announcements {
        *uses.entry(c.node_id_1).or_default() += 1;
        *uses.entry(c.node_id_2).or_default() += 1;
    }
    let mut node_ids: Vec<NodeId> = uses.keys().copied().collect();
    node_ids.sort_unstable_by_key(|id| (Reverse(uses[id]), *id));
    let mut index: HashMap<NodeId, usize> = node_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, i))
        .collect();
    let mut node_index = |id: NodeId, node_ids: &mut Vec<NodeId>| -> usize {
        *index.entry(id).or_insert_with(|| {
            node_ids.push(id);
            node_ids.len() - 1
        })
    };
    let mut body = Vec::new();
    body.extend_from_slice(&(announcements.len() as u32).to_be_bytes());
    let mut previous = 0u64;
    for (scid, c, ann) in &announcements {
        let features = wire::channel_features(&ann.msg).unwrap_or(&[]);
        body.extend_from_slice(&(features.len() as u16).to_be_bytes());
        body.extend_from_slice(features);
        write_bigsize(&mut body, scid - previous);
        previous = *scid;
        let i1 = node_index(c.node_id_1, &mut node_ids);
        let i2 = node_index(c.node_id_2, &mut node_ids);
        write_bigsize(&mut body, i1 as u64);
        match c.capacity_sat.filter(|_| opts.version >= 2) {
            // version 2: bit 63 of the second index says extra data follows,
            // a u16-length-prefixed BigSize funding amount in satoshi
            Some(sat) => {
                write_bigsize(&mut body, i2 as u64 | 1 << 63);
                let mut extra = Vec::with_capacity(9);
                write_bigsize(&mut extra, sat);
                body.extend_from_slice(&(extra.len() as u16).to_be_bytes());
                body.extend_from_slice(&extra);
            }
            None => write_bigsize(&mut body, i2 as u64),
        }
    }
    sum.channel_announcements = announcements.len() as u32;

    body.extend_from_slice(&(updates.len() as u32).to_be_bytes());
    let full = || {
        updates.iter().filter_map(|u| match u {
            Update::Full(f) => Some(f),
            _ => None,
        })
    };
    let defaults = UpdateFields {
        cltv_expiry_delta: most_common(full().map(|f| f.cltv_expiry_delta)),
        htlc_minimum_msat: most_common(full().map(|f| f.htlc_minimum_msat)),
        fee_base_msat: most_common(full().map(|f| f.fee_base_msat)),
        fee_proportional_millionths: most_common(full().map(|f| f.fee_proportional_millionths)),
        htlc_maximum_msat: most_common(full().map(|f| f.htlc_maximum_msat)),
        ..UpdateFields::default()
    };
    if !updates.is_empty() {
        write_fields(&mut body, &defaults, ALL_FIELDS);
    }
    let mut previous = 0u64;
    for u in &updates {
        write_bigsize(&mut body, u.short_channel_id() - previous);
        previous = u.short_channel_id();
        match u {
            Update::Full(f) => {
                let mask = changed(&defaults, f);
                body.push(f.channel_flags & STANDARD_CHANNEL_FLAGS | mask);
                write_fields(&mut body, f, mask);
                sum.updates_full += 1;
            }
            Update::Incremental(f, mask) => {
                body.push(f.channel_flags & STANDARD_CHANNEL_FLAGS | INCREMENTAL | mask);
                write_fields(&mut body, f, *mask);
                sum.updates_incremental += 1;
            }
            Update::Reminder(_, flags) => {
                body.push(flags & STANDARD_CHANNEL_FLAGS | INCREMENTAL);
                sum.reminders += 1;
            }
        }
    }

    let mut out = Vec::with_capacity(body.len() + node_ids.len() * 34 + 64);
    out.extend_from_slice(&GOSSIP_PREFIX);
    out.push(opts.version);
    out.extend_from_slice(&opts.chain_hash);
    out.extend_from_slice(&latest_seen.to_be_bytes());
    let mut details: BTreeMap<NodeId, wire::NodeFields<'_>> = BTreeMap::new();
    if opts.version >= 2 {
        for (id, n) in graph.nodes() {
            let Some(a) = n.announcement.as_ref() else {
                continue;
            };
            if n.visible_channels == 0 || (since > 0 && a.seen < since) {
                continue;
            }
            if let Ok(f) = wire::node_fields(&a.msg) {
                details.insert(*id, f);
            }
        }
        for id in details.keys() {
            node_index(*id, &mut node_ids);
        }
        let mut h: HashMap<&[u8], usize> = HashMap::new();
        for f in details.values() {
            *h.entry(f.features).or_default() += 1;
        }
        let mut common: Vec<(&[u8], usize)> = h.into_iter().filter(|&(_, n)| n > 1).collect();
        common.sort_by_key(|&(f, n)| (Reverse(n), f));
        common.truncate(NODE_DEFAULT_FEATURE_COUNT);
        out.push(common.len() as u8);
        for (f, _) in &common {
            out.extend_from_slice(&(f.len() as u16).to_be_bytes());
            out.extend_from_slice(f);
        }
        sum.default_node_features = common.len() as u32;
        out.extend_from_slice(&(node_ids.len() as u32).to_be_bytes());
        for id in &node_ids {
            let start = out.len();
            out.extend_from_slice(id);
            let Some(f) = details.get(id) else {
                continue;
            };
            sum.node_details += 1;
            // addresses: count, then each descriptor prefixed by its length
            let mut flag = 1 << 2;
            let descriptors: Vec<&[u8]> = wire::address_descriptors(f.addresses)
                .into_iter()
                .filter(|d| d.len() <= usize::from(u8::MAX))
                .take(usize::from(u8::MAX))
                .collect();
            out.push(descriptors.len() as u8);
            for d in descriptors {
                out.push(d.len() as u8);
                out.extend_from_slice(d);
            }
            match common.iter().position(|(c, _)| *c == f.features) {
                Some(i) => flag |= ((i + 1) as u8) << 3,
                None => {
                    flag |= 7 << 3;
                    out.extend_from_slice(&(f.features.len() as u16).to_be_bytes());
                    out.extend_from_slice(f.features);
                }
            }
            out[start] |= flag;
        }
    } else {
        out.extend_from_slice(&(node_ids.len() as u32).to_be_bytes());
        for id in &node_ids {
            out.extend_from_slice(id);
        }
    }
    sum.node_ids = node_ids.len() as u32;
    out.extend_from_slice(&body);
    Ok((out, sum))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MAINNET_CHAIN_HASH;

    fn opts(since: u32, version: u8) -> Options {
        Options {
            since,
            version,
            chain_hash: MAINNET_CHAIN_HASH,
            interval: SNAPSHOT_INTERVAL_S,
        }
    }

    #[test]
    fn bigsize_is_bolt1() {
        for (v, want) in [
            (0u64, vec![0u8]),
            (0xfc, vec![0xfc]),
            (0xfd, vec![0xfd, 0, 0xfd]),
            (0xffff, vec![0xfd, 0xff, 0xff]),
            (0x1_0000, vec![0xfe, 0, 1, 0, 0]),
            (0xffff_ffff, vec![0xfe, 0xff, 0xff, 0xff, 0xff]),
            (0x1_0000_0000, vec![0xff, 0, 0, 0, 1, 0, 0, 0, 0]),
        ] {
            let mut out = Vec::new();
            write_bigsize(&mut out, v);
            assert_eq!(out, want, "{v:#x}");
        }
    }

    #[test]
    fn most_common_breaks_ties_towards_the_smaller_value() {
        assert_eq!(most_common([5u32, 3, 5, 3, 9].into_iter()), 3);
        assert_eq!(most_common([5u32, 3, 5].into_iter()), 5);
        assert_eq!(most_common(std::iter::empty::<u64>()), 0);
    }

    #[test]
    fn only_versions_1_and_2() {
        let g = Graph::default();
        assert_eq!(
            snapshot(&g, &opts(0, 3)).unwrap_err(),
            RgsError::UnknownVersion(3)
        );
        let mut o = opts(0, 1);
        o.interval = 0;
        assert_eq!(snapshot(&g, &o).unwrap_err(), RgsError::ZeroInterval);
    }

    #[test]
    fn an_empty_graph_gives_an_empty_snapshot_at_since() {
        let g = Graph::default();
        let (v1, s) = snapshot(&g, &opts(10_800, 1)).unwrap();
        let mut want = b"LDK\x01".to_vec();
        want.extend_from_slice(&MAINNET_CHAIN_HASH);
        want.extend_from_slice(&10_800u32.to_be_bytes());
        want.extend_from_slice(&[0; 8]); // no node ids, no announcements
        want.extend_from_slice(&[0; 4]); // no updates, hence no defaults
        assert_eq!(v1, want);
        assert_eq!(s.latest_seen, 10_800);
        let (v2, _) = snapshot(&g, &opts(0, 2)).unwrap();
        assert_eq!(v2.len(), 4 + 32 + 4 + 1 + 12);
    }

    #[test]
    fn changed_fields_are_flagged_one_by_one() {
        let a = UpdateFields::default();
        let mut b = a;
        b.fee_base_msat = 7;
        assert_eq!(changed(&a, &b), FEE_BASE_MSAT);
        b.htlc_maximum_msat = 1;
        b.cltv_expiry_delta = 2;
        assert_eq!(
            changed(&a, &b),
            FEE_BASE_MSAT | HTLC_MAXIMUM_MSAT | CLTV_EXPIRY_DELTA
        );
        let mut out = Vec::new();
        write_fields(&mut out, &b, changed(&a, &b));
        assert_eq!(out, [0, 2, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1]);
    }
}
