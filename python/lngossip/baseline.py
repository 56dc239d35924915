"""The pure-Python baseline engine: the same API and decisions as the Rust
:class:`lngossip.Pipeline`, written as a careful Python developer would
without the extension (standard library plus the ``secp256k1`` package).

It also runs every cheap check before any signature check, caches parsed
public keys, and drains the queue round-robin; verification runs in one
thread, one signature at a time. Benchmarks run it beside the Rust engine
and parity tests demand identical decisions, so every rule here mirrors
``rust/core/src/pipeline.rs`` (and its modules) line for line.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import secp256k1

from lngossip._core import LIMITS
from lngossip.engine import DEFAULT_BATCH
from lngossip.errors import ConfigError, MalformedMessage
from lngossip.types import Counters
from lngossip.wire import (
    CHANNEL_ANNOUNCEMENT,
    CHANNEL_ANNOUNCEMENT_SIGNATURES_AT,
    CHANNEL_UPDATE,
    DECISIONS,
    MAINNET_CHAIN_HASH,
    MALFORMED_REASONS,
    MSG_KINDS,
    SIGNED_FROM,
    TYPE_LEN,
    Decision,
    Gossip,
    Outcome,
    Policy,
    kind_of,
    node_announcement_fields_at,
    parse_message,
)

__all__ = ["Admission", "Graph", "Pipeline", "ProcessResult"]

#: Every policy: timestamps more than 24 h ahead of "now" are ``too_new``
#: (``pipeline.rs`` ``MAX_AHEAD_S``: a message from the future can never be
#: right, and one stamped years ahead would freeze its channel direction).
MAX_AHEAD_S = 24 * 3600
#: Live policy: timestamps more than 14 days behind "now" are ``too_old``.
LIVE_MAX_BEHIND_S = 14 * 24 * 3600
#: Orphan cache bounds per policy (``orphans.rs``): Core Lightning's 10,000
#: updates (4 MB) live; a million updates (256 MiB) for archives.
ORPHAN_LIMITS = {"live": (10_000, 4_000_000), "archive": (1_000_000, 256 << 20)}


def _checked(argument: str, value: int, bound: str) -> int:
    """``value`` of ``argument`` if it lies in ``LIMITS[bound]`` (the core's
    ``limits.rs``, the one home of every bound).

    Raises:
        ConfigError: naming the argument and the range, as the Rust engine does.
    """
    lo, hi = LIMITS[bound]
    if not lo <= value <= hi:
        raise ConfigError(f"{argument} must be between {lo} and {hi}, got {value}")
    return value


#: Spam limit of the live policy (``ratelimit.rs``): burst, seconds per token.
RATE_LIMIT = (10, 60)


class _RateLimiter:
    """Token buckets per channel direction and node (see rust/core/src/ratelimit.rs)."""

    def __init__(self, burst: int, refill_s: int) -> None:
        self.burst, self.refill = burst, max(refill_s, 1)
        self.buckets: dict[object, tuple[int, int]] = {}

    def _refilled(self, b: tuple[int, int], now: int) -> tuple[int, int]:
        tokens, since = b
        earned = max(now - since, 0) // self.refill
        t = min(tokens + earned, self.burst)
        return t, (now if t >= self.burst else since + earned * self.refill)

    def allows(self, key: object, now: int) -> bool:
        b = self.buckets.get(key)
        return b is None or self._refilled(b, now)[0] > 0

    def spend(self, key: object, now: int) -> bool:
        tokens, since = self._refilled(self.buckets.get(key, (self.burst, now)), now)
        if tokens == 0:
            self.buckets[key] = (tokens, since)
            return False
        self.buckets[key] = (tokens - 1, since)
        return True


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to :meth:`Pipeline.submit` (same fields as the Rust class)."""

    seq: int
    decision: Decision
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ProcessResult:
    """What one :meth:`Pipeline.process` call decided.

    ``outcomes`` holds an :class:`~lngossip.wire.Outcome` per decision;
    ``accepted`` the accepted messages in dependency order.
    """

    outcomes: list[Outcome]
    accepted: list[bytes]
    signatures_verified: int


@dataclass(slots=True)
class _Pending:
    seq: int
    peer: int
    gossip: Gossip
    msg: bytes
    orphan: bool
    # seen-set hash, forgotten when the decision is not final for these bytes
    hash: bytes


@dataclass(slots=True)
class Stored:
    """One accepted message as the graph keeps it (``graph.rs`` ``Stored``)."""

    msg: bytes
    #: update / node announcement ``timestamp``; for a channel announcement
    #: the time it was accepted (seconds)
    timestamp: int
    #: when it was accepted (seconds): the clock under the live policy, an
    #: update's or node announcement's own ``timestamp`` under the archive
    #: policy (``graph.rs`` ``Stored::seen``)
    seen: int


@dataclass(slots=True)
class _Channel:
    node_id_1: bytes
    node_id_2: bytes
    update_timestamp: list[int | None] = field(default_factory=lambda: [None, None])
    announcement: Stored | None = None
    updates: list[Stored | None] = field(default_factory=lambda: [None, None])


@dataclass(slots=True)
class _Node:
    channels: list[int] = field(default_factory=list)
    timestamp: int | None = None
    announcement: Stored | None = None
    visible_channels: int = 0

    def visible(self) -> bool:
        return self.announcement is not None or self.visible_channels > 0


