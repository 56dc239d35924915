"""Tests for lngossip.readers: GSP, gossip_store and hex readers, resync, writer."""

from __future__ import annotations

import bz2
import collections
import gzip
import io
import lzma
import os
import random
import struct
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from lngossip import readers
from lngossip.readers import (
    FORMATS,
    GspWriter,
    ReadReport,
    UnknownFormat,
    bigsize_encode,
    detect_format,
    iter_messages,
    open_maybe_compressed,
    read_gossip_store,
    read_gsp,
    read_hex_lines,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if not DATA.is_dir():
    pytest.skip("../shared/data not present", allow_module_level=True)

LNRESEARCH = DATA / "real" / "lnresearch"
CLN = DATA / "real" / "cln"
TOPOLOGY = DATA / "topology" / "mainnet-2026-02-topology.gsp.xz"

# Files whose framing the collector damaged, and one that is intact.
DAMAGED = (
    "data_annex_daily_gossip-202511171431.gsp",
    "data_annex_daily_gossip-202511180854.gsp",
    "data_temp_gossip-202511171700.gsp",
)
CLEAN = "annex-temp_dailies_gossip_20250819_10.gsp"

CA, NA, CU = 256, 257, 258


def mtype(msg: bytes) -> int:
    return int.from_bytes(msg[:2], "big")


def by_type(msgs: Iterable[bytes]) -> collections.Counter[int]:
    return collections.Counter(mtype(m) for m in msgs)


def read(path: Path, fmt: str = "auto") -> tuple[list[bytes], ReadReport]:
    report = ReadReport(path=str(path))
    return list(iter_messages(path, report, fmt)), report


def gsp_bytes(msgs: Iterable[bytes]) -> bytes:
    return b"GSP\x01" + b"".join(bigsize_encode(len(m)) + m for m in msgs)


def fake(mt: int, length: int, fill: int = 0) -> bytes:
    """A message of type ``mt`` and total length ``length`` (content is junk)."""
    return mt.to_bytes(2, "big") + bytes([fill & 0xFF]) * (length - 2)


# ---------------------------------------------------------------------------
# Real data


def test_lnresearch_counts_and_resyncs() -> None:
    total: collections.Counter[int] = collections.Counter()
    resyncs = skipped = 0
    files = sorted(LNRESEARCH.glob("*.gsp"))
    assert len(files) == 10
    for f in files:
        msgs, rep = read(f)
        assert rep.format == "gsp"
        assert rep.messages == rep.records == len(msgs)
        assert rep.truncated_tail_bytes == 0
        total.update(by_type(msgs))
        resyncs += rep.resyncs
        skipped += rep.skipped_bytes
    assert total == {CA: 27, NA: 2268, CU: 27033}
    # Same figures as the independent check described in SOURCES.md.
    assert resyncs == 13
    assert skipped == 1462


@pytest.mark.parametrize("name", DAMAGED)
def test_damaged_file_resyncs(name: str) -> None:
    msgs, rep = read(LNRESEARCH / name)
    assert rep.resyncs > 0
    assert rep.skipped_bytes > 0
    assert msgs and all(mtype(m) in (CA, NA, CU) for m in msgs)


def test_undamaged_file_has_no_resync() -> None:
    msgs, rep = read(LNRESEARCH / CLEAN)
    assert (rep.resyncs, rep.skipped_bytes, rep.truncated_tail_bytes) == (0, 0, 0)
    assert by_type(msgs) == {CU: 723, NA: 102}
    # The framing accounts for every byte of the file.
    assert 4 + sum(len(bigsize_encode(len(m))) + len(m) for m in msgs) == (
        (LNRESEARCH / CLEAN).stat().st_size
    )


def _store_types(data: bytes, offset: int) -> collections.Counter[tuple[int, bool]]:
    """(type, deleted) of every record, walking the gossip_store headers."""
    out: collections.Counter[tuple[int, bool]] = collections.Counter()
    while offset < len(data):
        flags, length = struct.unpack_from(">HH", data, offset)
        out[(mtype(data[offset + 12 : offset + 14]), bool(flags & 0x8000))] += 1
        offset += 12 + length
    assert offset == len(data)
    return out


def test_cln_gossip_store() -> None:
    path = CLN / "cln_gossip_store-part1+2"
    kinds = _store_types(path.read_bytes(), 1)
    assert kinds[(CA, False)] + kinds[(CA, True)] == 89 and kinds[(CA, True)] == 1
    assert kinds[(CU, False)] + kinds[(CU, True)] == 8 and kinds[(CU, True)] == 4

    msgs, rep = read(path)
    assert rep.format == "gossip_store"
    assert by_type(msgs) == {CA: 88, CU: 4}
    assert rep.messages == 92
    assert rep.deleted == sum(v for (_, d), v in kinds.items() if d) == 6
    assert rep.internal == sum(v for (t, d), v in kinds.items() if not d and t >= 4096) == 88
    assert rep.records == sum(kinds.values())
    assert (rep.resyncs, rep.skipped_bytes, rep.truncated_tail_bytes) == (0, 0, 0)


def test_cln_fragment_continues_part1() -> None:
    whole, _ = read(CLN / "cln_gossip_store-part1+2")
    part1, rep1 = read(CLN / "cln_gossip_store-part1")
    part2, rep2 = read(CLN / "cln_gossip_store-part2", "gossip_store_fragment")
    assert rep2.format == "gossip_store_fragment"
    assert part1 and part2
    assert part1 + part2 == whole
    assert rep1.resyncs == rep2.resyncs == 0
    # Without fmt, a fragment (no version byte) is not recognised.
    with pytest.raises(UnknownFormat):
        read(CLN / "cln_gossip_store-part2")


def test_topology_file() -> None:
    msgs, rep = read(TOPOLOGY)
    assert rep.messages == 169_748
    assert by_type(msgs) == {CA: 50_808, NA: 17_324, CU: 101_616}
    assert (rep.resyncs, rep.skipped_bytes, rep.truncated_tail_bytes) == (0, 0, 0)


# ---------------------------------------------------------------------------
# BigSize


BIGSIZE_VECTORS = [  # BOLT #1 Appendix A
    (0, "00"),
    (252, "fc"),
    (253, "fd00fd"),
    (65535, "fdffff"),
    (65536, "fe00010000"),
    (4294967295, "feffffffff"),
    (4294967296, "ff0000000100000000"),
    (18446744073709551615, "ffffffffffffffffff"),
]


@pytest.mark.parametrize(("value", "encoded"), BIGSIZE_VECTORS)
def test_bigsize_vectors(value: int, encoded: str) -> None:
    raw = bytes.fromhex(encoded)
    assert bigsize_encode(value) == raw
    assert readers._bigsize_decode(raw) == (value, len(raw))
    assert readers._bigsize_decode(b"\xaa" + raw + b"\xbb", 1) == (value, len(raw))


@pytest.mark.parametrize(
    "encoded",
    ["fd00fc", "fe0000ffff", "ff00000000ffffffff", "fd0000", "fe00000000"],
)
def test_bigsize_rejects_non_minimal(encoded: str) -> None:
    with pytest.raises(ValueError, match="non-minimal"):
        readers._bigsize_decode(bytes.fromhex(encoded))


@pytest.mark.parametrize("encoded", ["", "fd", "fd00", "fe000100", "ff00000001000000"])
def test_bigsize_rejects_truncated(encoded: str) -> None:
    with pytest.raises(ValueError):
        readers._bigsize_decode(bytes.fromhex(encoded))


@pytest.mark.parametrize("value", [-1, 2**64])
def test_bigsize_encode_range(value: int) -> None:
    with pytest.raises(ValueError):
        bigsize_encode(value)


def test_gsp_non_minimal_length_is_damage() -> None:
    good, other = fake(CU, 138, 1), fake(CU, 138, 2)
    data = b"GSP\x01" + b"\x8a" + good + b"\xfd\x00\x8a" + other + b"\x8a" + good
    rep = ReadReport(path="mem")
    # "fd 00 8a" is refused; the scan then finds "8a" + other, a valid record.
    assert list(read_gsp(io.BytesIO(data), rep)) == [good, other, good]
    assert (rep.resyncs, rep.skipped_bytes) == (1, 2)


# ---------------------------------------------------------------------------
# Writer and compression


EDGE_MSGS = [
    fake(CU, 130),
    fake(CU, 252, 1),  # largest 1-byte length
    fake(CU, 253, 2),  # smallest 0xfd length
    fake(NA, 142, 3),
    fake(CA, 432, 4),  # shortest channel_announcement (type included)
    fake(NA, 65535, 5),  # largest message
]


def _sample(n: int = 400) -> list[bytes]:
    msgs, _ = read(LNRESEARCH / CLEAN)
    return msgs[:n] + EDGE_MSGS


def test_writer_round_trip(tmp_path: Path) -> None:
    msgs = _sample()
    out = tmp_path / "out.gsp"
    with GspWriter(out) as w:
        w.write(msgs[0])
        assert w.write_all(msgs[1:]) == len(msgs) - 1
    assert w.messages == len(msgs)
    assert w.bytes_written == out.stat().st_size == len(gsp_bytes(msgs))
    assert out.read_bytes() == gsp_bytes(msgs)
    back, rep = read(out)
    assert back == msgs
    assert (rep.messages, rep.resyncs, rep.truncated_tail_bytes) == (len(msgs), 0, 0)
    with pytest.raises(ValueError):
        w.write(msgs[0])  # closed


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x01", fake(CU, 129), fake(CA, 431), fake(3, 200), fake(NA, 65536)],
    ids=["empty", "one_byte", "short_update", "short_announcement", "type_3", "too_long"],
)
def test_writer_rejects_implausible(tmp_path: Path, bad: bytes) -> None:
    with GspWriter(tmp_path / "x.gsp") as w, pytest.raises(ValueError):
        w.write(bad)
    assert w.messages == 0


