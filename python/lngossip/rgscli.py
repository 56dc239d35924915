"""``lngossip rgs``: Rapid Gossip Sync snapshots of a stored graph, one file
or the reference server's static layout.

A snapshot is what LDK wallets fetch instead of syncing gossip
(``lightning-rapid-gossip-sync``); the bytes are written by the Rust core
(``rust/core/src/rgs.rs``, :meth:`lngossip.graph.Graph.rgs_snapshot`).
The static layout mirrors ``lightningdevkit/rapid-gossip-sync-server``
(``src/snapshot.rs``): ``snapshots/`` (version 1) and ``snapshots/v2/``
hold one snapshot per scope (3 h doubled up to 21 days, and the full one),
and ``symlinks/{T}.bin`` / ``symlinks/v2/{T}.bin`` name, for every grid
point T back to 2022-01-01, the snapshot a client whose last sync returned
T needs, so any static web server serves ``/snapshot/{T}`` from it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from lngossip._core import LIMITS
from lngossip.errors import ConfigError
from lngossip.graph import Graph
from lngossip.rgs import SNAPSHOT_INTERVAL_S, scope_since

__all__ = ["check_since", "cmd_rgs", "write_static_layout"]

log = logging.getLogger(__name__)

#: The first grid point of the static layout: 2022-01-01, as the reference
#: (a few months before RGS was released).
LAYOUT_EPOCH = 1_640_995_200


def check_since(since: int, now: int, interval: int = SNAPSHOT_INTERVAL_S) -> None:
    """Check a client's ``since`` (seconds since the epoch): 0, or a grid
    point not after ``now``.

    Raises:
        ConfigError: ``since`` negative, past 32 bits, off the grid or in the future.
    """
    lo, hi = LIMITS["now"]
    if not lo <= since <= hi:
        raise ConfigError(f"since must be between {lo} and {hi} seconds, got {since}")
    if since % interval:
        raise ConfigError(
            f"since {since} is not on the {interval} s snapshot grid "
            "(a client asks with the latest_seen its last snapshot returned)"
        )
    if since > now:
        raise ConfigError(f"since {since} is in the future (now {now})")


def write_static_layout(
    graph: Graph, out_dir: str | os.PathLike[str], interval: int = SNAPSHOT_INTERVAL_S
) -> dict[str, int]:
    """Write the reference server's static layout of ``graph`` into ``out_dir``
    (created if missing; ``symlinks/`` is replaced whole, by a rename).

    The reference time is the full snapshot's ``latest_seen`` (the graph's
    newest seen, on the grid), not the wall clock, so the same graph gives
    the same files. Returns ``reference``, ``snapshots`` (files written),
    ``links`` and ``bytes``.

    Raises:
        OSError: when the directory cannot be written.
    """
    root = Path(out_dir)
    full = {v: graph.rgs_snapshot(0, v) for v in (1, 2)}
    reference = full[1][1]["latest_seen"]
    # every grid point back to the epoch, and the snapshot it is served
    points = range(reference, min(reference, LAYOUT_EPOCH) - 1, -interval)
    since_of = {t: scope_since(t, reference, interval) for t in {*points, 0}}
    names: dict[int, str] = {}
    written = total = 0
    for v in (1, 2):
        (root / "snapshots" / ("v2" if v == 2 else "")).mkdir(parents=True, exist_ok=True)
    for since in sorted(set(since_of.values())):
        name = (
            "snapshot__full.lngossip"
            if since == 0
            else f"snapshot__calculated-at:{reference}__range:{reference - since}-scope"
            f"__previous-sync:{since}.lngossip"
        )
        names[since] = name
        for v in (1, 2):
            data = full[v][0] if since == 0 else graph.rgs_snapshot(since, v)[0]
            path = root / "snapshots" / ("v2" if v == 2 else "") / name
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
            written += 1
            total += len(data)
    pending = root / "symlinks.pending"
    shutil.rmtree(pending, ignore_errors=True)
    (pending / "v2").mkdir(parents=True)
    links = 0
    for t, since in since_of.items():
        for sub, up in (("", ".."), ("v2", "../..")):
            target = f"{up}/snapshots/{sub + '/' if sub else ''}{names[since]}"
            (pending / sub / f"{t}.bin").symlink_to(target)
            links += 1
    (pending / "update_time.txt").write_text(f"{reference}\n")
    final = root / "symlinks"
    old = root / "symlinks.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    pending.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return {"reference": reference, "snapshots": written, "links": links, "bytes": total}


def _when(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def cmd_rgs(args: argparse.Namespace) -> int:
    """``lngossip rgs``: open ``--store`` (it must exist) and write one
    snapshot (``--out``) or the static layout (``--out-dir``)."""
    from lngossip import Pipeline
    from lngossip.report import warn_store_damage

    if not os.path.exists(args.store):
        raise FileNotFoundError(f"no such store: {args.store}")
    if (args.out is None) == (args.out_dir is None):
        raise ConfigError("give one of --out FILE or --out-dir DIR")
    if args.out_dir is not None and args.since:
        raise ConfigError("--since applies to --out (the layout holds every scope)")
    if args.since:
        check_since(args.since, int(time.time()))
    pipeline = Pipeline(store=args.store)
    warn_store_damage(pipeline.store_report())
    graph = Graph(pipeline)
    if args.out_dir is not None:
        t0 = time.perf_counter()
        rep = write_static_layout(graph, args.out_dir)
        seconds = round(time.perf_counter() - t0, 3)
        if args.json:
            print(json.dumps({**rep, "seconds": seconds}))
        else:
            print(
                f"rgs layout in {args.out_dir}: reference {rep['reference']} "
                f"({_when(rep['reference'])}), {rep['snapshots']} snapshots "
                f"({rep['bytes']:,} bytes), {rep['links']:,} links, {seconds} s"
            )
        return 0
    t0 = time.perf_counter()
    data, info = graph.rgs_snapshot(args.since, args.version)
    seconds = time.perf_counter() - t0
    tmp = f"{args.out}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, args.out)
    if args.json:
        print(json.dumps({**info, "out": args.out, "seconds": round(seconds, 3)}))
        return 0
    kind = "full" if not args.since else f"incremental since {args.since} ({_when(args.since)})"
    print(
        f"rgs v{args.version} {kind} -> {args.out}: {info['bytes']:,} bytes in {seconds:.3f} s\n"
        f"  latest_seen {info['latest_seen']} ({_when(info['latest_seen'])}): "
        "the client's next --since\n"
        f"  {info['node_ids']:,} node ids ({info['node_details']:,} with details), "
        f"{info['channel_announcements']:,} channel announcements\n"
        f"  updates: {info['updates_full']:,} full, {info['updates_incremental']:,} incremental, "
        f"{info['reminders']:,} reminders",
        file=sys.stdout,
    )
    return 0
