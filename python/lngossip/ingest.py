"""Drive a pipeline over a stream of messages and summarise what it decided.

:func:`run` is the loop ``lngossip ingest`` and ``lngossip demo`` use, and
the one benchmarks time: submit each message for its peer; when a peer's
share or the queue is full, process a batch and submit again (the
backpressure a socket reader would apply); process whenever a batch is
ready; drain at the end. Both engines go through the same loop, so their
decisions can be compared message by message.
"""

from __future__ import annotations

import resource
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from lngossip.engine import DEFAULT_BATCH, PipelineLike, ProcessResultLike
from lngossip.types import StoreReport
from lngossip.wire import MSG_KINDS

__all__ = ["IngestReport", "replay_as_peers", "report_from", "run"]


def replay_as_peers(
    messages: Iterable[bytes], peers: int, lag: int = 1000
) -> Iterator[tuple[int, bytes]]:
    """Replay ``messages`` as ``peers`` peers sending the same stream, peer
    ``k`` ``k * lag`` messages behind peer 0, interleaved one message each:
    the duplicate load of an initial sync from ``peers`` peers.

    Streams: holds at most ``(peers - 1) * lag + 1`` messages.
    """
    if peers <= 1:
        yield from ((0, m) for m in messages)
        return
    span = (peers - 1) * lag
    window: deque[bytes] = deque()
    head = 0  # stream index of window[0]
    it = iter(messages)
    exhausted = False
    step = 0
    while True:
        if not exhausted:
            try:
                window.append(next(it))
            except StopIteration:
                exhausted = True
        end = head + len(window)
        if exhausted and step - span >= end:
            return
        for k in range(peers):
            i = step - k * lag
            if head <= i < end:
                yield k, window[i - head]
        step += 1
        while window and head < step - span:
            window.popleft()
            head += 1


