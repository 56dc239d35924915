//! The graph as columns: equal-length vectors per BOLT #7 field, built in
//! one pass over the graph (no per-row object), for numpy/pandas users
//! (`Graph.to_numpy()` in Python).

use std::collections::HashMap;

use crate::graph::Graph;
use crate::wire::{self, NodeId};

/// Visible channels, in `short_channel_id` order.
#[derive(Debug, Default)]
pub struct Channels {
    /// `short_channel_id`.
    pub short_channel_id: Vec<u64>,
    /// Row in [`Nodes`] of `node_id_1`.
    pub node_1: Vec<u32>,
    /// Row in [`Nodes`] of `node_id_2`.
    pub node_2: Vec<u32>,
    /// Funding amount in satoshi; 0 where unknown (gossip does not carry it;
    /// Core Lightning stores do).
    pub capacity_sat: Vec<u64>,
    /// The announcement's `features` as an integer (bit n = feature bit n;
    /// bits above 63 dropped).
    pub features: Vec<u64>,
    /// When the announcement was accepted (seconds since the epoch).
    pub seen: Vec<u32>,
}

/// One row per channel direction with an update, in (`short_channel_id`,
/// direction) order.
#[derive(Debug, Default)]
pub struct Updates {
    /// `short_channel_id`.
    pub short_channel_id: Vec<u64>,
    /// Row in [`Channels`].
    pub channel: Vec<u32>,
    /// Bit 0 of `channel_flags` (0: from `node_id_1`).
    pub direction: Vec<u8>,
    /// `timestamp`, seconds since the epoch.
    pub timestamp: Vec<u32>,
    /// Bit 1 of `channel_flags`.
    pub disabled: Vec<bool>,
    /// `message_flags`.
    pub message_flags: Vec<u8>,
    /// `channel_flags`.
    pub channel_flags: Vec<u8>,
    /// `cltv_expiry_delta`, blocks.
    pub cltv_expiry_delta: Vec<u16>,
    /// `htlc_minimum_msat`, millisatoshi.
    pub htlc_minimum_msat: Vec<u64>,
    /// `htlc_maximum_msat`, millisatoshi (0 when absent).
    pub htlc_maximum_msat: Vec<u64>,
    /// `fee_base_msat`, millisatoshi.
    pub fee_base_msat: Vec<u32>,
    /// `fee_proportional_millionths`.
    pub fee_proportional_millionths: Vec<u32>,
    /// When it was accepted (seconds since the epoch).
    pub seen: Vec<u32>,
}

/// Visible nodes, in `node_id` order.
#[derive(Debug, Default)]
pub struct Nodes {
    /// `node_id`, 33 bytes each, concatenated.
    pub node_id: Vec<u8>,
    /// `timestamp` of its `node_announcement`; 0 when it has none.
    pub timestamp: Vec<u32>,
    /// `alias`, 32 bytes each (NUL-padded), concatenated; zeros without an announcement.
    pub alias: Vec<u8>,
    /// `rgb_color` as 0xRRGGBB.
    pub rgb_color: Vec<u32>,
    /// Number of BOLT #7 address descriptors announced.
    pub addresses: Vec<u16>,
    /// Number of visible channels.
    pub channels: Vec<u32>,
}

/// The three tables.
#[derive(Debug, Default)]
pub struct Columns {
    /// Channels.
    pub channels: Channels,
    /// Updates.
    pub updates: Updates,
    /// Nodes.
    pub nodes: Nodes,
}

/// The low 64 feature bits of a big-endian BOLT #9 feature field.
fn feature_bits(f: &[u8]) -> u64 {
    f.iter()
        .rev()
        .take(8)
        .enumerate()
        .fold(0u64, |acc, (i, b)| acc | u64::from(*b) << (8 * i))
}

/// Build the columns of `graph` (committed messages only).
pub fn build(graph: &Graph) -> Columns {
    let mut out = Columns::default();
    let mut row: HashMap<NodeId, u32> = HashMap::new();
    for (i, (id, n)) in graph.nodes().enumerate() {
        row.insert(*id, i as u32);
        let t = &mut out.nodes;
        t.node_id.extend_from_slice(id);
        t.channels.push(n.visible_channels);
        match n
            .announcement
            .as_ref()
            .and_then(|a| wire::node_fields(&a.msg).ok())
        {
            Some(f) => {
                t.timestamp.push(f.timestamp);
                t.alias.extend_from_slice(&f.alias);
                let [r, g, b] = f.rgb_color;
                t.rgb_color.push(u32::from_be_bytes([0, r, g, b]));
                t.addresses
                    .push(wire::address_descriptors(f.addresses).len() as u16);
            }
            None => {
                t.timestamp.push(0);
                t.alias.extend_from_slice(&[0; 32]);
                t.rgb_color.push(0);
                t.addresses.push(0);
            }
        }
    }
    for (ci, (scid, c)) in graph.channels().enumerate() {
        let t = &mut out.channels;
        t.short_channel_id.push(scid);
        t.node_1
            .push(row.get(&c.node_id_1).copied().unwrap_or(u32::MAX));
        t.node_2
            .push(row.get(&c.node_id_2).copied().unwrap_or(u32::MAX));
        t.capacity_sat.push(c.capacity_sat.unwrap_or(0));
        let ann = c.announcement.as_ref();
        t.features.push(
            ann.and_then(|a| wire::channel_features(&a.msg).ok())
                .map_or(0, feature_bits),
        );
        t.seen.push(ann.map_or(0, |a| a.seen));
        for u in c.updates.iter().flatten() {
            let Ok(f) = wire::update_fields(&u.msg) else {
                continue;
            };
            let t = &mut out.updates;
            t.short_channel_id.push(scid);
            t.channel.push(ci as u32);
            t.direction.push(f.channel_flags & 1);
            t.timestamp.push(f.timestamp);
            t.disabled.push(f.channel_flags & 2 != 0);
            t.message_flags.push(f.message_flags);
            t.channel_flags.push(f.channel_flags);
            t.cltv_expiry_delta.push(f.cltv_expiry_delta);
            t.htlc_minimum_msat.push(f.htlc_minimum_msat);
            t.htlc_maximum_msat.push(f.htlc_maximum_msat);
            t.fee_base_msat.push(f.fee_base_msat);
            t.fee_proportional_millionths
                .push(f.fee_proportional_millionths);
            t.seen.push(u.seen);
        }
    }
    out
}