@pytest.mark.parametrize("codec", ["gzip", "bz2", "xz"])
def test_compressed_round_trip(tmp_path: Path, codec: str) -> None:
    msgs = _sample()
    plain = tmp_path / "plain.gsp"
    with GspWriter(plain) as w:
        w.write_all(msgs)
    compressors: dict[str, Callable[[bytes], bytes]] = {
        "gzip": gzip.compress,
        "bz2": bz2.compress,
        "xz": lzma.compress,
    }
    compress = compressors[codec]
    packed = tmp_path / "packed.bin"  # the name says nothing: magic decides
    packed.write_bytes(compress(plain.read_bytes()))
    with open_maybe_compressed(packed) as f:
        assert f.read() == plain.read_bytes()
    back, rep = read(packed)
    assert back == msgs
    assert rep.format == "gsp"
    # A compressed gossip_store is read the same way.
    store = CLN / "cln_gossip_store-part1+2"
    (tmp_path / "store").write_bytes(compress(store.read_bytes()))
    assert read(tmp_path / "store")[0] == read(store)[0]


def test_open_plain_file(tmp_path: Path) -> None:
    p = tmp_path / "f.xz"  # misleading extension, plain content
    p.write_bytes(b"GSP\x01")
    with open_maybe_compressed(p) as f:
        assert f.read() == b"GSP\x01"


