"""Type stubs and documentation of the Rust extension ``lngossip._core``."""

import os
from typing import Any, Literal, final

import numpy as np
import numpy.typing as npt

from lngossip.types import Counters, StoreReport
from lngossip.wire import Decision, Outcome, Policy

__version__: str
RGS_SNAPSHOT_INTERVAL_S: int
"""The Rapid Gossip Sync snapshot grid, seconds (``rgs.rs``: 3 h)."""
RGS_MAX_SCOPE_S: int
"""The widest incremental Rapid Gossip Sync scope, seconds (``rgs.rs``: 21 days)."""
LIMITS: dict[str, tuple[int, int]]
"""Inclusive ``(min, max)`` of every numeric argument, by bound name
(``rust/core/src/limits.rs``, where each has its reason): ``threads``
(1 to 1,024), ``queue_bytes``, ``queue_messages``, ``batch``
(``process(max_messages)``), ``orphan_capacity``, ``orphan_bytes``,
``seen_capacity``, ``pubkey_cache_capacity``, ``store_sync_interval_ms``,
``now`` (32-bit seconds), ``rgs_version`` (1, 2), ``rgs_interval`` (s)
and ``page`` (a graph query's ``limit`` / ``max_messages``). A value outside raises
:class:`~lngossip.errors.ConfigError` naming the argument and the range,
in both engines."""

