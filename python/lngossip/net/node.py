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
import errno
import functools
import hashlib
import ipaddress
import itertools
import logging
import os
import random
import resource
import struct
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lngossip import _core
from lngossip.errors import ConfigError, GossipError, MalformedMessage
from lngossip.ingest import PipelineLike, make_pipeline
from lngossip.net import messages as bolt
from lngossip.net.transport import (
    CodecName,
    Connection,
    Keys,
    TransportError,
    accept,
    connect,
)
from lngossip.wire import (
    CHANNEL_UPDATE,
    MAINNET_CHAIN_HASH,
    NODE_ANNOUNCEMENT,
    parse_message,
)

__all__ = ["CloseReport", "Node", "NodeConfig", "Peer", "eviction_victim", "netgroup"]

log = logging.getLogger("lngossip.net")

GOSSIP_TYPES = frozenset((256, 257, 258))
_NODE_ANNOUNCEMENT_TYPE = (257).to_bytes(2, "big")
_PONG_TYPE = bolt.PONG.to_bytes(2, "big")

#: Inbound peers protected from eviction by network group: the ones whose
#: group hashes lowest under a secret key of this node, so an attacker cannot
#: choose groups that win (Bitcoin Core ``AttemptToEvictConnection`` protects
#: 4 by keyed network group).
EVICTION_PROTECT_NETGROUPS = 4
#: Inbound peers protected from eviction for having sent gossip we accepted
#: most recently (Bitcoin Core protects 4 for novel transactions and 4 for
#: novel blocks). After these, half of the rest, the longest connected, are
#: protected too, and the victim is the youngest connection of the network
#: group holding the most connections.
EVICTION_PROTECT_USEFUL = 8


