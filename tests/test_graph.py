"""The gossip graph each engine owns: the BOLT #7 queries give identical
answers in both engines (before and after pruning), a full dump is in BOLT #7
order, the decoded view matches the wire bytes, a batch becomes visible
whole, real archives give the same graph in any order, Core Lightning's own
reader (pyln-client's ``Gossmap``) reads our store as we do, and we open
Core Lightning's store."""

from __future__ import annotations

import base64
import functools
import json
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lngossip import Pipeline, gen
from lngossip.engine import PipelineLike, make_pipeline
from lngossip.graph import Address, Graph, GraphReader, dump
from lngossip.ingest import run
from tests.conftest import (
    CLN_STORE,
    ENGINES,
    LNRESEARCH,
    REAL,
    decide_all,
    needs_data,
    pyln_interpreter,
    read_all,
    single_peer,
)

TWO_WEEKS = 14 * 24 * 3600
ALL_BLOCKS = 0xFFFFFFFF
CA, NA, CU = 256, 257, 258

# -- an independent decoder: BOLT #7 offsets, struct only ------------------------------


def _type(m: bytes) -> int:
    return int(struct.unpack_from(">H", m)[0])


@dataclass(frozen=True)
class Ann:
    """What the tests need of a channel_announcement."""

    scid: int
    node_id_1: bytes
    node_id_2: bytes


def _ann(m: bytes) -> Ann:
    """``len`` at 258, then features, chain_hash [32], scid [8], node_id_1, node_id_2 [33]."""
    (flen,) = struct.unpack_from(">H", m, 258)
    p = 260 + flen + 32
    (scid,) = struct.unpack_from(">Q", m, p)
    return Ann(scid, m[p + 8 : p + 41], m[p + 41 : p + 74])


@dataclass(frozen=True)
class Upd:
    """The fields of a channel_update, decoded at the BOLT #7 offsets."""

    scid: int
    timestamp: int
    direction: int
    disabled: bool
    cltv_expiry_delta: int
    htlc_minimum_msat: int
    fee_base_msat: int
    fee_proportional_millionths: int
    htlc_maximum_msat: int | None


def _upd(m: bytes) -> Upd:
    """signature [64] at 2, chain_hash [32] at 66, scid at 98, timestamp at 106,
    message_flags 110, channel_flags 111, cltv 112, htlc_min 114, fee_base 122,
    fee_prop 126, htlc_max 130 (if message_flags bit 0)."""
    (scid,) = struct.unpack_from(">Q", m, 98)
    ts, mflags, cflags, cltv, hmin, fbase, fprop = struct.unpack_from(">IBBHQII", m, 106)
    hmax = struct.unpack_from(">Q", m, 130)[0] if mflags & 1 else None
    return Upd(scid, ts, cflags & 1, bool(cflags & 2), cltv, hmin, fbase, fprop, hmax)


@dataclass(frozen=True)
class NodeAnn:
    """The fields of a node_announcement."""

    timestamp: int
    node_id: bytes
    features: bytes
    rgb_color: bytes
    alias: bytes
    addresses: bytes


def _node_ann(m: bytes) -> NodeAnn:
    """flen at 66, features, timestamp [4], node_id [33], rgb [3], alias [32],
    addrlen [2], addresses."""
    (flen,) = struct.unpack_from(">H", m, 66)
    p = 68 + flen
    (ts,) = struct.unpack_from(">I", m, p)
    (alen,) = struct.unpack_from(">H", m, p + 72)
    return NodeAnn(
        ts, m[p + 4 : p + 37], m[68:p], m[p + 37 : p + 40], m[p + 40 : p + 72], m[p + 74 :][:alen]
    )


