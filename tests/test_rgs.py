"""The graph out: Rapid Gossip Sync snapshots (``rust/core/src/rgs.rs``,
``lngossip rgs``) applied by LDK's own ``lightning-rapid-gossip-sync``
(``rgs-apply``, tests/interop/ldk) and compared field by field with
lngossip's graph, and the numpy columns (``Graph.to_numpy``) of both engines.

The topology dataset is ingested once per module into a store (the
``lngossip ingest`` CLI), and the refresh into a copy of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lngossip import Graph, Pipeline, baseline, gen
from lngossip.errors import ConfigError
from lngossip.rgs import SNAPSHOT_INTERVAL_S, read_snapshot
from tests.helpers import LNGOSSIP, rss
from tests.test_rgs_reader import graph as ldk_graph
from tests.test_rgs_reader import rgs_apply, run_rgs_apply

__all__ = ["rgs_apply"]  # the fixture, imported for this module's tests

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "topology"
TOPOLOGY = DATA / "mainnet-2026-02-topology.gsp.xz"
REFRESH = DATA / "mainnet-2026-02-refresh.gsp.xz"
WEEK = 7 * 86_400


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([*LNGOSSIP, *args], capture_output=True, text=True, timeout=600)
    if check:
        assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(topology store, topology + refresh store)."""
    if not TOPOLOGY.exists():
        pytest.skip(f"{TOPOLOGY} is missing")
    d = tmp_path_factory.mktemp("rgs")
    topo, refreshed = d / "topology.store", d / "refreshed.store"
    cli("ingest", "--no-progress", "--store", str(topo), str(TOPOLOGY))
    shutil.copyfile(topo, refreshed)
    cli("ingest", "--no-progress", "--store", str(refreshed), str(REFRESH))
    yield topo, refreshed


def rgs(store: Path, out: Path, *extra: str) -> dict[str, Any]:
    p = cli("rgs", "--store", str(store), "--out", str(out), "--json", *extra)
    info: dict[str, Any] = json.loads(p.stdout)
    return info


def assert_ldk_graph_equals(ldk: dict[str, Any], g: Graph, *, node_details: bool) -> None:
    """Every channel, direction and policy field of LDK's graph equals ours."""
    theirs = {c["short_channel_id"]: c for c in ldk["channels"]}
    mine = list(g)
    assert len(theirs) == len(mine)
    directions = 0
    for c in mine:
        t = theirs[c.short_channel_id]
        assert (t["node_id_1"], t["node_id_2"]) == (c.node_id_1.hex(), c.node_id_2.hex())
        assert t["features"] == c.features.hex()
        for u, d in zip(c.updates, t["directions"], strict=True):
            assert u is not None and d is not None, c.short_channel_id
            directions += 1
            assert (
                d["enabled"],
                d["cltv_expiry_delta"],
                d["htlc_minimum_msat"],
                d["htlc_maximum_msat"],
                d["fee_base_msat"],
                d["fee_proportional_millionths"],
            ) == (
                not u.disabled,
                u.cltv_expiry_delta,
                u.htlc_minimum_msat,
                u.htlc_maximum_msat or 0,
                u.fee_base_msat,
                u.fee_proportional_millionths,
            ), c.short_channel_id
    assert directions == 2 * len(mine)
    nodes = {n["node_id"]: n for n in ldk["nodes"]}
    assert len(nodes) == g.node_count
    if node_details:
        for n in g.nodes():
            t = nodes[n.node_id.hex()]
            assert t["features"] == n.features.hex()
            assert len(t["addresses"]) == len(n.addresses)


