"""The lngossip exception tree.

Exceptions are for misuse of the API (bad settings, unreadable files, a
message handed to :func:`lngossip.parse_message` that is not gossip). A
decision about a peer's message (duplicate, stale, bad signature, ...) is a
returned value, never an exception.
"""

from __future__ import annotations

__all__ = ["ConfigError", "GossipError", "InternalError", "MalformedMessage"]


class GossipError(Exception):
    """Base class of every exception lngossip raises."""


class ConfigError(GossipError, ValueError):
    """A setting or argument is out of range (wrong ``chain_hash`` length,
    unknown policy, array of the wrong shape, ...)."""


class MalformedMessage(GossipError, ValueError):
    """A message could not be parsed as BOLT #7 gossip.

    ``reason`` is one of ``too_short``, ``length_overrun``,
    ``bad_public_key``, ``node_id_order``, ``unknown_type``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InternalError(GossipError, RuntimeError):
    """The Rust core failed an internal check (a bug: please report it).

    Raised instead of letting a Rust panic reach Python; the pipeline that
    raised it should be dropped.
    """
