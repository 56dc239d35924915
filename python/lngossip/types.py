"""Typed shapes of what the engines return: :class:`Counters` from
``Pipeline.counters()`` and :class:`StoreReport` from ``Pipeline.store_report()``
(sizes in bytes)."""

from __future__ import annotations

from typing import TypedDict

__all__ = ["Counters", "StoreReport"]


class Counters(TypedDict):
    """What ``Pipeline.counters()`` returns (both engines)."""

    decisions: dict[str, dict[str, int]]
    """Per message kind (``channel_announcement``, ``node_announcement``,
    ``channel_update``, ``unknown``), per final decision."""
    malformed_reasons: dict[str, int]
    signatures_verified: int
    queue_full: int
    """Times a message was handed back."""
    orphans_evicted: int
    orphans_released: int
    queued: int
    queue_bytes: int
    queue_high_water_bytes: int
    orphans: int
    seen_entries: int
    channels: int
    """Visible channels of the graph."""
    nodes: int
    """Visible nodes of the graph."""


class StoreReport(TypedDict):
    """What ``Pipeline.store_report()`` returns."""

    path: str
    created: bool
    records_loaded: int
    """Intact records read at open (deleted ones included)."""
    truncated_bytes: int
    """Bytes of a torn or corrupt tail dropped at open."""
    damage: str | None
    """``torn_header``, ``torn_record``, ``incomplete`` or ``bad_crc``."""
    removed_compaction_file: bool
    """A ``PATH.compact`` left by a crash during compaction was removed."""
    records_written: int
    records_deleted: int
    compactions: int
    syncs: int
    bytes: int
    dead_bytes: int
