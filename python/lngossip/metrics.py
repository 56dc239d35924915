"""Prometheus metrics of a node (``serve`` and ``sync`` take ``--metrics
HOST:PORT``), with ``prometheus-client``.

The figures are read from the pipeline's and the node's own counters at
each scrape (a collector, not a second set of counters to keep in step):

=========================================  =====================================
``lngossip_decisions_total``               final decisions, by ``msg_type`` and
                                           ``decision`` (counter)
``lngossip_signatures_verified_total``     ECDSA verifications (counter)
``lngossip_queue_bytes``                   bytes waiting for verification (gauge)
``lngossip_queued_messages``               messages waiting (gauge)
``lngossip_graph_channels`` / ``_nodes``   the graph (gauges)
``lngossip_peers``                         ready connections (gauge)
``lngossip_bans_total``                    peers banned (counter)
``lngossip_relay_sent_total``              messages relayed (counter)
``lngossip_relay_dropped_total``           relay dropped for slow peers (counter)
``lngossip_connections_refused_total``     by ``reason``: ``limit``, ``banned`` (counter)
``lngossip_disconnects_total``             by ``reason`` (counter)
``lngossip_gossip_received_total``         gossip messages read from peers (counter)
=========================================  =====================================
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

if TYPE_CHECKING:
    from lngossip.net.node import GossipNode

__all__ = ["NodeCollector", "serve_metrics"]


class NodeCollector(Collector):
    """Reads ``node`` and its pipeline at each scrape."""

    def __init__(self, node: GossipNode) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        c = node.pipeline.counters()
        n = dict(node.counters)  # a copy: the node goes on counting in its own thread
        decisions = CounterMetricFamily(
            "lngossip_decisions",
            "Final decisions on gossip messages",
            labels=["msg_type", "decision"],
        )
        for kind, row in c["decisions"].items():
            for decision, count in row.items():
                decisions.add_metric([kind, decision], count)
        yield decisions
        yield CounterMetricFamily(
            "lngossip_signatures_verified", "ECDSA verifications", value=c["signatures_verified"]
        )
        yield GaugeMetricFamily("lngossip_queue_bytes", "Bytes queued", value=c["queue_bytes"])
        yield GaugeMetricFamily("lngossip_queued_messages", "Messages queued", value=c["queued"])
        yield GaugeMetricFamily("lngossip_graph_channels", "Channels", value=c["channels"])
        yield GaugeMetricFamily("lngossip_graph_nodes", "Nodes", value=c["nodes"])
        yield GaugeMetricFamily("lngossip_peers", "Ready connections", value=len(node.peers))
        yield CounterMetricFamily("lngossip_bans", "Peers banned", value=n.get("bans", 0))
        yield CounterMetricFamily(
            "lngossip_relay_sent", "Messages relayed", value=n.get("relay_sent", 0)
        )
        yield CounterMetricFamily(
            "lngossip_relay_dropped",
            "Relay dropped for slow peers",
            value=n.get("relay_dropped", 0),
        )
        yield CounterMetricFamily(
            "lngossip_gossip_received", "Gossip messages read", value=n.get("gossip_received", 0)
        )
        refused = CounterMetricFamily(
            "lngossip_connections_refused", "Inbound connections refused", labels=["reason"]
        )
        refused.add_metric(["netgroup"], n.get("refused:netgroup", 0))
        refused.add_metric(["inbound_full"], n.get("refused:inbound_full", 0))
        refused.add_metric(["banned"], n.get("refused_banned", 0))
        yield refused
        evicted = CounterMetricFamily(
            "lngossip_evictions",
            "Inbound connections evicted for a new one, by state",
            labels=["state"],
        )
        evicted.add_metric(["ready"], n.get("evicted", 0))
        evicted.add_metric(["pending"], n.get("evicted_pending", 0))
        yield evicted
        closed = CounterMetricFamily(
            "lngossip_disconnects", "Connections closed, by reason", labels=["reason"]
        )
        for key, count in sorted(n.items()):
            if key.startswith("closed:"):
                closed.add_metric([key.removeprefix("closed:")], count)
        yield closed


def serve_metrics(
    node: GossipNode, host: str, port: int, extra: Iterable[Collector] = ()
) -> tuple[str, int]:
    """Expose ``node``'s metrics, and those of the ``extra`` collectors
    (e.g. :meth:`lngossip.rgs_server.RgsServer.collector`), at
    ``http://HOST:PORT/metrics`` from a daemon thread (prometheus-client's
    own server); returns the bound address.

    Raises:
        OSError: the address cannot be bound.
    """
    registry = CollectorRegistry()
    registry.register(NodeCollector(node))
    for c in extra:
        registry.register(c)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    bound = server.server_address
    return str(bound[0]), int(bound[1])
