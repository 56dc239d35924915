"""``lngossip serve``, ``lngossip sync`` and the loopback TCP ``demo``:
the command-line side of :mod:`lngossip.net`.

Times are in seconds. Peers are given as ``NODE_ID@HOST:PORT`` with the
66-hex-digit ``node_id`` (BOLT #8 needs it to start the handshake).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator

from coincurve import PublicKey
from rich.console import Console
from rich.live import Live

from lngossip.cli import Inputs, open_out, pipeline_settings
from lngossip.engine import DEFAULT_BATCH, Engine, PipelineLike, PipelineSettings, make_pipeline
from lngossip.errors import ConfigError
from lngossip.graph import Graph
from lngossip.ingest import IngestReport, report_from, run
from lngossip.metrics import serve_metrics
from lngossip.net import messages as bolt
from lngossip.net.node import GossipNode, NodeConfig
from lngossip.net.transport import CodecName, Keys, TransportError, accept
from lngossip.report import emit_report, store_damage
from lngossip.rgs import SNAPSHOT_INTERVAL_S
from lngossip.rgs_server import RgsServer
from lngossip.wire import MAINNET_CHAIN_HASH

__all__ = ["cmd_serve", "cmd_sync", "demo_tcp", "parse_peer"]

log = logging.getLogger("lngossip.netcli")


def parse_peer(text: str) -> tuple[bytes, str, int]:
    """``NODE_ID@HOST:PORT`` -> (33-byte node_id, host, port).

    Raises:
        ConfigError: when the text is not of that shape.
    """
    try:
        node_hex, addr = text.split("@", 1)
        host, port = addr.rsplit(":", 1)
        node_id = bytes.fromhex(node_hex)
        if len(node_id) != 33 or node_id[0] not in (2, 3):
            raise ValueError("node_id must be 33 bytes starting 02 or 03")
        PublicKey(node_id)  # on the curve, or ValueError
        return node_id, host.strip("[]"), int(port)
    except ValueError as e:
        raise ConfigError(f"peer must be NODE_ID@HOST:PORT ({e}): {text!r}") from e


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); raises ConfigError."""
    try:
        host, port = text.rsplit(":", 1)
        return host.strip("[]"), int(port)
    except ValueError as e:
        raise ConfigError(f"an address must be HOST:PORT: {text!r}") from e


def _load_keys(path: str | None) -> Keys:
    if path is None:
        return Keys()
    try:
        return Keys.from_file(path)
    except FileNotFoundError:
        keys = Keys()
        keys.to_file(path)
        return keys