def _ipv4_ipv6(data: bytes) -> list[tuple[int, str, int]]:
    """The generator's addresses: type 1 (IPv4 [4]) and 2 (IPv6 [16]), each + port [2]."""
    out = []
    p = 0
    while p < len(data):
        t = data[p]
        n, family = {1: (4, socket.AF_INET), 2: (16, socket.AF_INET6)}[t]
        host = socket.inet_ntop(family, data[p + 1 : p + 1 + n])
        (port,) = struct.unpack_from(">H", data, p + 1 + n)
        out.append((t, host, port))
        p += 3 + n
    return out


def _newest(updates: Iterable[bytes]) -> dict[tuple[int, int], bytes]:
    """The newest update per (scid, direction)."""
    out: dict[tuple[int, int], bytes] = {}
    for m in updates:
        u = _upd(m)
        old = out.get((u.scid, u.direction))
        if old is None or _upd(old).timestamp < u.timestamp:
            out[(u.scid, u.direction)] = m
    return out


# -- shared synthetic graph --------------------------------------------------------------


@functools.cache
def _synthetic() -> gen.SyntheticGraph:
    """300 channels between 120 nodes (every node has a channel)."""
    return gen.synthetic_graph(300, 120, seed=7)


def _feed(engine: str, msgs: list[bytes], **kw: Any) -> PipelineLike:
    """A pipeline of ``engine`` fed ``msgs`` from one peer."""
    p = make_pipeline(engine, **kw)
    run(p, single_peer(msgs), engine=engine, batch=128)
    return p


def _pages(r: GraphReader, size: int, lo: int = 0, span: int = ALL_BLOCKS) -> list[list[bytes]]:
    """Every page of a ``gossip_after`` walk with ``max_messages=size``."""
    pages: list[list[bytes]] = []
    cursor: bytes | None = b""
    while cursor is not None:
        page, cursor = r.gossip_after(cursor, lo, span, size)
        pages.append(page)
        assert len(pages) < 10_000, "the cursor does not advance"
    return pages


def _scid_pages(r: GraphReader, size: int) -> list[list[int]]:
    out: list[list[int]] = []
    after: int | None = None
    while page := r.short_channel_ids(after, size):
        out.append(page)
        after = page[-1]
    return out


def _node_pages(r: GraphReader, size: int) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    after: bytes | None = None
    while page := r.node_ids(after, size):
        out.append(page)
        after = page[-1]
    return out


def _block_pages(r: GraphReader, first: int, number: int, size: int) -> list[list[int]]:
    out: list[list[int]] = []
    after: int | None = None
    while page := r.short_channel_ids_in_blocks(first, number, after, size):
        out.append(page)
        after = page[-1]
    return out


def _in_blocks(scids: list[int], first: int, number: int) -> list[int]:
    """``query_channel_range`` computed independently (block height is 24 bits)."""
    end = min(first + number, 1 << 24)
    return sorted(s for s in scids if first <= s >> 40 < end)


