"""Pipeline behaviour: dedup before verify (proven by the signature
counter), backpressure, live policy, orphans, configuration errors."""

from __future__ import annotations

import time

import numpy as np
import pytest

from lngossip import ConfigError, Decision, Pipeline, baseline, gen, verify_batch
from lngossip._core import LIMITS
from lngossip.engine import make_pipeline
from lngossip.ingest import replay_as_peers
from lngossip.wire import parse_message
from tests.conftest import decide_all, needs_data, topology

ENGINES = ["rust", "baseline"]
ENGINE_CLASSES = {"rust": Pipeline, "baseline": baseline.Pipeline}


def _signatures(msgs: list[bytes]) -> int:
    return sum(4 if m[:2] == b"\x01\x00" else 1 for m in msgs)


@needs_data
@pytest.mark.parametrize("engine", ENGINES)
def test_dedup_before_verify_eight_peers(engine: str) -> None:
    msgs = topology(20_000 if engine == "rust" else 6_000)
    stream = list(replay_as_peers(msgs, 8, lag=500))
    assert len(stream) == 8 * len(msgs)
    decisions, c, accepted = decide_all(engine, stream)
    # every signature verified exactly once, whatever peer sent it first
    assert c["signatures_verified"] == _signatures(msgs)
    assert decisions.count("accepted") == len(msgs) == len(accepted)
    assert decisions.count("duplicate") == 7 * len(msgs)