def netgroup(address: str) -> str:
    """The network group of an IP address, as eviction and the
    per-group limit count it: the /16 of an IPv4 address (an IPv4-mapped
    IPv6 address counts as IPv4), the /32 of an IPv6 address, the text
    itself for anything else (a Unix socket path). One operator easily holds
    many addresses in one group, few groups (Bitcoin Core's ``GetGroup``)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 16 if ip.version == 4 else 32
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@dataclass
class NodeConfig:
    """Settings of a :class:`Node`; times in seconds."""

    chain_hash: bytes = MAINNET_CHAIN_HASH
    #: Send a ``ping`` after this long without hearing from the peer.
    ping_interval: float = 30.0
    #: Disconnect when, after a ``ping``, this long passes with neither the
    #: ``pong`` nor any progress: nothing received from the peer and none of
    #: our bytes taken by its TCP stack (see :meth:`Connection.bytes_delivered`).
    #: A peer reading a long dump slowly is alive even when our ``ping``
    #: waits behind megabytes of our own data in the socket buffers; only a
    #: peer that neither answers nor reads is dead (issue 13: three of four
    #: slow honest readers were cut off by the pong-only rule).
    ping_timeout: float = 15.0
    #: Time allowed for the BOLT #8 handshake and again for both ``init``
    #: messages of a connection we dial.
    handshake_timeout: float = 10.0
    #: Seconds an inbound connection has to finish the handshake and both
    #: ``init`` messages in all; until then it holds one of the
    #: ``max_pending_inbound`` slots, not one of the ``max_inbound`` slots.
    inbound_ready_timeout: float = 5.0
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
    #: Bytes a peer's outbound queue (pings, pongs, relay) may hold. Dumps and
    #: query replies are not queued: the sender reads them from the graph a
    #: page at a time while the peer reads. A peer that lets more pile up is
    #: not reading: it is disconnected.
    outbound_queue_bytes: int = 1 << 20
    #: What a peer's pings may cost us, in ``ping_window`` seconds. BOLT #1
    #: allows both readings of "pings too often": Core Lightning and lnd
    #: ping for keepalive only, but LDK also pings as flow control while it
    #: sends gossip (a ``ping`` with ``num_pong_bytes`` 0 after every 32
    #: messages, ``BUFFER_DRAIN_MSGS_PER_TICK``, and nothing more until the
    #: ``pong``): thousands of pings in one initial sync. So the bound is on
    #: cost, not count:
    #:
    #: * ``max_pings``: pings with no gossip from the peer since its previous
    #:   ping (a ping that follows gossip is flow control and free);
    #: * ``max_pong_bytes``: bytes of pong payload asked for (each pong may
    #:   carry 65,531 bytes);
    #: * ``max_outstanding_pongs``: our pongs not yet written (a peer that
    #:   pings faster than it reads them).
    #:
    #: Over any of them: a ``warning``, then disconnect (``ping_flood``).
    max_pings: int = 10
    max_pong_bytes: int = 256 * 1024
    max_outstanding_pongs: int = 8
    ping_window: float = 30.0
    #: Client: seconds to wait for the answer to our own query before asking
    #: the peer with ``gossip_timestamp_filter`` instead.
    query_timeout: float = 30.0
    #: Client: most ``short_channel_id``s remembered as requested or waiting
    #: to be queried (all peers together): a bound on what peers' replies
    #: can make this node hold (mainnet has about 50,000 channels).
    max_scids: int = 1_000_000
    #: Seconds between relay flushes: accepted gossip goes to every other
    #: ready peer whose ``gossip_timestamp_filter`` covers it, in batches
    #: (BOLT #7: staggered, once every 60 s by default); 0 relays after each
    #: verified batch (tests).
    relay_interval: float = 60.0
    #: Bytes of relay one peer may have pending between flushes (only the
    #: newest message per channel direction or node is kept); past it, and
    #: past half its outbound queue at a flush, relay to it is dropped and
    #: counted: a peer that cannot keep up loses relay, it is not buffered.
    relay_pending_bytes: int = 4 << 20
    #: Ready inbound connections at most. When they are all taken, a new
    #: inbound connection that becomes ready *evicts* the least valuable
    #: inbound peer instead of being refused (Bitcoin Core's
    #: ``AttemptToEvictConnection``, see :func:`eviction_victim`); outbound
    #: peers we chose are never evicted. Defaults to 256, or less when the
    #: file-descriptor limit is low (half of what is left after 64), so the
    #: node never runs out of descriptors for its own outbound connections,
    #: its store and its files.
    max_inbound: int = field(default_factory=lambda: _default_max_inbound())
    #: Inbound connections still in the handshake or ``init`` exchange at
    #: most: their own smaller budget, so connections that never finish
    #: cannot hold the ready slots. When it is full, a new connection
    #: evicts the oldest pending connection of the network group that has
    #: the most pending ones.
    max_pending_inbound: int = 32
    #: Inbound connections (pending and ready) per network group at most
    #: (/16 for IPv4, /32 for IPv6: what one operator can easily hold many
    #: addresses of; Bitcoin Core groups the same way); more are refused at
    #: once and counted.
    max_inbound_per_netgroup: int = 8
    #: Who frames and encrypts established connections: ``"rust"`` (the
    #: core's codec: a socket read is decrypted and its gossip submitted in
    #: one call, without coming back to Python per message) or ``"python"``
    #: (the reference, on ``cryptography``; one call per frame).
    codec: CodecName = "rust"

    def __post_init__(self) -> None:
        for name in (
            "ping_interval",
            "ping_timeout",
            "handshake_timeout",
            "inbound_ready_timeout",
            "ping_window",
            "query_timeout",
            "reconnect_initial",
            "reconnect_max",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"NodeConfig.{name} must be positive (seconds)")
        for name in ("prune_interval", "relay_interval", "ban_seconds"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"NodeConfig.{name} must be 0 or more (seconds)")
        for name in (
            "batch",
            "dump_page",
            "outbound_queue_bytes",
            "max_pings",
            "max_pong_bytes",
            "max_outstanding_pongs",
            "max_scids",
            "relay_pending_bytes",
            "max_inbound",
            "max_pending_inbound",
            "max_inbound_per_netgroup",
            "ban_after_invalid",
        ):
            if not getattr(self, name) >= 1:
                raise ConfigError(f"NodeConfig.{name} must be at least 1")
        if self.sync_mode not in ("filter", "query"):
            raise ConfigError(
                f"NodeConfig.sync_mode must be 'filter' or 'query': {self.sync_mode!r}"
            )
        if len(self.chain_hash) != 32:
            raise ConfigError("NodeConfig.chain_hash must be 32 bytes")


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
    init: bolt.Init | None = None
    close_reason: str = ""
    invalid_signatures: int = 0
    #: Its messages over the spam limit (``rate_limited`` decisions).
    rate_limited: int = 0
    gossip_received: int = 0
    task: asyncio.Task[None] | None = None
    #: Address the connection came from (inbound) or went to.
    address: str = ""
    #: ``(host, port)`` we dialled (outbound only): where to reconnect.
    dialled: tuple[str, int] | None = None
    #: Network group of ``address`` (see :func:`netgroup`).
    netgroup: str = ""
    #: When the connection became ready (monotonic seconds; 0: not yet).
    ready_at: float = 0.0
    #: When gossip it sent was last accepted (monotonic seconds; 0: never):
    #: recently useful peers are protected from eviction.
    last_useful: float = 0.0
    # -- what we owe the peer: the sender task writes it, in this order
    #: The control lane: our pings and our pongs, sent before anything else.
    control: deque[bytes] = field(default_factory=deque)
    #: The data lane: relay, after the control lane. Both lanes together are
    #: bounded by ``outbound_queue_bytes``.
    outbox: deque[bytes] = field(default_factory=deque)
    outbox_bytes: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: Its ``query_channel_range`` being answered, and the last id sent.
    range_query: bolt.QueryChannelRange | None = None
    range_after: int | None = None
    range_first: int = 0
    #: Its ``query_short_channel_ids`` being answered, and how many ids are done.
    scid_query: bolt.QueryShortChannelIds | None = None
    scid_done: int = 0
    scid_nodes_sent: set[bytes] = field(default_factory=set)
    #: Its ``gossip_timestamp_filter`` and the dump cursor (``None``: dump done).
    filter: tuple[int, int] | None = None
    dump_cursor: bytes | None = None
    #: When its pings that followed no gossip came, and the pong bytes it
    #: asked for (when, bytes), within ``ping_window``; whether gossip came
    #: since its last ping; our pongs waiting in the control lane.
    pings: deque[float] = field(default_factory=deque)
    pong_bytes: deque[tuple[float, int]] = field(default_factory=deque)
    gossip_since_ping: bool = False
    pongs_queued: int = 0
    #: Relay waiting for the next flush, newest message per key, in accept order.
    relay: dict[tuple[int, int | bytes], bytes] = field(default_factory=dict)
    relay_bytes: int = 0
    # -- what we asked the peer
    #: ``query_short_channel_ids`` chunks, ``(short_channel_id, query_flags)``
    #: each, waiting for the previous reply (BOLT #7 allows one query in
    #: flight per peer).
    scid_chunks: list[list[tuple[int, int]]] = field(default_factory=list)
    query_in_flight: bool = False
    #: Our outstanding ``query_channel_range`` (replies are taken only for it).
    our_range: bolt.QueryChannelRange | None = None
    #: When our outstanding query (range or ids) times out (monotonic seconds).
    query_deadline: float | None = None

    @property
    def initiator(self) -> str:
        """``"local"`` when we dialled, ``"remote"`` when the peer did."""
        return "local" if self.outbound else "remote"


@dataclass(eq=False)
class _Pending:
    """An inbound connection that is not ready yet (handshake, ``init``)."""

    netgroup: str
    #: When it was accepted (monotonic seconds).
    since: float
    #: The server callback running its handshake (cancelled to evict it then).
    task: asyncio.Task[Any] | None
    #: The connection once the handshake is done (evicted through its own task).
    peer: Peer | None = None
    #: It sent a valid BOLT #8 act one (an honest peer does at once).
    acted: bool = False


def eviction_victim(inbound: Iterable[Peer], key: bytes) -> Peer | None:
    """The inbound peer to evict for a new one when every inbound slot is
    taken, or ``None`` when every candidate is protected (the new connection
    is then refused). Bitcoin Core's ``AttemptToEvictConnection``, for
    gossip:

    1. protect :data:`EVICTION_PROTECT_NETGROUPS` peers whose network group
       hashes lowest under ``key`` (network diversity an attacker cannot aim at);
    2. protect the :data:`EVICTION_PROTECT_USEFUL` peers that most recently
       sent gossip we accepted;
    3. protect the longest-connected half of the rest;
    4. of the rest, take the network group with the most connections (ties:
       the group holding the youngest connection) and evict its youngest
       connection: an attacker who opens many connections from few groups
       evicts its own.
    """
    cands = sorted(inbound, key=lambda p: hashlib.sha256(key + p.netgroup.encode()).digest())
    cands = cands[EVICTION_PROTECT_NETGROUPS:]
    useful = sorted((p for p in cands if p.last_useful), key=lambda p: -p.last_useful)
    protected = {id(p) for p in useful[:EVICTION_PROTECT_USEFUL]}
    cands = sorted((p for p in cands if id(p) not in protected), key=lambda p: p.ready_at)
    cands = cands[len(cands) // 2 :]
    if not cands:
        return None
    groups: defaultdict[str, list[Peer]] = defaultdict(list)
    for p in cands:
        groups[p.netgroup].append(p)
    biggest = max(groups.values(), key=lambda g: (len(g), max(p.ready_at for p in g)))
    return max(biggest, key=lambda p: p.ready_at)


def _pending_victim(pending: Iterable[_Pending]) -> _Pending | None:
    """The pending inbound connection to evict for a new one: of those
    that got least far (no act one yet, then in the handshake, then waiting
    for ``init``: an honest peer sends act one at once and finishes in a
    round trip), the oldest of the network group with the most of them."""
    pending = list(pending)
    for stage in (
        [p for p in pending if not p.acted],
        [p for p in pending if p.peer is None],
    ):
        if stage:
            pending = stage
            break
    if not pending:
        return None
    sizes = Counter(p.netgroup for p in pending)
    top = max(sizes.values())
    return min((p for p in pending if sizes[p.netgroup] == top), key=lambda p: p.since)


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
        self._relaying: asyncio.Task[None] | None = None
        #: set when the processing loop has nothing left to do
        self._idle = asyncio.Event()
        #: inbound connections (pending and ready) per network group
        self._inbound_by_group: Counter[str] = Counter()
        #: inbound connections not ready yet
        self._pending_inbound: set[_Pending] = set()
        #: secret of the keyed network-group protection of eviction_victim
        self._eviction_key = os.urandom(16)
        #: peers that ignored or refused our queries: asked with a
        #: gossip_timestamp_filter first on every new connection
        self._filter_first: set[bytes] = set()
        #: peers a _keep_connected loop redials; reconnects under way for the others
        self._persistent: set[bytes] = set()
        self._redials = 0
        self._ready_changed = asyncio.Event()
        self._busy_processing = False
        #: set by close(): loop time by which the last batch must end
        self._close_deadline: float | None = None
        #: measured processing cost (seconds per message, moving average);
        #: the start value is a loaded two-core machine's channel_announcement
        self._seconds_per_message = 2e-4
        self._requested_scids: set[int] = set()
        #: when gossip last arrived (monotonic seconds; ``None``: never)
        self.last_gossip_at: float | None = None
        #: when the last batch finished (monotonic seconds; ``None``: never)
        self.last_processed_at: float | None = None

    async def __aenter__(self) -> Node:
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
        if self._processing is None:
            self._processing = asyncio.get_running_loop().create_task(
                self._process_loop(), name="lngossip-process"
            )
        if self._maintenance is None and self.config.prune_interval > 0:
            self._maintenance = self._spawn(self._prune_loop(), "lngossip-prune")
        if self._relaying is None and self.config.relay_interval > 0:
            self._relaying = self._spawn(self._relay_loop(), "lngossip-relay")

    async def _relay_loop(self) -> None:
        """Flush the pending relay every ``relay_interval`` seconds."""
        while True:
            await asyncio.sleep(self.config.relay_interval)
            self._flush_relay()

    def _queue_relay(self, outcomes: list[Any], accepted: list[bytes]) -> None:
        """Queue each accepted message for every ready peer whose filter
        covers its timestamp, except the peer it came from."""
        targets = [p for p in self._active.values() if p.filter is not None]
        if not targets or not accepted:
            return
        # both engines list the accepted messages in the order of their outcomes
        origins = [o.peer for o in outcomes if o.decision == "accepted"]
        limit = self.config.relay_pending_bytes
        for m, pid in zip(accepted, origins, strict=True):
            origin = self._peer_by_id.get(pid)
            key, ts = _relay_key(m)
            for p in targets:
                if p.node_id == origin:
                    continue
                assert p.filter is not None
                first, span = p.filter
                if ts is not None and not first <= ts < first + span:
                    continue
                old = p.relay.get(key)
                if old is not None:
                    p.relay_bytes -= len(old)
                elif p.relay_bytes + len(m) > limit:
                    self.counters["relay_dropped"] += 1
                    continue
                p.relay[key] = m
                p.relay_bytes += len(m)
        if self.config.relay_interval == 0:
            self._flush_relay()

    def _flush_relay(self) -> None:
        """Hand each peer's pending relay to its sender, up to half its
        outbound queue (the rest is dropped and counted)."""
        room = self.config.outbound_queue_bytes // 2
        for p in self._active.values():
            if not p.relay:
                continue
            for m in p.relay.values():
                if p.outbox_bytes + len(m) > room:
                    self.counters["relay_dropped"] += 1
                    continue
                p.outbox.append(m)
                p.outbox_bytes += len(m)
                self.counters["relay_sent"] += 1
            p.relay.clear()
            p.relay_bytes = 0
            p.wake.set()

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
        _quiet_accept_errors(asyncio.get_running_loop(), self.counters)
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
        group = netgroup(address)
        cfg = self.config
        if self._inbound_by_group[group] >= cfg.max_inbound_per_netgroup:
            self._refuse(writer, "netgroup")
            return
        if len(self._pending_inbound) >= cfg.max_pending_inbound:
            victim = _pending_victim(self._pending_inbound)
            if victim is not None:
                self._evict_pending(victim)
        me = asyncio.current_task()
        pending = _Pending(group, time.monotonic(), me)
        self._pending_inbound.add(pending)
        self._inbound_by_group[group] += 1
        if me is not None:
            self._tasks.add(me)  # so close() cancels a handshake in progress
        peer: Peer | None = None
        try:
            try:
                # handshake and both inits within their own short deadline
                async with asyncio.timeout(cfg.inbound_ready_timeout):
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
                self._pending_inbound.discard(pending)
            if peer is not None:
                await peer.closed.wait()
        except asyncio.CancelledError:
            # closing or evicted: end this server callback quietly (the stream
            # machinery would log a cancelled callback task as an error)
            writer.close()
        finally:
            self._inbound_by_group[group] -= 1
            if not self._inbound_by_group[group]:
                del self._inbound_by_group[group]
            if me is not None:
                self._tasks.discard(me)

    def _refuse(self, writer: asyncio.StreamWriter, reason: str) -> None:
        """Close a new inbound connection over a limit; count it, and log
        the first, 10th, 100th... refusal."""
        writer.close()
        self.counters["refused_connection_limit"] += 1
        self.counters[f"refused:{reason}"] += 1
        n = self.counters["refused_connection_limit"]
        if n in (1, 10, 100, 1000, 10000):
            cfg = self.config
            log.info(
                "refusing connections over the limits (%d per network group, %d ready "
                "inbound with no peer to evict): %d refused so far (last: %s)",
                cfg.max_inbound_per_netgroup,
                cfg.max_inbound,
                n,
                reason,
            )

    def _evict_pending(self, victim: _Pending) -> None:
        """Close a pending inbound connection to make room for a new one."""
        self._pending_inbound.discard(victim)
        self.counters["evicted_pending"] += 1
        n = self.counters["evicted_pending"]
        if n in (1, 10, 100, 1000, 10000):
            log.info(
                "pending inbound connections at their limit (%d): evicting the oldest of "
                "the busiest network group (%s); %d evicted so far",
                self.config.max_pending_inbound,
                victim.netgroup,
                n,
            )
        if victim.peer is not None:
            victim.peer.close_reason = "evicted_pending"
            self._cancel(victim.peer)
        elif victim.task is not None:
            victim.task.cancel()

    async def _handshake_inbound(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        address: str,
        pending: _Pending,
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
                if peer.conn.codec == "rust" and isinstance(self.pipeline, _core.Pipeline):
                    peer.conn.attach(self.pipeline, self.peer_id(peer.node_id))
                    reader = self._batch_reader(peer)
                else:
                    reader = self._reader(peer)
                tg.create_task(reader, name=f"reader-{peer.generation}")
                tg.create_task(self._sender(peer), name=f"sender-{peer.generation}")
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
        if not peer.outbound and not self._inbound_slot(peer):
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

    def _inbound_slot(self, peer: Peer) -> bool:
        """Make room for inbound ``peer`` among the ``max_inbound`` ready
        inbound connections, evicting the least valuable one when they are
        all taken (:func:`eviction_victim`); False when none can go."""
        inbound = [p for p in self._active.values() if not p.outbound and p.node_id != peer.node_id]
        if len(inbound) < self.config.max_inbound:
            return True
        victim = eviction_victim(inbound, self._eviction_key)
        if victim is None:
            peer.close_reason = "inbound_full"
            self.counters["refused_connection_limit"] += 1
            self.counters["refused:inbound_full"] += 1
            return False
        self.counters["evicted"] += 1
        n = self.counters["evicted"]
        log.log(
            logging.INFO if n in (1, 10, 100, 1000, 10000) else logging.DEBUG,
            "inbound connections at their limit (%d): evicting %s (%s, connected %.0f s) "
            "for %s; %d evicted so far",
            self.config.max_inbound,
            victim.node_id.hex()[:16],
            victim.address,
            time.monotonic() - victim.ready_at,
            peer.node_id.hex()[:16],
            n,
        )
        victim.close_reason = "evicted"
        del self._active[victim.node_id]
        self._cancel(victim)
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
        return self._redials > 0 or any(
            p.our_range is not None or p.query_in_flight or p.scid_chunks
            for p in self._active.values()
        )

    async def _request_gossip(self, peer: Peer) -> None:
        ch = self.config.chain_hash
        if self.config.sync_mode == "query" and peer.node_id not in self._filter_first:
            # new gossip from now on, and the backlog channel by channel
            await peer.conn.send(bolt.GossipTimestampFilter(ch, int(time.time())).encode())
            # with a graph already (a store), ask for the update timestamps too
            # (BOLT #7 query_option) to fetch only what is newer; peers that do
            # not know the option (LDK, lnd) ignore the odd TLV
            option = bolt.QUERY_OPTION_TIMESTAMPS if len(self.pipeline.graph) else None
            peer.our_range = bolt.QueryChannelRange(ch, query_option=option)
            peer.query_deadline = time.monotonic() + self.config.query_timeout
            await peer.conn.send(peer.our_range.encode())
        else:
            f = bolt.GossipTimestampFilter(ch, self.config.first_timestamp)
            await peer.conn.send(f.encode())

    async def _query_next_chunk(self, peer: Peer) -> None:
        if peer.query_in_flight or not peer.scid_chunks:
            if peer.our_range is None and not peer.query_in_flight:
                peer.query_deadline = None
            return
        chunk = peer.scid_chunks.pop(0)
        peer.query_in_flight = True
        peer.query_deadline = time.monotonic() + self.config.query_timeout
        ids = [s for s, _ in chunk]
        flags = [f for _, f in chunk]
        q = bolt.QueryShortChannelIds(
            self.config.chain_hash,
            ids,
            None if all(f == bolt.QUERY_FLAGS_ALL for f in flags) else flags,
        )
        await peer.conn.send(q.encode())

    async def _fall_back_to_filter(self, peer: Peer, why: str) -> None:
        """Our query was refused or not answered: ask for everything since
        ``first_timestamp`` with ``gossip_timestamp_filter`` instead. LDK
        starts a dump only on the *first* filter of a connection (and our
        query mode sent one, "from now on", already), so a peer we dialled
        is asked on a new connection, with the filter as its first gossip
        message; from then on that peer is always asked with a filter. An
        inbound peer is asked on the same connection."""
        self.counters[f"query_fallback:{why}"] += 1
        peer.our_range, peer.query_deadline, peer.query_in_flight = None, None, False
        for chunk in peer.scid_chunks:
            self._requested_scids.difference_update(s for s, _ in chunk)
        peer.scid_chunks.clear()
        if peer.dialled is not None and not self._closing:
            log.info(
                "peer %s: query %s; reconnecting to ask with gossip_timestamp_filter first",
                peer.node_id.hex()[:16],
                why,
            )
            self._filter_first.add(peer.node_id)
            if peer.node_id not in self._persistent:  # a persistent peer is redialled anyway
                self._redials += 1
                self._spawn(self._redial(peer), f"redial-{peer.node_id.hex()[:8]}")
            raise _Disconnect("query_fallback")
        log.info(
            "peer %s: query %s; asking with gossip_timestamp_filter instead",
            peer.node_id.hex()[:16],
            why,
        )
        f = bolt.GossipTimestampFilter(self.config.chain_hash, self.config.first_timestamp)
        await peer.conn.send(f.encode())

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

    def _take_reply_range(self, peer: Peer, r: bolt.ReplyChannelRange) -> list[tuple[int, int]]:
        """The ``(short_channel_id, query_flags)`` of a ``reply_channel_range``
        to ask for: only while our query is outstanding, only inside its
        block range, within ``max_scids``: every channel the graph lacks, and,
        when the reply carries update timestamps (``query_option``), the
        updates of known channels that are newer than ours."""
        q = peer.our_range
        if q is None or r.chain_hash != q.chain_hash:
            self.counters["unsolicited_reply_channel_range"] += 1
            return []
        lo, hi = q.first_blocknum, q.first_blocknum + q.number_of_blocks
        peer.query_deadline = time.monotonic() + self.config.query_timeout
        if r.sync_complete and r.first_blocknum + r.number_of_blocks >= hi:
            peer.our_range = None  # the last reply (BOLT #7)
        graph = self.pipeline.graph
        stamps: list[tuple[int, int] | None] = (
            list(r.timestamps) if r.timestamps is not None else [None] * len(r.short_channel_ids)
        )
        new: list[tuple[int, int]] = []
        room = self.config.max_scids - len(self._requested_scids)
        outside = 0
        for s, ts in zip(r.short_channel_ids, stamps, strict=True):
            if not lo <= s >> 40 < hi:
                outside += 1
                continue
            if s in self._requested_scids:
                continue
            ch = graph.channel(s)
            if ch is None:
                flags = bolt.QUERY_FLAGS_ALL
            elif ts is None:
                continue
            else:
                flags = 0
                for bit, theirs, ours in (
                    (bolt.QUERY_FLAG_UPDATE_1, ts[0], ch[1]),
                    (bolt.QUERY_FLAG_UPDATE_2, ts[1], ch[2]),
                ):
                    if theirs and (ours is None or theirs > bolt.update_timestamp(ours)):
                        flags |= bit
                if not flags:
                    continue
            if len(new) >= room:
                self.counters["scids_over_limit"] += 1
                break
            new.append((s, flags))
        if outside:
            self.counters["reply_ids_outside_range"] += outside
        self._requested_scids.update(s for s, _ in new)
        return new

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
            peer.pong.clear()
            await self._enqueue(peer, bolt.encode_ping(8), control=True)
            self.counters["pings_sent"] += 1
            mark = (peer.conn.bytes_delivered(), peer.last_rx)
            while True:
                try:
                    async with asyncio.timeout(cfg.ping_timeout):
                        await peer.pong.wait()
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
        peer.gossip_since_ping = True
        self.counters["gossip_received"] += n
        self.last_gossip_at = peer.last_rx
        if peer.query_deadline is not None:
            # the peer is answering: our query has not timed out
            peer.query_deadline = peer.last_rx + self.config.query_timeout

    async def _reader(self, peer: Peer) -> None:
        """Read one message at a time (the Python codec, or a pipeline the
        Rust codec cannot reach) and submit gossip from Python."""
        pid = self.peer_id(peer.node_id)
        while True:
            msg = await peer.conn.recv()
            peer.last_rx = time.monotonic()
            if bolt.message_type(msg) in GOSSIP_TYPES:
                self._note_gossip(peer, 1)
                await self._admit(pid, msg)
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
                        self._idle.clear()
                        self._work.set()
                    if n := f.count("rate_limited"):
                        self._count_rate_limited(pid, n)
                for msg in f.messages:
                    await self._on_message(peer, msg)
                if f.error is not None:
                    raise TransportError(f.error, "frame MAC check failed")
                if not f.paused:
                    break
                await self._wait_for_room()
                f = conn.resume()

    async def _on_message(self, peer: Peer, msg: bytes) -> None:
        """Act on a message that is not gossip. One that cannot be decoded
        gets a BOLT #1 ``warning`` naming the message and the fault, then
        the connection ends (``malformed_message``)."""
        try:
            await self._dispatch(peer, msg)
        except MalformedMessage as e:
            t = bolt.message_type(msg)
            await self._warn_and_close(
                peer, f"malformed {bolt.MESSAGE_NAMES.get(t, t)}: {e.reason}", "malformed_message"
            )

    async def _dispatch(self, peer: Peer, msg: bytes) -> None:
        ch = self.config.chain_hash
        t = bolt.message_type(msg)
        if t == bolt.PING:
            await self._on_ping(peer, msg)
        elif t == bolt.PONG:
            peer.pong.set()
        elif t == bolt.GOSSIP_TIMESTAMP_FILTER:
            f = bolt.GossipTimestampFilter.decode(msg)
            if f.chain_hash == ch:
                # BOLT #7: a new filter replaces the previous one
                if peer.dump_cursor is not None:
                    self.counters["filters_replaced"] += 1
                peer.filter = (f.first_timestamp, f.timestamp_range)
                peer.dump_cursor = b""
                peer.wake.set()
        elif t == bolt.QUERY_CHANNEL_RANGE:
            if peer.range_query is not None:
                await self._warn_and_close(
                    peer,
                    "query_channel_range before the previous one was answered",
                    "queries_piled_up",
                )
            q = bolt.QueryChannelRange.decode(msg)
            peer.range_query, peer.range_after, peer.range_first = q, None, q.first_blocknum
            peer.wake.set()
        elif t == bolt.QUERY_SHORT_CHANNEL_IDS:
            if peer.scid_query is not None:
                await self._warn_and_close(
                    peer,
                    "query_short_channel_ids before the previous one was answered",
                    "queries_piled_up",
                )
            peer.scid_query, peer.scid_done = bolt.QueryShortChannelIds.decode(msg), 0
            peer.wake.set()
        elif t == bolt.REPLY_CHANNEL_RANGE:
            new = self._take_reply_range(peer, bolt.ReplyChannelRange.decode(msg))
            flagged = any(f != bolt.QUERY_FLAGS_ALL for _, f in new)
            step = bolt.MAX_SCIDS_PER_FLAGGED_QUERY if flagged else bolt.MAX_SCIDS_PER_MESSAGE
            peer.scid_chunks.extend(new[i : i + step] for i in range(0, len(new), step))
            await self._query_next_chunk(peer)
        elif t == bolt.REPLY_SHORT_CHANNEL_IDS_END:
            if not peer.query_in_flight:
                self.counters["unsolicited_reply_short_channel_ids_end"] += 1
                return
            peer.query_in_flight = False
            await self._query_next_chunk(peer)
        elif t == bolt.ERROR:
            self.counters["errors_received"] += 1
            log.info("peer %s sent an error; disconnecting", peer.node_id.hex()[:16])
            raise _Disconnect("peer_error")
        elif t == bolt.WARNING:
            self.counters["warnings_received"] += 1
            if peer.our_range is not None or peer.query_in_flight:
                # e.g. LDK answers query_short_channel_ids with "Not implemented"
                await self._fall_back_to_filter(peer, "refused")
        elif t == bolt.INIT:
            self.counters["duplicate_init"] += 1
        elif t % 2 == 0:
            # BOLT #1: an unknown even type must fail the connection
            await self._fail(peer, f"unknown even message type {t}", "unknown_even_type")
        else:
            self.counters["unknown_odd_ignored"] += 1

    async def _on_ping(self, peer: Peer, msg: bytes) -> None:
        """Answer a ping (BOLT #1) within what pings may cost us (see
        ``NodeConfig.max_pings``): LDK's flow-control pings between gossip
        are free, idle pings, pong bytes and unwritten pongs are bounded."""
        cfg = self.config
        now = time.monotonic()
        since = now - cfg.ping_window
        n = bolt.decode_ping(msg)
        if not peer.gossip_since_ping:
            peer.pings.append(now)
            while peer.pings and peer.pings[0] < since:
                peer.pings.popleft()
            if len(peer.pings) > cfg.max_pings:
                await self._warn_and_close(
                    peer, f"more than {cfg.max_pings} pings without gossip", "ping_flood"
                )
        peer.gossip_since_ping = False
        if not cfg.answer_pings or n >= bolt.PONG_BYTES_IGNORED:
            return
        peer.pong_bytes.append((now, n))
        while peer.pong_bytes and peer.pong_bytes[0][0] < since:
            peer.pong_bytes.popleft()
        if sum(b for _, b in peer.pong_bytes) > cfg.max_pong_bytes:
            await self._warn_and_close(
                peer, f"pings asked for more than {cfg.max_pong_bytes} pong bytes", "ping_flood"
            )
        if peer.pongs_queued >= cfg.max_outstanding_pongs:
            await self._warn_and_close(peer, "pings faster than our pongs are read", "ping_flood")
        peer.pongs_queued += 1
        await self._enqueue(peer, bolt.encode_pong(n), control=True)

    async def _enqueue(self, peer: Peer, msg: bytes, *, control: bool = False) -> None:
        """Queue a message for the peer's sender: in the control lane (pings,
        pongs: sent first) or the data lane. A peer whose lanes pass
        ``outbound_queue_bytes`` together is not reading and is disconnected."""
        if peer.outbox_bytes + len(msg) > self.config.outbound_queue_bytes:
            self.counters["outbound_queue_full"] += 1
            log.info("peer %s does not read; disconnecting", peer.node_id.hex()[:16])
            raise _Disconnect("outbound_queue_full")
        (peer.control if control else peer.outbox).append(msg)
        peer.outbox_bytes += len(msg)
        peer.wake.set()

    async def _sender(self, peer: Peer) -> None:
        """The task that writes what the peer asked for and what is queued for
        it (our own init, queries and last words are sent where they arise):
        queued messages first,
        then the answer to its ``query_channel_range``, to its
        ``query_short_channel_ids``, then its ``gossip_timestamp_filter`` dump,
        one page at a time, read from the graph only as the peer reads (each
        ``send`` waits while the peer's socket buffer is full). Also gives up
        on our own queries that got no answer in ``query_timeout``."""
        while True:
            if peer.control or peer.outbox:
                # the control lane (pings, pongs), then the data lane (relay), in
                # batches of up to 64 KiB: one write each
                batch: list[bytes] = []
                size = 0
                for lane in (peer.control, peer.outbox):
                    while lane and (not batch or size + len(lane[0]) <= 65536):
                        m = lane.popleft()
                        peer.outbox_bytes -= len(m)
                        batch.append(m)
                        size += len(m)
                await peer.conn.send_many(batch)
                peer.pongs_queued -= sum(1 for m in batch if m[:2] == _PONG_TYPE)
            elif peer.range_query is not None:
                await self._reply_channel_range_step(peer)
            elif peer.scid_query is not None:
                await self._reply_short_channel_ids_step(peer)
            elif peer.dump_cursor is not None and peer.filter is not None:
                await self._dump_step(peer)
            else:
                peer.wake.clear()
                timeout = None
                if peer.query_deadline is not None:
                    timeout = max(peer.query_deadline - time.monotonic(), 0.0)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await peer.wake.wait()
                if peer.query_deadline is not None and time.monotonic() >= peer.query_deadline:
                    await self._fall_back_to_filter(peer, "timeout")

    async def _admit(self, pid: int, msg: bytes) -> None:
        """Submit; on ``queue_full`` stop reading this peer until room frees up."""
        a = self.pipeline.submit(pid, msg)
        while a.decision == "queue_full":
            await self._wait_for_room()
            a = self.pipeline.submit(pid, msg)
        if a.decision == "queued":
            self._idle.clear()
            self._work.set()
        elif a.decision == "rate_limited":
            self._count_rate_limited(pid)

    async def _wait_for_room(self) -> None:
        """After a ``queue_full`` answer: wake the processing loop and wait
        for its next batch to free room. Returns at once when nothing is
        queued or in flight, since no batch would come to wake the caller (the
        last one may have ended while the caller awaited something else, e.g.
        a reply to a non-gossip message of the same read) and a retry gets in
        (an empty queue admits any message)."""
        self.counters["backpressure_waits"] += 1
        self._idle.clear()
        self._work.set()
        async with self._room:
            if self.pipeline.queued or self._busy_processing:
                await self._room.wait()

    def _count_rate_limited(self, pid: int, n: int = 1) -> None:
        """Count messages over the spam limit, for the node and its peer."""
        self.counters["rate_limited"] += n
        peer = self._active.get(self._peer_by_id.get(pid, b""))
        if peer is not None:
            peer.rate_limited += n

    async def _dump_step(self, peer: Peer) -> None:
        """Send the next page of the peer's ``gossip_timestamp_filter`` dump."""
        assert peer.filter is not None and peer.dump_cursor is not None
        first, span = peer.filter
        page, peer.dump_cursor = self.pipeline.graph.gossip_after(
            peer.dump_cursor, first, span, self.config.dump_page
        )
        await peer.conn.send_many(page)
        self.counters["gossip_sent"] += len(page)

    async def _reply_channel_range_step(self, peer: Peer) -> None:
        """Send the next ``reply_channel_range`` (at most
        ``MAX_SCIDS_PER_MESSAGE`` ids) of the peer's query; the replies cover
        the queried blocks in order and without gaps (BOLT #7)."""
        q = peer.range_query
        assert q is not None
        option = q.query_option or 0
        extended = option & (bolt.QUERY_OPTION_TIMESTAMPS | bolt.QUERY_OPTION_CHECKSUMS)
        step = bolt.MAX_SCIDS_PER_EXTENDED_REPLY if extended else bolt.MAX_SCIDS_PER_MESSAGE
        end = min(q.first_blocknum + q.number_of_blocks, 0xFFFFFFFF)
        graph = self.pipeline.graph
        chunk = graph.short_channel_ids_in_blocks(
            q.first_blocknum, q.number_of_blocks, peer.range_after, step + 1
        )
        last = len(chunk) <= step
        chunk = chunk[:step]
        upto = end if last else min((chunk[-1] >> 40) + 1, end)
        first = peer.range_first
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
            peer.range_query = None
        else:
            peer.range_first, peer.range_after = upto, chunk[-1]
        await peer.conn.send(reply.encode())

    async def _reply_short_channel_ids_step(self, peer: Peer) -> None:
        """Send the messages of the next few ids of the peer's
        ``query_short_channel_ids``, and ``reply_short_channel_ids_end`` after the last."""
        q = peer.scid_query
        assert q is not None
        done = peer.scid_done
        ids = q.short_channel_ids[done : done + 64]
        peer.scid_done += len(ids)
        if q.query_flags is None:
            msgs = self.pipeline.graph.messages_for(ids) if ids else []
        else:
            msgs = self._flagged_messages(ids, q.query_flags[done : done + 64])
        out: list[bytes] = []
        for m in msgs:
            if m[:2] == _NODE_ANNOUNCEMENT_TYPE:
                # each node once per query (its id is at 72 + len(features))
                flen = int.from_bytes(m[66:68], "big")
                nid = m[72 + flen : 105 + flen]
                if nid in peer.scid_nodes_sent:
                    continue
                peer.scid_nodes_sent.add(nid)
            out.append(m)
        self.counters["gossip_sent"] += len(out)
        if peer.scid_done >= len(q.short_channel_ids):
            peer.scid_query = None
            peer.scid_nodes_sent.clear()
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

    # -- the pipeline's own loop ----------------------------------------------
    async def _process_loop(self) -> None:
        while True:
            if not self._closing:
                await self._work.wait()
                self._work.clear()
            while self.pipeline.queued:
                size = self._batch_size()
                if size == 0:  # closing, and no time left for another batch
                    break
                try:
                    await self._process_batch(size)
                except Exception:
                    # e.g. the output file or an on_accepted callback failed:
                    # count it, keep the loop alive, let waiting readers retry
                    self.counters["processing_errors"] += 1
                    log.exception("processing a batch failed")
                    async with self._room:
                        self._room.notify_all()
                    break
            self._idle.set()
            if self._closing:
                return

    def _batch_size(self) -> int:
        """The next batch's size: the configured one; once closing, as many
        messages as fit a third of the time left before the close deadline at
        the measured cost per message (at most 256, 0 when none fit), so the
        last batch ends before :meth:`close` has to return."""
        if self._close_deadline is None:
            return self.config.batch
        left = self._close_deadline - asyncio.get_running_loop().time()
        return max(0, min(256, self.config.batch, int(left / 3 / self._seconds_per_message)))

    async def _process_batch(self, batch: int) -> None:
        self._busy_processing = True
        self._idle.clear()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        done = loop.run_in_executor(None, self.pipeline.process, batch)
        try:
            # shielded: if close() cancels this task mid-batch, the thread's
            # result (already committed by the core) still reaches the
            # callback and the relay when it returns
            res = await asyncio.shield(done)
        except asyncio.CancelledError:
            done.add_done_callback(functools.partial(self._late_batch, t0))
            raise
        finally:
            self._busy_processing = False
        bad = self._batch_decided(res, t0)
        async with self._room:
            self._room.notify_all()
        for pid, n in bad.items():
            await self._punish(self._peer_by_id[pid], n)

    def _batch_decided(self, res: Any, t0: float) -> Counter[int]:
        """Book a processed batch: its cost per message (for close's batch
        sizes), spam counts, relay, ``on_accepted``; returns the invalid
        signatures per pipeline peer."""
        n = len(res.outcomes)
        if n:
            per = (asyncio.get_running_loop().time() - t0) / n
            self._seconds_per_message = 0.5 * self._seconds_per_message + 0.5 * per
        bad: Counter[int] = Counter()
        useful: set[int] = set()
        for _seq, pid, _kind, decision, _reason in res.outcomes:
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
        self._queue_relay(res.outcomes, res.accepted)
        if self.on_accepted is not None and res.accepted:
            self.on_accepted(res.accepted)
        return bad

    def _late_batch(self, t0: float, done: asyncio.Future[Any]) -> None:
        """A batch whose task was cancelled: book it when its thread returns."""
        if done.cancelled():
            return
        try:
            self._batch_decided(done.result(), t0)
        except Exception:
            self.counters["processing_errors"] += 1
            log.exception("processing a batch failed")

    async def _punish(self, node_id: bytes, n: int) -> None:
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
        while self.pipeline.queued or self._busy_processing:
            if self._closing:  # close() runs the last batches: wait for it
                if self._processing is not None:
                    await asyncio.wait({self._processing})
                return
            self._idle.clear()
            self._work.set()
            await self._idle.wait()

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
        self._close_deadline = deadline - 0.05
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
        # batches sized to end before the deadline (see _batch_size) and
        # returns when the queue is empty or no batch fits; a batch in flight
        # is waited for, so what it accepted reaches on_accepted too
        if self._processing is not None and self._processing.done():
            self._processing = None  # closed before: run the loop again
        if self._processing is None and self.pipeline.queued:
            await self.start()
        overran = False
        if self._processing is not None:
            self._work.set()
            await asyncio.wait({self._processing}, timeout=max(0.0, deadline - loop.time()))
            if not self._processing.done():  # a batch overran: cancel; its result is still booked
                overran = True
                self._processing.cancel()
                await asyncio.wait({self._processing}, timeout=max(0.0, deadline - loop.time()))
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


def _default_max_inbound() -> int:
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return 256
    if soft == resource.RLIM_INFINITY:
        return 256
    return max(8, min(256, (soft - 64) // 2))


def _relay_key(msg: bytes) -> tuple[tuple[int, int | bytes], int | None]:
    """What a newer message replaces in a pending relay batch, and the
    timestamp a filter is checked against (``None`` for announcements)."""
    t = int.from_bytes(msg[:2], "big")
    if t == CHANNEL_UPDATE:  # (short_channel_id, direction)
        scid, ts, _mf, cf = struct.unpack_from(">QIBB", msg, 98)
        return (t, scid << 1 | (cf & 1)), ts
    if t == NODE_ANNOUNCEMENT:  # node_id
        flen = int.from_bytes(msg[66:68], "big")
        ts = int.from_bytes(msg[68 + flen : 72 + flen], "big")
        return (t, msg[72 + flen : 105 + flen]), ts
    g = parse_message(msg)  # channel_announcement: short_channel_id
    return (t, g.short_channel_id or 0), None


def _quiet_accept_errors(loop: asyncio.AbstractEventLoop, counters: Counter[str]) -> None:
    """Out of file descriptors, asyncio's server pauses accepting for a
    second and reports it through the loop's exception handler, by default
    with a traceback each time; log one line instead (the first time, then
    every 100th) and count it. Other reports go to the previous handler."""
    previous = loop.get_exception_handler()
    if getattr(previous, "_lngossip_quiet", False):
        return

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (
            errno.EMFILE,
            errno.ENFILE,
            errno.ENOBUFS,
            errno.ENOMEM,
        ):
            counters["accept_out_of_resources"] += 1
            n = counters["accept_out_of_resources"]
            if n == 1 or n % 100 == 0:
                log.warning("accept() failed (%s); pausing accepts for 1 s (%d times)", exc, n)
            return
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    handler._lngossip_quiet = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)


class _Disconnect(GossipError):
    """Internal: ends a connection's task group with a reason."""
