"""BOLT #1 and BOLT #7 control messages: encoding and decoding.

Every message is ``type`` (u16, big-endian) followed by its fields; lengths
are in bytes, timestamps in seconds, block heights in blocks. Gossip
messages proper (256-258) are handled by the pipeline, not here.

Sources: BOLT #1 "The init Message", "The error and warning Messages",
"The ping and pong Messages", "Type-Length-Value Format"; BOLT #7 "Query
Messages" and "Initial Sync" (``gossip_timestamp_filter``).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import crc32c

from lngossip.errors import GossipError, MalformedMessage
from lngossip.readers import bigsize_encode
from lngossip.wire import CHANNEL_UPDATE_TIMESTAMP_AT, SINGLE_SIGNED_FROM

__all__ = [
    "ENCODING_UNCOMPRESSED",
    "ENCODING_ZLIB",
    "ERROR",
    "GOSSIP_QUERIES_OPTIONAL",
    "GOSSIP_TIMESTAMP_FILTER",
    "INIT",
    "KNOWN_FEATURE_BITS",
    "MAX_INFLATED_SCID_BYTES",
    "MAX_SCIDS_PER_EXTENDED_REPLY",
    "MAX_SCIDS_PER_FLAGGED_QUERY",
    "MESSAGE_NAMES",
    "PING",
    "PONG",
    "QUERY_CHANNEL_RANGE",
    "QUERY_FLAGS_ALL",
    "QUERY_FLAG_ANNOUNCEMENT",
    "QUERY_FLAG_NODE_1",
    "QUERY_FLAG_NODE_2",
    "QUERY_FLAG_UPDATE_1",
    "QUERY_FLAG_UPDATE_2",
    "QUERY_OPTION_CHECKSUMS",
    "QUERY_OPTION_TIMESTAMPS",
    "QUERY_SHORT_CHANNEL_IDS",
    "REPLY_CHANNEL_RANGE",
    "REPLY_SHORT_CHANNEL_IDS_END",
    "WARNING",
    "GossipTimestampFilter",
    "Init",
    "ProtocolViolation",
    "QueryChannelRange",
    "QueryShortChannelIds",
    "ReplyChannelRange",
    "ReplyShortChannelIdsEnd",
    "decode_error",
    "encode_error",
    "encode_ping",
    "encode_pong",
    "encode_warning",
    "message_type",
    "scid_block",
    "unknown_required_features",
    "update_checksum",
    "update_timestamp",
]

WARNING = 1
INIT = 16
ERROR = 17
PING = 18
PONG = 19
QUERY_SHORT_CHANNEL_IDS = 261
REPLY_SHORT_CHANNEL_IDS_END = 262
QUERY_CHANNEL_RANGE = 263
REPLY_CHANNEL_RANGE = 264
GOSSIP_TIMESTAMP_FILTER = 265
#: BOLT #1 / BOLT #7 name of each control message type this module knows.
MESSAGE_NAMES = {
    WARNING: "warning",
    INIT: "init",
    ERROR: "error",
    PING: "ping",
    PONG: "pong",
    QUERY_SHORT_CHANNEL_IDS: "query_short_channel_ids",
    REPLY_SHORT_CHANNEL_IDS_END: "reply_short_channel_ids_end",
    QUERY_CHANNEL_RANGE: "query_channel_range",
    REPLY_CHANNEL_RANGE: "reply_channel_range",
    GOSSIP_TIMESTAMP_FILTER: "gossip_timestamp_filter",
}

#: Feature bit 7: ``gossip_queries`` offered, optional (BOLT #9).
GOSSIP_QUERIES_OPTIONAL = 7
#: Feature bits BOLT #9 assigns (both bits of each pair, and bit 3
#: ``initial_routing_sync``): 0/1 ``option_data_loss_protect``, 4/5
#: ``option_upfront_shutdown_script``, 6/7 ``gossip_queries``, 8/9
#: ``var_onion_optin``, 10/11 ``gossip_queries_ex``, 12/13
#: ``option_static_remotekey``, 14/15 ``payment_secret``, 16/17 ``basic_mpp``,
#: 18/19 ``option_support_large_channel``, 20/21 ``option_anchor_outputs``,
#: 22/23 ``option_anchors``, 24/25 ``option_route_blinding``, 26/27
#: ``option_shutdown_anysegwit``, 28/29 ``option_dual_fund``, 34/35
#: ``option_quiesce``, 38/39 ``option_onion_messages``, 42/43
#: ``option_provide_storage``, 44/45 ``option_channel_type``, 46/47
#: ``option_scid_alias``, 48/49 ``option_payment_metadata``, 50/51
#: ``option_zeroconf``, 60/61 ``option_simple_close``. A gossip node needs
#: none of them but knows what they are; any other even bit is unknown.
KNOWN_FEATURE_BITS = frozenset(
    {3}
    | {b for p in (0, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28) for b in (p, p + 1)}
    | {b for p in (34, 38, 42, 44, 46, 48, 50, 60) for b in (p, p + 1)}
)
#: ``init`` TLV types this module knows: 1 ``networks``, 3 ``remote_addr`` (BOLT #1).
INIT_TLV_TYPES = frozenset({1, 3})
#: ``encoded_short_ids`` encoding 0: plain array of 8-byte ``short_channel_id``s.
ENCODING_UNCOMPRESSED = 0
#: ``encoded_short_ids`` encoding 1: the same array, zlib-compressed. BOLT #7
#: (PR 981) says a sender MUST NOT use it any more, but deployed peers still
#: do (Electrum before 4.5 compresses its ``query_short_channel_ids``), so
#: it is read, never written.
ENCODING_ZLIB = 1
#: Most bytes a zlib-encoded id list may inflate to: 1 MiB, 131,072 ids,
#: 16 times what one uncompressed message can carry. Past it the message is
#: a decompression bomb, ``MalformedMessage("zlib_too_large")``, and nothing
#: more is inflated.
MAX_INFLATED_SCID_BYTES = 1 << 20
#: Most ``short_channel_id``s one reply carries (8 bytes each, under 65535 bytes).
MAX_SCIDS_PER_MESSAGE = 8000
#: ... when each also carries two timestamps and two checksums (24 bytes).
MAX_SCIDS_PER_EXTENDED_REPLY = 2500
#: ... in a ``query_short_channel_ids`` with ``query_flags`` (9+ bytes each).
MAX_SCIDS_PER_FLAGGED_QUERY = 6500
#: ``query_channel_range`` ``query_option`` bits (BOLT #7): the reply carries
#: each channel's two ``channel_update`` timestamps, and their checksums.
QUERY_OPTION_TIMESTAMPS = 1
QUERY_OPTION_CHECKSUMS = 2
#: ``query_short_channel_ids`` ``query_flags`` bits (BOLT #7): what to send
#: of each channel. All five: what a query without flags gets.
QUERY_FLAG_ANNOUNCEMENT = 1
QUERY_FLAG_UPDATE_1 = 2
QUERY_FLAG_UPDATE_2 = 4
QUERY_FLAG_NODE_1 = 8
QUERY_FLAG_NODE_2 = 16
QUERY_FLAGS_ALL = 31
#: BOLT #1: a ping asking for this many pong bytes or more gets no pong.
PONG_BYTES_IGNORED = 65532


def message_type(msg: bytes) -> int:
    """The 2-byte big-endian type of ``msg`` (-1 if shorter than 2 bytes)."""
    return int.from_bytes(msg[:2], "big") if len(msg) >= 2 else -1


def scid_block(short_channel_id: int) -> int:
    """Block height of a ``short_channel_id`` (its top 24 bits)."""
    return short_channel_id >> 40


class _R:
    """Bounds-checked reader: every overrun raises MalformedMessage."""

    def __init__(self, msg: bytes, pos: int = 2) -> None:
        self.msg, self.pos = msg, pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.msg):
            raise MalformedMessage("length_overrun")
        b = self.msg[self.pos : self.pos + n]
        self.pos += n
        return b

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def bigsize(self) -> int:
        first = self.u8()
        if first < 0xFD:
            return first
        n = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
        v = int.from_bytes(self.take(n), "big")
        if v < {0xFD: 0xFD, 0xFE: 0x10000, 0xFF: 0x100000000}[first]:
            raise MalformedMessage("length_overrun")  # non-minimal BigSize
        return v

    def rest(self) -> bytes:
        b = self.msg[self.pos :]
        self.pos = len(self.msg)
        return b


def _features(bits: set[int]) -> bytes:
    if not bits:
        return b""
    n = max(bits) // 8 + 1
    v = sum(1 << b for b in bits)
    return v.to_bytes(n, "big")


def _feature_bits(data: bytes) -> set[int]:
    v = int.from_bytes(data, "big")
    return {i for i in range(len(data) * 8) if v >> i & 1}


@dataclass
class Init:
    """BOLT #1 ``init`` (type 16): feature bits and the ``networks`` TLV
    (type 1: the ``chain_hash``es the node is interested in)."""

    features: set[int] = field(default_factory=lambda: {GOSSIP_QUERIES_OPTIONAL})
    networks: list[bytes] | None = None

    def encode(self) -> bytes:
        f = _features(self.features)
        out = struct.pack(">HH", INIT, 0) + struct.pack(">H", len(f)) + f
        if self.networks is not None:
            value = b"".join(self.networks)
            out += bigsize_encode(1) + bigsize_encode(len(value)) + value
        return out

    @classmethod
    def decode(cls, msg: bytes) -> Init:
        """Raises MalformedMessage on overruns, a ``networks`` TLV that is not
        a whole number of 32-byte hashes (``length_overrun``), TLV types that
        are not strictly increasing (``tlv_order``) or an unknown even TLV type
        (``unknown_even_tlv``): BOLT #1 requires failing the connection."""
        r = _R(msg)
        gf = r.take(r.u16())
        lf = r.take(r.u16())
        width = max(len(gf), len(lf))
        merged = int.from_bytes(gf, "big") | int.from_bytes(lf, "big")
        features = _feature_bits(merged.to_bytes(width, "big")) if width else set()
        networks: list[bytes] | None = None
        last = -1
        while r.pos < len(msg):
            t, n = r.bigsize(), r.bigsize()
            value = r.take(n)
            if t <= last:
                raise MalformedMessage("tlv_order")
            last = t
            if t % 2 == 0 and t not in INIT_TLV_TYPES:
                raise MalformedMessage("unknown_even_tlv")
            if t == 1:
                if n % 32:
                    raise MalformedMessage("length_overrun")
                networks = [value[i : i + 32] for i in range(0, n, 32)]
        return cls(features, networks)