__all__ = [
    "LIMITS",
    "RGS_MAX_SCOPE_S",
    "RGS_SNAPSHOT_INTERVAL_S",
    "Admission",
    "Codec",
    "Feed",
    "GraphReader",
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
    def decision(self) -> Decision: ...
    @property
    def reason(self) -> str | None: ...

@final
class ProcessResult:
    """What one :meth:`Pipeline.process` call decided."""

    @property
    def outcomes(self) -> list[Outcome]:
        """An :class:`~lngossip.wire.Outcome` ``(seq, peer, msg_type,
        decision, reason)`` per message decided.

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
class GraphReader:
    """Raw, read-only access to a pipeline's graph (``Pipeline.graph``):
    accepted message bytes, as :class:`lngossip.graph.Graph` decodes them
    and as a node serves them (BOLT #7 queries, in pages through cursors).

    Each call locks the pipeline for its own duration only (microseconds per
    item) and sees committed batches only: a batch that ``process`` is
    deciding is invisible until that call ends. Keeps the GIL.

    Raises:
        ConfigError: for a ``node_id`` that is not 33 bytes, a cursor that
            was not returned by :meth:`gossip_after`, or a ``limit`` /
            ``max_messages`` outside ``LIMITS["page"]`` (1 to 2^20).
    """

    def __len__(self) -> int:
        """Visible channels."""
    def node_count(self) -> int:
        """Visible nodes (with a visible channel or an announcement)."""
    def channel(self, short_channel_id: int) -> tuple[bytes, bytes | None, bytes | None] | None:
        """``(channel_announcement, update of direction 0, of direction 1)``."""
    def node(self, node_id: bytes) -> tuple[bytes | None, list[int]] | None:
        """``(node_announcement or None, its short_channel_ids ascending)``."""
    def short_channel_ids(self, after: int | None = None, limit: int = 1024) -> list[int]:
        """Up to ``limit`` ``short_channel_id``s after ``after``, ascending."""
    def node_ids(self, after: bytes | None = None, limit: int = 1024) -> list[bytes]:
        """Up to ``limit`` ``node_id``s after ``after``, ascending."""
    def short_channel_ids_in_blocks(
        self,
        first_blocknum: int,
        number_of_blocks: int,
        after: int | None = None,
        limit: int = 8000,
    ) -> list[int]:
        """BOLT #7 ``query_channel_range``: channels funded in blocks
        ``[first_blocknum, first_blocknum + number_of_blocks)``, after
        ``after``, ascending, at most ``limit``."""
    def gossip_after(
        self,
        cursor: bytes,
        first_timestamp: int = 0,
        timestamp_range: int = 0xFFFFFFFF,
        max_messages: int = 256,
    ) -> tuple[list[bytes], bytes | None]:
        """BOLT #7 ``gossip_timestamp_filter``: the next page (about
        ``max_messages``; a channel is never split) of messages with a
        ``timestamp`` in ``[first_timestamp, first_timestamp +
        timestamp_range)`` seconds, after ``cursor`` (``b""`` to start):
        channels ascending, each announcement before its updates, then node
        announcements. Returns the page and the next cursor (``None``: done).
        """
    def messages_for(self, short_channel_ids: list[int]) -> list[bytes]:
        """BOLT #7 ``query_short_channel_ids``: announcement and updates of
        each known channel, each followed by its nodes' announcements not
        sent earlier in this call."""
    def newest_timestamp(self) -> int | None:
        """Newest update or node announcement ``timestamp`` (seconds)."""
    def message_bytes(self) -> int:
        """Bytes of every kept message."""
    def columns(self) -> dict[str, dict[str, Any]]:
        """The graph as numpy columns (see :meth:`lngossip.graph.Graph.to_numpy`),
        built in the core in one pass without the GIL."""
    def rgs_snapshot(
        self, since: int = 0, version: int = 2, interval: int = 10800
    ) -> tuple[bytes, dict[str, int]]:
        """A Rapid Gossip Sync snapshot (``rust/core/src/rgs.rs``) for a
        client whose last sync returned ``since`` (seconds; 0: full), in
        format ``version`` 1 or 2, on a grid of ``interval`` seconds; built
        without the GIL. Raises ``ConfigError`` for an argument out of its
        ``LIMITS`` range."""

@final
class Pipeline:
    """The gossip pipeline: cheap checks at :meth:`submit`, batched
    verification at :meth:`process` (BOLT #7; DESIGN.md "Semantics").

    Keyword arguments:
        chain_hash: 32-byte ``chain_hash`` to accept (default Bitcoin mainnet).
        policy: ``"archive"`` (no lower time bound; nodes without channels
            verified anyway) or ``"live"`` (reject timestamps > 14 days behind
            ``now`` as ``too_old``; ``node_announcement`` needs a known
            channel). Both reject timestamps > 24 h ahead of ``now`` as
            ``too_new``: a message from the future can never be right, and
            one stamped years ahead would freeze its channel direction.
        now: fixed "now" in seconds since the epoch (tests); ``None`` reads
            the clock.
        max_queue_bytes / max_queue_messages: global queue caps (32 MiB, 100,000).
        per_peer_bytes / per_peer_messages: one peer's share (default a quarter
            of each cap); a peer over its share gets ``queue_full``. An
            empty queue admits any message, so caps below a message's size
            (up to 65,535 bytes) delay it instead of refusing it forever.
        orphan_capacity / orphan_max_bytes: orphan cache bounds; default
            per policy: live 10,000 updates and 4 MB (Core Lightning's
            bound), archive 1,000,000 and 256 MiB (so an archive's outcome
            does not depend on file order).
        seen_capacity: bound on remembered message hashes (2^21 ≈ 42 MB).
        pubkey_cache_capacity: bound on cached parsed public keys (2^16).
        threads: verification threads (``None``: one per core; 1 to 1,024).
        store: path of a durable store in Core Lightning's ``gossip_store``
            format, opened (or created) now: the graph and the seen-set are
            rebuilt from its records without verifying a signature (the
            CRC detects damage, not forgery: the store is trusted as Core
            Lightning trusts its own), a damaged record is skipped up to
            the next valid one (the damaged original is kept as
            ``PATH.damaged-<unix seconds>`` and the store rewritten without
            it), a torn or corrupt tail is dropped, both reported by
            :meth:`store_report`, and every accepted message is appended. Durability: each
            ``process`` writes its accepted records before it returns (a
            killed process loses nothing it reported accepted);
            ``fdatasync`` at most every ``store_sync_interval_ms`` (default
            1000 ms: what a power loss can cost). Dead records past half
            the file trigger an atomic compaction (new file, fsync, rename).
        store_sync_interval_ms: see ``store``.
        verify_store: verify every signature of the store's records on open
            (about 46 µs per signature per core: 6.3 s for the topology
            dataset on 2 cores), for a store from a source that is not
            trusted: a record that fails is not loaded and is flagged
            deleted (``store_report()["rejected_records"]``). Without it a
            record with a valid CRC and a forged signature is trusted.

    Defaults not given here come from the core's ``Config::for_policy``.
    Every numeric argument must lie in its range of :data:`LIMITS`.
    Opening a store releases the GIL (0.26 s for the 170k-message
    topology dataset).

    Raises:
        ConfigError: on a ``chain_hash`` that is not 32 bytes, an unknown
            policy, or a numeric argument outside its range in
            :data:`LIMITS` (the message names the argument and the range).
        StoreError: when the store cannot be opened, repaired or kept, is
            of another major version, or is held by another process.

    Thread-safe: a ``frozen`` class with a mutex inside.
    """

    def __new__(
        cls,
        *,
        chain_hash: bytes | None = None,
        policy: Policy = "archive",
        now: int | None = None,
        max_queue_bytes: int | None = None,
        max_queue_messages: int | None = None,
        per_peer_bytes: int | None = None,
        per_peer_messages: int | None = None,
        orphan_capacity: int | None = None,
        orphan_max_bytes: int | None = None,
        seen_capacity: int | None = None,
        pubkey_cache_capacity: int | None = None,
        threads: int | None = None,
        store: str | os.PathLike[str] | None = None,
        store_sync_interval_ms: int | None = None,
        verify_store: bool = False,
    ) -> Pipeline: ...
    def submit(self, peer: int, msg: bytes) -> Admission:
        """Run every cheap check on ``msg`` (a raw BOLT #7 message with its
        2-byte type) from ``peer`` and queue it if it needs verifying.

        Order: parse, ``chain_hash``, exact duplicate, time window, known
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
        decided in the same call. The accepted messages enter the graph
        (and the store) together when the call ends.

        Raises:
            ConfigError: ``max_messages`` outside ``LIMITS["batch"]``
                (1 to 2^26).
            StoreError: writing the store failed (the batch is decided and in
                the graph; its records are retried by the next call).
            InternalError: if the core failed an internal check.
        """
    def counters(self) -> Counters:
        """Counters (see :class:`Counters`)."""
    @property
    def graph(self) -> GraphReader:
        """The graph's raw reader; :class:`lngossip.Graph` decodes it."""
    @property
    def policy(self) -> Policy:
        """The policy in force."""
    def set_policy(self, policy: Policy) -> None:
        """Switch policy (a node that loaded archive files and now takes
        live peers); the orphan cache takes the new policy's default bounds.

        Raises:
            ConfigError: for an unknown policy.
        """
    def prune(self, now: int | None = None) -> tuple[int, int]:
        """BOLT #7 pruning: remove channels whose newest updates in both
        directions (a missing one counts as the announcement's acceptance
        time) are more than two weeks older than ``now`` (seconds; ``None``:
        the pipeline's now), and the announcements of nodes left without a
        channel. Their store records are flagged deleted and their hashes
        forgotten. Returns ``(channels, nodes)`` removed. Meant for the live
        policy. Releases the GIL.

        Raises:
            ConfigError: ``now`` outside ``LIMITS["now"]``.
            StoreError: writing the deleted flags failed.
        """
    def compact(self) -> bool:
        """Compact the store now (atomic rename); False without a store (or
        while another compaction runs). ``submit`` and the graph's readers
        wait only for building the image and for the swap, not while the new
        file is written and synced (``rust/core/src/shared.rs``); ``process``
        compacts this way by itself when deleted records pass half the store.

        Raises:
            StoreError: on failure (the old store stays in use).
        """
    def _compact_locked(self) -> bool:
        """:meth:`compact` holding the pipeline's lock throughout, as
        compaction ran before it moved out of the lock (benchmarks only)."""
    def sync_store(self) -> None:
        """Write what is pending and ``fdatasync`` the store.

        Raises:
            StoreError: on failure.
        """
    def store_report(self) -> StoreReport | None:
        """What opening the store found (damage skipped or truncated, where
        the damaged original was kept) and what was written since; ``None``
        without a store."""
    def peer_queue_bytes(self, peer: int) -> int:
        """Bytes ``peer`` has queued now."""
    def set_now(self, now: int | None) -> None:
        """Set (or clear) the fixed "now" (seconds since the epoch).

        Raises:
            ConfigError: ``now`` outside ``LIMITS["now"]``.
        """
    @property
    def queued(self) -> int:
        """Messages waiting for :meth:`process`."""
    @property
    def queue_bytes(self) -> int:
        """Bytes waiting for :meth:`process`."""
    @property
    def threads(self) -> int:
        """Verification threads."""

@final
class Feed:
    """What one :meth:`Codec.feed` did.

    ``messages`` are the decrypted messages that were not handed to the
    pipeline (all of them before :meth:`Codec.attach`; after it, those that
    are not BOLT #7 gossip, types 256 to 258), in the order they arrived.
    ``gossip`` counts the gossip messages the pipeline decided on, and
    ``decisions`` maps each :class:`~lngossip.wire.Decision` (never
    ``queue_full``) to how many got it (only non-zero entries).
    ``paused``: the pipeline answered ``queue_full`` for this peer; the
    refused message and the frames after it wait in the codec: call
    :meth:`Codec.feed` without data once room frees up, and do not read the
    socket before. ``error`` is ``"length_mac"`` or ``"message_mac"`` when a
    frame failed its MAC (BOLT #8: the connection must be failed); the
    messages before it are still returned. ``frames`` and ``bytes`` count
    the frames decrypted and their wire bytes (18 + len + 16 each).
    """

    @property
    def messages(self) -> list[bytes]: ...
    @property
    def gossip(self) -> int: ...
    @property
    def decisions(self) -> dict[Decision, int]: ...
    def count(self, decision: str) -> int:
        """How many gossip messages got ``decision`` (0 for an unknown name)."""
    @property
    def paused(self) -> bool: ...
    @property
    def error(self) -> Literal["length_mac", "message_mac"] | None: ...
    @property
    def frames(self) -> int: ...
    @property
    def bytes(self) -> int: ...

@final
class Codec:
    """The BOLT #8 transport of one established connection (08-transport.md
    "Lightning Message Specification"): ChaCha20-Poly1305 frames, nonces,
    and key rotation after every 1,000 uses of a key.

    Built from the handshake's result: the 32-byte send and receive keys and
    the chaining key each direction starts from (the same final chaining key
    for both, at nonce 0). Any key not 32 bytes raises
    :class:`~lngossip.errors.ConfigError`. The work of :meth:`feed` and
    :meth:`encode_many` runs with the GIL released.

    Bound: the codec holds the bytes of at most one partial frame
    (under 65,569 bytes) plus the last data fed; while :attr:`paused`, data
    is refused (:class:`~lngossip.errors.GossipError`), so a peer whose share
    of the queue is full cannot make it grow.
    """

    def __new__(
        cls,
        send_key: bytes,
        send_chaining_key: bytes,
        recv_key: bytes,
        recv_chaining_key: bytes,
    ) -> Codec: ...
    def attach(self, pipeline: Pipeline, peer: int) -> None:
        """From now on, submit received gossip to ``pipeline`` as ``peer``."""
    def feed(self, data: bytes | None = None, limit: int | None = None) -> Feed:
        """Append ``data`` (bytes read from the socket) and decrypt every
        complete frame (at most ``limit`` returned messages, >= 1), first
        retrying a message the pipeline refused. Raises
        :class:`~lngossip.errors.GossipError` for data while :attr:`paused`."""
    def encode(self, message: bytes) -> bytes:
        """The frame of one message: 18 + ``len(message)`` + 16 bytes.
        Over 65,535 bytes raises
        :class:`~lngossip.net.transport.TransportError` ``too_long``."""
    def encode_many(self, messages: list[bytes]) -> bytes:
        """The frames of ``messages``, concatenated (none if any is too long:
        :class:`~lngossip.net.transport.TransportError` ``too_long``)."""
    @property
    def paused(self) -> bool:
        """Whether a gossip message refused with ``queue_full`` is waiting."""
    @property
    def buffered(self) -> int:
        """Bytes held: undecrypted frames and a refused message."""
    @property
    def failed(self) -> str | None:
        """``"length_mac"`` or ``"message_mac"`` once a frame failed."""

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
            single-core rate; at most 1,024). The pool for each count is
            built once and kept.

    Returns:
        ``(n,)`` bool array; ``False`` for a bad signature, an unparsable
        signature or a key that is not on the curve.

    Raises:
        ConfigError: on a wrong column width, differing row counts or
            ``threads`` outside ``LIMITS["threads"]``.
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
