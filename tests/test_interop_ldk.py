"""Interop with rust-lightning (LDK 0.2, ``lightning`` + ``lightning-net-tokio``),
both ways, on the topology dataset (issue 15).

``tests/interop/ldk`` is a small LDK node of our own (``make interop`` builds
it into ``target/interop``): ``ldk-peer serve`` loads a GSP file into LDK's
``NetworkGraph`` through ``P2PGossipSync`` and serves it as LDK does (the dump
starts on the peer's ``gossip_timestamp_filter``, a ``ping`` after every 32
messages as flow control); ``ldk-peer sync`` syncs LDK's graph from one peer
and prints its counts.

LDK built with ``std`` drops ``channel_update``s more than 14 days older than
its wall clock (and more than a day in the future), and its own
``gossip_timestamp_filter`` asks for 14 days back. The dataset's updates run
from 2026-01-21 00:00:02 to 2026-02-02 23:59:54, so LDK runs under Debian's
``faketime`` at 2026-02-03 00:00:00 (a ticking clock: a frozen one would stop
tokio's timers), a day inside both bounds.

The LDK server keeps LDK's own sockets (``lightning-net-tokio`` leaves
Nagle's algorithm on): LDK's ping after 32 messages then waits for the ACK
of the batch, and lngossip ACKs at once (``TCP_QUICKACK`` after each read,
``Connection._quickack``); with delayed ACKs (40 ms on Linux) the about
5,300 round trips made a sync of this graph take about 230 s instead of
about 14 s. (``ldk-peer serve --nodelay`` turns Nagle off on LDK's side.)

Skipped when the binary or ``faketime`` is missing, unless
``LNGOSSIP_REQUIRE_LDK=1`` (CI), then they fail.
"""

from __future__ import annotations

import asyncio
import json
import lzma
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lngossip import readers
from lngossip.engine import make_pipeline
from lngossip.net.node import GossipNode, NodeConfig
from lngossip.net.transport import Keys
from tests.conftest import TOPOLOGY, needs_data, topology
from tests.helpers import LNGOSSIP, serving

ROOT = Path(__file__).resolve().parents[1]
LDK_PEER = Path(os.environ.get("LNGOSSIP_LDK_PEER", ROOT / "target/interop/release/ldk-peer"))
LDK_TIME = "2026-02-03 00:00:00"

CHANNELS, NODES, UPDATES = 50_808, 17_324, 101_616
MESSAGES = CHANNELS + NODES + UPDATES  # 169,748

pytestmark = needs_data


def _unavailable() -> str | None:
    if not LDK_PEER.is_file():
        return f"{LDK_PEER} is not built (make interop)"
    faketime = shutil.which("faketime")
    if faketime is None:
        return "faketime is not installed (apt-get install faketime)"
    probe = subprocess.run(
        [faketime, LDK_TIME, "date", "-u", "+%Y-%m-%d"], capture_output=True, text=True, timeout=30
    )
    if probe.stdout.strip() != LDK_TIME[:10]:
        return f"faketime does not set the clock: {probe.stdout!r} {probe.stderr!r}"
    return None


@pytest.fixture(scope="module")
def ldk() -> list[str]:
    """The command prefix that runs ``ldk-peer`` at the dataset's date."""
    why = _unavailable()
    if why is not None:
        if os.environ.get("LNGOSSIP_REQUIRE_LDK") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return ["faketime", LDK_TIME, str(LDK_PEER)]


@pytest.fixture(scope="module")
def topology_gsp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The topology dataset decompressed (``ldk-peer`` reads plain GSP)."""
    if not TOPOLOGY.exists():
        pytest.skip("../shared/data/topology is missing")
    out = tmp_path_factory.mktemp("ldk") / "topology.gsp"
    with lzma.open(TOPOLOGY) as src, out.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return out


@pytest.fixture(scope="module")
def topology_subset_gsp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 20,000 topology messages (5,269 channels with their updates
    and nodes) as plain GSP."""
    out = tmp_path_factory.mktemp("ldk-subset") / "subset.gsp"
    with readers.GspWriter(out) as w:
        w.write_all(topology(20_000))
    return out


