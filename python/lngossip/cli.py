"""The ``lngossip`` command: ``ingest`` gossip files, run the ``demo``,
``serve`` a graph to peers, ``sync`` one from them, or write its Rapid
Gossip Sync snapshots (``rgs``).

Every option is defined once, in :data:`OPTIONS`; each subcommand takes the
ones it uses by name (:data:`COMMANDS`), with its own default where the
subcommands differ (``--policy``, ``--peers``). The pipeline's settings
come from the options in one place, :func:`pipeline_settings`.

Exit status: 0 on success, 1 when ``sync`` received no gossip from any
peer, 2 when an input cannot be read or an option is invalid (the message
says which), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, get_args

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from lngossip import readers
from lngossip._core import LIMITS
from lngossip.engine import DEFAULT_BATCH, ENGINES, PipelineLike, PipelineSettings, make_pipeline
from lngossip.errors import ConfigError, GossipError
from lngossip.ingest import IngestReport, replay_as_peers, run
from lngossip.report import emit_report, fmt_bytes, warn_damage, warn_store_damage
from lngossip.wire import MSG_KINDS, Policy

__all__ = ["COMMANDS", "OPTIONS", "Inputs", "main", "open_out", "pipeline_settings"]

#: ``--threads`` range, the core's bound (``limits.rs`` ``THREADS``): more
#: verification threads than this only cost memory.
MIN_THREADS, MAX_THREADS = LIMITS["threads"]


def _int_in(lo: int, hi: int | None = None, note: str = "") -> Callable[[str], int]:
    """An argparse ``type``: an integer from ``lo`` (to ``hi``); anything else
    is a usage error (exit status 2) naming the range and ``note``."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if n < lo or (hi is not None and n > hi):
            bound = f"at least {lo}" if hi is None else f"between {lo} and {hi}{note}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {n}")
        return n

    return parse


@dataclass(frozen=True)
class Option:
    """One command-line option: its flags (or positional name) and the
    settings of :meth:`argparse.ArgumentParser.add_argument`."""

    flags: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)


def _option(*flags: str, **settings: Any) -> Option:
    return Option(flags, settings)