@pytest.mark.parametrize("version", [1, 2])
def test_full_snapshot_applied_by_ldk_is_the_graph(
    stores: tuple[Path, Path], rgs_apply: Path, tmp_path: Path, version: int
) -> None:
    topo, _ = stores
    info = rgs(topo, tmp_path / "full", "--version", str(version))
    data = (tmp_path / "full").read_bytes()
    assert info["bytes"] == len(data)
    assert info["latest_seen"] % SNAPSHOT_INTERVAL_S == 0
    assert (info["channel_announcements"], info["updates_full"]) == (50_808, 101_616)
    ldk = ldk_graph(run_rgs_apply(rgs_apply, [data], info["latest_seen"] + 3600, tmp_path))
    assert ldk["last_rapid_gossip_sync_timestamp"] == info["latest_seen"]
    assert len(ldk["channels"]) == 50_808
    assert len(ldk["nodes"]) == 17_324
    assert sum(d is not None for c in ldk["channels"] for d in c["directions"]) == 101_616
    # LDK stamps every direction with latest_seen less a week (processing.rs)
    assert {d["last_update"] for c in ldk["channels"] for d in c["directions"]} == {
        info["latest_seen"] - WEEK
    }
    assert_ldk_graph_equals(ldk, Graph(Pipeline(store=str(topo))), node_details=version == 2)
    # our own reader agrees on what is in it
    s = read_snapshot(data)
    assert (len(s.announcements), len(s.updates), s.latest_seen) == (
        50_808,
        101_616,
        info["latest_seen"],
    )


def test_full_then_incremental_give_the_refreshed_graph(
    stores: tuple[Path, Path], rgs_apply: Path, tmp_path: Path
) -> None:
    topo, refreshed = stores
    full = rgs(topo, tmp_path / "full")
    incr = rgs(refreshed, tmp_path / "incr", "--since", str(full["latest_seen"]))
    data = [(tmp_path / n).read_bytes() for n in ("full", "incr")]
    assert incr["latest_seen"] > full["latest_seen"]
    assert incr["updates_incremental"] > 10_000, incr
    # the refresh changed fee_base_msat only: incremental updates carry it alone
    s = read_snapshot(data[1])
    inc = [u for u in s.updates if u.incremental]
    assert inc and all(
        u.fee_base_msat is not None and u.cltv_expiry_delta is None and u.htlc_maximum_msat is None
        for u in inc
    )
    assert incr["bytes"] < full["bytes"] / 4, (incr["bytes"], full["bytes"])
    ldk = ldk_graph(run_rgs_apply(rgs_apply, data, incr["latest_seen"] + 3600, tmp_path))
    assert ldk["last_rapid_gossip_sync_timestamp"] == incr["latest_seen"]
    assert_ldk_graph_equals(ldk, Graph(Pipeline(store=str(refreshed))), node_details=True)
    # the full snapshot alone is the old graph, not the refreshed one
    old = ldk_graph(run_rgs_apply(rgs_apply, data[:1], incr["latest_seen"], tmp_path))
    with pytest.raises(AssertionError):
        assert_ldk_graph_equals(old, Graph(Pipeline(store=str(refreshed))), node_details=True)


def test_an_archive_gives_the_same_snapshot_whenever_it_is_ingested(
    stores: tuple[Path, Path], tmp_path: Path
) -> None:
    """The CLI's store (ingested at the wall clock) and one ingested in
    process with another "now" give the same bytes: "seen" of archive
    gossip is its own timestamp."""
    topo, _ = stores
    p = Pipeline(now=1_800_000_000, store=str(tmp_path / "again.store"))
    from lngossip.ingest import run
    from lngossip.readers import iter_messages

    run(p, ((0, m) for m in iter_messages(str(TOPOLOGY))), engine="rust")
    g_cli, g_here = Graph(Pipeline(store=str(topo))), Graph(p)
    for since in (0, 1_769_990_400):
        for v in (1, 2):
            assert g_cli.rgs_snapshot(since, v) == g_here.rgs_snapshot(since, v)


