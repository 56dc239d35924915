"""A read-only view of a pipeline's gossip graph, with decoded BOLT #7 fields.

The graph belongs to the engine (``rust/core/src/graph.rs`` for
:class:`lngossip.Pipeline`, :class:`lngossip.baseline.Graph` for the
baseline); ``pipeline.graph`` is its raw reader and :class:`Graph` wraps it::

    from lngossip import Graph
    g = Graph(pipeline)
    len(g)                                   # channels
    c = g.channel(scid)                      # Channel | None
    c.updates[0].fee_base_msat               # direction 0: signed by node_id_1
    g.node(node_id).alias
    [c.short_channel_id for c in g.channels_of(node_id)]

Every item is decoded from the accepted message bytes (``raw``) at the
moment it is read. One call reads under the engine's lock, so an item never
mixes two batches and a batch is seen whole or not at all; iterating reads
page by page, so a long iteration sees the graph as it changes. Reads hold
the lock for microseconds per item: they never hold up ``submit`` for long.

Units: fees in millisatoshi (``fee_base_msat``) and millionths
(``fee_proportional_millionths``), HTLC limits in millisatoshi,
``cltv_expiry_delta`` in blocks, timestamps in seconds since the Unix epoch.
"""

from __future__ import annotations

import importlib
import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from lngossip.errors import ConfigError
from lngossip.wire import (
    CHANNEL_ANNOUNCEMENT_SIGNED_FROM,
    CHANNEL_UPDATE_HTLC_MAXIMUM_AT,
    CHANNEL_UPDATE_SCID_AT,
    NODE_ANNOUNCEMENT_FLEN_AT,
    channel_announcement_fields_at,
    node_announcement_fields_at,
)

if TYPE_CHECKING:
    from lngossip.engine import PipelineLike

__all__ = ["Address", "Channel", "ChannelUpdate", "Graph", "GraphReader", "Node", "dump"]

#: Items read per locked call while iterating.
PAGE = 1024


