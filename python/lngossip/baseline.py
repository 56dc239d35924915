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

import hashlib
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import secp256k1

from lngossip.errors import ConfigError, MalformedMessage
from lngossip.wire import (
    CHANNEL_ANNOUNCEMENT,
    CHANNEL_UPDATE,
    DECISIONS,
    MAINNET_CHAIN_HASH,
    MALFORMED_REASONS,
    MSG_KINDS,
    SIGNED_FROM,
    Gossip,
    kind_of,
    parse_message,
)

__all__ = ["Admission", "Pipeline", "ProcessResult"]

LIVE_MAX_AHEAD_S = 24 * 3600
LIVE_MAX_BEHIND_S = 14 * 24 * 3600
_SIG_OFFSETS = (2, 66, 130, 194)


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to :meth:`Pipeline.submit` (same fields as the Rust class)."""

    seq: int
    decision: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ProcessResult:
    """What one :meth:`Pipeline.process` call decided.

    ``outcomes`` holds ``(seq, peer, msg_type, decision, reason)`` tuples;
    ``accepted`` the accepted messages in dependency order.
    """

    outcomes: list[tuple[int, int, str, str, str | None]]
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
class _Channel:
    node_id_1: bytes
    node_id_2: bytes
    update_timestamp: list[int | None] = field(default_factory=lambda: [None, None])


@dataclass(slots=True)
class _Node:
    channels: int = 0
    timestamp: int | None = None


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
        if (
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

    def release(self, scid: int) -> list[_Pending]:
        v = self.by_scid.pop(scid, [])
        self.len -= len(v)
        self.bytes -= sum(len(p.msg) for p in v)
        return v


class Pipeline:
    """Pure-Python gossip pipeline; same constructor, methods and decisions as
    :class:`lngossip.Pipeline` (see ``lngossip/_core.pyi`` for the full
    documentation). ``threads`` is accepted and ignored: this engine verifies
    in the calling thread.
    """

    def __init__(
        self,
        *,
        chain_hash: bytes | None = None,
        policy: str = "archive",
        now: int | None = None,
        max_queue_bytes: int = 32 << 20,
        max_queue_messages: int = 100_000,
        per_peer_bytes: int | None = None,
        per_peer_messages: int | None = None,
        orphan_capacity: int = 10_000,
        orphan_max_bytes: int = 4_000_000,
        seen_capacity: int = 1 << 21,
        pubkey_cache_capacity: int = 1 << 16,
        threads: int | None = None,
    ) -> None:
        if chain_hash is None:
            chain_hash = MAINNET_CHAIN_HASH
        if len(chain_hash) != 32:
            raise ConfigError(f"chain_hash must be 32 bytes, got {len(chain_hash)}")
        if policy not in ("archive", "live"):
            raise ConfigError(f"policy must be 'archive' or 'live', got {policy!r}")
        if max_queue_bytes <= 0 or max_queue_messages <= 0:
            raise ConfigError("queue caps must be positive")
        self._chain_hash = bytes(chain_hash)
        self._live = policy == "live"
        self._now = now
        self._queue = _Queue(
            max_queue_bytes,
            max_queue_messages,
            per_peer_bytes if per_peer_bytes is not None else max(max_queue_bytes // 4, 1),
            per_peer_messages if per_peer_messages is not None else max(max_queue_messages // 4, 1),
        )
        self._orphans = _Orphans(orphan_capacity, orphan_max_bytes)
        self._seen = _Seen(seen_capacity)
        self._keys: dict[bytes, Any] = {}
        self._key_capacity = max(pubkey_cache_capacity, 1)
        self._channels: dict[int, _Channel] = {}
        self._nodes: dict[bytes, _Node] = {}
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
        return Admission(seq, d, reason)

    def _now_s(self) -> int:
        return self._now if self._now is not None else int(time.time())

    def set_now(self, now: int | None) -> None:
        """Set (or clear, with ``None``) the fixed "now" (seconds) of the live policy."""
        self._now = now

    # -- graph helpers ----------------------------------------------------
    def _update_is_stale(self, scid: int, direction: int, ts: int) -> bool:
        c = self._channels.get(scid)
        t = c.update_timestamp[direction] if c else None
        return t is not None and ts <= t

    def _node_is_stale(self, node_id: bytes, ts: int) -> bool:
        n = self._nodes.get(node_id)
        return n is not None and n.timestamp is not None and ts <= n.timestamp

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
        if self._live and g.timestamp is not None:
            now = self._now_s()
            if g.timestamp > now + LIVE_MAX_AHEAD_S:
                return self._reject(seq, kind, "too_new")
            if g.timestamp + LIVE_MAX_BEHIND_S < now:
                return self._reject(seq, kind, "too_old")
        if g.type == CHANNEL_ANNOUNCEMENT:
            if g.short_channel_id in self._channels:
                return self._reject(seq, kind, "duplicate")
        elif g.type == CHANNEL_UPDATE:
            scid = g.short_channel_id
            assert scid is not None and g.timestamp is not None
            if scid not in self._channels and scid not in self._pending_announcements:
                self._seen.add(h)
                self._forget_evicted(
                    self._orphans.insert(scid, _Pending(seq, peer, g, msg, True, h))
                )
                return self._reject(seq, kind, "orphaned")
            if self._update_is_stale(scid, g.channel_flags & 1, g.timestamp):
                return self._reject(seq, kind, "stale")
        else:
            assert g.timestamp is not None
            if self._node_is_stale(g.keys[0], g.timestamp):
                return self._reject(seq, kind, "stale")
        if self._queue.push(peer, _Pending(seq, peer, g, msg, False, h)):
            self._seen.add(h)
            if g.type == CHANNEL_ANNOUNCEMENT:
                assert g.short_channel_id is not None
                pending = self._pending_announcements
                pending[g.short_channel_id] = pending.get(g.short_channel_id, 0) + 1
            return Admission(seq, "queued")
        self._queue_full += 1
        return Admission(seq, "queue_full")

    def _forget_evicted(self, evicted: list[_Pending]) -> None:
        """Count evicted orphans and forget their hashes (a later copy is not
        a duplicate)."""
        self._orphans_evicted += len(evicted)
        for e in evicted:
            self._seen.discard(e.hash)

    # -- process ----------------------------------------------------------
    def _decide(
        self,
        out: list[tuple[int, int, str, str, str | None]],
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
        out.append((p.seq, p.peer, kind, d, reason))

    def _checks(self, p: _Pending) -> list[tuple[int, bytes]]:
        g = p.gossip
        if g.type == CHANNEL_ANNOUNCEMENT:
            return list(zip(_SIG_OFFSETS, g.keys, strict=True))
        if g.type == CHANNEL_UPDATE:
            assert g.short_channel_id is not None
            c = self._channels[g.short_channel_id]
            return [(2, c.node_id_2 if g.channel_flags & 1 else c.node_id_1)]
        return [(2, g.keys[0])]

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

    def process(self, max_messages: int = 4096) -> ProcessResult:
        """Take up to ``max_messages`` from the queue (round-robin between peers),
        verify them one by one and apply them to the graph."""
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
        out: list[tuple[int, int, str, str, str | None]] = []
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
            elif scid in self._channels:
                self._decide(out, p, "duplicate")
            else:
                n1, n2 = p.gossip.keys[0], p.gossip.keys[1]
                self._channels[scid] = _Channel(n1, n2)
                for n in (n1, n2):
                    self._nodes.setdefault(n, _Node()).channels += 1
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
                if g.short_channel_id not in self._channels:
                    # queued behind an announcement that is not accepted (yet)
                    self._decisions["channel_update"]["orphaned"] += 1
                    out.append((p.seq, p.peer, "channel_update", "orphaned", None))
                    p.orphan = True
                    self._forget_evicted(self._orphans.insert(g.short_channel_id, p))
                    continue
                if self._update_is_stale(g.short_channel_id, g.channel_flags & 1, g.timestamp):
                    pre = "stale"
            else:
                node = self._nodes.get(g.keys[0])
                if self._live and (node is None or node.channels == 0):
                    pre = "unknown_node"
                    self._seen.discard(p.hash)  # its channel may still come
                elif self._node_is_stale(g.keys[0], g.timestamp):
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
                    if self._update_is_stale(g.short_channel_id, direction, g.timestamp):
                        d = "stale"
                    else:
                        self._channels[g.short_channel_id].update_timestamp[direction] = g.timestamp
                        d = "accepted"
                elif self._node_is_stale(g.keys[0], g.timestamp):
                    d = "stale"
                else:
                    self._nodes.setdefault(g.keys[0], _Node()).timestamp = g.timestamp
                    d = "accepted"
            self._decide(out, p, d)
            if d == "accepted":
                accepted.append(p.msg)
        return ProcessResult(out, accepted, self._signatures_verified - before)

    # -- introspection ----------------------------------------------------
    def counters(self) -> dict[str, Any]:
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
            "channels": len(self._channels),
            "nodes": len(self._nodes),
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
