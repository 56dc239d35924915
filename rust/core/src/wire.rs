//! Zero-copy parsing of the three BOLT #7 gossip messages.
//!
//! A [`Gossip`] borrows the message bytes and records the few fixed fields
//! the pipeline needs (`chain_hash`, `short_channel_id`, keys, `timestamp`,
//! `channel_flags`) plus where the signed byte range starts. Nothing is
//! copied. Every malformed input yields a [`Malformed`] reason; no input
//! panics (all indexing goes through checked helpers).

/// BOLT #7 `channel_announcement` message type.
pub const CHANNEL_ANNOUNCEMENT: u16 = 256;
/// BOLT #7 `node_announcement` message type.
pub const NODE_ANNOUNCEMENT: u16 = 257;
/// BOLT #7 `channel_update` message type.
pub const CHANNEL_UPDATE: u16 = 258;

/// Bitcoin mainnet genesis block hash in BOLT #7 `chain_hash` byte order.
pub const MAINNET_CHAIN_HASH: [u8; 32] = [
    0x6f, 0xe2, 0x8c, 0x0a, 0xb6, 0xf1, 0xb3, 0x72, 0xc1, 0xa6, 0xa2, 0x46, 0xae, 0x63, 0xf7, 0x4f,
    0x93, 0x1e, 0x83, 0x65, 0xe1, 0x5a, 0x08, 0x9c, 0x68, 0xd6, 0x19, 0x00, 0x00, 0x00, 0x00, 0x00,
];

/// Largest Lightning message: BOLT #1 messages are at most 65535 bytes.
pub const MAX_MESSAGE_LEN: usize = 65_535;

/// Signed range start of `channel_announcement`: type (2) + four signatures (4 × 64).
pub const CHANNEL_ANNOUNCEMENT_SIGNED_FROM: usize = 258;
/// Signed range start of `node_announcement` and `channel_update`: type (2) + signature (64).
pub const SINGLE_SIGNED_FROM: usize = 66;

/// Shortest valid `channel_announcement`: 2 + 256 + 2 (`len`) + 32 + 8 + 4 × 33 = 432.
pub const CHANNEL_ANNOUNCEMENT_MIN_LEN: usize = 432;
/// Shortest valid `node_announcement`: 2 + 64 + 2 + 4 + 33 + 3 + 32 + 2.
pub const NODE_ANNOUNCEMENT_MIN_LEN: usize = 142;
/// Shortest valid `channel_update` (without `htlc_maximum_msat`, as before 2022):
/// 2 + 64 + 32 + 8 + 4 + 1 + 1 + 2 + 8 + 4 + 4.
pub const CHANNEL_UPDATE_MIN_LEN: usize = 130;

/// The kind of a gossip message, also used to index per-type counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MsgKind {
    /// `channel_announcement` (256).
    ChannelAnnouncement = 0,
    /// `node_announcement` (257).
    NodeAnnouncement = 1,
    /// `channel_update` (258).
    ChannelUpdate = 2,
    /// Anything else (too short to carry a type, or another type).
    Unknown = 3,
}

impl MsgKind {
    /// All kinds, in counter order.
    pub const ALL: [MsgKind; 4] = [
        MsgKind::ChannelAnnouncement,
        MsgKind::NodeAnnouncement,
        MsgKind::ChannelUpdate,
        MsgKind::Unknown,
    ];

    /// BOLT #7 name (`"unknown"` for anything else).
    pub fn name(self) -> &'static str {
        match self {
            MsgKind::ChannelAnnouncement => "channel_announcement",
            MsgKind::NodeAnnouncement => "node_announcement",
            MsgKind::ChannelUpdate => "channel_update",
            MsgKind::Unknown => "unknown",
        }
    }

    /// Kind of a raw message from its 2-byte big-endian type prefix.
    pub fn of(msg: &[u8]) -> MsgKind {
        match msg {
            [a, b, ..] => match u16::from_be_bytes([*a, *b]) {
                CHANNEL_ANNOUNCEMENT => MsgKind::ChannelAnnouncement,
                NODE_ANNOUNCEMENT => MsgKind::NodeAnnouncement,
                CHANNEL_UPDATE => MsgKind::ChannelUpdate,
                _ => MsgKind::Unknown,
            },
            _ => MsgKind::Unknown,
        }
    }
}