def _stop_on_signals(stop: asyncio.Event, also: threading.Event | None = None) -> None:
    """SIGINT and SIGTERM set ``stop`` (installed before the address is
    printed, so a signal right after it still closes cleanly), and ``also``
    for work running in a thread (a file load)."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        stop.set()
        if also is not None:
            also.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)


class _Interrupted(Exception):
    """A signal arrived while ``serve`` loaded its files."""


def store_summary(pipeline: PipelineLike) -> str | None:
    """One line on what opening the store found (damaged ranges skipped and
    where the original was kept, a damaged tail dropped), or None without a
    store."""
    rep = pipeline.store_report()
    if rep is None:
        return None
    line = (
        f"store {rep['path']}: {'created' if rep['created'] else 'opened'}, "
        f"{rep['records_loaded']:,} records"
    )
    if rep["skipped_regions"]:
        line += ", " + store_damage(rep)
    if rep["truncated_bytes"]:
        line += f", damaged tail ({rep['damage']}) of {rep['truncated_bytes']:,} bytes dropped"
    if rep["rejected_records"]:
        line += f", {rep['rejected_records']:,} records with a failed signature dropped"
    return line


async def _serve(args: argparse.Namespace) -> int:
    err = Console(stderr=True, soft_wrap=True)
    if args.rgs and args.engine != "rust":
        raise ConfigError("--rgs needs --engine rust (snapshots are written by the core)")
    inputs = Inputs(args.gossip, args.format)
    keys = _load_keys(args.key_file)
    t0 = time.perf_counter()
    # one pipeline for the files and the peers: the same graph, the same rules
    pipeline = make_pipeline(args.engine, **pipeline_settings(args, policy="archive"))
    if (line := store_summary(pipeline)) is not None:
        err.print(
            f"serve: {line}: {len(pipeline.graph):,} channels, "
            f"{pipeline.graph.node_count():,} nodes in {time.perf_counter() - t0:.2f} s, "
            f"{pipeline.counters()['signatures_verified']} signatures verified"
        )
    stop = asyncio.Event()
    interrupted = threading.Event()
    # installed before the load: SIGINT/SIGTERM end it within a batch
    _stop_on_signals(stop, interrupted)

    def messages() -> Iterator[tuple[int, bytes]]:
        for m in inputs.messages():
            if interrupted.is_set():
                raise _Interrupted
            yield 0, m

    if inputs.paths:
        try:
            report = await asyncio.to_thread(
                run, pipeline, messages(), engine=args.engine, overlap=True
            )
        except _Interrupted:
            # what the batches so far accepted is stored; the queue is dropped
            # (it is still in the files)
            pipeline.sync_store()
            inputs.warn_damage()
            err.print(
                f"serve: stopped by a signal while loading {inputs.reports[-1].path}; graph "
                f"{len(pipeline.graph):,} channels, {pipeline.graph.node_count():,} nodes"
            )
            return 0
        inputs.warn_damage()
        acc = sum(v["accepted"] for v in report.decisions.values())
        err.print(
            f"serve: {acc:,} accepted messages from {len(inputs.reports)} file(s) in "
            f"{report.elapsed_s:.1f} s; graph {len(pipeline.graph):,} channels, "
            f"{pipeline.graph.node_count():,} nodes"
        )
    pipeline.set_policy(args.policy)
    node = GossipNode(keys, pipeline, config=NodeConfig(sync=False, codec=args.codec))
    rgs = None
    if args.rgs:
        rgs = rgs_server(pipeline)
        rhost, rport = await rgs.start(*parse_listen(args.rgs))
        err.print(
            f"serve: Rapid Gossip Sync snapshots at http://{rhost}:{rport}/snapshot/{{T}} "
            "and /snapshot/v2/{T}"
        )
    if args.metrics:
        extra = [rgs.collector()] if rgs is not None else []
        mhost, mport = serve_metrics(node, *parse_listen(args.metrics), extra)
        err.print(f"serve: metrics at http://{mhost}:{mport}/metrics")
    host, port = await node.listen(*parse_listen(args.listen))
    print(f"{node.node_id.hex()}@{host}:{port}", flush=True)
    await stop.wait()
    if rgs is not None:
        await rgs.close()
    await node.close(timeout=5)
    return 0


def rgs_server(pipeline: PipelineLike) -> RgsServer:
    """The ``serve --rgs`` HTTP server of ``pipeline``'s graph: snapshots
    built by the core off the event loop (``Graph.rgs_snapshot``, which
    locks the graph only while it reads it), cached per 3-hour grid step of
    the wall clock (the graph's generation: a live graph changes with every
    batch, and the reference server too regenerates once per interval).

    ``serve`` refuses ``--rgs`` with the baseline engine before it starts
    (:meth:`Graph.rgs_snapshot` raises ``ConfigError`` there).
    """
    graph = Graph(pipeline)

    def snapshot(since: int, version: int) -> bytes:
        return graph.rgs_snapshot(since, version)[0]

    return RgsServer(snapshot, generation=lambda: int(time.time()) // SNAPSHOT_INTERVAL_S)


def cmd_serve(args: argparse.Namespace) -> int:
    """``lngossip serve``: serve the graph of a store and of gossip files."""
    return asyncio.run(_serve(args))


async def sync_from(
    peers: list[tuple[bytes, str, int]],
    *,
    engine: Engine,
    settings: PipelineSettings,
    until_idle: float,
    on_accepted: Callable[[list[bytes]], object] | None = None,
    query: bool = False,
    show: Console | None = None,
    since_margin: int = 2 * 3600,
    query_timeout: float = 30.0,
    timeout: float | None = None,
    stop: asyncio.Event | None = None,
    metrics: tuple[str, int] | None = None,
    codec: CodecName = "rust",
    batch: int = DEFAULT_BATCH,
) -> tuple[IngestReport, GossipNode]:
    """Connect to ``peers``, sync until no gossip came for ``until_idle``
    seconds (counted from the start until the first message) and every
    admitted message is decided, or until ``timeout`` seconds in all, or
    until ``stop`` is set (SIGTERM, SIGINT); close, and report.

    The pipeline is ``engine``'s with ``settings`` (see
    :func:`lngossip.cli.pipeline_settings`); it verifies ``batch`` messages
    at a time.

    Raises:
        ConfigError: when no peer could be reached (the reasons are listed).

    With a ``store`` in ``settings``, the graph is opened from it first and the
    peers are asked only for gossip from ``since_margin`` seconds before
    the newest stored timestamp on (``gossip_timestamp_filter``); in query
    mode, channels the store has are not fetched again. A store that lost
    records when it was opened (damage skipped or a torn tail truncated,
    signatures that failed ``verify_store``) is refilled: peers are asked
    for everything, and dedup drops what the store still has without a
    signature check. ``codec`` picks the BOLT #8 frame implementation (see
    :class:`NodeConfig`)."""
    pipeline = make_pipeline(engine, **settings)
    newest = pipeline.graph.newest_timestamp()
    first_timestamp = max(newest - since_margin, 0) if newest is not None else 0
    rep = pipeline.store_report()
    if rep is not None and (
        rep["skipped_regions"] or rep["truncated_bytes"] or rep["rejected_records"]
    ):
        first_timestamp = 0  # lost records may be of any age: ask for them again
        log.info("the store lost records when it was opened: asking peers for all gossip")
    if show is not None and (line := store_summary(pipeline)) is not None:
        show.print(f"sync: {line}; asking for gossip from timestamp {first_timestamp}")
    node = GossipNode(
        Keys(),
        pipeline,
        config=NodeConfig(
            sync_mode="query" if query else "filter",
            first_timestamp=first_timestamp,
            query_timeout=query_timeout,
            codec=codec,
            batch=batch,
        ),
        on_accepted=on_accepted,
    )
    if metrics is not None:
        serve_metrics(node, *metrics)
    t0 = time.monotonic()
    deadline = t0 + timeout if timeout is not None else None
    results = await asyncio.gather(
        *(node.connect(n, h, p) for n, h, p in peers), return_exceptions=True
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    for r in failures:
        if not isinstance(r, Exception):
            raise r  # cancellation and the like
    if len(failures) == len(results):
        await node.close(2)
        raise ConfigError(
            "no peer could be reached: " + "; ".join(f"{type(e).__name__}: {e}" for e in failures)
        )
    live: Live | None = None
    if show is not None:
        live = Live(console=show, refresh_per_second=4, transient=True)
        live.start()
    try:
        last = (time.perf_counter(), 0)
        while True:
            await asyncio.sleep(0.25)
            received = node.counters["gossip_received"]
            now_m = time.monotonic()
            idle = now_m - (node.last_gossip_at or t0)
            if deadline is not None and now_m >= deadline:
                node.counters["sync_timeout"] += 1
                break
            if stop is not None and stop.is_set():
                break
            if live is not None:
                c = pipeline.counters()
                acc = sum(v["accepted"] for v in c["decisions"].values())
                now = time.perf_counter()
                rate = (received - last[1]) / max(now - last[0], 1e-9)
                last = (now, received)
                live.update(
                    f"peers {len(node.peers)}  received {received:,}  {rate:,.0f} msg/s  "
                    f"queue {c['queue_bytes']:,} B  accepted {acc:,}"
                )
            # not while our queries are outstanding (a peer may answer them
            # only after query_timeout) or a fallback reconnect is under way
            quiet = idle >= until_idle and not pipeline.queued and not node.querying
            if quiet or (not node.connections and not pipeline.queued and not node.querying):
                break
    finally:
        if live is not None:
            live.stop()
    if not (stop is not None and stop.is_set()):
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(remaining):
                await node.drain()
    # the sync's own time: up to the last message received or decided, not the
    # idle wait; never before the start
    ends = [t for t in (node.last_gossip_at, node.last_processed_at) if t is not None]
    elapsed = max([t0, *ends]) - t0
    await node.close(timeout=10)
    report = report_from(pipeline, engine, elapsed, node.counters["gossip_received"])
    report.first_timestamp = first_timestamp
    report.bytes_received = node.counters["bytes_received"]
    return report, node


def cmd_sync(args: argparse.Namespace) -> int:
    """``lngossip sync``: sync from peers and summarise like ``ingest``."""
    peers = [parse_peer(p) for p in args.addresses]
    err = Console(stderr=True, soft_wrap=True)
    show = err if err.is_terminal and not args.no_progress else None

    async def main() -> IngestReport:
        stop = asyncio.Event()
        _stop_on_signals(stop)  # SIGTERM like SIGINT: close, write, summarise
        with open_out(args) as writer:
            report, _ = await sync_from(
                peers,
                engine=args.engine,
                settings=pipeline_settings(args),
                until_idle=args.until_idle,
                on_accepted=writer.write_all if writer is not None else None,
                query=args.query,
                show=show,
                since_margin=args.since_margin,
                query_timeout=args.query_timeout,
                timeout=args.timeout,
                stop=stop,
                metrics=parse_listen(args.metrics) if args.metrics else None,
                codec=args.codec,
                batch=args.batch,
            )
            if writer is not None:
                report.accepted_written = writer.messages
            return report

    report = asyncio.run(main())
    emit_report(report, args, "lngossip sync")
    if report.messages == 0:
        err.print("lngossip sync: no gossip received from any peer")
        return 1
    return 0


async def _bad_peer(msgs: list[bytes], keys: Keys, ready: asyncio.Event, port: list[int]) -> None:
    """A peer that answers the handshake and init, then sends ``msgs``
    (malformed and forged gossip) and nothing else."""
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            conn = await accept(reader, writer, keys)
            await conn.send(bolt.Init(networks=[MAINNET_CHAIN_HASH]).encode())
            while bolt.message_type(await conn.recv()) != bolt.INIT:
                pass
            for m in msgs:
                await conn.send(m)
            await asyncio.sleep(0.5)
            await conn.close()
        except (TransportError, OSError):
            writer.close()
        finally:
            done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port.append(server.sockets[0].getsockname()[1])
    ready.set()
    try:
        await done.wait()
    finally:
        server.close()
        await server.wait_closed()


async def demo_tcp(args: argparse.Namespace) -> IngestReport:
    """The TCP demo: ``args.peers`` serving nodes with a signed synthetic
    graph and one bad peer, all on loopback; one node syncs from all of them
    over BOLT #8 and the report of its pipeline is returned."""
    from lngossip import gen

    graph = gen.synthetic_graph(args.channels, max(args.channels // 5, 10))
    # the serving nodes share one pipeline holding the verified graph
    served = make_pipeline(args.engine, policy="archive")
    await asyncio.to_thread(run, served, ((0, m) for m in graph.messages()), engine=args.engine)
    bad = [m for p, m in gen.demo_stream(graph, peers=args.peers) if p == args.peers]
    servers = [GossipNode(Keys(), served, config=NodeConfig(sync=False)) for _ in range(args.peers)]
    addrs = [await s.listen("127.0.0.1", 0) for s in servers]
    peers = [(s.node_id, h, p) for s, (h, p) in zip(servers, addrs, strict=True)]
    bad_keys, ready = Keys(), asyncio.Event()
    port: list[int] = []
    bad_task = asyncio.create_task(_bad_peer(bad, bad_keys, ready, port))
    await ready.wait()
    peers.append((bad_keys.node_id, "127.0.0.1", port[0]))
    err = Console(stderr=True, soft_wrap=True)
    try:
        with open_out(args) as writer:
            report, _ = await sync_from(
                peers,
                engine=args.engine,
                settings=pipeline_settings(args),
                until_idle=1.0,
                on_accepted=writer.write_all if writer is not None else None,
                show=err if err.is_terminal and not args.no_progress else None,
                batch=args.batch,
            )
            if writer is not None:
                report.accepted_written = writer.messages
    finally:
        for s in servers:
            await s.close(2)
        bad_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await bad_task
    return report
