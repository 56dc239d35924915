"""A gossip node on asyncio: BOLT #8 connections, BOLT #1 ``init`` and
``ping``, BOLT #7 sync as client and server, feeding one shared pipeline.

The lifecycle rules each answer a production incident (DESIGN.md):

* every connection has a *generation* number and its own task group
  (reader, pinger, gossip sender); it is ready only after the handshake and
  both ``init`` messages; on disconnect the whole group is cancelled, and a
  task acts only on the connection it was started for (snarkOS #3331);
* two connections to the same peer: both sides keep the one initiated by the
  node with the lower ``node_id`` and close the other (iroh #2307, lnd);
* the pipeline and its processing loop belong to the node, not to a
  connection: what a peer got admitted is verified and stored after it
  disconnects (Core Lightning #8055);
* when the pipeline answers ``queue_full`` for a peer, that peer's reader
  stops reading its socket until room frees up, so TCP pushes back on the
  sender and nothing buffers without bound (Core Lightning #7972);
* a peer whose messages keep failing signature checks is warned,
  disconnected and banned for a while;
* :meth:`Node.close` stops accepting, closes peers, drains the pipeline up
  to its deadline, flushes output, cancels what is left and returns within
  the deadline with no task and no timer left (lnd #8912).

What the node serves is the pipeline's own graph (``pipeline.graph``): the
files it loaded and what its peers sent obey the same rules, so a peer's
announcement for a channel the node already has is a ``duplicate`` whatever
its signatures. Dumps are read from the graph a page at a time (a cursor),
never copied whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lngossip.errors import GossipError, MalformedMessage
from lngossip.ingest import PipelineLike, make_pipeline
from lngossip.net import messages as wire
from lngossip.transport import Connection, Keys, TransportError, accept, connect
from lngossip.wire import MAINNET_CHAIN_HASH

__all__ = ["CloseReport", "Node", "NodeConfig", "Peer"]

log = logging.getLogger("lngossip.net")

GOSSIP_TYPES = frozenset((256, 257, 258))


@dataclass
class NodeConfig:
    """Settings of a :class:`Node`; times in seconds."""

    chain_hash: bytes = MAINNET_CHAIN_HASH
    #: Send a ``ping`` after this long without hearing from the peer.
    ping_interval: float = 30.0
    #: Disconnect when the ``pong`` has not come this long after a ``ping``.
    ping_timeout: float = 15.0
    #: Time allowed for the BOLT #8 handshake and again for both ``init`` messages.
    handshake_timeout: float = 10.0
    #: Messages per verification batch.
    batch: int = 4096
    #: Sync from every new peer.
    sync: bool = True
    #: ``"filter"``: ask each peer for everything since ``first_timestamp``
    #: (``gossip_timestamp_filter``; every peer sends its copy, dedup drops the
    #: rest). ``"query"``: ask each peer for its ``short_channel_id``s
    #: (``query_channel_range``) and fetch each channel from one peer only
    #: (``query_short_channel_ids``), plus a filter from now on for new gossip.
    sync_mode: str = "filter"
    #: ``first_timestamp`` of the filter in ``"filter"`` mode (0: everything).
    first_timestamp: int = 0
    #: Invalid signatures from one connection before it is warned, closed and banned.
    ban_after_invalid: int = 10
    #: How long a banned ``node_id`` is refused.
    ban_seconds: float = 600.0
    #: Reconnect backoff of persistent peers: first delay, cap (jitter 0.5x-1.5x).
    reconnect_initial: float = 0.5
    reconnect_max: float = 60.0
    #: Answer pings (tests turn this off to simulate a dead peer).
    answer_pings: bool = True
    #: Seconds between BOLT #7 prunes of the graph (channels without an
    #: update for two weeks) under the live policy; 0 turns pruning off.
    prune_interval: float = 24 * 3600.0
    #: Messages read from the graph per page of a dump.
    dump_page: int = 256


@dataclass
class CloseReport:
    """What :meth:`Node.close` achieved within its deadline."""

    drained: bool
    left_queued: int
    elapsed_s: float


@dataclass(eq=False)
class Peer:
    """One connection to a peer (one generation)."""

    node_id: bytes
    generation: int
    outbound: bool
    conn: Connection
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    pong: asyncio.Event = field(default_factory=asyncio.Event)
    last_rx: float = field(default_factory=time.monotonic)
    init: wire.Init | None = None
    close_reason: str = ""
    invalid_signatures: int = 0
    gossip_received: int = 0
    task: asyncio.Task[None] | None = None
    sync_done: asyncio.Event = field(default_factory=asyncio.Event)
    #: ``query_short_channel_ids`` chunks waiting for the previous reply (BOLT #7
    #: allows one query in flight per peer).
    scid_chunks: list[list[int]] = field(default_factory=list)
    query_in_flight: bool = False

    @property
    def initiator(self) -> str:
        """``"local"`` when we dialled, ``"remote"`` when the peer did."""
        return "local" if self.outbound else "remote"


class Node:
    """A gossip node: a listener, outbound connections, one pipeline.

    Args:
        keys: the node's identity (``Keys().node_id`` is its 33-byte ``node_id``).
        pipeline: the engine messages go to, whose graph the node serves
            (default: a Rust ``Pipeline`` with the live policy).
        config: timers and limits.
        on_accepted: called with each batch of accepted messages (e.g. a writer).
    """

    def __init__(
        self,
        keys: Keys,
        pipeline: PipelineLike | None = None,
        *,
        config: NodeConfig | None = None,
        on_accepted: Callable[[list[bytes]], object] | None = None,
    ) -> None:
        self.keys = keys
        self.config = config or NodeConfig()
        self.pipeline = pipeline if pipeline is not None else make_pipeline("rust", policy="live")
        self.on_accepted = on_accepted
        self.counters: Counter[str] = Counter()
        self._generation = itertools.count(1)
        self._peer_ids: dict[bytes, int] = {}
        self._peer_by_id: dict[int, bytes] = {}
        self._connections: set[Peer] = set()
        self._active: dict[bytes, Peer] = {}
        self._banned: dict[bytes, float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._work = asyncio.Event()
        self._room = asyncio.Condition()
        self._processing: asyncio.Task[None] | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self._closing = False
        self._busy_processing = False
        self._requested_scids: set[int] = set()
        self.last_gossip_at = time.monotonic()
        #: when the last batch finished (monotonic seconds)
        self.last_processed_at = 0.0

    # -- identity and bookkeeping ------------------------------------------
    @property
    def node_id(self) -> bytes:
        """This node's 33-byte ``node_id``."""
        return self.keys.node_id

    def peer_id(self, node_id: bytes) -> int:
        """Stable pipeline peer number of ``node_id`` (same across reconnections,
        so a peer's queue share follows it)."""
        pid = self._peer_ids.get(node_id)
        if pid is None:
            pid = self._peer_ids[node_id] = len(self._peer_ids) + 1
            self._peer_by_id[pid] = node_id
        return pid

    @property
    def peers(self) -> dict[bytes, Peer]:
        """Ready connections by ``node_id`` (one per peer)."""
        return dict(self._active)

    @property
    def connections(self) -> set[Peer]:
        """Every open connection, ready or not."""
        return set(self._connections)

    def is_banned(self, node_id: bytes) -> bool:
        """Whether ``node_id`` is refused now."""
        until = self._banned.get(node_id)
        return until is not None and time.monotonic() < until

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        t = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    # -- start / listen / connect --------------------------------------------
    async def start(self) -> None:
        """Start the processing loop (idempotent).

        # Cancel safety
        Returns at once; the loop is stopped by :meth:`close`.
        """
        if self._processing is None:
            self._processing = asyncio.get_running_loop().create_task(
                self._process_loop(), name="lngossip-process"
            )
        if self._maintenance is None and self.config.prune_interval > 0:
            self._maintenance = self._spawn(self._prune_loop(), "lngossip-prune")

    async def _prune_loop(self) -> None:
        """Prune the graph every ``prune_interval`` seconds under the live
        policy (BOLT #7: channels without an update for two weeks)."""
        while True:
            await asyncio.sleep(self.config.prune_interval)
            if self.pipeline.policy != "live":
                continue
            channels, nodes = await asyncio.to_thread(self.pipeline.prune)
            self.counters["pruned_channels"] += channels
            self.counters["pruned_nodes"] += nodes
            if channels or nodes:
                log.info("pruned %d channels and %d node announcements", channels, nodes)

    async def listen(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Accept BOLT #8 connections on ``host:port``; returns the bound address.

        # Cancel safety
        Cancelling before it returns leaves no listener behind.
        """
        await self.start()
        self._server = await asyncio.start_server(self._on_inbound, host, port, limit=1 << 17)
        sock = self._server.sockets[0].getsockname()
        return str(sock[0]), int(sock[1])

    async def _on_inbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            writer.close()
            return
        me = asyncio.current_task()
        if me is not None:
            self._tasks.add(me)  # so close() cancels a handshake in progress
        try:
            await self._handshake_inbound(reader, writer)
        except asyncio.CancelledError:
            # closing: end this server callback quietly (the stream machinery
            # would log a cancelled callback task as an error)
            writer.close()
        finally:
            if me is not None:
                self._tasks.discard(me)

    async def _handshake_inbound(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            conn = await accept(reader, writer, self.keys, timeout=self.config.handshake_timeout)
        except (TransportError, OSError) as e:
            self.counters[f"handshake_failed:{getattr(e, 'reason', 'os')}"] += 1
            writer.close()
            return
        if self.is_banned(conn.remote_node_id) or self._closing:
            self.counters["refused_banned"] += 1
            await conn.close()
            return
        peer = Peer(conn.remote_node_id, next(self._generation), False, conn)
        # the connection is the node's to own (and to cancel), not the server callback's
        self._spawn(self._run(peer), f"peer-{peer.node_id.hex()[:8]}-{peer.generation}")

    async def connect(
        self, node_id: bytes, host: str, port: int, *, persistent: bool = False
    ) -> Peer | None:
        """Dial ``node_id`` at ``host:port``; returns the ready connection to that
        peer (possibly another one kept by the tie-break), or ``None`` if it
        did not become ready. ``persistent``: keep reconnecting with
        exponential backoff and jitter until :meth:`close`.

        # Cancel safety
        Cancelling abandons the attempt; a half-open connection is closed.
        """
        await self.start()
        if persistent:
            self._spawn(self._keep_connected(node_id, host, port), f"reconnect-{node_id.hex()[:8]}")
            return None
        return await self._dial(node_id, host, port)

    async def _dial(self, node_id: bytes, host: str, port: int) -> Peer | None:
        if self._closing or self.is_banned(node_id):
            return None
        try:
            conn = await connect(
                host, port, self.keys, node_id, timeout=self.config.handshake_timeout
            )
        except (TransportError, OSError) as e:
            self.counters[f"dial_failed:{getattr(e, 'reason', 'os')}"] += 1
            return None
        peer = Peer(node_id, next(self._generation), True, conn)
        task = self._spawn(self._run(peer), f"peer-{node_id.hex()[:8]}-{peer.generation}")
        ready = asyncio.ensure_future(peer.ready.wait())
        done = asyncio.ensure_future(task)
        try:
            await asyncio.wait({ready, done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        # with simultaneous dials, the kept connection may be the peer's own
        for _ in range(50):
            active = self._active.get(node_id)
            if active is not None or peer.closed.is_set():
                return active
            await asyncio.sleep(0.01)
        return self._active.get(node_id)

    async def _keep_connected(self, node_id: bytes, host: str, port: int) -> None:
        failures = 0
        while not self._closing:
            peer = await self._dial(node_id, host, port)
            if peer is not None:
                failures = 0
                await peer.closed.wait()
            else:
                failures += 1
            if self._closing:
                return
            delay = min(
                self.config.reconnect_max, self.config.reconnect_initial * 2 ** min(failures, 20)
            )
            self.counters["reconnect_attempts"] += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))

    # -- one connection --------------------------------------------------------
    async def _run(self, peer: Peer) -> None:
        """Own one connection: init exchange, then reader, pinger and sender in
        one task group; everything is cancelled together on disconnect."""
        peer.task = asyncio.current_task()
        self._connections.add(peer)
        self.counters["connections"] += 1
        try:
            async with asyncio.TaskGroup() as tg:
                await self._exchange_init(peer)
                if not self._become_ready(peer):
                    return
                tg.create_task(self._reader(peer, tg), name=f"reader-{peer.generation}")
                tg.create_task(self._pinger(peer), name=f"pinger-{peer.generation}")
                if self.config.sync:
                    await self._request_gossip(peer)
        except* TransportError as eg:
            first = eg.exceptions[0]
            reason = first.reason if isinstance(first, TransportError) else "transport"
            peer.close_reason = peer.close_reason or reason
        except* _Disconnect as eg:
            peer.close_reason = peer.close_reason or str(eg.exceptions[0])
        except* (OSError, MalformedMessage) as eg:
            peer.close_reason = peer.close_reason or type(eg.exceptions[0]).__name__
        finally:
            await self._forget(peer)

    async def _exchange_init(self, peer: Peer) -> None:
        init = wire.Init(networks=[self.config.chain_hash])
        await peer.conn.send(init.encode())
        async with asyncio.timeout(self.config.handshake_timeout):
            while True:
                msg = await peer.conn.recv()
                if wire.message_type(msg) == wire.INIT:
                    peer.init = wire.Init.decode(msg)
                    break
                self.counters["before_init_ignored"] += 1
        nets = peer.init.networks
        if nets is not None and self.config.chain_hash not in nets:
            await peer.conn.send(wire.encode_error("no common network"))
            raise _Disconnect("wrong_network")

    def _become_ready(self, peer: Peer) -> bool:
        """Apply the tie-break; True when ``peer`` is kept."""
        if self._closing:
            return False
        other = self._active.get(peer.node_id)
        if other is not None and other is not peer:
            lower_is_us = self.node_id < peer.node_id
            # keep the connection initiated by the node with the lower node_id
            keep_new = peer.outbound == lower_is_us and other.outbound != lower_is_us
            self.counters["tie_breaks"] += 1
            loser = other if keep_new else peer
            loser.close_reason = "duplicate_connection"
            if loser is other:
                self._cancel(other)
            else:
                return False
        self._active[peer.node_id] = peer
        peer.ready.set()
        self.counters["ready"] += 1
        return True

    def _cancel(self, peer: Peer) -> None:
        if peer.task is not None and not peer.task.done():
            peer.task.cancel()

    async def _forget(self, peer: Peer) -> None:
        self._connections.discard(peer)
        if self._active.get(peer.node_id) is peer:
            del self._active[peer.node_id]
        self.counters[f"closed:{peer.close_reason or 'cancelled'}"] += 1
        with contextlib.suppress(Exception):
            await asyncio.shield(peer.conn.close())
        peer.closed.set()

    async def disconnect(
        self, node_id: bytes, generation: int | None = None, reason: str = "local"
    ) -> bool:
        """Close the connection to ``node_id`` if it is of ``generation`` (any
        generation when ``None``); a task of an older generation can never
        close a newer connection. Returns whether one was closed.

        # Cancel safety
        The connection is closed (its tasks cancelled) before this returns.
        """
        peer = self._active.get(node_id)
        if peer is None or (generation is not None and peer.generation != generation):
            self.counters["stale_generation_ignored"] += 1
            return False
        peer.close_reason = reason
        self._cancel(peer)
        await peer.closed.wait()
        return True

    async def _request_gossip(self, peer: Peer) -> None:
        ch = self.config.chain_hash
        if self.config.sync_mode == "query":
            # new gossip from now on, and the backlog channel by channel
            await peer.conn.send(wire.GossipTimestampFilter(ch, int(time.time())).encode())
            await peer.conn.send(wire.QueryChannelRange(ch).encode())
        else:
            f = wire.GossipTimestampFilter(ch, self.config.first_timestamp)
            await peer.conn.send(f.encode())

    async def _query_next_chunk(self, peer: Peer) -> None:
        if peer.query_in_flight or not peer.scid_chunks:
            return
        chunk = peer.scid_chunks.pop(0)
        peer.query_in_flight = True
        await peer.conn.send(wire.QueryShortChannelIds(self.config.chain_hash, chunk).encode())

    async def _pinger(self, peer: Peer) -> None:
        cfg = self.config
        while True:
            idle = time.monotonic() - peer.last_rx
            if idle < cfg.ping_interval:
                await asyncio.sleep(cfg.ping_interval - idle)
                continue
            peer.pong.clear()
            await peer.conn.send(wire.encode_ping(8))
            self.counters["pings_sent"] += 1
            try:
                async with asyncio.timeout(cfg.ping_timeout):
                    await peer.pong.wait()
            except TimeoutError:
                # acts on its own generation only (snarkOS #3331)
                self.counters["ping_timeouts"] += 1
                raise _Disconnect("ping_timeout") from None

    async def _reader(self, peer: Peer, tg: asyncio.TaskGroup) -> None:
        pid = self.peer_id(peer.node_id)
        ch = self.config.chain_hash
        while True:
            msg = await peer.conn.recv()
            peer.last_rx = time.monotonic()
            t = wire.message_type(msg)
            if t in GOSSIP_TYPES:
                peer.gossip_received += 1
                self.counters["gossip_received"] += 1
                self.last_gossip_at = peer.last_rx
                await self._admit(pid, msg)
            elif t == wire.PING:
                n = wire.decode_ping(msg)
                if self.config.answer_pings and n < wire.PONG_BYTES_IGNORED:
                    await peer.conn.send(wire.encode_pong(n))
            elif t == wire.PONG:
                peer.pong.set()
            elif t == wire.GOSSIP_TIMESTAMP_FILTER:
                f = wire.GossipTimestampFilter.decode(msg)
                if f.chain_hash == ch:
                    tg.create_task(self._send_gossip(peer, f.first_timestamp, f.timestamp_range))
            elif t == wire.QUERY_CHANNEL_RANGE:
                q = wire.QueryChannelRange.decode(msg)
                tg.create_task(self._reply_channel_range(peer, q))
            elif t == wire.REPLY_CHANNEL_RANGE:
                r = wire.ReplyChannelRange.decode(msg)
                # each channel is fetched from the first peer that lists it,
                # and not at all when the graph has it (a restarted node)
                graph = self.pipeline.graph
                new = [
                    s
                    for s in r.short_channel_ids
                    if s not in self._requested_scids and graph.channel(s) is None
                ]
                self._requested_scids.update(new)
                step = wire.MAX_SCIDS_PER_MESSAGE
                peer.scid_chunks.extend(new[i : i + step] for i in range(0, len(new), step))
                await self._query_next_chunk(peer)
            elif t == wire.QUERY_SHORT_CHANNEL_IDS:
                q2 = wire.QueryShortChannelIds.decode(msg)
                tg.create_task(self._reply_short_channel_ids(peer, q2))
            elif t == wire.REPLY_SHORT_CHANNEL_IDS_END:
                peer.query_in_flight = False
                await self._query_next_chunk(peer)
                if not peer.scid_chunks and not peer.query_in_flight:
                    peer.sync_done.set()
            elif t == wire.ERROR:
                self.counters["errors_received"] += 1
                raise _Disconnect("peer_error")
            elif t == wire.WARNING:
                self.counters["warnings_received"] += 1
            elif t == wire.INIT:
                self.counters["duplicate_init"] += 1
            elif t % 2 == 0:
                # BOLT #1: an unknown even type must fail the connection
                await peer.conn.send(wire.encode_error(f"unknown even message type {t}"))
                raise _Disconnect("unknown_even_type")
            else:
                self.counters["unknown_odd_ignored"] += 1

    async def _admit(self, pid: int, msg: bytes) -> None:
        """Submit; on ``queue_full`` stop reading this peer until room frees up."""
        a = self.pipeline.submit(pid, msg)
        while a.decision == "queue_full":
            self.counters["backpressure_waits"] += 1
            self._work.set()
            async with self._room:
                await self._room.wait()
            a = self.pipeline.submit(pid, msg)
        if a.decision == "queued":
            self._work.set()

    async def _send_gossip(self, peer: Peer, first_timestamp: int, timestamp_range: int) -> None:
        """Answer a ``gossip_timestamp_filter``: walk the graph with a cursor,
        one page at a time, sending each page before reading the next (the
        send waits while the peer does not read)."""
        graph = self.pipeline.graph
        cursor: bytes | None = b""
        page_size = self.config.dump_page
        while cursor is not None:
            page, cursor = graph.gossip_after(cursor, first_timestamp, timestamp_range, page_size)
            for m in page:
                await peer.conn.send(m)
            self.counters["gossip_sent"] += len(page)

    async def _reply_channel_range(self, peer: Peer, q: wire.QueryChannelRange) -> None:
        """Answer ``query_channel_range`` in replies of at most
        ``MAX_SCIDS_PER_MESSAGE`` ids, read from the graph one reply at a time;
        the replies cover the queried blocks without gaps (BOLT #7)."""
        graph = self.pipeline.graph
        step = wire.MAX_SCIDS_PER_MESSAGE
        end = min(q.first_blocknum + q.number_of_blocks, 0xFFFFFFFF)
        first = q.first_blocknum
        after: int | None = None
        while True:
            chunk = graph.short_channel_ids_in_blocks(
                q.first_blocknum, q.number_of_blocks, after, step + 1
            )
            last = len(chunk) <= step
            chunk = chunk[:step]
            upto = end if last else min((chunk[-1] >> 40) + 1, end)
            reply = wire.ReplyChannelRange(q.chain_hash, first, max(upto - first, 1), 1, chunk)
            await peer.conn.send(reply.encode())
            if last:
                return
            first, after = upto, chunk[-1]

    async def _reply_short_channel_ids(self, peer: Peer, q: wire.QueryShortChannelIds) -> None:
        msgs = self.pipeline.graph.messages_for(q.short_channel_ids)
        for m in msgs:
            await peer.conn.send(m)
        self.counters["gossip_sent"] += len(msgs)
        await peer.conn.send(wire.ReplyShortChannelIdsEnd(q.chain_hash, 1).encode())

    # -- the pipeline's own loop ----------------------------------------------
    async def _process_loop(self) -> None:
        while True:
            await self._work.wait()
            self._work.clear()
            while self.pipeline.queued:
                # small batches once closing, so the deadline is met
                size = 256 if self._closing else self.config.batch
                try:
                    await self._process_batch(size)
                except (GossipError, OSError, ValueError):
                    # e.g. the output file failed: count it, keep the loop alive
                    self.counters["processing_errors"] += 1
                    log.exception("processing a batch failed")
                    break

    async def _process_batch(self, batch: int) -> None:
        self._busy_processing = True
        try:
            res = await asyncio.to_thread(self.pipeline.process, batch)
        finally:
            self._busy_processing = False
        bad: Counter[int] = Counter()
        for _seq, pid, _kind, decision, _reason in res.outcomes:
            if decision == "invalid_signature":
                bad[pid] += 1
        self.last_processed_at = time.monotonic()
        if self.on_accepted is not None and res.accepted:
            self.on_accepted(res.accepted)
        async with self._room:
            self._room.notify_all()
        for pid, n in bad.items():
            await self._punish(self._peer_by_id[pid], n)

    async def _punish(self, node_id: bytes, n: int) -> None:
        peer = self._active.get(node_id)
        self.counters["invalid_signatures"] += n
        if peer is None:
            return
        peer.invalid_signatures += n
        if peer.invalid_signatures >= self.config.ban_after_invalid and not self.is_banned(node_id):
            self._banned[node_id] = time.monotonic() + self.config.ban_seconds
            self.counters["bans"] += 1
            with contextlib.suppress(TransportError, OSError):
                await peer.conn.send(wire.encode_warning("too many invalid signatures"))
            peer.close_reason = "banned"
            self._cancel(peer)

    async def drain(self) -> None:
        """Wait until every admitted message is decided.

        # Cancel safety
        Safe to cancel: the processing loop goes on.
        """
        while self.pipeline.queued or self._busy_processing:
            self._work.set()
            await asyncio.sleep(0.01)

    # -- shutdown -----------------------------------------------------------------
    async def close(self, timeout: float = 10.0) -> CloseReport:
        """Stop accepting, close every connection, drain the pipeline until the
        deadline, flush output, cancel what is left; returns within ``timeout``
        seconds with no task of this node left running.

        # Cancel safety
        Not meant to be cancelled; if it is, call it again.
        """
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        deadline = t0 + timeout
        self._closing = True
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        for p in list(self._connections):
            p.close_reason = p.close_reason or "closing"
            self._cancel(p)
        pending = [t for t in self._tasks if not t.done()]
        pending += [p.task for p in self._connections if p.task is not None and not p.task.done()]
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, (deadline - loop.time()) * 0.3))
        # drain what peers got admitted: the processing loop goes on (in small
        # batches now) until the queue is empty or the deadline is near
        if self._processing is None and self.pipeline.queued:
            await self.start()
        while (self.pipeline.queued or self._busy_processing) and loop.time() < deadline - 0.05:
            self._work.set()
            await asyncio.sleep(0.005)
        drained = not self.pipeline.queued and not self._busy_processing
        # let a batch in flight finish, so what it accepted is written too
        while self._busy_processing and loop.time() < deadline - 0.01:
            await asyncio.sleep(0.002)
        if self._processing is not None:
            self._processing.cancel()
            await asyncio.wait({self._processing}, timeout=max(0.0, deadline - loop.time()))
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await self._server.wait_closed()
        try:
            self.pipeline.sync_store()  # what was accepted is on disk before close returns
        except GossipError:
            log.exception("syncing the store failed")
        return CloseReport(drained, self.pipeline.queued, loop.time() - t0)


class _Disconnect(GossipError):
    """Internal: ends a connection's task group with a reason."""
