"""The command line as a user runs it: ``ingest`` on the real files and on
a damaged one, ``demo`` (TCP and in process), ``serve`` + ``sync`` between
two processes, ``sync`` against a trickle and SIGTERM, ``serve`` stopped
while loading, its metrics, and clear errors for bad input."""

from __future__ import annotations

import asyncio
import json
import signal
import struct
import subprocess
import threading
import time
from pathlib import Path

from lngossip import Pipeline, cli, gen, readers
from lngossip.net import messages as bolt
from lngossip.net.transport import Connection, Keys
from lngossip.wire import MAINNET_CHAIN_HASH
from tests.conftest import CLN_STORE, LNRESEARCH, TOPOLOGY, needs_data, topology
from tests.helpers import LNGOSSIP, fake_peer, keys, serving, sync


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LNGOSSIP, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@needs_data
def test_ingest_real_files_json() -> None:
    out = _run("ingest", *map(str, LNRESEARCH), str(CLN_STORE), "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["decisions"]["channel_announcement"]["accepted"] == 115
    assert d["signatures_verified"] > 0
    assert d["resyncs"] == 13 and d["skipped_bytes"] > 0
    for key in ("elapsed_s", "peak_rss_bytes", "queue_high_water_bytes"):
        assert d[key] > 0
    assert all(v["invalid_signature"] == 0 for v in d["decisions"].values())


@needs_data
def test_ingest_table_peers_and_out(tmp_path: Path) -> None:
    out_file = tmp_path / "accepted.gsp"
    out = _run("ingest", str(LNRESEARCH[0]), "--peers", "3", "--out", str(out_file))
    assert out.returncode == 0, out.stderr
    assert "channel_update" in out.stdout and "duplicate" in out.stdout
    written = list(readers.iter_messages(out_file))
    assert written and len(written) == len(set(written))


def test_demo_tcp_and_in_process() -> None:
    for extra in ([], ["--in-process"]):
        out = _run("demo", "--channels", "300", "--json", *extra)
        assert out.returncode == 0, out.stderr
        d = json.loads(out.stdout)["decisions"]
        assert d["channel_announcement"]["accepted"] == 300
        assert d["channel_update"]["accepted"] == 600
        assert d["channel_announcement"]["invalid_signature"] == 1
        assert d["channel_update"]["invalid_signature"] == 2
        assert sum(v["malformed"] for v in d.values()) >= 4


def test_errors_are_clear() -> None:
    out = _run("ingest", "/nonexistent/file.gsp")
    assert out.returncode == 2 and "no such file" in out.stderr
    assert "Traceback" not in out.stderr
    out = _run("sync", "not-a-peer")
    assert out.returncode == 2 and "NODE_ID@HOST:PORT" in out.stderr
    out = _run("sync", "02" + "11" * 32 + "@127.0.0.1:1")  # not a point on the curve
    assert out.returncode == 2 and "NODE_ID@HOST:PORT" in out.stderr
    out = _run("sync", Keys().node_id.hex() + "@127.0.0.1:1", "--until-idle", "1")
    assert out.returncode == 2 and "no peer could be reached" in out.stderr


def test_each_subcommand_takes_the_options_it_uses() -> None:
    """Options are defined once (``cli.OPTIONS``), each used by a subcommand;
    one a subcommand does not use, or a value out of range, is a usage error;
    ``serve`` checks its ``--gossip`` files before any work, as ``ingest`` does."""
    assert {o for c in cli.COMMANDS.values() for o in c.options} == set(cli.OPTIONS)
    peer = Keys().node_id.hex() + "@127.0.0.1:1"
    for args in (
        ("sync", peer, "--peers", "2"),
        ("serve", "--listen", "127.0.0.1:0", "--batch", "5"),
        ("ingest", "x.gsp", "--threads", "0"),
        ("demo", "--peers", "0"),
    ):
        out = _run(*args)
        assert out.returncode == 2 and "error: " in out.stderr, args
        assert "Traceback" not in out.stderr
    out = _run("serve", "--listen", "127.0.0.1:0", "--gossip", "/nonexistent/file.gsp")
    assert out.returncode == 2 and "no such file: /nonexistent/file.gsp" in out.stderr


@needs_data
def test_serve_and_sync_between_two_processes(tmp_path: Path) -> None:
    msgs = topology(20_000)
    src = tmp_path / "subset.gsp"
    with readers.GspWriter(src) as w:
        w.write_all(msgs)
    key = tmp_path / "node.key"
    with serving("--gossip", str(src), "--key-file", str(key)) as served:
        assert key.exists() and oct(key.stat().st_mode & 0o777) == "0o600"
        synced = tmp_path / "synced.gsp"
        out = _run(
            "sync",
            served.address,
            "--policy",
            "archive",
            "--until-idle",
            "1",
            "--out",
            str(synced),
            "--json",
        )
        assert out.returncode == 0, out.stderr
        d = json.loads(out.stdout)
        assert d["signatures_verified"] == sum(4 if m[:2] == b"\x01\x00" else 1 for m in msgs)
        assert set(readers.iter_messages(synced)) == set(msgs)


@needs_data
def test_a_signal_while_serve_loads_its_files_stops_it_promptly(tmp_path: Path) -> None:
    """SIGINT (and SIGTERM) while ``serve`` verifies the topology file: it
    exits within a second or so, and the store it leaves opens whole
    (before: it exited only after the whole load, about 10 s)."""
    store = tmp_path / "s.gs"
    cmd = [*LNGOSSIP, "serve", "--listen", "127.0.0.1:0", "--store", str(store)]
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen(
            [*cmd, "--gossip", str(TOPOLOGY)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(3.0)  # well into the load
        t0 = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
        assert proc.returncode == 0, err
        assert out == "", out  # never listened
        assert "stopped by a signal while loading" in err, err
        assert took < 1.5, took
        p = Pipeline(store=str(store))
        rep = p.store_report()
        assert rep is not None
        assert rep["truncated_bytes"] == 0 and rep["skipped_regions"] == 0, rep
        assert len(p.graph) > 0
        del p


def _trickle_server(port_out: list[int], stop: threading.Event) -> threading.Thread:
    """A peer that sends one new valid update every 0.5 s, forever."""
    graph = gen.synthetic_graph(2, 3, seed=2)
    k = keys("trickle")
    port_out.append(0)

    async def main() -> None:
        async def handle(c: Connection) -> None:
            await c.send(bolt.Init(networks=[MAINNET_CHAIN_HASH]).encode())
            for m in graph.channel_announcements:
                await c.send(m)
            ts = 1_767_225_600
            node_keys = [gen.private_key("node", i) for i in range(3)]
            ann = graph.channel_announcements[0]
            scid = struct.unpack_from(">Q", ann, 292)[0]
            n1 = ann[292 + 8 : 292 + 8 + 33]
            signer = next(x for x in node_keys if gen.node_id(x) == n1)
            while not stop.is_set():
                ts += 1
                await c.send(gen.channel_update(scid, signer, direction=0, timestamp=ts))
                await asyncio.sleep(0.5)

        async with fake_peer(k, handle) as port:
            port_out[0] = port
            while not stop.is_set():
                await asyncio.sleep(0.1)

    t = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    t.start()
    while not port_out[0]:
        time.sleep(0.01)
    return t


def test_sync_timeout_ends_a_trickle_and_sigterm_leaves_whole_records(tmp_path: Path) -> None:
    """A peer sending one valid update every 0.5 s keeps ``--until-idle 5``
    from ever ending: ``--timeout`` ends it; SIGTERM ends another run
    cleanly: summary printed, the ``--out`` file ends on a record boundary."""
    port: list[int] = []
    stop = threading.Event()
    t = _trickle_server(port, stop)
    address = f"{keys('trickle').node_id.hex()}@127.0.0.1:{port[0]}"
    base = [*LNGOSSIP, "sync", address, "--policy", "archive", "--until-idle", "5", "--json"]
    try:
        t0 = time.monotonic()
        r = subprocess.run([*base, "--timeout", "3"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert time.monotonic() - t0 < 15
        d = json.loads(r.stdout)
        assert d["messages"] >= 3 and d["elapsed_s"] >= 0
        out = tmp_path / "out.gsp"
        proc = subprocess.Popen(
            [*base, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr
        d = json.loads(stdout)
        rep = readers.ReadReport(path=str(out))
        msgs = list(readers.iter_messages(out, rep))
        assert len(msgs) == d["accepted_written"] > 0
        assert rep.truncated_tail_bytes == 0 and rep.resyncs == 0
    finally:
        stop.set()
        t.join(5)


@needs_data
def test_truncated_xz_is_ingested_up_to_the_damage(tmp_path: Path) -> None:
    """The first MiB of the topology file: every complete message in it (6,907)
    is ingested and written, and the damage is one stderr line naming the file
    (before: a 42-line EOFError traceback and nothing written)."""
    cut = tmp_path / "cut.gsp.xz"
    with TOPOLOGY.open("rb") as f:
        cut.write_bytes(f.read(1 << 20))
    out = tmp_path / "out.gsp"
    r = subprocess.run(
        [*LNGOSSIP, "ingest", str(cut), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["messages"] == 6907
    assert len(list(readers.iter_messages(out))) == 6907
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(cut) in lines[0] and "damaged" in lines[0]
    garbage = tmp_path / "garbage.gz"
    garbage.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(200)))
    r = subprocess.run(
        [*LNGOSSIP, "ingest", str(garbage)], capture_output=True, text=True, check=False
    )
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and str(garbage) in r.stderr


def test_serve_exposes_prometheus_metrics(graph_file: Path, tmp_path: Path) -> None:
    """``serve --metrics``: the graph, decisions, peers and disconnects are
    scraped from ``/metrics`` in Prometheus' text format."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        mport = s.getsockname()[1]
    with serving("--gossip", str(graph_file), "--metrics", f"127.0.0.1:{mport}") as served:
        sync(served.address)
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10) as r:
            text = r.read().decode()
    lines = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert float(lines["lngossip_graph_channels"]) == 400
    assert float(lines["lngossip_graph_nodes"]) == 120
    key = 'lngossip_decisions_total{decision="accepted",msg_type="channel_announcement"}'
    assert float(lines[key]) == 400
    assert float(lines["lngossip_signatures_verified_total"]) > 1600
    assert "lngossip_disconnects_total" in text and "lngossip_peers" in lines


def test_sync_that_gets_nothing_says_so_and_fails(tmp_path: Path) -> None:
    """A peer with an empty graph: ``sync`` ends after ``--until-idle``,
    says it received nothing and exits 1; its elapsed time is not negative."""
    with serving("--store", str(tmp_path / "empty.store")) as served:
        out = subprocess.run(
            [*LNGOSSIP, "sync", served.address, "--until-idle", "1", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert out.returncode == 1
    assert "no gossip received" in out.stderr
    d = json.loads(out.stdout)
    assert d["messages"] == 0 and d["elapsed_s"] >= 0