/// Why a message could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// Shorter than the fixed fields of its type (or than the 2-byte type).
    TooShort,
    /// A length field (`features` `len`, `addrlen`, optional `htlc_maximum_msat`)
    /// points past the end, or the message exceeds 65535 bytes.
    LengthOverrun,
    /// A 33-byte public key does not start with 0x02 or 0x03, or is not on the curve.
    BadPublicKey,
    /// `node_id_1` is not strictly below `node_id_2` (BOLT #7 requirement).
    NodeIdOrder,
    /// The type is not one of 256, 257, 258.
    UnknownType,
}

impl Malformed {
    /// All reasons, in counter order.
    pub const ALL: [Malformed; 5] = [
        Malformed::TooShort,
        Malformed::LengthOverrun,
        Malformed::BadPublicKey,
        Malformed::NodeIdOrder,
        Malformed::UnknownType,
    ];

    /// Stable snake_case name used in counters and in Python.
    pub fn name(self) -> &'static str {
        match self {
            Malformed::TooShort => "too_short",
            Malformed::LengthOverrun => "length_overrun",
            Malformed::BadPublicKey => "bad_public_key",
            Malformed::NodeIdOrder => "node_id_order",
            Malformed::UnknownType => "unknown_type",
        }
    }
}

/// A 33-byte compressed public key as it appears on the wire (validated lazily).
pub type NodeId = [u8; 33];

/// The fields of a parsed gossip message the pipeline needs; borrows nothing
/// beyond the keys it copies (33 bytes each), the signatures stay in the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gossip {
    /// BOLT #7 `channel_announcement`.
    ChannelAnnouncement {
        /// 32-byte `chain_hash`.
        chain_hash: [u8; 32],
        /// `short_channel_id` as a big-endian u64 (block << 40 | tx << 16 | output).
        short_channel_id: u64,
        /// `node_id_1`, strictly below `node_id_2`.
        node_id_1: NodeId,
        /// `node_id_2`.
        node_id_2: NodeId,
        /// `bitcoin_key_1`.
        bitcoin_key_1: NodeId,
        /// `bitcoin_key_2`.
        bitcoin_key_2: NodeId,
    },
    /// BOLT #7 `node_announcement`.
    NodeAnnouncement {
        /// `timestamp`, seconds since the Unix epoch.
        timestamp: u32,
        /// `node_id` of the signer.
        node_id: NodeId,
    },
    /// BOLT #7 `channel_update`.
    ChannelUpdate {
        /// 32-byte `chain_hash`.
        chain_hash: [u8; 32],
        /// `short_channel_id`.
        short_channel_id: u64,
        /// `timestamp`, seconds since the Unix epoch.
        timestamp: u32,
        /// `channel_flags`; bit 0 is the direction (0: signed by `node_id_1`).
        channel_flags: u8,
    },
}

impl Gossip {
    /// Kind of this message.
    pub fn kind(&self) -> MsgKind {
        match self {
            Gossip::ChannelAnnouncement { .. } => MsgKind::ChannelAnnouncement,
            Gossip::NodeAnnouncement { .. } => MsgKind::NodeAnnouncement,
            Gossip::ChannelUpdate { .. } => MsgKind::ChannelUpdate,
        }
    }

