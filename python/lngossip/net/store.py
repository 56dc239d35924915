"""The accepted graph as messages: what a node serves to its peers.

Holds the newest accepted ``channel_announcement``, ``channel_update`` per
direction and ``node_announcement`` per node (only messages the pipeline
accepted: verified, first announcement per ``short_channel_id``, strictly
newer updates). Answers BOLT #7 queries: everything in a timestamp range
(``gossip_timestamp_filter``), the ``short_channel_id``s in a block range
(``query_channel_range``), and the messages of given channels
(``query_short_channel_ids``), always announcement before its updates and
node announcements after a channel that names the node (BOLT #7).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from lngossip.wire import CHANNEL_ANNOUNCEMENT, CHANNEL_UPDATE, parse_message

__all__ = ["GraphStore"]

# channel_update: short_channel_id, timestamp, message_flags, channel_flags at offset 98
_UPDATE_FIELDS = struct.Struct(">QIBB")


class GraphStore:
    """Accepted gossip by ``short_channel_id`` and ``node_id``."""

    def __init__(self) -> None:
        # scid -> [channel_announcement, update direction 0, update direction 1]
        self._channels: dict[int, list[bytes | None]] = {}
        self._ends: dict[int, tuple[bytes, bytes]] = {}
        self._nodes: dict[bytes, bytes] = {}
        self._timestamps: dict[bytes, int] = {}

    def add(self, msg: bytes) -> None:
        """Store one accepted message (replacing an older update or node
        announcement).

        The pipeline has validated it, so only the fields the store needs are
        read, at fixed offsets (BOLT #7 layouts in :mod:`lngossip.wire`); a
        message that is not gossip raises MalformedMessage.
        """
        t = int.from_bytes(msg[:2], "big")
        if t == CHANNEL_UPDATE and len(msg) >= 130:
            scid, ts, _mflags, cflags = _UPDATE_FIELDS.unpack_from(msg, 98)
            slot = self._channels.setdefault(scid, [None, None, None])
            slot[1 + (cflags & 1)] = msg
            self._timestamps[msg] = ts
            return
        g = parse_message(msg)
        if g.type == CHANNEL_ANNOUNCEMENT:
            assert g.short_channel_id is not None
            self._channels.setdefault(g.short_channel_id, [None, None, None])[0] = msg
            self._ends[g.short_channel_id] = (g.keys[0], g.keys[1])
        else:
            assert g.timestamp is not None
            old = self._nodes.get(g.keys[0])
            if old is not None:
                self._timestamps.pop(old, None)
            self._nodes[g.keys[0]] = msg
            self._timestamps[msg] = g.timestamp

    def add_all(self, msgs: Iterable[bytes]) -> None:
        """Store every message of ``msgs``."""
        for m in msgs:
            self.add(m)

    def __len__(self) -> int:
        return sum(1 for s in self._channels.values() for m in s if m) + len(self._nodes)

    @property
    def channel_count(self) -> int:
        """Channels with an announcement."""
        return len(self._ends)

    def _channel_messages(self, scid: int, lo: int, hi: int) -> Iterator[bytes]:
        ann, u0, u1 = self._channels.get(scid, [None, None, None])
        if ann is None:
            return
        updates = [u for u in (u0, u1) if u is not None and lo <= self._timestamps[u] < hi]
        # BOLT #7: an announcement goes with its updates; without updates, with everything
        if updates or (lo == 0 and u0 is None and u1 is None):
            yield ann
            yield from updates

    def messages(
        self, first_timestamp: int = 0, timestamp_range: int = 0xFFFFFFFF
    ) -> Iterator[bytes]:
        """Everything with a timestamp in ``[first_timestamp, first_timestamp +
        timestamp_range)`` (seconds), channels first, then node announcements."""
        lo, hi = first_timestamp, first_timestamp + timestamp_range
        for scid in sorted(self._ends):
            yield from self._channel_messages(scid, lo, hi)
        for msg in self._nodes.values():
            if lo <= self._timestamps[msg] < hi:
                yield msg

    def short_channel_ids(self, first_blocknum: int, number_of_blocks: int) -> list[int]:
        """Announced ``short_channel_id``s funded in the block range, ascending."""
        end = first_blocknum + number_of_blocks
        return [s for s in sorted(self._ends) if first_blocknum <= s >> 40 < end]

    def for_short_channel_ids(self, scids: Iterable[int]) -> Iterator[bytes]:
        """Announcement and updates of each channel, then each endpoint's node
        announcement once (BOLT #7 ``query_short_channel_ids``)."""
        sent_nodes: set[bytes] = set()
        for scid in scids:
            if scid not in self._ends:
                continue
            yield from self._channel_messages(scid, 0, 1 << 33)
            for n in self._ends[scid]:
                if n in self._nodes and n not in sent_nodes:
                    sent_nodes.add(n)
                    yield self._nodes[n]

    def all_messages(self) -> set[bytes]:
        """Every stored message (for comparisons)."""
        out = {m for s in self._channels.values() for m in s if m is not None}
        out.update(self._nodes.values())
        return out