# ---------------------------------------------------------------------------
# Damage


def _offsets(msgs: list[bytes]) -> list[int]:
    """File offset of every record of a GSP file holding ``msgs``."""
    out, off = [], 4
    for m in msgs:
        out.append(off)
        off += len(bigsize_encode(len(m))) + len(m)
    return out


def test_truncated_file(tmp_path: Path) -> None:
    src = LNRESEARCH / CLEAN
    msgs, _ = read(src)
    data = src.read_bytes()
    offs = _offsets(msgs)
    k = 500
    cut = offs[k] + 60  # in the middle of record k
    p = tmp_path / "cut.gsp"
    p.write_bytes(data[:cut])
    back, rep = read(p)
    assert back == msgs[:k]
    assert rep.truncated_tail_bytes == 60
    assert (rep.resyncs, rep.skipped_bytes) == (0, 0)

    # Cut inside a 3-byte (0xfd) length prefix.
    j = next(i for i, m in enumerate(msgs) if len(m) >= 0xFD)
    p.write_bytes(data[: offs[j] + 2])
    back, rep = read(p)
    assert back == msgs[:j]
    assert rep.truncated_tail_bytes == 2


def test_garbage_between_records(tmp_path: Path) -> None:
    src = LNRESEARCH / CLEAN
    msgs, _ = read(src)
    data = src.read_bytes()
    offs = _offsets(msgs)
    rng = random.Random(7)
    garbage = {
        50: b"\x8a",  # a stray length byte, as in the real damage
        120: b"\xff" * 7,
        300: rng.randbytes(333),
        302: b"\x00" * 40,
        600: rng.randbytes(3 * (1 << 20) + 17),  # > 1 chunk
    }
    parts, prev = [], 0
    for k in sorted(garbage):
        parts += [data[prev : offs[k]], garbage[k]]
        prev = offs[k]
    parts.append(data[prev:])
    p = tmp_path / "garbage.gsp"
    p.write_bytes(b"".join(parts))
    back, rep = read(p)
    assert back == msgs
    assert rep.resyncs == len(garbage)
    assert rep.skipped_bytes == sum(len(g) for g in garbage.values())
    assert rep.truncated_tail_bytes == 0


