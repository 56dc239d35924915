//! The one gossip graph of a node: every accepted message's bytes, per
//! channel (announcement, newest `channel_update` per direction) and per
//! node (newest `node_announcement`), with the decision state the pipeline
//! checks before verifying, and the BOLT #7 queries a node answers.
//!
//! Rules (BOLT #7 §"Requirements" of each message, DESIGN.md "Semantics"):
//! the first valid `channel_announcement` for a `short_channel_id` wins;
//! `channel_update` and `node_announcement` must be strictly newer than the
//! stored timestamp of their `(short_channel_id, direction)` or `node_id`.
//! Timestamps are stored only after a signature verified, so a forged "newer"
//! message can never suppress a real one.
//!
//! Two layers, so a reader never sees a half-applied batch: the *decision
//! state* ([`Graph::add_channel`], [`Graph::set_update_timestamp`], ...)
//! changes while a batch is being decided; the *messages* change only in
//! [`Graph::commit`], which the pipeline calls for the whole batch at once
//! at its end. The view methods ([`Graph::channel`], [`Graph::gossip_after`],
//! ...) show committed messages only.
//!
//! Queries answer in pages through cursors (a `short_channel_id`, a
//! `node_id`): a full dump is never materialized.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use crate::wire::{self, Gossip, NodeId, UpdateFields};

/// Earlier `channel_update`s kept per channel direction (their policy and
/// when they were seen), so an incremental Rapid Gossip Sync snapshot can
/// send only the fields that changed since a client's last sync.
pub const PRIORS_PER_DIRECTION: usize = 4;

/// One accepted message as the graph keeps it.
#[derive(Clone, Debug)]
pub struct Stored {
    /// The raw message, starting with its 2-byte type (shared, so a
    /// compaction can take the bytes out of the pipeline's lock cheaply).
    pub msg: Arc<[u8]>,
    /// `timestamp` of an update or node announcement; for a channel
    /// announcement, the time (seconds since the epoch) it was accepted.
    pub timestamp: u32,
    /// When it was accepted ("seen", seconds since the epoch; its store
    /// record's timestamp): the clock under the live policy, the message's
    /// own `timestamp` for updates and node announcements taken under the
    /// archive policy (so an archive gives the same snapshots wherever and
    /// whenever it is ingested).
    pub seen: u32,
    /// Offset of its record in the store, when there is one.
    pub offset: Option<u64>,
}

/// A channel whose announcement was accepted.
#[derive(Clone, Debug)]
pub struct Channel {
    /// `node_id_1` of its announcement.
    pub node_id_1: NodeId,
    /// `node_id_2` of its announcement.
    pub node_id_2: NodeId,
    /// Newest verified `channel_update` timestamp per direction (0: `node_id_1`).
    pub update_timestamp: [Option<u32>; 2],
    /// The `channel_announcement`; `None` while the batch that accepted it
    /// is still being decided (the channel is not visible yet).
    pub announcement: Option<Stored>,
    /// Newest `channel_update` per direction.
    pub updates: [Option<Stored>; 2],
    /// Funding amount in satoshi, when known: Core Lightning's stores carry
    /// it (a `channel_amount` record, type 4101, after the announcement);
    /// gossip does not.
    pub capacity_sat: Option<u64>,
    /// Up to [`PRIORS_PER_DIRECTION`] updates each newest one superseded,
    /// oldest first.
    pub priors: [Vec<Prior>; 2],
}

/// A superseded `channel_update`: its policy and when it was seen.
#[derive(Clone, Copy, Debug)]
pub struct Prior {
    /// When it was accepted (see [`Stored::seen`]).
    pub seen: u32,
    /// Its fields.
    pub fields: UpdateFields,
}

/// A node named by an accepted channel or announcement.
#[derive(Clone, Debug, Default)]
pub struct Node {
    /// `short_channel_id`s of the accepted channels that name this node.
    pub channels: Vec<u64>,
    /// How many of them are visible (announcement committed).
    pub visible_channels: u32,
    /// Newest verified `node_announcement` timestamp.
    pub timestamp: Option<u32>,
    /// The newest `node_announcement`.
    pub announcement: Option<Stored>,
}

