"""Streaming readers and a writer for files of Lightning Network gossip.

This module turns files of BOLT #7 gossip into a stream of raw wire messages
(``bytes``, starting with the 2-byte big-endian message type), without ever
loading a whole file into memory. Supported containers:

``gsp``
    The lnresearch "GSP" dump format: the 4 magic bytes ``b"GSP\\x01"``, then
    records, each a BOLT #1 BigSize length followed by that many bytes of
    message. See :func:`read_gsp`.
``gossip_store``
    Core Lightning's ``gossip_store`` file: one version byte, then records with
    a 12-byte header (flags, length, crc, timestamp). See
    :func:`read_gossip_store`.
``gossip_store_fragment``
    The same records without the version byte, e.g. the tail of a store that
    was split in two. Never auto-detected.
``hex``
    Text, one hex-encoded message per line. See :func:`read_hex_lines`.

Any of them may be compressed with xz, gzip or bzip2; compression is detected
by magic bytes, not by file name (:func:`open_maybe_compressed`).

Real-world files are damaged now and then (the lnresearch collector sometimes
wrote a length prefix away from its message). The binary readers therefore
check every record for plausibility and, when framing is lost, scan forward
byte by byte for the next plausible record, counting what they skipped in a
:class:`ReadReport`. They never raise on damaged content; they raise only for
a wrong or unsupported file header (:class:`UnknownFormat`) and for I/O errors.

The only message types yielded by the binary readers are the three BOLT #7
gossip messages: channel_announcement (256), node_announcement (257) and
channel_update (258).

Sources:

* BOLT #1 (``01-messaging.md``), "Appendix A: BigSize Test Vectors" and the
  "Fundamental Types" section: BigSize encoding and minimality.
* BOLT #7 (``07-routing-gossip.md``): the gossip message layouts from which
  the minimum lengths (:data:`lngossip.wire.MIN_LEN`) are derived.
* Core Lightning ``common/gossip_store.h`` / ``gossipd/gossip_store.c`` and
  ``devtools/dump-gossipstore.c``: the ``gossip_store`` layout and flag bits.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Final, cast

from lngossip.errors import UnknownFormat
from lngossip.wire import MAX_MESSAGE_LEN, MIN_LEN

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "FORMATS",
    "GspWriter",
    "ReadReport",
    "UnknownFormat",
    "bigsize_encode",
    "detect_format",
    "iter_messages",
    "open_maybe_compressed",
    "read_gossip_store",
    "read_gsp",
    "read_hex_lines",
]

FORMATS: Final = ("auto", "gsp", "gossip_store", "gossip_store_fragment", "hex")
"""Values accepted by the ``fmt`` argument of :func:`iter_messages`."""

_GSP_MAGIC: Final = b"GSP\x01"

# A gossip record is plausible when its length is at least its type's
# shortest valid message (``wire.MIN_LEN``, the 2-byte type included).
#: The shortest gossip message of any type (a ``channel_update``).
_SHORTEST: Final = min(MIN_LEN.values())

# Core Lightning gossip_store.
_GS_HDR: Final = 12  # be16 flags, be16 len, be32 crc, be32 timestamp
_GS_DELETED: Final = 0x8000
_GS_KNOWN_FLAGS: Final = 0xF800  # deleted, push, ratelimit/completed, zombie, dying
_GS_MIN_VERSION: Final = 0x0B
_GS_INTERNAL_LO: Final = 0x1000  # Core Lightning's own record types: 4096..8191
_GS_INTERNAL_HI: Final = 0x2000

_CHUNK: Final = 1 << 20  # bytes read from the stream at a time
# Bytes that must be buffered beyond a position before it is examined (unless
# at EOF): the largest record (12-byte header + 65535) plus the header and
# type of the record after it, which resynchronisation also looks at.
_WINDOW: Final = 65536 + 64
_HEAD: Final = 1 << 16  # bytes iter_messages looks at to detect the format
_MAX_HEX_LINE: Final = 2 * MAX_MESSAGE_LEN + 4096

# Results of probing a position for a record.
_OK: Final = 0  # plausible header, whole record in the buffer
_TRUNC: Final = 1  # plausible header, record runs past the end of the data
_SHORT: Final = 2  # the header itself is cut by the end of the data
_BAD: Final = 3  # implausible: framing is lost here

_Probe = Callable[[bytes, int, int], tuple[int, int, int, int]]


@dataclass
class ReadReport:
    """What a reader did to one input; filled in while messages are yielded.

    The counts are final only once the iterator is exhausted.

    Attributes:
        path: the file read (as given; empty for a bare stream).
        format: the format used, one of :data:`FORMATS` other than ``"auto"``.
        records: framing units read completely: every GSP record and every
            ``gossip_store`` record, including deleted and internal ones, and
            every valid hex line. Skipped garbage, an incomplete last record
            and bad hex lines are not records.
        messages: gossip messages yielded.
        resyncs: times framing was lost (an implausible record) and found
            again, or the end of the data was reached while looking for it.
        skipped_bytes: bytes skipped while resynchronising.
        deleted: ``gossip_store`` records flagged deleted (0x8000), skipped.
        internal: ``gossip_store`` records that are not gossip (Core
            Lightning's own types such as 4101 channel_amount), skipped.
        truncated_tail_bytes: bytes of an incomplete last record, i.e. one
            whose plausible header announces more bytes than the data holds.
            Reported, not yielded.
        bad_lines: hex format only: lines that are not a valid hex message.
        damage: why the compressed data could not be read to its end
            (truncated or corrupt ``.xz``, ``.gz``, ``.bz2``): every complete
            message before the damage was yielded; empty when there was none.
    """

    path: str
    format: str = ""
    records: int = 0
    messages: int = 0
    resyncs: int = 0
    skipped_bytes: int = 0
    deleted: int = 0
    internal: int = 0
    truncated_tail_bytes: int = 0
    bad_lines: int = 0
    damage: str = ""


# ---------------------------------------------------------------------------
# BigSize


def bigsize_encode(n: int) -> bytes:
    """Encode ``n`` as a BOLT #1 BigSize (minimal encoding, big-endian).

    Layout:

    ===========================  ====================================
    value                        encoding
    ===========================  ====================================
    0 .. 0xfc                    1 byte: the value
    0xfd .. 0xffff               ``0xfd`` then the value as be16
    0x10000 .. 0xffffffff        ``0xfe`` then the value as be32
    0x100000000 .. 2**64 - 1     ``0xff`` then the value as be64
    ===========================  ====================================

    Raises:
        ValueError: ``n`` is negative or does not fit in 64 bits.
    """
    if n < 0 or n > 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"BigSize value out of range: {n}")
    if n < 0xFD:
        return bytes((n,))
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "big")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "big")
    return b"\xff" + n.to_bytes(8, "big")


def _bigsize_decode(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Decode a BOLT #1 BigSize at ``data[offset:]``.

    Returns ``(value, number_of_bytes_used)``.

    Raises:
        ValueError: the data ends inside the BigSize, or the encoding is not
            minimal (BOLT #1 requires readers to reject non-minimal BigSize).
    """
    if offset >= len(data):
        raise ValueError("BigSize: no data")
    first = data[offset]
    if first < 0xFD:
        return first, 1
    width, floor = {0xFD: (2, 0xFD), 0xFE: (4, 0x10000), 0xFF: (8, 0x100000000)}[first]
    end = offset + 1 + width
    if end > len(data):
        raise ValueError("BigSize: truncated")
    value = int.from_bytes(data[offset + 1 : end], "big")
    if value < floor:
        raise ValueError(f"BigSize: non-minimal encoding of {value}")
    return value, 1 + width


# ---------------------------------------------------------------------------
# Record plausibility checks. Each takes (buffer, position, end of valid data)
# and returns (status, header length, body length, flags).


def _probe_gsp(buf: bytes, p: int, n: int) -> tuple[int, int, int, int]:
    """Check for a plausible GSP record at ``buf[p:n]``.

    Plausible: minimal BigSize length, a gossip type (256/257/258) and a
    length between that type's minimum and 65535. 0xfe and 0xff prefixes are
    never plausible: minimal, they encode lengths above 65535.
    """
    if p >= n:
        return _SHORT, 0, 0, 0
    length = buf[p]
    if length < 0xFD:
        hl = 1
    elif length == 0xFD:
        if p + 3 > n:
            return _SHORT, 0, 0, 0
        length = (buf[p + 1] << 8) | buf[p + 2]
        if length < 0xFD:
            return _BAD, 0, 0, 0
        hl = 3
    else:
        return _BAD, 0, 0, 0
    if p + hl + 2 > n:
        return (_BAD if length < _SHORTEST else _SHORT), 0, 0, 0
    minimum = MIN_LEN.get((buf[p + hl] << 8) | buf[p + hl + 1])
    if minimum is None or length < minimum:
        return _BAD, 0, 0, 0
    if p + hl + length > n:
        return _TRUNC, hl, length, 0
    return _OK, hl, length, 0


def _probe_gs(buf: bytes, p: int, n: int) -> tuple[int, int, int, int]:
    """Check for a plausible gossip_store record at ``buf[p:n]``.

    Plausible: no flag bits outside 0xf800, length >= 2, and a type that is
    either gossip (256/257/258, length at least its minimum) or in Core
    Lightning's internal range 4096..8191.
    """
    if p + 4 > n:
        return _SHORT, 0, 0, 0
    flags = (buf[p] << 8) | buf[p + 1]
    length = (buf[p + 2] << 8) | buf[p + 3]
    if flags & ~_GS_KNOWN_FLAGS or length < 2:
        return _BAD, 0, 0, 0
    if p + _GS_HDR + 2 > n:
        return _SHORT, 0, 0, 0
    mtype = (buf[p + _GS_HDR] << 8) | buf[p + _GS_HDR + 1]
    minimum = MIN_LEN.get(mtype)
    if minimum is not None:
        if length < minimum:
            return _BAD, 0, 0, 0
    elif not _GS_INTERNAL_LO <= mtype < _GS_INTERNAL_HI:
        return _BAD, 0, 0, 0
    if p + _GS_HDR + length > n:
        return _TRUNC, _GS_HDR, length, flags
    return _OK, _GS_HDR, length, flags


# Byte patterns every plausible record start matches; used to jump over
# garbage quickly while resynchronising (each hit is then fully probed).
_GSP_CANDIDATE: Final = re.compile(rb"[\x00-\xfc]\x01[\x00-\x02]|\xfd..\x01[\x00-\x02]", re.DOTALL)
_GS_FLAG_BYTES: Final = b"".join(re.escape(bytes((b,))) for b in range(256) if not b & 0x07)
_GS_CANDIDATE: Final = re.compile(
    rb"[" + _GS_FLAG_BYTES + rb"]\x00.{10}(?:\x01[\x00-\x02]|[\x10-\x1f].)", re.DOTALL
)


def _read_more(stream: BinaryIO, buf: bytes, keep_from: int) -> tuple[bytes, bool]:
    """Drop ``buf[:keep_from]`` and append one chunk; return (buffer, at_eof)."""
    chunk = stream.read(_CHUNK)
    if not chunk:
        return buf[keep_from:], True
    return buf[keep_from:] + chunk, False


def _frame(
    stream: BinaryIO,
    buf: bytes,
    pos: int,
    probe: _Probe,
    candidate: re.Pattern[bytes],
    report: ReadReport,
) -> Iterator[tuple[int, bytes]]:
    """Split a stream into records; yield ``(flags, message)`` for each.

    ``buf[pos:]`` holds data already read from ``stream``. On an implausible
    record, scans forward from one byte after its start for a position where
    ``probe`` finds a complete record *and* the record after it is plausible
    too (or the data ends right there). That one-record look-ahead rejects a
    stray prefix followed by a message that lost its own prefix.
    """
    eof = False
    while True:
        while not eof and len(buf) - pos < _WINDOW:
            buf, eof = _read_more(stream, buf, pos)
            pos = 0
        n = len(buf)
        if pos >= n:
            return
        status, hl, length, flags = probe(buf, pos, n)
        if status == _OK:
            end = pos + hl + length
            report.records += 1
            yield flags, buf[pos + hl : end]
            pos = end
            continue
        if status != _BAD:  # _TRUNC or _SHORT: only possible at EOF
            report.truncated_tail_bytes += n - pos
            return

        # Framing lost at pos: resynchronise.
        report.resyncs += 1
        skipped = 0  # bytes already dropped from the buffer during the scan
        start = pos
        q = pos + 1
        tail_at = -1  # first plausible record that runs past EOF
        found = False
        while True:
            if not eof and len(buf) - q < _WINDOW:
                skipped += q - start
                buf, eof = _read_more(stream, buf, q)
                start = q = 0
                continue
            n = len(buf)
            match = candidate.search(buf, q)
            if match is None:
                if eof:
                    break
                # No candidate in buf[q:]; keep the last few bytes, which
                # could begin a candidate that continues in the next chunk.
                q = max(q, n - 16)
                skipped += q - start
                buf, eof = _read_more(stream, buf, q)
                start = q = 0
                continue
            i = match.start()
            if not eof and n - i < _WINDOW:
                q = i
                continue  # refill first, then probe i
            status, hl, length, _ = probe(buf, i, n)
            if status == _OK:
                nxt = i + hl + length
                if nxt >= n or probe(buf, nxt, n)[0] != _BAD:
                    skipped += i - start
                    pos = i
                    found = True
                    break
            elif status == _TRUNC and tail_at < 0:  # only possible at EOF
                tail_at = i
            q = i + 1
        if found:
            report.skipped_bytes += skipped
            continue
        if tail_at >= 0:
            report.skipped_bytes += skipped + tail_at - start
            report.truncated_tail_bytes += n - tail_at
        else:
            report.skipped_bytes += skipped + n - start
        return


def _read_at_least(stream: BinaryIO, size: int) -> bytes:
    """Read until ``size`` bytes or EOF (compressed streams return short reads)."""
    parts: list[bytes] = []
    got = 0
    while got < size:
        chunk = stream.read(size - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


# ---------------------------------------------------------------------------
# Readers


def read_gsp(stream: BinaryIO, report: ReadReport) -> Iterator[bytes]:
    """Yield the gossip messages of a GSP stream.

    ``stream`` must be positioned at the start of the file; this function
    consumes and checks the header itself.

    Layout (lnresearch gossip dumps)::

        "GSP" 0x01                                 4 bytes, magic + version 1
        repeated:
            length   BigSize (BOLT #1)              1, 3, 5 or 9 bytes
            message  `length` bytes                 2-byte be type first

    A record is *plausible* when its BigSize length is minimally encoded,
    2 <= length <= 65535, its type is 256, 257 or 258, and length is at least
    that type's minimum (``wire.MIN_LEN``: channel_announcement 432,
    node_announcement 142, channel_update 130 bytes, type included).

    On an implausible record the reader counts one ``resync`` and scans
    forward from the byte after that record's start until it finds a
    plausible record that fits in the data and is followed by another
    plausible record (or by the end of the data). The bytes passed over are
    added to ``skipped_bytes``. A plausible record whose length runs past the
    end of the data ends the stream and is counted in
    ``truncated_tail_bytes``. Damage never raises.

    The look-ahead is what the real damage calls for: the lnresearch
    collector sometimes wrote a length byte apart from its message, leaving a
    stray prefix (``8a 96 01 02 ...``) and, a few records later, a message
    without one. Without the look-ahead, the record right before such an
    orphan message would be taken and the orphan then skipped on its own;
    with it, both go in one resync. On the 10 lnresearch files this gives 13
    resyncs and 1,462 skipped bytes, matching an independent check. The price:
    a genuine record squeezed between two damaged spots is skipped with them.

    Raises:
        UnknownFormat: the stream does not start with ``GSP\\x01`` (raised on
            the first ``next()``).
    """
    report.format = "gsp"
    head = _read_at_least(stream, len(_GSP_MAGIC))
    if head[: len(_GSP_MAGIC)] != _GSP_MAGIC:
        raise UnknownFormat(f"not a GSP file: starts with {head[:4]!r}")
    for _, msg in _frame(stream, head, len(_GSP_MAGIC), _probe_gsp, _GSP_CANDIDATE, report):
        report.messages += 1
        yield msg


def read_gossip_store(
    stream: BinaryIO, report: ReadReport, *, fragment: bool = False
) -> Iterator[bytes]:
    """Yield the live gossip messages of a Core Lightning ``gossip_store``.

    ``stream`` must be positioned at the start of the file (at the version
    byte), or, with ``fragment=True``, at the start of a record of a store
    whose beginning is elsewhere (no version byte).

    Layout (Core Lightning ``common/gossip_store.h``)::

        version     1 byte   top 3 bits: major (must be 0);
                             low 5 bits: minor (must be >= 0x0b)
        repeated:
            flags      be16  0x8000 deleted, 0x4000 push,
                             0x2000 ratelimit (older) / completed (newer),
                             0x1000 zombie, 0x0800 dying
            length     be16  bytes of message after this 12-byte header
            crc        be32  CRC32C of the message, seeded with timestamp
            timestamp  be32  seconds since the epoch
            message    `length` bytes, 2-byte be type first

    Records flagged deleted are skipped and counted in ``deleted``, whatever
    their type. Records of other types than 256/257/258 (Core Lightning's own
    4101 channel_amount, 4103 delete_chan, 4104, 4105 ended, 4106 chan_dying,
    4107 uuid, ...) are skipped and counted in ``internal``. The crc is not
    checked (real stores contain records whose crc does not match, e.g.
    delete_chan with timestamp 0).

    A record is plausible when its flags have no bits outside 0xf800, its
    length is at least 2, and its type is gossip (with at least the minimum
    length for that type, see :func:`read_gsp`) or in 4096..8191. Implausible
    records are handled like in :func:`read_gsp`: one ``resync``, a forward
    scan for a plausible record followed by a plausible record or EOF, the
    bytes passed over counted in ``skipped_bytes``; an incomplete last record
    goes to ``truncated_tail_bytes``.

    Raises:
        UnknownFormat: (unless ``fragment``) the stream is empty, or the
            version byte has a major version other than 0 or a minor version
            below 0x0b (older stores are refused). Raised on the first
            ``next()``.
    """
    report.format = "gossip_store_fragment" if fragment else "gossip_store"
    head = _read_at_least(stream, 1)
    pos = 0
    if not fragment:
        if not head:
            raise UnknownFormat("empty gossip_store: no version byte")
        version = head[0]
        if version >> 5 != 0 or version < _GS_MIN_VERSION:
            raise UnknownFormat(
                f"gossip_store version 0x{version:02x} not supported "
                f"(need major 0, minor >= 0x{_GS_MIN_VERSION:02x})"
            )
        pos = 1
    for flags, msg in _frame(stream, head, pos, _probe_gs, _GS_CANDIDATE, report):
        if flags & _GS_DELETED:
            report.deleted += 1
        elif ((msg[0] << 8) | msg[1]) not in MIN_LEN:
            report.internal += 1
        else:
            report.messages += 1
            yield msg


def read_hex_lines(stream: BinaryIO, report: ReadReport) -> Iterator[bytes]:
    """Yield messages from a text stream with one hex-encoded message per line.

    Format: ASCII lines separated by LF or CRLF. Leading and trailing
    whitespace is ignored; so are blank lines and lines whose first
    non-blank character is ``#``. Every other line must be an even number of
    hex digits (upper or lower case; spaces between bytes allowed) decoding to
    2..65535 bytes. The decoded bytes are yielded as they are (the message
    type is not checked). Each such line counts as one record.

    A line that is not valid hex, decodes to fewer than 2 bytes, or is longer
    than a 65535-byte message could be, is counted in ``bad_lines`` and
    skipped; it never raises.
    """
    report.format = "hex"
    while True:
        line = stream.readline(_MAX_HEX_LINE)
        if not line:
            return
        if not line.endswith(b"\n") and len(line) >= _MAX_HEX_LINE:
            # Overlong line: discard the rest of it.
            while True:
                rest = stream.readline(_MAX_HEX_LINE)
                if not rest or rest.endswith(b"\n"):
                    break
            report.bad_lines += 1
            continue
        text = line.strip()
        if not text or text.startswith(b"#"):
            continue
        try:
            msg = bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            report.bad_lines += 1
            continue
        if not 2 <= len(msg) <= MAX_MESSAGE_LEN:
            report.bad_lines += 1
            continue
        report.records += 1
        report.messages += 1
        yield msg


# ---------------------------------------------------------------------------
# Opening and detection


class _Chain(io.RawIOBase):
    """A raw stream: ``prefix``, then the rest of ``rest``.

    Closing it closes ``rest`` and then ``owner`` (if given): used where a
    decompressor reads from a file object that it would not close itself.
    """

    def __init__(self, prefix: bytes, rest: BinaryIO, owner: BinaryIO | None = None) -> None:
        self._prefix = prefix
        self._rest = rest
        self._owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            k = min(len(view), len(self._prefix))
            view[:k] = self._prefix[:k]
            self._prefix = self._prefix[k:]
            return k
        data = self._rest.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._rest.close()
            if self._owner is not None:
                self._owner.close()
        finally:
            super().close()


class _Decompress(io.RawIOBase):
    """Decompress ``f`` (xz, gzip or bzip2; concatenated streams too) as a raw
    stream that ends, instead of raising, where the compressed data is
    truncated or corrupt, and says why through ``on_damage``. Everything
    decodable before the damage is returned (``lzma.LZMAFile`` and friends
    drop what their decompressor holds when the input ends early). Output
    per call is bounded by the caller's buffer, so a small corrupt input
    cannot expand without bound. Closing it closes ``f``."""

    def __init__(self, f: BinaryIO, codec: str, on_damage: Callable[[str], None]) -> None:
        self._f = f
        self._codec = codec
        self._on_damage = on_damage
        self._d: Any = self._new()
        self._done = False

    def _new(self) -> Any:
        if self._codec == "xz":
            return lzma.LZMADecompressor()
        if self._codec == "gzip":
            return zlib.decompressobj(wbits=31)
        return bz2.BZ2Decompressor()

    def readable(self) -> bool:
        return True

    def _damaged(self, why: str) -> int:
        self._done = True
        self._on_damage(why)
        return 0

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        while not self._done:
            try:
                if self._d.eof:  # the end of one stream: another may follow
                    rest = self._d.unused_data or self._f.read(_CHUNK)
                    if not rest:
                        self._done = True
                        return 0
                    self._d = self._new()
                    data = self._d.decompress(rest, len(view))
                else:
                    zlib_tail = self._codec == "gzip" and self._d.unconsumed_tail
                    needs = not zlib_tail if self._codec == "gzip" else self._d.needs_input
                    raw = b""
                    if needs:
                        raw = self._f.read(_CHUNK)
                        if not raw:
                            return self._damaged(
                                "EOFError: the compressed data ends before its end-of-stream marker"
                            )
                    elif self._codec == "gzip":
                        raw = self._d.unconsumed_tail
                    data = self._d.decompress(raw, len(view))
            except (lzma.LZMAError, zlib.error, OSError, EOFError) as e:
                return self._damaged(f"{type(e).__name__}: {e}")
            if data:
                view[: len(data)] = data
                return len(data)
        return 0

    def close(self) -> None:
        try:
            self._f.close()
        finally:
            super().close()


def open_maybe_compressed(
    path: str | os.PathLike[str], on_damage: Callable[[str], None] | None = None
) -> BinaryIO:
    """Open ``path`` for binary reading, decompressing on the fly if needed.

    The compression is recognised by the file's first bytes, not its name:
    ``FD 37 7A 58 5A 00`` xz (:mod:`lzma`), ``1F 8B`` gzip (:mod:`gzip`),
    ``42 5A 68`` ("BZh") bzip2 (:mod:`bz2`). Anything else is returned as the
    plain file. The returned stream decompresses incrementally and closes the
    underlying file when it is closed. Non-seekable files (pipes,
    ``/dev/stdin``) work too; the file is opened only once.

    With ``on_damage``, compressed data that is truncated or corrupt ends the
    stream at the damage (instead of raising ``EOFError``, ``LZMAError``,
    ``zlib.error`` or ``OSError`` mid-read) and ``on_damage`` gets the reason.

    Raises:
        OSError: the file cannot be opened.
    """
    f = open(path, "rb")  # noqa: SIM115 - returned, or owned by what is returned
    try:
        magic = f.peek(6)[:6]
        if magic.startswith(b"\xfd7zXZ\x00"):
            codec = "xz"
        elif magic.startswith(b"\x1f\x8b"):
            codec = "gzip"
        elif magic.startswith(b"BZh"):
            codec = "bz2"
        else:
            return f
        if on_damage is not None:
            return io.BufferedReader(_Decompress(f, codec, on_damage), _CHUNK)
        if f.seekable():
            # A regular file: let the decompressor open (and own) it.
            f.close()
            if codec == "xz":
                return cast(BinaryIO, lzma.LZMAFile(path, "rb"))
            if codec == "gzip":
                return cast(BinaryIO, gzip.GzipFile(path, "rb"))
            return cast(BinaryIO, bz2.BZ2File(path, "rb"))
        # A pipe: decompress from the open file, and close it with the result.
        inner: BinaryIO
        if codec == "xz":
            inner = cast(BinaryIO, lzma.LZMAFile(f, "rb"))  # noqa: SIM115 - owned by _Chain
        elif codec == "gzip":
            inner = cast(BinaryIO, gzip.GzipFile(fileobj=f, mode="rb"))
        else:
            inner = cast(BinaryIO, bz2.BZ2File(f, "rb"))
        return io.BufferedReader(_Chain(b"", inner, f), _CHUNK)
    except BaseException:
        f.close()
        raise


_HEX_LINE: Final = re.compile(rb"[0-9A-Fa-f \t]*")


def detect_format(head: bytes) -> str:
    """Tell the format of a (decompressed) stream from its first bytes.

    Rules, in order:

    * starts with ``GSP\\x01`` -> ``"gsp"``;
    * first byte has major version 0 and minor >= 0x0b (0x0b..0x1f), and is
      either the only byte or followed by a plausible ``gossip_store`` record
      header (see :func:`read_gossip_store`) -> ``"gossip_store"``;
    * ASCII text whose first line that is neither blank nor a ``#`` comment
      holds only hex digits (and spaces), or text made only of comments ->
      ``"hex"``.

    ``"gossip_store_fragment"`` is never returned: a fragment has no header.
    About 64 KiB of head is plenty; a few dozen bytes usually suffice.

    Raises:
        UnknownFormat: none of the rules matched (including empty ``head``, a
            GSP magic with another version, and gossip_store versions below
            0x0b, which are refused).
    """
    if head.startswith(_GSP_MAGIC):
        return "gsp"
    if head.startswith(b"GSP"):
        raise UnknownFormat(f"unsupported GSP version {head[3:4]!r}")
    if not head:
        raise UnknownFormat("empty input")
    version = head[0]
    header_ok = len(head) == 1 or _probe_gs(head, 1, len(head))[0] in (_OK, _TRUNC)
    if version >> 5 == 0 and version != 0 and header_ok:
        if version < _GS_MIN_VERSION:
            raise UnknownFormat(
                f"gossip_store version 0x{version:02x} is older than "
                f"0x{_GS_MIN_VERSION:02x}; not supported"
            )
        return "gossip_store"
    if head.isascii():
        lines = head.split(b"\n")
        for line in lines:
            text = line.strip()
            if not text or text.startswith(b"#"):
                continue
            if _HEX_LINE.fullmatch(text):
                return "hex"
            break
        else:
            if any(line.strip().startswith(b"#") for line in lines):
                return "hex"
    raise UnknownFormat(f"unrecognised data starting with {head[:8].hex()}")


def iter_messages(
    path: str | os.PathLike[str],
    report: ReadReport | None = None,
    fmt: str = "auto",
) -> Iterator[bytes]:
    """Yield the gossip messages in the file at ``path``.

    The file may be xz, gzip or bzip2 compressed (detected by magic, see
    :func:`open_maybe_compressed`). With ``fmt="auto"`` the format is taken
    from the first 64 KiB of decompressed data by :func:`detect_format`;
    otherwise ``fmt`` must be one of :data:`FORMATS`. The file is read in
    1 MiB chunks and closed when the iterator is exhausted or closed.

    ``report``, if given, is filled in as the messages are read (its ``path``
    is set if empty, its ``format`` always); pass one to learn about
    resynchronisations, skipped and truncated bytes, deleted records etc.
    Truncated or corrupt compressed data ends the messages at the damage
    (every complete message before it is yielded) and sets ``report.damage``.

    Raises:
        ValueError: ``fmt`` is not in :data:`FORMATS` (raised immediately).
        UnknownFormat: the format cannot be detected or its header is wrong
            or unsupported (raised on the first ``next()``).
        OSError: the file cannot be read.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    if report is None:
        report = ReadReport(path=os.fspath(path))
    elif not report.path:
        report.path = os.fspath(path)
    return _iter_messages(path, report, fmt)


def _iter_messages(path: str | os.PathLike[str], report: ReadReport, fmt: str) -> Iterator[bytes]:
    def damaged(why: str) -> None:
        report.damage = why

    with open_maybe_compressed(path, damaged) as raw:
        stream: BinaryIO = raw
        if fmt == "auto":
            head = _read_at_least(raw, _HEAD)
            try:
                fmt = detect_format(head)
            except UnknownFormat as e:
                if report.damage:  # not even the start could be decompressed
                    raise UnknownFormat(
                        f"{report.path}: damaged compressed data: {report.damage}"
                    ) from e
                raise
            if raw.seekable():
                raw.seek(0)
            else:  # a pipe: replay the head, then the rest
                stream = io.BufferedReader(_Chain(head, raw), _CHUNK)
        with stream:
            yield from _dispatch(stream, report, fmt)


def _dispatch(stream: BinaryIO, report: ReadReport, fmt: str) -> Iterator[bytes]:
    """Run the reader for ``fmt`` (not ``"auto"``) on ``stream``."""
    if fmt == "gsp":
        yield from read_gsp(stream, report)
    elif fmt == "gossip_store":
        yield from read_gossip_store(stream, report)
    elif fmt == "gossip_store_fragment":
        yield from read_gossip_store(stream, report, fragment=True)
    else:
        yield from read_hex_lines(stream, report)


# ---------------------------------------------------------------------------
# Writer


class GspWriter:
    """Write gossip messages to a GSP file (uncompressed).

    The file gets ``GSP\\x01`` and then, for each message, its length as a
    minimal BOLT #1 BigSize followed by the message (see :func:`read_gsp`).
    Use as a context manager, or call :meth:`close`.

    Attributes:
        path: the file written.
        messages: messages written so far.
        bytes_written: bytes written so far, the 4-byte header included.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Create (or truncate) ``path`` and write the GSP header.

        Raises:
            OSError: the file cannot be created.
        """
        self.path = os.fspath(path)
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._file.write(_GSP_MAGIC)
        self.messages = 0
        self.bytes_written = len(_GSP_MAGIC)

    def write(self, msg: bytes) -> None:
        """Append one message.

        Only messages the reader would take back are accepted: type 256, 257
        or 258 and a length between that type's minimum (432, 142, 130,
        ``wire.MIN_LEN``) and 65535 bytes.

        Raises:
            ValueError: the message is not a plausible gossip message, or the
                writer is closed.
        """
        if self._file.closed:
            raise ValueError("GspWriter is closed")
        length = len(msg)
        minimum = MIN_LEN.get(int.from_bytes(msg[:2], "big")) if length >= 2 else None
        if minimum is None or not minimum <= length <= MAX_MESSAGE_LEN:
            raise ValueError(
                f"not a plausible gossip message (length {length}, starts {bytes(msg[:2]).hex()})"
            )
        prefix = bigsize_encode(length)
        self._file.write(prefix)
        self._file.write(msg)
        self.messages += 1
        self.bytes_written += len(prefix) + length

    def write_all(self, msgs: Iterable[bytes]) -> int:
        """Append every message of ``msgs``; return how many were written.

        Raises:
            ValueError: as :meth:`write`; earlier messages stay written.
        """
        count = 0
        for msg in msgs:
            self.write(msg)
            count += 1
        return count

    def close(self) -> None:
        """Flush and close the file. Closing twice is harmless."""
        self._file.close()

    def __enter__(self) -> GspWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
