"""The lngossip exception tree.

Exceptions are for misuse of the API (bad settings, unreadable files, a
message handed to :func:`lngossip.parse_message` that is not gossip). A
decision about a peer's message (duplicate, stale, bad signature, ...) is a
returned value, never an exception.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

__all__ = [
    "MALFORMED_REASONS",
    "TRANSPORT_REASONS",
    "ConfigError",
    "GossipError",
    "InternalError",
    "MalformedMessage",
    "MalformedReason",
    "RgsError",
    "StoreError",
    "TransportError",
    "TransportReason",
    "UnknownFormat",
]

#: Why a message could not be parsed (:class:`MalformedMessage` ``reason``).
MalformedReason = Literal[
    "too_short",
    "length_overrun",
    "bad_public_key",
    "node_id_order",
    "unknown_type",
    "unknown_encoding",
    "bad_zlib",
    "zlib_too_large",
    "tlv_order",
    "unknown_even_tlv",
    "tlv_count_mismatch",
]
MALFORMED_REASONS: Final[frozenset[str]] = frozenset(get_args(MalformedReason))

#: Why a BOLT #8 connection failed (:class:`TransportError` ``reason``).
TransportReason = Literal[
    "handshake_version",
    "handshake_mac",
    "bad_pubkey",
    "length_mac",
    "message_mac",
    "eof",
    "too_long",
    "timeout",
    "closed_before_ready",
]
TRANSPORT_REASONS: Final[frozenset[str]] = frozenset(get_args(TransportReason))


class GossipError(Exception):
    """Base class of every exception lngossip raises."""


class ConfigError(GossipError, ValueError):
    """A setting or argument is out of range (wrong ``chain_hash`` length,
    unknown policy, array of the wrong shape, ...)."""


class MalformedMessage(GossipError, ValueError):
    """A message could not be parsed as BOLT #7 gossip.

    ``reason`` is one of ``too_short``, ``length_overrun``,
    ``bad_public_key``, ``node_id_order``, ``unknown_type``; for the id
    lists of BOLT #7 queries also ``unknown_encoding``, ``bad_zlib`` and
    ``zlib_too_large`` (a decompression bomb); for their TLV streams
    (BOLT #1 "Type-Length-Value Format") ``tlv_order``, ``unknown_even_tlv``
    and ``tlv_count_mismatch`` (a TLV list whose length does not match the
    ids'). :data:`MALFORMED_REASONS` is the set.
    """

    reason: MalformedReason

    def __init__(self, reason: MalformedReason) -> None:
        super().__init__(reason)
        self.reason = reason


class InternalError(GossipError, RuntimeError):
    """The Rust core failed an internal check (a bug: please report it).

    Raised instead of letting a Rust panic reach Python; the pipeline that
    raised it should be dropped.
    """


class StoreError(GossipError, OSError):
    """The durable store could not be opened, written or compacted: an I/O
    error (with the path), a ``gossip_store`` of another major version, or
    a store another process holds open. Records that could not be written
    stay pending and the next ``process`` retries them.
    """


class RgsError(GossipError):
    """A Rapid Gossip Sync snapshot could not be read
    (:func:`lngossip.rgs.read_snapshot`): truncated, a wrong prefix or
    version, a non-minimal BigSize, an index or count out of range, ...

    The message says what was being read and at which byte offset;
    ``offset`` is that offset (from the start of the snapshot).
    """

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset

    def __reduce__(self) -> tuple[type[RgsError], tuple[str, int]]:
        return (type(self), (str(self), self.offset))


class UnknownFormat(GossipError, ValueError):
    """The data is not in a format :mod:`lngossip.readers` can read.

    Raised by :func:`~lngossip.readers.detect_format` when the first bytes
    match no known format, by :func:`~lngossip.readers.read_gsp` when the
    ``GSP\\x01`` magic is missing, and by
    :func:`~lngossip.readers.read_gossip_store` when the version byte is
    missing or is a ``gossip_store`` version it refuses (major version other
    than 0, or minor version below 0x0b).
    """


class TransportError(GossipError, ConnectionError):
    """A BOLT #8 connection failed because of the peer or the network.

    ``reason`` is one of:

    ``handshake_version``
        A handshake act's leading version byte was not 0 (BOLT #8
        "Handshake Versioning").
    ``handshake_mac``
        A handshake act's Poly1305 MAC did not verify: the initiator does not
        know our node id, or the act was tampered with.
    ``bad_pubkey``
        A public key in a handshake act is not a valid 33-byte compressed
        secp256k1 point.
    ``length_mac``
        The MAC of a frame's 18-byte encrypted length prefix did not verify.
    ``message_mac``
        The MAC of a frame's encrypted body did not verify.
    ``eof``
        The peer closed (or reset) the connection, possibly mid-act or
        mid-frame; a handshake act of the wrong length counts too.
    ``too_long``
        :meth:`lngossip.net.transport.Connection.send` was given more than
        :data:`lngossip.net.transport.MAX_MESSAGE_LEN`
        bytes (nothing was sent; the connection stays usable).
    ``timeout``
        The handshake did not complete within its timeout.
    ``closed_before_ready``
        The handshake succeeded but the connection ended before both
        ``init`` messages were exchanged (``detail`` says why: another
        network, unknown required features, ...); raised by
        :meth:`lngossip.net.node.GossipNode.connect`.

    Apart from ``too_long``, the connection cannot be used afterwards. It is
    both a :class:`~lngossip.errors.GossipError` and a
    :class:`ConnectionError` (hence an :class:`OSError`, with ``errno``
    ``None``).
    """

    reason: TransportReason
    detail: str

    def __init__(self, reason: TransportReason, detail: str = "") -> None:
        if reason not in TRANSPORT_REASONS:
            raise ValueError(f"unknown TransportError reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[TransportError], tuple[str, str]]:
        return type(self), (self.reason, self.detail)
