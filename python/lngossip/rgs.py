"""A reader of Rapid Gossip Sync (RGS) snapshots, versions 1 and 2.

RGS is the compact gossip format of LDK's ``lightning-rapid-gossip-sync``
crate: a server strips the signatures from the BOLT #7 gossip, delta-encodes
the short channel ids and leaves out channel_update fields equal to a default
or to the client's previous value. The format is defined by the crate's
``src/processing.rs`` (``lightning-rapid-gossip-sync-0.2.3/src/processing.rs``,
``update_network_graph_from_byte_stream_no_std``), which this module follows
field by field; :func:`read_snapshot` decodes a snapshot without applying it
to anything.

Layout (integers big-endian; BigSize is BOLT #1's, minimal encodings only;
``Vec`` is LDK's ``Vec<u8>``: a CollectionLength, i.e. a u16 byte count
where ``0xffff`` is followed by a u64 holding ``count - 0xffff``, then the
bytes; features are such a Vec of feature bits in wire order)::

    prefix            3   b"LDK"
    version           1   1 or 2
    chain_hash       32
    latest_seen       4   u32, seconds since the epoch
    v2: default_node_features: count u8, then count features (Vec)
    node_id_count     4   u32, at most 200,000 (LDK's limit)
    node_ids         33 each, in v2 each followed by its details (below);
                          v2: bits 7..2 of the first byte are flags
                          (7: a Vec of extra data follows, 6: reminder,
                          5..3: features: 0 unchanged, 1..6 default index + 1,
                          7 explicit features follow, 2: addresses follow),
                          bits 1..0 the key's parity byte (2 or 3)
    v2 node details  after a node id with flags: addresses (count u8, then
                          per address a u8 length and that many bytes of a
                          BOLT #7 address descriptor), explicit features,
                          extra data, in this order
    announcement_count 4  u32; per announcement: features (Vec), scid delta
                          (BigSize, from the previous announcement's scid,
                          the first from 0), node_id_1 index (BigSize),
                          node_id_2 index (BigSize; bit 63 set: v2 extra
                          data follows, a Vec starting with the funding
                          amount in satoshis as a BigSize); LDK does not
                          require node_id_1 < node_id_2
    update_count      4   u32, at most 600,000 (LDK's limit); 0 ends the
                          snapshot here
    defaults         26   cltv_expiry_delta u16 (blocks), htlc_minimum_msat
                          u64, fee_base_msat u32, fee_proportional_millionths
                          u32, htlc_maximum_msat u64
    updates               per update: scid delta (BigSize, from 0 again), a
                          flags byte (7: incremental, 6: cltv_expiry_delta
                          u16 follows, 5: htlc_minimum_msat u64, 4:
                          fee_base_msat u32, 3: fee_proportional_millionths
                          u32, 2: htlc_maximum_msat u64, 1: disabled, 0:
                          direction), then the fields flagged; in v2 a
                          record with scid delta 0 and the direction of the
                          record before it is extra data (a Vec) instead

Whatever LDK refuses while decoding (a short read, an unknown prefix or
version, a non-minimal BigSize, a node index out of range, an scid that
overflows u64, a default-features index beyond the table, a count above its
limit, a channel between a node and itself, an address that parses but
leaves bytes of its record unread) raises :class:`~lngossip.errors.RgsError`
with the byte offset. This reader is stricter than LDK in two ways, neither
of which a correct writer produces: a node id must start with 0x02 or 0x03
(after the v2 flag bits are cleared), and bytes after the last record raise
unless ``allow_trailing=True`` (LDK ignores them; one of the crate's own
valid test vectors has 23 such bytes). What LDK checks against
its graph or clock (chain hash, staleness, incremental updates of unknown
channels, htlc_maximum_msat above the capacity) is not checked here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from lngossip._core import RGS_MAX_SCOPE_S, RGS_SNAPSHOT_INTERVAL_S
from lngossip.errors import RgsError

__all__ = [
    "MAX_NODE_COUNT",
    "MAX_SCOPE_S",
    "MAX_UPDATE_COUNT",
    "SNAPSHOT_INTERVAL_S",
    "Announcement",
    "Defaults",
    "NodeDetails",
    "Snapshot",
    "Update",
    "read_snapshot",
    "scope_since",
]

#: The snapshot grid (seconds): ``latest_seen`` is rounded down to it and
#: clients ask from grid points (``rgs.rs`` ``SNAPSHOT_INTERVAL_S``, the
#: reference server's ``SYMLINK_GRANULARITY_INTERVAL``, 3 h).
SNAPSHOT_INTERVAL_S: Final[int] = RGS_SNAPSHOT_INTERVAL_S
#: The widest incremental scope (seconds): an older client gets the full
#: snapshot (``rgs.rs`` ``MAX_SCOPE_S``, the reference's ``MAX_SNAPSHOT_SCOPE``).
MAX_SCOPE_S: Final[int] = RGS_MAX_SCOPE_S


def scope_since(
    t: int,
    reference: int,
    interval: int = SNAPSHOT_INTERVAL_S,
    max_scope: int | None = MAX_SCOPE_S,
) -> int:
    """The ``since`` of the snapshot a client whose last sync returned ``t``
    gets when snapshots are made at ``reference`` (seconds, on the grid),
    as the reference server's symlinks do: ``t`` itself for 0, at or after
    ``reference``, or without ``max_scope``; otherwise ``reference`` less
    the smallest scope (``interval`` doubled) covering ``reference - t``,
    and 0 (the full snapshot) once the scopes reach ``max_scope``. Each
    scope's snapshot holds everything since ``t`` and more: at most
    ``log2(max_scope / interval) + 2`` snapshots per version serve every
    ``t``."""
    if t == 0 or max_scope is None or t >= reference:
        return t
    scope = interval
    while scope < reference - t:
        if scope >= max_scope:
            return 0
        scope *= 2
    return max(reference - scope, 0)


_PREFIX: Final = b"LDK"
MAX_NODE_COUNT: Final = 200_000
"""LDK's limit on ``node_id_count`` (``NODE_COUNT_ESTIMATE * 10``)."""
MAX_UPDATE_COUNT: Final = 600_000
"""LDK's limit on ``update_count`` (``CHAN_COUNT_ESTIMATE * 10``)."""