@needs_data
@pytest.mark.parametrize("engine", ENGINES)
def test_flooding_peer_gets_queue_full_second_peer_gets_in(engine: str) -> None:
    anns = [m for m in topology(3_000) if m[:2] == b"\x01\x00"]
    cap = 100_000
    p = ENGINE_CLASSES[engine](max_queue_bytes=cap, per_peer_bytes=cap // 4)
    flooder = [p.submit(1, m) for m in anns[:200]]
    assert flooder[-1].decision == Decision.QUEUE_FULL
    assert {a.decision for a in flooder} == {"queued", "queue_full"}
    assert p.peer_queue_bytes(1) <= cap // 4
    honest = [p.submit(2, m).decision for m in anns[300:340]]
    assert honest == ["queued"] * 40
    # the flooder's message was handed back, not remembered: resubmitting it
    # after a process() gets it in
    while p.queued:
        p.process(256)
        assert p.queue_bytes <= cap
    again = p.submit(1, anns[199])
    assert again.decision == Decision.QUEUED
    assert p.counters()["queue_high_water_bytes"] <= cap


@needs_data
@pytest.mark.parametrize("engine", ENGINES)
def test_a_message_larger_than_the_caps_gets_in_once_the_queue_is_empty(engine: str) -> None:
    """Caps smaller than a message would refuse it forever, and the node
    reading that peer would wait forever: an empty queue admits anything,
    so the caps are exceeded by one message at most."""
    anns = [m for m in topology(3_000) if m[:2] == b"\x01\x00"][:3]
    p = ENGINE_CLASSES[engine](max_queue_bytes=100, per_peer_bytes=50)
    assert p.submit(1, anns[0]).decision == Decision.QUEUED
    assert p.submit(1, anns[1]).decision == Decision.QUEUE_FULL
    assert p.submit(2, anns[2]).decision == Decision.QUEUE_FULL
    p.process()
    assert p.submit(2, anns[2]).decision == Decision.QUEUED
    assert p.counters()["queue_high_water_bytes"] == max(len(anns[0]), len(anns[2]))


@needs_data
@pytest.mark.parametrize("engine", ENGINES)
def test_queue_bytes_never_exceed_cap_under_many_peers(engine: str) -> None:
    msgs = topology(4_000)
    cap = 150_000
    p = ENGINE_CLASSES[engine](max_queue_bytes=cap)
    for i, (peer, m) in enumerate(replay_as_peers(msgs, 6, lag=100)):
        p.submit(peer, m)
        assert p.queue_bytes <= cap
        if i % 700 == 0:
            p.process(300)
    assert p.counters()["queue_high_water_bytes"] <= cap


@needs_data
@pytest.mark.parametrize("engine", ENGINES)
def test_live_policy_window_and_unknown_node(engine: str) -> None:
    msgs = topology(20_000)
    ca = next(m for m in msgs if m[:2] == b"\x01\x00")
    cu = next(
        m
        for m in msgs
        if m[:2] == b"\x01\x02"
        and parse_message(m).short_channel_id == parse_message(ca).short_channel_id
    )
    ts = parse_message(cu).timestamp
    assert ts is not None
    na_keys = set(parse_message(ca).keys[:2])
    stranger = next(
        m for m in msgs if m[:2] == b"\x01\x01" and parse_message(m).keys[0] not in na_keys
    )
    cls = ENGINE_CLASSES[engine]
    p = cls(policy="live", now=ts + 15 * 86400)
    assert p.submit(0, cu).decision == "too_old"
    p = cls(policy="live", now=ts - 2 * 86400)
    assert p.submit(0, cu).decision == "too_new"
    p = cls(policy="live", now=ts)
    assert p.submit(0, ca).decision == "queued"
    assert p.submit(0, stranger).decision == "queued"
    out = {o[3] for o in p.process().outcomes}
    assert out == {"accepted", "unknown_node"}
    p = cls(policy="archive", now=ts + 400 * 86400)
    assert p.submit(0, cu).decision == "orphaned"
    assert p.submit(0, ca).decision == "queued"
    res = p.process()
    assert [o[3] for o in res.outcomes] == ["accepted", "accepted"]
    assert res.accepted == [ca, cu]
    assert p.counters()["decisions"]["channel_update"]["orphaned"] == 0


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("fixed_now", [True, False])
def test_far_future_timestamps_are_too_new_under_the_archive_policy(
    engine: str, fixed_now: bool
) -> None:
    """A correctly signed ``channel_update`` stamped +10 years, 0xFFFFFFFF or
    a second past the 24 h window is ``too_new`` under the archive policy
    too (with an injected and with the real clock), so it cannot make the
    owner's real updates ``stale``; a timestamp exactly 24 h ahead is still
    accepted."""
    g = gen.synthetic_graph(1, 2, seed=3)
    ann, real = g.channel_announcements[0], g.channel_updates[0]
    scid, ts = parse_message(real).short_channel_id, parse_message(real).timestamp
    assert scid is not None and ts is not None
    signer = gen.update_signer_for(0, gen.private_key("node", 0), gen.private_key("node", 1))
    now = ts + 3600 if fixed_now else int(time.time())
    p = ENGINE_CLASSES[engine](policy="archive", now=now if fixed_now else None)
    assert p.submit(0, ann).decision == "queued"
    assert [o.decision for o in p.process().outcomes] == ["accepted"]
    for future in (now + 10 * 365 * 86400, 0xFFFFFFFF, now + 86400 + 60):
        forged = gen.channel_update(scid, signer, direction=0, timestamp=future)
        assert p.submit(1, forged).decision == "too_new", future
    node = gen.node_announcement(gen.private_key("node", 0), timestamp=0xFFFFFFFF)
    assert p.submit(1, node).decision == "too_new"
    assert p.counters()["decisions"]["channel_update"]["too_new"] == 3
    # the owner's real update is not frozen out
    assert p.submit(0, real).decision == "queued"
    assert [o.decision for o in p.process().outcomes] == ["accepted"]
    if fixed_now:
        edge = gen.channel_update(scid, signer, direction=0, timestamp=now + 86400)
        assert p.submit(0, edge).decision == "queued"
        assert [o.decision for o in p.process().outcomes] == ["accepted"]


@pytest.mark.parametrize("engine", ENGINES)
def test_config_errors(engine: str) -> None:
    cls = ENGINE_CLASSES[engine]
    with pytest.raises(ConfigError, match="32 bytes"):
        cls(chain_hash=b"\x00" * 31)
    with pytest.raises(ConfigError, match="policy"):
        cls(policy="realtime")
    with pytest.raises(ValueError):
        cls(max_queue_bytes=0)


#: Every numeric argument of the constructor and the bound it is checked
#: against (``lngossip._core.LIMITS``, from ``rust/core/src/limits.rs``).
CONSTRUCTOR_BOUNDS = [
    ("now", "now"),
    ("max_queue_bytes", "queue_bytes"),
    ("max_queue_messages", "queue_messages"),
    ("per_peer_bytes", "queue_bytes"),
    ("per_peer_messages", "queue_messages"),
    ("orphan_capacity", "orphan_capacity"),
    ("orphan_max_bytes", "orphan_bytes"),
    ("seen_capacity", "seen_capacity"),
    ("pubkey_cache_capacity", "pubkey_cache_capacity"),
    ("threads", "threads"),
    ("store_sync_interval_ms", "store_sync_interval_ms"),
]


def _out_of_range(argument: str, bound: str) -> pytest.RaisesExc[ConfigError]:
    lo, hi = LIMITS[bound]
    return pytest.raises(ConfigError, match=f"^{argument} must be between {lo} and {hi}, got ")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("argument", "bound"), CONSTRUCTOR_BOUNDS)