def unknown_required_features(features: set[int]) -> set[int]:
    """The even (required) bits of ``features`` that BOLT #9 does not assign
    (see :data:`KNOWN_FEATURE_BITS`): BOLT #1 says the receiver of such an
    ``init`` MUST fail the connection."""
    return {b for b in features if b % 2 == 0 and b not in KNOWN_FEATURE_BITS}


def encode_ping(num_pong_bytes: int, padding: int = 0) -> bytes:
    """BOLT #1 ``ping`` (type 18) asking for ``num_pong_bytes`` bytes back."""
    return struct.pack(">HHH", PING, num_pong_bytes, padding) + bytes(padding)


def decode_ping(msg: bytes) -> int:
    """``num_pong_bytes`` of a ``ping``; raises MalformedMessage."""
    r = _R(msg)
    n = r.u16()
    r.take(r.u16())
    return n


def encode_pong(byteslen: int) -> bytes:
    """BOLT #1 ``pong`` (type 19) with ``byteslen`` zero bytes."""
    return struct.pack(">HH", PONG, byteslen) + bytes(byteslen)


def encode_error(data: str, channel_id: bytes = bytes(32)) -> bytes:
    """BOLT #1 ``error`` (type 17); all-zero ``channel_id`` means the connection."""
    d = data.encode()[:60000]
    return struct.pack(">H", ERROR) + channel_id + struct.pack(">H", len(d)) + d


