"""The ``lngossip`` command: ``ingest`` gossip files, or run the ``demo``.

Exit status: 0 on success, 1 when ``sync`` received no gossip from any
peer, 2 when an input cannot be read or an option is invalid (the message
says which), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from lngossip import readers
from lngossip._core import LIMITS
from lngossip.errors import ConfigError, GossipError
from lngossip.ingest import ENGINES, IngestReport, PipelineLike, make_pipeline, replay_as_peers, run
from lngossip.report import emit_report, fmt_bytes, warn_damage, warn_store_damage
from lngossip.wire import MSG_KINDS

__all__ = ["main"]

#: ``--threads`` range, the core's bound (``limits.rs`` ``THREADS``): more
#: verification threads than this only cost memory.
MIN_THREADS, MAX_THREADS = LIMITS["threads"]


def _drive(
    args: argparse.Namespace,
    messages: Iterator[bytes] | None,
    stream: Iterator[tuple[int, bytes]] | None,
    title: str,
    finish: Callable[[IngestReport], None] | None = None,
    overlap: bool = False,
) -> IngestReport:
    """Shared by ``ingest`` and ``demo``: build the engine, run, write, print."""
    kwargs: dict[str, Any] = {"policy": args.policy}
    if args.threads is not None:
        kwargs["threads"] = args.threads
    if getattr(args, "store", None):
        kwargs["store"] = args.store
        if getattr(args, "verify_store", False):
            kwargs["verify_store"] = True
    pipeline: PipelineLike = make_pipeline(args.engine, **kwargs)
    if stream is None:
        assert messages is not None
        stream = replay_as_peers(messages, args.peers)
    err = Console(stderr=True, soft_wrap=True)
    with ExitStack() as stack:
        writer = None
        if args.out:
            writer = stack.enter_context(readers.GspWriter(args.out))
        show = err.is_terminal and not args.no_progress
        on_progress = None
        if show:
            progress = stack.enter_context(
                Progress(
                    SpinnerColumn(),
                    TextColumn("{task.description}"),
                    TimeElapsedColumn(),
                    console=err,
                    transient=True,
                )
            )
            task = progress.add_task("starting")

            def on_progress(n: int, p: PipelineLike) -> None:
                c = p.counters()
                acc = sum(c["decisions"][k]["accepted"] for k in MSG_KINDS)
                progress.update(
                    task,
                    description=(
                        f"{n:,} messages  {acc:,} accepted  "
                        f"{c['signatures_verified']:,} signatures  "
                        f"queue {fmt_bytes(c['queue_bytes'])}"
                    ),
                )

        report = run(
            pipeline,
            stream,
            engine=args.engine,
            batch=args.batch,
            on_accepted=writer.write_all if writer is not None else None,
            on_progress=on_progress,
            overlap=overlap,
        )
        if writer is not None:
            report.accepted_written = writer.messages
    if finish is not None:
        finish(report)
    emit_report(report, args, title)
    return report


def cmd_ingest(args: argparse.Namespace) -> int:
    if args.verify_store and not args.store:
        raise ConfigError("--verify-store needs --store")
    reports: list[readers.ReadReport] = []

    def messages() -> Iterator[bytes]:
        for path in args.files:
            rep = readers.ReadReport(path=str(path))
            reports.append(rep)
            yield from readers.iter_messages(path, rep, fmt=args.format)

    def finish(report: IngestReport) -> None:
        report.resyncs = sum(r.resyncs for r in reports)
        report.skipped_bytes = sum(r.skipped_bytes for r in reports)
        report.files = [vars(r) for r in reports]
        warn_damage(reports)
        warn_store_damage(report.store)

    # Fail on a missing path before any work (without opening it: a pipe
    # would lose the bytes read).
    for path in args.files:
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such file: {path}")
    # reading (decompressing) the files overlaps with verification
    _drive(args, messages(), None, "lngossip ingest", finish, overlap=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lngossip import gen

    err = Console(stderr=True, soft_wrap=True)
    if not args.in_process:
        import asyncio

        from lngossip.netcli import demo_tcp

        err.print(
            f"demo: {args.peers} nodes serve a signed synthetic graph of {args.channels:,} "
            "channels on loopback, one more sends malformed and forged gossip; "
            "a fresh node syncs from all of them over BOLT #8"
        )
        emit_report(asyncio.run(demo_tcp(args)), args, "lngossip demo (TCP, BOLT #8)")
        return 0
    err.print(
        f"demo: signing a synthetic graph of {args.channels:,} channels "
        f"(deterministic keys), replayed from {args.peers} peers plus one bad peer"
    )
    graph = gen.synthetic_graph(args.channels, max(args.channels // 5, 10))
    stream = gen.demo_stream(graph, peers=args.peers)
    _drive(args, None, iter(stream), "lngossip demo")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lngossip",
        description="Ingest Lightning Network gossip (BOLT #7) fast and safely.",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log connections, disconnects, bans, timeouts and limits (-v: INFO, -vv: DEBUG)",
    )
    parser.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log level (default WARNING: protocol violations and failures only)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, default_peers: int) -> None:
        p.add_argument("--engine", choices=ENGINES, default="rust", help="default: rust")
        p.add_argument(
            "--peers",
            type=int,
            default=default_peers,
            help="replay the input as K interleaved peers (initial-sync duplicate load)",
        )
        p.add_argument("--policy", choices=("archive", "live"), default="archive")
        p.add_argument("--out", metavar="FILE.gsp", help="write accepted messages as GSP")
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.add_argument("--threads", type=int, help="verification threads (default: all cores)")
        p.add_argument("--batch", type=int, default=4096, help="messages per verification batch")
        p.add_argument("--no-progress", action="store_true", help="no progress display")

    ingest = sub.add_parser("ingest", help="ingest gossip files (GSP, gossip_store, hex)")
    ingest.add_argument("files", nargs="+", metavar="FILE")
    ingest.add_argument("--format", choices=readers.FORMATS, default="auto")
    ingest.add_argument(
        "--store",
        metavar="PATH",
        help="durable graph (Core Lightning gossip_store format): opened, rebuilt "
        "without verifying, and appended with what is accepted",
    )
    ingest.add_argument(
        "--verify-store",
        action="store_true",
        help="verify every signature of the --store on open (a store from a source "
        "you do not trust: the CRC detects damage, not forgery); failures are dropped",
    )
    common(ingest, 1)
    ingest.set_defaults(func=cmd_ingest)

    demo = sub.add_parser("demo", help="sync a generated signed graph from 4 peers on loopback")
    demo.add_argument("--channels", type=int, default=3000)
    demo.add_argument(
        "--in-process", action="store_true", help="replay the peers in process, without TCP"
    )
    common(demo, 4)
    demo.set_defaults(func=cmd_demo)

    from lngossip import netcli

    serve = sub.add_parser("serve", help="serve a graph (store and gossip files) to peers")
    serve.add_argument("--listen", required=True, metavar="HOST:PORT")
    serve.add_argument("--gossip", nargs="*", default=[], metavar="FILE")
    serve.add_argument(
        "--store",
        metavar="PATH",
        help="durable graph (Core Lightning gossip_store format), opened without "
        "re-verifying and appended with what files and peers add",
    )
    serve.add_argument("--key-file", help="node key (hex secret); created if missing")
    serve.add_argument("--format", choices=readers.FORMATS, default="auto")
    serve.add_argument("--engine", choices=ENGINES, default="rust")
    serve.add_argument(
        "--policy",
        choices=("archive", "live"),
        default="live",
        help="rules for peers' gossip once the files are loaded (files always load as "
        "archive); default live: timestamps more than 24 h ahead or 14 days behind "
        "and node announcements without a channel are refused, and channels without "
        "an update for two weeks are pruned daily",
    )
    serve.add_argument("--threads", type=int, help="verification threads (default: all cores)")
    serve.add_argument(
        "--metrics", metavar="HOST:PORT", help="expose Prometheus metrics at http://HOST:PORT/"
    )
    codec_help = (
        "BOLT #8 frames: rust (the core decrypts a whole socket read and submits its "
        "gossip in one call; default) or python (the reference, one call per frame)"
    )
    serve.add_argument("--codec", choices=("rust", "python"), default="rust", help=codec_help)
    serve.add_argument(
        "--rgs",
        metavar="HOST:PORT",
        help="serve Rapid Gossip Sync snapshots of the graph over HTTP at "
        "http://HOST:PORT/snapshot/{T} (version 1) and /snapshot/v2/{T}, as LDK wallets fetch them",
    )
    serve.set_defaults(func=netcli.cmd_serve, peers=1, batch=1)

    sync = sub.add_parser("sync", help="sync gossip from peers (NODE_ID@HOST:PORT)")
    sync.add_argument("addresses", nargs="+", metavar="NODE_ID@HOST:PORT")
    sync.add_argument(
        "--until-idle",
        type=float,
        default=5.0,
        metavar="S",
        help="stop after S seconds without gossip (default 5)",
    )
    sync.add_argument(
        "--metrics", metavar="HOST:PORT", help="expose Prometheus metrics at http://HOST:PORT/"
    )
    sync.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="stop after S seconds in all, whatever the peers send (default: none)",
    )
    sync.add_argument(
        "--query",
        action="store_true",
        help="sync by channel-range queries, each channel from one peer "
        "(default: gossip_timestamp_filter, every peer sends everything)",
    )
    sync.add_argument(
        "--store",
        metavar="PATH",
        help="durable graph: opened first; peers are then asked only for gossip "
        "newer than the newest stored timestamp less --since-margin",
    )
    sync.add_argument(
        "--since-margin",
        type=int,
        default=2 * 3600,
        metavar="S",
        help="seconds before the newest stored timestamp to ask from (default 7200)",
    )
    sync.add_argument(
        "--query-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="with --query: seconds to wait for an answer to our query before asking the "
        "peer with gossip_timestamp_filter on a new connection (default 30)",
    )
    sync.add_argument("--codec", choices=("rust", "python"), default="rust", help=codec_help)
    common(sync, 1)
    sync.set_defaults(func=netcli.cmd_sync, policy="live")

    from lngossip import rgscli

    rgscli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lngossip`` command."""
    args = build_parser().parse_args(argv)
    level = args.log_level or ("WARNING", "INFO", "DEBUG")[min(args.verbose, 2)]
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if args.peers < 1 or args.batch < 1:
        print("lngossip: --peers and --batch must be at least 1", file=sys.stderr)
        return 2
    threads = getattr(args, "threads", None)
    if threads is not None and not MIN_THREADS <= threads <= MAX_THREADS:
        print(
            f"lngossip: --threads must be between {MIN_THREADS} and {MAX_THREADS} "
            f"(this machine has {os.cpu_count()} cores), got {threads}",
            file=sys.stderr,
        )
        return 2
    try:
        return int(args.func(args))
    except (OSError, GossipError, ValueError) as e:
        print(f"lngossip: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