/// Where a paged [`Graph::gossip_after`] dump stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cursor {
    /// Nothing sent yet.
    Start,
    /// Channels up to and including this `short_channel_id` sent.
    AfterChannel(u64),
    /// Every channel sent; node announcements after this `node_id` (`None`: all) to go.
    Nodes(Option<NodeId>),
}

impl Cursor {
    /// The cursor as an opaque token for a caller to hand back: empty at
    /// the start, the 8-byte big-endian `short_channel_id` after a channel,
    /// `N` (and the 33-byte `node_id` after a node) in the nodes.
    pub fn to_token(self) -> Vec<u8> {
        match self {
            Cursor::Start => Vec::new(),
            Cursor::AfterChannel(s) => s.to_be_bytes().to_vec(),
            Cursor::Nodes(None) => vec![b'N'],
            Cursor::Nodes(Some(id)) => {
                let mut v = vec![b'N'];
                v.extend_from_slice(&id);
                v
            }
        }
    }

    /// The cursor of a token from [`Cursor::to_token`]; `None` for
    /// anything else.
    pub fn from_token(token: &[u8]) -> Option<Cursor> {
        match token {
            [] => Some(Cursor::Start),
            [b'N'] => Some(Cursor::Nodes(None)),
            [b'N', rest @ ..] => rest.try_into().ok().map(|id| Cursor::Nodes(Some(id))),
            _ => <[u8; 8]>::try_from(token)
                .ok()
                .map(|a| Cursor::AfterChannel(u64::from_be_bytes(a))),
        }
    }
}

/// What [`Graph::prune`] removed.
#[derive(Debug, Default)]
pub struct Pruned {
    /// Channels removed.
    pub channels: usize,
    /// Node announcements removed (nodes left without a channel).
    pub nodes: usize,
    /// The removed messages (their store records must be marked deleted and
    /// their hashes forgotten).
    pub removed: Vec<Stored>,
}

/// Channels by `short_channel_id`, nodes by `node_id`, both ordered.
#[derive(Default)]
pub struct Graph {
    channels: BTreeMap<u64, Channel>,
    nodes: BTreeMap<NodeId, Node>,
    visible_channels: usize,
    visible_nodes: usize,
}

/// Insert `p` in seen order, keeping the newest [`PRIORS_PER_DIRECTION`].
fn push_prior(priors: &mut Vec<Prior>, p: Prior) {
    let at =
        priors.partition_point(|q| (q.seen, q.fields.timestamp) <= (p.seen, p.fields.timestamp));
    priors.insert(at, p);
    if priors.len() > PRIORS_PER_DIRECTION {
        priors.remove(0);
    }
}

impl Node {
    /// Whether the view shows this node: it has a visible channel or an announcement.
    pub fn visible(&self) -> bool {
        self.announcement.is_some() || self.visible_channels > 0
    }
}

impl Graph {
    // -- decision state -------------------------------------------------------

    /// Whether `short_channel_id` has an accepted announcement.
    pub fn has_channel(&self, short_channel_id: u64) -> bool {
        self.channels.contains_key(&short_channel_id)
    }

    /// Whether a `channel_update` with `timestamp` would be stale for `(scid, direction)`.
    pub fn update_is_stale(&self, short_channel_id: u64, direction: usize, timestamp: u32) -> bool {
        self.channels
            .get(&short_channel_id)
            .and_then(|c| c.update_timestamp[direction])
            .is_some_and(|t| timestamp <= t)
    }

    /// Whether a `node_announcement` with `timestamp` would be stale for `node_id`.
    pub fn node_is_stale(&self, node_id: &NodeId, timestamp: u32) -> bool {
        self.nodes
            .get(node_id)
            .and_then(|n| n.timestamp)
            .is_some_and(|t| timestamp <= t)
    }

