"""The peer layer (:mod:`lngossip.net`), in process: one regression test per
production incident (DESIGN.md): simultaneous dial (iroh #2307), a ping
timer across a reconnect (snarkOS #3331), a disconnect in the middle of a
sync (Core Lightning #8055), shutdown under load (lnd #8912), a flooding
peer (Core Lightning #7972), and a full sync from four serving nodes; then
a hostile peer against the node (floods, bad ``init``, queries, relay) and
one graph per node (a poisoned channel, a dump while the graph grows)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import random
import struct
import subprocess
import sys
import time
import zlib
from typing import Any

import pytest

from lngossip import Graph, Pipeline, gen, ingest
from lngossip.engine import PipelineLike, make_pipeline
from lngossip.graph import dump
from lngossip.ingest import peak_rss_bytes
from lngossip.net import messages as bolt
from lngossip.net.node import GossipNode, NodeConfig, Peer
from lngossip.net.transport import Connection, TransportError, connect
from lngossip.wire import MAINNET_CHAIN_HASH, parse_message
from tests.conftest import needs_data, topology
from tests.helpers import (
    closed_by_peer,
    fake_peer,
    forged_announcement,
    hello,
    keys,
    make_node,
    run,
    send_and_confirm,
    until,
)

# the first 20,000 topology messages: 5,269 channels with updates and nodes
SUBSET = 20_000


#: the nodes the running test made, closed by run() if the test fails


def _link(node: GossipNode, peer: bytes) -> tuple[Any, Any]:
    w = node.peers[peer].conn._writer
    return w.get_extra_info("sockname"), w.get_extra_info("peername")


def test_simultaneous_dial_100_rounds_keeps_one_and_the_same_connection() -> None:
    async def body() -> None:
        a = await make_node("a", sync=False)
        b = await make_node("b", sync=False)
        low = a if a.node_id < b.node_id else b
        for _ in range(100):
            await asyncio.gather(
                a.connect(b.node_id, *b.addr),  # type: ignore[attr-defined]
                b.connect(a.node_id, *a.addr),  # type: ignore[attr-defined]
            )
            await until(
                lambda: (
                    len(a.connections) == 1
                    and len(b.connections) == 1
                    and b.node_id in a.peers
                    and a.node_id in b.peers
                ),
                what="one connection each",
            )
            a_local, a_remote = _link(a, b.node_id)
            b_local, b_remote = _link(b, a.node_id)
            assert (a_local, a_remote) == (b_remote, b_local)  # the same TCP link
            # ...and it is the one the lower node_id initiated
            other = b if low is a else a
            assert low.peers[other.node_id].outbound
            await a.disconnect(b.node_id)
            await until(lambda: not a.connections and not b.connections, what="both closed")
        assert a.counters["tie_breaks"] + b.counters["tie_breaks"] >= 100
        await a.close(2)
        await b.close(2)

    run(body)


def test_ping_timer_of_a_dropped_connection_never_kills_the_next_one() -> None:
    async def body() -> None:
        a = await make_node("pa", sync=False, ping_interval=0.1, ping_timeout=0.4)
        # b lets a ping every 0.1 s (its limit raised: the default would fail a)
        b = await make_node("pb", sync=False, answer_pings=False, ping_interval=60, max_pings=1000)
        first = await a.connect(b.node_id, *b.addr)  # type: ignore[attr-defined]
        assert first is not None
        await until(lambda: a.counters["pings_sent"] >= 1, what="a ping in flight")
        # the connection drops while the ping waits for its pong; reconnect at once
        await b.disconnect(a.node_id)
        await first.closed.wait()
        b.config.answer_pings = True
        second = await a.connect(b.node_id, *b.addr)  # type: ignore[attr-defined]
        assert second is not None and second.generation > first.generation
        # a task of the old generation cannot close the new connection
        assert not await a.disconnect(b.node_id, generation=first.generation, reason="stale")
        await asyncio.sleep(1.2)  # three times the old ping's timeout
        assert a.peers.get(b.node_id) is second
        assert a.counters["ping_timeouts"] == 0
        assert a.counters["pings_sent"] >= 3  # the new connection's pings got pongs
        await a.close(2)
        await b.close(2)

    run(body)


def test_unanswered_ping_closes_the_connection() -> None:
    async def body() -> None:
        a = await make_node("qa", sync=False, ping_interval=0.05, ping_timeout=0.2)
        b = await make_node("qb", sync=False, answer_pings=False, ping_interval=60)
        peer = await a.connect(b.node_id, *b.addr)  # type: ignore[attr-defined]
        assert peer is not None
        await asyncio.wait_for(peer.closed.wait(), 3)
        assert peer.close_reason == "ping_timeout"
        await a.close(2)
        await b.close(2)

    run(body)


@functools.cache
def loaded(n: int) -> PipelineLike:
    """A pipeline holding the first ``n`` topology messages, verified once
    per test session and shared by the serving nodes (they only read it)."""
    p = make_pipeline("rust", policy="archive")
    ingest.run(p, ((0, m) for m in topology(n)))
    return p


def graph_messages(node: GossipNode) -> set[bytes]:
    return set(dump(node.pipeline.graph))


@needs_data
def test_disconnect_mid_sync_still_accepts_and_writes_what_was_admitted() -> None:
    msgs = topology(169_748)  # more than the socket buffers hold

    async def body() -> None:
        server = await make_node("srv", serves=loaded(len(msgs)), sync=False)
        written: list[bytes] = []
        client = await make_node("cli", batch=128, pipeline={"max_queue_bytes": 300_000})
        client.on_accepted = written.extend
        peer = await client.connect(server.node_id, *server.addr)  # type: ignore[attr-defined]
        assert peer is not None
        await until(lambda: peer.gossip_received >= SUBSET // 3, what="a third of the sync")
        await server.disconnect(client.node_id)  # abrupt, mid-sync
        await peer.closed.wait()
        queued_at_disconnect = client.pipeline.queued
        received = peer.gossip_received
        await client.drain()
        c = client.pipeline.counters()
        accepted = sum(v["accepted"] for v in c["decisions"].values())
        assert 0 < received < len(msgs)
        assert queued_at_disconnect > 0, "the test needs work left in the queue"
        # every admitted message was verified, accepted and written after the peer left
        assert c["queued"] == 0
        assert accepted == len(written) == received - c["decisions"]["channel_update"]["orphaned"]
        await client.close(2)
        await server.close(2)

    run(body)


async def _read_slowly(
    host: str,
    port: int,
    server_id: bytes,
    label: str,
    *,
    bytes_per_s: float | None = None,
    messages_per_s: float | None = None,
    stop_after_bytes: int | None = None,
    src: str = "127.0.0.1",
) -> str:
    """An honest peer that asks for the whole dump and reads it at a bounded
    rate, answering pings as it reads them; with ``stop_after_bytes`` it
    stops reading (and answering) after that many bytes: a dead peer.
    Returns why it ended (``"cancelled"`` when the test stopped it)."""
    conn = await connect(host, port, keys(label), server_id, local_addr=(src, 0))
    try:
        await conn.send(bolt.Init(networks=[MAINNET_CHAIN_HASH]).encode())
        while bolt.message_type(await conn.recv()) != bolt.INIT:
            pass
        await conn.send(bolt.GossipTimestampFilter(MAINNET_CHAIN_HASH, 0).encode())
        t0 = time.monotonic()
        while True:
            if stop_after_bytes is not None and conn.bytes_received >= stop_after_bytes:
                await asyncio.sleep(3600)
            msg = await conn.recv()
            if bolt.message_type(msg) == bolt.PING:
                await conn.send(bolt.encode_pong(bolt.decode_ping(msg)))
            ahead = 0.0
            if bytes_per_s is not None:
                ahead = conn.bytes_received / bytes_per_s
            if messages_per_s is not None:
                ahead = max(ahead, conn.messages_received / messages_per_s)
            if (wait := ahead - (time.monotonic() - t0)) > 0:
                await asyncio.sleep(wait)
    except (TransportError, OSError) as e:
        return f"closed: {e}"
    except asyncio.CancelledError:
        return "cancelled"
    finally:
        await conn.close()


@needs_data
def test_slow_honest_readers_stay_connected_and_a_dead_one_is_cut() -> None:
    """Peers reading the dump at 34, 84 and 260 kB/s and ten reading about
    140 messages/s stay connected, though our pings wait behind megabytes of
    our own data in the socket buffers and their pongs cannot come back
    within ``ping_timeout`` (before: all cut with ``ping_timeout``); a peer
    that stops reading is still cut. The node sees a reader's progress when
    its TCP stack opens the window again, on Linux loopback about every
    256 KB read: 7.5 s at 34 kB/s, within the 12 s ``ping_timeout`` here
    (15 s by default)."""
    slow: dict[str, dict[str, float]] = {
        "34kB": {"bytes_per_s": 34_000},
        "84kB": {"bytes_per_s": 84_000},
        "260kB": {"bytes_per_s": 260_000},
        **{f"140msg-{i}": {"messages_per_s": 140} for i in range(10)},
    }

    async def body() -> None:
        server = await make_node(
            "slow-srv", serves=loaded(169_748), sync=False, ping_interval=1.0, ping_timeout=12.0
        )
        host, port = server.addr  # type: ignore[attr-defined]
        # each from a network group of its own (at most 8 inbound per group)
        tasks = {
            label: asyncio.create_task(
                _read_slowly(
                    host,
                    port,
                    server.node_id,
                    label,
                    src=f"127.{i}.0.1",
                    **kw,  # type: ignore[arg-type]
                )
            )
            for i, (label, kw) in enumerate(slow.items(), 1)
        }
        dead = asyncio.create_task(
            _read_slowly(host, port, server.node_id, "dead", stop_after_bytes=100_000)
        )
        await asyncio.sleep(30)
        # the dead one was cut for not answering and not reading
        assert keys("dead").node_id not in server.peers
        assert server.counters["closed:ping_timeout"] == 1, server.counters
        # every slow reader is still connected and was pinged meanwhile
        assert not any(t.done() for t in tasks.values()), {
            k: t.result() for k, t in tasks.items() if t.done()
        }
        assert all(keys(label).node_id in server.peers for label in slow)
        assert server.counters["pings_sent"] >= len(slow) + 1
        # pongs stuck behind our data: the wait went on because they read
        assert server.counters["ping_waits_extended"] >= 1
        for t in [*tasks.values(), dead]:
            t.cancel()
        await asyncio.gather(*tasks.values(), dead)
        await server.close(2)

    run(body)


@needs_data
@pytest.mark.parametrize("codec", ["rust", "python"])
def test_a_peer_that_pings_as_flow_control_is_not_a_flooder(codec: str) -> None:
    """A peer that sends gossip as LDK does (a ``ping`` with
    ``num_pong_bytes`` 0 and 64 bytes of padding after every 32 messages,
    then nothing until the ``pong``): the whole sync, about 300 pings, and
    no ``ping_flood`` (before: cut after 10 pings, 352 messages)."""
    msgs = topology(SUBSET // 2)
    sent_pings = 0

    async def handle(c: Connection) -> None:
        nonlocal sent_pings
        await c.send(bolt.Init(networks=[MAINNET_CHAIN_HASH]).encode())
        while bolt.message_type(await c.recv()) != bolt.GOSSIP_TIMESTAMP_FILTER:
            pass
        for i in range(0, len(msgs), 32):
            await c.send_many(msgs[i : i + 32])
            await c.send(bolt.encode_ping(0, 64))
            sent_pings += 1
            while bolt.message_type(await c.recv()) != bolt.PONG:
                pass
        await asyncio.sleep(3600)

    async def body() -> None:
        ldk_keys = keys("ldk-like")
        async with fake_peer(ldk_keys, handle) as port:
            client = await make_node("ldk-client", codec=codec)
            peer = await client.connect(ldk_keys.node_id, "127.0.0.1", port)
            assert peer is not None
            await until(lambda: peer.gossip_received == len(msgs), 60, "the whole sync")
            await client.drain()
            assert client.peers.get(ldk_keys.node_id) is peer  # still connected
            assert client.counters["protocol_violation:ping_flood"] == 0
            assert sent_pings == -(-len(msgs) // 32)
            c = client.pipeline.counters()
            assert sum(v["accepted"] for v in c["decisions"].values()) > 0.9 * len(msgs)
            await client.close(2)

    run(body)


@needs_data
def test_pings_faster_than_our_pongs_are_read_are_a_flood() -> None:
    """A peer that asks for the dump and never reads, and sends a gossip
    message and a ``ping`` (``num_pong_bytes`` 0) a hundred times: no idle
    pings and no pong bytes to speak of, but our pongs pile up behind the
    dump it does not read; past ``max_outstanding_pongs`` it is warned and
    cut."""
    msgs = topology(1)

    async def body() -> None:
        server = await make_node("pong-srv", serves=loaded(169_748), sync=False)
        host, port = server.addr  # type: ignore[attr-defined]
        conn = await connect(host, port, keys("pong-piler"), server.node_id)
        await conn.send(bolt.Init(networks=[MAINNET_CHAIN_HASH]).encode())
        await conn.send(bolt.GossipTimestampFilter(MAINNET_CHAIN_HASH, 0).encode())
        await asyncio.sleep(1.0)  # the dump fills the socket buffers: we never read
        with contextlib.suppress(TransportError, OSError):
            for _ in range(100):
                await conn.send_many([msgs[0], bolt.encode_ping(0)])
        await until(lambda: server.counters["closed:ping_flood"] == 1, 10, "the cut")
        assert server.counters["protocol_violation:ping_flood"] == 1
        await conn.close(0)
        await server.close(2)

    run(body)


@needs_data
def test_close_under_load_meets_its_deadline_and_writes_what_was_accepted() -> None:
    async def body() -> None:
        servers = [await make_node(f"s{i}", serves=loaded(SUBSET), sync=False) for i in range(2)]
        written: list[bytes] = []
        client = await make_node("closer", batch=512)
        client.on_accepted = written.extend
        for s in servers:
            await client.connect(s.node_id, *s.addr)  # type: ignore[attr-defined]
        await until(lambda: client.pipeline.counters()["signatures_verified"] > 2000, what="load")
        t0 = time.monotonic()
        report = await client.close(timeout=1.0)
        elapsed = time.monotonic() - t0
        assert elapsed <= 1.0 + 0.1, elapsed
        assert report.elapsed_s <= 1.0 + 0.05
        c = client.pipeline.counters()
        assert sum(v["accepted"] for v in c["decisions"].values()) == len(written) > 0
        assert not client.connections
        for s in servers:
            await s.close(2)

    run(body)


def test_a_reader_told_queue_full_after_the_last_batch_does_not_wait_forever() -> None:
    """A read can be refused (``queue_full``) and then await something else
    (a pong) while the processing loop empties the queue: no batch is left
    to wake it. Waiting for room then returns at once, and the retry gets in
    (under load this hung ``test_disconnect_mid_sync`` once)."""

    async def body() -> None:
        node = await make_node("waiter", sync=False)
        await node.start()
        await node.drain()
        assert not node.pipeline.queued
        await asyncio.wait_for(node._processor.wait_for_room(), 1.0)
        assert node.counters["backpressure_waits"] == 1
        await node.close(1)

    run(body)


def test_a_cancel_that_reaches_a_closing_connection_still_sets_closed() -> None:
    """A cancel can reach a connection's task after its task group has ended,
    while it closes the socket (CPython #116720, before 3.13; under load it hung
    ``test_disconnect_mid_sync``: ``disconnect()`` and the server callback
    waited on ``closed`` forever). ``closed`` is set all the same."""

    class SlowClose:
        bytes_received = bytes_sent = 0

        def __init__(self) -> None:
            self.done = asyncio.Event()

        async def close(self) -> None:
            await asyncio.sleep(0.2)
            self.done.set()

    async def body() -> None:
        node = GossipNode(keys("forget"), make_pipeline("rust"))
        conn = SlowClose()
        peer = Peer(b"\x02" * 33, 1, False, conn)  # type: ignore[arg-type]
        forgetting = asyncio.create_task(node._forget(peer))
        await asyncio.sleep(0.01)
        forgetting.cancel()
        await asyncio.wait({forgetting})
        assert forgetting.cancelled()
        assert peer.closed.is_set()
        assert node.counters["closed:cancelled"] == 1
        await asyncio.wait_for(conn.done.wait(), 2)  # the shielded close still finishes

    run(body)


class _SlowPipeline:
    """A pipeline whose ``process`` takes ``delay`` seconds longer."""

    def __init__(self, inner: PipelineLike, delay: float) -> None:
        self._inner, self._delay = inner, delay

    def process(self, max_messages: int = 4096) -> Any:
        time.sleep(self._delay)
        return self._inner.process(max_messages)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@needs_data
def test_a_batch_that_outlives_close_still_reaches_on_accepted() -> None:
    """close() returns at its deadline even when a batch in a thread takes
    longer; that batch is committed by the core either way, and its accepted
    messages reach ``on_accepted`` when the thread returns (a cancelled
    ``await`` must not drop them)."""
    msgs = topology(300)

    async def body() -> None:
        inner = make_pipeline("rust", policy="archive")
        written: list[bytes] = []
        node = GossipNode(keys("slow"), _SlowPipeline(inner, 0.6), on_accepted=written.extend)  # type: ignore[arg-type]
        await node.start()
        for m in msgs:
            inner.submit(1, m)
        node._processor.wake()
        await until(lambda: node._processor.busy, what="a batch in flight")
        t0 = time.monotonic()
        report = await node.close(timeout=0.2)
        assert time.monotonic() - t0 <= 0.2 + 0.1
        assert not report.drained
        assert written == []  # the batch is still in its thread
        await until(lambda: inner.queued == 0 and bool(written), what="the late batch")
        accepted = sum(v["accepted"] for v in inner.counters()["decisions"].values())
        assert len(written) == accepted > 0

    run(body)


@needs_data
@pytest.mark.parametrize("codec", ["rust", "python"])
def test_flooding_peer_is_slowed_and_banned_while_an_honest_peer_progresses(codec: str) -> None:
    """With either codec: the Rust one pauses the flooder's reads inside the
    core (queue_full), the Python one in the node's reader."""
    msgs = topology(SUBSET)
    honest_msgs, flood_msgs = msgs[: SUBSET // 2], msgs[SUBSET // 2 :]

    async def body() -> None:
        rss0 = peak_rss_bytes()
        honest = await make_node("honest", serves=loaded(SUBSET // 2), sync=False)
        victim = await make_node(
            "victim",
            batch=256,
            ban_after_invalid=50,
            pipeline={"max_queue_bytes": 400_000},
            codec=codec,
        )
        flooder_keys = keys("flooder")
        conn = await connect(*victim.addr, flooder_keys, victim.node_id)  # type: ignore[attr-defined]
        await conn.send(bolt.Init(networks=[victim.config.chain_hash]).encode())
        while bolt.message_type(await conn.recv()) != bolt.INIT:
            pass
        sent = 0

        async def flood() -> None:
            nonlocal sent
            for i, m in enumerate(itertools.cycle(flood_msgs)):
                if i % 3 == 0:  # garbage: a forged copy (one bit flipped in the signed range)
                    m = m[:-1] + bytes([m[-1] ^ 1])
                elif i % 3 == 1:
                    m = b"\x01\x00" + bytes(50)  # malformed announcement
                await conn.send(m)
                sent += 1

        flood_task = asyncio.create_task(flood())
        held: list[int] = [0]

        async def sample() -> None:
            # what the flooder's connection holds on the victim's side
            while True:
                p = victim.peers.get(flooder_keys.node_id)
                codec = getattr(p.conn, "_codec", None) if p is not None else None
                if codec is not None:
                    held[0] = max(held[0], codec.buffered)
                await asyncio.sleep(0.001)

        sampler = asyncio.create_task(sample())
        peer = await victim.connect(honest.node_id, *honest.addr)  # type: ignore[attr-defined]
        assert peer is not None
        # the honest peer gets all of its gossip in while the flood goes on
        await until(
            lambda: graph_messages(victim) >= set(honest_msgs), timeout=60, what="honest sync"
        )
        await until(lambda: victim.counters["bans"] >= 1, timeout=30, what="the flooder banned")
        await until(lambda: flooder_keys.node_id not in victim.peers, what="flooder dropped")
        flood_task.cancel()
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError, TransportError):
            await flood_task
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        assert sent > 1000
        assert victim.counters["backpressure_waits"] > 0  # the flooder was paused
        if codec == "rust":
            # the Rust codec held at most one 64 KiB read plus one partial frame
            assert 0 < held[0] <= 65536 + 65569, held[0]
        assert victim.counters["invalid_signatures"] >= 50
        assert victim.is_banned(flooder_keys.node_id)
        # a banned node cannot come back
        again = await connect(*victim.addr, flooder_keys, victim.node_id)  # type: ignore[attr-defined]
        try:
            with pytest.raises(TransportError):
                await again.recv()
        finally:
            await again.close()
        assert peak_rss_bytes() - rss0 < 300 * 2**20
        await conn.close()
        await victim.close(2)
        await honest.close(2)

    run(body)


@needs_data
def test_full_sync_from_four_serving_nodes_verifies_each_signature_once() -> None:
    msgs = topology(169_748)
    served = loaded(len(msgs))

    async def body() -> None:
        servers = [await make_node(f"full{i}", serves=served, sync=False) for i in range(4)]
        client = await make_node("fullclient")
        for s in servers:
            assert await client.connect(s.node_id, *s.addr) is not None  # type: ignore[attr-defined]
        await until(
            lambda: time.monotonic() - client.last_gossip_at > 1.0 and not client.pipeline.queued,
            timeout=300,
            what="sync to finish",
        )
        await client.drain()
        c = client.pipeline.counters()
        assert c["signatures_verified"] == 322_172
        assert graph_messages(client) == set(msgs)
        await client.close(5)
        for s in servers:
            await s.close(5)

    run(body)


@needs_data
@pytest.mark.parametrize(
    ("client_codec", "server_codec"), [("rust", "rust"), ("python", "rust"), ("rust", "python")]
)
def test_query_sync_fetches_each_channel_from_one_peer(
    client_codec: str, server_codec: str
) -> None:
    """``query_channel_range`` to every server, each ``short_channel_id``
    fetched from one of them: every message crosses the wire once; the two
    codecs speak to each other both ways."""
    msgs = topology(SUBSET)

    async def body() -> None:
        served = loaded(SUBSET)
        servers = [
            await make_node(f"q{i}", serves=served, sync=False, codec=server_codec)
            for i in range(3)
        ]
        client = await make_node("qclient", sync_mode="query", codec=client_codec)
        for s in servers:
            assert await client.connect(s.node_id, *s.addr) is not None  # type: ignore[attr-defined]
        await until(lambda: graph_messages(client) == set(msgs), timeout=60, what="sync")
        await client.drain()
        assert client.counters["gossip_received"] == len(msgs)
        assert client.pipeline.counters()["decisions"]["channel_announcement"]["duplicate"] == 0
        await client.close(2)
        for s in servers:
            await s.close(2)

    run(body)


def _refresh(graph: gen.SyntheticGraph, n_nodes: int, every: int) -> list[bytes]:
    """Newer ``channel_update``s (a day later, another fee) for every
    ``every``-th channel direction of ``graph``, signed by its owners."""
    keys_by_id = {gen.node_id(k): k for k in (gen.private_key("node", i) for i in range(n_nodes))}
    out = []
    for i, ann in enumerate(graph.channel_announcements):
        g = parse_message(ann)
        assert g.short_channel_id is not None
        a, b = keys_by_id[g.keys[0]], keys_by_id[g.keys[1]]
        for direction in (0, 1):
            if (2 * i + direction) % every == 0:
                out.append(
                    gen.channel_update(
                        g.short_channel_id,
                        gen.update_signer_for(direction, a, b),
                        direction=direction,
                        timestamp=1_767_225_600 + 86_400,
                        fee_base_msat=7_000 + i,
                    )
                )
    return out


@pytest.mark.parametrize("server_codec", ["rust", "python"])
def test_query_resync_with_timestamps_fetches_only_newer_updates(server_codec: str) -> None:
    """A client whose graph (say, its store) has the channels asks with
    ``query_option`` timestamps and ``query_flags``: of a server's graph
    with 1 direction in 5 updated since, it receives exactly those updates,
    and ends with the server's graph (before: channels it had were skipped
    whole, the changed fees never came)."""
    n_nodes = 80
    graph = gen.synthetic_graph(300, n_nodes, seed=11)
    newer = _refresh(graph, n_nodes, 5)

    async def body() -> None:
        served = make_pipeline("rust", policy="archive")
        ingest.run(served, ((0, m) for m in [*graph.messages(), *newer]))
        server = await make_node("rs-srv", serves=served, sync=False, codec=server_codec)
        client = await make_node("rs-cli", sync_mode="query")
        ingest.run(client.pipeline, ((0, m) for m in graph.messages()))
        assert await client.connect(server.node_id, *server.addr) is not None  # type: ignore[attr-defined]
        want = set(dump(served.graph))
        await until(lambda: graph_messages(client) == want, timeout=30, what="resync")
        await client.drain()
        assert client.counters["gossip_received"] == len(newer)
        assert server.counters["gossip_sent"] == len(newer)
        await client.close(2)
        await server.close(2)

    run(body)


def test_garbage_frame_ends_the_connection_with_a_counted_reason() -> None:
    async def body() -> None:
        victim = await make_node("gv", sync=False)
        conn = await connect(*victim.addr, keys("garbage"), victim.node_id)  # type: ignore[attr-defined]
        await conn.send(bolt.Init(networks=[victim.config.chain_hash]).encode())
        await until(lambda: keys("garbage").node_id in victim.peers, what="ready")
        conn._writer.write(bytes(range(50)))  # not a BOLT #8 frame: its length MAC fails
        await until(lambda: not victim.connections, what="connection closed")
        assert victim.counters["closed:length_mac"] == 1
        await conn.close()
        await victim.close(2)

    run(body)


def test_persistent_peer_reconnects_with_backoff() -> None:
    async def body() -> None:
        server = await make_node("ps", sync=False)
        client = await make_node("pc", sync=False, reconnect_initial=0.05, reconnect_max=0.4)
        await client.connect(server.node_id, *server.addr, persistent=True)  # type: ignore[attr-defined]
        await until(lambda: server.node_id in client.peers, what="first connection")
        first = client.peers[server.node_id].generation
        await server.disconnect(client.node_id)
        await until(
            lambda: (
                server.node_id in client.peers and client.peers[server.node_id].generation > first
            ),
            what="reconnected",
        )
        assert client.counters["reconnect_attempts"] >= 1
        # with the server gone, attempts back off: 0.05, 0.1, 0.2, 0.4, 0.4 s (x0.5-1.5)
        await server.close(2)
        before = client.counters["reconnect_attempts"]
        await asyncio.sleep(1.5)
        attempts = client.counters["reconnect_attempts"] - before
        assert 2 <= attempts <= 10, attempts
        await client.close(2)

    run(body)


def test_init_on_another_chain_and_error_messages_end_the_connection() -> None:
    async def body() -> None:
        mainnet = await make_node("main", sync=False)
        testnet = await make_node("test", sync=False, chain_hash=bytes(range(32)))
        with pytest.raises(TransportError) as refused:
            await testnet.connect(mainnet.node_id, *mainnet.addr)  # type: ignore[attr-defined]
        assert refused.value.reason == "closed_before_ready"
        assert refused.value.detail in ("wrong_network", "peer_error")
        await until(
            lambda: (
                testnet.counters["closed:wrong_network"] == 1
                and mainnet.counters["closed:wrong_network"] + mainnet.counters["closed:peer_error"]
                == 1
            ),
            what="both sides refuse",
        )
        # a BOLT #1 error from the peer closes the connection, a warning does not
        with pytest.raises(OSError):  # nobody listens there: the reason is raised, not lost
            await mainnet.connect(keys("other").node_id, "127.0.0.1", 1)
        other = await make_node("other", sync=False)
        p = await mainnet.connect(other.node_id, *other.addr)  # type: ignore[attr-defined]
        assert p is not None
        await other.peers[mainnet.node_id].conn.send(bolt.encode_warning("just so you know"))
        await until(lambda: mainnet.counters["warnings_received"] == 1, what="warning")
        assert mainnet.node_id in other.peers
        await other.peers[mainnet.node_id].conn.send(bolt.encode_error("go away"))
        await p.closed.wait()
        assert p.close_reason == "peer_error"
        for n in (mainnet, testnet, other):
            await n.close(2)

    run(body)


# -- a hostile peer, in process ----------------------------------------------------


@pytest.mark.parametrize("num_pong_bytes", [65531, 0], ids=["big_pongs", "idle"])
def test_ping_floods_are_cut(num_pong_bytes: int) -> None:
    """2,000 pings, no gossip between them: asking for 65,531-byte pongs
    trips ``max_pong_bytes`` after 4 pongs (before any limit: all 2,000
    answered, 131 MB out for 160 KB in); asking for none trips ``max_pings``
    (the exemption for LDK's flow control covers only pings that follow
    gossip). Either way the peer is warned and disconnected."""

    async def body() -> None:
        async with GossipNode(keys("pinged"), config=NodeConfig(sync=False)) as node:
            host, port = await node.listen()
            conn = await hello(f"{node.node_id.hex()}@{host}:{port}", "pinger")
            with contextlib.suppress(TransportError, OSError, TimeoutError):
                async with asyncio.timeout(30):
                    for _ in range(2000):
                        await conn.send(bolt.encode_ping(num_pong_bytes))
            msg_types = await closed_by_peer(conn)
            assert msg_types.count(bolt.PONG) <= node.config.max_pings
            assert bolt.WARNING in msg_types
            assert node.counters["closed:ping_flood"] == 1

    run(body)


def _served(graph: gen.SyntheticGraph) -> tuple[Pipeline, list[int]]:
    """A pipeline holding ``graph``, and its ``short_channel_id``s ascending."""
    served = Pipeline(policy="archive")
    for m in graph.messages():
        served.submit(0, m)
    while served.queued:
        served.process()
    return served, sorted(
        parse_message(a).short_channel_id or 0 for a in graph.channel_announcements
    )


def _zlib_query(ids_bytes: bytes) -> bytes:
    """A ``query_short_channel_ids`` whose id list is zlib-encoded (encoding
    1), as Electrum before 4.5 sends it."""
    encoded = bytes([bolt.ENCODING_ZLIB]) + zlib.compress(ids_bytes)
    return (
        struct.pack(">H", bolt.QUERY_SHORT_CHANNEL_IDS)
        + MAINNET_CHAIN_HASH
        + struct.pack(">H", len(encoded))
        + encoded
    )


def test_zlib_encoded_queries_are_answered_and_bombs_are_refused() -> None:
    """A zlib-encoded ``query_short_channel_ids`` (deprecated by BOLT #7,
    still sent by older peers) gets its answer; one that inflates past
    ``MAX_INFLATED_SCID_BYTES`` gets a ``warning`` naming the message and the
    fault, and the connection ends (before: any zlib query ended the
    connection at once, with no word to the peer)."""
    graph = gen.synthetic_graph(30, 12, seed=5)
    served, scids = _served(graph)
    wanted = scids[:10]

    async def body() -> None:
        async with GossipNode(keys("zlib-srv"), served, config=NodeConfig(sync=False)) as node:
            host, port = await node.listen()
            address = f"{node.node_id.hex()}@{host}:{port}"
            conn = await hello(address, "electrum-4.3")
            await conn.send(_zlib_query(b"".join(s.to_bytes(8, "big") for s in wanted)))
            got: list[bytes] = []
            while bolt.message_type(m := await conn.recv()) != bolt.REPLY_SHORT_CHANNEL_IDS_END:
                got.append(m)
            answered = {parse_message(m).short_channel_id for m in got if m[:2] == b"\x01\x00"}
            assert answered == set(wanted)
            await conn.close()

            bomb = await hello(address, "bomber")
            await bomb.send(_zlib_query(bytes(8 * 300_000)))  # 2.4 MB of ids in 2.4 kB
            got = []
            with contextlib.suppress(TransportError, OSError, TimeoutError):
                async with asyncio.timeout(10):
                    while True:
                        got.append(await bomb.recv())
            warnings = [bolt.decode_error(m) for m in got if bolt.message_type(m) == bolt.WARNING]
            assert warnings == ["malformed query_short_channel_ids: zlib_too_large"], got
            assert node.counters["protocol_violation:malformed_message"] == 1
            await bomb.close()

    run(body)


def _init_with(features: set[int] = frozenset(), tlvs: bytes | None = None) -> bytes:  # type: ignore[assignment]
    base = bolt.Init(features=set(features), networks=None).encode()
    if tlvs is None:
        return bolt.Init(features=set(features), networks=[MAINNET_CHAIN_HASH]).encode()
    return base + tlvs


BAD_INITS = {
    "unknown_required_feature": _init_with({100}),
    "unknown_even_tlv": _init_with(tlvs=bytes([2, 1, 0])),
    "tlv_order": _init_with(tlvs=bytes([3, 1, 0, 1, 32]) + MAINNET_CHAIN_HASH),
}


@pytest.mark.parametrize("case", sorted(BAD_INITS))
def test_bad_init_fails_the_connection_both_ways(case: str) -> None:
    """BOLT #1: an ``init`` with an unknown even feature bit, an unknown even
    TLV type or TLV types out of order fails the connection, whether the
    peer dialled us (server) or we dialled it (client)."""
    bad = BAD_INITS[case]
    reason = case if case == "unknown_required_feature" else f"init_{case}"

    async def body() -> None:
        async with GossipNode(keys("strict"), config=NodeConfig(sync=False)) as node:
            host, port = await node.listen()
            # as server
            conn = await hello(f"{node.node_id.hex()}@{host}:{port}", "bad-client", bad)
            assert bolt.ERROR in await closed_by_peer(conn, 10)
            assert node.counters[f"closed:{reason}"] == 1
            # as client: a server that answers with the bad init
            server_keys = keys("bad-server")

            async def handle(c: Connection) -> None:
                await c.send(bad)
                await closed_by_peer(c, 10)

            async with fake_peer(server_keys, handle) as sport:
                with pytest.raises(TransportError) as e:
                    await node.connect(server_keys.node_id, "127.0.0.1", sport)
            assert e.value.detail == reason

    run(body)


def test_unsolicited_replies_are_not_taken() -> None:
    """A server that pushes ``reply_channel_range`` of 8,000 random ids, 500
    times, at a ``sync`` that asked nothing (filter mode): every id is
    ignored and counted, none is remembered (before: 617 MiB after 827)."""
    rng = random.Random(3)

    async def body() -> None:
        server_keys = keys("pusher")
        done = asyncio.Event()

        async def handle(c: Connection) -> None:
            await c.send(bolt.Init(networks=[MAINNET_CHAIN_HASH]).encode())
            for _ in range(500):
                ids = sorted(rng.getrandbits(64) for _ in range(8000))
                reply = bolt.ReplyChannelRange(MAINNET_CHAIN_HASH, 0, 0xFFFFFFFF, 1, ids)
                await c.send(reply.encode())
            done.set()
            await closed_by_peer(c, 30)

        async with fake_peer(server_keys, handle) as port, GossipNode(keys("victim")) as node:
            await node.connect(server_keys.node_id, "127.0.0.1", port)
            await done.wait()
            for _ in range(200):
                if node.counters["unsolicited_reply_channel_range"] == 500:
                    break
                await asyncio.sleep(0.05)
            assert node.counters["unsolicited_reply_channel_range"] == 500
            assert not node._queries.requested_scids
            assert all(not p.our_queries.scid_chunks for p in node.peers.values())

    run(body)


@pytest.mark.parametrize("refusal", ["warning", "silence"])
def test_a_peer_that_ignores_queries_is_asked_with_a_filter_on_a_new_connection(
    refusal: str,
) -> None:
    """A server that acts as LDK does: it starts a dump only on the first
    ``gossip_timestamp_filter`` of a connection (here: only when it asks
    for everything), answers ``query_channel_range``, and ignores
    ``query_short_channel_ids`` (``silence``; ``warning``: it refuses
    ``query_channel_range`` with a warning instead). The query client, whose
    first filter said "from now on", reconnects and asks with a filter as
    the first gossip message of the new connection, logs it once, and gets
    the whole graph (before: a second filter on the same connection, which
    LDK ignores: nothing)."""
    graph = gen.synthetic_graph(20, 10, seed=5)
    scids = sorted(parse_message(a).short_channel_id or 0 for a in graph.channel_announcements)

    async def body() -> None:
        server_keys = keys("ldk-like")
        dumped = asyncio.Event()
        connections = 0

        async def handle(c: Connection) -> None:
            nonlocal connections
            connections += 1
            await c.send(bolt.Init(networks=[MAINNET_CHAIN_HASH]).encode())
            first_filter = True
            while True:
                m = await c.recv()
                msg_type = bolt.message_type(m)
                if msg_type == bolt.QUERY_CHANNEL_RANGE:
                    if refusal == "warning":
                        await c.send(bolt.encode_warning("Not implemented"))
                    else:
                        q = bolt.QueryChannelRange.decode(m)
                        reply = bolt.ReplyChannelRange(
                            MAINNET_CHAIN_HASH, q.first_blocknum, q.number_of_blocks, 1, scids
                        )
                        await c.send(reply.encode())
                elif msg_type == bolt.GOSSIP_TIMESTAMP_FILTER:
                    f = bolt.GossipTimestampFilter.decode(m)
                    if first_filter and f.first_timestamp == 0:
                        await c.send_many(graph.messages())
                        dumped.set()
                    first_filter = False
                # query_short_channel_ids: no reply, no warning

        pipeline = Pipeline(policy="archive")
        cfg = NodeConfig(sync_mode="query", query_timeout=1.0)
        async with (
            fake_peer(server_keys, handle) as port,
            GossipNode(keys("asker"), pipeline, config=cfg) as node,
        ):
            await node.connect(server_keys.node_id, "127.0.0.1", port)
            async with asyncio.timeout(20):
                await dumped.wait()
            for _ in range(200):
                await node.drain()
                if len(pipeline.graph) == 20:
                    break
                await asyncio.sleep(0.05)
            why = "refused" if refusal == "warning" else "timeout"
            assert node.counters[f"query_fallback:{why}"] == 1
            assert node.counters["closed:query_fallback"] == 1
            assert connections == 2
            assert len(pipeline.graph) == 20
            assert not node.querying

    run(body)


def test_extended_queries_are_answered_and_mismatched_tlvs_refused() -> None:
    """As a server: ``query_channel_range`` with ``query_option``
    timestamps and checksums gets both for every id (Core Lightning and
    Eclair ask for them), each checksum the CRC-32C of the update without
    signature and timestamp; ``query_short_channel_ids`` with ``query_flags``
    gets only what the flags ask; flags that do not match the ids one for
    one get a ``warning`` naming the message and the fault, and a disconnect."""
    graph = gen.synthetic_graph(30, 12, seed=9)
    served, scids = _served(graph)

    async def body() -> None:
        async with GossipNode(keys("ext-srv"), served, config=NodeConfig(sync=False)) as node:
            host, port = await node.listen()
            address = f"{node.node_id.hex()}@{host}:{port}"
            conn = await hello(address, "cln-like")
            option = bolt.QUERY_OPTION_TIMESTAMPS | bolt.QUERY_OPTION_CHECKSUMS
            await conn.send(
                bolt.QueryChannelRange(MAINNET_CHAIN_HASH, query_option=option).encode()
            )
            while bolt.message_type(m := await conn.recv()) != bolt.REPLY_CHANNEL_RANGE:
                pass
            r = bolt.ReplyChannelRange.decode(m)
            assert r.short_channel_ids == scids
            assert r.timestamps is not None and r.checksums is not None
            for s, ts, cs in zip(r.short_channel_ids, r.timestamps, r.checksums, strict=True):
                ch = served.graph.channel(s)
                assert ch is not None and ch[1] is not None and ch[2] is not None
                assert ts == (bolt.update_timestamp(ch[1]), bolt.update_timestamp(ch[2]))
                assert cs == (bolt.update_checksum(ch[1]), bolt.update_checksum(ch[2]))
            # only the update of direction 1 of the first 5 channels
            flags = [bolt.QUERY_FLAG_UPDATE_2] * 5
            await conn.send(
                bolt.QueryShortChannelIds(MAINNET_CHAIN_HASH, scids[:5], flags).encode()
            )
            got = []
            while bolt.message_type(m := await conn.recv()) != bolt.REPLY_SHORT_CHANNEL_IDS_END:
                got.append(m)
            assert got == [served.graph.channel(s)[2] for s in scids[:5]]  # type: ignore[index]
            # flags for 4 of 5 ids
            bad = bolt.QueryShortChannelIds(MAINNET_CHAIN_HASH, scids[:5], flags[:4]).encode()
            await conn.send(bad)
            got = []
            with contextlib.suppress(TransportError, OSError, TimeoutError):
                async with asyncio.timeout(10):
                    while True:
                        got.append(m := await conn.recv())
            warnings = [bolt.decode_error(m) for m in got if bolt.message_type(m) == bolt.WARNING]
            assert warnings == ["malformed query_short_channel_ids: tlv_count_mismatch"]
            await conn.close()

    run(body)


def test_connections_from_one_network_group_are_capped(caplog: pytest.LogCaptureFixture) -> None:
    """200 connections from addresses of one /16: at most
    ``max_inbound_per_netgroup`` are kept, the rest closed at once and
    counted, with a log line, not a traceback each; a peer from another
    network group still connects."""

    async def body() -> None:
        cfg = NodeConfig(sync=False, max_inbound_per_netgroup=8)
        async with GossipNode(keys("capped"), config=cfg) as node:
            host, port = await node.listen("127.0.0.1")
            socks = []
            for i in range(200):
                src = f"127.1.{i % 50}.{2 + i // 50}"  # 200 addresses, one /16
                r, w = await asyncio.open_connection(host, port, local_addr=(src, 0))
                socks.append((r, w))
            for _ in range(100):
                if node.counters["refused_connection_limit"] >= 192:
                    break
                await asyncio.sleep(0.02)
            assert node.counters["refused_connection_limit"] == 192
            assert node.counters["refused:netgroup"] == 192
            assert dict(node._inbound.by_group) == {"127.1.0.0/16": 8}
            # an honest peer from 127.0.0.1 (another /16) gets in
            conn = await hello(f"{node.node_id.hex()}@{host}:{port}", "honest")
            await conn.close()
            for _, w in socks:
                w.close()

    with caplog.at_level("INFO", logger="lngossip.net"):
        run(body)
    lines = [r for r in caplog.records if "refusing connections" in r.getMessage()]
    assert 1 <= len(lines) <= 3
    assert not any(r.exc_info for r in caplog.records)


def test_processing_loop_survives_a_failing_callback() -> None:
    """``on_accepted`` raising does not end the processing loop: it is logged
    and counted, and later gossip is still processed."""
    graph = gen.synthetic_graph(30, 12, seed=4)
    calls = 0

    def flaky(batch: list[bytes]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("disk full")

    async def body() -> None:
        cfg = NodeConfig(sync=False, batch=16)
        async with GossipNode(keys("flaky"), Pipeline(policy="archive"), config=cfg) as node:
            node.on_accepted = flaky
            host, port = await node.listen()
            conn = await hello(f"{node.node_id.hex()}@{host}:{port}", "feeder")
            for m in graph.messages():
                await conn.send(m)
            for _ in range(200):
                await node.drain()
                if len(node.pipeline.graph) == 30 and calls > 1:
                    break
                await asyncio.sleep(0.05)
            assert node.counters["processing_errors"] == 1
            assert len(node.pipeline.graph) == 30 and calls > 1
            await conn.close()

    run(body)


def test_relay_in_a_line_reaches_the_end_once_and_never_comes_back() -> None:
    """A - B - C on loopback: gossip a peer injects at A reaches C exactly
    once (through B), and nothing comes back to A."""
    graph = gen.synthetic_graph(50, 20, seed=9)
    msgs = graph.messages()

    async def body() -> None:
        cfg = NodeConfig(relay_interval=0)
        a, b, c = (GossipNode(keys(n), Pipeline(policy="archive"), config=cfg) for n in "ABC")
        async with a, b, c:
            a_addr, c_addr = await a.listen(), await c.listen()
            await b.connect(a.node_id, *a_addr)
            await b.connect(c.node_id, *c_addr)
            nodes = (a, b, c)
            for _ in range(200):  # every link has asked for gossip (filters set)
                if all(p.their_queries.filter for n in nodes for p in n.peers.values()):
                    break
                await asyncio.sleep(0.02)
            injector = await hello(f"{a.node_id.hex()}@{a_addr[0]}:{a_addr[1]}", "X")
            for m in msgs:
                await injector.send(m)
            for _ in range(400):
                for n in nodes:
                    await n.drain()
                if set(dump(c.pipeline.graph)) == set(msgs):
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # anything on its way back would arrive now
            for n in nodes:
                await n.drain()
            assert set(dump(c.pipeline.graph)) == set(msgs)
            assert c.counters["gossip_received"] == len(msgs)  # each once
            assert b.counters["gossip_received"] == len(msgs)
            assert a.counters["gossip_received"] == len(msgs)  # only from X: none came back
            assert b.counters["relay_sent"] == len(msgs)
            await injector.close()

    run(body)


EMFILE_NODE = """
import asyncio, logging, resource, sys
from lngossip.net.node import GossipNode, NodeConfig
from lngossip.net.transport import Keys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
async def main():
    cfg = NodeConfig(
        sync=False, max_inbound=10_000, max_pending_inbound=10_000, max_inbound_per_netgroup=10_000
    )
    async with GossipNode(Keys(bytes(31) + b"\\x07"), config=cfg) as node:
        host, port = await node.listen()
        print(port, flush=True)
        await asyncio.sleep(float(sys.argv[1]))
        print("accept_out_of_resources", node.counters["accept_out_of_resources"], flush=True)
asyncio.run(main())
"""


def test_out_of_descriptors_accepting_backs_off_with_one_log_line() -> None:
    """A node whose connection cap is set above its descriptor limit (64):
    200 connections exhaust the descriptors; accepting pauses and says so in
    one log line, not a traceback per attempt, and the node goes on."""
    proc = subprocess.Popen(
        [sys.executable, "-c", EMFILE_NODE, "6"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())

    async def flood() -> None:
        socks = []
        for _ in range(200):
            with contextlib.suppress(OSError):
                socks.append(await asyncio.open_connection("127.0.0.1", port))
        await asyncio.sleep(3)
        for _, w in socks:
            w.close()

    asyncio.run(flood())
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    counted = int(out.split()[-1])
    assert counted >= 1, (out, err)
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "accept() failed" in line]
    assert 1 <= len(lines) <= 1 + counted // 100, err


# -- one graph per node --------------------------------------------------------------


def test_poisoning_a_loaded_channel_is_a_duplicate(small_graph: gen.SyntheticGraph) -> None:
    """In process: the forged announcement is decided ``duplicate`` by the
    pipeline that loaded the file, and the graph keeps the original."""
    original = small_graph.channel_announcements[5]
    forged = forged_announcement(original)
    (scid,) = struct.unpack_from(">Q", original, 292)

    async def body() -> None:
        pipeline = make_pipeline("rust", policy="archive")
        await asyncio.to_thread(ingest.run, pipeline, [(0, m) for m in small_graph.messages()])
        node = GossipNode(keys("server"), pipeline, config=NodeConfig(sync=False))
        host, port = await node.listen()
        await send_and_confirm(f"{node.node_id.hex()}@{host}:{port}", forged)
        c = pipeline.counters()["decisions"]["channel_announcement"]
        assert c["duplicate"] == 1 and c["accepted"] == 400
        channel = Graph(pipeline).channel(scid)
        assert channel is not None and channel.raw == original
        await node.close(2)

    run(body)


def test_node_serves_a_dump_while_its_graph_grows(small_graph: gen.SyntheticGraph) -> None:
    """B serves its graph to A while B syncs a second graph from C: no
    exception, A gets B's graph, B gets C's."""
    # C's graph: newer, other channels (same node keys: its node announcements win)
    other = gen.synthetic_graph(300, 90, seed=8, base_timestamp=1_767_225_600 + 86_400)
    reference = make_pipeline("rust", policy="archive")
    ingest.run(reference, [(0, m) for m in [*small_graph.messages(), *other.messages()]])
    want_b = set(dump(reference.graph))
    b_channels = {*small_graph.channel_announcements, *small_graph.channel_updates}

    async def body() -> None:
        b_pipeline = make_pipeline("rust", policy="archive")
        await asyncio.to_thread(ingest.run, b_pipeline, [(0, m) for m in small_graph.messages()])
        c_pipeline = make_pipeline("rust", policy="archive")
        await asyncio.to_thread(ingest.run, c_pipeline, [(0, m) for m in other.messages()])
        c = GossipNode(keys("C"), c_pipeline, config=NodeConfig(sync=False))
        b = GossipNode(keys("B"), b_pipeline, config=NodeConfig(dump_page=16))
        a = GossipNode(keys("A"), make_pipeline("rust", policy="archive"))
        c_addr = await c.listen()
        b_addr = await b.listen()
        # A asks B for everything while B takes C's graph in
        peers = await asyncio.gather(a.connect(b.node_id, *b_addr), b.connect(c.node_id, *c_addr))
        assert all(peers)
        for _ in range(600):
            await asyncio.sleep(0.05)
            await b.drain()
            await a.drain()
            if set(dump(b_pipeline.graph)) == want_b and b_channels <= set(dump(a.pipeline.graph)):
                break
        assert set(dump(b_pipeline.graph)) == want_b
        assert len(want_b - set(small_graph.messages())) > 500  # B took plenty in
        # A got B's whole dump (a node announcement B replaced meanwhile may
        # reach A in either version)
        assert b_channels <= set(dump(a.pipeline.graph))
        assert a.pipeline.graph.node_count() >= 120
        assert b.counters["processing_errors"] == 0
        assert not [k for k in b.counters if k.startswith("closed:") and "cancelled" not in k]
        for n in (a, b, c):
            await n.close(2)

    run(body)
