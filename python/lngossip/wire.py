"""BOLT #7 gossip constants and a pure-Python parser of the fixed fields.

Used by the pure-Python baseline engine and by :func:`parse_message`. The
Rust core (``rust/core/src/wire.rs``) implements the same rules; parity tests
hold the two together.

Layouts (BOLT #7, big-endian, each message starts with its 2-byte type):

* ``channel_announcement`` (256): 4 x 64-byte signatures, ``len`` (u16),
  ``features``, ``chain_hash`` (32), ``short_channel_id`` (u64),
  ``node_id_1``, ``node_id_2``, ``bitcoin_key_1``, ``bitcoin_key_2``
  (33 bytes each). Signed range: bytes 258.. (SHA256d). At least 432 bytes
  (:data:`CHANNEL_ANNOUNCEMENT_MIN_LEN`).
* ``node_announcement`` (257): signature (64), ``flen`` (u16), ``features``,
  ``timestamp`` (u32, seconds), ``node_id`` (33), ``rgb_color`` (3),
  ``alias`` (32), ``addrlen`` (u16), ``addresses``. Signed range: 66... At least 142 bytes.
* ``channel_update`` (258): signature (64), ``chain_hash`` (32),
  ``short_channel_id`` (u64), ``timestamp`` (u32, seconds),
  ``message_flags`` (u8), ``channel_flags`` (u8, bit 0 = direction),
  ``cltv_expiry_delta`` (u16), ``htlc_minimum_msat`` (u64),
  ``fee_base_msat`` (u32), ``fee_proportional_millionths`` (u32),
  ``htlc_maximum_msat`` (u64, present when ``message_flags`` bit 0 is set).
  Signed range: 66... At least 130 bytes.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Literal, NamedTuple, TypeAlias

from lngossip.errors import MalformedMessage

__all__ = [
    "CHANNEL_ANNOUNCEMENT",
    "CHANNEL_ANNOUNCEMENT_MIN_LEN",
    "CHANNEL_ANNOUNCEMENT_SIGNATURES_AT",
    "CHANNEL_ANNOUNCEMENT_SIGNED_FROM",
    "CHANNEL_UPDATE",
    "CHANNEL_UPDATE_HTLC_MAXIMUM_AT",
    "CHANNEL_UPDATE_MIN_LEN",
    "CHANNEL_UPDATE_SCID_AT",
    "CHANNEL_UPDATE_TIMESTAMP_AT",
    "DECISIONS",
    "GOSSIP_TYPES",
    "MAINNET_CHAIN_HASH",
    "MALFORMED_REASONS",
    "MAX_MESSAGE_LEN",
    "MIN_LEN",
    "MSG_KINDS",
    "NODE_ANNOUNCEMENT",
    "NODE_ANNOUNCEMENT_FLEN_AT",
    "NODE_ANNOUNCEMENT_MIN_LEN",
    "SIGNED_FROM",
    "SINGLE_SIGNED_FROM",
    "TYPE_LEN",
    "Decision",
    "Gossip",
    "Outcome",
    "Policy",
    "channel_announcement_fields_at",
    "kind_of",
    "node_announcement_fields_at",
    "parse_message",
]

CHANNEL_ANNOUNCEMENT = 256
NODE_ANNOUNCEMENT = 257
CHANNEL_UPDATE = 258

#: Bitcoin mainnet genesis hash in ``chain_hash`` byte order (32 bytes).
MAINNET_CHAIN_HASH = bytes.fromhex(
    "6fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000"
)

# Lengths and offsets are in bytes and count from the first byte of the
# message, its 2-byte type included, as every reader of raw messages here
# and ``rust/core/src/wire.rs`` (same names) count them. BOLT #7 lists the
# fields after the type; add 2 to compare with a length computed from it.

#: BOLT #1: every message starts with its type, a big-endian u16.
TYPE_LEN = 2
#: BOLT #1: a message is at most 65535 bytes (type included).
MAX_MESSAGE_LEN = 65535

#: Where the four signatures of a ``channel_announcement`` start
#: (``node_signature_1``, ``node_signature_2``, ``bitcoin_signature_1``,
#: ``bitcoin_signature_2``, 64 bytes each).
CHANNEL_ANNOUNCEMENT_SIGNATURES_AT = (2, 66, 130, 194)
#: Start of the signed range of a ``channel_announcement`` (its ``len``
#: field): type (2) + four signatures (4 x 64). The range runs to the end.
CHANNEL_ANNOUNCEMENT_SIGNED_FROM = 258
#: Start of the signed range of a ``node_announcement`` (its ``flen``) and a
#: ``channel_update`` (its ``chain_hash``): type (2) + one signature (64).
SINGLE_SIGNED_FROM = 66
#: Start of the signed byte range by message type.
SIGNED_FROM = {
    CHANNEL_ANNOUNCEMENT: CHANNEL_ANNOUNCEMENT_SIGNED_FROM,
    NODE_ANNOUNCEMENT: SINGLE_SIGNED_FROM,
    CHANNEL_UPDATE: SINGLE_SIGNED_FROM,
}

#: Shortest valid ``channel_announcement``, type included: type 2 + four
#: signatures 4 x 64 + ``len`` 2 + empty ``features`` + ``chain_hash`` 32 +
#: ``short_channel_id`` 8 + four keys 4 x 33 = 432 (430 without the type).
CHANNEL_ANNOUNCEMENT_MIN_LEN = 432
#: Shortest valid ``node_announcement``, type included: type 2 + signature
#: 64 + ``flen`` 2 + ``timestamp`` 4 + ``node_id`` 33 + ``rgb_color`` 3 +
#: ``alias`` 32 + ``addrlen`` 2 = 142.
NODE_ANNOUNCEMENT_MIN_LEN = 142
#: Shortest valid ``channel_update``, type included, without
#: ``htlc_maximum_msat`` (optional before 2022): type 2 + signature 64 +
#: ``chain_hash`` 32 + ``short_channel_id`` 8 + ``timestamp`` 4 + flags 2 +
#: ``cltv_expiry_delta`` 2 + ``htlc_minimum_msat`` 8 + ``fee_base_msat`` 4 +
#: ``fee_proportional_millionths`` 4 = 130.
CHANNEL_UPDATE_MIN_LEN = 130
#: Shortest valid message by type (type included).
MIN_LEN = {
    CHANNEL_ANNOUNCEMENT: CHANNEL_ANNOUNCEMENT_MIN_LEN,
    NODE_ANNOUNCEMENT: NODE_ANNOUNCEMENT_MIN_LEN,
    CHANNEL_UPDATE: CHANNEL_UPDATE_MIN_LEN,
}
#: BOLT #7 gossip message types (the ones with a :data:`MIN_LEN`).
GOSSIP_TYPES = frozenset(MIN_LEN)

# ``channel_update`` is all fixed fields:
#: ``short_channel_id`` (u64) of a ``channel_update`` (after ``chain_hash``).
CHANNEL_UPDATE_SCID_AT = SINGLE_SIGNED_FROM + 32
#: ``timestamp`` (u32, seconds) of a ``channel_update``; ``message_flags``
#: and ``channel_flags`` (u8 each) follow.
CHANNEL_UPDATE_TIMESTAMP_AT = CHANNEL_UPDATE_SCID_AT + 8
#: ``htlc_maximum_msat`` (u64) of a ``channel_update``, present when
#: ``message_flags`` bit 0 is set: the message then has 138 bytes at least.
CHANNEL_UPDATE_HTLC_MAXIMUM_AT = CHANNEL_UPDATE_MIN_LEN
# ``node_announcement``: ``features`` of ``flen`` bytes come first, so the
# fields after them move with ``flen``: see :func:`node_announcement_fields_at`
# (and :func:`channel_announcement_fields_at` for ``len``).
#: ``flen`` (u16) of a ``node_announcement``.
NODE_ANNOUNCEMENT_FLEN_AT = SINGLE_SIGNED_FROM

#: Counter names of message kinds (``unknown`` for anything that is not 256-258).
MSG_KINDS = ("channel_announcement", "node_announcement", "channel_update", "unknown")
_KIND_BY_TYPE = {
    CHANNEL_ANNOUNCEMENT: "channel_announcement",
    NODE_ANNOUNCEMENT: "node_announcement",
    CHANNEL_UPDATE: "channel_update",
}
MALFORMED_REASONS = (
    "too_short",
    "length_overrun",
    "bad_public_key",
    "node_id_order",
    "unknown_type",
)


class Decision(enum.StrEnum):
    """What happened to a message; members compare equal to their string values."""

    QUEUED = "queued"
    """Admitted; a later ``process`` call gives the final decision."""
    ORPHANED = "orphaned"
    """``channel_update`` of an unknown channel, held in the bounded orphan cache."""
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    """Same bytes seen before, or a ``channel_announcement`` of a known channel."""
    STALE = "stale"
    """Not strictly newer than the stored timestamp (BOLT #7)."""
    MALFORMED = "malformed"
    WRONG_CHAIN = "wrong_chain"
    INVALID_SIGNATURE = "invalid_signature"
    UNKNOWN_NODE = "unknown_node"
    """Live policy: ``node_announcement`` of a node without a known channel."""
    TOO_OLD = "too_old"
    """Live policy: timestamp more than 14 days behind now."""
    TOO_NEW = "too_new"
    """Live policy: timestamp more than 24 h ahead of now."""
    QUEUE_FULL = "queue_full"
    """The queue or the peer's share is full; nothing was kept, submit again later."""
    RATE_LIMITED = "rate_limited"
    """Live policy: over the spam limit of its channel direction or node (a
    burst of 10, then one a minute, as lnd); not stored, not relayed."""


#: ``"archive"``: ingesting old dumps, no wall-clock window, nodes without a
#: known channel verified anyway; ``"live"``: gossip from peers, timestamps
#: more than 24 h ahead or 14 days behind now rejected, ``node_announcement``
#: needs a known channel (BOLT #7).
Policy: TypeAlias = Literal["archive", "live"]


class Outcome(NamedTuple):
    """One final decision of :meth:`lngossip.Pipeline.process`."""

    seq: int
    """Sequence number from the message's :class:`~lngossip.Admission`."""
    peer: int
    """Peer that submitted it."""
    msg_type: str
    """BOLT #7 name of its type (``channel_update``, ...)."""
    decision: Decision
    """Final, or ``orphaned`` for an update whose announcement was not accepted (yet)."""
    reason: str | None
    """Parse failure for ``malformed``."""


#: Final decisions counted per message kind (``queued`` and ``queue_full`` are not final).
DECISIONS = tuple(d.value for d in Decision if d not in (Decision.QUEUED, Decision.QUEUE_FULL))


@dataclass(frozen=True, slots=True)
class Gossip:
    """Fixed fields of a parsed gossip message.

    ``short_channel_id`` and ``chain_hash`` are ``None`` for node announcements,
    ``timestamp`` (seconds) is ``None`` for channel announcements, ``keys`` holds
    the 33-byte keys a ``channel_announcement`` names (``node_id_1``,
    ``node_id_2``, ``bitcoin_key_1``, ``bitcoin_key_2``) or the ``node_id``
    of a ``node_announcement``.
    """

    type: int
    chain_hash: bytes | None
    short_channel_id: int | None
    timestamp: int | None
    channel_flags: int
    keys: tuple[bytes, ...]

    @property
    def kind(self) -> str:
        """BOLT #7 name of the message type."""
        return _KIND_BY_TYPE[self.type]


def kind_of(msg: bytes) -> str:
    """Counter name of the message's type (``unknown`` when not 256-258)."""
    if len(msg) < TYPE_LEN:
        return "unknown"
    return _KIND_BY_TYPE.get(int.from_bytes(msg[:TYPE_LEN], "big"), "unknown")


def _need(n: int, end: int) -> None:
    if end > n:
        raise MalformedMessage("length_overrun")


def _key(msg: bytes, off: int) -> bytes:
    _need(len(msg), off + 33)
    if msg[off] not in (2, 3):
        raise MalformedMessage("bad_public_key")
    return msg[off : off + 33]


def channel_announcement_fields_at(msg: bytes) -> int:
    """Offset of ``chain_hash`` in a ``channel_announcement``: the first field
    after its ``features`` (``CHANNEL_ANNOUNCEMENT_SIGNED_FROM + 2 + len``).
    ``short_channel_id`` follows at +32, ``node_id_1`` at +40, ``node_id_2``
    at +73, ``bitcoin_key_1`` at +106, ``bitcoin_key_2`` at +139.

    Reads ``len`` only (the message must have its 260 bytes): the offset may
    lie past the end of a malformed message.
    """
    (flen,) = struct.unpack_from(">H", msg, CHANNEL_ANNOUNCEMENT_SIGNED_FROM)
    return CHANNEL_ANNOUNCEMENT_SIGNED_FROM + 2 + int(flen)


def node_announcement_fields_at(msg: bytes) -> int:
    """Offset of ``timestamp`` in a ``node_announcement``: the first field
    after its ``features`` (``NODE_ANNOUNCEMENT_FLEN_AT + 2 + flen``).
    ``node_id`` follows at +4, ``rgb_color`` at +37, ``alias`` at +40,
    ``addrlen`` at +72, ``addresses`` at +74.

    Reads ``flen`` only (the message must have its 68 bytes): the offset may
    lie past the end of a malformed message.
    """
    (flen,) = struct.unpack_from(">H", msg, NODE_ANNOUNCEMENT_FLEN_AT)
    return NODE_ANNOUNCEMENT_FLEN_AT + 2 + int(flen)


def parse_message(msg: bytes) -> Gossip:
    """Parse the fixed fields of one raw BOLT #7 message (type prefix included).

    Raises:
        MalformedMessage: with ``reason`` ``too_short``, ``length_overrun``,
            ``bad_public_key`` (key prefix not 0x02/0x03), ``node_id_order``
            (``node_id_1`` not below ``node_id_2``) or ``unknown_type``.
    """
    n = len(msg)
    if n < TYPE_LEN:
        raise MalformedMessage("too_short")
    if n > MAX_MESSAGE_LEN:
        raise MalformedMessage("length_overrun")
    t = int.from_bytes(msg[:TYPE_LEN], "big")
    if t not in MIN_LEN:
        raise MalformedMessage("unknown_type")
    if n < MIN_LEN[t]:
        raise MalformedMessage("too_short")
    # Fields are read in wire order, so the first problem found is the one
    # reported, exactly as in rust/core/src/wire.rs.
    if t == CHANNEL_ANNOUNCEMENT:
        p = channel_announcement_fields_at(msg)
        _need(n, p + 40)
        chain_hash = msg[p : p + 32]
        (scid,) = struct.unpack_from(">Q", msg, p + 32)
        keys = tuple(_key(msg, p + 40 + 33 * i) for i in range(4))
        if keys[0] >= keys[1]:
            raise MalformedMessage("node_id_order")
        return Gossip(t, chain_hash, scid, None, 0, keys)
    if t == NODE_ANNOUNCEMENT:
        p = node_announcement_fields_at(msg)
        _need(n, p + 4)
        (ts,) = struct.unpack_from(">I", msg, p)
        node_id = _key(msg, p + 4)
        _need(n, p + 74)
        (addrlen,) = struct.unpack_from(">H", msg, p + 72)
        _need(n, p + 74 + addrlen)
        return Gossip(t, None, None, ts, 0, (node_id,))
    chain_hash = msg[SINGLE_SIGNED_FROM:CHANNEL_UPDATE_SCID_AT]
    scid, ts, message_flags, channel_flags = struct.unpack_from(
        ">QIBB", msg, CHANNEL_UPDATE_SCID_AT
    )
    if message_flags & 1:
        _need(n, CHANNEL_UPDATE_HTLC_MAXIMUM_AT + 8)
    return Gossip(t, chain_hash, scid, ts, channel_flags, ())