_U64_MAX: Final = (1 << 64) - 1
_EXTRA_DATA_BIT: Final = 1 << 63

# Update flag bits (processing.rs).
_INCREMENTAL: Final = 0x80
_CLTV: Final = 0x40
_HTLC_MIN: Final = 0x20
_FEE_BASE: Final = 0x10
_FEE_PROP: Final = 0x08
_HTLC_MAX: Final = 0x04
_DISABLED: Final = 0x02
_DIRECTION: Final = 0x01

# v2 node id flag bits (the first byte of the key).
_NODE_EXTRA: Final = 0x80
_NODE_REMINDER: Final = 0x40
_NODE_FEATURES_SHIFT: Final = 3
_NODE_ADDRESSES: Final = 0x04
_NODE_PARITY: Final = 0x03

# BOLT #7 address descriptor types and the bytes LDK reads for each (type
# byte included); hostname (5) is 1 + 1 + its length + 2.
_ADDRESS_LEN: Final[dict[int, int]] = {1: 7, 2: 19, 3: 13, 4: 38}
_HOSTNAME: Final = 5
_HOSTNAME_CHARS: Final = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
)


@dataclass(frozen=True, slots=True)
class NodeDetails:
    """What a version 2 snapshot says about one node besides its id.

    ``node_id`` is 33 bytes; ``flags`` the raw bits 7..2 of the key's first
    byte as sent (bits 1..0 cleared). ``features_marker`` is bits 5..3: 0
    (features unchanged), 1..6 (``Snapshot.default_node_features[marker -
    1]``) or 7 (explicit features followed); ``features`` the resulting
    feature bits (wire order), None for marker 0. ``addresses`` is None
    unless bit 2 was set, else each address record's raw bytes (a BOLT #7
    address descriptor: type byte, then the address; LDK skips records it
    cannot parse). ``extra_data`` is None unless bit 7 was set (LDK ignores
    it).
    """

    index: int
    node_id: bytes
    flags: int
    reminder: bool
    features_marker: int
    features: bytes | None
    addresses: tuple[bytes, ...] | None
    extra_data: bytes | None