@dataclass
class IngestReport:
    """Summary of one :func:`run`.

    ``decisions`` maps message kind to final-decision counts; times are in
    seconds, sizes in bytes.
    """

    engine: str
    messages: int = 0
    decisions: dict[str, dict[str, int]] = field(default_factory=dict)
    signatures_verified: int = 0
    elapsed_s: float = 0.0
    peak_rss_bytes: int = 0
    queue_high_water_bytes: int = 0
    queue_full: int = 0
    orphans_evicted: int = 0
    malformed_reasons: dict[str, int] = field(default_factory=dict)
    resyncs: int = 0
    skipped_bytes: int = 0
    accepted_written: int = 0
    files: list[dict[str, Any]] = field(default_factory=list)
    #: ``sync``: the ``first_timestamp`` (seconds) peers were asked from
    first_timestamp: int | None = None
    #: ``sync``: bytes of BOLT #8 frames received from peers (18 + length +
    #: 16 per message; handshakes not counted)
    bytes_received: int | None = None
    #: with a store: what opening it found (``Pipeline.store_report()``)
    store: StoreReport | None = None

    @property
    def messages_per_s(self) -> float:
        """Submitted messages per second of wall time."""
        return self.messages / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def signatures_per_s(self) -> float:
        """Verified signatures per second of wall time."""
        return self.signatures_verified / self.elapsed_s if self.elapsed_s else 0.0

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object of ``lngossip ingest``."""
        return {
            "engine": self.engine,
            "messages": self.messages,
            "decisions": {
                k: v for k, v in self.decisions.items() if k != "unknown" or any(v.values())
            },
            "signatures_verified": self.signatures_verified,
            "resyncs": self.resyncs,
            "skipped_bytes": self.skipped_bytes,
            "elapsed_s": round(self.elapsed_s, 6),
            "messages_per_s": round(self.messages_per_s, 1),
            "signatures_per_s": round(self.signatures_per_s, 1),
            "peak_rss_bytes": self.peak_rss_bytes,
            "queue_high_water_bytes": self.queue_high_water_bytes,
            "queue_full": self.queue_full,
            "orphans_evicted": self.orphans_evicted,
            "malformed_reasons": {k: v for k, v in self.malformed_reasons.items() if v},
            "accepted_written": self.accepted_written,
            "files": self.files,
            **(
                {"first_timestamp": self.first_timestamp}
                if self.first_timestamp is not None
                else {}
            ),
            **({"bytes_received": self.bytes_received} if self.bytes_received is not None else {}),
            **({"store": self.store} if self.store is not None else {}),
        }


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes.

    Reads ``VmHWM`` from ``/proc/self/status`` on Linux: unlike ``ru_maxrss``
    it starts afresh at ``execve``, so a child started from a large parent
    reports its own peak. Falls back to ``ru_maxrss`` (KiB on Linux).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run(
    pipeline: PipelineLike,
    stream: Iterable[tuple[int, bytes]],
    *,
    engine: str = "rust",
    batch: int = DEFAULT_BATCH,
    on_accepted: Callable[[list[bytes]], object] | None = None,
    on_decision: Callable[[int, str], None] | None = None,
    on_progress: Callable[[int, PipelineLike], None] | None = None,
    progress_every: int = 10_000,
    overlap: bool = False,
) -> IngestReport:
    """Feed ``stream`` of ``(peer, message)`` through ``pipeline`` to the end.

    ``on_accepted`` gets each batch of accepted messages (in dependency
    order), ``on_decision`` every final decision as ``(seq, decision)``
    (orphans still held at the end count as ``orphaned``; ``seq`` is the
    submission order from 0), ``on_progress`` the message count every
    ``progress_every`` messages.

    ``overlap=True`` runs each ``process`` call in a worker thread while this
    thread goes on reading and submitting: worth it when producing the
    stream costs time (decompressing a file: 8.0-8.4 s instead of 9.3-10.5 s
    for the topology dataset), not for messages already in memory, where
    the worker waits for the GIL at each batch. Only the Rust engine
    (thread-safe, verifies without blocking ``submit``) overlaps; the
    baseline always runs sequentially. Every callback runs in the calling
    thread.
    """
    orphans: set[int] = set()
    overlap = overlap and engine == "rust"
    executor = ThreadPoolExecutor(1, thread_name_prefix="lngossip-process") if overlap else None
    inflight: Future[ProcessResultLike] | None = None

    def handle(res: ProcessResultLike) -> None:
        if on_decision is not None:
            for seq, _peer, _kind, d, _reason in res.outcomes:
                if d == "orphaned":  # waits for its channel: not final yet
                    orphans.add(seq)
                else:
                    orphans.discard(seq)
                    on_decision(seq, d)
        if on_accepted is not None and res.accepted:
            on_accepted(res.accepted)

    def settle() -> None:
        """Wait for the batch in flight, if any, and hand its results on."""
        nonlocal inflight
        if inflight is not None:
            done, inflight = inflight, None
            handle(done.result())

    def start_batch() -> None:
        """Start verifying a batch (in the worker when overlapping)."""
        nonlocal inflight
        if executor is None:
            handle(pipeline.process(batch))
        elif inflight is None or inflight.done():
            settle()
            inflight = executor.submit(pipeline.process, batch)

    t0 = time.perf_counter()
    n = 0
    try:
        for peer, msg in stream:
            a = pipeline.submit(peer, msg)
            decision = a.decision
            while decision == "queue_full" and (pipeline.queued or inflight is not None):
                # Backpressure: make room by verifying, then offer the message again.
                if inflight is not None:
                    settle()
                else:
                    start_batch()
                    settle()
                a = pipeline.submit(peer, msg)
                decision = a.decision
            if on_decision is not None:
                if decision == "orphaned":
                    orphans.add(a.seq)
                elif decision != "queued":
                    on_decision(a.seq, decision)
            # only an admission can fill the queue up to a batch
            if decision == "queued" and pipeline.queued >= batch:
                start_batch()
            n += 1
            if on_progress is not None and n % progress_every == 0:
                on_progress(n, pipeline)
        settle()
        while pipeline.queued:
            start_batch()
            settle()
    finally:
        if executor is not None:
            executor.shutdown(wait=True)
    if on_decision is not None:
        for seq in sorted(orphans):
            on_decision(seq, "orphaned")
    return report_from(pipeline, engine, time.perf_counter() - t0, n)


def report_from(
    pipeline: PipelineLike, engine: str, elapsed_s: float, messages: int
) -> IngestReport:
    """An :class:`IngestReport` of ``pipeline``'s counters now."""
    c = pipeline.counters()
    store = pipeline.store_report()
    return IngestReport(
        store=store,
        engine=engine,
        messages=messages,
        decisions={k: dict(c["decisions"][k]) for k in MSG_KINDS},
        signatures_verified=c["signatures_verified"],
        elapsed_s=elapsed_s,
        peak_rss_bytes=peak_rss_bytes(),
        queue_high_water_bytes=c["queue_high_water_bytes"],
        queue_full=c["queue_full"],
        orphans_evicted=c["orphans_evicted"],
        malformed_reasons=dict(c["malformed_reasons"]),
    )
