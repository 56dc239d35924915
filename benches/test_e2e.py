"""End to end: a loopback sync of the topology dataset from 4 serving
nodes over BOLT #8, beside B1 (the same messages ingested from memory) in
the same run. Servers and client share this process and its 2 cores.

``filter`` mode asks every server for everything (``gossip_timestamp_filter``
from 0): 4 copies of each message cross the wire and dedup drops 3.
``query`` mode asks each server for its channel ranges and fetches every
``short_channel_id`` from one server only (``query_short_channel_ids``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from benches.common import b1_seconds, synced
from lngossip.engine import make_pipeline
from lngossip.ingest import run
from lngossip.net.node import GossipNode, NodeConfig
from lngossip.net.transport import Keys


def test_e2e_b1_reference(
    benchmark: Any, topology_messages: list[bytes], results: dict[str, Any]
) -> None:
    """B1 again, in this run, as the yardstick of the end-to-end figures."""
    benchmark.group = "end to end"

    results["e2e_b1_s"] = benchmark.pedantic(
        lambda: b1_seconds(topology_messages), rounds=1, iterations=1
    )


async def _sync(msgs: list[bytes], mode: str) -> tuple[float, int]:
    # the four servers share one loaded pipeline (verified before the clock starts)
    served = make_pipeline("rust", policy="archive")
    await asyncio.to_thread(run, served, [(0, m) for m in msgs])
    servers = [GossipNode(Keys(), served, config=NodeConfig(sync=False)) for _ in range(4)]
    addrs = [await s.listen("127.0.0.1", 0) for s in servers]
    client = GossipNode(
        Keys(),
        make_pipeline("rust", policy="archive"),
        config=NodeConfig(sync_mode=mode),
    )
    t0 = time.monotonic()
    for s, (h, p) in zip(servers, addrs, strict=True):
        await client.connect(s.node_id, h, p)
    elapsed, received = await synced(client, msgs, t0)
    await client.close(10)
    for s in servers:
        await s.close(10)
    return elapsed, received


@pytest.mark.parametrize("mode", ["filter", "query"])
def test_e2e_loopback_sync_4_servers(
    benchmark: Any, mode: str, topology_messages: list[bytes], results: dict[str, Any]
) -> None:
    benchmark.group = "end to end"
    elapsed, received = benchmark.pedantic(
        lambda: asyncio.run(_sync(topology_messages, mode)), rounds=1, iterations=1
    )
    results[f"e2e_{mode}_s"] = elapsed
    results[f"e2e_{mode}_received"] = received


def test_zz_e2e_report(results: dict[str, Any]) -> None:
    if "e2e_b1_s" not in results:
        pytest.skip("run the whole file")
    print("\n\n| end to end (4 servers, loopback) | time | messages received | msg/s | x B1 |")
    print("|---|---|---|---|---|")
    b1 = results["e2e_b1_s"]
    print(f"| B1 (in memory, same run) | {b1:.2f} s | 169,748 | {169_748 / b1:,.0f} | 1.00 |")
    for mode in ("filter", "query"):
        if f"e2e_{mode}_s" in results:
            t, n = results[f"e2e_{mode}_s"], results[f"e2e_{mode}_received"]
            print(f"| sync, {mode} mode | {t:.2f} s | {n:,} | {n / t:,.0f} | {t / b1:.2f} |")
