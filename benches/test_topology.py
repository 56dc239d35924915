"""B1-B3 on the re-signed mainnet topology (169,748 messages, 322,172
signatures), both engines in one run, plus a single-core libsecp256k1
calibration so the verification floor is measured on this machine now.

Run with ``make bench`` (pytest-benchmark is disabled by default). The
closing test prints the table recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

from benches.conftest import TOPOLOGY
from lngossip._core import _time_bare_verify
from lngossip.engine import make_pipeline
from lngossip.ingest import replay_as_peers, run
from lngossip.wire import parse_message

ENGINES = ["rust", "baseline"]
CORES = os.cpu_count() or 1
SIGNATURES = 322_172


def _calibration_columns(msgs: list[bytes], n: int) -> tuple[np.ndarray, ...]:
    sigs, keys, digests = [], [], []
    for m in msgs:
        if m[:2] != b"\x01\x00":
            continue
        g = parse_message(m)
        d = hashlib.sha256(hashlib.sha256(m[258:]).digest()).digest()
        for i, k in enumerate(g.keys):
            sigs.append(m[2 + 64 * i : 66 + 64 * i])
            keys.append(k)
            digests.append(d)
        if len(sigs) >= n:
            break
    return tuple(
        np.frombuffer(b"".join(c), dtype=np.uint8).reshape(len(c), -1)
        for c in (sigs, keys, digests)
    )


def test_calibration_single_core_verify(
    benchmark: Any, topology_messages: list[bytes], results: dict[str, Any]
) -> None:
    """Single-core libsecp256k1 verify rate (the library both engines use),
    keys pre-parsed: the bare cost of one verification on one core."""
    benchmark.group = "calibration"
    s, k, d = _calibration_columns(topology_messages, 20_000)
    seconds, ok = benchmark.pedantic(_time_bare_verify, (s, k, d, 1), rounds=1, iterations=1)
    assert ok == len(s)
    results["single_core_verify_per_s"] = len(s) / seconds
    results["cores"] = CORES
    # the same loop on every core: what this machine's cores really give together now
    seconds, ok = _time_bare_verify(s, k, d, CORES)
    assert ok == len(s)
    results["all_cores_verify_per_s"] = len(s) / seconds


def _ingest(engine: str, stream: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    report = run(make_pipeline(engine), stream, engine=engine)
    wall = time.perf_counter() - t0
    assert report.signatures_verified == SIGNATURES
    assert sum(v["accepted"] for v in report.decisions.values()) == 169_748
    return {"seconds": wall, "messages": report.messages}


def _calibrate(msgs: list[bytes], results: dict[str, Any], tag: str) -> None:
    """Bare verify rate on one core and on all cores, right now."""
    s, k, d = _calibration_columns(msgs, 10_000)
    for threads, key in ((1, "single_core"), (CORES, "all_cores")):
        seconds, ok = _time_bare_verify(s, k, d, threads)
        assert ok == len(s)
        results.setdefault(f"{key}_verify_per_s_{tag}", []).append(len(s) / seconds)


def _min_seconds(benchmark: Any) -> float:
    return float(benchmark.stats.stats.min)


@pytest.mark.parametrize("engine", ENGINES)
def test_b1_unique(
    benchmark: Any, engine: str, topology_messages: list[bytes], results: dict[str, Any]
) -> None:
    """B1: the whole file once, from one peer (best of 2; for the Rust engine
    the calibration runs again right before, under the same conditions)."""
    benchmark.group = "B1 unique"
    if engine == "rust":
        _calibrate(topology_messages, results, "b1")
    stream = [(0, m) for m in topology_messages]
    benchmark.pedantic(_ingest, (engine, stream), rounds=2, iterations=1)
    results[f"b1_{engine}_s"] = _min_seconds(benchmark)


@pytest.mark.parametrize("engine", ENGINES)
def test_b2_initial_sync_8_peers(
    benchmark: Any, engine: str, topology_messages: list[bytes], results: dict[str, Any]
) -> None:
    """B2: the file from 8 interleaved peers (each message 8 times; best of 2)."""
    benchmark.group = "B2 8 peers"
    stream = list(replay_as_peers(topology_messages, 8))
    assert len(stream) == 8 * len(topology_messages)
    benchmark.pedantic(_ingest, (engine, stream), rounds=2, iterations=1)
    results[f"b2_{engine}_s"] = _min_seconds(benchmark)


@pytest.mark.parametrize(
    ("engine", "peers"), [("rust", 1), ("rust", 4), ("rust", 8), ("baseline", 8)]
)
def test_b3_peak_rss(engine: str, peers: int, results: dict[str, Any]) -> None:
    """B3: peak RSS of a fresh process streaming the file from ``peers`` peers."""
    out = subprocess.run(
        [sys.executable, "-m", "benches.rss_probe", engine, str(peers), str(TOPOLOGY)],
        check=True,
        capture_output=True,
        text=True,
    )
    rss = json.loads(out.stdout)["peak_rss_bytes"]
    results[f"b3_{engine}_{peers}_rss_mib"] = rss / 2**20


def test_zz_report(results: dict[str, Any]) -> None:
    """Print the measured table with the targets of the core issue."""
    need = ["single_core_verify_per_s", "b1_rust_s", "b1_baseline_s", "b2_rust_s", "b2_baseline_s"]
    if any(k not in results for k in need):
        pytest.skip("run the whole file to get the report")
    r = results
    # the calibration taken right before B1 (best of its runs), else the first one
    single = max(r.get("single_core_verify_per_s_b1", [r["single_core_verify_per_s"]]))
    all_cores = max(r.get("all_cores_verify_per_s_b1", [r["all_cores_verify_per_s"]]))
    r["single_core_verify_per_s"], r["all_cores_verify_per_s"] = single, all_cores
    floor_rate = r["cores"] * single
    b1_rate = SIGNATURES / r["b1_rust_s"]
    rows = [
        ("single-core verify (calibration)", f"{r['single_core_verify_per_s']:,.0f} sig/s", ""),
        (
            f"{r['cores']}-core verify (calibration)",
            f"{r['all_cores_verify_per_s']:,.0f} sig/s",
            f"{r['all_cores_verify_per_s'] / floor_rate:.3f} x (cores x single-core)",
        ),
        (
            "B1 rust",
            f"{r['b1_rust_s']:.2f} s, {b1_rate:,.0f} sig/s",
            f"{b1_rate / floor_rate:.3f} x (cores x single-core), target >= 0.85; "
            f"{b1_rate / r['all_cores_verify_per_s']:.3f} x measured all-core rate",
        ),
        (
            "B1 baseline",
            f"{r['b1_baseline_s']:.2f} s",
            f"rust speed-up {r['b1_baseline_s'] / r['b1_rust_s']:.2f} x; target >= 2",
        ),
        (
            "B2 rust (8 peers)",
            f"{r['b2_rust_s']:.2f} s",
            f"{r['b2_rust_s'] / r['b1_rust_s']:.3f} x B1; target <= 1.15",
        ),
        (
            "B2 baseline (8 peers)",
            f"{r['b2_baseline_s']:.2f} s",
            f"rust speed-up {r['b2_baseline_s'] / r['b2_rust_s']:.2f} x; target >= 3",
        ),
    ]
    for key in sorted(k for k in r if k.startswith("b3_")):
        _, engine, peers, _, _ = key.split("_")
        rows.append(
            (f"B3 peak RSS {engine}, {peers} peers", f"{r[key]:.0f} MiB", "target < 300 MiB")
        )
    r["table"] = rows
    print("\n\n| measure | figure | against target |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
