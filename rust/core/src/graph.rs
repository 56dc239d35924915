//! Graph state: which channels and nodes are known and the newest verified
//! timestamps.
//!
//! Rules (BOLT #7 §"Requirements" of each message, DESIGN.md "Semantics"):
//! the first valid `channel_announcement` for a `short_channel_id` wins;
//! `channel_update` and `node_announcement` must be strictly newer than the
//! stored timestamp of their `(short_channel_id, direction)` or `node_id`.
//! Timestamps are stored only after a signature verified, so a forged "newer"
//! message can never suppress a real one.

use std::collections::HashMap;

use crate::wire::NodeId;

/// A known channel.
#[derive(Clone, Debug)]
pub struct Channel {
    /// `node_id_1` of its announcement.
    pub node_id_1: NodeId,
    /// `node_id_2` of its announcement.
    pub node_id_2: NodeId,
    /// Newest verified `channel_update` timestamp per direction (0: `node_id_1`).
    pub update_timestamp: [Option<u32>; 2],
}

/// A node seen in an accepted announcement.
#[derive(Clone, Debug, Default)]
pub struct Node {
    /// Number of accepted channels that name this node.
    pub channels: u32,
    /// Newest verified `node_announcement` timestamp.
    pub timestamp: Option<u32>,
}

/// Channels by `short_channel_id`, nodes by `node_id`.
#[derive(Default)]
pub struct Graph {
    /// Accepted channels.
    pub channels: HashMap<u64, Channel>,
    /// Nodes with an accepted channel or node announcement.
    pub nodes: HashMap<NodeId, Node>,
}

impl Graph {
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
        self.nodes.get(node_id).is_some_and(|n| n.channels > 0)
    }

    /// Record an accepted channel.
    pub fn add_channel(&mut self, short_channel_id: u64, node_id_1: NodeId, node_id_2: NodeId) {
        self.channels.insert(
            short_channel_id,
            Channel {
                node_id_1,
                node_id_2,
                update_timestamp: [None, None],
            },
        );
        for n in [node_id_1, node_id_2] {
            self.nodes.entry(n).or_default().channels += 1;
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
}