def test_record_between_two_damaged_spots_is_skipped(tmp_path: Path) -> None:
    """The resync look-ahead is conservative: a record found while resyncing is
    taken only if the record after it is plausible too, so a lone record
    squeezed between two damaged spots is skipped along with them (in the real
    files that same rule drops a stray prefix + a message lacking its own)."""
    src = LNRESEARCH / CLEAN
    msgs, _ = read(src)
    data = src.read_bytes()
    offs = _offsets(msgs)
    junk1, junk2 = b"\xff" * 9, b"\x00" * 40
    p = tmp_path / "two.gsp"
    p.write_bytes(
        data[: offs[300]] + junk1 + data[offs[300] : offs[301]] + junk2 + data[offs[301] :]
    )
    back, rep = read(p)
    assert back == msgs[:300] + msgs[301:]
    assert rep.resyncs == 1
    assert rep.skipped_bytes == len(junk1) + (offs[301] - offs[300]) + len(junk2)


def test_garbage_at_end_and_start(tmp_path: Path) -> None:
    msgs = EDGE_MSGS
    p = tmp_path / "g.gsp"
    p.write_bytes(b"GSP\x01" + b"\xfe\xfe" + gsp_bytes(msgs)[4:] + b"\xff\x00\x01")
    back, rep = read(p)
    assert back == msgs
    assert rep.resyncs == 2
    assert rep.skipped_bytes == 5


def test_only_garbage_never_raises(tmp_path: Path) -> None:
    p = tmp_path / "junk.gsp"
    rng = random.Random(1)
    p.write_bytes(b"GSP\x01" + rng.randbytes(200_000))
    back, rep = read(p)
    assert rep.resyncs >= 1
    assert (
        rep.skipped_bytes
        + rep.truncated_tail_bytes
        + sum(len(bigsize_encode(len(m))) + len(m) for m in back)
        == 200_000
    )


def test_gossip_store_damage(tmp_path: Path) -> None:
    data = (CLN / "cln_gossip_store-part1+2").read_bytes()
    want, _ = read(CLN / "cln_gossip_store-part1+2")
    # Garbage after the 10th record and a truncated last record.
    off = 1
    for _ in range(10):
        off += 12 + struct.unpack_from(">H", data, off + 2)[0]
    junk = b"\x00" * 4 + b"\xff" * 50  # a header with length 0, then junk
    p = tmp_path / "store"
    p.write_bytes(data[:off] + junk + data[off:-5])
    back, rep = read(p)
    assert rep.format == "gossip_store"
    assert back == want  # the last record is an internal one (delete_chan)
    assert rep.resyncs == 1
    assert rep.skipped_bytes == len(junk)
    assert rep.truncated_tail_bytes == 12 + 10 - 5