def encode_warning(data: str, channel_id: bytes = bytes(32)) -> bytes:
    """BOLT #1 ``warning`` (type 1)."""
    d = data.encode()[:60000]
    return struct.pack(">H", WARNING) + channel_id + struct.pack(">H", len(d)) + d


def decode_error(msg: bytes) -> str:
    """Text of an ``error`` or ``warning`` (undecodable bytes replaced)."""
    r = _R(msg)
    r.take(32)
    return r.take(r.u16()).decode("utf-8", "replace")


def _encode_scids(scids: list[int]) -> bytes:
    return bytes([ENCODING_UNCOMPRESSED]) + b"".join(s.to_bytes(8, "big") for s in scids)


def _decode_scids(data: bytes) -> list[int]:
    """The ids of an ``encoded_short_ids`` field (BOLT #7): encoding 0, or
    zlib (encoding 1) inflated to at most :data:`MAX_INFLATED_SCID_BYTES`.
    Raises ``MalformedMessage`` with ``unknown_encoding``, ``bad_zlib``,
    ``zlib_too_large`` or ``length_overrun`` (not whole 8-byte ids)."""
    body = _inflate(data)
    if len(body) % 8:
        raise MalformedMessage("length_overrun")
    return [int.from_bytes(body[i : i + 8], "big") for i in range(0, len(body), 8)]