    /// Whether `node_id` has at least one accepted channel.
    pub fn node_has_channel(&self, node_id: &NodeId) -> bool {
        self.nodes
            .get(node_id)
            .is_some_and(|n| !n.channels.is_empty())
    }

    /// Record an accepted channel (visible once [`Graph::commit`] stores its announcement).
    pub fn add_channel(&mut self, short_channel_id: u64, node_id_1: NodeId, node_id_2: NodeId) {
        self.channels.insert(
            short_channel_id,
            Channel {
                node_id_1,
                node_id_2,
                update_timestamp: [None, None],
                announcement: None,
                updates: [None, None],
                capacity_sat: None,
                priors: [Vec::new(), Vec::new()],
            },
        );
        for n in [node_id_1, node_id_2] {
            self.nodes
                .entry(n)
                .or_default()
                .channels
                .push(short_channel_id);
        }
    }

    /// Signing key of direction `direction` of a known channel.
    pub fn update_key(&self, short_channel_id: u64, direction: usize) -> Option<NodeId> {
        self.channels.get(&short_channel_id).map(|c| {
            if direction == 0 {
                c.node_id_1
            } else {
                c.node_id_2
            }
        })
    }

    /// Store a verified `channel_update` timestamp.
    pub fn set_update_timestamp(&mut self, short_channel_id: u64, direction: usize, ts: u32) {
        if let Some(c) = self.channels.get_mut(&short_channel_id) {
            c.update_timestamp[direction] = Some(ts);
        }
    }

    /// Store a verified `node_announcement` timestamp.
    pub fn set_node_timestamp(&mut self, node_id: NodeId, ts: u32) {
        self.nodes.entry(node_id).or_default().timestamp = Some(ts);
    }

    // -- messages -------------------------------------------------------------

    /// Keep the bytes of an accepted message (already decided: its channel
    /// added, its timestamp set), seen at `seen` (seconds since the epoch,
    /// see [`Stored::seen`]; a channel announcement's `timestamp` is its
    /// `seen` too). Returns the message it supersedes, if any (an older
    /// update or node announcement), whose store record must be marked
    /// deleted; a superseded update's policy is kept as a [`Prior`].
    /// `record` is called with the record timestamp (`seen`) once the
    /// message is kept, and returns its store offset.
    pub fn commit(
        &mut self,
        msg: &[u8],
        g: &Gossip,
        seen: u32,
        record: impl FnOnce(u32) -> Option<u64>,
    ) -> Option<Stored> {
        match g {
            Gossip::ChannelAnnouncement {
                short_channel_id, ..
            } => {
                let c = self.channels.get_mut(short_channel_id)?;
                if c.announcement.is_some() {
                    return None;
                }
                c.announcement = Some(Stored {
                    msg: msg.into(),
                    timestamp: seen,
                    seen,
                    offset: record(seen),
                });
                self.visible_channels += 1;
                let (a, b) = (c.node_id_1, c.node_id_2);
                for id in [a, b] {
                    if let Some(n) = self.nodes.get_mut(&id) {
                        let was = n.visible();
                        n.visible_channels += 1;
                        if !was {
                            self.visible_nodes += 1;
                        }
                    }
                }
                None
            }
            Gossip::ChannelUpdate {
                short_channel_id,
                timestamp,
                channel_flags,
                ..
            } => {
                let c = self.channels.get_mut(short_channel_id)?;
                let dir = (*channel_flags & 1) as usize;
                let old = c.updates[dir].replace(Stored {
                    msg: msg.into(),
                    timestamp: *timestamp,
                    seen,
                    offset: record(seen),
                });
                if let Some(o) = &old {
                    if let Ok(fields) = wire::update_fields(&o.msg) {
                        push_prior(
                            &mut c.priors[dir],
                            Prior {
                                seen: o.seen,
                                fields,
                            },
                        );
                    }
                }
                old
            }
            Gossip::NodeAnnouncement { node_id, timestamp } => {
                let n = self.nodes.entry(*node_id).or_default();
                let was = n.visible();
                let old = n.announcement.replace(Stored {
                    msg: msg.into(),
                    timestamp: *timestamp,
                    seen,
                    offset: record(seen),
                });
                if !was {
                    self.visible_nodes += 1;
                }
                old
            }
        }
    }

