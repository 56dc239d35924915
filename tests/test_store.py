"""The durable store and the one graph per node: crash safety under
``kill -9`` (during appends and during compaction), restarts of ``serve``
and ``sync`` from a store, gossip poisoning of a served channel, and a
node that serves a dump while its own graph grows."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from lngossip import Graph, Pipeline, gen, netcli, readers
from lngossip.engine import make_pipeline
from lngossip.graph import dump
from lngossip.ingest import run
from tests.helpers import LNGOSSIP, serving, sync

HEADER = struct.Struct(">HHII")


def records(path: Path) -> list[tuple[int, int, int]]:
    """(offset, flags, length) of every whole record, read independently of
    the core; stops at the first record that runs past the end."""
    data = path.read_bytes()
    out, p = [], 1
    while p + 12 <= len(data):
        flags, n, _crc, _ts = HEADER.unpack_from(data, p)
        if p + 12 + n > len(data):
            break
        out.append((p, flags, n))
        p += 12 + n
    return out


# -- crash safety ----------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from lngossip import Pipeline, readers
    store, src, mode = sys.argv[1:4]
    msgs = list(readers.iter_messages(src))
    p = Pipeline(store=store, threads=1)
    if mode == "append":
        for i in range(0, len(msgs), 16):
            for m in msgs[i : i + 16]:
                p.submit(0, m)
            while p.queued:
                p.process(16)
                # every record of a returned process() is written: say so
                print(p.store_report()["records_written"], flush=True)
    else:
        for m in msgs:
            p.submit(0, m)
        while p.queued:
            p.process()
        print("loaded", flush=True)
        while True:
            p.compact()
            print("compacted", flush=True)
    """
)


