"""Real mainnet gossip (SOURCES.md): every checkable signature is valid,
115 channel announcements are accepted, updates of announced channels are
accepted or stale (or duplicates, or orphans evicted before their channel
came), the rest are orphaned; framing damage is resynchronised and reported."""

from __future__ import annotations

from collections import Counter

import pytest

from lngossip import readers
from lngossip.wire import parse_message
from tests.conftest import CLN_STORE, LNRESEARCH, decide_all, needs_data, read_all, single_peer

pytestmark = needs_data


@pytest.mark.parametrize("engine", ["rust", "baseline"])
def test_real_gossip_decisions(engine: str) -> None:
    msgs = read_all(*LNRESEARCH, CLN_STORE)
    decisions, c, accepted = decide_all(engine, single_peer(msgs))
    d = c["decisions"]
    assert sum(v["invalid_signature"] for v in d.values()) == 0
    assert sum(v["malformed"] for v in d.values()) == 0
    assert d["channel_announcement"]["accepted"] == 115
    assert d["node_announcement"]["accepted"] > 0

    announced = {
        parse_message(m).short_channel_id for m in msgs if int.from_bytes(m[:2], "big") == 256
    }
    known: Counter[str] = Counter()
    unknown: Counter[str] = Counter()
    for m, dec in zip(msgs, decisions, strict=True):
        if int.from_bytes(m[:2], "big") != 258:
            continue
        (known if parse_message(m).short_channel_id in announced else unknown)[dec] += 1
    # 77 update records have their announcement in the data (SOURCES.md)
    assert sum(known.values()) == 77
    assert set(known) <= {"accepted", "stale", "duplicate", "orphaned"}
    assert known["accepted"] > 0
    # an update of an announced channel ends orphaned only if it was evicted
    assert known["orphaned"] <= c["orphans_evicted"]
    assert set(unknown) <= {"orphaned", "duplicate"}
    assert unknown["orphaned"] > 20_000
    # every accepted message cost its signatures; nothing was verified twice
    n_accepted = 4 * 115 + d["node_announcement"]["accepted"] + known["accepted"]
    assert (
        n_accepted <= c["signatures_verified"] <= n_accepted + 2 * sum(known.values()) + len(msgs)
    )
    assert len(accepted) == sum(v["accepted"] for v in d.values())


def test_damaged_files_are_resynchronised_and_reported() -> None:
    total_resyncs = total_skipped = 0
    for p in LNRESEARCH:
        rep = readers.ReadReport(path=str(p))
        n = sum(1 for _ in readers.iter_messages(p, rep))
        assert n > 0
        total_resyncs += rep.resyncs
        total_skipped += rep.skipped_bytes
    assert total_resyncs > 0
    assert 0 < total_skipped < 10_000