#: Every option of every subcommand, by its ``argparse`` destination. A
#: subcommand's default, where they differ, is in :data:`COMMANDS`.
OPTIONS: dict[str, Option] = {
    # what to read
    "files": _option(
        "files",
        nargs="+",
        metavar="FILE",
        help="gossip files: GSP dumps, Core Lightning gossip_store or hex lines, "
        "compressed (xz, gzip, bzip2) or not",
    ),
    "gossip": _option(
        "--gossip",
        nargs="*",
        default=[],
        metavar="FILE",
        help="gossip files (as for ingest) loaded into the graph before serving",
    ),
    "format": _option(
        "--format",
        choices=readers.FORMATS,
        default="auto",
        help="format of the gossip files (default: auto, detected from the first bytes)",
    ),
    "store": _option(
        "--store",
        metavar="PATH",
        help="durable graph (Core Lightning gossip_store format), created if missing "
        "(rgs: it must exist): opened without verifying signatures (ingest --verify-store "
        "verifies them) and appended with every accepted message; sync then asks peers "
        "only for gossip newer than its newest timestamp less --since-margin",
    ),
    "verify_store": _option(
        "--verify-store",
        action="store_true",
        help="verify every signature of the --store on open (a store from a source "
        "you do not trust: the CRC detects damage, not forgery); failures are dropped",
    ),
    # the pipeline
    "engine": _option(
        "--engine",
        choices=ENGINES,
        default="rust",
        help="rust (the core) or baseline (pure Python); default %(default)s",
    ),
    "policy": _option(
        "--policy",
        choices=get_args(Policy),
        default="archive",
        help="archive: no time window, node announcements without a channel verified "
        "anyway; live: timestamps more than 24 h ahead or 14 days behind and node "
        "announcements without a channel refused, and channels without an update for two "
        "weeks pruned daily. serve applies it to peers' gossip once its --gossip files are "
        "loaded (always as archive). Default %(default)s",
    ),
    "threads": _option(
        "--threads",
        metavar="N",
        type=_int_in(MIN_THREADS, MAX_THREADS, f" (this machine has {os.cpu_count()} cores)"),
        help=f"verification threads, {MIN_THREADS} to {MAX_THREADS} (default: all cores)",
    ),
    "batch": _option(
        "--batch",
        metavar="N",
        type=_int_in(1),
        default=DEFAULT_BATCH,
        help="messages per verification batch (default %(default)s)",
    ),
    "peers": _option(
        "--peers",
        metavar="K",
        type=_int_in(1),
        default=1,
        help="ingest, demo --in-process: replay the input as K interleaved peers (the "
        "duplicate load of an initial sync); demo over TCP: K serving nodes. "
        "Default %(default)s",
    ),
    # output
    "out": _option(
        "--out",
        metavar="FILE",
        help="write the accepted messages there as GSP; rgs: one snapshot",
    ),
    "json": _option("--json", action="store_true", help="print one JSON object"),
    "no_progress": _option("--no-progress", action="store_true", help="no progress display"),
    "metrics": _option(
        "--metrics", metavar="HOST:PORT", help="expose Prometheus metrics at http://HOST:PORT/"
    ),
    "rgs": _option(
        "--rgs",
        metavar="HOST:PORT",
        help="serve Rapid Gossip Sync snapshots of the graph over HTTP at "
        "http://HOST:PORT/snapshot/{T} (version 1) and /snapshot/v2/{T}, as LDK wallets fetch them",
    ),
    # rgs
    "out_dir": _option(
        "--out-dir",
        metavar="DIR",
        help="write the reference server's static layout (snapshots/, symlinks/{T}.bin)",
    ),
    "since": _option(
        "--since",
        type=int,
        default=0,
        metavar="T",
        help="the latest_seen the client's last snapshot returned (default 0: full)",
    ),
    "version": _option(
        "--version", type=int, choices=(1, 2), default=2, help="snapshot format (default 2)"
    ),
    # demo
    "channels": _option(
        "--channels", type=int, default=3000, help="channels of the generated graph"
    ),
    "in_process": _option(
        "--in-process", action="store_true", help="replay the peers in process, without TCP"
    ),
    # peers
    "listen": _option(
        "--listen",
        required=True,
        metavar="HOST:PORT",
        help="accept BOLT #8 connections here (port 0: a free one); the node's "
        "NODE_ID@HOST:PORT is then printed on stdout",
    ),
    "key_file": _option(
        "--key-file", metavar="PATH", help="node key (hex secret); created if missing"
    ),
    "codec": _option(
        "--codec",
        choices=("rust", "python"),
        default="rust",
        help="BOLT #8 frames: rust (the core decrypts a whole socket read and submits its "
        "gossip in one call; default) or python (the reference, one call per frame)",
    ),
    "addresses": _option(
        "addresses",
        nargs="+",
        metavar="NODE_ID@HOST:PORT",
        help="peers to sync from (NODE_ID: 33-byte public key, 66 hex digits)",
    ),
    "until_idle": _option(
        "--until-idle",
        type=float,
        default=5.0,
        metavar="S",
        help="stop after S seconds without gossip (default 5)",
    ),
    "timeout": _option(
        "--timeout",
        type=float,
        metavar="S",
        help="stop after S seconds in all, whatever the peers send (default: none)",
    ),
    "query": _option(
        "--query",
        action="store_true",
        help="sync by channel-range queries, each channel from one peer "
        "(default: gossip_timestamp_filter, every peer sends everything)",
    ),
    "since_margin": _option(
        "--since-margin",
        type=int,
        default=2 * 3600,
        metavar="S",
        help="seconds before the newest stored timestamp to ask from (default 7200)",
    ),
    "query_timeout": _option(
        "--query-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="with --query: seconds to wait for an answer to our query before asking the "
        "peer with gossip_timestamp_filter on a new connection (default 30)",
    ),
}

#: What each run of a pipeline over gossip takes (ingest, demo, sync).
_RUN = ("engine", "policy", "threads", "batch", "out", "json", "no_progress")


def pipeline_settings(
    args: argparse.Namespace, *, policy: Policy | None = None
) -> PipelineSettings:
    """The pipeline's settings from a subcommand's options: ``--policy`` (or
    ``policy``, which overrides it: ``serve`` loads its files as archive),
    ``--threads``, ``--store`` and ``--verify-store``. An option that the
    subcommand lacks or that was not given leaves the engine's default.

    Raises:
        ConfigError: ``--verify-store`` without ``--store``.
    """
    given = vars(args)
    settings: PipelineSettings = {"policy": policy or args.policy}
    if given.get("threads") is not None:
        settings["threads"] = given["threads"]
    if given.get("store"):
        settings["store"] = given["store"]
    if given.get("verify_store"):
        if "store" not in settings:
            raise ConfigError("--verify-store needs --store")
        settings["verify_store"] = True
    return settings


def open_out(
    args: argparse.Namespace,
) -> contextlib.AbstractContextManager[readers.GspWriter | None]:
    """``--out FILE.gsp``: a writer for the accepted messages; without the
    option, a context that gives ``None``."""
    return readers.GspWriter(args.out) if args.out else contextlib.nullcontext()