@dataclass(frozen=True, slots=True)
class Announcement:
    """A channel as announced in a snapshot (LDK's partial announcement).

    ``short_channel_id`` is the u64 after delta decoding; ``node_index_1`` /
    ``node_index_2`` index ``Snapshot.node_ids`` (bit 63 of the second
    removed), ``node_id_1`` / ``node_id_2`` are those 33-byte ids.
    ``features`` are the channel's feature bits in wire order.
    ``funding_sat`` is the channel's capacity in satoshis (v2 extra data;
    None without it), ``excess_data`` the extra-data bytes after that
    BigSize (LDK ignores them; ``b""`` without extra data).
    """

    short_channel_id: int
    node_index_1: int
    node_index_2: int
    node_id_1: bytes
    node_id_2: bytes
    features: bytes
    funding_sat: int | None
    excess_data: bytes


@dataclass(frozen=True, slots=True)
class Defaults:
    """The 26 bytes of defaults a non-incremental update starts from:
    ``cltv_expiry_delta`` (u16, blocks), ``htlc_minimum_msat`` (u64,
    millisatoshis), ``fee_base_msat`` (u32, millisatoshis),
    ``fee_proportional_millionths`` (u32, millionths of the amount) and
    ``htlc_maximum_msat`` (u64, millisatoshis), read in that order."""

    cltv_expiry_delta: int
    htlc_minimum_msat: int
    fee_base_msat: int
    fee_proportional_millionths: int
    htlc_maximum_msat: int


