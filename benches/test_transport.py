"""The wire path on the topology dataset: a full sync over loopback from one
``lngossip serve`` process and from four (filter mode: every message arrives
four times), with the Rust codec (``--codec rust``, the default) and with the
Python reference transport (``--codec python``) on both ends, beside B1 (the
same messages ingested from memory) measured in the same run.

The servers are separate processes that open copies of one store of the
topology graph (nothing verified at their start); the syncing node runs in
this process and is timed from its first connect until its graph holds every
message and every admitted message is decided. All processes share this
machine's 2 cores.

Run with ``make bench`` or ``pytest benches/test_transport.py --benchmark-enable -s``.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benches.common import b1_seconds, synced
from lngossip.engine import make_pipeline
from lngossip.ingest import peak_rss_bytes
from lngossip.net.node import GossipNode, NodeConfig
from lngossip.net.transport import CodecName, Keys

SERVE = [sys.executable, "-m", "lngossip", "serve", "--listen", "127.0.0.1:0"]
CASES = [(1, "rust"), (1, "python"), (4, "rust"), (4, "python")]


def test_transport_b1_reference(
    benchmark: Any, topology_messages: list[bytes], results: dict[str, Any]
) -> None:
    """B1 in this run: the yardstick of the sync figures."""
    benchmark.group = "transport"

    results["transport_b1_s"] = benchmark.pedantic(
        lambda: b1_seconds(topology_messages), rounds=1, iterations=1
    )


def test_transport_per_message(topology_messages: list[bytes], results: dict[str, Any]) -> None:
    """Receiving a duplicate channel_update from Python: the reference transport
    (two ``cryptography`` AEAD calls, frame bookkeeping, one ``submit``) against
    one ``Codec.feed`` of a 64 KiB read, per message; best of 5 runs of
    20,000 frames each."""
    from lngossip._core import Codec
    from lngossip.net.transport import CipherState

    k, ck = b"\x96" * 32, b"\x91" * 32
    msg = next(m for m in topology_messages if m[:2] == b"\x01\x02")
    n = 20_000
    best: dict[str, float] = {}
    for _ in range(5):
        enc = CipherState(k, ck)
        frames = [
            enc.encrypt(b"", len(msg).to_bytes(2, "big")) + enc.encrypt(b"", msg) for _ in range(n)
        ]
        wire = b"".join(frames)
        # Python reference: what Connection.recv + GossipNode._admit do per message
        p = make_pipeline("rust")
        p.submit(0, msg)
        dec = CipherState(k, ck)
        t0 = time.perf_counter()
        for f in frames:
            length = int.from_bytes(dec.decrypt(b"", f[:18]), "big")
            m = dec.decrypt(b"", f[18 : 18 + length + 16])
            assert p.submit(1, m).decision == "duplicate"
        best["python"] = min(best.get("python", 1e9), (time.perf_counter() - t0) / n)
        # Rust codec: reads of 64 KiB, as read_batch does
        p = make_pipeline("rust")
        p.submit(0, msg)
        codec = Codec(k, ck, k, ck)
        codec.attach(p, 1)
        t0 = time.perf_counter()
        dup = 0
        for i in range(0, len(wire), 65536):
            dup += codec.feed(wire[i : i + 65536]).count("duplicate")
        best["rust"] = min(best.get("rust", 1e9), (time.perf_counter() - t0) / n)
        assert dup == n
    results["transport_per_message_us"] = {c: t * 1e6 for c, t in best.items()}


@pytest.fixture
def servers(
    request: Any, topology_store: Path, tmp_path: Path
) -> Iterator[list[tuple[bytes, int]]]:
    n, codec = request.param
    procs, addrs = [], []
    try:
        for i in range(n):
            store = tmp_path / f"serve-{i}.store"
            shutil.copyfile(topology_store, store)
            proc = subprocess.Popen(
                [*SERVE, "--store", str(store), "--codec", codec],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            procs.append(proc)
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            node_id, _, port = line.rpartition(":")
            addrs.append((bytes.fromhex(node_id.split("@")[0]), int(port)))
        yield addrs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
            if proc.stdout is not None:
                proc.stdout.close()


async def _sync(
    addrs: list[tuple[bytes, int]], codec: CodecName, msgs: list[bytes]
) -> tuple[float, int]:
    client = GossipNode(
        Keys(), make_pipeline("rust", policy="archive"), config=NodeConfig(codec=codec)
    )
    t0 = time.monotonic()
    for node_id, port in addrs:
        await client.connect(node_id, "127.0.0.1", port)
    elapsed, received = await synced(client, msgs, t0)
    await client.close(10)
    return elapsed, received


@pytest.mark.parametrize("servers", CASES, indirect=True, ids=[f"{n}-serve-{c}" for n, c in CASES])
def test_transport_sync(
    benchmark: Any,
    request: Any,
    servers: list[tuple[bytes, int]],
    topology_messages: list[bytes],
    results: dict[str, Any],
) -> None:
    benchmark.group = "transport"
    n, codec = request.node.callspec.params["servers"]
    elapsed, received = benchmark.pedantic(
        lambda: asyncio.run(_sync(servers, codec, topology_messages)), rounds=1, iterations=1
    )
    results[f"transport_{n}_{codec}"] = {"s": elapsed, "received": received}
    results["transport_client_peak_rss"] = peak_rss_bytes()


def test_zz_transport_report(results: dict[str, Any]) -> None:
    if "transport_b1_s" not in results:
        pytest.skip("run the whole file")
    b1 = results["transport_b1_s"]
    print("\n\n| sync over loopback (topology) | codec | time | received | x B1 | target |")
    print("|---|---|---|---|---|---|")
    print(f"| B1 (in memory, same run) | | {b1:.2f} s | 169,748 | 1.00 | |")
    for n, codec in CASES:
        r = results.get(f"transport_{n}_{codec}")
        if r is None:
            continue
        target = "<= 1.10" if n == 1 else "<= 1.25"
        print(
            f"| from {n} `serve` process{'es' if n > 1 else ''} | {codec} | {r['s']:.2f} s "
            f"| {r['received']:,} | {r['s'] / b1:.2f} | {target} |"
        )
    print(f"\npeak RSS of this process: {results['transport_client_peak_rss'] / 2**20:.0f} MiB")
    pm = results.get("transport_per_message_us")
    if pm:
        print("\n| receive a duplicate channel_update, from Python | per message |")
        print("|---|---|")
        print(f"| python transport: 2 AEAD calls + `submit` | {pm['python']:.2f} us |")
        print(f"| rust codec: `feed` of 64 KiB reads | {pm['rust']:.2f} us |")
