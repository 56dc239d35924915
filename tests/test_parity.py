"""Parity: the Rust engine and the pure-Python baseline decide every message
the same way, on every real file and on the topology dataset (in file
order, shuffled, and from several peers)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from lngossip.ingest import replay_as_peers
from tests.conftest import (
    CLN_STORE,
    LNRESEARCH,
    REAL,
    decide_all,
    needs_data,
    read_all,
    single_peer,
    topology,
)

pytestmark = needs_data

REAL_FILES = [*LNRESEARCH, CLN_STORE, REAL / "cln" / "cln_gossip_store-part1"]


@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: Path(p).name)
def test_real_file_parity(path: Path) -> None:
    msgs = read_all(path)
    assert msgs
    rust, rc, racc = decide_all("rust", single_peer(msgs))
    base, bc, bacc = decide_all("baseline", single_peer(msgs))
    assert rust == base
    assert rc["decisions"] == bc["decisions"]
    assert rc["signatures_verified"] == bc["signatures_verified"]
    assert racc == bacc


def test_gossip_store_fragment_parity() -> None:
    """cln_gossip_store-part2 has no version byte: read as a fragment."""
    from lngossip import readers

    part2 = REAL / "cln" / "cln_gossip_store-part2"
    msgs = list(readers.iter_messages(part2, fmt="gossip_store_fragment"))
    assert msgs
    rust, _, _ = decide_all("rust", single_peer(msgs))
    base, _, _ = decide_all("baseline", single_peer(msgs))
    assert rust == base


def test_all_real_files_together_parity() -> None:
    msgs = read_all(*LNRESEARCH, CLN_STORE)
    rust, rc, _ = decide_all("rust", single_peer(msgs), orphan_capacity=1000)
    base, bc, _ = decide_all("baseline", single_peer(msgs), orphan_capacity=1000)
    assert rust == base
    assert rc["orphans_evicted"] == bc["orphans_evicted"] > 0


@pytest.mark.parametrize("order", ["file", "shuffled"])
def test_topology_20000_parity(order: str) -> None:
    msgs = list(topology(20_000))
    if order == "shuffled":
        random.Random(20260203).shuffle(msgs)
    rust, rc, racc = decide_all("rust", single_peer(msgs))
    base, bc, bacc = decide_all("baseline", single_peer(msgs))
    assert rust == base
    assert rc["decisions"] == bc["decisions"]
    assert rc["signatures_verified"] == bc["signatures_verified"]
    assert sorted(racc) == sorted(bacc)
    if order == "file":
        assert set(rust) == {"accepted"}
    else:
        # shuffled: updates before their announcement wait as orphans and are released
        assert rc["orphans_released"] > 0


def test_topology_multi_peer_parity_small_queue() -> None:
    """Four peers and a queue small enough that backpressure kicks in."""
    msgs = topology(5_000)
    stream = list(replay_as_peers(msgs, 4, lag=300))
    kw = {"max_queue_bytes": 200_000, "max_queue_messages": 800}
    rust, rc, _ = decide_all("rust", stream, batch=256, **kw)
    base, bc, _ = decide_all("baseline", stream, batch=256, **kw)
    assert rust == base
    assert rc["queue_full"] == bc["queue_full"] > 0
    assert rc["queue_high_water_bytes"] <= 200_000