@dataclass(frozen=True, slots=True)
class Update:
    """One channel_update record.

    ``flags`` is the raw flags byte; ``direction`` its bit 0 (0: from
    ``node_id_1``, LDK's ``one_to_two``), ``disabled`` bit 1,
    ``incremental`` bit 7 (absent fields keep the client's previous values,
    else they take :class:`Defaults`). The five fields are None when their
    flag bit is clear: ``cltv_expiry_delta`` (u16, blocks),
    ``htlc_minimum_msat`` (u64, msat), ``fee_base_msat`` (u32, msat),
    ``fee_proportional_millionths`` (u32), ``htlc_maximum_msat`` (u64,
    msat). ``extra_data`` holds the v2 extra-data records that followed this
    update (same scid, same direction; LDK ignores them), in order.
    """

    short_channel_id: int
    flags: int
    direction: int
    disabled: bool
    incremental: bool
    cltv_expiry_delta: int | None
    htlc_minimum_msat: int | None
    fee_base_msat: int | None
    fee_proportional_millionths: int | None
    htlc_maximum_msat: int | None
    extra_data: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A decoded RGS snapshot.

    ``version`` is 1 or 2; ``chain_hash`` 32 bytes (as on the wire, e.g.
    ``6fe28c0a...`` for Bitcoin mainnet); ``latest_seen`` a u32 in seconds
    since the epoch (LDK stamps every announcement and update it applies
    with ``latest_seen`` minus 7 days). ``default_node_features`` (v2, else
    empty) are feature bits in wire order; ``node_ids`` the 33-byte ids
    (v2: with the flag bits cleared); ``node_details`` has one
    :class:`NodeDetails` per node id in a version 2 snapshot and is empty
    in version 1. ``defaults`` is None when ``update_count`` is 0 (then the
    snapshot ends before them). ``updates`` excludes v2 extra-data records
    (attached to the update before them); ``update_count`` is the u32 as
    sent, which counts those too. ``size`` is the number of bytes read.
    """

    version: int
    chain_hash: bytes
    latest_seen: int
    default_node_features: tuple[bytes, ...]
    node_ids: tuple[bytes, ...]
    node_details: tuple[NodeDetails, ...]
    announcements: tuple[Announcement, ...]
    update_count: int
    defaults: Defaults | None
    updates: tuple[Update, ...]
    size: int


class _Cursor:
    """Bounds-checked reads from ``data``; every failure is an RgsError."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def fail(self, message: str, offset: int | None = None) -> RgsError:
        at = self.pos if offset is None else offset
        return RgsError(f"{message} at byte offset {at}", at)

    def take(self, n: int, what: str) -> bytes:
        start = self.pos
        left = self.end - start
        if n > left:
            raise self.fail(f"truncated: {what} needs {n} bytes, {left} left", start)
        self.pos = start + n
        return self.data[start : start + n]

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "big")

    def bigsize(self, what: str) -> int:
        start = self.pos
        first = self.uint(1, what)
        if first < 0xFD:
            return first
        if first == 0xFD:
            width, minimum = 2, 0xFD
        elif first == 0xFE:
            width, minimum = 4, 0x10000
        else:
            width, minimum = 8, 0x100000000
        value = self.uint(width, what)
        if value < minimum:
            raise self.fail(f"non-minimal BigSize {value:#x} for {what}", start)
        return value

    def vec_span(self, what: str) -> tuple[int, int]:
        """Skip LDK's ``Vec<u8>``: a CollectionLength (u16; ``0xffff`` is
        followed by a u64 holding the length minus ``0xffff``), then the
        bytes. Returns where the bytes start and end."""
        start = self.pos
        length = self.uint(2, f"the length of {what}")
        if length == 0xFFFF:
            length = 0xFFFF + self.uint(8, f"the long length of {what}")
            if length > _U64_MAX:
                raise self.fail(f"the length of {what} overflows u64", start)
        begin = self.pos
        self.take(length, what)
        return begin, self.pos

    def vec(self, what: str) -> bytes:
        begin, end = self.vec_span(what)
        return self.data[begin:end]


def _check_address(record: bytes, cur: _Cursor, start: int, what: str) -> None:
    """Mirror LDK: an address record that parses as a known descriptor but
    leaves bytes unread is an error; one that does not parse is skipped."""
    if not record:
        return
    kind = record[0]
    if kind in _ADDRESS_LEN:
        used = _ADDRESS_LEN[kind]
    elif kind == _HOSTNAME and len(record) >= 2:
        used = 4 + record[1]
        if used <= len(record) and not set(record[2 : 2 + record[1]]) <= _HOSTNAME_CHARS:
            return  # not a hostname LDK accepts: skipped
    else:
        return  # unknown type (LDK skips it) or too short to parse
    if used < len(record):
        raise cur.fail(f"{what} (type {kind}) parses in {used} of its {len(record)} bytes", start)


def _read_node_id(cur: _Cursor, what: str, v2: bool) -> tuple[bytes, int]:
    start = cur.pos
    raw = cur.take(33, what)
    flags = raw[0] & ~_NODE_PARITY if v2 else 0
    prefix = raw[0] & _NODE_PARITY if v2 else raw[0]
    if prefix not in (2, 3):
        raise cur.fail(f"{what} starts with {prefix:#04x}, not 0x02 or 0x03", start)
    return bytes([prefix]) + raw[1:], flags


