"""The durable store on the topology dataset: what appending costs (B1 with
a store against B1 without, in one run, alternating), how long reopening
takes (against verifying it all), how soon a restarted ``serve --store``
answers, and the memory of a node holding the whole graph.

Run with ``make bench`` or ``pytest benches/test_store.py --benchmark-enable -s``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from benches.common import b1_seconds
from benches.conftest import TOPOLOGY

ROUNDS = 2
SERVE = [sys.executable, "-m", "lngossip", "serve", "--listen", "127.0.0.1:0"]

PROBE = """
import json, sys, time
from lngossip import Pipeline
from lngossip.ingest import peak_rss_bytes
t0 = time.perf_counter()
p = Pipeline(store=sys.argv[1])
print(json.dumps({"open_s": time.perf_counter() - t0, "peak_rss_bytes": peak_rss_bytes(),
                  "channels": len(p.graph), "nodes": p.graph.node_count(),
                  "message_bytes": p.graph.message_bytes(),
                  "signatures_verified": p.counters()["signatures_verified"]}))
"""


def test_store_overhead_b1(
    benchmark: Any, topology_messages: list[bytes], results: dict[str, Any], tmp_path: Path
) -> None:
    """B1 with and without a store, alternating, best of ``ROUNDS`` each."""
    benchmark.group = "store"
    times: dict[str, list[float]] = {"plain": [], "store": []}

    def both() -> None:
        for i in range(ROUNDS):
            times["plain"].append(b1_seconds(topology_messages))
            path = tmp_path / f"b1-{i}.store"
            times["store"].append(b1_seconds(topology_messages, path))
        results["store_file_bytes"] = path.stat().st_size

    benchmark.pedantic(both, rounds=1, iterations=1)
    results["b1_plain_s"] = min(times["plain"])
    results["b1_store_s"] = min(times["store"])
    results["b1_store_all"] = times


def test_reopen_topology_store(
    benchmark: Any, topology_store: Path, results: dict[str, Any], tmp_path: Path
) -> None:
    """Reopen the topology store in a fresh process: time, memory, nothing verified;
    and ``serve --store`` from process start to its address line."""
    benchmark.group = "store"
    path = tmp_path / "topology.store"
    shutil.copyfile(topology_store, path)

    def probe() -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, check=True
        )
        d: dict[str, Any] = json.loads(out.stdout)
        return d

    d = benchmark.pedantic(probe, rounds=1, iterations=1)
    assert d["signatures_verified"] == 0
    assert (d["channels"], d["nodes"]) == (50_808, 17_324)
    results["reopen"] = d
    starts = []
    for _ in range(3):
        t0 = time.perf_counter()
        serve = subprocess.Popen(
            [*SERVE, "--store", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert serve.stdout is not None
        assert "@127.0.0.1:" in serve.stdout.readline()
        starts.append(time.perf_counter() - t0)
        serve.terminate()
        serve.wait(30)
        serve.stdout.close()
    results["serve_store_start_s"] = min(starts)


def test_zz_store_report(results: dict[str, Any]) -> None:
    if "b1_plain_s" not in results or "reopen" not in results:
        pytest.skip("run the whole file")
    plain, store = results["b1_plain_s"], results["b1_store_s"]
    r = results["reopen"]
    print("\n\n| store (topology, 169,748 messages) | figure |")
    print("|---|---|")
    print(f"| B1 without store (best of {ROUNDS}) | {plain:.2f} s |")
    print(f"| B1 with store (best of {ROUNDS}) | {store:.2f} s ({store / plain - 1:+.1%}) |")
    print(f"| store file | {results['store_file_bytes'] / 2**20:.1f} MiB |")
    print(f"| reopen (fresh process, 0 signatures) | {r['open_s']:.2f} s |")
    print(
        f"| `serve --store` start to address (incl. Python start) | "
        f"{results['serve_store_start_s']:.2f} s |"
    )
    print(
        f"| peak RSS after reopen | {r['peak_rss_bytes'] / 2**20:.0f} MiB "
        f"(graph messages {r['message_bytes'] / 2**20:.1f} MiB) |"
    )
    print(f"\nall B1 runs: {results['b1_store_all']}")
    print(f"(topology file: {TOPOLOGY.name})")