class LdkServer:
    """``ldk-peer serve`` in a session of its own: ``faketime`` does not pass
    SIGTERM on to its child, so the whole process group is signalled."""

    def __init__(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.lines: list[str] = []
        self._drain = threading.Thread(
            target=self.lines.extend, args=(self.proc.stderr,), daemon=True
        )
        self._drain.start()
        self.address = ""
        ready = threading.Thread(target=self._read_address, daemon=True)
        ready.start()
        ready.join(300)  # loading verifies 322,172 signatures on one core

    def _read_address(self) -> None:
        assert self.proc.stdout is not None
        self.address = self.proc.stdout.readline().strip()

    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> str:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        self._drain.join(10)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.log()


@pytest.fixture(scope="module")
def ldk_server(ldk: list[str], topology_gsp: Path) -> Iterator[LdkServer]:
    """An LDK node serving the whole topology dataset."""
    server = LdkServer([*ldk, "serve", "--gsp", str(topology_gsp)])
    try:
        if "@127.0.0.1:" not in server.address:
            pytest.fail(f"ldk-peer serve did not start: {server.stop()}")
        # LDK verified and kept every message of the file
        assert f"graph: {CHANNELS} channels, {NODES} nodes" in server.log(), server.log()
        assert f"{UPDATES} channel updates" in server.log(), server.log()
        yield server
    finally:
        server.stop()


def test_ldk_client_syncs_whole_graph_from_serve(ldk: list[str], topology_store: Path) -> None:
    """LDK's P2PGossipSync, connecting out to ``lngossip serve``, sends its
    ``gossip_timestamp_filter`` and ends with exactly the dataset's graph."""
    with serving("--store", str(topology_store)) as served:
        run = subprocess.run(
            [*ldk, "sync", "--connect", served.address, "--idle", "5", "--timeout", "300"],
            capture_output=True,
            text=True,
            timeout=360,
        )
        log = served.stop()
    assert run.returncode == 0, f"{run.stderr}\n--- serve:\n{log}"
    counts = json.loads(run.stdout.strip().splitlines()[-1])
    assert counts["connected"] and not counts["timed_out"], f"{counts}\n{run.stderr}\n{log}"
    assert (counts["channels"], counts["nodes"], counts["channel_updates"]) == (
        CHANNELS,
        NODES,
        UPDATES,
    ), f"{counts}\n--- ldk:\n{run.stderr[-4000:]}\n--- serve:\n{log[-4000:]}"


@pytest.mark.parametrize("mode", ["filter", "query"])
@pytest.mark.parametrize("codec", ["rust", "python"])
def test_sync_from_ldk_server(ldk_server: LdkServer, codec: str, mode: str) -> None:
    """``lngossip sync`` takes the whole graph from LDK, whose ping after
    every 32 messages is flow control, not a flood. With ``--query``: LDK
    answers ``query_channel_range`` but ignores ``query_short_channel_ids``
    and starts a dump only on the first ``gossip_timestamp_filter`` of a
    connection (ours said "from now on"), so the query times out and sync
    reconnects and asks with a filter first (before: 0 messages, exit 1)."""
    query = ["--query", "--query-timeout", "5"] if mode == "query" else []
    run = subprocess.run(
        [
            *LNGOSSIP,
            "-v",
            "sync",
            ldk_server.address,
            *query,
            "--policy",
            "archive",
            "--json",
            "--no-progress",
            "--codec",
            codec,
            "--timeout",
            "400",
        ],
        capture_output=True,
        text=True,
        timeout=460,
    )
    why = f"--- sync:\n{run.stderr[-4000:]}\n--- ldk:\n{ldk_server.log()[-4000:]}"
    assert run.returncode == 0, why
    report = json.loads(run.stdout)
    accepted = {msg_type: d["accepted"] for msg_type, d in report["decisions"].items()}
    assert accepted == {
        "channel_announcement": CHANNELS,
        "node_announcement": NODES,
        "channel_update": UPDATES,
    }, f"{accepted}\n{why}"
    assert sum(accepted.values()) == MESSAGES
    if mode == "query":
        assert "reconnecting to ask with gossip_timestamp_filter first" in run.stderr, why


def test_relay_through_lngossip_from_ldk_to_ldk(
    ldk: list[str], tmp_path: Path, topology_subset_gsp: Path
) -> None:
    """Relay through lngossip: an LDK client connected to an lngossip node
    (its own ``gossip_timestamp_filter`` asks for the last two weeks) gets
    the gossip that the node then syncs from an LDK server, by relay alone:
    its graph ends equal to the node's, channel for channel."""
    server = LdkServer([*ldk, "serve", "--gsp", str(topology_subset_gsp)])
    try:
        assert "@127.0.0.1:" in server.address, server.stop()
        asyncio.run(_relay(ldk, server.address))
    finally:
        server.stop()


async def _relay(ldk: list[str], ldk_server: str) -> None:
    cfg = NodeConfig(
        relay_interval=1.0,
        relay_pending_bytes=64 << 20,
        outbound_queue_bytes=64 << 20,
        codec="rust",
    )
    async with GossipNode(Keys(), make_pipeline("rust", policy="archive"), config=cfg) as node:
        host, port = await node.listen("127.0.0.1", 0)
        client = await asyncio.create_subprocess_exec(
            *ldk,
            "sync",
            "--connect",
            f"{node.node_id.hex()}@{host}:{port}",
            "--idle",
            "10",
            "--timeout",
            "240",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            async with asyncio.timeout(60):  # LDK connected and sent its filter
                while not any(p.their_queries.filter is not None for p in node.peers.values()):
                    await asyncio.sleep(0.1)
            node_hex, hp = ldk_server.split("@")
            h, pt = hp.rsplit(":", 1)
            await node.connect(bytes.fromhex(node_hex), h, int(pt))
            out, err = await asyncio.wait_for(client.communicate(), 300)
        finally:
            if client.returncode is None:
                os.killpg(client.pid, signal.SIGKILL)
                await client.wait()
        graph = node.pipeline.graph
        updates = 0
        for scid in graph.short_channel_ids(limit=1 << 20):
            ch = graph.channel(scid)
            assert ch is not None
            updates += (ch[1] is not None) + (ch[2] is not None)
        counts = json.loads(out.decode().strip().splitlines()[-1])
        assert len(graph) > 1000 and node.counters["relay_sent"] > 0
        assert node.counters["relay_dropped"] == 0
        assert (counts["channels"], counts["channel_updates"]) == (len(graph), updates), (
            counts,
            err.decode()[-3000:],
        )