def _read_node_details(
    cur: _Cursor, index: int, node_id: bytes, flags: int, defaults: tuple[bytes, ...]
) -> NodeDetails:
    what = f"node {index}"
    marker = (flags >> _NODE_FEATURES_SHIFT) & 0x7
    reminder = bool(flags & _NODE_REMINDER)
    addresses: tuple[bytes, ...] | None = None
    features: bytes | None = None
    if flags & _NODE_ADDRESSES:
        count = cur.uint(1, f"the address count of {what}")
        records = []
        for i in range(count):
            length = cur.uint(1, f"the length of address {i} of {what}")
            start = cur.pos
            record = cur.take(length, f"address {i} of {what}")
            _check_address(record, cur, start, f"address {i} of {what}")
            records.append(record)
        addresses = tuple(records)
    if 0 < marker < 7:
        if marker > len(defaults):
            raise cur.fail(
                f"{what} uses default node features {marker - 1} of {len(defaults)}",
                cur.pos,
            )
        features = defaults[marker - 1]
    elif marker == 7:
        features = cur.vec(f"the features of {what}")
    extra = cur.vec(f"the extra data of {what}") if flags & _NODE_EXTRA else None
    return NodeDetails(
        index=index,
        node_id=node_id,
        flags=flags,
        reminder=reminder,
        features_marker=marker,
        features=features,
        addresses=addresses,
        extra_data=extra,
    )


def _read_announcement(
    cur: _Cursor, i: int, previous_scid: int, node_ids: tuple[bytes, ...], version: int
) -> Announcement:
    what = f"announcement {i}"
    features = cur.vec(f"the features of {what}")
    start = cur.pos
    scid = previous_scid + cur.bigsize(f"the scid delta of {what}")
    if scid > _U64_MAX:
        raise cur.fail(f"the short_channel_id of {what} overflows u64", start)
    start = cur.pos
    index_1 = cur.bigsize(f"the node_id_1 index of {what}")
    index_2 = cur.bigsize(f"the node_id_2 index of {what}")
    has_extra = bool(index_2 & _EXTRA_DATA_BIT)
    index_2 &= ~_EXTRA_DATA_BIT
    if max(index_1, index_2) >= len(node_ids):
        raise cur.fail(
            f"{what} has node indices {index_1}, {index_2} of {len(node_ids)} node ids", start
        )
    funding: int | None = None
    excess = b""
    if version >= 2 and has_extra:
        begin, end = cur.vec_span(f"the extra data of {what}")
        inner = _Cursor(cur.data, begin, end)
        funding = inner.bigsize(f"the funding amount in the extra data of {what}")
        excess = cur.data[inner.pos : end]
    if node_ids[index_1] == node_ids[index_2]:
        raise cur.fail(f"{what} is a channel between node {index_1} and itself", start)
    return Announcement(
        short_channel_id=scid,
        node_index_1=index_1,
        node_index_2=index_2,
        node_id_1=node_ids[index_1],
        node_id_2=node_ids[index_2],
        features=features,
        funding_sat=funding,
        excess_data=excess,
    )


def _read_update(cur: _Cursor, i: int, scid: int, flags: int) -> Update:
    what = f"update {i}"

    def field(bit: int, n: int, name: str) -> int | None:
        return cur.uint(n, f"the {name} of {what}") if flags & bit else None

    return Update(
        short_channel_id=scid,
        flags=flags,
        direction=flags & _DIRECTION,
        disabled=bool(flags & _DISABLED),
        incremental=bool(flags & _INCREMENTAL),
        cltv_expiry_delta=field(_CLTV, 2, "cltv_expiry_delta"),
        htlc_minimum_msat=field(_HTLC_MIN, 8, "htlc_minimum_msat"),
        fee_base_msat=field(_FEE_BASE, 4, "fee_base_msat"),
        fee_proportional_millionths=field(_FEE_PROP, 4, "fee_proportional_millionths"),
        htlc_maximum_msat=field(_HTLC_MAX, 8, "htlc_maximum_msat"),
    )


