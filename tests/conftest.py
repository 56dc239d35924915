"""Shared fixtures: where the shared data lives, a helper that runs an
engine over messages and returns every message's final decision, the
topology store and a small synthetic graph. Helpers that are not fixtures
(keys, nodes, ``serve`` as a process, hand-written peers) are in
:mod:`tests.helpers`."""

from __future__ import annotations

import functools
import itertools
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from lngossip import Pipeline, gen, readers
from lngossip.engine import make_pipeline
from lngossip.ingest import run

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL = DATA / "real"
TOPOLOGY = DATA / "topology" / "mainnet-2026-02-topology.gsp.xz"
LNRESEARCH = sorted((REAL / "lnresearch").glob("*.gsp"))
CLN_STORE = REAL / "cln" / "cln_gossip_store-part1+2"
ENGINES = ("rust", "baseline")

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data not present")


def read_all(*paths: Path) -> list[bytes]:
    """Every message of ``paths`` in order (any supported format)."""
    out: list[bytes] = []
    for p in paths:
        out.extend(readers.iter_messages(p, readers.ReadReport(path=str(p))))
    return out


_topology_cache: dict[int, list[bytes]] = {}


def topology(n: int) -> list[bytes]:
    """The first ``n`` messages of the topology dataset (cached per session)."""
    if n not in _topology_cache:
        it = readers.iter_messages(TOPOLOGY, readers.ReadReport(path=str(TOPOLOGY)))
        _topology_cache[n] = list(itertools.islice(it, n))
    return _topology_cache[n]


def decide_all(
    engine: str,
    stream: Iterable[tuple[int, bytes]],
    batch: int = 1024,
    **kwargs: Any,
) -> tuple[list[str], dict[str, Any], list[bytes]]:
    """Run ``engine`` over ``stream``; returns (decision per message in
    submission order, counters, accepted messages)."""
    p = make_pipeline(engine, **kwargs)
    decisions: dict[int, str] = {}
    accepted: list[bytes] = []

    def on_decision(seq: int, d: str) -> None:
        assert seq not in decisions, f"message {seq} decided twice"
        decisions[seq] = d

    run(p, stream, engine=engine, batch=batch, on_decision=on_decision, on_accepted=accepted.extend)
    # a message handed back as queue_full is resubmitted under a new seq;
    # sorting keeps submission order
    ordered = [decisions[k] for k in sorted(decisions)]
    return ordered, p.counters(), accepted


def single_peer(msgs: Iterable[bytes]) -> list[tuple[int, bytes]]:
    return [(0, m) for m in msgs]


# pyln-proto and pyln-client live in a venv of their own (`make pyln`): they
# ship a fork of coincurve under the same import name.
PYLN_PYTHON_DEFAULT = Path(__file__).resolve().parents[1] / ".venv-pyln" / "bin" / "python"


@functools.cache
def _pyln_interpreter(probe: str) -> tuple[str | None, str]:
    python = os.environ.get("LNGOSSIP_PYLN_PYTHON", str(PYLN_PYTHON_DEFAULT))
    if not Path(python).exists():
        return None, f"no pyln interpreter at {python} (set it up with: make pyln)"
    r = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        return None, f"{python} cannot run {probe!r}: {r.stderr.strip()[-300:]}"
    return python, ""


def pyln_interpreter(probe: str) -> str:
    """The interpreter of ``make pyln`` (or ``$LNGOSSIP_PYLN_PYTHON``) if it
    can run ``probe`` (an import); otherwise the test skips, or fails when
    ``LNGOSSIP_REQUIRE_PYLN=1``."""
    python, why = _pyln_interpreter(probe)
    if python is None:
        if os.environ.get("LNGOSSIP_REQUIRE_PYLN") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return python


def build_topology_store(path: Path) -> Path:
    """The whole topology dataset in a store at ``path``; skips without the data."""
    if not TOPOLOGY.exists():
        pytest.skip("../shared/data/topology is missing")
    p = Pipeline(store=path)
    run(p, ((0, m) for m in readers.iter_messages(TOPOLOGY)))
    p.sync_store()
    return path


@pytest.fixture(scope="session")
def topology_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole topology dataset in a store, verified once for the session.
    Tests that may write to it (a ``serve`` of it) must not change what it
    holds; tests that need it exactly copy it."""
    return build_topology_store(tmp_path_factory.mktemp("topology") / "topology.store")


@pytest.fixture(scope="session")
def small_graph() -> gen.SyntheticGraph:
    """A synthetic graph of 400 channels and 120 nodes (read only)."""
    return gen.synthetic_graph(400, 120, seed=7)


@pytest.fixture(scope="session")
def graph_file(tmp_path_factory: pytest.TempPathFactory, small_graph: gen.SyntheticGraph) -> Path:
    """:func:`small_graph` in a GSP file (read only)."""
    path = tmp_path_factory.mktemp("graph") / "graph.gsp"
    with readers.GspWriter(path) as w:
        w.write_all(small_graph.messages())
    return path