def _run_and_kill(store: Path, src: Path, mode: str, delay: float) -> list[str]:
    """Start the writer, kill -9 it ``delay`` s after its first line; the lines it printed."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(store), str(src), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    lines: list[str] = []
    first = threading.Event()

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.append(line.strip())
            first.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert first.wait(60), child.stderr.read() if child.stderr else ""
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    reader.join(10)
    for f in (child.stdout, child.stderr):
        if f:
            f.close()
    return lines


def test_kill_9_while_appending_loses_nothing_flushed(graph_file: Path, tmp_path: Path) -> None:
    """50 writers killed at random moments: every reopened store is valid,
    holds every record a returned ``process`` had written, and a torn tail
    is reported to the byte and dropped. Tails come from the kill itself
    (Linux stops a write to a file between pages once SIGKILL is pending,
    so a batch's records can end mid-record) and, in half the runs, from a
    partial record appended after the kill, as a power loss leaves one."""
    rng = random.Random(50)
    total = len(list(readers.iter_messages(graph_file)))
    for run_no in range(50):
        store = tmp_path / f"store-{run_no}"
        lines = _run_and_kill(store, graph_file, "append", rng.uniform(0.0, 0.4))
        flushed = int(lines[-1])
        whole = records(store)
        assert len(whole) >= flushed
        intact = whole[-1][0] + 12 + whole[-1][2] if whole else 1
        torn = b""
        if run_no % 2:
            # a partial next record: a header and part of its message, or part of a header
            m = gen.synthetic_graph(1, 2, seed=run_no).channel_announcements[0]
            rec = HEADER.pack(0x2000, len(m), 0, 0) + m
            torn = rec[: rng.randrange(1, len(rec))]
            with store.open("ab") as f:
                f.write(torn)
        size_before = store.stat().st_size
        p = Pipeline(store=store)
        rep = p.store_report()
        assert rep is not None
        assert rep["records_loaded"] >= flushed
        assert rep["truncated_bytes"] == size_before - intact, (run_no, len(torn), rep)
        assert (rep["damage"] is None) == (size_before == intact)
        assert store.stat().st_size == intact
        assert p.counters()["signatures_verified"] == 0
        # the rebuilt graph holds exactly the intact records
        assert len(list(dump(p.graph))) == rep["records_loaded"] <= total
        del p
        # and the store is now clean: a second open drops nothing
        again = Pipeline(store=store).store_report()
        assert again is not None and again["truncated_bytes"] == 0


def test_kill_9_during_compaction_leaves_a_valid_store(graph_file: Path, tmp_path: Path) -> None:
    """Writers killed while compacting in a loop: the store that is left
    (old or new) opens without damage and holds the whole graph."""
    rng = random.Random(9)
    msgs = set(readers.iter_messages(graph_file))
    for run_no in range(10):
        store = tmp_path / f"compact-{run_no}"
        lines = _run_and_kill(store, graph_file, "compact", rng.uniform(0.0, 0.3))
        assert lines[0] == "loaded"
        p = Pipeline(store=store)
        rep = p.store_report()
        assert rep is not None and rep["truncated_bytes"] == 0, rep
        assert set(dump(p.graph)) == msgs
        assert not Path(f"{store}.compact").exists()


# -- damage in the middle of the store ----------------------------------------------

DAMAGE_SHAPES = ("bit_flip", "length", "page_zeroed", "bytes_removed", "complete_cleared")


def _scid_of_announcement(msg: bytes) -> int:
    """``short_channel_id`` of a channel_announcement, decoded here
    (BOLT #7: type, 4 signatures, features, chain_hash, then the scid)."""
    (flen,) = struct.unpack_from(">H", msg, 2 + 4 * 64)
    (scid,) = struct.unpack_from(">Q", msg, 2 + 4 * 64 + 2 + flen + 32)
    return int(scid)


def _graph_scids(p: Pipeline) -> set[int]:
    out: set[int] = set()
    after = None
    while page := p.graph.short_channel_ids(after=after, limit=10_000):
        out.update(page)
        after = page[-1]
    return out


def _damage(data: bytes, rec: tuple[int, int, int], shape: str) -> tuple[bytes, int, int]:
    """``data`` with ``shape`` applied at record ``rec`` (offset, flags,
    length); returns the damaged bytes and the removed range ``(at, n)``
    (``n`` 0 unless bytes were removed)."""
    off, flags, n = rec
    b = bytearray(data)
    removed = (0, 0)
    if shape == "bit_flip":
        b[off + 12 + n // 2] ^= 0x08
    elif shape == "length":
        # the message now runs 200 bytes into the next records
        struct.pack_into(">H", b, off + 2, n + 200)
    elif shape == "page_zeroed":
        page = off // 4096 * 4096
        b[page : page + 4096] = bytes(4096)
    elif shape == "bytes_removed":
        removed = (off + 40, 1000)
        del b[off + 40 : off + 1040]
    elif shape == "complete_cleared":
        struct.pack_into(">H", b, off, flags & ~0x2000)
    return bytes(b), *removed


def _lost_records(
    data: bytes, damaged: bytes, recs: list[tuple[int, int, int]], removed: tuple[int, int]
) -> list[int]:
    """Indexes of the records whose bytes the damage touched."""
    at, gone = removed
    lost = []
    for i, (off, _flags, n) in enumerate(recs):
        end = off + 12 + n
        if gone:
            if off < at + gone and end > at:
                lost.append(i)
        elif damaged[off:end] != data[off:end]:
            lost.append(i)
    return lost


@pytest.mark.parametrize("shape", DAMAGE_SHAPES)
def test_mid_file_damage_loses_only_the_damaged_records(
    topology_store: Path, tmp_path: Path, shape: str
) -> None:
    """A copy of the topology store damaged in the middle (a bit flipped in
    the middle channel_announcement, its length field damaged, the 4 KiB
    page around it zeroed, 1,000 bytes of it removed, its complete flag
    cleared): reopened, every channel but the damaged records' is there, the
    damaged original is kept where the report says, the report names the
    skipped range, and the lost channel's original messages are accepted
    again (nothing of them was remembered)."""
    data = topology_store.read_bytes()
    recs = records(topology_store)
    assert recs[-1][0] + 12 + recs[-1][2] == len(data)
    msgs = [data[off + 12 : off + 12 + n] for off, _f, n in recs]
    live = [i for i, (_o, flags, _n) in enumerate(recs) if not flags & 0x8000]
    mid = next(i for i in live[len(live) // 2 :] if msgs[i][:2] == b"\x01\x00")
    damaged, *removed = _damage(data, recs[mid], shape)
    lost = _lost_records(data, damaged, recs, (removed[0], removed[1]))
    assert mid in lost and lost == list(range(lost[0], lost[-1] + 1))
    assert lost[-1] + 1 < len(recs)  # damage in the middle, not a tail
    lost_scids = {_scid_of_announcement(msgs[i]) for i in lost if msgs[i][:2] == b"\x01\x00"}
    all_scids = {_scid_of_announcement(msgs[i]) for i in live if msgs[i][:2] == b"\x01\x00"}
    assert len(all_scids) == 50_808 and lost_scids

    store = tmp_path / "damaged.store"
    store.write_bytes(damaged)
    p = Pipeline(store=store)
    assert p.counters()["signatures_verified"] == 0
    assert _graph_scids(p) == all_scids - lost_scids
    rep = p.store_report()
    assert rep is not None
    first = recs[lost[0]][0]
    # the next intact record, where it lies in the damaged file
    resumed = recs[lost[-1] + 1][0] - removed[1]
    assert rep["skipped_regions"] == 1
    assert rep["skipped_bytes"] == resumed - first
    assert [(o, n) for o, n, _why in rep["skipped"]] == [(first, resumed - first)]
    assert rep["skipped"][0][2] in ("bad_crc", "incomplete", "torn_record")
    assert (rep["truncated_bytes"], rep["damage"]) == (0, None)
    kept = rep["kept_original"]
    assert kept is not None and Path(kept).parent == tmp_path
    assert Path(kept).name.startswith("damaged.store.damaged-")
    assert hashlib.sha256(Path(kept).read_bytes()).digest() == hashlib.sha256(damaged).digest()
    # serve and sync say it in their store line
    line = netcli.store_summary(p)
    assert line is not None and f"1 damaged range(s) of {resumed - first:,} bytes" in line
    assert f"{first:,}+{resumed - first:,}" in line and kept in line
    # the store itself was rewritten without the damage
    rewritten = records(store)
    assert rewritten[-1][0] + 12 + rewritten[-1][2] == store.stat().st_size
    # re-fetched like any missing gossip: the lost records and the updates of
    # the lost channels are accepted when a peer sends them again
    again = [msgs[i] for i in lost if i in live]
    again += [
        m
        for m in msgs
        if m[:2] == b"\x01\x02" and struct.unpack_from(">Q", m, 2 + 64 + 32)[0] in lost_scids
    ]
    again = list(dict.fromkeys(again))
    for m in again:
        assert p.submit(7, m).decision in ("queued", "orphaned")
    decided = []
    while p.queued:
        decided += [o.decision for o in p.process().outcomes]
    assert decided == ["accepted"] * len(again)
    assert _graph_scids(p) == all_scids


def test_damaged_store_is_reported_by_ingest(
    topology_store: Path, graph_file: Path, tmp_path: Path
) -> None:
    """``lngossip ingest --store`` on a store with a damaged middle record
    says on stderr what was skipped and where the original is kept, and the
    JSON report carries the same."""
    data = topology_store.read_bytes()
    recs = records(topology_store)
    damaged, _at, _n = _damage(data, recs[len(recs) // 2], "bit_flip")
    store = tmp_path / "ingest.store"
    store.write_bytes(damaged)
    r = subprocess.run(
        [*LNGOSSIP, "ingest", str(graph_file), "--store", str(store), "--json", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    off = recs[len(recs) // 2][0]
    line = next(x for x in r.stderr.splitlines() if str(store) in x)
    assert "1 damaged range(s) of" in line and f"{off:,}+" in line
    kept = json.loads(r.stdout)["store"]["kept_original"]
    assert kept in line and Path(kept).read_bytes() == damaged


def test_damaged_tail_is_still_truncated(topology_store: Path, tmp_path: Path) -> None:
    """A bit flipped in the last record: no valid record follows, so the
    tail is truncated as before; nothing is skipped or kept."""
    data = topology_store.read_bytes()
    off, _flags, n = records(topology_store)[-1]
    store = tmp_path / "tail.store"
    store.write_bytes(data[: off + 20] + bytes([data[off + 20] ^ 1]) + data[off + 21 :])
    p = Pipeline(store=store)
    rep = p.store_report()
    assert rep is not None
    assert (rep["truncated_bytes"], rep["damage"]) == (12 + n, "bad_crc")
    assert (rep["skipped_regions"], rep["skipped"], rep["kept_original"]) == (0, [], None)
    assert store.stat().st_size == off
    assert [f.name for f in tmp_path.iterdir()] == ["tail.store"]


def test_a_forged_record_is_trusted_unless_the_store_is_verified(
    graph_file: Path, tmp_path: Path
) -> None:
    """A record whose message was changed and its CRC recomputed (a store
    from someone else) is trusted on open, as Core Lightning trusts its
    own store; ``verify_store=True`` / ``ingest --verify-store`` verifies
    every signature, drops it, and the genuine message is accepted again."""
    store = tmp_path / "forged.store"
    p = Pipeline(store=store)
    run(p, ((0, m) for m in readers.iter_messages(graph_file)))
    del p
    data = bytearray(store.read_bytes())
    off, _flags, n = next(r for r in records(store) if data[r[0] + 12 : r[0] + 14] == b"\x01\x02")
    genuine = bytes(data[off + 12 : off + 12 + n])
    data[off + 12 + n - 1] ^= 0x01  # htlc_maximum_msat: the signature no longer matches
    _f, _n, _crc, ts = HEADER.unpack_from(data, off)
    struct.pack_into(">I", data, off + 4, _crc32c(ts, bytes(data[off + 12 : off + 12 + n])))
    forged = bytes(data[off + 12 : off + 12 + n])
    scid, direction = struct.unpack_from(">Q", genuine, 98)[0], genuine[113] & 1
    trusted, verified = tmp_path / "trusted.store", tmp_path / "verified.store"
    trusted.write_bytes(data)
    verified.write_bytes(data)

    p = Pipeline(store=trusted)
    ch = p.graph.channel(scid)
    assert ch is not None and ch[1 + direction] == forged
    rep = p.store_report()
    assert rep is not None and (rep["verified"], rep["rejected_records"]) == (False, 0)
    assert p.counters()["signatures_verified"] == 0

    args = ["--store", str(verified), "--verify-store", "--json", "--no-progress"]
    r = subprocess.run(
        [*LNGOSSIP, "ingest", str(graph_file), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "1 records failed signature verification" in r.stderr
    out = json.loads(r.stdout)
    assert (out["store"]["verified"], out["store"]["rejected_records"]) == (True, 1)
    # the genuine update came again from the input and was accepted
    assert out["decisions"]["channel_update"]["accepted"] == 1
    ch = Pipeline(store=verified).graph.channel(scid)
    assert ch is not None and ch[1 + direction] == genuine
    r = subprocess.run(
        [*LNGOSSIP, "ingest", str(graph_file), "--verify-store"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (r.returncode, r.stderr.strip()) == (2, "lngossip: --verify-store needs --store")


# -- restarts ----------------------------------------------------------------------


def test_serve_restarts_from_its_store_without_verifying(graph_file: Path, tmp_path: Path) -> None:
    """``serve --store`` loads files once; started again from the store
    alone it verifies nothing and serves the whole graph."""
    store = tmp_path / "serve.store"
    with serving("--gossip", str(graph_file), "--store", str(store)) as served:
        served.stop()
    with serving("--store", str(store)) as served:
        d = sync(served.address, "--out", str(tmp_path / "synced.gsp"))
        assert set(readers.iter_messages(tmp_path / "synced.gsp")) == set(
            readers.iter_messages(graph_file)
        )
        assert d["signatures_verified"] > 0  # the client verified what it got
        err = served.stop()
    assert "0 signatures verified" in err, err
    assert "400 channels" in err, err


def test_sync_restarted_from_its_store_asks_only_for_recent_gossip(
    graph_file: Path, tmp_path: Path, small_graph: gen.SyntheticGraph
) -> None:
    store = tmp_path / "sync.store"
    with serving("--gossip", str(graph_file)) as served:
        first = sync(served.address, "--store", str(store))
        assert first["first_timestamp"] == 0
        assert first["messages"] == len(small_graph.messages())
        second = sync(served.address, "--store", str(store), "--since-margin", "600")
    newest = max(readers_timestamps(small_graph.messages()))
    assert second["first_timestamp"] == newest - 600
    # exactly what a filter from there returns, and far less than everything
    served = make_pipeline("rust")
    run(served, ((0, m) for m in small_graph.messages()))
    expected = list(dump(served.graph, newest - 600))
    assert second["messages"] == len(expected) < len(small_graph.messages()) // 4
    assert second["signatures_verified"] == 0  # all duplicates of the store's records


def test_sync_refetches_what_a_damaged_store_lost(
    graph_file: Path, tmp_path: Path, small_graph: gen.SyntheticGraph
) -> None:
    """A store whose middle record was damaged loses that record on open;
    the next ``sync --store`` asks peers for everything instead of only the
    recent gossip, and the graph is whole again (before: the filter started
    at the newest stored timestamp less the margin, and the lost record,
    older than that, never came back)."""
    store = tmp_path / "sync.store"
    with serving("--gossip", str(graph_file)) as served:
        sync(served.address, "--store", str(store))
        live = [r for r in records(store) if not r[1] & 0x8000]
        off, _flags, _n = live[len(live) // 2]
        data = bytearray(store.read_bytes())
        data[off + 12 + 70] ^= 0x01  # a bit of its message: the CRC no longer matches
        store.write_bytes(bytes(data))
        again = sync(served.address, "--store", str(store), "--since-margin", "600")
    assert again["first_timestamp"] == 0
    assert again["store"]["skipped_regions"] == 1  # type: ignore[index]
    assert again["signatures_verified"] > 0  # the lost message, verified again
    p = Pipeline(store=str(store))
    assert set(dump(p.graph)) == set(small_graph.messages())


def readers_timestamps(msgs: list[bytes]) -> list[int]:
    """``timestamp`` of every update and node announcement."""
    from lngossip.wire import parse_message

    return [t for m in msgs if (t := parse_message(m).timestamp) is not None]


def test_store_kept_on_disk_is_core_lightning_format(graph_file: Path, tmp_path: Path) -> None:
    """Every record lngossip writes has the complete flag and a CRC-32C of
    the message seeded with the timestamp (checked here with an independent
    bitwise CRC-32C); superseded records carry the deleted flag."""
    store = tmp_path / "fmt.store"
    p = Pipeline(store=store)
    run(p, ((0, m) for m in readers.iter_messages(graph_file)))
    # a newer update for one direction supersedes the stored one
    g = Graph(p)
    ch = next(iter(g))
    assert ch.updates[0] is not None
    node_keys = {gen.node_id(gen.private_key("node", i)): i for i in range(120)}
    signer = gen.private_key("node", node_keys[ch.node_id_1])
    newer = gen.channel_update(
        ch.short_channel_id, signer, direction=0, timestamp=ch.updates[0].timestamp + 1
    )
    p.submit(0, newer)
    p.process()
    p.sync_store()
    data = store.read_bytes()
    assert data[0] == 0x0F
    recs = records(store)
    assert len(recs) == len(list(readers.iter_messages(graph_file))) + 1
    deleted = [r for r in recs if r[1] & 0x8000]
    assert len(deleted) == 1
    for off, flags, n in recs:
        _f, _n, crc, ts = HEADER.unpack_from(data, off)
        assert flags & 0x2000
        assert _crc32c(ts, data[off + 12 : off + 12 + n]) == crc
    os.sync()


def _crc32c(seed: int, data: bytes) -> int:
    crc = seed ^ 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF
