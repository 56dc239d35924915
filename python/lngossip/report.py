"""Printing what a run did: the decisions table and summary of ``ingest``,
``demo`` and ``sync`` (or one JSON object), one stderr line per damaged
input, and what opening a damaged store skipped. Shared by
:mod:`lngossip.cli` and :mod:`lngossip.netcli`."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from lngossip import readers
from lngossip.ingest import IngestReport
from lngossip.types import StoreReport
from lngossip.wire import DECISIONS, MSG_KINDS

__all__ = [
    "emit_report",
    "fmt_bytes",
    "print_report",
    "store_damage",
    "warn_damage",
    "warn_store_damage",
]

#: Damaged ranges of a store named one by one on the line (the count and
#: bytes cover all; ``store_report()["skipped"]`` lists up to 100).
SHOWN_RANGES = 5


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def print_report(report: IngestReport, console: Console, title: str) -> None:
    """Print the decisions table and the throughput/memory summary."""
    shown = [d for d in DECISIONS if any(report.decisions[k][d] for k in MSG_KINDS)]
    table = Table(title=title)
    table.add_column("message type")
    for d in shown:
        table.add_column(d, justify="right")
    table.add_column("total", justify="right")
    for kind in MSG_KINDS:
        row = report.decisions[kind]
        total = sum(row.values())
        if kind == "unknown" and not total:
            continue
        table.add_row(kind, *(f"{row[d]:,}" for d in shown), f"{total:,}")
    console.print(table)
    summary = Table(show_header=False, box=None)
    summary.add_column(justify="right", style="bold")
    summary.add_column()
    rows = [
        ("engine", report.engine),
        ("messages", f"{report.messages:,}"),
        ("signatures verified", f"{report.signatures_verified:,}"),
        ("elapsed", f"{report.elapsed_s:.2f} s"),
        ("messages/s", f"{report.messages_per_s:,.0f}"),
        ("signatures/s", f"{report.signatures_per_s:,.0f}"),
        ("queue high-water", fmt_bytes(report.queue_high_water_bytes)),
        ("peak RSS", fmt_bytes(report.peak_rss_bytes)),
        ("resyncs", f"{report.resyncs:,}"),
        ("skipped bytes", f"{report.skipped_bytes:,}"),
        ("orphans evicted", f"{report.orphans_evicted:,}"),
    ]
    if any(report.malformed_reasons.values()):
        reasons = ", ".join(f"{k} {v}" for k, v in report.malformed_reasons.items() if v)
        rows.append(("malformed reasons", reasons))
    if report.accepted_written:
        rows.append(("written", f"{report.accepted_written:,} accepted messages"))
    for r in rows:
        summary.add_row(*r)
    console.print(summary)


def emit_report(report: IngestReport, args: argparse.Namespace, title: str) -> None:
    """Print ``report`` as JSON (``--json``) or as the decisions table."""
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        out = Console()
        if not out.is_terminal:
            out = Console(width=160)  # whole column names in logs and pipes
        print_report(report, out, title)


def warn_damage(reports: list[readers.ReadReport]) -> None:
    """One line on stderr per damaged input: compressed data cut short or
    corrupt, framing lost and found again, or a torn last record."""
    for r in reports:
        what = []
        if r.damage:
            what.append(f"compressed data damaged ({r.damage})")
        if r.resyncs:
            what.append(f"{r.resyncs} resyncs skipping {r.skipped_bytes:,} bytes")
        if r.truncated_tail_bytes:
            what.append(f"an incomplete last record of {r.truncated_tail_bytes:,} bytes")
        if what:
            print(
                f"lngossip: {r.path}: {'; '.join(what)}; read {r.messages:,} messages up to it",
                file=sys.stderr,
            )


def store_damage(rep: StoreReport) -> str:
    """What opening the store skipped, as words: ranges, bytes, the first
    offsets (bytes into the damaged original) and where it was kept; ``""``
    when nothing was skipped."""
    if not rep["skipped_regions"]:
        return ""
    shown = ", ".join(f"{off:,}+{n:,} ({why})" for off, n, why in rep["skipped"][:SHOWN_RANGES])
    more = rep["skipped_regions"] - min(len(rep["skipped"]), SHOWN_RANGES)
    return (
        f"{rep['skipped_regions']:,} damaged range(s) of {rep['skipped_bytes']:,} bytes "
        f"skipped at {shown}{f' and {more:,} more' if more else ''}; "
        f"the damaged original is kept as {rep['kept_original']}"
    )


def warn_store_damage(rep: StoreReport | None) -> None:
    """One line on stderr when opening the store skipped damaged records,
    dropped a damaged tail or (``--verify-store``) records whose signature
    failed: what was lost is fetched again like any missing gossip."""
    if rep is None:
        return
    what = []
    if rep["skipped_regions"]:
        what.append(store_damage(rep))
    if rep["truncated_bytes"]:
        what.append(f"a damaged tail ({rep['damage']}) of {rep['truncated_bytes']:,} bytes dropped")
    if rep["rejected_records"]:
        what.append(f"{rep['rejected_records']:,} records failed signature verification, dropped")
    if what:
        print(f"lngossip: store {rep['path']}: {'; '.join(what)}", file=sys.stderr)
