"""RSS of ``lngossip serve`` (the whole topology graph, from its store)
under the amplification attacks of issue 7, measured in the serve process
while each attack runs, against its idle RSS; and whether an honest peer
still syncs the whole graph meanwhile. The regression tests
(``tests/test_hostile.py``) assert generous ceilings; this prints the figures.

Run with ``pytest benches/test_attacks.py --benchmark-enable -s -p no:randomly``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from lngossip.net import messages as bolt
from lngossip.net.transport import TransportError
from lngossip.wire import MAINNET_CHAIN_HASH
from tests.helpers import (
    MIB,
    Sampler,
    closed_by_peer,
    hello,
    honest_sync,
    rss,
    serving,
    split,
)
from tests.test_hostile import _announcements, _hold_slots

ROWS: list[tuple[str, float, str]] = []


async def _flood(address: str, label: str, msgs: list[bytes], seconds: float = 30) -> None:
    conn = await hello(address, label)
    with contextlib.suppress(TransportError, OSError, TimeoutError):
        async with asyncio.timeout(seconds):
            for m in msgs:
                await conn.send(m)
    await asyncio.sleep(1)
    await closed_by_peer(conn, 30)


def _range_floods(peers: int) -> Callable[[str], Awaitable[None]]:
    q = bolt.QueryChannelRange(MAINNET_CHAIN_HASH).encode()

    async def attack(address: str) -> None:
        await asyncio.gather(*(_flood(address, f"range{i}", [q] * 1000) for i in range(peers)))

    return attack


async def _filters(address: str) -> None:
    f = bolt.GossipTimestampFilter(MAINNET_CHAIN_HASH, 0).encode()
    await _flood(address, "filters", [f] * 300)


async def _scid_queries(address: str) -> None:
    scids = sorted(int.from_bytes(m[292:300], "big") for m in _announcements(8000))
    q = bolt.QueryShortChannelIds(MAINNET_CHAIN_HASH, scids).encode()
    await _flood(address, "scids", [q] * 300)


async def _pings(address: str) -> None:
    await _flood(address, "pings", [bolt.encode_ping(65531)] * 2000)


async def _connections(address: str) -> None:
    _, host, port = split(address)
    socks = []
    for _ in range(1000):
        with contextlib.suppress(OSError):
            socks.append(await asyncio.open_connection(host, port, local_addr=("127.0.0.2", 0)))
    await asyncio.sleep(2)
    for _, w in socks:
        w.close()


def _slots(mode: str, seconds: float = 25) -> Callable[[str], Awaitable[None]]:
    """125 network groups x 8 connections holding serve's inbound slots
    (``handshake``: never sending a byte; ``ready``: idle after ``init``),
    re-dialling each closed one, for ``seconds`` (the honest sync's span)."""

    async def attack(address: str) -> None:
        stop = asyncio.Event()
        flood = asyncio.create_task(_hold_slots(address, mode, stop, [0]))
        await asyncio.sleep(seconds)
        stop.set()
        await flood

    return attack


ATTACKS: dict[str, Callable[[str], Awaitable[None]]] = {
    "1,000 query_channel_range, never reading": _range_floods(1),
    "the same from 2 peers": _range_floods(2),
    "300 gossip_timestamp_filter, never reading": _filters,
    "300 query_short_channel_ids of 8,000 ids, never reading": _scid_queries,
    "2,000 pings for 65,531-byte pongs": _pings,
    "1,000 connections from one address": _connections,
    "125 network groups x 8 connections, handshakes left open": _slots("handshake"),
    "125 network groups x 8 connections, ready and idle": _slots("ready"),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_rss(
    benchmark: Any,
    name: str,
    topology_store: Path,
    results: dict[str, Any],
) -> None:
    benchmark.group = "attacks"
    honest: list[dict[str, object]] = []

    def once() -> tuple[int, int]:
        with serving("--store", str(topology_store)) as served:
            time.sleep(0.5)
            idle = rss(served.proc.pid)
            sampler = Sampler(served.proc.pid)
            t = honest_sync(served.address, honest)
            asyncio.run(ATTACKS[name](served.address))
            t.join()
            peak = sampler.stop()
        return idle, peak

    idle, peak = benchmark.pedantic(once, rounds=1, iterations=1)
    got = honest[0].get("messages") if honest else None
    ROWS.append((name, (peak - idle) / MIB, f"{idle / MIB:.0f} MiB idle; honest sync got {got}"))
    results.setdefault("attacks", {})[name] = {"idle": idle, "peak": peak, "honest": got}
    assert peak - idle < 100 * MIB


def test_zz_attack_report() -> None:
    if not ROWS:
        pytest.skip("run the whole file")
    print("\n\n| attack on `serve` (topology graph) | RSS growth over idle | notes |")
    print("|---|---|---|")
    for name, growth, note in ROWS:
        print(f"| {name} | {growth:+.1f} MiB | {note} |")