def _block_ranges(scids: list[int]) -> list[tuple[int, int]]:
    blocks = sorted({s >> 40 for s in scids})
    first, mid, last = blocks[0], blocks[len(blocks) // 2], blocks[-1]
    return [
        (0, ALL_BLOCKS),
        (first, 1),
        (first, 0),
        (0, first),
        (mid, 50),
        (mid, ALL_BLOCKS),
        (last, 1),
        (last + 1, ALL_BLOCKS),
        (1 << 24, 10),
        (ALL_BLOCKS, ALL_BLOCKS),
    ]


def _snapshot(r: GraphReader, g: gen.SyntheticGraph, lo: int) -> dict[str, Any]:
    """Every query answer the tests compare between engines."""
    scids = [_ann(a).scid for a in g.channel_announcements]
    node_ids = [_node_ann(n).node_id for n in g.node_announcements]
    unknown_scid = gen.scid(650_000, 1, 0)
    unknown_node = gen.node_id(gen.private_key("absent", 0))
    some = [*scids[::37], unknown_scid, scids[5], scids[-1]]
    return {
        "len": len(r),
        "node_count": r.node_count(),
        "newest_timestamp": r.newest_timestamp(),
        "message_bytes": r.message_bytes(),
        "dump_pages_1": _pages(r, 1),
        "dump_pages_7": _pages(r, 7),
        "dump": list(dump(r)),
        "filtered_pages_7": _pages(r, 7, lo, 3600),
        "filtered_dump": list(dump(r, lo, 3600)),
        "scid_pages": _scid_pages(r, 7),
        "node_pages": _node_pages(r, 7),
        "blocks": [r.short_channel_ids_in_blocks(f, n) for f, n in _block_ranges(scids)],
        "block_pages": [_block_pages(r, f, n, 7) for f, n in _block_ranges(scids)[:6]],
        "messages_for": r.messages_for(some),
        "messages_for_unknown": r.messages_for([unknown_scid]),
        "channels": [r.channel(s) for s in [*scids, unknown_scid]],
        "nodes": [r.node(n) for n in [*node_ids, unknown_node]],
    }


def _assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == b[k], f"engines differ on {k}"


# -- 1. parity of the queries ------------------------------------------------------------


def test_graph_queries_parity_and_prune_parity() -> None:
    """Both engines answer every graph query identically, answers match an
    independent computation, and prune(now) removes the same channels (some,
    not all) and leaves identical graphs."""
    g = _synthetic()
    msgs = g.messages()
    ups = [_upd(u) for u in g.channel_updates]
    lo_ts, hi_ts = min(u.timestamp for u in ups), max(u.timestamp for u in ups)
    mid = (lo_ts + hi_ts) // 2
    pipes = {e: _feed(e, msgs) for e in ENGINES}
    snaps = {e: _snapshot(p.graph, g, mid) for e, p in pipes.items()}
    _assert_same(snaps["rust"], snaps["baseline"])

    s = snaps["rust"]
    scids = sorted(_ann(a).scid for a in g.channel_announcements)
    assert s["len"] == 300 and s["node_count"] == 120
    assert s["newest_timestamp"] == max(
        hi_ts, *(_node_ann(n).timestamp for n in g.node_announcements)
    )
    assert s["message_bytes"] == sum(map(len, msgs))
    # pages of 1 never split a channel: announcement + its 2 updates, or one node
    assert {len(p) for p in s["dump_pages_1"][:-1]} <= {1, 3}
    assert [m for p in s["dump_pages_1"] for m in p] == s["dump"]
    assert [m for p in s["dump_pages_7"] for m in p] == s["dump"]
    assert sorted(s["dump"]) == sorted(msgs)
    # the filter keeps updates and node announcements in [mid, mid + 3600), and
    # the announcement of each channel with such an update
    hit = [u for u in g.channel_updates if mid <= _upd(u).timestamp < mid + 3600]
    hit_scids = {_upd(u).scid for u in hit}
    want = hit + [a for a in g.channel_announcements if _ann(a).scid in hit_scids]
    want += [n for n in g.node_announcements if mid <= _node_ann(n).timestamp < mid + 3600]
    assert 0 < len(hit) < len(g.channel_updates)
    assert sorted(s["filtered_dump"]) == sorted(want)
    assert [m for p in s["filtered_pages_7"] for m in p] == s["filtered_dump"]
    assert [x for p in s["scid_pages"] for x in p] == scids
    assert all(len(p) == 7 for p in s["scid_pages"][:-1])
    node_ids = sorted(_node_ann(n).node_id for n in g.node_announcements)
    assert [x for p in s["node_pages"] for x in p] == node_ids
    ranges = _block_ranges(scids)
    assert s["blocks"] == [_in_blocks(scids, f, n) for f, n in ranges]
    assert s["blocks"][0] == scids and s["blocks"][5] and not s["blocks"][7]
    assert [[x for p in pages for x in p] for pages in s["block_pages"]] == s["blocks"][:6]
    assert s["messages_for_unknown"] == []
    assert all(c is not None for c in s["channels"][:-1]) and s["channels"][-1] is None
    assert all(n is not None for n in s["nodes"][:-1]) and s["nodes"][-1] is None

    # prune with a horizon at the median channel's newest update
    newest: dict[int, int] = {}
    for u in ups:
        newest[u.scid] = max(newest.get(u.scid, 0), u.timestamp)
    horizon = sorted(newest.values())[len(newest) // 2]
    now = horizon + TWO_WEEKS
    dead = {scid for scid, ts in newest.items() if ts < horizon}  # more than 2 weeks old
    anns = [_ann(a) for a in g.channel_announcements]
    alive_nodes = {n for a in anns if a.scid not in dead for n in (a.node_id_1, a.node_id_2)}
    dead_nodes = {_node_ann(n).node_id for n in g.node_announcements} - alive_nodes
    assert 0 < len(dead) < len(newest) and dead_nodes
    results = {e: p.prune(now) for e, p in pipes.items()}
    assert results["rust"] == results["baseline"] == (len(dead), len(dead_nodes))
    after = {e: _snapshot(p.graph, g, mid) for e, p in pipes.items()}
    _assert_same(after["rust"], after["baseline"])
    a = after["rust"]
    assert a["len"] == 300 - len(dead) and a["node_count"] == 120 - len(dead_nodes)
    assert [x for p in a["scid_pages"] for x in p] == sorted(set(scids) - dead)
    assert {p.prune(now) for p in pipes.values()} == {(0, 0)}


# -- 2. BOLT #7 order of a dump ----------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_full_dump_is_in_bolt7_order(engine: str) -> None:
    """Announcements before their channel's updates, node announcements after
    a channel naming the node, every accepted message exactly once."""
    g = _synthetic()
    p = make_pipeline(engine)
    accepted: list[bytes] = []
    # four peers and a bad peer: forgeries and malformed messages are not accepted
    run(p, gen.demo_stream(g, peers=4, seed=3), engine=engine, on_accepted=accepted.extend)
    out = list(dump(p.graph))
    assert len(out) == len(set(out)) == len(accepted)
    assert set(out) == set(accepted) == set(g.messages())
    announced_at: dict[int, int] = {}
    named_at: dict[bytes, int] = {}
    for i, m in enumerate(out):
        t = _type(m)
        if t == CA:
            a = _ann(m)
            assert a.scid not in announced_at
            announced_at[a.scid] = i
            for n in (a.node_id_1, a.node_id_2):
                named_at.setdefault(n, i)
        elif t == CU:
            assert _upd(m).scid in announced_at, "update before its announcement"
        else:
            assert t == NA
            n = _node_ann(m).node_id
            assert n in named_at, "node announcement before any channel of the node"
    assert list(announced_at) == sorted(announced_at)  # channels ascending


# -- 3. the decoded view -----------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_decoded_view_matches_wire_bytes(engine: str) -> None:
    """Graph's ChannelUpdate and Node fields equal a by-hand decode of the
    generator's messages at the BOLT #7 offsets."""
    g = _synthetic()
    p = _feed(engine, g.messages())
    view = Graph(p)
    by_dir = _newest(g.channel_updates)
    assert len(by_dir) == 600
    for a_raw in g.channel_announcements:
        a = _ann(a_raw)
        c = view.channel(a.scid)
        assert c is not None and c.raw == a_raw and c.short_channel_id == a.scid
        assert (c.node_id_1, c.node_id_2) == (a.node_id_1, a.node_id_2)
        assert c.node_id_1 < c.node_id_2
        assert (
            c.short_channel_id_str
            == f"{a.scid >> 40}x{(a.scid >> 16) & 0xFFFFFF}x{a.scid & 0xFFFF}"
        )
        for d in (0, 1):
            raw = by_dir[(a.scid, d)]
            want = _upd(raw)
            got = c.updates[d]
            assert got is not None and got.raw == raw and got.direction == d
            assert (
                got.timestamp,
                got.fee_base_msat,
                got.fee_proportional_millionths,
                got.cltv_expiry_delta,
                got.htlc_minimum_msat,
                got.htlc_maximum_msat,
                got.disabled,
            ) == (
                want.timestamp,
                want.fee_base_msat,
                want.fee_proportional_millionths,
                want.cltv_expiry_delta,
                want.htlc_minimum_msat,
                want.htlc_maximum_msat,
                want.disabled,
            )
    # the offsets are right: every field is in the generator's value set (gen.py)
    decoded = [_upd(m) for m in g.channel_updates]
    assert {u.cltv_expiry_delta for u in decoded} == {34, 40, 80, 144}
    assert {u.htlc_minimum_msat for u in decoded} == {1, 1000}
    assert {u.fee_base_msat for u in decoded} == {0, 1, 1000}
    assert all(0 <= u.fee_proportional_millionths < 2500 for u in decoded)
    capacities = {500_000, 1_000_000, 2_000_000, 5_000_000, 16_777_215}
    assert {u.htlc_maximum_msat for u in decoded} <= {c * 990 for c in capacities}
    assert any(u.disabled for u in decoded) and not all(u.disabled for u in decoded)

    counts: set[int] = set()
    for i, n_raw in enumerate(g.node_announcements):
        na = _node_ann(n_raw)
        nid = gen.node_id(gen.private_key("node", i))
        assert na.node_id == nid
        node = view.node(nid)
        assert node is not None and node.raw == n_raw
        assert node.alias == f"lngossip-demo-{i:05d}" == na.alias.rstrip(b"\0").decode()
        assert node.rgb_color == nid[1:4] == na.rgb_color
        assert node.features == na.features == (b"\x02\xa2" if i % 3 == 0 else b"")
        assert node.timestamp == na.timestamp
        addrs = _ipv4_ipv6(na.addresses)
        assert [(x.type, x.host, x.port) for x in node.addresses] == addrs
        assert all(x.port == 9735 for x in node.addresses)
        if addrs:
            assert addrs[0][1] == f"203.0.113.{i % 254 + 1}"
        counts.add(len(addrs))
        assert list(node.channels) == sorted(
            a.scid for a in map(_ann, g.channel_announcements) if nid in (a.node_id_1, a.node_id_2)
        )
    assert counts == {0, 1, 2}  # the generator's three address shapes were all checked


# -- 4. a batch is visible whole ---------------------------------------------------------


def _process_while_reading(
    p: Pipeline, msgs: list[bytes], peer: int, read: Callable[[int], bool]
) -> tuple[Any, int]:
    """Submit ``msgs``, then process them in one call while another thread
    calls ``read(i)`` for i = 0, 1, ... until the call returns (or ``read``
    returns False). Returns the process result and how many reads ran while
    process() was running."""
    for m in msgs:
        assert p.submit(peer, m).decision == "queued"
    processing, stop = threading.Event(), threading.Event()
    polls_during = 0

    def reader() -> None:
        nonlocal polls_during
        i = 0
        while not stop.is_set():
            during = processing.is_set()
            if not read(i):
                return
            if during and processing.is_set():
                polls_during += 1
            i += 1

    t = threading.Thread(target=reader)
    t.start()
    try:
        time.sleep(0.02)
        processing.set()
        res = p.process(len(msgs))
        processing.clear()
    finally:
        stop.set()
        t.join()
    return res, polls_during


def test_half_applied_batch_is_never_visible() -> None:
    """While process() applies a batch in one thread, readers in another never
    see a channel without its updates from the same batch, nor a mix of old
    and new updates of a second batch."""
    g = gen.synthetic_graph(800, 250, seed=11)
    msgs = g.messages()
    big = {"max_queue_messages": 10_000, "per_peer_messages": 10_000}
    p = Pipeline(max_queue_bytes=64 << 20, per_peer_bytes=64 << 20, **big)
    scids = [_ann(a).scid for a in g.channel_announcements]
    members: dict[bytes, set[int]] = {}
    for a in g.channel_announcements:
        ann = _ann(a)
        for n in (ann.node_id_1, ann.node_id_2):
            members.setdefault(n, set()).add(ann.scid)
    node_ids = sorted(members)

    violations: list[str] = []
    view = Graph(p)

    def first_batch_read(i: int) -> bool:
        s = scids[i % len(scids)]
        raw = p.graph.channel(s)
        if raw is not None and (raw[1] is None or raw[2] is None):
            violations.append(f"{s}: announcement visible without its updates")
        c = view.channel(scids[(i * 7) % len(scids)])
        if c is not None and None in c.updates:
            violations.append(f"{c.short_channel_id}: decoded without its updates")
        n = len(p.graph)
        if n not in (0, len(scids)):
            violations.append(f"{n} channels visible")
        nid = node_ids[i % len(node_ids)]
        node = p.graph.node(nid)
        if node is not None and (node[0] is None or set(node[1]) != members[nid]):
            violations.append(f"node {nid.hex()} visible before its batch is whole")
        return True

    res, polls_during = _process_while_reading(p, msgs, 0, first_batch_read)
    assert len(res.accepted) == len(msgs)
    assert violations == []
    assert polls_during > 0, "no read happened while the batch was being processed"
    assert len(p.graph) == len(scids)

    # second batch: newer updates (fee_base_msat + 1) for both directions of every channel
    keys = {gen.node_id(k): k for k in (gen.private_key("node", i) for i in range(250))}
    newer: list[bytes] = []
    for a in g.channel_announcements:
        ann = _ann(a)
        for d, signer in ((0, ann.node_id_1), (1, ann.node_id_2)):
            old = p.graph.channel(ann.scid)
            assert old is not None
            old_update = old[1 + d]
            assert old_update is not None
            u = _upd(old_update)
            newer.append(
                gen.channel_update(
                    ann.scid,
                    keys[signer],
                    direction=d,
                    timestamp=u.timestamp + 60,
                    fee_base_msat=u.fee_base_msat + 1,
                    fee_proportional_millionths=u.fee_proportional_millionths,
                    cltv_expiry_delta=u.cltv_expiry_delta,
                    htlc_minimum_msat=u.htlc_minimum_msat,
                    htlc_maximum_msat=u.htlc_maximum_msat or 0,
                    disabled=u.disabled,
                )
            )
    new_set = set(newer)
    seen_new = False

    def second_batch_read(i: int) -> bool:
        nonlocal seen_new
        raw = p.graph.channel(scids[i % len(scids)])
        if raw is None:
            violations.append(f"{scids[i % len(scids)]}: channel vanished")
            return False
        fresh = (raw[1] in new_set, raw[2] in new_set)
        if fresh[0] != fresh[1]:
            violations.append(f"{scids[i % len(scids)]}: one direction new, one old")
        if seen_new and not fresh[0]:
            violations.append("an old update visible after a new one")
        seen_new = seen_new or fresh[0]
        return True

    res, polls_during = _process_while_reading(p, newer, 1, second_batch_read)
    assert len(res.accepted) == len(newer)
    assert violations == []
    assert polls_during > 0
    final = [p.graph.channel(s) for s in scids]
    assert all(c is not None and c[1] in new_set and c[2] in new_set for c in final)


# -- 5. archive order --------------------------------------------------------------------


@needs_data
def test_archive_order_does_not_matter() -> None:
    """lnresearch then the CLN store, or the store first: the same accepted
    messages and 77 updates of known channels (accepted + stale), both engines."""
    lnr_first = read_all(*LNRESEARCH, CLN_STORE)
    cln_first = read_all(CLN_STORE, *LNRESEARCH)
    assert sorted(lnr_first) == sorted(cln_first)
    results: dict[str, tuple[set[bytes], dict[str, dict[str, int]]]] = {}
    for name, msgs in (("lnresearch_first", lnr_first), ("cln_first", cln_first)):
        _, c, accepted = decide_all("rust", single_peer(msgs), policy="archive")
        cu = c["decisions"]["channel_update"]
        assert cu["accepted"] + cu["stale"] == 77, name
        assert c["decisions"]["channel_announcement"]["accepted"] == 115
        results[name] = (set(accepted), c["decisions"])
    assert results["lnresearch_first"][0] == results["cln_first"][0]
    assert results["lnresearch_first"][1] == results["cln_first"][1]

    # the baseline in one order (about 0.5 s: mostly orphans, few signatures)
    _, bc, b_accepted = decide_all("baseline", single_peer(lnr_first), policy="archive")
    bcu = bc["decisions"]["channel_update"]
    assert bcu["accepted"] + bcu["stale"] == 77
    assert set(b_accepted) == results["lnresearch_first"][0]


# -- 6. interop with Core Lightning's reader ----------------------------------------------

GOSSMAP_PROBE = Path(__file__).with_name("gossmap_probe.py")


@pytest.fixture
def pyln_client_python() -> str:
    """The interpreter with pyln-client (``make pyln``)."""
    return pyln_interpreter("from pyln.client import Gossmap")


def _gossmap(python: str, store: Path) -> dict[str, Any]:
    out = subprocess.run(
        [python, str(GOSSMAP_PROBE), str(store)], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _as_gossmap_address(a: Address) -> str | None:
    """Our address in Gossmap's string form (it drops Tor v2)."""
    if a.type == 2:
        return f"[{a.host}]:{a.port}"
    if a.type == 4:
        return f"{base64.b32encode(bytes.fromhex(a.host)).decode().lower()}.onion:{a.port}"
    if a.type == 3:
        return None
    return f"{a.host}:{a.port}"


def _assert_gossmap_agrees(seen: dict[str, Any], p: PipelineLike) -> None:
    """Gossmap's channels, half channels and announced nodes equal Graph(p)'s."""
    view = Graph(p)
    assert seen["channels"] == len(view)
    assert seen["nodes"] == view.node_count
    ours = []
    for c in view:
        for u in c.updates:
            if u is not None:
                ours.append(
                    [
                        c.short_channel_id,
                        u.direction,
                        u.fee_base_msat,
                        u.fee_proportional_millionths,
                        u.cltv_expiry_delta,
                        u.htlc_minimum_msat,
                        u.htlc_maximum_msat,
                        u.disabled,
                        u.timestamp,
                    ]
                )
    assert sorted(seen["directions"]) == sorted(ours)
    announced = []
    for n in view.nodes():
        if n.raw is not None:
            addrs = [s for a in n.addresses if (s := _as_gossmap_address(a)) is not None]
            announced.append([n.node_id.hex(), n.alias, n.rgb_color.hex(), addrs])
    assert sorted(seen["announced"]) == sorted(announced)


def test_gossmap_reads_our_store_synthetic(tmp_path: Path, pyln_client_python: str) -> None:
    """A synthetic graph's store, read by pyln-client's Gossmap: the same
    channels, half channels (fees, cltv, htlc limits, disabled) and nodes."""
    g = _synthetic()
    store = tmp_path / "gossip_store"
    p = _feed("rust", g.messages(), store=store)
    p.sync_store()
    seen = _gossmap(pyln_client_python, store)
    assert seen["channels"] == 300 and seen["nodes"] == 120
    assert len(seen["directions"]) == 600
    assert any(row[7] for row in seen["directions"])  # disabled directions are compared too
    assert any(row[3] for row in seen["announced"])  # and addresses
    _assert_gossmap_agrees(seen, p)


@needs_data
def test_gossmap_reads_our_store_topology(
    tmp_path: Path, pyln_client_python: str, topology_store: Path
) -> None:
    """The whole mainnet topology through our store, read by Gossmap:
    50,808 channels, 17,324 nodes, every direction as Graph reports it."""
    store = tmp_path / "gossip_store"
    shutil.copyfile(topology_store, store)
    p = Pipeline(store=store)
    seen = _gossmap(pyln_client_python, store)
    assert seen["channels"] == 50_808 and seen["nodes"] == 17_324
    assert len(seen["directions"]) == 101_616
    _assert_gossmap_agrees(seen, p)


# -- 7. Core Lightning's store as ours ---------------------------------------------------

HEADER = struct.Struct(">HHII")
DELETED = 0x8000
DELETE_CHAN = 4103


@dataclass
class StoreScan:
    """An independent walk of a gossip_store image."""

    valid_len: int
    channels: set[int]
    nodes: set[bytes]
    updates: dict[tuple[int, int], bytes]


def _scan_store(buf: bytes) -> StoreScan:
    """Version byte, then (flags, len, crc, timestamp) + message records; stops
    at the first record not wholly in ``buf``."""
    assert buf[0] >> 5 == 0
    p = 1
    anns: dict[int, Ann] = {}
    ups: list[bytes] = []
    while p + HEADER.size <= len(buf):
        flags, n, _crc, _ts = HEADER.unpack_from(buf, p)
        if p + HEADER.size + n > len(buf):
            break
        msg = buf[p + HEADER.size : p + HEADER.size + n]
        p += HEADER.size + n
        if flags & DELETED:
            continue
        t = _type(msg)
        if t == CA:
            a = _ann(msg)
            anns[a.scid] = a
        elif t == CU:
            ups.append(msg)
        elif t == DELETE_CHAN:
            anns.pop(struct.unpack_from(">Q", msg, 2)[0], None)
    nodes = {n for a in anns.values() for n in (a.node_id_1, a.node_id_2)}
    updates = {k: m for k, m in _newest(ups).items() if k[0] in anns}
    return StoreScan(p, set(anns), nodes, updates)


@needs_data
@pytest.mark.parametrize("cut", ["part1", "torn_header", "torn_record"])
def test_opens_core_lightning_store(tmp_path: Path, cut: str) -> None:
    """A copy of Core Lightning's store opens as our store without verifying
    a signature; the graph holds its live channels and newest updates; a torn
    tail is dropped and reported to the byte."""
    whole = (REAL / "cln" / "cln_gossip_store-part1+2").read_bytes()
    part1 = (REAL / "cln" / "cln_gossip_store-part1").read_bytes()
    assert whole.startswith(part1)
    (first_len,) = struct.unpack_from(">H", whole, len(part1) + 2)
    end = {
        "part1": len(part1),
        # 5 bytes into the header of the second record after part1
        "torn_header": len(part1) + HEADER.size + first_len + 5,
        # 10 bytes into the message of the first record after part1
        "torn_record": len(part1) + HEADER.size + 10,
    }[cut]
    image = whole[:end]
    scan = _scan_store(image)
    tail = len(image) - scan.valid_len
    assert (tail > 0) == (cut != "part1")
    copy = tmp_path / "gossip_store"
    copy.write_bytes(image)  # a copy: the shared file stays untouched

    p = Pipeline(store=copy)
    assert p.counters()["signatures_verified"] == 0
    # the one whole record after part1 in "torn_header" is a deleted channel_update
    assert len(scan.channels) == 45
    assert set(p.graph.short_channel_ids(limit=1000)) == scan.channels
    assert len(p.graph) == len(scan.channels)
    assert p.graph.node_count() == len(scan.nodes)
    for (scid, d), m in scan.updates.items():
        ch = p.graph.channel(scid)
        assert ch is not None and ch[1 + d] == m
    report = p.store_report()
    assert report is not None
    assert report["truncated_bytes"] == tail
    assert (report["damage"] is None) == (tail == 0)
    if cut != "part1":
        assert report["damage"] == cut
    assert copy.stat().st_size == scan.valid_len
