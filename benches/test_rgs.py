"""The graph out, on the topology dataset: ``Graph.to_numpy()`` (both
engines, one run), Rapid Gossip Sync snapshots (full v1/v2: build time and
size, against the reference server's published ~3.3 MB full mainnet
snapshot), and the incremental snapshot after the 2026-02-04 refresh.

Run with ``pytest benches/test_rgs.py --benchmark-enable -s -p no:randomly``.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benches.conftest import TOPOLOGY
from lngossip import Graph, Pipeline, baseline, readers
from lngossip.ingest import run

REFRESH = TOPOLOGY.parent / "mainnet-2026-02-refresh.gsp.xz"
ROUNDS = 7


def _times(f: Callable[[], object], rounds: int = ROUNDS) -> tuple[float, float]:
    """(median, best) seconds of ``rounds`` calls of ``f``."""
    ts = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), min(ts)


def test_to_numpy(
    benchmark: Any, topology_store: Path, topology_messages: list[bytes], results: dict[str, Any]
) -> None:
    benchmark.group = "graph out"
    out: dict[str, Any] = {}

    def both() -> None:
        g = Graph(Pipeline(store=topology_store))
        first = time.perf_counter()
        g.to_numpy()
        out["rust_first_s"] = time.perf_counter() - first
        out["rust_median_s"], out["rust_best_s"] = _times(g.to_numpy)
        bp = baseline.Pipeline()
        run(bp, [(0, m) for m in topology_messages], engine="baseline")
        out["baseline_median_s"], _ = _times(Graph(bp).to_numpy, 1)

    benchmark.pedantic(both, rounds=1, iterations=1)
    results["to_numpy"] = out
    print(
        f"\nto_numpy on the topology graph: {out['rust_median_s'] * 1e3:.1f} ms median "
        f"(best {out['rust_best_s'] * 1e3:.1f}, first call {out['rust_first_s'] * 1e3:.1f}) "
        f"in the core; baseline {out['baseline_median_s']:.2f} s "
        f"({out['baseline_median_s'] / out['rust_median_s']:.0f}x)"
    )


def test_rgs_snapshots(
    benchmark: Any, topology_store: Path, results: dict[str, Any], tmp_path: Path
) -> None:
    benchmark.group = "graph out"
    out: dict[str, Any] = {}

    def all_of_it() -> None:
        g = Graph(Pipeline(store=topology_store))
        for v in (1, 2):
            data, info = g.rgs_snapshot(0, v)
            out[f"full_v{v}_bytes"] = len(data)
            out[f"full_v{v}_median_s"], out[f"full_v{v}_best_s"] = _times(
                lambda v=v: g.rgs_snapshot(0, v)
            )
        since = info["latest_seen"]
        refreshed = tmp_path / "refreshed.store"
        shutil.copyfile(topology_store, refreshed)
        p = Pipeline(store=refreshed)
        run(p, [(0, m) for m in readers.iter_messages(REFRESH)])
        g2 = Graph(p)
        for v in (1, 2):
            data, info = g2.rgs_snapshot(since, v)
            out[f"incr_v{v}_bytes"] = len(data)
            out[f"incr_v{v}_info"] = info
            out[f"incr_v{v}_median_s"], _ = _times(lambda v=v: g2.rgs_snapshot(since, v))
            out[f"full_after_v{v}_bytes"] = len(g2.rgs_snapshot(0, v)[0])

    benchmark.pedantic(all_of_it, rounds=1, iterations=1)
    results["rgs"] = out
    print(
        f"\nRGS full snapshot of the topology graph: v1 {out['full_v1_bytes']:,} bytes in "
        f"{out['full_v1_median_s'] * 1e3:.0f} ms, v2 {out['full_v2_bytes']:,} bytes in "
        f"{out['full_v2_median_s'] * 1e3:.0f} ms (median of {ROUNDS}); after the refresh: "
        f"incremental v1 {out['incr_v1_bytes']:,} bytes in {out['incr_v1_median_s'] * 1e3:.0f} ms, "
        f"v2 {out['incr_v2_bytes']:,} bytes "
        f"({out['incr_v2_bytes'] / out['full_after_v2_bytes']:.2f} of the full "
        f"{out['full_after_v2_bytes']:,}); {out['incr_v2_info']}"
    )
