"""One connection to a peer (:class:`Peer`) and the state of it that the
connection itself owns: what we owe the peer (:class:`Outbox`) and its
pings (:class:`Keepalive`). The state of each role (our queries, its
queries and dumps, relay) is a small object of that role's module."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lngossip.net import messages as bolt
from lngossip.net.query import OurQueries
from lngossip.net.relay import RelayQueue
from lngossip.net.responder import TheirQueries
from lngossip.net.transport import Connection

if TYPE_CHECKING:
    from lngossip.net.config import NodeConfig

__all__ = ["Keepalive", "Outbox", "Peer"]

_PONG_TYPE = bolt.PONG.to_bytes(2, "big")

#: Bytes the sender writes in one go from the lanes (one ``send_many``).
SEND_BATCH_BYTES = 65536


@dataclass(eq=False)
class Outbox:
    """What we owe the peer: the sender task writes it, in this order.

    The control lane holds our pings and our pongs, sent before anything
    else; the data lane holds relay, after the control lane. Both lanes
    together are bounded by ``NodeConfig.outbound_queue_bytes``."""

    control: deque[bytes] = field(default_factory=deque)
    data: deque[bytes] = field(default_factory=deque)
    #: Bytes in both lanes.
    size: int = 0
    #: Set when there is something for the sender to do.
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def __bool__(self) -> bool:
        return bool(self.control or self.data)

    def put(self, msg: bytes, *, control: bool = False) -> None:
        """Queue ``msg`` in the control lane or the data lane and wake the sender."""
        (self.control if control else self.data).append(msg)
        self.size += len(msg)
        self.wake.set()

    def take(self) -> list[bytes]:
        """The control lane, then the data lane, up to :data:`SEND_BATCH_BYTES`
        (at least one message): one write."""
        batch: list[bytes] = []
        size = 0
        for lane in (self.control, self.data):
            while lane and (not batch or size + len(lane[0]) <= SEND_BATCH_BYTES):
                m = lane.popleft()
                self.size -= len(m)
                batch.append(m)
                size += len(m)
        return batch


@dataclass(eq=False)
class Keepalive:
    """Its pings and ours (BOLT #1 ``ping`` / ``pong``)."""

    #: Set when the ``pong`` to our ``ping`` came.
    pong: asyncio.Event = field(default_factory=asyncio.Event)
    #: When its pings that followed no gossip came, and the pong bytes it
    #: asked for (when, bytes), within ``ping_window``; whether gossip came
    #: since its last ping; our pongs waiting in the control lane.
    pings: deque[float] = field(default_factory=deque)
    pong_bytes: deque[tuple[float, int]] = field(default_factory=deque)
    gossip_since_ping: bool = False
    pongs_queued: int = 0

    def on_ping(self, num_pong_bytes: int, config: NodeConfig, now: float) -> bool:
        """Book a ping from the peer (BOLT #1) within what pings may cost us
        (see ``NodeConfig.max_pings``): LDK's flow-control pings between
        gossip are free, idle pings, pong bytes and unwritten pongs are
        bounded. Returns whether to answer it (the pong is then counted as
        queued).

        Raises:
            ProtocolViolation: over one of the bounds (``ping_flood``).
        """
        since = now - config.ping_window
        if not self.gossip_since_ping:
            self.pings.append(now)
            while self.pings and self.pings[0] < since:
                self.pings.popleft()
            if len(self.pings) > config.max_pings:
                raise bolt.ProtocolViolation(
                    f"more than {config.max_pings} pings without gossip", "ping_flood"
                )
        self.gossip_since_ping = False
        if not config.answer_pings or num_pong_bytes >= bolt.PONG_BYTES_IGNORED:
            return False
        self.pong_bytes.append((now, num_pong_bytes))
        while self.pong_bytes and self.pong_bytes[0][0] < since:
            self.pong_bytes.popleft()
        if sum(b for _, b in self.pong_bytes) > config.max_pong_bytes:
            raise bolt.ProtocolViolation(
                f"pings asked for more than {config.max_pong_bytes} pong bytes", "ping_flood"
            )
        if self.pongs_queued >= config.max_outstanding_pongs:
            raise bolt.ProtocolViolation("pings faster than our pongs are read", "ping_flood")
        self.pongs_queued += 1
        return True

    def sent(self, batch: list[bytes]) -> None:
        """Book the pongs of a batch the sender has written."""
        self.pongs_queued -= sum(1 for m in batch if m[:2] == _PONG_TYPE)


@dataclass(eq=False)
class Peer:
    """One connection to a peer (one generation)."""

    node_id: bytes
    generation: int
    outbound: bool
    conn: Connection
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
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
    #: Network group of ``address`` (see :func:`~lngossip.net.inbound.netgroup`).
    netgroup: str = ""
    #: When the connection became ready (monotonic seconds; 0: not yet).
    ready_at: float = 0.0
    #: When gossip it sent was last accepted (monotonic seconds; 0: never):
    #: recently useful peers are protected from eviction.
    last_useful: float = 0.0
    #: What we owe the peer (pings, pongs, relay).
    outbox: Outbox = field(default_factory=Outbox)
    keepalive: Keepalive = field(default_factory=Keepalive)
    #: What we asked the peer (:mod:`lngossip.net.query`).
    our_queries: OurQueries = field(default_factory=OurQueries)
    #: What the peer asked us: its queries, its filter and dump
    #: (:mod:`lngossip.net.responder`).
    their_queries: TheirQueries = field(default_factory=TheirQueries)
    #: Relay waiting for the next flush (:mod:`lngossip.net.relay`).
    relay: RelayQueue = field(default_factory=RelayQueue)

    @property
    def initiator(self) -> str:
        """``"local"`` when we dialled, ``"remote"`` when the peer did."""
        return "local" if self.outbound else "remote"
