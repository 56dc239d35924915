"""The settings of a gossip node (:class:`NodeConfig`): its timers, the
limits on what a peer may cost it, and how it syncs."""

from __future__ import annotations

import resource
from dataclasses import dataclass, field

from lngossip.engine import DEFAULT_BATCH
from lngossip.errors import ConfigError
from lngossip.net.transport import CodecName
from lngossip.wire import MAINNET_CHAIN_HASH

__all__ = ["NodeConfig"]


@dataclass
class NodeConfig:
    """Settings of a :class:`~lngossip.net.node.GossipNode`; times in seconds."""

    chain_hash: bytes = MAINNET_CHAIN_HASH
    #: Send a ``ping`` after this long without hearing from the peer.
    ping_interval: float = 30.0
    #: Disconnect when, after a ``ping``, this long passes with neither the
    #: ``pong`` nor any progress: nothing received from the peer and none of
    #: our bytes taken by its TCP stack (see
    #: :meth:`~lngossip.net.transport.Connection.bytes_delivered`).
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
    batch: int = DEFAULT_BATCH
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
    #: ``AttemptToEvictConnection``, see :func:`~lngossip.net.inbound.eviction_victim`); outbound
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


def _default_max_inbound() -> int:
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return 256
    if soft == resource.RLIM_INFINITY:
        return 256
    return max(8, min(256, (soft - 64) // 2))
