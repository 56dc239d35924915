"""Our BOLT #7 query client: what the node asks each new peer for
(``gossip_timestamp_filter``, or ``query_channel_range`` then
``query_short_channel_ids`` one chunk at a time), which replies it takes,
and when it gives up on a query and asks with a filter instead.

The per-peer state is :class:`OurQueries`; what spans peers (the ids asked
for, the peers to ask with a filter first) is :class:`QueryClient`'s.
Reconnecting a peer is the node's (:mod:`lngossip.net.node`)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lngossip.net import messages as bolt

if TYPE_CHECKING:
    from lngossip.engine import PipelineLike
    from lngossip.net.config import NodeConfig
    from lngossip.net.peer import Peer

__all__ = ["OurQueries", "QueryClient"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class OurQueries:
    """What we asked one peer."""

    #: ``query_short_channel_ids`` chunks, ``(short_channel_id, query_flags)``
    #: each, waiting for the previous reply (BOLT #7 allows one query in
    #: flight per peer).
    scid_chunks: list[list[tuple[int, int]]] = field(default_factory=list)
    #: A ``query_short_channel_ids`` of ours waits for its
    #: ``reply_short_channel_ids_end``.
    in_flight: bool = False
    #: Our outstanding ``query_channel_range`` (replies are taken only for it).
    range: bolt.QueryChannelRange | None = None
    #: When our outstanding query (range or ids) times out (monotonic seconds).
    deadline: float | None = None

    @property
    def outstanding(self) -> bool:
        """Whether a query of ours waits for its answer."""
        return self.range is not None or self.in_flight

    @property
    def pending(self) -> bool:
        """Whether a query of ours waits for its answer or its turn."""
        return self.outstanding or bool(self.scid_chunks)


class QueryClient:
    """Our side of BOLT #7 sync, for every peer of one node.

    Args:
        config: the node's settings (``sync_mode``, ``query_timeout``, ``max_scids``...).
        pipeline: the node's pipeline, whose graph says what we lack.
        counters: the node's counters.
    """

    #: The replies to our queries, which :meth:`on_message` takes.
    MSG_TYPES = frozenset((bolt.REPLY_CHANNEL_RANGE, bolt.REPLY_SHORT_CHANNEL_IDS_END))

    def __init__(self, config: NodeConfig, pipeline: PipelineLike, counters: Counter[str]) -> None:
        self.config = config
        self.pipeline = pipeline
        self.counters = counters
        #: ids asked for or waiting to be asked for, all peers together (at
        #: most ``max_scids``): each channel is fetched from one peer only
        self.requested_scids: set[int] = set()
        #: peers that ignored or refused our queries: asked with a
        #: gossip_timestamp_filter first on every new connection
        self.filter_first: set[bytes] = set()

    @staticmethod
    def pending(peers: Iterable[Peer]) -> bool:
        """Whether a query of ours waits for its answer or its turn on one of ``peers``."""
        return any(p.our_queries.pending for p in peers)

    async def request_gossip(self, peer: Peer) -> None:
        """Ask a new peer for gossip: in ``"query"`` mode new gossip from
        now on and the backlog channel by channel, else (or when the peer
        ignored our queries before) everything since ``first_timestamp``."""
        ch = self.config.chain_hash
        if self.config.sync_mode == "query" and peer.node_id not in self.filter_first:
            # new gossip from now on, and the backlog channel by channel
            await peer.conn.send(bolt.GossipTimestampFilter(ch, int(time.time())).encode())
            # with a graph already (a store), ask for the update timestamps too
            # (BOLT #7 query_option) to fetch only what is newer; peers that do
            # not know the option (LDK, lnd) ignore the odd TLV
            option = bolt.QUERY_OPTION_TIMESTAMPS if len(self.pipeline.graph) else None
            q = peer.our_queries
            q.range = bolt.QueryChannelRange(ch, query_option=option)
            q.deadline = time.monotonic() + self.config.query_timeout
            await peer.conn.send(q.range.encode())
        else:
            await self.ask_with_filter(peer)

    async def ask_with_filter(self, peer: Peer) -> None:
        """Send ``gossip_timestamp_filter`` from ``first_timestamp``."""
        f = bolt.GossipTimestampFilter(self.config.chain_hash, self.config.first_timestamp)
        await peer.conn.send(f.encode())

    def on_gossip(self, peer: Peer) -> None:
        """Gossip came from ``peer``: it is answering, so our query has not
        timed out."""
        q = peer.our_queries
        if q.deadline is not None:
            q.deadline = peer.last_rx + self.config.query_timeout

    def timed_out(self, peer: Peer) -> bool:
        """Whether our outstanding query to ``peer`` went unanswered for
        ``query_timeout``."""
        deadline = peer.our_queries.deadline
        return deadline is not None and time.monotonic() >= deadline

    async def on_message(self, peer: Peer, msg_type: int, msg: bytes) -> None:
        """Take a reply to our queries (one of :attr:`MSG_TYPES`).

        Raises:
            MalformedMessage: the reply does not decode.
        """
        q = peer.our_queries
        if msg_type == bolt.REPLY_CHANNEL_RANGE:
            new = self._take_reply_range(peer, bolt.ReplyChannelRange.decode(msg))
            flagged = any(f != bolt.QUERY_FLAGS_ALL for _, f in new)
            step = bolt.MAX_SCIDS_PER_FLAGGED_QUERY if flagged else bolt.MAX_SCIDS_PER_MESSAGE
            q.scid_chunks.extend(new[i : i + step] for i in range(0, len(new), step))
            await self._query_next_chunk(peer)
        elif msg_type == bolt.REPLY_SHORT_CHANNEL_IDS_END:
            if not q.in_flight:
                self.counters["unsolicited_reply_short_channel_ids_end"] += 1
                return
            q.in_flight = False
            await self._query_next_chunk(peer)

    async def _query_next_chunk(self, peer: Peer) -> None:
        q = peer.our_queries
        if q.in_flight or not q.scid_chunks:
            if q.range is None and not q.in_flight:
                q.deadline = None
            return
        chunk = q.scid_chunks.pop(0)
        q.in_flight = True
        q.deadline = time.monotonic() + self.config.query_timeout
        ids = [s for s, _ in chunk]
        flags = [f for _, f in chunk]
        msg = bolt.QueryShortChannelIds(
            self.config.chain_hash,
            ids,
            None if all(f == bolt.QUERY_FLAGS_ALL for f in flags) else flags,
        )
        await peer.conn.send(msg.encode())

    def give_up(self, peer: Peer, why: str, *, reconnect: bool) -> None:
        """Our query was refused or not answered (``why``): forget it and
        the ids it was to fetch, so that another peer may be asked for them.

        The peer is then asked with ``gossip_timestamp_filter`` for
        everything since ``first_timestamp`` instead. LDK starts a dump
        only on the *first* filter of a connection (and our query mode sent
        one, "from now on", already), so a peer we dialled is asked on a new
        connection, with the filter as its first gossip message
        (``reconnect``: the node redials it); from then on that peer is
        always asked with a filter. An inbound peer is asked on the same
        connection (:meth:`ask_with_filter`)."""
        self.counters[f"query_fallback:{why}"] += 1
        q = peer.our_queries
        q.range, q.deadline, q.in_flight = None, None, False
        for chunk in q.scid_chunks:
            self.requested_scids.difference_update(s for s, _ in chunk)
        q.scid_chunks.clear()
        if reconnect:
            log.info(
                "peer %s: query %s; reconnecting to ask with gossip_timestamp_filter first",
                peer.node_id.hex()[:16],
                why,
            )
            self.filter_first.add(peer.node_id)
        else:
            log.info(
                "peer %s: query %s; asking with gossip_timestamp_filter instead",
                peer.node_id.hex()[:16],
                why,
            )

    def _take_reply_range(self, peer: Peer, r: bolt.ReplyChannelRange) -> list[tuple[int, int]]:
        """The ``(short_channel_id, query_flags)`` of a ``reply_channel_range``
        to ask for: only while our query is outstanding, only inside its
        block range, within ``max_scids``: every channel the graph lacks, and,
        when the reply carries update timestamps (``query_option``), the
        updates of known channels that are newer than ours."""
        ours = peer.our_queries
        q = ours.range
        if q is None or r.chain_hash != q.chain_hash:
            self.counters["unsolicited_reply_channel_range"] += 1
            return []
        lo, hi = q.first_blocknum, q.first_blocknum + q.number_of_blocks
        ours.deadline = time.monotonic() + self.config.query_timeout
        if r.sync_complete and r.first_blocknum + r.number_of_blocks >= hi:
            ours.range = None  # the last reply (BOLT #7)
        graph = self.pipeline.graph
        stamps: list[tuple[int, int] | None] = (
            list(r.timestamps) if r.timestamps is not None else [None] * len(r.short_channel_ids)
        )
        new: list[tuple[int, int]] = []
        room = self.config.max_scids - len(self.requested_scids)
        outside = 0
        for s, ts in zip(r.short_channel_ids, stamps, strict=True):
            if not lo <= s >> 40 < hi:
                outside += 1
                continue
            if s in self.requested_scids:
                continue
            ch = graph.channel(s)
            if ch is None:
                flags = bolt.QUERY_FLAGS_ALL
            elif ts is None:
                continue
            else:
                flags = 0
                for bit, theirs, mine in (
                    (bolt.QUERY_FLAG_UPDATE_1, ts[0], ch[1]),
                    (bolt.QUERY_FLAG_UPDATE_2, ts[1], ch[2]),
                ):
                    if theirs and (mine is None or theirs > bolt.update_timestamp(mine)):
                        flags |= bit
                if not flags:
                    continue
            if len(new) >= room:
                self.counters["scids_over_limit"] += 1
                break
            new.append((s, flags))
        if outside:
            self.counters["reply_ids_outside_range"] += outside
        self.requested_scids.update(s for s, _ in new)
        return new