    /// `timestamp` of updates and node announcements; `None` for channel announcements.
    pub fn timestamp(&self) -> Option<u32> {
        match self {
            Gossip::ChannelAnnouncement { .. } => None,
            Gossip::NodeAnnouncement { timestamp, .. }
            | Gossip::ChannelUpdate { timestamp, .. } => Some(*timestamp),
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self.pos.checked_add(n).ok_or(Malformed::LengthOverrun)?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(Malformed::LengthOverrun)?;
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn key(&mut self) -> Result<NodeId, Malformed> {
        let k: NodeId = self.array()?;
        if k[0] == 0x02 || k[0] == 0x03 {
            Ok(k)
        } else {
            Err(Malformed::BadPublicKey)
        }
    }
}

/// Parse one raw gossip message (starting with its 2-byte type).
///
/// # Errors
/// Returns the [`Malformed`] reason for a message that is too short, whose
/// length fields overrun it, whose keys are not compressed points, whose
/// `node_id_1` is not below `node_id_2`, or whose type is not 256–258.
pub fn parse(msg: &[u8]) -> Result<Gossip, Malformed> {
    if msg.len() < 2 {
        return Err(Malformed::TooShort);
    }
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(Malformed::LengthOverrun);
    }
    let min = match MsgKind::of(msg) {
        MsgKind::ChannelAnnouncement => CHANNEL_ANNOUNCEMENT_MIN_LEN,
        MsgKind::NodeAnnouncement => NODE_ANNOUNCEMENT_MIN_LEN,
        MsgKind::ChannelUpdate => CHANNEL_UPDATE_MIN_LEN,
        MsgKind::Unknown => return Err(Malformed::UnknownType),
    };
    if msg.len() < min {
        return Err(Malformed::TooShort);
    }
    match MsgKind::of(msg) {
        MsgKind::ChannelAnnouncement => {
            let mut r = Reader {
                buf: msg,
                pos: CHANNEL_ANNOUNCEMENT_SIGNED_FROM,
            };
            let flen = r.u16()? as usize;
            r.take(flen)?;
            let chain_hash = r.array()?;
            let short_channel_id = r.u64()?;
            let node_id_1 = r.key()?;
            let node_id_2 = r.key()?;
            let bitcoin_key_1 = r.key()?;
            let bitcoin_key_2 = r.key()?;
            if node_id_1 >= node_id_2 {
                return Err(Malformed::NodeIdOrder);
            }
            Ok(Gossip::ChannelAnnouncement {
                chain_hash,
                short_channel_id,
                node_id_1,
                node_id_2,
                bitcoin_key_1,
                bitcoin_key_2,
            })
        }
        MsgKind::NodeAnnouncement => {
            let mut r = Reader {
                buf: msg,
                pos: SINGLE_SIGNED_FROM,
            };
            let flen = r.u16()? as usize;
            r.take(flen)?;
            let timestamp = r.u32()?;
            let node_id = r.key()?;
            r.take(3 + 32)?; // rgb_color, alias
            let addrlen = r.u16()? as usize;
            r.take(addrlen)?;
            Ok(Gossip::NodeAnnouncement { timestamp, node_id })
        }
        MsgKind::ChannelUpdate => {
            let mut r = Reader {
                buf: msg,
                pos: SINGLE_SIGNED_FROM,
            };
            let chain_hash = r.array()?;
            let short_channel_id = r.u64()?;
            let timestamp = r.u32()?;
            let message_flags = r.take(1)?[0];
            let channel_flags = r.take(1)?[0];
            r.take(2 + 8 + 4 + 4)?; // cltv_expiry_delta .. fee_proportional_millionths
            if message_flags & 1 == 1 {
                r.take(8)?; // htlc_maximum_msat
            }
            Ok(Gossip::ChannelUpdate {
                chain_hash,
                short_channel_id,
                timestamp,
                channel_flags,
            })
        }
        MsgKind::Unknown => Err(Malformed::UnknownType),
    }
}

/// The routing policy a `channel_update` carries (BOLT #7 `channel_update`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct UpdateFields {
    /// `short_channel_id`.
    pub short_channel_id: u64,
    /// `timestamp`, seconds since the Unix epoch.
    pub timestamp: u32,
    /// `message_flags` (bit 0: `htlc_maximum_msat` present).
    pub message_flags: u8,
    /// `channel_flags` (bit 0: direction, bit 1: disabled).
    pub channel_flags: u8,
    /// `cltv_expiry_delta`, blocks.
    pub cltv_expiry_delta: u16,
    /// `htlc_minimum_msat`, millisatoshi.
    pub htlc_minimum_msat: u64,
    /// `fee_base_msat`, millisatoshi.
    pub fee_base_msat: u32,
    /// `fee_proportional_millionths`, parts per million.
    pub fee_proportional_millionths: u32,
    /// `htlc_maximum_msat`, millisatoshi; 0 when the update has none
    /// (`message_flags` bit 0 clear, as before 2022).
    pub htlc_maximum_msat: u64,
}

/// Every field of a `channel_update` (the fixed layout after the 64-byte
/// signature: `chain_hash` 32, `short_channel_id` 8, `timestamp` 4,
/// `message_flags` 1, `channel_flags` 1, `cltv_expiry_delta` 2,
/// `htlc_minimum_msat` 8, `fee_base_msat` 4, `fee_proportional_millionths` 4,
/// optional `htlc_maximum_msat` 8).
///
/// # Errors
/// [`Malformed`] as [`parse`] gives it, or [`Malformed::UnknownType`] for
/// another message type.
pub fn update_fields(msg: &[u8]) -> Result<UpdateFields, Malformed> {
    if MsgKind::of(msg) != MsgKind::ChannelUpdate {
        return Err(Malformed::UnknownType);
    }
    let mut r = Reader {
        buf: msg,
        pos: SINGLE_SIGNED_FROM + 32,
    };
    let short_channel_id = r.u64()?;
    let timestamp = r.u32()?;
    let message_flags = r.take(1)?[0];
    let channel_flags = r.take(1)?[0];
    let cltv_expiry_delta = r.u16()?;
    let htlc_minimum_msat = r.u64()?;
    let fee_base_msat = r.u32()?;
    let fee_proportional_millionths = r.u32()?;
    let htlc_maximum_msat = if message_flags & 1 == 1 { r.u64()? } else { 0 };
    Ok(UpdateFields {
        short_channel_id,
        timestamp,
        message_flags,
        channel_flags,
        cltv_expiry_delta,
        htlc_minimum_msat,
        fee_base_msat,
        fee_proportional_millionths,
        htlc_maximum_msat,
    })
}