def read_snapshot(data: bytes, *, allow_trailing: bool = False) -> Snapshot:
    """Decode one RGS snapshot (version 1 or 2) from ``data``.

    Follows ``lightning-rapid-gossip-sync`` 0.2.3 ``src/processing.rs``; see
    the module docstring for the layout and for what is checked. Raises
    :class:`~lngossip.errors.RgsError` (and nothing else) for malformed or
    truncated input, its message naming the field and its byte offset
    (``update i`` counts update records, v2 extra-data records included).
    Bytes after the last record raise too, unless ``allow_trailing`` (LDK
    ignores them); ``Snapshot.size`` is where the snapshot ended.
    """
    cur = _Cursor(bytes(data))
    if cur.take(3, "the prefix") != _PREFIX:
        raise cur.fail("unknown prefix (not b'LDK')", 0)
    version = cur.uint(1, "the version")
    if version not in (1, 2):
        raise cur.fail(f"unknown version {version}", 3)
    v2 = version == 2
    chain_hash = cur.take(32, "the chain hash")
    latest_seen = cur.uint(4, "latest_seen")

    default_features: list[bytes] = []
    if v2:
        count = cur.uint(1, "the default node features count")
        for i in range(count):
            default_features.append(cur.vec(f"default node features {i}"))
    defaults_table = tuple(default_features)

    start = cur.pos
    node_count = cur.uint(4, "the node id count")
    if node_count > MAX_NODE_COUNT:
        raise cur.fail(f"node id count {node_count} above {MAX_NODE_COUNT}", start)
    node_ids: list[bytes] = []
    details: list[NodeDetails] = []
    for i in range(node_count):
        node_id, flags = _read_node_id(cur, f"node id {i}", v2)
        node_ids.append(node_id)
        if v2:
            details.append(_read_node_details(cur, i, node_id, flags, defaults_table))
    ids = tuple(node_ids)

    announcements: list[Announcement] = []
    previous_scid = 0
    announcement_count = cur.uint(4, "the announcement count")
    for i in range(announcement_count):
        ann = _read_announcement(cur, i, previous_scid, ids, version)
        previous_scid = ann.short_channel_id
        announcements.append(ann)

    start = cur.pos
    update_count = cur.uint(4, "the update count")
    if update_count > MAX_UPDATE_COUNT:
        raise cur.fail(f"update count {update_count} above {MAX_UPDATE_COUNT}", start)
    defaults: Defaults | None = None
    updates: list[Update] = []
    if update_count:
        defaults = Defaults(
            cltv_expiry_delta=cur.uint(2, "the default cltv_expiry_delta"),
            htlc_minimum_msat=cur.uint(8, "the default htlc_minimum_msat"),
            fee_base_msat=cur.uint(4, "the default fee_base_msat"),
            fee_proportional_millionths=cur.uint(4, "the default fee_proportional_millionths"),
            htlc_maximum_msat=cur.uint(8, "the default htlc_maximum_msat"),
        )
        previous_scid = 0
        previous_direction: int | None = None
        for i in range(update_count):
            start = cur.pos
            delta = cur.bigsize(f"the scid delta of update {i}")
            scid = previous_scid + delta
            if scid > _U64_MAX:
                raise cur.fail(f"the short_channel_id of update {i} overflows u64", start)
            previous_scid = scid
            flags = cur.uint(1, f"the flags of update {i}")
            if v2:
                direction = flags & _DIRECTION
                same_direction = direction == previous_direction
                previous_direction = direction
                if delta == 0 and same_direction:
                    extra = cur.vec(f"the extra data of update {i}")
                    # A previous direction means a previous update record.
                    last = updates[-1]
                    updates[-1] = replace(last, extra_data=(*last.extra_data, extra))
                    continue
            updates.append(_read_update(cur, i, scid, flags))

    if cur.pos != len(cur.data) and not allow_trailing:
        raise cur.fail(f"{len(cur.data) - cur.pos} bytes after the snapshot")
    return Snapshot(
        version=version,
        chain_hash=chain_hash,
        latest_seen=latest_seen,
        default_node_features=defaults_table,
        node_ids=ids,
        node_details=tuple(details),
        announcements=tuple(announcements),
        update_count=update_count,
        defaults=defaults,
        updates=tuple(updates),
        size=cur.pos,
    )