class Inputs:
    """The gossip files a subcommand reads (``ingest FILE...``, ``serve
    --gossip``): read in turn with a :class:`~lngossip.readers.ReadReport`
    each, and their damage said on stderr, one line per damaged file.

    Raises:
        FileNotFoundError: at once, for the first path that does not exist
            (checked without opening it: a pipe would lose the bytes read).
    """

    def __init__(self, paths: Sequence[str], fmt: str) -> None:
        for path in paths:
            if not os.path.exists(path):
                raise FileNotFoundError(f"no such file: {path}")
        self.paths = list(paths)
        self.fmt = fmt
        #: One per file opened so far, in order.
        self.reports: list[readers.ReadReport] = []

    def messages(self) -> Iterator[bytes]:
        """Every message of every file, in order."""
        for path in self.paths:
            rep = readers.ReadReport(path=str(path))
            self.reports.append(rep)
            yield from readers.iter_messages(path, rep, fmt=self.fmt)

    def warn_damage(self) -> None:
        """One stderr line per damaged file read so far (see
        :func:`lngossip.report.warn_damage`)."""
        warn_damage(self.reports)


def _drive(
    args: argparse.Namespace,
    stream: Iterator[tuple[int, bytes]],
    title: str,
    finish: Callable[[IngestReport], None] | None = None,
    overlap: bool = False,
) -> IngestReport:
    """Shared by ``ingest`` and ``demo``: build the engine, run, write, print."""
    pipeline = make_pipeline(args.engine, **pipeline_settings(args))
    err = Console(stderr=True, soft_wrap=True)
    with ExitStack() as stack:
        writer = stack.enter_context(open_out(args))
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
    """``lngossip ingest``: run the files through a pipeline and summarise."""
    inputs = Inputs(args.files, args.format)

    def finish(report: IngestReport) -> None:
        report.resyncs = sum(r.resyncs for r in inputs.reports)
        report.skipped_bytes = sum(r.skipped_bytes for r in inputs.reports)
        report.files = [vars(r) for r in inputs.reports]
        inputs.warn_damage()
        warn_store_damage(report.store)

    stream = replay_as_peers(inputs.messages(), args.peers)
    # reading (decompressing) the files overlaps with verification
    _drive(args, stream, "lngossip ingest", finish, overlap=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``lngossip demo``: a signed synthetic graph synced from ``--peers``
    peers and one bad peer, over TCP or (``--in-process``) replayed."""
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
    _drive(args, iter(stream), "lngossip demo")
    return 0


def _later(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """The command ``name`` of ``module``, imported when it runs (so that
    ``ingest`` does not load the network stack, and :mod:`lngossip.netcli`
    can import this module)."""

    def run_command(args: argparse.Namespace) -> int:
        import importlib

        return int(getattr(importlib.import_module(module), name)(args))

    return run_command


@dataclass(frozen=True)
class Command:
    """A subcommand: its help line, the :data:`OPTIONS` it takes (in
    ``--help`` order), its own defaults where they differ from the
    option's, the function that runs it (returns the exit status), and the
    options it cannot run without."""

    help: str
    options: tuple[str, ...]
    defaults: dict[str, Any]
    run: Callable[[argparse.Namespace], int]
    required: tuple[str, ...] = ()


#: The subcommands.
COMMANDS: dict[str, Command] = {
    "ingest": Command(
        "ingest gossip files (GSP, gossip_store, hex)",
        ("files", "format", "store", "verify_store", "peers", *_RUN),
        {},
        cmd_ingest,
    ),
    "demo": Command(
        "sync a generated signed graph from 4 peers on loopback",
        ("channels", "in_process", "peers", *_RUN),
        {"peers": 4},
        cmd_demo,
    ),
    "serve": Command(
        "serve a graph (store and gossip files) to peers",
        (
            "listen",
            "gossip",
            "format",
            "store",
            "key_file",
            "engine",
            "policy",
            "threads",
            "metrics",
            "rgs",
            "codec",
        ),
        {"policy": "live"},
        _later("lngossip.netcli", "cmd_serve"),
    ),
    "sync": Command(
        "sync gossip from peers (NODE_ID@HOST:PORT)",
        (
            "addresses",
            "until_idle",
            "timeout",
            "query",
            "query_timeout",
            "store",
            "since_margin",
            "codec",
            "metrics",
            *_RUN,
        ),
        {"policy": "live"},
        _later("lngossip.netcli", "cmd_sync"),
    ),
    "rgs": Command(
        "write Rapid Gossip Sync snapshots (what LDK wallets apply) of a --store",
        ("store", "out", "out_dir", "since", "version", "json"),
        {},
        _later("lngossip.rgscli", "cmd_rgs"),
        required=("store",),
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``lngossip``: the logging options, then one subparser
    per :data:`COMMANDS` entry with its :data:`OPTIONS`."""
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
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help)
        for dest in command.options:
            option = OPTIONS[dest]
            settings = dict(option.settings)
            if dest in command.defaults:
                settings["default"] = command.defaults[dest]
            if dest in command.required:
                settings["required"] = True
            p.add_argument(*option.flags, **settings)
        p.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lngossip`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    level = args.log_level or ("WARNING", "INFO", "DEBUG")[min(args.verbose, 2)]
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        return int(args.run(args))
    except (OSError, GossipError, ValueError) as e:
        print(f"lngossip: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