def test_constructor_arguments_are_checked(engine: str, argument: str, bound: str) -> None:
    """``Pipeline(threads=100000)`` created threads until the process was
    killed: every numeric argument is checked against its bound, in both
    engines, with a message naming the argument and the range."""
    cls = ENGINE_CLASSES[engine]
    lo, hi = LIMITS[bound]
    for bad in (lo - 1, -(2**70), hi + 1, 2**200):
        with _out_of_range(argument, bound):
            cls(**{argument: bad})
    cls(**{argument: lo})


def test_limits_are_the_cli_bounds() -> None:
    """One home per bound: the CLI's ``--threads`` range is the core's."""
    from lngossip import cli

    assert LIMITS["threads"] == (1, 1024) == (cli.MIN_THREADS, cli.MAX_THREADS)
    assert LIMITS["batch"][0] == 1 and LIMITS["page"][0] == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_method_arguments_are_checked(engine: str) -> None:
    """``process(max_messages)``, ``set_now``, ``prune(now)`` and the graph
    queries' ``limit`` / ``max_messages`` are checked too (``process(0)``
    would make a ``while queued: process(0)`` loop spin for ever)."""
    p = ENGINE_CLASSES[engine]()
    batch_hi, page_hi, now_hi = LIMITS["batch"][1], LIMITS["page"][1], LIMITS["now"][1]
    for bad in (0, -1, batch_hi + 1):
        with _out_of_range("max_messages", "batch"):
            p.process(bad)
    for bad_now in (-1, now_hi + 1):
        with _out_of_range("now", "now"):
            p.set_now(bad_now)
        with _out_of_range("now", "now"):
            p.prune(bad_now)
    g = p.graph
    for bad in (0, -5, page_hi + 1):
        with _out_of_range("limit", "page"):
            g.short_channel_ids(limit=bad)
        with _out_of_range("limit", "page"):
            g.node_ids(limit=bad)
        with _out_of_range("limit", "page"):
            g.short_channel_ids_in_blocks(0, 10, limit=bad)
        with _out_of_range("max_messages", "page"):
            g.gossip_after(b"", max_messages=bad)
    assert p.process(1).outcomes == []
    assert g.short_channel_ids(limit=page_hi) == []


def test_verify_batch_threads_are_checked() -> None:
    empty = [np.zeros((0, n), dtype=np.uint8) for n in (64, 33, 32)]
    for bad in (0, -1, 1025, 100_000):
        with _out_of_range("threads", "threads"):
            verify_batch(*empty, threads=bad)
    assert verify_batch(*empty, threads=1).shape == (0,)


def test_threads_and_repr() -> None:
    p = Pipeline(threads=1)
    assert p.threads == 1
    a = p.submit(3, b"\x01")
    assert (a.seq, a.decision, a.reason) == (0, "malformed", "too_short")
    assert "too_short" in repr(a)
    assert repr(p.process()) == "ProcessResult(outcomes=0, accepted=0, signatures_verified=0)"


@needs_data
@pytest.mark.parametrize("engine", ENGINES)
def test_updates_queue_behind_pending_announcements(engine: str) -> None:
    """A long queue of unverified announcements does not flush the orphan
    cache: their updates wait in the queue behind them, not as orphans."""
    msgs = topology(6_000)
    decisions, c, _ = decide_all(engine, [(0, m) for m in msgs], batch=5_000, orphan_capacity=10)
    assert set(decisions) == {"accepted"}
    assert c["orphans_evicted"] == 0