def _tlv_stream(r: _R, known: frozenset[int]) -> dict[int, bytes]:
    """The TLV records from ``r``'s position to the end of the message
    (BOLT #1): types strictly increasing (``tlv_order``), unknown even types
    refused (``unknown_even_tlv``), unknown odd ones skipped."""
    out: dict[int, bytes] = {}
    last = -1
    while r.pos < len(r.msg):
        t, n = r.bigsize(), r.bigsize()
        value = r.take(n)
        if t <= last:
            raise MalformedMessage("tlv_order")
        last = t
        if t in known:
            out[t] = value
        elif t % 2 == 0:
            raise MalformedMessage("unknown_even_tlv")
    return out


def _tlv(t: int, value: bytes) -> bytes:
    return bigsize_encode(t) + bigsize_encode(len(value)) + value


def _u32_pairs(data: bytes, count: int) -> list[tuple[int, int]]:
    """``count`` pairs of 4-byte big-endian numbers; ``tlv_count_mismatch``
    unless ``data`` holds exactly that many."""
    if len(data) != 8 * count:
        raise MalformedMessage("tlv_count_mismatch")
    return [struct.unpack_from(">II", data, 8 * i) for i in range(count)]


def _inflate(encoded: bytes) -> bytes:
    """The body of an encoded field: encoding byte 0 (plain) or 1 (zlib,
    inflated to at most :data:`MAX_INFLATED_SCID_BYTES`)."""
    if not encoded:
        return b""
    body = encoded[1:]
    if encoded[0] == ENCODING_ZLIB:
        inflater = zlib.decompressobj()
        try:
            body = inflater.decompress(body, MAX_INFLATED_SCID_BYTES)
        except zlib.error as e:
            raise MalformedMessage("bad_zlib") from e
        if inflater.unconsumed_tail:
            raise MalformedMessage("zlib_too_large")
        if not inflater.eof:
            raise MalformedMessage("bad_zlib")
    elif encoded[0] != ENCODING_UNCOMPRESSED:
        raise MalformedMessage("unknown_encoding")
    return body


@dataclass
class GossipTimestampFilter:
    """BOLT #7 ``gossip_timestamp_filter`` (265): send me gossip with
    ``first_timestamp <= timestamp < first_timestamp + timestamp_range`` (seconds)."""

    chain_hash: bytes
    first_timestamp: int = 0
    timestamp_range: int = 0xFFFFFFFF

    def encode(self) -> bytes:
        return (
            struct.pack(">H", GOSSIP_TIMESTAMP_FILTER)
            + self.chain_hash
            + struct.pack(">II", self.first_timestamp, self.timestamp_range)
        )

    @classmethod
    def decode(cls, msg: bytes) -> GossipTimestampFilter:
        r = _R(msg)
        return cls(r.take(32), r.u32(), r.u32())


@dataclass
class QueryChannelRange:
    """BOLT #7 ``query_channel_range`` (263): channels funded in blocks
    ``first_blocknum .. first_blocknum + number_of_blocks - 1``."""

    chain_hash: bytes
    first_blocknum: int = 0
    number_of_blocks: int = 0xFFFFFFFF
    #: ``query_option`` TLV (type 1): :data:`QUERY_OPTION_TIMESTAMPS`,
    #: :data:`QUERY_OPTION_CHECKSUMS`; ``None``: not sent.
    query_option: int | None = None

    def encode(self) -> bytes:
        out = (
            struct.pack(">H", QUERY_CHANNEL_RANGE)
            + self.chain_hash
            + struct.pack(">II", self.first_blocknum, self.number_of_blocks)
        )
        if self.query_option is not None:
            out += _tlv(1, bigsize_encode(self.query_option))
        return out

    @classmethod
    def decode(cls, msg: bytes) -> QueryChannelRange:
        r = _R(msg)
        ch, first, num = r.take(32), r.u32(), r.u32()
        tlvs = _tlv_stream(r, frozenset({1}))
        option = _R(tlvs[1], 0).bigsize() if 1 in tlvs else None
        return cls(ch, first, num, option)


