"""A node's inbound connections and their limits (:class:`InboundLimits`):
at most ``max_inbound_per_netgroup`` per network group, at most
``max_pending_inbound`` still in the handshake or ``init`` exchange (their
own budget), at most ``max_inbound`` ready ones. When a budget is full a new
connection evicts one instead of being refused: the ready peer of least
value (Bitcoin Core's ``AttemptToEvictConnection``, for gossip) or the
pending handshake that got least far. Outbound peers we chose are never
evicted."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import ipaddress
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lngossip.net.config import NodeConfig
    from lngossip.net.peer import Peer

__all__ = [
    "EVICTION_PROTECT_NETGROUPS",
    "EVICTION_PROTECT_USEFUL",
    "InboundLimits",
    "Pending",
    "eviction_victim",
    "netgroup",
    "pending_victim",
    "quiet_accept_errors",
]

log = logging.getLogger(__name__)

#: The refusals and evictions that are logged at INFO (the others are counted).
_LOGGED = (1, 10, 100, 1000, 10000)

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


@dataclass(eq=False)
class Pending:
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


def pending_victim(pending: Iterable[Pending]) -> Pending | None:
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


class InboundLimits:
    """The inbound connections of one node, pending and ready, held within
    the limits of its :class:`~lngossip.net.config.NodeConfig`.

    Args:
        config: the node's settings (``max_inbound*``, ``max_pending_inbound``).
        counters: the node's counters (``refused*``, ``evicted*``).
    """

    def __init__(self, config: NodeConfig, counters: Counter[str]) -> None:
        self.config = config
        self.counters = counters
        #: inbound connections (pending and ready) per network group
        self.by_group: Counter[str] = Counter()
        #: inbound connections not ready yet
        self.pending: set[Pending] = set()
        #: secret of the keyed network-group protection of eviction_victim
        self._eviction_key = os.urandom(16)

    def open(
        self, writer: asyncio.StreamWriter, address: str, task: asyncio.Task[Any] | None
    ) -> Pending | None:
        """Count a new inbound connection from ``address`` as pending, run by
        ``task`` (evicting a pending one when their budget is full); ``None``
        when its network group is full (the connection is then closed)."""
        group = netgroup(address)
        if self.by_group[group] >= self.config.max_inbound_per_netgroup:
            self.refuse(writer, "netgroup")
            return None
        if len(self.pending) >= self.config.max_pending_inbound:
            victim = pending_victim(self.pending)
            if victim is not None:
                self._evict_pending(victim)
        pending = Pending(group, time.monotonic(), task)
        self.pending.add(pending)
        self.by_group[group] += 1
        return pending

    def closed(self, pending: Pending) -> None:
        """The connection of ``pending`` ended (pending or ready)."""
        self.pending.discard(pending)
        self.by_group[pending.netgroup] -= 1
        if not self.by_group[pending.netgroup]:
            del self.by_group[pending.netgroup]

    def refuse(self, writer: asyncio.StreamWriter, reason: str) -> None:
        """Close a new inbound connection over a limit; count it, and log
        the first, 10th, 100th... refusal."""
        writer.close()
        self.counters["refused_connection_limit"] += 1
        self.counters[f"refused:{reason}"] += 1
        n = self.counters["refused_connection_limit"]
        if n in _LOGGED:
            cfg = self.config
            log.info(
                "refusing connections over the limits (%d per network group, %d ready "
                "inbound with no peer to evict): %d refused so far (last: %s)",
                cfg.max_inbound_per_netgroup,
                cfg.max_inbound,
                n,
                reason,
            )

    def _evict_pending(self, victim: Pending) -> None:
        """Close a pending inbound connection to make room for a new one."""
        self.pending.discard(victim)
        self.counters["evicted_pending"] += 1
        n = self.counters["evicted_pending"]
        if n in _LOGGED:
            log.info(
                "pending inbound connections at their limit (%d): evicting the oldest of "
                "the busiest network group (%s); %d evicted so far",
                self.config.max_pending_inbound,
                victim.netgroup,
                n,
            )
        if victim.peer is not None:
            victim.peer.close_reason = "evicted_pending"
            _cancel(victim.peer)
        elif victim.task is not None:
            victim.task.cancel()

    def make_room(self, peer: Peer, ready: dict[bytes, Peer]) -> bool:
        """Make room for inbound ``peer`` among the ``max_inbound`` ready
        inbound connections (``ready``: the node's, by ``node_id``), evicting
        the least valuable one when they are all taken
        (:func:`eviction_victim`); False when none can go."""
        inbound = [p for p in ready.values() if not p.outbound and p.node_id != peer.node_id]
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
            logging.INFO if n in _LOGGED else logging.DEBUG,
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
        del ready[victim.node_id]
        _cancel(victim)
        return True


def _cancel(peer: Peer) -> None:
    if peer.task is not None and not peer.task.done():
        peer.task.cancel()


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, counters: Counter[str]) -> None:
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