    /// Set the funding amount (satoshi) of a known channel.
    pub fn set_capacity(&mut self, short_channel_id: u64, sat: u64) {
        if let Some(c) = self.channels.get_mut(&short_channel_id) {
            c.capacity_sat = Some(sat);
        }
    }

    /// Keep a superseded `channel_update` found in the store (a record
    /// marked deleted) as a [`Prior`] of its direction, if it is older than
    /// the direction's newest update.
    pub fn add_prior(&mut self, prior: Prior) {
        let dir = (prior.fields.channel_flags & 1) as usize;
        let Some(c) = self.channels.get_mut(&prior.fields.short_channel_id) else {
            return;
        };
        let newest = c.updates[dir].as_ref().map(|u| u.timestamp);
        if newest.is_some_and(|t| prior.fields.timestamp < t) {
            push_prior(&mut c.priors[dir], prior);
        }
    }

    /// Every kept message, in the order of [`Graph::for_each_stored_mut`],
    /// with a channel announcement's funding amount when known.
    pub fn for_each_stored(&self, mut f: impl FnMut(&Stored, Option<u64>)) {
        for c in self.channels.values() {
            if let Some(a) = c.announcement.as_ref() {
                f(a, c.capacity_sat);
            }
            for u in c.updates.iter().flatten() {
                f(u, None);
            }
        }
        for n in self.nodes.values() {
            if let Some(a) = n.announcement.as_ref() {
                f(a, None);
            }
        }
    }

    /// Every kept message, mutably (to move store offsets after compaction),
    /// channels in `short_channel_id` order (announcement, then updates),
    /// then node announcements in `node_id` order.
    pub fn for_each_stored_mut(&mut self, mut f: impl FnMut(&mut Stored)) {
        for c in self.channels.values_mut() {
            if let Some(a) = c.announcement.as_mut() {
                f(a);
            }
            for u in c.updates.iter_mut().flatten() {
                f(u);
            }
        }
        for n in self.nodes.values_mut() {
            if let Some(a) = n.announcement.as_mut() {
                f(a);
            }
        }
    }

    /// Remove channels whose newest updates in both directions are older
    /// than `horizon` (seconds since the epoch; BOLT #7: two weeks before
    /// now). A direction without an update counts as its announcement's
    /// acceptance time. Nodes left without a channel lose their announcement.
    pub fn prune(&mut self, horizon: u32) -> Pruned {
        let mut out = Pruned::default();
        let dead: Vec<u64> = self
            .channels
            .iter()
            .filter_map(|(scid, c)| {
                let ann = c.announcement.as_ref()?;
                let newest = c
                    .updates
                    .iter()
                    .map(|u| u.as_ref().map_or(ann.timestamp, |u| u.timestamp))
                    .max()
                    .unwrap_or(ann.timestamp);
                (newest < horizon).then_some(*scid)
            })
            .collect();
        for scid in dead {
            let Some(c) = self.channels.remove(&scid) else {
                continue;
            };
            out.channels += 1;
            self.visible_channels -= 1;
            out.removed.extend(c.announcement);
            out.removed.extend(c.updates.into_iter().flatten());
            for id in [c.node_id_1, c.node_id_2] {
                let Some(n) = self.nodes.get_mut(&id) else {
                    continue;
                };
                n.channels.retain(|s| *s != scid);
                n.visible_channels = n.visible_channels.saturating_sub(1);
                if n.channels.is_empty() {
                    let n = self.nodes.remove(&id).unwrap_or_default();
                    self.visible_nodes -= 1;
                    if let Some(a) = n.announcement {
                        out.nodes += 1;
                        out.removed.push(a);
                    }
                } else if !n.visible() {
                    self.visible_nodes -= 1;
                }
            }
        }
        out
    }

    // -- the view: committed messages only ---------------------------------------

