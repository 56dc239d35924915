"""Benchmark fixtures: the topology dataset loaded once, and a results table
printed (and saved as JSON) at the end of the session."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lngossip import Pipeline, readers
from lngossip.ingest import run

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TOPOLOGY = DATA / "topology" / "mainnet-2026-02-topology.gsp.xz"
RESULTS: dict[str, Any] = {}


@pytest.fixture(scope="session")
def topology_messages() -> list[bytes]:
    if not TOPOLOGY.exists():
        pytest.skip("../shared/data/topology is missing")
    return list(readers.iter_messages(TOPOLOGY))


@pytest.fixture(scope="session")
def topology_store(
    topology_messages: list[bytes], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The topology dataset in a store, verified once for the session (the
    benchmarks that serve it copy it or only read it)."""
    path = tmp_path_factory.mktemp("bench-store") / "topology.store"
    p = Pipeline(store=path)
    run(p, [(0, m) for m in topology_messages])
    p.sync_store()
    del p  # closes the store (one process, one writer)
    return path


@pytest.fixture(scope="session")
def results() -> Iterator[dict[str, Any]]:
    yield RESULTS
    out = Path(__file__).resolve().parents[1] / ".benchmarks" / "lngossip-latest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(RESULTS, indent=2))