def _first_channel(msgs: list[bytes]) -> tuple[bytes, bytes, bytes]:
    """A channel_announcement, one of its updates and one of its nodes' announcements."""
    ca = next(m for m in msgs if m[:2] == b"\x01\x00")
    g = parse_message(ca)
    cu = next(
        m
        for m in msgs
        if m[:2] == b"\x01\x02" and parse_message(m).short_channel_id == g.short_channel_id
    )
    na = next(m for m in msgs if m[:2] == b"\x01\x01" and parse_message(m).keys[0] in g.keys[:2])
    return ca, cu, na


@needs_data
@pytest.mark.parametrize("engine", ENGINES)
def test_not_final_decisions_let_a_later_copy_in(engine: str) -> None:
    """An evicted orphan, or a live-policy node announcement that came before
    its channel, is not final for its bytes: the same bytes sent again once the
    channel is known are accepted, not called duplicates."""
    msgs = topology(20_000)
    ca, cu, na = _first_channel(msgs)
    ts = parse_message(cu).timestamp
    cls = ENGINE_CLASSES[engine]
    # live policy: the node announcement before its channel
    p = cls(policy="live", now=ts)
    assert p.submit(0, na).decision == "queued"
    assert [o[3] for o in p.process().outcomes] == ["unknown_node"]
    assert p.submit(0, ca).decision == "queued"
    p.process()
    assert p.submit(1, na).decision == "queued"
    assert [o[3] for o in p.process().outcomes] == ["accepted"]
    # archive policy, an orphan cache of one: the update is evicted by another
    other = next(
        m
        for m in msgs
        if m[:2] == b"\x01\x02"
        and parse_message(m).short_channel_id != parse_message(cu).short_channel_id
    )
    p = cls(orphan_capacity=1)
    assert p.submit(0, cu).decision == "orphaned"
    assert p.submit(0, other).decision == "orphaned"
    assert p.counters()["orphans_evicted"] == 1
    assert p.submit(0, ca).decision == "queued"
    assert [o[3] for o in p.process().outcomes] == ["accepted"]  # nothing left to release
    assert p.submit(1, cu).decision == "queued"
    assert [o[3] for o in p.process().outcomes] == ["accepted"]


@pytest.mark.parametrize("engine", ["rust", "baseline"])
def test_live_spam_limit_per_channel_direction(engine: str) -> None:
    """Live policy: a burst of 10 updates per channel direction, then one a
    minute (lnd's limit); the rest are ``rate_limited``, not stored. Forged
    updates spend no token. Both engines decide alike."""
    from lngossip import gen
    from lngossip.graph import Graph

    now = 1_767_225_600 + 3600
    g = gen.synthetic_graph(1, 2, seed=3)
    p = make_pipeline(engine, policy="live", now=now)
    for m in g.channel_announcements:
        p.submit(0, m)
    p.process()
    ch = next(iter(Graph(p)))
    signer = gen.update_signer_for(0, gen.private_key("node", 0), gen.private_key("node", 1))
    other = gen.update_signer_for(1, gen.private_key("node", 0), gen.private_key("node", 1))
    decisions = []
    for i in range(5):  # forgeries: signed by the other end
        p.submit(
            1, gen.channel_update(ch.short_channel_id, other, direction=0, timestamp=now - 99 + i)
        )
        decisions += [o.decision for o in p.process().outcomes]
    assert decisions == ["invalid_signature"] * 5
    decided = []
    for i in range(12):
        a = p.submit(
            0, gen.channel_update(ch.short_channel_id, signer, direction=0, timestamp=now - 50 + i)
        )
        decided.append(a.decision)
        decided += [o.decision for o in p.process().outcomes]
    assert decided.count("accepted") == 10
    assert decided.count("rate_limited") == 2
    assert p.counters()["decisions"]["channel_update"]["rate_limited"] == 2
    p.set_now(now + 60)
    p.submit(0, gen.channel_update(ch.short_channel_id, signer, direction=0, timestamp=now + 1))
    assert [o.decision for o in p.process().outcomes] == ["accepted"]