class GraphReader(Protocol):
    """The raw graph reader both engines expose as ``pipeline.graph``
    (documented in ``lngossip/_core.pyi``)."""

    def __len__(self) -> int: ...
    def node_count(self) -> int: ...
    def channel(self, short_channel_id: int) -> tuple[bytes, bytes | None, bytes | None] | None: ...
    def node(self, node_id: bytes) -> tuple[bytes | None, list[int]] | None: ...
    def short_channel_ids(self, after: int | None = None, limit: int = ...) -> list[int]: ...
    def node_ids(self, after: bytes | None = None, limit: int = ...) -> list[bytes]: ...
    def short_channel_ids_in_blocks(
        self,
        first_blocknum: int,
        number_of_blocks: int,
        after: int | None = None,
        limit: int = ...,
    ) -> list[int]: ...
    def gossip_after(
        self,
        cursor: bytes,
        first_timestamp: int = 0,
        timestamp_range: int = ...,
        max_messages: int = ...,
    ) -> tuple[list[bytes], bytes | None]: ...
    def messages_for(self, short_channel_ids: list[int]) -> list[bytes]: ...
    def newest_timestamp(self) -> int | None: ...
    def message_bytes(self) -> int: ...
    def columns(self) -> dict[str, dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class ChannelUpdate:
    """One direction of a channel: its newest accepted ``channel_update`` (BOLT #7)."""

    direction: int
    """0: from ``node_id_1`` (``channel_flags`` bit 0 clear), 1: from ``node_id_2``."""
    timestamp: int
    """Seconds since the Unix epoch."""
    message_flags: int
    channel_flags: int
    disabled: bool
    """``channel_flags`` bit 1: the direction is disabled."""
    cltv_expiry_delta: int
    """Blocks."""
    htlc_minimum_msat: int
    fee_base_msat: int
    fee_proportional_millionths: int
    htlc_maximum_msat: int | None
    """``None`` when ``message_flags`` bit 0 is clear (updates before 2022)."""
    raw: bytes


@dataclass(frozen=True, slots=True)
class Channel:
    """An accepted channel: its ``channel_announcement`` and newest updates."""

    short_channel_id: int
    """``block << 40 | transaction << 16 | output``."""
    chain_hash: bytes
    node_id_1: bytes
    node_id_2: bytes
    bitcoin_key_1: bytes
    bitcoin_key_2: bytes
    features: bytes
    updates: tuple[ChannelUpdate | None, ChannelUpdate | None]
    """By direction (0: ``node_id_1``'s)."""
    raw: bytes
    """The ``channel_announcement``."""

    @property
    def short_channel_id_str(self) -> str:
        """``BLOCKxTXxOUTPUT``, as Core Lightning and LDK print it."""
        s = self.short_channel_id
        return f"{s >> 40}x{(s >> 16) & 0xFFFFFF}x{s & 0xFFFF}"


@dataclass(frozen=True, slots=True)
class Address:
    """One BOLT #7 address descriptor of a ``node_announcement``."""

    type: int
    """1 IPv4, 2 IPv6, 3 Tor v2 (deprecated), 4 Tor v3, 5 DNS hostname; other: unknown."""
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Node:
    """A node named by an accepted channel or ``node_announcement``.

    The announcement fields are ``None`` / empty when no announcement was accepted.
    """

    node_id: bytes
    channels: tuple[int, ...]
    """``short_channel_id``s of its accepted channels, ascending."""
    timestamp: int | None
    features: bytes
    rgb_color: bytes
    """3 bytes."""
    alias: str
    """32-byte alias decoded as UTF-8 (invalid bytes replaced), trailing NULs removed."""
    addresses: tuple[Address, ...]
    raw: bytes | None
    """The ``node_announcement``."""


_ADDR_LEN = {1: 4, 2: 16, 3: 10, 4: 35}


def _addresses(data: bytes) -> tuple[Address, ...]:
    """Decode address descriptors; stops at the first unknown type (BOLT #7:
    the rest cannot be parsed) or truncated descriptor."""
    out: list[Address] = []
    p = 0
    while p < len(data):
        t = data[p]
        p += 1
        if t == 5:
            if p >= len(data):
                break
            n = data[p]
            host_b, p = data[p + 1 : p + 1 + n], p + 1 + n
            host = host_b.decode("ascii", "replace")
        elif t in _ADDR_LEN:
            n = _ADDR_LEN[t]
            raw, p = data[p : p + n], p + n
            if len(raw) < n:
                break
            if t == 1:
                host = str(ipaddress.IPv4Address(raw))
            elif t == 2:
                host = str(ipaddress.IPv6Address(raw))
            else:
                host = raw.hex()
        else:
            break
        if p + 2 > len(data):
            break
        (port,) = struct.unpack_from(">H", data, p)
        p += 2
        out.append(Address(t, host, port))
    return tuple(out)


def decode_update(msg: bytes) -> ChannelUpdate:
    """Decode an accepted ``channel_update`` (validated by the engine)."""
    _scid, ts, mflags, cflags, cltv, hmin, fbase, fprop = struct.unpack_from(
        ">QIBBHQII", msg, CHANNEL_UPDATE_SCID_AT
    )
    hmax = struct.unpack_from(">Q", msg, CHANNEL_UPDATE_HTLC_MAXIMUM_AT)[0] if mflags & 1 else None
    return ChannelUpdate(
        cflags & 1, ts, mflags, cflags, bool(cflags & 2), cltv, hmin, fbase, fprop, hmax, msg
    )


def decode_channel(ann: bytes, u0: bytes | None, u1: bytes | None) -> Channel:
    """Decode an accepted ``channel_announcement`` and its updates."""
    p = channel_announcement_fields_at(ann)
    features = ann[CHANNEL_ANNOUNCEMENT_SIGNED_FROM + 2 : p]
    chain_hash = ann[p : p + 32]
    (scid,) = struct.unpack_from(">Q", ann, p + 32)
    k = [ann[p + 40 + 33 * i : p + 73 + 33 * i] for i in range(4)]
    ups = (decode_update(u0) if u0 else None, decode_update(u1) if u1 else None)
    return Channel(scid, chain_hash, k[0], k[1], k[2], k[3], features, ups, ann)


def decode_node(node_id: bytes, ann: bytes | None, channels: list[int]) -> Node:
    """Decode an accepted ``node_announcement`` (or none) of ``node_id``."""
    if ann is None:
        return Node(node_id, tuple(channels), None, b"", b"", "", (), None)
    p = node_announcement_fields_at(ann)
    features = ann[NODE_ANNOUNCEMENT_FLEN_AT + 2 : p]
    (ts,) = struct.unpack_from(">I", ann, p)
    p += 4 + 33
    rgb, alias = ann[p : p + 3], ann[p + 3 : p + 35]
    (alen,) = struct.unpack_from(">H", ann, p + 35)
    addrs = _addresses(ann[p + 37 : p + 37 + alen])
    name = alias.rstrip(b"\0").decode("utf-8", "replace")
    return Node(node_id, tuple(channels), ts, features, rgb, name, addrs, ann)


def _extra(module: str, method: str) -> Any:
    """Import ``module``, an optional extra of ``method``.

    Raises:
        ImportError: naming the extra to install.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{method} needs {module}: pip install 'lngossip[{module}]'") from e


class Graph:
    """Read-only, decoded view of ``pipeline``'s graph (either engine).

    Args:
        pipeline: a :class:`lngossip.Pipeline` or :class:`lngossip.baseline.Pipeline`
            (anything with a ``graph`` reader).
    """

    def __init__(self, pipeline: PipelineLike) -> None:
        self._r: GraphReader = pipeline.graph

    @property
    def reader(self) -> GraphReader:
        """The raw reader (message bytes, cursors) this view decodes."""
        return self._r

    def __len__(self) -> int:
        """Visible channels."""
        return len(self._r)

    @property
    def node_count(self) -> int:
        """Visible nodes (with a channel or an announcement)."""
        return self._r.node_count()

    def __contains__(self, short_channel_id: object) -> bool:
        return isinstance(short_channel_id, int) and self._r.channel(short_channel_id) is not None

    def channel(self, short_channel_id: int) -> Channel | None:
        """The channel ``short_channel_id``, or ``None``."""
        raw = self._r.channel(short_channel_id)
        return None if raw is None else decode_channel(*raw)

    def node(self, node_id: bytes) -> Node | None:
        """The node with the 33-byte ``node_id``, or ``None``.

        Raises:
            ConfigError: when ``node_id`` is not 33 bytes.
        """
        raw = self._r.node(node_id)
        return None if raw is None else decode_node(node_id, raw[0], raw[1])

    def channels_of(self, node_id: bytes) -> list[Channel]:
        """The channels of ``node_id``, ascending by ``short_channel_id``."""
        raw = self._r.node(node_id)
        if raw is None:
            return []
        return [c for s in raw[1] if (c := self.channel(s)) is not None]

    def __iter__(self) -> Iterator[Channel]:
        """Every channel, ascending by ``short_channel_id``, read a page at a time."""
        after: int | None = None
        while page := self._r.short_channel_ids(after, PAGE):
            for s in page:
                c = self.channel(s)
                if c is not None:
                    yield c
            after = page[-1]

    def nodes(self) -> Iterator[Node]:
        """Every node, ascending by ``node_id``, read a page at a time."""
        after: bytes | None = None
        while page := self._r.node_ids(after, PAGE):
            for n in page:
                node = self.node(n)
                if node is not None:
                    yield node
            after = page[-1]

    def to_numpy(self) -> dict[str, dict[str, Any]]:
        """The graph as columns: ``{"channels": {...}, "updates": {...},
        "nodes": {...}}``, each a dict of equal-length 1-D numpy arrays named
        after the BOLT #7 fields, read in one locked pass (the Rust engine
        builds them in the core without a Python object per row, in tens of
        milliseconds for the mainnet graph; the baseline's are slow).

        ``channels`` (ascending ``short_channel_id``): ``short_channel_id``
        uint64; ``node_1``, ``node_2`` uint32 row indices into ``nodes``;
        ``capacity_sat`` uint64 (0: unknown, gossip does not carry it);
        ``features`` uint64 (bit n = feature bit n of the announcement,
        bits above 63 dropped); ``seen`` uint32 (when it was accepted, s).

        ``updates`` (one row per channel direction with an update):
        ``short_channel_id`` uint64; ``channel`` uint32 (row in
        ``channels``); ``direction`` uint8 (bit 0 of ``channel_flags``,
        0: from ``node_id_1``); ``timestamp`` uint32 (s); ``disabled`` bool
        (bit 1); ``message_flags``, ``channel_flags`` uint8;
        ``cltv_expiry_delta`` uint16 (blocks); ``htlc_minimum_msat``,
        ``htlc_maximum_msat`` uint64 (msat; the maximum is 0 when the
        update has none); ``fee_base_msat`` uint32 (msat);
        ``fee_proportional_millionths`` uint32; ``seen`` uint32 (s).

        ``nodes`` (ascending ``node_id``, every node with a channel or an
        announcement): ``node_id`` ``S33`` (33 bytes); ``timestamp`` uint32
        (0: no ``node_announcement``); ``alias`` ``S32``; ``rgb_color``
        uint32 (0xRRGGBB); ``addresses`` uint16 (descriptors announced);
        ``channels`` uint32 (degree).

        numpy drops trailing NUL bytes when it hands out one ``S`` element
        (``nodes["node_id"][i]``); ``bytes(x).ljust(33, b"\0")`` or
        ``nodes["node_id"][i:i+1].tobytes()`` gives the exact 33 bytes.
        """
        return self._r.columns()

    def to_pandas(self) -> dict[str, Any]:
        """:meth:`to_numpy` as three ``pandas.DataFrame``s (``channels``,
        ``updates``, ``nodes``); ``node_id`` and ``alias`` become ``bytes``
        and ``str`` columns. Needs ``pip install lngossip[pandas]``.

        Raises:
            ImportError: when pandas is not installed (with the extra to install).
        """
        pd = _extra("pandas", "to_pandas")
        cols = self.to_numpy()
        nodes = dict(cols["nodes"])
        nodes["node_id"] = [bytes(x).ljust(33, b"\0") for x in nodes["node_id"]]
        nodes["alias"] = [bytes(x).decode("utf-8", "replace") for x in nodes["alias"]]
        return {
            "channels": pd.DataFrame(cols["channels"]),
            "updates": pd.DataFrame(cols["updates"]),
            "nodes": pd.DataFrame(nodes),
        }

    def to_networkx(self) -> Any:
        """The graph as a ``networkx.MultiDiGraph``: one node per network
        node (keyed by its 33-byte ``node_id``, with ``alias``), one edge per
        channel direction with an update, from the signing node, keyed by
        ``short_channel_id``, with the update's policy fields as attributes
        (fees in msat and millionths, ``cltv_expiry_delta`` in blocks,
        ``disabled``). Needs ``pip install lngossip[networkx]``.

        Raises:
            ImportError: when networkx is not installed (with the extra to install).
        """
        nx = _extra("networkx", "to_networkx")
        cols = self.to_numpy()
        n, c, u = cols["nodes"], cols["channels"], cols["updates"]
        ids = [bytes(x).ljust(33, b"\0") for x in n["node_id"]]
        g = nx.MultiDiGraph()
        for i, a in zip(ids, n["alias"], strict=True):
            g.add_node(i, alias=bytes(a).decode("utf-8", "replace"))
        ends = (c["node_1"][u["channel"]], c["node_2"][u["channel"]])
        fields = (
            "cltv_expiry_delta", "htlc_minimum_msat", "htlc_maximum_msat",
            "fee_base_msat", "fee_proportional_millionths", "timestamp",
        )  # fmt: skip
        lists = {f: u[f].tolist() for f in fields}
        disabled = u["disabled"].tolist()
        for r, (scid, d) in enumerate(
            zip(u["short_channel_id"].tolist(), u["direction"].tolist(), strict=True)
        ):
            a, b = int(ends[0][r]), int(ends[1][r])
            src, dst = (a, b) if d == 0 else (b, a)
            attrs = {f: lists[f][r] for f in fields}
            g.add_edge(ids[src], ids[dst], key=scid, disabled=disabled[r], **attrs)
        return g

    def rgs_snapshot(self, since: int = 0, version: int = 2) -> tuple[bytes, dict[str, int]]:
        """A Rapid Gossip Sync snapshot of the graph (the format LDK's
        ``lightning-rapid-gossip-sync`` 0.2 applies; the rules are in
        ``rust/core/src/rgs.rs``): full for ``since`` 0, otherwise
        incremental for a client whose last snapshot returned ``since``
        (seconds since the epoch). Returns the bytes and what they hold:
        ``latest_seen`` (seconds, rounded down to the 3-hour grid: the
        ``since`` of the client's next request), ``bytes``, ``node_ids``,
        ``node_details``, ``default_node_features``,
        ``channel_announcements``, ``updates_full``, ``updates_incremental``,
        ``reminders``, ``version``, ``since``.

        Raises:
            ConfigError: ``version`` not 1 or 2, ``since`` not a u32, or the
                baseline engine (snapshots are written by the Rust core only).
        """
        build = getattr(self._r, "rgs_snapshot", None)
        if build is None:
            raise ConfigError("Rapid Gossip Sync snapshots are written by the Rust engine only")
        out: tuple[bytes, dict[str, int]] = build(since, version)
        return out


def dump(
    reader: GraphReader, first_timestamp: int = 0, timestamp_range: int = 0xFFFFFFFF
) -> Iterator[bytes]:
    """Every message a ``gossip_timestamp_filter`` of ``[first_timestamp,
    first_timestamp + timestamp_range)`` would be answered with, in BOLT #7
    order, read through the cursor a page at a time."""
    cursor: bytes | None = b""
    while cursor is not None:
        page, cursor = reader.gossip_after(cursor, first_timestamp, timestamp_range, PAGE)
        yield from page
