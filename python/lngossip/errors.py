"""The lngossip exception tree.

Exceptions are for misuse of the API (bad settings, unreadable files, a
message handed to :func:`lngossip.parse_message` that is not gossip). A
decision about a peer's message (duplicate, stale, bad signature, ...) is a
returned value, never an exception.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "GossipError",
    "InternalError",
    "MalformedMessage",
    "RgsError",
    "StoreError",
]


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
    ``zlib_too_large`` (a decompression bomb).
    """

    def __init__(self, reason: str) -> None:
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