/// The descriptive fields of a `node_announcement`, borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeFields<'a> {
    /// `features`, as on the wire (big-endian bit order).
    pub features: &'a [u8],
    /// `timestamp`, seconds since the Unix epoch.
    pub timestamp: u32,
    /// `node_id`.
    pub node_id: NodeId,
    /// `rgb_color`, 3 bytes.
    pub rgb_color: [u8; 3],
    /// `alias`, 32 bytes (UTF-8 by convention, NUL-padded).
    pub alias: [u8; 32],
    /// `addresses`: `addrlen` bytes of BOLT #7 address descriptors.
    pub addresses: &'a [u8],
}

/// The descriptive fields of a `node_announcement`.
///
/// # Errors
/// [`Malformed`] as [`parse`] gives it.
pub fn node_fields(msg: &[u8]) -> Result<NodeFields<'_>, Malformed> {
    if MsgKind::of(msg) != MsgKind::NodeAnnouncement {
        return Err(Malformed::UnknownType);
    }
    let mut r = Reader {
        buf: msg,
        pos: SINGLE_SIGNED_FROM,
    };
    let flen = r.u16()? as usize;
    let features = r.take(flen)?;
    let timestamp = r.u32()?;
    let node_id = r.key()?;
    let rgb_color = r.array()?;
    let alias = r.array()?;
    let addrlen = r.u16()? as usize;
    let addresses = r.take(addrlen)?;
    Ok(NodeFields {
        features,
        timestamp,
        node_id,
        rgb_color,
        alias,
        addresses,
    })
}

/// `features` of a `channel_announcement` (after the four signatures).
///
/// # Errors
/// [`Malformed`] as [`parse`] gives it.
pub fn channel_features(msg: &[u8]) -> Result<&[u8], Malformed> {
    if MsgKind::of(msg) != MsgKind::ChannelAnnouncement {
        return Err(Malformed::UnknownType);
    }
    let mut r = Reader {
        buf: msg,
        pos: CHANNEL_ANNOUNCEMENT_SIGNED_FROM,
    };
    let flen = r.u16()? as usize;
    r.take(flen)
}

/// Split BOLT #7 address descriptors (`node_announcement` `addresses`) into
/// whole descriptors (type byte first). Parsing stops at the first unknown
/// type (BOLT #7: its length is unknown, so nothing after it can be read)
/// or at a descriptor that overruns the field.
pub fn address_descriptors(mut addresses: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some(&t) = addresses.first() {
        let len = match t {
            1 => 1 + 4 + 2,
            2 => 1 + 16 + 2,
            3 => 1 + 10 + 2,
            4 => 1 + 35 + 2,
            5 => match addresses.get(1) {
                Some(&n) => 1 + 1 + n as usize + 2,
                None => break,
            },
            _ => break,
        };
        let Some(d) = addresses.get(..len) else {
            break;
        };
        out.push(d);
        addresses = &addresses[len..];
    }
    out
}

/// Byte offset where the signed range of a message of `kind` starts.
pub fn signed_from(kind: MsgKind) -> usize {
    match kind {
        MsgKind::ChannelAnnouncement => CHANNEL_ANNOUNCEMENT_SIGNED_FROM,
        _ => SINGLE_SIGNED_FROM,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_unknown() {
        assert_eq!(parse(&[]), Err(Malformed::TooShort));
        assert_eq!(parse(&[1]), Err(Malformed::TooShort));
        assert_eq!(parse(&[0, 1, 2, 3]), Err(Malformed::UnknownType));
        assert_eq!(parse(&[1, 0]), Err(Malformed::TooShort));
        assert_eq!(parse(&[1, 2]), Err(Malformed::TooShort));
    }

    #[test]
    fn every_truncation_of_a_padded_message_is_an_error_never_a_panic() {
        for t in [256u16, 257, 258] {
            let mut m = vec![0u8; 600];
            m[..2].copy_from_slice(&t.to_be_bytes());
            for n in 0..m.len() {
                let _ = parse(&m[..n]);
            }
        }
    }
}