def test_static_layout_links_every_grid_point(stores: tuple[Path, Path], tmp_path: Path) -> None:
    _, refreshed = stores
    p = cli("rgs", "--store", str(refreshed), "--out-dir", str(tmp_path / "www"), "--json")
    rep = json.loads(p.stdout)
    ref = rep["reference"]
    g = Graph(Pipeline(store=str(refreshed)))
    links = tmp_path / "www" / "symlinks"
    assert (links / "0.bin").read_bytes() == g.rgs_snapshot(0, 1)[0]
    assert (links / "v2" / "0.bin").read_bytes() == g.rgs_snapshot(0, 2)[0]
    assert (links / f"{ref}.bin").read_bytes() == g.rgs_snapshot(ref, 1)[0]
    # a client 6 h behind gets the 6 h scope, one 9 h behind the 12 h one
    six, nine = ref - 2 * SNAPSHOT_INTERVAL_S, ref - 3 * SNAPSHOT_INTERVAL_S
    assert (links / f"{six}.bin").read_bytes() == g.rgs_snapshot(six, 1)[0]
    assert (links / "v2" / f"{nine}.bin").read_bytes() == g.rgs_snapshot(ref - 12 * 3600, 2)[0]
    # every grid point back to 2022-01-01 resolves to a snapshot inside the layout
    names = sorted(os.listdir(links))
    assert len(names) > 10_000
    for n in names[:: max(len(names) // 200, 1)]:
        if n.endswith(".bin"):
            target = (links / n).resolve()
            assert target.is_file() and target.is_relative_to((tmp_path / "www").resolve())


# -- bad input ---------------------------------------------------------------------


def test_bad_stores_and_arguments_get_a_clear_error(tmp_path: Path) -> None:
    out = str(tmp_path / "x")
    p = cli("rgs", "--store", str(tmp_path / "missing"), "--out", out, check=False)
    assert p.returncode == 2 and "no such store" in p.stderr
    assert not (tmp_path / "missing").exists()
    garbage = tmp_path / "garbage"
    # not a gossip_store (another major version): refused
    garbage.write_bytes(b"\xff" + os.urandom(4095))
    p = cli("rgs", "--store", str(garbage), "--out", out, check=False)
    assert p.returncode == 2 and "lngossip:" in p.stderr and "Traceback" not in p.stderr
    # a store's version byte, then garbage: nothing intact, the damage said
    garbage.write_bytes(b"\x0f" + os.urandom(4095))
    p = cli("rgs", "--store", str(garbage), "--out", out, "--json", check=False)
    assert p.returncode == 0 and "damaged tail" in p.stderr, p.stderr
    assert json.loads(p.stdout)["channel_announcements"] == 0
    future = (int(time.time()) // SNAPSHOT_INTERVAL_S + 8) * SNAPSHOT_INTERVAL_S
    small = tmp_path / "small.store"
    g = gen.synthetic_graph(40, 10)
    pipe = Pipeline(store=str(small))
    for m in g.messages():
        pipe.submit(0, m)
    pipe.process()
    del pipe
    for args, why in (
        (["--since", str(future)], "in the future"),
        (["--since", "1770066001"], "not on the 10800 s snapshot grid"),
        (["--since", "-10800"], "since must be between"),
        (["--out-dir", str(tmp_path / "d")], "one of --out FILE or --out-dir DIR"),
    ):
        p = cli("rgs", "--store", str(small), "--out", out, *args, check=False)
        assert p.returncode == 2 and why in p.stderr, (args, p.stderr)
    p = cli("rgs", "--store", str(small), "--out", out, "--version", "3", check=False)
    assert p.returncode == 2 and "invalid choice" in p.stderr
    # a truncated store: what is intact is snapshotted, the damage reported
    cut = tmp_path / "cut.store"
    cut.write_bytes(small.read_bytes()[:-100])
    p = cli("rgs", "--store", str(cut), "--out", out, "--json", check=False)
    assert p.returncode == 0, p.stderr
    assert "damaged tail" in p.stderr
    assert json.loads(p.stdout)["channel_announcements"] > 0


def test_snapshot_arguments_are_checked() -> None:
    g = Graph(Pipeline())
    for kw in ({"version": 0}, {"version": 3}, {"since": -1}, {"since": 1 << 32}):
        with pytest.raises(ConfigError):
            g.rgs_snapshot(**kw)
    with pytest.raises(ConfigError, match="Rust engine only"):
        Graph(baseline.Pipeline()).rgs_snapshot()
    # an empty graph: a valid, empty snapshot
    s = read_snapshot(g.rgs_snapshot(0, 2)[0])
    assert (s.latest_seen, s.node_ids, s.announcements, s.updates) == (0, (), (), ())


def test_v2_node_details_carry_features_and_addresses(rgs_apply: Path, tmp_path: Path) -> None:
    """The synthetic graph's nodes announce addresses (IPv4, IPv6, Tor) and
    features: LDK gets them from a v2 snapshot."""
    sg = gen.synthetic_graph(300, 60)
    p = Pipeline(now=sg_now(sg))
    for m in sg.messages():
        p.submit(0, m)
    while p.queued:
        p.process()
    g = Graph(p)
    data, info = g.rgs_snapshot(0, 2)
    assert info["node_details"] > 0
    ldk = ldk_graph(run_rgs_apply(rgs_apply, [data], info["latest_seen"] + 3600, tmp_path))
    with_addresses = [n for n in ldk["nodes"] if n["addresses"]]
    assert with_addresses, "the synthetic graph announces addresses"
    assert_ldk_graph_equals(ldk, g, node_details=True)


def sg_now(sg: gen.SyntheticGraph) -> int:
    """A "now" just after the synthetic graph's newest timestamp."""
    ts = [int.from_bytes(m[66 + 32 + 8 : 66 + 32 + 12], "big") for m in sg.channel_updates]
    return max(ts) + 3600


# -- columns -----------------------------------------------------------------------


def _engines_with(sg: gen.SyntheticGraph) -> tuple[Graph, Graph]:
    out = []
    for p in (Pipeline(now=sg_now(sg)), baseline.Pipeline(now=sg_now(sg))):
        for m in sg.messages():
            p.submit(0, m)
        while p.queued:
            p.process()
        out.append(Graph(p))
    return out[0], out[1]


def test_columns_are_the_same_in_both_engines_and_match_the_graph() -> None:
    sg = gen.synthetic_graph(400, 80)
    rust, py = _engines_with(sg)
    a, b = rust.to_numpy(), py.to_numpy()
    assert a.keys() == b.keys() == {"channels", "updates", "nodes"}
    for table in a:
        assert a[table].keys() == b[table].keys()
        lens = {len(v) for v in a[table].values()}
        assert len(lens) == 1, table
        for k in a[table]:
            assert a[table][k].dtype == b[table][k].dtype, (table, k)
            assert np.array_equal(a[table][k], b[table][k]), (table, k)
    ch, up, no = a["channels"], a["updates"], a["nodes"]
    assert len(ch["short_channel_id"]) == len(rust)
    assert len(no["node_id"]) == rust.node_count
    for i, c in enumerate(rust):
        assert ch["short_channel_id"][i] == c.short_channel_id
        n1 = no["node_id"][ch["node_1"][i] : ch["node_1"][i] + 1].tobytes()
        assert n1 == c.node_id_1
    keys = zip(up["short_channel_id"].tolist(), up["direction"].tolist(), strict=True)
    rows = {k: r for r, k in enumerate(keys)}
    for c in rust:
        for u in c.updates:
            if u is None:
                continue
            r = rows[(c.short_channel_id, u.direction)]
            assert up["fee_base_msat"][r] == u.fee_base_msat
            assert up["fee_proportional_millionths"][r] == u.fee_proportional_millionths
            assert up["htlc_maximum_msat"][r] == (u.htlc_maximum_msat or 0)
            assert up["disabled"][r] == u.disabled
            assert up["timestamp"][r] == u.timestamp
    for i, n in enumerate(rust.nodes()):
        assert no["timestamp"][i] == (n.timestamp or 0)
        assert bytes(no["alias"][i]).decode("utf-8", "replace") == n.alias
        assert no["addresses"][i] == len(n.addresses)
        assert no["channels"][i] == len(n.channels)


def test_columns_of_the_topology(stores: tuple[Path, Path]) -> None:
    topo, _ = stores
    c = Graph(Pipeline(store=str(topo))).to_numpy()
    assert [len(c[t]["short_channel_id" if t != "nodes" else "node_id"]) for t in c] == [
        50_808,
        101_616,
        17_324,
    ]
    assert c["nodes"]["node_id"].dtype == np.dtype("S33")
    assert c["updates"]["htlc_maximum_msat"].dtype == np.uint64
    assert int(c["updates"]["direction"].sum()) == 50_808


def test_pandas_and_networkx() -> None:
    pd = pytest.importorskip("pandas")
    nx = pytest.importorskip("networkx")
    sg = gen.synthetic_graph(200, 40)
    rust, _ = _engines_with(sg)
    frames = rust.to_pandas()
    assert isinstance(frames["updates"], pd.DataFrame)
    assert len(frames["channels"]) == len(rust)
    assert all(len(x) == 33 for x in frames["nodes"]["node_id"])
    g = rust.to_networkx()
    assert isinstance(g, nx.MultiDiGraph)
    assert g.number_of_nodes() == rust.node_count
    assert g.number_of_edges() == sum(u is not None for c in rust for u in c.updates)
    c = next(iter(rust))
    u = c.updates[0]
    assert u is not None
    e = g.get_edge_data(c.node_id_1, c.node_id_2)[c.short_channel_id]
    assert e["fee_base_msat"] == u.fee_base_msat


# -- serve --rgs -------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(port: int, path: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_serve_rgs_answers_the_same_bytes_and_serves_an_honest_client_past_200_slow_ones(
    stores: tuple[Path, Path], tmp_path: Path
) -> None:
    import socket
    import threading

    topo, _ = stores
    store = tmp_path / "served.store"
    shutil.copyfile(topo, store)
    p = Pipeline(store=str(store))
    expect = {v: Graph(p).rgs_snapshot(0, v)[0] for v in (1, 2)}
    del p  # releases the store's lock for serve
    port = _free_port()
    serve = ["serve", "--listen", "127.0.0.1:0", "--store", str(store)]
    mport = _free_port()
    proc = subprocess.Popen(
        [*LNGOSSIP, *serve, "--rgs", f"127.0.0.1:{port}", "--metrics", f"127.0.0.1:{mport}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log: list[str] = []
    drain = threading.Thread(target=lambda: log.extend(proc.stderr or []), daemon=True)
    drain.start()
    held: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        assert "@127.0.0.1:" in proc.stdout.readline()
        assert _get(port, "/snapshot/0") == (200, expect[1])
        assert _get(port, "/snapshot/v2/0") == (200, expect[2])
        future = (int(time.time()) // SNAPSHOT_INTERVAL_S + 8) * SNAPSHOT_INTERVAL_S
        for path, status in (
            ("/snapshot/abc", 400),
            ("/snapshot/1770066001", 400),
            (f"/snapshot/v2/{future}", 400),
            ("/snapshot/-10800", 400),
            ("/../../etc/passwd", 404),
            ("/snapshot/v3/0", 404),
        ):
            code, body = _get(port, path)
            assert code == status, (path, code, body)
            assert b"Traceback" not in body and len(body.splitlines()) <= 1
        rss0 = rss(proc.pid)
        # 200 clients ask for the full snapshot and never read it
        for _ in range(200):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /snapshot/v2/0 HTTP/1.1\r\nHost: x\r\n\r\n")
            held.append(s)
        time.sleep(1.0)
        t0 = time.perf_counter()
        code, body = _get(port, "/snapshot/v2/0")
        honest_s = time.perf_counter() - t0
        assert (code, body == expect[2]) == (200, True)
        rss1 = rss(proc.pid)
        print(
            f"\nserve --rgs: honest full v2 snapshot ({len(body):,} bytes) in {honest_s:.3f} s "
            f"with 200 clients holding requests; serve RSS +{(rss1 - rss0) / 2**20:.1f} MiB"
        )
        assert honest_s < 10
        assert rss1 - rss0 < 150 * 2**20
        # the server's own metrics beside the node's
        code, text = _get(mport, "/metrics")
        assert code == 200
        assert b'lngossip_rgs_responses_total{status="200"}' in text
        assert b'lngossip_rgs_responses_total{status="400"}' in text
        assert b"lngossip_graph_channels 50808" in text
    finally:
        for s in held:
            s.close()
        proc.terminate()
        proc.wait(timeout=30)
        drain.join(timeout=10)
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()
    assert proc.returncode == 0, "".join(log)


def _with_channel_amounts(store: Path, sat: dict[int, int]) -> None:
    """Rewrite ``store`` with a Core Lightning ``channel_amount`` record
    (type 4101, u64 satoshis) after each channel announcement in ``sat``."""
    import struct

    from tests.test_store import _crc32c

    data, out, p = store.read_bytes(), bytearray(store.read_bytes()[:1]), 1
    while p < len(data):
        _flags, n, _crc, ts = struct.unpack_from(">HHII", data, p)
        msg = data[p + 12 : p + 12 + n]
        out += data[p : p + 12 + n]
        p += 12 + n
        if msg[:2] == b"\x01\x00":
            scid = int.from_bytes(
                msg[258 + 2 + int.from_bytes(msg[258:260], "big") + 32 :][:8], "big"
            )
            if scid in sat:
                amount = (4101).to_bytes(2, "big") + sat[scid].to_bytes(8, "big")
                out += struct.pack(">HHII", 0x2000, 10, _crc32c(ts, amount), ts) + amount
    store.write_bytes(bytes(out))


def test_funding_amounts_of_core_lightning_stores_reach_columns_and_v2_snapshots(
    rgs_apply: Path, tmp_path: Path
) -> None:
    """A store with ``channel_amount`` records (as Core Lightning writes
    them): the capacity is in ``to_numpy`` and in version 2 snapshots (LDK's
    ``capacity_sats``), survives a compaction, and version 1 has none."""
    sg = gen.synthetic_graph(120, 30)
    store = tmp_path / "amounts.store"
    p = Pipeline(now=sg_now(sg), store=str(store))
    for m in sg.messages():
        p.submit(0, m)
    while p.queued:
        p.process()
    scids = [int.from_bytes(m[-4 * 33 - 8 : -4 * 33], "big") for m in sg.channel_announcements]
    del p
    # above every htlc_maximum_msat of the graph (LDK drops updates over capacity)
    sat = {s: 10**12 + i for i, s in enumerate(scids) if i % 3}
    _with_channel_amounts(store, sat)
    p = Pipeline(now=sg_now(sg), store=str(store))
    g = Graph(p)
    cols = g.to_numpy()["channels"]
    got = dict(zip(cols["short_channel_id"].tolist(), cols["capacity_sat"].tolist(), strict=True))
    assert got == {s: sat.get(s, 0) for s in scids}
    data, info = g.rgs_snapshot(0, 2)
    assert {a.short_channel_id: a.funding_sat for a in read_snapshot(data).announcements} == {
        s: sat.get(s)
        for s in scids
        if s in {a.short_channel_id for a in read_snapshot(data).announcements}
    }
    assert all(a.funding_sat is None for a in read_snapshot(g.rgs_snapshot(0, 1)[0]).announcements)
    ldk = ldk_graph(run_rgs_apply(rgs_apply, [data], info["latest_seen"] + 3600, tmp_path))
    assert ldk["channels"]
    for c in ldk["channels"]:
        assert c["capacity_sat"] == sat.get(c["short_channel_id"]), c
    assert_ldk_graph_equals(ldk, g, node_details=True)
    assert p.compact()
    del g, p
    cols = Graph(Pipeline(store=str(store))).to_numpy()["channels"]
    assert (
        dict(zip(cols["short_channel_id"].tolist(), cols["capacity_sat"].tolist(), strict=True))
        == got
    )