    /// Visible channels (announcement committed), in `short_channel_id` order.
    pub fn channels(&self) -> impl Iterator<Item = (u64, &Channel)> {
        self.channels
            .iter()
            .filter(|(_, c)| c.announcement.is_some())
            .map(|(s, c)| (*s, c))
    }

    /// Visible nodes (a visible channel or an announcement), in `node_id` order.
    pub fn nodes(&self) -> impl Iterator<Item = (&NodeId, &Node)> {
        self.nodes.iter().filter(|(_, n)| n.visible())
    }

    /// Visible channels (announcement committed).
    pub fn channel_count(&self) -> usize {
        self.visible_channels
    }

    /// Visible nodes (with a visible channel or an announcement).
    pub fn node_count(&self) -> usize {
        self.visible_nodes
    }

    /// A visible channel.
    pub fn channel(&self, short_channel_id: u64) -> Option<&Channel> {
        self.channels
            .get(&short_channel_id)
            .filter(|c| c.announcement.is_some())
    }

    /// A visible node.
    pub fn node(&self, node_id: &NodeId) -> Option<&Node> {
        self.nodes.get(node_id).filter(|n| n.visible())
    }

    /// Visible channels of `node_id`, ascending.
    pub fn channels_of(&self, node_id: &NodeId) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .nodes
            .get(node_id)
            .map(|n| {
                n.channels
                    .iter()
                    .copied()
                    .filter(|s| self.channel(*s).is_some())
                    .collect()
            })
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// Up to `limit` visible `short_channel_id`s after `after` (from the start: `None`), ascending.
    pub fn short_channel_ids_after(&self, after: Option<u64>, limit: usize) -> Vec<u64> {
        let lo = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.channels
            .range((lo, Bound::Unbounded))
            .filter(|(_, c)| c.announcement.is_some())
            .map(|(s, _)| *s)
            .take(limit)
            .collect()
    }

    /// Up to `limit` visible `node_id`s after `after`, ascending.
    pub fn node_ids_after(&self, after: Option<&NodeId>, limit: usize) -> Vec<NodeId> {
        let lo: Bound<&NodeId> = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.nodes
            .range::<NodeId, _>((lo, Bound::Unbounded))
            .filter(|(_, n)| n.visible())
            .map(|(id, _)| *id)
            .take(limit)
            .collect()
    }

    /// BOLT #7 `query_channel_range`: up to `limit` visible
    /// `short_channel_id`s funded in blocks `[first_blocknum, first_blocknum
    /// + number_of_blocks)`, after `after`, ascending.
    pub fn short_channel_ids_in_blocks(
        &self,
        first_blocknum: u32,
        number_of_blocks: u32,
        after: Option<u64>,
        limit: usize,
    ) -> Vec<u64> {
        // block numbers are 24 bits in a short_channel_id: a range past
        // block 2^24 - 1 runs to the end
        let start_block = u64::from(first_blocknum);
        let end_block = start_block + u64::from(number_of_blocks);
        if number_of_blocks == 0 || start_block >= 1 << 24 {
            return Vec::new();
        }
        let start = start_block << 40;
        let hi = if end_block >= 1 << 24 {
            Bound::Unbounded
        } else {
            Bound::Excluded(end_block << 40)
        };
        let lo = match after {
            Some(a) if a >= start => Bound::Excluded(a),
            _ => Bound::Included(start),
        };
        self.channels
            .range((lo, hi))
            .filter(|(_, c)| c.announcement.is_some())
            .map(|(s, _)| *s)
            .take(limit)
            .collect()
    }

