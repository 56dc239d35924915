"""The peer layer, one regression test per production incident (DESIGN.md):
simultaneous dial (iroh #2307), a ping timer across a reconnect (snarkOS
#3331), a disconnect in the middle of a sync (Core Lightning #8055),
shutdown under load (lnd #8912), a flooding peer (Core Lightning #7972),
and a full sync from four serving nodes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from lngossip import gen, ingest
from lngossip.graph import dump
from lngossip.ingest import PipelineLike, make_pipeline, peak_rss_bytes
from lngossip.net import messages as bolt
from lngossip.net.node import Node, NodeConfig, Peer
from lngossip.net.transport import Connection, Keys, TransportError, connect
from lngossip.wire import MAINNET_CHAIN_HASH, parse_message
from tests.conftest import needs_data, topology
from tests.test_hostile import fake_peer

# the first 20,000 topology messages: 5,269 channels with updates and nodes
SUBSET = 20_000


def keys(label: str) -> Keys:
    return Keys(hashlib.sha256(label.encode()).digest())


async def make_node(label: str, *, serves: PipelineLike | None = None, **cfg: Any) -> Node:
    """A listening node; ``serves``: a loaded pipeline (shared by serving nodes)."""
    pipeline_kw = cfg.pop("pipeline", {})
    pipeline = serves or make_pipeline("rust", policy="archive", threads=2, **pipeline_kw)
    n = Node(keys(label), pipeline, config=NodeConfig(**cfg))
    n.addr = await n.listen("127.0.0.1", 0)  # type: ignore[attr-defined]
    _made.append(n)
    return n


#: the nodes the running test made, closed by run() if the test fails
_made: list[Node] = []


async def until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.005)


def run(coro: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        _made.clear()
        try:
            await coro()
        except BaseException:
            # a failed test leaves no sockets behind to fail the next one
            for n in _made:
                with contextlib.suppress(Exception):
                    await n.close(1)
            raise
        finally:
            _made.clear()
        # nothing of ours is left running
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not others, others

    asyncio.run(main())


def _link(node: Node, peer: bytes) -> tuple[Any, Any]:
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


def graph_messages(node: Node) -> set[bytes]:
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
        await asyncio.wait_for(node._wait_for_room(), 1.0)
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
        node = Node(keys("forget"), make_pipeline("rust"))
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
        node = Node(keys("slow"), _SlowPipeline(inner, 0.6), on_accepted=written.extend)  # type: ignore[arg-type]
        await node.start()
        for m in msgs:
            inner.submit(1, m)
        node._work.set()
        await until(lambda: node._busy_processing, what="a batch in flight")
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
