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
* :meth:`GossipNode.close` stops accepting, closes peers, drains the pipeline up
  to its deadline, flushes output, cancels what is left and returns within
  the deadline with no task and no timer left (lnd #8912).

What the node serves is the pipeline's own graph (``pipeline.graph``): the
files it loaded and what its peers sent obey the same rules, so a peer's
announcement for a channel the node already has is a ``duplicate`` whatever
its signatures. Dumps are read from the graph a page at a time (a cursor),
never copied whole.

This module is the connection lifecycle and the processing loop; each
role has a module of its own, with its per-peer state: the query client
(:mod:`lngossip.net.query`), the responder to a peer's queries and dumps
(:mod:`lngossip.net.responder`), relay (:mod:`lngossip.net.relay`); the
connection and what it owns (:mod:`lngossip.net.peer`), which inbound
connection to evict (:mod:`lngossip.net.inbound`), the settings
(:mod:`lngossip.net.config`).
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
from dataclasses import dataclass
from typing import Any

from lngossip.engine import PipelineLike, make_pipeline, rust_pipeline
from lngossip.errors import ConfigError, GossipError, MalformedMessage
from lngossip.net import messages as bolt
from lngossip.net.config import NodeConfig
from lngossip.net.inbound import InboundLimits, Pending, netgroup, quiet_accept_errors
from lngossip.net.peer import Peer
from lngossip.net.processing import ProcessingLoop
from lngossip.net.query import QueryClient
from lngossip.net.relay import Relay
from lngossip.net.responder import Responder
from lngossip.net.transport import Keys, TransportError, accept, connect
from lngossip.wire import GOSSIP_TYPES

__all__ = ["CloseReport", "GossipNode", "NodeConfig", "Peer"]

log = logging.getLogger(__name__)


@dataclass
class CloseReport:
    """What :meth:`GossipNode.close` achieved within its deadline."""

    drained: bool
    left_queued: int
    elapsed_s: float


class GossipNode:
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
        self._queries = QueryClient(self.config, self.pipeline, self.counters)
        self._responder = Responder(self.config, self.pipeline, self.counters)
        self._relay = Relay(self.config, self.counters)
        self._generation = itertools.count(1)
        self._peer_ids: dict[bytes, int] = {}
        self._peer_by_id: dict[int, bytes] = {}
        self._connections: set[Peer] = set()
        self._active: dict[bytes, Peer] = {}
        self._banned: dict[bytes, float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._processor = ProcessingLoop(
            self.pipeline, self.config, self.counters, self._batch_decided, self._punish
        )
        self._maintenance: asyncio.Task[None] | None = None
        self._relaying: asyncio.Task[None] | None = None
        self._inbound = InboundLimits(self.config, self.counters)
        #: peers a _keep_connected loop redials; reconnects under way for the others
        self._persistent: set[bytes] = set()
        self._redials = 0
        self._ready_changed = asyncio.Event()
        #: set by close(): loop time by which the last batch must end
        self._close_deadline: float | None = None
        #: when gossip last arrived (monotonic seconds; ``None``: never)
        self.last_gossip_at: float | None = None
        #: when the last batch finished (monotonic seconds; ``None``: never)
        self.last_processed_at: float | None = None

    async def __aenter__(self) -> GossipNode:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def _closing(self) -> bool:
        return self._close_deadline is not None

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
        self._processor.start()
        if self._maintenance is None and self.config.prune_interval > 0:
            self._maintenance = self._spawn(self._prune_loop(), "lngossip-prune")
        if self._relaying is None and self.config.relay_interval > 0:
            self._relaying = self._spawn(self._relay.run(self._active), "lngossip-relay")

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
        quiet_accept_errors(asyncio.get_running_loop(), self.counters)
        self._server = await asyncio.start_server(self._on_inbound, host, port, limit=1 << 17)
        sock = self._server.sockets[0].getsockname()
        log.info("listening on %s:%d", sock[0], sock[1])
        return str(sock[0]), int(sock[1])

    async def _on_inbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            writer.close()
            return
        peername = writer.get_extra_info("peername")
        address = str(peername[0]) if isinstance(peername, tuple) else str(peername)
        me = asyncio.current_task()
        pending = self._inbound.open(writer, address, me)
        if pending is None:
            return
        if me is not None:
            self._tasks.add(me)  # so close() cancels a handshake in progress
        peer: Peer | None = None
        try:
            try:
                # handshake and both inits within their own short deadline
                async with asyncio.timeout(self.config.inbound_ready_timeout):
                    peer = await self._handshake_inbound(reader, writer, address, pending)
                    if peer is not None:
                        pending.peer = peer
                        await _wait_any(peer.ready, peer.closed)
            except TimeoutError:
                self.counters["inbound_ready_timeout"] += 1
                if peer is None:
                    writer.close()
                else:
                    peer.close_reason = peer.close_reason or "ready_timeout"
                    self._cancel(peer)
            finally:
                self._inbound.pending.discard(pending)
            if peer is not None:
                await peer.closed.wait()
        except asyncio.CancelledError:
            # closing or evicted: end this server callback quietly (the stream
            # machinery would log a cancelled callback task as an error)
            writer.close()
        finally:
            self._inbound.closed(pending)
            if me is not None:
                self._tasks.discard(me)

    async def _handshake_inbound(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        address: str,
        pending: Pending,
    ) -> Peer | None:
        def acted() -> None:
            pending.acted = True

        try:
            conn = await accept(
                reader,
                writer,
                self.keys,
                timeout=self.config.handshake_timeout,
                codec=self.config.codec,
                on_act_one=acted,
            )
        except (TransportError, OSError) as e:
            self.counters[f"handshake_failed:{getattr(e, 'reason', 'os')}"] += 1
            log.info("handshake from %s failed: %s", address, e)
            writer.close()
            return None
        if self.is_banned(conn.remote_node_id) or self._closing:
            self.counters["refused_banned"] += 1
            log.info("refused banned peer %s from %s", conn.remote_node_id.hex()[:16], address)
            await conn.close()
            return None
        peer = Peer(
            conn.remote_node_id,
            next(self._generation),
            False,
            conn,
            address=address,
            netgroup=pending.netgroup,
        )
        # the connection is the node's to own (and to cancel), not the server callback's
        self._spawn(self._run(peer), f"peer-{peer.node_id.hex()[:8]}-{peer.generation}")
        return peer

    async def connect(
        self, node_id: bytes, host: str, port: int, *, persistent: bool = False
    ) -> Peer | None:
        """Dial ``node_id`` at ``host:port``; returns the ready connection to that
        peer (possibly another one kept by the tie-break). ``persistent``:
        keep reconnecting with exponential backoff and jitter until
        :meth:`close` (returns ``None`` at once; failures are counted and logged).

        Raises:
            TransportError: the handshake failed (``reason`` says how) or the
                connection closed before it was ready (``closed_before_ready``).
            OSError: the TCP connection could not be made.
            TimeoutError: no ready connection within ``handshake_timeout`` twice.
            ConfigError: the node is closing or ``node_id`` is banned.

        # Cancel safety
        Cancelling abandons the attempt; a half-open connection is closed.
        """
        await self.start()
        if persistent:
            self._persistent.add(node_id)
            self._spawn(self._keep_connected(node_id, host, port), f"reconnect-{node_id.hex()[:8]}")
            return None
        return await self._dial(node_id, host, port)

    async def _dial(self, node_id: bytes, host: str, port: int) -> Peer:
        if self._closing:
            raise ConfigError("the node is closing")
        if self.is_banned(node_id):
            raise ConfigError(f"{node_id.hex()} is banned")
        try:
            conn = await connect(
                host,
                port,
                self.keys,
                node_id,
                timeout=self.config.handshake_timeout,
                codec=self.config.codec,
            )
        except (TransportError, OSError) as e:
            self.counters[f"dial_failed:{getattr(e, 'reason', 'os')}"] += 1
            log.info("dialling %s@%s:%d failed: %s", node_id.hex()[:16], host, port, e)
            raise
        peer = Peer(
            node_id,
            next(self._generation),
            True,
            conn,
            address=f"{host}:{port}",
            netgroup=netgroup(host),
            dialled=(host, port),
        )
        task = self._spawn(self._run(peer), f"peer-{node_id.hex()[:8]}-{peer.generation}")
        ready = asyncio.ensure_future(peer.ready.wait())
        done = asyncio.ensure_future(task)
        try:
            await asyncio.wait({ready, done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        # with simultaneous dials, the kept connection may be the peer's own:
        # wait for one to be ready, or for this one to end
        deadline = time.monotonic() + self.config.handshake_timeout
        while (active := self._active.get(node_id)) is None:
            if peer.closed.is_set():
                raise TransportError("closed_before_ready", peer.close_reason)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no ready connection to {node_id.hex()}")
            self._ready_changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self._ready_changed.wait()
        return active

    async def _keep_connected(self, node_id: bytes, host: str, port: int) -> None:
        failures = 0
        while not self._closing:
            try:
                peer = await self._dial(node_id, host, port)
            except (TransportError, OSError, TimeoutError, ConfigError):
                failures += 1
            else:
                failures = 0
                await peer.closed.wait()
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
                native = rust_pipeline(self.pipeline)
                if peer.conn.codec == "rust" and native is not None:
                    peer.conn.attach(native, self.peer_id(peer.node_id))
                    reader = self._batch_reader(peer)
                else:
                    reader = self._reader(peer)
                tg.create_task(reader, name=f"reader-{peer.generation}")
                tg.create_task(self._sender(peer), name=f"sender-{peer.generation}")
                tg.create_task(self._pinger(peer), name=f"pinger-{peer.generation}")
                if self.config.sync:
                    await self._queries.request_gossip(peer)
        except* TransportError as eg:
            first = eg.exceptions[0]
            reason = first.reason if isinstance(first, TransportError) else "transport"
            peer.close_reason = peer.close_reason or reason
        except* _Disconnect as eg:
            peer.close_reason = peer.close_reason or str(eg.exceptions[0])
        except* (OSError, MalformedMessage) as eg:
            peer.close_reason = peer.close_reason or type(eg.exceptions[0]).__name__
        except* TimeoutError:
            peer.close_reason = peer.close_reason or "init_timeout"
        finally:
            await self._forget(peer)

    async def _exchange_init(self, peer: Peer) -> None:
        init = bolt.Init(networks=[self.config.chain_hash])
        await peer.conn.send(init.encode())
        async with asyncio.timeout(self.config.handshake_timeout):
            while True:
                msg = await peer.conn.recv()
                if bolt.message_type(msg) == bolt.INIT:
                    try:
                        peer.init = bolt.Init.decode(msg)
                    except MalformedMessage as e:
                        # BOLT #1: unknown even TLV types and TLV types out of
                        # order fail the connection
                        await self._fail(peer, f"invalid init: {e.reason}", f"init_{e.reason}")
                    break
                self.counters["before_init_ignored"] += 1
        assert peer.init is not None
        unknown = bolt.unknown_required_features(peer.init.features)
        if unknown:
            # BOLT #1: the receiver of an unknown even feature bit MUST fail the connection
            bits = ",".join(map(str, sorted(unknown)))
            await self._fail(peer, f"unknown required features {bits}", "unknown_required_feature")
        nets = peer.init.networks
        if nets is not None and self.config.chain_hash not in nets:
            await self._fail(peer, "no common network", "wrong_network")

    async def _fail(self, peer: Peer, text: str, reason: str) -> None:
        """Send a BOLT #1 ``error`` and end the connection with ``reason``."""
        log.warning("peer %s: %s; failing the connection", peer.node_id.hex()[:16], text)
        await self._last_word(peer, bolt.encode_error(text))
        raise _Disconnect(reason)

    async def _last_word(self, peer: Peer, msg: bytes) -> None:
        """Send ``msg`` before closing, if the peer takes it within a second
        (a peer that does not read must not hold the connection open)."""
        with contextlib.suppress(TransportError, OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await peer.conn.send(msg)

    async def _warn_and_close(self, peer: Peer, text: str, reason: str) -> None:
        """Send a BOLT #1 ``warning`` and end the connection with ``reason``."""
        log.warning("peer %s: %s; disconnecting", peer.node_id.hex()[:16], text)
        self.counters[f"protocol_violation:{reason}"] += 1
        await self._last_word(peer, bolt.encode_warning(text))
        raise _Disconnect(reason)

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
        if not peer.outbound and not self._inbound.make_room(peer, self._active):
            return False
        self._active[peer.node_id] = peer
        peer.ready_at = time.monotonic()
        peer.ready.set()
        self._ready_changed.set()
        self.counters["ready"] += 1
        log.info(
            "peer %s ready (%s, generation %d)",
            peer.node_id.hex()[:16],
            peer.initiator,
            peer.generation,
        )
        return True

    def _cancel(self, peer: Peer) -> None:
        if peer.task is not None and not peer.task.done():
            peer.task.cancel()

    async def _forget(self, peer: Peer) -> None:
        """Drop ``peer`` from the books, close its socket, set ``closed``.

        ``closed`` is set even if this task is cancelled while the socket
        closes: ``disconnect()`` and the inbound server callback wait on it.
        On Python < 3.13 a child of the connection's task group that fails
        while the group exits leaves a cancel of this task that the group does
        not take back (CPython #116720); it lands at the first ``await`` here.
        """
        try:
            self._connections.discard(peer)
            if self._active.get(peer.node_id) is peer:
                del self._active[peer.node_id]
            reason = peer.close_reason or "cancelled"
            self.counters[f"closed:{reason}"] += 1
            self.counters["bytes_received"] += peer.conn.bytes_received
            self.counters["bytes_sent"] += peer.conn.bytes_sent
            if peer.ready.is_set():
                log.info("peer %s disconnected: %s", peer.node_id.hex()[:16], reason)
            self._ready_changed.set()
            with contextlib.suppress(Exception):
                await asyncio.shield(peer.conn.close())
        finally:
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

    @property
    def querying(self) -> bool:
        """Whether our own queries are outstanding (or waiting their turn)
        on a ready connection, or a reconnect to ask a peer that ignored
        them with ``gossip_timestamp_filter`` is under way."""
        return self._redials > 0 or self._queries.pending(self._active.values())

    async def _fall_back_to_filter(self, peer: Peer, why: str) -> None:
        """Our query was refused or not answered: ask for everything since
        ``first_timestamp`` with ``gossip_timestamp_filter`` instead, a peer
        we dialled on a new connection (see :meth:`QueryClient.give_up`)."""
        reconnect = peer.dialled is not None and not self._closing
        self._queries.give_up(peer, why, reconnect=reconnect)
        if reconnect:
            if peer.node_id not in self._persistent:  # a persistent peer is redialled anyway
                self._redials += 1
                self._spawn(self._redial(peer), f"redial-{peer.node_id.hex()[:8]}")
            raise _Disconnect("query_fallback")
        await self._queries.ask_with_filter(peer)

    async def _redial(self, peer: Peer) -> None:
        """Dial ``peer`` again once its connection has closed."""
        assert peer.dialled is not None
        try:
            await peer.closed.wait()
            await self._dial(peer.node_id, *peer.dialled)
        except (TransportError, OSError, TimeoutError, ConfigError) as e:
            self.counters["redial_failed"] += 1
            log.info("reconnecting to %s failed: %s", peer.node_id.hex()[:16], e)
        finally:
            self._redials -= 1

    async def _pinger(self, peer: Peer) -> None:
        """Ping after ``ping_interval`` without hearing from the peer; end the
        connection (``ping_timeout``) only when a whole ``ping_timeout``
        passes with no pong and no progress: nothing received and none of
        our bytes taken by the peer. Our ping goes out in the control lane,
        but in the socket buffers it still waits behind the data sent before
        it, which a slow honest reader takes minutes to read."""
        cfg = self.config
        while True:
            idle = time.monotonic() - peer.last_rx
            if idle < cfg.ping_interval:
                await asyncio.sleep(cfg.ping_interval - idle)
                continue
            peer.keepalive.pong.clear()
            await self._enqueue(peer, bolt.encode_ping(8), control=True)
            self.counters["pings_sent"] += 1
            mark = (peer.conn.bytes_delivered(), peer.last_rx)
            while True:
                try:
                    async with asyncio.timeout(cfg.ping_timeout):
                        await peer.keepalive.pong.wait()
                    break
                except TimeoutError:
                    now = (peer.conn.bytes_delivered(), peer.last_rx)
                    if now == mark:
                        # acts on its own generation only (snarkOS #3331)
                        self.counters["ping_timeouts"] += 1
                        raise _Disconnect("ping_timeout") from None
                    mark = now  # the peer reads or talks: alive, the pong is on its way
                    self.counters["ping_waits_extended"] += 1

    def _note_gossip(self, peer: Peer, n: int) -> None:
        """Book ``n`` gossip messages just received from ``peer``."""
        peer.gossip_received += n
        peer.keepalive.gossip_since_ping = True
        self.counters["gossip_received"] += n
        self.last_gossip_at = peer.last_rx
        self._queries.on_gossip(peer)

    async def _reader(self, peer: Peer) -> None:
        """Read one message at a time (the Python codec, or a pipeline the
        Rust codec cannot reach) and submit gossip from Python."""
        pid = self.peer_id(peer.node_id)
        while True:
            msg = await peer.conn.recv()
            peer.last_rx = time.monotonic()
            if bolt.message_type(msg) in GOSSIP_TYPES:
                self._note_gossip(peer, 1)
                if await self._processor.admit(pid, msg) == "rate_limited":
                    self._count_rate_limited(pid)
            else:
                await self._on_message(peer, msg)

    async def _batch_reader(self, peer: Peer) -> None:
        """Read the socket a chunk at a time through the Rust codec, which
        submits the gossip in it to the pipeline itself; only the other
        messages and the read's decision counts come back here. While the
        pipeline answers ``queue_full`` for this peer, the socket is not read
        (the refused message and the rest of the chunk wait in the codec)."""
        pid = self.peer_id(peer.node_id)
        conn = peer.conn
        while True:
            f = await conn.read_batch()
            while True:
                if f.frames:
                    peer.last_rx = time.monotonic()
                if f.gossip:
                    self._note_gossip(peer, f.gossip)
                    if f.count("queued"):
                        self._processor.wake()
                    if n := f.count("rate_limited"):
                        self._count_rate_limited(pid, n)
                for msg in f.messages:
                    await self._on_message(peer, msg)
                if f.error is not None:
                    raise TransportError(f.error, "frame MAC check failed")
                if not f.paused:
                    break
                await self._processor.wait_for_room()
                f = conn.resume()

    async def _on_message(self, peer: Peer, msg: bytes) -> None:
        """Act on a message that is not gossip. One that cannot be decoded
        gets a BOLT #1 ``warning`` naming the message and the fault, then
        the connection ends (``malformed_message``); so does one that breaks
        a rule of the protocol (its own reason)."""
        try:
            await self._dispatch(peer, msg)
        except MalformedMessage as e:
            msg_type = bolt.message_type(msg)
            name = bolt.MESSAGE_NAMES.get(msg_type, msg_type)
            await self._warn_and_close(peer, f"malformed {name}: {e.reason}", "malformed_message")
        except bolt.ProtocolViolation as e:
            await self._warn_and_close(peer, e.text, e.reason)

    async def _dispatch(self, peer: Peer, msg: bytes) -> None:
        msg_type = bolt.message_type(msg)
        if msg_type in Responder.MSG_TYPES:
            self._responder.on_message(peer, msg_type, msg)
        elif msg_type in QueryClient.MSG_TYPES:
            await self._queries.on_message(peer, msg_type, msg)
        elif msg_type == bolt.PING:
            n = bolt.decode_ping(msg)
            if peer.keepalive.on_ping(n, self.config, time.monotonic()):
                await self._enqueue(peer, bolt.encode_pong(n), control=True)
        elif msg_type == bolt.PONG:
            peer.keepalive.pong.set()
        elif msg_type == bolt.ERROR:
            self.counters["errors_received"] += 1
            log.info("peer %s sent an error; disconnecting", peer.node_id.hex()[:16])
            raise _Disconnect("peer_error")
        elif msg_type == bolt.WARNING:
            self.counters["warnings_received"] += 1
            if peer.our_queries.outstanding:
                # e.g. LDK answers query_short_channel_ids with "Not implemented"
                await self._fall_back_to_filter(peer, "refused")
        elif msg_type == bolt.INIT:
            self.counters["duplicate_init"] += 1
        elif msg_type % 2 == 0:
            # BOLT #1: an unknown even type must fail the connection
            await self._fail(peer, f"unknown even message type {msg_type}", "unknown_even_type")
        else:
            self.counters["unknown_odd_ignored"] += 1

    async def _enqueue(self, peer: Peer, msg: bytes, *, control: bool = False) -> None:
        """Queue a message for the peer's sender: in the control lane (pings,
        pongs: sent first) or the data lane. A peer whose lanes pass
        ``outbound_queue_bytes`` together is not reading and is disconnected."""
        if peer.outbox.size + len(msg) > self.config.outbound_queue_bytes:
            self.counters["outbound_queue_full"] += 1
            log.info("peer %s does not read; disconnecting", peer.node_id.hex()[:16])
            raise _Disconnect("outbound_queue_full")
        peer.outbox.put(msg, control=control)

    async def _sender(self, peer: Peer) -> None:
        """The task that writes what the peer asked for and what is queued for
        it (our own init, queries and last words are sent where they arise):
        queued messages first,
        then the answer to its ``query_channel_range``, to its
        ``query_short_channel_ids``, then its ``gossip_timestamp_filter`` dump,
        one page at a time, read from the graph only as the peer reads (each
        ``send`` waits while the peer's socket buffer is full; see
        :mod:`lngossip.net.responder`). Also gives up on our own queries
        that got no answer in ``query_timeout``."""
        outbox = peer.outbox
        while True:
            if outbox:
                # the control lane (pings, pongs), then the data lane (relay), in
                # batches of up to 64 KiB: one write each
                batch = outbox.take()
                await peer.conn.send_many(batch)
                peer.keepalive.sent(batch)
            elif not await self._responder.step(peer):
                outbox.wake.clear()
                timeout = None
                deadline = peer.our_queries.deadline
                if deadline is not None:
                    timeout = max(deadline - time.monotonic(), 0.0)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await outbox.wake.wait()
                if self._queries.timed_out(peer):
                    await self._fall_back_to_filter(peer, "timeout")

    def _count_rate_limited(self, pid: int, n: int = 1) -> None:
        """Count messages over the spam limit, for the node and its peer."""
        self.counters["rate_limited"] += n
        peer = self._active.get(self._peer_by_id.get(pid, b""))
        if peer is not None:
            peer.rate_limited += n

    # -- what the pipeline decided ---------------------------------------------
    def _batch_decided(self, res: Any) -> Counter[int]:
        """Book a processed batch: spam counts, relay, ``on_accepted``;
        returns the invalid signatures per pipeline peer."""
        bad: Counter[int] = Counter()
        useful: set[int] = set()
        for _seq, pid, _msg_type, decision, _reason in res.outcomes:
            if decision == "accepted":
                useful.add(pid)
            elif decision == "invalid_signature":
                bad[pid] += 1
            elif decision == "rate_limited":
                self._count_rate_limited(pid)
        self.last_processed_at = now = time.monotonic()
        for pid in useful:  # protected from eviction for a while
            peer = self._active.get(self._peer_by_id.get(pid, b""))
            if peer is not None:
                peer.last_useful = now
        if res.accepted:
            # both engines list the accepted messages in the order of their outcomes
            origins = [
                self._peer_by_id.get(o.peer) for o in res.outcomes if o.decision == "accepted"
            ]
            self._relay.queue(res.accepted, origins, self._active.values())
        if self.on_accepted is not None and res.accepted:
            self.on_accepted(res.accepted)
        return bad

    async def _punish(self, pid: int, n: int) -> None:
        """Book ``n`` invalid signatures from pipeline peer ``pid``; warn,
        disconnect and ban a peer past ``ban_after_invalid``."""
        node_id = self._peer_by_id[pid]
        peer = self._active.get(node_id)
        self.counters["invalid_signatures"] += n
        if peer is None:
            return
        peer.invalid_signatures += n
        if peer.invalid_signatures >= self.config.ban_after_invalid and not self.is_banned(node_id):
            self._banned[node_id] = time.monotonic() + self.config.ban_seconds
            self.counters["bans"] += 1
            log.info("banned %s: too many invalid signatures", node_id.hex()[:16])
            await self._last_word(peer, bolt.encode_warning("too many invalid signatures"))
            peer.close_reason = "banned"
            self._cancel(peer)

    async def drain(self) -> None:
        """Wait until every admitted message is decided.

        # Cancel safety
        Safe to cancel: the processing loop goes on.
        """
        await self.start()
        await self._processor.drain()

    # -- shutdown -----------------------------------------------------------------
    async def close(self, timeout: float = 10.0) -> CloseReport:
        """Stop accepting, close every connection, drain the pipeline until the
        deadline, flush output, cancel what is left; returns within ``timeout``
        seconds with no task of this node left running.

        Once closing, batches are sized from the measured cost per message
        so the last one ends before the deadline. If one still overruns it
        (a stalled machine), close returns anyway; the core commits that batch
        when its thread returns, and its accepted messages then reach
        ``on_accepted`` and the relay (``CloseReport.drained`` is ``False``).

        # Cancel safety
        Not meant to be cancelled; if it is, call it again.
        """
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        deadline = t0 + timeout
        self._close_deadline = self._processor.close_deadline = deadline - 0.05
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
        # drain what peers got admitted: the processing loop goes on in
        # batches sized to end before the deadline (see ProcessingLoop.batch_size) and
        # returns when the queue is empty or no batch fits; a batch in flight
        # is waited for, so what it accepted reaches on_accepted too
        overran = not await self._processor.finish(deadline)
        drained = not self.pipeline.queued and not overran
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await self._server.wait_closed()
        try:
            self.pipeline.sync_store()  # what was accepted is on disk before close returns
        except GossipError:
            log.exception("syncing the store failed")
        return CloseReport(drained, self.pipeline.queued, loop.time() - t0)


async def _wait_any(*events: asyncio.Event) -> None:
    """Wait until one of ``events`` is set."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


class _Disconnect(GossipError):
    """Internal: ends a connection's task group with a reason."""