    fn channel_messages<'a>(&'a self, c: &'a Channel, lo: u64, hi: u64, out: &mut Vec<&'a [u8]>) {
        let Some(ann) = c.announcement.as_ref() else {
            return;
        };
        let in_range = |u: &&Stored| (lo..hi).contains(&u64::from(u.timestamp));
        let updates: Vec<&Stored> = c.updates.iter().flatten().filter(in_range).collect();
        // BOLT #7: an announcement goes with its updates; one without any
        // update goes with a dump of everything
        if !updates.is_empty() || (lo == 0 && c.updates.iter().all(Option::is_none)) {
            out.push(&ann.msg);
            out.extend(updates.into_iter().map(|u| &*u.msg));
        }
    }

    /// BOLT #7 `gossip_timestamp_filter`: the next page of messages with a
    /// `timestamp` in `[first_timestamp, first_timestamp + timestamp_range)`
    /// (seconds) after `cursor`: channels in `short_channel_id` order (each
    /// announcement before its updates), then node announcements (so a node
    /// comes after the channels that name it). A page holds about `max`
    /// messages (a channel is never split); the returned cursor is `None`
    /// at the end.
    pub fn gossip_after(
        &self,
        cursor: Cursor,
        first_timestamp: u32,
        timestamp_range: u32,
        max: usize,
    ) -> (Vec<&[u8]>, Option<Cursor>) {
        let lo = u64::from(first_timestamp);
        let hi = lo + u64::from(timestamp_range);
        let mut out = Vec::new();
        let max = max.max(1);
        let node_from = match cursor {
            Cursor::Start | Cursor::AfterChannel(_) => {
                let from = match cursor {
                    Cursor::AfterChannel(s) => Bound::Excluded(s),
                    _ => Bound::Unbounded,
                };
                for (scid, c) in self.channels.range((from, Bound::Unbounded)) {
                    self.channel_messages(c, lo, hi, &mut out);
                    if out.len() >= max {
                        return (out, Some(Cursor::AfterChannel(*scid)));
                    }
                }
                None
            }
            Cursor::Nodes(after) => after,
        };
        let from = node_from.map_or(Bound::Unbounded, Bound::Excluded);
        for (id, n) in self.nodes.range((from, Bound::Unbounded)) {
            if let Some(a) = n.announcement.as_ref() {
                if (lo..hi).contains(&u64::from(a.timestamp)) {
                    out.push(&a.msg);
                    if out.len() >= max {
                        return (out, Some(Cursor::Nodes(Some(*id))));
                    }
                }
            }
        }
        (out, None)
    }

    /// BOLT #7 `query_short_channel_ids`: announcement and updates of each
    /// visible channel of `short_channel_ids`, each followed by the
    /// announcements of its nodes not sent earlier in this call.
    pub fn messages_for(&self, short_channel_ids: &[u64]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut sent: HashSet<NodeId> = HashSet::new();
        for scid in short_channel_ids {
            let Some(c) = self.channel(*scid) else {
                continue;
            };
            self.channel_messages(c, 0, 1 << 33, &mut out);
            for id in [c.node_id_1, c.node_id_2] {
                if sent.contains(&id) {
                    continue;
                }
                if let Some(a) = self.nodes.get(&id).and_then(|n| n.announcement.as_ref()) {
                    out.push(&a.msg);
                    sent.insert(id);
                }
            }
        }
        out
    }

    /// Newest `timestamp` of any kept update or node announcement (seconds
    /// since the epoch): where a restarted node's `gossip_timestamp_filter` starts.
    pub fn newest_timestamp(&self) -> Option<u32> {
        let ch = self
            .channels
            .values()
            .flat_map(|c| c.updates.iter().flatten().map(|u| u.timestamp));
        let nd = self
            .nodes
            .values()
            .filter_map(|n| n.announcement.as_ref().map(|a| a.timestamp));
        ch.chain(nd).max()
    }

    /// Bytes of every kept message (for memory reports).
    pub fn message_bytes(&self) -> usize {
        let mut n = 0;
        for c in self.channels.values() {
            n += c.announcement.as_ref().map_or(0, |a| a.msg.len());
            n += c
                .updates
                .iter()
                .flatten()
                .map(|u| u.msg.len())
                .sum::<usize>();
        }
        n + self
            .nodes
            .values()
            .filter_map(|n| n.announcement.as_ref())
            .map(|a| a.msg.len())
            .sum::<usize>()
    }
}
