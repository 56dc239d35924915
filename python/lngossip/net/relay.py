"""Relay (BOLT #7): gossip the node accepted goes to every other ready
peer whose ``gossip_timestamp_filter`` covers it, in batches (staggered,
once every ``NodeConfig.relay_interval``). Between flushes a peer keeps only
the newest message per channel direction or node (:class:`RelayQueue`);
a peer that cannot keep up loses relay, it is not buffered."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lngossip.wire import (
    CHANNEL_UPDATE,
    CHANNEL_UPDATE_SCID_AT,
    NODE_ANNOUNCEMENT,
    node_announcement_fields_at,
    parse_message,
)

if TYPE_CHECKING:
    from lngossip.net.config import NodeConfig
    from lngossip.net.peer import Peer

__all__ = ["Relay", "RelayQueue"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class RelayQueue:
    """One peer's relay waiting for the next flush: the newest message per
    key (see :func:`relay_key`), in accept order."""

    pending: dict[tuple[int, int | bytes], bytes] = field(default_factory=dict)
    #: Bytes in ``pending``.
    size: int = 0


class Relay:
    """Queues accepted gossip for the ready peers and hands it to their
    senders at each flush.

    Args:
        config: the node's settings (``relay_*``, ``outbound_queue_bytes``).
        counters: the node's counters (``relay_sent``, ``relay_dropped``).
    """

    def __init__(self, config: NodeConfig, counters: Counter[str]) -> None:
        self.config = config
        self.counters = counters

    async def run(self, peers: Mapping[bytes, Peer]) -> None:
        """Flush the pending relay of ``peers`` (the node's ready peers, a
        live mapping) every ``relay_interval`` seconds."""
        while True:
            await asyncio.sleep(self.config.relay_interval)
            self.flush(peers.values())

    def queue(
        self, accepted: list[bytes], origins: list[bytes | None], peers: Iterable[Peer]
    ) -> None:
        """Queue each accepted message for every peer of ``peers`` whose
        filter covers its timestamp, except the peer it came from
        (``origins``: the ``node_id`` each message came from, one for one)."""
        peers = list(peers)
        targets = [p for p in peers if p.their_queries.filter is not None]
        if not targets or not accepted:
            return
        limit = self.config.relay_pending_bytes
        for m, origin in zip(accepted, origins, strict=True):
            key, ts = relay_key(m)
            for p in targets:
                if p.node_id == origin:
                    continue
                assert p.their_queries.filter is not None
                first, span = p.their_queries.filter
                if ts is not None and not first <= ts < first + span:
                    continue
                q = p.relay
                old = q.pending.get(key)
                if old is not None:
                    q.size -= len(old)
                elif q.size + len(m) > limit:
                    self.counters["relay_dropped"] += 1
                    continue
                q.pending[key] = m
                q.size += len(m)
        if self.config.relay_interval == 0:
            self.flush(peers)

    def flush(self, peers: Iterable[Peer]) -> None:
        """Hand each peer's pending relay to its sender, up to half its
        outbound queue (the rest is dropped and counted)."""
        room = self.config.outbound_queue_bytes // 2
        for p in peers:
            q = p.relay
            if not q.pending:
                continue
            for m in q.pending.values():
                if p.outbox.size + len(m) > room:
                    self.counters["relay_dropped"] += 1
                    continue
                p.outbox.put(m)
                self.counters["relay_sent"] += 1
            q.pending.clear()
            q.size = 0
            p.outbox.wake.set()


def relay_key(msg: bytes) -> tuple[tuple[int, int | bytes], int | None]:
    """What a newer message replaces in a pending relay batch, and the
    timestamp a filter is checked against (``None`` for announcements)."""
    msg_type = int.from_bytes(msg[:2], "big")
    if msg_type == CHANNEL_UPDATE:  # (short_channel_id, direction)
        scid, ts, _mf, cf = struct.unpack_from(">QIBB", msg, CHANNEL_UPDATE_SCID_AT)
        return (msg_type, scid << 1 | (cf & 1)), ts
    if msg_type == NODE_ANNOUNCEMENT:  # node_id
        at = node_announcement_fields_at(msg)
        ts = int.from_bytes(msg[at : at + 4], "big")
        return (msg_type, msg[at + 4 : at + 37]), ts
    g = parse_message(msg)  # channel_announcement: short_channel_id
    return (msg_type, g.short_channel_id or 0), None
