"""The responder to a peer's BOLT #7 queries and dumps: its
``query_channel_range`` (:class:`RangeReply`), its
``query_short_channel_ids`` (:class:`ScidReply`) and the dump its
``gossip_timestamp_filter`` asks for (:class:`Dump`), one small state
type each, held per peer in :class:`TheirQueries`.

Answers are read from the pipeline's graph a step at a time, only as the
peer reads (the connection's sender task calls :meth:`Responder.step`), never
copied whole: a peer that asks for everything and does not read costs a
page, not the graph."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lngossip.net import messages as bolt
from lngossip.wire import NODE_ANNOUNCEMENT, node_announcement_fields_at, parse_message

if TYPE_CHECKING:
    from lngossip.engine import PipelineLike
    from lngossip.net.config import NodeConfig
    from lngossip.net.peer import Peer

__all__ = ["Dump", "RangeReply", "Responder", "ScidReply", "TheirQueries"]

log = logging.getLogger(__name__)

_NODE_ANNOUNCEMENT_TYPE = NODE_ANNOUNCEMENT.to_bytes(2, "big")
#: Ids of a ``query_short_channel_ids`` answered per step.
SCIDS_PER_STEP = 64


@dataclass(eq=False)
class RangeReply:
    """Its ``query_channel_range`` being answered."""

    query: bolt.QueryChannelRange
    #: ``first_blocknum`` of the next reply.
    first: int
    #: The last id sent (``None``: none yet).
    after: int | None = None


@dataclass(eq=False)
class ScidReply:
    """Its ``query_short_channel_ids`` being answered."""

    query: bolt.QueryShortChannelIds
    #: How many of its ids are answered.
    done: int = 0
    #: The nodes whose announcement was sent (each once per query).
    nodes_sent: set[bytes] = field(default_factory=set)


@dataclass(eq=False)
class Dump:
    """The dump its ``gossip_timestamp_filter`` asks for."""

    first_timestamp: int
    timestamp_range: int
    #: Where the next page starts in the graph.
    cursor: bytes = b""


@dataclass(eq=False)
class TheirQueries:
    """What one peer asked us."""

    #: Its ``gossip_timestamp_filter`` (``first_timestamp``,
    #: ``timestamp_range``): what relay sends it, too.
    filter: tuple[int, int] | None = None
    range: RangeReply | None = None
    scids: ScidReply | None = None
    #: The dump of its latest filter (``None``: done).
    dump: Dump | None = None


class Responder:
    """Answers every peer's queries and dumps from the pipeline's graph.

    Args:
        config: the node's settings (``chain_hash``, ``dump_page``).
        pipeline: the node's pipeline, whose graph is served.
        counters: the node's counters (``gossip_sent``, ``filters_replaced``).
    """

    #: The requests :meth:`on_message` takes.
    MSG_TYPES = frozenset(
        (bolt.GOSSIP_TIMESTAMP_FILTER, bolt.QUERY_CHANNEL_RANGE, bolt.QUERY_SHORT_CHANNEL_IDS)
    )

    def __init__(self, config: NodeConfig, pipeline: PipelineLike, counters: Counter[str]) -> None:
        self.config = config
        self.pipeline = pipeline
        self.counters = counters

    def on_message(self, peer: Peer, msg_type: int, msg: bytes) -> None:
        """Take a request (one of :attr:`MSG_TYPES`); the sender answers it.

        Raises:
            ProtocolViolation: a query came before the previous one of its
                type was answered (BOLT #7 allows one at a time).
            MalformedMessage: the request does not decode.
        """
        theirs = peer.their_queries
        if msg_type == bolt.GOSSIP_TIMESTAMP_FILTER:
            f = bolt.GossipTimestampFilter.decode(msg)
            if f.chain_hash == self.config.chain_hash:
                # BOLT #7: a new filter replaces the previous one
                if theirs.dump is not None:
                    self.counters["filters_replaced"] += 1
                theirs.filter = (f.first_timestamp, f.timestamp_range)
                theirs.dump = Dump(f.first_timestamp, f.timestamp_range)
        elif msg_type == bolt.QUERY_CHANNEL_RANGE:
            if theirs.range is not None:
                raise bolt.ProtocolViolation(
                    "query_channel_range before the previous one was answered",
                    "queries_piled_up",
                )
            q = bolt.QueryChannelRange.decode(msg)
            theirs.range = RangeReply(q, q.first_blocknum)
        elif msg_type == bolt.QUERY_SHORT_CHANNEL_IDS:
            if theirs.scids is not None:
                raise bolt.ProtocolViolation(
                    "query_short_channel_ids before the previous one was answered",
                    "queries_piled_up",
                )
            theirs.scids = ScidReply(bolt.QueryShortChannelIds.decode(msg))
        else:
            return
        peer.outbox.wake.set()

    async def step(self, peer: Peer) -> bool:
        """Send the next step of what ``peer`` asked: the answer to its
        ``query_channel_range``, to its ``query_short_channel_ids``, then a
        page of its dump. False when it asked nothing."""
        theirs = peer.their_queries
        if theirs.range is not None:
            await self._reply_channel_range_step(peer, theirs.range)
        elif theirs.scids is not None:
            await self._reply_short_channel_ids_step(peer, theirs.scids)
        elif theirs.dump is not None:
            await self._dump_step(peer, theirs.dump)
        else:
            return False
        return True

    async def _dump_step(self, peer: Peer, dump: Dump) -> None:
        """Send the next page of the peer's ``gossip_timestamp_filter`` dump."""
        page, cursor = self.pipeline.graph.gossip_after(
            dump.cursor, dump.first_timestamp, dump.timestamp_range, self.config.dump_page
        )
        if cursor is None:
            peer.their_queries.dump = None
        else:
            dump.cursor = cursor
        await peer.conn.send_many(page)
        self.counters["gossip_sent"] += len(page)

    async def _reply_channel_range_step(self, peer: Peer, r: RangeReply) -> None:
        """Send the next ``reply_channel_range`` (at most
        ``MAX_SCIDS_PER_MESSAGE`` ids) of the peer's query; the replies cover
        the queried blocks in order and without gaps (BOLT #7)."""
        q = r.query
        option = q.query_option or 0
        extended = option & (bolt.QUERY_OPTION_TIMESTAMPS | bolt.QUERY_OPTION_CHECKSUMS)
        step = bolt.MAX_SCIDS_PER_EXTENDED_REPLY if extended else bolt.MAX_SCIDS_PER_MESSAGE
        end = min(q.first_blocknum + q.number_of_blocks, 0xFFFFFFFF)
        graph = self.pipeline.graph
        chunk = graph.short_channel_ids_in_blocks(
            q.first_blocknum, q.number_of_blocks, r.after, step + 1
        )
        last = len(chunk) <= step
        chunk = chunk[:step]
        upto = end if last else min((chunk[-1] >> 40) + 1, end)
        first = r.first
        reply = bolt.ReplyChannelRange(q.chain_hash, first, max(upto - first, 1), 1, chunk)
        if extended:
            # BOLT #7 query_option: each channel's update timestamps and checksums
            updates = [(c[1], c[2]) if (c := graph.channel(s)) else (None, None) for s in chunk]

            def pairs(f: Callable[[bytes], int]) -> list[tuple[int, int]]:
                return [(f(a) if a else 0, f(b) if b else 0) for a, b in updates]

            if option & bolt.QUERY_OPTION_TIMESTAMPS:
                reply.timestamps = pairs(bolt.update_timestamp)
            if option & bolt.QUERY_OPTION_CHECKSUMS:
                reply.checksums = pairs(bolt.update_checksum)
        if last:
            peer.their_queries.range = None
        else:
            r.first, r.after = upto, chunk[-1]
        await peer.conn.send(reply.encode())

    async def _reply_short_channel_ids_step(self, peer: Peer, r: ScidReply) -> None:
        """Send the messages of the next few ids of the peer's
        ``query_short_channel_ids``, and ``reply_short_channel_ids_end`` after the last."""
        q = r.query
        done = r.done
        ids = q.short_channel_ids[done : done + SCIDS_PER_STEP]
        r.done += len(ids)
        if q.query_flags is None:
            msgs = self.pipeline.graph.messages_for(ids) if ids else []
        else:
            msgs = self._flagged_messages(ids, q.query_flags[done : done + SCIDS_PER_STEP])
        out: list[bytes] = []
        for m in msgs:
            if m[:2] == _NODE_ANNOUNCEMENT_TYPE:
                # each node once per query (node_id follows the timestamp)
                at = node_announcement_fields_at(m) + 4
                nid = m[at : at + 33]
                if nid in r.nodes_sent:
                    continue
                r.nodes_sent.add(nid)
            out.append(m)
        self.counters["gossip_sent"] += len(out)
        if r.done >= len(q.short_channel_ids):
            peer.their_queries.scids = None
            out.append(bolt.ReplyShortChannelIdsEnd(q.chain_hash, 1).encode())
        await peer.conn.send_many(out)

    def _flagged_messages(self, ids: list[int], flags: list[int]) -> list[bytes]:
        """What BOLT #7 ``query_flags`` ask of each channel: its announcement,
        the update of either direction, the announcement of either node."""
        graph = self.pipeline.graph
        out: list[bytes] = []
        for scid, f in zip(ids, flags, strict=True):
            ch = graph.channel(scid)
            if ch is None:
                continue
            ann, u1, u2 = ch
            if f & bolt.QUERY_FLAG_ANNOUNCEMENT:
                out.append(ann)
            if f & bolt.QUERY_FLAG_UPDATE_1 and u1 is not None:
                out.append(u1)
            if f & bolt.QUERY_FLAG_UPDATE_2 and u2 is not None:
                out.append(u2)
            if f & (bolt.QUERY_FLAG_NODE_1 | bolt.QUERY_FLAG_NODE_2):
                g = parse_message(ann)
                for bit, node_id in (
                    (bolt.QUERY_FLAG_NODE_1, g.keys[0]),
                    (bolt.QUERY_FLAG_NODE_2, g.keys[1]),
                ):
                    node = graph.node(node_id) if f & bit else None
                    if node is not None and node[0] is not None:
                        out.append(node[0])
        return out