@dataclass
class ReplyChannelRange:
    """BOLT #7 ``reply_channel_range`` (264): written with encoding 0, read
    with encoding 0 or 1 (zlib, from older peers)."""

    chain_hash: bytes
    first_blocknum: int
    number_of_blocks: int
    sync_complete: int
    short_channel_ids: list[int]
    #: ``timestamps_tlv`` (type 1): per id, the ``timestamp`` of the update
    #: of direction 0 and of direction 1 (0: none), seconds.
    timestamps: list[tuple[int, int]] | None = None
    #: ``checksums_tlv`` (type 3): per id, the CRC-32C of each update without
    #: its signature and timestamp (0: none), see :func:`update_checksum`.
    checksums: list[tuple[int, int]] | None = None

    def encode(self) -> bytes:
        ids = _encode_scids(self.short_channel_ids)
        out = (
            struct.pack(">H", REPLY_CHANNEL_RANGE)
            + self.chain_hash
            + struct.pack(
                ">IIBH", self.first_blocknum, self.number_of_blocks, self.sync_complete, len(ids)
            )
            + ids
        )
        if self.timestamps is not None:
            plain = b"".join(struct.pack(">II", a, b) for a, b in self.timestamps)
            out += _tlv(1, bytes([ENCODING_UNCOMPRESSED]) + plain)
        if self.checksums is not None:
            out += _tlv(3, b"".join(struct.pack(">II", a, b) for a, b in self.checksums))
        return out

    @classmethod
    def decode(cls, msg: bytes) -> ReplyChannelRange:
        """Raises MalformedMessage; ``tlv_count_mismatch`` when the
        timestamps or checksums do not match the ids one for one."""
        r = _R(msg)
        ch, first, num, complete = r.take(32), r.u32(), r.u32(), r.u8()
        ids = _decode_scids(r.take(r.u16()))
        tlvs = _tlv_stream(r, frozenset({1, 3}))
        timestamps = _u32_pairs(_inflate(tlvs[1]), len(ids)) if 1 in tlvs else None
        checksums = _u32_pairs(tlvs[3], len(ids)) if 3 in tlvs else None
        return cls(ch, first, num, complete, ids, timestamps, checksums)


@dataclass
class QueryShortChannelIds:
    """BOLT #7 ``query_short_channel_ids`` (261): written with encoding 0,
    read with encoding 0 or 1 (zlib: Electrum before 4.5)."""

    chain_hash: bytes
    short_channel_ids: list[int]
    #: ``query_flags`` TLV (type 1): per id, which messages to send
    #: (``QUERY_FLAG_*`` bits); ``None``: everything of every id.
    query_flags: list[int] | None = None

    def encode(self) -> bytes:
        ids = _encode_scids(self.short_channel_ids)
        out = (
            struct.pack(">H", QUERY_SHORT_CHANNEL_IDS)
            + self.chain_hash
            + struct.pack(">H", len(ids))
            + ids
        )
        if self.query_flags is not None:
            flags = b"".join(bigsize_encode(f) for f in self.query_flags)
            out += _tlv(1, bytes([ENCODING_UNCOMPRESSED]) + flags)
        return out

    @classmethod
    def decode(cls, msg: bytes) -> QueryShortChannelIds:
        """Raises MalformedMessage; ``tlv_count_mismatch`` when the flags do
        not match the ids one for one."""
        r = _R(msg)
        ch = r.take(32)
        ids = _decode_scids(r.take(r.u16()))
        tlvs = _tlv_stream(r, frozenset({1}))
        flags: list[int] | None = None
        if 1 in tlvs:
            fr = _R(_inflate(tlvs[1]), 0)
            flags = []
            while fr.pos < len(fr.msg):
                flags.append(fr.bigsize())
            if len(flags) != len(ids):
                raise MalformedMessage("tlv_count_mismatch")
        return cls(ch, ids, flags)


def update_timestamp(channel_update: bytes) -> int:
    """``timestamp`` of a ``channel_update`` (seconds; bytes 106..110)."""
    at = CHANNEL_UPDATE_TIMESTAMP_AT
    return int.from_bytes(channel_update[at : at + 4], "big")


def update_checksum(channel_update: bytes) -> int:
    """BOLT #7: the CRC-32C (RFC 3720) of a ``channel_update`` without its
    type, ``signature`` and ``timestamp``: equal for two updates that say
    the same thing at different times."""
    at = CHANNEL_UPDATE_TIMESTAMP_AT
    head = crc32c.crc32c(channel_update[SINGLE_SIGNED_FROM:at])
    return crc32c.crc32c(channel_update[at + 4 :], head)


@dataclass
class ReplyShortChannelIdsEnd:
    """BOLT #7 ``reply_short_channel_ids_end`` (262)."""

    chain_hash: bytes
    full_information: int = 1

    def encode(self) -> bytes:
        return (
            struct.pack(">H", REPLY_SHORT_CHANNEL_IDS_END)
            + self.chain_hash
            + bytes([self.full_information])
        )

    @classmethod
    def decode(cls, msg: bytes) -> ReplyShortChannelIdsEnd:
        r = _R(msg)
        return cls(r.take(32), r.u8())


class ProtocolViolation(GossipError):
    """A peer broke a rule of BOLT #1 or BOLT #7 that ends the connection
    (``text``, counted as ``reason``): the node sends it a ``warning`` with
    ``text`` and disconnects."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(text)
        self.text, self.reason = text, reason