def test_old_gossip_store_refused() -> None:
    with pytest.raises(UnknownFormat, match="version"):
        list(read_gossip_store(io.BytesIO(b"\x09" + b"\x00" * 20), ReadReport("m")))
    with pytest.raises(UnknownFormat, match="version"):
        list(read_gossip_store(io.BytesIO(b"\x2f"), ReadReport("m")))
    with pytest.raises(UnknownFormat):
        list(read_gossip_store(io.BytesIO(b""), ReadReport("m")))
    # Empty fragment: nothing, no error.
    assert list(read_gossip_store(io.BytesIO(b""), ReadReport("m"), fragment=True)) == []


def test_gsp_requires_magic() -> None:
    with pytest.raises(UnknownFormat):
        list(read_gsp(io.BytesIO(b"GSP\x02" + b"\x00" * 10), ReadReport("m")))


# ---------------------------------------------------------------------------
# Hex and detection


def test_hex_lines(tmp_path: Path) -> None:
    a, b = fake(CU, 138, 0xAB), fake(NA, 150, 0x01)
    text = (
        "# gossip as hex\n"
        "\n"
        f"{a.hex()}\n"
        "   \n"
        "not hex at all\n"
        f"{a.hex()[:-1]}\n"  # odd number of digits
        "01\n"  # too short to be a message
        f"  {b.hex().upper()}\r\n"
        "  # indented comment\n"
        f"{b.hex()}"  # no final newline
    )
    p = tmp_path / "msgs.txt"
    p.write_text(text)
    back, rep = read(p)
    assert rep.format == "hex"
    assert back == [a, b, b]
    assert rep.bad_lines == 3
    assert rep.records == rep.messages == 3
    rep2 = ReadReport("mem")
    assert list(read_hex_lines(io.BytesIO(text.encode()), rep2)) == back
    assert rep2.bad_lines == 3


def test_hex_compressed_and_overlong_line(tmp_path: Path) -> None:
    a = fake(CU, 138, 7)
    text = a.hex() + "\n" + "00" * 70_000 + "\n" + a.hex() + "\n"
    p = tmp_path / "m.hex.gz"
    p.write_bytes(gzip.compress(text.encode()))
    back, rep = read(p)
    assert back == [a, a]
    assert rep.bad_lines == 1


def test_detect_format() -> None:
    assert detect_format(b"GSP\x01\x8a\x01\x02") == "gsp"
    assert detect_format((CLN / "cln_gossip_store-part1").read_bytes()[:64]) == "gossip_store"
    assert detect_format(b"\x0f") == "gossip_store"  # empty store
    assert detect_format(b"# comment\n0102abcd\n") == "hex"
    assert detect_format(b"0102ABCD") == "hex"
    assert detect_format(b"# only a comment\n") == "hex"
    for head in (b"", b"GSP\x02", b"\x00\x01\x02", b"hello world\n", b"\x80abc"):
        with pytest.raises(UnknownFormat):
            detect_format(head)
    # A plausible store header behind an old version byte is refused.
    old = b"\x09" + (CLN / "cln_gossip_store-part1").read_bytes()[1:64]
    with pytest.raises(UnknownFormat, match="older"):
        detect_format(old)
    assert issubclass(UnknownFormat, ValueError)


def test_iter_messages_errors(tmp_path: Path) -> None:
    p = tmp_path / "x"
    p.write_bytes(b"\x00\x01\x02\x03")
    with pytest.raises(ValueError, match="unknown format"):
        iter_messages(p, fmt="csv")
    with pytest.raises(UnknownFormat):
        list(iter_messages(p))
    assert "gossip_store_fragment" in FORMATS


def test_report_defaults(tmp_path: Path) -> None:
    p = tmp_path / "a.gsp"
    with GspWriter(p) as w:
        w.write_all(EDGE_MSGS)
    rep = ReadReport(path="")
    assert list(iter_messages(p, rep)) == EDGE_MSGS
    assert rep.path == str(p)
    assert list(iter_messages(os.fspath(p))) == EDGE_MSGS  # no report given


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO")
def test_non_seekable_input(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    payload = gsp_bytes(_sample(50))

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(payload)

    t = threading.Thread(target=feed)
    t.start()
    try:
        back, rep = read(fifo)
    finally:
        t.join()
    assert back == _sample(50)
    assert rep.format == "gsp"
