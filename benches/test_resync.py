"""A restarted ``sync --query --store`` (issue 15): a ``serve`` holding the
topology graph plus ``mainnet-2026-02-refresh`` (30,652 newer
``channel_update``s, 30% of the directions), a client whose store holds the
topology graph only. With BOLT #7 extended queries the client asks for the
update timestamps of every channel and fetches only what is newer; the
figure is the bytes it received (BOLT #8 frames) against the size of the
refresh messages. Before, it skipped every channel it had and never got the
new fees (asking with a filter instead, it got the whole graph again).

Run with ``pytest benches/test_resync.py --benchmark-enable -s -p no:randomly``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from lngossip import Pipeline, readers
from lngossip.graph import dump
from lngossip.ingest import run
from tests.helpers import LNGOSSIP, serving

from .conftest import DATA

REFRESH = DATA / "topology" / "mainnet-2026-02-refresh.gsp.xz"
MB = 1e6


def test_query_resync_receives_little_more_than_what_changed(
    benchmark: Any, topology_store: Path, tmp_path: Path, results: dict[str, Any]
) -> None:
    benchmark.group = "resync"
    refresh = list(readers.iter_messages(REFRESH))
    server_store = tmp_path / "server.gs"
    shutil.copy(topology_store, server_store)
    p = Pipeline(store=server_store)
    run(p, [(0, m) for m in refresh])
    p.sync_store()
    want = set(dump(p.graph))
    whole = sum(len(m) + 34 for m in want)  # the graph again, in frames
    del p
    client_store = tmp_path / "client.gs"
    shutil.copy(topology_store, client_store)
    out: dict[str, Any] = {}
    args = ["--query", "--store", str(client_store), "--policy", "archive", "--until-idle", "3"]

    def once() -> None:
        with serving("--store", str(server_store)) as served:
            t0 = time.perf_counter()
            r = subprocess.run(
                [*LNGOSSIP, "sync", served.address, *args, "--json"],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            out["wall_s"] = time.perf_counter() - t0
        assert r.returncode == 0, r.stderr
        out["report"] = json.loads(r.stdout)

    benchmark.pedantic(once, rounds=1, iterations=1)
    rep = out["report"]
    client = Pipeline(store=client_store)
    assert set(dump(client.graph)) == want  # the refreshed graph
    size = sum(len(m) for m in refresh)
    ratio = rep["bytes_received"] / size
    results.setdefault("resync", {}).update(
        bytes_received=rep["bytes_received"], refresh_bytes=size, ratio=ratio
    )
    print("\n\n| restarted `sync --query --store` (topology) <- `serve` (topology + refresh) | |")
    print("|---|---|")
    print(f"| refresh messages | {len(refresh):,}, {size / MB:.2f} MB |")
    print(f"| messages received | {rep['messages']:,} |")
    print(f"| bytes received (BOLT #8 frames) | {rep['bytes_received'] / MB:.2f} MB |")
    print(f"| bytes received / refresh size | {ratio:.2f} (target <= 1.5) |")
    print(f"| the whole graph again, for comparison | {whole / MB:.2f} MB |")
    print(f"| sync wall time (idle wait of 3 s included) | {out['wall_s']:.1f} s |")
    assert ratio <= 1.5