class Graph:
    """The baseline's gossip graph: ``rust/core/src/graph.rs`` method by
    method (decision state, committed messages, the BOLT #7 queries), with
    the raw reader API of ``_core.GraphReader`` (``len``, ``channel``,
    ``node``, ``gossip_after``, ...), so :class:`lngossip.graph.Graph` and
    the node read both engines alike. Ordered queries keep a sorted key
    list, rebuilt after the keys change.
    """

    def __init__(self) -> None:
        self._channels: dict[int, _Channel] = {}
        self._nodes: dict[bytes, _Node] = {}
        self._visible_channels = 0
        self._visible_nodes = 0
        self._sorted_scids: list[int] | None = None
        self._sorted_nodes: list[bytes] | None = None

    # -- decision state -----------------------------------------------------
    def has_channel(self, scid: int) -> bool:
        return scid in self._channels

    def update_is_stale(self, scid: int, direction: int, ts: int) -> bool:
        c = self._channels.get(scid)
        t = c.update_timestamp[direction] if c else None
        return t is not None and ts <= t

    def node_is_stale(self, node_id: bytes, ts: int) -> bool:
        n = self._nodes.get(node_id)
        return n is not None and n.timestamp is not None and ts <= n.timestamp

    def node_has_channel(self, node_id: bytes) -> bool:
        n = self._nodes.get(node_id)
        return n is not None and bool(n.channels)

    def add_channel(self, scid: int, node_id_1: bytes, node_id_2: bytes) -> None:
        self._channels[scid] = _Channel(node_id_1, node_id_2)
        self._sorted_scids = None
        for n in (node_id_1, node_id_2):
            self._node_entry(n).channels.append(scid)

    def _node_entry(self, node_id: bytes) -> _Node:
        n = self._nodes.get(node_id)
        if n is None:
            n = self._nodes[node_id] = _Node()
            self._sorted_nodes = None
        return n

    def update_key(self, scid: int, direction: int) -> bytes | None:
        c = self._channels.get(scid)
        if c is None:
            return None
        return c.node_id_2 if direction else c.node_id_1

    def set_update_timestamp(self, scid: int, direction: int, ts: int) -> None:
        c = self._channels.get(scid)
        if c is not None:
            c.update_timestamp[direction] = ts

    def set_node_timestamp(self, node_id: bytes, ts: int) -> None:
        self._node_entry(node_id).timestamp = ts

    # -- messages -----------------------------------------------------------
    def commit(self, msg: bytes, g: Gossip, seen: int) -> Stored | None:
        """Keep an accepted message seen at ``seen`` (seconds); returns the
        one it supersedes."""
        if g.type == CHANNEL_ANNOUNCEMENT:
            assert g.short_channel_id is not None
            c = self._channels.get(g.short_channel_id)
            if c is None or c.announcement is not None:
                return None
            c.announcement = Stored(msg, seen, seen)
            self._visible_channels += 1
            for nid in (c.node_id_1, c.node_id_2):
                n = self._nodes.get(nid)
                if n is not None:
                    was = n.visible()
                    n.visible_channels += 1
                    if not was:
                        self._visible_nodes += 1
            return None
        assert g.timestamp is not None
        if g.type == CHANNEL_UPDATE:
            assert g.short_channel_id is not None
            c = self._channels.get(g.short_channel_id)
            if c is None:
                return None
            d = g.channel_flags & 1
            old = c.updates[d]
            c.updates[d] = Stored(msg, g.timestamp, seen)
            return old
        n = self._node_entry(g.keys[0])
        was = n.visible()
        old = n.announcement
        n.announcement = Stored(msg, g.timestamp, seen)
        if not was:
            self._visible_nodes += 1
        return old

    def prune(self, horizon: int) -> tuple[int, int, list[Stored]]:
        """Remove channels whose newest updates are older than ``horizon``
        (``graph.rs`` ``prune``); returns channels, nodes, removed messages."""
        dead = []
        for scid, c in self._channels.items():
            if c.announcement is None:
                continue
            ann_ts = c.announcement.timestamp
            newest = max(u.timestamp if u is not None else ann_ts for u in c.updates)
            if newest < horizon:
                dead.append(scid)
        channels = nodes = 0
        removed: list[Stored] = []
        for scid in dead:
            c = self._channels.pop(scid)
            self._sorted_scids = None
            channels += 1
            self._visible_channels -= 1
            if c.announcement is not None:
                removed.append(c.announcement)
            removed.extend(u for u in c.updates if u is not None)
            for nid in (c.node_id_1, c.node_id_2):
                n = self._nodes.get(nid)
                if n is None:
                    continue
                n.channels.remove(scid)
                n.visible_channels = max(n.visible_channels - 1, 0)
                if not n.channels:
                    del self._nodes[nid]
                    self._sorted_nodes = None
                    self._visible_nodes -= 1
                    if n.announcement is not None:
                        nodes += 1
                        removed.append(n.announcement)
                elif not n.visible():
                    self._visible_nodes -= 1
        return channels, nodes, removed

    # -- the raw reader (committed messages only) ------------------------------
    def __len__(self) -> int:
        return self._visible_channels

    def node_count(self) -> int:
        return self._visible_nodes

    def _visible(self, scid: int) -> _Channel | None:
        c = self._channels.get(scid)
        return c if c is not None and c.announcement is not None else None

    def channel(self, short_channel_id: int) -> tuple[bytes, bytes | None, bytes | None] | None:
        c = self._visible(short_channel_id)
        if c is None or c.announcement is None:
            return None
        u0, u1 = c.updates
        return (c.announcement.msg, u0.msg if u0 else None, u1.msg if u1 else None)

    def _channels_of(self, node_id: bytes) -> list[int]:
        n = self._nodes.get(node_id)
        return sorted(s for s in n.channels if self._visible(s)) if n else []

    def node(self, node_id: bytes) -> tuple[bytes | None, list[int]] | None:
        if len(node_id) != 33:
            raise ConfigError(f"node_id must be 33 bytes, got {len(node_id)}")
        n = self._nodes.get(node_id)
        if n is None or not n.visible():
            return None
        return (n.announcement.msg if n.announcement else None, self._channels_of(node_id))

    def _scids(self) -> list[int]:
        if self._sorted_scids is None:
            self._sorted_scids = sorted(self._channels)
        return self._sorted_scids

    def _node_ids(self) -> list[bytes]:
        if self._sorted_nodes is None:
            self._sorted_nodes = sorted(self._nodes)
        return self._sorted_nodes

    def short_channel_ids(self, after: int | None = None, limit: int = 1024) -> list[int]:
        _checked("limit", limit, "page")
        keys = self._scids()
        i = 0 if after is None else bisect.bisect_right(keys, after)
        out: list[int] = []
        for s in itertools.islice(keys, i, None):
            if len(out) >= limit:
                break
            if self._visible(s):
                out.append(s)
        return out

    def node_ids(self, after: bytes | None = None, limit: int = 1024) -> list[bytes]:
        _checked("limit", limit, "page")
        keys = self._node_ids()
        i = 0 if after is None else bisect.bisect_right(keys, after)
        out: list[bytes] = []
        for k in itertools.islice(keys, i, None):
            if len(out) >= limit:
                break
            if self._nodes[k].visible():
                out.append(k)
        return out

    def short_channel_ids_in_blocks(
        self,
        first_blocknum: int,
        number_of_blocks: int,
        after: int | None = None,
        limit: int = 8000,
    ) -> list[int]:
        _checked("limit", limit, "page")
        if number_of_blocks == 0 or first_blocknum >= 1 << 24:
            return []
        start = first_blocknum << 40
        end = min(first_blocknum + number_of_blocks, 1 << 24) << 40
        keys = self._scids()
        i = bisect.bisect_left(keys, start)
        if after is not None and after >= start:
            i = bisect.bisect_right(keys, after)
        out: list[int] = []
        for s in itertools.islice(keys, i, None):
            if s >= end or len(out) >= limit:
                break
            if self._visible(s):
                out.append(s)
        return out

    def _channel_messages(self, c: _Channel, lo: int, hi: int, out: list[bytes]) -> None:
        if c.announcement is None:
            return
        ups = [u for u in c.updates if u is not None and lo <= u.timestamp < hi]
        if ups or (lo == 0 and c.updates[0] is None and c.updates[1] is None):
            out.append(c.announcement.msg)
            out.extend(u.msg for u in ups)

    def gossip_after(
        self,
        cursor: bytes,
        first_timestamp: int = 0,
        timestamp_range: int = 0xFFFFFFFF,
        max_messages: int = 256,
    ) -> tuple[list[bytes], bytes | None]:
        lo, hi = first_timestamp, first_timestamp + timestamp_range
        out: list[bytes] = []
        top = _checked("max_messages", max_messages, "page")
        if cursor == b"" or len(cursor) == 8:
            keys = self._scids()
            i = 0 if cursor == b"" else bisect.bisect_right(keys, int.from_bytes(cursor, "big"))
            for scid in itertools.islice(keys, i, None):
                self._channel_messages(self._channels[scid], lo, hi, out)
                if len(out) >= top:
                    return out, scid.to_bytes(8, "big")
            after_node = None
        elif cursor[:1] == b"N" and len(cursor) in (1, 34):
            after_node = cursor[1:] or None
        else:
            raise ConfigError("not a graph cursor")
        nkeys = self._node_ids()
        j = 0 if after_node is None else bisect.bisect_right(nkeys, after_node)
        for nid in itertools.islice(nkeys, j, None):
            a = self._nodes[nid].announcement
            if a is not None and lo <= a.timestamp < hi:
                out.append(a.msg)
                if len(out) >= top:
                    return out, b"N" + nid
        return out, None

    def columns(self) -> dict[str, dict[str, Any]]:
        """The graph as numpy columns (``columns.rs``, one Python step per
        row here: the baseline is slow by design)."""
        import numpy as np

        from lngossip.graph import _addresses, decode_channel, decode_update

        node_rows = [k for k in self._node_ids() if self._nodes[k].visible()]
        row = {k: i for i, k in enumerate(node_rows)}
        nodes: dict[str, list[Any]] = {
            k: [] for k in ("node_id", "timestamp", "alias", "rgb_color", "addresses", "channels")
        }
        for k in node_rows:
            n = self._nodes[k]
            nodes["node_id"].append(k)
            nodes["channels"].append(n.visible_channels)
            ann = n.announcement.msg if n.announcement else None
            if ann is None:
                fields: tuple[int, bytes, int, int] = (0, bytes(32), 0, 0)
            else:
                p = node_announcement_fields_at(ann)
                ts = int.from_bytes(ann[p : p + 4], "big")
                p += 4 + 33
                rgb, alias = int.from_bytes(ann[p : p + 3], "big"), ann[p + 3 : p + 35]
                alen = int.from_bytes(ann[p + 35 : p + 37], "big")
                fields = (ts, alias, rgb, len(_addresses(ann[p + 37 : p + 37 + alen])))
            for name, v in zip(
                ("timestamp", "alias", "rgb_color", "addresses"), fields, strict=True
            ):
                nodes[name].append(v)
        ch_names = ("short_channel_id", "node_1", "node_2", "capacity_sat", "features", "seen")
        channels: dict[str, list[Any]] = {k: [] for k in ch_names}
        up_names = (
            "short_channel_id", "channel", "direction", "timestamp", "disabled",
            "message_flags", "channel_flags", "cltv_expiry_delta", "htlc_minimum_msat",
            "htlc_maximum_msat", "fee_base_msat", "fee_proportional_millionths", "seen",
        )  # fmt: skip
        updates: dict[str, list[Any]] = {k: [] for k in up_names}
        for scid in self._scids():
            c = self._channels[scid]
            if c.announcement is None:
                continue
            ci = len(channels["short_channel_id"])
            ch = decode_channel(c.announcement.msg, None, None)
            feats = int.from_bytes(ch.features[-8:], "big") if ch.features else 0
            for name, v in zip(
                ch_names,
                (scid, row[c.node_id_1], row[c.node_id_2], 0, feats, c.announcement.seen),
                strict=True,
            ):
                channels[name].append(v)
            for u in c.updates:
                if u is None:
                    continue
                d = decode_update(u.msg)
                vals = (
                    scid, ci, d.direction, d.timestamp, d.disabled, d.message_flags,
                    d.channel_flags, d.cltv_expiry_delta, d.htlc_minimum_msat,
                    d.htlc_maximum_msat or 0, d.fee_base_msat, d.fee_proportional_millionths,
                    u.seen,
                )  # fmt: skip
                for name, v in zip(up_names, vals, strict=True):
                    updates[name].append(v)
        dtypes: dict[str, Any] = {
            "short_channel_id": np.uint64, "node_1": np.uint32, "node_2": np.uint32,
            "capacity_sat": np.uint64, "features": np.uint64, "seen": np.uint32,
            "channel": np.uint32, "direction": np.uint8, "timestamp": np.uint32,
            "disabled": np.bool_, "message_flags": np.uint8, "channel_flags": np.uint8,
            "cltv_expiry_delta": np.uint16, "htlc_minimum_msat": np.uint64,
            "htlc_maximum_msat": np.uint64, "fee_base_msat": np.uint32,
            "fee_proportional_millionths": np.uint32, "node_id": "S33", "alias": "S32",
            "rgb_color": np.uint32, "addresses": np.uint16, "channels": np.uint32,
        }  # fmt: skip
        return {
            t: {k: np.array(v, dtype=dtypes[k]) for k, v in cols.items()}
            for t, cols in (("channels", channels), ("updates", updates), ("nodes", nodes))
        }

    def messages_for(self, short_channel_ids: list[int]) -> list[bytes]:
        out: list[bytes] = []
        sent: set[bytes] = set()
        for scid in short_channel_ids:
            c = self._visible(scid)
            if c is None:
                continue
            self._channel_messages(c, 0, 1 << 33, out)
            for nid in (c.node_id_1, c.node_id_2):
                n = self._nodes.get(nid)
                if nid not in sent and n is not None and n.announcement is not None:
                    out.append(n.announcement.msg)
                    sent.add(nid)
        return out

    def newest_timestamp(self) -> int | None:
        ts = [u.timestamp for c in self._channels.values() for u in c.updates if u is not None]
        ts += [n.announcement.timestamp for n in self._nodes.values() if n.announcement]
        return max(ts, default=None)

    def message_bytes(self) -> int:
        n = 0
        for c in self._channels.values():
            n += len(c.announcement.msg) if c.announcement else 0
            n += sum(len(u.msg) for u in c.updates if u is not None)
        return n + sum(len(x.announcement.msg) for x in self._nodes.values() if x.announcement)


