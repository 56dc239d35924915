"""Typed shapes of what the engines return: :class:`Counters` from
``Pipeline.counters()`` and :class:`StoreReport` from ``Pipeline.store_report()``
(sizes in bytes)."""

from __future__ import annotations

from typing import Literal, TypedDict

__all__ = ["Counters", "StoreDamage", "StoreReport"]

#: What was wrong with a damaged ``gossip_store`` record (``store.rs``
#: ``Damage``): fewer than 12 header bytes left, a message past the end of
#: the file, the complete flag (0x2000) cleared, a CRC mismatch.
StoreDamage = Literal["torn_header", "torn_record", "incomplete", "bad_crc"]


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
    """Bytes of a torn or corrupt tail (no valid record after it) dropped at open."""
    damage: StoreDamage | None
    """What was wrong with the first record of that tail."""
    removed_compaction_file: bool
    """A ``PATH.compact`` left by a crash during compaction was removed."""
    skipped_regions: int
    """Damaged ranges skipped in the middle of the file at open (each
    followed by a valid record; a range holds one or more lost records)."""
    skipped_bytes: int
    """Bytes of those ranges."""
    skipped: list[tuple[int, int, StoreDamage]]
    """``(offset, length, damage)`` of the first 100 of those ranges, in
    bytes of the damaged original."""
    verified: bool
    """Every signature was verified on open (``verify_store=True``)."""
    rejected_records: int
    """With ``verified``: records not loaded because a signature failed (or
    a ``channel_update``'s channel had no valid announcement); flagged
    deleted."""
    kept_original: str | None
    """Where the damaged original was kept (``PATH.damaged-<unix seconds>``,
    a hard link or a copy) before the store was rewritten without the
    skipped ranges; ``None`` when nothing was skipped."""
    records_written: int
    records_deleted: int
    compactions: int
    syncs: int
    bytes: int
    dead_bytes: int
