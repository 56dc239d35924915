"""Type stubs and documentation of the Rust extension ``lngossip._core``."""

from typing import Any, final

import numpy as np
import numpy.typing as npt

__version__: str
__all__ = [
    "Admission",
    "Pipeline",
    "ProcessResult",
    "__version__",
    "_time_bare_verify",
    "verify_batch",
]

@final
class Admission:
    """The answer to :meth:`Pipeline.submit`.

    ``decision`` is ``"queued"`` (a later :meth:`Pipeline.process` decides),
    ``"orphaned"`` (a ``channel_update`` of an unknown channel, held in the
    orphan cache until its announcement is accepted) or a final decision:
    ``duplicate``, ``stale``, ``malformed``, ``wrong_chain``, ``too_old``,
    ``too_new``, or ``queue_full`` (nothing kept: submit again after a
    ``process``). ``reason`` names the parse failure for ``malformed``.
    """

    @property
    def seq(self) -> int:
        """Sequence number of the message (increasing per pipeline, from 0)."""
    @property
    def decision(self) -> str: ...
    @property
    def reason(self) -> str | None: ...

@final
class ProcessResult:
    """What one :meth:`Pipeline.process` call decided."""

    @property
    def outcomes(self) -> list[tuple[int, int, str, str, str | None]]:
        """``(seq, peer, msg_type, decision, reason)`` per message decided.

        ``decision`` is final, or ``orphaned`` for a ``channel_update`` that
        was queued behind its channel's announcement and now waits in the
        orphan cache because that announcement was not accepted (yet); a
        later call decides it."""
    @property
    def accepted(self) -> list[bytes]:
        """Accepted messages (the submitted ``bytes`` objects, not copies),
        announcements before their updates."""
    @property
    def signatures_verified(self) -> int:
        """ECDSA verifications run by this call."""

@final
class Pipeline:
    """The gossip pipeline: cheap checks at :meth:`submit`, batched
    verification at :meth:`process` (BOLT #7; DESIGN.md "Semantics").

    Keyword arguments:
        chain_hash: 32-byte ``chain_hash`` to accept (default Bitcoin mainnet).
        policy: ``"archive"`` (no wall-clock window; nodes without channels
            verified anyway) or ``"live"`` (reject timestamps > 24 h ahead or
            > 14 days behind ``now``; ``node_announcement`` needs a known channel).
        now: fixed "now" in seconds since the epoch for the live policy (tests);
            ``None`` reads the clock.
        max_queue_bytes / max_queue_messages: global queue caps (32 MiB, 100,000).
        per_peer_bytes / per_peer_messages: one peer's share (default a quarter
            of each cap); a peer over its share gets ``queue_full``.
        orphan_capacity / orphan_max_bytes: orphan cache bounds (10,000 updates
            as in Core Lightning; 4 MB).
        seen_capacity: bound on remembered message hashes (2^21 ≈ 42 MB).
        pubkey_cache_capacity: bound on cached parsed public keys (2^16).
        threads: verification threads (``None``: one per core).

    Raises:
        ConfigError: on a ``chain_hash`` that is not 32 bytes, an unknown
            policy or a zero queue cap.

    Thread-safe: a ``frozen`` class with a mutex inside.
    """

    def __new__(
        cls,
        *,
        chain_hash: bytes | None = None,
        policy: str = "archive",
        now: int | None = None,
        max_queue_bytes: int = ...,
        max_queue_messages: int = 100_000,
        per_peer_bytes: int | None = None,
        per_peer_messages: int | None = None,
        orphan_capacity: int = 10_000,
        orphan_max_bytes: int = 4_000_000,
        seen_capacity: int = ...,
        pubkey_cache_capacity: int = ...,
        threads: int | None = None,
    ) -> Pipeline: ...
    def submit(self, peer: int, msg: bytes) -> Admission:
        """Run every cheap check on ``msg`` (a raw BOLT #7 message with its
        2-byte type) from ``peer`` and queue it if it needs verifying.

        Order: parse, ``chain_hash``, exact duplicate, live window, known
        ``short_channel_id`` / stored timestamps, queue admission; no
        signature is checked here (Core Lightning #7972). Takes
        microseconds; keeps the GIL. The message is kept without copying.
        """
    def process(self, max_messages: int = 4096) -> ProcessResult:
        """Take up to ``max_messages`` queued messages (round-robin between
        peers), verify their signatures in parallel and apply them.

        Releases the GIL for the whole batch (about 46 µs per signature per
        core): run it in a worker thread (``await asyncio.to_thread(...)``)
        from async code. Orphans released by an accepted announcement are
        decided in the same call.

        Raises:
            InternalError: if the core failed an internal check.
        """
    def counters(self) -> dict[str, Any]:
        """Counters: ``decisions`` (per message kind, per final decision),
        ``malformed_reasons``, ``signatures_verified``, ``queue_full``,
        ``orphans_evicted``, ``orphans_released``, ``queued``,
        ``queue_bytes``, ``queue_high_water_bytes``, ``orphans``,
        ``seen_entries``, ``channels``, ``nodes``."""
    def peer_queue_bytes(self, peer: int) -> int:
        """Bytes ``peer`` has queued now."""
    def set_now(self, now: int | None) -> None:
        """Set (or clear) the fixed "now" (seconds since the epoch)."""
    @property
    def queued(self) -> int:
        """Messages waiting for :meth:`process`."""
    @property
    def queue_bytes(self) -> int:
        """Bytes waiting for :meth:`process`."""
    @property
    def threads(self) -> int:
        """Verification threads."""

def verify_batch(
    signatures: npt.NDArray[np.uint8],
    public_keys: npt.NDArray[np.uint8],
    digests: npt.NDArray[np.uint8],
    *,
    threads: int | None = None,
) -> npt.NDArray[np.bool_]:
    """Verify ``n`` ECDSA signatures in parallel, GIL released.

    Args:
        signatures: ``(n, 64)`` compact signatures (r || s, big-endian).
        public_keys: ``(n, 33)`` compressed secp256k1 public keys.
        digests: ``(n, 32)`` message digests (already hashed, e.g. SHA256d).
        threads: worker threads (``None``: one per core; ``1`` measures the
            single-core rate). The pool for each count is built once and kept.

    Returns:
        ``(n,)`` bool array; ``False`` for a bad signature, an unparsable
        signature or a key that is not on the curve.

    Raises:
        ConfigError: on a wrong column width or differing row counts.
    """

def _time_bare_verify(
    signatures: npt.NDArray[np.uint8],
    public_keys: npt.NDArray[np.uint8],
    digests: npt.NDArray[np.uint8],
    threads: int = 1,
) -> tuple[float, int]:
    """Benchmark calibration: seconds ``threads`` threads (0: one per core)
    take to verify the triples with keys and signatures parsed beforehand
    (the bare libsecp256k1 verify cost), and how many verified. GIL released.

    Raises:
        ConfigError: when the thread pool cannot be built.
    """
