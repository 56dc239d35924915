"""Helpers shared by the benchmarks: B1 as the yardstick of a run, and the
wait for a syncing node to hold the whole topology graph."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from lngossip import Pipeline
from lngossip.engine import make_pipeline
from lngossip.graph import dump
from lngossip.ingest import run
from lngossip.net.node import GossipNode

SIGNATURES = 322_172
CHANNELS = 50_808


def b1_seconds(msgs: list[bytes], store: Path | None = None) -> float:
    """B1: ``msgs`` once from one peer through the Rust engine, in seconds;
    with ``store``, kept in a new store there (synced to disk before the
    clock stops)."""
    p = make_pipeline("rust") if store is None else Pipeline(store=store)
    t0 = time.perf_counter()
    r = run(p, [(0, m) for m in msgs])
    if store is not None:
        p.sync_store()
    elapsed = time.perf_counter() - t0
    assert r.signatures_verified == SIGNATURES
    return elapsed


async def synced(client: GossipNode, msgs: list[bytes], t0: float) -> tuple[float, int]:
    """Wait until ``client``'s graph holds every message of the topology
    dataset ``msgs`` and every admitted message is decided; check that each
    signature was verified once. Returns (seconds since ``t0`` until the last
    gossip arrived or was decided, gossip messages received)."""
    graph = client.pipeline.graph
    while (
        len(graph) < CHANNELS
        or client.pipeline.counters()["decisions"]["channel_update"]["accepted"]
        + graph.node_count()
        < len(msgs) - CHANNELS
    ):
        await asyncio.sleep(0.02)
    await client.drain()
    elapsed = max(client.last_processed_at, client.last_gossip_at) - t0
    assert client.pipeline.counters()["signatures_verified"] == SIGNATURES
    assert set(dump(graph)) == set(msgs)
    return elapsed, client.counters["gossip_received"]