class _Seen:
    """Generational set of keyed 128-bit hashes (see rust/core/src/seen.rs)."""

    def __init__(self, capacity: int) -> None:
        self.key = os.urandom(16)
        self.half = max(capacity // 2, 1)
        self.current: set[bytes] = set()
        self.previous: set[bytes] = set()

    def hash(self, msg: bytes) -> bytes:
        return hashlib.blake2b(msg, digest_size=16, key=self.key).digest()

    def __contains__(self, h: bytes) -> bool:
        return h in self.current or h in self.previous

    def add(self, h: bytes) -> None:
        if len(self.current) >= self.half:
            self.previous = self.current
            self.current = set()
        self.current.add(h)

    def discard(self, h: bytes) -> None:
        self.current.discard(h)
        self.previous.discard(h)

    def __len__(self) -> int:
        return len(self.current) + len(self.previous)


class _Queue:
    """Bounded multi-peer FIFO, round-robin draining (see rust/core/src/queue.rs)."""

    def __init__(self, max_bytes: int, max_messages: int, peer_bytes: int, peer_msgs: int):
        self.max_bytes, self.max_messages = max_bytes, max_messages
        self.peer_max_bytes, self.peer_max_messages = peer_bytes, peer_msgs
        self.peers: dict[int, deque[_Pending]] = {}
        self.peer_bytes: dict[int, int] = {}
        self.ring: deque[int] = deque()
        self.bytes = 0
        self.messages = 0
        self.high_water_bytes = 0

    def push(self, peer: int, item: _Pending) -> bool:
        n = len(item.msg)
        q = self.peers.get(peer)
        pb, pm = (self.peer_bytes[peer], len(q)) if q else (0, 0)
        if self.messages and (  # an empty queue admits anything (as the core)
            self.bytes + n > self.max_bytes
            or self.messages >= self.max_messages
            or pb + n > self.peer_max_bytes
            or pm >= self.peer_max_messages
        ):
            return False
        if not q:
            q = self.peers[peer] = deque()
            self.peer_bytes[peer] = 0
            self.ring.append(peer)
        q.append(item)
        self.peer_bytes[peer] += n
        self.bytes += n
        self.messages += 1
        self.high_water_bytes = max(self.high_water_bytes, self.bytes)
        return True

    def pop(self) -> _Pending | None:
        if not self.ring:
            return None
        peer = self.ring.popleft()
        q = self.peers[peer]
        item = q.popleft()
        n = len(item.msg)
        self.peer_bytes[peer] -= n
        self.bytes -= n
        self.messages -= 1
        if q:
            self.ring.append(peer)
        else:
            del self.peers[peer], self.peer_bytes[peer]
        return item


class _Orphans:
    """Bounded orphan cache by ``short_channel_id`` (see rust/core/src/orphans.rs)."""

    def __init__(self, capacity: int, max_bytes: int) -> None:
        self.capacity, self.max_bytes = capacity, max_bytes
        self.by_scid: dict[int, list[_Pending]] = {}
        self.fifo: deque[tuple[int, int]] = deque()
        self.len = 0
        self.bytes = 0

    def _evict_oldest(self) -> _Pending | None:
        while self.fifo:
            scid, seq = self.fifo.popleft()
            v = self.by_scid.get(scid)
            if v is None:
                continue
            for i, p in enumerate(v):
                if p.seq == seq:
                    del v[i]
                    if not v:
                        del self.by_scid[scid]
                    self.len -= 1
                    self.bytes -= len(p.msg)
                    return p
        return None

    def insert(self, scid: int, item: _Pending) -> list[_Pending]:
        """Hold ``item``; returns the items evicted (possibly itself)."""
        n = len(item.msg)
        if self.capacity == 0 or n > self.max_bytes:
            return [item]
        evicted: list[_Pending] = []
        while self.len >= self.capacity or self.bytes + n > self.max_bytes:
            e = self._evict_oldest()
            if e is None:
                break
            evicted.append(e)
        self.by_scid.setdefault(scid, []).append(item)
        self.fifo.append((scid, item.seq))
        self.len += 1
        self.bytes += n
        if len(self.fifo) > 2 * max(self.capacity, 16):
            self.fifo = deque(
                (s, q) for s, q in self.fifo if any(p.seq == q for p in self.by_scid.get(s, ()))
            )
        return evicted

    def set_limits(self, capacity: int, max_bytes: int) -> list[_Pending]:
        self.capacity, self.max_bytes = capacity, max_bytes
        evicted = []
        while self.len > self.capacity or self.bytes > self.max_bytes:
            e = self._evict_oldest()
            if e is None:
                break
            evicted.append(e)
        return evicted

    def release(self, scid: int) -> list[_Pending]:
        v = self.by_scid.pop(scid, [])
        self.len -= len(v)
        self.bytes -= sum(len(p.msg) for p in v)
        return v


class Pipeline:
    """Pure-Python gossip pipeline; same constructor, methods and decisions as
    :class:`lngossip.Pipeline` (see ``lngossip/_core.pyi`` for the full
    documentation). ``threads`` is checked against the same bound and
    ignored: this engine verifies in the calling thread.
    """

    def __init__(
        self,
        *,
        chain_hash: bytes | None = None,
        policy: Policy = "archive",
        now: int | None = None,
        max_queue_bytes: int = 32 << 20,
        max_queue_messages: int = 100_000,
        per_peer_bytes: int | None = None,
        per_peer_messages: int | None = None,
        orphan_capacity: int | None = None,
        orphan_max_bytes: int | None = None,
        seen_capacity: int = 1 << 21,
        pubkey_cache_capacity: int = 1 << 16,
        threads: int | None = None,
        store: str | os.PathLike[str] | None = None,
        store_sync_interval_ms: int | None = None,
        verify_store: bool = False,
    ) -> None:
        if chain_hash is None:
            chain_hash = MAINNET_CHAIN_HASH
        if len(chain_hash) != 32:
            raise ConfigError(f"chain_hash must be 32 bytes, got {len(chain_hash)}")
        if policy not in ("archive", "live"):
            raise ConfigError(f"policy must be 'archive' or 'live', got {policy!r}")
        # the bounds of the Rust engine's constructor (``limits.rs``)
        for argument, value, bound in (
            ("now", now, "now"),
            ("max_queue_bytes", max_queue_bytes, "queue_bytes"),
            ("max_queue_messages", max_queue_messages, "queue_messages"),
            ("per_peer_bytes", per_peer_bytes, "queue_bytes"),
            ("per_peer_messages", per_peer_messages, "queue_messages"),
            ("orphan_capacity", orphan_capacity, "orphan_capacity"),
            ("orphan_max_bytes", orphan_max_bytes, "orphan_bytes"),
            ("seen_capacity", seen_capacity, "seen_capacity"),
            ("pubkey_cache_capacity", pubkey_cache_capacity, "pubkey_cache_capacity"),
            ("threads", threads, "threads"),
            ("store_sync_interval_ms", store_sync_interval_ms, "store_sync_interval_ms"),
        ):
            if value is not None:
                _checked(argument, value, bound)
        if store is not None:
            raise ConfigError("the durable store needs the Rust engine (lngossip.Pipeline)")
        default_orphans = ORPHAN_LIMITS[policy]
        self._chain_hash = bytes(chain_hash)
        self._live = policy == "live"
        self._policy: Policy = policy
        self._limiter = _RateLimiter(*RATE_LIMIT) if policy == "live" else None
        self._now = now
        self._queue = _Queue(
            max_queue_bytes,
            max_queue_messages,
            per_peer_bytes if per_peer_bytes is not None else max(max_queue_bytes // 4, 1),
            per_peer_messages if per_peer_messages is not None else max(max_queue_messages // 4, 1),
        )
        self._orphans = _Orphans(
            default_orphans[0] if orphan_capacity is None else orphan_capacity,
            default_orphans[1] if orphan_max_bytes is None else orphan_max_bytes,
        )
        self._seen = _Seen(seen_capacity)
        self._keys: dict[bytes, Any] = {}
        self._key_capacity = max(pubkey_cache_capacity, 1)
        self._graph = Graph()
        self._next_seq = 0
        # short_channel_ids with a channel_announcement in the queue (and how many)
        self._pending_announcements: dict[int, int] = {}
        self._decisions = {k: dict.fromkeys(DECISIONS, 0) for k in MSG_KINDS}
        self._reasons = dict.fromkeys(MALFORMED_REASONS, 0)
        self._signatures_verified = 0
        self._queue_full = 0
        self._orphans_evicted = 0
        self._orphans_released = 0
        self.threads = 1

    # -- counters ---------------------------------------------------------
    def _reject(self, seq: int, kind: str, d: str, reason: str | None = None) -> Admission:
        self._decisions[kind][d] += 1
        if reason is not None:
            self._reasons[reason] += 1
        return Admission(seq, Decision(d), reason)

    def _now_s(self) -> int:
        return self._now if self._now is not None else int(time.time())

    def set_now(self, now: int | None) -> None:
        """Set (or clear, with ``None``) the fixed "now" (seconds) of the time window."""
        if now is not None:
            _checked("now", now, "now")
        self._now = now

    @property
    def graph(self) -> Graph:
        """The graph (its raw reader API is ``_core.GraphReader``'s)."""
        return self._graph

    @property
    def policy(self) -> Policy:
        """``"archive"`` or ``"live"``."""
        return self._policy

    def set_policy(self, policy: Policy) -> None:
        """Switch policy; the orphan cache takes the new policy's bounds."""
        if policy not in ("archive", "live"):
            raise ConfigError(f"policy must be 'archive' or 'live', got {policy!r}")
        if policy == self._policy:
            return
        self._policy, self._live = policy, policy == "live"
        self._limiter = _RateLimiter(*RATE_LIMIT) if policy == "live" else None
        self._forget_evicted(self._orphans.set_limits(*ORPHAN_LIMITS[policy]))

    def _rate_allows(self, key: object) -> bool:
        return self._limiter is None or self._limiter.allows(key, self._now_s())

    def _rate_spend(self, key: object) -> bool:
        return self._limiter is None or self._limiter.spend(key, self._now_s())

    def prune(self, now: int | None = None) -> tuple[int, int]:
        """BOLT #7 pruning (see the Rust engine): returns (channels, nodes) removed."""
        if now is not None:
            _checked("now", now, "now")
        horizon = (self._now_s() if now is None else now) - LIVE_MAX_BEHIND_S
        channels, nodes, removed = self._graph.prune(max(horizon, 0))
        if self._limiter is not None:
            g = self._graph
            self._limiter.buckets = {
                k: v
                for k, v in self._limiter.buckets.items()
                if (k[0] == "u" and g.has_channel(k[1]))  # type: ignore[index]
                or (k[0] == "n" and g.node(k[1]) is not None)  # type: ignore[index]
            }
        for st in removed:
            self._seen.discard(self._seen.hash(st.msg))
        return channels, nodes

    def compact(self) -> bool:
        """No store in this engine: returns False."""
        return False

    def sync_store(self) -> None:
        """No store in this engine: nothing to do."""

    def store_report(self) -> None:
        """No store in this engine: ``None``."""
        return None

    # -- submit -----------------------------------------------------------
    def submit(self, peer: int, msg: bytes) -> Admission:
        """Run the cheap checks on ``msg`` from ``peer`` and queue it if it needs verifying."""
        seq = self._next_seq
        self._next_seq += 1
        msg = bytes(msg)
        kind = kind_of(msg)
        try:
            g = parse_message(msg)
        except MalformedMessage as e:
            return self._reject(seq, kind, "malformed", e.reason)
        if g.chain_hash is not None and g.chain_hash != self._chain_hash:
            return self._reject(seq, kind, "wrong_chain")
        h = self._seen.hash(msg)
        if h in self._seen:
            return self._reject(seq, kind, "duplicate")
        if g.timestamp is not None:
            now = self._now_s()
            if g.timestamp > now + MAX_AHEAD_S:
                return self._reject(seq, kind, "too_new")
            if self._live and g.timestamp + LIVE_MAX_BEHIND_S < now:
                return self._reject(seq, kind, "too_old")
        if g.type == CHANNEL_ANNOUNCEMENT:
            assert g.short_channel_id is not None
            if self._graph.has_channel(g.short_channel_id):
                return self._reject(seq, kind, "duplicate")
        elif g.type == CHANNEL_UPDATE:
            scid = g.short_channel_id
            assert scid is not None and g.timestamp is not None
            if not self._graph.has_channel(scid) and scid not in self._pending_announcements:
                self._seen.add(h)
                self._forget_evicted(
                    self._orphans.insert(scid, _Pending(seq, peer, g, msg, True, h))
                )
                return self._reject(seq, kind, "orphaned")
            if self._graph.update_is_stale(scid, g.channel_flags & 1, g.timestamp):
                return self._reject(seq, kind, "stale")
            if not self._rate_allows(("u", scid, g.channel_flags & 1)):
                return self._reject(seq, kind, "rate_limited")
        else:
            assert g.timestamp is not None
            if self._graph.node_is_stale(g.keys[0], g.timestamp):
                return self._reject(seq, kind, "stale")
            if not self._rate_allows(("n", g.keys[0])):
                return self._reject(seq, kind, "rate_limited")
        if self._queue.push(peer, _Pending(seq, peer, g, msg, False, h)):
            self._seen.add(h)
            if g.type == CHANNEL_ANNOUNCEMENT:
                assert g.short_channel_id is not None
                pending = self._pending_announcements
                pending[g.short_channel_id] = pending.get(g.short_channel_id, 0) + 1
            return Admission(seq, Decision.QUEUED)
        self._queue_full += 1
        return Admission(seq, Decision.QUEUE_FULL)

    def _forget_evicted(self, evicted: list[_Pending]) -> None:
        """Count evicted orphans and forget their hashes (a later copy is not
        a duplicate)."""
        self._orphans_evicted += len(evicted)
        for e in evicted:
            self._seen.discard(e.hash)

    # -- process ----------------------------------------------------------
    def _decide(
        self,
        out: list[Outcome],
        p: _Pending,
        d: str,
        reason: str | None = None,
    ) -> None:
        kind = p.gossip.kind
        if p.orphan:
            self._decisions[kind]["orphaned"] -= 1
        self._decisions[kind][d] += 1
        if reason is not None:
            self._reasons[reason] += 1
        out.append(Outcome(p.seq, p.peer, kind, Decision(d), reason))

    def _checks(self, p: _Pending) -> list[tuple[int, bytes]]:
        g = p.gossip
        if g.type == CHANNEL_ANNOUNCEMENT:
            return list(zip(CHANNEL_ANNOUNCEMENT_SIGNATURES_AT, g.keys, strict=True))
        if g.type == CHANNEL_UPDATE:
            assert g.short_channel_id is not None
            key = self._graph.update_key(g.short_channel_id, g.channel_flags & 1)
            assert key is not None
            return [(TYPE_LEN, key)]  # the one signature follows the type
        return [(TYPE_LEN, g.keys[0])]

    def _pubkey(self, raw: bytes) -> Any:
        try:
            return self._keys[raw]
        except KeyError:
            pass
        if len(self._keys) >= self._key_capacity:
            self._keys.clear()
        try:
            pk: Any = secp256k1.PublicKey(raw, raw=True)
        except Exception:
            pk = None
        self._keys[raw] = pk
        return pk

    def _verify(self, p: _Pending) -> str:
        """``valid``, ``invalid_signature`` or ``bad_public_key``; stops at the first failure."""
        msg = p.msg
        signed = msg[SIGNED_FROM[p.gossip.type] :]
        digest = hashlib.sha256(hashlib.sha256(signed).digest()).digest()
        for off, key in self._checks(p):
            pk = self._pubkey(key)
            if pk is None:
                return "bad_public_key"
            try:
                sig = pk.ecdsa_deserialize_compact(msg[off : off + 64])
            except Exception:
                return "invalid_signature"
            self._signatures_verified += 1
            if not pk.ecdsa_verify(digest, sig, raw=True):
                return "invalid_signature"
        return "valid"

    def process(self, max_messages: int = DEFAULT_BATCH) -> ProcessResult:
        """Take up to ``max_messages`` from the queue (round-robin between peers),
        verify them one by one and apply them to the graph."""
        _checked("max_messages", max_messages, "batch")
        anns: list[_Pending] = []
        rest: list[_Pending] = []
        for _ in range(max_messages):
            p = self._queue.pop()
            if p is None:
                break
            if p.gossip.type == CHANNEL_ANNOUNCEMENT:
                scid = p.gossip.short_channel_id
                assert scid is not None
                left = self._pending_announcements.get(scid, 0) - 1
                if left > 0:
                    self._pending_announcements[scid] = left
                else:
                    self._pending_announcements.pop(scid, None)
                anns.append(p)
            else:
                rest.append(p)
        before = self._signatures_verified
        out: list[Outcome] = []
        accepted: list[bytes] = []
        released: list[_Pending] = []
        verdicts = [self._verify(p) for p in anns]
        for p, v in zip(anns, verdicts, strict=True):
            scid = p.gossip.short_channel_id
            assert scid is not None
            if v == "bad_public_key":
                self._decide(out, p, "malformed", "bad_public_key")
            elif v == "invalid_signature":
                self._decide(out, p, "invalid_signature")
            elif self._graph.has_channel(scid):
                self._decide(out, p, "duplicate")
            else:
                self._graph.add_channel(scid, p.gossip.keys[0], p.gossip.keys[1])
                self._decide(out, p, "accepted")
                r = self._orphans.release(scid)
                self._orphans_released += len(r)
                released.extend(r)
                accepted.append(p.msg)
        candidates: list[_Pending] = []
        for p in released + rest:
            g = p.gossip
            assert g.timestamp is not None
            pre: str | None = None
            if g.type == CHANNEL_UPDATE:
                assert g.short_channel_id is not None
                if not self._graph.has_channel(g.short_channel_id):
                    # queued behind an announcement that is not accepted (yet)
                    self._decisions["channel_update"]["orphaned"] += 1
                    out.append(Outcome(p.seq, p.peer, "channel_update", Decision.ORPHANED, None))
                    p.orphan = True
                    self._forget_evicted(self._orphans.insert(g.short_channel_id, p))
                    continue
                if self._graph.update_is_stale(
                    g.short_channel_id, g.channel_flags & 1, g.timestamp
                ):
                    pre = "stale"
            else:
                if self._live and not self._graph.node_has_channel(g.keys[0]):
                    pre = "unknown_node"
                    self._seen.discard(p.hash)  # its channel may still come
                elif self._graph.node_is_stale(g.keys[0], g.timestamp):
                    pre = "stale"
            if pre is None:
                candidates.append(p)
            else:
                self._decide(out, p, pre)
        verdicts = [self._verify(p) for p in candidates]
        for p, v in zip(candidates, verdicts, strict=True):
            g = p.gossip
            assert g.timestamp is not None
            if v == "bad_public_key":
                self._decide(out, p, "malformed", "bad_public_key")
                continue
            d = "invalid_signature"
            if v == "valid":
                if g.type == CHANNEL_UPDATE:
                    assert g.short_channel_id is not None
                    direction = g.channel_flags & 1
                    if self._graph.update_is_stale(g.short_channel_id, direction, g.timestamp):
                        d = "stale"
                    elif not self._rate_spend(("u", g.short_channel_id, direction)):
                        d = "rate_limited"
                    else:
                        self._graph.set_update_timestamp(g.short_channel_id, direction, g.timestamp)
                        d = "accepted"
                elif self._graph.node_is_stale(g.keys[0], g.timestamp):
                    d = "stale"
                elif not self._rate_spend(("n", g.keys[0])):
                    d = "rate_limited"
                else:
                    self._graph.set_node_timestamp(g.keys[0], g.timestamp)
                    d = "accepted"
            self._decide(out, p, d)
            if d == "accepted":
                accepted.append(p.msg)
        # the batch is committed at its end, as graph.rs does (this engine is
        # single-threaded: no reader runs between its steps)
        now = self._now_s()
        for m in accepted:
            g = parse_message(m)
            seen = g.timestamp if g.timestamp is not None and not self._live else now
            self._graph.commit(m, g, seen)
        return ProcessResult(out, accepted, self._signatures_verified - before)

    # -- introspection ----------------------------------------------------
    def counters(self) -> Counters:
        """Counters in the same shape as the Rust engine's ``counters()``."""
        return {
            "decisions": {k: dict(v) for k, v in self._decisions.items()},
            "malformed_reasons": dict(self._reasons),
            "signatures_verified": self._signatures_verified,
            "queue_full": self._queue_full,
            "orphans_evicted": self._orphans_evicted,
            "orphans_released": self._orphans_released,
            "queued": self._queue.messages,
            "queue_bytes": self._queue.bytes,
            "queue_high_water_bytes": self._queue.high_water_bytes,
            "orphans": self._orphans.len,
            "seen_entries": len(self._seen),
            "channels": len(self._graph),
            "nodes": self._graph.node_count(),
        }

    def peer_queue_bytes(self, peer: int) -> int:
        """Bytes ``peer`` has queued now."""
        return self._queue.peer_bytes.get(peer, 0)

    @property
    def queued(self) -> int:
        """Messages waiting for :meth:`process`."""
        return self._queue.messages

    @property
    def queue_bytes(self) -> int:
        """Bytes waiting for :meth:`process`."""
        return self._queue.bytes
